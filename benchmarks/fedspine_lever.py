"""FedSpine's lever (issue 20, must-shows 1 to 4): per-device sparsity under a fleet-mean constraint.

Timing only. For each world (paper-like, stationary three-WiFi-class) and seed, runs at P = 0.3:
uniform (``fedapt``), ``fedmp_fixed``, ``fedspine`` under ``per_device`` and under ``fleet_mean``, the
``oracle`` under ``fleet_mean`` (held to the same fleet ramp and step limit as the others: the upper
bound of those rules) and, for reference, the ``oracle`` with ``pin_targets`` (final ratios from round
0 on, no ramp: a looser bound no ramped policy can reach), plus two FedSpine ablations (untried cells in
random order; the rank set {4, 8} instead of {4, 8, 16, 32}). Per policy, means over seeds (± std) of

    idle_fastest = 1 - T_fastest / T_slowest per round (mean over rounds), total simulated time,
    share of the ramp oracle's saving = (T_uniform - T_policy) / (T_uniform - T_oracle),
    final per-device ratio min / mean / max.

For ``fedspine`` (fleet_mean) also: the spread (max - min) of the devices' ratios by round; the
concentration of each device's plays, i.e. the share of its last 20% of rounds spent on its most
played arm (the requested final ratio binned into ``prune_grid`` bins x the rank); and the Spearman
correlation across devices between a device's slowness (its round-0 duration under the uniform plan)
and its final ratio and its last-20% modal rank (no prior knowledge is given to the bandits).
Writes ``results/bench/fedspine_lever.json``.

    python benchmarks/fedspine_lever.py [--rounds 200] [--seeds 0 1 2] [--worlds paperlike stationary]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from algorithms.fedspine import FedSpine
from sim.engine import Simulation
from sim.loader import load_scenario
from sim.runner import summarize
from sim.store import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
WORLDS = {"paperlike": "scenarios/paper-fleet-80-paperlike.yaml", "stationary": "scenarios/paper-fleet-80-stationary.yaml"}
POLICIES = {  # label -> (algorithm name, sparsity constraint, extra params)
    "uniform (fedapt)": ("fedapt", "per_device", ""),
    "fedmp_fixed": ("fedmp_fixed", "fleet_mean", ""),
    "fedspine per_device": ("fedspine", "per_device", ""),
    "fedspine fleet_mean": ("fedspine", "fleet_mean", ""),
    "fedspine fleet_mean, untried: random": ("fedspine", "fleet_mean", ", untried: random"),
    "fedspine fleet_mean, ranks [4, 8]": ("fedspine", "fleet_mean", ", ranks: [4, 8]"),
    "oracle fleet_mean": ("oracle", "fleet_mean", ""),
    "oracle pin_targets (no ramp)": ("oracle", "fleet_mean", ", pin_targets: true, max_step_factor: null"),
}


class _Logged:
    """Records every FedSpine choice (round, device, requested ratio, rank) by wrapping ``_choose``."""

    def __init__(self):
        self.rows: list[tuple[int, int, float, int]] = []
        self.round = 0

    def wrap(self, strategy: FedSpine) -> None:
        choose, plan = strategy._choose, strategy.plan

        def logged_choose(device, lo, hi):
            arm, x, rank = choose(device, lo, hi)
            self.rows.append((self.round, device, x, rank))
            return arm, x, rank

        def logged_plan(round_index, view, selected):
            self.round = round_index
            return plan(round_index, view, selected)

        strategy._choose, strategy.plan = logged_choose, logged_plan


def concentration(rows: list, rounds: int, p_max: float, bins: int) -> tuple[float, dict[int, int]]:
    """Mean over devices of the modal-arm share over the last 20% of rounds, and each device's modal rank."""
    plays: dict[int, list] = defaultdict(list)
    for r, d, x, rank in rows:
        if r >= int(0.8 * rounds):
            plays[d].append((min(int(x / max(p_max, 1e-12) * bins), bins - 1), rank))
    shares = [Counter(v).most_common(1)[0][1] / len(v) for v in plays.values()]
    ranks = {d: Counter(rk for _, rk in v).most_common(1)[0][0] for d, v in plays.items()}
    return float(np.mean(shares)) if shares else float("nan"), ranks


def run_one(world: str, name: str, constraint: str, extra: str, seed: int, rounds: int) -> dict:
    sc, base = load_scenario(ROOT / WORLDS[world], [
        f"seed={seed}", f"training.rounds={rounds}", "learning.kind=none", "output.plots=false",
        f"algorithm={{name: {name}, params: {{prune_target: 0.3{extra}}}}}", f"sparsity={{constraint: {constraint}}}"])
    sim = Simulation(sc, base)
    log = _Logged()
    if isinstance(sim.strategy, FedSpine):
        log.wrap(sim.strategy)
    out = sim.run()
    s = summarize(sc, out, "bench")
    dr = out.device_rounds
    last = dr.sort_values("round").groupby("device_index").last()
    res = {"idle": float(np.nanmean(out.rounds["idle_fastest"])), "time_s": float(s["sim_time_s"]),
           "p_min": s["final_prune_ratio_min"], "p_max": s["final_prune_ratio_max"],
           "p_mean": s["final_prune_ratio_mean"], "final_p": last["prune_ratio"].to_dict(),
           "spread": dr.groupby("round")["prune_ratio"].agg(lambda x: float(x.max() - x.min())).tolist(),
           "round0_s": (dr[dr["round"] == 0].set_index("device_index")["t_report_s"]
                        - dr[dr["round"] == 0].set_index("device_index")["t_round_start_s"]).to_dict()}
    if log.rows:
        st = sim.strategy
        res["concentration"], res["modal_rank"] = concentration(log.rows, rounds, st._p_dim[1], st.params.prune_grid)
    return res


def spearman(a: dict, b: dict) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (ties share their mean rank)."""
    keys = sorted(set(a) & set(b))
    ra = pd.Series([a[k] for k in keys]).rank()
    rb = pd.Series([b[k] for k in keys]).rank()
    return float(ra.corr(rb))


def world_table(world: str, res: dict, rounds: int) -> dict:
    t = {lab: np.mean([r["time_s"] for r in rs]) for lab, rs in res.items()}
    gain = t["uniform (fedapt)"] - t["oracle fleet_mean"]
    print(f"\n## {world}: P = 0.3, {rounds} rounds, {len(next(iter(res.values())))} seeds (mean ± std over seeds)\n")
    print("| policy | 1 - T_fastest/T_slowest | total sim time (s) | speed-up vs uniform | share of oracle saving "
          "| final p min / mean / max |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for lab, rs in res.items():
        idle, times = [r["idle"] for r in rs], [r["time_s"] for r in rs]
        share = (t["uniform (fedapt)"] - t[lab]) / gain if gain else float("nan")
        rows[lab] = {"idle_mean": float(np.mean(idle)), "idle_std": float(np.std(idle, ddof=1)) if len(rs) > 1 else 0.0,
                     "time_s_mean": float(t[lab]), "time_s_std": float(np.std(times, ddof=1)) if len(rs) > 1 else 0.0,
                     "speedup": float(t["uniform (fedapt)"] / t[lab]), "oracle_share": float(share)}
        print(f"| {lab} | {rows[lab]['idle_mean']:.3f} ± {rows[lab]['idle_std']:.3f} | {t[lab]:.0f} ± "
              f"{rows[lab]['time_s_std']:.0f} | {rows[lab]['speedup']:.3f}x | {share:.2f} | "
              f"{np.mean([r['p_min'] for r in rs]):.3f} / {np.mean([r['p_mean'] for r in rs]):.6f} / "
              f"{np.mean([r['p_max'] for r in rs]):.3f} |")
    fs, uni = res["fedspine fleet_mean"], res["uniform (fedapt)"]
    sp = np.mean([r["spread"] for r in fs], axis=0)
    at = sorted({k for k in (0, 1, 2, 5, 10, 20, rounds // 2, rounds - 1) if k < len(sp)})
    conc = [r["concentration"] for r in fs]
    rho_p = [spearman(u["round0_s"], r["final_p"]) for u, r in zip(uni, fs)]
    rho_r = [spearman(u["round0_s"], r["modal_rank"]) for u, r in zip(uni, fs)]
    for lab in (x for x in res if x.startswith("fedspine")):
        spl = np.mean([r["spread"] for r in res[lab]], axis=0)
        print(f"\n{lab}: spread of p across devices (max - min) by round: "
              + ", ".join(f"r{k}: {spl[k]:.3f}" for k in at))
    print(f"fedspine fleet_mean: modal-arm share over the last 20% of rounds {np.mean(conc):.3f} "
          f"(per seed {', '.join(f'{c:.3f}' for c in conc)}); Spearman(slowness, final ratio) "
          f"{np.mean(rho_p):+.3f}, Spearman(slowness, modal rank) {np.mean(rho_r):+.3f}")
    return {"policies": rows, "spread_by_round": {str(k): float(sp[k]) for k in at},
            "concentration": conc, "spearman_slowness_final_ratio": rho_p, "spearman_slowness_modal_rank": rho_r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    ap.add_argument("--json", type=Path, default=ROOT / "results" / "bench" / "fedspine_lever.json")
    a = ap.parse_args()
    out = {}
    for world in a.worlds:
        res = {lab: [run_one(world, n, c, x, s, a.rounds) for s in a.seeds] for lab, (n, c, x) in POLICIES.items()}
        out[world] = world_table(world, res, a.rounds)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.json, {"rounds": a.rounds, "seeds": a.seeds, "worlds": out})


if __name__ == "__main__":
    main()
