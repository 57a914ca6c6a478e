"""The target model and the fixed part of the work (batch, sequence, precision, LoRA targets).

The target model decides simulated time and memory (the proxy model in ``learning`` decides accuracy;
``docs/device-model.md``). It is described by
the few Hugging Face ``config.json`` keys the cost model needs; presets live in
``devices/data/models/*.json`` (each names its source) and any local ``config.json`` path works.
Supported families: BERT/RoBERTa (``model_type`` bert, roberta, xlm-roberta, camembert: GELU MLP
with 2 matrices, bidirectional attention, dropout) and LLaMA (llama, mistral, qwen2: SwiGLU MLP with
3 matrices, causal attention, grouped-query attention, LM head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from devices.errors import DeviceInputError, excerpt

MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
DECODER_TYPES = ("llama", "mistral", "qwen2")
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
LORA_TARGETS = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
"""Canonical LoRA target names: Q/K/V projections, attention output, FFN input (BERT
intermediate; LLaMA gate and up) and FFN output (BERT output dense; LLaMA down)."""

DTYPE_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "nf4": 0.5}


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in MODELS_DIR.glob("*.json")))


@dataclass(frozen=True)
class ModelArch:
    """Shape of a transformer, enough to count its FLOPs, bytes and parameters."""

    name: str
    family: str  # "encoder" (BERT/RoBERTa) or "decoder" (LLaMA)
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    tie_embeddings: bool
    position_offset: int = 0  # RoBERTa position ids start after the padding index (514 rows, 512 usable)

    @property
    def usable_positions(self) -> int:
        """Longest sequence the position embeddings allow."""
        return self.max_positions - self.position_offset

    @property
    def is_decoder(self) -> bool:
        return self.family == "decoder"

    @property
    def ffn_matrices(self) -> int:
        """2 for a GELU MLP (BERT), 3 for SwiGLU (LLaMA gate, up, down)."""
        return 3 if self.is_decoder else 2

    @property
    def head_groups(self) -> int:
        """Prunable attention groups per layer: heads (MHA) or key/value groups (GQA)."""
        return self.num_kv_heads

    @property
    def q_heads_per_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_hf_config(cls, cfg: dict, name: str) -> "ModelArch":
        """Build from a Hugging Face ``config.json`` dict; raises ``DeviceInputError`` naming missing keys."""
        mtype = cfg.get("model_type")
        if mtype not in ENCODER_TYPES + DECODER_TYPES:
            raise DeviceInputError(
                f"model_type {excerpt(mtype)} is not supported; allowed: {', '.join(ENCODER_TYPES + DECODER_TYPES)}"
            )
        need = ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"]
        missing = [k for k in need if type(cfg.get(k)) is not int or cfg.get(k) <= 0]  # bool is not a size
        if missing:
            raise DeviceInputError(f"config.json lacks positive integer keys: {', '.join(missing)}")
        heads = cfg["num_attention_heads"]
        kv = cfg.get("num_key_value_heads") or heads
        if heads % kv:
            raise DeviceInputError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
        decoder = mtype in DECODER_TYPES
        return cls(
            name=name,
            family="decoder" if decoder else "encoder",
            num_layers=cfg["num_hidden_layers"],
            hidden=cfg["hidden_size"],
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate=cfg["intermediate_size"],
            vocab=cfg["vocab_size"],
            max_positions=cfg.get("max_position_embeddings", 512),
            position_offset=2 if mtype in ROBERTA_TYPES else 0,
            type_vocab=0 if decoder else cfg.get("type_vocab_size", 2),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", not decoder)),
        )


def load_arch(model: str, base_dir: Path | None = None) -> ModelArch:
    """A preset name (see :func:`preset_names`) or a path to a Hugging Face ``config.json``
    (or a folder holding one; relative paths resolve against ``base_dir``)."""
    if model in preset_names():
        return ModelArch.from_hf_config(json.loads((MODELS_DIR / f"{model}.json").read_text()), model)
    p = Path(model)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise DeviceInputError(f"{excerpt(model)} is neither a preset ({', '.join(preset_names())}) nor a config.json file")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise DeviceInputError(f"{p}: {size} bytes exceeds the {MAX_CONFIG_BYTES}-byte limit for a config.json")
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeviceInputError(f"cannot read {p}: {e}") from None
    if not isinstance(cfg, dict):
        raise DeviceInputError(f"{p} is not a JSON object")
    arch = ModelArch.from_hf_config(cfg, p.parent.name or str(p))
    wrong = [key for field, key in _ARCH_SIZES.items()
             if type(getattr(arch, field)) is not int or getattr(arch, field) <= 0]  # bool is not a size
    if type(arch.type_vocab) is not int or arch.type_vocab < 0:
        wrong.append("type_vocab_size")
    if wrong:
        raise DeviceInputError(f"{p}: config.json values must be positive integers: {', '.join(wrong)}")
    return arch


MAX_CONFIG_BYTES = 1_000_000
"""A target model's ``config.json`` is read whole: bound it."""

_ARCH_SIZES = {"num_layers": "num_hidden_layers", "hidden": "hidden_size", "num_heads": "num_attention_heads",
               "num_kv_heads": "num_key_value_heads", "head_dim": "head_dim", "intermediate": "intermediate_size",
               "vocab": "vocab_size", "max_positions": "max_position_embeddings"}
"""ModelArch field -> config.json key, for the sizes the cost model divides and multiplies by."""


@dataclass(frozen=True)
class Workload:
    """The per-run constant part of every device's work.

    Attributes:
        arch: target model shape.
        seq_len: tokens per sample (s).
        precision: compute precision (``fp32``, ``amp`` or ``fp16``), or ``auto`` = the device
            type's default (fp32 on Pascal/Maxwell, amp on tensor-core devices).
        weight_dtype: storage type of the frozen weights (memory and memory-bound time).
        lora_targets: canonical target names (see :data:`LORA_TARGETS`).
        task: ``classification`` (a small trained head on the first token) or ``lm`` (frozen LM
            head over every position).
        num_labels: classes of the classification head.
        train_head: the classification head is trained and communicated with the LoRA factors.
        comm_dtype: dtype of LoRA factors on the wire.
        frozen_activation_factor: phi_frozen in [0.6, 1]: the share of a backward layer's activations
            actually stored (inputs of frozen linears need not be saved; framework-dependent, assumed 1).
        message_overhead_bytes: S_meta, fixed bytes per message (plan, report fields, framing).
    """

    arch: ModelArch
    seq_len: int
    precision: str = "auto"
    weight_dtype: str = "fp32"
    lora_targets: tuple[str, ...] = ("query", "value")
    task: str = "classification"
    num_labels: int = 2
    train_head: bool = True
    comm_dtype: str = "fp32"
    frozen_activation_factor: float = 1.0
    message_overhead_bytes: int = 1024
