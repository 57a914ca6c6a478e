"""learning.workers: local updates on Ray actors give exactly the records of the serial learner."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from fleet_helpers import base_scenario

from learning.api import NullLearner, Update
from sim.loader import ScenarioError, validate
from sim.runner import run_scenario, simulate


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The runs here set torch's thread count (learning.torch_threads: 1); later tests get theirs back."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def mixed_scenario(workers: int) -> dict:
    """Pruning (fixed, target 0.5), truncate resizing of SVD-aggregated updates, and every kind of cut:
    dropouts before and after the download, devices late at the deadline (their update is computed but
    not aggregated), devices that report."""
    d = base_scenario()
    d["workload"].update(seq_len=32, lora_targets=["query", "value", "ffn_in", "ffn_out"])
    d["training"] = {"rounds": 3, "local_steps": 3}
    d["algorithm"] = {"name": "fixed", "params": {"prune_target": 0.5, "rank": 4, "batch_size": 8}}
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 300, "test_size": 60,
                     "partition": {"kind": "dirichlet", "alpha": 1.0, "min_size": 8}, "torch_threads": 1,
                     "resize": "truncate", "workers": workers}
    d["fleet"]["groups"] = [
        {"type": "tx2", "count": 2, "power_modes": ["MAXQ"], "placement": "slow"},
        {"type": "agx_xavier", "count": 3, "power_modes": ["MAXN"], "placement": "lan"},
    ]
    d["network"]["classes"]["slow"] = {"mbps": [5, 5]}
    d["dynamics"]["dropout"] = {"prob": 0.25}
    d["round"] = {"policy": "deadline", "deadline_s": 12.0}
    return d


def _descendants(pid: int) -> list[str]:
    """Command lines of the processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        c = todo.pop()
        todo.extend(children.get(c, []))
        try:
            out.append(Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_two_workers_write_the_same_tables_as_one(tmp_path):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    runs = {w: run_scenario(validate(mixed_scenario(w)), out_root=tmp_path / f"w{w}", progress=False)
            for w in (1, 2)}
    dev = runs[1].device_rounds
    assert {"ok", "late", "dropped"} <= set(dev["status"])
    late = dev[dev["status"] == "late"]
    assert late["loss_before"].notna().all()  # cut off after the download: update computed, not aggregated
    assert dev["loss_before"].isna().any()  # dropped during the download: no update
    assert dev["proxy_ffn_sparsity"].max() == 0.5
    for name in ("rounds", "device_rounds", "evals", "partition"):
        a, b = (runs[w].run_dir / f"{name}.parquet" for w in (1, 2))
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
        assert a.read_bytes() == b.read_bytes(), name
    s1, s2 = runs[1].summary, runs[2].summary
    assert {k: v for k, v in s1["learning_info"].items() if k != "setup_s"} == \
        {k: v for k, v in s2["learning_info"].items() if k != "setup_s"}
    h1, h2 = s1["host"], s2["host"]
    assert (h1["workers"], h2["workers"]) == (1, 2)
    for k in ("train_steps", "train_tokens", "train_tokens_if_padded"):
        assert h1[k] == h2[k] > 0, k
    assert h2["train_s"] > 0
    assert_ray_gone(ray)


def assert_ray_gone(ray) -> None:
    """The run shut down the Ray it started: no actor, raylet or GCS process is left."""
    assert not ray.is_initialized()
    deadline = time.monotonic() + 20
    while (left := [c for c in _descendants(os.getpid()) if "ray" in c]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_a_failing_run_shuts_its_ray_down():
    ray = pytest.importorskip("ray")
    d = mixed_scenario(2)
    d["training"]["rounds"] = 2

    def boom(row):
        raise RuntimeError("stop after round 0")

    with pytest.raises(RuntimeError, match="stop after round 0"):
        simulate(validate(d), on_round=boom)
    assert_ray_gone(ray)


@pytest.mark.parametrize("learning,match", [
    ({"workers": 0}, "learning.workers: Input should be greater than or equal to 1"),
    ({"workers": 2, "device": "cuda"}, "learning.workers: 2 parallel workers need device: cpu"),
    ({"autocast": "bf16"}, "learning.autocast: bf16 needs device: cuda or auto"),
    ({"device": "gpu"}, "learning.device: Input should be 'cpu', 'cuda' or 'auto'"),
])
def test_bad_workers_are_clear_errors(learning, match):
    d = mixed_scenario(1)
    d["learning"].update(learning)
    with pytest.raises(ScenarioError, match=match):
        validate(d)


class SerialFake(NullLearner):
    """A learner without torch: the update is a function of (device, round); aggregation is logged."""

    trains = True
    extra_columns = ("fake_extra",)

    def __init__(self):
        self.log: list[tuple] = []

    @staticmethod
    def make(device: int, round_index: int) -> Update:
        return Update(loss_before=device + 0.5, loss_after=round_index + 0.25,
                      lora_update_norm=device * 10.0 + round_index,
                      payload=(device, round_index), extra={"fake_extra": float(device * round_index)})

    def local_update(self, device, plan, round_index):
        return self.make(device, round_index)

    def aggregate(self, devices, updates, method, weights):
        self.log.append(("aggregate", tuple(devices), tuple(u.payload for u in updates)))

    def data_sizes(self):
        return [1.0] * 64


class SubmitFake(SerialFake):
    """The same updates through submit/collect: handles are (device, round), collected once per round."""

    def local_update(self, device, plan, round_index):
        raise AssertionError("the engine must call submit when the learner has it")

    def submit(self, device, plan, round_index):
        self.log.append(("submit", device, round_index))
        return (device, round_index)

    def collect(self, handles):
        self.log.append(("collect", tuple(handles)))
        return [self.make(d, r) for d, r in handles]


def test_engine_collects_submitted_updates_at_the_cut_off_before_aggregating():
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "xavier_nx", "count": 12, "placement": "lan"}]
    d["dynamics"]["dropout"] = {"prob": 0.3}
    d["dynamics"]["background_load"] = {"kind": "lognormal", "sigma": 0.5}
    d["round"] = {"policy": "first_k", "k": 5, "over_selection": 1.6}
    d["training"]["rounds"] = 4
    sc = validate(d)
    serial, sub = SerialFake(), SubmitFake()
    _, a = simulate(sc, learner=serial)
    _, b = simulate(sc, learner=sub)
    pd.testing.assert_frame_equal(a.rounds, b.rounds, check_exact=True)
    pd.testing.assert_frame_equal(a.device_rounds, b.device_rounds, check_exact=True)
    assert [e for e in sub.log if e[0] == "aggregate"] == serial.log
    dev = b.device_rounds
    assert {"ok", "cancelled", "dropped"} <= set(dev["status"])
    for r, g in dev.groupby("round"):
        events = [e for e in sub.log if (e[0] == "submit" and e[2] == r)
                  or (e[0] == "collect" and e[1] and e[1][0][1] == r)]
        submitted = [e[1] for e in events if e[0] == "submit"]
        assert events[-1] == ("collect", tuple((dv, r) for dv in sorted(submitted)))  # once, after all submits
        trained = g[g["loss_before"].notna()]
        assert sorted(trained["loss_before"] - 0.5) == sorted(submitted)  # cancelled and late ones too
    order = [e[0] for e in sub.log]
    assert all(order[i - 1] == "collect" for i, e in enumerate(order) if e == "aggregate")


def test_progress_inside_a_round_counts_every_local_update(monkeypatch):
    """The runner's in-round progress: ``on_trained`` fires once per local update the learner computes
    (every device whose download finished), and the bar shows the updates of the current round."""
    import io

    from rich.console import Console

    import sim.progress as progress

    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "xavier_nx", "count": 6, "placement": "lan"}]
    d["training"]["rounds"] = 3
    calls: list[int] = []
    _, out = simulate(validate(d), learner=SerialFake(), on_trained=lambda: calls.append(1))
    started = out.device_rounds["t_compute_start_s"].notna().sum()
    assert len(calls) == started == 18
    monkeypatch.setattr(progress, "CONSOLE", Console(file=io.StringIO(), force_terminal=True, width=120))
    with progress.RoundProgress(2) as bar:
        for _ in range(4):
            bar.device_trained()
        assert bar.trained_this_round == 4
        bar.update({"t_end_s": 5.0})
        bar.device_trained()
        assert bar.trained_this_round == 1
    text = progress.CONSOLE.file.getvalue()
    assert "local updates this round" in text
