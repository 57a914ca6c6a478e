"""paper-fleet-80 timing-only with the fixed strategy: the fleet, its types and its round times."""

from __future__ import annotations

import numpy as np
from fleet_helpers import REPO

from sim.loader import load_scenario
from sim.runner import simulate


def test_paper_fleet_step_time_order_and_idle():
    sc, base = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml",
                             ["learning.kind=none", "training.rounds=40"])
    _, out = simulate(sc, base)
    dev = out.device_rounds
    assert dev["device_id"].nunique() == 80
    step = dev.groupby("device_type", observed=True)["step_time_s"].mean()
    assert step["agx_xavier"] < step["xavier_nx"] < step["tx2"]
    reported = dev[dev["status"].isin(["ok", "oom"])]
    assert len(reported) == len(dev)  # no failures configured: every device reports every round
    idle = reported["idle_s"].to_numpy()
    assert np.all(np.isfinite(idle)) and np.all(idle >= 0)
    # idle = round end - own report, and the slowest device of each round idles 0
    assert np.allclose(idle, reported["round_end_s"] - reported["t_report_s"], rtol=0, atol=1e-9)
    assert (reported.groupby("round")["idle_s"].min() == 0).all()
    # modes were redrawn at round 20 (periodic, every 20 rounds)
    m = dev.pivot(index="round", columns="device_id", values="power_mode")
    assert (m.loc[0] == m.loc[19]).all() and (m.loc[0] != m.loc[20]).any()
