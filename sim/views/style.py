"""The one look of every fedfleet figure: matplotlib settings, phase colours, the atomic writer, the Gantt chart.

Both the plots a run writes (:mod:`sim.views.plots`) and the figures over runs
(:mod:`sim.views.figures`) draw inside :func:`styled` (the :data:`RC` settings: font sizes, light grid,
TrueType fonts in PDF so text stays text, :data:`DPI`), write through :func:`save_figure`, and draw a
round's timeline with :func:`gantt` in the :data:`PHASE_COLORS`. matplotlib is imported only when a
figure is drawn (``import sim.views.figures`` stays light) and always with the non-interactive Agg
backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DPI = 150
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
      "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3,
      "pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": DPI}
MAX_TIMELINE_DEVICES = 40  # devices drawn in one round's Gantt chart
PHASE_COLORS = {"download": "#4C72B0", "compute": "#DD8452", "upload": "#55A868", "idle": "#DDDDDD"}


def timeline_devices(round_rows: pd.DataFrame, n: int = MAX_TIMELINE_DEVICES) -> tuple[pd.DataFrame, str]:
    """The devices of one round to draw in a Gantt chart, by end time, and a description of the choice.

    Up to ``n`` devices: all of them. Above: the ``n // 2`` slowest by end time (the stragglers that set
    the round's length are never cut) plus a per-type sample of the others, each type's share
    proportional to its count (at least one device per type while room is left), picked evenly
    spaced along that type's end times so fast and middling devices both show."""
    rows = round_rows.sort_values(["t_end_s", "device_id"] if "device_id" in round_rows else "t_end_s")
    if len(rows) <= n:
        return rows, f"{len(rows)} devices"
    k = n // 2
    slow, rest = rows.tail(k), rows.iloc[:-k]
    room = n - k
    by_type = {t: part for t, part in rest.groupby("device_type", observed=True, sort=True)} \
        if "device_type" in rest else {"all": rest}
    quota = {t: max(1, round(room * len(part) / len(rest))) for t, part in by_type.items()}
    while sum(quota.values()) > room:  # rounding or the one-per-type floor overshot: trim the largest
        biggest = max(quota, key=lambda t: (quota[t], str(t)))
        quota[biggest] -= 1
    picks = [part.iloc[np.unique(np.linspace(0, len(part) - 1, quota[t]).round().astype(int))]
             for t, part in by_type.items() if quota[t] > 0]
    chosen = pd.concat([slow, *picks]).sort_values("t_end_s", kind="stable")
    return chosen, f"the {len(slow)} slowest + {len(chosen) - len(slow)} sampled per type, of {len(rows)} devices"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib  # noqa: PLC0415 (keeps ``import sim`` light)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


@contextlib.contextmanager
def styled() -> Iterator[Any]:
    """``pyplot`` with the :data:`RC` settings in force for the ``with`` block (restored after)."""
    plt = pyplot()
    with plt.rc_context(RC):
        yield plt


def save_figure(fig: Any, out_dir: Path, stem: str, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``out_dir/<stem>.<fmt>`` for every format (each to a temporary name, then
    renamed, so a reader never sees half a file), close it, and return the written paths."""
    plt = pyplot()
    written = []
    try:
        for fmt in formats:
            path, tmp = out_dir / f"{stem}.{fmt}", out_dir / f".{stem}.tmp.{fmt}"
            try:
                fig.savefig(tmp, format=fmt, dpi=DPI)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(path)
    finally:
        plt.close(fig)
    log.info("figure %s written", out_dir / stem)
    return written


def gantt(ax: Any, lr: pd.DataFrame, t0: float, t1: float) -> None:
    """One round as a Gantt chart: a row per device of ``lr`` (its device-rounds, in row order) with
    its download, compute and upload spans and its idle time from report to the round end ``t1``,
    x = seconds since the round start ``t0``; a phase still running when the device failed or was cut
    off is hatched, a dropout is an x at the time it was lost."""
    y = np.arange(len(lr))
    end = lr["t_end_s"].to_numpy(float)
    for name in ("download", "compute", "upload"):
        a, b = lr[f"t_{name}_start_s"].to_numpy(float), lr[f"t_{name}_end_s"].to_numpy(float)
        done, cut = np.isfinite(a) & np.isfinite(b), np.isfinite(a) & ~np.isfinite(b)
        ax.barh(y[done], (b - a)[done], left=(a - t0)[done], color=PHASE_COLORS[name], height=0.7)
        if cut.any():
            ax.barh(y[cut], (end - a)[cut], left=(a - t0)[cut], color=PHASE_COLORS[name], height=0.7, hatch="////",
                    edgecolor="black", linewidth=0.0, alpha=0.6)
    rep = lr["t_report_s"].to_numpy(float)
    ok = np.isfinite(rep)
    ax.barh(y[ok], (t1 - rep)[ok], left=(rep - t0)[ok], color=PHASE_COLORS["idle"], height=0.7)
    drop = ~ok & (lr["status"].astype(str) == "dropped").to_numpy()
    if drop.any():
        ax.plot(end[drop] - t0, y[drop], ls="none", marker="x", color="black", ms=5)
    ax.set_yticks(range(len(lr)))
    ax.set_yticklabels([str(d) if s == "ok" else f"{d} ({s})"
                        for d, s in zip(lr["device_id"].astype(str), lr["status"].astype(str))],
                       fontsize=7 if len(lr) <= 20 else 6)
    ax.set_ylim(len(lr) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)


def phase_legend(plt: Any) -> tuple[list[Any], list[str]]:
    """Legend handles and labels of a Gantt chart: the phases, an unfinished phase, a dropout."""
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch="////", lw=0.5))
    handles.append(plt.Line2D([], [], marker="x", color="black", ls="none"))
    return handles, [*PHASE_COLORS, "unfinished phase", "dropout"]
