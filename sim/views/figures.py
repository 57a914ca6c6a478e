"""Paper-style figures over a set of runs (a comparison, several seeds, a sweep): matplotlib, Agg.

:func:`plot_runs` writes every figure the data supports into one directory, each as PNG (150 dpi)
and PDF (in the one style of :mod:`sim.views.style`), and returns the written paths. Runs are put in **groups**: the same policy label and the
same swept ``values``. When every policy has one configuration a group is named by its policy label,
else ``"policy (key=value, ...)"`` (the shortest unambiguous ending of each dotted key); at most
:data:`MAX_GROUPS` groups are drawn (the first ones, in the order of the runs; a warning names the rest).
Within a group the seeds are aggregated as **mean over seeds, band or error bar = ±1 standard
deviation over seeds** (sample std; none with one seed). Every group keeps one colour and marker in
every figure (:func:`policy_style` of its policy; several configurations of one policy get shades
and line styles of that colour; an unknown label whose hashed colour is taken in this set moves to
the next free palette colour). Simulated time is shown in seconds, or hours past 3 h. A figure whose
data breaks it is logged (with the traceback) and left out; the others are still written.

Figures (file stem; ``<label>`` is the group label with anything but ``[A-Za-z0-9_.-]`` made ``_``):

* ``accuracy_vs_time`` (runs with accuracy): test accuracy (%) vs simulated time; per round index,
  x = mean end time over seeds, y = mean accuracy, band ±1 std; the target as a dotted line.
  ``progress_vs_time`` (timing-only runs): rounds completed vs simulated time, band ±1 std of time.
* ``time_to_target`` (runs with accuracy): bars of the simulated time to the target accuracy (the
  ``target_acc`` argument, else ``training.target_accuracy`` when every run sets the same one, else
  the highest accuracy every group's mean curve reached -- unless that is at or below the
  majority-class rate, when the figure says there is no meaningful target instead of drawing bars),
  mean ± std over the seeds that reached it;
  a group no seed of which reached it is a hatched bar up to its run length, labelled "not reached".
  Each bar is annotated with the speed-up of the reference policy over it (its time / the
  reference's time). ``time_to_finish`` (timing-only runs): the same with the simulated time to
  finish all rounds (``sim_time_s`` of the summary).
* ``device_type_times``: per device type and group, the mean time from round start to report and
  the mean idle fraction (%) over ``ok`` device-rounds (per run, then mean ± std over seeds).
* ``idle``: per group, two bars: the fastest reporting device's idle fraction (hatched;
  ``mean_idle_fastest`` = mean over rounds of ``1 - T_min / T_max``, FedSpine's "~30% idle" figure)
  and the mean idle fraction over reporting devices (solid; ``mean_idle_mean``), in %, each the mean
  over seeds of the per-run value with an error bar ±1 std; runs written before ``idle_fastest``
  existed get no fastest-device bar.
* ``heatmap_<label>`` (first seed of each group, at most :data:`MAX_DETAIL_GROUPS` groups): prune
  ratio and LoRA rank per device (rows, by type then id) and round (columns); grey = the device was
  not selected or did not report (status other than ``ok``).
* ``timeline_<label>`` (same runs): Gantt charts (download, compute, upload, idle; the colours of
  :data:`sim.views.style.PHASE_COLORS`) of the chosen rounds (default first, middle, last), up to 40
  devices per round, x = seconds since the round start.
* ``bytes``: upload and download MB (GB past 10 GB) per run, stacked; mean over seeds, error bar
  ±1 std of the total.
* ``memory``: per device type and group, the highest modelled peak memory over all device-rounds and
  seeds (GiB), with the type's memory capacity as a dashed line.
* ``sweep_<metric>`` (a sweep with matrix keys; metric in ``final_accuracy`` when present,
  ``sim_time_s``, ``mean_idle_fastest``, ``mean_idle_fraction``; finished cells of the sweep index): with one matrix key,
  the metric vs the key per policy (mean over seeds; a line with a band ±1 std for a numeric key,
  points with error bars ±1 std for categories); with two or more, per policy (up to
  :data:`MAX_SWEEP_PANELS` panels) a heatmap of the mean metric over the first two keys (first on y,
  second on x, as categories; mean over seeds and any further keys), values written in the cells.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.records import idle_summary
from sim.views.results import automatic_target, did_you_mean, highest_majority, time_to_target
from sim.views.style import MAX_TIMELINE_DEVICES, gantt, phase_legend, save_figure, styled, timeline_devices

if TYPE_CHECKING:
    from sim.views.results import RunData, SweepData

log = logging.getLogger(__name__)

MAX_GROUPS = 12  # groups drawn in the figures over groups
MAX_DETAIL_GROUPS = MAX_GROUPS  # groups that get a heatmap and a timeline: every group drawn
MAX_SWEEP_PANELS = 4  # policies in a two-key sweep heatmap
GIB = 2.0**30

POLICY_STYLES: dict[str, tuple[str, str]] = {
    "fedspine": ("#D62728", "o"),
    "fedapt": ("#1F77B4", "s"),
    "fedlora": ("#2CA02C", "^"),
    "fedmp": ("#FF7F0E", "D"),
    "hetlora": ("#9467BD", "v"),
    "flexlora": ("#8C564B", "P"),
    "legend": ("#E377C2", "X"),
    "fedlora_then_prune": ("#17BECF", "<"),
    "prune_then_fedlora": ("#BCBD22", ">"),
    "fixed": ("#7F7F7F", "h"),
    "random": ("#393B79", "*"),
    "oracle": ("#000000", "p"),
}
_PALETTE = ["#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7",
            "#9C755F", "#636363", "#6B6ECF", "#8CA252"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]
_LINESTYLES = ["-", "--", ":", "-."]
_SHADES_LIGHT = 0.7  # the lightest shade of a policy's configurations: 0.7 of the way to white
_NO_DATA = "#DDDDDD"


def policy_style(label: str) -> tuple[str, str]:
    """(colour hex, marker) of a policy label: the known name it equals or, failing that, the longest
    known name it starts with (``fedspine-tuned`` -> fedspine's); else a colour and marker picked by
    the sha256 of the label, so a label has the same style in every figure and every process."""
    if label in POLICY_STYLES:
        return POLICY_STYLES[label]
    known = [k for k in POLICY_STYLES if label.startswith(k)]
    if known:
        return POLICY_STYLES[max(known, key=len)]
    h = hashlib.sha256(label.encode("utf-8")).digest()
    colour = _PALETTE[int.from_bytes(h[:8], "big") % len(_PALETTE)]
    return colour, _MARKERS[int.from_bytes(h[8:16], "big") % len(_MARKERS)]


def safe_label(label: str) -> str:
    """A file-name-safe form of a group label: anything but ``[A-Za-z0-9_.-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def speedups(times: dict[str, float], reference: str) -> dict[str, float]:
    """Speed-up of ``reference`` over each group: that group's time / the reference's time (NaN for a
    group without a time). Empty when the reference is missing or has no positive, finite time."""
    ref = times.get(reference, math.nan)
    if not (isinstance(ref, (int, float)) and math.isfinite(ref) and ref > 0):
        return {}
    return {k: (float(v) / ref if v is not None and math.isfinite(v) else math.nan) for k, v in times.items()}


@dataclass
class TargetTime:
    """Time to target of one group: mean and std over the seeds that reached it, and how many did."""

    mean_s: float
    std_s: float
    n_reached: int
    n_runs: int

    @property
    def reached(self) -> bool:
        return self.n_reached > 0


def group_time_to_target(frames: Sequence[pd.DataFrame], target: float) -> TargetTime:
    """:func:`time_to_target` of every seed's rounds frame, aggregated (see :class:`TargetTime`)."""
    t = np.array([time_to_target(f, target) for f in frames], dtype=float)
    ok = t[np.isfinite(t)]
    return TargetTime(float(ok.mean()) if len(ok) else math.nan, _std(ok), int(len(ok)), len(frames))


def pick_target(explicit: float | None, scenario_targets: Sequence[float | None],
                mean_curves: Sequence[pd.Series], majority: float = math.nan) -> tuple[float | None, str]:
    """The target accuracy and where it came from: ``explicit``, else the scenarios' common
    ``training.target_accuracy``, else the highest accuracy every mean curve reached -- None if none,
    or if that is at or below the majority-class rate ``majority`` (see
    :func:`sim.views.results.automatic_target`)."""
    if explicit is not None:
        return float(explicit), "given"
    given = {float(t) for t in scenario_targets if t is not None}
    if given and len(given) == 1 and all(t is not None for t in scenario_targets):
        return given.pop(), "training.target_accuracy"
    if given:
        log.warning("runs set different training.target_accuracy (%s): using the highest accuracy every group reached",
                    sorted(given))
    best = [float(c.max()) for c in mean_curves if len(c) and c.notna().any()]
    if best and len(best) == len(mean_curves):
        return automatic_target(best, majority, "group")
    return None, "none"


@dataclass
class Group:
    """Runs of one policy label and one set of swept values (one run per seed)."""

    label: str
    policy: str
    values: dict[str, Any]
    runs: list[RunData] = field(default_factory=list)
    color: str = "#000000"
    marker: str = "o"
    linestyle: str = "-"

    @property
    def first(self) -> RunData:
        return min(self.runs, key=lambda r: r.seed)

    @property
    def algorithm(self) -> str:
        return str(self.first.scenario.get("algorithm", {}).get("name", ""))


# A swept algorithm name is the policy itself: not a second axis of groups, labels or sweep panels.
POLICY_KEYS = frozenset({"algorithm.name"})


def group_runs(runs: Sequence[RunData], max_groups: int = MAX_GROUPS) -> list[Group]:
    """Runs grouped by policy label (and swept values where a policy has several), in run order,
    styled, capped at ``max_groups`` (a warning names those left out)."""
    by_key: dict[tuple[str, str], Group] = {}
    for r in runs:
        values = {k: v for k, v in r.values.items() if k not in POLICY_KEYS}
        key = (r.policy, json.dumps(values, sort_keys=True, default=str))
        by_key.setdefault(key, Group(r.policy, r.policy, values)).runs.append(r)
    groups = list(by_key.values())
    configs: dict[str, int] = {}
    for g in groups:
        configs[g.policy] = configs.get(g.policy, 0) + 1
    if any(n > 1 for n in configs.values()):
        short = _short_keys(sorted({k for g in groups for k in g.values}))
        for g in groups:
            if g.values:
                g.label = f"{g.policy} ({', '.join(f'{short[k]}={_fmt_value(v)}' for k, v in g.values.items())})"
    if len(groups) > max_groups:
        log.warning("%d groups of runs: drawing the first %d, leaving out %s", len(groups), max_groups,
                    ", ".join(g.label for g in groups[max_groups:]))
        groups = groups[:max_groups]
    base = _policy_colours(list(dict.fromkeys(g.policy for g in groups)))
    seen: dict[str, int] = {}
    for g in groups:
        j = seen.get(g.policy, 0)
        seen[g.policy] = j + 1
        g.marker = policy_style(g.policy)[1]
        g.color = _shade(base[g.policy], shade_of(j, configs[g.policy]))
        g.linestyle = _LINESTYLES[j % len(_LINESTYLES)]
    return groups


def shade_of(j: int, n: int) -> float:
    """The shade of a policy's ``j``-th of ``n`` configurations (swept values in sweep order): the first
    keeps the policy's colour, the others run monotonically lighter up to 0.7 of the way to white, so every
    configuration has its own shade and the order of the shades follows the swept value."""
    return 0.0 if n <= 1 else float(np.linspace(0.0, _SHADES_LIGHT, n)[j])


def _policy_colours(policies: list[str]) -> dict[str, str]:
    """:func:`policy_style` colours, except that an unknown label whose hashed colour another policy of
    this set already has takes the next free palette colour (so one set of figures never shows two
    policies in one colour; the same set of labels always gets the same colours)."""
    out = {p: policy_style(p)[0] for p in policies}
    used = {c for p, c in out.items() if out[p] not in _PALETTE}
    for p in policies:
        if out[p] in _PALETTE:
            i = _PALETTE.index(out[p])
            for k in range(len(_PALETTE)):
                c = _PALETTE[(i + k) % len(_PALETTE)]
                if c not in used:
                    out[p] = c
                    break
            used.add(out[p])
    return out


def plot_runs(runs: list[RunData], out_dir: Path, *, sweep: SweepData | None = None, target_acc: float | None = None,
              reference: str = "fedspine", timeline_rounds: list[int] | None = None,
              formats: tuple[str, ...] = ("png", "pdf"), progress: Callable[[str], None] | None = None,
              keep: dict[str, Any] | None = None) -> list[Path]:
    """Write every figure the runs (and the sweep, if given) support into ``out_dir`` (see the module
    docstring); returns the written files, every format of every figure. ``progress`` is called with each
    figure's name before it is drawn (``sim.progress.FigureProgress``). With ``keep`` (a dict) nothing is
    written: each matplotlib Figure is stored in it under its file stem, open, for a notebook."""
    out_dir = Path(out_dir)
    if keep is None:
        out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, stem: str) -> None:
        """Every format of ``fig`` into ``out_dir`` (:func:`~sim.views.style.save_figure`), or into ``keep``."""
        if keep is not None:
            keep[stem] = fig
            return
        written.extend(save_figure(fig, out_dir, stem, formats))

    def draw(fn: Callable, *args: Any) -> None:
        """One figure function; a failure is logged and the other figures still get written."""
        before = set(plt.get_fignums())
        if progress is not None:
            progress(fn.__name__.strip("_").removesuffix("_figure").removesuffix("_figures")
                     + (f" {args[0].label}" if args and isinstance(args[0], Group) else ""))
        try:
            fn(plt, save, *args)
        except Exception:  # noqa: BLE001 - one figure's bad data must not lose the others
            log.exception("figure %s failed", fn.__name__.strip("_"))
            for n in set(plt.get_fignums()) - before:
                plt.close(n)

    runs = [r for r in runs if len(r.rounds)]
    groups = group_runs(runs)
    with styled() as plt:
        if groups:
            ref = _reference_group(groups, reference)
            acc_groups = [g for g in groups if any(r.has_accuracy for r in g.runs)]
            if acc_groups:
                draw(_accuracy_figures, acc_groups, ref, target_acc)
            if len(acc_groups) < len(groups):
                draw(_progress_figures, groups, ref)
            draw(_device_type_figure, groups)
            draw(_idle_figure, groups)
            if len(groups) > MAX_DETAIL_GROUPS:
                log.warning("heatmaps and timelines for the first %d of %d groups only", MAX_DETAIL_GROUPS, len(groups))
            for g in groups[:MAX_DETAIL_GROUPS]:
                draw(_heatmap_figure, g)
                draw(_timeline_figure, g, timeline_rounds)
            draw(_bytes_figure, groups)
            draw(_memory_figure, groups)
        if sweep is not None and sweep.matrix_keys:
            draw(_sweep_figures, sweep)
    return written


# ---------------------------------------------------------------------------------------------- helpers

def _std(x: Any) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The shortest dotted ending of each key that no other key shares."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            s = ".".join(parts[-n:])
            if not any(o != k and (o == s or o.endswith("." + s)) for o in keys):
                break
        out[k] = s
    return out


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _shade(colour: str, amount: float) -> str:
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    t = (1.0, 1.0, 1.0) if amount > 0 else (0.0, 0.0, 0.0)
    a = abs(amount)
    return "#" + "".join(f"{round(255 * ((1 - a) * c + a * tc)):02X}" for c, tc in zip((r, g, b), t))


def _norm(plt: Any, lo: float, hi: float) -> Any:
    """A colour normalisation over [lo, hi], widened when all values are (nearly) equal."""
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):
        pad = 0.05 * abs(hi) if hi else 0.05
        lo, hi = (lo - pad, hi + pad) if lo != 0 else (0.0, hi + pad)
    return plt.Normalize(lo, hi)


def _time_unit(max_s: float) -> tuple[float, str]:
    return (3600.0, "h") if max_s > 3 * 3600 else (1.0, "s")


DEFAULT_REFERENCE = "fedspine"


def resolve_reference(runs: Sequence[RunData], reference: str | None) -> tuple[str, str | None]:
    """The reference policy for speed-up labels and a note for the user (None when all is well).

    A reference must name a policy label or an algorithm among ``runs``: one given that names none is
    refused with a ValueError listing the names and the closest one ("did you mean ..."); the default
    (:data:`DEFAULT_REFERENCE`) that names none gives a note saying that no speed-up is labelled."""
    names = sorted({r.policy for r in runs} | {str(r.scenario.get("algorithm", {}).get("name", "")) for r in runs}
                   - {""})
    wanted = reference if reference is not None else DEFAULT_REFERENCE
    if wanted in names:
        return wanted, None
    hint = did_you_mean(wanted, names)
    if reference is not None:
        raise ValueError(f"--reference {reference!r}: no policy of that name; allowed: {', '.join(names)}{hint}")
    return wanted, (f"the default reference {DEFAULT_REFERENCE!r} matches no policy ({', '.join(names)}): "
                    f"no speed-up labels; choose one with --reference")


def _reference_group(groups: list[Group], reference: str) -> Group | None:
    for test in (lambda g: g.label == reference, lambda g: g.policy == reference, lambda g: g.algorithm == reference):
        hit = [g for g in groups if test(g)]
        if hit:
            return hit[0]
    return None


def _legend(fig: Any, ax: Any, below: bool = False) -> None:
    """The axes' legend outside the data: right of the axes, or below them (several panels)."""
    h, lab = ax.get_legend_handles_labels()
    if not h:
        return
    if below:
        fig.legend(h, lab, loc="outside lower center", frameon=False, ncol=legend_columns(lab, fig.get_figwidth()))
    else:
        fig.legend(h, lab, loc="outside right upper", frameon=False)


def legend_columns(labels: list[str], width_in: float, fontsize_pt: float = 9.0) -> int:
    """Legend columns below the axes that fit ``width_in``: an entry takes its label's width (about 0.6 of
    the font size per character) plus 3 font sizes for the marker and gaps; at most 4 columns."""
    entry_in = (0.6 * max((len(x) for x in labels), default=1) + 3.0) * fontsize_pt / 72
    return max(1, min(len(labels), 4, int(width_in / entry_in)))


def _title(target: Any, main: str, note: str = "", width_in: float = 6.0) -> None:
    """A title line and a note wrapped to the width (an Axes' title, or a Figure's suptitle)."""
    width = max(40, int(width_in * 11))
    text = textwrap.fill(main, width) + ("\n" + textwrap.fill(f"({note})", width) if note else "")
    (target.set_title if hasattr(target, "set_title") else target.suptitle)(text, fontsize=11)


def _category_ticks(ax: Any, labels: list[str], axis: str = "x") -> None:
    pos = range(len(labels))
    long = max((len(s) for s in labels), default=0)
    rotate = long > 10 or len(labels) * long > 50
    if axis == "x":
        ax.set_xticks(list(pos))
        ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center",
                           rotation_mode="anchor" if rotate else "default")
    else:
        ax.set_yticks(list(pos))
        ax.set_yticklabels(labels)


def _bar_offsets(n: int, width: float = 0.8) -> tuple[np.ndarray, float]:
    w = width / max(n, 1)
    return (np.arange(n) - (n - 1) / 2) * w, w


def _seed_note(groups: list[Group], what: str = "error bars") -> str:
    n = sorted({len(g.runs) for g in groups})
    if n[-1] == 1:
        return "one seed per group"
    return f"mean over {n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} seeds, {what} ±1 std"


# ---------------------------------------------------------------------------------------------- figures 1, 2

def _per_round(g: Group, col: str) -> pd.DataFrame:
    """Per round index: mean/std of ``t_end_s`` and of ``col`` over the group's seeds (NaN rows dropped)."""
    frames = [r.rounds[["round", "t_end_s", col]].dropna() for r in g.runs if col in r.rounds]
    if not frames:
        return pd.DataFrame(columns=["round", "t", "t_std", "y", "y_std"])
    df = pd.concat(frames)
    agg = df.groupby("round").agg(t=("t_end_s", "mean"), t_std=("t_end_s", _std), y=(col, "mean"), y_std=(col, _std))
    return agg.reset_index()


def _accuracy_figures(plt: Any, save: Callable, groups: list[Group], ref: Group | None,
                      target_acc: float | None) -> None:
    curves = {g.label: _per_round(g, "accuracy") for g in groups}
    targets = [r.scenario.get("training", {}).get("target_accuracy") for g in groups for r in g.runs]
    majority = highest_majority([r.summary for g in groups for r in g.runs])
    target, source = pick_target(target_acc, targets, [c["y"] for c in curves.values()], majority)
    div, unit = _time_unit(max(float(c["t"].max()) for c in curves.values() if len(c)))

    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for g in groups:
        c = curves[g.label]
        x, y, s = c["t"] / div, 100 * c["y"], 100 * c["y_std"]
        ax.plot(x, y, color=g.color, marker=g.marker, ls=g.linestyle, ms=4, lw=1.6, label=g.label,
                markevery=max(1, len(c) // 15))
        if s.notna().any():
            ax.fill_between(x, y - s.fillna(0), y + s.fillna(0), color=g.color, alpha=0.18, lw=0)
    if target is not None:
        ax.axhline(100 * target, color="0.3", ls=":", lw=1.2, label=f"target {100 * target:.1f}%")
    if math.isfinite(majority):
        ax.axhline(100 * majority, color="0.5", ls="--", lw=1.0, label=f"majority class {100 * majority:.1f}%")
    ax.set_xlabel(f"simulated time ({unit})")
    ax.set_ylabel("test accuracy (%)")
    _title(ax, "Test accuracy vs simulated time", _seed_note(groups, "band"))
    _legend(fig, ax)
    save(fig, "accuracy_vs_time")

    if target is None:
        if source.startswith("no meaningful target"):
            _no_target_figure(plt, save, source)
        else:
            log.warning("no target accuracy: no time_to_target figure")
        return
    tt = {g.label: group_time_to_target([r.rounds for r in g.runs], target) for g in groups}
    ends = {g.label: float(np.mean([r.rounds["t_end_s"].iloc[-1] for r in g.runs])) for g in groups}
    title = f"Simulated time to {100 * target:.1f}% test accuracy"
    _time_bars(plt, save, groups, ref, {k: (v.mean_s, v.std_s, v.n_reached, v.n_runs) for k, v in tt.items()},
               ends, title, "simulated time to target", "time_to_target",
               "target given" if source == "given" else f"target: {source}")


def _no_target_figure(plt: Any, save: Callable, reason: str) -> None:
    """``time_to_target`` when no target is meaningful: a figure that says why instead of bars."""
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(reason[0].upper() + reason[1:] + ".", 70), ha="center", va="center",
            fontsize=11, transform=ax.transAxes)
    _title(ax, "Simulated time to target accuracy: no meaningful target")
    save(fig, "time_to_target")


def _progress_figures(plt: Any, save: Callable, groups: list[Group], ref: Group | None) -> None:
    curves = {g.label: _rounds_done(g) for g in groups}
    div, unit = _time_unit(max(float(c["t"].max()) for c in curves.values()))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for g in groups:
        c = curves[g.label]
        x, s = c["t"] / div, c["t_std"] / div
        ax.plot(x, c["y"], color=g.color, marker=g.marker, ls=g.linestyle, ms=4, lw=1.6, label=g.label,
                markevery=max(1, len(c) // 15), drawstyle="default")
        if s.notna().any():
            ax.fill_betweenx(c["y"], x - s.fillna(0), x + s.fillna(0), color=g.color, alpha=0.18, lw=0)
    ax.set_xlabel(f"simulated time ({unit})")
    ax.set_ylabel("rounds completed")
    ax.yaxis.get_major_locator().set_params(integer=True)
    _title(ax, "Training progress vs simulated time", f"timing only; {_seed_note(groups, 'band of time')}")
    _legend(fig, ax)
    save(fig, "progress_vs_time")

    stats = {}
    for g in groups:
        t = np.array([float(r.summary.get("sim_time_s") or r.rounds["t_end_s"].iloc[-1]) for r in g.runs])
        stats[g.label] = (float(t.mean()), _std(t), len(t), len(t))
    _time_bars(plt, save, groups, ref, stats, {}, "Simulated time to finish all rounds",
               "simulated time to finish", "time_to_finish")


def _rounds_done(g: Group) -> pd.DataFrame:
    df = pd.concat([r.rounds[["round", "t_end_s"]] for r in g.runs])
    agg = df.groupby("round").agg(t=("t_end_s", "mean"), t_std=("t_end_s", _std)).reset_index()
    agg["y"] = agg["round"] + 1
    return agg


def _time_bars(plt: Any, save: Callable, groups: list[Group], ref: Group | None,
               stats: dict[str, tuple[float, float, int, int]], ends: dict[str, float], title: str, ylabel: str,
               stem: str, note: str = "") -> None:
    """Bars of a time per group (mean, std, n reached, n runs); unreached groups hatched up to ``ends``."""
    allt = [v[0] for v in stats.values() if math.isfinite(v[0])] + [v for v in ends.values() if math.isfinite(v)]
    div, unit = _time_unit(max(allt) if allt else 1.0)
    sp = speedups({k: v[0] for k, v in stats.items()}, ref.label) if ref is not None else {}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2.5), 4.6), layout="constrained")
    top = 0.0
    for i, g in enumerate(groups):
        mean, std, n_hit, n = stats[g.label]
        if n_hit == 0:
            h = ends.get(g.label, math.nan) / div
            if math.isfinite(h):
                ax.bar(i, h, color="white", edgecolor=g.color, hatch="//", lw=1.2)
                ax.text(i, h, "not reached\nby the run's end", ha="center", va="bottom", fontsize=9)
                top = max(top, h)
            continue
        ax.bar(i, mean / div, yerr=std / div if math.isfinite(std) else None, color=g.color, edgecolor="black",
               lw=0.6, capsize=4, alpha=0.9)
        y = (mean + (std if math.isfinite(std) else 0.0)) / div
        top = max(top, y)
        text = []
        if ref is not None and g is ref:
            text.append("reference")
        elif g.label in sp and math.isfinite(sp[g.label]):
            text.append(f"{sp[g.label]:.2f}x")
        if n_hit < n:
            text.append(f"{n_hit}/{n} seeds")
        if text:
            ax.text(i, y, "\n".join(text), ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, top * 1.22 if top > 0 else 1)
    _category_ticks(ax, [g.label for g in groups])
    ax.set_ylabel(f"{ylabel} ({unit})")
    ax.grid(axis="x", visible=False)
    sub = _seed_note(groups) + (f"; {note}" if note else "")
    if sp:
        sub += f"; Nx = time / time of {ref.label}"
    _title(ax, title, sub, fig.get_figwidth())
    save(fig, stem)


# ---------------------------------------------------------------------------------------------- figure 3, 7

def _ok_rows(r: RunData) -> pd.DataFrame:
    d = r.device_rounds
    d = d[d["status"].astype(str) == "ok"].copy()
    d["device_type"] = d["device_type"].astype(str)
    d["report_s"] = d["t_report_s"] - d["t_round_start_s"]
    return d


def _device_types(groups: list[Group]) -> list[str]:
    return sorted({str(t) for g in groups for r in g.runs for t in r.device_rounds["device_type"].astype(str).unique()})


def _device_type_figure(plt: Any, save: Callable, groups: list[Group]) -> None:
    types = _device_types(groups)
    per: dict[str, pd.DataFrame] = {}
    for g in groups:
        rows = []
        for r in g.runs:
            d = _ok_rows(r)
            if len(d):
                rows.append(d.groupby("device_type").agg(report_s=("report_s", "mean"), idle=("idle_fraction", "mean")))
        if rows:
            per[g.label] = pd.concat(rows).groupby(level=0).agg(["mean", _std])
    if not per or not types:
        log.warning("no ok device-rounds: no device_type_times figure")
        return
    div, unit = _time_unit(max(float(v[("report_s", "mean")].max()) for v in per.values()))
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 1.6 * len(types) + 6), 4.4), layout="constrained")
    offs, w = _bar_offsets(len(groups))
    for i, g in enumerate(groups):
        if g.label not in per:
            continue
        v = per[g.label].reindex(types)
        for ax, col, scale in ((axes[0], "report_s", 1 / div), (axes[1], "idle", 100.0)):
            ax.bar(np.arange(len(types)) + offs[i], v[(col, "mean")] * scale, w, yerr=v[(col, "_std")] * scale,
                   color=g.color, edgecolor="black", lw=0.5, capsize=2, label=g.label if ax is axes[0] else None,
                   error_kw={"lw": 0.8})
    for ax, ylabel, title in ((axes[0], f"round start to report ({unit})", "Time to report"),
                              (axes[1], "idle fraction of the round (%)", "Idle time")):
        _category_ticks(ax, types)
        ax.set_xlabel("device type")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
    _title(fig, "Per device type, over ok device-rounds", _seed_note(groups), fig.get_figwidth())
    _legend(fig, axes[0], below=True)
    save(fig, "device_type_times")


def _memory_figure(plt: Any, save: Callable, groups: list[Group]) -> None:
    types = _device_types(groups)
    peak: dict[str, pd.Series] = {}
    cap = pd.Series(dtype=float)
    for g in groups:
        d = pd.concat([r.device_rounds[["device_type", "memory_peak_bytes", "memory_capacity_bytes"]] for r in g.runs])
        d = d.assign(device_type=d["device_type"].astype(str))
        peak[g.label] = d.groupby("device_type")["memory_peak_bytes"].max() / GIB
        cap = pd.concat([cap, d.groupby("device_type")["memory_capacity_bytes"].max() / GIB]).groupby(level=0).max()
    if not types or all(p.isna().all() for p in peak.values()):
        log.warning("no modelled memory: no memory figure")
        return
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(types) + 4), 4.4), layout="constrained")
    offs, w = _bar_offsets(len(groups))
    for i, g in enumerate(groups):
        ax.bar(np.arange(len(types)) + offs[i], peak[g.label].reindex(types), w, color=g.color, edgecolor="black",
               lw=0.5, label=g.label)
    for j, t in enumerate(types):
        c = cap.get(t, math.nan)
        if math.isfinite(c):
            ax.hlines(c, j - 0.45, j + 0.45, colors="black", linestyles="--", lw=1.5,
                      label="memory capacity" if j == 0 else None)
            ax.text(j, c, f"{c:.0f} GiB", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, 1.12 * float(np.nanmax(np.concatenate([cap.reindex(types).to_numpy(float),
                                                          *(p.to_numpy(float) for p in peak.values())]))))
    _category_ticks(ax, types)
    ax.set_xlabel("device type")
    ax.set_ylabel("modelled peak memory (GiB)")
    _title(ax, "Modelled peak memory per device type", "max over device-rounds and seeds", fig.get_figwidth())
    ax.grid(axis="x", visible=False)
    _legend(fig, ax, below=True)
    save(fig, "memory")


# ---------------------------------------------------------------------------------------------- idle

IDLE_BARS = (("mean_idle_fastest", "fastest device: 1 - T_min/T_max", 0.5, "//"),
             ("mean_idle_mean", "mean over reporting devices", 0.0, None))
"""(summary key, legend label, shade towards white, hatch) of the two bars of the idle figure."""


def _idle_figure(plt: Any, save: Callable, groups: list[Group]) -> None:
    """Per group the fastest device's and the mean idle fraction (%), mean ± std over seeds."""
    per = {g.label: [idle_summary(r.rounds) for r in g.runs] for g in groups}
    if not any(v is not None for runs in per.values() for s in runs for v in s.values()):
        log.warning("no reporting device in any round: no idle figure")
        return
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 3), 4.6), layout="constrained")
    offs, w = _bar_offsets(len(IDLE_BARS), 0.8)
    for i, g in enumerate(groups):
        for (key, _, shade, hatch), off in zip(IDLE_BARS, offs):
            x = np.array([math.nan if s[key] is None else 100 * s[key] for s in per[g.label]], dtype=float)
            if not np.isfinite(x).any():
                continue
            sd = _std(x)
            ax.bar(i + off, float(np.nanmean(x)), w, color=_shade(g.color, shade), edgecolor="black", lw=0.6,
                   hatch=hatch, yerr=sd if math.isfinite(sd) else None, capsize=3)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=_shade("#737373", shade), edgecolor="black", lw=0.6, hatch=hatch)
               for _, _, shade, hatch in IDLE_BARS]
    fig.legend(handles, [lab for _, lab, _, _ in IDLE_BARS], loc="outside lower center", frameon=False, ncol=2)
    _category_ticks(ax, [g.label for g in groups])
    ax.set_ylabel("idle fraction of the round (%)")
    ax.grid(axis="x", visible=False)
    _title(ax, "Idle time per round: the fastest reporting device and the mean over reporting devices",
           f"per run the mean over rounds; {_seed_note(groups)}", fig.get_figwidth())
    save(fig, "idle")


# ---------------------------------------------------------------------------------------------- figure 6

def _bytes_figure(plt: Any, save: Callable, groups: list[Group]) -> None:
    down = {g.label: np.array([float(r.rounds["bytes_down"].sum()) for r in g.runs]) for g in groups}
    up = {g.label: np.array([float(r.rounds["bytes_up"].sum()) for r in g.runs]) for g in groups}
    total_max = max(float((down[k] + up[k]).mean()) for k in down)
    div, unit = (1e9, "GB") if total_max > 1e10 else (1e6, "MB")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 3), 4.6), layout="constrained")
    for i, g in enumerate(groups):
        d, u = down[g.label].mean() / div, up[g.label].mean() / div
        s = _std((down[g.label] + up[g.label]) / div)
        ax.bar(i, d, color=g.color, edgecolor="black", lw=0.6)
        ax.bar(i, u, bottom=d, color=_shade(g.color, 0.5), edgecolor="black", lw=0.6, hatch="//",
               yerr=s if math.isfinite(s) else None, capsize=4)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor="0.45", edgecolor="black", lw=0.6),
               plt.Rectangle((0, 0), 1, 1, facecolor="0.85", edgecolor="black", lw=0.6, hatch="//")]
    fig.legend(handles, ["download (server to device)", "upload (device to server)"], loc="outside lower center",
               frameon=False, ncol=2)
    _category_ticks(ax, [g.label for g in groups])
    ax.set_ylabel(f"data communicated per run ({unit})")
    ax.grid(axis="x", visible=False)
    _title(ax, "Data communicated per run", _seed_note(groups, "error bars on the total"), fig.get_figwidth())
    save(fig, "bytes")


# ---------------------------------------------------------------------------------------------- figures 4, 5

def _heatmap_figure(plt: Any, save: Callable, g: Group) -> None:
    from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: PLC0415

    run = g.first
    d = run.device_rounds
    if not len(d):
        return
    order = (d[["device_id", "device_type"]].astype(str).drop_duplicates("device_id")
             .sort_values(["device_type", "device_id"], kind="stable"))
    ids, dtypes = list(order["device_id"]), list(order["device_type"])
    rounds = sorted(int(x) for x in run.rounds["round"])
    ok = d[d["status"].astype(str) == "ok"].assign(device_id=lambda x: x["device_id"].astype(str))
    n = len(ids)
    height = min(16.0, max(3.6, 0.14 * n + 1.8))
    fig, axes = plt.subplots(1, 2, figsize=(min(16.0, max(10.0, 0.12 * len(rounds) + 7)), height), sharey=True,
                             layout="constrained")
    extent = (rounds[0] - 0.5, rounds[-1] + 0.5, n - 0.5, -0.5)
    for ax, col, label in ((axes[0], "prune_ratio", "fraction of weights pruned"),
                           (axes[1], "lora_rank", "LoRA rank")):
        m = ok.pivot_table(index="device_id", columns="round", values=col, aggfunc="first").reindex(
            index=ids, columns=rounds).to_numpy(dtype=float)
        vals = np.unique(m[np.isfinite(m)])
        if col == "lora_rank" and 0 < len(vals) <= 10:
            cmap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, len(vals))))
            bounds = np.concatenate([[vals[0] - 0.5], (vals[:-1] + vals[1:]) / 2, [vals[-1] + 0.5]])
            norm = BoundaryNorm(bounds, cmap.N)
        else:
            cmap = plt.get_cmap("plasma" if col == "prune_ratio" else "viridis")
            lo = 0.0 if col == "prune_ratio" or not len(vals) else float(vals.min())
            norm = _norm(plt, lo, float(vals.max()) if len(vals) else 1.0)
        cmap = cmap.with_extremes(bad=_NO_DATA)
        im = ax.imshow(np.ma.masked_invalid(m), aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
                       extent=extent)
        # the colour bar spans its panel's full height, attached to its right edge (about 0.2 in wide)
        cb = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.05, aspect=max(12.0, height / 0.2))
        cb.set_label(label)
        if col == "lora_rank" and 0 < len(vals) <= 10:
            cb.set_ticks(vals)
            cb.set_ticklabels([f"{v:g}" for v in vals])
        for k in range(1, n):
            if dtypes[k] != dtypes[k - 1]:
                ax.axhline(k - 0.5, color="black", lw=1.0)
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(False)
        ax.set_title("prune ratio" if col == "prune_ratio" else "LoRA rank")
    _device_axis(axes[0], ids, dtypes, height)
    _title(fig, f"{g.label}: plan per device and round",
           f"seed {run.seed}; grey = not selected or no report", fig.get_figwidth())
    save(fig, f"heatmap_{safe_label(g.label)}")


MAX_DEVICE_LABELS = 30
"""Above this many devices a heatmap labels each device-type block once instead of every device."""


def _device_axis(ax: Any, ids: list[str], dtypes: list[str], height_in: float) -> None:
    """The device axis of a heatmap (rows sorted by type): every device named up to
    :data:`MAX_DEVICE_LABELS`, else one label per type block at its middle, ``type (count)``."""
    n = len(ids)
    if n <= MAX_DEVICE_LABELS:
        ax.set_yticks(range(n))
        ax.set_yticklabels(ids, fontsize=min(8.0, max(5.0, 0.75 * (height_in - 1.6) * 72 / n)))
        ax.set_ylabel("device (by type; lines separate types)")
        return
    starts = [k for k in range(n) if k == 0 or dtypes[k] != dtypes[k - 1]]
    ends = [*starts[1:], n]
    ax.set_yticks([(a + b - 1) / 2 for a, b in zip(starts, ends)])
    ax.set_yticklabels([f"{dtypes[a]}\n({b - a})" for a, b in zip(starts, ends)], fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.set_ylabel(f"{n} devices, grouped by type (lines separate types)")


def _timeline_figure(plt: Any, save: Callable, g: Group, timeline_rounds: list[int] | None) -> None:
    run = g.first
    rounds = run.rounds.set_index("round")
    have = [int(x) for x in rounds.index]
    if timeline_rounds is None:
        chosen = sorted({have[0], have[len(have) // 2], have[-1]})
    else:
        chosen = [r for r in dict.fromkeys(int(x) for x in timeline_rounds) if r in rounds.index]
        if not chosen:
            log.warning("%s: none of the timeline rounds %s was run: no timeline", g.label, timeline_rounds)
            return
    dev = run.device_rounds
    parts = [dev[dev["round"] == r].sort_values("t_end_s") for r in chosen]
    ncol = min(3, len(chosen))
    nrow = math.ceil(len(chosen) / ncol)
    n_max = max((min(len(p), MAX_TIMELINE_DEVICES) for p in parts), default=1)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.0 * ncol + 1.0, nrow * (0.2 * n_max + 1.5) + 0.8),
                             layout="constrained", squeeze=False)
    for ax, r, full in zip(axes.flat, chosen, parts):
        lr, shown = timeline_devices(full)
        t0, t1 = float(rounds.at[r, "t_start_s"]), float(rounds.at[r, "t_end_s"])
        gantt(ax, lr, t0, t1)
        ax.set_xlim(0, (t1 - t0) * 1.02 if t1 > t0 else 1)
        ax.set_xlabel("time since round start (s, simulated)")
        ax.set_title(textwrap.fill(f"round {r} ({t1 - t0:.1f} s, {shown})", 48), fontsize=10)  # fits 5 in
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    handles, labels = phase_legend(plt)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), frameon=False)
    _title(fig, f"{g.label}: round timelines (seed {run.seed}; devices by end time)", width_in=fig.get_figwidth())
    save(fig, f"timeline_{safe_label(g.label)}")


# ---------------------------------------------------------------------------------------------- figure 8

_SWEEP_METRICS = {"final_accuracy": "final test accuracy", "sim_time_s": "simulated time to finish",
                  "mean_idle_fastest": "fastest device's idle fraction per round (1 - T_min/T_max)",
                  "mean_idle_fraction": "mean idle fraction per round (over reporting devices)"}


def _metric_scale(metric: str, values: pd.Series) -> tuple[float, str]:
    """(multiplier, unit) of a sweep metric."""
    if metric == "sim_time_s":
        div, unit = _time_unit(float(values.max()) if values.notna().any() else 0.0)
        return 1 / div, unit
    return 100.0, "%"


def _categories(series: pd.Series, spec_values: list[Any]) -> list[Any]:
    """The distinct values of a column in the sweep file's order (unknown ones appended)."""
    order = {str(v): i for i, v in enumerate(spec_values)}
    uniq = list(dict.fromkeys(series.tolist()))
    return sorted(uniq, key=lambda v: (order.get(str(v), len(order)), uniq.index(v)))


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _sweep_figures(plt: Any, save: Callable, sweep: SweepData) -> None:
    idx = sweep.index
    idx = idx[idx["status"].astype(str) == "finished"] if "status" in idx else idx
    keys = [k for k in sweep.matrix_keys if k in idx.columns and k not in POLICY_KEYS
            and idx[k].astype(str).nunique() > 1]  # a key with one value is no axis
    if not len(idx) or not keys:
        log.warning("sweep %s: no finished cells with a matrix key of several values: no sweep figures",
                    sweep.sweep_dir)
        return
    policies = list(dict.fromkeys(idx["policy"].astype(str)))
    if len(keys) > 1 and len(policies) > MAX_SWEEP_PANELS:
        log.warning("sweep heatmaps for the first %d of %d policies only", MAX_SWEEP_PANELS, len(policies))
        policies = policies[:MAX_SWEEP_PANELS]
    spec_m = sweep.spec.get("matrix", {})
    name = sweep.spec.get("name") or sweep.sweep_dir.name
    for metric, what in _SWEEP_METRICS.items():
        if metric not in idx or not idx[metric].notna().any():
            continue
        mult, unit = _metric_scale(metric, idx[metric])
        ylab = f"{what} ({unit})"
        if len(keys) == 1:
            _sweep_lines(plt, save, idx, keys[0], spec_m.get(keys[0], []), policies, metric, mult, ylab, name)
        else:
            _sweep_heatmaps(plt, save, idx, axis_keys(idx, keys, metric), spec_m, policies, metric, mult, ylab, name)


def axis_keys(idx: pd.DataFrame, keys: list[str], metric: str) -> list[str]:
    """``keys`` reordered for a two-key heatmap: the two whose main effect on ``metric`` is largest (range of
    the metric's mean over each key's values) first, in sweep order; the others after them (averaged over)."""
    def effect(k: str) -> float:
        m = idx.groupby(idx[k].astype(str))[metric].mean()
        return float(m.max() - m.min()) if m.notna().any() else 0.0

    top = sorted(sorted(keys, key=lambda k: -effect(k))[:2], key=keys.index)
    return [*top, *(k for k in keys if k not in top)]


KEY_WORDS = {"round.policy": "round policy", "round.k": "devices per round (k)",
             "round.deadline_factor": "deadline factor", "training.local_steps": "local steps per round",
             "training.rounds": "rounds", "seed": "seed", "algorithm.name": "strategy"}


def key_words(key: str) -> str:
    """A swept key in words: a known key's phrase (:data:`KEY_WORDS`), a strategy parameter as ``discount
    (strategy parameter)``, else its last part with spaces and its section in parentheses."""
    if key in KEY_WORDS:
        return KEY_WORDS[key]
    parts = key.split(".")
    last = parts[-1].replace("_", " ")
    if len(parts) >= 3 and parts[-2] == "params":
        return f"{last} (strategy parameter)"
    return f"{last} ({parts[0].replace('_', ' ')})" if len(parts) > 1 else last


MIN_COLOUR_SPAN = {100.0: 2.0}
"""Smallest span of a sweep heatmap's colour scale per metric multiplier: 2 points for percentages (below
that, cells differ by less than the noise of one accuracy reading); other metrics 2% of the mean."""


def colour_limits(values: np.ndarray, mult: float) -> tuple[float, float]:
    """(low, high) of a heatmap's colour scale: the values' range, widened symmetrically to at least
    :data:`MIN_COLOUR_SPAN` so that a tiny difference is not stretched from one end of the map to the other."""
    lo, hi = float(values.min()), float(values.max())
    span = MIN_COLOUR_SPAN.get(mult, 0.02 * abs((lo + hi) / 2))
    if hi - lo >= span:
        return lo, hi
    mid = (lo + hi) / 2
    return mid - span / 2, mid + span / 2


def _sweep_lines(plt: Any, save: Callable, idx: pd.DataFrame, key: str, spec_values: list[Any], policies: list[str],
                 metric: str, mult: float, ylab: str, name: str) -> None:
    numeric = _is_numeric(idx[key])
    cats = _categories(idx[key], spec_values)
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    offs, _ = _bar_offsets(len(policies), 0.5)
    for i, p in enumerate(policies):
        d = idx[idx["policy"].astype(str) == p]
        agg = d.groupby(key, sort=False)[metric].agg(["mean", _std])
        agg = agg.reindex([c for c in cats if c in agg.index])
        x = agg.index.to_numpy(dtype=float) if numeric else np.array([cats.index(c) for c in agg.index], dtype=float)
        o = np.argsort(x)
        x, m, s = x[o], agg["mean"].to_numpy()[o] * mult, agg["_std"].to_numpy()[o] * mult
        colour, marker = policy_style(p)
        if numeric:  # a line over the swept values, band ±1 std
            ax.plot(x, m, color=colour, marker=marker, lw=1.6, ms=6, label=p)
            if np.isfinite(s).any():
                ax.fill_between(x, m - np.nan_to_num(s), m + np.nan_to_num(s), color=colour, alpha=0.15, lw=0)
        else:  # categories: points side by side with error bars, no line between unrelated values
            ax.errorbar(x + offs[i], m, yerr=np.where(np.isfinite(s), s, 0.0), color=colour, marker=marker, ms=7,
                        ls="none", capsize=4, label=p)
    if numeric:
        vals = np.asarray(idx[key], dtype=float)
        if (vals > 0).all() and vals.max() / vals.min() >= 100:
            ax.set_xscale("log")
        if len(np.unique(vals)) <= 8:  # few swept values: tick exactly those
            ax.set_xticks(np.unique(vals))
            ax.set_xticklabels([f"{v:g}" for v in np.unique(vals)])
            ax.minorticks_off()
    else:
        _category_ticks(ax, [_fmt_value(c) for c in cats])
        ax.set_xlim(-0.5, len(cats) - 0.5)
        ax.grid(axis="x", visible=False)
    ax.set_xlabel(key_words(key))
    ax.set_ylabel(ylab)
    n_seeds = int(idx.groupby(["policy", key]).size().max())
    band = (", band ±1 std" if numeric else ", error bars ±1 std") if n_seeds > 1 else ""
    _title(ax, f"Sweep {name}: {_SWEEP_METRICS[metric]} vs {key_words(key)}", f"mean over seeds{band}", 6.5)
    _legend(fig, ax)
    save(fig, f"sweep_{metric}")


def _sweep_heatmaps(plt: Any, save: Callable, idx: pd.DataFrame, keys: list[str], spec_m: dict[str, list[Any]],
                    policies: list[str], metric: str, mult: float, ylab: str, name: str) -> None:
    k1, k2 = keys[:2]
    rows, cols = _categories(idx[k1], spec_m.get(k1, [])), _categories(idx[k2], spec_m.get(k2, []))
    mats = {}
    for p in policies:
        d = idx[idx["policy"].astype(str) == p]
        t = d.groupby([k1, k2], sort=False)[metric].mean().unstack(k2)
        mats[p] = t.reindex(index=rows, columns=cols).to_numpy(dtype=float) * mult
    allv = np.concatenate([m[np.isfinite(m)] for m in mats.values()])
    if not len(allv):
        return
    norm = _norm(plt, *colour_limits(allv, mult))
    hi = float(allv.max())
    cmap = plt.get_cmap("viridis").with_extremes(bad=_NO_DATA)
    n = len(mats)
    ncol = min(n, 2)
    nrow = math.ceil(n / ncol)
    w, h = max(3.6, 0.8 * len(cols) + 2.0), max(2.8, 0.5 * len(rows) + 1.8)
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol + 1.4, h * nrow + 0.6), layout="constrained",
                             squeeze=False, sharey=True, sharex=True)
    fmt = ".1f" if mult == 100.0 or hi >= 100 else ".3g"
    for ax, (p, m) in zip(axes.flat, mats.items()):
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        for (i, j), v in np.ndenumerate(m):
            if math.isfinite(v):
                lum = colorsys.rgb_to_hls(*cmap(norm(v))[:3])[1]
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=9,
                        color="black" if lum > 0.5 else "white")
        _category_ticks(ax, [_fmt_value(c) for c in cols])
        _category_ticks(ax, [_fmt_value(c) for c in rows], axis="y")
        ax.set_title(p)
        ax.grid(False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(key_words(k1))
    for ax in list(axes.flat)[max(0, n - ncol):n]:
        ax.set_xlabel(key_words(k2))
        ax.tick_params(axis="x", labelbottom=True)
    cb = fig.colorbar(im, ax=list(axes.flat), label=ylab)
    cb.formatter.set_useOffset(False)
    more = f" and over {', '.join(key_words(k) for k in keys[2:])}" if len(keys) > 2 else ""
    _title(fig, f"Sweep {name}: {_SWEEP_METRICS[metric]}", f"mean over seeds{more}", fig.get_figwidth())
    save(fig, f"sweep_{metric}")
