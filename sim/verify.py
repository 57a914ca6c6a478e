"""Post-run invariants (APPFL vsim style): checked after every run, and on any saved run.

1. Phases are ordered: round start <= available <= download <= compute <= upload <= report, and
   no phase ends before it starts.
2. A device that reported did so at or before its round's end; idle_s = round end - report >= 0.
3. Rounds follow each other: a round starts no earlier than the previous one ended; the round end
   equals the last device event under ``all`` (the last report or failure), and no later than the
   deadline under ``deadline``.
4. Sparsity never decreases: a device's credited prune ratio is non-decreasing over rounds.
5. Credit only for work reported: credited <=> status ok <=> all phases complete.
6. Sizes match the plan: bytes up/down of completed transfers equal the cost model's message sizes
   and compute_s = local_steps x step_time_s for completed training.
7. Per-round counters equal the per-device statuses.
8. Injected faults (``faults``): a lost upload completed its upload and has no report; a crashed,
   partitioned or departed device has no report and sent no complete upload; a device that left
   the fleet never appears in a later round.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from algorithms.base import STATUSES

REL = 1e-9


class VerificationError(AssertionError):
    """A run broke an invariant (the message lists every broken one)."""


class _Checks:
    """Collects broken invariants: each with its row count and first offending device-round."""

    def __init__(self, dev: pd.DataFrame):
        self.dev = dev
        self.errs: list[str] = []

    def __call__(self, mask: np.ndarray, what: str) -> None:
        bad = np.flatnonzero(np.asarray(mask))
        if len(bad):
            r = self.dev.iloc[bad[0]] if len(self.dev) > bad[0] else None
            where = f" (first: round {r['round']}, {r['device_id']})" if r is not None else ""
            self.errs.append(f"{what}: {len(bad)} rows{where}")


def verify(rounds: pd.DataFrame, dev: pd.DataFrame, policy: str = "all",
           expected_bytes: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Raise :class:`VerificationError` listing every broken invariant.

    ``expected_bytes`` = (bytes_down, bytes_up) per row, re-priced from each row's plan (optional).
    """
    check = _Checks(dev)
    if len(dev):
        t = {c: dev[c].to_numpy(dtype=float) for c in (*PHASES, "t_report_s", "t_end_s", "round_end_s")}
        _check_phases(check, dev, t)
        _check_work(check, dev, t, expected_bytes)
        _check_faults(check, dev, t)
    if len(rounds):
        _check_rounds(check, rounds, dev, policy)
    if check.errs:
        raise VerificationError("verify() failed:\n  " + "\n  ".join(check.errs))


PHASES = ("t_round_start_s", "t_available_s", "t_download_start_s", "t_download_end_s", "t_compute_start_s",
          "t_compute_end_s", "t_upload_start_s", "t_upload_end_s")


def _check_phases(check: _Checks, dev: pd.DataFrame, t: dict[str, np.ndarray]) -> None:
    """Invariants 1, 2 and 5: phase order, reports inside the round, idle time, credit."""
    for a, b in zip(PHASES, PHASES[1:]):
        both = ~np.isnan(t[a]) & ~np.isnan(t[b])
        check(both & (t[b] < t[a]), f"{b} before {a}")
    for c in PHASES[1:]:
        check(~np.isnan(t[c]) & (t[c] > t["t_end_s"] + 1e-9), f"{c} after the device's end")
    status = dev["status"].astype(str).to_numpy()
    ok = status == "ok"
    reported = ok | (status == "oom")
    check(reported & np.isnan(t["t_report_s"]), "reporting device without report time")
    check(~reported & ~np.isnan(t["t_report_s"]), "report time without a report")
    check(reported & (t["t_report_s"] > t["round_end_s"]), "report after the round end")
    idle = dev["idle_s"].to_numpy(dtype=float)
    check(reported & ~(idle >= 0), "negative or missing idle time")
    check(reported & (np.abs(idle - (t["round_end_s"] - t["t_report_s"])) > REL * np.maximum(1, t["round_end_s"])),
          "idle_s != round end - report")
    check(t["t_end_s"] > t["round_end_s"] + 1e-9, "device active after the round end")
    check(dev["credited"].to_numpy() != ok, "credited differs from status ok")
    check(ok & (np.isnan(t["t_upload_end_s"]) | np.isnan(t["t_compute_end_s"])), "ok without complete phases")


def _check_work(check: _Checks, dev: pd.DataFrame, t: dict[str, np.ndarray],
                expected_bytes: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Invariants 4 and 6: compute time and message sizes match the plan; sparsity never decreases."""
    ok = dev["status"].astype(str).to_numpy() == "ok"
    steps = dev["local_steps"].to_numpy(dtype=float)
    comp = dev["compute_s"].to_numpy(dtype=float)
    step = dev["step_time_s"].to_numpy(dtype=float)
    check(ok & (np.abs(comp - steps * step) > REL * np.maximum(1.0, comp)), "compute_s != local_steps x step_time_s")
    check(ok & ~(dev["bytes_up"].to_numpy() > 0), "ok without upload bytes")
    check((~np.isnan(t["t_upload_end_s"])) != (dev["bytes_up"].to_numpy() > 0), "upload bytes without a completed upload")
    if expected_bytes is not None:
        dl_done = ~np.isnan(t["t_download_end_s"])
        check(dl_done & (dev["bytes_down"].to_numpy() != expected_bytes[0]), "bytes_down differs from the plan's size")
        check(ok & (dev["bytes_up"].to_numpy() != expected_bytes[1]), "bytes_up differs from the plan's size")
    cr = dev.loc[dev["credited"], ["device_index", "round", "prune_ratio"]].sort_values(["device_index", "round"])
    dp = cr.groupby("device_index")["prune_ratio"].diff()
    check((dp < -1e-12).to_numpy(), "prune ratio decreased")


def _check_faults(check: _Checks, dev: pd.DataFrame, t: dict[str, np.ndarray]) -> None:
    """Invariant 8: lost uploads, failed devices, devices that left."""
    status = dev["status"].astype(str).to_numpy()
    lost = status == "lost"
    check(lost & np.isnan(t["t_upload_end_s"]), "lost upload without a completed upload")
    failed = np.isin(status, ("crashed", "partitioned", "left", "dropped"))
    check(failed & ~np.isnan(t["t_upload_end_s"]), "failed device with a completed upload")
    check(lost & ~np.isnan(t["t_report_s"]), "lost upload with a report")
    left = dev.loc[status == "left"].groupby("device_index", observed=True)["round"].min()
    if len(left):
        later = dev["round"].to_numpy() > dev["device_index"].map(left).fillna(np.inf).to_numpy()
        check(later, "device selected after it left the fleet")


def _check_rounds(check: _Checks, rounds: pd.DataFrame, dev: pd.DataFrame, policy: str) -> None:
    """Invariants 3 and 7: rounds in sequence, round ends per policy, counters equal statuses."""
    rs = rounds["t_start_s"].to_numpy(dtype=float)
    re_ = rounds["t_end_s"].to_numpy(dtype=float)
    check(re_ < rs, "round ends before it starts")
    check(rs[1:] < re_[:-1] - 1e-9, "round starts before the previous ended")
    if not len(dev):
        return
    g = dev.groupby("round")
    last = g["t_end_s"].max().reindex(rounds["round"]).to_numpy()
    if policy == "all":
        check(np.abs(re_ - last) > REL * np.maximum(1.0, re_), "round end != its last device event")
    if policy == "deadline":
        dl = rounds["deadline_s"].to_numpy(dtype=float)
        check(~np.isnan(dl) & (re_ - rs > dl * (1 + REL) + 1e-9), "round ran past its deadline")
    counts = dev.groupby(["round", "status"], observed=False).size().unstack(fill_value=0)
    counts = counts.reindex(rounds["round"]).fillna(0)
    for s in STATUSES:
        if s in counts and f"n_{s}" in rounds:
            check(counts[s].to_numpy() != rounds[f"n_{s}"].to_numpy(), f"rounds.n_{s} differs from device statuses")
    check(g.size().reindex(rounds["round"]).to_numpy() != rounds["n_selected"].to_numpy(), "n_selected differs")
