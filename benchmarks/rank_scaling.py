"""Claim 1a with rank-stabilised LoRA: does FedSpine's accuracy deficit come from the LoRA scaling?

Under the standard LoRA scaling s = alpha / r an Adam step moves the adapter's update s·B·A by about
alpha·lr/sqrt(r) (``learning.lora.lora_scale``), so in the paper runs (alpha 16) FedSpine's boards on
rank 32 learn with half the step of FedAPT's rank 8 and its rank-4 boards with 1.4x that step: the
bandit's rank is also a per-board learning rate. ``scenarios/paper/rank-scaling.yaml`` reruns FedSpine (the
``per_device`` reading, where the rank is its only lever; the 8 seeds of ``accuracy.yaml``) with
s = alpha / sqrt(r) and alpha = 2 sqrt(8), which keeps s = 2 at rank 8: FedAPT (always rank 8) is the
same run under both scalings, so the FedAPT cells of ``make paper`` pair with these by seed
(``--check`` reruns one FedAPT seed under the new scaling and compares its evaluations with the paper
cell's).

Paired by seed, in percentage points of settled accuracy (the paper page's measure: the mean of the
evaluations in the run's final window, :meth:`sim.views.paper.Cell.final_round`): FedSpine(rsLoRA) - FedAPT (claim 1a
judged as on the page) and FedSpine(rsLoRA) - FedSpine(standard), with 95% t intervals and the MDE at 80%
power (:func:`sim.views.paper.rank_scaling_rows`, the page's own rows); and FedSpine's modal rank per
board type over the last 20% of rounds. Needs the ``accuracy`` sweep of ``make paper`` under
``--paper-dir``; its cells go there too, so the next ``make paper`` shows them on the page. Writes
``results/bench/rank_scaling.json``.

    python benchmarks/rank_scaling.py [--paper-dir results/paper] [--workers 2] [--skip-runs] [--check]

About 4.5 host-min per cell on one core (8 cells).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sim.store import atomic_write_json
from sim.views.paper import Results, Row, plans_by_type, rank_scaling_rows

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "scenarios" / "paper" / "rank-scaling.yaml"
FEDFLEET = str(Path(sys.executable).with_name("fedfleet"))
log = logging.getLogger("rank_scaling")


def modal_ranks(res: Results, sweep: str) -> dict[str, int]:
    """Board type -> FedSpine's (per_device) most played LoRA rank over the last 20% of the rounds, all seeds."""
    plans = plans_by_type(res, sweep, methods=(("fedspine", "per_device"),))
    return {} if plans.empty else dict(zip(plans["board"], plans["rank"].astype(int)))


def row(r: Row) -> dict:
    j = r.judged
    return {"comparison": r.claim, "figure": j.figure(), "mean_pp": j.mean, "lo_pp": j.lo, "hi_pp": j.hi,
            "mde_pp": j.mde, "seeds": j.n, "verdict": j.word, "seeds_needed": j.seeds_needed,
            "diffs_pp": {str(s): d for s, d in j.diffs.items()}}


def check_fedapt(paper_dir: Path, out: Path) -> dict:
    """FedAPT seed 1 under the ablation's scaling; its evaluations against the paper cell's (must be equal)."""
    scaling = yaml.safe_load(SWEEP.read_text())["set"]  # the ablation's lora_scaling and lora_alpha
    cmd = [FEDFLEET, "run", str(REPO / "scenarios" / "paper" / "learning-8.yaml"), "--out", str(out), "-q",
           "--set", "algorithm.name=fedapt", "--set", "learning.torch_threads=1",  # as a sweep cell
           *[a for k, v in scaling.items() for a in ("--set", f"{k}={v}")]]
    run_dir = Path(subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout.strip().splitlines()[-1])
    paper = Results(paper_dir).accuracy_cells("fedapt", "per_device")[1]
    a = pd.read_parquet(run_dir / "evals.parquet")[["round", "device_id", "accuracy", "loss"]]
    b = pd.read_parquet(paper.run.run_dir / "evals.parquet")[["round", "device_id", "accuracy", "loss"]]
    same = a.reset_index(drop=True).equals(b.reset_index(drop=True))
    return {"run_dir": str(run_dir), "evals_identical": bool(same),
            "max_abs_accuracy_diff": float(np.abs(a["accuracy"].to_numpy() - b["accuracy"].to_numpy()).max())
            if len(a) == len(b) else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper-dir", type=Path, default=REPO / "results" / "paper")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-runs", action="store_true", help="only read the finished cells")
    ap.add_argument("--check", action="store_true", help="rerun FedAPT seed 1 under the ablation's scaling")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.skip_runs:
        cmd = [FEDFLEET, "sweep", str(SWEEP), "--out", str(args.paper_dir)]
        subprocess.run(cmd + (["--workers", str(args.workers)] if args.workers else []), check=True, cwd=REPO)
    res = Results(args.paper_dir)
    rows = rank_scaling_rows(res)
    rs = res.by_seed("rank-scaling", "fedspine", "per_device")
    ranks = {"rslora": modal_ranks(res, "rank-scaling"), "standard": modal_ranks(res, "accuracy")}
    out = {"sweep": str(SWEEP.relative_to(REPO)), "paper_dir": str(args.paper_dir), "cells_finished": len(rs),
           "rows": [row(r) for r in rows], "modal_rank_last_20pct": ranks,
           "settled_accuracy_rslora": {str(s): c.settled_accuracy() for s, c in sorted(rs.items())}}
    print(f"cells finished: {len(rs)} (seeds {sorted(rs)})")
    for r in rows:
        print(f"{r.claim}: {r.figure} ({r.judged.n} seeds, MDE {r.judged.mde_text()}): {r.word}")
    print("modal LoRA rank, last 20% of rounds (rsLoRA / standard): "
          + ", ".join(f"{t} {ranks['rslora'].get(t, '-')} / {ranks['standard'].get(t, '-')}" for t in sorted(ranks["standard"])))
    if args.check:
        out["fedapt_check"] = check_fedapt(args.paper_dir, args.paper_dir.parent / "rank-scaling-check")
        print(f"FedAPT seed 1 under rsLoRA (alpha 2 sqrt 8) vs the paper cell: {out['fedapt_check']}")
    path = REPO / "results" / "bench" / "rank_scaling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, out)
    log.info("wrote %s; `python benchmarks/paper.py --skip-runs` adds the rows to docs/paper-reproduction.md", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
