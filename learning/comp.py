"""COMP: post-training hybrid-granularity structured pruning with mask tuning (no gradients).

Source: Xu, Xu, Xu, Liao, Yao, Xie, "Lightweight and Post-Training Structured Pruning for On-Device
Large Language Models" (arXiv 2501.15255, 2025). Only the abstract is public; what it states, and
what this module implements of it:

1. **coarse**: whole layers (transformer blocks) are removed first, chosen by an importance score;
2. **fine**: inside each remaining layer, neurons of the dense layers are removed, ranked by a new
   *matrix-condition-based* importance metric;
3. **mask tuning** recovers accuracy instead of fine-tuning, so memory stays low; it is post-training
   (no gradients through the backbone) and needs only a small calibration set.

Everything below that the abstract does not say is marked **[inferred]**; each part is a function of
its own so it can be swapped.

**Layer importance** [inferred: the abstract names no layer score; this is the Block Influence of
ShortGPT, Men et al. 2024, arXiv 2403.03853]: over the calibration tokens t (padding excluded),

    BI_l = 1 − mean_t cos(x_t^in, x_t^out)

with x^in / x^out the hidden state entering / leaving block l. A block that hardly turns the residual
stream (BI near 0) is the least important; the k = ``devices.plan.groups_to_remove(ρ_layer, L)``
kept, unprotected blocks of lowest BI are removed (``learning/layers.py``).

**Neuron importance** [inferred: the form of the metric]. A "neuron" is one prunable group of the
learner's structure (``learning/structure.py``): an FFN channel (width d = 1) or an attention group
(its d = q·head_dim columns of the attention output). Both are *input columns* of the block's output
matrix W (attention output; BERT output dense / LLaMA down_proj), whose input activations are the
neurons' outputs X (tokens × columns). The layer output is Y = X Wᵀ = Σ_g X_g W_gᵀ. With the
calibration Gram G = XᵀX (ridge-regularised, G_λ = G + λ·tr(G)/n·I, λ = 10⁻²) the score of group g is

    S_g = ((G_λ⁻¹)_gg)⁻¹               (Schur complement: covariance of X_g after regressing out the others)
    s_g = sqrt(tr(W_g S_g W_gᵀ))       (output energy of what no other group can reproduce)

For d = 1 this is s_j = ‖w_j‖·‖x_j‖ / sqrt(VIF_j), with VIF_j = G_jj·(G⁻¹)_jj the j-th diagonal of the
inverse of the column-normalised Gram. That diagonal is a per-column lower bound of the condition
number of the normalised Gram (κ ≥ λ_max ≥ 1 times λ_max(Ĝ⁻¹) ≥ max_j VIF_j), so the metric is the
neuron's output magnitude discounted by how much it makes the activation matrix ill-conditioned:
a neuron that another neuron (or a combination) reproduces ranks lowest even when it is large, and
among independent neurons the larger contribution ranks higher. Groups are removed with the
learner's rule (``learning.importance.prune``, per layer, at least one group kept).

**Mask tuning** [inferred: per-group scaling solved in closed form, as the mask tuning of Kwon et al.
2022, "A Fast Post-Training Pruning Framework for Transformers", arXiv 2204.09656: layer-wise
reconstruction by linear least squares]: for the kept groups K, scales m minimise the calibration
reconstruction error of the output matrix,

    m = argmin ‖Σ_{g∈K} m_g X_g W_gᵀ − Σ_g X_g W_gᵀ‖_F² ,  i.e.  (Q_KK + μI) m = Q_K· 1,
    Q_gk = Σ over the (g, k) block of G ⊙ (WᵀW)          (= ⟨X_g W_gᵀ, X_k W_kᵀ⟩_F), μ = 10⁻⁶·mean diag Q,

computed from the same Gram, so mask tuning needs no gradients and no extra data. The scales
multiply the kept groups' columns of W (``Masks.scales``). Scores and scales use the block's live
weight (W + s·B·A when the matrix carries LoRA), so a device prunes the model it holds.

**Passes and memory**: one forward pass over the calibration batches measures BI (only when blocks
are to be removed); then, for each remaining block l, a pass that stops inside block l collects its
two Grams, scores it and frees them; mask tuning repeats that pass for each block that lost groups.
So at most one block's Grams (float64, (q·d)² + f² entries) are alive at a time, at the price of
about L full forward passes over a small calibration set [inferred: the schedule]. Peak memory
(tensor accounting, :attr:`CompResult.peak_bytes`) = parameters + the largest block's Grams + twice
the largest activation a hook saw (its input and the tensor computed from it); nothing is stored for
a backward pass. ``devices.cost.comp_memory_bytes`` prices the same terms on the target model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from learning.importance import prune
from learning.layers import layers_to_remove
from learning.structure import ArchAdapter, Masks, MatrixSpec, get_module

RIDGE = 1e-2
"""λ: ridge of the activation Gram relative to its mean diagonal [inferred]."""
TUNE_RIDGE = 1e-6
"""μ: ridge of the mask-tuning normal equations relative to their mean diagonal [inferred]."""

Batch = dict  # {"input_ids": [B, S], "attention_mask": [B, S]}


@dataclass
class CompResult:
    """Outcome of one COMP pruning: new masks, the scores that chose them, and the memory it held."""

    masks: Masks
    layer_importance: np.ndarray  # BI per block (NaN: not measured, the block was already removed)
    scores: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    peak_bytes: float = 0.0


class _Meter:
    """Bytes of the largest activation a hook saw."""

    def __init__(self) -> None:
        self.act = 0

    def see(self, t: torch.Tensor) -> None:
        self.act = max(self.act, t.numel() * t.element_size())


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Activations ``[..., w]`` as token rows ``[T, w]`` (float64), padding positions dropped."""
    flat = x.reshape(-1, x.shape[-1]).double()
    return flat if mask is None else flat[mask.reshape(-1).bool()]


def output_spec(adapter: ArchAdapter, kind: str) -> MatrixSpec:
    """The block's output matrix of a kind: the axis-1 matrix whose input columns are the groups."""
    return next(s for s in adapter.matrices if s.kind == kind and s.axis == 1)


def live_weight(module: nn.Module) -> torch.Tensor:
    """The weight a (possibly LoRA-wrapped) linear layer applies: W, or W + s·B·A under peft."""
    base = getattr(module, "base_layer", None)
    if base is None:
        return module.weight.detach()
    A, B = module.lora_A["default"].weight, module.lora_B["default"].weight
    return (base.weight + module.scaling["default"] * (B @ A)).detach()


def _calibrate(model: nn.Module, batches: Iterable[Batch], handles: list, current: dict,
               forward: Callable[[Batch], object] | None) -> None:
    """Run every calibration batch (its padding mask visible to the hooks in ``current``), then remove ``handles``."""
    try:
        for batch in batches:
            current["mask"] = batch.get("attention_mask")
            (forward or (lambda b: model(**b)))(batch)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def block_influence(model: nn.Module, adapter: ArchAdapter, batches: Iterable[Batch], meter: _Meter | None = None,
                    forward: Callable[[Batch], object] | None = None) -> np.ndarray:
    """BI_l = 1 − mean over calibration tokens of cos(block input, block output); NaN for removed blocks."""
    blocks = adapter.blocks(model)
    sums, counts = np.zeros(len(blocks)), np.zeros(len(blocks))
    current: dict[str, torch.Tensor | None] = {"mask": None}

    def hook(li: int):
        def fn(_m, args, kwargs, out):  # noqa: ANN001, ANN202
            x_in = args[0] if args else kwargs["hidden_states"]
            x_out = out[0] if isinstance(out, tuple) else out
            if meter is not None:
                meter.see(x_in)
            cos = nn.functional.cosine_similarity(_rows(x_in, current["mask"]), _rows(x_out, current["mask"]), dim=-1)
            sums[li] += float(cos.sum())
            counts[li] += cos.numel()
        return fn

    handles = [b.register_forward_hook(hook(li), with_kwargs=True) for li, b in enumerate(blocks)]
    _calibrate(model, batches, handles, current, forward)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 1.0 - sums / np.maximum(counts, 1), np.nan)


def choose_layers(bi: np.ndarray, keep: np.ndarray, ratio: float, protected: frozenset[int] = frozenset()) -> np.ndarray:
    """New layer keep-vector: remove kept, unprotected blocks of lowest BI until ``ratio``'s count is gone."""
    out = keep.copy()
    need = layers_to_remove(ratio, len(keep)) - int((~keep).sum())
    cand = [li for li in np.argsort(np.nan_to_num(bi, nan=np.inf), kind="stable") if out[li] and li not in protected]
    for li in cand[:max(need, 0)]:
        if out.sum() > 1:
            out[li] = False
    return out


class _Stop(Exception):
    """Raised by the last hook of a one-layer calibration pass: the blocks above need not run."""


@torch.no_grad()
def layer_grams(model: nn.Module, adapter: ArchAdapter, layer: int, batches: Iterable[Batch],
                meter: _Meter | None = None, forward: Callable[[Batch], object] | None = None) -> dict:
    """G = XᵀX (float64) of the inputs of block ``layer``'s output matrices (attention output, FFN output),
    keyed by kind. Each calibration forward stops once the FFN output's input is seen (blocks above skipped)."""
    block = adapter.blocks(model)[layer]
    grams: dict[str, torch.Tensor] = {}
    current: dict[str, torch.Tensor | None] = {"mask": None}

    def hook(kind: str):
        def fn(_m, args):  # noqa: ANN001, ANN202
            if meter is not None:
                meter.see(args[0])
            x = _rows(args[0], current["mask"])
            grams[kind] = grams[kind] + x.T @ x if kind in grams else x.T @ x
            if kind == "ffn":
                raise _Stop
        return fn

    handles = [get_module(block, output_spec(adapter, kind).path).register_forward_pre_hook(hook(kind))
               for kind in ("attn", "ffn")]

    def run(batch: Batch) -> None:
        try:
            (forward or (lambda b: model(**b)))(batch)
        except _Stop:
            pass

    _calibrate(model, batches, handles, current, run)
    return grams


def _blocks(M: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """The n diagonal d x d blocks of an (n d) x (n d) matrix, ``[n, d, d]``."""
    ar = torch.arange(n)
    return M.view(n, d, n, d)[ar, :, ar, :]


def condition_scores(G: torch.Tensor, W: torch.Tensor, width: int, ridge: float = RIDGE) -> np.ndarray:
    """s_g = sqrt(tr(W_g S_g W_gᵀ)), S_g = ((G_λ⁻¹)_gg)⁻¹ (module docstring), one per group of ``width`` columns."""
    n = G.shape[0] // width
    G = G.double()
    G_l = G + ridge * (torch.trace(G) / G.shape[0]).clamp_min(1e-30) * torch.eye(G.shape[0], dtype=G.dtype)
    S = torch.linalg.inv(_blocks(torch.linalg.inv(G_l), n, width))  # [n, d, d]
    Wg = W.double().reshape(W.shape[0], n, width).permute(1, 0, 2)  # [n, h, d]
    WtW = Wg.transpose(1, 2) @ Wg  # [n, d, d]
    return torch.sqrt((WtW * S).sum(dim=(1, 2)).clamp_min(0.0)).numpy()


def tuned_scales(G: torch.Tensor, W: torch.Tensor, width: int, kept: np.ndarray, ridge: float = TUNE_RIDGE) -> np.ndarray:
    """Mask tuning: m solving (Q_KK + μI) m = Q_K· 1 for the groups ``kept`` (bool over the current groups)."""
    n = G.shape[0] // width
    Wd = W.double()
    Q = (G.double() * (Wd.T @ Wd)).view(n, width, n, width).sum(dim=(1, 3))
    k = torch.from_numpy(np.flatnonzero(kept))
    Qkk = Q[k][:, k]
    mu = ridge * float(Qkk.diagonal().mean().clamp_min(1e-30))
    rhs = Q[k].sum(dim=1)
    return torch.linalg.solve(Qkk + mu * torch.eye(len(k), dtype=Q.dtype), rhs).numpy()


def layer_scores(model: nn.Module, adapter: ArchAdapter, masks: Masks, layer: int, grams: dict) -> dict:
    """Condition-based scores of block ``layer`` per kind, full group coordinates (+inf: already pruned)."""
    block = adapter.blocks(model)[layer]
    out = {}
    for kind in ("attn", "ffn"):
        keep = masks.of(kind)[layer]
        spec = output_spec(adapter, kind)
        full = np.full(len(keep), np.inf)
        full[keep] = condition_scores(grams[kind], live_weight(get_module(block, spec.path)), spec.width)
        out[kind] = full
    return out


def layer_scales(model: nn.Module, adapter: ArchAdapter, before: Masks, after: Masks, layer: int, grams: dict,
                 scales: dict[str, np.ndarray]) -> None:
    """Mask tuning of block ``layer`` (module docstring): multiply ``after``'s kept groups' entries of ``scales``
    by the tuned m; a kind whose groups were not pruned in this block keeps its scales."""
    block = adapter.blocks(model)[layer]
    for kind in ("attn", "ffn"):
        old, new = before.of(kind)[layer], after.of(kind)[layer]
        if new.sum() == old.sum():
            continue
        spec = output_spec(adapter, kind)
        W = live_weight(get_module(block, spec.path))
        scales[kind][layer, new] *= tuned_scales(grams[kind], W, spec.width, new[old])


def comp_prune(model: nn.Module, adapter: ArchAdapter, masks: Masks, batches: list[Batch], layer_ratio: float,
               neuron_ratio: float, install: Callable[[Masks], None], protected: frozenset[int] = frozenset(),
               scope: str = "layer", tune: bool = True, forward: Callable[[Batch], object] | None = None) -> CompResult:
    """One COMP pruning of a model installed at ``masks``: remove blocks to ``layer_ratio`` (BI), then groups to
    ``neuron_ratio`` in the remaining blocks (condition-based scores), then mask tuning.

    ``install(masks)`` puts the model into a structure (the caller's slicer, with LoRA if any); it is called
    after the layer step so that the Grams see the remaining blocks as they will run. Monotone: removed
    blocks and groups stay removed. ``forward`` runs one calibration batch (default ``model(**batch)``).
    """
    meter = _Meter()
    L = adapter.num_layers
    bi = np.full(L, np.nan)
    new = masks.copy()
    if layers_to_remove(layer_ratio, L) > int((~masks.kept_layers()).sum()):
        bi = block_influence(model, adapter, batches, meter, forward)
        new.layers = choose_layers(bi, masks.kept_layers(), layer_ratio, protected)
        install(new)
    live = [li for li in range(L) if new.kept_layers()[li]]
    gram_bytes = 0
    inf = {kind: np.full(new.of(kind).shape[1], np.inf) for kind in ("attn", "ffn")}
    scores = {(li, kind): inf[kind] for li in range(L) for kind in ("attn", "ffn")}
    for li in live:  # one layer's Grams in memory at a time
        grams = layer_grams(model, adapter, li, batches, meter, forward)
        gram_bytes = max(gram_bytes, sum(g.numel() * g.element_size() for g in grams.values()))
        scores.update({(li, kind): v for kind, v in layer_scores(model, adapter, new, li, grams).items()})
    out = prune(new, scores, neuron_ratio, adapter, scope, protected | (frozenset(range(L)) - frozenset(live)))
    if tune:
        scales = {kind: (new.scales or {}).get(kind, np.ones(new.of(kind).shape)).copy() for kind in ("attn", "ffn")}
        for li in live:
            if any(out.of(k)[li].sum() < new.of(k)[li].sum() for k in ("attn", "ffn")):
                layer_scales(model, adapter, new, out, li, layer_grams(model, adapter, li, batches, meter, forward),
                             scales)
        out.scales = scales
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return CompResult(out, bi, scores, float(params + gram_bytes + 2 * meter.act))
