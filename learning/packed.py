"""Fast forward of a BERT-family classifier on unpadded ("packed") batches.

The reference path (``model(input_ids, attention_mask)``) pads every sequence of a batch to the
longest one, so every linear layer, the bulk of the FLOPs, also multiplies padding rows: with
Rotten Tomatoes at ``max_len`` 64 and batch 16, about half of the rows are padding. This path runs
the same modules of the same (sliced, LoRA-wrapped) model on the concatenation of the real tokens
only:

* embeddings: ``word + token_type(0) + position`` with positions restarting at 0 in every sequence,
  then the model's own LayerNorm and dropout (``BertEmbeddings.forward`` with explicit position ids);
* every block: query/key/value on ``[T, hidden]`` (``T`` = real tokens), then attention per sequence:
  the heads are scattered into a ``[B, L_max]`` layout only for ``softmax(q kᵀ / sqrt(d)) v``
  (``scaled_dot_product_attention`` with a key-padding mask and the model's attention dropout), and
  gathered back to ``[T, ·]``; attention output, residual + LayerNorm, FFN, residual + LayerNorm on
  ``[T, ·]`` again;
* the pooler reads each sequence's first token (``[CLS]``), then the classifier's dropout and dense.

Same math as the reference forward: per token, every operation is the one HF's ``BertLayer`` applies
(tested: logits and LoRA gradients within fp32 rounding of the padded forward). Only dropout differs:

* **Dropout masks** come from a :class:`DropoutMasks` source when one is given (the learner passes one
  per device and round, seeded from the run seed): uniform 16-bit integers from a numpy generator,
  an element kept when ``u >= k`` with ``k = round(p * 65536)``, kept values scaled by
  ``1 / (1 - k / 65536)``. So the drop probability is ``p`` rounded to a multiple of 1/65536
  (0.1 -> 0.100006) and the expectation of every activation is unchanged, as with ``nn.Dropout``.
  Measured on this machine, torch's CPU ``bernoulli_`` costs about as much per element as a
  384-wide matmul row; with dropout on, it was 32% of a local update of the packaged MiniLM
  (torch.profiler, batch 16, 10 steps). Without a source, ``F.dropout`` is used.
* **Attention** with dropout is computed explicitly (``softmax(q kᵀ / sqrt(d) + mask) v`` with the
  dropout mask on the probabilities, as ``BertSelfAttention`` does); without dropout it goes to
  ``scaled_dot_product_attention`` with the key-padding mask.

So with dropout on, the packed and padded paths draw different (equally distributed) masks.

Supported: ``model_type == "bert"`` with absolute position embeddings and no decoder or cross
attention (the packaged MiniLM and ``tiny-bert``); :func:`supports` says so, and the learner falls
back to the reference path otherwise (RoBERTa offsets its positions by the padding index; LLaMA has
rotary embeddings and a causal mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class PackedBatch:
    """A batch without padding: ``ids``/``pos`` ``[T]``, first-token offsets ``starts`` ``[B]``,
    ``slots`` ``[T]`` (each token's index in the ``[B * L_max]`` attention layout), ``key_mask``
    ``[B, 1, 1, L_max]`` (True = a real key)."""

    ids: torch.Tensor
    pos: torch.Tensor
    starts: torch.Tensor
    slots: torch.Tensor
    key_mask: torch.Tensor
    batch: int
    max_len: int

    @property
    def tokens(self) -> int:
        return int(self.ids.numel())

    def to(self, device: torch.device) -> "PackedBatch":
        return PackedBatch(self.ids.to(device), self.pos.to(device), self.starts.to(device), self.slots.to(device),
                           self.key_mask.to(device), self.batch, self.max_len)


def pack(batch_ids: Sequence[np.ndarray]) -> PackedBatch:
    """Concatenate a batch's token ids (each a 1-D int array, unpadded)."""
    if len(batch_ids) == 0:
        raise ValueError("pack: empty batch")
    lengths = np.array([len(x) for x in batch_ids], dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError("pack: empty sequence")
    L = int(lengths.max())
    B = len(batch_ids)
    ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in batch_ids])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(len(ids), dtype=np.int64) - np.repeat(starts, lengths)
    slots = np.repeat(np.arange(B, dtype=np.int64) * L, lengths) + pos
    key_mask = (np.arange(L)[None, :] < lengths[:, None])[:, None, None, :]
    return PackedBatch(torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(starts),
                       torch.from_numpy(slots), torch.from_numpy(key_mask.copy()), B, L)


def supports(model: nn.Module) -> bool:
    """True for the BERT classifiers this path reproduces exactly (module docstring)."""
    cfg = getattr(model, "config", None)
    return (cfg is not None and getattr(cfg, "model_type", None) == "bert"
            and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
            and not getattr(cfg, "is_decoder", False) and not getattr(cfg, "add_cross_attention", False)
            and hasattr(model, "bert") and hasattr(model, "classifier") and model.bert.pooler is not None)


class DropoutMasks:
    """Dropout from a numpy generator (module docstring): ``x * m`` with ``m`` in {0, 1/(1 - k/65536)}."""

    def __init__(self, gen: np.random.Generator):
        self.gen = gen

    def __call__(self, x: torch.Tensor, p: float) -> torch.Tensor:
        k = round(p * 65536)
        if k <= 0:
            return x
        if k >= 65536:
            return x * 0.0
        u = self.gen.integers(-32768, 32768, tuple(x.shape), dtype=np.int16)
        keep = np.float32(1.0 / (1.0 - k / 65536))
        # {0, 1} * keep in float32: the same values as np.where(u >= k - 32768, keep, 0), about 10x faster
        m = torch.from_numpy((u >= k - 32768).astype(np.float32) * keep).to(x.device, x.dtype)
        return x * m


def _drop(x: torch.Tensor, p: float, training: bool, masks: DropoutMasks | None) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    return masks(x, p) if masks is not None else F.dropout(x, p, True)


def _attention(block: nn.Module, h: torch.Tensor, pb: PackedBatch, head_dim: int,
               masks: DropoutMasks | None) -> torch.Tensor:
    sa = block.attention.self
    q, k, v = sa.query(h), sa.key(h), sa.value(h)  # [T, heads * d] (sliced widths, LoRA included)
    width = q.shape[-1]
    heads = width // head_dim

    def to_padded(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(pb.batch * pb.max_len, width).index_copy(0, pb.slots, x)
        return out.view(pb.batch, pb.max_len, heads, head_dim).transpose(1, 2)  # [B, heads, L, d]

    p = sa.dropout.p if sa.training else 0.0
    if p > 0.0:
        scores = to_padded(q) @ to_padded(k).transpose(-1, -2) * (head_dim ** -0.5)
        probs = scores.masked_fill(~pb.key_mask, float("-inf")).softmax(-1)
        ctx = _drop(probs, p, True, masks) @ to_padded(v)
    else:
        ctx = F.scaled_dot_product_attention(to_padded(q), to_padded(k), to_padded(v), attn_mask=pb.key_mask)
    ctx = ctx.transpose(1, 2).reshape(pb.batch * pb.max_len, width)
    return ctx.index_select(0, pb.slots)  # [T, heads * d]


def packed_logits(model: nn.Module, pb: PackedBatch, masks: DropoutMasks | None = None,
                  pooling: str = "cls") -> torch.Tensor:
    """Classifier logits ``[B, num_labels]`` of a packed batch (see the module docstring); dropout
    (in training mode) from ``masks`` when given. ``pooling``: ``cls`` = the BERT pooler over each
    sequence's first token (the HF head); ``mean`` = the mean of each sequence's final hidden states
    (sentence-transformers pooling), fed to the classifier without the pooler."""
    bert = model.bert
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    emb = bert.embeddings
    h = emb.word_embeddings(pb.ids) + emb.token_type_embeddings.weight[0] + emb.position_embeddings(pb.pos)
    h = _drop(emb.LayerNorm(h), emb.dropout.p, emb.training, masks)  # [T, hidden]
    for block in bert.encoder.layer:
        ctx = _attention(block, h, pb, head_dim, masks)
        ao = block.attention.output
        h = ao.LayerNorm(_drop(ao.dense(ctx), ao.dropout.p, ao.training, masks) + h)
        inter = block.intermediate.intermediate_act_fn(block.intermediate.dense(h))
        out = block.output
        h = out.LayerNorm(_drop(out.dense(inter), out.dropout.p, out.training, masks) + h)
    if pooling == "mean":
        pooled = segment_mean(h, pb.starts)
    else:
        pooled = bert.pooler.activation(bert.pooler.dense(h.index_select(0, pb.starts)))
    return model.classifier(_drop(pooled, model.dropout.p, model.training, masks))


def segment_mean(h: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of ``h`` ``[T, d]`` over each sequence: rows ``starts[b]`` up to ``starts[b+1]``."""
    ends = torch.cat([starts[1:], starts.new_tensor([h.shape[0]])])
    lengths = ends - starts
    seg = torch.repeat_interleave(torch.arange(len(starts), device=h.device), lengths)
    sums = h.new_zeros(len(starts), h.shape[1]).index_add_(0, seg, h)
    return sums / lengths.unsqueeze(1).to(h.dtype)


def masked_mean(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h`` ``[B, L, d]`` over the positions where ``attention_mask`` ``[B, L]`` is 1."""
    m = attention_mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)
