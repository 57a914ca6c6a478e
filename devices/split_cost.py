"""Cost of one split-learning step (split federated learning, SFL) under a plan with ``split_layers``.

In split learning (Vepakomma et al., arXiv 1812.00564; SplitFed, Thapa et al., arXiv 2004.12088;
MergeSFL, Liao et al., arXiv 2311.13348) the model is cut after block k = ``plan.split_layers``: the
device holds the embeddings and the bottom k blocks with their LoRA adapters, the server holds the top
L - k blocks, their adapters and the head. One step of device i with batch b::

    device forward of the bottom  ->  features up (b s h elements)
    ->  server forward + backward of the top  ->  feature gradients down (b s h elements)
    ->  device backward of the bottom

and once per round the bottom's adapters go down and up like any LoRA round (FedAvg of the bottom).

Notation as in :mod:`devices.cost` (F_lin, F_attn per token and block, F_lora(l), F_head); L_lo = the
device's LoRA layers (those < k), L_hi = the server's (>= k)::

    device   F_fwd = b s [k (F_lin + F_attn) + sum_{l in L_lo} F_lora(l)]
             F_bwd = b s [n_lo (F_lin + 2 F_attn) + 2 sum_{l in L_lo} F_lora(l)],  n_lo = k - min(L_lo) (0 without L_lo)
    server   F_srv = b s [(L - k)(F_lin + F_attn) + n_hi (F_lin + 2 F_attn) + 3 sum_{l in L_hi} F_lora(l)]
                     + F_head + F_head_bwd,  n_hi = L - k when the device trains (the gradient must reach
                     the cut), else L - min(L_hi)
    features S_feat = b s h x e bytes each way, e = 4 at fp32 compute, else 2      [inferred: the
                     activation dtype of the device's compute precision, no compression]

Roofline inputs of the device's two passes (the same assumed form as :mod:`devices.cost`, split
between the passes): W = k x block params x weight bytes, A = the n_lo blocks' stored activations::

    forward:  bytes W + A, kernels 20 k;   backward: bytes W n_lo / k + A, kernels 40 n_lo

Device memory: (embeddings + k blocks) x weight bytes + its trainable LoRA x 16 B + A (no head, no
logits: both live on the server). Round messages: the bottom's LoRA factors (+ keep-masks up) +
S_meta; the head and the top's adapters never leave the server.

Server time per step is F / (peak x efficiency) of the scenario's ``server`` section (a FLOP-rate
model only [inferred]; memory traffic and launch overheads of a data-centre accelerator are not modelled).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from devices.cost import (
    TRAINABLE_BYTES_PER_PARAM,
    activation_bytes_per_layer,
    embedding_params,
    head_flops,
    kept_shape,
    layer_flops_per_token,
    layer_params,
    lora_param_count,
    plan_cost,
)
from devices.plan import Plan
from devices.workload import DTYPE_BYTES, Workload

KERNELS_PER_BLOCK_FWD = 20
"""Kernel launches per block forward (assumed, as in :mod:`devices.cost`); twice that per block backward."""


@dataclass(frozen=True)
class Pass:
    """Roofline inputs of one pass on the device: FLOPs, DRAM bytes, kernel launches."""

    flops: float
    bytes_moved: float
    kernels: int


@dataclass(frozen=True)
class SplitCost:
    """Everything the split round needs about one split plan (per step unless noted)."""

    forward: Pass  # device forward of the bottom
    backward: Pass  # device backward of the bottom
    server_flops: float  # server forward + backward of the top for this device's batch
    feature_bytes: int  # features up per step (feature gradients down: the same size)
    lora_params: int  # the device's (bottom) adapters
    memory_model_bytes: float  # device peak without the runtime reserve
    bytes_up: int  # per round: bottom adapters + keep-masks + S_meta
    bytes_down: int  # per round: bottom adapters + S_meta

    @property
    def flops_per_step(self) -> float:
        """Device FLOPs of one step (forward + backward of the bottom)."""
        return self.forward.flops + self.backward.flops


def feature_bytes_per_element(precision: str) -> float:
    """Bytes of one feature (or feature-gradient) element on the wire: 4 at fp32 compute, else 2 [inferred]."""
    return 4.0 if precision == "fp32" else 2.0


@functools.lru_cache(maxsize=4096)
def split_cost(w: Workload, plan: Plan, precision: str) -> SplitCost:
    """Price split plan ``plan`` on workload ``w`` at the device's compute precision (module docstring)."""
    arch = w.arch
    L, s, b, k = arch.num_layers, w.seq_len, plan.batch_size, plan.split_layers
    if k is None or not 1 <= k < L:
        raise ValueError(f"split_layers must be in [1, {L - 1}] for a split plan, got {k}")
    shape = kept_shape(arch, plan.prune_ratio)
    lora_layers = plan.lora_layers if plan.lora_layers is not None else tuple(range(L))
    low = tuple(li for li in lora_layers if li < k)
    high = tuple(li for li in lora_layers if li >= k)
    n_lo = k - min(low) if low else 0
    n_hi = L - k if low else (L - min(high) if high else 0)
    f_lin, f_attn = layer_flops_per_token(arch, shape, s)
    lora_lo = lora_param_count(w, shape, plan, low)
    f_lora_lo, f_lora_hi = 2 * lora_lo, 2 * lora_param_count(w, shape, plan, high)
    tokens = b * s
    f_head, f_head_bwd = head_flops(w, b)
    server = (tokens * ((L - k) * (f_lin + f_attn) + n_hi * (f_lin + 2 * f_attn) + 3 * f_lora_hi)
              + f_head + f_head_bwd)

    bytes_w = DTYPE_BYTES[w.weight_dtype]
    act_scale = 2.0 if precision == "fp32" else 1.0
    act = n_lo * activation_bytes_per_layer(arch, shape, s, b) * act_scale * w.frozen_activation_factor
    w_read = k * layer_params(arch, shape) * bytes_w
    forward = Pass(float(tokens * (k * (f_lin + f_attn) + f_lora_lo)), w_read + act, KERNELS_PER_BLOCK_FWD * k)
    backward = Pass(float(tokens * (n_lo * (f_lin + 2 * f_attn) + 2 * f_lora_lo)), w_read * n_lo / k + act,
                    2 * KERNELS_PER_BLOCK_FWD * n_lo)
    weights = (embedding_params(arch) + k * layer_params(arch, shape)) * bytes_w
    payload = math.ceil(lora_lo * DTYPE_BYTES[w.comm_dtype])
    mask_bytes = math.ceil(L * (arch.head_groups + arch.intermediate) / 8)
    return SplitCost(
        forward=forward, backward=backward, server_flops=float(server),
        feature_bytes=math.ceil(tokens * arch.hidden * feature_bytes_per_element(precision)),
        lora_params=lora_lo,
        memory_model_bytes=float(weights + lora_lo * TRAINABLE_BYTES_PER_PARAM + act),
        bytes_up=payload + mask_bytes + w.message_overhead_bytes,
        bytes_down=payload + w.message_overhead_bytes,
    )


def message_bytes(w: Workload, plan: Plan, precision: str) -> tuple[int, int]:
    """(bytes down, bytes up) of a round's messages under ``plan``: the split model's when it is split."""
    c = plan_cost(w, plan, precision) if plan.split_layers is None else split_cost(w, plan, precision)
    return c.bytes_down, c.bytes_up
