"""COMP (learning/comp.py): the condition-based metric ranks neurons as its docstring says on constructed
activations, mask tuning solves the stated least squares, block influence picks the identity-like block,
and one COMP pruning of a tiny BERT / LLaMA yields a runnable sliced, layer-pruned, scaled model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learning.comp import block_influence, choose_layers, comp_prune, condition_scores, tuned_scales
from learning.layers import layers_to_remove
from learning.models import load_proxy, tiny_config
from learning.structure import ArchAdapter, Slicer


def constructed(T: int = 400, seed: int = 0):
    """Four neurons: 0 large and independent, 1 and 2 the same large signal (redundant), 3 small and independent."""
    g = np.random.default_rng(seed)
    a, b, c = g.standard_normal((3, T))
    X = np.stack([3.0 * a, 2.0 * b, 2.0 * b + 1e-3 * g.standard_normal(T), 0.5 * c], axis=1)
    W = np.ones((5, 4)) / np.sqrt(5)  # 5 outputs, each column unit norm
    return torch.from_numpy(X), torch.from_numpy(W)


def test_condition_metric_ranks_redundant_neurons_lowest():
    X, W = constructed()
    s = condition_scores(X.T @ X, W, 1)
    magnitude = X.norm(dim=0).numpy() * W.norm(dim=0).numpy()
    # magnitude ranks the two copies above the small independent neuron ...
    assert magnitude[1] > magnitude[3] and magnitude[2] > magnitude[3]
    # ... the condition-based metric ranks them lowest: either can be rebuilt from the other
    assert set(np.argsort(s)[:2]) == {1, 2}
    assert np.argmax(s) == 0
    assert s[3] > 1.5 * max(s[1], s[2])
    assert max(s[1], s[2]) < 0.2 * magnitude[1]  # the copies lose most of their magnitude


def test_condition_metric_is_the_unexplained_output_energy():
    """Without ridge: s_g = ‖(X_g − X_{−g}β) W_gᵀ‖_F, the output of what other groups cannot reproduce (d = 1 and 2)."""
    g = np.random.default_rng(3)
    X = torch.from_numpy(g.standard_normal((200, 6)) @ g.standard_normal((6, 6)))
    W = torch.from_numpy(g.standard_normal((4, 6)))
    for width in (1, 2):
        s = condition_scores(X.T @ X, W, width, ridge=0.0)
        for grp in range(6 // width):
            cols = list(range(grp * width, (grp + 1) * width))
            rest = [c for c in range(6) if c not in cols]
            beta = torch.linalg.lstsq(X[:, rest], X[:, cols]).solution
            resid = X[:, cols] - X[:, rest] @ beta
            assert s[grp] == pytest.approx(float((resid @ W[:, cols].T).norm()), rel=1e-6)


def test_mask_tuning_rebuilds_a_removed_duplicate():
    X, W = constructed()
    X[:, 2] = X[:, 1]  # exact duplicate
    kept = np.array([True, True, False, True])
    m = tuned_scales(X.T @ X, W, 1, kept, ridge=0.0)
    np.testing.assert_allclose(m, [1.0, 2.0, 1.0], atol=1e-8)  # neuron 1 takes over neuron 2's output
    full = X @ W.T
    tuned = X[:, kept] * torch.from_numpy(m) @ W[:, kept].T
    untuned = X[:, kept] @ W[:, kept].T
    assert float((tuned - full).norm()) < 1e-8 < float((untuned - full).norm())


def test_choose_layers_removes_lowest_influence_unprotected():
    bi = np.array([0.5, 0.01, 0.3, 0.02])
    keep = np.ones(4, bool)
    assert choose_layers(bi, keep, 0.5).tolist() == [True, False, True, False]
    assert choose_layers(bi, keep, 0.5, frozenset({1})).tolist() == [True, True, False, False]
    assert choose_layers(bi, keep, 0.99).sum() == 1  # a model keeps a block


def _tiny(name: str, layers: int = 4):
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415

    tok = load_proxy(name, 2, seed=1).tokenizer
    cfg = tiny_config(name, 2, len(tok), tok.pad_token_id)
    cfg.num_hidden_layers = layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = AutoModelForSequenceClassification.from_config(cfg).eval()
    return model, tok


TEXTS = ["a fine, moving film", "terrible. just terrible, and far too long", "ok", "the cast is great but the plot is thin",
         "one of the year's best", "i fell asleep twice"]


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_block_influence_zero_for_an_identity_block(name):
    model, tok = _tiny(name)
    ad = ArchAdapter.for_model(model)
    batches = [dict(tok(TEXTS, padding=True, return_tensors="pt"))]
    from learning.layers import BlockDropper  # noqa: PLC0415

    d = BlockDropper(model, ad.family)
    bi = block_influence(model, ad, batches)
    assert np.all(np.isfinite(bi)) and np.all(bi > 0)
    d.apply(np.array([True, False, True, True]))  # block 1 is skipped: not measured
    bi2 = block_influence(model, ad, batches)
    d.restore()
    assert np.isnan(bi2[1]) and np.isfinite(bi2[[0, 2, 3]]).all()


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_comp_prune_end_to_end(name):
    model, tok = _tiny(name)
    ad = ArchAdapter.for_model(model)
    slicer = Slicer(model, ad, cache_size=0)
    batches = [dict(tok(TEXTS[i:i + 3], padding=True, return_tensors="pt")) for i in (0, 3)]
    with torch.no_grad():
        dense = torch.cat([model(**b).logits for b in batches])
    res = comp_prune(model, ad, ad.full_mask(), batches, 0.25, 0.5, slicer.apply)
    m = res.masks
    assert int((~m.kept_layers()).sum()) == layers_to_remove(0.25, 4) == 1
    removed = int(np.flatnonzero(~m.kept_layers())[0])
    assert removed == int(np.nanargmin(res.layer_importance))
    for li in np.flatnonzero(m.kept_layers()):
        assert (~m.attn[li]).sum() == ad.attn_groups // 2 and (~m.ffn[li]).sum() == 64
    assert m.attn[removed].all() and m.ffn[removed].all()  # a removed block's groups are not counted
    assert np.isfinite(m.scales["ffn"]).all() and not np.allclose(m.scales["ffn"][m.ffn], 1.0)
    slicer.apply(m)
    with torch.no_grad():
        pruned = torch.cat([model(**b).logits for b in batches])
    slicer.restore()
    assert torch.isfinite(pruned).all() and not torch.allclose(pruned, dense)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert params < res.peak_bytes < 2 * params
