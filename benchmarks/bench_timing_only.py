"""Host seconds of timing-only runs at fleet scale (goal: 10,000 devices x 100 rounds < 60 s).

Runs the paper fleet's device mix and dynamics scaled to N devices (same 30/40/10 shares), 100 rounds,
in memory (simulate + verify; no files), and prints host seconds, device-rounds per host second, and
the split between fleet build, the event loop and verify(). Usage:

    python benchmarks/bench_timing_only.py [--devices 1000 10000] [--rounds 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sim.engine import Simulation
from sim.loader import load_scenario
from sim.runner import expected_bytes
from sim.verify import verify

REPO = Path(__file__).resolve().parents[1]


def scaled(n: int, rounds: int, extra: list[str]):
    k_tx2, k_nx = round(0.375 * n), round(0.5 * n)
    sets = [f"fleet.groups.0.count={k_tx2}", f"fleet.groups.1.count={k_nx}",
            f"fleet.groups.2.count={n - k_tx2 - k_nx}", f"training.rounds={rounds}", "output.plots=false", *extra]
    return load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", sets)


def bench(n: int, rounds: int, extra: list[str]) -> dict:
    sc, base = scaled(n, rounds, extra)
    t0 = time.perf_counter()
    sim = Simulation(sc, base)
    t1 = time.perf_counter()
    out = sim.run()
    t2 = time.perf_counter()
    verify(out.rounds, out.device_rounds, sc.round.policy, expected_bytes(sim, out.device_rounds))
    t3 = time.perf_counter()
    dr = len(out.device_rounds)
    return {"devices": n, "rounds": rounds, "device_rounds": dr, "build_s": t1 - t0, "loop_s": t2 - t1,
            "verify_s": t3 - t2, "total_s": t3 - t0, "device_rounds_per_s": dr / (t3 - t0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], help="extra dotted.key=value overrides")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = [bench(n, a.rounds, a.set) for n in a.devices]
    print(f"{'devices':>8} {'rounds':>6} {'build s':>8} {'loop s':>8} {'verify s':>8} {'total s':>8} {'dev-rounds/s':>12}")
    for r in rows:
        print(f"{r['devices']:>8} {r['rounds']:>6} {r['build_s']:>8.2f} {r['loop_s']:>8.2f} {r['verify_s']:>8.2f} "
              f"{r['total_s']:>8.2f} {r['device_rounds_per_s']:>12.0f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
