"""FedSpine's lever (issue 20, must-shows 1, 2 and 4): per-device sparsity under a fleet-mean constraint.

Timing only. For each world (paper-like, stationary three-WiFi-class) and seed, runs at P = 0.3:
uniform (``fedapt``), ``fedmp_fixed``, ``fedspine`` under ``per_device`` and under ``fleet_mean``, and
the ``oracle`` under ``fleet_mean``, and prints per policy the mean over rounds of
idle_fastest = 1 - T_fastest / T_slowest, the total simulated time, the final per-device ratio range,
and the share of the oracle's time saving over uniform that the policy recovers,
(T_uniform - T_policy) / (T_uniform - T_oracle). For fedspine (fleet_mean) it also prints the spread
(max - min) of the devices' ratios at a few rounds.

    python benchmarks/fedspine_lever.py [--rounds 200] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sim.loader import load_scenario
from sim.runner import simulate, summarize

ROOT = Path(__file__).resolve().parents[1]
WORLDS = {"paperlike": "scenarios/paper-fleet-80-paperlike.yaml", "stationary": "scenarios/paper-fleet-80-stationary.yaml"}
POLICIES = {  # label -> (algorithm name, sparsity constraint)
    "uniform (fedapt)": ("fedapt", "per_device"),
    "fedmp_fixed": ("fedmp_fixed", "fleet_mean"),
    "fedspine per_device": ("fedspine", "per_device"),
    "fedspine fleet_mean": ("fedspine", "fleet_mean"),
    "oracle fleet_mean": ("oracle", "fleet_mean"),
}


def run_one(world: str, name: str, constraint: str, seed: int, rounds: int) -> dict:
    """One timing-only run: mean idle_fastest, total simulated time, final ratios, spread of p per round."""
    sc, base = load_scenario(ROOT / WORLDS[world], [
        f"seed={seed}", f"training.rounds={rounds}", "learning.kind=none",
        f"algorithm={{name: {name}, params: {{prune_target: 0.3}}}}", f"sparsity={{constraint: {constraint}}}"])
    _, out = simulate(sc, base)
    s = summarize(sc, out, "bench")
    spread = out.device_rounds.groupby("round")["prune_ratio"].agg(lambda x: float(x.max() - x.min()))
    return {"idle": float(np.nanmean(out.rounds["idle_fastest"])), "time_s": float(s["sim_time_s"]),
            "p_min": s["final_prune_ratio_min"], "p_max": s["final_prune_ratio_max"],
            "p_mean": s["final_prune_ratio_mean"], "spread": spread.to_numpy()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    a = ap.parse_args()
    for world in a.worlds:
        res = {lab: [run_one(world, n, c, s, a.rounds) for s in a.seeds] for lab, (n, c) in POLICIES.items()}
        t = {lab: np.mean([r["time_s"] for r in rs]) for lab, rs in res.items()}
        gain = t["uniform (fedapt)"] - t["oracle fleet_mean"]
        print(f"\n## {world}: P = 0.3, {a.rounds} rounds, seeds {a.seeds} (means over seeds)\n")
        print("| policy | 1 - T_fastest/T_slowest | total sim time (s) | speed-up vs uniform | share of oracle saving "
              "| final p min / mean / max |")
        print("|---|---|---|---|---|---|")
        for lab, rs in res.items():
            share = (t["uniform (fedapt)"] - t[lab]) / gain if gain else float("nan")
            print(f"| {lab} | {np.mean([r['idle'] for r in rs]):.4f} | {t[lab]:.1f} | "
                  f"{t['uniform (fedapt)'] / t[lab]:.3f}x | {share:.2f} | {np.mean([r['p_min'] for r in rs]):.3f} / "
                  f"{np.mean([r['p_mean'] for r in rs]):.6f} / {np.mean([r['p_max'] for r in rs]):.3f} |")
        sp = np.mean([r["spread"] for r in res["fedspine fleet_mean"]], axis=0)
        at = sorted({k for k in (0, 1, 2, 5, 10, 20, a.rounds // 2, a.rounds - 1) if k < len(sp)})
        print("\nfedspine fleet_mean, spread of p across devices (max - min) by round: "
              + ", ".join(f"r{k}: {sp[k]:.3f}" for k in at))


if __name__ == "__main__":
    main()
