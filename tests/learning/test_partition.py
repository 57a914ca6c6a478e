"""learning/partition.py: IID, Dirichlet label-skew and quantity-skew partitions over devices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.partition import DIRICHLET_MAX_TRIES, PARTITIONS, label_histogram, partition


def make_labels(n: int = 3_000, n_classes: int = 5, seed: int = 0) -> np.ndarray:
    """Imbalanced synthetic labels (class c has weight c + 1)."""
    w = np.arange(1, n_classes + 1, dtype=float)
    return np.random.default_rng(seed).choice(n_classes, size=n, p=w / w.sum()).astype(np.int64)


def check_valid(parts: list[np.ndarray], n: int, n_devices: int, min_size: int) -> None:
    assert len(parts) == n_devices
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no repeats
        assert len(p) >= min_size
    flat = np.concatenate(parts)
    assert len(flat) == n  # disjoint ...
    assert np.array_equal(np.sort(flat), np.arange(n))  # ... and covering


def mean_max_share(labels: np.ndarray, parts: list[np.ndarray], n_classes: int) -> float:
    """Mean over devices of the largest class share on the device (1 = one class per device)."""
    h = label_histogram(labels, parts, n_classes)
    h = h[h.sum(axis=1) > 0]
    return float((h.max(axis=1) / h.sum(axis=1)).mean())


@pytest.mark.parametrize("kind", PARTITIONS)
def test_valid_partition(kind):
    labels = make_labels()
    parts = partition(labels, 20, kind, np.random.default_rng(3), alpha=0.5, min_size=10)
    check_valid(parts, len(labels), 20, 10)


@pytest.mark.parametrize("kind", PARTITIONS)
def test_deterministic_given_seed(kind):
    labels = make_labels()
    a = partition(labels, 10, kind, np.random.default_rng(11))
    b = partition(labels, 10, kind, np.random.default_rng(11))
    c = partition(labels, 10, kind, np.random.default_rng(12))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_balanced_sizes_and_labels():
    labels = make_labels(n=3_007)
    parts = partition(labels, 10, "iid", np.random.default_rng(0))
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 3_007
    global_share = np.bincount(labels) / len(labels)
    shares = label_histogram(labels, parts, 5) / sizes[:, None]
    assert np.abs(shares - global_share).max() < 0.08  # ~300 samples per device: sd ~0.03


def test_dirichlet_smaller_alpha_more_skew():
    labels = make_labels(n=5_000)
    global_max = np.bincount(labels).max() / len(labels)  # 1/3 for weights 1..5
    skew = {}
    for alpha in (0.05, 0.5, 100.0):
        skew[alpha] = np.mean(
            [mean_max_share(labels, partition(labels, 20, "dirichlet", np.random.default_rng(s), alpha=alpha), 5)
             for s in range(5)]
        )
    assert skew[0.05] > skew[0.5] > skew[100.0]
    assert skew[0.05] > 0.8  # nearly one class per device
    assert abs(skew[100.0] - global_max) < 0.06  # close to IID


def test_dirichlet_splits_each_class_across_devices():
    labels = make_labels(n=2_000)
    parts = partition(labels, 8, "dirichlet", np.random.default_rng(5), alpha=1.0)
    h = label_histogram(labels, parts, 5)
    assert np.array_equal(h.sum(axis=0), np.bincount(labels, minlength=5))
    assert (h > 0).sum() > 5  # not all of each class on one device


def test_dirichlet_min_size_enforced_by_redraw():
    labels = make_labels(n=2_000)
    first = partition(labels, 10, "dirichlet", np.random.default_rng(0), alpha=0.5, min_size=0)
    assert min(len(p) for p in first) < 60  # the first draw of this seed would not do ...
    parts = partition(labels, 10, "dirichlet", np.random.default_rng(0), alpha=0.5, min_size=60)
    check_valid(parts, 2_000, 10, 60)  # ... so it was redrawn
    assert not all(np.array_equal(a, b) for a, b in zip(first, parts, strict=True))


def test_dirichlet_gives_up_with_clear_message():
    labels = np.zeros(10, dtype=np.int64)  # one class, 10 examples, every device needs 1: P(success) ~ 0
    with pytest.raises(ValueError, match=f"{DIRICHLET_MAX_TRIES} tries.*raise alpha"):
        partition(labels, 10, "dirichlet", np.random.default_rng(0), alpha=0.01, min_size=1)


def test_quantity_sizes_vary_labels_iid():
    labels = make_labels(n=20_000)
    parts = partition(labels, 10, "quantity", np.random.default_rng(2), alpha=0.5, min_size=50)
    check_valid(parts, 20_000, 10, 50)
    sizes = np.array([len(p) for p in parts])
    assert sizes.std() / sizes.mean() > 0.3  # Dir(0.5) over 10 devices: CV ~ 0.9
    big = sizes >= 500
    global_share = np.bincount(labels) / len(labels)
    shares = label_histogram(labels, parts, 5)[big] / sizes[big, None]
    assert np.abs(shares - global_share).max() < 0.07


def test_quantity_large_alpha_near_equal():
    labels = make_labels(n=10_000)
    sizes = np.array([len(p) for p in partition(labels, 10, "quantity", np.random.default_rng(0), alpha=1e4)])
    assert np.abs(sizes - 1_000).max() < 60


def test_min_size_can_use_all_examples():
    labels = make_labels(n=100)
    for kind in ("iid", "quantity"):
        parts = partition(labels, 10, kind, np.random.default_rng(0), min_size=10)
        assert [len(p) for p in parts] == [10] * 10


def test_single_device_gets_everything():
    labels = make_labels(n=50)
    for kind in PARTITIONS:
        (only,) = partition(labels, 1, kind, np.random.default_rng(0))
        assert np.array_equal(only, np.arange(50))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kind="pathological"), "iid, dirichlet, quantity"),
        (dict(kind="dirichlet", alpha=0.0), "alpha"),
        (dict(kind="quantity", alpha=-1.0), "alpha"),
        (dict(kind="iid", alpha=float("nan")), "alpha"),
        (dict(kind="iid", min_size=11), "needs 110"),
        (dict(kind="iid", n_devices=0), "n_devices"),
        (dict(kind="iid", min_size=-1), "min_size"),
    ],
)
def test_errors(kwargs, match):
    args = dict(labels=make_labels(n=100), n_devices=10, rng=np.random.default_rng(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        partition(**args)


def test_label_histogram():
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4, 5]), np.array([], dtype=np.int64)]
    h = label_histogram(labels, parts, 4)
    assert h.dtype == np.int64
    assert h.tolist() == [[1, 0, 1, 0], [0, 2, 2, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError):
        label_histogram(labels, parts, 2)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 300),
    n_classes=st.integers(1, 6),
    n_devices=st.integers(1, 12),
    kind=st.sampled_from(PARTITIONS),
    alpha=st.floats(0.05, 50.0),
    min_size=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_partition_invariants(n, n_classes, n_devices, kind, alpha, min_size, seed):
    labels = np.random.default_rng(seed).integers(0, n_classes, size=n)
    if n_devices * min_size > n:
        with pytest.raises(ValueError, match="examples"):
            partition(labels, n_devices, kind, np.random.default_rng(seed), alpha=alpha, min_size=min_size)
        return
    try:
        parts = partition(labels, n_devices, kind, np.random.default_rng(seed), alpha=alpha, min_size=min_size)
    except ValueError as e:  # only a Dirichlet draw may fail to meet min_size
        assert kind == "dirichlet" and min_size > 0 and "tries" in str(e)
        return
    check_valid(parts, n, n_devices, min_size)
    h = label_histogram(labels, parts, n_classes)
    assert np.array_equal(h.sum(axis=0), np.bincount(labels, minlength=n_classes))
