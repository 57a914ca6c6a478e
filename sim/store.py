"""The run store: run directories and crash-safe writes.

Every file is written as temporary file in the same directory -> flush + fsync -> ``os.replace``
-> fsync of the directory, so a killed run never leaves a truncated file under a final name.

Layout of one run::

    <out>/<scenario name>/<run id>/
        scenario.yaml          the resolved scenario (every default filled in, seed, versions)
        rounds.parquet         one row per round
        device_rounds.parquet  one row per device per round
        summary.json           final metrics + host facts
        status.json            running | finished | failed (+ error)
        plots/                 PNG figures

A writer holds the directory's lock (:mod:`sim.lock`) while it writes; readers open only regular
files (:func:`open_regular`: no FIFO, device or symlink can make a reader hang or read elsewhere).
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml


RUN_FILES = ("scenario.yaml", "status.json", "summary.json", "rounds.parquet", "device_rounds.parquet",
             "evals.parquet", "partition.parquet", "traceback.txt")
"""The files a run writes into its directory (besides its checkpoint and ``plots/``)."""


def _read_umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, engine="pyarrow", index=False, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_yaml(path: Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file (a symlink, FIFO, socket or device raises
    ``OSError``; opening never blocks). Close it, or use it in a ``with``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "not a regular file (a symbolic link)", str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "rb")


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`); ``ValueError`` when it holds
    more than ``max_bytes``."""
    with open_regular(path) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes")
    return data


def safe_name(n: str) -> str:
    """``n`` if it is one path component that stays in its directory (not empty, ``.``, ``..``, and no
    separator or NUL), else ``ValueError``."""
    if not n or n in (".", "..") or "/" in n or "\\" in n or "\x00" in n:
        raise ValueError(f"unsafe path component {n!r}")
    return n


def safe_child(root: Path, *names: str) -> Path:
    """``root / names...``, refusing any component that would leave ``root``."""
    root_r = Path(root).resolve()
    out = root_r
    for n in names:
        out = out / safe_name(n)
    if root_r not in out.resolve().parents and out.resolve() != root_r:
        raise ValueError(f"{out} escapes {root_r}")
    return out


def new_run_dir(out_root: Path, scenario_name: str, run_id: str) -> Path:
    """Create ``out_root/scenario/run_id`` (suffix -2, -3... if it exists) and return it."""
    parent = safe_child(out_root, scenario_name)
    parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        name = run_id if k == 1 else f"{run_id}-{k}"
        d = safe_child(parent, name)
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"too many runs named {run_id} in {parent}")
