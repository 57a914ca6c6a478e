"""Per-device, per-round bandit rewards from the server's reports (``docs/method.md`` section 6).

FedSpine's reward (arXiv 2501.02438) is described as combining local-loss improvement, pruning
progress, the importance of the LoRA update and the device's completion time relative to the
others; its equation is not public. The functional form below is ours:

    rho_i = dL_i^w_loss * (1 + w_progress * pi_i) * I_i^w_importance * g(T_i)^w_time,   clipped to [0, 1]

    dL_i  = max(0, L_start - L_end) / L_start          local-loss improvement over the round
    pi_i  = (p_i^t - p_i^{t-1}) / P                    pruning progress (P = target sparsity)
    I_i   = ||B_i^t - B_i^{t-1}||_F / mean_j ||B_j^t - B_j^{t-1}||_F    LoRA-update importance ("I(B_total)")
    g(T)  = exp(-|T_i - T~| / T~)   (time_shape exp)   or   min(T_i, T~) / max(T_i, T~)   (ratio)
    T~    = median_j T_j (time_ref median, default), mean_j T_j, max_j T_j (max), the 90th percentile
            of T_j (q90), or per device the largest T_j of the *other* devices (others_max); j over the
            devices that reported ok this round. With max, q90 or others_max the reference is (about)
            the round's end, so a fast device scores higher by doing *more* work; measured worse than
            the median under the fleet-mean constraint (``docs/method.md`` section 6): the device that
            sets the end is never pushed to do less (max), and a large group of equally slow devices
            becomes its own reference (others_max).
    T_i   = the measured duration, or (``time_at: target``, the default with ``target`` arms under
            ``fleet_mean``) the duration predicted at the requested final ratio (:func:`predicted_times`).

With the default weights (loss, importance, time 1; progress 0) this is rho = dL * I * g(T); the progress
term (kappa = ``weights.progress``, 1 before issue 20) rewards pruning early, the same for every device only
when every device follows the same schedule, so it is off by default.
``form: sum`` is the weighted mean of the terms in [0, 1] instead:
``(w_l dL + w_p pi + w_i I / max_j I_j + w_t g) / (w_l + w_p + w_i + w_t)``.

Terms: ``full`` uses all four and needs a learner (losses and LoRA updates exist only with
``learning.kind: real``); ``time_only`` is the documented reward for timing-only runs: the loss and
importance terms are left out (recorded as NaN) and the product form becomes
``(1 + w_progress pi) / (1 + w_progress) * g(T)^w_time`` (divided by 1 + kappa so it stays in [0, 1]
without clipping); ``auto`` picks ``full`` with a learner and ``time_only`` without.

A selected device that did not report in time (dropped, late, out of memory) gets reward 0 and NaN
terms: the server saw no completion. ``cancelled`` devices (first_k) are not observed at all (NaN).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from algorithms.base import RoundReports
from devices.plan import Plan

NonNeg = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]


class RewardWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loss: NonNeg = 1.0
    progress: NonNeg = 0.0
    importance: NonNeg = 1.0
    time: NonNeg = 1.0


class RewardSpec(BaseModel):
    """How a bandit strategy scores a device's round."""

    model_config = ConfigDict(extra="forbid")
    terms: Literal["auto", "full", "time_only"] = "auto"
    form: Literal["product", "sum"] = "product"
    weights: RewardWeights = Field(default_factory=RewardWeights)
    time_ref: Literal["median", "mean", "max", "q90", "others_max"] = "median"
    time_shape: Literal["exp", "ratio"] = "exp"
    time_at: Literal["auto", "round", "target"] = "auto"


def resolve_terms(spec: RewardSpec, learning: bool) -> str:
    """``full`` or ``time_only`` for this run (``auto``: full exactly when a learner trains)."""
    if spec.terms == "auto":
        return "full" if learning else "time_only"
    return spec.terms


def check_reward(spec: RewardSpec, learning: bool, key: str = "reward") -> list[tuple[str, str]]:
    """A ``full`` reward needs losses and LoRA updates, i.e. a real learner."""
    if spec.terms == "full" and not learning:
        return [(f"{key}.terms", "'full' needs losses and LoRA updates from a learner, but learning.kind is 'none' "
                                 "(no learner); set learning.kind: real, or reward.terms: time_only or auto")]
    return []


def others_max(t_s: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per device, the largest completion time among the *other* ok devices (the round's end as the
    rest of the fleet sets it): the maximum, or for the device holding it alone, the second largest."""
    t_ok = np.sort(t_s[ok])
    top1, top2 = t_ok[-1], (t_ok[-2] if len(t_ok) > 1 else t_ok[-1])
    alone = ok & (t_s == top1) & (np.count_nonzero(t_s[ok] == top1) == 1)
    return np.where(alone, top2, top1)


def time_reference(t_ok_s: np.ndarray, how: str) -> float:
    """T~ of g(T): the median, mean, maximum or 90th percentile of the ok devices' completion times."""
    if how == "median":
        return float(np.median(t_ok_s))
    if how == "mean":
        return float(np.mean(t_ok_s))
    return float(np.max(t_ok_s)) if how == "max" else float(np.quantile(t_ok_s, 0.9))


def predicted_times(reports: RoundReports, at: list[Plan], step_flops) -> np.ndarray:
    """T^_i: each device's completion time predicted under plan ``at[i]`` from its measured round,

        T^_i = (T_i - C_i) + C_i F(at_i) / F(played_i)

    with T_i its duration, C_i its reported compute time and F the FLOPs of one local step
    (``step_flops``, the model's cost: no device knowledge). Transfers are kept as measured."""
    scale = np.array([step_flops(a) / max(step_flops(p), 1.0) for a, p in zip(at, reports.plans)])
    T, C = reports.duration_s, np.nan_to_num(reports.compute_s, nan=0.0)
    return (T - C) + C * scale


def compute_rewards(reports: RoundReports, prev_ratio: np.ndarray, target: float, spec: RewardSpec,
                    learning: bool, times_s: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Reward and its terms for every device in ``reports`` (aligned with ``reports.devices``).

    ``prev_ratio``: each device's sparsity before this round; ``target``: the target sparsity P;
    ``times_s``: the T_i of the time term (default: the measured durations; ``time_at: target``
    passes :func:`predicted_times`). Returns the columns of :data:`algorithms.base.REWARD_COLUMNS`.
    """
    n = len(reports)
    status = np.asarray(reports.status)
    ok = status == "ok"
    observed = status != "cancelled"
    nan = np.full(n, np.nan)
    out = {"reward": np.where(observed, 0.0, np.nan), "reward_loss": nan.copy(), "reward_progress": nan.copy(),
           "reward_importance": nan.copy(), "reward_time": nan.copy()}
    if not ok.any():
        return out
    terms = resolve_terms(spec, learning)
    w = spec.weights
    p_now = np.array([p.prune_ratio for p in reports.plans])
    progress = (p_now - prev_ratio) / target if target > 0 else np.zeros(n)
    progress = np.clip(progress, 0.0, None)
    T = reports.duration_s if times_s is None else np.asarray(times_s, dtype=float)
    Tok = T[ok]
    ref = others_max(T, ok) if spec.time_ref == "others_max" else np.full(n, time_reference(Tok, spec.time_ref))
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.exp(-np.abs(T - ref) / ref) if spec.time_shape == "exp" else np.minimum(T, ref) / np.maximum(T, ref)
    g = np.where(ref > 0, g, 1.0)
    out["reward_progress"][ok] = progress[ok]
    out["reward_time"][ok] = g[ok]
    if terms == "full":
        lb, la = reports.loss_before, reports.loss_after
        with np.errstate(invalid="ignore", divide="ignore"):
            dl = np.where(lb > 0, np.maximum(0.0, lb - la) / lb, 0.0)
        dl = np.nan_to_num(dl, nan=0.0)
        norms = np.nan_to_num(reports.lora_update_norm, nan=0.0)
        mean = float(norms[ok].mean())
        imp = norms / mean if mean > 0 else np.ones(n)
        out["reward_loss"][ok] = dl[ok]
        out["reward_importance"][ok] = imp[ok]
        if spec.form == "product":
            rho = dl ** w.loss * (1.0 + w.progress * progress) * imp ** w.importance * g ** w.time
        else:
            imax = float(imp[ok].max())
            imp_n = imp / imax if imax > 0 else np.ones(n)
            total = w.loss + w.progress + w.importance + w.time
            rho = (w.loss * dl + w.progress * progress + w.importance * imp_n + w.time * g) / total if total > 0 \
                else np.zeros(n)
    else:
        if spec.form == "product":
            rho = (1.0 + w.progress * progress) / (1.0 + w.progress) * g ** w.time
        else:
            total = w.progress + w.time
            rho = (w.progress * progress + w.time * g) / total if total > 0 else np.zeros(n)
    out["reward"][ok] = np.clip(rho[ok], 0.0, 1.0)
    return out
