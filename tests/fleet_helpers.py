"""Shared test helpers: small scenario dicts and in-memory runs (no files)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.loader import validate
from sim.runner import simulate

REPO = Path(__file__).resolve().parents[1]


def _fedfleet_cmd() -> list[str]:
    exe = REPO / ".venv" / "bin" / "fedfleet"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "sim.cli"]  # same app, when the venv lives elsewhere


def cli_env() -> dict[str, str]:
    """A plain, colourless environment for CLI subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "FORCE_COLOR"))}
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="200", CI="1", MPLBACKEND="Agg", PYTHONIOENCODING="utf-8",
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


def fedfleet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``fedfleet`` CLI in a subprocess (exit codes, no tracebacks)."""
    return subprocess.run([*_fedfleet_cmd(), *args], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def base_scenario(**over) -> dict:
    """A deterministic, dynamics-free scenario: edit the returned dict freely."""
    d = {
        "name": "t",
        "seed": 0,
        "fleet": {"groups": [{"type": "agx_xavier", "count": 1, "power_modes": ["MAXN"], "placement": "lan"}]},
        "network": {"classes": {"lan": {"mbps": [10, 10]}}, "fluctuation": {"phi": 0.0, "sigma_log": 0.0},
                    "rtt_ms": 5, "k_rtt": 2, "contention": "none"},
        "dynamics": {"power_mode": {"kind": "fixed", "initial": "default"}, "background_load": {"kind": "none"},
                     "dropout": {"prob": 0.0}, "availability": {"kind": "always"}},
        "workload": {"model": "roberta-base", "batch_size": 16, "seq_len": 128, "precision": "amp"},
        "training": {"rounds": 1, "local_steps": 20},
        "round": {"policy": "all"},
        "algorithm": {"name": "fixed", "params": {"prune_target": 0.0, "rank": 8}},
        "output": {"plots": False, "progress": False},
    }
    for k, v in over.items():
        d[k] = v
    return copy.deepcopy(d)


def run_dict(d: dict):
    """Validate and simulate in memory; returns (Simulation, RunOutput)."""
    sc = validate(d, "<test>", REPO)
    return simulate(sc, REPO)


@pytest.fixture
def repo() -> Path:
    return REPO
