"""What one device does in one round: the :class:`Plan` a strategy hands out.

Kept in ``devices`` because the cost model prices a plan; ``algorithms`` produces plans and
``sim`` carries them out (dependencies point one way: sim -> algorithms -> devices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RATIO_TOLERANCE = 1e-9
"""Slack added to p·n before flooring, so that a float rendering of k/n removes k groups.

A ratio written as a decimal (0.29) is stored as the nearest binary double, and p·n can land a few
ulps below the integer k the ratio names (0.29 * 100 = 28.999999999999996). For layer widths below
10^6 that error is under 1e-9, so flooring p·n + 1e-9 recovers k; a ratio meant to lie within 1e-9 / n
below k / n is treated as k / n.
"""


PRUNERS = ("comp",)
"""Pruners a plan may name instead of the learner's configured criterion (``learning.comp``)."""


@dataclass(frozen=True)
class Plan:
    """One device's work for one round.

    Attributes:
        prune_ratio: cumulative structured sparsity after this round's pruning, in [0, 1): the
            fraction of attention-head groups and of FFN channels removed in every layer.
        lora_rank: LoRA rank r (>= 1).
        lora_layers: indices (0 = nearest the input) of the layers that carry LoRA, or ``None``
            for all layers. LEGEND-style depth d = the top d layers.
        local_steps: local optimiser steps tau this round.
        batch_size: samples per step.
        layer_ranks: per-layer LoRA ranks, one per entry of ``lora_layers`` (LEGEND-style rank
            distribution), or ``None`` for ``lora_rank`` on every LoRA layer. When given,
            ``lora_rank`` must equal ``max(layer_ranks)``.
        rank_prune_decay: HetLoRA rank self-pruning factor gamma in (0, 1]: after local training the
            device keeps only the first floor(gamma * r) rank components when the tail carries less
            than ``rank_prune_tol`` of the update's Frobenius norm. 1.0 turns it off.
        rank_prune_tol: the tail-norm fraction below which the device self-prunes its rank.
        layer_ratio: cumulative share of whole transformer blocks removed (layer pruning, COMP), in
            [0, 1): ``groups_to_remove(layer_ratio, L)`` blocks go; ``prune_ratio`` then applies inside
            the remaining blocks. 0 (default) removes none.
        pruner: how the device ranks what it removes: ``None`` (the learner's configured criterion) or
            one of :data:`PRUNERS` (``comp``: the post-training COMP pruner, ``learning/comp.py``, the
            only one that removes blocks, so ``layer_ratio`` > 0 needs it).
        split_layers: split learning (``devices/split_cost.py``): the device runs the bottom
            ``split_layers`` blocks (and the embeddings) and the server the rest; ``None`` (default):
            not split, the device trains the whole model.
        merge_features: split learning only: the server merges the step's features of every merging
            device into one batch for the top (MergeSFL), so their steps meet at a per-step barrier;
            False: the server serves each device's features on their own (SplitFed).
    """

    prune_ratio: float
    lora_rank: int
    lora_layers: tuple[int, ...] | None
    local_steps: int
    batch_size: int
    layer_ranks: tuple[int, ...] | None = None
    rank_prune_decay: float = 1.0
    rank_prune_tol: float = 0.0
    layer_ratio: float = 0.0
    pruner: str | None = None
    split_layers: int | None = None
    merge_features: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1), got {self.prune_ratio}")
        if self.lora_rank < 1 or self.local_steps < 0 or self.batch_size < 1:
            raise ValueError(f"invalid plan {self}")
        if self.lora_layers is not None and len(self.lora_layers) == 0:
            raise ValueError("lora_layers must be None (all layers) or non-empty")
        if self.layer_ranks is not None:
            if self.lora_layers is None or len(self.layer_ranks) != len(self.lora_layers):
                raise ValueError("layer_ranks needs lora_layers of the same length")
            if min(self.layer_ranks) < 1 or max(self.layer_ranks) != self.lora_rank:
                raise ValueError(f"layer_ranks {self.layer_ranks} must be >= 1 with max == lora_rank {self.lora_rank}")
        if not 0.0 < self.rank_prune_decay <= 1.0 or not 0.0 <= self.rank_prune_tol < 1.0:
            raise ValueError(f"rank_prune_decay must be in (0, 1] and rank_prune_tol in [0, 1): {self}")
        if not 0.0 <= self.layer_ratio < 1.0 or self.pruner not in (None, *PRUNERS):
            raise ValueError(f"layer_ratio must be in [0, 1) and pruner one of {PRUNERS} or None: {self}")
        if self.layer_ratio > 0 and self.pruner != "comp":
            raise ValueError(f"layer_ratio > 0 needs pruner 'comp' (layer importance is COMP's): {self}")
        if self.split_layers is not None and (self.split_layers < 1 or self.layer_ratio > 0):
            raise ValueError(f"split_layers must be >= 1 and layer_ratio 0 in a split plan: {self}")
        if self.merge_features and self.split_layers is None:
            raise ValueError(f"merge_features needs split_layers: {self}")

    def rank_at(self, layer: int) -> int:
        """LoRA rank of target-model layer ``layer`` (``lora_rank`` unless ``layer_ranks`` is set)."""
        if self.layer_ranks is None:
            return self.lora_rank
        return self.layer_ranks[self.lora_layers.index(layer)]


def groups_to_remove(prune_ratio: float, n_groups: int) -> int:
    """Groups of one kind (attention groups or FFN channels) a layer of ``n_groups`` loses at ``prune_ratio``.

    k = min(floor(p·n + 1e-9), n − 1): whole groups only, the float rendering of k/n removes k (see
    :data:`RATIO_TOLERANCE`), and every layer keeps at least one group of each kind. The cost model
    (``devices.cost.kept_shape``) and the real pruning step (``learning.importance.prune``) both
    count removed groups with this function, so the two clocks agree on what a plan removes.
    """
    if not 0.0 <= prune_ratio <= 1.0 or n_groups < 1:
        raise ValueError(f"need prune_ratio in [0, 1] and n_groups >= 1, got {prune_ratio}, {n_groups}")
    return min(math.floor(prune_ratio * n_groups + RATIO_TOLERANCE), n_groups - 1)


def top_layers(depth: int, num_layers: int) -> tuple[int, ...]:
    """LoRA depth ``depth`` counted from the output: the indices of the top ``depth`` layers."""
    if not 1 <= depth <= num_layers:
        raise ValueError(f"LoRA depth must be in [1, {num_layers}], got {depth}")
    return tuple(range(num_layers - depth, num_layers))


def split_total_ratio(total: float, layer_share: float = 0.5) -> tuple[float, float]:
    """(layer_ratio, neuron_ratio) that together remove ``total`` of the block parameters [inferred split].

    COMP prunes layers first and neurons inside the remaining layers; a block keeps (1 − ρ_layer)(1 − ρ_neuron)
    of its parameters, so with ρ_layer = layer_share · total the neuron ratio is
    ρ_neuron = 1 − (1 − total) / (1 − ρ_layer). Both are rounded down to whole blocks and groups where they
    are applied (:func:`groups_to_remove`).
    """
    if not 0.0 <= total < 1.0 or not 0.0 <= layer_share <= 1.0:
        raise ValueError(f"need total in [0, 1) and layer_share in [0, 1], got {total}, {layer_share}")
    layer = layer_share * total
    return layer, max(0.0, 1.0 - (1.0 - total) / (1.0 - layer))
