"""One self-contained HTML page for a run, a comparison of policies, or a sweep directory.

:func:`write_report` reads only the result files (``results/README.md``) and the figures it is
given, and writes ``report.html``: a header saying what the directory is, the summary table (the
:func:`sim.views.compare.compare_table` rows for runs and comparisons; for sweeps the per-cell index with
each cell's status and error, and the metrics aggregated over seeds as mean ± std), the figures
embedded inline as base64 PNG, then the resolved scenarios in collapsible blocks.

The page needs nothing from elsewhere (inline CSS, no fonts, no CDN, one tiny inline script that
reports undecodable images on the browser console) and holds no timestamps or absolute paths, so the
same results and figures give byte-identical pages.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from sim.store import atomic_write_text
from sim.views import templates
from sim.views.compare import column_or_nan, compare_table, fmt_acc, fmt_dur, fmt_num, grouped_runs, is_missing
from sim.views.findings import (LAST_SHARE, EvalFacts, GroupFindings, evaluation_facts, fastest_to_target,
                                group_findings)
from sim.views.results import (
    ResultsError,
    RunData,
    SweepData,
    collect,
    kind_of,
    load_sweep,
    read_json_object,
    read_yaml_mapping,
)

log = logging.getLogger(__name__)

#: Metric columns aggregated over seeds for sweeps: (index column, header, formatter of a float).
SWEEP_METRICS: list[tuple[str, str]] = [
    ("final_accuracy", "final acc (%)"),
    ("time_to_target_s", "time to target"),
    ("mean_idle_fraction", "mean idle (%)"),
    ("bytes_total", "MB moved"),
    ("final_mean_prune_ratio", "final sparsity"),
    ("mean_round_s", "mean round (s, sim.)"),
    ("sim_time_s", "simulated time"),
]

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 15px; line-height: 1.45; color: #1d1f23; background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6em; margin: 0 0 12px; overflow-wrap: anywhere; }
h2 { font-size: 1.25em; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d4da; }
h3 { font-size: 1.05em; margin: 20px 0 8px; }
p.note { color: #4a4f57; font-size: 0.92em; margin: 6px 0 12px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 8px; font-size: 0.87em; }
th, td { border: 1px solid #c9ced6; padding: 3px 7px; vertical-align: top; }
th { background: #eef1f5; text-align: left; font-weight: 600; }
tbody tr:nth-child(even) { background: #f7f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.num.pm { white-space: normal; min-width: 6ch; }
td.id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85em; }
td.err { color: #8a1c1c; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.88em;
  white-space: pre-wrap; overflow-wrap: anywhere; }
tr.failed td { background: #fdf0f0; }
.status-finished { color: #1f6f33; }
.status-failed { color: #8a1c1c; font-weight: 600; }
table.facts th { width: 12em; }
table.facts td { overflow-wrap: anywhere; }
figure { margin: 18px 0 26px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; border: 1px solid #e3e6ea; }
figcaption { text-align: center; font-size: 0.95em; color: #30343a; margin-top: 6px; }
figcaption .pdf { margin-left: 0.6em; font-size: 0.85em; color: #4a4f57; }
details { margin: 8px 0; border: 1px solid #d0d4da; border-radius: 4px; padding: 4px 10px; }
details > summary { cursor: pointer; font-weight: 600; padding: 2px 0; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 0.85em; line-height: 1.35;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
""".strip()

# Reports every image that cannot be decoded (broken or truncated data URI) on the browser console,
# so a headless browser run of the page catches it.
SCRIPT = """
window.addEventListener("load", function () {
  var ok = 0, bad = 0;
  document.querySelectorAll("img").forEach(function (img) {
    var fail = function (why) { console.error("report image failed to load: " + img.alt + " (" + why + ")"); };
    if (img.complete && img.naturalWidth > 0) { ok++; } else { bad++; fail("no pixels"); }
    img.decode().catch(function () { fail("not decodable"); });
  });
  document.body.setAttribute("data-images-ok", ok);
  document.body.setAttribute("data-images-bad", bad);
});
""".strip()


# ---------------------------------------------------------------------------------------------
# formatting


def fmt_value(v: Any) -> str:
    """A matrix value or index cell as short text (JSON for lists and dicts)."""
    v = v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    if is_missing(v):
        return "-"
    return str(v)


def caption_of(path: Path) -> str:
    """``accuracy_vs_time`` -> ``Accuracy vs time``."""
    words = path.stem.replace("_", " ").replace("-", " ").split()
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else path.name


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _header_html(h: str) -> str:
    """A column header; dotted keys may wrap after each dot."""
    return "<wbr>".join(_e(p) + ("." if i < h.count(".") else "") for i, p in enumerate(h.split(".")))


def html_table(headers: list[str], rows: Iterable[list[Any]], numeric: set[int] | None = None,
               row_classes: list[str] | None = None, cell_classes: dict[int, Any] | None = None,
               after: dict[int, str] | None = None) -> str:
    """An escaped HTML table inside a horizontally scrolling box. ``numeric``: right-aligned column indices;
    ``cell_classes``: column index -> class (or a function of the cell text); ``after``: row index -> raw HTML
    row(s) to insert after it."""
    numeric = numeric or set()
    cell_classes = cell_classes or {}
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f'<th{" class=num" if i in numeric else ""}>{_header_html(h)}</th>' for i, h in enumerate(headers)]
    out.append("</tr></thead><tbody>")
    for k, row in enumerate(rows):
        cls = row_classes[k] if row_classes and row_classes[k] else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for i, v in enumerate(row):
            c = "num" if i in numeric else cell_classes.get(i, "")
            if callable(c):
                c = c(v)
            out.append(f'<td class="{c}">{_e(v)}</td>' if c else f"<td>{_e(v)}</td>")
        out.append("</tr>")
        if after and k in after:
            out.append(after[k])
    out.append("</tbody></table></div>")
    return "".join(out)


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _details(summary: str, body_text: str, open_: bool = False) -> str:
    return (f'<details{" open" if open_ else ""}><summary>{_e(summary)}</summary>'
            f"<pre>{_e(body_text)}</pre></details>")


# ---------------------------------------------------------------------------------------------
# tables


COMPARE_HEADERS = ["policy", "algorithm", "final acc (%) ± SE", "majority class (%)", "time to target",
                   "mean idle (%)", "MB moved", "final sparsity", "rounds", "simulated time", "host time (s)"]


def compare_rows(df: pd.DataFrame) -> list[list[str]]:
    """The shown cells of a :func:`compare_table` (same formats as ``format_table``)."""
    rows = []
    for r, se, majority in zip(df.itertuples(index=False), column_or_nan(df, "final_accuracy_se"),
                               column_or_nan(df, "majority_rate")):
        rows.append([str(r.policy), str(r.algorithm), fmt_acc(r.final_accuracy, se),
                     fmt_num(100 * majority, 1), fmt_dur(r.time_to_target_s),
                     fmt_num(100 * r.mean_idle_fraction, 1), fmt_num(r.bytes_total / 1e6, 1),
                     fmt_num(r.final_sparsity, 3), fmt_value(r.rounds), fmt_dur(r.sim_time_s),
                     fmt_num(r.host_time_s, 1)])
    return rows


def target_note(df: pd.DataFrame) -> str:
    t = df.attrs.get("target_accuracy")
    if t is not None:
        return f"Target accuracy {100 * t:.1f}% ({df.attrs.get('target_source')})."
    return f"Target accuracy: {df.attrs.get('target_source', 'none')}; time to target is '-'."


UNITS_NOTE = ("Accuracy and idle fraction in percent; ± SE: the binomial standard error sqrt(a(1-a)/n) of one "
              "reading on the n evaluation examples; majority class: the accuracy of always answering the most "
              "frequent label; MB moved = bytes up + down (10^6 bytes); final sparsity = "
              "mean prune ratio of the last round; simulated durations in s (h above an hour). '-': not available.")
HOST_NOTE = "Host time: the wall-clock seconds the simulation itself took on its machine."


def _agg_cell(values: pd.Series, fmt) -> str:
    v = values.dropna().astype(float)
    if not len(v):
        return "-"
    if len(v) == 1:
        return fmt(float(v.iloc[0]))
    m, sd = float(v.mean()), float(v.std(ddof=1))
    if fmt is fmt_dur:  # mean and std in the same unit (the mean's)
        if m >= 3600:
            return f"{m / 3600:.2f} ±\u00a0{sd / 3600:.2f} h"
        return f"{m:.0f} ±\u00a0{sd:.0f} s"
    return f"{fmt(m)} ±\u00a0{fmt(sd)}"  # may wrap before the ±, not after


SWEEP_FORMATS = {
    "rounds_completed": lambda v: "-" if is_missing(v) else str(int(v)),
    "final_accuracy": lambda v: fmt_num(100 * v, 1),
    "time_to_target_s": fmt_dur,
    "mean_idle_fraction": lambda v: fmt_num(100 * v, 1),
    "bytes_total": lambda v: fmt_num(v / 1e6, 1),
    "final_mean_prune_ratio": lambda v: fmt_num(v, 3),
    "mean_round_s": lambda v: fmt_num(v, 1),
    "sim_time_s": fmt_dur,
}


INDEX_METRICS: list[tuple[str, str]] = [
    ("final_accuracy", "final acc (%)"),
    ("time_to_target_s", "time to target"),
    ("mean_idle_fraction", "mean idle (%)"),
    ("bytes_total", "MB moved"),
    ("final_mean_prune_ratio", "final sparsity"),
    ("rounds_completed", "rounds"),
    ("sim_time_s", "simulated time"),
]


def present_metrics(index: pd.DataFrame, metrics: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The metrics with a value in at least one finished cell (timing-only sweeps have no accuracy)."""
    fin = index[index["status"] == "finished"] if "status" in index else index.iloc[:0]
    return [(c, h) for c, h in metrics if c in fin and pd.to_numeric(fin[c], errors="coerce").notna().any()]


def sweep_index_table(index: pd.DataFrame, keys: list[str]) -> str:
    """One row per cell: values, seed, status, the headline metrics and the cell id; a failed cell's error
    on a full-width row below it."""
    metrics = present_metrics(index, INDEX_METRICS)
    headers = ["#", "policy", *keys, "seed", "status", *(h for _, h in metrics), "cell"]
    n0 = 2 + len(keys)
    numeric = {0, n0, *range(n0 + 2, n0 + 2 + len(metrics))}
    rows, classes, after = [], [], {}
    for k, (_, r) in enumerate(index.iterrows()):
        status = fmt_value(r.get("status"))
        err = r.get("error")
        vals = [SWEEP_FORMATS[c](_num(r.get(c))) for c, _ in metrics]
        rows.append([fmt_value(r.get("cell_index")), fmt_value(r.get("policy")), *(fmt_value(r.get(k_)) for k_ in keys),
                     fmt_value(r.get("seed")), status, *vals, fmt_value(r.get("cell_id"))])
        classes.append("" if status == "finished" else "failed")
        if not (is_missing(err) or str(err) == ""):
            after[k] = (f'<tr class="failed errrow"><td></td><td class="err" colspan="{len(headers) - 1}">'
                        f"error: {_e(err)}</td></tr>")
    return html_table(headers, rows, numeric, classes,
                      {n0 + 1: lambda s: f"status-{s}" if s in ("finished", "failed") else "",
                       len(headers) - 1: "id"}, after=after)


def _num(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def sweep_aggregate_table(index: pd.DataFrame, keys: list[str]) -> str:
    """Mean ± std (sample std over seeds) of each metric per policy and matrix values, finished cells only."""
    df = index.copy()
    group_cols = ["policy", *keys]
    for c in group_cols:
        df[f"_g_{c}"] = [fmt_value(v) for v in df[c]] if c in df else "-"
    gcols = [f"_g_{c}" for c in group_cols]
    metrics = present_metrics(index, SWEEP_METRICS)
    headers = [*group_cols, "finished / cells", "seeds", *(h for _, h in metrics)]
    rows = []
    for gkey, g in df.groupby(gcols, sort=False, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        ok = g[g["status"] == "finished"]
        seeds = ", ".join(fmt_value(s) for s in sorted(ok["seed"].unique())) if len(ok) else "-"
        cells = [_agg_cell(pd.to_numeric(ok[col], errors="coerce") if col in ok else pd.Series(dtype=float),
                           SWEEP_FORMATS[col]) for col, _ in metrics]
        rows.append([*gkey, f"{len(ok)} / {len(g)}", seeds, *cells])
    n0 = len(group_cols)
    return html_table(headers, rows, {n0}, cell_classes={i: "num pm" for i in range(n0 + 2, len(headers))})


# ---------------------------------------------------------------------------------------------
# scenarios


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def scenario_diff(base: dict, other: dict) -> list[str]:
    """``key: base -> other`` for every dotted key whose value differs (added/removed keys too)."""
    a, b = _flatten(base), _flatten(other)
    lines = []
    for k in list(a) + [k for k in b if k not in a]:
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            lines.append(f"{k}: {_short(a.get(k, '<absent>'))} -> {_short(b.get(k, '<absent>'))}")
    return lines


def _short(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v


def _read_yaml(p: Path) -> dict | None:
    """A YAML mapping, or None (with a warning naming the file, never quoting it) when it cannot be read."""
    try:
        return read_yaml_mapping(p)
    except ResultsError as e:
        log.warning("%s", e)
        return None


def _read_json(p: Path) -> dict | None:
    """A JSON object, or None when it cannot be read (the reason, which names the file, is logged at debug)."""
    try:
        return read_json_object(p)
    except ResultsError as e:
        log.debug("%s", e)
        return None


def _digest(d: dict | None) -> str:
    meta = (d or {}).get("_meta") or {}
    return str(meta.get("digest", ""))[:12]


def _no_meta(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "_meta"}


# ---------------------------------------------------------------------------------------------
# figures


def existing_figures(target: Path) -> list[Path]:
    """The PNG figures already in ``target/figures`` (drawn by ``fedfleet plot``), sorted by name."""
    folder = Path(target) / "figures"
    return sorted(p for p in folder.glob("*.png") if p.is_file()) if folder.is_dir() else []


def figures_html(figures: list[Path], target: Path, out: Path) -> tuple[str, int]:
    """Every PNG inline (base64 data URI) with a caption from its stem; PDF versions are named (where they
    lie beside the report), never linked: the page loads and links nothing outside itself. Returns (html,
    number of images embedded)."""
    pngs = [Path(f) for f in figures if Path(f).suffix.lower() == ".png"]
    pdfs = [Path(f) for f in figures if Path(f).suffix.lower() == ".pdf"]
    stems = [p.stem for p in pngs]
    origins = [_figure_origin(p, target) for p in pngs]
    grouped = len(set(origins)) > 1
    parts, n, last = [], 0, None
    for p, where in zip(pngs, origins):
        try:
            data = p.read_bytes()
        except OSError as e:
            log.warning("figure %s not embedded: %s", p.name, e)
            continue
        if grouped and where != last:
            parts.append(f"<h3>{_e(where or 'overview')}</h3>")
            last = where
        cap = caption_of(p) + (f" ({where})" if where and stems.count(p.stem) > 1 else "")
        pdf = p.with_suffix(".pdf")
        rel = _rel_path(pdf, out) if (pdf in pdfs or pdf.is_file()) else None
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{_e(cap)}" loading="eager">'
                     f"<figcaption>{_e(cap)}"
                     + (f' <span class="pdf">(PDF beside this page: <code>{_e(rel)}</code>)</span>' if rel else "")
                     + "</figcaption></figure>")
        n += 1
    extra = [(caption_of(q), _rel_path(q, out)) for q in pdfs if q.with_suffix(".png") not in pngs]
    extra = [(c, rel) for c, rel in extra if rel]
    if extra:
        parts.append("<p class=note>Other figures (PDF, beside this page): " + ", ".join(
            f"{_e(c)} (<code>{_e(rel)}</code>)" for c, rel in extra) + "</p>")
    if not parts:
        parts.append("<p class=note>No figures.</p>")
    return "".join(parts), n


def _figure_origin(p: Path, target: Path) -> str:
    """Where a figure comes from, relative to the target (its run folder, without ``plots``)."""
    skip = ("plots", "cells", "figures")
    try:
        rel = p.resolve().parent.relative_to(target.resolve())
    except ValueError:  # elsewhere: its folder's name only (never a host path)
        return "" if p.parent.name in skip else p.parent.name
    return "/".join(x for x in rel.parts if x not in skip)


def _rel_path(p: Path, out: Path) -> str | None:
    """``p`` relative to the report's folder if it exists there (shown as text, never as a link)."""
    if not p.is_file():
        return None
    try:
        rel = p.resolve().relative_to(out.resolve().parent)
    except ValueError:
        return None
    return rel.as_posix()


# ---------------------------------------------------------------------------------------------
# findings


def findings_html(runs: list[RunData], groups: list[str], seeds: list[int], target_acc: float | None) -> str:
    """The findings section (:mod:`sim.views.findings`) of ``runs``, tagged with their group (policy) and
    seed: the fastest policy to the target, who sets the round, idle and choices per device type, the
    dataset and evaluation facts, and the strategy parameters."""
    if not runs:
        return ""
    table = compare_table([r.run_dir for r in runs], target_acc, labels=groups)
    fastest = fastest_to_target(table, groups, seeds)
    by: dict[str, list[RunData]] = {}
    for r, g in zip(runs, groups):
        by.setdefault(g, []).append(r)
    found = [group_findings(g, rs) for g, rs in by.items()]
    rounds = [int(x) for f in found for c in f.choices.values() for x in c.rounds]
    return templates.render(
        "findings.html", fastest=fastest.sentence, setters=[_setter_line(f) for f in found if f.setters],
        type_rows=[row for f in found for row in _type_rows(f)], last_share=f"{100 * LAST_SHARE:.0f}%",
        last_rounds=("-" if not rounds else f"round {min(rounds)}" if min(rounds) == max(rounds)
                     else f"rounds {min(rounds)}-{max(rounds)}"),
        evaluation=_evaluation_rows(evaluation_facts(runs[0]), found), params=[_params_row(f) for f in found])


def _setter_line(f: GroupFindings) -> str:
    """``fedspine: tx2 sets the round in 4 of 4 rounds (100%); agx_xavier idles most (61%).``"""
    parts = [f"{t} in {k} of {n} rounds ({100 * k / n:.0f}%)" for t, (k, n) in f.setters.items()]
    line = f"{f.group}: the round is set by " + ", ".join(parts)
    if f.idle:
        t = max(f.idle, key=lambda x: (f.idle[x], x))
        line += f"; {t} idles most ({100 * f.idle[t]:.0f}% of each round)"
    return line + (f" (over {len(f.runs)} seeds)" if len(f.runs) > 1 else "") + "."


def _type_rows(f: GroupFindings) -> list[dict[str, str]]:
    types = sorted(set(f.idle) | set(f.choices) | set(f.setters))
    rows = []
    for t in types:
        k, n = f.setters.get(t, (0, next(iter(f.setters.values()), (0, 0))[1]))
        c = f.choices.get(t)
        rows.append({"policy": f.group, "type": t, "set": f"{k} of {n}" if n else "-",
                     "idle": fmt_num(100 * f.idle[t], 1) if t in f.idle else "-",
                     "prune": f"{c.prune_ratio:.2f} ({100 * c.prune_share:.0f}%)" if c else "-",
                     "rank": f"{c.lora_rank} ({100 * c.rank_share:.0f}%)" if c else "-"})
    return rows


def _evaluation_rows(facts: EvalFacts | None, found: list[GroupFindings]) -> list[tuple[str, str]]:
    if facts is None:
        return []

    def n(v: float) -> str:
        return "-" if is_missing(v) else f"{int(v)}"

    se = [(f.group, f.final_accuracy, facts.se_at(f.final_accuracy)) for f in found]
    se_text = "; ".join(f"{g}: {100 * a:.1f}% ± {100 * e:.1f}" for g, a, e in se if not is_missing(e))
    return [("dataset", facts.dataset), ("labels", facts.labels), ("model (trained proxy)", facts.model),
            ("training examples", n(facts.n_train)), ("test examples", n(facts.n_test)),
            ("evaluation examples per reading", n(facts.n_eval)),
            ("majority-class rate", "-" if is_missing(facts.majority_rate) else
             f"{100 * facts.majority_rate:.1f}% (always answering the most frequent label)"),
            ("final accuracy ± standard error", (se_text or "-")
             + " (binomial: sqrt(a(1-a)/n) on the n evaluation examples; two readings closer than about two "
               "standard errors are not told apart)")]


def _params_row(f: GroupFindings) -> dict[str, str]:
    given = f.runs[0].scenario.get("algorithm", {}).get("params") or {}

    def kv(d: dict) -> str:
        return ", ".join(f"{k}={_short(v)}" for k, v in d.items()) or "-"

    return {"policy": f.group, "algorithm": f.algorithm, "given": kv({k: v for k, v in f.params.items() if k in given}),
            "defaults": kv({k: v for k, v in f.params.items() if k not in given})}


# ---------------------------------------------------------------------------------------------
# the page


def _facts_table(facts: list[tuple[str, str]]) -> str:
    return ('<div class="scroll"><table class="facts"><tbody>'
            + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
            + "</tbody></table></div>")


def _versions(runs: list[RunData]) -> str:
    vs = []
    for r in runs:
        v = ((r.summary.get("host") or {}).get("versions") or {}).get("fedfleet")
        if v is not None and str(v) not in vs:
            vs.append(str(v))
    return ", ".join(vs) if vs else "unknown"


def _seeds(seeds: Iterable[Any]) -> str:
    s = sorted({int(x) for x in seeds if not is_missing(x)})
    return ", ".join(map(str, s)) if s else "-"


def _ordered_comparison(target: Path, runs: list[RunData]) -> list[RunData]:
    """Children in the order the comparison lists its policies (then any others by name)."""
    order: list[str] = []
    st = _read_json(target / "status.json") or {}
    order += [str(x) for x in st.get("policies") or []]
    sc = _read_yaml(target / "scenario.yaml") or {}
    order += [str(x) for x in (sc.get("policies") or {}) if str(x) not in order]
    pos = {k: i for i, k in enumerate(order)}
    return sorted(runs, key=lambda r: (pos.get(r.policy, len(pos)), r.policy))


def _run_section(target: Path, kind: str, target_acc: float | None) -> tuple[str, list[tuple[str, str]], str, str]:
    """(body html, facts, default title, scenarios html) for a run or a comparison."""
    runs = collect(target)
    if kind == "comparison":
        runs = _ordered_comparison(target, runs)
    table = compare_table([r.run_dir for r in runs], target_acc, labels=[r.policy for r in runs])
    first = runs[0].summary
    name = str(first.get("scenario") or target.name)
    facts = [("kind", kind), ("scenario", name), ("directory", target.name)]
    body = []
    if kind == "run":
        st = _read_json(target / "status.json") or {}
        facts += [("runs", "1"), ("algorithm", str(first.get("algorithm"))), ("status", str(st.get("status", "-")))]
        title = f"{name}: run {target.name}"
    else:
        st = _read_json(target / "status.json") or {}
        failures = st.get("failures") or {}
        listed = st.get("policies") or [r.policy for r in runs]
        facts += [("policies", ", ".join(r.policy for r in runs)),
                  ("runs", f"{len(runs)} finished of {len(listed)}"), ("status", str(st.get("status", "-")))]
        title = f"{name}: comparison of {len(runs)} policies"
        if failures:
            body.append("<h3>Failed policies</h3>" + html_table(
                ["policy", "error"], [[k, v] for k, v in failures.items()], cell_classes={1: "err"}))
    facts += [("seeds", _seeds(r.seed for r in runs)), ("devices", fmt_value(first.get("n_devices"))),
              ("learning", fmt_value(first.get("learning"))), ("fedfleet version", _versions(runs))]
    rows = compare_rows(table)
    summary = ("<h2>Summary</h2>" + html_table(COMPARE_HEADERS, rows, set(range(2, len(COMPARE_HEADERS))))
               + f"<p class=note>{_e(target_note(table))} {_e(UNITS_NOTE)} {_e(HOST_NOTE)}</p>" + "".join(body))
    # scenarios
    sc = []
    if kind == "comparison":
        parent = _read_yaml(target / "scenario.yaml")
        if parent is not None:
            sc.append(_details(f"comparison scenario (resolved, with its policies; digest {_digest(parent) or '-'})",
                               _yaml(_no_meta(parent)), open_=False))
    for r in runs:
        raw = _read_yaml(r.run_dir / "scenario.yaml") or {}
        label = "resolved scenario" if kind == "run" else f"{r.policy}: resolved scenario"
        sc.append(_details(f"{label} (digest {_digest(raw) or '-'})", _yaml(r.scenario)))
    return summary, facts, title, "".join(sc)


def _sweep_section(target: Path, target_acc: float | None) -> tuple[str, list[tuple[str, str]], str, str]:
    sw: SweepData = load_sweep(target)
    keys = [k for k in sw.matrix_keys]
    index = sw.index.copy()
    if "cell_index" in index:
        index = index.sort_values("cell_index", kind="stable").reset_index(drop=True)
    runs = sw.runs()
    note = "Time to target as recorded by each cell (training.target_accuracy)."
    if runs:
        try:
            table = compare_table([r.run_dir for r in runs], target_acc, labels=[r.run_dir.name for r in runs])
            ttt = dict(zip(table["policy"], table["time_to_target_s"]))
            index["time_to_target_s"] = [ttt.get(c, _num(v)) if s == "finished" else _num(v) for c, v, s in
                                         zip(index["cell_id"], index.get("time_to_target_s", [math.nan] * len(index)),
                                             index["status"])]
            note = target_note(table)
        except (OSError, KeyError, ValueError) as e:
            log.warning("time to target from the sweep index (cells not readable: %s)", e)
    if "bytes_total" not in index:
        index["bytes_total"] = math.nan
    n_fin = int((index["status"] == "finished").sum())
    n_failed = int((index["status"] == "failed").sum()) if "status" in index else 0
    name = str(sw.spec.get("name") or target.name)
    facts = [("kind", "sweep"), ("sweep", name), ("directory", target.name),
             ("cells", f"{len(index)} ({n_fin} finished, {n_failed} failed, "
                       f"{len(index) - n_fin - n_failed} other)"),
             ("policies", ", ".join(dict.fromkeys(fmt_value(p) for p in index["policy"])) if len(index) else "-"),
             ("matrix", "; ".join(f"{k}: {', '.join(fmt_value(v) for v in vs)}"
                                  for k, vs in (sw.spec.get("matrix") or {}).items()) or "-"),
             ("seeds", _seeds(sw.spec.get("seeds") or index.get("seed", []))),
             ("fedfleet version", _versions(runs))]
    if sw.spec.get("set"):
        facts.insert(5, ("set", "; ".join(f"{k}: {fmt_value(v)}" for k, v in sw.spec["set"].items())))
    title = f"{name}: sweep of {len(index)} cells"
    body = ["<h2>Metrics over seeds</h2>",
            "<p class=note>Mean ± sample standard deviation over the finished seeds of each policy and matrix "
            "values (a single value when one seed finished). Metrics that no cell has (accuracy in "
            "timing-only runs) are left out.</p>",
            sweep_aggregate_table(index, keys),
            f"<p class=note>{_e(note)} {_e(UNITS_NOTE)}</p>",
            "<h2>Cells</h2>", sweep_index_table(index, keys)]
    # scenarios: the spec, the first cell's scenario in full, then each other cell's differences
    sc = [_details("sweep spec (sweep.json)", _yaml(sw.spec), open_=False)]
    cell_sc: list[tuple[str, dict]] = []
    for cid in index["cell_id"] if "cell_id" in index else []:
        d = _read_yaml(target / "cells" / str(cid) / "scenario.yaml")
        if d is not None:
            cell_sc.append((str(cid), _no_meta(d)))
    if cell_sc:
        base_id, base = cell_sc[0]
        sc.append(_details(f"resolved scenario of the first cell ({base_id})", _yaml(base)))
        diffs = []
        for cid, d in cell_sc[1:]:
            lines = scenario_diff(base, d)
            diffs.append(f"{cid}:\n" + ("".join(f"  {x}\n" for x in lines) if lines else "  (identical)\n"))
        if diffs:
            sc.append(_details(f"differences of the other {len(diffs)} cells from the first (key: first -> cell)",
                               "\n".join(diffs)))
    return "".join(body), facts, title, "".join(sc)


def render_report(target: Path, figures: list[Path], out: Path, *, target_acc: float | None = None,
                  title: str | None = None) -> str:
    """The HTML text of the report (see :func:`write_report`), rendered from :mod:`sim.views.templates`."""
    target = Path(target)
    kind = kind_of(target)
    if kind == "sweep":
        body, facts, default_title, scen = _sweep_section(target, target_acc)
    else:
        body, facts, default_title, scen = _run_section(target, kind, target_acc)
    runs, groups, seeds = _tagged_runs(target, kind)
    figs, n = figures_html(list(figures), target, out)
    title = title or default_title
    facts.append(("generated", "by sim.views.report from the result files only (no timestamps, no host paths)"))
    safe = templates.safe
    return templates.render("page.html", title=title, css=safe(CSS), script=safe(SCRIPT),
                            facts=safe(_facts_table(facts)),
                            findings=safe(findings_html(runs, groups, seeds, target_acc)), body=safe(body),
                            n_figures=n, figures=safe(figs), scenarios=safe(scen))


def _tagged_runs(target: Path, kind: str) -> tuple[list[RunData], list[str], list[int]]:
    """The finished runs of ``target`` with their group (policy; for a sweep, policy and matrix values) and
    seed, in the order the summary table lists them."""
    if kind == "sweep":
        found = grouped_runs([target]) if load_sweep(target).runs() else []
        runs = [RunData(d, g, seed) for d, g, seed in found]
    else:
        runs = collect(target)
        if kind == "comparison":
            runs = _ordered_comparison(target, runs)
    return runs, [r.policy for r in runs], [r.seed for r in runs]


def write_report(target: Path, figures: list[Path], out: Path | None = None, *, target_acc: float | None = None,
                 title: str | None = None) -> Path:
    """Write one self-contained HTML page for ``target`` (a run, comparison or sweep directory).

    ``figures``: PNG files to embed inline (PDFs are not embedded; one lying under the report's folder is
    linked relatively). ``out`` defaults to ``target / "report.html"``; it is written atomically and
    returned. ``target_acc`` overrides the target accuracy of the time-to-target column; ``title`` the
    page title. The same results and figures always give the same bytes."""
    target = Path(target)
    out = Path(out) if out is not None else target / "report.html"
    text = render_report(target, [Path(f) for f in figures], out, target_acc=target_acc, title=title)
    atomic_write_text(out, text)
    log.info("report written: %s (%d bytes)", out, len(text))
    return out
