"""Per-step idle of split federated learning on the 80-board paper fleet, with and without batch regulation.

Timing only (issue 24, must-show 3). The fleet, network and workload of scenarios/mergesfl-quick.yaml
(30 TX2 + 40 Xavier NX + 10 AGX Xavier, one 10-20 Mbit/s WiFi class, RoBERTa-base, batch 16,
sequence 128, tau = 20, the bottom 3 blocks on the board). Per policy and seed it reports, over the
last half of the rounds (regulation has converged by then):

* per-step idle: the mean over device-steps of the wait at the merge barrier (``split_step_wait_s``;
  0 for splitfed, whose devices never wait within a round), in seconds and as a share of the step;
* round-end idle: the mean idle fraction (round end - report) / round duration;
* the mean round duration and the batch sizes per device type.

    python benchmarks/mergesfl.py [--rounds 20] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sim.engine import Simulation
from sim.loader import load_scenario

REPO = Path(__file__).resolve().parent.parent
POLICIES = {
    "mergesfl (regulated)": "{name: mergesfl, params: {split_layers: 3}}",
    "mergesfl, no regulation": "{name: mergesfl, params: {split_layers: 3, regulate: false}}",
    "splitfed": "{name: splitfed, params: {split_layers: 3}}",
}


def run(policy: str, seed: int, rounds: int) -> pd.DataFrame:
    """The device_rounds table of one timing-only run of the quick scenario under ``policy``."""
    sc, base = load_scenario(REPO / "scenarios" / "mergesfl-quick.yaml",
                             [f"algorithm={policy}", "policies=null", f"seed={seed}", f"training.rounds={rounds}"])
    return Simulation(sc, base).run().device_rounds


def figures(dev: pd.DataFrame) -> dict[str, float]:
    """Per-step and round-end idle, round duration and batch sizes over the last half of the rounds."""
    last = dev[dev["round"] >= dev["round"].max() // 2 + 1]
    wait = last["split_step_wait_s"].to_numpy(float)
    step = last["step_time_s"].to_numpy(float)
    batch = last.groupby("device_type", observed=True)["batch_size"].mean()
    return {"wait_s": float(wait.mean()), "wait_share": float((wait / step).mean()),
            "round_idle": float(last["idle_fraction"].mean()),
            "duration_s": float((last["round_end_s"] - last["t_round_start_s"]).groupby(last["round"]).first().mean()),
            **{f"batch_{t}": float(b) for t, b in batch.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for label, policy in POLICIES.items():
        for seed in a.seeds:
            rows.append({"policy": label, "seed": seed, **figures(run(policy, seed, a.rounds))})
    df = pd.DataFrame(rows)
    cols = ["wait_s", "wait_share", "round_idle", "duration_s"] + sorted(c for c in df if c.startswith("batch_"))
    mean = df.groupby("policy", sort=False)[cols].mean()
    print(f"80-board paper fleet, timing only, rounds {a.rounds // 2 + 1}-{a.rounds - 1} of {a.rounds}, "
          f"mean over seeds {a.seeds}")
    print("per-step idle = wait at the merge barrier per device-step; round idle = (round end - report) / duration")
    print(f"{'policy':<26}{'per-step idle s':>16}{'share of step':>14}{'round idle':>11}{'round s':>9}  batch per type")
    for label, r in mean.iterrows():
        batches = ", ".join(f"{c[6:]} {r[c]:.1f}" for c in cols if c.startswith("batch_"))
        print(f"{label:<26}{r['wait_s']:>16.3f}{r['wait_share']:>14.1%}{r['round_idle']:>11.1%}"
              f"{r['duration_s']:>9.1f}  {batches}")
    reg, unreg = mean.loc["mergesfl (regulated)"], mean.loc["mergesfl, no regulation"]
    print(f"regulation: per-step idle {unreg['wait_s']:.3f} s -> {reg['wait_s']:.3f} s, round "
          f"{unreg['duration_s']:.1f} s -> {reg['duration_s']:.1f} s ({unreg['duration_s'] / reg['duration_s']:.2f}x)")


if __name__ == "__main__":
    main()
