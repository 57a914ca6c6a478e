"""Fuzz the checkpoint loader: random byte flips and truncations of a valid checkpoint.

    .venv/bin/python benchmarks/bench_checkpoint_fuzz.py [--n 1000] [--resealed 300] [--seed 18]
        [--json results/bench/bench.json]

The checkpoint is the one ``scenarios/paper-fleet-80-faults.yaml`` (80 devices, faults, dynamics, a
bandit; cut to 6 rounds) writes after round 3. Each case writes a mutated copy and resumes from it in
this process exactly as ``fedfleet run --resume`` does (``sim.checkpoint.load``, then ``restore`` onto a
freshly built simulation, then the rest of the run), under a per-case alarm of ``--timeout`` seconds.

* ``plain`` (``--n`` cases): a third single-byte flips, a third 2-8 byte flips, a third truncations,
  anywhere in the file. The SHA-256 covers every byte, so each must be refused.
* ``resealed`` (``--resealed`` cases): byte flips in the payload only (every other case in its JSON
  document, the rest anywhere in the payload), after which the SHA-256 is recomputed (a forger's best
  effort). A flip can then decode to a well-formed, different state, which is indistinguishable from
  a real one: such a run resumes and finishes with other numbers
  (``resumed_different``); the property that matters is that nothing hangs, executes or tracebacks.

Outcomes per section: ``refused`` (a :class:`sim.checkpoint.CheckpointError`: the CLI prints its one line
and exits 2), ``resumed_identical`` (the run finished and its ``rounds``/``device_rounds`` parquet bytes
equal the uninterrupted run's), ``resumed_different``, ``run_error`` (the restored run raised later: the
CLI's exit 1 with one line), ``other`` (any other exception while loading: a loader bug) and ``hung``.
The script exits 1 when a plain case is anything but refused/resumed_identical, or any case is ``other``
or ``hung``. Figures go into the ``checkpoint_fuzz`` key of ``--json`` (other keys are kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sim import checkpoint as ckpt
from sim.engine import Simulation
from sim.loader import load_scenario
from sim.runner import make_learner, scenario_digest
from sim.store import atomic_write_json, atomic_write_parquet

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "paper-fleet-80-faults.yaml"
OVERRIDES = ["training.rounds=6", "output.checkpoint_every=1", "output.plots=false", "output.progress=false"]
KILL_AT = 3
OUTCOMES = ("refused", "resumed_identical", "resumed_different", "run_error", "other", "hung")


class _Hung(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hung


def _tables(out, tmp: Path) -> bytes:
    """The parquet bytes of a run's rounds and device_rounds tables (what a run directory holds)."""
    atomic_write_parquet(tmp / "r.parquet", out.rounds)
    atomic_write_parquet(tmp / "d.parquet", out.device_rounds)
    return (tmp / "r.parquet").read_bytes() + (tmp / "d.parquet").read_bytes()


def reference(sc, base, tmp: Path) -> tuple[bytes, bytes]:
    """(checkpoint bytes after round ``KILL_AT - 1``, result bytes) of one uninterrupted run."""
    digest, saved = scenario_digest(sc), {}

    def keep(sim, next_round):
        if next_round == KILL_AT:
            saved["data"] = ckpt.dumps(sim, next_round, digest)

    sim = Simulation(sc, base, learner=make_learner(sc, base), checkpoint=keep)
    tables = _tables(sim.run(), tmp)
    return saved["data"], tables


def mutations(data: bytes, n: int, rng: np.random.Generator, resealed: bool) -> list[bytes]:
    """``n`` mutated copies of ``data`` (see the module docstring)."""
    head_end = data.index(b"\n", len(ckpt.MAGIC)) + 1
    body_at = head_end + 65
    doc_end = body_at + json.loads(data[len(ckpt.MAGIC):head_end])["json_bytes"]
    out = []
    for i in range(n):
        b = bytearray(data)
        if not resealed and i % 3 == 2:
            out.append(bytes(b[: int(rng.integers(0, len(b)))]))
            continue
        lo, hi = (body_at, doc_end if i % 2 else len(b)) if resealed else (0, len(b))
        for pos in rng.integers(lo, hi, size=1 if i % 3 == 0 else int(rng.integers(2, 9))):
            b[pos] ^= int(rng.integers(1, 256))
        if resealed:
            b[head_end:body_at - 1] = hashlib.sha256(bytes(b[:head_end] + b[body_at:])).hexdigest().encode()
        out.append(bytes(b))
    return out


def outcome(path: Path, sc, base, digest: str, ref: bytes, tmp: Path, timeout_s: float) -> tuple[str, str]:
    """(outcome, detail) of resuming from ``path``."""
    signal.alarm(int(timeout_s))
    try:
        try:
            state = ckpt.load(path, digest)
            sim = Simulation(sc, base, learner=make_learner(sc, base))
            sim.start_round = ckpt.restore(sim, state)
        except ckpt.CheckpointError:
            return "refused", ""
        except _Hung:
            raise
        except Exception as e:  # noqa: BLE001 - a loader bug is what this counts
            return "other", f"{type(e).__name__}: {e}"[:300]
        try:
            got = _tables(sim.run(), tmp)
        except _Hung:
            raise
        except Exception as e:  # noqa: BLE001 - the CLI turns these into exit 1 with one line
            return "run_error", f"{type(e).__name__}: {e}"[:300]
        return ("resumed_identical" if got == ref else "resumed_different"), ""
    except _Hung:
        return "hung", ""
    finally:
        signal.alarm(0)


def section(cases: list[bytes], sc, base, ref: bytes, tmp: Path, timeout_s: float) -> dict:
    counts, examples = Counter(), []
    digest = scenario_digest(sc)
    path = tmp / ckpt.FILENAME
    t0 = time.perf_counter()
    for data in cases:
        path.write_bytes(data)
        kind, detail = outcome(path, sc, base, digest, ref, tmp, timeout_s)
        counts[kind] += 1
        if kind in ("other", "run_error", "hung") and len(examples) < 10:
            examples.append({"outcome": kind, "detail": detail})
    return {"cases": len(cases), **{k: counts[k] for k in OUTCOMES}, "seconds": round(time.perf_counter() - t0, 2),
            "examples": examples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--resealed", type=int, default=300)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=ROOT / "results" / "bench" / "bench.json")
    a = ap.parse_args()
    sc, base = load_scenario(SCENARIO, OVERRIDES)
    rng = np.random.default_rng(a.seed)
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="fedfleet-ckfuzz-") as d:
        tmp = Path(d)
        data, ref = reference(sc, base, tmp)
        plain = section(mutations(data, a.n, rng, False), sc, base, ref, tmp, a.timeout)
        resealed = section(mutations(data, a.resealed, rng, True), sc, base, ref, tmp, a.timeout)
    fig = {"scenario": f"{SCENARIO.relative_to(ROOT)} {' '.join(OVERRIDES)}", "checkpoint_bytes": len(data),
           "seed": a.seed, "timeout_s": a.timeout, "plain": plain, "resealed": resealed}
    for name, s in (("plain", plain), ("resealed", resealed)):
        print(f"{name}: {s['cases']} cases: " + ", ".join(f"{k} {s[k]}" for k in OUTCOMES) + f" ({s['seconds']} s)")
    doc = json.loads(a.json.read_text()) if a.json.is_file() else {}
    doc["checkpoint_fuzz"] = fig
    atomic_write_json(a.json, doc)
    bad = plain["cases"] - plain["refused"] - plain["resumed_identical"] + sum(
        s["other"] + s["hung"] for s in (plain, resealed))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
