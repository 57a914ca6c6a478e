"""Findings computed from the result files: the answers a report gives, not only its numbers.

Every function here reads finished runs (:class:`sim.views.results.RunData`) and returns plain data
that :mod:`sim.views.report` renders:

* :func:`fastest_to_target`: which policy reaches the target accuracy first and by how much. Over
  several seeds the margin is the paired difference of the runner-up and the fastest over the seeds
  both ran, with its 95% Student t interval (:func:`sim.views.stats.paired_difference`); an interval
  containing 0 is *within noise*. With one seed there is no interval and the finding says so. With no
  meaningful target (at or below the majority-class rate) no speed-up is claimed.
* :func:`round_setters`: which device type sets the round. A round ends at its last report, so the
  device whose report comes last (the reporting device with the latest ``t_report_s``) decides its
  length; the finding counts, per type, in how many rounds that device was of that type.
* :func:`idle_by_type`: the mean idle fraction ``idle_s / round duration`` of the reporting devices
  of each type (a fast board that waits for a slow one is idle).
* :func:`choices_by_type`: what each policy settled on: the modal prune ratio and LoRA rank of the
  plans of each device type over the last 20% of rounds (at least one round), with the share of
  plans that chose the mode. For a bandit policy this is the arm it converged to.
* :func:`evaluation_facts`: dataset sizes, the evaluation set's majority-class rate and the binomial
  standard error ``sqrt(a (1 - a) / n)`` of one accuracy reading.
* :func:`strategy_parameters`: each policy's parameters with every default filled in.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sim.views.compare import is_missing
from sim.views.results import RunData, binomial_se, eval_size, majority_rate
from sim.views.stats import paired_difference

REPORTED = ("ok", "oom")
"""Device statuses whose report reached the server (``sim.records``: idle is defined for them)."""

LAST_SHARE = 0.2
"""The share of the last rounds over which :func:`choices_by_type` takes the modal plan."""


@dataclass(frozen=True)
class Fastest:
    """The answer to "which policy reaches the target first?" as one sentence plus its figures."""

    sentence: str
    policy: str | None = None
    runner_up: str | None = None
    ratio: float = math.nan
    margin_s: float = math.nan
    low_s: float = math.nan
    high_s: float = math.nan
    within_noise: bool | None = None
    never: list[str] = field(default_factory=list)


def fastest_to_target(table: pd.DataFrame, groups: list[str] | None = None,
                      seeds: list[int] | None = None) -> Fastest:
    """The fastest group (policy) to the target of a :func:`sim.views.compare.compare_table`. ``groups`` and
    ``seeds`` tag its rows (default: each row its own group, one seed). The margin is the runner-up's time
    minus the fastest's: paired over seeds when a group ran several, else the single difference."""
    target = table.attrs.get("target_accuracy")
    if target is None:
        return Fastest(f"No speed-up is claimed: {table.attrs.get('target_source', 'no target')}.")
    groups = list(groups) if groups is not None else [str(p) for p in table["policy"]]
    seeds = list(seeds) if seeds is not None else [0] * len(table)
    by: dict[str, dict[int, float]] = {}
    for g, s, t in zip(groups, seeds, table["time_to_target_s"]):
        by.setdefault(g, {})[int(s)] = math.nan if is_missing(t) else float(t)
    means = {g: float(np.mean([v for v in d.values() if math.isfinite(v)])) for g, d in by.items()
             if any(math.isfinite(v) for v in d.values())}
    never = [g for g in by if g not in means]
    head = f"Target accuracy {100 * target:.1f}% ({table.attrs.get('target_source')})"
    if not means:
        return Fastest(f"{head}: no policy reached it.", never=never)
    ranked = sorted(means, key=lambda g: (means[g], list(by).index(g)))
    best = ranked[0]
    if len(ranked) == 1:
        tail = f"; {', '.join(never)} never reached it" if never else ""
        return Fastest(f"{head}: {best} reaches it at {_s(means[best])} of simulated time{tail}.", best, never=never)
    second = ranked[1]
    p = paired_difference(by[second], by[best])
    ratio = means[second] / means[best] if means[best] > 0 else math.nan
    if p.n >= 2 and math.isfinite(p.low):
        noise = " (within noise: these seeds cannot tell them apart)" if p.within_noise else ""
        margin = (f"{_s(p.mean)} sooner than {second}, 95% interval [{_s(p.low)}, {_s(p.high)}] over "
                  f"{p.n} paired seeds{noise}")
    else:
        margin = (f"{_s(means[second] - means[best])} sooner than {second} (one seed: no interval; "
                  f"run more seeds to know whether the gap is larger than the noise)")
    ratio_txt = f", {ratio:.2f}x faster" if math.isfinite(ratio) else ""
    tail = f" {', '.join(never)} never reached it." if never else ""
    return Fastest(f"{head}: {best} is fastest, {margin}{ratio_txt}.{tail}", best, second, ratio,
                   p.mean if p.n else means[second] - means[best], p.low, p.high,
                   p.within_noise if p.n >= 2 and math.isfinite(p.low) else None, never)


def _s(seconds: float) -> str:
    """Seconds as text, in hours above an hour."""
    if not math.isfinite(seconds):
        return "-"
    return f"{seconds / 3600:.2f} h" if abs(seconds) >= 3600 else f"{seconds:.0f} s"


def _reported(dev: pd.DataFrame) -> pd.DataFrame:
    if "status" not in dev or not len(dev):
        return dev.iloc[:0]
    return dev[dev["status"].astype(str).isin(REPORTED)]


def round_setters(dev: pd.DataFrame) -> pd.Series:
    """Per round, the device type of the reporting device whose report came last (ties: the first row).
    Indexed by round; rounds where no device reported are left out."""
    rep = _reported(dev)
    if not len(rep):
        return pd.Series(dtype=str)
    last = rep.loc[rep.groupby("round", sort=True)["t_report_s"].idxmax()]
    return pd.Series(last["device_type"].astype(str).to_numpy(), index=last["round"].to_numpy(), name="setter")


def idle_by_type(dev: pd.DataFrame) -> dict[str, float]:
    """Device type -> mean idle fraction of its reporting devices over all rounds (NaN-free types only)."""
    rep = _reported(dev)
    if not len(rep) or "idle_fraction" not in rep:
        return {}
    m = rep.groupby(rep["device_type"].astype(str), sort=True)["idle_fraction"].mean()
    return {str(t): float(v) for t, v in m.items() if math.isfinite(v)}


@dataclass(frozen=True)
class Choice:
    """The modal plan of one device type over the last rounds."""

    prune_ratio: float
    prune_share: float
    lora_rank: int
    rank_share: float
    rounds: tuple[int, int]


def _mode(values: pd.Series) -> tuple[Any, float]:
    """The most frequent value (ties: the smallest) and its share of ``values``."""
    counts = values.value_counts()
    top = int(counts.max())
    value = min(v for v, c in counts.items() if int(c) == top)
    return value, top / len(values)


def choices_by_type(dev: pd.DataFrame) -> dict[str, Choice]:
    """Device type -> its modal prune ratio and LoRA rank over the last ``ceil(0.2 R)`` rounds (R: rounds
    recorded; at least one), over every selected device's plan."""
    if not len(dev) or "prune_ratio" not in dev:
        return {}
    rounds = sorted(int(r) for r in dev["round"].unique())
    k = max(1, math.ceil(LAST_SHARE * len(rounds)))
    last = dev[dev["round"].isin(rounds[-k:])]
    out = {}
    for t, g in last.groupby(last["device_type"].astype(str), sort=True):
        p, ps = _mode(g["prune_ratio"].round(4))
        r, rs = _mode(g["lora_rank"])
        out[str(t)] = Choice(float(p), ps, int(r), rs, (rounds[-k], rounds[-1]))
    return out


@dataclass(frozen=True)
class EvalFacts:
    """What one accuracy reading rests on (``learning_info`` of ``summary.json``)."""

    dataset: str
    model: str
    n_train: float
    n_test: float
    n_eval: float
    majority_rate: float
    labels: str

    def se_at(self, accuracy: float) -> float:
        return binomial_se(accuracy, self.n_eval)


def evaluation_facts(run: RunData) -> EvalFacts | None:
    """The dataset and evaluation facts of a real-learning run (None for a timing-only run)."""
    info = run.summary.get("learning_info") or {}
    if not info:
        return None

    def n(key: str) -> float:
        v = info.get(key)
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else math.nan

    labels = info.get("label_names")
    return EvalFacts(str(info.get("dataset", "-")), str(info.get("model", "-")), n("n_train"), n("n_test"),
                     eval_size(run.summary), majority_rate(run.summary),
                     ", ".join(map(str, labels)) if isinstance(labels, list) else "-")


def strategy_parameters(run: RunData) -> tuple[str, dict[str, Any]]:
    """(algorithm name, its parameters with every default filled in) as the run used them. A scenario
    written before parameters were resolved is completed from the strategy's ``Params`` schema."""
    from sim.loader import resolved_params  # noqa: PLC0415

    algo = run.scenario.get("algorithm") or {}
    name = str(algo.get("name", "-"))
    return name, resolved_params(name, {**(algo.get("defaults") or {}), **(algo.get("params") or {})})


@dataclass
class GroupFindings:
    """The findings of one policy (a group of runs that differ only in seed), pooled over its runs."""

    group: str
    runs: list[RunData]
    setters: dict[str, tuple[int, int]]
    idle: dict[str, float]
    choices: dict[str, Choice]
    algorithm: str
    params: dict[str, Any]
    final_accuracy: float


def group_findings(group: str, runs: list[RunData]) -> GroupFindings:
    """:class:`GroupFindings` of ``runs``: round setters summed over runs, idle over every reporting row,
    modal choices over the last rounds of every run, the first run's strategy parameters and the mean
    final accuracy."""
    counts: Counter[str] = Counter()
    total = 0
    frames = [r.device_rounds for r in runs]
    for dev in frames:
        s = round_setters(dev)
        counts.update(s.tolist())
        total += len(s)
    pooled = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    name, params = strategy_parameters(runs[0])
    accs = [float(r.summary["final_accuracy"]) for r in runs
            if isinstance(r.summary.get("final_accuracy"), (int, float))]
    ordered = {t: (counts[t], total) for t in sorted(counts, key=lambda t: (-counts[t], t))}
    return GroupFindings(group, runs, ordered, idle_by_type(pooled), choices_by_type(pooled), name, params,
                         float(np.mean(accs)) if accs else math.nan)
