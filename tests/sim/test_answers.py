"""Answers, not numbers: no speed-up is claimed at the majority-class rate, and every single-seed
accuracy carries its binomial standard error (issue 25)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fleet_helpers import base_scenario, fedfleet

from sim.loader import validate
from sim.studies.policies import run_policies
from sim.views.compare import compare_table, format_table
from sim.views.figures import pick_target, plot_runs
from sim.views.report import write_report
from sim.views.results import automatic_target, binomial_se, collect

N_EVAL = 200
MAJORITY = 0.55
# SYNTHETIC accuracy per round (not produced by any learner): every policy hovers at or below the
# majority-class rate, as a real 8-board x 4-round compare-quick did; fedspine "reaches" 54.5% first
AT_MAJORITY = {"spine": [0.545, 0.545, 0.55, 0.55], "apt": [0.53, 0.545, 0.545, 0.55],
               "lora": [0.50, 0.52, 0.545, 0.545]}


@pytest.fixture(scope="module")
def majority_comparison(tmp_path_factory):
    """A real timing comparison of three policies, given a synthetic accuracy at the majority rate and
    the ``learning_info`` a real learner writes (``n_eval``, ``majority_rate``)."""
    root = tmp_path_factory.mktemp("maj")
    d = base_scenario(name="maj")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "placement": "lan"},
                            {"type": "agx_xavier", "count": 2, "placement": "lan", "power_modes": ["MAXN"]}]
    d["training"] = {"rounds": 4, "local_steps": 5}
    d["policies"] = {"spine": {"name": "fedspine"}, "apt": {"name": "fedapt"}, "lora": {"name": "fedlora"}}
    d["output"]["dir"] = str(root)
    res = run_policies(validate(d))
    assert res.failures == {}
    for label, accs in AT_MAJORITY.items():
        set_accuracy(res.parent / label, accs)
    return res.parent


def set_accuracy(run_dir, accs: list[float]) -> None:
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    rounds["accuracy"] = accs
    rounds.to_parquet(run_dir / "rounds.parquet")
    s = json.loads((run_dir / "summary.json").read_text())
    s["final_accuracy"] = accs[-1]
    s["learning_info"] = {"n_eval": N_EVAL, "majority_rate": MAJORITY}
    (run_dir / "summary.json").write_text(json.dumps(s))


def test_binomial_standard_error():
    assert binomial_se(0.55, 200) == pytest.approx(math.sqrt(0.55 * 0.45 / 200))
    assert binomial_se(0.55, 200) == pytest.approx(0.0352, abs=1e-4)
    assert math.isnan(binomial_se(0.55, math.nan)) and math.isnan(binomial_se(math.nan, 200))


def test_an_automatic_target_is_never_at_or_below_the_majority_rate():
    assert automatic_target([0.545, 0.55], 0.55)[0] is None
    assert automatic_target([0.56, 0.55], 0.55)[0] is None  # the slowest run only reached the majority rate
    target, source = automatic_target([0.60, 0.58], 0.55)
    assert target == 0.58 and source == "highest accuracy every run reached"
    assert automatic_target([0.545], math.nan)[0] == 0.545  # majority unknown: as before
    assert pick_target(None, [None], [pd.Series([0.5, 0.55])], 0.55)[0] is None
    assert pick_target(0.54, [None], [pd.Series([0.5, 0.55])], 0.55)[0] == 0.54  # a given target is kept


def test_compare_table_at_the_majority_rate_claims_no_speedup(majority_comparison):
    runs = [majority_comparison / p for p in AT_MAJORITY]
    t = compare_table(runs)
    assert t.attrs["target_accuracy"] is None
    assert t.attrs["target_source"].startswith("no meaningful target")
    assert t["time_to_target_s"].isna().all()
    assert list(t["majority_rate"]) == [MAJORITY] * 3 and list(t["n_eval"]) == [N_EVAL] * 3
    assert t["final_accuracy_se"].iloc[0] == pytest.approx(binomial_se(0.55, N_EVAL))
    text = format_table(t, "text")
    assert "no meaningful target" in text and "majority-class rate (55.0%)" in text
    md = [[c.strip() for c in ln.strip("|").split("|")] for ln in format_table(t, "md").splitlines()[:3]]
    assert md[0][2:4] == ["final acc %", "majority %"] and md[2][2:4] == ["55.0 ± 3.5", "55.0"]
    assert "$\\pm$" in format_table(t, "latex")
    # the same runs above the majority rate: a target again, and times to it
    t = compare_table(runs, target_acc=0.545)
    assert t.attrs["target_source"] == "--target-acc" and t["time_to_target_s"].notna().all()


def test_cli_report_and_figure_at_the_majority_rate(majority_comparison, tmp_path):
    r = fedfleet("compare", str(majority_comparison))
    assert r.returncode == 0, r.stderr
    assert "no meaningful target" in r.stdout and "55.0 ± 3.5" in r.stdout
    out = write_report(majority_comparison, [], tmp_path / "report.html")
    page = out.read_text()
    assert "no meaningful target" in page and "majority class (%)" in page and "55.0 ± 3.5" in page
    written = plot_runs(collect(majority_comparison), tmp_path / "figs", reference="spine")
    stems = {p.stem for p in written}
    assert "time_to_target" in stems and "accuracy_vs_time" in stems


def test_the_time_to_target_figure_says_why_there_is_no_target(majority_comparison, tmp_path, monkeypatch):
    import sim.views.figures as figures

    said: list[str] = []
    monkeypatch.setattr(figures, "_no_target_figure", lambda plt, save, reason: said.append(reason))
    figures.plot_runs(collect(majority_comparison), tmp_path / "figs", reference="spine")
    assert len(said) == 1 and "at or below the majority-class rate (55.0%)" in said[0]


# ------------------------------------------------------------------------------------------------
# several seeds: mean ± std, n, paired differences with a 95% t interval


# SYNTHETIC per-seed results (hand-made run directories): lora is 5 points more accurate on every
# seed (a real difference); the simulated times differ by +1, -2, +2 s (noise)
SEEDS = [0, 1, 2]
HAND = {"spine": {"acc": [0.70, 0.72, 0.74], "sim": [100.0, 110.0, 120.0]},
        "lora": {"acc": [0.75, 0.78, 0.78], "sim": [101.0, 108.0, 122.0]}}


def hand_made_seeds(root) -> list:
    parents = []
    for i, seed in enumerate(SEEDS):
        parent = root / f"cmp-seed{seed}"
        for label, v in HAND.items():
            d = parent / label
            d.mkdir(parents=True)
            pd.DataFrame({"round": [0, 1], "t_end_s": [v["sim"][i] / 2, v["sim"][i]],
                          "accuracy": [0.6, v["acc"][i]]}).to_parquet(d / "rounds.parquet")
            (d / "summary.json").write_text(json.dumps({
                "algorithm": "fed" + label, "seed": seed, "final_accuracy": v["acc"][i], "sim_time_s": v["sim"][i],
                "mean_idle_fastest": 0.3, "mean_idle_fraction": 0.1, "bytes_up_total": 10**6, "bytes_down_total": 0,
                "rounds_completed": 2, "host": {"host_time_s": 1.5},
                "learning_info": {"n_eval": N_EVAL, "majority_rate": 0.5}}))
        parents.append(parent)
    return parents


def test_t_quantiles():
    from sim.views.stats import t975

    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert t975(35) == pytest.approx(2.030, abs=2e-3)  # the exact quantile is 2.0301
    assert t975(10**6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_paired_difference_and_within_noise():
    from sim.views.stats import paired_difference, seed_stats

    p = paired_difference({0: 0.75, 1: 0.78, 2: 0.78}, {0: 0.70, 1: 0.72, 2: 0.74})
    d = [0.05, 0.06, 0.04]
    half = 4.303 * pd.Series(d).std() / math.sqrt(3)
    assert p.n == 3 and p.mean == pytest.approx(0.05)
    assert (p.low, p.high) == pytest.approx((0.05 - half, 0.05 + half)) and not p.within_noise
    q = paired_difference({0: 101.0, 1: 108.0, 2: 122.0}, {0: 100.0, 1: 110.0, 2: 120.0})
    assert q.low < 0 < q.high and q.within_noise
    assert paired_difference({0: 1.0, 5: 2.0}, {0: 0.5}).n == 1  # only seeds both ran are paired
    s = seed_stats([1.0, 2.0, 3.0, math.nan])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)


def test_compare_over_seeds_pools_the_runs(tmp_path):
    parents = hand_made_seeds(tmp_path)
    r = fedfleet("compare", *map(str, parents), "--format", "md", "--reference", "spine", "--target-acc", "0.7")
    assert r.returncode == 0, r.stderr
    lines = [[c.strip() for c in ln.strip("|").split("|")] for ln in r.stdout.splitlines() if ln.startswith("|")]
    head, rows = lines[0], {ln[0]: dict(zip(lines[0], ln)) for ln in lines[2:]}
    assert set(rows) == {"spine", "lora"}  # one row per policy, not per run
    assert rows["spine"]["final acc (%)"] == "72.0 ± 2.0" and rows["spine"]["final acc n"] == "3"
    assert rows["lora"]["Δ final acc vs spine (%), 95% CI"].startswith("+5.0 [+2.5, +7.5]")
    assert "within noise" not in rows["lora"]["Δ final acc vs spine (%), 95% CI"]
    assert rows["lora"]["Δ simulated vs spine (s), 95% CI"].endswith("within noise")
    assert rows["spine"]["Δ simulated vs spine (s), 95% CI"] == "reference"
    assert not any("host" in h for h in head)
    r = fedfleet("compare", *map(str, parents), "--reference", "spin")
    assert r.returncode == 2 and "reference 'spin'" in r.stderr and "did you mean 'spine'" in r.stderr
    r = fedfleet("compare", *map(str, parents), "--format", "csv")
    assert r.returncode == 0 and "final_accuracy_diff_low" in r.stdout.splitlines()[0]


def test_tables_keep_one_unit_per_column_and_leave_host_seconds_out_of_papers(tmp_path):
    parents = hand_made_seeds(tmp_path)
    runs = [parents[0] / "spine", parents[0] / "lora"]
    t = compare_table(runs)
    t.loc[1, "sim_time_s"] = 7200.0  # one run over an hour: the whole column in hours
    md = format_table(t, "md").splitlines()[0]
    assert "simulated (h)" in md and "time to target (s)" in md and "host" not in md
    assert "host" not in format_table(t, "latex") and "host s" in format_table(t, "text")
    assert "| 0.03 |" in format_table(t, "md") and "| 2.00 |" in format_table(t, "md")


# ------------------------------------------------------------------------------------------------
# defect 1: a reference that matches no policy is refused (given) or said (default)


def test_plot_reference_typo_is_refused_with_did_you_mean(majority_comparison):
    from sim.views.figures import resolve_reference

    r = fedfleet("plot", str(majority_comparison), "--reference", "fedspin")
    assert r.returncode == 2 and "--reference 'fedspin'" in r.stderr and "did you mean 'fedspine'" in r.stderr
    assert "Traceback" not in r.stderr and not (majority_comparison / "figures").exists()
    r = fedfleet("report", str(majority_comparison), "--reference", "sp1ne")
    assert r.returncode == 2 and "did you mean 'spine'" in r.stderr
    runs = collect(majority_comparison)
    assert resolve_reference(runs, None) == ("fedspine", None)  # the default names an algorithm here
    assert resolve_reference(runs, "apt") == ("apt", None)  # a policy label
    no_spine = [r for r in runs if r.policy != "spine"]
    ref, note = resolve_reference(no_spine, None)
    assert ref == "fedspine" and "the default reference 'fedspine' matches no policy (apt, fedapt, fedlora, lora)" \
        in note and "--reference" in note


# ------------------------------------------------------------------------------------------------
# defect 9 (part): the finished-run line names its stop reason in words


def test_finished_run_line_names_its_stop_reason_in_words(tmp_path):
    from sim.views.results import STOP_REASON_WORDS, stop_reason_words

    d = base_scenario(name="words")
    d["training"] = {"rounds": 2, "local_steps": 5}
    d["output"]["dir"] = str(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    r = fedfleet("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "2 rounds (stopped after all training.rounds)" in r.stdout and "(rounds)" not in r.stdout
    import re

    import sim.engine

    engine_reasons = set(re.findall(r'stop_reason = "(\w+)"', Path(sim.engine.__file__).read_text()))
    assert engine_reasons and engine_reasons <= set(STOP_REASON_WORDS)  # every reason the engine sets has words
    assert stop_reason_words("odd") == "stopped: odd"


# ------------------------------------------------------------------------------------------------
# defect 10: load_comparison() in the Python API


def test_load_comparison_returns_the_per_run_and_the_over_seeds_tables(tmp_path):
    import sim

    parents = hand_made_seeds(tmp_path)
    runs, over = sim.load_comparison(*parents, target_acc=0.7)
    assert len(runs) == 6 and list(runs["seed"]) == [0, 0, 1, 1, 2, 2]
    assert set(runs["group"]) == {"spine", "lora"} and runs.attrs["target_accuracy"] == 0.7
    assert list(over["policy"]) == ["lora", "spine"] and list(over["final_accuracy_n"]) == [3, 3]
    assert over.attrs["reference"] == "lora"  # default: the first policy
    row = over.set_index("policy").loc["spine"]
    assert row["final_accuracy_diff"] == pytest.approx(-0.05) and not row["final_accuracy_within_noise"]
    runs, over = sim.load_comparison(parents[0])
    assert over is None and len(runs) == 2  # one seed: nothing pooled
    assert "load_comparison" in sim.__all__


# ------------------------------------------------------------------------------------------------
# defect 2: timelines over 40 devices keep the stragglers that set the round


def test_timeline_keeps_the_slowest_devices_and_samples_every_type():
    from sim.views.style import MAX_TIMELINE_DEVICES, timeline_devices

    # SYNTHETIC round of 80 devices: 60 fast xaviers end by 35 s, 20 TX2s end between 150 and 204 s
    n_fast, n_slow = 60, 20
    rows = pd.DataFrame({"device_id": range(n_fast + n_slow),
                         "device_type": ["agx_xavier"] * n_fast + ["tx2"] * n_slow,
                         "t_end_s": [5 + 0.5 * i for i in range(n_fast)] + [150 + 2.7 * i for i in range(n_slow)]})
    chosen, shown = timeline_devices(rows.sample(frac=1.0, random_state=0))
    assert len(chosen) == MAX_TIMELINE_DEVICES
    assert chosen["t_end_s"].max() == rows["t_end_s"].max()  # the device that set the round is drawn
    assert set(rows.nlargest(MAX_TIMELINE_DEVICES // 2, "t_end_s")["device_id"]) <= set(chosen["device_id"])
    assert set(chosen["device_type"]) == {"agx_xavier", "tx2"} and chosen["t_end_s"].is_monotonic_increasing
    assert chosen["device_id"].is_unique and "20 slowest" in shown and "of 80 devices" in shown
    small, shown = timeline_devices(rows.head(10))
    assert len(small) == 10 and shown == "10 devices"
