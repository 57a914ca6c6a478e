"""Published or user-measured step times of transformer work on Jetson boards, read from a CSV file.

One row is one measurement: a board (catalog type id) in a power mode, a model, a phase (``train``:
one optimiser step; ``infer``: one forward pass over ``batch`` sequences of ``seq_len`` tokens;
``decode``: one autoregressive generation step, i.e. one new token for each of ``batch`` sequences),
the trainable part, the precision, and the measured figure with its unit. The shipped file is
``devices/data/measurements.csv``; users write their own with the same columns (see :data:`COLUMNS`).

The reader is strict and safe: the ``csv`` module only (no eval, no pickle), a size limit, every
field validated, and each error one line naming the file, the line, the column and the allowed
values, quoting at most :data:`QUOTE_CHARS` characters of the user's text.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from devices.catalog import PRECISIONS, DeviceType, PowerMode, load_catalog
from devices.errors import DeviceInputError
from devices.workload import DTYPE_BYTES, ModelArch, load_arch, preset_names

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_CSV = DATA_DIR / "measurements.csv"
MEASURED_MODELS_DIR = DATA_DIR / "measured_models"
"""Hugging Face ``config.json`` subsets of models that appear only in measurements (e.g. BERT-large,
the LLMs of NVIDIA's Jetson benchmarks); kept out of ``data/models`` so the scenario presets stay
the same."""

COLUMNS = ("id", "board", "power_mode", "model", "phase", "batch", "seq_len", "trainable", "rank",
           "precision", "weight_dtype", "framework", "value", "unit", "series", "source", "notes")
"""Every column, in file order. ``power_mode`` empty = the board's default mode; ``rank`` and
``weight_dtype`` may be empty (defaults: 8, and the precision's natural storage type)."""
PHASES = ("train", "infer", "decode")
UNITS = ("s_per_step", "ms_per_step", "samples_per_s", "tokens_per_s")
"""How ``value`` is stated: seconds or milliseconds per step (a step = one batch), or a throughput
in samples or tokens per second (converted by :meth:`Measurement.measured_s`)."""
MEASURED_PRECISIONS = PRECISIONS + ("int8",)
"""``int8`` (TensorRT inference) is timed on the FP16 tensor-core path, see devices.calibration."""
TRAINABLE_FORMS = ("top:K", "all", "none")
"""``top:K``: adapters or LoRA in the top K layers; ``all``: in every layer; ``none``: nothing is
trained (inference and decode rows). Full fine-tuning is refused: the cost model prices a frozen base
whose backward pass computes input gradients only."""
FRAMEWORKS = ("PyTorch", "TensorRT", "MLC")
"""``PyTorch`` (eager) and ``MLC`` (compiled kernels, launched one by one from its virtual machine) pay
the timing model's per-kernel launch overhead; ``TensorRT`` runs one engine of fused kernels and does not."""
COMPILED_FRAMEWORKS = ("TensorRT",)
DEFAULT_RANK = 8
MAX_FILE_BYTES = 2_000_000
MAX_BATCH = 1_000_000
QUOTE_CHARS = 40
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,59}$")
_TEXT_LIMIT = 2000


class MeasurementError(DeviceInputError):
    """A measurement file that cannot be used; the message is one line naming file, line and column."""


def quote(text: str) -> str:
    """``repr(text)`` cut to :data:`QUOTE_CHARS` characters, so a hostile field cannot flood a message."""
    s = repr(text)
    return s if len(s) <= QUOTE_CHARS else s[: QUOTE_CHARS - 3] + "..."


@dataclass(frozen=True)
class Measurement:
    """One measured step time and everything needed to predict it.

    Attributes:
        id: unique label of the row.
        board, power_mode: catalog type id and nvpmodel mode ("" = the board's default mode).
        model: a scenario preset or a measured-model config (:func:`allowed_models`).
        phase: ``train``, ``infer`` or ``decode`` (module docstring).
        batch: sequences per step.
        seq_len: tokens per sequence; for ``decode`` the prompt length if stated (the estimate ignores it).
        trainable_layers: K of ``top:K`` (adapters or LoRA in the top K layers); ``None`` for ``all``
            (train) or ``none`` (infer, decode).
        rank: LoRA rank (or adapter bottleneck width) used to price the trainable part.
        precision: compute precision (fp32, amp, fp16, int8); weight_dtype: storage of the frozen weights.
        framework: one of :data:`FRAMEWORKS`.
        value, unit: the figure as published, in one of :data:`UNITS`.
        series: measurements taken under the same conditions (one paper, one benchmark); board-to-board
            ratios are formed only within a series.
        source: the paper or URL the figure comes from; notes: what was assumed.
    """

    id: str
    board: str
    power_mode: str
    model: str
    phase: str
    batch: int
    seq_len: int
    trainable_layers: int | None  # top K layers carry adapters/LoRA; None = all layers (train) or none
    rank: int
    precision: str
    weight_dtype: str
    framework: str
    value: float
    unit: str
    series: str
    source: str
    notes: str = ""

    @property
    def device_type(self) -> DeviceType:
        """The catalog entry of :attr:`board`."""
        return load_catalog()[self.board]

    @property
    def mode(self) -> PowerMode:
        """The stated power mode, or the board's default mode when none is stated."""
        dt = self.device_type
        return dt.mode(self.power_mode) if self.power_mode else dt.default_mode

    @property
    def arch(self) -> ModelArch:
        """Shape of :attr:`model` (a scenario preset or a shipped measured-model config)."""
        return model_arch(self.model)

    @property
    def tokens_per_step(self) -> int:
        """Tokens one step processes: batch x seq_len, except decode (one new token per sequence)."""
        return self.batch if self.phase == "decode" else self.batch * self.seq_len

    def measured_s(self) -> float:
        """The measurement in seconds per step (one batch).

        s_per_step: value; ms_per_step: value / 1000; samples_per_s: batch / value;
        tokens_per_s: tokens_per_step / value.
        """
        if self.unit == "s_per_step":
            return self.value
        if self.unit == "ms_per_step":
            return self.value / 1000.0
        if self.unit == "samples_per_s":
            return self.batch / self.value
        return self.tokens_per_step / self.value


def measured_model_names() -> tuple[str, ...]:
    """Names of the shipped measured-model configs (``data/measured_models/*.json``)."""
    return tuple(sorted(p.stem for p in MEASURED_MODELS_DIR.glob("*.json")))


def model_arch(name: str) -> ModelArch:
    """A scenario preset, else a shipped measured-model config; never a path from a user's file."""
    if name in preset_names():
        return load_arch(name)
    if name not in measured_model_names():
        raise KeyError(name)
    cfg = json.loads((MEASURED_MODELS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return ModelArch.from_hf_config(cfg, name)


def allowed_models() -> tuple[str, ...]:
    """Model names a measurement may use: the scenario presets, then the measured-model configs."""
    return preset_names() + measured_model_names()


@dataclass(frozen=True)
class _Row:
    """One CSV record with the place it came from, for error messages."""

    path: str
    line: int
    fields: dict[str, str]

    def fail(self, column: str, text: str, why: str) -> MeasurementError:
        """The one-line error for ``column`` holding ``text``: file:line, column, quoted text, why."""
        return MeasurementError(f"{self.path}:{self.line}: column {column!r}: {quote(text)} {why}")

    def text(self, column: str, required: bool = True) -> str:
        """The stripped field, bounded in length; empty only when not ``required``."""
        s = self.fields[column].strip()
        if required and not s:
            raise self.fail(column, s, "must not be empty")
        if len(s) > _TEXT_LIMIT:
            raise self.fail(column, s, f"is longer than {_TEXT_LIMIT} characters")
        return s

    def choice(self, column: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        """One of ``allowed`` (``default`` when empty and a default is given)."""
        s = self.text(column, required=default is None)
        if not s and default is not None:
            return default
        if s not in allowed:
            raise self.fail(column, s, f"is not allowed; allowed: {', '.join(allowed)}")
        return s

    def integer(self, column: str, low: int, high: int, default: int | None = None) -> int:
        """A decimal integer in [low, high] (``default`` when empty and a default is given)."""
        s = self.text(column, required=default is None)
        if not s and default is not None:
            return default
        if not re.fullmatch(r"[0-9]{1,9}", s) or not low <= int(s) <= high:
            raise self.fail(column, s, f"must be an integer in [{low}, {high}]")
        return int(s)

    def positive(self, column: str) -> float:
        """A finite number > 0 (at most 40 characters, so no huge-integer parsing)."""
        s = self.text(column)
        try:
            x = float(s) if len(s) <= 40 else math.nan
        except ValueError:
            x = math.nan
        if not (math.isfinite(x) and x > 0):
            raise self.fail(column, s, "must be a finite number > 0")
        return x


def _board_and_mode(row: _Row) -> tuple[str, str]:
    cat = load_catalog()
    board = row.choice("board", tuple(cat))
    mode = row.text("power_mode", required=False)
    if mode and mode not in cat[board].mode_names:
        raise row.fail("power_mode", mode, f"is not a mode of {board}; allowed: {', '.join(cat[board].mode_names)} "
                                           "(or empty for the default)")
    return board, mode


def _trainable(row: _Row, phase: str, num_layers: int) -> int | None:
    s = row.text("trainable")
    if phase != "train":
        if s != "none":
            raise row.fail("trainable", s, f"must be 'none' for phase {phase}")
        return None
    if s == "all":
        return None
    m = re.fullmatch(r"top:([0-9]{1,4})", s)
    if m is None or not 1 <= int(m.group(1)) <= num_layers:
        why = ("is full fine-tuning, which the cost model cannot price (it models adapters/LoRA on a frozen base)"
               if s.startswith("full") else
               f"is not allowed; allowed: top:K (K in 1..{num_layers}), all (phase train), none (infer, decode)")
        raise row.fail("trainable", s, why)
    return int(m.group(1))


def _default_weight_dtype(precision: str) -> str:
    """Storage of the frozen weights when not stated: fp32 for fp32 and amp, else the precision."""
    return "fp32" if precision in ("fp32", "amp") else precision


def parse_row(row: _Row) -> Measurement:
    """Validate one record (every column) and build its :class:`Measurement`."""
    board, mode = _board_and_mode(row)
    model = row.choice("model", allowed_models())
    arch = model_arch(model)
    phase = row.choice("phase", PHASES)
    if phase == "decode" and not arch.is_decoder:
        raise row.fail("phase", phase, f"needs a decoder (LLaMA-family) model; {model} is an encoder")
    precision = row.choice("precision", MEASURED_PRECISIONS)
    if phase == "train" and precision == "int8":
        raise row.fail("precision", precision, "is an inference precision; allowed for phase train: "
                                               f"{', '.join(PRECISIONS)}")
    ident = row.text("id")
    if not _ID_RE.match(ident):
        raise row.fail("id", ident, "must be 1-60 characters of letters, digits and _ . : -")
    return Measurement(
        id=ident, board=board, power_mode=mode, model=model, phase=phase,
        batch=row.integer("batch", 1, MAX_BATCH),
        seq_len=row.integer("seq_len", 1, arch.usable_positions),
        trainable_layers=_trainable(row, phase, arch.num_layers),
        rank=row.integer("rank", 1, 4096, default=DEFAULT_RANK),
        precision=precision,
        weight_dtype=row.choice("weight_dtype", tuple(DTYPE_BYTES), default=_default_weight_dtype(precision)),
        framework=row.choice("framework", FRAMEWORKS), value=row.positive("value"), unit=row.choice("unit", UNITS),
        series=row.text("series"), source=row.text("source"), notes=row.text("notes", required=False),
    )


def _check_header(path: str, header: list[str] | None) -> None:
    if header is None:
        raise MeasurementError(f"{path}:1: empty file; the header must name the columns {', '.join(COLUMNS)}")
    missing = [c for c in COLUMNS if c not in header]
    extra = [c for c in header if c not in COLUMNS]
    if missing or extra or len(set(header)) != len(header):
        what = (f"missing column(s) {', '.join(missing)}" if missing else
                f"unknown column {quote(extra[0])}" if extra else "a column is repeated")
        raise MeasurementError(f"{path}:1: {what}; the columns are {', '.join(COLUMNS)}")


def read_measurements(path: Path | str = SHIPPED_CSV) -> list[Measurement]:
    """Read and validate a measurement CSV (header :data:`COLUMNS`, any order); ids must be unique."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise MeasurementError(f"{p}: {size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
        text = p.read_text(encoding="utf-8-sig")  # a spreadsheet may prepend a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise MeasurementError(f"{p}: cannot read: {e}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\x00extra", restval=None)
    try:
        _check_header(str(p), reader.fieldnames)
        return _parse_records(p, reader)
    except csv.Error as e:
        raise MeasurementError(f"{p}:{reader.line_num}: not valid CSV: {e}") from None


def _parse_records(p: Path, reader: csv.DictReader) -> list[Measurement]:
    out: list[Measurement] = []
    seen: set[str] = set()
    for fields in reader:
        row = _Row(str(p), reader.line_num, fields)
        if "\x00extra" in fields or any(v is None for v in fields.values()):
            raise MeasurementError(f"{p}:{reader.line_num}: expected {len(COLUMNS)} fields, got a different number")
        m = parse_row(row)
        if m.id in seen:
            raise row.fail("id", m.id, "is repeated; ids must be unique")
        seen.add(m.id)
        out.append(m)
    if not out:
        raise MeasurementError(f"{p}: no measurements after the header")
    return out
