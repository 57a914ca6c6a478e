"""Non-IID partitions of a training set over devices (numpy only, explicit generator).

Given labels ``y`` of ``n`` training examples and ``K`` devices, :func:`partition` returns ``K``
disjoint, sorted int64 index arrays that together cover ``range(n)``:

* ``iid`` -- shuffle ``range(n)`` and cut it into ``K`` near-equal parts (sizes ``floor(n/K)`` or
  ``ceil(n/K)``).
* ``dirichlet`` -- label skew. For every class ``c`` draw device proportions
  ``p_c ~ Dir(alpha * 1_K)`` and give device ``k`` the slice
  ``[floor(n_c * P_{c,k-1}), floor(n_c * P_{c,k}))`` of the class's shuffled indices, with
  ``P_{c,k} = sum_{j<=k} p_{c,j}`` (``P_{c,K}`` taken as 1). Small ``alpha`` gives devices few
  classes; ``alpha -> inf`` tends to IID. The whole draw is repeated (at most 100 times) until every
  device holds at least ``min_size`` examples. Dirichlet label skew follows Hsu, Qi & Brown (2019),
  "Measuring the Effects of Non-Identical Data Distribution for Federated Visual Classification",
  arXiv:1909.06335; the per-class form over devices is the "distribution-based label imbalance"
  of Li, Diao, Chen & He (2022), "Federated Learning on Non-IID Data Silos: An Experimental Study",
  ICDE 2022 (NIID-Bench), without NIID-Bench's cap on a device's share.
* ``quantity`` -- quantity skew (Li et al. 2022, "quantity skew"): ``q ~ Dir(alpha * 1_K)``, device
  sizes ``s_k = min_size + floor(q_k * R) (+1 for the R - sum floor(q_k R) largest remainders)``,
  ``R = n - K * min_size``; then shuffle ``range(n)`` and cut it into those sizes, so labels are IID
  and only the amounts differ.

All randomness comes from the ``np.random.Generator`` passed in, so a partition is a function of
the generator's state.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

PARTITIONS = ("iid", "dirichlet", "quantity")
DIRICHLET_MAX_TRIES = 100


def partition(
    labels: np.ndarray,
    n_devices: int,
    kind: str,
    rng: np.random.Generator,
    alpha: float = 0.5,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` over ``n_devices`` devices; see the module docstring for ``kind``.

    ``alpha`` (Dirichlet concentration) is used by ``dirichlet`` and ``quantity``; every device gets
    at least ``min_size`` examples. Returns one sorted int64 index array per device.
    """
    labels = np.asarray(labels)
    if kind not in PARTITIONS:
        raise ValueError(f"unknown partition kind {kind!r}; allowed: {', '.join(PARTITIONS)}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if n_devices < 1:
        raise ValueError(f"n_devices must be >= 1, got {n_devices}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    n = len(labels)
    if n_devices * min_size > n:
        raise ValueError(
            f"cannot give {n_devices} devices >= {min_size} examples each from {n} examples "
            f"(needs {n_devices * min_size})"
        )
    if kind == "iid":
        parts = np.array_split(rng.permutation(n), n_devices)
    elif kind == "dirichlet":
        parts = _dirichlet(labels, n_devices, rng, alpha, min_size)
    else:
        parts = _quantity(n, n_devices, rng, alpha, min_size)
    return [np.sort(p).astype(np.int64) for p in parts]


def _dirichlet(
    labels: np.ndarray, n_devices: int, rng: np.random.Generator, alpha: float, min_size: int
) -> list[np.ndarray]:
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    sizes = np.zeros(n_devices, dtype=np.int64)
    for attempt in range(1, DIRICHLET_MAX_TRIES + 1):
        chunks: list[list[np.ndarray]] = [[] for _ in range(n_devices)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(n_devices, alpha))
            cuts = np.floor(np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            cuts = np.clip(cuts, 0, len(idx))  # guards against a cumsum rounding past 1
            for k, piece in enumerate(np.split(idx, cuts)):
                chunks[k].append(piece)
        parts = [np.concatenate(c) if c else np.empty(0, dtype=np.int64) for c in chunks]
        sizes = np.array([len(p) for p in parts])
        if sizes.min() >= min_size:
            if attempt > 1:
                log.debug("dirichlet partition: min_size %d met after %d draws", min_size, attempt)
            return parts
    raise ValueError(
        f"dirichlet partition: no draw in {DIRICHLET_MAX_TRIES} tries gave all {n_devices} devices "
        f">= {min_size} examples (alpha={alpha}, n={len(labels)}, smallest last try {int(sizes.min())}); "
        "raise alpha or lower min_size / n_devices"
    )


def _quantity(n: int, n_devices: int, rng: np.random.Generator, alpha: float, min_size: int) -> list[np.ndarray]:
    rest = n - n_devices * min_size
    q = rng.dirichlet(np.full(n_devices, alpha))
    share = q * rest
    extra = np.floor(share).astype(np.int64)
    left = rest - int(extra.sum())
    if left > 0:  # largest remainders first, ties by device index
        order = np.argsort(-(share - extra), kind="stable")
        extra[order[:left]] += 1
    sizes = min_size + extra
    assert sizes.sum() == n
    return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """Counts ``h[k, c]`` = number of examples of class ``c`` on device ``k``; int64 ``(K, n_classes)``."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    hist = np.zeros((len(parts), n_classes), dtype=np.int64)
    for k, p in enumerate(parts):
        hist[k] = np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=n_classes)
    return hist
