"""COMP vs magnitude and LoRA-guided one-shot pruning, none of them followed by fine-tuning (issue 23, must-show 1).

For each model (the packaged all-MiniLM-L6-v2 proxy; a tiny LLaMA, the ``tiny-llama`` config with
``--llama-layers`` blocks instead of 2 so that whole blocks can go) and each seed:

1. the classification head of the dense model is fitted on Rotten Tomatoes (the backbone stays as
   loaded: MiniLM pretrained, the tiny LLaMA random; the head's input features of ``--train`` examples
   are computed once, then ``--tune-steps`` AdamW steps of 64), so that accuracy after pruning means
   something (the proxies' heads are random otherwise);
2. the same ``--cal-batches`` calibration batches of 16 training examples serve every pruner:
   ``magnitude`` (|W| group sums, ``learning.importance``), ``lora_grad`` (the LoRAPrune estimate from
   the gradients of a fresh rank-8 LoRA on every matrix, one backward per batch, EMA 0.9, as the learner
   calibrates), ``comp`` (layers, then condition-based neurons, then mask tuning, ``learning.comp``),
   ``comp_neurons`` (COMP with no layer removed: the condition metric and mask tuning alone at the same
   granularity as the other two) and ``comp_untuned`` (``comp`` without mask tuning);
3. each pruned model is evaluated on ``--test`` held-out examples: accuracy and cross-entropy.

Pruning ratio P: magnitude / lora_grad / comp_neurons remove P of the heads (key/value groups) and FFN
channels of every block; comp removes k = round(P·L/2) whole blocks and then ρ_n = 1 − (1 − P)/(1 − k/L)
of the groups in the others, so the share of block parameters removed is about P for every method (the
measured share is printed). Peak memory is tensor accounting (parameters + what the pruner holds:
COMP's largest block Grams and live activation; the gradient pruner's saved activations of one
calibration backward, LoRA weights and gradients), not an allocator peak.

    .venv/bin/python benchmarks/comp_pruning.py [--seeds 0 1 2] [--ratios 0.2 0.4] [--models minilm tiny-llama]
        [--tune-steps 300] [--train 1024] [--cal-batches 4] [--test 500] [--json results/bench/comp_pruning.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices.rng import generator, stream_seed  # noqa: E402
from learning.comp import comp_prune  # noqa: E402
from learning.data import collate, load_dataset, tokenize, train_test_split  # noqa: E402
from learning.importance import ImportanceEMA, combine, group_sums, lora_grad_importance, prune  # noqa: E402
from learning.lora import attach, detach, lora_keys  # noqa: E402
from learning.models import load_proxy, tiny_config  # noqa: E402
from learning.structure import ArchAdapter, Masks, Slicer, get_module  # noqa: E402
from devices.workload import LORA_TARGETS  # noqa: E402

BATCH = 16
METHODS = ("magnitude", "lora_grad", "comp_neurons", "comp_untuned", "comp")


def load_model(name: str, seed: int, llama_layers: int):
    """The proxy (MiniLM) or the deeper tiny LLaMA, frozen, with its tokenizer."""
    if name != "tiny-llama":
        p = load_proxy(name, 2, seed=seed)
        return p.model, p.tokenizer
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415

    tok = load_proxy("tiny-llama", 2, seed=seed).tokenizer
    cfg = tiny_config("tiny-llama", 2, len(tok), tok.pad_token_id)
    cfg.num_hidden_layers = llama_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(cfg)
    return model, tok


def batch_of(ids: list[np.ndarray], rows: np.ndarray, pad: int) -> dict:
    x, m = collate([ids[i] for i in rows], pad)
    return {"input_ids": x, "attention_mask": m}


@torch.no_grad()
def pooled_features(model: nn.Module, batch: dict) -> torch.Tensor:
    """What the classification head reads: BERT the first token's final hidden state (pooler input), LLaMA
    the last real token's (right padding)."""
    if hasattr(model, "bert"):
        return model.bert(**batch).last_hidden_state[:, 0]
    h = model.model(**batch).last_hidden_state
    last = batch["attention_mask"].sum(-1) - 1
    return h[torch.arange(h.shape[0]), last]


def head_of(model: nn.Module) -> nn.Module:
    if hasattr(model, "bert"):
        return nn.Sequential(model.bert.pooler.dense, model.bert.pooler.activation, model.classifier)
    return model.score


def fine_tune(model: nn.Module, ids, labels, rows: np.ndarray, steps: int, pad: int, seed: int) -> None:
    """Fit the classification head (the backbone stays as loaded): features of ``rows`` computed once, then
    ``steps`` AdamW steps (lr 1e-3, batch 64) on them; leaves the model frozen in eval mode."""
    model.eval()
    feats = torch.cat([pooled_features(model, batch_of(ids, rows[i:i + 64], pad)) for i in range(0, len(rows), 64)])
    y_all = torch.from_numpy(labels[rows]).long()
    head = head_of(model)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    rng = generator(seed, "bench.comp.tune")
    for _ in range(steps):
        b = torch.from_numpy(rng.choice(len(rows), 64, replace=False))
        loss = nn.functional.cross_entropy(head(feats[b]), y_all[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None


@torch.no_grad()
def evaluate(model: nn.Module, ids, labels, rows: np.ndarray, pad: int) -> tuple[float, float]:
    correct, loss = 0, 0.0
    for i in range(0, len(rows), 64):
        b = rows[i:i + 64]
        logits = model(**batch_of(ids, b, pad)).logits
        y = torch.from_numpy(labels[b]).long()
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return correct / len(rows), loss / len(rows)


def magnitude_masks(slicer: Slicer, ad: ArchAdapter, ratio: float) -> Masks:
    """One-shot magnitude pruning: Σ|W| per group, per-matrix L2-normalised sums (``learning.importance``)."""
    full = ad.full_mask()
    scores = {}
    for li in range(ad.num_layers):
        for kind in ("attn", "ffn"):
            vecs = [group_sums(slicer.original(li, s.path).weight.abs(), s) for s in ad.matrices if s.kind == kind]
            scores[(li, kind)] = combine(vecs, full.of(kind)[li])
    return prune(full, scores, ratio, ad)


def lora_grad_masks(model: nn.Module, slicer: Slicer, ad: ArchAdapter, ratio: float, cal: list[tuple[dict, torch.Tensor]],
                    seed: int) -> tuple[Masks, float]:
    """One-shot LoRA-guided pruning from a fresh rank-8 LoRA (A random, B = 0), and its tensor-accounted peak."""
    keys = lora_keys(ad, LORA_TARGETS, range(ad.num_layers))
    gen = torch.Generator().manual_seed(stream_seed(seed, "bench.comp.lora"))
    factors = {}
    for li, path in keys:
        w = slicer.original(li, path).weight
        factors[(li, path)] = (torch.zeros(w.shape[0], 8), torch.randn(8, w.shape[1], generator=gen) / np.sqrt(w.shape[1]))
    att = attach(model, ad, slicer, ad.full_mask(), keys, 8, 16.0, factors)
    specs = {s.path: s for s in ad.matrices}
    ema, full, saved_peak = ImportanceEMA(0.9), ad.full_mask(), 0
    for batch, y in cal:
        saved = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[0] += t.untyped_storage().nbytes() if t.untyped_storage().data_ptr() not in att.param_ptrs else 0
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = nn.functional.cross_entropy(model(**batch).logits, y)
        loss.backward()
        saved_peak = max(saved_peak, saved[0])
        with torch.no_grad():
            for key, m in att.modules.items():
                A, B = m.lora_A["default"].weight, m.lora_B["default"].weight
                elem = lora_grad_importance(m.base_layer.weight, B, A, B.grad, A.grad, att.scale(key))
                ema.update(key, full.of(specs[key[1]].kind)[key[0]], group_sums(elem, specs[key[1]]))
                A.grad = B.grad = None
    params = sum(p.numel() * p.element_size() for p in model.parameters())  # LoRA included
    lora = sum(p.numel() * p.element_size() for p in att.parameters())
    detach(model, slicer)
    scores = {(li, kind): combine([ema.values[(li, s.path)] for s in ad.matrices if s.kind == kind], full.of(kind)[li])
              for li in range(ad.num_layers) for kind in ("attn", "ffn")}
    return prune(full, scores, ratio, ad), float(params + lora + saved_peak)


def block_share(model: nn.Module, ad: ArchAdapter, masks: Masks) -> float:
    """Share of the blocks' prunable-matrix parameters that ``masks`` removes."""
    total = kept = 0
    blocks = ad.blocks(model)
    for li in range(ad.num_layers):
        for s in ad.matrices:
            w = get_module(blocks[li], s.path).weight
            total += w.numel()
            if masks.kept_layers()[li]:
                kept += w.numel() * masks.of(s.kind)[li].mean()
    return 1.0 - kept / total


def comp_ratios(ratio: float, num_layers: int) -> tuple[float, float]:
    k = round(ratio * num_layers / 2)
    return k / num_layers, max(0.0, 1.0 - (1.0 - ratio) / (1.0 - k / num_layers))


def run_one(name: str, seed: int, args) -> list[dict]:
    ds = load_dataset("rotten_tomatoes")
    model, tok = load_model(name, seed, args.llama_layers)
    pad = tok.pad_token_id
    train, test = train_test_split(len(ds.labels), 2000, generator(seed, "bench.comp.split"))
    test_rows = test[:args.test]
    cal_rows = generator(seed, "bench.comp.cal").choice(train, args.cal_batches * BATCH, replace=False)
    used = np.unique(np.concatenate([train[:args.train], test_rows, cal_rows]))
    ids = dict(zip(used.tolist(), tokenize([ds.texts[i] for i in used], tok, 64)))  # only the rows used
    labels = np.asarray(ds.labels)
    fine_tune(model, ids, labels, train[:args.train], args.tune_steps, pad, seed)
    ad = ArchAdapter.for_model(model)
    slicer = Slicer(model, ad, cache_size=0)
    cal = [batch_of(ids, cal_rows[i * BATCH:(i + 1) * BATCH], pad) for i in range(args.cal_batches)]
    cal_y = [torch.from_numpy(labels[cal_rows[i * BATCH:(i + 1) * BATCH]]).long() for i in range(args.cal_batches)]
    dense_acc, dense_loss = evaluate(model, ids, labels, test_rows, pad)
    rows = [{"model": name, "seed": seed, "ratio": 0.0, "method": "dense", "accuracy": dense_acc, "loss": dense_loss,
             "block_share": 0.0, "peak_bytes": float("nan"), "seconds": 0.0}]
    print(f"{name} seed {seed} dense: acc {dense_acc:.4f} loss {dense_loss:.4f}", flush=True)
    for ratio in args.ratios:
        for method in METHODS:
            t0 = time.perf_counter()
            peak = float("nan")
            if method == "magnitude":
                masks = magnitude_masks(slicer, ad, ratio)
            elif method == "lora_grad":
                masks, peak = lora_grad_masks(model, slicer, ad, ratio, list(zip(cal, cal_y)), seed)
            else:
                lr_, nr = (0.0, ratio) if method == "comp_neurons" else comp_ratios(ratio, ad.num_layers)
                res = comp_prune(model, ad, ad.full_mask(), cal, lr_, nr, slicer.apply, tune=method != "comp_untuned")
                slicer.restore()
                masks, peak = res.masks, res.peak_bytes
            secs = time.perf_counter() - t0
            slicer.apply(masks)
            acc, loss = evaluate(model, ids, labels, test_rows, pad)
            slicer.restore()
            rows.append({"model": name, "seed": seed, "ratio": ratio, "method": method, "accuracy": acc, "loss": loss,
                         "block_share": block_share(model, ad, masks), "peak_bytes": peak, "seconds": secs})
            print(f"{name} seed {seed} P={ratio}: {method:13s} acc {acc:.4f} loss {loss:.4f} "
                  f"removed {rows[-1]['block_share']:.3f} peak {peak / 2**20:.1f} MiB ({secs:.1f} s)", flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    import pandas as pd  # noqa: PLC0415

    df = pd.DataFrame(rows)
    g = df.groupby(["model", "ratio", "method"], sort=False)
    out = g.agg(acc_mean=("accuracy", "mean"), acc_std=("accuracy", "std"), loss_mean=("loss", "mean"),
                loss_std=("loss", "std"), removed=("block_share", "mean"),
                peak_mib=("peak_bytes", lambda s: s.mean() / 2**20), seconds=("seconds", "mean"))
    return out.to_string(float_format=lambda x: f"{x:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.4])
    ap.add_argument("--models", nargs="+", default=["minilm", "tiny-llama"])
    ap.add_argument("--llama-layers", type=int, default=8)
    ap.add_argument("--tune-steps", type=int, default=300)
    ap.add_argument("--train", type=int, default=1024)
    ap.add_argument("--cal-batches", type=int, default=4)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for name in args.models for seed in args.seeds for r in run_one(name, seed, args)]
    print(summary(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
