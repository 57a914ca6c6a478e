"""The FedSpine paper reproduction: ``make paper`` runs every sweep of ``scenarios/paper/`` (resuming:
finished cells are skipped) and regenerates ``docs/paper-reproduction.md`` and its figures in
``docs/figures/`` with :func:`sim.views.paper.write_page`, which computes every number on that page
from the run files.

    .venv/bin/python benchmarks/paper.py [--scale default|full|smoke] [--skip-runs] [--out results] [--workers N]

Scales: ``default`` runs the default design (:data:`sim.views.paper.RUNS`: every sweep file but ``tau``, as
written; on this project's 2-core machine 2 h 09 min from scratch on 2026-12-07 evening, more when the
machine runs slower); ``full`` (adds ``tau``)
runs more seeds and the per-device FedSpine at full scale, for a bigger machine, a GPU (add
``learning.device: cuda`` to ``scenarios/paper/learning-8.yaml``) or a Ray cluster (``--address``);
``smoke`` is a minutes-long miniature with the tiny packaged model, for testing the pipeline. A scale
other than the default writes its sweeps under ``OUT/paper-SCALE/`` and its page to
``OUT/paper-SCALE/page/``. The expected cost is printed before anything runs.
``--skip-runs`` only rebuilds the page from results already on disk.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from sim.studies.executors import LocalExecutor, SharedExecutor
from sim.studies.sweep import load_sweep_file
from sim.studies.sweep_run import run_sweep
from sim.views.paper import RUNS, write_page

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "scenarios" / "paper"
log = logging.getLogger("paper")

_TINY = {"learning.model": "tiny-bert", "learning.proxy_layers": 1, "learning.train_examples": 240,
         "learning.test_size": 48, "learning.max_len": 32}  # dotted: the rest of the learning section stays
SCALES: dict[str, dict[str, dict]] = {
    # per sweep: "set" entries merged into the sweep's set, "matrix" entries replacing its keys, "seeds"
    "default": {},
    "full": {
        "system": {"seeds": list(range(1, 11))},
        "stress-drifting": {"seeds": list(range(1, 6))},
        "stress-hostile": {"seeds": list(range(1, 6))},
        "stress-datasheet": {"seeds": list(range(1, 6))},
        "accuracy": {"seeds": list(range(1, 11)), "matrix": {"algorithm.params.prune_target": [0.2, 0.3, 0.5]}},
        "accuracy-fleet-mean": {"seeds": list(range(1, 11)), "matrix": {"algorithm.params.prune_target": [0.2, 0.3, 0.5]}},
        "tau": {"seeds": list(range(1, 11))},
        "fullscale": {"seeds": [1, 2, 3], "matrix": {"sparsity.constraint": ["fleet_mean", "per_device"]},
                      "set": {"training": {"rounds": 50, "local_steps": 10, "eval_every": 2}}},
    },
    "smoke": {
        "system": {"seeds": [1, 2], "set": {"training.rounds": 8}, "matrix": {"algorithm.params.prune_target": [0.3]}},
        "stress-drifting": {"seeds": [1, 2], "set": {"training.rounds": 8}},
        "stress-hostile": {"seeds": [1, 2], "set": {"training.rounds": 8}},
        "stress-datasheet": {"seeds": [1, 2], "set": {"training.rounds": 8}},
        "accuracy": {"seeds": [1, 2], "set": {"training": {"rounds": 5, "local_steps": 2, "eval_every": 1,
                                                           "eval_early": None},
                                              **_TINY}},
        "accuracy-fleet-mean": {"seeds": [1, 2], "set": {"training": {"rounds": 5, "local_steps": 2, "eval_every": 1,
                                                                      "eval_early": None},
                                                         **_TINY}},
        "tau": {"seeds": [1, 2], "set": _TINY,
                "matrix": {"training": [{"local_steps": 10, "rounds": 4, "eval_every": 1, "eval_early": None},
                                        {"local_steps": 20, "rounds": 2, "eval_every": 1, "eval_early": None},
                                        {"local_steps": 30, "rounds": 2, "eval_every": 1, "eval_early": None},
                                        {"local_steps": 40, "rounds": 1, "eval_every": 1, "eval_early": None}]}},
        "fullscale": {"seeds": [1], "set": {"training": {"rounds": 2, "local_steps": 1, "eval_every": 1},
                                            **_TINY, "learning.train_examples": 1200,
                                            "learning.partition": {"kind": "dirichlet", "alpha": 100.0,
                                                                   "min_size": 4}}},
    },
}
# Host seconds per local step of one board inside a sweep cell (torch threads 1) on this project's 2-core
# machine, by (model, proxy_layers); 2-layer MiniLM, batch 8, max_len 48: 0.07-0.08 s (train_s of the
# 8-board accuracy cells of 2026-12-07). Timing-only cells cost about TIMING_S_PER_ROUND per round of 80 boards.
STEP_S = {("minilm", 2): 0.075, ("minilm", 3): 0.1, ("minilm", None): 0.2, ("tiny-bert", 1): 0.005}
TIMING_S_PER_ROUND = 0.02
# Evaluating one test sentence costs about this fraction of a local step (forward only, batch 64, no
# optimiser): 2-layer MiniLM, max_len 48, about 3.3 s per 2,000 sentences in a cell against 0.075 s per step.
EVAL_PER_SENTENCE_STEPS = 0.022
# Host seconds per board and round beyond its steps (receiving and resizing the global update, slicing,
# attaching LoRA, importance, uploading), a rough fit: the 80-board cells (25 rounds of tau = 5, 10,160
# steps, 24 board-evaluations) took 1,148-1,162 host-s in the from-scratch run of 2026-12-07 evening.
ROUND_OVERHEAD_S = 0.15


def _merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in (nested dicts merged, other values replaced)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def sweep_file(name: str, scale: str, work: Path) -> Path:
    """The sweep file of ``name`` at ``scale``: the committed one for ``default``, else a derived copy
    (base made absolute) under ``work``."""
    src = PAPER / f"{name}.yaml"
    change = SCALES[scale].get(name)
    if not change:
        return src
    spec = yaml.safe_load(src.read_text())
    spec["base"] = str((PAPER / spec["base"]).resolve())
    spec["set"] = _merge(spec.get("set") or {}, change.get("set", {}))
    spec["matrix"] = {**(spec.get("matrix") or {}), **change.get("matrix", {})}
    spec["seeds"] = change.get("seeds", spec.get("seeds"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{name}.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def expected_host_s(path: Path) -> float:
    """Host seconds the sweep's cells should take on one core (module constants; a rough guide)."""
    _, cells = load_sweep_file(path)
    total = 0.0
    for c in cells:
        sc = c.scenario
        if sc.learning.kind != "real":
            total += sc.training.rounds * TIMING_S_PER_ROUND * sc.n_devices / 80 + 0.5
            continue
        step = STEP_S.get((sc.learning.model, sc.learning.proxy_layers), 0.15)
        steps = sc.n_devices * sc.training.rounds * sc.training.local_steps
        evals = sum(sc.training.evaluates(r) for r in range(sc.training.rounds))
        boards = min(sc.learning.eval.devices or sc.n_devices, sc.n_devices)
        total += (steps * step + sc.n_devices * sc.training.rounds * ROUND_OVERHEAD_S
                  + evals * boards * (sc.learning.test_size or 1000) * EVAL_PER_SENTENCE_STEPS * step + 8.0)
    return total


LONGEST_FIRST = ("fullscale",)
"""Sweeps of a few long cells, queued first: every sweep's cells share one pool of workers, so with
the long cells started first (longest processing time first) the short ones fill the cores around
them and no long cell is left running alone at the end."""


def sweep_command(path: Path, out: Path, workers: int | None, address: str | None) -> list[str]:
    cmd = [str(Path(sys.executable).with_name("fedfleet")), "sweep", str(path), "--out", str(out)]
    if workers:
        cmd += ["--workers", str(workers)]
    if address:
        cmd += ["--backend", "ray", "--address", address]
    return cmd


def run_sweeps(files: dict[str, Path], out: Path, workers: int | None, address: str | None) -> None:
    """Run every sweep (a rerun resumes). On this machine all sweeps run at once, one thread each, and
    their cells share one process pool of ``workers`` (:func:`run_pooled`); on a Ray cluster ``fedfleet
    sweep`` runs each in turn (the cluster packs the cells)."""
    if address:
        for name, path in files.items():
            cmd = sweep_command(path, out, workers, address)
            log.info("sweep %s: %s", name, " ".join(cmd))
            subprocess.run(cmd, check=True, cwd=REPO)
        return
    run_pooled(files, out, workers or os.cpu_count() or 1)


def run_pooled(files: dict[str, Path], out: Path, workers: int) -> None:
    """Every sweep in a thread of its own, all cells on one :class:`LocalExecutor` of ``workers``
    processes, the :data:`LONGEST_FIRST` sweeps' cells queued first: one process per core the whole
    time, no sweep's tail leaving a core idle (sweeps one after another idle a core at each sweep's
    last cell) and no long cell left alone at the end. Whether this beats the earlier layout (the
    full-scale sweep in a third process beside the others) is not measured: the machine's speed
    drifted by up to 40% between runs of the same day, more than the difference. A failed sweep is
    raised after the others finish; Ctrl-C cancels the pool, and a rerun resumes every sweep."""
    pool = LocalExecutor(workers)
    pool.start()  # the workers belong to this thread, which outlives the sweeps' threads
    order = [n for n in LONGEST_FIRST if n in files] + [n for n in files if n not in LONGEST_FIRST]
    errors: dict[str, BaseException] = {}
    threads = []
    t0 = time.perf_counter()

    def one(name: str, view: SharedExecutor) -> None:
        try:
            spec, cells = load_sweep_file(files[name])
            done = lambda row, k, n: log.info("sweep %s: %d of %d cells (%s), %.0f s", name, k, n,  # noqa: E731
                                              row["status"], time.perf_counter() - t0)
            sweep_dir = run_sweep(spec, cells, out, executor=view, base_dir=files[name].resolve().parent,
                                  on_cell=done)
            failed = json.loads((sweep_dir / "status.json").read_text())["failed"]
            if failed:
                raise RuntimeError(f"{failed} cells failed (tracebacks in {sweep_dir}/cells/<cell id>/traceback.txt)")
        except BaseException as e:  # noqa: BLE001 - reported once every sweep has stopped
            errors[name] = e
        finally:
            view.submitted.set()

    try:
        for name in order:
            view = SharedExecutor(pool)
            threads.append(threading.Thread(target=one, args=(name, view), name=f"sweep-{name}", daemon=True))
            threads[-1].start()
            view.submitted.wait()  # this sweep's cells are queued before the next sweep's
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        pool.close(cancel=True)
        raise
    pool.close()
    for name, e in errors.items():
        log.error("sweep %s failed: %s", name, e)
    if errors:
        raise RuntimeError(f"sweeps failed: {', '.join(errors)}") from next(iter(errors.values()))
    log.info("every sweep done: %.0f s", time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=list(SCALES), default="default")
    ap.add_argument("--skip-runs", action="store_true", help="only rebuild the page from existing results")
    ap.add_argument("--out", type=Path, default=REPO / "results", help="results root (sweeps under OUT/paper[-SCALE]/)")
    ap.add_argument("--no-figures", action="store_true", help="keep the figures as they are (page only)")
    ap.add_argument("--workers", type=int, default=None, help="parallel cells per sweep (default: CPU count)")
    ap.add_argument("--address", default=None, help="an existing Ray cluster to run the cells on")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    paper_dir = args.out / ("paper" if args.scale == "default" else f"paper-{args.scale}")
    files = {n: sweep_file(n, args.scale, paper_dir / "sweeps") for n in RUNS[args.scale]}
    if not args.skip_runs:
        cost = {n: expected_host_s(p) for n, p in files.items()}
        workers = args.workers or os.cpu_count() or 1
        log.info("expected cost at scale %s: %.0f core-min (%s), about %.0f min on %d workers",
                 args.scale, sum(cost.values()) / 60, ", ".join(f"{n} {s / 60:.0f}" for n, s in cost.items()),
                 sum(cost.values()) / 60 / workers, workers)
        run_sweeps(files, paper_dir, args.workers, args.address)
    docs = REPO / "docs" if args.scale == "default" else paper_dir / "page"
    page = write_page(paper_dir, docs, figures=not args.no_figures, scale=args.scale)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
