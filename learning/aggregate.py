"""Tensor math of heterogeneous-rank, heterogeneously pruned LoRA aggregation and rank resizing.

Pure torch, fp32, CPU (no peft / transformers). Sources: FlexLoRA (Bai et al., NeurIPS 2024, arXiv
2402.11505) for SVD reconstruction and redistribution; HetLoRA (Cho et al., arXiv 2401.06432) for
zero-padding, sparsity-weighted aggregation and truncation; masked averaging over the devices that keep
each structure is our addition for pruned devices (``docs/method.md`` section 4).

Conventions
-----------
One LoRA'd weight matrix ``W`` of full shape ``(d_out, d_in)``. Structured pruning removes whole rows
(output channels / heads) and columns (input channels). A device keeps the output rows ``rows`` and the
input columns ``cols``: sorted (strictly increasing) int64 index tensors in full coordinates. Its factors
live in its sliced coordinates::

    B : (len(rows), r)      A : (r, len(cols))      ΔW_i = s_i · B · A,   s_i = lora_alpha / r_i

and ``ΔW_i`` scattered into full coordinates is zero outside ``rows × cols``.

Aggregators
-----------
* :func:`aggregate_svd` (default, FlexLoRA-style): reconstruct every ``ΔW_i`` in full coordinates and
  average element-wise over the devices that hold each entry (masked averaging). The result is a
  dense ``ΔW_g``; :func:`factor_svd` (per device, on its kept block) or :func:`global_factors` +
  :func:`factor_truncate` turn it back into factors.
* :func:`aggregate_zero_pad` (HetLoRA): zero-pad the factors to ``r_max`` and average ``B`` and ``A``
  separately. The product of averages contains cross terms ``B̃_i Ã_j`` (i ≠ j) and scales each device's
  own term by ``w_i²``, so together with the norm-proportional weights it biases the aggregate toward
  the devices with the largest ``‖ΔW_i‖`` (usually the high-rank ones): the aggregation bias FedSpine's
  authors avoid by reconstructing ΔW first.
* :func:`aggregate_fedavg`: plain FedAvg of equal-rank factors (same cross-term bias; baseline).

Randomness: only the redistribution functions draw random numbers, from an explicit
``torch.Generator`` (no global RNG). Random ``A`` rows follow peft's default ``lora_A`` initialisation,
``kaiming_uniform_(a=sqrt(5))`` on an ``(r × d_in)`` weight, i.e. ``U(-1/sqrt(d_in), 1/sqrt(d_in))``
(gain = sqrt(2/(1+a²)) = sqrt(1/3), bound = sqrt(3)·gain/sqrt(fan_in) = 1/sqrt(fan_in)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "SINGULAR_VALUE_RTOL",
    "DeviceLora",
    "aggregate_fedavg",
    "aggregate_svd",
    "aggregate_zero_pad",
    "delta_full",
    "factor_svd",
    "factor_truncate",
    "global_factors",
    "holds_mask",
    "lora_a_init",
]

logger = logging.getLogger(__name__)

SINGULAR_VALUE_RTOL = 1e-6
"""Singular values ``σ_k <= SINGULAR_VALUE_RTOL · σ_max`` are treated as zero (numerical rank)."""

_DTYPE = torch.float32


def _check_index(idx: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a kept-index tensor: 1-D, int64, strictly increasing, non-negative."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(idx).__name__}")
    if idx.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(idx.shape)}")
    if idx.dtype != torch.int64:
        raise ValueError(f"{name} must be int64, got {idx.dtype}")
    if idx.numel() > 0:
        if int(idx[0]) < 0:
            raise ValueError(f"{name} has negative indices")
        if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
            raise ValueError(f"{name} must be sorted and unique (strictly increasing)")
    return idx.to("cpu")


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """Validate a full ``(d_out, d_in)`` shape."""
    if len(shape) != 2:
        raise ValueError(f"shape must be (d_out, d_in), got {tuple(shape)}")
    d_out, d_in = int(shape[0]), int(shape[1])
    if d_out <= 0 or d_in <= 0:
        raise ValueError(f"shape must be positive, got {(d_out, d_in)}")
    return d_out, d_in


def _check_rank(rank: int) -> int:
    if int(rank) != rank or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    return int(rank)


def _check_scaling(scaling: float) -> float:
    s = float(scaling)
    if not math.isfinite(s) or s <= 0.0:
        raise ValueError(f"scaling must be finite and > 0, got {scaling!r}")
    return s


@dataclass
class DeviceLora:
    """One device's LoRA factors for one weight matrix, in its pruned (sliced) coordinates.

    ``B`` is ``(len(rows), r)``, ``A`` is ``(r, len(cols))``; the effective update is
    ``ΔW = scaling · B · A`` with ``scaling = lora_alpha / r``. ``rows`` / ``cols`` are the kept output rows
    and input columns in full coordinates (sorted, unique, int64).
    """

    B: torch.Tensor
    A: torch.Tensor
    scaling: float
    rows: torch.Tensor
    cols: torch.Tensor

    def __post_init__(self) -> None:
        self.rows = _check_index(self.rows, "rows")
        self.cols = _check_index(self.cols, "cols")
        if self.B.dim() != 2 or self.A.dim() != 2:
            raise ValueError(f"B and A must be 2-D, got {tuple(self.B.shape)} and {tuple(self.A.shape)}")
        if self.B.shape[1] != self.A.shape[0]:
            raise ValueError(f"rank mismatch: B is {tuple(self.B.shape)}, A is {tuple(self.A.shape)}")
        if self.B.shape[1] < 1:
            raise ValueError("rank must be >= 1")
        if self.B.shape[0] != self.rows.numel():
            raise ValueError(f"B has {self.B.shape[0]} rows but len(rows) = {self.rows.numel()}")
        if self.A.shape[1] != self.cols.numel():
            raise ValueError(f"A has {self.A.shape[1]} columns but len(cols) = {self.cols.numel()}")
        self.scaling = _check_scaling(self.scaling)

    @property
    def rank(self) -> int:
        """LoRA rank ``r`` (columns of ``B`` = rows of ``A``)."""
        return int(self.B.shape[1])

    def _fits(self, shape: tuple[int, int]) -> None:
        """Raise if the kept indices fall outside the full ``shape``."""
        if self.rows.numel() and int(self.rows[-1]) >= shape[0]:
            raise ValueError(f"rows index {int(self.rows[-1])} out of range for d_out = {shape[0]}")
        if self.cols.numel() and int(self.cols[-1]) >= shape[1]:
            raise ValueError(f"cols index {int(self.cols[-1])} out of range for d_in = {shape[1]}")


def _f32(t: torch.Tensor) -> torch.Tensor:
    """Detached fp32 CPU view/copy of ``t``."""
    return t.detach().to(device="cpu", dtype=_DTYPE)


def delta_full(u: DeviceLora, shape: tuple[int, int]) -> torch.Tensor:
    """``ΔW_i`` in full coordinates: ``s·B·A`` scattered into ``zeros(shape)`` at ``rows × cols``."""
    shp = _check_shape(shape)
    u._fits(shp)
    out = torch.zeros(shp, dtype=_DTYPE)
    out[u.rows[:, None], u.cols[None, :]] = u.scaling * (_f32(u.B) @ _f32(u.A))
    return out


def holds_mask(u: DeviceLora, shape: tuple[int, int]) -> torch.Tensor:
    """Structure mask ``M_i`` (bool, ``(d_out, d_in)``): True exactly at ``rows × cols``."""
    shp = _check_shape(shape)
    u._fits(shp)
    m = torch.zeros(shp, dtype=torch.bool)
    m[u.rows[:, None], u.cols[None, :]] = True
    return m


def _check_weights(weights: Sequence[float], n: int) -> torch.Tensor:
    """Validate aggregation weights (length ``n``, finite, ``>= 0``, positive sum); return them as float64."""
    w = torch.as_tensor([float(x) for x in weights], dtype=torch.float64)
    if w.numel() != n:
        raise ValueError(f"got {w.numel()} weights for {n} updates")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    if bool((w < 0).any()):
        raise ValueError(f"weights must be non-negative, got {w.tolist()}")
    if float(w.sum()) <= 0.0:
        raise ValueError("weights must not all be zero")
    return w


def _check_updates(updates: Sequence[DeviceLora], shape: Sequence[int]) -> tuple[int, int]:
    if len(updates) == 0:
        raise ValueError("no updates to aggregate")
    shp = _check_shape(shape)
    for u in updates:
        u._fits(shp)
    return shp


def _add_at(target: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
    """``target[rows × cols] += values`` in place (``rows``/``cols`` without repeats, as structure indices are).

    A device's structure keeps every column (row-pruned matrices) or every row (column-pruned ones), so
    the block is added along one axis with ``index_add_``, which adds the same values to the same
    entries as the general Cartesian-product index but without building a 2-D index (the whole
    aggregation of 8 row-pruned 1536 x 384 updates measured 3.6x faster, the result bit-identical);
    the general index remains for blocks pruned along both axes."""
    m, n = target.shape
    if len(cols) == n and bool((cols == torch.arange(n)).all()):
        target.index_add_(0, rows, values)
    elif len(rows) == m and bool((rows == torch.arange(m)).all()):
        target.index_add_(1, cols, values)
    else:
        target[rows[:, None], cols[None, :]] += values


def aggregate_svd(
    updates: Sequence[DeviceLora],
    weights: Sequence[float],
    shape: tuple[int, int],
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """FlexLoRA-style reconstruction (arXiv 2402.11505) with masked averaging.

    Every device's update is reconstructed in full coordinates, ``ΔW_i = s_i·B_i·A_i`` scattered to
    ``rows_i × cols_i`` with structure mask ``M_i``, and averaged element-wise over the holders::

        ΔW_g[j,k] = Σ_i w_i·M_i[j,k]·ΔW_i[j,k] / Σ_i w_i·M_i[j,k]

    Entries with a zero denominator (no device, or only zero-weight devices, hold them) keep
    ``previous[j,k]`` (zeros if ``previous`` is None). Each entry is therefore a convex combination of the
    holding devices' entries, independent of their ranks. Weights are typically ``|D_i|``; they need not be
    normalised. The name refers to the SVD redistribution (:func:`factor_svd`) this dense aggregate feeds.

    Raises ``ValueError`` on empty ``updates``, a length mismatch, negative / non-finite / all-zero weights,
    or a ``previous`` of the wrong shape. Returns a new fp32 ``(d_out, d_in)`` tensor.
    """
    shp = _check_updates(updates, shape)
    w = _check_weights(weights, len(updates))
    num = torch.zeros(shp, dtype=torch.float64)
    den = torch.zeros(shp, dtype=torch.float64)
    for u, wi in zip(updates, w.tolist(), strict=True):
        if wi == 0.0:
            continue
        block = u.scaling * (_f32(u.B) @ _f32(u.A))
        _add_at(num, u.rows, u.cols, wi * block.to(torch.float64))
        _add_at(den, u.rows, u.cols, torch.full(block.shape, wi, dtype=torch.float64))
    if previous is None:
        out = torch.zeros(shp, dtype=_DTYPE)
    else:
        if tuple(previous.shape) != shp:
            raise ValueError(f"previous has shape {tuple(previous.shape)}, expected {shp}")
        out = _f32(previous).clone()
    held = den > 0
    out[held] = (num[held] / den[held]).to(_DTYPE)
    logger.debug("aggregate_svd: %d updates, %d of %d entries held", len(updates), int(held.sum()), held.numel())
    return out


def _scatter_scaled(u: DeviceLora, shape: tuple[int, int], r_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HetLoRA full-coordinate factors with the scaling folded in, zero-padded to rank ``r_max``.

    ``B̃ = sqrt(s)·B`` at ``rows`` (zeros elsewhere), ``(d_out × r_max)``; ``Ã = sqrt(s)·A`` at ``cols``,
    ``(r_max × d_in)``; columns / rows beyond ``u.rank`` are zero. ``B̃·Ã = ΔW_i`` in full coordinates.
    """
    r, root = u.rank, math.sqrt(u.scaling)
    Bt = torch.zeros((shape[0], r_max), dtype=_DTYPE)
    At = torch.zeros((r_max, shape[1]), dtype=_DTYPE)
    Bt[u.rows, :r] = root * _f32(u.B)
    At[:r, u.cols] = root * _f32(u.A)
    return Bt, At


def _average_factors(
    updates: Sequence[DeviceLora], w: torch.Tensor, shape: tuple[int, int], r_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_i w_i B̃_i, Σ_i w_i Ã_i)`` for weights ``w`` that already sum to 1."""
    B_g = torch.zeros((shape[0], r_max), dtype=_DTYPE)
    A_g = torch.zeros((r_max, shape[1]), dtype=_DTYPE)
    for u, wi in zip(updates, w.tolist(), strict=True):
        Bt, At = _scatter_scaled(u, shape, r_max)
        B_g += wi * Bt
        A_g += wi * At
    return B_g, A_g


def aggregate_zero_pad(
    updates: Sequence[DeviceLora],
    shape: tuple[int, int],
    weights: Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HetLoRA aggregation: zero-pad to ``r_max`` and average ``B`` and ``A`` separately.

    Each device's factors are scattered to full coordinates with ``sqrt(s_i)`` folded into both
    (``B̃_i = sqrt(s_i)·B_i`` at ``rows_i``, ``d_out × r_i``; ``Ã_i = sqrt(s_i)·A_i`` at ``cols_i``,
    ``r_i × d_in``) and zero-padded along the rank dimension to ``r_max = max_i r_i``. Then::

        B_g = Σ_i w_i·B̃_i,   A_g = Σ_i w_i·Ã_i,   global update = B_g·A_g   (scaling folded in)

    with HetLoRA's sparsity weights ``w_i = ‖ΔW_i‖_F / Σ_j ‖ΔW_j‖_F`` when ``weights`` is None (equal
    weights if every norm is 0), else the given weights normalised to sum 1. Note
    ``B_g·A_g = Σ_i Σ_j w_i w_j B̃_i Ã_j`` ≠ ``Σ_i w_i ΔW_i``: the cross terms and the ``w_i²`` factors are
    the bias toward large (usually high-rank) updates that reconstructing ΔW first avoids.

    Returns ``(B_g: d_out × r_max, A_g: r_max × d_in)``.
    """
    shp = _check_updates(updates, shape)
    if weights is None:
        norms = torch.tensor(
            [u.scaling * float(torch.linalg.matrix_norm(_f32(u.B) @ _f32(u.A))) for u in updates],
            dtype=torch.float64,
        )
        total = float(norms.sum())
        w = norms / total if total > 0.0 else torch.full((len(updates),), 1.0 / len(updates), dtype=torch.float64)
    else:
        w = _check_weights(weights, len(updates))
        w = w / w.sum()
    r_max = max(u.rank for u in updates)
    logger.debug("aggregate_zero_pad: r_max=%d weights=%s", r_max, [round(x, 4) for x in w.tolist()])
    return _average_factors(updates, w, shp, r_max)


def aggregate_fedavg(
    updates: Sequence[DeviceLora],
    weights: Sequence[float],
    shape: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain FedAvg of equal-rank LoRA factors (baseline).

    ``B_g = Σ_i w_i·B̃_i``, ``A_g = Σ_i w_i·Ã_i`` with ``B̃_i``, ``Ã_i`` scaled by ``sqrt(s_i)`` and scattered
    as in :func:`aggregate_zero_pad`, and ``w`` the given weights normalised to sum 1. Raises
    ``ValueError`` naming the ranks if they differ (use :func:`aggregate_zero_pad` or
    :func:`aggregate_svd` for heterogeneous ranks).
    """
    shp = _check_updates(updates, shape)
    ranks = [u.rank for u in updates]
    if len(set(ranks)) != 1:
        raise ValueError(f"aggregate_fedavg needs equal LoRA ranks, got ranks {ranks}")
    w = _check_weights(weights, len(updates))
    return _average_factors(updates, w / w.sum(), shp, ranks[0])


def lora_a_init(rank: int, d_in: int, gen: torch.Generator) -> torch.Tensor:
    """peft's default ``lora_A`` init: ``kaiming_uniform_(a=sqrt(5))`` on ``(rank × d_in)`` = ``U(-1/sqrt(d_in), 1/sqrt(d_in))``.

    Drawn from ``gen`` (``rank·d_in`` uniforms, row-major), fp32.
    """
    bound = 1.0 / math.sqrt(d_in)
    return (torch.rand((rank, d_in), generator=gen, dtype=_DTYPE) * 2.0 - 1.0) * bound


def svd_parts(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``delta = U Σ Vᵀ`` (reduced) and its numerical rank (σ_k > SINGULAR_VALUE_RTOL·σ_max)."""
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    smax = float(S[0]) if S.numel() else 0.0
    if smax <= 0.0 or not math.isfinite(smax):
        if not math.isfinite(smax):
            raise ValueError("delta contains non-finite values")
        return U, S, Vh, 0
    return U, S, Vh, int((S > SINGULAR_VALUE_RTOL * smax).sum())


A_ROW_NORM = 1.0 / math.sqrt(3.0)
"""Row norm of peft's default lora_A init in expectation (kaiming-uniform, a = sqrt(5))."""


def factor_svd(
    delta: torch.Tensor, rank: int, scaling: float, gen: torch.Generator,
    parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexLoRA redistribution of a dense update into rank-``r`` factors for one device.

    ``delta`` is the aggregate already restricted to the device's ``rows × cols`` (``m × n``). With the
    reduced SVD ``delta = U Σ Vᵀ`` (``torch.linalg.svd``, ``full_matrices=False``) and ``g`` the number of
    kept components (``k < min(r, m, n)`` with ``σ_k > 1e-6·σ_max``)::

        A[:g] = c·Vᵀ[:g],   B[:, :g] = U[:, :g]·Σ_g / (s·c),   c = 1/sqrt(3)

    so ``s·B·A = U_g Σ_g V_gᵀ``. ``A``'s rows are orthonormal rows scaled to the row norm of peft's
    ``lora_A`` init (kaiming-uniform U(±1/sqrt(n)) has E‖row‖² = 1/3), and ``B`` carries the singular
    values. A balanced split (sqrt(Σ) in both) would make both factors tiny while the aggregate is small
    (early rounds), and since dL/dB = s·G·Aᵀ, local learning would stall by a factor sqrt(σ); this split keeps
    ``B``'s gradient at the scale of a fresh LoRA. It is the best rank-``r`` approximation of ``delta`` in Frobenius / spectral norm
    (Eckart–Young; exact when ``r`` >= the rank of ``delta``, up to the dropped components below
    ``1e-6·σ_max``). The remaining ``r − g`` components (numerically zero singular values, all of them when
    ``delta`` is 0, and those beyond ``min(m, n)``) get a zero ``B`` column and an ``A`` row drawn like
    peft's default ``lora_A`` init (:func:`lora_a_init`), so the device can still learn in those
    directions while ``s·B·A`` is unchanged.

    RNG use does not depend on the values of ``delta``: one ``(r × n)`` block is always drawn from ``gen``
    and its first ``g`` rows are overwritten. ``parts``: :func:`svd_parts` of ``delta`` when the caller
    already has them (devices with the same structure receive the same block; the learner computes its
    SVD once per global update). Returns fp32 ``(B: m × r, A: r × n)``.
    """
    r = _check_rank(rank)
    s = _check_scaling(scaling)
    if delta.dim() != 2 or delta.shape[0] == 0 or delta.shape[1] == 0:
        raise ValueError(f"delta must be a non-empty 2-D tensor, got shape {tuple(delta.shape)}")
    d = _f32(delta)
    m, n = d.shape
    A = lora_a_init(r, n, gen)
    B = torch.zeros((m, r), dtype=_DTYPE)
    if not bool(d.any()):  # no data components (e.g. no global update yet): the SVD would keep none
        return B, A
    U, S, Vh, numerical_rank = svd_parts(d) if parts is None else parts
    g = min(r, numerical_rank)
    if g > 0:
        c = A_ROW_NORM
        A[:g] = c * Vh[:g]
        B[:, :g] = U[:, :g] * (S[:g] / (s * c))[None, :]
    logger.debug("factor_svd: %dx%d -> rank %d (%d data components)", m, n, r, g)
    return B, A


def factor_truncate(
    B_g: torch.Tensor,
    A_g: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    rank: int,
    scaling: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HetLoRA truncation of global factors (scaling folded in) to one device's structure and rank.

    With ``r_g = B_g.shape[1]`` and ``k = min(r, r_g)``::

        B[:, :k] = B_g[rows, :k] / sqrt(s),   A[:k] = A_g[:k, cols] / sqrt(s)

    so ``s·B·A = B_g[rows, :k]·A_g[:k, cols]``. Expansion (``r > r_g``, HetLoRA-style): ``B`` is
    padded with zero columns and ``A`` with random rows (peft ``lora_A`` init, :func:`lora_a_init`,
    ``(r − r_g) × len(cols)`` drawn from ``gen``), so ``s·B·A`` is unchanged at expansion.

    Additionally, a kept component whose ``B`` column *and* ``A`` row are both entirely zero on the device's
    ``rows`` / ``cols`` (e.g. a zero singular value from :func:`global_factors`, or a rank slot filled only
    by devices with disjoint structure) would receive zero gradient forever; its ``A`` row is redrawn from
    ``gen`` the same way. This leaves ``s·B·A`` unchanged because the ``B`` column is zero.

    Returns fp32 ``(B: len(rows) × r, A: r × len(cols))``.
    """
    r = _check_rank(rank)
    s = _check_scaling(scaling)
    rows = _check_index(rows, "rows")
    cols = _check_index(cols, "cols")
    if B_g.dim() != 2 or A_g.dim() != 2 or B_g.shape[1] != A_g.shape[0]:
        raise ValueError(f"incompatible global factors {tuple(B_g.shape)} and {tuple(A_g.shape)}")
    if rows.numel() and int(rows[-1]) >= B_g.shape[0]:
        raise ValueError(f"rows index {int(rows[-1])} out of range for d_out = {B_g.shape[0]}")
    if cols.numel() and int(cols[-1]) >= A_g.shape[1]:
        raise ValueError(f"cols index {int(cols[-1])} out of range for d_in = {A_g.shape[1]}")
    r_g = int(B_g.shape[1])
    k = min(r, r_g)
    inv = 1.0 / math.sqrt(s)
    B = torch.zeros((rows.numel(), r), dtype=_DTYPE)
    A = torch.zeros((r, cols.numel()), dtype=_DTYPE)
    B[:, :k] = _f32(B_g)[rows, :k] * inv
    A[:k] = _f32(A_g)[:k, cols] * inv
    if r > r_g:
        A[r_g:] = lora_a_init(r - r_g, cols.numel(), gen)
    dead = ~(B[:, :k] != 0).any(dim=0) & ~(A[:k] != 0).any(dim=1)
    n_dead = int(dead.sum())
    if n_dead:
        A[:k][dead] = lora_a_init(n_dead, cols.numel(), gen)
    logger.debug("factor_truncate: r_g=%d -> r=%d (%d dead components redrawn)", r_g, r, n_dead)
    return B, A


def global_factors(dense: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor a dense (aggregated) update: ``dense ≈ (U_r·sqrt(Σ_r)) · (sqrt(Σ_r)·V_rᵀ)``.

    Used to turn an :func:`aggregate_svd` result into global factors (scaling folded in) for
    :func:`factor_truncate`. The product is the best rank-``r`` approximation (Eckart–Young). Components with
    ``σ_k <= 1e-6·σ_max`` and those beyond ``min(d_out, d_in)`` are zero, so the outputs always have width
    ``rank``: ``(B_g: d_out × r, A_g: r × d_in)``, fp32.
    """
    r = _check_rank(rank)
    if dense.dim() != 2 or dense.shape[0] == 0 or dense.shape[1] == 0:
        raise ValueError(f"dense must be a non-empty 2-D tensor, got shape {tuple(dense.shape)}")
    d = _f32(dense)
    U, S, Vh, numerical_rank = svd_parts(d)
    g = min(r, numerical_rank)
    B_g = torch.zeros((d.shape[0], r), dtype=_DTYPE)
    A_g = torch.zeros((r, d.shape[1]), dtype=_DTYPE)
    if g > 0:
        root = torch.sqrt(S[:g])
        B_g[:, :g] = U[:, :g] * root[None, :]
        A_g[:g] = root[:, None] * Vh[:g]
    return B_g, A_g
