"""Prunable structure of a transformer: which rows and columns form an attention head or an FFN channel.

An :class:`ArchAdapter` names, for one architecture family, the linear layers of every transformer
block and how each is coupled to the two kinds of prunable group (coupled projections are pruned
together so every tensor shape stays valid, as in LLM-Pruner, arXiv 2305.11627, and LoRAPrune, arXiv
2305.18403):

- **attention group** ``g``: BERT/RoBERTa: head ``g`` = its ``head_dim`` rows of query, key and
  value and the same columns of the attention output. LLaMA (grouped-query attention): key/value
  head ``g`` together with the ``num_heads / num_kv_heads`` query heads that read it, i.e. rows
  ``[g q d, (g+1) q d)`` of q_proj (q query heads per group, d = head_dim), rows ``[g d, (g+1) d)``
  of k_proj and v_proj, and the q_proj row range as columns of o_proj. Removing a whole group keeps
  the query/kv ratio, so the model's ``repeat_kv`` still lines up.
- **FFN channel** ``c``: BERT: row ``c`` of the intermediate dense layer and column ``c`` of the
  output dense layer; LLaMA: row ``c`` of gate_proj and up_proj and column ``c`` of down_proj.

:class:`Masks` holds a device's keep-masks (a few hundred booleans per model). :class:`Slicer`
physically slices the shared frozen model to a mask (:func:`slice_linear`, the layer
``transformers.pytorch_utils.prune_linear_layer`` builds,
since transformers 5.x has no ``prune_heads``) and restores it afterwards, so one backbone serves
every device; sliced layers may be cached per mask.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from learning.layers import BlockDropper

BERT_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
LLAMA_TYPES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True)
class MatrixSpec:
    """One prunable linear layer inside a transformer block.

    ``path`` is the attribute path inside the block; ``target`` the canonical LoRA target name
    (``devices.workload.LORA_TARGETS``); ``kind`` "attn" or "ffn"; ``axis`` 0 when groups own
    output rows (the layer's ``weight`` rows), 1 when they own input columns; ``width`` the number of
    rows/columns one group owns.
    """

    path: str
    target: str
    kind: str
    axis: int
    width: int


@dataclass(frozen=True)
class ArchAdapter:
    """How one architecture family exposes blocks, prunable matrices and the classification head."""

    family: str  # "bert" or "llama"
    num_layers: int
    attn_groups: int  # heads (BERT) or key/value groups (LLaMA)
    ffn_channels: int
    head_dim: int
    q_per_group: int
    matrices: tuple[MatrixSpec, ...]
    head_module: str  # attribute of the model holding the classifier ("classifier" / "score")

    @classmethod
    def for_model(cls, model: nn.Module) -> "ArchAdapter":
        cfg = model.config
        mtype = getattr(cfg, "model_type", None)
        if mtype in BERT_TYPES:
            d = cfg.hidden_size // cfg.num_attention_heads
            return cls("bert", cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size, d, 1, (
                MatrixSpec("attention.self.query", "query", "attn", 0, d),
                MatrixSpec("attention.self.key", "key", "attn", 0, d),
                MatrixSpec("attention.self.value", "value", "attn", 0, d),
                MatrixSpec("attention.output.dense", "attn_out", "attn", 1, d),
                MatrixSpec("intermediate.dense", "ffn_in", "ffn", 0, 1),
                MatrixSpec("output.dense", "ffn_out", "ffn", 1, 1),
            ), "classifier")
        if mtype in LLAMA_TYPES:
            d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            kv = cfg.num_key_value_heads or cfg.num_attention_heads
            q = cfg.num_attention_heads // kv
            return cls("llama", cfg.num_hidden_layers, kv, cfg.intermediate_size, d, q, (
                MatrixSpec("self_attn.q_proj", "query", "attn", 0, q * d),
                MatrixSpec("self_attn.k_proj", "key", "attn", 0, d),
                MatrixSpec("self_attn.v_proj", "value", "attn", 0, d),
                MatrixSpec("self_attn.o_proj", "attn_out", "attn", 1, q * d),
                MatrixSpec("mlp.gate_proj", "ffn_in", "ffn", 0, 1),
                MatrixSpec("mlp.up_proj", "ffn_in", "ffn", 0, 1),
                MatrixSpec("mlp.down_proj", "ffn_out", "ffn", 1, 1),
            ), "score")
        raise ValueError(f"model_type {mtype!r} has no pruning adapter; allowed: {', '.join(BERT_TYPES + LLAMA_TYPES)}")

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The transformer blocks, input side first, by full-model index (a removed block's slot holds its
        placeholder, ``learning.layers.RemovedBlock``)."""
        blocks = model.base_model.encoder.layer if self.family == "bert" else model.model.layers
        return [blocks[i] for i in range(len(blocks))]

    def block_prefix(self, model: nn.Module) -> str:
        """Qualified module name of the block list (e.g. for a peft target regex)."""
        if self.family == "bert":
            return f"{model.base_model_prefix}.encoder.layer"
        return "model.layers"

    def n_groups(self, kind: str) -> int:
        return self.attn_groups if kind == "attn" else self.ffn_channels

    def full_mask(self) -> "Masks":
        return Masks(np.ones((self.num_layers, self.attn_groups), bool), np.ones((self.num_layers, self.ffn_channels), bool))


@dataclass
class Masks:
    """Keep-masks of one device: ``attn`` (layers x attention groups), ``ffn`` (layers x channels).

    Optional (COMP, ``learning/comp.py``): ``layers`` keeps whole blocks (None: all; removed blocks are
    skipped, ``learning/layers.py``); ``scales`` maps a kind to per-group mask-tuning scales (layers x
    groups, None: 1) that multiply the kept groups' columns of the attention-output / FFN-output matrix.
    """

    attn: np.ndarray
    ffn: np.ndarray
    layers: np.ndarray | None = None
    scales: dict[str, np.ndarray] | None = None

    def of(self, kind: str) -> np.ndarray:
        return self.attn if kind == "attn" else self.ffn

    def copy(self) -> "Masks":
        return Masks(self.attn.copy(), self.ffn.copy(), None if self.layers is None else self.layers.copy(),
                     None if self.scales is None else {k: v.copy() for k, v in self.scales.items()})

    def key(self) -> str:
        """Content hash (cache key for sliced layers)."""
        h = hashlib.blake2b(digest_size=12)
        h.update(np.packbits(self.attn).tobytes())
        h.update(np.packbits(self.ffn).tobytes())
        if self.layers is not None and not self.layers.all():
            h.update(b"layers" + np.packbits(self.layers).tobytes())
        for kind in sorted(self.scales or {}):
            h.update(kind.encode() + np.ascontiguousarray(self.scales[kind], dtype=np.float64).tobytes())
        return h.hexdigest()

    def kept_layers(self) -> np.ndarray:
        """Boolean per block: the block runs (all True without layer pruning)."""
        return np.ones(len(self.attn), bool) if self.layers is None else self.layers

    def sparsity_parts(self) -> tuple[float, float]:
        return float(1.0 - self.attn.mean()), float(1.0 - self.ffn.mean())


def group_index(spec: MatrixSpec, keep: np.ndarray) -> torch.Tensor:
    """Row/column indices (full coordinates) that the kept groups own in one matrix."""
    groups = np.flatnonzero(keep)
    if spec.width == 1:
        return torch.from_numpy(groups.astype(np.int64))
    idx = (groups[:, None] * spec.width + np.arange(spec.width)[None, :]).reshape(-1)
    return torch.from_numpy(idx.astype(np.int64))


def get_module(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_module(root, parent) if parent else root, name, module)


def slice_linear(layer: nn.Linear, idx: torch.Tensor, axis: int) -> nn.Linear:
    """A frozen copy of ``layer`` keeping rows (axis 0) or columns (axis 1) ``idx``, in the layer's dtype
    and on its device.

    The layer ``transformers.pytorch_utils.prune_linear_layer`` builds (which, unlike this, converts to
    torch's default dtype: the same for float32 models), built with ``torch.nn.utils.skip_init``: no
    throwaway random init, which cost more than the copy itself (a 1536 x 384 FFN matrix of the packaged
    MiniLM: 2.8 ms with the init, 1.1-1.6 ms without, on this project's 2-core machine), and the global
    torch RNG is never touched, so slicing, and so the slice cache, cannot shift the seeded dropout
    stream of a local update."""
    idx = idx.to(layer.weight.device)
    with torch.no_grad():
        w = layer.weight.index_select(axis, idx)
        b = None if layer.bias is None else (layer.bias if axis == 1 else layer.bias.index_select(0, idx))
        out = torch.nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=b is not None, device=w.device,
                                       dtype=w.dtype)
        out.weight.copy_(w)
        if b is not None:
            out.bias.copy_(b)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def scale_columns(layer: nn.Linear, spec: MatrixSpec, scale: np.ndarray) -> nn.Linear:
    """A frozen copy of an input-grouped (axis 1) layer whose kept groups' columns are multiplied by ``scale``."""
    out = copy.deepcopy(layer)  # (nn.Linear() would draw its init from the global RNG)
    factor = torch.from_numpy(np.repeat(np.asarray(scale, dtype=np.float64), spec.width))
    with torch.no_grad():
        out.weight.mul_(factor.to(out.weight)[None, :])
    return out


@dataclass
class Slicer:
    """Swaps the shared model's prunable layers for sliced copies and back.

    The model's own layers are never modified; ``apply(masks)`` installs sliced frozen copies (cached
    by mask content, ``cache_size`` masks), ``restore()`` puts the originals back. Also keeps the
    attention modules' head-count attributes consistent with the sliced widths.
    """

    model: nn.Module
    adapter: ArchAdapter
    cache_size: int = 8
    _orig: dict[tuple[int, str], nn.Linear] = field(default_factory=dict, init=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False)
    _attrs: dict[int, dict[str, int]] = field(default_factory=dict, init=False)
    applied: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._dropper = BlockDropper(self.model, self.adapter.family)
        for li, block in enumerate(self.adapter.blocks(self.model)):
            for spec in self.adapter.matrices:
                self._orig[(li, spec.path)] = get_module(block, spec.path)
            att = self._attention(block)
            self._attrs[li] = {k: getattr(att, k) for k in ("num_attention_heads", "all_head_size", "num_heads",
                                                            "num_key_value_heads") if hasattr(att, k)}

    def _attention(self, block: nn.Module) -> nn.Module:
        return block.attention.self if self.adapter.family == "bert" else block.self_attn

    def original(self, layer: int, path: str) -> nn.Linear:
        return self._orig[(layer, path)]

    def sliced_layers(self, masks: Masks) -> dict[tuple[int, str], nn.Linear]:
        """Sliced frozen copies of every prunable layer for ``masks`` (cached by content)."""
        key = masks.key()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        out: dict[tuple[int, str], nn.Linear] = {}
        for (li, path), lin in self._orig.items():
            spec = next(s for s in self.adapter.matrices if s.path == path)
            keep = masks.of(spec.kind)[li]
            out[(li, path)] = lin if keep.all() else slice_linear(lin, group_index(spec, keep), spec.axis)
            if masks.scales is not None and spec.axis == 1 and spec.kind in masks.scales:
                out[(li, path)] = scale_columns(out[(li, path)], spec, masks.scales[spec.kind][li][keep])
        if self.cache_size > 0:
            self._cache[key] = out
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def apply(self, masks: Masks, layers: dict[tuple[int, str], nn.Linear] | None = None) -> None:
        """Install ``layers`` (default: the sliced copies for ``masks``) into the shared model."""
        if self.applied is not None:
            self.restore()
        layers = layers if layers is not None else self.sliced_layers(masks)
        blocks = self.adapter.blocks(self.model)
        for (li, path), lin in layers.items():
            set_module(blocks[li], path, lin)
        if masks.layers is not None:
            self._dropper.apply(masks.layers)
        for li, block in enumerate(blocks):
            kept = int(masks.attn[li].sum())
            att = self._attention(block)
            a = self.adapter
            if "num_attention_heads" in self._attrs[li]:
                att.num_attention_heads = kept * a.q_per_group
            if "all_head_size" in self._attrs[li]:
                att.all_head_size = kept * a.q_per_group * a.head_dim
            if "num_heads" in self._attrs[li]:
                att.num_heads = kept * a.q_per_group
            if "num_key_value_heads" in self._attrs[li]:
                att.num_key_value_heads = kept
        self.applied = masks.key()

    def restore(self) -> None:
        """Put the original layers (and attributes) back."""
        self._dropper.restore()
        blocks = self.adapter.blocks(self.model)
        for (li, path), lin in self._orig.items():
            set_module(blocks[li], path, lin)
        for li, block in enumerate(blocks):
            att = self._attention(block)
            for k, v in self._attrs[li].items():
                setattr(att, k, v)
        self.applied = None


def zero_pruned(model: nn.Module, adapter: ArchAdapter, masks: Masks) -> None:
    """Reference semantics of a mask, in place: zero the pruned groups' rows (and biases) and columns.

    A pruned head's value rows are zero, so it adds nothing to the attention output; a pruned FFN
    channel's input row is zero (GELU(0) = SiLU(0) = 0), so it adds nothing through the output
    column. Used by the tests to show physical slicing computes the same function.
    """
    with torch.no_grad():
        for li, block in enumerate(adapter.blocks(model)):
            for spec in adapter.matrices:
                keep = masks.of(spec.kind)[li]
                drop = np.flatnonzero(~keep)
                if not len(drop):
                    continue
                idx = group_index(spec, ~keep)
                lin = get_module(block, spec.path)
                if spec.axis == 0:
                    lin.weight[idx, :] = 0
                    if lin.bias is not None:
                        lin.bias[idx] = 0
                else:
                    lin.weight[:, idx] = 0
