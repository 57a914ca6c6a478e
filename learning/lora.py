"""LoRA on the shared, sliced model through peft, with per-device rank and layer subset.

``attach`` installs a device's structure (``Slicer.apply``), wraps exactly the chosen matrices of the
chosen layers in peft's LoRA ``Linear`` (the module ``peft.inject_adapter_in_model`` would build), and
loads the device's factors; ``detach`` restores the original frozen layers, which drops the wrappers, so the
next device starts from the same shared backbone. peft's LoRA computes ``W x + s·B(A x)``; the scaling
``s`` follows :func:`lora_scale`: ``alpha / r`` (``standard``, Hu et al. 2021) or ``alpha / sqrt(r)``
(``rslora``). Ranks may differ per matrix (per-layer LoRA ranks): then each matrix has its own ``r`` and
``s`` (:meth:`Attached.scale`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from learning.structure import ArchAdapter, Masks, Slicer, get_module, set_module

Key = tuple[int, str]  # (layer, matrix path inside the block)
SCALINGS = ("standard", "rslora")


def lora_scale(alpha: float, rank: int, rule: str = "standard") -> float:
    """LoRA's output scaling ``s`` in ``W x + s·B(A x)`` for rank ``r``.

    ``standard``: ``s = alpha / r`` (Hu et al. 2021, LoRA, arXiv 2106.09685). ``rslora``: ``s = alpha / sqrt(r)``
    (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA", arXiv 2312.03732,
    peft's ``use_rslora``). Under ``alpha / r`` an Adam step on ``B`` moves ``s·B·A`` by about
    ``alpha·lr·sqrt(r)/r``, so a device on a high rank learns more slowly than one on a low rank; under
    ``alpha / sqrt(r)`` the step size no longer depends on the rank, which keeps a per-device rank from
    also acting as a per-device learning rate. Note ``alpha = a·sqrt(r0)`` under ``rslora`` gives the same
    ``s`` at rank ``r0`` as ``alpha = a·r0`` under ``standard``.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if rule == "standard":
        return alpha / rank
    if rule == "rslora":
        return alpha / math.sqrt(rank)
    raise ValueError(f"unknown LoRA scaling {rule!r}; allowed: {', '.join(SCALINGS)}")


@dataclass
class Attached:
    """Handles of the injected LoRA modules of one device, by (layer, path).

    ``scales`` holds each module's LoRA scaling ``s = lora_scale(alpha, r_key, rule)`` (ranks may differ per key).
    """

    modules: dict[Key, nn.Module]
    scales: dict[Key, float]
    param_ptrs: frozenset[int] = frozenset()  # storages of every model parameter while attached

    def scale(self, key: Key) -> float:
        """LoRA scaling ``s`` of ``key`` (:func:`lora_scale`)."""
        return self.scales[key]

    def rank(self, key: Key) -> int:
        """LoRA rank of ``key`` (rows of its ``lora_A``)."""
        return int(self.modules[key].lora_A["default"].weight.shape[0])

    @property
    def scaling(self) -> float:
        """The single scaling of a uniform-rank attachment (``ValueError`` if the ranks differ or none)."""
        vals = set(self.scales.values())
        if len(vals) != 1:
            raise ValueError(f"no single LoRA scaling: {sorted(vals)}; use Attached.scale(key)")
        return vals.pop()

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


def attach(model: nn.Module, adapter: ArchAdapter, slicer: Slicer, masks: Masks, keys: list[Key],
           rank: int | dict[Key, int], alpha: float, factors: dict[Key, tuple[torch.Tensor, torch.Tensor]],
           dropout: float = 0.0, layers: dict | None = None, scaling: str = "standard") -> Attached:
    """Slice the model to ``masks`` and put LoRA with ``factors`` on ``keys``.

    ``rank`` is one rank for every key or a rank per key (``{key: r}``, every key present); key ``k``
    gets scaling ``lora_scale(alpha, rank[k], scaling)``. Each chosen (sliced) linear layer is wrapped in
    peft's LoRA ``Linear`` directly, with its own ``r``, the shared ``lora_alpha`` and ``use_rslora``
    following ``scaling``, so peft's own scaling is the same per key. This is the module
    ``peft.inject_adapter_in_model`` builds for a target (same class, same forward), without that call's
    walk over every module of the model to match target names (15 ms per attachment on the 2-layer
    proxy; a local update attaches once, and again after a pruning step). The model's own parameters
    are frozen when it is loaded, so peft's marking of every non-LoRA parameter as frozen has nothing
    to do.
    """
    from peft import LoraConfig  # noqa: PLC0415
    from peft.tuners.lora.layer import Linear as LoraLinear  # noqa: PLC0415

    ranks = dict.fromkeys(keys, rank) if isinstance(rank, int) else {k: int(rank[k]) for k in keys}
    if any(r < 1 for r in ranks.values()):
        raise ValueError(f"LoRA ranks must be >= 1, got {ranks}")
    scales = {k: lora_scale(alpha, r, scaling) for k, r in ranks.items()}
    slicer.apply(masks, layers)
    if not keys:
        return Attached({}, scales, _param_ptrs(model))
    cfg = LoraConfig(r=max(ranks.values()), lora_alpha=alpha, lora_dropout=dropout, use_rslora=scaling == "rslora")
    blocks = adapter.blocks(model)
    mods: dict[Key, nn.Module] = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # peft's random init is overwritten below
        for li, path in keys:
            base = get_module(blocks[li], path)
            if not isinstance(base, nn.Linear):
                raise TypeError(f"LoRA target {(li, path)} is a {type(base).__name__}, not a linear layer")
            m = LoraLinear(base, "default", config=cfg, r=ranks[(li, path)], lora_alpha=alpha)
            _check_built(m, (li, path), ranks[(li, path)], scales[(li, path)], dropout)
            set_module(blocks[li], path, m)
            B, A = factors[(li, path)]
            m.lora_B["default"].weight.copy_(B)
            m.lora_A["default"].weight.copy_(A)
            mods[(li, path)] = m
    return Attached(mods, scales, _param_ptrs(model))


def _check_built(m: nn.Module, key: Key, rank: int, scale: float, dropout: float) -> None:
    """The wrapper peft built has the rank, scaling and dropout asked for (a peft whose constructor
    ignored the config would otherwise train silently at alpha / r without dropout)."""
    drop = m.lora_dropout["default"]
    got = (m.r["default"], m.scaling["default"], getattr(drop, "p", 0.0))
    if got[0] != rank or not math.isclose(got[1], scale, rel_tol=1e-12) or not math.isclose(got[2], dropout):
        raise RuntimeError(f"peft built LoRA for {key} with (rank, scaling, dropout) {got}, expected "
                           f"{(rank, scale, dropout)}; check the installed peft (>= 0.19)")


def _param_ptrs(model: nn.Module) -> frozenset[int]:
    return frozenset(p.untyped_storage().data_ptr() for p in model.parameters())


def detach(model: nn.Module, slicer: Slicer) -> None:
    """Put the original frozen layers back, dropping the LoRA wrappers (around sliced copies, or around
    the original layers where a matrix keeps every group)."""
    slicer.restore()
