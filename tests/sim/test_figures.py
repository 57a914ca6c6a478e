"""Paper figures over runs (sim.views.figures): every figure the data supports, in PNG and PDF, and the
pure helpers behind the annotations (speed-ups, time to target, styles, grouping)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from fleet_helpers import REPO, base_scenario

import sim.views.figures
from sim.loader import validate
from sim.runner import run_scenario
from sim.studies.policies import run_policies
from sim.views.figures import (
    POLICY_STYLES,
    group_runs,
    group_time_to_target,
    pick_target,
    plot_runs,
    policy_style,
    safe_label,
    speedups,
)
from sim.views.results import RunData, load_sweep, time_to_target

POLICIES = ["fedspine", "fedapt", "fedlora"]
SEEDS = [0, 1]
PER_RUN = ["device_type_times", "idle", "bytes", "memory"]  # figures every set of runs gets


def small_fleet(**over) -> dict:
    d = base_scenario(name="fig")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 3, "placement": "lan"},
                            {"type": "agx_xavier", "count": 2, "placement": "lan", "power_modes": ["MAXN"]}]
    d["training"] = {"rounds": 4, "local_steps": 5}
    d["round"]["participation"] = 0.8  # some devices sit rounds out: grey heatmap cells
    d["dynamics"]["dropout"]["prob"] = 0.1  # and a few drop out: crosses in the timelines
    d.update(over)
    return d


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> list[RunData]:
    """fedspine, fedapt and fedlora on the same 5 boards, timing only, seeds 0 and 1."""
    runs = []
    for seed in SEEDS:
        d = small_fleet(seed=seed)
        d["policies"] = {"fedspine": {"name": "fedspine", "params": {"prune_target": 0.3}},
                         "fedapt": {"name": "fedapt", "params": {"prune_target": 0.3}},
                         "fedlora": {"name": "fedlora"}}
        d["output"]["dir"] = str(tmp_path_factory.mktemp(f"cmp{seed}"))
        res = run_policies(validate(d))
        assert res.failures == {}
        runs += [RunData(res.parent / p, p, seed) for p in POLICIES]
    return runs


# synthetic accuracy per round (4 rounds): fedlora never reaches 80%
SYNTHETIC_ACC = {"fedspine": [0.60, 0.75, 0.85, 0.90], "fedapt": [0.55, 0.70, 0.80, 0.86],
                 "fedlora": [0.50, 0.60, 0.66, 0.70]}


@pytest.fixture(scope="module")
def accuracy_runs(comparison, tmp_path_factory) -> list[RunData]:
    """Copies of the comparison runs with a synthetic accuracy column, to exercise the accuracy
    figures without the slow real learner (which is tested elsewhere)."""
    root = tmp_path_factory.mktemp("acc")
    out = []
    for r in comparison:
        d = root / f"{r.policy}-{r.seed}"
        shutil.copytree(r.run_dir, d)
        rounds = pd.read_parquet(d / "rounds.parquet")
        # SYNTHETIC accuracy column (not produced by any learner): a plausible rising curve per policy
        rounds["accuracy"] = [a + 0.01 * r.seed for a in SYNTHETIC_ACC[r.policy]]
        rounds.to_parquet(d / "rounds.parquet")
        out.append(RunData(d, r.policy, r.seed))
    return out


METRICS = ["final_accuracy", "time_to_target_s", "sim_time_s", "mean_idle_fraction", "mean_idle_fastest",
           "mean_round_s", "bytes_total", "final_mean_prune_ratio", "rounds_completed"]


def make_sweep(root, matrix: dict[str, list], seeds: list[int]):
    """A sweep directory the way ``fedfleet sweep`` lays it out: cells/<id>/ runs, sweep.json and
    sweep.parquet (one row per cell, plus one failed cell that the figures must leave out)."""
    root.mkdir(parents=True, exist_ok=True)
    keys = list(matrix)
    combos = [{}]
    for k in keys:
        combos = [{**c, k: v} for c in combos for v in matrix[k]]
    rows = []
    for values in combos:
        for seed in seeds:
            d = small_fleet(seed=seed, algorithm={"name": "fedspine", "params": {"prune_target": 0.3}})
            for k, v in values.items():
                *path, last = k.split(".")
                node = d
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = v
            cell_id = f"cell{len(rows):02d}"
            (root / "cells" / cell_id).mkdir(parents=True)
            res = run_scenario(validate(d), run_dir=root / "cells" / cell_id, progress=False)
            s = res.summary
            rows.append({"cell_index": len(rows), "policy": values.get("algorithm.name", "fedspine"), **values, "seed": seed, "cell_id": cell_id,
                         "status": "finished", "error": None, "final_accuracy": s["final_accuracy"],
                         "time_to_target_s": s["time_to_target_s"], "sim_time_s": s["sim_time_s"],
                         "mean_idle_fraction": s["mean_idle_fraction"], "mean_idle_fastest": s["mean_idle_fastest"],
                         "mean_round_s": s["mean_round_s"],
                         "bytes_total": s["bytes_up_total"] + s["bytes_down_total"],
                         "final_mean_prune_ratio": s["final_mean_prune_ratio"],
                         "rounds_completed": s["rounds_completed"]})
    rows.append({**rows[0], "cell_index": len(rows), "cell_id": "failed-cell", "status": "failed",
                 "error": "RuntimeError: boom", **{m: math.nan for m in METRICS}})
    index = pd.DataFrame(rows)
    for m in METRICS:
        index[m] = index[m].astype(float)
    index.to_parquet(root / "sweep.parquet")
    (root / "sweep.json").write_text(json.dumps({"name": root.name, "matrix": matrix, "seeds": seeds}))
    return load_sweep(root)


def check_written(out_dir, written, stems: list[str]) -> None:
    """Every stem in PNG (non-trivial) and PDF, and the returned list is exactly what is on disk."""
    on_disk = sorted(p for p in out_dir.iterdir() if p.is_file())
    assert sorted(written) == on_disk, "returned paths differ from the files written"
    assert len(written) == len(set(written))
    expected = sorted(out_dir / f"{s}.{ext}" for s in stems for ext in ("png", "pdf"))
    assert on_disk == expected
    for s in stems:
        assert (out_dir / f"{s}.png").stat().st_size > 10_000, s
        assert (out_dir / f"{s}.pdf").read_bytes()[:5] == b"%PDF-"
    assert not [p for p in out_dir.iterdir() if ".tmp." in p.name]


# ---------------------------------------------------------------------------------------------- pure helpers

def test_speedups_are_time_over_reference_time():
    s = speedups({"fedspine": 100.0, "fedapt": 140.0, "fedlora": 250.0, "never": math.nan}, "fedspine")
    assert s["fedspine"] == 1.0 and s["fedapt"] == 1.4 and s["fedlora"] == 2.5 and math.isnan(s["never"])
    assert speedups({"a": 10.0}, "fedspine") == {}  # no reference: no annotation
    assert speedups({"fedspine": math.nan, "a": 10.0}, "fedspine") == {}  # reference never reached the target


def test_time_to_target_is_the_first_round_reaching_it():
    f = pd.DataFrame({"round": [0, 1, 2, 3], "t_end_s": [10.0, 20.0, 30.0, 40.0], "accuracy": [0.5, 0.7, 0.65, 0.8]})
    assert time_to_target(f, 0.7) == 20.0 and time_to_target(f, 0.75) == 40.0
    assert math.isnan(time_to_target(f, 0.81))
    g = f.assign(accuracy=[math.nan, 0.6, 0.72, 0.9], t_end_s=[12.0, 24.0, 36.0, 48.0])
    tt = group_time_to_target([f, g], 0.7)
    assert (tt.mean_s, tt.n_reached, tt.n_runs, tt.reached) == (28.0, 2, 2, True)
    assert tt.std_s == pytest.approx(math.sqrt(((20 - 28) ** 2 + (36 - 28) ** 2) / 1))
    partial = group_time_to_target([f, g], 0.85)
    assert (partial.mean_s, partial.n_reached) == (48.0, 1) and math.isnan(partial.std_s)
    never = group_time_to_target([f, g], 0.95)
    assert not never.reached and never.n_reached == 0 and math.isnan(never.mean_s)


def test_target_choice():
    curves = [pd.Series([0.5, 0.8]), pd.Series([0.6, 0.7])]
    assert pick_target(0.75, [0.9, 0.9], curves) == (0.75, "given")
    assert pick_target(None, [0.9, 0.9], curves) == (0.9, "training.target_accuracy")
    assert pick_target(None, [0.9, None], curves) == (0.7, "highest accuracy every group reached")
    assert pick_target(None, [None, None], [pd.Series([0.5]), pd.Series([math.nan])]) == (None, "none")


def test_policy_style_is_stable_and_distinct_for_known_names():
    styles = [policy_style(k) for k in POLICY_STYLES]
    assert len({c for c, _ in styles}) == len(styles) and len({m for _, m in styles}) == len(styles)
    assert policy_style("fedspine-tuned") == policy_style("fedspine")
    assert policy_style("fedlora_then_prune-x") == POLICY_STYLES["fedlora_then_prune"]  # longest known prefix
    colour, marker = policy_style("my-policy")
    assert policy_style("my-policy") == (colour, marker) and colour.startswith("#") and len(colour) == 7
    h = hashlib.sha256(b"my-policy").digest()  # stable across processes (no salted hash())
    assert colour == sim.views.figures._PALETTE[int.from_bytes(h[:8], "big") % len(sim.views.figures._PALETTE)]


def test_groups_by_policy_then_by_values_and_capped(tmp_path, caplog):
    runs = [RunData(tmp_path, "a", s) for s in (0, 1)] + [RunData(tmp_path, "b", 0)]
    assert [(g.label, len(g.runs)) for g in group_runs(runs)] == [("a", 2), ("b", 1)]
    runs = [RunData(tmp_path, "fedspine", s, {"algorithm.params.exploration": e, "training.rounds": 3})
            for e in (0.5, 2.0) for s in (0, 1)]
    groups = group_runs(runs)
    assert [g.label for g in groups] == ["fedspine (exploration=0.5, rounds=3)", "fedspine (exploration=2, rounds=3)"]
    assert groups[0].color == POLICY_STYLES["fedspine"][0] and groups[1].color != groups[0].color
    assert groups[0].marker == groups[1].marker == "o"
    assert safe_label(groups[0].label) == "fedspine__exploration_0.5__rounds_3_"
    with caplog.at_level(logging.WARNING, logger="sim.views.figures"):
        many = group_runs([RunData(tmp_path, f"p{i}", 0) for i in range(14)])
    assert len(many) == 12 and "p12, p13" in caplog.text
    assert len({g.color for g in many}) == 12  # hashed colours that collide are moved to free ones


# ---------------------------------------------------------------------------------------------- figures

def test_timing_only_comparison(comparison, tmp_path):
    out = tmp_path / "figs"
    written = plot_runs(comparison, out)
    stems = ["progress_vs_time", "time_to_finish", *PER_RUN,
             *(f"{k}_{p}" for p in POLICIES for k in ("heatmap", "timeline"))]
    check_written(out, written, stems)


def test_accuracy_figures(accuracy_runs, tmp_path):
    out = tmp_path / "figs"
    written = plot_runs(accuracy_runs, out, target_acc=0.8, timeline_rounds=[3, 99], formats=("png", "pdf"))
    stems = ["accuracy_vs_time", "time_to_target", *PER_RUN,
             *(f"{k}_{p}" for p in POLICIES for k in ("heatmap", "timeline"))]
    check_written(out, written, stems)
    # what the bars show: fedlora never reaches 80%, the others do on both seeds
    by = {p: [r.rounds for r in accuracy_runs if r.policy == p] for p in POLICIES}
    tt = {p: group_time_to_target(f, 0.8) for p, f in by.items()}
    assert not tt["fedlora"].reached and tt["fedspine"].n_reached == tt["fedapt"].n_reached == 2


def test_sweep_one_key(tmp_path):
    sweep = make_sweep(tmp_path / "sw1", {"algorithm.params.prune_target": [0.2, 0.4]}, [0, 1])
    runs = sweep.runs()
    assert len(runs) == 4  # the failed cell is left out
    out = tmp_path / "figs"
    written = plot_runs(runs, out, sweep=sweep, timeline_rounds=[0])
    labels = [safe_label(f"fedspine (prune_target={e})") for e in ("0.2", "0.4")]
    stems = ["progress_vs_time", "time_to_finish", *PER_RUN, "sweep_sim_time_s", "sweep_mean_idle_fastest",
             "sweep_mean_idle_fraction",
             *(f"{k}_{lab}" for lab in labels for k in ("heatmap", "timeline"))]
    check_written(out, written, stems)  # timing only: no sweep_final_accuracy


def test_sweep_two_keys_heatmaps(tmp_path, monkeypatch, caplog):
    sweep = make_sweep(tmp_path / "sw2", {"algorithm.params.prune_target": [0.2, 0.4],
                                          "training.local_steps": [5, 10]}, [0])
    out = tmp_path / "figs"
    written = plot_runs([], out, sweep=sweep)  # the sweep figures alone
    check_written(out, written, ["sweep_sim_time_s", "sweep_mean_idle_fastest", "sweep_mean_idle_fraction"])

    def broken(*_a, **_k):
        raise ValueError("bad data")

    monkeypatch.setattr(sim.views.figures, "_sweep_heatmaps", broken)
    with caplog.at_level(logging.ERROR, logger="sim.views.figures"):
        assert plot_runs([], tmp_path / "broken", sweep=sweep) == []  # logged, not raised
    assert "figure sweep_figures failed" in caplog.text and "bad data" in caplog.text
    assert not list((tmp_path / "broken").iterdir())


def test_swept_algorithm_name_is_the_policy_not_an_axis(tmp_path, monkeypatch):
    """matrix: {algorithm.name: [...], prune_target: [...]}: groups are labelled by the other keys and
    the sweep figures are lines over prune_target, one per policy (not a two-key heatmap)."""
    sweep = make_sweep(tmp_path / "sw3", {"algorithm.name": ["fedspine", "fedapt"],
                                          "algorithm.params.prune_target": [0.2, 0.4]}, [0])
    labels = [g.label for g in group_runs(sweep.runs())]
    assert labels == ["fedspine (prune_target=0.2)", "fedspine (prune_target=0.4)",
                      "fedapt (prune_target=0.2)", "fedapt (prune_target=0.4)"]

    def no_heatmaps(*_a, **_k):
        raise AssertionError("heatmaps drawn for a swept algorithm name")

    monkeypatch.setattr(sim.views.figures, "_sweep_heatmaps", no_heatmaps)
    written = plot_runs([], tmp_path / "figs", sweep=sweep)
    check_written(tmp_path / "figs", written, ["sweep_sim_time_s", "sweep_mean_idle_fastest", "sweep_mean_idle_fraction"])


def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys, sim.views.figures; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
