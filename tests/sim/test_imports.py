"""Timing-only code never imports torch (must-show 5)."""

from __future__ import annotations

import subprocess
import sys

from fleet_helpers import REPO


def test_sim_and_devices_do_not_import_torch():
    code = "import sim, devices, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_a_timing_only_run_does_not_import_torch():
    code = ("import sys; import sim.runner, sim.loader, algorithms; "
            "sc, b = sim.loader.load_scenario('scenarios/quickstart.yaml', ['training.rounds=2', 'output.plots=false']); "
            "sim.runner.simulate(sc, b); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
