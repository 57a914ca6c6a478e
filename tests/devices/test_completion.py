"""devices/completion.py: one answer for a round time (the engine's clock, the oracle, ``fedfleet profile``)."""

from __future__ import annotations

import numpy as np
import pytest

from devices.catalog import device_type
from devices.completion import completion_times, transfer_s
from devices.cost import plan_cost
from devices.plan import Plan
from devices.timing import DeviceProfile, ModeTable
from devices.workload import Workload, load_arch

W = Workload(load_arch("roberta-base"), seq_len=128)


def _profile(type_id: str) -> DeviceProfile:
    dt = device_type(type_id)
    return DeviceProfile(dtype=dt, modes=dt.modes, precision=dt.default_precision)


def test_phases_follow_the_roofline_and_the_transfer_formula():
    prof = _profile("xavier_nx")
    plan = Plan(0.3, 8, None, 20, 16)
    c = plan_cost(W, plan, prof.precision)
    n = len(prof.modes)
    load = np.linspace(1.0, 2.0, n)
    spike = np.full(n, 3.0)
    down, up = np.full(n, 40.0), np.full(n, 10.0)
    t = completion_times(ModeTable.build([(prof, m) for m in prof.modes]), np.arange(n), np.full(n, c.flops_per_step),
                         np.full(n, c.bytes_moved), np.full(n, float(c.kernels)), load, plan.local_steps, c.bytes_down,
                         c.bytes_up, down, up, 0.05, 0.8, step_factor=spike)
    for i, m in enumerate(prof.modes):
        step = prof.step_time_s(c, m, float(load[i])) * 3.0
        assert t.step_s[i] == pytest.approx(step, rel=1e-12)
        assert t.compute_s[i] == pytest.approx(20 * step, rel=1e-12)
    assert np.allclose(t.download_s, 0.05 + 8 * c.bytes_down / (40e6 * 0.8), rtol=1e-12)
    assert np.allclose(t.upload_s, 0.05 + 8 * c.bytes_up / (10e6 * 0.8), rtol=1e-12)
    assert np.array_equal(t.total_s, t.download_s + t.compute_s + t.upload_s)


def test_transfer_halves_its_payload_time_at_double_efficiency():
    assert transfer_s(1_000_000, 8.0, 0.0, 0.5) == pytest.approx(2.0)
    assert transfer_s(1_000_000, 8.0, 0.0, 1.0) == pytest.approx(1.0)
    assert transfer_s(0, 8.0, 0.3, 1.0) == pytest.approx(0.3)


def test_profile_honours_the_network_efficiency():
    from fleet_helpers import fedfleet

    def comm(eff: str) -> float:
        r = fedfleet("profile", "scenarios/quickstart.yaml", "--set", f"network.efficiency={eff}")
        assert r.returncode == 0, r.stderr
        row = next(line for line in r.stdout.splitlines() if "│" in line and any(ch.isdigit() for ch in line))
        return float(row.split("│")[7])  # up+down s

    assert comm("0.5") > 1.5 * comm("1.0")
