"""Where and how cheaply a local update runs: learning.device (cpu | cuda | auto) and learning.autocast
(none | bf16 | fp16): resolution, loss scaling, CPU results independent of how the CPU was chosen, GPU
runs (skipped without a GPU); no wasted passes: loss_before is step 0's loss, and importance is
measured only in rounds that prune."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fleet_helpers import base_scenario

from devices.plan import Plan
from devices.rng import generator, stream_seed
from learning.accel import LossScaler, autocast_dtype, resolve_device
from learning.learner import RealLearner
from learning.lora import detach
from learning.packed import DropoutMasks
from sim.loader import validate
from sim.runner import make_learner

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA GPU on this machine")


def _learner(**learning) -> RealLearner:
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "power_modes": ["MAXN"], "placement": "lan"}]
    d["workload"].update(seq_len=32, lora_targets=["query", "value", "ffn_in"])
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 200, "test_size": 40,
                     "torch_threads": 1, "partition": {"kind": "iid"}, **learning}
    return make_learner(validate(d))


PLAN = Plan(prune_ratio=0.25, lora_rank=4, lora_layers=None, local_steps=3, batch_size=8)


def _factors(u) -> dict:
    return {k: (f.B, f.A) for k, f in u.payload.factors.items()}


def test_auto_resolves_to_cuda_only_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="learning.device: cuda, but torch sees no GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="learning.device: 'gpu' is not one of cpu, cuda, auto"):
        resolve_device("gpu")


def test_autocast_is_fp32_on_cpu_and_16_bit_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("bf16", cpu) is None and autocast_dtype("none", cuda) is None
    assert autocast_dtype("bf16", cuda) == torch.bfloat16 and autocast_dtype("fp16", cuda) == torch.float16
    with pytest.raises(ValueError, match="learning.autocast: 'fp8'"):
        autocast_dtype("fp8", cuda)


def test_loss_scaler_unscales_skips_overflow_and_regrows():
    p = torch.nn.Parameter(torch.zeros(3))
    s = LossScaler(init=8.0, growth_every=2)
    s.scale(torch.tensor(2.0) * p.sum() + 1.0).backward()  # d/dp = 2 * 8
    assert s.unscale([p]) and torch.equal(p.grad, torch.full((3,), 2.0))
    p.grad = torch.tensor([1.0, math.inf, 0.0])
    assert not s.unscale([p])
    s.update(False)
    assert s.value == 4.0
    s.update(True)
    s.update(True)
    assert s.value == 8.0


def test_scenario_refuses_autocast_on_cpu_and_parallel_gpu_workers():
    from sim.scenario import LearningSpec  # noqa: PLC0415

    with pytest.raises(ValueError, match="autocast: fp16 needs device: cuda or auto"):
        LearningSpec(kind="real", autocast="fp16")
    with pytest.raises(ValueError, match="need device: cpu"):
        LearningSpec(kind="real", workers=2, device="auto")
    assert LearningSpec(kind="real", device="auto", autocast="bf16").device == "auto"


@pytest.mark.skipif(GPU, reason="auto means cuda on this machine")
def test_auto_on_a_machine_without_gpu_gives_the_cpu_update_bit_for_bit():
    a, b = _learner(device="cpu"), _learner(device="auto")
    assert b.torch_device.type == "cpu" and b.amp_dtype is None
    ua, ub = a.local_update(1, PLAN, 0), b.local_update(1, PLAN, 0)
    assert (ua.loss_before, ua.loss_after, ua.lora_update_norm) == (ub.loss_before, ub.loss_after, ub.lora_update_norm)
    for k, (B, A) in _factors(ua).items():
        assert torch.equal(B, _factors(ub)[k][0]) and torch.equal(A, _factors(ub)[k][1])
    assert a.evaluate(0)["accuracy"] == b.evaluate(0)["accuracy"]


@needs_gpu
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_gpu_update_matches_cpu_within_precision(amp):
    cpu, gpu = _learner(device="cpu"), _learner(device="cuda", autocast=amp)
    uc, ug = cpu.local_update(1, PLAN, 0), gpu.local_update(1, PLAN, 0)
    tol = 1e-3 if amp == "none" else 5e-2
    assert math.isclose(uc.loss_before, ug.loss_before, rel_tol=tol, abs_tol=tol)
    assert math.isfinite(ug.loss_after) and math.isfinite(ug.lora_update_norm)
    assert all(B.device.type == "cpu" for B, _ in _factors(ug).values())  # the server keeps CPU tensors
    if amp == "none":
        assert ug.payload.state.masks.key() == uc.payload.state.masks.key()
    gpu.aggregate([1], [ug], "svd", [1.0])
    assert 0.0 <= gpu.evaluate(0)["accuracy"] <= 1.0


def test_loss_before_is_the_probe_forward_that_step_0_replaces():
    """Without calibration or pruning before step 0, loss_before comes from step 0's forward; it equals
    the separate no-grad probe forward (same model, batch and dropout stream) bit for bit."""
    lr = _learner()
    keep = Plan(prune_ratio=0.0, lora_rank=4, lora_layers=None, local_steps=3, batch_size=8)
    upd = lr.local_update(1, keep, 2)
    run = lr._prepare(1, keep, 2)
    lr._dropout_masks = DropoutMasks(generator(lr.seed, "learn.dropout_masks", 1, 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(lr.seed, "learn.dropout", 1, 2))
        head = lr._head_module()
        lr._load_head(head)
        lr._attach(run.masks, run.keys, run.ranks, lr._received(run.keys, run.masks, run.ranks, run.gen), head)
        with torch.no_grad():
            probe = float(lr._loss(*run.probe))
        detach(lr.model, lr.slicer)
    lr._dropout_masks = None
    assert upd.loss_before == probe


def test_importance_is_measured_only_in_rounds_that_prune():
    lr = _learner()
    first = lr.local_update(0, PLAN, 0)  # prunes to 0.25: calibration + importance
    ema = first.payload.state.importance
    assert ema.values and all(c > 0 for c in ema.count.values())
    lr.aggregate([0], [first], "svd", [1.0])
    kept = lr.local_update(0, PLAN, 1)  # already at 0.25: keeps its structure
    assert kept.payload.state.masks.key() == first.payload.state.masks.key()
    after = kept.payload.state.importance
    assert after.count == ema.count
    assert all(np.array_equal(after.values[k], v) for k, v in ema.values.items())
    more = lr.local_update(0, Plan(prune_ratio=0.5, lora_rank=4, lora_layers=None, local_steps=3, batch_size=8), 1)
    assert all(more.payload.state.importance.count[k] == c + 3 for k, c in ema.count.items())


def test_devices_with_one_structure_share_one_svd_of_the_global_update():
    """The SVD of the global update restricted to a structure is computed once per aggregate and reused
    by every device with that structure; the received factors are bit-identical to factorising anew."""
    from learning.aggregate import factor_svd  # noqa: PLC0415

    lr = _learner()
    keep = Plan(prune_ratio=0.0, lora_rank=4, lora_layers=None, local_steps=2, batch_size=8)
    ups = [lr.local_update(d, keep, 0) for d in (0, 1)]
    lr.aggregate([0, 1], ups, "svd", [1.0, 1.0])
    got = {}
    for d in (0, 1):
        run = lr._prepare(d, keep, 1)
        got[d] = lr._received(run.keys, run.masks, run.ranks, run.gen)
        assert all(len(lr.glob[k].svd) == 1 for k in run.keys)  # device 1 hit device 0's entry
        gen = torch.Generator().manual_seed(stream_seed(lr.seed, "learn.resize", d, 1))
        for k in run.keys:
            rows, cols = lr._rows_cols(k, run.masks)
            B, A = factor_svd(lr.glob[k].dense[rows][:, cols], run.ranks[k], 16.0 / run.ranks[k], gen)
            assert torch.equal(B, got[d][k][0]) and torch.equal(A, got[d][k][1])
    lr.aggregate([0], [ups[0]], "svd", [1.0])
    assert all(not g.svd for g in lr.glob.values())  # a new global update starts without cached SVDs


def test_cached_svd_keeps_leading_components_and_refactorises_larger_ranks(monkeypatch):
    import learning.learner as L  # noqa: PLC0415
    from learning.aggregate import factor_svd, svd_parts  # noqa: PLC0415

    monkeypatch.setattr(L, "SVD_KEEP", 3)
    block = torch.randn(20, 12, generator=torch.Generator().manual_seed(0))
    entry = L.GlobalEntry(dense=block)
    small = entry.svd_parts(b"s", block, 2)
    assert small[0].shape == (20, 3) and small[3] == 12  # truncated, numerical rank of the whole block
    full = entry.svd_parts(b"s", block, 8)  # needs 8 > 3 components: computed anew, uncached
    assert full[0].shape == (20, 12) and len(entry.svd) == 1
    for r, parts in ((2, small), (8, full)):
        ref = factor_svd(block, r, 16.0 / r, torch.Generator().manual_seed(1))
        got = factor_svd(block, r, 16.0 / r, torch.Generator().manual_seed(1), parts)
        assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    assert svd_parts(block)[3] == 12
