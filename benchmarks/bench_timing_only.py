"""Host seconds of timing-only runs at fleet scale, and how they grow with the fleet.

Runs the paper fleet's device mix and dynamics scaled to N devices (same 30/40/10 shares), 100 rounds,
in memory (simulate + verify; no files), and prints host seconds, seconds per device-round, and the
split between fleet build, the event loop and verify(). Goals (issue 21): 100,000 devices x 100 rounds
under 300 s, and s per device-round at the largest N within 1.3x of that at the smallest
(``timing_only_linearity``; the sizes run in this one process, one after the other, so the machine's
load drifts less between them than between processes).

Merges into the JSON object at ``--json`` (default ``results/bench/bench.json``; other keys are kept):

* ``timing_only_s``: {N: host seconds (median over ``--repeat`` runs)}
* ``timing_only_s_per_device_round``: {N: host seconds / device-rounds}
* ``timing_only_linearity``: s per device-round at the largest N / at the smallest
* ``timing_only_cpu_s``, ``timing_only_cpu_linearity``: the same with this process's CPU seconds
  (user + system), which other processes on a shared machine disturb less than wall seconds
* ``timing_only_rounds``, ``timing_only_rows`` (every run: build, loop, verify wall and CPU seconds)

Usage:

    python benchmarks/bench_timing_only.py [--devices 1000 10000 100000] [--rounds 100] [--repeat 1]
                                           [--json PATH | --no-json] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

from sim.engine import Simulation
from sim.loader import load_scenario
from sim.runner import expected_bytes
from sim.store import atomic_write_json
from sim.verify import verify

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "results" / "bench" / "bench.json"


def scaled(n: int, rounds: int, extra: list[str]):
    k_tx2, k_nx = round(0.375 * n), round(0.5 * n)
    sets = [f"fleet.groups.0.count={k_tx2}", f"fleet.groups.1.count={k_nx}",
            f"fleet.groups.2.count={n - k_tx2 - k_nx}", f"training.rounds={rounds}", "output.plots=false", *extra]
    return load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", sets)


def bench(n: int, rounds: int, extra: list[str]) -> dict:
    """One timing-only run of ``n`` devices x ``rounds``: build, loop and verify seconds."""
    sc, base = scaled(n, rounds, extra)
    wall, cpu = [time.perf_counter()], [time.process_time()]

    def lap() -> None:
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    sim = Simulation(sc, base)
    lap()
    out = sim.run()
    lap()
    verify(out.rounds, out.device_rounds, sc.round.policy, expected_bytes(sim, out.device_rounds))
    lap()
    dr = len(out.device_rounds)
    total = wall[3] - wall[0]
    row = {"devices": n, "rounds": rounds, "device_rounds": dr, "total_s": total, "device_rounds_per_s": dr / total,
           "s_per_device_round": total / dr, "cpu_s": cpu[3] - cpu[0]}
    for i, phase in enumerate(("build", "loop", "verify")):
        row[f"{phase}_s"], row[f"{phase}_cpu_s"] = wall[i + 1] - wall[i], cpu[i + 1] - cpu[i]
    return row


def figures(rows: list[dict]) -> dict:
    """The ``bench.json`` keys from every run (median total seconds per fleet size)."""
    sizes = sorted({r["devices"] for r in rows})
    total = {n: statistics.median(r["total_s"] for r in rows if r["devices"] == n) for n in sizes}
    dr = {n: next(r["device_rounds"] for r in rows if r["devices"] == n) for n in sizes}
    cpu = {n: statistics.median(r["cpu_s"] for r in rows if r["devices"] == n) for n in sizes}
    per = {n: total[n] / dr[n] for n in sizes}
    return {"timing_only_s": {str(n): total[n] for n in sizes},
            "timing_only_s_per_device_round": {str(n): per[n] for n in sizes},
            "timing_only_linearity": per[sizes[-1]] / per[sizes[0]],
            "timing_only_cpu_s": {str(n): cpu[n] for n in sizes},
            "timing_only_cpu_linearity": (cpu[sizes[-1]] / dr[sizes[-1]]) / (cpu[sizes[0]] / dr[sizes[0]]),
            "timing_only_rounds": rows[0]["rounds"], "timing_only_rows": rows}


def merge_json(path: Path, keys: dict) -> None:
    """Put ``keys`` into the JSON object at ``path`` (created if absent), keeping its other keys."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    if not isinstance(doc, dict):
        raise SystemExit(f"{path}: not a JSON object; not overwritten")
    doc.update(keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="runs per size; the median total is reported")
    ap.add_argument("--set", action="append", default=[], help="extra dotted.key=value overrides")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="JSON object to merge the figures into")
    ap.add_argument("--no-json", action="store_true", help="print only")
    a = ap.parse_args()
    rows = []
    print(f"{'devices':>8} {'rounds':>6} {'build s':>8} {'loop s':>8} {'verify s':>8} {'total s':>8} "
          f"{'cpu s':>8} {'(build':>7} {'loop':>7} {'verify)':>7} {'dev-rounds/s':>12} {'us/dev-round':>12}", flush=True)
    for _ in range(a.repeat):
        for n in a.devices:
            r = bench(n, a.rounds, a.set)
            gc.collect()
            rows.append(r)
            print(f"{r['devices']:>8} {r['rounds']:>6} {r['build_s']:>8.2f} {r['loop_s']:>8.2f} {r['verify_s']:>8.2f} "
                  f"{r['total_s']:>8.2f} {r['cpu_s']:>8.2f} {r['build_cpu_s']:>7.2f} {r['loop_cpu_s']:>7.2f} "
                  f"{r['verify_cpu_s']:>7.2f} {r['device_rounds_per_s']:>12.0f} {1e6 * r['s_per_device_round']:>12.2f}",
                  flush=True)
    fig = figures(rows)
    print("timing_only_s (median): " + ", ".join(f"{k}: {v:.1f}" for k, v in fig["timing_only_s"].items())
          + f"; linearity (s per device-round, largest / smallest N): {fig['timing_only_linearity']:.3f}"
          + f" (CPU seconds: {fig['timing_only_cpu_linearity']:.3f})")
    if not a.no_json:
        merge_json(a.json, fig)
        print(f"merged into {a.json}")


if __name__ == "__main__":
    main()
