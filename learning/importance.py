"""Group importance of frozen weights and the structured pruning step (``docs/method.md`` sections 2-3).

**LoRA-guided first-order estimate** (LoRAPrune, Zhang et al. 2024, arXiv 2305.18403, its code's
``compute_sensitivity``): with the LoRA gradients G_B = dL/dB and G_A = dL/dA that backprop already
produced,

    Ĝ_W = G_B·A + B·G_A − G_B·G_A                 (estimate of dL/dW for the frozen W)
    Î   = | Ĝ_W ⊙ (W + s·B·A) |                    (first-order Taylor loss change of removing W + sBA)

summed per group (a head's rows of Q/K/V and its columns of the attention output; an FFN channel's
row of the input layer(s) and column of the output layer). The per-matrix group vectors are smoothed
over local steps with an exponential moving average Ī ← β·Ī + (1 − β)·Î (β = 0.9, LoRAPrune's value;
the first observation initialises Ī) and, when ranking, L2-normalised per matrix and summed:
score_g = Σ_m Ī_m[g] / (‖Ī_m‖₂ + 1e-8). Keeping the EMA per group instead of per weight is exact
(a group sum of an EMA is the EMA of group sums) and keeps device state small.

Ablation criteria: ``magnitude`` (Î = |W + s·B·A| with the device's current LoRA update) and
``random`` (uniform scores from the device's stream). Matrices without LoRA (not a LoRA target, or a
layer outside the plan's LoRA layers) have no gradient estimate; their groups are scored by magnitude.

**Pruning** is monotone: only kept groups are ranked and removed, never restored. ``layer`` scope
removes k = min(floor(p·n + 1e-9), n − 1) groups of each kind in every unprotected layer
(``devices.plan.groups_to_remove``, the rule the cost model prices); ``global`` scope removes the
same total per kind, lowest normalised scores first across unprotected layers. Every layer keeps at
least one group of each kind.
"""

from __future__ import annotations

import numpy as np
import torch

from devices.plan import groups_to_remove
from learning.structure import ArchAdapter, Masks, MatrixSpec

EPS = 1e-8
KINDS = ("attn", "ffn")


def group_sums(elem: torch.Tensor, spec: MatrixSpec) -> np.ndarray:
    """Sum an element-wise importance matrix (sliced coordinates) over each kept group."""
    per = elem.sum(dim=1) if spec.axis == 0 else elem.sum(dim=0)
    return per.detach().reshape(-1, spec.width).sum(dim=1).double().cpu().numpy()


def lora_grad_importance(W: torch.Tensor, B: torch.Tensor, A: torch.Tensor, gB: torch.Tensor, gA: torch.Tensor,
                         scaling: float) -> torch.Tensor:
    """Î = |(G_B·A + B·G_A − G_B·G_A) ⊙ (W + s·B·A)| (all in the device's sliced coordinates)."""
    g_w = gB @ A + B @ gA - gB @ gA
    return (g_w * (W + scaling * (B @ A))).abs()


class ImportanceEMA:
    """A device's smoothed per-group importance: one vector per (layer, matrix path), full group coordinates."""

    def __init__(self, beta: float, state: dict | None = None):
        self.beta = beta
        self.values: dict[tuple[int, str], np.ndarray] = {}
        self.count: dict[tuple[int, str], int] = {}
        if state:
            self.values = {k: v.copy() for k, v in state["values"].items()}
            self.count = dict(state["count"])

    def update(self, key: tuple[int, str], keep: np.ndarray, sums: np.ndarray) -> None:
        """Fold one step's group sums (for the kept groups, in order) into the average."""
        full = np.zeros(len(keep))
        full[keep] = sums
        old = self.values.get(key)
        if old is None:
            self.values[key] = full
        else:
            old[keep] = self.beta * old[keep] + (1.0 - self.beta) * sums
        self.count[key] = self.count.get(key, 0) + 1

    def has(self, key: tuple[int, str]) -> bool:
        return key in self.values

    def state(self) -> dict:
        return {"values": {k: v.copy() for k, v in self.values.items()}, "count": dict(self.count)}


def combine(vectors: list[np.ndarray], keep: np.ndarray) -> np.ndarray:
    """score_g = Σ_m v_m[g] / (‖v_m[kept]‖₂ + eps); pruned groups get +inf (never chosen again)."""
    out = np.zeros(len(keep))
    for v in vectors:
        out += np.where(keep, v, 0.0) / (np.linalg.norm(v[keep]) + EPS)
    out[~keep] = np.inf
    return out


def prune(masks: Masks, scores: dict[tuple[int, str], np.ndarray], ratio: float, adapter: ArchAdapter,
          scope: str = "layer", protected: frozenset[int] = frozenset()) -> Masks:
    """New masks with sparsity ``ratio``; ``scores[(layer, kind)]`` = combined scores (full coordinates)."""
    out = masks.copy()
    layers = [li for li in range(adapter.num_layers) if li not in protected]
    for kind in KINDS:
        per_layer = groups_to_remove(ratio, adapter.n_groups(kind))
        keep = out.of(kind)
        if scope == "layer":
            for li in layers:
                extra = per_layer - int((~keep[li]).sum())
                if extra > 0:
                    order = np.argsort(scores[(li, kind)], kind="stable")
                    keep[li, order[:extra]] = False
            continue
        target = per_layer * len(layers)
        removed = int(sum((~keep[li]).sum() for li in layers))
        if target <= removed:
            continue
        cand = [(scores[(li, kind)][g], li, g) for li in layers for g in np.flatnonzero(keep[li])]
        cand.sort(key=lambda x: (x[0], x[1], x[2]))
        left = {li: int(keep[li].sum()) for li in layers}
        for _, li, g in cand:
            if removed >= target:
                break
            if left[li] > 1:
                keep[li, g] = False
                left[li] -= 1
                removed += 1
    return out
