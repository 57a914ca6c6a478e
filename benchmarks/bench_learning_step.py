"""Local-update speed of the paper proxy at 1, 8 and 80 devices per round (issue 21).

The learner is the one of ``scenarios/paper/learning-8.yaml`` set to issue 21's paper proxy
(``PROXY``: all-MiniLM-L6-v2 cut to 3 layers, mean pooling, Rotten Tomatoes at ``max_len`` 64, LoRA on
query/value/FFN-in) with a fleet of 80 devices,
under a typical FedSpine plan: pruning 0.3, LoRA rank 8 on every layer, tau = 20 steps of batch 8.
For each fleet share D in (1, 8, 80), starting from the same fresh learner state, ``rounds`` rounds
are run: D ``RealLearner.local_update`` calls (round 0 calibrates and prunes to 0.3, later rounds keep
the structure), then the SVD aggregation of their updates.

Figures, per D (all host seconds are those of the local updates, everything they do included):

* ``steps_per_s`` = training steps (D * tau * rounds) / local-update seconds;
* ``flop_limit_fraction`` = (useful FLOPs / matmul rate) / local-update seconds: the fraction of this
  machine's matmul limit the updates reach. Useful FLOPs of one training step = 4 * W * T, with W the
  frozen block weights the device still holds after pruning and T the real tokens of its batch
  (forward 2 FLOPs per weight and token, input gradient 2; LoRA factors, attention scores, the head
  and the embeddings are not counted; calibration passes count their time but no FLOPs). The matmul
  rate is fp32 GEMM throughput at one block's shapes with the mean tokens of a step
  (``bench.matmul_gflops``), measured in this process before and after, the mean of the two;
* ``batching_headroom``: seconds per device-step and flop_limit_fraction when the batches of 1, 8
  (and 80) devices run as one training step over 8 * k sentences with one mask and one LoRA: an upper
  bound on what training a round's devices together in one pass (multi-LoRA batching) could gain;
* ``aggregate_s`` per round, and ``full_run_estimate_min``: 50 rounds of 80 devices * 20 steps at the
  80-device rate plus 50 aggregations (evaluation not included), the host time of a full
  80-board real-learning run.

    .venv/bin/python benchmarks/bench_learning_step.py [--devices 1 8 80] [--tau 20] [--rounds 2]
        [--threads 1] [--json results/bench/bench.json]

``--json`` merges the figures under ``learning_step`` into that file (other keys are kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import matmul_gflops, merge_json  # noqa: E402
from devices.plan import Plan  # noqa: E402
from devices.workload import load_arch  # noqa: E402
from learning.learner import RealLearner  # noqa: E402
from sim.loader import load_scenario  # noqa: E402
from sim.runner import learner_config  # noqa: E402

SCENARIO = ROOT / "scenarios" / "paper" / "learning-8.yaml"
PROXY = ["learning.proxy_layers=3", "learning.max_len=64", "workload.lora_targets=[query, value, ffn_in]"]
FLEET = 80
FULL_RUN = {"rounds": 50, "devices": 80, "tau": 20}


class StepCounter:
    """Wraps ``learner._step``: training steps, their useful FLOPs (module docstring) and real tokens."""

    def __init__(self, learner: RealLearner):
        self.learner = learner
        a = learner.adapter
        self.kinds = {s.path: s.kind for s in a.matrices}
        self.groups = {k: a.n_groups(k) for k in ("attn", "ffn")}
        self.inner = learner._step
        self.reset()
        learner._step = self._counted

    def reset(self) -> None:
        self.flops, self.steps, self.tokens = 0.0, 0, 0

    def weights(self, masks) -> float:
        """Frozen block weights kept under ``masks``."""
        return sum(lin.weight.numel() * int(masks.of(self.kinds[p])[li].sum()) / self.groups[self.kinds[p]]
                   for (li, p), lin in self.learner.slicer._orig.items())

    def _counted(self, att, data, opt, ema, masks, peak):
        out = self.inner(att, data, opt, ema, masks, peak)
        if opt is not None:  # a training step; calibration passes measure importance only
            batch = data[0]
            tokens = batch.tokens if hasattr(batch, "tokens") else int(batch["attention_mask"].sum())
            self.flops += 4.0 * self.weights(masks) * tokens
            self.steps += 1
            self.tokens += tokens
        return out


def build(threads: int | None) -> RealLearner:
    sets = PROXY + ([] if threads is None else [f"learning.torch_threads={threads}"])
    sc, base = load_scenario(SCENARIO, sets)
    arch = load_arch(sc.workload.model, base)
    return RealLearner(learner_config(sc.learning), seed=sc.seed, n_devices=FLEET,
                       lora_targets=list(sc.workload.lora_targets), target_layers=arch.num_layers)


def share(learner: RealLearner, counter: StepCounter, devices: int, plan: Plan, rounds: int) -> dict:
    """``rounds`` rounds of ``devices`` local updates and their aggregation (module docstring)."""
    counter.reset()
    update_s = agg_s = 0.0
    ids = list(range(devices))
    sizes = learner.data_sizes()
    for r in range(rounds):
        t0 = time.perf_counter()
        ups = [learner.local_update(d, plan, r) for d in ids]
        t1 = time.perf_counter()
        learner.aggregate(ids, ups, "svd", [float(sizes[d]) for d in ids])
        update_s += t1 - t0
        agg_s += time.perf_counter() - t1
    return {"devices": devices, "rounds": rounds, "steps": counter.steps, "update_s": update_s,
            "aggregate_s_per_round": agg_s / rounds, "useful_flops": counter.flops,
            "mean_tokens_per_step": counter.tokens / max(counter.steps, 1)}


def batching_headroom(learner: RealLearner, counter: StepCounter, sizes: list[int], reps: int, rate: float) -> dict:
    """Host seconds per device-step when the batches of k devices run as one training step (one forward,
    backward and AdamW step over their 8 * k sentences, one mask, one LoRA): the most that batching
    devices into one pass could gain here, since per-device LoRA factors and masks only add work."""
    from learning.lora import detach  # noqa: PLC0415
    from learning.packed import DropoutMasks  # noqa: PLC0415

    run = learner._prepare(0, Plan(0.3, 8, None, 1, 8), 0)
    head = learner._head_module()
    learner._load_head(head)
    att = learner._attach(run.masks, run.keys, run.ranks,
                          learner._received(run.keys, run.masks, run.ranks, run.gen), head)
    opt = learner._optimizer(att, head)
    learner._dropout_masks = DropoutMasks(np.random.default_rng(0))
    rng = np.random.default_rng(0)
    out = {}
    try:
        for k in sizes:
            data = learner._inputs(rng.choice(len(learner.train_ids), 8 * k, replace=False))
            learner._step(att, data, opt, None, run.masks, [0])  # warm-up at this size
            counter.reset()
            t0 = time.perf_counter()
            for _ in range(reps):
                learner._step(att, data, opt, None, run.masks, [0])
            dt = time.perf_counter() - t0
            out[str(k)] = {"s_per_device_step": dt / reps / k, "flop_limit_fraction": counter.flops / rate / dt}
    finally:
        learner._dropout_masks = None
        detach(learner.model, learner.slicer)
    return out


def run(devices: list[int], tau: int, rounds: int, threads: int | None) -> dict:
    learner = build(threads)
    counter = StepCounter(learner)
    fresh = learner.state()
    plan = Plan(0.3, 8, None, tau, 8)
    learner.set_state(fresh)
    learner.local_update(FLEET - 1, plan, 99)  # warm-up (allocator, slice cache, first calls): not counted
    before = matmul_gflops(tokens=int(round(counter.tokens / max(counter.steps, 1))))
    rows = []
    for d in devices:
        learner.set_state(fresh)
        rows.append(share(learner, counter, d, plan, rounds))
    tokens = int(round(np.mean([r["mean_tokens_per_step"] for r in rows])))
    rate = before["model_shapes"] * 1e9
    headroom = batching_headroom(learner, counter, [1, 8, *([80] if max(devices) >= 80 else [])], 3, rate)
    after = matmul_gflops(tokens=tokens)
    rate = (before["model_shapes"] + after["model_shapes"]) / 2 * 1e9
    for h in headroom.values():
        h["flop_limit_fraction"] *= before["model_shapes"] * 1e9 / rate
    out: dict = {"matmul_gflops": rate / 1e9, "matmul_gflops_before_after": [before["model_shapes"],
                                                                             after["model_shapes"]],
                 "matmul_1024_gflops": (before["square_1024"] + after["square_1024"]) / 2,
                 "torch_threads": torch.get_num_threads(), "plan": "prune 0.3, rank 8 on all layers, "
                 f"tau {tau} x batch 8 (round 0 calibrates and prunes, later rounds keep)", "rows": rows,
                 "batching_headroom": headroom}
    for r in rows:
        r["steps_per_s"] = r["steps"] / r["update_s"]
        r["flop_limit_fraction"] = r["useful_flops"] / rate / r["update_s"]
    out["steps_per_s"] = {str(r["devices"]): r["steps_per_s"] for r in rows}
    out["flop_limit_fraction"] = {str(r["devices"]): r["flop_limit_fraction"] for r in rows}
    big = rows[-1]
    f = FULL_RUN
    out["full_run_estimate_min"] = f["rounds"] * (f["devices"] * f["tau"] / big["steps_per_s"]
                                                  + big["aggregate_s_per_round"]) / 60
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 8, 80])
    ap.add_argument("--tau", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="merge the figures into this JSON file")
    a = ap.parse_args(argv)
    if max(a.devices) > FLEET:
        ap.error(f"--devices: at most {FLEET}")
    res = run(sorted(a.devices), a.tau, a.rounds, a.threads)
    print(f"paper proxy (MiniLM 3 layers, batch 8, max_len 64, rank 8, prune 0.3), torch threads "
          f"{res['torch_threads']}, matmul {res['matmul_gflops']:.1f} GFLOP/s at a step's shapes")
    for r in res["rows"]:
        print(f"{r['devices']:>3} devices/round: {r['steps_per_s']:.2f} steps/s, flop_limit_fraction "
              f"{r['flop_limit_fraction']:.2f}, aggregate {r['aggregate_s_per_round']:.2f} s/round")
    for k, h in res["batching_headroom"].items():
        print(f"{k:>3} devices' batches as one step: {h['s_per_device_step']:.3f} s per device-step, "
              f"flop_limit_fraction {h['flop_limit_fraction']:.2f}")
    print(f"full 80-board x 50-round run (tau 20), estimated: {res['full_run_estimate_min']:.0f} min")
    if a.json is not None:
        merge_json(a.json, {"learning_step": res})
        print(f"merged into {a.json}")
    return res


if __name__ == "__main__":
    main()
