"""What one device does in one round: the :class:`Plan` a strategy hands out.

Kept in ``devices`` because the cost model prices a plan; ``algorithms`` produces plans and
``sim`` carries them out (dependencies point one way: sim -> algorithms -> devices).
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """

    prune_ratio: float
    lora_rank: int
    lora_layers: tuple[int, ...] | None
    local_steps: int
    batch_size: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1), got {self.prune_ratio}")
        if self.lora_rank < 1 or self.local_steps < 0 or self.batch_size < 1:
            raise ValueError(f"invalid plan {self}")
        if self.lora_layers is not None and len(self.lora_layers) == 0:
            raise ValueError("lora_layers must be None (all layers) or non-empty")


def top_layers(depth: int, num_layers: int) -> tuple[int, ...]:
    """LoRA depth ``depth`` counted from the output: the indices of the top ``depth`` layers."""
    if not 1 <= depth <= num_layers:
        raise ValueError(f"LoRA depth must be in [1, {num_layers}], got {depth}")
    return tuple(range(num_layers - depth, num_layers))
