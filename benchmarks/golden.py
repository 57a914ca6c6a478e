"""Golden-output check for refactors that must not change behaviour.

Runs a fixed set of scenarios through the CLI into a directory, and compares two such directories
file by file: every ``*.parquet`` byte for byte, every ``summary.json`` and ``scenario.yaml`` as text
with the host-time fields (``host``, which holds wall-clock times and versions) removed.

    python benchmarks/golden.py run OUT_DIR            # run the set with this checkout's code
    python benchmarks/golden.py compare DIR_A DIR_B     # count the files compared and identical
    python benchmarks/golden.py check COMMIT            # run the set at COMMIT (a git worktree) and here, compare

Exit 0 when every compared file is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, scenario, overrides): each is one `fedfleet run`; labels name the output subfolders.
CASES: list[tuple[str, str, list[str]]] = [
    ("quickstart", "scenarios/quickstart.yaml", []),
    ("fleet80-fedspine", "scenarios/paper-fleet-80.yaml",
     ["learning.kind=none", "training.rounds=30", "algorithm={name: fedspine, params: {prune_target: 0.3}}"]),
    ("fleet80-faults", "scenarios/paper-fleet-80-faults.yaml", ["learning.kind=none", "training.rounds=30"]),
    ("fleet80-calibrated-oracle", "scenarios/paper-fleet-80-calibrated.yaml",
     ["learning.kind=none", "training.rounds=20", "algorithm={name: oracle, params: {prune_target: 0.3}}"]),
    ("two-policies", "scenarios/compare-quick.yaml",
     ["learning.kind=none", "training.rounds=8",
      "policies={fedspine: {name: fedspine, params: {prune_target: 0.5}}, fedlora: {name: fedlora, params: {rank: 8}}}"]),
    ("real-tiny-bert", "scenarios/learning-quick.yaml",
     ["learning.model=tiny-bert", "training.rounds=3", "training.local_steps=3", "learning.test_size=200",
      "learning.eval.examples=100", "learning.train_examples=600"]),
]

HOST_KEYS = ("host", "setup_s", "host_time_s")  # wall-clock fields, anywhere in a JSON document


def run_cases(out: Path, repo: Path = ROOT) -> None:
    """Run every case with the ``fedfleet`` CLI of ``repo`` (its own sources, this venv's packages)."""
    out.mkdir(parents=True, exist_ok=True)
    for label, scenario, sets in CASES:
        cmd = [sys.executable, "-m", "sim.cli", "run", scenario, "--out", str(out / label)]
        for s in sets:
            cmd += ["--set", s]
        cmd += ["--set", "output.plots=false", "--set", "output.progress=false"]
        print(f"[golden] {label}: {' '.join(cmd[3:])}", flush=True)
        subprocess.run(cmd, cwd=repo, check=True, env={**_env(), "PYTHONPATH": str(repo)},
                       stdout=subprocess.DEVNULL)


def _env() -> dict:
    import os
    return dict(os.environ)


def _drop_host(doc):
    if isinstance(doc, dict):
        return {k: _drop_host(v) for k, v in doc.items() if k not in HOST_KEYS}
    if isinstance(doc, list):
        return [_drop_host(v) for v in doc]
    return doc


def _normalised(path: Path) -> bytes:
    """File bytes, with host fields dropped from JSON and host columns from CSV."""
    if path.suffix == ".json":
        return json.dumps(_drop_host(json.loads(path.read_text())), sort_keys=True).encode()
    if path.suffix == ".csv":
        import csv
        import io
        rows = list(csv.reader(io.StringIO(path.read_text())))
        keep = [i for i, name in enumerate(rows[0]) if name not in HOST_KEYS] if rows else []
        return "\n".join(",".join(r[i] for i in keep) for r in rows).encode()
    return path.read_bytes()


def compare(a: Path, b: Path) -> tuple[int, int, list[str]]:
    """(files compared, files identical, differences) over the parquet/summary/scenario files of both trees."""
    def files(root: Path) -> set[str]:
        pats = ("*.parquet", "summary.json", "scenario.yaml", "compare.csv")
        return {str(p.relative_to(root)) for pat in pats for p in root.rglob(pat)}
    fa, fb = files(a), files(b)
    diffs = [f"only in {a}: {f}" for f in sorted(fa - fb)] + [f"only in {b}: {f}" for f in sorted(fb - fa)]
    same = 0
    for f in sorted(fa & fb):
        if _normalised(a / f) == _normalised(b / f):
            same += 1
        else:
            diffs.append(f"differs: {f}")
    return len(fa | fb), same, diffs


def _report(a: Path, b: Path) -> int:
    n, same, diffs = compare(a, b)
    for d in diffs:
        print(d)
    print(f"[golden] {n} files compared, {same} identical")
    return 0 if same == n and n > 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    k = sub.add_parser("check")
    k.add_argument("commit")
    args = ap.parse_args()
    if args.cmd == "run":
        run_cases(args.out)
        return 0
    if args.cmd == "compare":
        return _report(args.a, args.b)
    with tempfile.TemporaryDirectory(prefix="fedfleet-golden-") as tmp:
        tmp = Path(tmp)
        wt = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), args.commit], cwd=ROOT, check=True)
        try:
            run_cases(tmp / "before", wt)
            run_cases(tmp / "after")
            return _report(tmp / "before", tmp / "after")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT, check=False)


if __name__ == "__main__":
    sys.exit(main())
