"""fedfleet's prediction for a measured step, and the per-board calibration fitted to measurements.

**Prediction.** A ``train`` measurement is one step of the stated model, batch and sequence length
with adapters/LoRA in the stated top K layers (``Plan.lora_layers``), priced by the cost model
(:func:`devices.cost.plan_cost`) and timed by :meth:`devices.timing.DeviceProfile.step_time_s`::

    t(s) = max(F / (eta P s), B / (eta_mem BW s)) + n_kernels tau_launch (f_ref / f_cpu) c_cores
         = R / s + O

with F, B, n_kernels from the cost model, eta, P, eta_mem, BW from the catalog for the stated (or
default) power mode and precision, and s the ``speed_factor`` of a scenario group's calibration.
``infer`` and ``decode`` measurements use a forward-only cost (:func:`forward_cost`). ``int8``
(TensorRT) points are timed on the FP16 tensor-core peak: the catalog has no INT8 peak, and on Volta
and Ampere the INT8 tensor-core rate is twice the FP16 rate on every board, so board-to-board ratios
are unchanged and a fitted factor for (board, int8) absorbs the constant 2.

**Fit.** For one board type and precision with points i (roofline R_i and overhead O_i at s = 1,
measured m_i), the fitted speed factor minimises the squared log error::

    J(u) = sum_i (ln(R_i e^-u + O_i) - ln m_i)^2,    s = e^u

The overhead makes this non-linear in s; :func:`fit_speed_factor` finds the grid minimum of J over
ln s in [-20, 20], refines it, then bisects dJ/du = -2 sum_i r_i c_i (c_i = R_i e^-u / (R_i e^-u + O_i), the
roofline share of point i) to |du| < 1e-13, i.e. s to a relative 1e-13. The factor is the scenario
key ``calibration.speed_factor`` (it multiplies the achieved FLOP/s and bandwidth; the efficiencies
stay the catalog's), so a fitted block drops into a group's ``calibration:`` unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import yaml

from devices.cost import PlanCost, plan_cost
from devices.measurements import COMPILED_FRAMEWORKS, Measurement
from devices.plan import Plan, top_layers
from devices.timing import DeviceProfile
from devices.workload import Workload

FitKey = tuple[str, str]
"""(board type id, precision as measured)."""
LOG_FACTOR_RANGE = 20.0
GRID_POINTS = 801
BISECT_TOL = 1e-13
FACTOR_DIGITS = 6


class CalibrationError(ValueError):
    """Measurements that cannot be fitted (e.g. faster than the model's kernel-overhead floor)."""


def compute_precision(precision: str) -> str:
    """Catalog precision a measured precision is timed at: ``int8`` on the FP16 path, else itself."""
    return "fp16" if precision == "int8" else precision


def workload(m: Measurement) -> Workload:
    """The fixed part of ``m``'s work: classification head on encoders, frozen LM head on decoders."""
    arch = m.arch
    return Workload(arch=arch, seq_len=1 if m.phase == "decode" else m.seq_len,
                    precision=compute_precision(m.precision), weight_dtype=m.weight_dtype,
                    task="lm" if arch.is_decoder else "classification")


def _lora_cost(m: Measurement, depth: int | None, rank: int) -> PlanCost:
    w = workload(m)
    layers = None if depth is None else top_layers(depth, w.arch.num_layers)
    plan = Plan(prune_ratio=0.0, lora_rank=rank, lora_layers=layers, local_steps=1, batch_size=m.batch)
    return plan_cost(w, plan, w.precision)


def forward_cost(m: Measurement) -> PlanCost:
    """Forward-only cost of ``m``: the training cost model extrapolated to zero backward layers.

    Every per-step quantity of the training model is linear in the number of backward layers d
    (LoRA on the top d layers): F_fwd(d) = F_base + d b s F_lora, B(d) = W_read (1 + d / L) + 2 d A,
    n_kernels(d) = 20 (L + 2 d). So X(0) = 2 X(1) - X(2) is exact: F_base (no adapter FLOPs), W_read
    (every weight read once) and 20 L kernels. To B we add 2 L A: an inference pass writes and reads
    each layer's activations once (A = the per-layer activation bytes of the training model). A
    ``decode`` step is this pass over one new token per sequence (seq 1); attention over the cached
    context and the key/value-cache reads are not modelled (small next to the weights for short
    contexts).
    """
    one, two = _lora_cost(m, 1, 1), _lora_cost(m, 2, 1)
    layers = m.arch.num_layers
    act_per_layer = one.memory_activations_bytes / one.backward_layers
    return dataclasses.replace(
        one, flops_fwd=2 * one.flops_fwd - two.flops_fwd, flops_bwd=0.0,
        bytes_moved=2 * one.bytes_moved - two.bytes_moved + 2 * layers * act_per_layer,
        kernels=2 * one.kernels - two.kernels, backward_layers=0)


def step_cost(m: Measurement) -> PlanCost:
    """Cost of the measured step: LoRA/adapters in the top K layers (train) or forward-only."""
    if m.phase == "train":
        return _lora_cost(m, m.trainable_layers, m.rank)
    return forward_cost(m)


@dataclass(frozen=True)
class StepTerms:
    """A predicted step split as t(s) = roofline_s / s + overhead_s (s = speed factor)."""

    roofline_s: float
    overhead_s: float
    compute_bound: bool

    def seconds(self, speed_factor: float = 1.0) -> float:
        """Predicted seconds per step under ``speed_factor``."""
        return self.roofline_s / speed_factor + self.overhead_s


def step_terms(m: Measurement) -> StepTerms:
    """Roofline and overhead seconds of ``m`` at speed factor 1, from :class:`DeviceProfile`.

    A TensorRT engine (:data:`devices.measurements.COMPILED_FRAMEWORKS`) has no launch-overhead term:
    it fuses each layer into a few kernels, so the eager-PyTorch overhead (20 launches per layer and
    pass) does not apply. The data say so too: with that term, the modelled overhead of one BERT-large
    pass on an AGX Orin (6.5 ms) alone exceeds the measured MLPerf latency (5.6 ms).
    """
    prec = compute_precision(m.precision)
    mode = m.mode
    profile = DeviceProfile(dtype=m.device_type, modes=(mode,), precision=prec)
    cost = step_cost(m)
    overhead = profile.overhead_s(mode, cost.kernels)
    total = profile.step_time_s(cost, mode)
    compute = cost.flops_per_step / profile.effective_flops(mode) >= cost.bytes_moved / profile.effective_mem_bw(mode)
    eager = m.framework not in COMPILED_FRAMEWORKS
    return StepTerms(roofline_s=total - overhead, overhead_s=overhead if eager else 0.0, compute_bound=compute)


def predict_s(m: Measurement, speed_factor: float = 1.0) -> float:
    """fedfleet's seconds per step for measurement ``m`` under ``speed_factor`` (1 = datasheet)."""
    return step_terms(m).seconds(speed_factor)


def _objective(u: np.ndarray, roof: np.ndarray, ovh: np.ndarray, log_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """J(u) and dJ/du for every u (rows) over the points (columns)."""
    scaled = roof[None, :] * np.exp(-u)[:, None]
    r = np.log(scaled + ovh[None, :]) - log_m[None, :]
    share = scaled / (scaled + ovh[None, :])
    return (r * r).sum(axis=1), -2.0 * (r * share).sum(axis=1)


def fit_speed_factor(terms: list[StepTerms], measured_s: list[float]) -> float:
    """The speed factor s minimising sum_i (ln t_i(s) - ln m_i)^2 (module docstring), to 1e-13 in ln s.

    The global minimum is located on a grid of ln s (step 0.05), refined on a grid 1000x finer around
    it, and the sign change of dJ/du next to the finer minimum is bisected.
    """
    pts = (np.array([t.roofline_s for t in terms], dtype=float), np.array([t.overhead_s for t in terms], dtype=float),
           np.log(np.array(measured_s, dtype=float)))
    grid = np.linspace(-LOG_FACTOR_RANGE, LOG_FACTOR_RANGE, GRID_POINTS)
    k = int(np.argmin(_objective(grid, *pts)[0]))
    if k in (0, GRID_POINTS - 1):
        bounds = f"[e^-{LOG_FACTOR_RANGE:g}, e^{LOG_FACTOR_RANGE:g}]"
        raise CalibrationError(f"no speed factor in {bounds} fits: the measured times lie below the "
                               "kernel-overhead floor of the model or are absurdly slow")
    fine = np.linspace(grid[k - 1], grid[k + 1], 2001)
    j, slope = _objective(fine, *pts)
    i = int(np.clip(np.argmin(j), 1, len(fine) - 2))
    lo, hi = (fine[i - 1], fine[i]) if slope[i] > 0 else (fine[i], fine[i + 1])
    while hi - lo > BISECT_TOL:
        mid = 0.5 * (lo + hi)
        if _objective(np.array([mid]), *pts)[1][0] < 0:
            lo = mid
        else:
            hi = mid
    return float(math.exp(0.5 * (lo + hi)))


def fit(measurements: Iterable[Measurement], phase: str = "train") -> dict[FitKey, float]:
    """Per (board type, precision), the speed factor fitted to the ``phase`` points (see module docstring)."""
    groups: dict[FitKey, list[Measurement]] = defaultdict(list)
    for m in measurements:
        if m.phase == phase:
            groups[(m.board, m.precision)].append(m)
    out: dict[FitKey, float] = {}
    for key, ms in groups.items():
        try:
            out[key] = fit_speed_factor([step_terms(m) for m in ms], [m.measured_s() for m in ms])
        except CalibrationError as e:
            raise CalibrationError(f"{key[0]} ({key[1]}, {phase}; points {', '.join(m.id for m in ms)}): {e}") from None
    return out


def calibration_block(speed_factor: float, precision: str) -> dict:
    """A scenario group's ``calibration:`` for a fitted factor: ``{speed_factor, precision}``.

    The factor is rounded to :data:`FACTOR_DIGITS` significant digits (far below any measurement's
    precision, and stable against the last-bit noise of the fit). ``int8`` is an inference precision;
    a group trains, so such a factor is no block (ValueError).
    """
    if precision == "int8":
        raise ValueError("an int8 (inference) factor is not a training calibration")
    return {"speed_factor": float(f"{speed_factor:.{FACTOR_DIGITS}g}"), "precision": precision}


def calibration_blocks(factors: Mapping[FitKey, float]) -> dict[str, dict[str, dict]]:
    """``{board type: {precision: calibration block}}`` for every training factor in ``factors``."""
    out: dict[str, dict[str, dict]] = {}
    for (board, precision), s in sorted(factors.items()):
        out.setdefault(board, {})[precision] = calibration_block(s, precision)
    return out


def user_calibration_text(ms: list[Measurement], source: str) -> str:
    """YAML of the training factors fitted to a user's measurements (``fedfleet calibrate --out``):
    ``{source, boards: {type: {precision: calibration block}}}``, each block ready for a group's ``calibration:``."""
    data = {"source": source, "boards": calibration_blocks(fit(ms, "train"))}
    return ("# Speed factors fitted by least squares in log space (devices.calibration.fit); copy a board's block\n"
            "# into a fleet group's `calibration:`.\n" + yaml.safe_dump(data, sort_keys=False, width=120))
