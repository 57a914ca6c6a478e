"""The real learner: every device's plan carried out on a real pretrained proxy, on its own data.

State (kept small, so fleets of thousands of devices fit in memory): one frozen backbone shared by
all devices; the server's global LoRA update per adapted matrix (dense ΔW in full coordinates after ``svd``
aggregation, factors after ``zero_pad``/``fedavg``) and the global classification head; per device
only its keep-masks, its smoothed group importance and its last rank. LoRA factors exist only for
the duration of a local update.

One local update (round t, device i, plan (p, r, layers, τ, b)):

0. ranks: plan LoRA layers are target-model indices, mapped onto the proxy's layers by
   l -> floor(l·L_proxy/L_target) (:meth:`RealLearner.proxy_layers`). With per-layer ranks
   (``plan.layer_ranks``) a proxy layer gets the largest rank of the target layers mapped onto it,
   and every adapted matrix (key) of that layer carries that rank r_key with scaling
   s_key = lora_scale(lora_alpha, r_key) (alpha / r, or alpha / sqrt(r) under ``learning.lora_scaling: rslora``);
   otherwise every key has r = ``plan.lora_rank``;
1. receive: the global update restricted to the device's structure, resized to each key's rank
   (``svd``: truncated SVD of the restricted ΔW_g, FlexLoRA; ``truncate``: HetLoRA truncation;
   :attr:`RealLearner.resize_method` — ``learning.resize``, or for ``auto`` the strategy's choice set
   through :meth:`RealLearner.use_resize`, ``svd`` until then);
2. prune to p with the smoothed importance (``prune_first``, default: before the τ steps; the
   importance of a device that never trained is measured on ``calibration_batches`` batches first)
   or after ⌊τ/2⌋ steps (``tune_prune_tune``, the seed summary's order); pruned rows of B and columns
   of A are dropped with the structure;
3. τ AdamW steps on the physically sliced model (LoRA + head trainable), updating the importance EMA
   only in a round whose plan prunes (a round that keeps its structure carries the EMA unchanged, and
   a later pruning ranks with the EMA of the last pruning round);
4. report: loss on the round's first batch before (full received model, before pruning: step 0's own
   forward when step 0 trains that model on that batch, i.e. no calibration and no pruning before
   step 0; else a separate forward) and after training, ‖B_end − B_start‖_F over all matrices (the
   LoRA-update importance), a group-importance summary and the proxy's measured peak memory. The new
   masks, importance and factors are committed only when the server aggregates the update (a device
   that drops out keeps its old state).
5. HetLoRA rank self-pruning (Cho et al. 2024, "Heterogeneous LoRA for federated fine-tuning of
   on-device foundation models", EMNLP 2024), only when ``plan.rank_prune_decay`` γ < 1: after the τ
   steps, with k_key = max(1, floor(γ·r_key)) for every key,

       tail = sqrt(Σ_key ‖s_key·B[:, k:]·A[k:, :]‖_F²) / sqrt(Σ_key ‖s_key·B·A‖_F²)

   (tail = 0 when the whole update is 0). If tail < ``plan.rank_prune_tol`` the device uploads only
   the first k_key components of every key, B[:, :k] and A[:k, :]. The uploaded
   :class:`~learning.aggregate.DeviceLora` keeps the scaling of the trained rank, s_key = s(r_key)
   (not s(k)), so its ΔW = s_key·B[:, :k]·A[:k, :] is exactly the truncated reconstruction and
   the aggregators need no change. The uploaded rank (largest over keys) is reported as
   ``lora_rank_reported`` (the planned ``lora_rank`` without self-pruning) and becomes the
   device's rank (``DeviceState.rank``, the global rank used by ``truncate`` resizing). The
   strategy's next plan decides the rank the device trains at next; ``lora_update_norm`` is measured
   on the full trained factors. The cost model (``devices.cost.plan_cost``) prices the planned ranks
   (upload size of the plan), not the self-pruned ones.

Randomness: batches, calibration, random-criterion scores and the random rows of resized factors use
named streams ``learn.*`` of the run seed per (device, round); dropout runs under a forked torch RNG
seeded the same way, so results do not depend on the order devices are trained in.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from devices.plan import Plan
from devices.rng import generator, stream_seed
from learning import aggregate as agg
from learning.data import DEFAULT_MAX_LEN, collate, length_sorted_batches, load_dataset, split_digest, tokenize, \
    train_test_split
from learning.importance import KINDS, ImportanceEMA, combine, group_sums, groups_to_remove, lora_grad_importance, \
    prune
from learning.lora import Attached, Key, attach, detach, lora_keys, lora_scale
from learning.models import load_proxy
from learning.packed import DropoutMasks, PackedBatch, masked_mean, pack, packed_logits, supports
from learning.partition import label_histogram, partition
from learning.structure import ArchAdapter, Masks, Slicer, group_index
from learning.comp import comp_prune
from learning.layers import layers_to_remove
from learning.accel import LossScaler, autocast, autocast_dtype, resolve_device
from learning.api import Learner, Update
from learning.config import LearnerConfig

log = logging.getLogger(__name__)


RESIZE_METHODS = ("svd", "truncate")


@dataclass
class DeviceState:
    masks: Masks
    importance: ImportanceEMA
    rank: int | None = None  # largest rank over the keys of the device's last uploaded factors


@dataclass
class Payload:
    """What a device uploads (plus the state it commits if the server takes the update)."""

    factors: dict[Key, agg.DeviceLora]
    head: dict[str, torch.Tensor]
    state: DeviceState
    rank: int  # largest rank over the uploaded factors (after self-pruning)


SVD_CACHE = 16  # restricted blocks whose SVD one global entry keeps (by structure)
SVD_KEEP = 64  # leading singular components kept per cached block (ranks above it factorise anew)


@dataclass
class GlobalEntry:
    dense: torch.Tensor | None = None  # ΔW_g, full coordinates
    B: torch.Tensor | None = None  # factors with the scaling folded in: ΔW_g = B @ A
    A: torch.Tensor | None = None
    svd: dict = field(default_factory=dict, repr=False)  # structure bytes -> svd_parts of dense[rows][:, cols]

    def svd_parts(self, structure: bytes, block: torch.Tensor, rank: int) -> tuple:
        """``agg.svd_parts(block)`` for the block that ``structure`` (the keep-mask bytes) cuts from ``dense``,
        computed once per global update: devices with the same structure get the same (deterministic)
        SVD, so the result is bit-identical to computing it per device. Kept: the leading
        :data:`SVD_KEEP` components of at most :data:`SVD_CACHE` blocks (oldest dropped first); a rank
        that needs more components is factorised anew. A new aggregate is a new entry, its cache empty."""
        hit = self.svd.get(structure)
        if hit is None:
            U, S, Vh, nr = agg.svd_parts(block.detach().to("cpu", torch.float32))
            if len(self.svd) >= SVD_CACHE:
                self.svd.pop(next(iter(self.svd)))
            hit = self.svd[structure] = (U[:, :SVD_KEEP].clone(), S[:SVD_KEEP].clone(), Vh[:SVD_KEEP].clone(), nr)
            if min(rank, nr) > SVD_KEEP:
                return U, S, Vh, nr
        if min(rank, hit[3]) > hit[1].numel():
            return agg.svd_parts(block.detach().to("cpu", torch.float32))
        return hit

    def as_dense(self) -> torch.Tensor | None:
        if self.dense is None and self.B is not None:
            self.dense = self.B @ self.A
        return self.dense


@dataclass
class _LocalRun:
    """The working state of one local update (device, round), from :meth:`RealLearner._prepare` to its report."""

    plan: Plan
    rng: np.random.Generator
    gen: torch.Generator
    keys: list[Key]
    ranks: dict[Key, int]
    ema: ImportanceEMA
    masks: Masks
    need_prune: bool
    n_cal: int  # calibration batches (importance only, no step) before a first pruning
    batches: list[np.ndarray]
    probe: tuple  # the round's first batch, for the losses before and after training
    peak: list[int] = field(default_factory=lambda: [0])  # largest saved-activation bytes of a step
    att: Attached | None = None
    b_start: dict = field(default_factory=dict)  # B factors at the start (after a pruning: their kept rows)
    loss_before: float = math.nan
    loss_after: float = math.nan
    final: dict = field(default_factory=dict)  # trained factors {key: (B, A)}
    new_head: dict = field(default_factory=dict)
    peak_mem_bytes: float = math.nan


def _comp_state(masks: Masks) -> dict:
    """The COMP parts of a device's masks for a checkpoint (none without layer pruning or mask tuning)."""
    out = {} if masks.layers is None else {"layers": masks.layers.copy()}
    return out | ({} if masks.scales is None else {"scales": {k: v.copy() for k, v in masks.scales.items()}})


def self_prune_rank(rank: int, gamma: float) -> int:
    """HetLoRA's kept rank k = max(1, floor(gamma * rank)) (1e-9 guards floor against 0.29*100 = 28.999...)."""
    return max(1, math.floor(gamma * rank + 1e-9))


class RealLearner(Learner):
    """The :class:`~learning.api.Learner` that trains a real proxy with transformers + peft on CPU (or CUDA)."""

    extra_columns = ("proxy_peak_mem_bytes", "proxy_attn_sparsity", "proxy_ffn_sparsity", "importance_attn_median",
                     "importance_attn_min", "importance_ffn_median", "importance_ffn_min", "lora_rank_reported")

    def __init__(self, config: LearnerConfig, *, seed: int, n_devices: int, lora_targets: list[str],
                 target_layers: int, base_dir=None):
        self.config = config
        self.seed = seed
        self.n = n_devices
        self.default_resize = "svd"  # resize method for learning.resize = auto (see use_resize)
        self.target_layers = target_layers
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.torch_device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(config.autocast, self.torch_device)
        self._scaler: LossScaler | None = None  # fp16 loss scaling, one per local update
        t0 = time.perf_counter()
        self._split_data()
        self._load_model()
        self.targets = list(lora_targets)
        self._tokenize()
        p = config.partition
        self.parts = partition(self.train_labels, n_devices, p.kind, generator(seed, "learn.partition"),
                               alpha=p.alpha, min_size=p.min_size)
        self.hist = label_histogram(self.train_labels, self.parts, self.dataset.n_classes)
        self.devices = [DeviceState(self.adapter.full_mask(), ImportanceEMA(config.importance.beta))
                        for _ in range(n_devices)]
        self._init_global()
        self.setup_s = time.perf_counter() - t0
        self.eval_rows: list[dict] = []
        self.host_train_s = 0.0  # host time, reported in summary.json's host section only
        self.host_steps = 0
        self.host_eval_s = 0.0

    def _split_data(self) -> None:
        """The packaged dataset, its seeded train/test split and the optional training-pool cap."""
        cfg, seed = self.config, self.seed
        ds = load_dataset(cfg.dataset)
        if cfg.test_size >= len(ds.labels):
            raise ValueError(f"learning.test_size {cfg.test_size} must be below the dataset size {len(ds.labels)}")
        self.dataset = ds
        train_idx, test_idx = train_test_split(len(ds.labels), cfg.test_size, generator(seed, "learn.split"))
        if cfg.train_examples is not None and cfg.train_examples < len(train_idx):
            sub = generator(seed, "learn.train_subset").choice(len(train_idx), cfg.train_examples, replace=False)
            train_idx = np.sort(train_idx[sub])
        self.train_idx, self.test_idx = train_idx, test_idx

    def _load_model(self) -> None:
        """The proxy model, its architecture adapter and slicer, and the forward it runs."""
        cfg = self.config
        pm = load_proxy(cfg.model, self.dataset.n_classes, stream_seed(self.seed, "learn.init"),
                        dropout=cfg.model_dropout, layers=cfg.proxy_layers, allow_download=cfg.allow_download)
        self.model, self.tok = pm.model.to(self.torch_device), pm.tokenizer
        self.model_source = pm.source
        self.adapter = ArchAdapter.for_model(self.model)
        a = self.adapter
        bad = [li for li in cfg.importance.protected_layers if li >= a.num_layers]
        if bad:
            raise ValueError(f"learning.importance.protected_layers: {bad} beyond the proxy's {a.num_layers} layers")
        self.protected = frozenset(cfg.importance.protected_layers)
        self.comp_peak_bytes = 0.0  # largest COMP pruning peak (tensor accounting, learning/comp.py)
        self.slicer = Slicer(self.model, a, cache_size=cfg.slice_cache)
        self.packed = cfg.forward == "packed" and supports(self.model)
        if cfg.forward == "packed" and not self.packed:
            log.info("learning.forward packed: %s is not a supported BERT classifier; using the padded forward",
                     cfg.model)
        self.pooling = cfg.pooling
        # a Hugging Face model's submodules, by their library names (not members of ours)
        if self.pooling == "mean" and not (hasattr(self.model, "bert") and hasattr(self.model, "classifier")):
            raise ValueError(f"learning.pooling mean: {cfg.model} is not a BERT classifier (allowed there: cls)")
        self._dropout_masks: DropoutMasks | None = None  # the packed path's dropout during a local update
        self.tokens_real = 0  # tokens of the training batches (and rows a padded forward would process)
        self.tokens_if_padded = 0

    def _tokenize(self) -> None:
        """Token ids of the used examples (tokenised once per run) and the evaluation subset."""
        cfg, ds = self.config, self.dataset
        max_len = cfg.max_len or DEFAULT_MAX_LEN[cfg.dataset]
        used = np.concatenate([self.train_idx, self.test_idx])
        ids = tokenize([ds.texts[i] for i in used], self.tok, max_len)
        n_train = len(self.train_idx)
        self.train_ids = ids[:n_train]
        self.train_labels = np.asarray(ds.labels)[self.train_idx]
        self.test_ids_all = ids[n_train:]
        self.test_labels_all = np.asarray(ds.labels)[self.test_idx]
        sel = np.arange(len(self.test_idx))
        if cfg.eval.examples is not None and cfg.eval.examples < len(sel):
            sel = np.sort(generator(self.seed, "learn.eval_subset").choice(len(sel), cfg.eval.examples, replace=False))
        self.eval_sel = sel
        self.pad_id = int(self.tok.pad_token_id)

    def _init_global(self) -> None:
        """The server's global state (no LoRA update yet, the proxy's head) and the adapted matrices' shapes."""
        a = self.adapter
        self.glob: dict[Key, GlobalEntry] = {}
        head = self._head_module()
        self.head_names = [n for n, _ in head.named_parameters()]
        self.head = {n: p.detach().clone() for n, p in head.named_parameters()}
        self.shapes = {(li, s.path): tuple(self.slicer.original(li, s.path).weight.shape)
                       for li in range(a.num_layers) for s in a.matrices}
        self.specs = {s.path: s for s in a.matrices}
        self.all_keys = lora_keys(a, self.targets, range(a.num_layers))
        self.fallback = sorted({k for k in KINDS if not any(self.specs[p].kind == k for _, p in self.all_keys)})
        if self.fallback and self.config.importance.criterion == "lora_grad":
            log.warning("no LoRA target in %s matrices: their groups are ranked by magnitude", "/".join(self.fallback))

    def _head_module(self) -> nn.Module:
        """The proxy's classification head (a Hugging Face submodule named by the adapter)."""
        return getattr(self.model, self.adapter.head_module)

    # ------------------------------------------------------------------ contract (learning.api.Learner)
    @property
    def trains(self) -> bool:
        """Always: this learner trains the proxy."""
        return True

    def data_sizes(self) -> np.ndarray:
        """Training examples per device."""
        return np.array([len(p) for p in self.parts], dtype=float)

    def evaluation_rows(self) -> list[dict]:
        """Per-device evaluations so far (:meth:`evaluate` appends one row per evaluated device)."""
        return self.eval_rows

    def counters(self) -> dict[str, float]:
        """Host-work counters that local updates advance (training seconds and steps, tokens)."""
        return {"host_train_s": self.host_train_s, "host_steps": self.host_steps, "tokens_real": self.tokens_real,
                "tokens_if_padded": self.tokens_if_padded}

    def add_counters(self, deltas: dict[str, float]) -> None:
        """Add counter deltas measured elsewhere (a worker's local updates) to this learner's."""
        self.host_train_s += deltas["host_train_s"]
        self.host_steps += deltas["host_steps"]
        self.tokens_real += deltas["tokens_real"]
        self.tokens_if_padded += deltas["tokens_if_padded"]

    def host_summary(self) -> dict:
        """Setup, training and evaluation host seconds, training steps and tokens."""
        return {"learner_setup_s": self.setup_s, "train_s": self.host_train_s, "train_steps": self.host_steps,
                "eval_s": self.host_eval_s, "train_tokens": self.tokens_real,
                "train_tokens_if_padded": self.tokens_if_padded}

    def state(self) -> dict:
        """Every device's masks, importance and rank, the global LoRA update and head, the evaluations
        and counters. Optimiser state and LoRA factors live only inside one local update."""
        return {"devices": [{"attn": d.masks.attn.copy(), "ffn": d.masks.ffn.copy(), "importance": d.importance.state(),
                             "rank": d.rank, **_comp_state(d.masks)} for d in self.devices],
                "glob": [{"layer": k[0], "path": k[1], "dense": g.dense, "B": g.B, "A": g.A}
                         for k, g in self.glob.items()],
                "head": dict(self.head), "eval_rows": [dict(r) for r in self.eval_rows],
                "host_eval_s": self.host_eval_s, **self.counters()}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`state` onto a learner built from the same scenario."""
        beta = self.config.importance.beta
        if len(state["devices"]) != self.n:
            raise ValueError(f"learner state of {len(state['devices'])} devices, this fleet has {self.n}")
        self.devices = [DeviceState(Masks(d["attn"], d["ffn"], d.get("layers"), d.get("scales")),
                                    ImportanceEMA(beta, d["importance"]), d["rank"])
                        for d in state["devices"]]
        self.glob = {(g["layer"], g["path"]): GlobalEntry(g["dense"], g["B"], g["A"]) for g in state["glob"]}
        self.head = dict(state["head"])
        self.eval_rows = list(state["eval_rows"])
        self.host_eval_s = state["host_eval_s"]
        self.host_train_s = self.host_steps = self.tokens_real = self.tokens_if_padded = 0
        self.add_counters(state)

    # ------------------------------------------------------------------ helpers

    @property
    def resize_method(self) -> str:
        """Effective resize method: ``learning.resize``, or ``default_resize`` when that is ``auto``."""
        return self.default_resize if self.config.resize == "auto" else self.config.resize

    def use_resize(self, method: str) -> None:
        """Set the resize method used under ``learning.resize: auto`` (the engine passes the strategy's)."""
        if method not in RESIZE_METHODS:
            raise ValueError(f"unknown resize method {method!r}; allowed: {', '.join(RESIZE_METHODS)}")
        self.default_resize = method

    def info(self) -> dict:
        ds = self.dataset
        return {"model": self.config.model, "model_source": self.model_source, "family": self.adapter.family,
                "dataset": ds.name, "dataset_source": ds.source, "n_train": int(len(self.train_idx)),
                "n_test": int(len(self.test_idx)), "n_eval": int(len(self.eval_sel)),
                "train_digest": split_digest(self.train_idx), "test_digest": split_digest(self.test_idx),
                "label_names": list(ds.label_names), "majority_rate": float(np.bincount(
                    self.test_labels_all[self.eval_sel], minlength=ds.n_classes).max() / len(self.eval_sel)),
                "importance_fallback_kinds": self.fallback, "resize": self.resize_method, "setup_s": self.setup_s,
                "forward": "packed" if self.packed else "padded",
                **({"comp_peak_mem_bytes": self.comp_peak_bytes} if self.comp_peak_bytes else {})}

    def partition_table(self):
        import pandas as pd  # noqa: PLC0415

        cols = {"device_index": np.arange(self.n), "n_samples": np.array([len(p) for p in self.parts])}
        for c, name in enumerate(self.dataset.label_names):
            cols[f"label_{name}"] = self.hist[:, c]
        return pd.DataFrame(cols)

    def proxy_layers(self, plan: Plan) -> list[int]:
        """Plan LoRA layers are target-model indices; map l -> floor(l * L_proxy / L_target)."""
        return sorted(self.proxy_ranks(plan))

    def proxy_ranks(self, plan: Plan) -> dict[int, int]:
        """LoRA rank per proxy layer: the largest ``plan.rank_at(l)`` of the target layers mapped onto it."""
        L = self.adapter.num_layers
        if plan.lora_layers is None:
            return dict.fromkeys(range(L), plan.lora_rank)
        out: dict[int, int] = {}
        for li in plan.lora_layers:
            p = min(L - 1, (li * L) // self.target_layers)
            out[p] = max(out.get(p, 0), plan.rank_at(li))
        return out

    def key_ranks(self, plan: Plan, keys: list[Key]) -> dict[Key, int]:
        """LoRA rank of every key (its proxy layer's rank, :meth:`proxy_ranks`)."""
        pr = self.proxy_ranks(plan)
        return {k: pr[k[0]] for k in keys}

    def lora_s(self, rank: int) -> float:
        """LoRA's output scaling at ``rank`` under ``learning.lora_alpha`` and ``lora_scaling`` (:func:`lora_scale`)."""
        return lora_scale(self.config.lora_alpha, rank, self.config.lora_scaling)

    def _rows_cols(self, key: Key, masks: Masks) -> tuple[torch.Tensor, torch.Tensor]:
        li, path = key
        spec = self.specs[path]
        out, inp = self.shapes[key]
        idx = group_index(spec, masks.of(spec.kind)[li])
        if spec.axis == 0:
            return idx, torch.arange(inp)
        return torch.arange(out), idx

    def _received(self, keys: list[Key], masks: Masks, ranks: dict[Key, int], gen: torch.Generator) -> dict:
        """The global update restricted to ``masks`` and resized to each key's rank: {key: (B, A)}."""
        method = self.resize_method
        out = {}
        for key in keys:
            rank = ranks[key]
            s = self.lora_s(rank)
            rows, cols = self._rows_cols(key, masks)
            g = self.glob.get(key)
            if method == "truncate" and g is not None:
                if g.B is None:
                    g.B, g.A = agg.global_factors(g.dense, self._max_rank())
                out[key] = agg.factor_truncate(g.B, g.A, rows, cols, rank, s, gen)
                continue
            dense = g.as_dense() if g is not None else None
            delta = torch.zeros(len(rows), len(cols)) if dense is None else dense[rows][:, cols]
            parts = None
            if dense is not None and bool(delta.any()):
                parts = g.svd_parts(masks.of(self.specs[key[1]].kind)[key[0]].tobytes(), delta, rank)
            out[key] = agg.factor_svd(delta, rank, s, gen, parts)
        return out

    def _max_rank(self) -> int:
        ranks = [d.rank for d in self.devices if d.rank]
        return max(ranks) if ranks else 8

    def _batches(self, idx: np.ndarray, steps: int, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``steps`` batches of ``batch`` local indices: epochs of fresh permutations, concatenated."""
        need = steps * batch
        perms = [rng.permutation(idx) for _ in range(math.ceil(need / len(idx)))]
        flat = np.concatenate(perms)[:need]
        return [flat[i * batch:(i + 1) * batch] for i in range(steps)]

    def _inputs(self, rows: np.ndarray) -> tuple[dict | PackedBatch, torch.Tensor]:
        seqs = [self.train_ids[i] for i in rows]
        y = torch.from_numpy(self.train_labels[rows]).long().to(self.torch_device)
        return self._encode(seqs), y

    def _encode(self, seqs: list[np.ndarray]) -> dict | PackedBatch:
        """A batch for :meth:`_logits`: packed (no padding) or padded ``input_ids``/``attention_mask``."""
        dev = self.torch_device
        if self.packed:
            return pack(seqs).to(dev)
        ids, mask = collate(seqs, self.pad_id)
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}

    def _logits(self, batch: dict | PackedBatch) -> torch.Tensor:
        if isinstance(batch, PackedBatch):
            return packed_logits(self.model, batch, self._dropout_masks, self.pooling)
        if self.pooling == "mean":  # BERT family only (checked in __init__)
            h = self.model.bert(**batch).last_hidden_state
            return self.model.classifier(self.model.dropout(masked_mean(h, batch["attention_mask"])))
        return self.model(**batch).logits

    def _loss(self, batch: dict | PackedBatch, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of a batch (the forward under ``learning.autocast`` on a GPU, the loss in fp32)."""
        with autocast(self.torch_device, self.amp_dtype):
            logits = self._logits(batch)
        return nn.functional.cross_entropy(logits.float(), y)

    # ------------------------------------------------------------------ local update
    def local_update(self, device: int, plan: Plan, round_index: int) -> Update:
        """One local update (module docstring, steps 0-5); commits nothing (:meth:`aggregate` does)."""
        t0 = time.perf_counter()
        run = self._prepare(device, plan, round_index)
        head = self._head_module()
        self._dropout_masks = DropoutMasks(generator(self.seed, "learn.dropout_masks", device, round_index))
        self._scaler = LossScaler() if self.amp_dtype == torch.float16 else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, "learn.dropout", device, round_index))
            self._train(run, head)
            detach(self.model, self.slicer)
        self._dropout_masks = None
        self.host_train_s += time.perf_counter() - t0
        self.host_steps += plan.local_steps + run.n_cal
        return self._report(run)

    def _prepare(self, device: int, plan: Plan, round_index: int) -> "_LocalRun":
        """The update's streams, adapted keys and ranks, working copies of the device's state, and batches."""
        imp = self.config.importance
        st = self.devices[device]
        rng = generator(self.seed, "learn.local", device, round_index)
        gen = torch.Generator().manual_seed(stream_seed(self.seed, "learn.resize", device, round_index))
        masks = st.masks.copy()
        keys = [k for k in lora_keys(self.adapter, self.targets, self.proxy_layers(plan)) if masks.kept_layers()[k[0]]]
        ema = ImportanceEMA(imp.beta, st.importance.state())
        need_prune = self._would_prune(masks, plan.prune_ratio, plan.layer_ratio)
        first_grad = imp.criterion == "lora_grad" and imp.order == "prune_first" and not any(ema.has(k) for k in keys)
        n_cal = imp.calibration_batches if (need_prune and (self._criterion(plan) == "comp" or first_grad)) else 0
        batches = self._batches(self.parts[device], plan.local_steps + n_cal, plan.batch_size, rng)
        return _LocalRun(plan, rng, gen, keys, self.key_ranks(plan, keys), ema, masks, need_prune, n_cal, batches,
                         self._inputs(batches[0]))

    def _train(self, run: "_LocalRun", head: nn.Module) -> None:
        """Receive, calibrate, prune and take the tau steps (module docstring, steps 1-3), filling ``run``."""
        tau, order = run.plan.local_steps, self.config.importance.order
        self._load_head(head)
        factors = self._received(run.keys, run.masks, run.ranks, run.gen)
        run.att = self._attach(run.masks, run.keys, run.ranks, factors, head)
        run.b_start = {k: f[0].clone() for k, f in factors.items()}
        steps_before = tau // 2 if (run.need_prune and order == "tune_prune_tune") else 0
        reuse = tau > 0 and run.n_cal == 0 and not (run.need_prune and steps_before == 0)
        if not reuse:  # the probe is not step 0's forward: measure it on its own
            with torch.no_grad():
                run.loss_before = float(self._loss(*run.probe))
        for b in run.batches[tau:] if self._criterion(run.plan) != "comp" else []:  # calibration: importance only
            self._step(run.att, self._inputs(b), None, run.ema, run.masks, run.peak)
        if run.need_prune and steps_before == 0:
            self._prune_run(run, head)
        opt = self._optimizer(run.att, head)
        ema = run.ema if run.need_prune else None  # importance only in a round that prunes
        for k in range(tau):
            if run.need_prune and k == steps_before and steps_before > 0:
                self._prune_run(run, head)
                opt = self._optimizer(run.att, head)
            loss = self._step(run.att, self._inputs(run.batches[k]), opt, ema, run.masks, run.peak)
            if k == 0 and reuse:
                run.loss_before = loss
        with torch.no_grad():
            run.loss_after = float(self._loss(*run.probe))
        run.final = {k: (B.cpu(), A.cpu()) for k, (B, A) in run.att.factors().items()}  # the server keeps CPU tensors
        run.new_head = {n: p.detach().cpu().clone() for n, p in head.named_parameters()}
        params_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        train_bytes = sum(p.numel() * p.element_size() for p in self._trainables(run.att, head))
        run.peak_mem_bytes = float(params_bytes + 3 * train_bytes + run.peak[0])

    def _prune_run(self, run: "_LocalRun", head: nn.Module) -> None:
        """:meth:`_prune_now` on the run's working state (:meth:`_comp_prune_run` for the COMP pruner)."""
        if self._criterion(run.plan) == "comp":
            return self._comp_prune_run(run, head)
        run.masks, run.att, run.b_start = self._prune_now(run.masks, run.plan, run.att, run.keys, run.ranks, run.ema,
                                                          head, run.b_start, run.rng)

    def _report(self, run: "_LocalRun") -> Update:
        """The update a device sends (module docstring, steps 4-5)."""
        norm2 = 0.0
        for k, (B, _) in run.final.items():
            norm2 += float(((B - run.b_start[k]) ** 2).sum())
        sent = self._self_prune(run.final, run.att.scales, run.plan)
        ups: dict[Key, agg.DeviceLora] = {}
        for k, (B, A) in sent.items():
            rows, cols = self._rows_cols(k, run.masks)
            ups[k] = agg.DeviceLora(B, A, run.att.scale(k), rows, cols)  # the trained rank's scaling, also if pruned
        reported = max((u.rank for u in ups.values()), default=run.plan.lora_rank)
        summary = self._importance_summary(run.ema, run.masks)
        payload = Payload(ups, run.new_head, DeviceState(run.masks, run.ema, reported), reported)
        attn_sp, ffn_sp = run.masks.sparsity_parts()
        return Update(loss_before=run.loss_before, loss_after=run.loss_after, lora_update_norm=math.sqrt(norm2),
                      payload=payload,
                      extra={"proxy_peak_mem_bytes": run.peak_mem_bytes,
                             "proxy_attn_sparsity": attn_sp, "proxy_ffn_sparsity": ffn_sp, **summary,
                             "lora_rank_reported": float(reported)})

    @staticmethod
    def _self_prune(final: dict[Key, tuple[torch.Tensor, torch.Tensor]], scales: dict[Key, float],
                    plan: Plan) -> dict[Key, tuple[torch.Tensor, torch.Tensor]]:
        """HetLoRA rank self-pruning (module docstring, step 5): ``final`` or its first-k components."""
        gamma = plan.rank_prune_decay
        if gamma >= 1.0 or not final:
            return final
        keep = {k: self_prune_rank(B.shape[1], gamma) for k, (B, _) in final.items()}
        tail2 = total2 = 0.0
        for k, (B, A) in final.items():
            Bd, Ad, s, kk = B.double(), A.double(), scales[k], keep[k]
            total2 += float(torch.linalg.matrix_norm(s * (Bd @ Ad))) ** 2
            tail2 += float(torch.linalg.matrix_norm(s * (Bd[:, kk:] @ Ad[kk:]))) ** 2
        tail = math.sqrt(tail2 / total2) if total2 > 0.0 else 0.0
        pruned = tail < plan.rank_prune_tol
        log.debug("rank self-pruning: tail %.4g vs tol %.4g -> %s", tail, plan.rank_prune_tol,
                  "prune" if pruned else "keep")
        if not pruned:
            return final
        return {k: (B[:, :keep[k]].clone(), A[:keep[k]].clone()) for k, (B, A) in final.items()}

    def _criterion(self, plan: Plan) -> str:
        """The plan's pruner, else ``learning.importance.criterion``."""
        return plan.pruner or self.config.importance.criterion

    def _would_prune(self, masks: Masks, ratio: float, layer_ratio: float = 0.0) -> bool:
        kept = masks.kept_layers()
        if layers_to_remove(layer_ratio, self.adapter.num_layers) > int((~kept).sum()):
            return True
        for kind in KINDS:
            per = groups_to_remove(ratio, self.adapter.n_groups(kind))
            if any(int((~masks.of(kind)[li]).sum()) < per for li in range(self.adapter.num_layers)
                   if li not in self.protected and kept[li]):
                return True
        return False

    def _load_head(self, head: nn.Module) -> None:
        with torch.no_grad():
            for n, p in head.named_parameters():
                p.copy_(self.head[n])

    def _attach(self, masks: Masks, keys: list[Key], ranks: dict[Key, int], factors: dict,
                head: nn.Module) -> Attached:
        att = attach(self.model, self.adapter, self.slicer, masks, keys, ranks, self.config.lora_alpha, factors,
                     self.config.lora_dropout, scaling=self.config.lora_scaling)
        for p in head.parameters():
            p.requires_grad_(True)
        self.model.train()
        return att

    def _trainables(self, att: Attached, head: nn.Module) -> list[nn.Parameter]:
        return [*att.parameters(), *head.parameters()]

    def _optimizer(self, att: Attached, head: nn.Module) -> torch.optim.Optimizer:
        head_lr = self.config.head_lr if self.config.head_lr is not None else self.config.lr
        return torch.optim.AdamW([{"params": list(att.parameters()), "lr": self.config.lr},
                                  {"params": list(head.parameters()), "lr": head_lr}],
                                 lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _step(self, att: Attached, data: tuple[dict, torch.Tensor], opt, ema: ImportanceEMA | None, masks: Masks,
              peak: list[int]) -> float:
        """One forward/backward (and optimiser step if ``opt``); folds LoRA-guided importance into ``ema``
        (none measured when ``ema`` is None). Returns the loss of the forward, before the step."""
        batch, y = data
        if isinstance(batch, PackedBatch):
            self.tokens_real += batch.tokens
            self.tokens_if_padded += batch.batch * batch.max_len
        else:
            n_real = int(batch["attention_mask"].sum())
            self.tokens_real += n_real
            self.tokens_if_padded += int(batch["attention_mask"].numel())
        params = att.param_ptrs  # parameters are counted separately, not as saved activations
        seen: set[int] = set()
        saved = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            ptr = s.data_ptr()
            if ptr not in seen and ptr not in params:
                seen.add(ptr)
                saved[0] += s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self._loss(batch, y)
        finite = True
        if self._scaler is None:
            loss.backward()
        else:  # fp16 autocast: scaled backward, gradients unscaled before anyone reads them
            self._scaler.scale(loss).backward()
            finite = self._scaler.unscale(self._trainables(att, self._head_module()))
        peak[0] = max(peak[0], saved[0])
        if finite and ema is not None and self.config.importance.criterion == "lora_grad":
            self._fold_importance(att, ema, masks)
        if opt is not None:
            if self.config.grad_clip and finite:
                trainable = [p for g in opt.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(trainable, self.config.grad_clip)
            if finite:
                opt.step()
            if self._scaler is not None:
                self._scaler.update(finite)
        for p in self.model.parameters():
            p.grad = None
        return float(loss.detach())

    @torch.no_grad()
    def _fold_importance(self, att: Attached, ema: ImportanceEMA, masks: Masks) -> None:
        """Fold this step's LoRA-guided group importance (:func:`lora_grad_importance`) into ``ema``."""
        for key, m in att.modules.items():
            A = m.lora_A["default"].weight
            B = m.lora_B["default"].weight
            if A.grad is None or B.grad is None:
                continue
            elem = lora_grad_importance(m.base_layer.weight, B, A, B.grad, A.grad, att.scale(key))
            spec = self.specs[key[1]]
            ema.update(key, masks.of(spec.kind)[key[0]], group_sums(elem, spec))

    def _scores(self, masks: Masks, ema: ImportanceEMA, att: Attached, cur: dict, rng: np.random.Generator) -> dict:
        """Combined group scores per (layer, kind) for the current structure (``cur``: current LoRA factors)."""
        a, crit = self.adapter, self.config.importance.criterion
        out = {}
        for li in range(a.num_layers):
            for kind in KINDS:
                keep = masks.of(kind)[li]
                if crit == "random":
                    v = rng.random(len(keep))
                    v[~keep] = np.inf
                    out[(li, kind)] = v
                    continue
                vecs = []
                specs = [s for s in a.matrices if s.kind == kind]
                if crit == "lora_grad" and all(ema.has((li, s.path)) for s in specs if (li, s.path) in cur) \
                        and any((li, s.path) in cur for s in specs):
                    vecs = [ema.values[(li, s.path)] for s in specs if (li, s.path) in cur]
                else:  # magnitude (also the fallback for matrices without LoRA)
                    for s in specs:
                        W = self.slicer.original(li, s.path).weight.detach()
                        rows, cols = self._rows_cols((li, s.path), masks)
                        w = W[rows][:, cols]
                        if (li, s.path) in cur:
                            B, A = cur[(li, s.path)]
                            w = w + att.scale((li, s.path)) * (B @ A)
                        full = np.zeros(len(keep))
                        full[keep] = group_sums(w.abs(), s)
                        vecs.append(full)
                out[(li, kind)] = combine(vecs, keep)
        return out

    def _prune_now(self, masks, plan, att, keys, ranks, ema, head, b_start, rng, new: Masks | None = None):
        """Prune to the plan's ratio, re-slice, and carry the LoRA factors over to the kept rows/columns."""
        imp = self.config.importance
        cur = att.factors()
        if new is None:  # (COMP passes the masks it chose)
            scores = self._scores(masks, ema, att, cur, rng)
            new = prune(masks, scores, plan.prune_ratio, self.adapter, imp.scope, self.protected)
        carried, starts = {}, {}
        for k, (B, A) in cur.items():
            spec = self.specs[k[1]]
            old_keep, new_keep = masks.of(spec.kind)[k[0]], new.of(spec.kind)[k[0]]
            sel = torch.from_numpy(np.flatnonzero(np.repeat(new_keep[old_keep], spec.width)))
            if spec.axis == 0:
                carried[k], starts[k] = (B[sel], A), b_start[k][sel]
            else:
                carried[k], starts[k] = (B, A[:, sel]), b_start[k]
        detach(self.model, self.slicer)
        att = self._attach(new, keys, ranks, carried, head)
        return new, att, starts

    def _comp_prune_run(self, run: "_LocalRun", head: nn.Module) -> None:
        """COMP (``learning/comp.py``) on the device's model as received (scores see W + s·B·A) with the run's
        calibration batches, padded so every block runs through its own forward: blocks to the plan's layer
        ratio, groups to its prune ratio, mask tuning; LoRA of removed blocks is dropped, the kept groups'
        factors carried over (:meth:`_prune_now`)."""
        dev = self.torch_device
        cal = []
        for b in run.batches[run.plan.local_steps:]:
            ids, mask = collate([self.train_ids[i] for i in b], self.pad_id)
            cal.append({"input_ids": ids.to(dev), "attention_mask": mask.to(dev)})

        def kept_keys(m: Masks) -> list[Key]:
            return [k for k in run.keys if m.kept_layers()[k[0]]]

        def install(m: Masks) -> None:
            cur, keys = run.att.factors(), kept_keys(m)
            detach(self.model, self.slicer)
            run.att = self._attach(m, keys, run.ranks, {k: cur[k] for k in keys}, head)
            self.model.eval()

        self.model.eval()
        res = comp_prune(self.model, self.adapter, run.masks, cal, run.plan.layer_ratio, run.plan.prune_ratio, install,
                         self.protected, self.config.importance.scope, forward=self._logits)
        self.comp_peak_bytes = max(self.comp_peak_bytes, res.peak_bytes)
        run.keys = kept_keys(res.masks)
        run.ranks = {k: run.ranks[k] for k in run.keys}
        run.b_start = {k: run.b_start[k] for k in run.keys}
        run.masks, run.att, run.b_start = self._prune_now(run.masks, run.plan, run.att, run.keys, run.ranks, run.ema,
                                                          head, run.b_start, run.rng, new=res.masks)

    def _importance_summary(self, ema: ImportanceEMA, masks: Masks) -> dict:
        """Median and min of the normalised kept-group scores per kind (NaN without estimates)."""
        out = {}
        for kind in KINDS:
            vals = []
            for li in range(self.adapter.num_layers):
                keep = masks.of(kind)[li]
                vecs = [ema.values[(li, s.path)] for s in self.adapter.matrices
                        if s.kind == kind and ema.has((li, s.path))]
                if vecs:
                    vals.append(combine(vecs, keep)[keep])
            v = np.concatenate(vals) if vals else np.array([])
            out[f"importance_{kind}_median"] = float(np.median(v)) if len(v) else math.nan
            out[f"importance_{kind}_min"] = float(v.min()) if len(v) else math.nan
        return out

    # ------------------------------------------------------------------ server side
    def aggregate(self, devices: list[int], updates: list[Update], method: str, weights: list[float]) -> None:
        """Aggregate the reported updates into the global LoRA and head; commit the devices' states."""
        pairs = [(d, u.payload, w) for d, u, w in zip(devices, updates, weights) if u is not None and u.payload]
        if not pairs:
            return
        keys = sorted({k for _, p, _ in pairs for k in p.factors})
        for key in keys:
            ups = [(p.factors[key], w) for _, p, w in pairs if key in p.factors]
            lo = [u for u, _ in ups]
            ws = [w for _, w in ups]
            shape = self.shapes[key]
            prev = self.glob.get(key)
            if method == "svd":
                dense = agg.aggregate_svd(lo, ws, shape, prev.as_dense() if prev is not None else None)
                self.glob[key] = GlobalEntry(dense=dense)
            elif method == "zero_pad":
                B, A = agg.aggregate_zero_pad(lo, shape)
                self.glob[key] = GlobalEntry(B=B, A=A)
            elif method == "fedavg":
                B, A = agg.aggregate_fedavg(lo, ws, shape)
                self.glob[key] = GlobalEntry(B=B, A=A)
            else:
                raise ValueError(f"unknown aggregation method {method!r}; allowed: svd, zero_pad, fedavg")
        total = sum(w for _, _, w in pairs)
        for n in self.head_names:
            self.head[n] = sum(p.head[n] * (w / total) for _, p, w in pairs)
        for d, p, _ in pairs:
            self.devices[d] = p.state

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, round_index: int = 0) -> dict:
        """Each sampled device's model (its sliced backbone + the global update restricted to it, merged,
        + the global head) on the fixed evaluation subset. Returns the fleet mean and per-device rows."""
        ev = self.config.eval
        devs = np.arange(self.n)
        if ev.devices is not None and ev.devices < self.n:
            devs = np.sort(generator(self.seed, "learn.eval_devices", round_index).choice(self.n, ev.devices,
                                                                                          replace=False))
        t0 = time.perf_counter()
        cache: dict[str, tuple[float, float]] = {}
        rows = []
        for d in devs:
            masks = self.devices[d].masks
            k = masks.key()
            if k not in cache:
                cache[k] = self._eval_masks(masks)
            acc, loss = cache[k]
            a_sp, f_sp = masks.sparsity_parts()
            rows.append({"round": round_index, "device_index": int(d), "accuracy": acc, "loss": loss,
                         "attn_sparsity": a_sp, "ffn_sparsity": f_sp})
        self.eval_rows.extend(rows)
        self.host_eval_s += time.perf_counter() - t0
        accs = np.array([r["accuracy"] for r in rows])
        return {"accuracy": float(accs.mean()), "loss": float(np.mean([r["loss"] for r in rows])),
                "accuracy_min": float(accs.min()), "accuracy_max": float(accs.max()), "devices": rows}

    @torch.no_grad()  # not inference_mode: sliced layers are cached and reused for training
    def _eval_masks(self, masks: Masks) -> tuple[float, float]:
        layers = dict(self.slicer.sliced_layers(masks))
        for key, g in self.glob.items():
            dense = g.as_dense()
            if dense is None:
                continue
            rows, cols = self._rows_cols(key, masks)
            base = layers[key]
            lin = copy.deepcopy(base)  # (nn.Linear() would draw its init from the global RNG)
            lin.weight.add_(dense[rows][:, cols].to(lin.weight))
            layers[key] = lin
        head = self._head_module()
        self._load_head(head)
        self.slicer.apply(masks, layers)
        self.model.eval()
        try:
            ids = [self.test_ids_all[i] for i in self.eval_sel]
            labels = self.test_labels_all[self.eval_sel]
            correct, loss_sum = 0, 0.0
            for b in length_sorted_batches(np.array([len(x) for x in ids]), self.config.eval.batch_size):
                y = torch.from_numpy(labels[b]).long().to(self.torch_device)
                with autocast(self.torch_device, self.amp_dtype):
                    logits = self._logits(self._encode([ids[i] for i in b])).float()
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
        finally:
            self.slicer.restore()
        n = len(self.eval_sel)
        return correct / n, loss_sum / n
