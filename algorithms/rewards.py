"""Per-device, per-round bandit rewards from the server's reports (``docs/method.md`` section 6).

FedSpine's reward (arXiv 2501.02438) is described as combining local-loss improvement, pruning
progress, the importance of the LoRA update and the device's completion time relative to the
others; its equation is not public. The functional form below is ours:

    rho_i = dL_i^w_loss * (1 + w_progress * pi_i) * I_i^w_importance * g(T_i)^w_time,   clipped to [0, 1]

    dL_i  = max(0, L_start - L_end) / L_start          local-loss improvement over the round
    pi_i  = (p_i^t - p_i^{t-1}) / P                    pruning progress (P = target sparsity)
    I_i   = ||B_i^t - B_i^{t-1}||_F / mean_j ||B_j^t - B_j^{t-1}||_F    LoRA-update importance ("I(B_total)")
    g(T)  = exp(-|T_i - T~| / T~)   (time_shape exp)   or   min(T_i, T~) / max(T_i, T~)   (ratio)
    T~    = median_j T_j (time_ref median, default), mean_j T_j, max_j T_j (max) or the 90th percentile
            of T_j (q90); j over the devices that reported ok this round. With max or q90 the reference
            is (about) the round's end, so a fast device scores higher by doing *more* work per round and
            a slow one by doing less; with median, the fastest devices score lowest.

With the default weights (all 1) this is exactly rho = dL * (1 + kappa pi) * I * g(T) with kappa = 1.
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

NonNeg = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]


class RewardWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loss: NonNeg = 1.0
    progress: NonNeg = 1.0
    importance: NonNeg = 1.0
    time: NonNeg = 1.0


class RewardSpec(BaseModel):
    """How a bandit strategy scores a device's round."""

    model_config = ConfigDict(extra="forbid")
    terms: Literal["auto", "full", "time_only"] = "auto"
    form: Literal["product", "sum"] = "product"
    weights: RewardWeights = Field(default_factory=RewardWeights)
    time_ref: Literal["median", "mean", "max", "q90"] = "median"
    time_shape: Literal["exp", "ratio"] = "exp"


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


def time_reference(t_ok_s: np.ndarray, how: str) -> float:
    """T~ of g(T): the median, mean, maximum or 90th percentile of the ok devices' completion times."""
    if how == "median":
        return float(np.median(t_ok_s))
    if how == "mean":
        return float(np.mean(t_ok_s))
    return float(np.max(t_ok_s)) if how == "max" else float(np.quantile(t_ok_s, 0.9))


def compute_rewards(reports: RoundReports, prev_ratio: np.ndarray, target: float, spec: RewardSpec,
                    learning: bool) -> dict[str, np.ndarray]:
    """Reward and its terms for every device in ``reports`` (aligned with ``reports.devices``).

    ``prev_ratio``: each device's sparsity before this round; ``target``: the target sparsity P.
    Returns the columns of :data:`algorithms.base.REWARD_COLUMNS`.
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
    T = reports.duration_s
    Tok = T[ok]
    ref = time_reference(Tok, spec.time_ref)
    if ref > 0:
        g = np.exp(-np.abs(T - ref) / ref) if spec.time_shape == "exp" else np.minimum(T, ref) / np.maximum(T, ref)
    else:
        g = np.ones(n)
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
