"""Scenario schema (pydantic v2). Every key is documented here; ``fedfleet schema`` prints them.

A scenario is a YAML mapping with the sections below. Unknown keys are errors (``extra=forbid``),
as are wrong types, out-of-range numbers and unknown device types, power modes, model presets,
placement classes and algorithm names; errors name the key path, the bad value and what is allowed.
Where the defaults come from: ``docs/device-model.md`` (devices, network, dynamics) and
``docs/method.md`` (importance, pruning, the strategies).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.catalog import DEFAULT_EFFICIENCY_MEM, DEFAULT_RUNTIME_RESERVE_GIB, load_catalog
from devices.workload import LORA_TARGETS



class ScenarioError(ValueError):
    """Bad scenario input (file, YAML, schema or override). ``str(e)`` is the user message."""


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Prob = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]

MAX_TIME_S = 1e9
"""Longest simulated time a key may name (about 32 years): beyond it, float seconds lose sub-ms resolution."""
MAX_MBPS = 100_000.0
"""Fastest link rate, Mbit/s (100 Gbit/s: above any Wi-Fi or Ethernet an edge device has)."""
MAX_RTT_MS = 10_000.0
"""Longest round-trip time, ms (10 s: beyond geostationary satellite links, about 0.6 s)."""
MAX_COUNT = 100_000_000
"""Largest count of examples, devices or rounds a key may name."""
MAX_FACTOR = 1e6
"""Largest dimensionless multiplier or ratio (speed factors, deadline factors, Beta shapes)."""
TimeS = Annotated[float, Field(ge=0, le=MAX_TIME_S, allow_inf_nan=False)]
PosTimeS = Annotated[float, Field(gt=0, le=MAX_TIME_S, allow_inf_nan=False)]
Mbps = Annotated[float, Field(gt=0, le=MAX_MBPS, allow_inf_nan=False)]
Factor = Annotated[float, Field(gt=0, le=MAX_FACTOR, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """YAML ``true`` is not a count or a rate (pydantic's lax mode would read it as 1)."""
        if isinstance(data, dict):
            for k, v in data.items():
                f = cls.model_fields.get(k) if isinstance(k, str) else None
                if f is not None and isinstance(v, bool) and _numeric(f.annotation):
                    raise ValueError(f"{k}: expected a number, got {v}")
        return data


def _numeric(ann: Any) -> bool:
    if ann is bool:
        return False
    if ann in (int, float):
        return True
    return any(_numeric(a) for a in getattr(ann, "__args__", ()) or () if not isinstance(a, (str, int, float)))


def _short(v: Any) -> str:
    """``repr(v)``, cut to 80 characters (a hostile 1 MB value should not become a 1 MB message)."""
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _finite_share(x: Any) -> bool:
    """A placement share: a real number (not bool), finite as a float (a 400-digit int is not), >= 0."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x)) and x >= 0
    except OverflowError:
        return False


def _check_name(v: str | None, what: str) -> str | None:
    if v is not None and not NAME_RE.fullmatch(v):
        raise ValueError(f"{what} {_short(v)} must match {NAME_RE.pattern} "
                         "(letters, digits, '.', '_', '-'; no path separators)")
    return v


class CustomMode(Strict):
    """A power mode defined by the user (for boards or settings the catalog lacks)."""

    name: str = Field(description="mode name, used in power_modes and records")
    fp32_tflops: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)] = Field(description="FP32 peak, TFLOP/s")
    fp16_tflops: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)] | None = Field(None, description="FP16 peak, TFLOP/s (default 2 x fp32: half2)")
    fp16_on_tensor_cores: bool = Field(False, description="fp16 peak is a tensor-core figure (sets default efficiency 0.20)")
    mem_bw_gbps: Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)] = Field(description="DRAM bandwidth, GB/s")
    cpu_max_ghz: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = Field(2.0, description="CPU clock (kernel-launch overhead scales with 2 GHz / this)")
    cpu_cores_online: Annotated[int, Field(ge=1, le=1024)] = Field(4, description="CPU cores on (fewer than 4: overhead x 1.2)")


class Calibration(Strict):
    """Per-group overrides that fit the profiles to measurements (``docs/device-model.md`` section 2).

    ``runtime_reserve_gb`` and ``ram_gb`` hold GiB; the key names stay because every saved scenario uses them.
    """

    efficiency: Fraction | None = Field(
        None, description="achieved fraction of peak FLOP/s in every mode (default: 0.35 fp32 / half2, 0.20 tensor cores)")
    speed_factor: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = Field(1.0, description="multiplies the achieved FLOP/s and bandwidth (a measured/datasheet ratio)")
    mem_efficiency: Fraction = Field(DEFAULT_EFFICIENCY_MEM, description="achieved fraction of peak DRAM bandwidth")
    runtime_reserve_gb: Annotated[float, Field(ge=0, le=4096, allow_inf_nan=False)] = Field(DEFAULT_RUNTIME_RESERVE_GIB, description="OS + CUDA + framework memory, GiB")
    ram_gb: Annotated[float, Field(gt=0, le=4096, allow_inf_nan=False)] | None = Field(None, description="module memory, GiB (default: the catalog's)")
    precision: Literal["auto", "fp32", "amp", "fp16"] = Field("auto", description="compute precision for this group (auto: workload.precision)")
    custom_modes: list[CustomMode] = Field(default_factory=list, description="extra power modes for this group")


class FleetGroup(Strict):
    """A set of identical devices."""

    type: str = Field(description="device type id (fedfleet devices lists them)")
    count: Annotated[int, Field(ge=1, le=1_000_000)] = Field(description="number of devices")
    name: str | None = Field(None, description="group label in records (default: the type)")
    power_modes: list[str] | None = Field(None, description="allowed power modes (default: all of the type's)")
    initial_mode: str | None = Field(None, description="mode at round 0 (default: dynamics.power_mode.initial)")
    placement: str | dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        "mid", description="bandwidth class (a key of network.classes), or {class: share} to spread the group")
    calibration: Calibration = Field(default_factory=Calibration)

    @field_validator("placement", mode="before")
    @classmethod
    def _placement_shape(cls, v: Any) -> Any:
        if isinstance(v, str):
            return v
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            for k, x in v.items():
                if not _finite_share(x):
                    raise ValueError(f"{k}: share must be a finite number >= 0, got {_short(x)}")
            return v
        raise ValueError(f"must be a class name or a mapping {{class: share}}, got {_short(v)}")

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        cat = load_catalog()
        if v not in cat:
            raise ValueError(f"unknown device type {_short(v)}; allowed: {', '.join(cat)}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return _check_name(v, "group name")

    @model_validator(mode="after")
    def _known_modes(self) -> "FleetGroup":
        allowed = list(load_catalog()[self.type].mode_names) + [m.name for m in self.calibration.custom_modes]
        for i, m in enumerate(self.power_modes or []):
            if m not in allowed:
                raise ValueError(f"power_modes[{i}]: unknown power mode {_short(m)} for {self.type}; "
                                 f"allowed: {', '.join(allowed)}")
        if self.power_modes is not None and not self.power_modes:
            raise ValueError("power_modes: must not be empty (omit it for all modes)")
        modes = self.power_modes or allowed
        if self.initial_mode is not None and self.initial_mode not in modes:
            raise ValueError(f"initial_mode: {_short(self.initial_mode)} is not among this group's modes: "
                             f"{', '.join(modes)}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.type

    def placement_counts(self) -> dict[str, int]:
        """Devices per class: one class, or shares split by largest remainder (in key order)."""
        if isinstance(self.placement, str):
            return {self.placement: self.count}
        total = sum(self.placement.values())
        exact = {k: self.count * v / total for k, v in self.placement.items()}
        out = {k: math.floor(x) for k, x in exact.items()}
        for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), list(exact).index(k)))[: self.count - sum(out.values())]:
            out[k] += 1
        return out


class Fleet(Strict):
    groups: list[FleetGroup] = Field(min_length=1, description="device groups")
    calibration: Literal["datasheet", "paper", "measured"] = Field(
        "datasheet", description="named timing calibration every group starts from (devices/data/calibrations.yaml): "
        "datasheet = catalog efficiencies; paper = the FedSpine paper's straggler ratio; measured = fitted to "
        "published step times (devices/data/measurements.csv); a group's own calibration keys override it")


class BandwidthClass(Strict):
    """A placement class: where devices sit relative to the access point."""

    mbps: tuple[Mbps, Mbps] = Field(description="[low, high] range of per-device mean uplink, Mbit/s (uniform)")
    down_up_ratio: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = Field(1.0, description="downlink / uplink rate")
    trace: str | None = Field(None, description="CSV (time_s,mbps) whose shape is replayed, rescaled to each device's mean")

    @model_validator(mode="after")
    def _range(self) -> "BandwidthClass":
        if self.mbps[0] > self.mbps[1]:
            raise ValueError(f"mbps: low {self.mbps[0]} exceeds high {self.mbps[1]}")
        return self


def _default_classes() -> dict[str, BandwidthClass]:
    return {  # assumed distance classes inside the 1-30 Mbit/s range reported for USTC's WiFi Jetson testbeds
        "near": BandwidthClass(mbps=(20.0, 30.0)),
        "mid": BandwidthClass(mbps=(8.0, 15.0)),
        "far": BandwidthClass(mbps=(1.0, 5.0)),
    }


class Fluctuation(Strict):
    """log-AR(1) per round: x_t = phi x_{t-1} + sigma eps."""

    phi: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(0.7, description="AR(1) coefficient")
    sigma_log: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = Field(0.3, description="innovation std of log-bandwidth")


class Network(Strict):
    classes: dict[str, BandwidthClass] = Field(default_factory=_default_classes, description="placement classes")
    fluctuation: Fluctuation = Field(default_factory=Fluctuation)
    rtt_ms: Annotated[float, Field(ge=0, le=MAX_RTT_MS, allow_inf_nan=False)] = Field(5.0, description="round-trip time, ms")
    k_rtt: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] = Field(2.0, description="round trips per transfer (handshake + request/ack)")
    efficiency: Fraction = Field(1.0, description="goodput / link rate (1 for iperf-measured rates)")
    min_mbps: Mbps = Field(0.1, description="floor of any link rate, Mbit/s")
    contention: Literal["none", "shared", "per_class"] = Field(
        "none", description="shared medium: concurrent transfers on one AP (shared) or one AP per class get equal throughput 1/sum(1/R_k)")

    @field_validator("classes")
    @classmethod
    def _names(cls, v: dict[str, BandwidthClass]) -> dict[str, BandwidthClass]:
        if not v:
            raise ValueError("at least one placement class is needed")
        for k in v:
            _check_name(k, "class name")
        return v


DwellRounds = Annotated[int, Field(ge=1, le=1_000_000)]


class DwellSpec(Strict):
    """How long a mode persists (power_mode.kind: dwell), in rounds; devices.dynamics.Dwell draws it."""

    kind: Literal["geometric", "uniform", "fixed"] = Field(
        "geometric", description="dwell law: geometric with this mean (the Markov chain), uniform on low..high, or fixed = mean")
    mean: Annotated[float, Field(ge=1, le=1_000_000, allow_inf_nan=False)] = Field(
        20.0, description="geometric and fixed: mean dwell, rounds")
    low: DwellRounds = Field(10, description="uniform: shortest dwell, rounds")
    high: DwellRounds = Field(30, description="uniform: longest dwell, rounds")

    @model_validator(mode="after")
    def _range(self) -> "DwellSpec":
        if self.low > self.high:
            raise ValueError(f"low: {self.low} > high {self.high}; allowed: low <= high")
        return self


class PowerModeDynamics(Strict):
    kind: Literal["fixed", "periodic", "markov", "dwell"] = Field(
        "periodic", description="how modes change between rounds (dwell: keep a mode for a drawn dwell time, then move to another)")
    every_rounds: Count = Field(20, description="periodic: redraw every N rounds")
    stay_prob: Prob = Field(0.8, description="markov: probability to keep the mode each round")
    initial: Literal["default", "random"] = Field("random", description="round-0 mode: catalog default or uniform")
    switch_outage_s: TimeS = Field(0.0, description="delay before a device that switched mode can start (reboot)")
    dwell_rounds: DwellSpec = Field(default_factory=DwellSpec)


class BackgroundLoadSpec(Strict):
    kind: Literal["none", "lognormal", "ar1"] = Field(
        "lognormal", description="multiplicative compute slowdown: lognormal = fresh every round, ar1 = persistent (log-space AR(1))")
    mu: Annotated[float, Field(allow_inf_nan=False, ge=-5, le=5)] = Field(0.0, description="log-mean")
    sigma: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] = Field(0.3, description="log-std (ar1: the stationary one; innovation std sigma sqrt(1 - phi^2))")
    phi: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(0.9, description="ar1: lag-one correlation of log load between rounds")


class DropoutSpec(Strict):
    prob: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(0.0, description="per-round failure probability")
    beta: tuple[Factor, Factor] | None = Field(None, description="per-device probability ~ Beta(a, b), replaces prob")


class AvailabilitySpec(Strict):
    kind: Literal["always", "periodic", "trace"] = Field("always", description="when devices are on")
    period_s: PosTimeS = Field(86400.0, description="periodic: cycle length, s")
    on_fraction: Fraction = Field(1.0, description="periodic: fraction of the cycle a device is on")
    trace: str | None = Field(None, description="trace: CSV device,start_s,end_s (device = id, group label or *)")

    @model_validator(mode="after")
    def _trace(self) -> "AvailabilitySpec":
        if self.kind == "trace" and not self.trace:
            raise ValueError("trace: kind 'trace' needs a trace file")
        return self


class Dynamics(Strict):
    power_mode: PowerModeDynamics = Field(default_factory=PowerModeDynamics)
    background_load: BackgroundLoadSpec = Field(default_factory=BackgroundLoadSpec)
    dropout: DropoutSpec = Field(default_factory=DropoutSpec)
    availability: AvailabilitySpec = Field(default_factory=AvailabilitySpec)


class WorkloadSpec(Strict):
    """The target model and its per-step work (decides simulated time and memory)."""

    model: str = Field("roberta-base", description="preset (roberta-base, roberta-large, bert-base, llama-7b, minilm-l6) or a path to a Hugging Face config.json")
    batch_size: Annotated[int, Field(ge=1, le=65536)] = Field(16, description="default samples per step")
    seq_len: Annotated[int, Field(ge=1, le=1_000_000)] = Field(128, description="tokens per sample")
    precision: Literal["auto", "fp32", "amp", "fp16"] = Field("auto", description="compute precision (auto: fp32 on Pascal/Maxwell, amp on tensor cores)")
    weight_dtype: Literal["auto", "fp32", "fp16", "bf16", "int8", "nf4"] = Field("auto", description="frozen weight storage (auto: fp16 above 1e9 params, else fp32)")
    lora_targets: list[Literal[LORA_TARGETS]] = Field(default_factory=lambda: ["query", "value"], min_length=1, description="adapted matrices")  # type: ignore[valid-type]
    task: Literal["classification", "lm"] = Field("classification", description="classifier head or LM head")
    num_labels: Annotated[int, Field(ge=1, le=100000)] = Field(2, description="classes of the classification head")
    train_head: bool = Field(True, description="the classification head is trained and sent with LoRA")
    comm_dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="dtype of LoRA factors on the wire")
    message_overhead_bytes: Annotated[int, Field(ge=0, le=10**9)] = Field(1024, description="fixed bytes per message")
    frozen_activation_factor: Annotated[float, Field(ge=0.1, le=1, allow_inf_nan=False)] = Field(1.0, description="phi_frozen: share of activations a frozen base stores")


class EvalEarly(Strict):
    """A sparser evaluation schedule for the early rounds (:meth:`Training.evaluates`)."""

    until_round: Count = Field(description="rounds 1..until_round (1-based) follow this schedule")
    every: Count = Field(description="evaluate every N rounds up to until_round")


class Training(Strict):
    rounds: Annotated[int, Field(ge=1, le=1_000_000)] = Field(100, description="round limit")
    local_steps: Annotated[int, Field(ge=1, le=100000)] = Field(20, description="local steps tau per round")
    target_accuracy: Fraction | None = Field(None, description="stop when the evaluated accuracy reaches this")
    time_budget_s: PosTimeS | None = Field(None, description="stop once simulated time passes this")
    eval_every: Count = Field(1, description="evaluate every N rounds (real learning)")
    eval_early: EvalEarly | None = Field(None, description="evaluate the rounds up to until_round every `every` rounds instead (e.g. sparse while the model still learns, dense in the final rounds a comparison averages)")

    def evaluates(self, round_index: int) -> bool:
        """Whether round ``round_index`` (0-based) ends with an evaluation: round n = round_index + 1 is
        evaluated when n is a multiple of ``eval_early.every`` (n <= ``eval_early.until_round``) or of
        ``eval_every`` (later rounds), and always when n is the last round."""
        n = round_index + 1
        early = self.eval_early is not None and n <= self.eval_early.until_round
        every = self.eval_early.every if early else self.eval_every
        return n % every == 0 or n == self.rounds


class RoundSpec(Strict):
    """How the server closes a synchronous round."""

    policy: Literal["all", "deadline", "first_k"] = Field("all", description="wait for all, until a deadline, or for the first k reports")
    deadline_s: PosTimeS | None = Field(None, description="deadline: fixed seconds after the round start")
    deadline_factor: Factor | None = Field(None, description="deadline: factor x median device time of the previous round, late devices counted as +inf (round 0 waits for all)")
    k: Count | None = Field(None, description="first_k: reports that close the round")
    over_selection: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] = Field(1.3, description="first_k: select ceil(k x this) devices")
    participation: Fraction = Field(1.0, description="fraction of available devices selected per round (policies all, deadline)")

    @model_validator(mode="after")
    def _consistent(self) -> "RoundSpec":
        if self.policy == "deadline" and (self.deadline_s is None) == (self.deadline_factor is None):
            raise ValueError("policy: 'deadline' needs exactly one of deadline_s or deadline_factor")
        if self.policy == "first_k" and self.k is None:
            raise ValueError("k: policy 'first_k' needs k")
        return self


class AlgorithmSpec(Strict):
    name: str = Field("fixed", description="strategy (fedfleet strategies lists them)")
    params: dict[str, Any] = Field(default_factory=dict, description="strategy parameters, validated by the strategy")
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="the strategy's parameters not set in params, with the values the run used: written by fedfleet "
                    "into a run's resolved scenario.yaml so that fedfleet run RUN/scenario.yaml reproduces it; a "
                    "value that differs from the strategy's current default acts as a param (not part of the digest "
                    "otherwise)")


class PartitionSpec(Strict):
    """How the training set is split over devices (learning/partition.py)."""

    kind: Literal["iid", "dirichlet", "quantity"] = Field("dirichlet", description="iid; dirichlet label skew; quantity skew (sizes ~ Dir(alpha))")
    alpha: Factor = Field(0.5, description="Dirichlet concentration (smaller = more skew)")
    min_size: Count = Field(16, description="fewest training examples a device may hold")


class ImportanceSpec(Strict):
    """Which groups a device removes when its plan raises the pruning ratio (learning/importance.py)."""

    criterion: Literal["lora_grad", "magnitude", "random", "comp"] = Field("lora_grad", description="LoRA-guided first-order estimate (LoRAPrune), weight magnitude, random, or comp (post-training COMP: condition-based neuron scores on calibration_batches forward passes, then mask tuning; learning/comp.py)")
    beta: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(0.9, description="EMA coefficient over local steps")
    scope: Literal["layer", "global"] = Field("layer", description="rank groups within each layer, or across layers")
    protected_layers: list[Annotated[int, Field(ge=0, le=1000)]] = Field(default_factory=list, description="proxy layers never pruned")
    order: Literal["prune_first", "tune_prune_tune"] = Field("prune_first", description="prune at round start, or after tau/2 steps")
    calibration_batches: Annotated[int, Field(ge=0, le=1000)] = Field(2, description="prune_first: gradient-only batches that measure importance before a device's first pruning; comp: the forward-only calibration batches of every COMP pruning")


class EvalSpec(Strict):
    examples: Count | None = Field(None, description="fixed, seeded subset of the test set (default: all of it)")
    devices: Count | None = Field(None, description="devices evaluated per evaluation, a seeded sample (default: all)")
    batch_size: Annotated[int, Field(ge=1, le=4096)] = Field(64, description="evaluation batch (length-sorted, dynamic padding)")


class LearningSpec(Strict):
    """Real learning on a proxy model: accuracy from PyTorch on the proxy, time from the target model in devices/."""

    kind: Literal["none", "real"] = Field("none", description="none = timing only; real = prune and LoRA-tune the proxy model on real data")
    model: str = Field("minilm", description="proxy: minilm (packaged all-MiniLM-L6-v2), tiny-bert, tiny-llama, or a Hugging Face name / local folder")
    allow_download: bool = Field(False, description="let a Hugging Face model name missing from the local cache be downloaded (needs network access); false: loading never touches the network and an uncached name is refused at validation")
    dataset: Literal["rotten_tomatoes", "bbc_news", "tweets"] = Field("rotten_tomatoes", description="packaged dataset")
    test_size: Count = Field(1000, description="held-out test examples (seeded split, digest recorded)")
    train_examples: Count | None = Field(None, description="cap the training pool (seeded subset; default: all)")
    max_len: Annotated[int, Field(ge=8, le=8192)] | None = Field(None, description="tokens per example (default: 64 for RT and tweets, 128 for BBC)")
    partition: PartitionSpec = Field(default_factory=PartitionSpec)
    lr: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = Field(1e-3, description="AdamW learning rate (LoRA and head)")
    head_lr: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] | None = Field(None, description="learning rate of the classification head (default: lr)")
    weight_decay: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = Field(0.0, description="AdamW weight decay")
    grad_clip: Factor | None = Field(1.0, description="gradient-norm clip (null: none)")
    lora_alpha: Factor = Field(16.0, description="LoRA alpha; the scaling s follows lora_scaling")
    lora_scaling: Literal["standard", "rslora"] = Field(
        "standard", description="LoRA output scaling: standard s = alpha / rank (LoRA); rslora s = alpha / sqrt(rank) "
                                "(rank-stabilised: a device's rank no longer sets its step size)")
    lora_dropout: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(0.0, description="dropout on the LoRA input")
    model_dropout: bool = Field(True, description="keep the proxy's own dropout while training")
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="classifier input: cls = the BERT pooler over [CLS] (HF head); mean = mean of the last hidden states (sentence-transformers pooling; BERT proxies)")
    proxy_layers: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None, description="keep only the proxy's first N transformer layers (a shallower, faster proxy; default: all)")
    resize: Literal["auto", "svd", "truncate"] = Field("auto", description="global update -> device rank: truncated SVD of dW (FlexLoRA), factor truncation (HetLoRA), or auto = the strategy's choice (truncate for hetlora, svd otherwise)")
    importance: ImportanceSpec = Field(default_factory=ImportanceSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    forward: Literal["packed", "padded"] = Field(
        "packed", description="packed: skip padding tokens (BERT proxies; same math, learning/packed.py); "
                              "padded: the reference HF forward on padded batches (always used for other families)")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where the proxy trains: cpu, cuda (a GPU; refused when torch sees none), or auto (cuda "
                           "when torch sees a GPU, else cpu); CPU runs are identical at the same torch_threads, GPU "
                           "runs differ within float rounding")
    autocast: Literal["none", "bf16", "fp16"] = Field(
        "none", description="mixed precision of the forward on a GPU (bf16, or fp16 with dynamic loss scaling); "
                            "parameters and optimiser state stay fp32; not used on cpu")
    torch_threads: Annotated[int, Field(ge=1, le=1024)] | None = Field(None, description="torch intra-op threads (default: torch's)")
    slice_cache: Annotated[int, Field(ge=0, le=10000)] = Field(8, description="sliced-backbone copies kept in memory (by mask)")
    workers: Annotated[int, Field(ge=1, le=256)] = Field(
        1, description="parallel local updates: Ray actors, each with its own proxy replica and 1 torch thread unless "
                       "torch_threads is set (the server side then uses as many); results identical to workers: 1 "
                       "at the same torch_threads")

    @model_validator(mode="before")
    @classmethod
    def _old_device_key(cls, data: Any) -> Any:
        """``compute_device`` (its name until issue 21) still reads as ``device``."""
        if isinstance(data, dict) and "compute_device" in data and "device" not in data:
            data = {("device" if k == "compute_device" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _workers_on_cpu(self) -> "LearningSpec":
        if self.workers > 1 and self.device != "cpu":
            raise ValueError(f"workers: {self.workers} parallel workers need device: cpu "
                             f"(got {self.device}); use workers: 1")
        if self.autocast != "none" and self.device == "cpu":
            raise ValueError(f"autocast: {self.autocast} needs device: cuda or auto (got cpu); allowed on cpu: none")
        return self


class OutputSpec(Strict):
    dir: str = Field("results", description="results root; runs go to DIR/<scenario name>/<run id>/")
    run_name: str | None = Field(None, description="run id (default: seed<seed>-<hash of the resolved scenario>)")
    plots: bool = Field(True, description="write PNG plots into the run directory")
    progress: bool = Field(True, description="progress bar on an interactive terminal")
    checkpoint_every: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        None, description="rounds between checkpoints (RUN_DIR/checkpoint.bin; `fedfleet run --resume RUN_DIR` "
                          "continues from the last); 0 = off; default 1 for real learning, 0 for timing-only")

    @field_validator("run_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return _check_name(v, "run_name")

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not v or "\x00" in v:
            raise ValueError("output dir must be a non-empty path")
        return v


Probability = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class StragglerSpec(Strict):
    prob: Probability = Field(0.0, description="per device per round: a straggler spike starts (if none is running)")
    factor: Annotated[float, Field(ge=1, le=1e6, allow_inf_nan=False)] = Field(
        4.0, description="step time multiplier during a spike (the device's speed divided by it)")
    rounds: Annotated[int, Field(ge=1, le=1_000_000)] = Field(3, description="rounds a spike lasts")


class NetworkPartitionSpec(Strict):
    placement: str = Field(description="placement class that cannot reach the server")
    start_s: TimeS = Field(description="simulated time the partition begins, s")
    end_s: PosTimeS = Field(description="simulated time it ends, s (exclusive)")

    @model_validator(mode="after")
    def _order(self) -> "NetworkPartitionSpec":
        if not self.end_s > self.start_s:
            raise ValueError(f"end_s: {self.end_s} must exceed start_s {self.start_s}")
        return self


class FaultsSpec(Strict):
    """Faults injected into the fleet (devices/faults.py): crashes, lost uploads, partitions, stragglers, leaving."""

    crash_prob: Probability = Field(0.0, description="per selected device per round: crashes at a random phase "
                                                     "(download, training or upload); back next round")
    lost_upload_prob: Probability = Field(0.0, description="per device per round: the upload is sent but never "
                                                           "reaches the server")
    leave_prob: Probability = Field(0.0, description="per device per round: leaves the fleet for good (mid-round "
                                                     "if selected)")
    straggler: StragglerSpec = Field(default_factory=StragglerSpec)
    partitions: list[NetworkPartitionSpec] = Field(default_factory=list, max_length=100_000,
                                            description="[{placement, start_s, end_s}]: a class unreachable in "
                                                        "[start_s, end_s) of simulated time")


class ServerSpec(Strict):
    """The server's compute for the top of a split model (split learning; sim/split_round.py)."""

    peak_tflops: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(
        100.0, description="server accelerator peak, TFLOP/s (default: a data-centre GPU class, inferred)")
    efficiency: Fraction = Field(0.5, description="share of the peak the top's forward and backward achieve "
                                                  "(default inferred)")


class SparsitySpec(Strict):
    constraint: Literal["per_device", "fleet_mean"] = Field(
        "per_device", description="per_device: every device ends at the policy's prune_target P; fleet_mean: each "
        "device ends at its own ratio in [P - spread, P + spread] (clipped to [0, 0.9]) and the fleet's mean is P "
        "(the server projects the devices' choices, algorithms/sparsity.py)")
    spread: Annotated[float, Field(ge=0, le=0.9, allow_inf_nan=False)] = Field(
        0.2, description="fleet_mean: largest distance of a device's final ratio from P")
    weighting: Literal["uniform", "data"] = Field(
        "uniform", description="fleet_mean: the mean over devices is uniform, or weighted by local data size "
        "(real learning only; timing-only runs use uniform)")


class Scenario(Strict):
    name: str | None = Field(None, description="scenario name (default: the file name)")
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = Field(0, description="the one seed of the run")
    fleet: Fleet
    network: Network = Field(default_factory=Network)
    dynamics: Dynamics = Field(default_factory=Dynamics)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    training: Training = Field(default_factory=Training)
    round: RoundSpec = Field(default_factory=RoundSpec)
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec)
    policies: dict[str, AlgorithmSpec] | None = Field(
        None, description="compare several strategies on the same fleet, seed and data: {label: {name, params}}; "
                          "fedfleet run then runs one child run per label (algorithm is ignored)")
    learning: LearningSpec = Field(default_factory=LearningSpec)
    sparsity: SparsitySpec = Field(default_factory=SparsitySpec, description="the fleet's sparsity constraint, read by every pruning policy")
    faults: FaultsSpec | None = Field(None, description="fault injection (crashes, lost uploads, partitions, "
                                                        "straggler spikes, devices leaving); none by default")
    server: ServerSpec | None = Field(None, description="server compute for split learning (plans with split_layers: "
                                                        "splitfed, mergesfl); default peak_tflops 100, efficiency 0.5")
    output: OutputSpec = Field(default_factory=OutputSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return _check_name(v, "name")

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: dict | None) -> dict | None:
        if v is not None:
            if not v:
                raise ValueError("needs at least one policy (or leave it out)")
            for k in v:
                _check_name(k, "policy label")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "Scenario":
        for i, g in enumerate(self.fleet.groups):
            names = [g.placement] if isinstance(g.placement, str) else list(g.placement)
            for c in names:
                if c not in self.network.classes:
                    raise ValueError(f"fleet.groups[{i}].placement: unknown class {_short(c)}; "
                                     f"allowed: {', '.join(self.network.classes)}")
            if isinstance(g.placement, dict) and not sum(g.placement.values()) > 0:
                raise ValueError(f"fleet.groups[{i}].placement: shares must sum to more than 0")
        labels = [g.label for g in self.fleet.groups]
        if len(set(labels)) != len(labels):
            raise ValueError("fleet.groups: group labels must be unique (set name: on groups of the same type)")
        for i, p in enumerate(self.faults.partitions if self.faults is not None else []):
            if p.placement not in self.network.classes:
                raise ValueError(f"faults.partitions[{i}].placement: unknown class {p.placement!r}; "
                                 f"allowed: {', '.join(self.network.classes)}")
        if self.round.policy == "first_k" and self.round.k > self.n_devices:
            raise ValueError(f"round.k: {self.round.k} exceeds the fleet size {self.n_devices}")
        return self

    @property
    def n_devices(self) -> int:
        """Devices in the fleet, all groups together."""
        return sum(g.count for g in self.fleet.groups)

    def device_ids(self) -> tuple[list[str], list[str]]:
        """Device ids (``<group label>-<index>``, zero-padded) and each device's group label, in fleet order."""
        ids: list[str] = []
        labels: list[str] = []
        for g in self.fleet.groups:
            width = max(3, len(str(g.count - 1)))
            ids.extend(f"{g.label}-{k:0{width}d}" for k in range(g.count))
            labels.extend([g.label] * g.count)
        return ids, labels


def schema_rows(model: type[BaseModel] = Scenario, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every key, for ``fedfleet schema`` and the README."""
    rows: list[tuple[str, str, str]] = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        sub = _submodel(ann)
        default = "required" if f.is_required() else _fmt_default(f)
        if sub is not None:
            is_dict = getattr(ann, "__origin__", None) is dict
            rows.append((key, default if is_dict else "", f.description or ""))
            child = f"{key}[]." if _is_list(ann) else (f"{key}.<name>." if is_dict else f"{key}.")
            rows.extend(schema_rows(sub, child))
        else:
            rows.append((key, default, f.description or ""))
    return rows


def _fmt_default(f) -> str:
    if f.default_factory is not None:
        try:
            v = f.default_factory()
        except TypeError:
            return ""
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {list(c.mbps)}" if hasattr(c, "mbps") else str(k) for k, c in v.items()) + "}"
        return repr(v) if not isinstance(v, BaseModel) else ""
    v = f.default
    return "null" if v is None else repr(v)


def _is_list(ann: Any) -> bool:
    return getattr(ann, "__origin__", None) is list


def _submodel(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in getattr(ann, "__args__", ()) or ():
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None
