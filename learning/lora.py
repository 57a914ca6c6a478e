"""LoRA on the shared, sliced model through peft, with per-device rank and layer subset.

``attach`` installs a device's structure (``Slicer.apply``), injects peft LoRA modules
(``peft.inject_adapter_in_model``) on exactly the chosen matrices of the chosen layers, and loads the
device's factors; ``detach`` restores the original frozen layers, which drops the wrappers, so the
next device starts from the same shared backbone. peft's LoRA computes ``W x + s·B(A x)`` with
``s = lora_alpha / r`` (fixed, not rsLoRA).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from learning.structure import ArchAdapter, Masks, Slicer

Key = tuple[int, str]  # (layer, matrix path inside the block)


@dataclass
class Attached:
    """Handles of the injected LoRA modules of one device, by (layer, path)."""

    modules: dict[Key, nn.Module]
    scaling: float
    param_ptrs: frozenset[int] = frozenset()  # storages of every model parameter while attached

    def factors(self) -> dict[Key, tuple[torch.Tensor, torch.Tensor]]:
        """Detached copies of (B, A) per matrix."""
        return {k: (m.lora_B["default"].weight.detach().clone(), m.lora_A["default"].weight.detach().clone())
                for k, m in self.modules.items()}

    def parameters(self) -> Iterable[nn.Parameter]:
        for m in self.modules.values():
            yield m.lora_A["default"].weight
            yield m.lora_B["default"].weight


def lora_keys(adapter: ArchAdapter, targets: Iterable[str], layers: Iterable[int]) -> list[Key]:
    """The (layer, path) pairs that carry LoRA for these canonical targets and layers."""
    t = set(targets)
    return [(li, s.path) for li in sorted(set(layers)) for s in adapter.matrices if s.target in t]


def attach(model: nn.Module, adapter: ArchAdapter, slicer: Slicer, masks: Masks, keys: list[Key], rank: int,
           alpha: float, factors: dict[Key, tuple[torch.Tensor, torch.Tensor]], dropout: float = 0.0,
           layers: dict | None = None) -> Attached:
    """Slice the model to ``masks`` and put rank-``rank`` LoRA with ``factors`` on ``keys``."""
    from peft import LoraConfig, inject_adapter_in_model  # noqa: PLC0415

    slicer.apply(masks, layers)
    if not keys:
        return Attached({}, alpha / rank, _param_ptrs(model))
    prefix = re.escape(adapter.block_prefix(model))
    alts = "|".join(f"{li}\\.{re.escape(p)}" for li, p in keys)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=rf"^{prefix}\.({alts})$")
    with torch.random.fork_rng(devices=[]):  # peft's random init is overwritten below
        inject_adapter_in_model(cfg, model)
    if hasattr(model, "peft_config"):
        del model.peft_config
    blocks = adapter.blocks(model)
    mods: dict[Key, nn.Module] = {}
    with torch.no_grad():
        for li, path in keys:
            m = blocks[li]
            for part in path.split("."):
                m = getattr(m, part)
            B, A = factors[(li, path)]
            m.lora_B["default"].weight.copy_(B)
            m.lora_A["default"].weight.copy_(A)
            mods[(li, path)] = m
    return Attached(mods, alpha / rank, _param_ptrs(model))


def _param_ptrs(model: nn.Module) -> frozenset[int]:
    return frozenset(p.untyped_storage().data_ptr() for p in model.parameters())


def detach(model: nn.Module, slicer: Slicer) -> None:
    slicer.restore()
    if hasattr(model, "peft_config"):
        del model.peft_config
