"""Layer pruning: whole transformer blocks removed from a BERT/RoBERTa- or LLaMA-family classifier.

A layer keep-vector ``keep`` (one boolean per block, input side first) says which blocks a device
runs. Removing block l makes the residual stream skip it: the hidden state that entered block l
goes on to block l + 1 unchanged (both families return the new hidden state from each block, so a
skipped block is the identity on the hidden state). How many blocks a ratio removes is the rule
shared with head and channel pruning, ``devices.plan.groups_to_remove`` (k = min(floor(ρ·L + 1e-9),
L − 1): every model keeps at least one block), so the cost model and the learner count the same.

Three ways to run a model with blocks removed, which the tests show compute the same logits:

- :func:`export_pruned`: a new, smaller model (a deep copy whose block list holds only the kept
  blocks, ``config.num_hidden_layers`` and the LLaMA attention ``layer_idx`` renumbered) — what a
  device would store and serve;
- :class:`BlockDropper`: in place on the shared backbone, for the learner: each removed block is
  replaced by a parameter-free :class:`RemovedBlock` placeholder inside a :class:`SparseBlockList`,
  whose iteration yields only the kept blocks (so neither the Hugging Face forward, which loops over
  the list, nor the packed BERT forward ever runs a removed block) while indexing and module names keep
  their full-model numbering (LoRA keys ``(layer, path)`` stay valid); ``restore()`` puts the
  original list back;
- :func:`skip_blocks`: the reference, the full model with forward hooks that replace each removed
  block's output by its input.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
from torch import nn

from devices.plan import groups_to_remove


def layers_to_remove(ratio: float, num_layers: int) -> int:
    """Blocks a model of ``num_layers`` loses at layer ratio ``ratio`` (the shared group rule)."""
    return groups_to_remove(ratio, num_layers)


def block_holder(model: nn.Module, family: str) -> tuple[nn.Module, str]:
    """The module holding the block list and the list's attribute name ("bert" or "llama" family)."""
    if family == "bert":
        return model.base_model.encoder, "layer"
    return model.model, "layers"


class RemovedBlock(nn.Module):
    """Placeholder of a removed block: no parameters; calling it returns the hidden state unchanged."""

    def forward(self, hidden_states, *args, **kwargs):  # noqa: ANN001, ARG002 (any block signature)
        return hidden_states


class SparseBlockList(nn.ModuleList):
    """A block list with :class:`RemovedBlock` placeholders that iterates over the kept blocks only.

    ``list[i]`` and ``named_modules()`` keep the full-model indices; ``for b in list`` and slices
    (which Hugging Face's LLaMA forward takes) skip the placeholders.
    """

    def __iter__(self) -> Iterator[nn.Module]:
        return (m for m in super().__iter__() if not isinstance(m, RemovedBlock))


def check_keep(keep: np.ndarray, num_layers: int) -> np.ndarray:
    """A boolean keep-vector of length ``num_layers`` that keeps at least one block (else ``ValueError``)."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (num_layers,) or not keep.any():
        raise ValueError(f"layer keep-vector must have {num_layers} entries with at least one True, got {keep}")
    return keep


class BlockDropper:
    """Removes blocks of the shared model in place (placeholders) and puts them back."""

    def __init__(self, model: nn.Module, family: str):
        self.holder, self.attr = block_holder(model, family)
        self.original: nn.ModuleList | None = None

    def apply(self, keep: np.ndarray) -> None:
        """Install a :class:`SparseBlockList` that keeps the blocks where ``keep`` is True."""
        self.restore()
        blocks = getattr(self.holder, self.attr)
        keep = check_keep(keep, len(blocks))
        if keep.all():
            return
        self.original = blocks
        setattr(self.holder, self.attr,
                SparseBlockList([b if k else RemovedBlock() for b, k in zip(blocks, keep)]))

    def restore(self) -> None:
        if self.original is not None:
            setattr(self.holder, self.attr, self.original)
            self.original = None


def export_pruned(model: nn.Module, family: str, keep: np.ndarray) -> nn.Module:
    """A deep copy of ``model`` holding only the kept blocks, renumbered 0..k-1."""
    out = copy.deepcopy(model)
    holder, attr = block_holder(out, family)
    blocks = getattr(holder, attr)
    keep = check_keep(keep, len(blocks))
    kept = [b for b, k in zip(blocks, keep) if k]
    for i, b in enumerate(kept):
        att = getattr(b, "self_attn", None)
        if att is not None and hasattr(att, "layer_idx"):
            att.layer_idx = i
    setattr(holder, attr, nn.ModuleList(kept))
    out.config.num_hidden_layers = len(kept)
    if getattr(out.config, "layer_types", None) is not None:
        out.config.layer_types = [t for t, k in zip(out.config.layer_types, keep) if k]
    return out


@contextlib.contextmanager
def skip_blocks(model: nn.Module, family: str, keep: np.ndarray) -> Iterator[None]:
    """Reference semantics: while open, each removed block returns its input hidden state."""
    holder, attr = block_holder(model, family)
    blocks = getattr(holder, attr)
    keep = check_keep(keep, len(blocks))

    def identity(_module, args, kwargs, _output):  # noqa: ANN001, ANN202
        return args[0] if args else kwargs["hidden_states"]

    handles = [b.register_forward_hook(identity, with_kwargs=True) for b, k in zip(blocks, keep) if not k]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
