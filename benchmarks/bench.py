"""fedfleet's speed figures in one run (issue 6): ``make bench`` prints a table and writes
``results/bench/bench.json``.

Every figure that is compared with a goal is a ratio of two times measured in this one process (or,
for Flower, in this one benchmark run), because absolute times drift on a shared machine.

Keys of ``bench.json``:

* ``matmul_gflops``: fp32 GEMM throughput of this process at the proxy's shapes: one transformer
  block's products (query, key, value, attention output: ``T x 384 @ 384 x 384``; FFN in and out:
  ``T x 384 @ 384 x 1536`` and ``T x 1536 @ 1536 x 384``) with ``T`` = the mean real tokens of a batch
  of 16 sentences, and the gradient products of the backward pass (input gradients, same shapes
  transposed); measured before and after the learning measurement, the mean of the two is used.
  ``matmul_1024_gflops`` is the square 1024^3 product for reference.
* ``useful_gflops``: useful FLOPs per second of local training. Useful FLOPs of one training step =
  ``4 x W x T``: the frozen block weights ``W`` still present after the plan's pruning (forward 2 FLOPs
  per weight per token, input gradient 2) times the real (non-padding) tokens ``T`` of the batch; LoRA
  factors, attention scores, the head and embeddings are not counted. Divided by the host seconds of
  the whole ``RealLearner.local_update`` calls (received factors, probes, importance, pruning,
  optimiser: everything a round's local update costs), on the ``learning-quick`` scenario's learner
  under a typical FedSpine plan (pruning 0.25 then kept, LoRA rank 8 on query/value/FFN-in, 17 steps of
  batch 16); ``useful_gflops_steps`` divides by the seconds inside the training steps only.
* ``useful_fraction`` = useful_gflops / matmul_gflops (goal >= 0.70).
* ``padding_fraction``: padded tokens / all tokens processed by the training steps (goal <= 0.10);
  ``padding_fraction_padded_path`` is what the padded (reference) forward would have processed.
* ``learning_step``: ``benchmarks/bench_learning_step.py`` (the paper proxy under a FedSpine plan with
  pruning 0.3): ``steps_per_s`` and ``flop_limit_fraction`` at 1, 8 and 80 devices per round (goal at
  80: >= 0.70) and ``full_run_estimate_min`` (a full 80-board x 50-round real-learning run).
* ``engine_overhead_fraction``: host seconds outside learner calls (the learner's setup,
  ``local_update``/``submit``/``collect``, ``aggregate``, ``evaluate``) / the whole host seconds of
  ``run_scenario`` on ``scenarios/learning-quick.yaml`` (real learning; result files and plots
  included) (goal <= 0.05).
* ``timing_only_s``: host seconds of a timing-only run (paper fleet mix scaled to N devices, 100
  rounds, simulate + verify, in memory) for N in 1,000 / 10,000 / 100,000 (goal: 10,000 under 60 s,
  linear growth); ``timing_only_linearity`` = (s per device-round at the largest N) / (s per
  device-round at the smallest).
* ``flower_s``, ``fedfleet_s``, ``flower_ratio``: ``benchmarks/bench_flower.py`` (same FedLoRA workload
  in Flower's simulation engine and in fedfleet, each a whole process) (goal >= 3).

    .venv/bin/python benchmarks/bench.py [--quick] [--skip SECTION ...] [--json PATH]

The figures are merged into ``--json`` (:func:`merge_json`): keys this run did not measure stay.

``--quick`` shrinks every section (2 rounds of learning-quick, timing-only 1,000 and 10,000 devices x 20
rounds, no Flower) for a smoke check; its figures are not the benchmark's.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from devices.plan import Plan
from sim.loader import load_scenario
from sim.store import atomic_write_json, read_regular

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench")
SECTIONS = ("learning", "learning_step", "engine", "timing", "flower")
QUICK = ROOT / "scenarios" / "learning-quick.yaml"


# ---------------------------------------------------------------------------------------- bench.json
def merge_json(path: Path, new: dict) -> dict:
    """Merge ``new`` into the JSON object at ``path`` (top-level keys of ``new`` replace the file's, the
    others stay) and write it atomically. Read-modify-write runs under an exclusive ``flock`` on
    ``<path>.lock``, so benchmarks finishing at once do not drop each other's keys. A file that is not
    a JSON object is replaced (with a warning)."""
    import fcntl  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            old = json.loads(read_regular(path, 64 << 20)) if path.exists() else {}
        except (OSError, ValueError) as e:
            log.warning("%s is not readable JSON (%s); writing a new file", path, e)
            old = {}
        if not isinstance(old, dict):
            log.warning("%s holds no JSON object; writing a new file", path)
            old = {}
        merged = {**old, **new}
        atomic_write_json(path, merged)
    return merged


# ---------------------------------------------------------------------------------------- matmul
def _gemm_rate(shapes: list[tuple[int, int, int]], reps: int) -> float:
    """FLOP/s of running every ``(m, k, n)`` product of ``shapes`` ``reps`` times (2 m k n FLOPs each)."""
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)) for m, k, n in shapes]
    for a, b in pairs:  # warm-up
        a @ b
    flops = reps * sum(2 * m * k * n for m, k, n in shapes)
    t0 = time.perf_counter()
    for _ in range(reps):
        for a, b in pairs:
            a @ b
    return flops / (time.perf_counter() - t0)


def matmul_gflops(tokens: int, hidden: int = 384, ffn: int = 1536, reps: int = 60) -> dict:
    """GEMM throughput at one block's forward and input-gradient shapes (module docstring)."""
    fwd = [(tokens, hidden, hidden)] * 4 + [(tokens, hidden, ffn), (tokens, ffn, hidden)]
    bwd = [(tokens, hidden, hidden)] * 4 + [(tokens, ffn, hidden), (tokens, hidden, ffn)]
    model = _gemm_rate(fwd + bwd, reps) / 1e9
    square = _gemm_rate([(1024, 1024, 1024)], 8) / 1e9
    return {"model_shapes": model, "square_1024": square}


# ---------------------------------------------------------------------------------------- learning
def learning_section(threads: int | None) -> dict:
    """Useful FLOP/s of ``RealLearner.local_update`` under a typical plan, and the padding fraction."""
    from learning.learner import RealLearner  # noqa: PLC0415
    from sim.runner import make_learner  # noqa: PLC0415

    sc, base = load_scenario(QUICK, [] if threads is None else [f"learning.torch_threads={threads}"])
    learner: RealLearner = make_learner(sc, base)
    a = learner.adapter
    orig = learner.slicer._orig  # (layer, path) -> the unsliced frozen Linear
    kinds = {s.path: s.kind for s in a.matrices}
    n_groups = {k: a.n_groups(k) for k in ("attn", "ffn")}
    counts = {"useful_flops": 0.0, "step_s": 0.0, "steps": 0, "tokens": 0}
    inner = learner._step

    @functools.wraps(inner)
    def counted(att, data, opt, ema, masks, peak):
        t0 = time.perf_counter()
        out = inner(att, data, opt, ema, masks, peak)
        counts["step_s"] += time.perf_counter() - t0
        if opt is not None:  # a training step (calibration-only passes are not counted as useful)
            batch = data[0]
            tokens = batch.tokens if hasattr(batch, "tokens") else int(batch["attention_mask"].sum())
            w = sum(lin.weight.numel() * int(masks.of(kinds[p])[li].sum()) / n_groups[kinds[p]]
                    for (li, p), lin in orig.items())
            counts["useful_flops"] += 4.0 * w * tokens
            counts["steps"] += 1
            counts["tokens"] += tokens
        return out

    learner._step = counted
    plan = Plan(0.25, 8, None, 17, 16)  # round 0 prunes to 0.25, round 1 keeps it
    devices = list(range(min(4, learner.n - 1)))
    before = matmul_gflops(tokens=432)
    learner.local_update(learner.n - 1, plan, 99)  # warm-up (allocator, first-call costs): not counted
    counts.update(useful_flops=0.0, step_s=0.0, steps=0, tokens=0)
    tok0, pad0 = learner.tokens_real, learner.tokens_if_padded
    total_s = 0.0
    rounds = 2
    for r in range(rounds):
        t0 = time.perf_counter()
        for d in devices:
            learner.local_update(d, plan, r)
        dt = time.perf_counter() - t0
        total_s += dt
    mean_tokens = counts["tokens"] / max(counts["steps"], 1)
    after = matmul_gflops(tokens=int(round(mean_tokens)))
    peak = (before["model_shapes"] + after["model_shapes"]) / 2
    real = learner.tokens_real - tok0
    padded = learner.tokens_if_padded - pad0
    processed = real if learner.packed else padded
    useful = counts["useful_flops"] / total_s / 1e9
    useful_steps = counts["useful_flops"] / counts["step_s"] / 1e9
    return {
        "matmul_gflops": peak,
        "matmul_gflops_before_after": [before["model_shapes"], after["model_shapes"]],
        "matmul_1024_gflops": (before["square_1024"] + after["square_1024"]) / 2,
        "useful_gflops": useful,
        "useful_gflops_steps": useful_steps,
        "useful_fraction": useful / peak,
        "useful_fraction_steps": useful_steps / peak,
        "step_share_of_update": counts["step_s"] / total_s,
        "padding_fraction": (processed - real) / processed,
        "padding_fraction_padded_path": (padded - real) / padded,
        "forward": "packed" if learner.packed else "padded",
        "train_steps": counts["steps"],
        "mean_tokens_per_step": mean_tokens,
        "local_update_s": total_s,
        "local_updates": len(devices) * rounds,
        "plan": "prune 0.25 (round 0 prunes, round 1 keeps), rank 8 on query/value/ffn_in, 17 steps x batch 16",
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------- engine
def engine_section(rounds: int | None) -> dict:
    """Host time outside learner calls in a real-learning ``run_scenario`` of learning-quick."""
    from learning.learner import RealLearner  # noqa: PLC0415
    from sim.runner import run_scenario  # noqa: PLC0415

    timers: dict[str, float] = {}
    originals = {}

    def timed(name):
        fn = getattr(RealLearner, name)
        originals[name] = fn

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                timers[name] = timers.get(name, 0.0) + time.perf_counter() - t0
        setattr(RealLearner, name, wrapper)

    for name in ("local_update", "aggregate", "evaluate"):
        timed(name)
    sets = ["output.progress=false"] + ([f"training.rounds={rounds}"] if rounds else [])
    sc, base = load_scenario(QUICK, sets)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
            t0 = time.perf_counter()
            res = run_scenario(sc, base, out_root=Path(tmp), progress=False)
            total = time.perf_counter() - t0
    finally:
        for name, fn in originals.items():
            setattr(RealLearner, name, fn)
    host = res.summary["host"]
    setup = float(host["learner_setup_s"])
    inside = setup + sum(timers.values())
    return {
        "engine_overhead_fraction": (total - inside) / total,
        "engine_run_s": total,
        "engine_learner_s": {"setup": setup, **timers},
        "engine_outside_s": total - inside,
        "engine_sim_host_time_s": host["host_time_s"],
        "engine_rounds": int(res.summary["rounds_completed"]),
        "engine_final_accuracy": res.summary["final_accuracy"],
    }


# ---------------------------------------------------------------------------------------- timing only
def timing_section(sizes: list[int], rounds: int) -> dict:
    from bench_timing_only import bench  # noqa: PLC0415

    rows = [bench(n, rounds, []) for n in sizes]
    per = [r["total_s"] / r["device_rounds"] for r in rows]
    return {
        "timing_only_s": {str(r["devices"]): r["total_s"] for r in rows},
        "timing_only_rounds": rounds,
        "timing_only_rows": rows,
        "timing_only_linearity": per[-1] / per[0],
    }


# ---------------------------------------------------------------------------------------- flower
def flower_section() -> dict:
    import bench_flower  # noqa: PLC0415

    return bench_flower.run()


# ---------------------------------------------------------------------------------------- main
GOALS = [("useful_fraction", ">=", 0.70), ("flop_limit_fraction_80", ">=", 0.70), ("padding_fraction", "<=", 0.10),
         ("engine_overhead_fraction", "<=", 0.05),
         ("timing_only_10000_s", "<=", 60.0), ("flower_ratio", ">=", 3.0)]


def print_table(r: dict) -> None:
    flat = dict(r)
    if "timing_only_s" in r and "10000" in r["timing_only_s"]:
        flat["timing_only_10000_s"] = r["timing_only_s"]["10000"]
    for n, v in r.get("learning_step", {}).get("flop_limit_fraction", {}).items():
        flat[f"flop_limit_fraction_{n}"] = v
    print(f"{'figure':<28}{'value':>12}  {'goal':<10}{'met':>5}")
    for key, op, goal in GOALS:
        if key not in flat:
            continue
        v = flat[key]
        met = v >= goal if op == ">=" else v <= goal
        print(f"{key:<28}{v:>12.3f}  {op + ' ' + str(goal):<10}{'yes' if met else 'no':>5}")
    for key in ("matmul_gflops", "matmul_1024_gflops", "useful_gflops", "useful_gflops_steps", "useful_fraction_steps",
                "step_share_of_update", "padding_fraction_padded_path", "engine_run_s", "engine_outside_s",
                "timing_only_linearity", "flower_s", "fedfleet_s"):
        if key in flat:
            print(f"{key:<28}{flat[key]:>12.3f}")
    if "timing_only_s" in r:
        print("timing_only_s (devices -> host s, "
              f"{r['timing_only_rounds']} rounds): " + ", ".join(f"{k}: {v:.1f}" for k, v in r["timing_only_s"].items()))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=ROOT / "results" / "bench" / "bench.json")
    ap.add_argument("--quick", action="store_true", help="small smoke run; figures are not the benchmark's")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the learning section")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out: dict = {"quick": a.quick, "cpu_count": os.cpu_count(), "started_unix": time.time(),
                 "loadavg_1min_before": os.getloadavg()[0]}
    t0 = time.perf_counter()
    if "learning" not in a.skip:
        print("[bench] learning: useful FLOP/s of local updates ...", flush=True)
        out.update(learning_section(a.threads))
    if "learning_step" not in a.skip:
        print("[bench] learning_step: the paper proxy's local updates at 1, 8, 80 devices per round ...", flush=True)
        import bench_learning_step  # noqa: PLC0415

        out["learning_step"] = bench_learning_step.run([1, 8] if a.quick else [1, 8, 80], 5 if a.quick else 20, 2,
                                                       a.threads)
    if "engine" not in a.skip:
        print("[bench] engine: learning-quick with timers on the learner ...", flush=True)
        out.update(engine_section(2 if a.quick else None))
    if "timing" not in a.skip:
        print("[bench] timing-only fleets ...", flush=True)
        out.update(timing_section([1000, 10000] if a.quick else [1000, 10000, 100000], 20 if a.quick else 100))
    if "flower" not in a.skip and not a.quick:
        print("[bench] Flower vs fedfleet (whole processes) ...", flush=True)
        out.update(flower_section())
    out["bench_s"] = time.perf_counter() - t0
    out["loadavg_1min_after"] = os.getloadavg()[0]
    print_table(out)
    merge_json(a.json, out)
    print(f"wrote {a.json}")
    return out


if __name__ == "__main__":
    main()
