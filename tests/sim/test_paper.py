"""The paper reproduction (scenarios/paper/, benchmarks/paper.py, sim/views/paper.py): verdicts with
power, the settled accuracy of a run, the scales of `make paper`, and the committed page."""

from __future__ import annotations

import copy
import importlib.util
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from fleet_helpers import REPO

from sim.views.paper import (EXTRAS, FAILS, HOLDS, OPEN, SWEEPS, Cell, judge_gain, judge_level, judge_speed,
                             paired_values, settled_gap)
from sim.views.stats import mde_paired


def _paper_script():
    spec = importlib.util.spec_from_file_location("paper_script", REPO / "benchmarks" / "paper.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_paper_sweep_is_run_by_make_paper():
    ablations = {"rank-scaling": "rank_scaling.py"}  # run by their own benchmarks, on make paper's results
    files = {p.stem for p in (REPO / "scenarios" / "paper").glob("*.yaml")} - {"learning-8"}
    assert set(SWEEPS) | {"tau"} == files - set(ablations)
    assert set(EXTRAS) == {"tau", *ablations}  # shown when present, never counted missing
    assert all((REPO / "benchmarks" / script).is_file() for script in ablations.values())
    make = (REPO / "Makefile").read_text()
    assert "paper:" in make and "--scale $(PAPER_SCALE)" in make


def test_gain_verdicts_follow_the_interval_and_the_papers_bound():
    # clearly positive and compatible with +0.4 pp: holds
    j = judge_gain({1: 0.010, 2: 0.012, 3: 0.011, 4: 0.009, 5: 0.013}, 0.4)
    assert j.word == HOLDS and j.n == 5 and j.lo > 0 and j.mean == pytest.approx(1.1)
    # tightly around -1 pp: the runs exclude +0.4 pp
    j = judge_gain({1: -0.010, 2: -0.011, 3: -0.009}, 0.4)
    assert j.word == FAILS and j.hi < 0.4
    # noisy around 0: cannot be resolved, with the seeds an MDE of 0.4 pp would need
    diffs = {s: d for s, d in enumerate([0.03, -0.02, 0.01, -0.03, 0.02], 1)}
    j = judge_gain(diffs, 0.4)
    sd = float(np.std([100 * d for d in diffs.values()], ddof=1))
    assert j.word == OPEN and j.mde == pytest.approx(mde_paired(sd, 5))
    assert j.seeds_needed is not None and mde_paired(sd, j.seeds_needed) <= 0.4 < mde_paired(sd, j.seeds_needed - 1)
    assert judge_gain({}, 0.4).word == "not run"
    assert judge_gain({1: 0.02}, 0.4).word == OPEN  # one seed: no interval


def test_speed_verdicts_use_log_ratios():
    assert judge_speed({1: 2.0, 2: 2.1, 3: 1.9}, 1.4).word == HOLDS
    j = judge_speed({1: 0.95, 2: 0.97, 3: 0.96}, 1.4)
    assert j.word == FAILS and math.exp(j.mean) == pytest.approx((0.95 * 0.97 * 0.96) ** (1 / 3))
    assert judge_speed({1: 1.0, 2: 3.0}, 1.4).word == OPEN


def test_level_verdicts():
    assert judge_level({1: 0.30, 2: 0.31, 3: 0.29}, (0.25, 0.35))[0] == HOLDS
    assert judge_level({1: 0.70, 2: 0.71, 3: 0.69}, (0.25, 0.35))[0] == FAILS
    assert judge_level({1: 0.20, 2: 0.40}, (0.25, 0.35))[0] == OPEN


def _cell(seed: int, ratios_by_round: list[list[float]], acc: list[float]) -> Cell:
    dev = pd.DataFrame([{"round": r, "device_index": d, "prune_ratio": p}
                        for r, ps in enumerate(ratios_by_round) for d, p in enumerate(ps)])
    rounds = pd.DataFrame({"round": range(len(acc)), "accuracy": acc})
    run = SimpleNamespace(rounds=rounds, device_rounds=dev, summary={})
    return Cell("accuracy", "fedapt", "per_device", 0.3, 10, len(acc), seed, "", run)


def test_settled_accuracy_averages_the_final_window():
    """From the later of the last pruning step and 0.8 of the rounds (round 8 of 10 here)."""
    acc = [0.5, math.nan, 0.6, 0.62, 0.64, 0.66, 0.68, 0.7, 0.7, 0.8]
    c = _cell(1, [[0.1, 0.1], [0.2, 0.3]] + [[0.3, 0.3]] * 8, acc)
    assert c.settled_round() == 2 and c.final_round() == 8
    assert c.settled_accuracy() == pytest.approx(0.75)
    late = _cell(2, [[0.0, 0.0]] * 9 + [[0.3, 0.3]], acc)  # prunes in the last round: its last evaluation
    assert late.settled_round() == 9 and late.final_round() == 10 and late.settled_accuracy() == pytest.approx(0.8)
    assert paired_values({1: c, 2: late}, {2: late}, lambda a, b: a.seed + b.seed) == {2: 4}


def test_a_method_pruned_at_round_0_is_judged_on_the_same_final_rounds():
    """Prune-then-FedLoRA holds its final sparsity from round 0; its early, still-learning evaluations
    stay out of its accuracy, as an iterative method's do (the page before 2026-12-07 averaged them in)."""
    acc = [0.5, 0.55, 0.6, 0.62, 0.64, 0.66, 0.68, 0.7, 0.7, 0.8]
    once = _cell(1, [[0.3, 0.3]] * 10, acc)
    iterative = _cell(1, [[min(0.3, 0.04 * (r + 1))] * 2 for r in range(10)], acc)
    assert once.settled_round() == 0 and iterative.settled_round() == 7
    assert once.final_round() == iterative.final_round() == 8
    assert settled_gap(iterative, once) == 0.0
    at_once_late = _cell(1, [[0.0, 0.0]] * 8 + [[0.3, 0.3]] * 2, acc)  # FedLoRA-then-prune at round 8
    assert at_once_late.final_round() == 9 and at_once_late.settled_accuracy() == pytest.approx(0.8)


def test_compact_rounds():
    from sim.views.paper import compact_rounds

    assert compact_rounds([4, 8, 12, 24, 25, 26, 27]) == "4, 8, 12, 24-27"
    assert compact_rounds([2, 3, 5]) == "2, 3, 5" and compact_rounds([]) == "none"


def test_scales_derive_runnable_sweeps(tmp_path):
    from sim.studies.sweep import load_sweep_file

    paper = _paper_script()
    assert paper.sweep_file("accuracy", "default", tmp_path) == REPO / "scenarios" / "paper" / "accuracy.yaml"
    assert paper.RUNS["default"] == SWEEPS and "tau" not in SWEEPS  # claim 4 only at the larger scales
    assert paper.RUNS["full"] == paper.RUNS["smoke"] == [*SWEEPS, "tau"]
    for name in paper.RUNS["smoke"]:
        path = paper.sweep_file(name, "smoke", tmp_path)
        spec, cells = load_sweep_file(path)
        assert spec.seeds == paper.SCALES["smoke"][name]["seeds"]
        assert all(c.scenario.training.rounds <= 8 for c in cells), name
        if c := next((c for c in cells if c.scenario.learning.kind == "real"), None):
            assert c.scenario.learning.model == "tiny-bert" and c.scenario.learning.lr == 0.001  # rest kept
        for c in (c for c in cells if c.scenario.learning.kind == "real"):  # smoke evaluates every round
            assert all(c.scenario.training.evaluates(r) for r in range(c.scenario.training.rounds)), name
    assert paper.expected_host_s(REPO / "scenarios" / "paper" / "accuracy.yaml") > 600


def test_committed_page_covers_every_claim_and_its_figures_exist():
    """docs/paper-reproduction.md is generated by `make paper`: every claim has rows with a verdict,
    an MDE column, and every figure it shows is committed under docs/figures/."""
    page = (REPO / "docs" / "paper-reproduction.md").read_text()
    summary = page.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in summary.splitlines() if re.match(r"\| \d[a-c]?\. ", line)]
    assert {r.split(".")[0][2:] for r in rows} == {"1a", "1b", "2", "3a", "3b", "4"}
    words = (HOLDS, FAILS, OPEN, "not run")
    for r in rows:
        assert re.search(r"\*\*(" + "|".join(words) + r")\*\*", r), r
    assert "MDE (80% power)" in summary
    for world in ("paper-like", "drifting", "hostile", "hostile, datasheet-calibrated"):
        assert f"System claims in the {world} world" in page
    for name in re.findall(r"\]\(figures/([^)]+)\)", page):
        assert (REPO / "docs" / "figures" / name).is_file(), name


def test_rank_scaling_ablation_changes_only_the_lora_scaling_of_fedspine():
    """The ablation's cells are accuracy.yaml's FedSpine cells with s = alpha / sqrt(r) and the same s at rank 8."""
    from learning.lora import lora_scale
    from sim.loader import resolved_dict
    from sim.studies.sweep import load_sweep_file

    _, abl = load_sweep_file(REPO / "scenarios" / "paper" / "rank-scaling.yaml")
    _, acc = load_sweep_file(REPO / "scenarios" / "paper" / "accuracy.yaml")
    ref = {c.seed: resolved_dict(c.scenario) for c in acc if c.scenario.algorithm.name == "fedspine"}
    assert len(abl) == 8 and {c.seed for c in abl} == set(ref)
    for c in abl:
        d = resolved_dict(c.scenario)
        lrn = d["learning"]
        assert lrn.pop("lora_scaling") == "rslora"
        assert lora_scale(lrn.pop("lora_alpha"), 8, "rslora") == lora_scale(16.0, 8) == 2.0
        want = copy.deepcopy(ref[c.seed])
        want["learning"].pop("lora_alpha")
        assert lrn == want["learning"]
        assert {k: v for k, v in d.items() if k not in ("learning", "name")} == \
            {k: v for k, v in want.items() if k not in ("learning", "name")}
    assert {c.scenario.sparsity.constraint for c in abl} == {"per_device"}


def test_rank_scaling_modal_ranks_by_board_type():
    """The ablation's modal ranks come from the page's own plans_by_type (last 20% of the rounds)."""
    spec = importlib.util.spec_from_file_location("rank_scaling", REPO / "benchmarks" / "rank_scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dr = pd.DataFrame({"round": [0, 8, 9, 10, 9, 10], "device_type": ["tx2", "tx2", "tx2", "tx2", "nx", "nx"],
                       "lora_rank": [32, 4, 4, 8, 32, 32], "prune_ratio": 0.3,
                       "t_round_start_s": 0.0, "t_report_s": 1.0})
    cell = SimpleNamespace(run=SimpleNamespace(device_rounds=dr))
    res = SimpleNamespace(by_seed=lambda sweep, pol, reading: {1: cell} if (sweep, pol) == ("rank-scaling", "fedspine") else {})
    assert mod.modal_ranks(res, "rank-scaling") == {"nx": 32, "tx2": 4}
    assert mod.modal_ranks(res, "accuracy") == {}



def test_sweeps_share_one_pool_longest_first_with_the_results_of_a_serial_run(monkeypatch, tmp_path):
    """make paper runs every sweep at once on one pool, the long-cell sweeps' cells queued first; the
    sweep indexes are byte-identical to those of each sweep run alone, serially."""
    from sim.studies.executors import LocalExecutor, SerialExecutor
    from sim.studies.sweep import load_sweep_file
    from sim.studies.sweep_run import run_sweep

    paper = _paper_script()
    base = REPO / "scenarios" / "paper-fleet-80-paperlike.yaml"
    files = {}
    for name, ps in (("system", [0.2, 0.3]), ("fullscale", [0.3])):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump({"base": str(base), "name": name, "seeds": [1, 2],
                                               "set": {"training": {"rounds": 2}, "learning": {"kind": "none"}},
                                               "matrix": {"algorithm.params.prune_target": ps}}))
    queued = []
    submit = LocalExecutor.submit
    monkeypatch.setattr(LocalExecutor, "submit", lambda self, fn, task: (queued.append(task.cells_dir),
                                                                         submit(self, fn, task))[1])
    paper.run_sweeps(files, tmp_path / "pooled", 2, None)
    assert [Path(q).parent.name for q in queued] == ["fullscale"] * 2 + ["system"] * 4
    for name, path in files.items():
        spec, cells = load_sweep_file(path)
        run_sweep(spec, cells, tmp_path / "serial", SerialExecutor(), base_dir=path.parent)
        pooled, serial = (tmp_path / d / name / "sweep.parquet" for d in ("pooled", "serial"))
        assert pooled.read_bytes() == serial.read_bytes()
    calls = []
    monkeypatch.setattr(paper.subprocess, "run", lambda cmd, check, cwd: calls.append(cmd))
    paper.run_sweeps(files, tmp_path, None, "ray://head:10001")  # a cluster: fedfleet sweep, each in turn
    assert [Path(c[2]).stem for c in calls] == list(files) and all(c[-2:] == ["--address", "ray://head:10001"]
                                                                   for c in calls)


@pytest.mark.parametrize("scale", ["default", "full"])
def test_page_of_an_empty_results_dir_names_what_the_scale_runs(tmp_path, scale):
    from sim.views.paper import RUNS, write_page

    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "docs" / "figures" / "paper-tau-accuracy-vs-time.png").write_bytes(b"stale")
    text = write_page(tmp_path / "paper", tmp_path / "docs", figures=False, scale=scale).read_text()
    line = next(x for x in text.splitlines() if "Sweeps not run yet:" in x)
    assert line.split("Sweeps not run yet: ")[1].rstrip(".") == ", ".join(RUNS[scale])
    assert ("not in the default design" in text) == (scale == "default")  # tau: a pointer to the scale that runs it
    assert "paper-tau-accuracy-vs-time.png" not in text  # no figure of a sweep without cells
    assert "## Ablation" in text and "benchmarks/rank_scaling.py" in text
