"""Comparison tables: one row per run, over run directories, comparisons and sweeps.

:func:`compare_table` reads run directories (``summary.json`` + ``rounds.parquet``) and gives one row
per run: final accuracy, simulated time to a target accuracy, the fastest device's idle fraction per
round (``mean_idle_fastest`` of ``summary.json``: ``1 - T_min / T_max`` over the devices that reported,
the paper's idle figure), the mean idle fraction per round (``mean_idle_fraction``: the mean over the
reporting devices), bytes communicated, final sparsity. A run written before ``mean_idle_fastest``
existed shows it as missing (``-``). The target accuracy is ``--target-acc`` if given, else the scenario's
``training.target_accuracy``, else the highest accuracy that every compared run reached (so each
run has a time to it) -- but never an automatic target at or below the majority-class rate
(``learning_info.majority_rate``: what always answering the most frequent label scores); then there is
no target and the note says why. Each accuracy carries its binomial standard error
``sqrt(a (1 - a) / n_eval)`` (one reading on ``n_eval`` examples) and stands beside the majority rate.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sim.views.results import (automatic_target, binomial_se, did_you_mean, eval_size, highest_majority, load_sweep,
                               majority_rate, read_json_object, read_table, time_to_target)
from sim.views.stats import paired_difference, seed_stats

COLUMNS = ["policy", "algorithm", "final_accuracy", "time_to_target_s", "mean_idle_fastest", "mean_idle_fraction",
           "bytes_total", "final_sparsity", "rounds", "sim_time_s", "host_time_s", "final_accuracy_se", "majority_rate",
           "n_eval"]


def expand_runs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths``: a run directory itself, the child runs of a comparison, or the
    finished cells of a sweep (in cell order)."""
    return [d for d, _ in labelled_runs(paths)]


def labelled_runs(paths: list[Path]) -> list[tuple[Path, str]]:
    """Like :func:`expand_runs`, with a label per run: a comparison child's policy label; a separate run's
    ``scenario algorithm`` (its group); a sweep cell's ``policy key=value ... seed N`` (the matrix keys
    shortened to their last component). A label shared by several runs gets ``seed N``, and one still shared
    its run directory's name."""
    found = _runs_with_groups(paths)
    groups = [g for _, g, _, _ in found]
    labels = [f"{g} seed {seed}" if sweep or groups.count(g) > 1 else g for _, g, seed, sweep in found]
    labels = [f"{lab} ({d.name})" if labels.count(lab) > 1 else lab for (d, *_), lab in zip(found, labels)]
    return list(zip((d for d, *_ in found), labels))


def grouped_runs(paths: list[Path]) -> list[tuple[Path, str, int]]:
    """Run directories among ``paths`` with the group each belongs to and its seed: a sweep cell's group
    is ``policy key=value ...``, a comparison child's its policy label, a single run's its scenario
    name and algorithm. Runs of one group that differ only in seed are what :func:`seed_table` pools."""
    return [(d, g, seed) for d, g, seed, _ in _runs_with_groups(paths)]


def _runs_with_groups(paths: list[Path]) -> list[tuple[Path, str, int, bool]]:
    out: list[tuple[Path, str, int, bool]] = []
    for p in paths:
        p = Path(p)
        if (p / "sweep.parquet").is_file():
            sw = load_sweep(p)
            for rd in sw.runs():
                vals = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in rd.values.items())
                out.append((rd.run_dir, " ".join(x for x in (rd.policy, vals) if x), rd.seed, True))
            if not out:
                raise FileNotFoundError(f"{p}: a sweep with no finished cell yet")
            continue
        if (p / "summary.json").is_file():
            out.append((p, _scenario_label(p), _seed_of(p), False))
            continue
        kids = sorted(c for c in p.iterdir() if (c / "summary.json").is_file()) if p.is_dir() else []
        if not kids:
            raise FileNotFoundError(f"{p}: not a run directory (no summary.json), a comparison of runs, nor a sweep")
        out.extend((k, k.name, _seed_of(k), False) for k in kids)
    return out


def _scenario_label(run_dir: Path) -> str:
    """A separate run's group: ``scenario algorithm`` from its ``summary.json`` (the run id when neither is
    recorded), so runs of one scenario on several seeds pool and the table names what ran."""
    s = read_json_object(run_dir / "summary.json")
    words = [str(s[k]) for k in ("scenario", "algorithm") if isinstance(s.get(k), str) and s.get(k)]
    return " ".join(words) or run_dir.name


def _seed_of(run_dir: Path) -> int:
    """The run's seed (``summary.json`` ``seed``, else 0)."""
    v = read_json_object(run_dir / "summary.json").get("seed")
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else 0


def compare_table(run_dirs: list[Path], target_acc: float | None = None, labels: list[str] | None = None) -> pd.DataFrame:
    """One row per run (see the module docstring). ``df.attrs['target_accuracy']`` holds the target used
    and ``df.attrs['target_source']`` where it came from."""
    rows, frames, summaries = [], [], []
    for i, d in enumerate(run_dirs):
        d = Path(d)
        s = read_json_object(d / "summary.json")
        r = read_table(d / "rounds.parquet")
        frames.append(r)
        summaries.append(s)
        acc = summary_number(s, "final_accuracy", d)
        rows.append({
            "policy": labels[i] if labels else d.name,
            "algorithm": s.get("algorithm"),
            "final_accuracy": acc,
            "time_to_target_s": math.nan,
            "mean_idle_fastest": summary_number(s, "mean_idle_fastest", d),
            "mean_idle_fraction": summary_number(s, "mean_idle_fraction", d),
            "bytes_total": int(s.get("bytes_up_total", 0)) + int(s.get("bytes_down_total", 0)),
            "final_sparsity": s.get("final_mean_prune_ratio") if s.get("final_mean_prune_ratio") is not None else math.nan,
            "rounds": s.get("rounds_completed"),
            "sim_time_s": s.get("sim_time_s"),
            "host_time_s": (s.get("host") or {}).get("host_time_s", math.nan),
            "final_accuracy_se": binomial_se(acc, eval_size(s)),
            "majority_rate": majority_rate(s),
            "n_eval": eval_size(s),
            "_target": s.get("target_accuracy"),
        })
    df = pd.DataFrame(rows, columns=[*COLUMNS, "_target"])
    target_acc, source = _pick_target(target_acc, df["_target"], frames, highest_majority(summaries))
    if target_acc is not None:
        df["time_to_target_s"] = [time_to_target(f, target_acc) for f in frames]
    df = df.drop(columns="_target")
    df.attrs["target_accuracy"] = target_acc
    df.attrs["target_source"] = source
    return df


def _pick_target(explicit: float | None, scenario_targets, frames: list[pd.DataFrame],
                 majority: float) -> tuple[float | None, str]:
    """``explicit`` (``--target-acc``), else the first run's ``training.target_accuracy``, else the
    automatic target of :func:`sim.views.results.automatic_target` (None when every run has no
    accuracy, or when the highest accuracy every run reached is at or below ``majority``)."""
    if explicit is not None:
        return float(explicit), "--target-acc"
    given = [t for t in scenario_targets if t is not None and not (isinstance(t, float) and math.isnan(t))]
    if given:
        return float(given[0]), "training.target_accuracy"
    best = [float(f["accuracy"].max()) for f in frames if "accuracy" in f and f["accuracy"].notna().any()]
    if not best or len(best) != len(frames):
        return None, "no accuracy (timing-only runs)"
    return automatic_target(best, majority)


FORMATS = ("text", "md", "csv", "latex")


def format_table(df: pd.DataFrame, fmt: str = "text") -> str:
    """The table as aligned text, GitHub markdown, CSV (full precision) or LaTeX (a ``booktabs``
    ``table`` with the target accuracy in the caption; text escaped for LaTeX). Each column has one unit,
    named in its header; host seconds appear in the text form only."""
    if fmt == "csv":
        return df.to_csv(index=False)
    shown = pd.DataFrame({
        "policy": df["policy"],
        "algorithm": df["algorithm"],
        "final acc %": [fmt_acc(a, se) for a, se in zip(df["final_accuracy"], column_or_nan(df, "final_accuracy_se"))],
        "majority %": [fmt_num(100 * v, 1) for v in column_or_nan(df, "majority_rate")],
        **_duration_column("time to target", df["time_to_target_s"]),
        "fastest idle %": [fmt_num(100 * v, 1) for v in df["mean_idle_fastest"]],
        "mean idle %": [fmt_num(100 * v, 1) for v in df["mean_idle_fraction"]],
        "MB moved": [fmt_num(v / 1e6, 1) for v in df["bytes_total"]],
        "final sparsity": [fmt_num(v, 3) for v in df["final_sparsity"]],
        "rounds": df["rounds"].astype(str),
        **_duration_column("simulated", df["sim_time_s"]),
    })
    if fmt == "text":  # host seconds measure the machine: in the terminal, not in a paper's table
        shown["host s"] = [fmt_num(v, 1) for v in df["host_time_s"]]
    t = df.attrs.get("target_accuracy")
    note = (f"target accuracy {100 * t:.1f}% ({df.attrs.get('target_source')})" if t is not None
            else f"target accuracy: {df.attrs.get('target_source', 'none')}")
    return format_table_cells(shown, note, fmt)


def format_table_cells(shown: pd.DataFrame, note: str, fmt: str) -> str:
    """Cells already formatted as text, as aligned text, GitHub markdown or LaTeX, with ``note`` below."""
    if fmt == "latex":
        return _latex(shown, note)
    if fmt == "md":
        head = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
        body = "".join("| " + " | ".join(map(str, r)) + " |\n" for r in shown.itertuples(index=False))
        return f"{head}{body}\n{note}\n"
    widths = [max(len(c), *(len(str(v)) for v in shown[c])) for c in shown.columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(shown.columns, widths))]
    lines += ["  ".join(str(v).rjust(w) for v, w in zip(r, widths)) for r in shown.itertuples(index=False)]
    return "\n".join(lines) + f"\n{note}\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                  "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _latex(shown: pd.DataFrame, note: str) -> str:
    """``\\usepackage{booktabs}``: text columns left, numbers right."""
    align = "".join("l" if c in ("policy", "algorithm") else "r" for c in shown.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in shown.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in r) + r" \\" for r in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{fedfleet comparison; {latex_escape(note)}.}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def summary_number(summary: dict, key: str, run_dir: Path) -> float:
    """``summary[key]`` as a float, NaN when the run does not have it (None or absent); anything but a
    number is refused with a ValueError naming the file, the key and the value."""
    v = summary.get(key)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{run_dir / 'summary.json'}: {key} = {v!r}; allowed: a number or null")
    return float(v)


def is_missing(v) -> bool:
    """True for None and float NaN (a metric a run does not have)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_num(v, nd: int) -> str:
    """``v`` with ``nd`` decimals, ``-`` when missing."""
    return "-" if is_missing(v) else f"{float(v):.{nd}f}"


def _duration_column(name: str, seconds: pd.Series) -> dict[str, list[str]]:
    """A column of simulated durations in one unit named in its header: hours (two decimals) when the
    longest is an hour or more, else whole seconds."""
    finite = [float(v) for v in seconds if not is_missing(v)]
    if finite and max(finite) >= 3600:
        return {f"{name} (h)": [fmt_num(None if is_missing(v) else float(v) / 3600, 2) for v in seconds]}
    return {f"{name} (s)": [fmt_num(v, 0) for v in seconds]}


def column_or_nan(df: pd.DataFrame, name: str) -> list:
    """Column ``name`` of ``df``, all NaN when absent (tables built before it existed)."""
    return list(df[name]) if name in df else [math.nan] * len(df)


def fmt_acc(acc, se) -> str:
    """An accuracy in percent with one decimal, ``± SE`` (binomial standard error, percent) when known."""
    if is_missing(acc):
        return "-"
    return f"{100 * float(acc):.1f}" + ("" if is_missing(se) else f" ± {100 * float(se):.1f}")


def fmt_dur(v) -> str:
    """A simulated duration: whole seconds below an hour, hours with two decimals above; ``-`` when missing."""
    if is_missing(v):
        return "-"
    v = float(v)
    return f"{v / 3600:.2f} h" if v >= 3600 else f"{v:.0f} s"


# ---------------------------------------------------------------------------------------------
# over seeds: mean ± std, n, and paired differences against a reference group

SEED_METRICS = {"final_accuracy": ("final acc", "%", 100.0, 1), "time_to_target_s": ("time to target", "s", 1.0, 0),
                "mean_idle_fastest": ("fastest idle", "%", 100.0, 1), "bytes_total": ("moved", "MB", 1e-6, 1),
                "sim_time_s": ("simulated", "s", 1.0, 0)}


def seed_table(df: pd.DataFrame, groups: list[str], seeds: list[int], reference: str | None = None) -> pd.DataFrame:
    """One row per group of a :func:`compare_table` (its rows tagged with ``groups`` and ``seeds``): for
    each metric of :data:`SEED_METRICS` the mean, std and n over seeds, and the paired difference
    against ``reference`` (default: the first group) with its 95% t interval and a ``within_noise``
    flag (:func:`sim.views.stats.paired_difference`). ``attrs['reference']`` names the reference."""
    if len(groups) != len(df) or len(seeds) != len(df):
        raise ValueError("seed_table: one group and one seed per row")
    order = list(dict.fromkeys(groups))
    reference = reference if reference is not None else order[0]
    if reference not in order:
        raise ValueError(f"reference {reference!r}; allowed: {', '.join(order)}{did_you_mean(reference, order)}")
    by = {g: {m: {} for m in SEED_METRICS} for g in order}
    for g, seed, (_, row) in zip(groups, seeds, df.iterrows()):
        for m in SEED_METRICS:
            by[g][m][int(seed)] = float(row[m]) if not is_missing(row[m]) else math.nan
    rows = []
    for g in order:
        row: dict = {"policy": g}
        for m in SEED_METRICS:
            st = seed_stats(list(by[g][m].values()))
            pd_ = paired_difference(by[g][m], by[reference][m])
            row |= {f"{m}_mean": st.mean, f"{m}_std": st.std, f"{m}_n": st.n, f"{m}_diff": pd_.mean,
                    f"{m}_diff_low": pd_.low, f"{m}_diff_high": pd_.high, f"{m}_diff_n": pd_.n,
                    f"{m}_within_noise": pd_.within_noise if g != reference else None}
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs = {**df.attrs, "reference": reference}
    return out


def format_seed_table(st: pd.DataFrame, fmt: str = "text") -> str:
    """:func:`seed_table` shown: per metric ``mean ± std`` (one unit per column, in its header), ``n``,
    and ``Δ vs REF [low, high]`` with ``(within noise)`` when the interval contains 0. Host time is
    left out (it measures the machine, not the policy). CSV gives every number at full precision."""
    if fmt == "csv":
        return st.to_csv(index=False)
    ref = st.attrs.get("reference")
    shown = {"policy": list(st["policy"])}
    for m, (name, unit, scale, nd) in SEED_METRICS.items():
        if st[f"{m}_n"].sum() == 0:
            continue
        shown[f"{name} ({unit})"] = [_pm(r[f"{m}_mean"], r[f"{m}_std"], scale, nd) for _, r in st.iterrows()]
        shown[f"{name} n"] = [str(int(v)) for v in st[f"{m}_n"]]
        shown[f"Δ {name} vs {ref} ({unit}), 95% CI"] = [_diff(r, m, scale, nd, r["policy"] == ref)
                                                        for _, r in st.iterrows()]
    t = st.attrs.get("target_accuracy")
    note = (f"mean ± std over seeds; Δ: paired difference against {ref} over the seeds both ran, with its 95% "
            f"t interval ('within noise': the interval contains 0); target accuracy "
            + (f"{100 * t:.1f}% ({st.attrs.get('target_source')})" if t is not None
               else str(st.attrs.get("target_source", "none"))))
    return format_table_cells(pd.DataFrame(shown), note, fmt)


def _pm(mean: float, std: float, scale: float, nd: int) -> str:
    if is_missing(mean):
        return "-"
    return f"{scale * mean:.{nd}f}" + ("" if is_missing(std) else f" ± {scale * std:.{nd}f}")


def _diff(r: pd.Series, m: str, scale: float, nd: int, is_ref: bool) -> str:
    if is_ref:
        return "reference"
    if is_missing(r[f"{m}_diff"]):
        return "-"
    d = f"{scale * r[f'{m}_diff']:+.{nd}f}"
    if is_missing(r[f"{m}_diff_low"]):
        return f"{d} (n={int(r[f'{m}_diff_n'])}, no interval)"
    lo, hi = sorted((scale * r[f"{m}_diff_low"], scale * r[f"{m}_diff_high"]))
    return f"{d} [{lo:+.{nd}f}, {hi:+.{nd}f}]" + (" within noise" if r[f"{m}_within_noise"] else "")


def compare_paths(paths: list[Path], target_acc: float | None = None,
                  reference: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """What ``fedfleet compare PATHS`` shows: the per-run :func:`compare_table` (labelled as
    :func:`labelled_runs`, with ``group`` and ``seed`` columns) and, when some group holds several
    seeds (each once), its :func:`seed_table` against ``reference``; else None."""
    found = grouped_runs(paths)
    groups, seeds = [g for _, g, _ in found], [seed for _, _, seed in found]
    pooled = len(set(zip(groups, seeds))) == len(found) and len(set(groups)) < len(found)
    table = compare_table([d for d, _, _ in found], target_acc, labels=[lab for _, lab in labelled_runs(paths)])
    table["group"], table["seed"] = groups, seeds
    return table, (seed_table(table, groups, seeds, reference) if pooled else None)
