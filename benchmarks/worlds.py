"""The named worlds side by side: how much of each is unlearnable noise, and what a plan can buy in it.

For each world (paper-like, stationary, drifting, hostile = paper-fleet-80-calibrated.yaml) and each
seed, timing-only:

* ``noise``: the noise fraction of log round time (devices/noise.py: 1 - R^2 of log t[i, r]
  predicted from the state round r-1 hands over), for the world's own fixed plan on every device;
* ``idle_fastest`` of the oracle, FedSpine and FedAPT, each at prune target 0.3: the mean over
  rounds of rounds.parquet's ``max_idle_fraction`` = 1 - T_min / T_max (the fastest board's idle
  share of the round, the paper's "~30% idle" figure).

Prints mean +- std over the seeds (std with ddof = 1) and writes results/bench/worlds.json.

    python benchmarks/worlds.py [--rounds 100] [--seeds 1 2 3] [--out results/bench/worlds.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from algorithms.base import FleetView  # noqa: E402
from sim.engine import Simulation  # noqa: E402
from sim.fleet import round_time_noise  # noqa: E402
from sim.loader import load_scenario  # noqa: E402
from sim.runner import simulate  # noqa: E402

WORLDS = {
    "paperlike": "scenarios/paper-fleet-80-paperlike.yaml",
    "stationary": "scenarios/paper-fleet-80-stationary.yaml",
    "drifting": "scenarios/paper-fleet-80-drifting.yaml",
    "hostile": "scenarios/paper-fleet-80-calibrated.yaml",
}
POLICIES = {
    "oracle": "{name: oracle, params: {prune_target: 0.3}}",
    "fedspine": "{name: fedspine, params: {prune_target: 0.3}}",
    "fedapt": "{name: fedapt, params: {prune_target: 0.3}}",
}


def noise_of(path: str, seed: int, rounds: int) -> float:
    """The world's noise fraction for its own round-0 plan (the plan ``fedfleet profile`` uses)."""
    sc, base = load_scenario(ROOT / path, [f"seed={seed}", f"training.rounds={rounds}", "learning.kind=none"])
    sim = Simulation(sc, base)
    sim.fleet.begin_round(0)
    plan = sim.strategy.plan(0, FleetView(0, sim.fleet.ids, np.zeros(sim.fleet.n)), np.array([0]))[0]
    return round_time_noise(sc, base, sim.workload, plan, sim.link.latency_s, sim.link.efficiency).noise_fraction


def idle_fastest_of(path: str, policy: str, seed: int, rounds: int) -> float:
    """Mean over rounds of max_idle_fraction (1 - T_min / T_max) of one timing-only run."""
    sc, base = load_scenario(ROOT / path, [f"seed={seed}", f"training.rounds={rounds}", "learning.kind=none",
                                           f"algorithm={policy}", "output.progress=false"])
    _, out = simulate(sc, base)
    return float(out.rounds["max_idle_fraction"].mean())


def _stats(xs: list[float]) -> dict:
    a = np.array(xs)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": xs}


def measure(rounds: int, seeds: list[int]) -> dict:
    """Every world's noise fraction and every policy's idle_fastest, per seed and summarised."""
    table = {}
    for world, path in WORLDS.items():
        row = {"scenario": path, "noise_fraction": _stats([noise_of(path, s, rounds) for s in seeds])}
        for label, policy in POLICIES.items():
            row[f"idle_fastest_{label}"] = _stats([idle_fastest_of(path, policy, s, rounds) for s in seeds])
        row["oracle_beats_uniform"] = row["idle_fastest_oracle"]["mean"] < row["idle_fastest_fedapt"]["mean"]
        table[world] = row
        logging.info("%s done", world)
    return table


def render(table: dict) -> str:
    cols = ["noise_fraction", "idle_fastest_oracle", "idle_fastest_fedspine", "idle_fastest_fedapt"]
    lines = ["| world | noise fraction | idle_fastest oracle | idle_fastest FedSpine | idle_fastest FedAPT (uniform) |",
             "|---|---|---|---|---|"]
    for world, row in table.items():
        cells = [f"{row[c]['mean']:.3f} ± {row[c]['std']:.3f}" for c in cols]
        lines.append(f"| {world} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "worlds.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = measure(args.rounds, args.seeds)
    print(render(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "seeds": args.seeds, "worlds": table}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
