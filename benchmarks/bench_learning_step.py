"""Local-step time of the real learner on the packaged MiniLM: pruning 0.5 vs 0.0, same batch.

One step = forward + backward + AdamW on LoRA (rank 8, every linear layer of each block) and the
head, on the physically sliced model, exactly as ``RealLearner`` runs it. Both configurations see the
same batches of real Rotten Tomatoes sentences (dynamic padding). Reported: median step time of each,
the speed-up, and each step's useful FLOP/s over this machine's fp32 matmul FLOP/s measured in the
same process (a ratio that survives machine drift).

    .venv/bin/python benchmarks/bench_learning_step.py [--steps 12] [--batch 16] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from learning.aggregate import factor_svd
from learning.data import collate, load_dataset, tokenize
from learning.importance import prune
from learning.lora import attach, detach, lora_keys
from learning.models import load_proxy
from learning.structure import ArchAdapter, Slicer

TARGETS = ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"]


def matmul_flops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def step_times(pm, ad, sl, masks, batches, rank: int = 8) -> list[float]:
    model = pm.model
    keys = lora_keys(ad, TARGETS, range(ad.num_layers))
    gen = torch.Generator().manual_seed(0)
    fac = {}
    for k in keys:
        spec = next(s for s in ad.matrices if s.path == k[1])
        w = sl.original(*k).weight
        kept = int(masks.of(spec.kind)[k[0]].sum()) * spec.width
        shape = (kept, w.shape[1]) if spec.axis == 0 else (w.shape[0], kept)
        fac[k] = factor_svd(torch.zeros(shape), rank, 16 / rank, gen)
    att = attach(model, ad, sl, masks, keys, rank, 16.0, fac)
    head = getattr(model, ad.head_module)
    for p in head.parameters():
        p.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW([*att.parameters(), *head.parameters()], lr=1e-3)
    out = []
    for x, m, y in batches:
        t = time.perf_counter()
        loss = nn.functional.cross_entropy(model(input_ids=x, attention_mask=m).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(time.perf_counter() - t)
    detach(model, sl)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pm = load_proxy("minilm", 2, seed=0, dropout=False)
    ad = ArchAdapter.for_model(pm.model)
    sl = Slicer(pm.model, ad)
    ds = load_dataset("rotten_tomatoes")
    rng = np.random.default_rng(0)
    n = (a.steps + a.warmup) * a.batch
    idx = rng.choice(len(ds.texts), n, replace=False)
    ids = tokenize([ds.texts[i] for i in idx], pm.tokenizer, 64)
    labels = torch.from_numpy(np.asarray(ds.labels)[idx]).long()
    batches = []
    for s in range(a.steps + a.warmup):
        rows = list(range(s * a.batch, (s + 1) * a.batch))
        x, m = collate([ids[i] for i in rows], pm.tokenizer.pad_token_id)
        batches.append((x, m, labels[rows]))
    mean_len = float(np.mean([b[0].shape[1] for b in batches]))
    full = ad.full_mask()
    scores = {(li, k): rng.random(ad.n_groups(k)) for li in range(ad.num_layers) for k in ("attn", "ffn")}
    half = prune(full, scores, 0.5, ad)
    peak = matmul_flops()
    res = {}
    for name, masks in (("p=0.0", full), ("p=0.5", half)):
        ts = step_times(pm, ad, sl, masks, batches)[a.warmup:]
        res[name] = statistics.median(ts)
    peak2 = matmul_flops()
    n_params = {}
    for name, masks in (("p=0.0", full), ("p=0.5", half)):
        layers = sl.sliced_layers(masks)
        n_params[name] = sum(lin.weight.numel() for lin in layers.values())
    tokens = a.batch * mean_len
    print(f"MiniLM-L6, LoRA r=8 on all block linears + head, batch {a.batch}, mean padded length {mean_len:.1f}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"matmul fp32 peak (1024^3): {peak / 1e9:.1f} GFLOP/s before, {peak2 / 1e9:.1f} after")
    for name in res:
        useful = 4 * n_params[name] * tokens  # frozen block weights: forward 2 + input-gradient 2 FLOPs per token (LoRA, head, attention scores not counted)
        print(f"{name}: median step {res[name] * 1e3:.1f} ms, block weights {n_params[name] / 1e6:.2f} M, "
              f"useful {useful / res[name] / 1e9:.1f} GFLOP/s = {useful / res[name] / peak:.2f} of matmul peak")
    print(f"speed-up p=0.5 vs p=0.0: {res['p=0.0'] / res['p=0.5']:.2f}x")


if __name__ == "__main__":
    main()
