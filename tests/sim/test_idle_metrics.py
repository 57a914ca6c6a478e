"""Idle metrics per round (sim/records.py): idle_fastest = 1 - T_min/T_max over the devices whose update
arrived, idle_mean (= mean_idle_fraction), straggler_gap = T_max/T_median; their run means in
summary.json; the run plot and the idle figure that draw them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fleet_helpers import base_scenario

from devices.plan import Plan
from sim.loader import validate
from sim.records import STATUS_CODE, Recorder, RoundBuffer, idle_summary, round_idle
from sim.runner import run_scenario
from sim.views.figures import Group, _idle_figure
from sim.views.plots import _round_times
from sim.views.results import RunData
from sim.views.style import styled

PLAN = Plan(prune_ratio=0.3, lora_rank=8, lora_layers=None, local_steps=20, batch_size=16)


def record(times_s: list[float], statuses: list[str], t_end_s: float, deadline_s: float = math.nan) -> dict:
    """The rounds row of one hand-built round starting at t = 10 s: device j reports at 10 + times_s[j]
    (NaN: never reported)."""
    n = len(times_s)
    rec = Recorder([f"d{i}" for i in range(n)], ["g"], ["tx2"], ["lan"], ["MAXN"])
    buf = RoundBuffer(0, 10.0, np.arange(n), [PLAN] * n)
    buf.t_report_s[:] = 10.0 + np.array(times_s, dtype=float)
    buf.status[:] = [STATUS_CODE[s] for s in statuses]
    zeros, ints = np.zeros(n), np.zeros(n, dtype=np.int64)
    return rec.add_round(buf, group=ints, slots=ints, placement=ints, load=zeros, flops=zeros, memory=zeros,
                         capacity=zeros, t_end_s=t_end_s, deadline_s=deadline_s)


def test_three_devices_with_known_times_give_the_exact_metrics():
    row = record([4.0, 6.0, 8.0], ["ok", "ok", "ok"], t_end_s=18.0)
    assert row["idle_fastest"] == 0.5  # 1 - 4/8
    assert row["idle_mean"] == 0.25  # (4/8 + 2/8 + 0/8) / 3
    assert row["straggler_gap"] == 8.0 / 6.0  # T_max / T_median
    assert row["idle_mean"] == row["mean_idle_fraction"]
    assert row["max_idle_fraction"] == row["idle_fastest"]  # the round ended at its last ok report
    keys = list(row)
    assert keys.index("idle_fastest") == keys.index("max_idle_fraction") + 1  # added after the existing ones


def test_a_deadline_cut_and_an_oom_report_separate_idle_fastest_from_max_idle_fraction():
    # ok at 4 s and 8 s, an OOM report at 1 s, one device late at the 10 s deadline
    row = record([4.0, 8.0, 1.0, math.nan], ["ok", "ok", "oom", "late"], t_end_s=20.0, deadline_s=10.0)
    assert row["idle_fastest"] == 0.5  # ok devices only: 1 - 4/8
    assert row["straggler_gap"] == 8.0 / 6.0
    assert row["idle_mean"] == pytest.approx((0.6 + 0.2 + 0.9) / 3, rel=1e-15)  # ok and oom, over the 10 s round
    assert row["max_idle_fraction"] == pytest.approx(0.9)  # the OOM report, against the round's end


def test_one_reporting_device_and_none():
    one = round_idle(np.array([5.0]), 0.0)
    assert one == {"idle_fastest": 0.0, "idle_mean": 0.0, "straggler_gap": 1.0}
    none = record([math.nan, math.nan], ["dropped", "crashed"], t_end_s=15.0)
    assert math.isnan(none["idle_fastest"]) and math.isnan(none["straggler_gap"]) and math.isnan(none["idle_mean"])


def test_summary_means_over_the_rounds_that_define_each_metric():
    rounds = pd.DataFrame({"idle_fastest": [0.5, math.nan, 0.3], "idle_mean": [0.2, math.nan, 0.1],
                           "straggler_gap": [1.5, math.nan, 1.1]})
    s = idle_summary(rounds)
    assert s == {"mean_idle_fastest": pytest.approx(0.4), "mean_idle_mean": pytest.approx(0.15),
                 "mean_straggler_gap": pytest.approx(1.3)}
    assert idle_summary(pd.DataFrame({"idle_fastest": [math.nan]})) == {
        "mean_idle_fastest": None, "mean_idle_mean": None, "mean_straggler_gap": None}  # absent or all NaN


def small_run(tmp_path, **over):
    d = base_scenario(name="idle")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 3, "placement": "lan"},
                            {"type": "agx_xavier", "count": 2, "placement": "lan", "power_modes": ["MAXN"]}]
    d["training"] = {"rounds": 3, "local_steps": 5}
    d.update(over)
    (tmp_path / "run").mkdir()
    return run_scenario(validate(d), run_dir=tmp_path / "run", progress=False)


def test_a_run_writes_the_columns_and_summary_keys_from_its_device_times(tmp_path):
    res = small_run(tmp_path)
    rounds = pd.read_parquet(res.run_dir / "rounds.parquet")
    dev = pd.read_parquet(res.run_dir / "device_rounds.parquet")
    ok = dev[dev["status"] == "ok"]
    t = (ok["t_report_s"] - ok["t_round_start_s"]).groupby(ok["round"])
    expected_fastest = (1 - t.min() / t.max()).to_numpy()
    expected_gap = (t.max() / t.median()).to_numpy()
    np.testing.assert_allclose(rounds["idle_fastest"], expected_fastest, rtol=1e-12)
    np.testing.assert_allclose(rounds["straggler_gap"], expected_gap, rtol=1e-12)
    assert (rounds["idle_fastest"] > 0.1).all()  # a TX2 beside an AGX: the AGX waits
    assert rounds["idle_mean"].equals(rounds["mean_idle_fraction"])
    np.testing.assert_allclose(rounds["idle_fastest"], rounds["max_idle_fraction"], rtol=0, atol=1e-15)
    s = json.loads((res.run_dir / "summary.json").read_text())
    assert s["mean_idle_fastest"] == pytest.approx(rounds["idle_fastest"].mean(), rel=1e-15)
    assert s["mean_straggler_gap"] == pytest.approx(rounds["straggler_gap"].mean(), rel=1e-15)
    assert s["mean_idle_mean"] == s["mean_idle_fraction"]
    assert s["mean_idle_fastest"] > s["mean_idle_mean"]


def test_the_run_plot_draws_both_idle_lines_with_their_names():
    rounds = pd.DataFrame({"round": [0, 1], "duration_s": [10.0, 12.0], "idle_fastest": [0.3, 0.4],
                           "mean_idle_fraction": [0.1, 0.15]})
    with styled() as plt:
        fig = _round_times(plt, rounds)
        lines = {ln.get_label(): ln.get_ydata() for ln in fig.axes[1].get_lines()}
        plt.close(fig)
    assert list(lines) == ["fastest device idle (1 - T_min/T_max)", "mean idle over reporting devices"]
    np.testing.assert_allclose(lines["fastest device idle (1 - T_min/T_max)"], [30.0, 40.0])
    np.testing.assert_allclose(lines["mean idle over reporting devices"], [10.0, 15.0])
    with styled() as plt:  # a run written before idle_fastest existed: the mean only
        fig = _round_times(plt, rounds.drop(columns="idle_fastest"))
        assert [ln.get_label() for ln in fig.axes[1].get_lines()] == ["mean idle over reporting devices"]
        plt.close(fig)


def test_the_idle_figure_bars_are_the_seed_means_of_each_metric(tmp_path):
    runs = []
    for seed, (fastest, mean) in enumerate([(0.30, 0.10), (0.34, 0.14)]):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        pd.DataFrame({"idle_fastest": [fastest, fastest], "idle_mean": [mean, mean],
                      "straggler_gap": [1.2, 1.2]}).to_parquet(d / "rounds.parquet")
        runs.append(RunData(d, "fedapt", seed))
    figs = {}
    with styled() as plt:
        _idle_figure(plt, lambda fig, stem: figs.update({stem: fig}), [Group("fedapt", "fedapt", {}, runs)])
        heights = [p.get_height() for p in figs["idle"].axes[0].patches]
        labels = [t.get_text() for t in figs["idle"].legends[0].get_texts()]
        plt.close(figs["idle"])
    assert heights == pytest.approx([32.0, 12.0])  # fastest device, then the mean
    assert labels == ["fastest device: 1 - T_min/T_max", "mean over reporting devices"]
