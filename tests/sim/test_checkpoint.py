"""Checkpoint and resume: runs SIGKILLed at random rounds resume to byte-identical results; corrupt,
truncated, foreign and malicious checkpoints are refused with clear messages; a full disk ends a run
with a clear error and leaves the last checkpoint usable."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from fleet_helpers import REPO, _fedfleet_cmd, base_scenario, cli_env, fedfleet

from sim import checkpoint as ckpt

RESULT_FILES = ("rounds.parquet", "device_rounds.parquet", "evals.parquet", "partition.parquet")

# A child that runs a scenario and SIGKILLs itself at a chosen moment (the kill is real: no cleanup,
# no finally blocks, exactly what an OOM killer or a power cut leaves behind).
KILL_DRIVER = r"""
import os, signal, sys
from pathlib import Path
import sim.checkpoint as ck
import sim.records as rec
from sim.loader import load_scenario
from sim.runner import run_scenario

scenario, out, k, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "after_round":  # round k's records exist, the checkpoint of its boundary is not written yet
    add = rec.Recorder.add_round
    def add_round(self, buf, **kw):
        row = add(self, buf, **kw)
        if buf.round == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return row
    rec.Recorder.add_round = add_round
elif mode == "mid_checkpoint":  # killed while writing the checkpoint after round k - 1: half a temp file
    write = ck.atomic_write_bytes
    def atomic_write_bytes(path, data):
        if b'"round": %d' % k in data[:4096]:
            with open(Path(path).parent / ".checkpoint.bin.partial.tmp", "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return write(path, data)
    ck.atomic_write_bytes = atomic_write_bytes
sc, base = load_scenario(scenario)
run_scenario(sc, base, out, progress=False)
"""


def timing_scenario(tmp_path: Path, rounds: int = 12, every: int = 1) -> Path:
    """Dynamics of every kind, a bandit, dropouts, faults, a deadline and a shared channel: state everywhere."""
    d = base_scenario(name="ck")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 6, "placement": "slow"},
                            {"type": "xavier_nx", "count": 6, "placement": "lan"},
                            {"type": "agx_xavier", "count": 3, "placement": "lan"}]
    d["network"]["classes"]["slow"] = {"mbps": [4, 12]}
    d["network"]["fluctuation"] = {"phi": 0.7, "sigma_log": 0.3}
    d["network"]["contention"] = "per_class"
    d["dynamics"] = {"power_mode": {"kind": "periodic", "every_rounds": 3, "initial": "random"},
                     "background_load": {"kind": "lognormal", "sigma": 0.3}, "dropout": {"prob": 0.15},
                     "availability": {"kind": "always"}}
    d["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.4}}
    d["training"] = {"rounds": rounds, "local_steps": 10}
    d["round"] = {"policy": "deadline", "deadline_factor": 1.3}
    d["faults"] = {"crash_prob": 0.1, "lost_upload_prob": 0.05, "leave_prob": 0.01,
                   "straggler": {"prob": 0.1, "factor": 3.0, "rounds": 2},
                   "partitions": [{"placement": "slow", "start_s": 200, "end_s": 400}]}
    d["output"] = {"plots": False, "progress": False, "checkpoint_every": every}
    p = tmp_path / "ck.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def learning_scenario(tmp_path: Path, rounds: int = 4) -> Path:
    d = base_scenario(name="ckl")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "placement": "lan"},
                            {"type": "agx_xavier", "count": 2, "placement": "lan"}]
    d["workload"].update(seq_len=32, lora_targets=["query", "value", "ffn_in"])
    d["dynamics"]["dropout"] = {"prob": 0.2}
    d["training"] = {"rounds": rounds, "local_steps": 3, "eval_every": 1}
    d["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.5, "batch_size": 8}}
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 240, "test_size": 48,
                     "partition": {"kind": "dirichlet", "alpha": 1.0, "min_size": 8}, "torch_threads": 1,
                     "eval": {"examples": 48}}
    d["output"] = {"plots": False, "progress": False}  # checkpoint_every: default (every round) for real learning
    p = tmp_path / "ckl.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def run_dir_of(out: Path) -> Path:
    dirs = [p.parent for p in out.rglob("scenario.yaml")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_same_results(a: Path, b: Path) -> None:
    for name in RESULT_FILES:
        if (a / name).exists() or (b / name).exists():
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for s in (sa, sb):
        s.pop("host")
        s.get("learning_info", {}).pop("setup_s", None)  # host seconds
    assert sa == sb
    assert json.loads((b / "status.json").read_text())["status"] == "finished"
    assert not (b / ckpt.FILENAME).exists()  # a finished run drops its checkpoint


def kill_and_resume(scenario: Path, out: Path, k: int, mode: str) -> Path:
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(scenario), str(out), str(k), mode], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rd = run_dir_of(out)
    assert json.loads((rd / "status.json").read_text())["status"] == "running"  # what a killed run leaves
    assert not (rd / "summary.json").exists()
    res = fedfleet("run", "--resume", str(rd), "-q", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    return rd


def test_sigkilled_timing_runs_resume_byte_identical(tmp_path):
    scen = timing_scenario(tmp_path)
    ref = fedfleet("run", str(scen), "--out", str(tmp_path / "ref"), "-q")
    assert ref.returncode == 0, ref.stderr
    ref_dir = run_dir_of(tmp_path / "ref")
    rng = np.random.default_rng(7)
    trials = [("after_round", int(rng.integers(1, 11))) for _ in range(3)] + \
             [("mid_checkpoint", int(rng.integers(2, 11))) for _ in range(2)]
    for i, (mode, k) in enumerate(trials):
        rd = kill_and_resume(scen, tmp_path / f"kill{i}", k, mode)
        assert_same_results(ref_dir, rd)


def test_external_sigkill_of_the_cli_then_resume(tmp_path):
    """The kill comes from outside, whenever the run has checkpointed at least twice."""
    scen = timing_scenario(tmp_path, rounds=40)
    ref = fedfleet("run", str(scen), "--out", str(tmp_path / "ref"), "-q")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([*_fedfleet_cmd(), "run", str(scen), "--out", str(out), "-q"], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        st = list(out.rglob("status.json"))
        try:
            if st and json.loads(st[0].read_text()).get("checkpoint_round", 0) >= 2:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        except (ValueError, OSError):
            pass
        time.sleep(0.005)
    proc.wait(30)
    rd = run_dir_of(out)
    if killed:
        res = fedfleet("run", "--resume", str(rd), "-q")
        assert res.returncode == 0, res.stderr
    assert_same_results(run_dir_of(tmp_path / "ref"), rd)


def test_sigkilled_learning_run_resumes_byte_identical(tmp_path):
    pytest.importorskip("torch")
    scen = learning_scenario(tmp_path)
    ref = fedfleet("run", str(scen), "--out", str(tmp_path / "ref"), "-q", timeout=600)
    assert ref.returncode == 0, ref.stderr
    ref_dir = run_dir_of(tmp_path / "ref")
    for i, (mode, k) in enumerate([("after_round", 2), ("mid_checkpoint", 3)]):
        rd = kill_and_resume(scen, tmp_path / f"kill{i}", k, mode)
        assert_same_results(ref_dir, rd)


# ------------------------------------------------------------------------------------------ refusals
@pytest.fixture
def stopped_run(tmp_path) -> Path:
    """A timing-only run killed after round 3 (checkpoint of round 3 on disk)."""
    scen = timing_scenario(tmp_path, rounds=8)
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(scen), str(tmp_path / "o"), "3", "after_round"],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return run_dir_of(tmp_path / "o")


def _resume_fails(rd: Path, *needles: str) -> None:
    res = fedfleet("run", "--resume", str(rd))
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


def test_truncated_checkpoint_is_refused(stopped_run):
    p = stopped_run / ckpt.FILENAME
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    _resume_fails(stopped_run, "truncated checkpoint")


def test_corrupt_checkpoint_is_refused(stopped_run):
    p = stopped_run / ckpt.FILENAME
    data = bytearray(p.read_bytes())
    data[-50] ^= 0xFF
    p.write_bytes(bytes(data))
    _resume_fails(stopped_run, "corrupt checkpoint", "SHA-256")


def test_foreign_files_are_refused(stopped_run):
    p = stopped_run / ckpt.FILENAME
    p.write_bytes(b"PK\x03\x04 not ours")
    _resume_fails(stopped_run, "not a fedfleet checkpoint")
    p.unlink()
    _resume_fails(stopped_run, "no checkpoint")


def _reseal(p: Path, header: dict, payload: bytes) -> None:
    """Rewrite a checkpoint with a recomputed SHA-256 (what a forger would do)."""
    head = ckpt.MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
    p.write_bytes(head + hashlib.sha256(head + payload).hexdigest().encode() + b"\n" + payload)


def test_checkpoint_of_another_scenario_is_refused(stopped_run):
    p = stopped_run / ckpt.FILENAME
    header, payload = ckpt.read_header(p)
    header["digest"] = "0" * 64
    _reseal(p, header, payload)
    _resume_fails(stopped_run, "another scenario")


def test_edited_scenario_is_refused(stopped_run):
    p = stopped_run / "scenario.yaml"
    p.write_text(p.read_text().replace("seed: 0", "seed: 1"))
    _resume_fails(stopped_run, "edited after the run started")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fedfleet-pwned",))


def test_malicious_payload_with_a_valid_header_is_refused(stopped_run):
    """A pickle in place of the JSON document, resealed: the loader never unpickles (no pickle import at all)."""
    p = stopped_run / ckpt.FILENAME
    header, _ = ckpt.read_header(p)
    payload = pickle.dumps({"next_round": 3, "sim": {"fleet": _Evil()}})
    header.update(json_bytes=len(payload), arrays_bytes=0)
    _reseal(p, header, payload)
    marker = Path("/tmp/fedfleet-pwned")
    marker.unlink(missing_ok=True)
    _resume_fails(stopped_run, "corrupt checkpoint payload")
    assert not marker.exists()
    tree = ast.parse(Path(ckpt.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert not imported & {"pickle", "marshal", "shelve", "dill", "joblib", "cloudpickle"}, imported


def test_checkpoints_are_deterministic_data(tmp_path):
    """Two runs of one scenario write the same checkpoint bytes; the payload is JSON plus a pickle-free .npz."""
    scen = timing_scenario(tmp_path, rounds=8)
    files = []
    for i in range(2):
        proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(scen), str(tmp_path / f"o{i}"), "4",
                               "after_round"], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        files.append((run_dir_of(tmp_path / f"o{i}") / ckpt.FILENAME).read_bytes())
    assert files[0] == files[1]
    header, payload = ckpt.read_header(run_dir_of(tmp_path / "o0") / ckpt.FILENAME)
    assert header["format"] == ckpt.FORMAT and header["round"] == 4
    doc = json.loads(payload[:header["json_bytes"]])
    assert doc["next_round"] == 4 and set(doc["sim"]) >= {"fleet", "strategy", "recorder", "select_rng", "learner"}
    assert isinstance(doc["sim"]["select_rng"]["state"]["state"], int)  # PCG64 state: plain (128-bit) ints
    arrays = np.load(io.BytesIO(payload[header["json_bytes"]:]), allow_pickle=False)
    assert len(arrays.files) > 10 and all(arrays[k].dtype != object for k in arrays.files)


def test_resume_of_a_resume_killed_mid_way_is_identical(tmp_path):
    """Killed after round 2, resumed and killed again after round 6, resumed: the same files as one run."""
    scen = timing_scenario(tmp_path, rounds=9)
    ref = fedfleet("run", str(scen), "--out", str(tmp_path / "ref"), "-q")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(scen), str(out), "2", "after_round"], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rd = run_dir_of(out)
    start = "sc, base = load_scenario(scenario)\nrun_scenario(sc, base, out, progress=False)"
    resume_driver = KILL_DRIVER.replace(start,
                                        "from sim.runner import scenario_of_run\nsc, base = scenario_of_run(out)\n"
                                        "run_scenario(sc, base, progress=False, run_dir=out, resume=True)")
    assert resume_driver != KILL_DRIVER
    proc = subprocess.run([sys.executable, "-c", resume_driver, str(scen), str(rd), "6", "after_round"], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert ckpt.read_header(rd / ckpt.FILENAME)[0]["round"] == 6
    res = fedfleet("run", "--resume", str(rd), "-q")
    assert res.returncode == 0, res.stderr
    assert_same_results(run_dir_of(tmp_path / "ref"), rd)


def test_resume_refuses_finished_and_missing_runs(tmp_path):
    scen = timing_scenario(tmp_path, rounds=3)
    assert fedfleet("run", str(scen), "--out", str(tmp_path / "o"), "-q").returncode == 0
    rd = run_dir_of(tmp_path / "o")
    _resume_fails(rd, "already finished")
    _resume_fails(tmp_path / "nope", "no such run directory")
    res = fedfleet("run", str(scen), "--resume", str(rd))
    assert res.returncode == 2 and "takes no scenario" in res.stderr


# ------------------------------------------------------------------------------------------ full disk
def _mount_tmpfs(path: Path, size: str) -> bool:
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_ends_the_run_clearly_and_the_checkpoint_survives(tmp_path):
    """On a 24 MiB tmpfs the growing checkpoints of a 2,000-device run (8.4 MB after round 1, +0.7 MB a
    round; the new one is written before the old one is replaced) fill the disk after about 5 rounds."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "24m"):
        pytest.skip("cannot mount a size-limited tmpfs here (needs Linux and root)")
    try:
        d = yaml.safe_load(timing_scenario(tmp_path, rounds=10).read_text())
        for g, n in zip(d["fleet"]["groups"], (800, 800, 400)):
            g["count"] = n
        d["round"] = {"policy": "all"}
        d["network"]["contention"] = "none"
        scen = tmp_path / "big.yaml"
        scen.write_text(yaml.safe_dump(d))
        res = fedfleet("run", str(scen), "--out", str(disk), "-q", timeout=600)
        assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
        assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
        rd = run_dir_of(disk)
        header, _ = ckpt.read_header(rd / ckpt.FILENAME)  # the last complete checkpoint still loads
        assert 1 <= header["round"] < 10
        assert not [p for p in rd.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind
        # with room again (the results move to a bigger disk), the run resumes and finishes
        moved = tmp_path / "moved"
        subprocess.run(["cp", "-a", str(rd), str(moved)], check=True)
        ok = fedfleet("run", "--resume", str(moved), "-q", timeout=600)
        assert ok.returncode == 0, ok.stderr[-2000:]
        ref = fedfleet("run", str(scen), "--out", str(tmp_path / "ref"), "-q", timeout=600)
        assert ref.returncode == 0
        for name in ("rounds.parquet", "device_rounds.parquet"):
            assert (moved / name).read_bytes() == (run_dir_of(tmp_path / "ref") / name).read_bytes()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
