"""Fuzz the scenario loader with N seeded hostile documents; count accepted / cleanly refused / tracebacks.

    .venv/bin/python benchmarks/bench_fuzz.py [--n 10000] [--seed 0] [--json results/bench/fuzz.json]

Every document is written to a file and loaded in this process the way ``fedfleet validate`` / ``run`` load
it (``sim.loader.load_scenario`` with ``--set`` overrides); an accepted scenario also goes through what
the runner does first with it (``scenario_digest``, ``run_id_of``, the run directory under a results root,
resolved without creating anything). Outcomes:

* ``accepted``: a valid scenario;
* ``rejected_cleanly``: a :class:`sim.loader.ScenarioError` whose message is non-empty and starts with the
  file name or ``--set`` (the CLI prints it, exit status 2);
* ``tracebacks``: any other exception (a loader bug: the CLI would print a traceback), a ScenarioError with
  an empty or anonymous message, a run directory outside the results root, or a document that took longer
  than ``--timeout`` seconds. The script exits with status 1 when there is any.

Documents come from :class:`sim.studies.fuzz.Gen` (seeded; six kinds in equal shares, described there;
``mutation`` and ``override`` start from the shipped ``scenarios/*.yaml``). The same seed gives the same
documents.

JSON keys: ``documents``, ``accepted``, ``rejected_cleanly``, ``tracebacks``, ``seconds`` (loading only, not
generating), ``examples_of_tracebacks`` (up to 20: kind, exception, message, where, the start of the document
and the overrides), ``by_kind`` ({kind: {documents, accepted, rejected_cleanly, tracebacks}}), ``seed``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from sim.loader import ScenarioError, load_scenario, read_yaml, scenario_digest
from sim.store import safe_child
from sim.studies.fuzz import KINDS, Gen

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def run_one(path: Path, overrides: list[str], out_root: Path, timeout: float) -> tuple[str, str | None]:
    """Load one document; ("accepted" | "rejected" | "traceback", problem or None)."""
    from sim.runner import run_id_of  # noqa: PLC0415

    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        sc, _ = load_scenario(path, overrides)
        assert len(scenario_digest(sc)) == 64
        root = out_root.resolve()
        child = safe_child(root, sc.name or "scenario", run_id_of(sc))
        if root not in child.parents:
            return "traceback", f"run directory {child} outside {root}"
        return "accepted", None
    except ScenarioError as e:
        msg = str(e)
        if not msg.strip() or not msg.startswith((str(path), "--set ")):
            return "traceback", f"ScenarioError without a named file or key: {msg[:300]!r}"
        return "rejected", None
    except _Timeout:
        return "traceback", f"still loading after {timeout} s"
    except Exception as e:  # noqa: BLE001 - that is what this benchmark counts
        frames = traceback.extract_tb(e.__traceback__)[-3:]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))
        return "traceback", f"{type(e).__name__}: {str(e)[:300]} (at {where})"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="documents to generate (at least this many)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here (e.g. results/bench/fuzz.json)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds one document may take")
    args = ap.parse_args(argv)

    shipped = {p.name: read_yaml(p) for p in sorted(SCENARIO_DIR.glob("*.yaml"))}
    gen = Gen(args.seed, shipped)
    per_kind = -(-args.n // len(KINDS))
    counts = {k: {"documents": 0, "accepted": 0, "rejected_cleanly": 0, "tracebacks": 0} for k in KINDS}
    examples: list[dict] = []
    seconds = 0.0
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_fuzz_") as tmp:
            work = Path(tmp)
            # relative trace / config paths in mutated shipped scenarios resolve next to the file
            (work / "traces").symlink_to(SCENARIO_DIR / "traces")
            for i in range(per_kind * len(KINDS)):
                kind = KINDS[i % len(KINDS)]
                content, overrides = gen.document(kind)
                p = work / f"doc{i % 7}.yaml"
                p.write_bytes(content if isinstance(content, bytes)
                              else content.encode("utf-8", "surrogatepass"))
                t0 = time.perf_counter()
                outcome, problem = run_one(p, overrides, work / "out", args.timeout)
                seconds += time.perf_counter() - t0
                c = counts[kind]
                c["documents"] += 1
                c[{"accepted": "accepted", "rejected": "rejected_cleanly", "traceback": "tracebacks"}[outcome]] += 1
                if problem is not None and len(examples) < 20:
                    body = content if isinstance(content, str) else content.decode("utf-8", "backslashreplace")
                    examples.append({"kind": kind, "problem": problem, "document": body[:400],
                                     "overrides": [o[:200] for o in overrides]})
    finally:
        signal.signal(signal.SIGALRM, old)

    total = {key: sum(c[key] for c in counts.values()) for key in ("documents", "accepted", "rejected_cleanly",
                                                                   "tracebacks")}
    print(f"{'kind':<14}{'documents':>10}{'accepted':>10}{'rejected':>10}{'tracebacks':>12}")
    for k, c in [*counts.items(), ("total", total)]:
        print(f"{k:<14}{c['documents']:>10}{c['accepted']:>10}{c['rejected_cleanly']:>10}{c['tracebacks']:>12}")
    print(f"{total['documents']} documents in {seconds:.1f} s of loading ({1e3 * seconds / total['documents']:.2f} "
          f"ms each), seed {args.seed}")
    for ex in examples[:5]:
        print(f"  {ex['kind']}: {ex['problem']}")
    result = {**total, "seconds": round(seconds, 3), "examples_of_tracebacks": examples, "by_kind": counts,
              "seed": args.seed}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return 1 if total["tracebacks"] else 0


if __name__ == "__main__":
    sys.exit(main())
