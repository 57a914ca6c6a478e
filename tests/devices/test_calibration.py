"""devices/measurements.py, calibration.py, calibration_check.py, named_calibrations.py: the measurement
reader, fedfleet's prediction of a measured step, the log-space fit of speed factors, the check report
and the named calibrations (datasheet, paper, measured)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from devices.calibration import (
    CalibrationError,
    calibration_block,
    calibration_blocks,
    fit,
    fit_speed_factor,
    forward_cost,
    predict_s,
    step_terms,
    user_calibration_text,
    workload,
)
from devices.calibration_check import check, format_check
from devices.cost import plan_cost
from devices.measurements import COLUMNS, QUOTE_CHARS, Measurement, MeasurementError, read_measurements
from devices.named_calibrations import CALIBRATIONS_YAML, PAPER_EFFICIENCY, build_calibrations, named_calibration
from devices.plan import Plan, top_layers
from devices.timing import DeviceProfile

REPO = Path(__file__).resolve().parents[2]

BASE = dict(id="x", board="tx2", power_mode="MAXN", model="bert-base", phase="train", batch=4, seq_len=256,
            trainable_layers=1, rank=8, precision="fp32", weight_dtype="fp32", framework="PyTorch", value=1.0,
            unit="s_per_step", series="s", source="test")


def point(**kw) -> Measurement:
    return Measurement(**{**BASE, **kw})


def synthetic(factors: dict[tuple[str, str], float], phase: str = "train") -> list[Measurement]:
    """Points on several workloads per (board, precision), timed exactly with the known factors."""
    out = []
    for (board, prec), s in factors.items():
        fw = "TensorRT" if prec == "int8" else "PyTorch"
        for i, (b, seq, k) in enumerate([(1, 16, 1), (4, 128, 6), (16, 256, 12), (2, 64, 3)]):
            m = point(id=f"{board}-{prec}-{i}", board=board, power_mode="", precision=prec, batch=b, seq_len=seq,
                      trainable_layers=k if phase == "train" else None, phase=phase, framework=fw,
                      weight_dtype="int8" if prec == "int8" else "fp32")
            out.append(dataclasses.replace(m, value=predict_s(m, s)))
    return out


# ---- the fit ---------------------------------------------------------------------------------------

def test_fit_recovers_known_factors_without_noise():
    truth = {("tx2", "fp32"): 1.52, ("xavier_nx", "amp"): 0.37, ("agx_orin_64gb", "fp16"): 2.9, ("nano", "fp32"): 0.8}
    got = fit(synthetic(truth))
    assert set(got) == set(truth)
    for key, s in truth.items():
        assert got[key] == pytest.approx(s, rel=1e-6), key


def test_fit_recovers_factors_of_inference_points_with_and_without_overhead():
    truth = {("agx_xavier", "int8"): 3.5, ("tx2", "fp32"): 1.2}
    got = fit(synthetic(truth, phase="infer"), phase="infer")
    for key, s in truth.items():
        assert got[key] == pytest.approx(s, rel=1e-6), key
    assert fit(synthetic(truth, phase="infer"), phase="train") == {}


def test_overhead_makes_the_fit_nonlinear_and_it_is_still_exact():
    """Small steps (batch 1, seq 16) are mostly launch overhead: a closed-form mean of ln R/m would miss."""
    ms = synthetic({("tx2", "fp32"): 3.0})
    small = step_terms(ms[0])
    assert small.overhead_s > 0.1 * small.roofline_s / 3.0
    naive = math.exp(sum(math.log(step_terms(m).roofline_s / m.value) for m in ms) / len(ms))
    assert abs(naive / 3.0 - 1) > 0.01
    assert fit(ms)[("tx2", "fp32")] == pytest.approx(3.0, rel=1e-9)


def test_measured_below_the_overhead_floor_cannot_be_fitted():
    m = point(batch=1, seq_len=8)
    floor = step_terms(m).overhead_s
    with pytest.raises(CalibrationError, match="tx2 .*overhead floor"):
        fit([dataclasses.replace(m, value=floor / 2)])


def test_fit_speed_factor_is_least_squares_in_log_space():
    ms = synthetic({("tx2", "fp32"): 1.0})
    noisy = [m.value * f for m, f in zip(ms, (1.1, 0.9, 1.05, 0.97))]
    s = fit_speed_factor([step_terms(m) for m in ms], noisy)

    def j(x: float) -> float:
        return sum((math.log(step_terms(m).seconds(x)) - math.log(v)) ** 2 for m, v in zip(ms, noisy))

    assert j(s) <= min(j(s * (1 + 1e-6)), j(s * (1 - 1e-6)))


# ---- the prediction --------------------------------------------------------------------------------

def test_prediction_is_the_simulators_step_time():
    m = point(trainable_layers=6)
    w = workload(m)
    cost = plan_cost(w, Plan(0.0, 8, top_layers(6, 12), 1, 4), "fp32")
    dt = m.device_type
    for s in (1.0, 1.7):
        prof = DeviceProfile(dtype=dt, modes=dt.modes, precision="fp32", speed_factor=s)
        assert predict_s(m, s) == pytest.approx(prof.step_time_s(cost, dt.mode("MAXN")), rel=1e-12)


def test_forward_cost_is_the_training_model_without_backward_or_adapters():
    m = point(phase="infer", trainable_layers=None)
    one = plan_cost(workload(m), Plan(0.0, 1, (11,), 1, 4), "fp32")
    fwd = forward_cost(m)
    assert fwd.flops_fwd == pytest.approx(one.flops_fwd - 2 * 4 * 256 * one.lora_params, rel=1e-12)
    assert fwd.flops_bwd == 0 and fwd.kernels == 20 * 12
    w_read = one.bytes_moved - 2 * one.memory_activations_bytes  # at one backward layer: W (1 + 1/L) + 2 A
    assert fwd.bytes_moved == pytest.approx(w_read / (1 + 1 / 12) + 2 * 12 * one.memory_activations_bytes, rel=1e-12)


def test_tensorrt_points_have_no_launch_overhead_and_decode_is_one_token():
    trt = point(phase="infer", trainable_layers=None, framework="TensorRT", precision="int8", weight_dtype="int8",
                board="agx_orin_64gb", model="bert-large", batch=1, seq_len=384)
    assert step_terms(trt).overhead_s == 0
    dec = point(phase="decode", trainable_layers=None, framework="MLC", precision="fp16", weight_dtype="nf4",
                board="orin_nano_8gb", power_mode="15W", model="llama-3.1-8b", batch=1, seq_len=1,
                value=14.0, unit="tokens_per_s")
    assert dec.measured_s() == pytest.approx(1 / 14)
    assert workload(dec).seq_len == 1 and not step_terms(dec).compute_bound


def test_fedadapter_tx2_is_predicted_at_today_s_stated_overestimate():
    """Issue 19: the datasheet calibration predicts 1.5-1.75x FedAdapter's measured TX2 steps."""
    ms = {m.id: m for m in read_measurements()}
    for k in (1, 6, 12):
        m = ms[f"fedadapter-tx2-top{k}"]
        assert 1.5 <= predict_s(m) / m.measured_s() <= 1.75, k
    top1, top12 = ms["fedadapter-tx2-top1"], ms["fedadapter-tx2-top12"]
    assert predict_s(top12) / predict_s(top1) == pytest.approx(top12.measured_s() / top1.measured_s(), rel=0.02)


# ---- the shipped data --------------------------------------------------------------------------------

def test_shipped_measurements_meet_the_issue_goals_after_fitting():
    report = check(read_measurements())
    train = [p for p in report.points if p.m.phase == "train"]
    assert train and all(0.75 <= p.ratio_after <= 1.25 for p in train)
    assert report.pairs and all(0.8 <= c.after / c.measured <= 1.2 for c in report.pairs)
    text = format_check(report)
    for p in report.points:
        assert p.m.id in text
    assert "median_before" in text and "xavier_nx / agx_xavier" in text


def test_every_shipped_point_names_its_source():
    for m in read_measurements():
        assert m.source and m.framework and m.series, m.id
        assert "http" in m.source, m.id


def test_shipped_calibrations_file_is_a_fresh_fit():
    shipped = yaml.safe_load(CALIBRATIONS_YAML.read_text(encoding="utf-8"))
    assert list(shipped) == ["datasheet", "paper", "measured"]
    assert shipped == build_calibrations(read_measurements())


def test_measured_calibration_says_how_every_board_is_pinned():
    boards = load_boards("measured")
    assert boards["tx2"]["basis"] == "fitted" and boards["agx_xavier"]["basis"] == "anchor"
    assert boards["xavier_nx"]["basis"] == "scaled" and "int8 inference factor" in boards["xavier_nx"]["note"]
    for board, entry in boards.items():
        assert entry["basis"] in ("fitted", "anchor", "scaled", "sibling") and entry["note"], board
    assert named_calibration("datasheet", "tx2") == {}
    assert named_calibration("measured", "tx2")["precision"] == "fp32"


def load_boards(name: str) -> dict:
    return yaml.safe_load(CALIBRATIONS_YAML.read_text(encoding="utf-8"))[name]["boards"]


def test_paper_calibration_matches_the_paper_calibrated_fleet():
    sc = yaml.safe_load((REPO / "scenarios" / "paper-fleet-80-calibrated.yaml").read_text(encoding="utf-8"))
    eff = {g["type"]: g["calibration"]["efficiency"] for g in sc["fleet"]["groups"] if "calibration" in g}
    assert eff == PAPER_EFFICIENCY
    assert {b: named_calibration("paper", b) for b in eff} == {b: {"efficiency": e} for b, e in eff.items()}


def test_blocks_are_what_a_scenario_group_accepts():
    from sim.scenario import Calibration  # noqa: PLC0415

    blocks = calibration_blocks({("tx2", "fp32"): 1.52, ("xavier_nx", "amp"): 0.9})
    assert blocks == {"tx2": {"fp32": {"speed_factor": 1.52, "precision": "fp32"}},
                      "xavier_nx": {"amp": {"speed_factor": 0.9, "precision": "amp"}}}
    for per_prec in blocks.values():
        for block in per_prec.values():
            Calibration(**block)
    for name in ("paper", "measured"):
        for entry in load_boards(name).values():
            Calibration(**entry["calibration"])
    with pytest.raises(ValueError, match="int8"):
        calibration_block(2.0, "int8")


# ---- the reader ------------------------------------------------------------------------------------

GOOD = {"id": "p1", "board": "tx2", "power_mode": "", "model": "bert-base", "phase": "train", "batch": "4",
        "seq_len": "256", "trainable": "top:2", "rank": "", "precision": "fp32", "weight_dtype": "",
        "framework": "PyTorch", "value": "0.63", "unit": "s_per_step", "series": "mine", "source": "my bench",
        "notes": ""}


def write(tmp_path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    p = tmp_path / "m.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_reader_accepts_a_user_file_with_defaults(tmp_path):
    (m,) = read_measurements(write(tmp_path, [GOOD]))
    assert (m.mode.name, m.rank, m.weight_dtype, m.trainable_layers) == ("MAXP_CORE_ARM", 8, "fp32", 2)


@pytest.mark.parametrize("column, value, expect", [
    ("board", "tx3", "column 'board': 'tx3' is not allowed; allowed: tx2, nano"),
    ("value", "fast", "column 'value': 'fast' must be a finite number > 0"),
    ("value", "nan", "must be a finite number > 0"),
    ("batch", "0", "column 'batch': '0' must be an integer in [1, "),
    ("power_mode", "TURBO", "'TURBO' is not a mode of tx2; allowed: MAXN"),
    ("trainable", "full", "is full fine-tuning, which the cost model cannot price"),
    ("trainable", "top:13", "allowed: top:K (K in 1..12)"),
    ("seq_len", "1024", "must be an integer in [1, 512]"),
    ("framework", "JAX", "allowed: PyTorch, TensorRT, MLC"),
])
def test_reader_errors_are_one_line_naming_file_line_and_column(tmp_path, column, value, expect):
    p = write(tmp_path, [GOOD, {**GOOD, "id": "p2", column: value}])
    with pytest.raises(MeasurementError) as e:
        read_measurements(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}:3: ") and expect in msg


def test_reader_names_a_missing_column(tmp_path):
    cols = tuple(c for c in COLUMNS if c != "unit")
    with pytest.raises(MeasurementError, match=r"m\.csv:1: missing column\(s\) unit; the columns are id, board"):
        read_measurements(write(tmp_path, [GOOD], cols))


def test_reader_quotes_at_most_a_few_characters_of_hostile_text(tmp_path):
    p = write(tmp_path, [{**GOOD, "model": "A" * 1500}])
    with pytest.raises(MeasurementError) as e:
        read_measurements(p)
    quoted = str(e.value).split("column 'model': ")[1].split(" is not allowed")[0]
    assert len(quoted) <= QUOTE_CHARS and "\n" not in str(e.value)


def test_reader_rejects_repeated_ids_wrong_field_counts_and_empty_files(tmp_path):
    with pytest.raises(MeasurementError, match="'p1' is repeated"):
        read_measurements(write(tmp_path, [GOOD, GOOD]))
    p = tmp_path / "short.csv"
    p.write_text(",".join(COLUMNS) + "\np1,tx2\n", encoding="utf-8")
    with pytest.raises(MeasurementError, match=r"short\.csv:2: expected 17 fields"):
        read_measurements(p)
    with pytest.raises(MeasurementError, match="no measurements"):
        read_measurements(write(tmp_path, []))


def test_user_calibration_text_holds_the_fitted_blocks(tmp_path):
    p = write(tmp_path, [GOOD, {**GOOD, "id": "p2", "trainable": "top:6", "value": "0.79"}])
    data = yaml.safe_load(user_calibration_text(read_measurements(p), str(p)))
    s = fit(read_measurements(p))[("tx2", "fp32")]
    block = {"speed_factor": float(f"{s:.6g}"), "precision": "fp32"}
    assert data == {"source": str(p), "boards": {"tx2": {"fp32": block}}}


def test_int8_is_refused_for_training(tmp_path):
    with pytest.raises(MeasurementError, match="'int8' is an inference precision"):
        read_measurements(write(tmp_path, [{**GOOD, "precision": "int8"}]))


def test_reader_accepts_a_byte_order_mark_and_crlf(tmp_path):
    p = write(tmp_path, [GOOD])
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n"))
    assert [m.id for m in read_measurements(p)] == ["p1"]
