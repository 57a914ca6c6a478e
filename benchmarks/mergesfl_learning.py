"""Split federated learning with real learning under strong label skew: mergesfl vs splitfed vs fedlora.

Issue 24, must-show 2. scenarios/mergesfl-learning.yaml (8 boards, BBC News 5 classes, Dirichlet
alpha = 0.1, the MiniLM proxy cut to 3 layers, RoBERTa-base timing), each policy over the given seeds
(the seed draws the partition, the links and the training streams). Prints per policy the final and the
best evaluated accuracy (mean and range over seeds) and the simulated time to the target accuracy
(the first evaluation at or above it; '-' when a seed never reaches it), and per seed the curves.

    python benchmarks/mergesfl_learning.py [--rounds 8] [--seeds 0 1 2] [--target 0.8]

About 2 minutes per run on one CPU thread.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np

from sim.loader import load_scenario
from sim.runner import simulate

REPO = Path(__file__).resolve().parent.parent
POLICIES = {
    "mergesfl": "{name: mergesfl, params: {split_layers: 3, rank: 8}}",
    "splitfed": "{name: splitfed, params: {split_layers: 3, rank: 8}}",
    "fedlora": "{name: fedlora, params: {rank: 8}}",
}


def run(policy: str, seed: int, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """(round end times, accuracies) of one run."""
    sc, base = load_scenario(REPO / "scenarios" / "mergesfl-learning.yaml",
                             [f"algorithm={policy}", "policies=null", f"seed={seed}", f"training.rounds={rounds}"])
    _, out = simulate(sc, base)
    return out.rounds["t_end_s"].to_numpy(float), out.rounds["accuracy"].to_numpy(float)


def time_to(target: float, t_s: np.ndarray, acc: np.ndarray) -> float:
    """Simulated seconds at the first evaluation with accuracy >= ``target`` (NaN if none)."""
    hit = np.flatnonzero(acc >= target)
    return float(t_s[hit[0]]) if len(hit) else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--target", type=float, default=0.8)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    res = {name: [run(p, s, a.rounds) for s in a.seeds] for name, p in POLICIES.items()}
    print(f"BBC News, Dirichlet alpha 0.1, 8 boards, {a.rounds} rounds, seeds {a.seeds}, target {a.target:.0%}")
    print(f"{'policy':<10}{'final acc':>22}{'best acc':>22}{'time to target s':>30}")
    for name, runs in res.items():
        final = np.array([acc[-1] for _, acc in runs])
        best = np.array([acc.max() for _, acc in runs])
        tt = [time_to(a.target, t, acc) for t, acc in runs]
        tts = " / ".join("-" if math.isnan(x) else f"{x:.0f}" for x in tt)
        print(f"{name:<10}{final.mean():>10.3f} [{final.min():.3f}, {final.max():.3f}]"
              f"{best.mean():>10.3f} [{best.min():.3f}, {best.max():.3f}]{tts:>30}")
    for name, runs in res.items():
        for s, (t, acc) in zip(a.seeds, runs):
            curve = " ".join(f"{x:.2f}" for x in acc)
            print(f"  {name} seed {s}: accuracy by round {curve}; round ends at {t[0]:.0f} ... {t[-1]:.0f} s")


if __name__ == "__main__":
    main()
