"""Run plots written by ``fedfleet run`` (PNG, matplotlib Agg). They read only the result files.

* ``round_times.png``: round duration and mean idle fraction over rounds;
* ``device_types.png``: per-step compute time and time to report per device type (boxes);
* ``timeline.png``: the last round as a Gantt chart (download, compute, upload, idle) for up to
  40 devices, sorted by report time;
* ``accuracy.png`` (real learning): test accuracy over simulated time, fleet mean, min-max band and
  the mean per device type (from ``evals.parquet``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PHASE_COLORS = {"download": "#4C72B0", "compute": "#DD8452", "upload": "#55A868", "idle": "#DDDDDD"}


def plot_run(run_dir: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    run_dir = Path(run_dir)
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    dev = pd.read_parquet(run_dir / "device_rounds.parquet")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3})

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(rounds["round"], rounds["duration_s"], marker="o", ms=3, label="round duration")
    ax.set_xlabel("round")
    ax.set_ylabel("round duration (s, simulated)")
    ax2 = ax.twinx()
    ax2.plot(rounds["round"], 100 * rounds["mean_idle_fraction"], color="#C44E52", ls="--", label="mean idle")
    ax2.set_ylabel("mean idle fraction (%)")
    ax2.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
    ax.set_title("Round time and idle time")
    written.append(_save(fig, out_dir / "round_times.png"))

    ok = dev[dev["status"] == "ok"].copy()
    if len(ok):
        ok["time_to_report_s"] = ok["t_report_s"] - ok["t_round_start_s"]
        types = sorted(ok["device_type"].astype(str).unique())
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, col, label in ((axes[0], "step_time_s", "compute time per step (s)"),
                               (axes[1], "time_to_report_s", "round start to report (s)")):
            data = [ok.loc[ok["device_type"].astype(str) == t, col].to_numpy() for t in types]
            ax.boxplot(data, tick_labels=types, showfliers=False)
            ax.set_ylabel(label)
            ax.set_xlabel("device type")
        fig.suptitle("Per device type (simulated)")
        written.append(_save(fig, out_dir / "device_types.png"))

        last = int(rounds["round"].iloc[-1])
        lr = dev[dev["round"] == last].sort_values("t_end_s").head(40)
        t0 = float(rounds["t_start_s"].iloc[-1])
        t1 = float(rounds["t_end_s"].iloc[-1])
        fig, ax = plt.subplots(figsize=(8, 0.22 * len(lr) + 1.2))
        for y, r in enumerate(lr.itertuples(index=False)):
            spans = [("download", r.t_download_start_s, r.t_download_end_s),
                     ("compute", r.t_compute_start_s, r.t_compute_end_s),
                     ("upload", r.t_upload_start_s, r.t_upload_end_s)]
            for name, a, b in spans:
                if pd.notna(a) and pd.notna(b):
                    ax.barh(y, b - a, left=a - t0, color=PHASE_COLORS[name], height=0.7)
                elif pd.notna(a):  # phase in progress when the device failed or was cut off
                    ax.barh(y, r.t_end_s - a, left=a - t0, color=PHASE_COLORS[name], height=0.7,
                            hatch="////", edgecolor="black", linewidth=0.0, alpha=0.6)
            if pd.notna(r.t_report_s):
                ax.barh(y, t1 - r.t_report_s, left=r.t_report_s - t0, color=PHASE_COLORS["idle"], height=0.7)
            elif str(r.status) == "dropped":
                ax.plot([r.t_end_s - t0], [y], marker="x", color="black", ms=5)
        ax.set_yticks(range(len(lr)))
        ax.set_yticklabels([str(d) if s == "ok" else f"{d} ({s})" for d, s in zip(lr["device_id"], lr["status"].astype(str))],
                           fontsize=6)
        ax.set_xlabel(f"time since round {last} start (s, simulated); hatched: unfinished phase, x: dropout")
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
        ax.legend(handles, list(PHASE_COLORS), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(f"Round {last} timeline")
        written.append(_save(fig, out_dir / "timeline.png"))
    if (run_dir / "evals.parquet").is_file():
        written.append(_accuracy_plot(plt, run_dir, rounds, out_dir))
    return written


def _accuracy_plot(plt, run_dir: Path, rounds: pd.DataFrame, out_dir: Path) -> Path:
    """Test accuracy over simulated time: fleet mean, min-max band, and the mean per device type."""
    ev = pd.read_parquet(run_dir / "evals.parquet")
    r = rounds.dropna(subset=["accuracy"])
    t_h = r["t_end_s"] / 3600.0
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.fill_between(t_h, 100 * r["accuracy_min"], 100 * r["accuracy_max"], alpha=0.2, label="min-max over devices")
    ax.plot(t_h, 100 * r["accuracy"], marker="o", ms=3, color="black", label="fleet mean")
    ends = rounds.set_index("round")["t_end_s"] / 3600.0
    for typ, g in ev.groupby("device_type", observed=True):
        m = g.groupby("round")["accuracy"].mean()
        ax.plot(ends.loc[m.index], 100 * m.to_numpy(), ls="--", lw=1, label=str(typ))
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out_dir / "accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
