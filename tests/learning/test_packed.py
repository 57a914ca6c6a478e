"""The packed (unpadded) forward computes the padded reference forward: logits and LoRA gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from learning.aggregate import factor_svd
from learning.data import collate, tokenize
from learning.lora import attach, detach, lora_keys
from learning.models import load_proxy
from learning.packed import masked_mean, pack, packed_logits, segment_mean, supports
from learning.structure import ArchAdapter, Slicer

TEXTS = ["a fine, moving film", "terrible. just terrible, and far too long for what it is", "ok",
         "the cast is great but the plot is thin", "one of the year's best", "meh"]


def setup(name: str, p: float, seed: int = 0):
    pm = load_proxy(name, 2, seed=seed, dropout=False)
    ad = ArchAdapter.for_model(pm.model)
    sl = Slicer(pm.model, ad)
    rng = np.random.default_rng(seed)
    masks = ad.full_mask()
    if p:
        masks.attn[:] = rng.random(masks.attn.shape) >= p
        masks.ffn[:] = rng.random(masks.ffn.shape) >= p
        masks.attn[:, 0] = True
        masks.ffn[:, 0] = True
    keys = lora_keys(ad, ["query", "value", "ffn_in", "ffn_out"], range(ad.num_layers))
    gen = torch.Generator().manual_seed(seed)
    fac = {}
    for k in keys:
        spec = next(s for s in ad.matrices if s.path == k[1])
        w = sl.original(*k).weight
        kept = int(masks.of(spec.kind)[k[0]].sum()) * spec.width
        shape = (kept, w.shape[1]) if spec.axis == 0 else (w.shape[0], kept)
        B, A = factor_svd(torch.randn(shape, generator=gen) * 0.01, 4, 4.0, gen)
        fac[k] = (B, A)
    att = attach(pm.model, ad, sl, masks, keys, 4, 16.0, fac)
    return pm, ad, sl, att


@pytest.mark.parametrize("name,p", [("tiny-bert", 0.0), ("tiny-bert", 0.5), ("minilm", 0.3)])
def test_packed_equals_padded_forward_and_gradients(name, p):
    pm, ad, sl, att = setup(name, p)
    assert supports(pm.model)
    ids = tokenize(TEXTS, pm.tokenizer, 64)
    y = torch.tensor([1, 0, 1, 1, 1, 0])
    x, m = collate(ids, pm.tokenizer.pad_token_id)
    assert x.shape[1] > min(len(i) for i in ids)  # there is padding to skip
    pm.model.train()
    ref = pm.model(input_ids=x, attention_mask=m).logits
    nn.functional.cross_entropy(ref, y).backward()
    g_ref = [p_.grad.clone() for p_ in att.parameters()]
    for p_ in att.parameters():
        p_.grad = None
    fast = packed_logits(pm.model, pack(ids))
    nn.functional.cross_entropy(fast, y).backward()
    g_fast = [p_.grad.clone() for p_ in att.parameters()]
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=2e-5)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    detach(pm.model, sl)


def test_pack_layout():
    pb = pack([np.array([5, 6, 7]), np.array([8]), np.array([9, 10])])
    assert pb.ids.tolist() == [5, 6, 7, 8, 9, 10] and pb.pos.tolist() == [0, 1, 2, 0, 0, 1]
    assert pb.starts.tolist() == [0, 3, 4] and pb.slots.tolist() == [0, 1, 2, 3, 6, 7]
    assert pb.key_mask[:, 0, 0].tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    with pytest.raises(ValueError):
        pack([])


def test_llama_is_not_supported():
    assert not supports(load_proxy("tiny-llama", 2, seed=0).model)


def test_dropout_masks_keep_the_expectation_and_are_seeded():
    import numpy as np
    import torch

    from learning.packed import DropoutMasks

    x = torch.ones(400, 500)
    a = DropoutMasks(np.random.default_rng(7))(x, 0.1)
    b = DropoutMasks(np.random.default_rng(7))(x, 0.1)
    assert torch.equal(a, b)
    kept = float((a > 0).float().mean())
    assert abs(kept - (1 - 6554 / 65536)) < 0.005  # p rounded to a multiple of 1/65536
    assert abs(float(a.mean()) - 1.0) < 0.01  # kept values scaled by 1/(1 - p)
    assert torch.equal(DropoutMasks(np.random.default_rng(7))(x, 0.0), x)


def test_dropout_masks_equal_the_documented_rule_bit_for_bit():
    """m = keep where u >= k - 32768 else 0 (u the generator's int16 draws): the fast form changes no bit."""
    import numpy as np
    import torch

    from learning.packed import DropoutMasks

    x = torch.randn(300, 384, generator=torch.Generator().manual_seed(3))
    for p in (0.1, 0.37):
        k = round(p * 65536)
        u = np.random.default_rng(11).integers(-32768, 32768, tuple(x.shape), dtype=np.int16)
        keep = np.float32(1.0 / (1.0 - k / 65536))
        want = x * torch.from_numpy(np.where(u >= k - 32768, keep, np.float32(0.0)))
        assert torch.equal(DropoutMasks(np.random.default_rng(11))(x, p), want)


@pytest.mark.parametrize("name,p", [("tiny-bert", 0.5), ("minilm", 0.3)])
def test_mean_pooling_packed_equals_padded(name, p):
    """learning.pooling mean: the packed segment mean equals the masked mean of the padded forward."""
    pm, ad, sl, att = setup(name, p)
    ids = tokenize(TEXTS, pm.tokenizer, 64)
    x, m = collate(ids, pm.tokenizer.pad_token_id)
    pm.model.eval()
    with torch.no_grad():
        h = pm.model.bert(input_ids=x, attention_mask=m).last_hidden_state
        ref = pm.model.classifier(masked_mean(h, m))
        fast = packed_logits(pm.model, pack(ids), pooling="mean")
        cls = packed_logits(pm.model, pack(ids), pooling="cls")
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=2e-5)
    assert not torch.allclose(fast, cls)  # a different head input
    detach(pm.model, sl)


def test_segment_mean_by_hand():
    h = torch.arange(10.0).reshape(5, 2)
    out = segment_mean(h, torch.tensor([0, 2]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [6.0, 7.0]]))
