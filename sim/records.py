"""Records: one row per device per round (``device_rounds``) and one row per round (``rounds``).

Per round the engine fills a :class:`RoundBuffer` (numpy columns, one slot per selected device);
:class:`Recorder` turns the buffers into the two pandas DataFrames with fixed column order and
categorical string columns, so the same run always yields byte-identical parquet files.

Times are simulated seconds (``_s``), sizes bytes, rates Mbit/s. A phase the device never reached
has NaN start and end. ``idle_s`` = round end - report time, for devices that reported (ok, oom).

Idle per round (:func:`round_idle`), over the devices whose update reached the server (status
``ok``) with device time ``T_i`` = report time - round start:

* ``idle_fastest = 1 - T_min / T_max``: the share of the slowest reporting device's time that the
  fastest one waits. FedSpine (arXiv 2501.02438) motivates per-device plans with this
  figure: under a uniform configuration the strongest board sits idle for about 30% of the round.
* ``idle_mean``: the mean over reporting devices (ok, oom) of ``(round end - report) / duration``
  (the same value as ``mean_idle_fraction``).
* ``straggler_gap = T_max / T_median``: how far the slowest reporting device trails the median one.

``max_idle_fraction`` (max over ok and oom devices of ``(round end - report) / duration``) equals
``idle_fastest`` only when the round ends at its last ``ok`` report and no device failed after it
or reported out of memory; a deadline or first-k cut, a late failure or an OOM report makes them differ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from algorithms.base import REWARD_COLUMNS, STATUSES
from devices.plan import Plan

STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}
NAN = float("nan")


class RoundBuffer:
    """Columns for the devices selected in one round (index j = selection order)."""

    def __init__(self, round_index: int, t_start_s: float, devices: np.ndarray, plans: list[Plan]):
        n = len(devices)
        self.round = round_index
        self.t_start_s = t_start_s
        self.devices = devices
        self.plans = plans
        self.status = np.zeros(n, dtype=np.int8)
        self.t_available_s, self.t_download_start_s, self.t_download_end_s = (np.full(n, NAN) for _ in range(3))
        self.t_compute_start_s, self.t_compute_end_s = np.full(n, NAN), np.full(n, NAN)
        self.t_upload_start_s, self.t_upload_end_s = np.full(n, NAN), np.full(n, NAN)
        self.t_report_s, self.t_end_s = np.full(n, NAN), np.full(n, NAN)
        self.step_time_s = np.full(n, NAN)
        self.straggler_factor = np.ones(n)  # step-time multiplier of a straggler spike (faults)
        self.compute_s = np.full(n, NAN)
        self.bw_down_mbps = np.full(n, NAN)
        self.bw_up_mbps = np.full(n, NAN)
        self.bytes_down = np.zeros(n, dtype=np.int64)
        self.bytes_up = np.zeros(n, dtype=np.int64)
        self.loss_before = np.full(n, NAN)
        self.loss_after = np.full(n, NAN)
        self.lora_update_norm = np.full(n, NAN)
        self.done = np.zeros(n, dtype=bool)
        self.updates: dict[int, object] = {}  # learner updates by slot j (real learning)
        self.pending: dict[int, object] = {}  # learner handles by slot j (submitted, collected at the cut-off)
        self.extra: dict[str, np.ndarray] = {}  # learner columns (proxy memory, sparsity, host time, ...)

    def extra_column(self, name: str) -> np.ndarray:
        col = self.extra.get(name)
        if col is None:
            col = self.extra[name] = np.full(len(self.devices), NAN)
        return col

    def time_columns(self) -> dict[str, np.ndarray]:
        """The phase times, in the order the device_rounds table lists them."""
        return {"t_available_s": self.t_available_s, "t_download_start_s": self.t_download_start_s,
                "t_download_end_s": self.t_download_end_s, "t_compute_start_s": self.t_compute_start_s,
                "t_compute_end_s": self.t_compute_end_s, "t_upload_start_s": self.t_upload_start_s,
                "t_upload_end_s": self.t_upload_end_s, "t_report_s": self.t_report_s, "t_end_s": self.t_end_s}

    def status_names(self) -> np.ndarray:
        return np.array(STATUSES, dtype=object)[self.status]


def distinct_objects(items: list) -> tuple[np.ndarray, np.ndarray]:
    """The position of one occurrence of each distinct object in ``items`` (by identity: strategies
    hand one plan object to many devices), and per item the index of its object among those."""
    ids = np.fromiter(map(id, items), np.uint64, len(items))
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def plan_columns(plans: list[Plan]) -> dict[str, np.ndarray]:
    """The plan columns of ``device_rounds`` (``lora_layers`` -1: all layers; ``layer_ranks`` "": one rank),
    built once per distinct plan object and spread."""
    first, at = distinct_objects(plans)
    u = [plans[i] for i in first.tolist()]
    return {
        "prune_ratio": np.array([p.prune_ratio for p in u], dtype=float)[at],
        "lora_rank": np.array([p.lora_rank for p in u], dtype=np.int64)[at],
        "lora_layers": np.array([-1 if p.lora_layers is None else len(p.lora_layers) for p in u], dtype=np.int64)[at],
        "layer_ranks": np.array(["" if p.layer_ranks is None else ",".join(map(str, p.layer_ranks)) for p in u],
                                dtype=object)[at],
        "local_steps": np.array([p.local_steps for p in u], dtype=np.int64)[at],
        "batch_size": np.array([p.batch_size for p in u], dtype=np.int64)[at],
    }


IDLE_SUMMARY = {"mean_idle_fastest": "idle_fastest", "mean_idle_mean": "idle_mean",
                "mean_straggler_gap": "straggler_gap"}
"""``summary.json`` key -> the ``rounds`` column it averages over rounds (:func:`idle_summary`)."""


def round_idle(device_time_s: np.ndarray, idle_mean: float) -> dict[str, float]:
    """``idle_fastest``, ``idle_mean`` and ``straggler_gap`` of one round (module docstring) from the
    device times ``T_i`` (s) of its ``ok`` devices; NaN when no device reported or ``T_max`` is 0."""
    t = np.asarray(device_time_s, dtype=float)
    t_max = float(t.max()) if len(t) else NAN
    if not t_max > 0:
        return {"idle_fastest": NAN, "idle_mean": idle_mean, "straggler_gap": NAN}
    return {"idle_fastest": 1.0 - float(t.min()) / t_max, "idle_mean": idle_mean,
            "straggler_gap": t_max / float(np.median(t))}


def idle_summary(rounds: pd.DataFrame) -> dict[str, float | None]:
    """The run-level idle metrics of ``summary.json``: each :data:`IDLE_SUMMARY` column's mean over
    the rounds where it is defined (every round weighs the same); None when no round defines it."""
    out: dict[str, float | None] = {}
    for key, col in IDLE_SUMMARY.items():
        v = rounds[col].to_numpy(dtype=float) if col in rounds else np.array([])
        out[key] = float(np.nanmean(v)) if np.isfinite(v).any() else None
    return out


class Recorder:
    """Accumulates per-round columns; builds the two result tables at the end."""

    def __init__(self, ids: list[str], group_labels: list[str], group_types: list[str], placement_names: list[str],
                 slot_names: list[str]):
        self.ids = ids
        self.group_labels = group_labels
        self.group_types = group_types
        self.placement_names = placement_names
        self.slot_names = slot_names
        self._dev: list[dict[str, np.ndarray]] = []
        self._rounds: list[dict] = []
        self.extra_names: tuple[str, ...] = ()  # learner columns, fixed for the run (same schema every round)

    def add_round(self, buf: RoundBuffer, *, group: np.ndarray, slots: np.ndarray, placement: np.ndarray,
                  load: np.ndarray, flops: np.ndarray, memory: np.ndarray, capacity: np.ndarray,
                  t_end_s: float, deadline_s: float, extra: dict | None = None,
                  strategy_cols: dict[str, np.ndarray] | None = None) -> dict:
        """Record a finished round: its device rows and its round row (returned)."""
        cols = self._device_columns(buf, group=group, slots=slots, placement=placement, load=load, flops=flops,
                                    memory=memory, capacity=capacity, t_end_s=t_end_s, strategy_cols=strategy_cols)
        self._dev.append(cols)
        row = self._round_row(buf, cols, t_end_s, deadline_s)
        if extra:
            row.update(extra)
        self._rounds.append(row)
        return row

    def _device_columns(self, buf: RoundBuffer, *, group: np.ndarray, slots: np.ndarray, placement: np.ndarray,
                        load: np.ndarray, flops: np.ndarray, memory: np.ndarray, capacity: np.ndarray,
                        t_end_s: float, strategy_cols: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """One round's ``device_rounds`` columns, in their fixed order."""
        n = len(buf.devices)
        reported = (buf.status == STATUS_CODE["ok"]) | (buf.status == STATUS_CODE["oom"])
        idle = np.where(reported, t_end_s - buf.t_report_s, NAN)
        duration = t_end_s - buf.t_start_s
        cols = {
            "round": np.full(n, buf.round, dtype=np.int64),
            "device_index": buf.devices.astype(np.int64),
            "group_index": group.astype(np.int64),
            "mode_slot": slots.astype(np.int64),
            "placement_index": placement.astype(np.int64),
            "status_code": buf.status.copy(),
            **plan_columns(buf.plans),
            "t_round_start_s": np.full(n, buf.t_start_s),
        }
        for c, v in buf.time_columns().items():
            cols[c] = v.copy()
        cols.update({
            "round_end_s": np.full(n, t_end_s),
            "idle_s": idle,
            "idle_fraction": idle / duration if duration > 0 else np.where(reported, 0.0, NAN),
            "step_time_s": buf.step_time_s.copy(),
            "straggler_factor": buf.straggler_factor.copy(),
            "compute_s": buf.compute_s.copy(),
            "flops_per_step": flops.astype(float),
            "background_load": load.astype(float),
            "bw_down_mbps": buf.bw_down_mbps.copy(),
            "bw_up_mbps": buf.bw_up_mbps.copy(),
            "bytes_down": buf.bytes_down.copy(),
            "bytes_up": buf.bytes_up.copy(),
            "memory_peak_bytes": memory.astype(float),
            "memory_capacity_bytes": capacity.astype(float),
            "loss_before": buf.loss_before.copy(),
            "loss_after": buf.loss_after.copy(),
            "lora_update_norm": buf.lora_update_norm.copy(),
            **{c: np.asarray((strategy_cols or {}).get(c, np.full(n, NAN)), dtype=float) for c in REWARD_COLUMNS},
            "credited": buf.status == STATUS_CODE["ok"],
        })
        for name in self.extra_names:
            cols[name] = buf.extra.get(name, np.full(n, NAN)).astype(float)
        return cols

    @staticmethod
    def _round_row(buf: RoundBuffer, cols: dict[str, np.ndarray], t_end_s: float, deadline_s: float) -> dict:
        """One ``rounds`` row: counts per status, device times, idle fractions, bytes, mean plan."""
        st = buf.status
        ok = st == STATUS_CODE["ok"]
        reported = ok | (st == STATUS_CODE["oom"])
        dev_time = buf.t_report_s[ok] - buf.t_start_s
        idle_mean = float(np.nanmean(cols["idle_fraction"])) if reported.any() else NAN
        return {
            "round": buf.round,
            "t_start_s": buf.t_start_s,
            "t_end_s": t_end_s,
            "duration_s": t_end_s - buf.t_start_s,
            "n_selected": len(buf.devices),
            "n_ok": int(ok.sum()),
            **{f"n_{s}": int((st == STATUS_CODE[s]).sum()) for s in STATUSES[1:]},
            "deadline_s": deadline_s,
            "median_device_time_s": float(np.median(dev_time)) if len(dev_time) else NAN,
            "max_device_time_s": float(dev_time.max()) if len(dev_time) else NAN,
            "mean_idle_fraction": idle_mean,
            "max_idle_fraction": float(np.nanmax(cols["idle_fraction"])) if reported.any() else NAN,
            **round_idle(dev_time, idle_mean),
            "bytes_down": int(buf.bytes_down.sum()),
            "bytes_up": int(buf.bytes_up.sum()),
            "mean_prune_ratio": float(cols["prune_ratio"][ok].mean()) if ok.any() else NAN,
            "mean_lora_rank": float(cols["lora_rank"][ok].mean()) if ok.any() else NAN,
            "accuracy": NAN,
            "test_loss": NAN,
        }

    def state(self) -> dict:
        """The rows recorded so far (checkpoints): per round, its device columns and its round row."""
        return {"device_rounds": [dict(c) for c in self._dev], "rounds": [dict(r) for r in self._rounds]}

    def set_state(self, st: dict) -> None:
        """Restore :meth:`state` onto a recorder of the same fleet."""
        self._dev = [dict(c) for c in st["device_rounds"]]
        self._rounds = [dict(r) for r in st["rounds"]]

    @property
    def rounds_done(self) -> int:
        return len(self._rounds)

    def device_labels(self, device_index: np.ndarray, group_index: np.ndarray) -> dict[str, pd.Categorical]:
        """device_id, group and device_type columns (categoricals over the whole fleet) for rows of devices."""
        type_names = sorted(set(self.group_types))
        type_codes = np.array([type_names.index(t) for t in self.group_types])[group_index]
        return {"device_id": pd.Categorical.from_codes(device_index, categories=self.ids),
                "group": pd.Categorical.from_codes(group_index, categories=self.group_labels),
                "device_type": pd.Categorical.from_codes(type_codes, categories=type_names)}

    def device_rounds_frame(self) -> pd.DataFrame:
        """The ``device_rounds`` table: the recorded columns with the index columns (group, power-mode
        slot, placement, status) replaced by categoricals, built in place once (no insert or drop
        copies: at 10 million rows each copy of the table is gigabytes)."""
        if not self._dev:
            return pd.DataFrame({})
        cols = {k: np.concatenate([c[k] for c in self._dev]) for k in self._dev[0]}
        if len(cols["round"]) == 0:
            return pd.DataFrame(cols)
        codes = ("group_index", "mode_slot", "placement_index", "status_code")
        mode_names = sorted(set(self.slot_names))
        mode_codes = np.array([mode_names.index(m) for m in self.slot_names])[cols["mode_slot"]]
        labels = {**self.device_labels(cols["device_index"], cols["group_index"]),
                  "power_mode": pd.Categorical.from_codes(mode_codes, categories=mode_names),
                  "placement": pd.Categorical.from_codes(cols["placement_index"], categories=self.placement_names),
                  "status": pd.Categorical.from_codes(cols["status_code"].astype(np.int64), categories=list(STATUSES))}
        lead = ("round", "device_index")  # then the labels, then every other recorded column in order
        ordered = {**{k: cols[k] for k in lead}, **labels, **{k: v for k, v in cols.items() if k not in (*lead, *codes)}}
        return pd.DataFrame(ordered, copy=False)

    def rounds_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._rounds)
