"""What the real learner needs to know, as typed dataclasses of its own (no torch, no scenario schema).

``sim.runner`` builds a :class:`LearnerConfig` from a scenario's ``learning`` section; the learner
never sees the scenario. Defaults are those of the scenario schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PartitionConfig:
    """How the training pool is split over devices: ``iid``, ``dirichlet`` label skew or ``quantity`` skew."""

    kind: str = "dirichlet"
    alpha: float = 0.5  # Dirichlet concentration (smaller = more skew)
    min_size: int = 16  # fewest training examples a device may hold


@dataclass(frozen=True)
class ImportanceConfig:
    """How structure is ranked and when it is pruned."""

    criterion: str = "lora_grad"  # lora_grad (LoRAPrune first-order estimate), magnitude or random
    beta: float = 0.9  # EMA coefficient over local steps
    scope: str = "layer"  # rank groups within each layer, or across layers (global)
    protected_layers: tuple[int, ...] = ()  # proxy layers never pruned
    order: str = "prune_first"  # prune at the round start, or after tau/2 steps (tune_prune_tune)
    calibration_batches: int = 2  # gradient-only batches measuring importance before a first pruning


@dataclass(frozen=True)
class EvalConfig:
    """Which examples and devices an evaluation covers."""

    examples: int | None = None  # fixed, seeded subset of the test set (None: all of it)
    devices: int | None = None  # devices evaluated per evaluation, a seeded sample (None: all)
    batch_size: int = 64  # evaluation batch (length-sorted, dynamic padding)


@dataclass(frozen=True)
class LearnerConfig:
    """The real learner's settings: proxy model, data, optimiser, LoRA, pruning, evaluation, host."""

    model: str = "minilm"  # proxy: packaged name, Hugging Face name or local folder
    allow_download: bool = False  # a Hub name missing from the local cache may be downloaded (else offline)
    dataset: str = "rotten_tomatoes"
    test_size: int = 1000  # held-out test examples
    train_examples: int | None = None  # cap on the training pool (None: all)
    max_len: int | None = None  # tokens per example (None: the dataset's default)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    lr: float = 1e-3  # AdamW learning rate (LoRA and head)
    head_lr: float | None = None  # learning rate of the classification head (None: lr)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # gradient-norm clip (None: none)
    lora_alpha: float = 16.0  # LoRA alpha (scaling s: lora_scaling)
    lora_scaling: str = "standard"  # standard: s = alpha / r; rslora: s = alpha / sqrt(r) (learning.lora.lora_scale)
    lora_dropout: float = 0.0
    model_dropout: bool = True  # keep the proxy's own dropout while training
    pooling: str = "cls"  # cls (BERT pooler) or mean (mean of the last hidden states)
    proxy_layers: int | None = None  # keep only the proxy's first N layers (None: all)
    resize: str = "auto"  # svd, truncate, or auto (the strategy's choice)
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    forward: str = "packed"  # packed (no padding tokens, BERT proxies) or padded
    device: str = "cpu"  # cpu, cuda, or auto (cuda when torch sees one, else cpu)
    autocast: str = "none"  # none, bf16 or fp16 mixed precision of the forward (cuda only)
    torch_threads: int | None = None  # torch intra-op threads (None: torch's)
    slice_cache: int = 8  # sliced-backbone copies kept in memory
    workers: int = 1  # Ray actors computing local updates in parallel
