"""How well fedfleet's timing predicts measured steps, before and after fitting speed factors.

:func:`check` predicts every measurement at the datasheet calibration (speed factor 1) and again
with the factor fitted to its own board, precision and phase (:func:`devices.calibration.fit`),
and summarises:

* per point: measured and predicted seconds, ratio = predicted / measured, log residual ln(ratio);
* per board type: the median ratio and the worst (largest |ln ratio|), before and after fitting;
* board to board: where two boards share a workload within one series (same model, phase, sequence,
  trainable part, precision and weight type), the ratio of their seconds per sample (geometric mean
  over that board's points), measured against predicted.

:func:`format_check` renders it as plain text for ``fedfleet calibrate --check``.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from devices.calibration import FitKey, fit, step_terms
from devices.catalog import load_catalog
from devices.measurements import Measurement


@dataclass(frozen=True)
class PointCheck:
    """One measurement against its predictions."""

    m: Measurement
    measured_s: float
    before_s: float
    after_s: float
    compute_bound: bool

    @property
    def ratio_before(self) -> float:
        """Predicted / measured at the datasheet calibration."""
        return self.before_s / self.measured_s

    @property
    def ratio_after(self) -> float:
        """Predicted / measured with the fitted factor of this point's board, precision and phase."""
        return self.after_s / self.measured_s

    @property
    def log_residual_before(self) -> float:
        """ln(predicted / measured) at the datasheet calibration."""
        return math.log(self.ratio_before)

    @property
    def log_residual_after(self) -> float:
        """ln(predicted / measured) after fitting."""
        return math.log(self.ratio_after)


@dataclass(frozen=True)
class TypeSummary:
    """Median and worst (largest |ln ratio|) ratio of one board type's points of one phase."""

    board: str
    phase: str
    points: int
    median_before: float
    worst_before: float
    median_after: float
    worst_after: float


@dataclass(frozen=True)
class PairCheck:
    """Seconds per sample of board ``a`` over board ``b`` on a shared workload."""

    series: str
    workload: str
    a: str
    b: str
    measured: float
    before: float
    after: float


@dataclass(frozen=True)
class CheckReport:
    """Everything ``fedfleet calibrate --check`` prints."""

    points: tuple[PointCheck, ...]
    factors: dict[tuple[str, str, str], float]  # (board, precision, phase) -> fitted speed factor
    types: tuple[TypeSummary, ...]
    pairs: tuple[PairCheck, ...]


def _worst(ratios: list[float]) -> float:
    return max(ratios, key=lambda r: abs(math.log(r)))


def _summaries(points: list[PointCheck]) -> list[TypeSummary]:
    groups: dict[tuple[str, str], list[PointCheck]] = defaultdict(list)
    for p in points:
        groups[(p.m.board, p.m.phase)].append(p)
    order = {b: i for i, b in enumerate(load_catalog())}
    out = []
    for (board, phase), ps in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        before = [p.ratio_before for p in ps]
        after = [p.ratio_after for p in ps]
        out.append(TypeSummary(board, phase, len(ps), statistics.median(before), _worst(before),
                               statistics.median(after), _worst(after)))
    return out


def _workload_label(m: Measurement) -> str:
    trained = "" if m.phase != "train" else f" {'all' if m.trainable_layers is None else f'top:{m.trainable_layers}'}"
    return f"{m.model} {m.phase}{trained} seq {m.seq_len} {m.precision}/{m.weight_dtype}"


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _pairs(points: list[PointCheck]) -> list[PairCheck]:
    """Board-to-board ratios of seconds per sample within each (series, workload)."""
    groups: dict[tuple[str, str], dict[str, list[PointCheck]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        groups[(p.m.series, _workload_label(p.m))][p.m.board].append(p)
    order = {b: i for i, b in enumerate(load_catalog())}
    out = []
    for (series, label), by_board in sorted(groups.items()):
        def per_sample(ps: list[PointCheck], attr: str) -> float:
            return _geomean([getattr(p, attr) / p.m.batch for p in ps])

        for a, b in itertools.combinations(sorted(by_board, key=order.__getitem__), 2):
            pa, pb = by_board[a], by_board[b]
            out.append(PairCheck(series, label, a, b,
                                 measured=per_sample(pa, "measured_s") / per_sample(pb, "measured_s"),
                                 before=per_sample(pa, "before_s") / per_sample(pb, "before_s"),
                                 after=per_sample(pa, "after_s") / per_sample(pb, "after_s")))
    return out


def check(measurements: Iterable[Measurement]) -> CheckReport:
    """Predict every measurement before and after fitting (factors per board, precision and phase)."""
    ms = list(measurements)
    factors: dict[tuple[str, str, str], float] = {}
    for phase in sorted({m.phase for m in ms}):
        fitted: dict[FitKey, float] = fit(ms, phase)
        factors.update({(b, prec, phase): s for (b, prec), s in fitted.items()})
    points = []
    for m in ms:
        terms = step_terms(m)
        s = factors[(m.board, m.precision, m.phase)]
        points.append(PointCheck(m, m.measured_s(), terms.seconds(1.0), terms.seconds(s), terms.compute_bound))
    return CheckReport(tuple(points), factors, tuple(_summaries(points)), tuple(_pairs(points)))



def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the first column left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def _point_rows(report: CheckReport) -> list[tuple[str, ...]]:
    return [(p.m.id, p.m.board, p.m.power_mode or "default", p.m.phase, f"{p.measured_s:.4g}", f"{p.before_s:.4g}",
             f"{p.ratio_before:.3f}", f"{p.after_s:.4g}", f"{p.ratio_after:.3f}", f"{p.log_residual_after:+.3f}",
             "compute" if p.compute_bound else "memory") for p in report.points]


def format_check(report: CheckReport) -> str:
    """The check as plain text: points, fitted factors, per-type ratios, board-to-board ratios."""
    out = ["Predicted vs measured seconds per step (ratio = predicted / measured; 'after' uses the factor",
           "fitted to the point's board, precision and phase)", ""]
    out += _table(("id", "board", "mode", "phase", "measured_s", "before_s", "ratio_before", "after_s",
                   "ratio_after", "ln_resid_after", "bound"), _point_rows(report))
    out += ["", "Fitted speed factors (calibration.speed_factor)", ""]
    out += _table(("board", "precision", "phase", "speed_factor"),
                  [(b, prec, ph, f"{s:.6g}") for (b, prec, ph), s in sorted(report.factors.items())])
    out += ["", "Per board type: median and worst ratio, before and after fitting", ""]
    out += _table(("board", "phase", "points", "median_before", "worst_before", "median_after", "worst_after"),
                  [(t.board, t.phase, str(t.points), f"{t.median_before:.3f}", f"{t.worst_before:.3f}",
                    f"{t.median_after:.3f}", f"{t.worst_after:.3f}") for t in report.types])
    out += ["", "Board to board: seconds per sample of a over b on a shared workload", ""]
    out += _table(("series", "workload", "a / b", "measured", "before", "after"),
                  [(c.series, c.workload, f"{c.a} / {c.b}", f"{c.measured:.3f}", f"{c.before:.3f}",
                    f"{c.after:.3f}") for c in report.pairs])
    return "\n".join(out) + "\n"
