"""The FedSpine paper reproduction (issue 8): ``make paper`` runs every sweep of ``scenarios/paper/``
(resuming: finished cells are skipped) and regenerates ``docs/paper-reproduction.md`` and its figures
in ``docs/figures/`` from the results with :func:`sim.views.paper.write_page`, which computes every
number on that page from the run files.

    .venv/bin/python benchmarks/paper.py [--skip-runs] [--out results] [--workers N]

``--skip-runs`` only rebuilds the page from results already on disk (a missing sweep is an error).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from sim.views.paper import SWEEPS, write_page

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "scenarios" / "paper"
log = logging.getLogger("paper")


def run_sweeps(out: Path, workers: int | None) -> dict[str, float]:
    """``fedfleet sweep`` on each file (a rerun resumes); returns host seconds per sweep."""
    exe = Path(sys.executable).with_name("fedfleet")
    took = {}
    for name in SWEEPS:
        cmd = [str(exe), "sweep", str(PAPER / f"{name}.yaml"), "--out", str(out / "paper")]
        if workers:
            cmd += ["--workers", str(workers)]
        log.info("sweep %s: %s", name, " ".join(cmd))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        took[name] = time.perf_counter() - t0
        log.info("sweep %s: %.0f s", name, took[name])
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-runs", action="store_true", help="only rebuild the page from existing results")
    ap.add_argument("--out", type=Path, default=REPO / "results", help="results root (sweeps under OUT/paper/)")
    ap.add_argument("--no-figures", action="store_true", help="keep docs/figures/ as it is (page only)")
    ap.add_argument("--workers", type=int, default=None, help="parallel cells per sweep (default: CPU count)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.skip_runs:
        run_sweeps(args.out, args.workers)
    page = write_page(args.out / "paper", REPO / "docs", PAPER, figures=not args.no_figures)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
