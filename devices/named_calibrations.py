"""Named timing calibrations every scenario can use: ``datasheet``, ``paper`` and ``measured``.

* ``datasheet``: the catalog's default achieved fractions of peak (no overrides).
* ``paper``: the Xavier boards' tensor-core efficiency lowered so that default-mode steps follow the
  FedSpine paper's straggler ratio (AGX Xavier 0.70 x, Xavier NX 0.85 x a TX2's step).
* ``measured``: speed factors fitted to ``devices/data/measurements.csv`` (:func:`devices.calibration.fit`).
  A board with training points gets its own fit; the AGX Xavier, which has none, keeps the catalog
  default and anchors the tensor-core boards; boards with MLPerf int8 inference points are scaled from
  the anchor by the ratio of inference factors; the rest take a like board's factor
  (:data:`SIBLINGS`). Every entry says which of these it is and why.

The data live in ``devices/data/calibrations.yaml``, written by ``python -m devices.named_calibrations``
and checked against a fresh fit by the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from devices.calibration import calibration_block, fit
from devices.catalog import load_catalog
from devices.measurements import Measurement

CALIBRATIONS_YAML = Path(__file__).resolve().parent / "data" / "calibrations.yaml"
CALIBRATION_NAMES = ("datasheet", "paper", "measured")
PAPER_EFFICIENCY = {"xavier_nx": 0.0346, "agx_xavier": 0.0522}
"""Achieved fraction of the tensor-core peak that makes a default-mode step take 0.85 x (Xavier NX) and
0.70 x (AGX Xavier) a TX2's, the FedSpine paper's stated straggler ratio
(derived in scenarios/paper-fleet-80-calibrated.yaml)."""
ANCHOR_BOARD = "agx_xavier"
ANCHOR_NOTE = ("no public PyTorch training step time exists for a Xavier board: the catalog default (0.20 of the "
               "tensor-core peak under AMP) is kept, and the other tensor-core boards are scaled from it")
_ORIN_NANO = ("same Ampere GA10B GPU and software stack as the Orin NX 16 GB; the Orin Nano's Jetson AI Lab points "
              "time memory-bound LLM decoding and say nothing about compute-bound training")
SIBLINGS = {
    "nano": ("tx2", "fp32 on CUDA cores without tensor cores, like the TX2; assumed to reach the same multiple of "
                    "the catalog default"),
    "orin_nano_4gb": ("orin_nx_16gb", _ORIN_NANO),
    "orin_nano_8gb": ("orin_nx_16gb", _ORIN_NANO),
    "orin_nano_8gb_super": ("orin_nx_16gb", _ORIN_NANO),
    "orin_nx_8gb": ("orin_nx_16gb", "same module family as the Orin NX 16 GB"),
    "agx_orin_32gb": ("agx_orin_64gb", "same module family as the AGX Orin 64 GB"),
}
"""Boards without a usable measurement take the factor of a like board (the reason is written out)."""


@dataclass(frozen=True)
class BoardCalibration:
    """One board's entry in a named calibration: the block, how it was obtained, and from which points."""

    block: dict
    basis: str  # fitted | anchor | scaled | sibling | paper
    note: str
    points: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The entry as written to the calibrations file (points only when there are any)."""
        out = {"calibration": dict(self.block), "basis": self.basis, "note": self.note}
        if self.points:
            out["points"] = list(self.points)
        return out


def _ids(ms: Iterable[Measurement], board: str, phase: str, precision: str) -> tuple[str, ...]:
    return tuple(m.id for m in ms if m.board == board and m.phase == phase and m.precision == precision)


def _fitted(ms: list[Measurement]) -> dict[str, BoardCalibration]:
    """Boards with training points: their own factor (default precision first, else the first fitted)."""
    train = fit(ms, "train")
    out: dict[str, BoardCalibration] = {}
    for board in sorted({b for b, _ in train}):
        precs = [p for b, p in train if b == board]
        default = load_catalog()[board].default_precision
        prec = default if default in precs else precs[0]
        out[board] = BoardCalibration(
            calibration_block(train[(board, prec)], prec), "fitted",
            f"least squares in log space over this board's {prec} training points", _ids(ms, board, "train", prec))
    return out


def _scaled(ms: list[Measurement], have: dict[str, BoardCalibration]) -> dict[str, BoardCalibration]:
    """Tensor-core boards with int8 inference points, scaled from the anchor by the inference factor ratio.

    s_train(B) = s_train(anchor) x s_int8(B) / s_int8(anchor): the board-to-board gaps the datasheet
    misses in inference (MLPerf) are assumed to carry over to PyTorch training.
    """
    infer = fit(ms, "infer")
    anchor_block = have[ANCHOR_BOARD].block if ANCHOR_BOARD in have else calibration_block(1.0, "amp")
    if (ANCHOR_BOARD, "int8") not in infer:
        return {}
    out: dict[str, BoardCalibration] = {}
    if ANCHOR_BOARD not in have:
        out[ANCHOR_BOARD] = BoardCalibration(anchor_block, "anchor", ANCHOR_NOTE)
    base = infer[(ANCHOR_BOARD, "int8")]
    for (board, prec), s in sorted(infer.items()):
        if prec != "int8" or board in have or board == ANCHOR_BOARD:
            continue
        factor = anchor_block["speed_factor"] * s / base
        note = (f"no training measurement: {ANCHOR_BOARD}'s factor x (this board's int8 inference factor / "
                f"{ANCHOR_BOARD}'s) = {anchor_block['speed_factor']:.4g} x {s:.4g} / {base:.4g}; assumes the "
                "inference gaps between boards carry over to PyTorch training")
        out[board] = BoardCalibration(calibration_block(factor, anchor_block["precision"]), "scaled", note,
                                      _ids(ms, board, "infer", "int8") + _ids(ms, ANCHOR_BOARD, "infer", "int8"))
    return out


def measured_boards(ms: list[Measurement]) -> dict[str, BoardCalibration]:
    """The ``measured`` calibration of every board it can say something about, in catalog order."""
    have = _fitted(ms)
    have.update(_scaled(ms, have))
    for board, (sibling, why) in SIBLINGS.items():
        if board not in have and sibling in have:
            src = have[sibling]
            have[board] = BoardCalibration(dict(src.block), "sibling", f"no measurement: {sibling}'s factor ({why})")
    return {b: have[b] for b in load_catalog() if b in have}


def paper_boards() -> dict[str, BoardCalibration]:
    """The ``paper`` calibration: efficiencies matching the FedSpine paper's straggler ratio."""
    note = ("efficiency set so that a default-mode step takes {share} a TX2's (the FedSpine paper's ~30% idle of "
            "the strongest board; scenarios/paper-fleet-80-calibrated.yaml derives it)")
    shares = {"xavier_nx": "0.85 x", "agx_xavier": "0.70 x"}
    return {b: BoardCalibration({"efficiency": e}, "paper", note.format(share=shares[b]))
            for b, e in PAPER_EFFICIENCY.items()}


CALIBRATIONS_HEADER = """\
# Named timing calibrations, usable by every scenario: datasheet (the catalog's default efficiencies),
# paper (the FedSpine paper's straggler ratio) and measured (fitted to devices/data/measurements.csv).
# Each board entry holds the block a fleet group's `calibration:` takes, its basis (fitted, anchor,
# scaled, sibling, paper) and a note saying where the value comes from or which assumption fills the gap.
# Boards not listed keep the catalog defaults.
# Generated by `python -m devices.named_calibrations` (do not edit).
"""
DESCRIPTIONS = {
    "datasheet": ("catalog defaults: 0.35 of the FP32 (or half2) peak, 0.20 of the tensor-core peak, "
                  "0.7 of DRAM bandwidth"),
    "paper": "tensor-core efficiencies lowered so that default-mode steps follow the FedSpine paper's straggler ratio",
    "measured": ("speed factors fitted by least squares in log space to published step times "
                 "(devices/data/measurements.csv)"),
}


def build_calibrations(ms: list[Measurement]) -> dict:
    """The three named calibrations as plain data (what :data:`CALIBRATIONS_YAML` holds)."""
    boards = {"datasheet": {}, "paper": paper_boards(), "measured": measured_boards(ms)}
    return {name: {"description": DESCRIPTIONS[name], "boards": {b: e.as_dict() for b, e in boards[name].items()}}
            for name in CALIBRATION_NAMES}


def calibrations_text(ms: list[Measurement]) -> str:
    """:func:`build_calibrations` as the YAML text of the shipped file."""
    body = yaml.safe_dump(build_calibrations(ms), sort_keys=False, width=120, allow_unicode=False)
    return CALIBRATIONS_HEADER + body


def load_calibrations(path: Path = CALIBRATIONS_YAML) -> dict:
    """The named calibrations file as data (``yaml.safe_load``)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def named_calibration(name: str, board: str, path: Path = CALIBRATIONS_YAML) -> dict:
    """The ``calibration:`` block calibration ``name`` gives ``board`` ({} = catalog defaults)."""
    data = load_calibrations(path)
    if name not in data:
        raise KeyError(f"unknown calibration {name!r}; allowed: {', '.join(data)}")
    entry = data[name]["boards"].get(board)
    return dict(entry["calibration"]) if entry else {}


if __name__ == "__main__":
    from devices.measurements import read_measurements  # noqa: PLC0415

    CALIBRATIONS_YAML.write_text(calibrations_text(read_measurements()), encoding="utf-8")
