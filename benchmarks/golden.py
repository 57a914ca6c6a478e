"""Golden-output check for refactors that must not change behaviour.

Runs a fixed set of scenarios through the CLI into a directory, and compares two such directories
file by file: every ``*.parquet`` byte for byte, every ``summary.json`` and ``scenario.yaml`` as text
with the host-time fields (``host``, which holds wall-clock times and versions) removed.

    python benchmarks/golden.py run OUT_DIR            # run the set with this checkout's code
    python benchmarks/golden.py compare DIR_A DIR_B     # count the files compared and identical
    python benchmarks/golden.py compare A B --allow-added  # B may add parquet columns / JSON keys; the rest identical
    python benchmarks/golden.py check COMMIT            # run the set at COMMIT (a git worktree) and here, compare
    python benchmarks/golden.py check COMMIT --head C2  # the same with C2's committed code instead of the working tree

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
    if path.suffix == ".yaml":  # the checkout's own location is not behaviour
        return b"".join(l for l in path.read_bytes().splitlines(keepends=True) if not l.lstrip().startswith(b"base_dir:"))
    return path.read_bytes()


def _drop_added(a: Path, b: Path) -> tuple[bytes, bytes, list[str]]:
    """Both files restricted to what A has: B's extra parquet columns or JSON keys are listed, not compared."""
    if a.suffix == ".parquet":
        import pandas as pd
        da, db = pd.read_parquet(a), pd.read_parquet(b)
        added = [c for c in db.columns if c not in da.columns]
        same = list(da.columns) == [c for c in db.columns if c in da.columns] and da.equals(db[list(da.columns)])
        return b"", (b"" if same else b"x"), added
    if a.suffix == ".json":
        ja, jb = (_drop_host(json.loads(p.read_text())) for p in (a, b))
        added = sorted(set(jb) - set(ja)) if isinstance(jb, dict) and isinstance(ja, dict) else []
        jb = {k: v for k, v in jb.items() if k in ja} if added else jb
        return json.dumps(ja, sort_keys=True).encode(), json.dumps(jb, sort_keys=True).encode(), added
    if a.suffix == ".yaml":  # a resolved scenario: keys B added at any depth (e.g. algorithm.defaults) listed
        import yaml
        ya, yb = (yaml.safe_load(_normalised(p)) for p in (a, b))
        added: list[str] = []
        yb = _restrict(yb, ya, "", added)
        return json.dumps(ya, sort_keys=True).encode(), json.dumps(yb, sort_keys=True).encode(), added
    if a.suffix == ".csv":
        import pandas as pd
        da, db = pd.read_csv(a), pd.read_csv(b)
        da, db = da.drop(columns=[c for c in HOST_KEYS if c in da]), db.drop(columns=[c for c in HOST_KEYS if c in db])
        added = [c for c in db.columns if c not in da.columns]
        return b"", (b"" if da.equals(db[list(da.columns)]) else b"x"), added
    return _normalised(a), _normalised(b), []


def _restrict(b, a, where: str, added: list[str]):
    """``b`` without the mapping keys ``a`` lacks (at any depth); their dotted paths appended to ``added``."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return b
    added.extend(f"{where}{k}" for k in b if k not in a)
    return {k: _restrict(v, a[k], f"{where}{k}.", added) for k, v in b.items() if k in a}


def compare(a: Path, b: Path, allow_added: bool = False) -> tuple[int, int, list[str]]:
    """(files compared, files identical, differences) over the parquet/summary/scenario files of both trees."""
    def files(root: Path) -> set[str]:
        pats = ("*.parquet", "summary.json", "scenario.yaml", "compare.csv")
        return {str(p.relative_to(root)) for pat in pats for p in root.rglob(pat)}
    fa, fb = files(a), files(b)
    diffs = [f"only in {a}: {f}" for f in sorted(fa - fb)] + [f"only in {b}: {f}" for f in sorted(fb - fa)]
    same = 0
    for f in sorted(fa & fb):
        if allow_added:
            xa, xb, added = _drop_added(a / f, b / f)
            if added:
                diffs.append(f"added in {f}: {', '.join(map(str, added))}")
        else:
            xa, xb = _normalised(a / f), _normalised(b / f)
        if xa == xb:
            same += 1
        else:
            diffs.append(f"differs: {f}")
    return len(fa | fb), same, diffs


def _report(a: Path, b: Path, allow_added: bool = False) -> int:
    n, same, diffs = compare(a, b, allow_added)
    for d in diffs:
        print(d)
    print(f"[golden] {n} files compared, {same} identical" + (" (added columns/keys not compared)" if allow_added else ""))
    return 0 if same == n and n > 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--allow-added", action="store_true", help="B may add parquet columns and JSON keys")
    k = sub.add_parser("check")
    k.add_argument("commit")
    k.add_argument("--head", default=None, help="compare with this commit instead of the working tree")
    args = ap.parse_args()
    if args.cmd == "run":
        run_cases(args.out)
        return 0
    if args.cmd == "compare":
        return _report(args.a, args.b, args.allow_added)
    with tempfile.TemporaryDirectory(prefix="fedfleet-golden-") as tmp:
        tmp = Path(tmp)
        trees = {"before": args.commit, "after": args.head}
        made = []
        try:
            for side, commit in trees.items():
                repo = ROOT
                if commit is not None:
                    repo = tmp / f"tree-{side}"
                    subprocess.run(["git", "worktree", "add", "--detach", str(repo), commit], cwd=ROOT, check=True)
                    made.append(repo)
                run_cases(tmp / side, repo)
            return _report(tmp / "before", tmp / "after")
        finally:
            for repo in made:
                subprocess.run(["git", "worktree", "remove", "--force", str(repo)], cwd=ROOT, check=False)


if __name__ == "__main__":
    sys.exit(main())
