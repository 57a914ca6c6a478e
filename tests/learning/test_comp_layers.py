"""Layer pruning (learning/layers.py): a physically smaller model computes the full model with the removed
blocks skipped, for the BERT and the LLaMA family, and the in-place learner path agrees with both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learning.layers import BlockDropper, export_pruned, layers_to_remove, skip_blocks
from learning.models import load_proxy
from learning.structure import ArchAdapter, Masks, Slicer

TEXTS = ["a fine, moving film", "terrible. just terrible, and far too long", "ok", "the cast is great but the plot is thin"]


@pytest.fixture(scope="module", params=["tiny-bert", "tiny-llama"])
def proxy(request):
    from learning.models import tiny_config  # noqa: PLC0415
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415

    base = load_proxy(request.param, 3, seed=5)
    tok = base.tokenizer
    cfg = tiny_config(request.param, 3, len(tok), tok.pad_token_id)
    cfg.num_hidden_layers = 4  # four blocks, so one to three can go
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = AutoModelForSequenceClassification.from_config(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def logits(model, tok) -> torch.Tensor:
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("keep", [[True, False, True, True], [False, True, False, True], [True, True, True, False]])
def test_exported_model_equals_full_model_with_blocks_skipped(proxy, keep):
    model, tok = proxy
    ad = ArchAdapter.for_model(model)
    keep = np.array(keep)
    with skip_blocks(model, ad.family, keep):
        ref = logits(model, tok)
    small = export_pruned(model, ad.family, keep)
    assert small.config.num_hidden_layers == keep.sum()
    assert len(ArchAdapter.for_model(small).blocks(small)) == keep.sum()
    out = logits(small, tok)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # the skip really changes the function (the test can fail)
    assert (logits(model, tok) - ref).abs().max() > 1e-4


def test_in_place_dropper_and_slicer_agree_and_restore(proxy):
    model, tok = proxy
    ad = ArchAdapter.for_model(model)
    keep = np.array([True, False, True, False])
    full = logits(model, tok)
    with skip_blocks(model, ad.family, keep):
        ref = logits(model, tok)
    dropper = BlockDropper(model, ad.family)
    dropper.apply(keep)
    assert len(ad.blocks(model)) == 4  # indices keep the full numbering
    torch.testing.assert_close(logits(model, tok), ref, atol=1e-5, rtol=0)
    dropper.restore()
    torch.testing.assert_close(logits(model, tok), full, atol=0, rtol=0)
    slicer = Slicer(model, ad)
    m = ad.full_mask()
    masks = Masks(m.attn, m.ffn, layers=keep)
    slicer.apply(masks)
    torch.testing.assert_close(logits(model, tok), ref, atol=1e-5, rtol=0)
    slicer.restore()
    torch.testing.assert_close(logits(model, tok), full, atol=0, rtol=0)


def test_layer_rule_and_bad_keep(proxy):
    model, _ = proxy
    assert [layers_to_remove(r, 4) for r in (0.0, 0.24, 0.25, 0.5, 0.99)] == [0, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least one True"):
        export_pruned(model, ArchAdapter.for_model(model).family, np.zeros(4, bool))


def test_mask_key_is_unchanged_without_layers_or_scales():
    ad_masks = Masks(np.ones((2, 4), bool), np.ones((2, 8), bool))
    assert Masks(ad_masks.attn, ad_masks.ffn, layers=np.ones(2, bool)).key() == ad_masks.key()
    assert Masks(ad_masks.attn, ad_masks.ffn, layers=np.array([True, False])).key() != ad_masks.key()
