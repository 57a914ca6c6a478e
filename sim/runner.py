"""Run a scenario end to end: simulate, verify, write the run directory."""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from algorithms.base import STATUSES
from devices.cost import plan_cost
from devices.plan import Plan, top_layers
from devices.split_cost import message_bytes
from learning.api import Learner, NullLearner
from learning.config import EvalConfig, ImportanceConfig, LearnerConfig, PartitionConfig
from sim import __version__
from sim.engine import RunOutput, Simulation
from sim.loader import ScenarioError, resolved_dict, scenario_digest
from sim.lock import DirectoryLock
from sim.records import idle_summary
from sim.scenario import LearningSpec, Scenario
from sim.store import RUN_FILES, atomic_write_json, atomic_write_parquet, atomic_write_yaml, new_run_dir, read_regular
from sim.verify import verify

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path | None
    summary: dict
    rounds: pd.DataFrame
    device_rounds: pd.DataFrame


def versions() -> dict[str, str]:
    import pydantic  # noqa: PLC0415
    import simpy  # noqa: PLC0415

    return {"fedfleet": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "simpy": simpy.__version__, "pydantic": pydantic.__version__}


def expected_bytes(sim: Simulation, dev: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Re-price every row's plan with the cost model (vectorised over distinct plans; a split run's rows
    at their ``split_layers``, :func:`devices.split_cost.message_bytes`)."""
    if dev.empty:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = ["prune_ratio", "lora_rank", "lora_layers", "layer_ranks", "local_steps", "batch_size", "group"]
    split = "split_layers" in dev
    if split:
        keys.append("split_layers")
    uniq = dev[keys].drop_duplicates().reset_index(drop=True)
    L = sim.workload.arch.num_layers
    labels = sim.fleet.group_labels
    down, up = [], []
    for r in uniq.itertuples(index=False):
        layers = None if r.lora_layers < 0 else top_layers(int(r.lora_layers), L)
        ranks = tuple(int(x) for x in r.layer_ranks.split(",")) if r.layer_ranks else None
        plan = Plan(float(r.prune_ratio), int(r.lora_rank), layers, int(r.local_steps), int(r.batch_size), ranks,
                    split_layers=int(r.split_layers) if split else None)
        d, u = message_bytes(sim.workload, plan, sim.fleet.profiles[labels.index(str(r.group))].precision)
        down.append(d)
        up.append(u)
    uniq["_down"], uniq["_up"] = down, up
    m = dev[keys].merge(uniq, on=keys, how="left")
    return m["_down"].to_numpy(np.int64), m["_up"].to_numpy(np.int64)


def final_prune_summary(dev: pd.DataFrame, n_devices: int) -> dict[str, float | None]:
    """``final_prune_ratio_min/mean/max``: the distribution over devices of each device's sparsity
    after the run (its last reported plan's ratio; 0 for a device that never reported ok)."""
    if not len(dev):
        return {f"final_prune_ratio_{k}": None for k in ("min", "mean", "max")}
    ok = dev[dev["status"] == "ok"]
    final = np.zeros(n_devices)
    last = ok.groupby("device_index", observed=True)["prune_ratio"].last()
    final[last.index.to_numpy(dtype=int)] = last.to_numpy(dtype=float)
    return {"final_prune_ratio_min": float(final.min()), "final_prune_ratio_mean": float(final.mean()),
            "final_prune_ratio_max": float(final.max())}


def inference_summary(sim: Simulation, dev: pd.DataFrame) -> dict:
    """``final_inference_s``: each device's inference latency for one batch under its own final plan
    (its last ok plan's pruning ratio and rank, adapters on every layer) in its final power mode, without background load, from
    the cost model: the step-time formula max(F / F_eff, B / B_mem) + K x t_kernel applied to the forward
    pass only (forward FLOPs F_fwd; bytes and kernels scaled by the forward share F_fwd / (F_fwd + F_bwd)).
    Min, mean and max over the devices that reported, and the mean per device type."""
    ok = dev[dev["status"] == "ok"]
    if not len(ok):
        return {}
    last = ok.sort_values("round").groupby("device_index", observed=True).last()
    d = last.index.to_numpy(dtype=int)
    costs = [plan_cost(sim.workload, Plan(float(p), int(r), None, 1, sim.sc.workload.batch_size),
                       sim.fleet.profiles[g].precision)
             for p, r, g in zip(last["prune_ratio"], last["lora_rank"], sim.fleet.group[d])]
    share = np.array([c.flops_fwd / (c.flops_fwd + c.flops_bwd) for c in costs])
    t_s = sim.fleet.mode_table.step_times_s(sim.fleet.slots(d), np.array([c.flops_fwd for c in costs]),
                                            np.array([c.bytes_moved for c in costs]) * share,
                                            np.array([c.kernels for c in costs]) * share, np.ones(len(d)))
    by_type = pd.Series(t_s).groupby(last["device_type"].astype(str).to_numpy()).mean()
    return {"final_inference_s": {"min": float(t_s.min()), "mean": float(t_s.mean()), "max": float(t_s.max()),
                                  "by_type": {str(k): float(v) for k, v in by_type.items()}}}


def summarize(sc: Scenario, out: RunOutput, run_id: str) -> dict:
    rounds, dev = out.rounds, out.device_rounds
    acc = rounds["accuracy"].to_numpy(dtype=float) if len(rounds) else np.array([])
    target = sc.training.target_accuracy
    t_target = None
    if target is not None and len(acc):
        hit = np.flatnonzero(acc >= target)
        if len(hit):
            t_target = float(rounds["t_end_s"].iloc[hit[0]])
    finite_acc = acc[~np.isnan(acc)] if len(acc) else acc
    status_counts = dev["status"].value_counts().reindex(list(STATUSES), fill_value=0) \
        if len(dev) else pd.Series(dtype=int)
    return {
        "scenario": sc.name,
        "run_id": run_id,
        "seed": sc.seed,
        "algorithm": sc.algorithm.name,
        "learning": sc.learning.kind,
        "n_devices": sc.n_devices,
        "rounds_completed": int(len(rounds)),
        "stop_reason": out.stop_reason,
        "sim_time_s": out.sim_time_s,
        "final_accuracy": float(finite_acc[-1]) if len(finite_acc) else None,
        "target_accuracy": target,
        "time_to_target_s": t_target,
        "bytes_up_total": int(rounds["bytes_up"].sum()) if len(rounds) else 0,
        "bytes_down_total": int(rounds["bytes_down"].sum()) if len(rounds) else 0,
        "mean_round_s": float(rounds["duration_s"].mean()) if len(rounds) else None,
        "mean_idle_fraction": float(np.nanmean(rounds["mean_idle_fraction"])) if len(rounds) and rounds["mean_idle_fraction"].notna().any() else None,
        **idle_summary(rounds),
        "final_mean_prune_ratio": float(rounds["mean_prune_ratio"].dropna().iloc[-1]) if len(rounds) and rounds["mean_prune_ratio"].notna().any() else None,
        **final_prune_summary(dev, sc.n_devices),
        "device_rounds": int(len(dev)),
        "status_counts": {k: int(v) for k, v in status_counts.items()},
    }


def learning_tables(sim: Simulation) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-device evaluations (round, device, type, accuracy, loss, sparsity) and the data partition
    (samples and label histogram per device), with the fleet's ids, groups and types."""
    def label(df: pd.DataFrame) -> pd.DataFrame:
        d = df["device_index"].to_numpy()
        for i, (name, col) in enumerate(sim.recorder.device_labels(d, sim.fleet.group[d]).items()):
            df.insert(1 + i, name, col)
        return df

    ev = pd.DataFrame(sim.learner.evaluation_rows(), columns=["round", "device_index", "accuracy", "loss",
                                                              "attn_sparsity", "ffn_sparsity"])
    return label(ev), label(sim.learner.partition_table())


def learner_config(spec: LearningSpec) -> LearnerConfig:
    """The real learner's own config from the scenario's ``learning`` section (every field but ``kind``)."""
    top = spec.model_dump(exclude={"kind", "partition", "importance", "eval"})
    imp = spec.importance.model_dump()
    imp["protected_layers"] = tuple(imp["protected_layers"])
    return LearnerConfig(**top, partition=PartitionConfig(**spec.partition.model_dump()),
                         importance=ImportanceConfig(**imp), eval=EvalConfig(**spec.eval.model_dump()))


def make_learner(sc: Scenario, base_dir: Path | None = None) -> Learner:
    """The scenario's learner: :class:`~learning.api.NullLearner` (timing only) or the real PyTorch
    learner (imports torch); with ``learning.workers`` > 1 the one that trains on Ray actors (call its
    ``close()`` when done); for a split-learning strategy the split learner (``learning/split.py``)."""
    if sc.learning.kind != "real":
        return NullLearner()
    from devices.workload import load_arch  # noqa: PLC0415

    from algorithms.registry import get_strategy_class  # noqa: PLC0415

    if get_strategy_class(sc.algorithm.name).split:  # a round's devices train together (learning/split.py)
        if sc.learning.workers > 1:
            raise ScenarioError(f"learning.workers: {sc.learning.workers}; split learning ({sc.algorithm.name}) "
                                "trains a round's devices together in one process; allowed: 1")
        from learning.split import SplitLearner as cls  # noqa: PLC0415
    elif sc.learning.workers > 1:
        from learning.parallel import ParallelLearner as cls  # noqa: PLC0415
    else:
        from learning.learner import RealLearner as cls  # noqa: PLC0415
    arch = load_arch(sc.workload.model, base_dir)
    return cls(learner_config(sc.learning), seed=sc.seed, n_devices=sc.n_devices,
               lora_targets=list(sc.workload.lora_targets), target_layers=arch.num_layers)


def simulate(sc: Scenario, base_dir: Path | None = None, learner: Learner | None = None, on_round=None,
             checkpoint=None, resume_from: Path | None = None, on_trained=None) -> tuple[Simulation, RunOutput]:
    """Run the simulation in memory and verify it. Builds the scenario's learner unless given (and then
    closes it when the run ends, also on error; its results stay readable). ``checkpoint(sim,
    next_round)`` is called at round boundaries; ``resume_from`` (a checkpoint file of the same
    scenario) continues a run from its last saved round boundary (``sim.checkpoint``); ``on_trained()``
    after every finished local update (:attr:`learning.api.Learner.on_trained`)."""
    owned = learner is None
    if owned:
        learner = make_learner(sc, base_dir)
    learner.on_trained = on_trained
    try:
        sim = Simulation(sc, base_dir, learner=learner, on_round=on_round, checkpoint=checkpoint)
        if resume_from is not None:
            from sim import checkpoint as ckpt  # noqa: PLC0415

            sim.start_round = ckpt.restore(sim, ckpt.load(resume_from, scenario_digest(sc)))
            log.info("resuming %s at round %d of %d", sc.name, sim.start_round, sc.training.rounds)
        out = sim.run()
    finally:
        if owned:
            learner.close()
    verify(out.rounds, out.device_rounds, sc.round.policy, expected_bytes(sim, out.device_rounds))
    return sim, out


def run_id_of(sc: Scenario) -> str:
    return sc.output.run_name or f"seed{sc.seed}-{scenario_digest(sc)[:8]}"


def checkpoint_every(sc: Scenario) -> int:
    """Rounds between checkpoints: ``output.checkpoint_every``, or by default 1 for real learning (a
    round costs minutes of host time) and 0 (off) for timing-only runs (a round costs milliseconds)."""
    every = sc.output.checkpoint_every
    if every is None:
        return 1 if sc.learning.kind == "real" else 0
    return every


def run_scenario(sc: Scenario, base_dir: Path | None = None, out_root: Path | None = None,
                 progress: bool | None = None, run_dir: Path | None = None, resume: bool = False) -> RunResult:
    """Simulate ``sc`` and write its run directory under ``out_root`` (default ``sc.output.dir``),
    or into ``run_dir`` (an existing, empty directory) when given. With ``resume``, ``run_dir`` is a
    run directory of this scenario with a checkpoint, and the run continues from it (the results are
    those of an uninterrupted run). A finished run removes its checkpoint.

    The run holds ``run_dir``'s writer lock (:class:`sim.lock.DirectoryLock`) while it writes: a second
    writer raises :class:`sim.lock.DirectoryBusy` at once; with the lock held, temporary files that
    killed writers left there are removed."""
    from sim import checkpoint as ckpt  # noqa: PLC0415

    if run_dir is None:
        root = Path(out_root if out_root is not None else sc.output.dir)
        run_dir = new_run_dir(root, sc.name or "scenario", run_id_of(sc))
    with DirectoryLock(run_dir, "run") as lock:  # a second writer (two --resume) refuses: DirectoryBusy
        lock.remove_leftovers((*RUN_FILES, ckpt.FILENAME))  # temp files of killed writers
        if resume and _status_of(run_dir) == "finished":  # another --resume finished it meanwhile
            raise ScenarioError(f"--resume {run_dir}: this run already finished; nothing to resume")
        return _run_locked(sc, base_dir, run_dir, progress, resume)


def _status_of(run_dir: Path) -> str | None:
    """The ``status`` field of a run directory's ``status.json`` (None if absent or unreadable)."""
    try:
        doc = json.loads(read_regular(run_dir / "status.json", 1 << 20))
    except (OSError, ValueError):
        return None
    return doc.get("status") if isinstance(doc, dict) else None


def _run_locked(sc: Scenario, base_dir: Path | None, run_dir: Path, progress: bool | None,
                resume: bool) -> RunResult:
    """The body of :func:`run_scenario`, under the run directory's lock."""
    from sim import checkpoint as ckpt  # noqa: PLC0415

    digest = scenario_digest(sc)
    ckpt_path = run_dir / ckpt.FILENAME
    if resume:
        ckpt.read_header(ckpt_path, payload=False)  # refuse a missing or foreign one before touching the run's files
    else:
        meta = {"digest": digest, "versions": versions(), "base_dir": str(base_dir) if base_dir is not None else None}
        atomic_write_yaml(run_dir / "scenario.yaml", {**resolved_dict(sc), "_meta": meta})
    started = time.time()
    atomic_write_json(run_dir / "status.json", {"status": "running", "started_unix": started, "resumed": resume})
    show = sc.output.progress if progress is None else progress
    every = checkpoint_every(sc)

    def save_checkpoint(sim: Simulation, next_round: int) -> None:
        if every and next_round % every == 0:
            ckpt.save(ckpt_path, sim, next_round, digest)
            atomic_write_json(run_dir / "status.json", {"status": "running", "started_unix": started, "resumed": resume,
                                                        "checkpoint_round": next_round})

    try:
        from sim.progress import RoundProgress  # noqa: PLC0415

        with RoundProgress(sc.training.rounds, enabled=show and sys.stderr.isatty()) as bar:
            sim, out = simulate(sc, base_dir, on_round=bar.update, checkpoint=save_checkpoint if every else None,
                                resume_from=ckpt_path if resume else None,
                                on_trained=bar.device_trained if sc.learning.kind == "real" else None)
        summary = write_results(sc, sim, out, run_dir, started)
        atomic_write_json(run_dir / "status.json", {"status": "finished", "started_unix": started,
                                                    "finished_unix": time.time(), "resumed": resume})
        ckpt_path.unlink(missing_ok=True)
    except BaseException as e:
        _record_failure(e, run_dir, started, resume)
        raise
    return RunResult(run_dir, summary, out.rounds, out.device_rounds)


def write_results(sc: Scenario, sim: Simulation, out: RunOutput, run_dir: Path, started: float) -> dict:
    """Write a finished run's tables, summary and plots into ``run_dir``; returns the summary."""
    summary = summarize(sc, out, run_dir.name)
    summary.update(inference_summary(sim, out.device_rounds))
    summary["host"] = {"host_time_s": out.host_time_s, "versions": versions(), "started_unix": started}
    atomic_write_parquet(run_dir / "rounds.parquet", out.rounds)
    atomic_write_parquet(run_dir / "device_rounds.parquet", out.device_rounds)
    lr = sim.learner
    if lr.trains:
        evals, parts = learning_tables(sim)
        atomic_write_parquet(run_dir / "evals.parquet", evals)
        atomic_write_parquet(run_dir / "partition.parquet", parts)
        summary["learning_info"] = lr.info()
        summary["host"].update(**lr.host_summary(), workers=sc.learning.workers)
    atomic_write_json(run_dir / "summary.json", summary)
    if sc.output.plots and len(out.rounds):
        from sim.views.plots import plot_run  # noqa: PLC0415

        plot_run(run_dir)
    return summary


def _record_failure(e: BaseException, run_dir: Path, started: float, resume: bool) -> None:
    """Record a failed run in its ``status.json`` (and point to the last checkpoint, if any)."""
    from sim import checkpoint as ckpt  # noqa: PLC0415

    ckpt_path = run_dir / ckpt.FILENAME
    status = {"status": "failed", "started_unix": started, "error": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc(), "resumed": resume,
              "checkpoint": ckpt.FILENAME if ckpt_path.exists() else None}
    if ckpt_path.exists() and isinstance(e, Exception) and not isinstance(e, ckpt.CheckpointError):
        e.add_note(f"the last checkpoint is in {run_dir}; after fixing the cause: fedfleet run --resume {run_dir}")
    try:
        atomic_write_json(run_dir / "status.json", status)
    except OSError:  # e.g. the disk is full: the error itself must still reach the user
        log.error("could not record the failure in %s", run_dir / "status.json")


def scenario_of_run(run_dir: Path, base_dir: Path | None = None) -> tuple[Scenario, Path | None]:
    """The resolved scenario of a run directory (for ``--resume``), checked against its recorded digest.
    Relative paths resolve against the recorded ``base_dir``, else the given one (a comparison's parent
    records it in its ``status.json``)."""
    from sim.loader import ScenarioError, check_structure, read_yaml, validate  # noqa: PLC0415

    path = Path(run_dir) / "scenario.yaml"
    if not path.is_file():
        raise ScenarioError(f"{run_dir}: not a run directory (no scenario.yaml)")
    data = read_yaml(path)
    meta = data.pop("_meta", None)
    if not isinstance(meta, dict) or not isinstance(meta.get("digest"), str):
        raise ScenarioError(f"{path}: no _meta.digest; not written by fedfleet run")
    check_structure(data, str(path))
    base = meta.get("base_dir")
    base_dir = Path(base) if isinstance(base, str) and base else base_dir
    sc = validate(data, str(path), base_dir)
    if scenario_digest(sc) != meta["digest"]:
        raise ScenarioError(f"{path}: the scenario was edited after the run started (digest differs); "
                            "a run can only resume with the scenario it started with")
    return sc, base_dir
