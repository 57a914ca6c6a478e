"""learning/aggregate.py against the aggregation rules of docs/method.md (heterogeneous-rank aggregation and
rank resizing: FlexLoRA, arXiv 2402.11505; HetLoRA, arXiv 2401.06432).

Expected values are computed independently of the module: dense ΔW_i = s_i·B_i·A_i built by hand with
explicit index loops / slicing, truncated SVDs via ``torch.linalg.svd``, and HetLoRA products expanded
as Σ_i Σ_j w_i w_j B̃_i Ã_j.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.aggregate import (
    DeviceLora,
    aggregate_fedavg,
    aggregate_svd,
    aggregate_zero_pad,
    delta_full,
    factor_svd,
    factor_truncate,
    global_factors,
    holds_mask,
)

SHAPE = (12, 10)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _idx(values: list[int]) -> torch.Tensor:
    return torch.tensor(sorted(values), dtype=torch.int64)


def _device(
    gen: torch.Generator,
    rows: torch.Tensor,
    cols: torch.Tensor,
    rank: int,
    alpha: float = 16.0,
    scale: float = 1.0,
) -> DeviceLora:
    B = torch.randn((rows.numel(), rank), generator=gen) * scale
    A = torch.randn((rank, cols.numel()), generator=gen)
    return DeviceLora(B=B, A=A, scaling=alpha / rank, rows=rows, cols=cols)


def _dense_by_hand(u: DeviceLora, shape: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(shape)
    block = u.scaling * (u.B @ u.A)
    for a, j in enumerate(u.rows.tolist()):
        for b, k in enumerate(u.cols.tolist()):
            out[j, k] = block[a, b]
    return out


def _best_rank_r(delta: torch.Tensor, r: int) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
    r = min(r, S.numel())
    return (U[:, :r] * S[:r]) @ Vh[:r]


# --------------------------------------------------------------------------------------------- basics


def test_delta_full_and_mask_scatter_to_kept_block() -> None:
    g = _gen(0)
    u = _device(g, _idx([1, 4, 7]), _idx([0, 2, 9]), rank=2)
    d = delta_full(u, SHAPE)
    assert d.dtype == torch.float32 and tuple(d.shape) == SHAPE
    torch.testing.assert_close(d, _dense_by_hand(u, SHAPE), atol=1e-6, rtol=0)
    m = holds_mask(u, SHAPE)
    assert m.dtype == torch.bool and int(m.sum()) == 9
    assert bool(m[4, 2]) and not bool(m[4, 1]) and not bool(m[0, 0])
    assert bool((d[~m] == 0).all())
    assert u.rank == 2


def test_device_lora_validates_shapes_and_indices() -> None:
    rows, cols = _idx([0, 1]), _idx([0, 1, 2])
    with pytest.raises(ValueError, match="rows"):
        DeviceLora(torch.zeros(3, 2), torch.zeros(2, 3), 1.0, rows, cols)
    with pytest.raises(ValueError, match="rank mismatch"):
        DeviceLora(torch.zeros(2, 2), torch.zeros(3, 3), 1.0, rows, cols)
    with pytest.raises(ValueError, match="sorted"):
        DeviceLora(torch.zeros(2, 1), torch.zeros(1, 3), 1.0, torch.tensor([1, 0]), cols)
    with pytest.raises(ValueError, match="int64"):
        DeviceLora(torch.zeros(2, 1), torch.zeros(1, 3), 1.0, rows.int(), cols)
    u = DeviceLora(torch.zeros(2, 1), torch.zeros(1, 3), 1.0, _idx([0, 20]), cols)
    with pytest.raises(ValueError, match="out of range"):
        delta_full(u, SHAPE)


# ------------------------------------------------------------------------------------- aggregate_svd


def test_svd_aggregation_equal_masks_equals_weighted_mean_of_delta() -> None:
    """Equal-rank, equal-mask updates: ΔW_g = Σ w_i s_i B_i A_i / Σ w_i on the kept block."""
    g = _gen(1)
    rows, cols = _idx([0, 3, 5, 6, 11]), _idx([1, 2, 4, 8])
    ups = [_device(g, rows, cols, rank=4, alpha=8.0 + i) for i in range(4)]
    w = [3.0, 1.0, 0.5, 7.0]
    prev = torch.randn(SHAPE, generator=g)
    out = aggregate_svd(ups, w, SHAPE, previous=prev)
    expected_block = sum(wi * u.scaling * (u.B @ u.A) for wi, u in zip(w, ups)) / sum(w)
    torch.testing.assert_close(out[rows][:, cols], expected_block, atol=1e-6, rtol=1e-6)
    mask = holds_mask(ups[0], SHAPE)
    torch.testing.assert_close(out[~mask], prev[~mask], atol=0, rtol=0)
    # The weighting matters (a plain mean would differ).
    plain = sum(u.scaling * (u.B @ u.A) for u in ups) / len(ups)
    assert float((out[rows][:, cols] - plain).abs().max()) > 1e-2


def test_svd_aggregation_masked_average_with_different_masks() -> None:
    g = _gen(2)
    u1 = _device(g, _idx([0, 1, 2]), _idx([0, 1]), rank=2)
    u2 = _device(g, _idx([1, 2, 3]), _idx([1, 2, 3]), rank=5)
    prev = torch.full(SHAPE, -7.0)
    w = [1.0, 3.0]
    out = aggregate_svd([u1, u2], w, SHAPE, previous=prev)
    d1, d2 = _dense_by_hand(u1, SHAPE), _dense_by_hand(u2, SHAPE)
    # Held only by device 1: (0, 0), (2, 0), (0, 1).
    for j, k in [(0, 0), (2, 0), (0, 1)]:
        assert math.isclose(float(out[j, k]), float(d1[j, k]), rel_tol=1e-5, abs_tol=1e-6)
    # Held only by device 2: (3, 3), (1, 2).
    for j, k in [(3, 3), (1, 2)]:
        assert math.isclose(float(out[j, k]), float(d2[j, k]), rel_tol=1e-5, abs_tol=1e-6)
    # Held by both: (1, 1), (2, 1) -> weighted mean.
    for j, k in [(1, 1), (2, 1)]:
        exp = (1.0 * float(d1[j, k]) + 3.0 * float(d2[j, k])) / 4.0
        assert math.isclose(float(out[j, k]), exp, rel_tol=1e-5, abs_tol=1e-6)
    # Held by none: keep previous; None -> zeros.
    held = holds_mask(u1, SHAPE) | holds_mask(u2, SHAPE)
    assert bool((out[~held] == -7.0).all())
    assert bool((aggregate_svd([u1, u2], w, SHAPE)[~held] == 0).all())
    # previous is not modified in place.
    assert bool((prev == -7.0).all())


def test_svd_aggregation_zero_weight_device_is_ignored() -> None:
    g = _gen(3)
    u1 = _device(g, _idx([0, 1]), _idx([0, 1]), rank=1)
    u2 = _device(g, _idx([0, 5]), _idx([0, 1]), rank=3)
    prev = torch.full(SHAPE, 2.5)
    out = aggregate_svd([u1, u2], [1.0, 0.0], SHAPE, previous=prev)
    torch.testing.assert_close(out[:2, :2], _dense_by_hand(u1, SHAPE)[:2, :2], atol=1e-6, rtol=0)
    assert float(out[5, 0]) == 2.5  # held only by a zero-weight device -> previous


@pytest.mark.parametrize(
    ("weights", "match"),
    [([1.0], "2 updates"), ([1.0, -1.0], "non-negative"), ([0.0, 0.0], "all be zero"), ([1.0, float("nan")], "finite")],
)
def test_svd_aggregation_rejects_bad_weights(weights: list[float], match: str) -> None:
    g = _gen(4)
    ups = [_device(g, _idx([0]), _idx([0]), rank=1) for _ in range(2)]
    with pytest.raises(ValueError, match=match):
        aggregate_svd(ups, weights, SHAPE)


def test_svd_aggregation_rejects_empty_and_bad_previous() -> None:
    with pytest.raises(ValueError, match="no updates"):
        aggregate_svd([], [], SHAPE)
    u = _device(_gen(5), _idx([0]), _idx([0]), rank=1)
    with pytest.raises(ValueError, match="previous"):
        aggregate_svd([u], [1.0], SHAPE, previous=torch.zeros(3, 3))


# ----------------------------------------------------------------------- zero-pad bias vs svd


def test_zero_pad_is_pulled_toward_high_rank_device_while_svd_is_not() -> None:
    """Two devices, equal data weights: rank 2 (small ‖ΔW‖) and rank 16 (large ‖ΔW‖), same structure."""
    g = _gen(6)
    rows, cols = torch.arange(24), torch.arange(20)
    shape = (24, 20)
    low = _device(g, rows, cols, rank=2, alpha=16.0, scale=0.05)
    high = _device(g, rows, cols, rank=16, alpha=16.0, scale=1.0)
    d_low, d_high = delta_full(low, shape), delta_full(high, shape)
    assert float(d_high.norm()) > 5.0 * float(d_low.norm())
    gap = float((d_high - d_low).norm())

    def dist(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x - y).norm()) / gap

    svd = aggregate_svd([low, high], [1.0, 1.0], shape)
    torch.testing.assert_close(svd, (d_low + d_high) / 2, atol=1e-5, rtol=1e-5)
    assert math.isclose(dist(svd, d_low), dist(svd, d_high), rel_tol=1e-4)
    assert math.isclose(dist(svd, d_low), 0.5, rel_tol=1e-4)

    B_g, A_g = aggregate_zero_pad([low, high], shape)  # HetLoRA sparsity weights
    assert tuple(B_g.shape) == (24, 16) and tuple(A_g.shape) == (16, 20)
    zp = B_g @ A_g
    assert dist(zp, d_high) < 0.5 * dist(zp, d_low)
    # Its own-term weights are w_i² with w_i ∝ ‖ΔW_i‖: the high-rank device dominates.
    n_low, n_high = float(d_low.norm()), float(d_high.norm())
    w_low, w_high = n_low / (n_low + n_high), n_high / (n_low + n_high)
    assert w_high**2 > 4 * w_low**2


def test_zero_pad_product_has_cross_terms() -> None:
    """Averaging B and A separately gives Σ_i Σ_j w_i w_j B̃_i Ã_j, not Σ_i w_i ΔW_i."""
    g = _gen(7)
    shape = (9, 7)
    u1 = _device(g, _idx([0, 1, 2, 3, 4, 5]), _idx([0, 1, 2, 3, 4]), rank=3, alpha=6.0)
    u2 = _device(g, _idx([2, 3, 4, 5, 6, 7, 8]), _idx([1, 2, 3, 4, 5, 6]), rank=5, alpha=10.0)
    w = [2.0, 1.0]
    B_g, A_g = aggregate_zero_pad([u1, u2], shape, weights=w)
    wn = [2.0 / 3.0, 1.0 / 3.0]

    def tilde(u: DeviceLora) -> tuple[torch.Tensor, torch.Tensor]:
        Bt, At = torch.zeros(shape[0], 5), torch.zeros(5, shape[1])
        Bt[u.rows, : u.rank] = math.sqrt(u.scaling) * u.B
        At[: u.rank, u.cols] = math.sqrt(u.scaling) * u.A
        return Bt, At

    t = [tilde(u1), tilde(u2)]
    torch.testing.assert_close(B_g, wn[0] * t[0][0] + wn[1] * t[1][0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(A_g, wn[0] * t[0][1] + wn[1] * t[1][1], atol=1e-6, rtol=1e-6)
    expanded = sum(wn[i] * wn[j] * t[i][0] @ t[j][1] for i in range(2) for j in range(2))
    torch.testing.assert_close(B_g @ A_g, expanded, atol=1e-5, rtol=1e-5)
    mean = wn[0] * delta_full(u1, shape) + wn[1] * delta_full(u2, shape)
    assert float((B_g @ A_g - mean).norm()) > 0.1 * float(mean.norm())
    # The cross terms leak into entries no device holds: (7, 0) has row 7 only in device 2 and column 0
    # only in device 1. Masked svd aggregation keeps `previous` there.
    held = holds_mask(u1, shape) | holds_mask(u2, shape)
    assert not bool(held[7, 0])
    assert abs(float((B_g @ A_g)[7, 0])) > 1e-3
    assert float(aggregate_svd([u1, u2], w, shape)[7, 0]) == 0.0


def test_zero_pad_all_zero_updates_use_equal_weights() -> None:
    rows, cols = _idx([0, 1]), _idx([2, 3])
    u1 = DeviceLora(torch.zeros(2, 2), torch.ones(2, 2), 1.0, rows, cols)
    u2 = DeviceLora(torch.zeros(2, 1), torch.full((1, 2), 3.0), 4.0, rows, cols)
    B_g, A_g = aggregate_zero_pad([u1, u2], SHAPE)
    # A_g[0, cols] = 0.5·1·1 + 0.5·sqrt(4)·3 = 3.5
    torch.testing.assert_close(A_g[0, cols], torch.full((2,), 3.5))
    assert bool((B_g == 0).all())


def test_fedavg_equal_ranks_and_mismatched_ranks() -> None:
    g = _gen(8)
    rows, cols = _idx([0, 2, 4]), _idx([1, 3])
    u1, u2 = _device(g, rows, cols, rank=4), _device(g, rows, cols, rank=4, alpha=32.0)
    B_g, A_g = aggregate_fedavg([u1, u2], [1.0, 3.0], SHAPE)
    exp_B = torch.zeros(SHAPE[0], 4)
    exp_B[rows] = 0.25 * math.sqrt(u1.scaling) * u1.B + 0.75 * math.sqrt(u2.scaling) * u2.B
    torch.testing.assert_close(B_g, exp_B, atol=1e-6, rtol=1e-6)
    exp_A = torch.zeros(4, SHAPE[1])
    exp_A[:, cols] = 0.25 * math.sqrt(u1.scaling) * u1.A + 0.75 * math.sqrt(u2.scaling) * u2.A
    torch.testing.assert_close(A_g, exp_A, atol=1e-6, rtol=1e-6)
    u3 = _device(g, rows, cols, rank=2)
    with pytest.raises(ValueError, match=r"\[4, 4, 2\]"):
        aggregate_fedavg([u1, u2, u3], [1.0, 1.0, 1.0], SHAPE)


# ----------------------------------------------------------------------------------- factor_svd


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_factor_svd_is_best_rank_r_approximation(rank: int) -> None:
    g = _gen(9)
    delta = torch.randn(8, 6, generator=g)
    s = 16.0 / rank
    B, A = factor_svd(delta, rank, s, _gen(10))
    assert tuple(B.shape) == (8, rank) and tuple(A.shape) == (rank, 6)
    approx = s * B @ A
    torch.testing.assert_close(approx.double(), _best_rank_r(delta, rank), atol=1e-5, rtol=1e-5)
    # Eckart–Young: the residual is the tail of the spectrum.
    S = torch.linalg.svdvals(delta.double())
    tail = float(S[rank:].pow(2).sum().sqrt())
    assert math.isclose(float((delta - approx).norm()), tail, rel_tol=1e-4, abs_tol=1e-5)


def test_factor_svd_exact_when_rank_covers_true_rank_and_beyond_min_shape() -> None:
    g = _gen(11)
    true = torch.randn(7, 2, generator=g) @ torch.randn(2, 5, generator=g)  # rank 2
    B, A = factor_svd(true, 4, 2.0, _gen(12))
    torch.testing.assert_close(2.0 * B @ A, true, atol=1e-5, rtol=1e-5)
    assert bool((B[:, 2:] == 0).all())  # numerically-zero components: zero B column ...
    assert bool((A[2:].abs().sum(dim=1) > 0).all())  # ... and a random A row
    # Rank larger than min(shape).
    small = torch.randn(5, 3, generator=g)
    B, A = factor_svd(small, 8, 0.5, _gen(13))
    assert tuple(B.shape) == (5, 8) and tuple(A.shape) == (8, 3)
    torch.testing.assert_close(0.5 * B @ A, small, atol=1e-5, rtol=1e-5)
    assert bool((B[:, 3:] == 0).all())
    bound = 1.0 / math.sqrt(3)
    assert bool((A[3:].abs() <= bound).all()) and bool((A[3:].abs() > 0).any())


def test_factor_svd_zero_delta_and_determinism() -> None:
    B, A = factor_svd(torch.zeros(6, 9), 4, 4.0, _gen(14))
    assert bool((B == 0).all())
    assert bool((A != 0).all())
    assert bool((A.abs() <= 1.0 / 3.0).all())  # U(-1/sqrt(9), 1/sqrt(9))
    # Roughly uniform over the full interval (not, e.g., U(0, b) or a far smaller spread).
    assert float(A.min()) < -0.15 and float(A.max()) > 0.15
    B2, A2 = factor_svd(torch.zeros(6, 9), 4, 4.0, _gen(14))
    assert torch.equal(A, A2) and torch.equal(B, B2)
    _, A3 = factor_svd(torch.zeros(6, 9), 4, 4.0, _gen(15))
    assert not torch.equal(A, A3)
    delta = torch.randn(6, 9, generator=_gen(16))
    r1 = factor_svd(delta, 7, 1.0, _gen(17))
    r2 = factor_svd(delta, 7, 1.0, _gen(17))
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1])


def test_factor_svd_of_device_block_after_svd_aggregation() -> None:
    """Full FlexLoRA round: aggregate -> restrict to the device's block -> factor; s·B·A is the block's rank-r truncation."""
    g = _gen(18)
    rows_a, cols_a = _idx([0, 1, 2, 3, 4, 5, 6, 7]), _idx([0, 2, 3, 5, 7, 9])
    rows_b, cols_b = _idx([1, 2, 5, 6, 10]), _idx([0, 1, 2, 3, 4, 5, 6])
    ups = [_device(g, rows_a, cols_a, rank=2), _device(g, rows_b, cols_b, rank=6)]
    agg = aggregate_svd(ups, [1.0, 2.0], SHAPE)
    for u in ups:
        block = agg[u.rows][:, u.cols]
        B, A = factor_svd(block, u.rank, u.scaling, _gen(19))
        new = DeviceLora(B, A, u.scaling, u.rows, u.cols)
        torch.testing.assert_close(
            delta_full(new, SHAPE)[u.rows][:, u.cols].double(), _best_rank_r(block, u.rank), atol=1e-5, rtol=1e-5
        )


# ----------------------------------------------------------------------------- factor_truncate


def test_factor_truncate_round_trip_from_zero_pad() -> None:
    """A single device through zero-pad aggregation and truncation gets its own factors back."""
    g = _gen(20)
    u = _device(g, _idx([1, 3, 8]), _idx([0, 4, 5, 9]), rank=3, alpha=12.0)
    B_g, A_g = aggregate_zero_pad([u], SHAPE)
    B, A = factor_truncate(B_g, A_g, u.rows, u.cols, u.rank, u.scaling, _gen(21))
    torch.testing.assert_close(B, u.B, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(A, u.A, atol=1e-6, rtol=1e-5)


def test_factor_truncate_shrink_and_expand() -> None:
    g = _gen(22)
    B_g, A_g = torch.randn(SHAPE[0], 4, generator=g), torch.randn(4, SHAPE[1], generator=g)
    rows, cols = _idx([0, 5, 6, 11]), _idx([1, 2, 7])
    # Shrink to rank 2: s·B·A = B_g[rows, :2] A_g[:2, cols].
    B, A = factor_truncate(B_g, A_g, rows, cols, 2, 8.0, _gen(23))
    torch.testing.assert_close(8.0 * B @ A, B_g[rows, :2] @ A_g[:2][:, cols], atol=1e-5, rtol=1e-5)
    # Rank 1.
    B, A = factor_truncate(B_g, A_g, rows, cols, 1, 16.0, _gen(23))
    torch.testing.assert_close(16.0 * B @ A, torch.outer(B_g[rows, 0], A_g[0, cols]), atol=1e-5, rtol=1e-5)
    # Expand to rank 7 (> r_g and > min(len(rows), len(cols))): ΔW unchanged.
    B, A = factor_truncate(B_g, A_g, rows, cols, 7, 16.0 / 7, _gen(24))
    assert tuple(B.shape) == (4, 7) and tuple(A.shape) == (7, 3)
    torch.testing.assert_close((16.0 / 7) * B @ A, (B_g @ A_g)[rows][:, cols], atol=1e-5, rtol=1e-5)
    assert bool((B[:, 4:] == 0).all())
    assert bool((A[4:] != 0).all()) and bool((A[4:].abs() <= 1.0 / math.sqrt(3)).all())
    B2, A2 = factor_truncate(B_g, A_g, rows, cols, 7, 16.0 / 7, _gen(24))
    assert torch.equal(A, A2)


def test_global_factors_and_truncate_round_trip() -> None:
    """Dense ΔW_g -> global factors -> truncate to a device: s·B·A = ΔW_g on its block when r covers the rank."""
    g = _gen(25)
    dense = torch.randn(SHAPE[0], 3, generator=g) @ torch.randn(3, SHAPE[1], generator=g)
    B_g, A_g = global_factors(dense, 5)
    assert tuple(B_g.shape) == (SHAPE[0], 5) and tuple(A_g.shape) == (5, SHAPE[1])
    torch.testing.assert_close(B_g @ A_g, dense, atol=1e-5, rtol=1e-5)
    B_g1, A_g1 = global_factors(dense, 1)
    torch.testing.assert_close((B_g1 @ A_g1).double(), _best_rank_r(dense, 1), atol=1e-5, rtol=1e-5)
    rows, cols = _idx([2, 3, 9]), _idx([0, 6])
    B, A = factor_truncate(B_g, A_g, rows, cols, 5, 2.0, _gen(26))
    torch.testing.assert_close(2.0 * B @ A, dense[rows][:, cols], atol=1e-5, rtol=1e-5)
    # Components 3, 4 had σ = 0: zero B column and zero A row -> A row redrawn so the device can learn there.
    assert bool((B[:, 3:] == 0).all())
    assert bool((A[3:].abs().sum(dim=1) > 0).all())
    # Rank larger than min(shape) is padded with zeros.
    B_w, A_w = global_factors(torch.randn(3, 4, generator=g), 6)
    assert tuple(B_w.shape) == (3, 6) and bool((B_w[:, 3:] == 0).all()) and bool((A_w[3:] == 0).all())


# -------------------------------------------------------------------------------------- property test


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[DeviceLora], list[float], tuple[int, int], torch.Tensor]:
    d_out, d_in = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    n = draw(st.integers(1, 4))
    gen = _gen(draw(st.integers(0, 2**31 - 1)))
    ups, weights = [], []
    for _ in range(n):
        rows = draw(st.lists(st.integers(0, d_out - 1), min_size=1, max_size=d_out, unique=True))
        cols = draw(st.lists(st.integers(0, d_in - 1), min_size=1, max_size=d_in, unique=True))
        rank = draw(st.integers(1, 9))
        ups.append(_device(gen, _idx(rows), _idx(cols), rank, alpha=draw(st.floats(1.0, 32.0))))
        weights.append(draw(st.floats(0.01, 100.0)))
    prev = torch.randn((d_out, d_in), generator=gen)
    return ups, weights, (d_out, d_in), prev


@settings(max_examples=25, deadline=None)
@given(_scenario())
def test_svd_aggregation_is_convex_combination(
    case: tuple[list[DeviceLora], list[float], tuple[int, int], torch.Tensor],
) -> None:
    ups, weights, shape, prev = case
    out = aggregate_svd(ups, weights, shape, previous=prev)
    dense = torch.stack([_dense_by_hand(u, shape) for u in ups])
    masks = torch.stack([holds_mask(u, shape) for u in ups])
    held = masks.any(dim=0)
    lo = torch.where(masks, dense, torch.full_like(dense, float("inf"))).min(dim=0).values
    hi = torch.where(masks, dense, torch.full_like(dense, float("-inf"))).max(dim=0).values
    tol = 1e-5 * (1.0 + dense.abs().max())
    assert bool((out[held] >= lo[held] - tol).all())
    assert bool((out[held] <= hi[held] + tol).all())
    assert torch.equal(out[~held], prev[~held])


@pytest.mark.parametrize("pruned", ["rows", "cols", "both"])
def test_svd_aggregation_adds_blocks_exactly_as_the_cartesian_index(pruned: str) -> None:
    """The one-axis ``index_add_`` path of aggregate_svd gives the bit-identical float64 sums of the
    general ``num[rows x cols] += block`` it replaces (rows-pruned, column-pruned, both)."""
    from learning.aggregate import _add_at  # noqa: PLC0415

    g = torch.Generator().manual_seed(3)
    m, n = 40, 24
    fast = torch.randn(m, n, generator=g, dtype=torch.float64)
    slow = fast.clone()
    for _ in range(5):
        rows = torch.sort(torch.randperm(m, generator=g)[:29]).values if pruned != "cols" else torch.arange(m)
        cols = torch.sort(torch.randperm(n, generator=g)[:17]).values if pruned != "rows" else torch.arange(n)
        block = torch.randn(len(rows), len(cols), generator=g, dtype=torch.float64) * 1e3
        _add_at(fast, rows, cols, block)
        slow[rows[:, None], cols[None, :]] += block
    assert torch.equal(fast, slow)
