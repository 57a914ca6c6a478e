"""Device capacity as a server can estimate it: from the step times devices report (prior-free).

A device's measured per-step time is ``compute_s / local_steps`` of its last ok report. The rank
tiers of HetLoRA / FlexLoRA and LEGEND's capacity rule read these estimates; nothing here looks at
device profiles or types. :func:`proportional_batches` splits a total batch in proportion to measured
throughput (MergeSFL's batch regulation, ``algorithms/mergesfl.py``).
"""

from __future__ import annotations

import numpy as np

from algorithms.base import RoundReports


class StepTimes:
    """Last reported per-step time of every device (NaN until its first ok report)."""

    def __init__(self, n_devices: int):
        self.step_s = np.full(n_devices, np.nan)

    def observe(self, reports: RoundReports) -> np.ndarray:
        """Record the round's ok reports; returns the indices (into reports) that were recorded."""
        ok = np.flatnonzero((np.asarray(reports.status) == "ok") & (reports.compute_s > 0))
        for j in ok:
            plan = reports.plans[j]
            if plan.local_steps > 0:
                self.step_s[int(reports.devices[j])] = reports.compute_s[j] / plan.local_steps
        return ok


def rank_tiers(step_s: np.ndarray, ranks: list[int]) -> np.ndarray:
    """Ranks by speed quantile: the fastest 1/K of ``step_s`` get the largest of the K ranks, the
    slowest 1/K the smallest (ties broken by order). ``step_s`` must be finite."""
    ranks = sorted(ranks)
    k = len(ranks)
    order = np.argsort(-step_s, kind="stable")  # slowest first
    tier = np.empty(len(step_s), dtype=np.int64)
    tier[order] = (np.arange(len(step_s)) * k) // max(1, len(step_s))
    return np.array(ranks)[tier]


def proportional_batches(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` (largest remainder; ties to the lower index)."""
    share = total * weights / weights.sum()
    out = np.floor(share).astype(np.int64)
    rest = total - int(out.sum())
    if rest > 0:
        out[np.argsort(-(share - out), kind="stable")[:rest]] += 1
    return out
