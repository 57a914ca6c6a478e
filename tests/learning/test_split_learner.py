"""learning/split.py: real split learning on the proxy (device bottoms, server top, merged or not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fleet_helpers import base_scenario, run_dict

from devices.plan import Plan
from learning.split import SplitLearner
from sim.loader import validate
from sim.runner import make_learner

MERGED = Plan(0.0, 4, None, 3, 8, split_layers=6, merge_features=True)
SEPARATE = Plan(0.0, 4, None, 3, 8, split_layers=6)


def _learner(algorithm: str = "mergesfl", n: int = 2, **learning) -> SplitLearner:
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "tx2", "count": n, "power_modes": ["MAXN"], "placement": "lan"}]
    d["workload"].update(seq_len=32)
    d["algorithm"] = {"name": algorithm, "params": {"split_layers": 6}}
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 200, "test_size": 40,
                     "torch_threads": 1, "partition": {"kind": "dirichlet", "alpha": 0.5, "min_size": 8}, **learning}
    learner = make_learner(validate(d))
    assert isinstance(learner, SplitLearner)
    return learner


def test_the_split_forward_and_backward_are_the_whole_models():
    """Bottom then top (features cut and re-entered) gives the whole model's logits and LoRA gradients."""
    lr = _learner()
    lr._init_factors(4)
    gen = torch.Generator().manual_seed(3)
    factors = {k: ((torch.randn(B.shape, generator=gen) * 0.1).requires_grad_(True), A.clone().requires_grad_(True))
               for k, (B, A) in lr.lora.items()}
    k = lr.split_point(MERGED)
    assert 1 <= k < lr.adapter.num_layers
    batch = lr._encode([lr.train_ids[i] for i in range(6)])
    lr.model.eval()
    lr._active = factors
    whole = lr._logits(batch)
    lr._active = {}
    whole.sum().backward()
    grads = {key: f[0].grad.clone() for key, f in factors.items()}
    for f in factors.values():
        f[0].grad = f[1].grad = None
    bottom = {key: f for key, f in factors.items() if key[0] < k}
    top = {key: f for key, f in factors.items() if key[0] >= k}
    feats = lr._bottom(bottom, batch, k)
    cut = feats.detach().requires_grad_(True)
    head = {n: t.clone().requires_grad_(True) for n, t in lr.head.items()}
    split = lr._top(top, head, cut, batch, k)
    torch.testing.assert_close(split, whole.detach(), rtol=1e-5, atol=1e-6)
    split.sum().backward()
    feats.backward(cut.grad)
    for key, g in grads.items():
        torch.testing.assert_close(factors[key][0].grad, g, rtol=1e-4, atol=1e-6)
    assert any(key[0] < k for key in grads) and any(key[0] >= k for key in grads)


def test_one_device_trains_the_same_merged_or_not():
    """With one device the merged batch is the device's batch: both modes give the same round."""
    out = {}
    for plan in (MERGED, SEPARATE):
        lr = _learner(n=1)
        (u,) = lr.collect([lr.submit(0, plan, 0)])
        out[plan.merge_features] = (u, {k: t.clone() for k, t in lr.head.items()})
    (u1, h1), (u0, h0) = out[True], out[False]
    assert u1.loss_before == u0.loss_before and u1.loss_after == u0.loss_after
    for key, (B, A) in u1.payload.items():
        torch.testing.assert_close(B, u0.payload[key][0], rtol=0, atol=0)
        torch.testing.assert_close(A, u0.payload[key][1], rtol=0, atol=0)
    for n in h1:
        torch.testing.assert_close(h1[n], h0[n], rtol=0, atol=0)


def test_merged_devices_train_the_top_together_and_fedavg_the_bottoms():
    lr = _learner(n=3)
    updates = lr.collect([lr.submit(d, MERGED, 0) for d in range(3)])
    assert all(np.isfinite(u.loss_before) and u.lora_update_norm > 0 for u in updates)
    k = lr.split_point(MERGED)
    assert all(key[0] < k for key in updates[0].payload)  # a device sends only its bottom
    lr.aggregate([0, 1, 2], updates, "fedavg", [1.0, 1.0, 2.0])
    key = next(iter(updates[0].payload))
    want = sum(u.payload[key][0] * w for u, w in zip(updates, (0.25, 0.25, 0.5)))
    torch.testing.assert_close(lr.lora[key][0], want)
    ev = lr.evaluate(0)
    assert 0.0 <= ev["accuracy"] <= 1.0


def test_split_learning_runs_from_a_scenario_and_needs_one_worker():
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "placement": "lan"},
                            {"type": "agx_xavier", "count": 1, "placement": "lan"}]
    d["workload"].update(seq_len=32)
    d["training"] = {"rounds": 2, "local_steps": 2, "eval_every": 1}
    d["algorithm"] = {"name": "mergesfl", "params": {"split_layers": 6}}
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 120, "test_size": 40,
                     "torch_threads": 1, "eval": {"examples": 40}}
    _, out = run_dict(d)
    assert out.rounds["accuracy"].notna().all()
    assert out.device_rounds["loss_after"].notna().all()
    d["learning"]["workers"] = 2
    with pytest.raises(ValueError, match="learning.workers: 2; split learning"):
        make_learner(validate(d))
