"""The run store: atomic writes leave ordinary, readable files and no temporaries."""

from __future__ import annotations

import os
import stat

import pandas as pd

from sim.store import atomic_write_json, atomic_write_parquet


def test_atomic_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_write_parquet(tmp_path / "b.parquet", pd.DataFrame({"x": [1]}))
    finally:
        os.umask(old)
    for name in ("a.json", "b.parquet"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.parquet"]
