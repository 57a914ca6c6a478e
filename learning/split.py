"""Real split learning on the proxy: device bottoms, a server top, with or without feature merging.

:class:`SplitLearner` trains the proxy physically split after proxy block k (the plan's
``split_layers`` on the target model mapped onto the proxy's blocks, k_p = round(k L_p / L_t) clipped
to [1, L_p - 1] [inferred]): each device holds its own LoRA factors of the bottom blocks, the server
one set of LoRA factors of the top blocks and the classification head. Split learning couples the
devices of a round at every step, so a round is trained as a whole when the engine collects it
(:meth:`collect`; :meth:`submit` only records the device), not device by device::

    for step t:  every device i: features h_i = bottom_i(x_i)                  (its LoRA, its batch)
                 merged (MergeSFL):  logits = top(concat_i h_i); loss = mean CE over the merged batch;
                                     one server step; each device gets its rows of d loss / d h
                 not merged (SplitFed V1): top copy i runs on h_i alone, loss_i = mean CE of its batch;
                                     one step of copy i; device i gets d loss_i / d h_i
                 every device: backward of its bottom with those gradients, one optimiser step

The merged batch is padded to one length (the step's longest sequence), so every device's features
have the same shape. After the round the server keeps the top it trained (merged), or the data-size
weighted average of the top copies (not merged; SplitFed V1's server-side FedAvg), and the bottoms
of the devices that reported are averaged by :meth:`aggregate` (FedAvg of the factors, weighted as
the strategy asks). Every device starts a round from the global bottom; the server's top trains on
the features of every device that trained this round, also those whose report is later lost
[inferred: the server does not undo a step]. AdamW per device bottom and per server top, fresh each
round (as the real learner's local updates). Inferred as well: no LoRA dropout, no pruning in split
mode, plain factor FedAvg (no SVD). Evaluation is the real learner's: the merged global update
(bottom + top) on the shared backbone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from devices.plan import Plan
from devices.rng import generator, stream_seed
from learning.aggregate import lora_a_init
from learning.api import Update
from learning.layers import RemovedBlock, block_holder
from learning.learner import GlobalEntry, RealLearner
from learning.lora import Key, lora_keys

Factors = dict[Key, tuple[torch.Tensor, torch.Tensor]]  # (B, A), B zero at the start, no scaling folded in


class _Cut(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by the hook on the last bottom block: the bottom forward ends with its output."""

    def __init__(self, features: torch.Tensor):
        super().__init__("split point reached")
        self.features = features


class _Inject(nn.Module):
    """Stands in for the last bottom block in the top's forward: returns the given features."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features

    def forward(self, hidden_states, *args, **kwargs):  # noqa: ANN001, ARG002 (any block signature)
        return self.features


@dataclass
class _Device:
    """One device's round: its batches, its bottom factors and their optimiser, its losses."""

    device: int
    plan: Plan
    batches: list[np.ndarray]
    factors: Factors
    opt: torch.optim.Optimizer
    losses: list[float]


class SplitLearner(RealLearner):
    """The :class:`~learning.api.Learner` for split plans (module docstring)."""

    extra_columns = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.packed = False  # the split forward cuts the padded Hugging Face forward between blocks
        self.lora: Factors = {}  # global factors of every adapted matrix (bottom and top)
        self.rank: int | None = None
        self._active: Factors = {}  # the factors the LoRA hooks add while a forward runs
        for key in lora_keys(self.adapter, self.targets, range(self.adapter.num_layers)):
            self.slicer.original(*key).register_forward_hook(self._lora_hook(key))

    def _lora_hook(self, key: Key):
        """A forward hook adding s B (A x) of ``key``'s active factors to its matrix's output."""
        def hook(_module, inputs, output):  # noqa: ANN001, ANN202
            f = self._active.get(key)
            if f is None:
                return output
            B, A = f
            return output + self.lora_s(A.shape[0]) * nn.functional.linear(
                nn.functional.linear(inputs[0], A), B)
        return hook

    def split_point(self, plan: Plan) -> int:
        """The proxy block count on the device: round(k L_p / L_t), in [1, L_p - 1] [inferred]."""
        L = self.adapter.num_layers
        return min(L - 1, max(1, round(plan.split_layers * L / self.target_layers)))

    def _init_factors(self, rank: int) -> None:
        """Global factors at the first round: A as peft draws it (named stream), B = 0."""
        gen = torch.Generator().manual_seed(stream_seed(self.seed, "learn.split.init"))
        for key in lora_keys(self.adapter, self.targets, range(self.adapter.num_layers)):
            d_out, d_in = self.shapes[key]
            self.lora[key] = (torch.zeros(d_out, rank), lora_a_init(rank, d_in, gen))
        self.rank = rank

    # ------------------------------------------------------------------ contract
    def submit(self, device: int, plan: Plan, round_index: int) -> object:
        """Record the device; the round trains as a whole in :meth:`collect`."""
        if plan.split_layers is None:
            raise ValueError("the split learner trains split plans only (plan.split_layers is None)")
        return device, plan, round_index

    def collect(self, handles: list) -> list[Update]:
        """Train the round's devices together (module docstring); one update per handle."""
        t0 = time.perf_counter()
        plans = [p for _, p, _ in handles]
        if self.rank is None:
            self._init_factors(plans[0].lora_rank)
        k = self.split_point(plans[0])
        merged = plans[0].merge_features
        if any(self.split_point(p) != k or p.merge_features != merged or p.lora_rank != self.rank
               or p.lora_layers != plans[0].lora_layers for p in plans):
            raise ValueError("a split round needs one split point, merge flag, rank and LoRA depth for all devices")
        devs = [self._device_run(d, p, r, k) for d, p, r in handles]
        sizes = self.data_sizes()
        tops = [self._server_copy(plans[0], k) for _ in range(1 if merged else len(devs))]
        with torch.random.fork_rng(devices=[]):  # dropout draws from a stream named by the round
            torch.manual_seed(stream_seed(self.seed, "learn.split.dropout", handles[0][2]))
            for t in range(max(len(x.batches) for x in devs)):
                self._step(devs, tops, t, merged, k)
        self._keep_top(tops, [float(sizes[x.device]) for x in devs], k)
        self.host_train_s += time.perf_counter() - t0
        out = []
        for x in devs:
            self.trained()
            out.append(Update(x.losses[0] if x.losses else math.nan, x.losses[-1] if x.losses else math.nan,
                              _norm(x.factors, self.lora), payload={k: (B.detach(), A.detach())
                                                                    for k, (B, A) in x.factors.items()}))
        return out

    def aggregate(self, devices: list[int], updates: list[Update], method: str, weights: list[float]) -> None:
        """FedAvg of the reported bottoms' factors (weights as the strategy asks); refresh the global update."""
        pairs = [(u.payload, w) for u, w in zip(updates, weights) if u is not None and u.payload]
        if pairs:
            total = sum(w for _, w in pairs)
            for key in pairs[0][0]:
                self.lora[key] = tuple(sum(p[key][i] * (w / total) for p, w in pairs) for i in (0, 1))
        self._publish()

    # ------------------------------------------------------------------ one round
    def _device_run(self, device: int, plan: Plan, round_index: int, k: int) -> _Device:
        """Device ``device``'s batches and a trainable copy of the global bottom with its optimiser."""
        rng = generator(self.seed, "learn.local", device, round_index)
        batches = self._batches(self.parts[device], plan.local_steps, plan.batch_size, rng)
        layers = set(self.proxy_layers(plan))  # the plan's LoRA layers (lora_depth) on the proxy
        factors = self._trainable({key: f for key, f in self.lora.items() if key[0] < k and key[0] in layers})
        opt = torch.optim.AdamW([t for f in factors.values() for t in f], lr=self.config.lr,
                                weight_decay=self.config.weight_decay)
        return _Device(device, plan, batches, factors, opt, [])

    def _server_copy(self, plan: Plan, k: int) -> tuple[Factors, dict[str, torch.Tensor], torch.optim.Optimizer]:
        """A trainable copy of the global top (the plan's LoRA layers) and head with its optimiser."""
        layers = set(self.proxy_layers(plan))
        factors = self._trainable({key: f for key, f in self.lora.items() if key[0] >= k and key[0] in layers})
        head = {n: t.detach().clone().requires_grad_(True) for n, t in self.head.items()}
        head_lr = self.config.head_lr if self.config.head_lr is not None else self.config.lr
        opt = torch.optim.AdamW([{"params": [t for f in factors.values() for t in f], "lr": self.config.lr},
                                 {"params": list(head.values()), "lr": head_lr}],
                                lr=self.config.lr, weight_decay=self.config.weight_decay)
        return factors, head, opt

    @staticmethod
    def _trainable(factors: Factors) -> Factors:
        return {key: (B.detach().clone().requires_grad_(True), A.detach().clone().requires_grad_(True))
                for key, (B, A) in factors.items()}

    def _step(self, devs: list[_Device], tops: list, t: int, merged: bool, k: int) -> None:
        """Split step ``t`` of every device that still has one (module docstring)."""
        pos = [i for i, x in enumerate(devs) if t < len(x.batches)]  # devices with a step t, and their top copy
        live = [devs[i] for i in pos]
        rows = [x.batches[t] for x in live]
        batch, y = self._encode([self.train_ids[i] for r in rows for i in r]), \
            torch.from_numpy(self.train_labels[np.concatenate(rows)]).long().to(self.torch_device)
        self.model.train()
        ends = np.cumsum([0] + [len(r) for r in rows])
        feats = []
        for j, x in enumerate(live):
            part = {n: v[ends[j]:ends[j + 1]] for n, v in batch.items()}
            feats.append(self._bottom(x.factors, part, k))
        cut = [f.detach().requires_grad_(True) for f in feats]
        groups = [(list(range(len(live))), tops[0])] if merged else \
            [([j], tops[i]) for j, i in enumerate(pos)]
        for members, (factors, head, opt) in groups:
            lo, hi = ends[members[0]], ends[members[-1] + 1]
            part = {n: v[lo:hi] for n, v in batch.items()}
            logits = self._top(factors, head, torch.cat([cut[j] for j in members]), part, k)
            per_row = nn.functional.cross_entropy(logits.float(), y[lo:hi], reduction="none")
            for j in members:
                live[j].losses.append(float(per_row[ends[j] - lo:ends[j + 1] - lo].detach().mean()))
            opt.zero_grad()
            per_row.mean().backward()
            opt.step()
        for j, x in enumerate(live):
            x.opt.zero_grad()
            feats[j].backward(cut[j].grad)
            x.opt.step()
        self.host_steps += len(live)

    def _bottom(self, factors: Factors, batch: dict, k: int) -> torch.Tensor:
        """The output of bottom block k - 1 under ``factors`` (the forward stops there)."""
        def stop(_module, _inputs, output):  # noqa: ANN001, ANN202
            raise _Cut(output)
        handle = self.adapter.blocks(self.model)[k - 1].register_forward_hook(stop)
        self._active = factors
        try:
            self._logits(batch)
        except _Cut as c:
            return c.features
        finally:
            handle.remove()
            self._active = {}
        raise RuntimeError("the bottom forward did not reach the split point")

    def _top(self, factors: Factors, head: dict[str, torch.Tensor], features: torch.Tensor, batch: dict,
             k: int) -> torch.Tensor:
        """Logits of the top under ``factors`` and ``head`` on ``features`` (blocks below k replaced)."""
        holder, attr = block_holder(self.model, self.adapter.family)
        blocks = getattr(holder, attr)  # the model's own block list (ArchAdapter.blocks returns a copy)
        saved = [blocks[i] for i in range(k)]
        for i in range(k - 1):
            blocks[i] = RemovedBlock()
        blocks[k - 1] = _Inject(features)
        module = self._head_module()
        originals = dict(module.named_parameters())
        self._active = factors
        try:
            for n, t in head.items():  # the server's head tensors take part in the forward
                _set_param(module, n, t)
            return self._logits(batch)
        finally:
            for n, p in originals.items():
                _set_param(module, n, p)
            for i, b in enumerate(saved):
                blocks[i] = b
            self._active = {}

    def _keep_top(self, tops: list, weights: list[float], k: int) -> None:
        """The server's top after the round: the one it trained, or the weighted average of the copies."""
        w = np.asarray(weights if len(tops) > 1 else [1.0])
        w = w / w.sum()
        for key in tops[0][0]:
            self.lora[key] = tuple(sum(float(wi) * top[0][key][i].detach() for wi, top in zip(w, tops)) for i in (0, 1))
        for n in self.head:
            self.head[n] = sum(float(wi) * top[1][n].detach() for wi, top in zip(w, tops))
        self._publish()

    def _publish(self) -> None:
        """The global update the evaluation merges: ΔW = s B A of every adapted matrix."""
        for key, (B, A) in self.lora.items():
            self.glob[key] = GlobalEntry(B=B * self.lora_s(A.shape[0]), A=A)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """The real learner's state and the global split factors."""
        return {**super().state(), "split_rank": self.rank,
                "split_lora": [{"layer": k[0], "path": k[1], "B": B, "A": A} for k, (B, A) in self.lora.items()]}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.rank = state["split_rank"]
        self.lora = {(f["layer"], f["path"]): (f["B"], f["A"]) for f in state["split_lora"]}


def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Point ``module``'s parameter ``name`` (dotted) at ``value`` for a functional forward."""
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    if isinstance(value, nn.Parameter):
        setattr(module, leaf, value)
    else:
        delattr(module, leaf)
        setattr(module, leaf, value)


def _norm(factors: Factors, start: Factors) -> float:
    """Frobenius norm of the bottom's LoRA update this round, sum over keys of ||B A - B0 A0||."""
    return float(sum(torch.linalg.norm(B.detach() @ A.detach() - start[k][0] @ start[k][1])
                     for k, (B, A) in factors.items()))
