"""devices/plan.py: the one pruning rule (how many groups a ratio removes) and the Plan's checks.

The cost model (devices.cost.kept_shape) and the real pruning step (learning.importance.prune) both
count removed groups with ``groups_to_remove``; these tests pin its edge cases and that both sides
follow it.
"""

from __future__ import annotations

import numpy as np
import pytest

from devices.cost import kept_shape
from devices.plan import Plan, groups_to_remove, top_layers
from devices.workload import load_arch


@pytest.mark.parametrize("n", [1, 2, 4, 12, 100, 3072, 14336])
def test_zero_ratio_removes_nothing(n):
    assert groups_to_remove(0.0, n) == 0


@pytest.mark.parametrize("n", [1, 2, 12, 3072])
def test_ratio_one_keeps_one_group(n):
    """Never removes every group: a layer keeps at least one head group and one FFN channel."""
    assert groups_to_remove(1.0, n) == n - 1
    assert groups_to_remove(0.9999999999, n) == n - 1


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.99, 1.0])
def test_single_group_is_never_removed(p):
    assert groups_to_remove(p, 1) == 0


def test_float_rendering_of_k_over_n_removes_k():
    """0.29 * 100 = 28.999999999999996 in binary floating point; the plan means 29 groups."""
    assert 0.29 * 100 < 29
    assert groups_to_remove(0.29, 100) == 29
    for n in (4, 12, 100, 128, 3072, 11008, 14336):
        for k in range(n):
            p = k / n
            assert groups_to_remove(p, n) == k, (p, n)
            assert groups_to_remove(float(f"{p:.15g}"), n) == k, (p, n)


def test_whole_groups_only():
    """p = 0.3 of 12 heads is 3.6: three heads go, not four."""
    assert groups_to_remove(0.3, 12) == 3
    assert groups_to_remove(0.3, 3072) == 921
    assert groups_to_remove(0.49, 2) == 0
    assert groups_to_remove(0.5, 2) == 1


@pytest.mark.parametrize("p,n", [(-0.1, 4), (1.1, 4), (0.5, 0)])
def test_out_of_range_is_refused(p, n):
    with pytest.raises(ValueError):
        groups_to_remove(p, n)


def test_cost_model_follows_the_rule():
    arch = load_arch("roberta-base")
    for p in np.linspace(0.0, 0.99, 100):
        sh = kept_shape(arch, float(p))
        assert sh.groups == arch.head_groups - groups_to_remove(float(p), arch.head_groups)
        assert sh.ffn == arch.intermediate - groups_to_remove(float(p), arch.intermediate)
    sh = kept_shape(arch, 0.25)  # 3 of 12 heads, 768 of 3072 channels, exactly
    assert (sh.groups, sh.ffn) == (9, 2304)


def test_real_pruning_follows_the_rule():
    """learning.importance.prune removes groups_to_remove(p, n) groups per layer and kind."""
    pytest.importorskip("torch")
    from learning.importance import KINDS, prune
    from learning.structure import ArchAdapter

    adapter = ArchAdapter("bert", num_layers=3, attn_groups=4, ffn_channels=100, head_dim=8, q_per_group=1,
                          matrices=(), head_module="classifier")
    masks = adapter.full_mask()
    rng = np.random.default_rng(0)
    scores = {(li, k): rng.random(adapter.n_groups(k)) for li in range(3) for k in KINDS}
    out = prune(masks, scores, 0.29, adapter)
    assert (~out.ffn).sum(axis=1).tolist() == [29, 29, 29]
    assert (~out.attn).sum(axis=1).tolist() == [groups_to_remove(0.29, 4)] * 3


def test_plan_checks():
    with pytest.raises(ValueError):
        Plan(prune_ratio=1.0, lora_rank=8, lora_layers=None, local_steps=1, batch_size=1)
    assert top_layers(3, 12) == (9, 10, 11)
