"""Workload cost model: FLOPs, bytes moved, memory and message sizes of one LoRA step under a plan.

Derivations and sources in ``docs/device-model.md`` sections 3, 5 and 6; the constants marked
(assumed) are modelling choices. Notation: L layers, h hidden, s sequence, b batch,
q / kv the kept query / key-value widths, f the kept FFN width, r_l the LoRA rank of layer l
(``plan.rank_at(l)``: ``lora_rank`` everywhere unless ``plan.layer_ranks`` gives per-layer ranks); a
matmul (m x k)(k x n) costs 2mkn FLOP.

Structured pruning at ratio p removes ``devices.plan.groups_to_remove(p, n)`` = min(floor(p n + 1e-9),
n - 1) of the n attention groups (heads, or key/value groups under grouped-query attention) and of
the n FFN channels in every layer.

Forward per token and layer::

    F_lin  = 2 (h q + 2 h kv + q h) + 2 n_ffn h f
    F_attn = 2 * 2 s q                          (QK^T and A V; halved for causal models)
    F_lora(l) = sum over adapted matrices of 2 r_l (d_in + d_out)      (l a LoRA layer)

LoRA on a frozen base (frozen weights get no weight gradient, but the activation gradient flows down
to the lowest LoRA layer; n_bwd = L - lowest LoRA layer). Full fine-tuning would cost about 6N FLOP
per token (Kaplan et al., arXiv 2001.08361); this is about 4N::

    F_fwd = b s [L (F_lin + F_attn) + sum_{l in LoRA layers} F_lora(l)] + F_head
    F_bwd = b s [n_bwd (F_lin + 2 F_attn) + 2 sum_{l in LoRA layers} F_lora(l)] + F_head_bwd
    N_lora = sum_{l in LoRA layers} r_l * sum over adapted matrices of (d_in + d_out)
    F_head = 2 b (h h + h C) for a classifier on the first token, 2 b s h V for an LM head;
    F_head_bwd = 2 F_head when the classifier is trained, F_head (input grad only) for a frozen LM head.

Bytes moved per step (roofline memory term, assumed form):
``B = W_read (1 + n_bwd / L) + 2 A`` with W_read the non-embedding weights (plus the LM head) and A
the stored activations. Activation bytes per layer follow Korthikanti et al. (2022, arXiv 2205.05198)
term by term with pruned widths (16-bit; x2 for fp32 activations)::

    attention: 2sbh (QKV input) + 2sb q (Q) + 4sb kv (K, V) + 2sb q (out-proj input)
               + a_kept s^2 b (2 + 3 dropout) + sbh dropout mask
    MLP:       2sbh (input) + n_int 2 sb f (n_int = 2 GELU, 4 SwiGLU) + sbh dropout mask
    norms:     4sbh
    (unpruned BERT: 34 sbh + 5 a s^2 b, exactly the paper's figure)

Memory: weights N_kept x bytes_w + trainable x 16 B (fp32 master, grad, Adam m, v)
+ activations of the n_bwd layers x phi_frozen + LM logits b s V 10 B + runtime reserve.

Layer pruning (``plan.layer_ratio`` ρ_l, COMP): k = groups_to_remove(ρ_l, L) whole blocks are gone, so
every per-layer term above counts L' = L − k blocks, and the backward depth shrinks in proportion,
n_bwd' = max(1, round(n_bwd L' / L)) (assumed: which blocks go is data-dependent). Message sizes stay
priced at the plan's LoRA layers (like rank self-pruning below, the learner may send fewer factors).

Post-training pruning memory (``comp_memory_bytes``, COMP's calibration, no backward): the weights,
one block's activation Grams in float64, 8 ((q)^2 + f^2) bytes, and the live fp32 activations of one
block in a forward pass, 4 b s (4h + 2 n_int/2 f) + 4 a s^2 b (assumed form; nothing kept for backward).

Messages: up = LoRA factors (+ trained head) x bytes/param + keep-masks (1 bit per
group and channel) + S_meta; down = the same without masks. Factors are priced at the *planned* ranks:
HetLoRA rank self-pruning (``plan.rank_prune_decay`` < 1, done by the real learner after training)
may upload fewer components, which the cost model does not see.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from devices.plan import Plan, groups_to_remove
from devices.workload import DTYPE_BYTES, ModelArch, Workload

TRAINABLE_BYTES_PER_PARAM = 16
"""fp32 master weight 4 + gradient 4 + Adam m and v 8: mixed-precision Adam (ZeRO, arXiv 1910.02054)."""
LOGIT_BYTES_PER_ELEMENT = 10
"""fp16 logits 2 + fp32 softmax 4 + gradient 4 (assumed; LM head only)."""


@dataclass(frozen=True)
class Shape:
    """Kept widths of one layer after pruning."""

    groups: int  # kept attention groups
    q: int  # kept query width (heads x head_dim)
    kv: int  # kept key/value width
    heads: int  # kept query heads
    ffn: int  # kept FFN channels


def kept_shape(arch: ModelArch, prune_ratio: float) -> Shape:
    """Widths one layer keeps at ``prune_ratio`` (removed groups counted by ``devices.plan.groups_to_remove``)."""
    g = arch.head_groups - groups_to_remove(prune_ratio, arch.head_groups)
    f = arch.intermediate - groups_to_remove(prune_ratio, arch.intermediate)
    heads = g * arch.q_heads_per_group
    return Shape(groups=g, q=heads * arch.head_dim, kv=g * arch.head_dim, heads=heads, ffn=f)


def lora_matrix_dims(arch: ModelArch, shape: Shape, target: str) -> list[tuple[int, int]]:
    """(d_in, d_out) of the adapted matrices for one canonical target in one layer."""
    h = arch.hidden
    return {
        "query": [(h, shape.q)],
        "key": [(h, shape.kv)],
        "value": [(h, shape.kv)],
        "attn_out": [(shape.q, h)],
        "ffn_in": [(h, shape.ffn)] * (2 if arch.is_decoder else 1),
        "ffn_out": [(shape.ffn, h)],
    }[target]


def layer_params(arch: ModelArch, shape: Shape) -> int:
    """Weights and biases of one (pruned) block."""
    h = arch.hidden
    if arch.is_decoder:  # no biases, two RMSNorm weights
        attn = h * shape.q + 2 * h * shape.kv + shape.q * h
        mlp = 3 * h * shape.ffn
        return attn + mlp + 2 * h
    attn = (h * shape.q + shape.q) + 2 * (h * shape.kv + shape.kv) + (shape.q * h + h)
    mlp = (h * shape.ffn + shape.ffn) + (shape.ffn * h + h)
    return attn + mlp + 4 * h  # two LayerNorms (weight + bias)


def embedding_params(arch: ModelArch) -> int:
    h = arch.hidden
    if arch.is_decoder:
        return arch.vocab * h
    return (arch.vocab + arch.max_positions + arch.type_vocab) * h + 2 * h  # + embedding LayerNorm


def head_params(arch: ModelArch, w: Workload) -> int:
    h = arch.hidden
    if w.task == "lm":
        return h + (0 if arch.tie_embeddings else arch.vocab * h)  # final norm + LM head
    return h * h + h + h * w.num_labels + w.num_labels  # pooler/dense + classifier


def total_params(arch: ModelArch, w: Workload, prune_ratio: float = 0.0, layers: int | None = None) -> int:
    """Parameters of the model at ``prune_ratio`` with ``layers`` blocks (default: all)."""
    shape = kept_shape(arch, prune_ratio)
    n = arch.num_layers if layers is None else layers
    return embedding_params(arch) + n * layer_params(arch, shape) + head_params(arch, w)


def kept_layers(arch: ModelArch, layer_ratio: float) -> int:
    """Blocks left after layer pruning at ``layer_ratio`` (the shared removal rule)."""
    return arch.num_layers - groups_to_remove(layer_ratio, arch.num_layers)


def comp_memory_bytes(w: Workload, batch_size: int, prune_ratio: float = 0.0) -> float:
    """Peak bytes of one COMP pruning (module docstring): weights at ``prune_ratio`` before pruning, one
    block's float64 Grams and one block's live fp32 forward activations on a calibration batch."""
    arch = w.arch
    shape = kept_shape(arch, prune_ratio)
    s, b, h = w.seq_len, batch_size, arch.hidden
    n_int = 4 if arch.is_decoder else 2
    grams = 8.0 * (shape.q ** 2 + shape.ffn ** 2)
    live = 4.0 * b * s * (4 * h + n_int // 2 * shape.ffn) + 4.0 * shape.heads * s * s * b
    return total_params(arch, w, prune_ratio) * DTYPE_BYTES[w.weight_dtype] + grams + live


@dataclass(frozen=True)
class PlanCost:
    """Everything the timing and memory models need about one plan (per step unless noted)."""

    flops_fwd: float
    flops_bwd: float
    bytes_moved: float  # DRAM traffic per step (roofline memory term)
    kernels: int  # kernel launches per step (overhead term)
    backward_layers: int
    lora_params: int
    trainable_params: int
    memory_weights_bytes: float
    memory_trainable_bytes: float
    memory_activations_bytes: float
    memory_logits_bytes: float
    bytes_up: int
    bytes_down: int

    @property
    def flops_per_step(self) -> float:
        return self.flops_fwd + self.flops_bwd

    @property
    def memory_model_bytes(self) -> float:
        """Modelled peak memory without the runtime reserve."""
        return (
            self.memory_weights_bytes
            + self.memory_trainable_bytes
            + self.memory_activations_bytes
            + self.memory_logits_bytes
        )


def activation_bytes_per_layer(arch: ModelArch, shape: Shape, seq: int, batch: int) -> float:
    """16-bit activation bytes one block stores for backward (Korthikanti et al., pruned widths)."""
    s, b, h = seq, batch, arch.hidden
    sb = s * b
    dropout = not arch.is_decoder
    attn = 2 * sb * h + 2 * sb * shape.q + 4 * sb * shape.kv + 2 * sb * shape.q
    attn += shape.heads * s * s * b * (2 + (3 if dropout else 0)) + (sb * h if dropout else 0)
    n_int = 4 if arch.is_decoder else 2
    mlp = 2 * sb * h + n_int * 2 * sb * shape.ffn + (sb * h if dropout else 0)
    return float(attn + mlp + 4 * sb * h)


def layer_flops_per_token(arch: ModelArch, shape: Shape, seq: int) -> tuple[float, float]:
    """(F_lin, F_attn) of one (pruned) block per token (module docstring)."""
    h = arch.hidden
    f_lin = 2 * (h * shape.q + 2 * h * shape.kv + shape.q * h) + 2 * arch.ffn_matrices * h * shape.ffn
    f_attn = 2 * 2 * seq * shape.q * (0.5 if arch.is_decoder else 1.0)
    return f_lin, f_attn


def lora_param_count(w: Workload, shape: Shape, plan: Plan, layers) -> int:
    """N_lora over ``layers``: sum of r_l x (d_in + d_out) of every adapted matrix of each layer."""
    dims = [d for t in w.lora_targets for d in lora_matrix_dims(w.arch, shape, t)]
    width = sum(di + do for di, do in dims)  # LoRA params per unit rank in one layer
    return sum(plan.rank_at(li) * width for li in sorted(set(layers)))


def head_flops(w: Workload, batch: int) -> tuple[float, float]:
    """(F_head, F_head_bwd) of a batch (module docstring): classifier on the first token or LM head."""
    arch, h, s = w.arch, w.arch.hidden, w.seq_len
    if w.task == "lm":
        f_head = 2.0 * batch * s * h * arch.vocab
        return f_head, f_head
    f_head = 2.0 * batch * (h * h + h * w.num_labels)
    return f_head, (2 * f_head if w.train_head else f_head)


@functools.lru_cache(maxsize=4096)
def plan_cost(w: Workload, plan: Plan, precision: str) -> PlanCost:
    """Price ``plan`` on workload ``w`` at compute precision ``precision`` (fp32, amp or fp16)."""
    arch = w.arch
    L, s, b = arch.num_layers, w.seq_len, plan.batch_size
    shape = kept_shape(arch, plan.prune_ratio)
    lora_layers = plan.lora_layers if plan.lora_layers is not None else tuple(range(L))
    if min(lora_layers) < 0 or max(lora_layers) >= L:
        raise ValueError(f"lora_layers {lora_layers} outside [0, {L - 1}]")
    n_bwd = L - min(lora_layers)
    L_all, L = L, kept_layers(arch, plan.layer_ratio)
    if L < L_all:
        n_bwd = max(1, round(n_bwd * L / L_all))

    f_lin, f_attn = layer_flops_per_token(arch, shape, s)
    lora_params = lora_param_count(w, shape, plan, lora_layers)
    f_lora = 2 * lora_params  # per token, summed over the LoRA layers
    f_head, f_head_bwd = head_flops(w, b)
    tokens = b * s
    flops_fwd = tokens * (L * (f_lin + f_attn) + f_lora) + f_head
    flops_bwd = tokens * (n_bwd * (f_lin + 2 * f_attn) + 2 * f_lora) + f_head_bwd

    bytes_w = DTYPE_BYTES[w.weight_dtype]
    act_scale = 2.0 if precision == "fp32" else 1.0
    act = n_bwd * activation_bytes_per_layer(arch, shape, s, b) * act_scale * w.frozen_activation_factor
    head_w = head_params(arch, w)
    w_read = (L * layer_params(arch, shape) + head_w) * bytes_w
    bytes_moved = w_read * (1 + n_bwd / L) + 2 * act
    kernels = 20 * (L + 2 * n_bwd)  # assumed: ~20 kernels per layer forward, twice that per backward layer

    head_trainable = head_w if (w.task == "classification" and w.train_head) else 0
    trainable = lora_params + head_trainable
    weights_mem = total_params(arch, w, plan.prune_ratio, L) * bytes_w
    logits = float(tokens * arch.vocab * LOGIT_BYTES_PER_ELEMENT) if w.task == "lm" else 0.0

    comm_b = DTYPE_BYTES[w.comm_dtype]
    payload = math.ceil(trainable * comm_b)
    mask_bytes = math.ceil(L_all * (arch.head_groups + arch.intermediate) / 8)
    return PlanCost(
        flops_fwd=float(flops_fwd),
        flops_bwd=float(flops_bwd),
        bytes_moved=float(bytes_moved),
        kernels=kernels,
        backward_layers=n_bwd,
        lora_params=lora_params,
        trainable_params=trainable,
        memory_weights_bytes=float(weights_mem),
        memory_trainable_bytes=float(trainable * TRAINABLE_BYTES_PER_PARAM),
        memory_activations_bytes=float(act),
        memory_logits_bytes=logits,
        bytes_up=payload + mask_bytes + w.message_overhead_bytes,
        bytes_down=payload + w.message_overhead_bytes,
    )
