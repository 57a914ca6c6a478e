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
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml


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


def safe_child(root: Path, *names: str) -> Path:
    """``root / names...``, refusing any component that would leave ``root``."""
    root_r = Path(root).resolve()
    out = root_r
    for n in names:
        if not n or n in (".", "..") or "/" in n or "\\" in n or "\x00" in n:
            raise ValueError(f"unsafe path component {n!r}")
        out = out / n
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
