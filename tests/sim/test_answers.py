"""Answers, not numbers: no speed-up is claimed at the majority-class rate, and every single-seed
accuracy carries its binomial standard error (issue 25)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
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


# ------------------------------------------------------------------------------------------------
# the resolved scenario records every strategy default: RUN/scenario.yaml reproduces the run


def test_a_runs_scenario_yaml_reruns_to_the_same_digest_and_files(tmp_path):
    from sim.loader import load_scenario, resolved_params, scenario_digest

    d = base_scenario(name="again")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "placement": "lan"},
                            {"type": "agx_xavier", "count": 1, "placement": "lan", "power_modes": ["MAXN"]}]
    d["training"] = {"rounds": 3, "local_steps": 5}
    d["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.3}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    first = fedfleet("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "a"), "-q")
    assert first.returncode == 0, first.stderr
    run_a = Path(first.stdout.splitlines()[0])
    saved = yaml.safe_load((run_a / "scenario.yaml").read_text())
    full = resolved_params("fedspine", {"prune_target": 0.3})
    assert saved["algorithm"]["params"] == {"prune_target": 0.3}
    assert saved["algorithm"]["defaults"] == {k: v for k, v in full.items() if k != "prune_target"}
    assert {"discount", "exploration"} <= set(saved["algorithm"]["defaults"])  # the bandit's own defaults
    again = fedfleet("run", str(run_a / "scenario.yaml"), "--out", str(tmp_path / "b"), "-q")
    assert again.returncode == 0, again.stderr
    run_b = Path(again.stdout.splitlines()[0])
    assert run_b.name == run_a.name  # same digest, same run id
    for f in ("rounds.parquet", "device_rounds.parquet"):
        assert (run_a / f).read_bytes() == (run_b / f).read_bytes()
    assert yaml.safe_load((run_b / "scenario.yaml").read_text())["_meta"]["digest"] == saved["_meta"]["digest"]
    # a recorded default that differs from the strategy's default acts as a param (a new digest)
    saved.pop("_meta")
    saved["algorithm"]["defaults"]["discount"] = 0.5
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(saved))
    sc, _ = load_scenario(tmp_path / "edited.yaml")
    assert sc.algorithm.params == {"prune_target": 0.3, "discount": 0.5} and sc.algorithm.defaults == {}
    assert scenario_digest(sc) != saved_digest(run_a)
    saved["algorithm"]["params"]["discount"] = 0.9
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(saved))
    r = fedfleet("run", str(tmp_path / "both.yaml"), "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "algorithm.defaults.discount: also set in algorithm.params" in r.stderr


def saved_digest(run_dir: Path) -> str:
    return yaml.safe_load((run_dir / "scenario.yaml").read_text())["_meta"]["digest"]


def test_digests_of_scenarios_without_defaults_are_unchanged():
    """The recorded defaults never enter the digest: the digest of a packaged scenario is the sha256 of
    its resolved form without output and without the defaults blocks (as before they existed)."""
    import hashlib

    from sim.loader import load_scenario, resolved_dict, scenario_digest

    sc, _ = load_scenario("scenarios/quickstart.yaml")
    d = resolved_dict(sc)
    assert d["algorithm"]["defaults"]["aggregator"] == "svd"
    d.pop("output")
    del d["algorithm"]["defaults"]
    d["learning"]["compute_device"] = d["learning"].pop("device")  # its name before issue 21 (RENAMED_KEYS)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
    assert scenario_digest(sc) == hashlib.sha256(blob.encode()).hexdigest()
    edited = yaml.safe_load(Path("scenarios/quickstart.yaml").read_text())
    edited["algorithm"]["defaults"] = d["algorithm"].get("defaults", {}) or resolved_dict(sc)["algorithm"]["defaults"]
    assert edited["algorithm"]["defaults"]  # the recorded defaults, written back into the scenario...
    sc2 = validate(edited, "<edited>", Path("scenarios").resolve())
    assert scenario_digest(sc2) == scenario_digest(sc)  # ...leave its digest (and run id) as it was


# ------------------------------------------------------------------------------------------------
# the report's findings: computed from the runs


def hand_device_rounds() -> pd.DataFrame:
    """SYNTHETIC device_rounds of 5 rounds x 3 devices (one tx2, two agx_xavier): the tx2 reports last in
    rounds 0-3; in round 4 it is late and agx a1 reports last. Idle fractions and plans are chosen by hand."""
    rows = []
    for r in range(5):
        for dev, typ, t_rep, idle, status, p, rank in [
                ("t0", "tx2", 100.0 if r < 4 else 300.0, 0.0 if r < 4 else math.nan, "ok" if r < 4 else "late",
                 0.1 * r, 8),
                ("a0", "agx_xavier", 20.0, 0.8, "ok", 0.5, 4 if r == 4 else 16),
                ("a1", "agx_xavier", 30.0 if r < 4 else 60.0, 0.7 if r < 4 else 0.0, "ok", 0.3 if r == 4 else 0.5, 16)]:
            rows.append({"round": r, "device_id": dev, "device_type": typ, "status": status, "t_report_s": t_rep,
                         "idle_fraction": idle, "prune_ratio": p, "lora_rank": rank})
    return pd.DataFrame(rows)


def test_findings_from_device_rounds():
    from sim.views.findings import choices_by_type, idle_by_type, round_setters

    dev = hand_device_rounds()
    assert list(round_setters(dev)) == ["tx2"] * 4 + ["agx_xavier"]  # the late tx2 does not set round 4
    idle = idle_by_type(dev)
    assert idle["tx2"] == 0.0  # its late round has no idle
    assert idle["agx_xavier"] == pytest.approx((0.8 * 5 + 0.7 * 4 + 0.0) / 10)
    ch = choices_by_type(dev)  # last 20% of 5 rounds = round 4 only
    assert ch["tx2"].prune_ratio == pytest.approx(0.4) and ch["tx2"].rounds == (4, 4)
    # agx in round 4: ratios 0.5 and 0.3 (a tie: the smaller is the mode), ranks 4 and 16 (tie: 4)
    assert (ch["agx_xavier"].prune_ratio, ch["agx_xavier"].prune_share) == (0.3, 0.5)
    assert (ch["agx_xavier"].lora_rank, ch["agx_xavier"].rank_share) == (4, 0.5)


def ttt_table(times: dict[str, list[float]], target: float | None = 0.6) -> tuple[pd.DataFrame, list, list]:
    rows, groups, seeds = [], [], []
    for g, ts in times.items():
        for s, t in enumerate(ts):
            rows.append({"policy": f"{g} seed {s}", "time_to_target_s": t})
            groups.append(g)
            seeds.append(s)
    df = pd.DataFrame(rows)
    df.attrs = {"target_accuracy": target, "target_source": "--target-acc" if target else "no meaningful target: x"}
    return df, groups, seeds


def test_fastest_to_target_says_by_how_much_and_whether_it_is_noise():
    from sim.views.findings import fastest_to_target

    df, g, s = ttt_table({"a": [100.0], "b": [150.0], "c": [math.nan]})
    f = fastest_to_target(df, g, s)
    assert (f.policy, f.runner_up, f.ratio, f.margin_s) == ("a", "b", 1.5, 50.0)
    assert "one seed: no interval" in f.sentence and "c never reached it" in f.sentence
    # three seeds, b slower by 40, 50, 60 s: a real gap; d slower by -10, +20, +5 s: within noise
    df, g, s = ttt_table({"a": [100.0, 110.0, 120.0], "b": [140.0, 160.0, 180.0]})
    f = fastest_to_target(df, g, s)
    half = 4.303 * 10.0 / math.sqrt(3)
    assert f.margin_s == pytest.approx(50.0) and (f.low_s, f.high_s) == pytest.approx((50 - half, 50 + half))
    assert f.within_noise is False and "over 3 paired seeds" in f.sentence and "within noise" not in f.sentence
    df, g, s = ttt_table({"a": [100.0, 110.0, 120.0], "d": [90.0, 130.0, 125.0]})
    f = fastest_to_target(df, g, s)
    assert f.within_noise is True and "within noise" in f.sentence
    df, g, s = ttt_table({"a": [100.0]}, target=None)
    assert fastest_to_target(df, g, s).sentence.startswith("No speed-up is claimed: no meaningful target")


def findings_of(page: str) -> str:
    import html as html_
    import re

    part = page[page.index('<section id="findings">'):page.index("</section>")]
    return html_.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", part)))


def test_report_findings_at_the_majority_rate_and_with_a_target(majority_comparison, tmp_path):
    text = findings_of(write_report(majority_comparison, [], tmp_path / "r.html").read_text())
    assert "Fastest to target. No speed-up is claimed: no meaningful target" in text
    assert "majority-class rate 55.0%" in text and "spine: 55.0% ± 3.5" in text
    assert "evaluation examples per reading 200" in text
    text = findings_of(write_report(majority_comparison, [], tmp_path / "t.html", target_acc=0.545).read_text())
    assert "Target accuracy 54.5% (--target-acc): spine is fastest" in text and "one seed: no interval" in text
    # the strategy parameters, given and default
    assert "fedspine" in text and "discount=" in text


def test_report_who_sets_the_round_matches_the_device_rounds(majority_comparison, tmp_path):
    text = findings_of(write_report(majority_comparison, [], tmp_path / "r.html").read_text())
    for label in AT_MAJORITY:
        dev = pd.read_parquet(majority_comparison / label / "device_rounds.parquet")
        counts: dict[str, int] = {}
        for _, rows in dev.groupby("round"):  # independent: the last report of each round, by hand
            rep = rows[rows["status"].astype(str).isin(["ok", "oom"])]
            last = rep.sort_values("t_report_s", kind="stable").iloc[-1]
            assert rep.loc[rep["t_report_s"] == last["t_report_s"], "device_type"].nunique() == 1  # one type
            counts[str(last["device_type"])] = counts.get(str(last["device_type"]), 0) + 1
        n = dev["round"].nunique()
        for typ, k in counts.items():
            assert f"{typ} in {k} of {n} rounds" in text, (label, typ, k)


# ------------------------------------------------------------------------------------------------
# defect 9 (rest): specific hints, and the quickstart says what its dropout probability is


def test_set_algorithm_name_with_the_old_params_hints_at_replacing_the_block():
    r = fedfleet("validate", "scenarios/quickstart.yaml", "--set", "algorithm.name=fedspine")
    assert r.returncode == 2 and "algorithm.params: unknown key 'rank'" in r.stderr
    assert "--set 'algorithm={name: fedspine}'" in r.stderr and "Traceback" not in r.stderr
    r = fedfleet("validate", "scenarios/quickstart.yaml", "--set", "algorithm={name: fedspine}")
    assert r.returncode == 0, r.stderr  # the hint works
    r = fedfleet("validate", "scenarios/quickstart.yaml", "--set", "algorithm.params.rank=x")
    assert r.returncode == 2 and "hint" not in r.stderr  # no hint when the name was not changed


def test_run_on_a_sweep_file_says_use_fedfleet_sweep(tmp_path):
    r = fedfleet("run", "scenarios/sweeps/sucb-sensitivity.yaml", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "this is a sweep file" in r.stderr and "use fedfleet sweep scenarios/sweeps/sucb-sensitivity.yaml" in r.stderr
    assert not any(tmp_path.iterdir())


def test_quickstart_comment_matches_its_dropout_probability():
    text = Path("scenarios/quickstart.yaml").read_text()
    prob = yaml.safe_load(text)["dynamics"]["dropout"]["prob"]
    header = " ".join(ln.lstrip("# ") for ln in text.splitlines() if ln.startswith("#"))
    assert f"probability {prob}" in header and f"one round in {round(1 / prob)}" in header
    assert "one board in five" not in header


# ------------------------------------------------------------------------------------------------
# defect 5: log lines go through rich's handler on the bars' console; plot and report show progress


def test_log_lines_print_above_a_live_bar_not_into_it(monkeypatch):
    import io
    import logging

    from rich.console import Console
    from rich.logging import RichHandler

    import sim.progress as progress

    buf = io.StringIO()
    monkeypatch.setattr(progress, "CONSOLE", Console(file=buf, force_terminal=True, width=100))
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        other = logging.StreamHandler(io.StringIO())
        root.handlers[:] = [other]
        progress.setup_logging(logging.INFO)  # a root logger with another program's handler is left alone
        assert root.handlers == [other]
        root.handlers[:] = []
        progress.setup_logging(logging.INFO)
        mine = [h for h in root.handlers if getattr(h, "_fedfleet", False)]
        assert len(mine) == 1 and isinstance(mine[0], RichHandler) and mine[0].console is progress.CONSOLE
        progress.setup_logging(logging.INFO)  # a second call replaces, never stacks
        assert len([h for h in root.handlers if getattr(h, "_fedfleet", False)]) == 1
        with progress.RoundProgress(3) as bar:
            bar.update({"t_end_s": 10.0})
            logging.getLogger("sim.sweep_run").info("cell 3 finished")
            bar.update({"t_end_s": 20.0})
        import re

        out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())  # colours and cursor moves
        line = next(ln for ln in re.split(r"[\r\n]", out) if "cell 3 finished" in ln)
        assert "rounds" not in line and "━" not in line  # the record is its own line, not inside the bar
        assert "sim.sweep_run: cell 3 finished" in line
        monkeypatch.setattr(progress, "CONSOLE", Console(file=io.StringIO(), force_terminal=False))
        progress.setup_logging(logging.WARNING)  # no terminal: plain lines, as before
        mine = [h for h in root.handlers if getattr(h, "_fedfleet", False)]
        assert type(mine[0]) is logging.StreamHandler and mine[0].formatter._fmt.startswith("%(levelname)s")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_plot_runs_reports_each_figure_to_a_progress_callback(majority_comparison, tmp_path):
    from sim.progress import FigureProgress

    names: list[str] = []
    written = plot_runs(collect(majority_comparison), tmp_path / "figs", reference="spine", formats=("png",),
                        progress=names.append)
    assert "heatmap spine" in names and "timeline lora" in names and "accuracy" in names
    assert len(names) == len(set(names)) and len(written) >= len(names) - 1  # one call per figure function
    bar = FigureProgress(enabled=False)
    with bar:
        for n in names:
            bar(n)
    assert bar.done == len(names)


# ------------------------------------------------------------------------------------------------
# defect 6: separate runs are labelled by their scenario (and pooled over seeds), not by run id


def hand_made_run(d: Path, scenario: str, algorithm: str, seed: int, acc: float) -> Path:
    d.mkdir(parents=True)
    pd.DataFrame({"round": [0, 1], "t_end_s": [50.0, 100.0 + seed], "accuracy": [0.6, acc]}).to_parquet(
        d / "rounds.parquet")
    (d / "summary.json").write_text(json.dumps({
        "scenario": scenario, "algorithm": algorithm, "seed": seed, "final_accuracy": acc, "sim_time_s": 100.0 + seed,
        "mean_idle_fastest": 0.3, "mean_idle_fraction": 0.1, "bytes_up_total": 10**6, "bytes_down_total": 0,
        "rounds_completed": 2, "host": {"host_time_s": 1.0}}))
    return d


def test_compare_labels_separate_runs_by_scenario_and_pools_their_seeds(tmp_path):
    from sim.views.compare import compare_paths, labelled_runs

    runs = [hand_made_run(tmp_path / "quick" / f"seed{s}-0a1b2c3d", "quick", "fedspine", s, 0.7 + 0.01 * s)
            for s in (0, 1, 2)]
    other = hand_made_run(tmp_path / "big" / "seed0-ffff0000", "big", "fedlora", 0, 0.72)
    labels = [lab for _, lab in labelled_runs([*runs, other])]
    assert labels == ["quick fedspine seed 0", "quick fedspine seed 1", "quick fedspine seed 2", "big fedlora"]
    assert not any("0a1b2c3d" in lab for lab in labels)
    table, over = compare_paths([*runs, other], target_acc=0.65)
    assert over is not None and list(over["policy"]) == ["quick fedspine", "big fedlora"]
    assert list(over["final_accuracy_n"]) == [3, 1]
    r = fedfleet("compare", *map(str, runs), "--target-acc", "0.65")
    assert r.returncode == 0, r.stderr
    assert "quick fedspine" in r.stdout and "0a1b2c3d" not in r.stdout and "71.0 ± 1.0" in r.stdout


# ------------------------------------------------------------------------------------------------
# defect 8: heatmaps at 80 devices label type blocks, colour bars span their panel; the bytes title reads


def test_heatmap_device_axis_labels_type_blocks_above_thirty_devices():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.views.figures import MAX_DEVICE_LABELS, _device_axis

    types = ["agx_xavier"] * 10 + ["tx2"] * 30 + ["xavier_nx"] * 40
    ids = [f"{t}-{i:03d}" for i, t in enumerate(types)]
    fig, ax = plt.subplots()
    _device_axis(ax, ids, types, 12.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["agx_xavier\n(10)", "tx2\n(30)", "xavier_nx\n(40)"]
    assert list(ax.get_yticks()) == [4.5, 24.5, 59.5] and "80 devices" in ax.get_ylabel()
    fig2, ax2 = plt.subplots()
    _device_axis(ax2, ids[:MAX_DEVICE_LABELS], types[:MAX_DEVICE_LABELS], 6.0)
    assert len(ax2.get_yticklabels()) == MAX_DEVICE_LABELS  # a small fleet keeps every name
    plt.close("all")


def test_heatmap_colour_bars_span_their_panels_and_the_bytes_title_reads(majority_comparison, tmp_path, monkeypatch):
    import sim.views.figures as figures

    figs: dict = {}
    titles: list[tuple[str, str]] = []
    real_title = figures._title
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, stem, formats: figs.setdefault(stem, fig) and [])
    monkeypatch.setattr(figures, "_title", lambda t, main, note="", width_in=6.0: (
        titles.append((main, note)), real_title(t, main, note, width_in)))
    figures.plot_runs(collect(majority_comparison), tmp_path, reference="spine")
    fig = figs["heatmap_spine"]
    fig.canvas.draw()
    panels, bars = fig.axes[:2], fig.axes[2:]
    assert len(bars) == 2
    for ax, cb in zip(panels, bars):
        a, c = ax.get_position(), cb.get_position()
        assert abs(c.height - a.height) < 0.02 and c.x0 >= a.x1  # full height, right of its panel
    note = dict(titles)["Data communicated per run"]
    assert note == "one seed per group" and "of the total" not in note


# ------------------------------------------------------------------------------------------------
# defects 3 and 4: sweep figures drop single-valued keys, put the main effects on the axes, name keys
# in words, do not stretch a tiny difference over the colour map; 9 configurations get 9 shades


def synthetic_sweep(tmp_path) -> "SweepData":
    """SYNTHETIC sweep index: round.policy has the large effect (+10 points for deadline), local_steps a
    small one (+0.1 per step), discount none; round.k has one value; two seeds."""
    from sim.views.results import SweepData

    rows = []
    for pol in ["all", "deadline"]:
        for steps in [5, 10]:
            for disc in [0.9, 0.99]:
                for seed in [0, 1]:
                    rows.append({"policy": "fedspine", "round.policy": pol, "training.local_steps": steps,
                                 "algorithm.params.discount": disc, "round.k": 40, "seed": seed,
                                 "status": "finished", "final_accuracy": 0.70 + 0.10 * (pol == "deadline")
                                 + 0.001 * steps / 5, "sim_time_s": 100.0 + steps})
    spec = {"name": "fx", "matrix": {"round.k": [40], "algorithm.params.discount": [0.9, 0.99],
                                     "training.local_steps": [5, 10], "round.policy": ["all", "deadline"]}}
    return SweepData(tmp_path, spec, pd.DataFrame(rows))


def test_sweep_heatmap_axes_are_the_main_effects_in_words(tmp_path, monkeypatch):
    import sim.views.figures as figures

    sw = synthetic_sweep(tmp_path)
    assert figures.axis_keys(sw.index, ["algorithm.params.discount", "training.local_steps", "round.policy"],
                             "final_accuracy") == ["training.local_steps", "round.policy", "algorithm.params.discount"]
    figs: dict = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, stem, formats: figs.setdefault(stem, fig) and [])
    figures.plot_runs([], tmp_path / "figs", sweep=sw)
    fig = figs["sweep_final_accuracy"]
    ax = fig.axes[0]
    labels = {ax.get_ylabel(), ax.get_xlabel()}
    assert labels == {"local steps per round", "round policy"}  # round.k (one value) is no axis
    title = fig._suptitle.get_text()
    assert "discount (strategy parameter)" in title.replace("\n", " ") and "round.k" not in title
    assert all(len(line) <= max(40, 11 * fig.get_figwidth()) for line in title.splitlines())  # wrapped


def test_sweep_colour_scale_does_not_stretch_a_tiny_difference():
    from sim.views.figures import colour_limits

    lo, hi = colour_limits(np.array([70.1, 70.4]), 100.0)  # 0.3 points: shown on a 2-point scale
    assert (lo, hi) == pytest.approx((69.25, 71.25))
    assert colour_limits(np.array([60.0, 75.0]), 100.0) == (60.0, 75.0)  # a real difference keeps its range
    lo, hi = colour_limits(np.array([1000.0, 1001.0]), 1.0)  # seconds: at least 2% of the mean
    assert hi - lo == pytest.approx(0.02 * 1000.5)


def test_nine_configurations_of_one_policy_get_nine_ordered_shades():
    import colorsys

    from matplotlib.colors import to_rgb

    from sim.views.figures import MAX_DETAIL_GROUPS, group_runs
    from sim.views.results import RunData

    values = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.999]
    runs = [RunData(Path(f"cell{i}"), "fedspine", 0, {"algorithm.params.discount": v}) for i, v in enumerate(values)]
    groups = group_runs(runs)
    colours = [g.color for g in groups]
    assert len(set(colours)) == 9  # no shade repeats
    light = [colorsys.rgb_to_hls(*to_rgb(c))[1] for c in colours]
    assert light == sorted(light)  # dark to light as the swept value grows
    assert MAX_DETAIL_GROUPS >= 9  # every configuration gets its heatmap and timeline


def test_legend_columns_fit_the_figure():
    from sim.views.figures import legend_columns

    long = [f"fedspine (discount={v}, exploration=2)" for v in range(9)]
    assert legend_columns(long, 8.0) == 2 and legend_columns(["a", "b"], 8.0) == 2
    assert legend_columns(long, 3.0) == 1


# ------------------------------------------------------------------------------------------------
# a CLI that guides; figures in the Python API


def test_strategies_name_lists_each_parameter_with_allowed_values():
    r = fedfleet("strategies", "fedspine")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("fedspine: ") and "    aggregator = 'svd'\n        allowed: one of svd, zero_pad, fedavg" in out
    assert "    prune_target = 0.3\n        allowed: a number in [0, 0.95]\n        meaning: target sparsity" in out
    assert "allowed: an integer in [1, inf] or null" in out and "hetlora" not in out
    r = fedfleet("strategies", "fedspin")
    assert r.returncode == 2 and "did you mean 'fedspine'?" in r.stderr


def test_schema_json_is_a_json_schema_that_validates_the_scenarios():
    r = fedfleet("schema", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["$schema"].endswith("2020-12/schema") and doc["additionalProperties"] is False
    assert {"fleet", "algorithm", "learning", "training"} <= set(doc["properties"])
    algo = doc["$defs"]["AlgorithmSpec"]["properties"]
    assert {"name", "params", "defaults"} <= set(algo) and "description" in algo["defaults"]
    r = fedfleet("schema", "--format", "jsn")
    assert r.returncode == 2 and "did you mean 'json'?" in r.stderr


def test_python_api_returns_matplotlib_figures(majority_comparison):
    from matplotlib.figure import Figure

    import sim

    before = {p.name for p in majority_comparison.rglob("*")}
    figs = sim.figures(majority_comparison, reference="spine", rounds=[1])
    assert {"accuracy_vs_time", "time_to_target", "heatmap_spine", "timeline_lora"} <= set(figs)
    assert all(isinstance(f, Figure) for f in figs.values())
    assert {p.name for p in majority_comparison.rglob("*")} == before  # nothing written
    assert "round 1" in figs["timeline_spine"].axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_typos_in_choices_and_keys_get_did_you_mean(tmp_path):
    r = fedfleet("validate", "scenarios/quickstart.yaml", "--set", "training.round=3")
    assert r.returncode == 2 and "unknown key 'round'" in r.stderr and "did you mean 'rounds'?" in r.stderr
    r = fedfleet("validate", "scenarios/quickstart.yaml", "--set", "round.policy=dedline")
    assert r.returncode == 2 and "(got 'dedline'); did you mean 'deadline'?" in r.stderr
    r = fedfleet("validate", "scenarios/quickstart.yaml", "--set", "round.policy=zzz")
    assert r.returncode == 2 and "did you mean" not in r.stderr  # nothing close: no guess
    r = fedfleet("run", "scenarios/compare-quick.yaml", "--backend", "rey", "--out", str(tmp_path))
    assert r.returncode == 2 and "allowed: local, ray; did you mean 'ray'?" in r.stderr
    d = tmp_path / "empty"
    d.mkdir()
    r = fedfleet("compare", str(d), "--format", "laytex")
    assert r.returncode == 2 and "did you mean 'latex'?" in r.stderr


def test_a_key_added_later_leaves_the_digest_of_scenarios_without_it():
    """training.eval_early (LATER_KEYS): unset, it is not in the resolved scenario, so every scenario that
    does not use it keeps the digest (and run id) it had before the key existed; set, it counts."""
    from sim.loader import load_scenario, resolved_dict, scenario_digest

    sc, _ = load_scenario("scenarios/quickstart.yaml")
    assert "eval_early" not in resolved_dict(sc)["training"]
    d = yaml.safe_load(Path("scenarios/quickstart.yaml").read_text())
    d.setdefault("training", {})["eval_early"] = {"until_round": 4, "every": 2}
    sc2 = validate(d, "<edited>", Path("scenarios").resolve())
    assert resolved_dict(sc2)["training"]["eval_early"] == {"until_round": 4, "every": 2}
    assert scenario_digest(sc2) != scenario_digest(sc)
