"""Run plots written by ``fedfleet run`` into ``<run dir>/plots/`` (PNG). They read only the result files
and use the one style of :mod:`sim.views.style` (the figures over runs use it too).

* ``round_times.png``: round duration, the fastest reporting device's idle fraction
  (``idle_fastest`` = 1 - T_min / T_max) and the mean idle fraction over reporting devices
  (``idle_mean``) over rounds (a run written before ``idle_fastest`` existed: the mean only);
* ``device_types.png``: per-step compute time and time to report per device type (boxes);
* ``timeline.png``: the last round as a Gantt chart (download, compute, upload, idle) for up to
  40 devices, sorted by report time;
* ``accuracy.png`` (real learning): test accuracy over simulated time, fleet mean, min-max band and
  the mean per device type (from ``evals.parquet``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sim.views.style import gantt, phase_legend, save_figure, styled, timeline_devices


def plot_run(run_dir: Path) -> list[Path]:
    """Write the run plots the run's files support (see the module docstring); returns their paths."""
    run_dir = Path(run_dir)
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    dev = pd.read_parquet(run_dir / "device_rounds.parquet")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    with styled() as plt:
        written += save_figure(_round_times(plt, rounds), out_dir, "round_times")
        ok = dev[dev["status"] == "ok"]
        if len(ok):
            written += save_figure(_device_types(plt, ok), out_dir, "device_types")
            written += save_figure(_timeline(plt, rounds, dev), out_dir, "timeline")
        if (run_dir / "evals.parquet").is_file():
            written += save_figure(_accuracy(plt, pd.read_parquet(run_dir / "evals.parquet"), rounds), out_dir,
                                   "accuracy")
    return written


def _round_times(plt: Any, rounds: pd.DataFrame) -> Any:
    """Round duration (left axis); fastest-device and mean idle fraction (right axis) per round."""
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    ax.plot(rounds["round"], rounds["duration_s"], marker="o", ms=3, label="round duration")
    ax.set_xlabel("round")
    ax.set_ylabel("round duration (s, simulated)")
    ax2 = ax.twinx()
    if "idle_fastest" in rounds:
        ax2.plot(rounds["round"], 100 * rounds["idle_fastest"], color="#8172B3", ls=":",
                 label="fastest device idle (1 - T_min/T_max)")
    ax2.plot(rounds["round"], 100 * rounds["mean_idle_fraction"], color="#C44E52", ls="--",
             label="mean idle over reporting devices")
    ax2.set_ylabel("idle fraction of the round (%)")
    ax2.set_ylim(0, 100)
    ax2.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, fontsize=8, loc="outside lower center", ncol=3, frameon=False)
    ax.set_title("Round time and idle time")
    return fig


def _device_types(plt: Any, ok: pd.DataFrame) -> Any:
    """Boxes per device type of the compute time per step and of the time from round start to report."""
    ok = ok.assign(time_to_report_s=ok["t_report_s"] - ok["t_round_start_s"])
    types = sorted(ok["device_type"].astype(str).unique())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for ax, col, label in ((axes[0], "step_time_s", "compute time per step (s)"),
                           (axes[1], "time_to_report_s", "round start to report (s)")):
        data = [ok.loc[ok["device_type"].astype(str) == t, col].to_numpy() for t in types]
        ax.boxplot(data, tick_labels=types, showfliers=False)
        ax.set_ylabel(label)
        ax.set_xlabel("device type")
    fig.suptitle("Per device type (simulated)")
    return fig


def _timeline(plt: Any, rounds: pd.DataFrame, dev: pd.DataFrame) -> Any:
    """The last round as a Gantt chart (:func:`~sim.views.style.gantt`), devices by end time (above
    :data:`~sim.views.style.MAX_TIMELINE_DEVICES`, the slowest and a per-type sample:
    :func:`~sim.views.style.timeline_devices`)."""
    last = int(rounds["round"].iloc[-1])
    lr, shown = timeline_devices(dev[dev["round"] == last])
    t0, t1 = float(rounds["t_start_s"].iloc[-1]), float(rounds["t_end_s"].iloc[-1])
    fig, ax = plt.subplots(figsize=(8, 0.22 * len(lr) + 1.2), layout="constrained")
    gantt(ax, lr, t0, t1)
    ax.set_xlabel(f"time since round {last} start (s, simulated)")
    handles, labels = phase_legend(plt)
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Round {last} timeline ({shown})")
    return fig


def _accuracy(plt: Any, ev: pd.DataFrame, rounds: pd.DataFrame) -> Any:
    """Test accuracy over simulated time: fleet mean, min-max band, and the mean per device type."""
    r = rounds.dropna(subset=["accuracy"])
    t_h = r["t_end_s"] / 3600.0
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    ax.fill_between(t_h, 100 * r["accuracy_min"], 100 * r["accuracy_max"], alpha=0.2, label="min-max over devices")
    ax.plot(t_h, 100 * r["accuracy"], marker="o", ms=3, color="black", label="fleet mean")
    ends = rounds.set_index("round")["t_end_s"] / 3600.0
    for typ, g in ev.groupby("device_type", observed=True):
        m = g.groupby("round")["accuracy"].mean()
        ax.plot(ends.loc[m.index], 100 * m.to_numpy(), ls="--", lw=1, label=str(typ))
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, loc="lower right")
    return fig
