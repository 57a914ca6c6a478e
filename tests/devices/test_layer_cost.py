"""Layer pruning in the cost model: a plan with ``layer_ratio`` is priced with fewer blocks (FLOPs, bytes
moved, memory), messages keep the planned size, the default changes nothing; COMP's pruning memory."""

from __future__ import annotations

import dataclasses

import pytest

from devices.cost import comp_memory_bytes, kept_layers, layer_params, kept_shape, plan_cost, total_params
from devices.plan import Plan, split_total_ratio
from devices.workload import Workload, load_arch

ROBERTA = load_arch("roberta-base")
W = Workload(ROBERTA, seq_len=64, lora_targets=("query", "value", "ffn_in"))
LLAMA = Workload(load_arch("llama-7b"), seq_len=128, task="lm", weight_dtype="fp16")


def cost(layer_ratio: float, prune: float = 0.3, layers=None, w: Workload = W):
    return plan_cost(w, Plan(prune, 8, layers, 10, 16, layer_ratio=layer_ratio, pruner="comp"), "amp")


def test_default_is_the_plan_without_layer_pruning():
    plain = plan_cost(W, Plan(0.3, 8, None, 10, 16), "amp")
    assert dataclasses.asdict(cost(0.0)) == dataclasses.asdict(plain)
    assert dataclasses.asdict(cost(0.05)) == dataclasses.asdict(plain)  # 0.05 x 12 blocks removes none


@pytest.mark.parametrize("w", [W, LLAMA])
def test_fewer_blocks_priced_per_block(w):
    c0, c6, c9 = cost(0.0, w=w), cost(0.5, w=w), cost(0.75, w=w)
    L = w.arch.num_layers
    assert (kept_layers(w.arch, 0.5), kept_layers(w.arch, 0.75)) == (L - L // 2, L - (3 * L) // 4)
    # the forward FLOPs fall by the same amount per removed block
    per_block = (c0.flops_fwd - c6.flops_fwd) / (L // 2)
    assert c6.flops_fwd - c9.flops_fwd == pytest.approx(per_block * ((3 * L) // 4 - L // 2), rel=1e-12)
    shape = kept_shape(w.arch, 0.3)
    bw = {"fp32": 4, "fp16": 2}[w.weight_dtype] if w.weight_dtype in ("fp32", "fp16") else None
    assert c0.memory_weights_bytes - c6.memory_weights_bytes == pytest.approx(L // 2 * layer_params(w.arch, shape) * bw)
    assert c6.memory_weights_bytes == total_params(w.arch, w, 0.3, L - L // 2) * bw
    assert c6.backward_layers == L - L // 2 and c6.memory_activations_bytes == pytest.approx(c0.memory_activations_bytes / 2)
    assert c6.bytes_moved < c0.bytes_moved and c6.kernels < c0.kernels and c6.flops_bwd < c0.flops_bwd
    assert (c6.bytes_up, c6.bytes_down, c6.lora_params) == (c0.bytes_up, c0.bytes_down, c0.lora_params)


def test_backward_depth_shrinks_in_proportion():
    top4 = tuple(range(8, 12))
    assert cost(0.0, layers=top4).backward_layers == 4
    assert cost(0.5, layers=top4).backward_layers == 2


def test_split_total_ratio_keeps_the_total():
    for total in (0.2, 0.4, 0.6):
        lr, nr = split_total_ratio(total)
        assert lr == pytest.approx(total / 2)
        assert (1 - lr) * (1 - nr) == pytest.approx(1 - total)
    assert split_total_ratio(0.3, 0.0) == (0.0, pytest.approx(0.3))
    with pytest.raises(ValueError):
        split_total_ratio(1.0)
    with pytest.raises(ValueError, match="layer_ratio"):
        Plan(0.3, 8, None, 10, 16, layer_ratio=1.0, pruner="comp")
    with pytest.raises(ValueError, match="pruner"):
        Plan(0.3, 8, None, 10, 16, pruner="obs")
    with pytest.raises(ValueError, match="needs pruner 'comp'"):
        Plan(0.3, 8, None, 10, 16, layer_ratio=0.2)


def test_comp_memory_below_a_training_step():
    """COMP keeps no activations for backward: its pruning peak is below a LoRA step's memory (which a
    gradient-based pruner such as LoRA-guided importance needs) on the learning-quick workload."""
    train = cost(0.0, prune=0.0).memory_model_bytes
    comp = comp_memory_bytes(W, 16)
    weights = total_params(ROBERTA, W) * 4
    assert weights < comp < train
    assert comp_memory_bytes(W, 16, 0.5) < comp
