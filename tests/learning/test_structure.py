"""Physical slicing computes exactly the function of the full model with the pruned groups zeroed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from learning.models import load_proxy
from learning.structure import ArchAdapter, Masks, Slicer, group_index, zero_pruned

TEXTS = ["a fine, moving film", "terrible. just terrible, and far too long", "ok", "the cast is great but the plot is thin"]


@pytest.fixture(scope="module", params=["tiny-bert", "tiny-llama"])
def proxy(request):
    return load_proxy(request.param, 3, seed=7)


def random_masks(ad: ArchAdapter, rng: np.random.Generator, p: float) -> Masks:
    m = ad.full_mask()
    m.attn[:] = rng.random(m.attn.shape) >= p
    m.ffn[:] = rng.random(m.ffn.shape) >= p
    m.attn[:, rng.integers(ad.attn_groups)] = True  # every layer keeps a group
    m.ffn[:, 0] = True
    return m


def logits(model, tok) -> torch.Tensor:
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_adapter_names_groups(proxy):
    ad = ArchAdapter.for_model(proxy.model)
    cfg = proxy.model.config
    if ad.family == "llama":
        assert (ad.attn_groups, ad.q_per_group) == (cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads)
        assert {s.path for s in ad.matrices if s.kind == "ffn"} == {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    else:
        assert (ad.attn_groups, ad.q_per_group) == (cfg.num_attention_heads, 1)
    assert ad.ffn_channels == cfg.intermediate_size
    # group widths tile every matrix exactly
    sl = Slicer(proxy.model, ad)
    for s in ad.matrices:
        w = sl.original(0, s.path).weight
        assert w.shape[s.axis] == s.width * ad.n_groups(s.kind)


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_sliced_equals_zeroed(proxy, p):
    model, tok = proxy.model, proxy.tokenizer
    ad = ArchAdapter.for_model(model)
    masks = random_masks(ad, np.random.default_rng(int(p * 100)), p)
    ref_model = copy.deepcopy(model)
    zero_pruned(ref_model, ad, masks)
    ref = logits(ref_model, tok)
    sl = Slicer(model, ad)
    sl.apply(masks)
    try:
        got = logits(model, tok)
        # really smaller: the sliced matrices have the kept widths
        for s in ad.matrices:
            lin = ad.blocks(model)[0]
            for part in s.path.split("."):
                lin = getattr(lin, part)
            assert lin.weight.shape[s.axis] == s.width * int(masks.of(s.kind)[0].sum())
    finally:
        sl.restore()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(ref, logits(model, tok), atol=1e-5)  # pruning changed the function


def test_restore_gives_back_the_original(proxy):
    model, tok = proxy.model, proxy.tokenizer
    ad = ArchAdapter.for_model(model)
    before = logits(model, tok)
    sl = Slicer(model, ad, cache_size=1)
    m1 = random_masks(ad, np.random.default_rng(1), 0.5)
    m2 = random_masks(ad, np.random.default_rng(2), 0.5)
    sl.apply(m1)
    a1 = logits(model, tok)
    sl.apply(m2)  # switching masks restores first
    sl.apply(m1)  # m1 evicted from the size-1 cache: rebuilt, same function
    torch.testing.assert_close(logits(model, tok), a1, atol=0, rtol=0)
    sl.restore()
    torch.testing.assert_close(logits(model, tok), before, atol=0, rtol=0)
    assert sl.applied is None


def test_slice_cache_reuses_layers(proxy):
    ad = ArchAdapter.for_model(proxy.model)
    sl = Slicer(proxy.model, ad, cache_size=2)
    m = random_masks(ad, np.random.default_rng(3), 0.5)
    assert sl.sliced_layers(m) is sl.sliced_layers(m.copy())
    frozen = [p.requires_grad for lay in sl.sliced_layers(m).values() for p in lay.parameters()]
    assert not any(frozen)


def test_gqa_group_index_covers_query_heads():
    pm = load_proxy("tiny-llama", 2, seed=0)
    ad = ArchAdapter.for_model(pm.model)
    q = next(s for s in ad.matrices if s.path == "self_attn.q_proj")
    k = next(s for s in ad.matrices if s.path == "self_attn.k_proj")
    keep = np.array([False, True])
    # group 1 = kv head 1 + query heads 2, 3 (4 query heads over 2 kv heads)
    assert group_index(q, keep).tolist() == list(range(2 * ad.head_dim, 4 * ad.head_dim))
    assert group_index(k, keep).tolist() == list(range(ad.head_dim, 2 * ad.head_dim))


def test_masks_key_and_sparsity():
    ad = load_proxy("tiny-bert", 2, seed=0)
    a = ArchAdapter.for_model(ad.model)
    m = a.full_mask()
    k0 = m.key()
    m.attn[0, 1] = False
    assert m.key() != k0
    assert m.sparsity_parts() == (pytest.approx(1 / 8), 0.0)


def test_unknown_architecture_is_a_clear_error():
    class Cfg:
        model_type = "gpt2"

    class M(torch.nn.Module):
        config = Cfg()

    with pytest.raises(ValueError, match="gpt2.*allowed: bert"):
        ArchAdapter.for_model(M())


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_slice_linear_is_transformers_prune_linear_layer_without_touching_the_rng(axis, bias):
    from torch import nn
    from transformers.pytorch_utils import prune_linear_layer

    from learning.structure import slice_linear

    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(12, 20, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(20, 12, generator=g))
        if bias:
            lin.bias.copy_(torch.randn(20, generator=g))
    idx = torch.tensor([0, 3, 4, 9, 11])
    state = torch.get_rng_state()
    got = slice_linear(lin, idx, axis)
    assert torch.equal(torch.get_rng_state(), state)  # no init drawn: the dropout stream cannot shift
    ref = prune_linear_layer(lin, idx, dim=axis)
    assert got.weight.shape == ref.weight.shape and got.weight.dtype == ref.weight.dtype
    assert torch.equal(got.weight, ref.weight) and got.weight.is_contiguous()
    assert (got.bias is None) == (ref.bias is None) and (not bias or torch.equal(got.bias, ref.bias))
    assert not any(p.requires_grad for p in got.parameters())
    assert got.weight.data_ptr() != lin.weight.data_ptr()  # a copy, the shared layer stays untouched
    half = slice_linear(lin.to(torch.bfloat16), idx, axis)  # a bf16 checkpoint keeps its dtype
    assert half.weight.dtype == torch.bfloat16 and torch.equal(half.weight.float(), ref.weight.bfloat16().float())
