"""devices/cost.py, devices/workload.py and devices/plan.py: FLOPs, bytes, memory and message sizes.

Formulas: ``docs/device-model.md`` sections 3, 5 and 6; the worked values there (GFLOP/token, bytes)
are the expected numbers here.

Hand formulas below are written independently of the module (per-token FLOPs, Korthikanti activation
bytes, parameter counts), so an error in either shows up as a mismatch.
"""

from __future__ import annotations

import json
import math

import pytest

from devices.cost import (
    LOGIT_BYTES_PER_ELEMENT,
    TRAINABLE_BYTES_PER_PARAM,
    activation_bytes_per_layer,
    head_params,
    kept_shape,
    layer_params,
    lora_matrix_dims,
    plan_cost,
    total_params,
)
from devices.plan import Plan, top_layers
from devices.workload import (
    DECODER_TYPES,
    DTYPE_BYTES,
    ENCODER_TYPES,
    ModelArch,
    Workload,
    load_arch,
    preset_names,
)

ROBERTA = load_arch("roberta-base")
BERT = load_arch("bert-base")
LLAMA = load_arch("llama-7b")
W_ROB = Workload(ROBERTA, seq_len=128)
W_LLAMA = Workload(LLAMA, seq_len=256, weight_dtype="fp16", task="lm")

TINY_GQA = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "vocab_size": 100,
}


def plan(p=0.0, r=8, depth=None, b=16, L=12) -> Plan:
    return Plan(prune_ratio=p, lora_rank=r, lora_layers=None if depth is None else top_layers(depth, L),
                local_steps=1, batch_size=b)


def per_token_gflop(w: Workload, pl: Plan, fwd_only=False) -> float:
    c = plan_cost(w, pl, "amp")
    f = c.flops_fwd if fwd_only else c.flops_per_step
    return f / (pl.batch_size * w.seq_len) / 1e9


def hand_encoder_flops(p: float, r: int, depth: int, s: int, b: int, C: int = 2,
                       L=12, h=768, a=12, f0=3072) -> tuple[float, float]:
    """RoBERTa/BERT-base LoRA on q and v, classifier trained; whole heads pruned (floor)."""
    heads = a - math.floor(p * a)
    q = kv = heads * (h // a)
    f = f0 - math.floor(p * f0)
    f_lin = 2 * (h * q + 2 * h * kv + q * h) + 2 * 2 * h * f
    f_attn = 2 * 2 * s * q
    f_lora = 2 * r * ((h + q) + (h + kv))
    f_head = 2 * b * (h * h + h * C)
    fwd = b * s * (L * (f_lin + f_attn) + depth * f_lora) + f_head
    bwd = b * s * (depth * (f_lin + 2 * f_attn) + 2 * depth * f_lora) + 2 * f_head
    return fwd, bwd


# --------------------------------------------------------------------------- FLOPs per token


def test_roberta_forward_and_lora_train_per_token():
    """RoBERTa-base, s=128: 0.175 GFLOP/token forward, 0.356 LoRA r=8 train (about 2x forward)."""
    pl = plan()
    assert per_token_gflop(W_ROB, pl, fwd_only=True) == pytest.approx(0.175, abs=5e-4)
    assert per_token_gflop(W_ROB, pl) == pytest.approx(0.356, abs=5e-4)
    c = plan_cost(W_ROB, pl, "amp")
    assert c.flops_per_step / c.flops_fwd == pytest.approx(2.04, abs=0.01)  # LoRA/forward ratio


def test_bert_base_same_flops_as_roberta():
    wb = Workload(BERT, seq_len=128)
    assert per_token_gflop(wb, plan()) == pytest.approx(per_token_gflop(W_ROB, plan()), rel=1e-12)


@pytest.mark.parametrize("depth,expected", [(12, 0.356), (6, 0.265), (3, 0.220)])
def test_lora_depth(depth, expected):
    """LoRA depth d=12/6/3 -> 0.356/0.265/0.220 GFLOP/token (backward only through the top d layers)."""
    assert per_token_gflop(W_ROB, plan(depth=depth)) == pytest.approx(expected, abs=5e-4)


def test_prune_half():
    """p=0.5 -> 0.179 GFLOP/token (~(1 - p) of the block FLOPs; the head is counted per sequence and LoRA
    on pruned q/v shrinks too)."""
    assert per_token_gflop(W_ROB, plan(p=0.5)) == pytest.approx(0.179, rel=5e-3)


def test_prune_integer_heads_p03():
    """p=0.3 removes floor(3.6)=3 whole heads (keeps 9 of 12 = 75 %, not 70 %) and floor(921.6)=921
    FFN channels, so ~0.256 GFLOP/token, not the continuous (1 - p) estimate of 0.250."""
    sh = kept_shape(ROBERTA, 0.3)
    assert (sh.groups, sh.heads, sh.q, sh.kv, sh.ffn) == (9, 9, 576, 576, 2151)
    got = per_token_gflop(W_ROB, plan(p=0.3))
    assert got == pytest.approx(0.2557, abs=1e-4)
    assert abs(got - 0.250) > 4e-3


@pytest.mark.parametrize("p", [0.0, 0.05, 0.3, 0.49, 0.5, 0.51, 0.9])
@pytest.mark.parametrize("depth", [12, 4, 1])
@pytest.mark.parametrize("r", [1, 8, 32])
def test_encoder_flops_match_hand_formula(p, depth, r):
    pl = plan(p=p, r=r, depth=depth, b=8)
    c = plan_cost(W_ROB, pl, "amp")
    fwd, bwd = hand_encoder_flops(p, r, depth, s=128, b=8)
    assert c.flops_fwd == pytest.approx(fwd, rel=1e-12)
    assert c.flops_bwd == pytest.approx(bwd, rel=1e-12)
    assert c.backward_layers == depth
    assert c.kernels == 20 * (12 + 2 * depth)


def test_frozen_classifier_backward_is_input_grad_only():
    w = Workload(ROBERTA, seq_len=128, train_head=False)
    c, c_tr = plan_cost(w, plan(), "amp"), plan_cost(W_ROB, plan(), "amp")
    f_head = 2 * 16 * (768 * 768 + 768 * 2)
    assert c.flops_fwd == c_tr.flops_fwd
    assert c_tr.flops_bwd - c.flops_bwd == pytest.approx(f_head, rel=1e-12)
    assert c.trainable_params == c.lora_params == 294_912


def test_llama7b_train_flops():
    """LLaMA-7B LoRA r=8, b=1, s=256: 13.3 fwd, 26.7 train GFLOP/token, 6.8 TFLOP/step (~2N / 4N per token)."""
    pl = plan(b=1)
    c = plan_cost(W_LLAMA, pl, "amp")
    assert c.flops_per_step == pytest.approx(6.8e12, rel=0.01)
    assert c.flops_fwd / 256 / 1e9 == pytest.approx(13.3, abs=0.05)
    assert c.flops_per_step / 256 / 1e9 == pytest.approx(26.7, abs=0.05)
    # hand formula: SwiGLU (3 FFN matrices), causal attention halved, frozen LM head (input grad only)
    L, h, s, f, V, r = 32, 4096, 256, 11008, 32000, 8
    f_lin = 2 * 4 * h * h + 2 * 3 * h * f
    f_attn = 2 * 2 * s * h / 2
    f_lora = 2 * r * 2 * (h + h)
    f_head = 2 * s * h * V
    assert c.flops_fwd == pytest.approx(s * (L * (f_lin + f_attn) + L * f_lora) + f_head, rel=1e-12)
    assert c.flops_bwd == pytest.approx(s * (L * (f_lin + 2 * f_attn) + 2 * L * f_lora) + f_head, rel=1e-12)


# --------------------------------------------------------------------------- parameters


def test_lora_param_counts():
    """LoRA parameters r (d_in + d_out) per matrix: RoBERTa-base r=8 on W_q, W_v, 12 layers -> 294,912;
    LLaMA-7B -> 4.19 M."""
    c = plan_cost(W_ROB, plan(), "amp")
    assert c.lora_params == 294_912
    assert c.trainable_params == 294_912 + (768 * 768 + 768 + 768 * 2 + 2)  # + trained classifier
    assert plan_cost(W_LLAMA, plan(b=1), "amp").lora_params == 4_194_304
    assert plan_cost(W_ROB, plan(depth=3), "amp").lora_params == 294_912 // 4


def test_lora_matrix_dims_all_targets():
    sh = kept_shape(ROBERTA, 0.5)  # q = kv = 384, ffn = 1536
    assert lora_matrix_dims(ROBERTA, sh, "query") == [(768, 384)]
    assert lora_matrix_dims(ROBERTA, sh, "value") == [(768, 384)]
    assert lora_matrix_dims(ROBERTA, sh, "attn_out") == [(384, 768)]
    assert lora_matrix_dims(ROBERTA, sh, "ffn_in") == [(768, 1536)]
    assert lora_matrix_dims(ROBERTA, sh, "ffn_out") == [(1536, 768)]
    shl = kept_shape(LLAMA, 0.0)
    assert lora_matrix_dims(LLAMA, shl, "ffn_in") == [(4096, 11008)] * 2  # gate and up


def test_all_targets_param_count():
    w = Workload(ROBERTA, seq_len=128, lora_targets=("query", "key", "value", "attn_out", "ffn_in", "ffn_out"))
    c = plan_cost(w, plan(), "amp")
    per_layer = 8 * (4 * (768 + 768) + (768 + 3072) + (3072 + 768))
    assert c.lora_params == 12 * per_layer


def test_total_params_match_known_checkpoints():
    # RobertaForSequenceClassification (2 labels): 124,647,170; BertModel with pooler: 109,482,240
    assert total_params(ROBERTA, W_ROB) == 124_647_170
    assert total_params(BERT, Workload(BERT, seq_len=128)) - (768 * 2 + 2) == 109_482_240
    assert total_params(LLAMA, W_LLAMA) == 6_738_415_616  # LLaMA-7B
    assert layer_params(ROBERTA, kept_shape(ROBERTA, 0.0)) == 7_087_872
    assert head_params(LLAMA, W_LLAMA) == 4096 + 32000 * 4096


def test_weights_memory_050_gb():
    """RoBERTa-base fp32 weights 0.50 GB (125 M parameters x 4 B)."""
    c = plan_cost(W_ROB, plan(), "amp")
    assert c.memory_weights_bytes == 124_647_170 * 4
    assert c.memory_weights_bytes / 1e9 == pytest.approx(0.50, abs=0.005)
    c16 = plan_cost(Workload(ROBERTA, 128, weight_dtype="fp16"), plan(), "amp")
    assert c16.memory_weights_bytes == c.memory_weights_bytes / 2
    assert plan_cost(W_LLAMA, plan(b=1), "amp").memory_weights_bytes / 1e9 == pytest.approx(13.5, abs=0.05)


# --------------------------------------------------------------------------- activations / bytes


@pytest.mark.parametrize("arch", [BERT, ROBERTA, load_arch("roberta-large"), load_arch("minilm-l6")],
                         ids=lambda a: a.name)
@pytest.mark.parametrize("s,b", [(128, 16), (64, 1), (512, 3)])
def test_korthikanti_unpruned_encoder_exact(arch, s, b):
    h, a = arch.hidden, arch.num_heads
    expected = s * b * h * 34 + 5 * a * s * s * b  # = s b h (34 + 5 a s / h)
    assert activation_bytes_per_layer(arch, kept_shape(arch, 0.0), s, b) == expected
    assert expected == pytest.approx(s * b * h * (34 + 5 * a * s / h), rel=1e-12)


def test_roberta_activation_memory():
    """Korthikanti et al. (arXiv 2205.05198): 12 x 69 MB = 0.83 GB (fp16 activations); doubled for fp32;
    x phi_frozen."""
    per_layer = 128 * 16 * 768 * (34 + 5 * 12 * 128 / 768)
    assert per_layer / 1e6 == pytest.approx(69.2, abs=0.05)
    assert plan_cost(W_ROB, plan(), "amp").memory_activations_bytes == pytest.approx(12 * per_layer, rel=1e-12)
    assert plan_cost(W_ROB, plan(), "fp16").memory_activations_bytes == pytest.approx(12 * per_layer, rel=1e-12)
    assert plan_cost(W_ROB, plan(), "fp32").memory_activations_bytes == pytest.approx(24 * per_layer, rel=1e-12)
    w6 = Workload(ROBERTA, 128, frozen_activation_factor=0.6)
    assert plan_cost(w6, plan(), "amp").memory_activations_bytes == pytest.approx(0.6 * 12 * per_layer, rel=1e-12)
    assert plan_cost(W_ROB, plan(depth=3), "amp").memory_activations_bytes == pytest.approx(3 * per_layer, rel=1e-12)


def test_decoder_activation_bytes_hand():
    """LLaMA: no dropout terms, SwiGLU stores 4 sb f, causal attention keeps 2 a s^2 b."""
    s, b, h, a, f = 256, 1, 4096, 32, 11008
    expected = (2 * s * b * h + 2 * s * b * h + 4 * s * b * h + 2 * s * b * h + 2 * a * s * s * b) \
        + (2 * s * b * h + 4 * 2 * s * b * f) + 4 * s * b * h
    assert activation_bytes_per_layer(LLAMA, kept_shape(LLAMA, 0.0), s, b) == expected


def test_bytes_moved_and_logits_hand():
    c = plan_cost(W_ROB, plan(depth=6), "amp")
    w_read = (12 * 7_087_872 + 592_130) * 4
    act = 6 * (128 * 16 * 768 * 34 + 5 * 12 * 128 * 128 * 16)
    assert c.bytes_moved == pytest.approx(w_read * (1 + 6 / 12) + 2 * act, rel=1e-12)
    assert c.memory_logits_bytes == 0.0
    cl = plan_cost(W_LLAMA, plan(b=2), "amp")
    assert cl.memory_logits_bytes == 2 * 256 * 32000 * LOGIT_BYTES_PER_ELEMENT
    assert cl.memory_trainable_bytes == cl.trainable_params * TRAINABLE_BYTES_PER_PARAM
    assert cl.memory_model_bytes == pytest.approx(
        cl.memory_weights_bytes + cl.memory_trainable_bytes + cl.memory_activations_bytes + cl.memory_logits_bytes)


# --------------------------------------------------------------------------- messages


def test_message_sizes_roberta():
    c = plan_cost(W_ROB, plan(), "amp")
    trainable = 294_912 + 592_130
    mask = math.ceil(12 * (12 + 3072) / 8)
    assert c.bytes_up == trainable * 4 + mask + 1024
    assert c.bytes_down == trainable * 4 + 1024
    assert c.bytes_up - c.bytes_down == mask == 4626


def test_message_sizes_lora_only():
    """294,912 params -> 1.18 MB fp32 / 0.59 MB fp16."""
    w = Workload(ROBERTA, 128, train_head=False, message_overhead_bytes=0)
    c = plan_cost(w, plan(), "amp")
    assert c.bytes_down == 294_912 * 4
    assert c.bytes_down / 1e6 == pytest.approx(1.18, abs=0.005)
    w16 = Workload(ROBERTA, 128, train_head=False, message_overhead_bytes=0, comm_dtype="fp16")
    assert plan_cost(w16, plan(), "amp").bytes_down == 294_912 * 2
    wq = Workload(ROBERTA, 128, train_head=False, message_overhead_bytes=7, comm_dtype="nf4")
    cq = plan_cost(wq, plan(r=1), "amp")
    assert cq.bytes_down == math.ceil(36_864 * 0.5) + 7


def test_mask_bytes_do_not_shrink_with_pruning():
    """The keep-mask has one bit per original group and channel."""
    c0, c5 = plan_cost(W_ROB, plan(), "amp"), plan_cost(W_ROB, plan(p=0.5), "amp")
    assert c0.bytes_up - c0.bytes_down == c5.bytes_up - c5.bytes_down == 4626
    lora5 = 12 * 8 * 2 * (768 + 384)
    assert c5.bytes_down == (lora5 + 592_130) * 4 + 1024


# --------------------------------------------------------------------------- monotonicity

PS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@pytest.mark.parametrize("w", [W_ROB, W_LLAMA], ids=["roberta", "llama"])
def test_more_pruning_costs_less(w):
    b = 1 if w is W_LLAMA else 16
    costs = [plan_cost(w, plan(p=p, b=b), "amp") for p in PS]
    for fld in ("flops_per_step", "bytes_moved", "memory_weights_bytes", "memory_activations_bytes",
                "memory_model_bytes", "bytes_up", "bytes_down", "lora_params"):
        vals = [getattr(c, fld) for c in costs]
        assert all(x > y for x, y in zip(vals, vals[1:])), (fld, vals)


def test_higher_rank_costs_more():
    costs = [plan_cost(W_ROB, plan(r=r), "amp") for r in (1, 2, 4, 8, 16, 32, 64)]
    for fld in ("bytes_up", "bytes_down", "lora_params", "trainable_params", "flops_per_step",
                "memory_trainable_bytes"):
        vals = [getattr(c, fld) for c in costs]
        assert all(x < y for x, y in zip(vals, vals[1:])), fld
    assert len({c.memory_weights_bytes for c in costs}) == 1
    assert len({c.bytes_up - c.bytes_down for c in costs}) == 1
    # LoRA payload is exactly linear in r
    assert costs[3].bytes_down - costs[2].bytes_down == (8 - 4) * 12 * 2 * (768 + 768) * 4


def test_deeper_lora_costs_more():
    costs = [plan_cost(W_ROB, plan(depth=d), "amp") for d in range(1, 13)]
    for fld in ("flops_per_step", "bytes_moved", "memory_activations_bytes", "lora_params", "kernels"):
        vals = [getattr(c, fld) for c in costs]
        assert all(x < y for x, y in zip(vals, vals[1:])), fld


def test_flops_linear_in_batch_and_precision_independent():
    c16, c32 = plan_cost(W_ROB, plan(b=16), "amp"), plan_cost(W_ROB, plan(b=32), "amp")
    assert c32.flops_per_step == pytest.approx(2 * c16.flops_per_step, rel=1e-12)
    assert c32.memory_activations_bytes == pytest.approx(2 * c16.memory_activations_bytes, rel=1e-12)
    assert plan_cost(W_ROB, plan(), "fp32").flops_per_step == c16.flops_per_step
    assert plan_cost(W_ROB, plan(), "fp32").bytes_moved > c16.bytes_moved


def test_lora_layers_out_of_range():
    bad = Plan(prune_ratio=0.0, lora_rank=8, lora_layers=(11, 12), local_steps=1, batch_size=1)
    with pytest.raises(ValueError, match="outside"):
        plan_cost(W_ROB, bad, "amp")
    bad = Plan(prune_ratio=0.0, lora_rank=8, lora_layers=(-1,), local_steps=1, batch_size=1)
    with pytest.raises(ValueError):
        plan_cost(W_ROB, bad, "amp")


def test_non_contiguous_lora_layers():
    """Backward runs from the lowest LoRA layer; LoRA cost counts only the listed layers."""
    pl = Plan(prune_ratio=0.0, lora_rank=8, lora_layers=(4, 10), local_steps=1, batch_size=16)
    c = plan_cost(W_ROB, pl, "amp")
    assert c.backward_layers == 8
    assert c.lora_params == 2 * 8 * 2 * (768 + 768)


def test_per_layer_ranks():
    """layer_ranks: LoRA params, FLOPs, trainable memory and payload sum r_l over the LoRA layers."""
    pl = Plan(prune_ratio=0.0, lora_rank=16, lora_layers=(9, 10, 11), local_steps=1, batch_size=16,
              layer_ranks=(4, 8, 16))
    c = plan_cost(W_ROB, pl, "amp")
    per_rank = 2 * (768 + 768)  # query and value, (d_in + d_out) each
    assert c.lora_params == (4 + 8 + 16) * per_rank
    head = 768 * 768 + 768 + 768 * 2 + 2
    assert c.trainable_params == c.lora_params + head
    assert c.memory_trainable_bytes == (c.lora_params + head) * TRAINABLE_BYTES_PER_PARAM
    assert c.bytes_down == (c.lora_params + head) * DTYPE_BYTES[W_ROB.comm_dtype] + W_ROB.message_overhead_bytes
    # LoRA FLOPs: forward 2 (sum r_l) (d_in + d_out) per token, backward twice that
    uni4 = plan_cost(W_ROB, Plan(0.0, 4, (9, 10, 11), 1, 16), "amp")
    tokens = 16 * 128
    assert c.flops_fwd - uni4.flops_fwd == pytest.approx(tokens * 2 * (0 + 4 + 12) * per_rank, rel=1e-12)
    assert c.flops_bwd - uni4.flops_bwd == pytest.approx(tokens * 4 * (0 + 4 + 12) * per_rank, rel=1e-12)
    # all ranks equal: identical to the uniform-rank plan
    same = Plan(prune_ratio=0.3, lora_rank=8, lora_layers=(2, 5, 11), local_steps=2, batch_size=4,
                layer_ranks=(8, 8, 8))
    uni = Plan(prune_ratio=0.3, lora_rank=8, lora_layers=(2, 5, 11), local_steps=2, batch_size=4)
    assert plan_cost(W_ROB, same, "fp32") == plan_cost(W_ROB, uni, "fp32")
    assert plan_cost(W_LLAMA, same, "amp") == plan_cost(W_LLAMA, uni, "amp")


# --------------------------------------------------------------------------- GQA


def test_gqa_config_prunes_whole_kv_groups():
    arch = ModelArch.from_hf_config(TINY_GQA, "tiny")
    assert arch.is_decoder and arch.ffn_matrices == 3
    assert (arch.num_heads, arch.num_kv_heads, arch.head_dim) == (8, 2, 8)
    assert arch.head_groups == 2 and arch.q_heads_per_group == 4
    assert arch.type_vocab == 0 and arch.tie_embeddings is False
    for p in (0.0, 0.1, 0.3, 0.49):  # floor(p * 2) == 0: nothing pruned from attention
        sh = kept_shape(arch, p)
        assert (sh.groups, sh.heads, sh.q, sh.kv) == (2, 8, 64, 16)
        assert sh.ffn == 96 - math.floor(p * 96)
    sh = kept_shape(arch, 0.5)
    assert (sh.groups, sh.heads, sh.q, sh.kv, sh.ffn) == (1, 4, 32, 8, 48)
    for p in PS:
        sh = kept_shape(arch, p)
        assert sh.heads % arch.q_heads_per_group == 0 and sh.heads == sh.groups * 4
        assert sh.groups >= 1


def test_gqa_plan_cost_hand():
    arch = ModelArch.from_hf_config(TINY_GQA, "tiny")
    w = Workload(arch, seq_len=16, task="lm", weight_dtype="fp16", message_overhead_bytes=0)
    pl = Plan(prune_ratio=0.5, lora_rank=4, lora_layers=None, local_steps=1, batch_size=2)
    c = plan_cost(w, pl, "amp")
    h, s, b, L, V, q, kv, f = 64, 16, 2, 2, 100, 32, 8, 48
    f_lin = 2 * (h * q + 2 * h * kv + q * h) + 2 * 3 * h * f
    f_attn = 2 * 2 * s * q / 2
    lora = 4 * ((h + q) + (h + kv))  # query (h -> q), value (h -> kv)
    f_head = 2 * b * s * h * V
    assert c.lora_params == L * lora
    assert c.flops_fwd == pytest.approx(b * s * (L * (f_lin + f_attn) + L * 2 * lora) + f_head, rel=1e-12)
    assert c.flops_bwd == pytest.approx(b * s * (L * (f_lin + 2 * f_attn) + 2 * L * 2 * lora) + f_head, rel=1e-12)
    assert layer_params(arch, kept_shape(arch, 0.5)) == h * q + 2 * h * kv + q * h + 3 * h * f + 2 * h
    assert c.bytes_up - c.bytes_down == math.ceil(L * (2 + 96) / 8) == 25
    assert c.bytes_down == math.ceil(L * lora * 4)  # lm task: nothing but LoRA is trained


def test_explicit_head_dim_and_bad_gqa():
    cfg = dict(TINY_GQA, head_dim=32)
    arch = ModelArch.from_hf_config(cfg, "x")
    assert arch.head_dim == 32
    assert kept_shape(arch, 0.0).q == 8 * 32
    with pytest.raises(ValueError, match="multiple"):
        ModelArch.from_hf_config(dict(TINY_GQA, num_key_value_heads=3), "x")


# --------------------------------------------------------------------------- load_arch / presets


def test_presets():
    assert preset_names() == ("bert-base", "llama-7b", "minilm-l6", "roberta-base", "roberta-large")
    for name in preset_names():
        arch = load_arch(name)
        assert arch.name == name
        assert arch.num_layers > 0 and arch.hidden % arch.num_heads == 0
    assert ROBERTA.family == "encoder" and ROBERTA.tie_embeddings and ROBERTA.type_vocab == 1
    assert (ROBERTA.num_layers, ROBERTA.hidden, ROBERTA.num_heads, ROBERTA.intermediate, ROBERTA.vocab) == \
        (12, 768, 12, 3072, 50265)
    assert LLAMA.family == "decoder" and not LLAMA.tie_embeddings and LLAMA.num_kv_heads == 32
    assert set(ENCODER_TYPES).isdisjoint(DECODER_TYPES)
    assert DTYPE_BYTES["fp32"] == 4 and DTYPE_BYTES["fp16"] == 2


def _write(tmp_path, obj, name="config.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return p


def test_load_arch_from_file_dir_and_base_dir(tmp_path):
    d = tmp_path / "tiny-llama"
    d.mkdir()
    _write(d, TINY_GQA)
    by_file = load_arch(str(d / "config.json"))
    by_dir = load_arch(str(d))
    by_rel = load_arch("tiny-llama", base_dir=tmp_path)
    assert by_file == by_dir == by_rel
    assert by_file.name == "tiny-llama"


def test_load_arch_unknown_model_type(tmp_path):
    p = _write(tmp_path, dict(TINY_GQA, model_type="gpt2"))
    with pytest.raises(ValueError, match="not supported"):
        load_arch(str(p))
    p = _write(tmp_path, {k: v for k, v in TINY_GQA.items() if k != "model_type"})
    with pytest.raises(ValueError, match="not supported"):
        load_arch(str(p))


def test_load_arch_missing_keys(tmp_path):
    cfg = {k: v for k, v in TINY_GQA.items() if k not in ("hidden_size", "vocab_size")}
    with pytest.raises(ValueError, match="hidden_size, vocab_size"):
        load_arch(str(_write(tmp_path, cfg)))
    for bad in (0, -1, "12", 12.0, None):
        with pytest.raises(ValueError, match="num_hidden_layers"):
            load_arch(str(_write(tmp_path, dict(TINY_GQA, num_hidden_layers=bad))))


def test_load_arch_missing_file_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        load_arch(str(tmp_path / "nope" / "config.json"))
    with pytest.raises(ValueError, match="neither a preset"):
        load_arch("roberta-huge")
    with pytest.raises(ValueError, match="neither a preset"):
        load_arch(str(tmp_path))  # a folder without config.json
    with pytest.raises(ValueError, match="cannot read"):
        load_arch(str(_write(tmp_path, "{not json")))
    with pytest.raises(ValueError, match="not a JSON object"):
        load_arch(str(_write(tmp_path, [1, 2])))


# --------------------------------------------------------------------------- plan.py


def test_plan_validation_and_top_layers():
    assert top_layers(3, 12) == (9, 10, 11)
    assert top_layers(12, 12) == tuple(range(12))
    for d in (0, 13):
        with pytest.raises(ValueError):
            top_layers(d, 12)
    for kw in (dict(prune_ratio=1.0), dict(prune_ratio=-0.1), dict(lora_rank=0), dict(local_steps=-1),
               dict(batch_size=0), dict(lora_layers=())):
        args = dict(prune_ratio=0.0, lora_rank=8, lora_layers=None, local_steps=1, batch_size=1) | kw
        with pytest.raises(ValueError):
            Plan(**args)
