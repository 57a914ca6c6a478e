"""Writer locks (sim/lock.py): one writer per run, comparison or sweep directory; a second one refuses at
once naming the holder's pid; a killed holder's lock is free at once; leftovers of dead writers (and
only those, and only the writer's own files) are removed under the lock. Two concurrent sweeps into one
directory and two concurrent ``--resume`` of one run directory: one refuses cleanly, the other finishes
(every cell complete; the resumed run byte-identical to an uninterrupted one)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fleet_helpers import REPO, _fedfleet_cmd, base_scenario, cli_env, fedfleet

from sim.lock import LOCK_NAME, DirectoryBusy, DirectoryLock, LockError
from sim.studies.cells import cell_state

HOLD = "import sys, time\nfrom sim.lock import DirectoryLock\nDirectoryLock(sys.argv[1], 'run').acquire()\n" \
       "print('held', flush=True)\ntime.sleep(600)\n"


def _holder(d: Path) -> subprocess.Popen:
    """A process that takes ``d``'s lock and keeps it until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def assert_refused_while_held(d: Path, *args: str) -> None:
    """``fedfleet *args`` while another process holds ``d``'s lock: exit 2, one line naming its pid."""
    holder = _holder(d)
    try:
        r = fedfleet(*args)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert r.returncode == 2, r.stderr
    assert_one_line_refusal(r.stderr, d, holder.pid)


def assert_one_line_refusal(stderr: str, d: Path, pid: int) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {d} is being written by pid {pid} on "), stderr
    assert lines[0].endswith("; wait for it or stop it"), stderr


def test_a_second_writer_refuses_at_once_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    p = _holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(DirectoryBusy) as e:
            DirectoryLock(tmp_path).acquire()
        assert time.monotonic() - t0 < 1.0  # refuses, never waits
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path} is being written by pid {p.pid} on ")
        assert re.search(r"\(started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); wait for it or stop it$", msg), msg
        assert "\n" not in msg
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (tmp_path / LOCK_NAME).exists()  # a killed holder leaves its file ...
    with DirectoryLock(tmp_path, "run") as lock:  # ... but not its lock
        assert lock.held
        doc = json.loads((tmp_path / LOCK_NAME).read_text())
        assert doc["pid"] == os.getpid() and doc["what"] == "run"
    assert not (tmp_path / LOCK_NAME).exists()  # a clean release leaves nothing behind


def test_the_same_process_cannot_take_a_lock_twice(tmp_path):
    with DirectoryLock(tmp_path) as a:
        with pytest.raises(DirectoryBusy, match=f"pid {os.getpid()}"):
            DirectoryLock(tmp_path).acquire()
        with pytest.raises(LockError, match="already held"):
            a.acquire()


def test_only_a_regular_lock_file_is_used(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    d = tmp_path / "run"
    d.mkdir()
    (d / LOCK_NAME).symlink_to(target)
    with pytest.raises(LockError, match="cannot lock"):
        DirectoryLock(d).acquire()
    assert target.read_text() == "keep me"
    (d / LOCK_NAME).unlink()
    os.mkfifo(d / LOCK_NAME)
    t0 = time.monotonic()
    with pytest.raises(LockError, match="not a regular file"):
        DirectoryLock(d).acquire()
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(LockError, match="cannot lock"):  # no such directory: one clear error
        DirectoryLock(tmp_path / "missing").acquire()


MUTEX = r"""
import os, sys
from sim.lock import DirectoryBusy, DirectoryLock
d, n = sys.argv[1], int(sys.argv[2])
taken = clashes = 0
while taken < n:
    try:
        lock = DirectoryLock(d).acquire()
    except DirectoryBusy:
        continue
    try:  # inside: nobody else may be here
        fd = os.open(os.path.join(d, "inside"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        os.unlink(os.path.join(d, "inside"))
    except FileExistsError:
        clashes += 1
    lock.release()
    taken += 1
print(clashes)
"""


def test_mutual_exclusion_holds_although_the_lock_file_is_removed_on_release(tmp_path):
    """Four processes take and release the lock 150 times each: never two inside at once (the inode
    check of acquire() covers a lock taken on a file another writer just removed)."""
    procs = [subprocess.Popen([sys.executable, "-c", MUTEX, str(tmp_path), "150"], cwd=REPO, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert [int(o) for o, _ in outs] == [0, 0, 0, 0]
    assert not (tmp_path / "inside").exists() and not (tmp_path / LOCK_NAME).exists()


def test_leftovers_are_removed_only_under_the_lock_and_only_the_writers_own(tmp_path):
    cells = tmp_path / "cells"
    (cells / ".seed1-abc.4242.tmp" / "seed1-abc").mkdir(parents=True)  # a dead sweep's cell
    (tmp_path / ".sweep.parquet.k3j_x9q2.tmp").write_bytes(b"half")  # a dead sweep's index write
    (tmp_path / ".report.html.a1b2c3d4.tmp").write_text("<html>")  # a reader's report being written
    (cells / ".notes.txt.tmp").mkdir()  # not a cell: no pid in its name
    lock = DirectoryLock(tmp_path)
    with pytest.raises(LockError, match="only while holding"):
        lock.remove_leftovers(("sweep.parquet",))
    with lock:
        with pytest.raises(ValueError, match="not inside"):
            lock.remove_leftovers(where=tmp_path.parent, temp_cells=True)
        assert [p.name for p in lock.remove_leftovers(("sweep.parquet", "status.json"))] == \
            [".sweep.parquet.k3j_x9q2.tmp"]
        assert [p.name for p in lock.remove_leftovers(where=cells, temp_cells=True)] == [".seed1-abc.4242.tmp"]
    assert (tmp_path / ".report.html.a1b2c3d4.tmp").exists() and (cells / ".notes.txt.tmp").is_dir()


# ------------------------------------------------------------------------------------------- sweeps
def sweep_file(tmp_path: Path, n_dev: int = 40, rounds: int = 40, seeds=(1, 2, 3)) -> Path:
    base = base_scenario(name="base")
    base["fleet"]["groups"] = [{"type": "tx2", "count": n_dev // 2, "placement": "lan"},
                               {"type": "xavier_nx", "count": n_dev - n_dev // 2, "placement": "lan"}]
    base["dynamics"]["background_load"] = {"kind": "lognormal", "sigma": 0.3}
    base["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.3}}
    base["training"] = {"rounds": rounds, "local_steps": 5}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump({"base": "base.yaml", "name": "sw", "seeds": list(seeds),
                                 "matrix": {"algorithm.params.discount": [0.8, 0.95]}}))
    return p


CELL_FILES = ("status.json", "summary.json", "scenario.yaml", "rounds.parquet", "device_rounds.parquet")


def assert_every_cell_complete(sweep_dir: Path) -> pd.DataFrame:
    idx = pd.read_parquet(sweep_dir / "sweep.parquet")
    assert len(idx) and (idx["status"] == "finished").all(), idx[["cell_id", "status", "error"]]
    for cid in idx["cell_id"]:
        d = sweep_dir / "cells" / cid
        assert all((d / f).is_file() for f in CELL_FILES), (cid, sorted(os.listdir(d)))
        row, why = cell_state(d)
        assert row is not None and row["status"] == "finished" and why == "", (cid, why)
        assert len(pd.read_parquet(d / "rounds.parquet")) == json.loads((d / "summary.json").read_text())[
            "rounds_completed"]
    assert not list((sweep_dir / "cells").glob(".*")) and not (sweep_dir / LOCK_NAME).exists()
    return idx


def _two_together(*argvs: list[str]) -> list[tuple[subprocess.Popen, str, str]]:
    """Start the commands at the same moment; wait for all; (process, stdout, stderr) each."""
    procs = [subprocess.Popen(a, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in argvs]
    return [(p, *p.communicate(timeout=600)) for p in procs]


def _one_refused(results, what: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    """(winner, loser): exactly one exited 2 with one line naming the winner's pid; the winner exited 0."""
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], ("both writers must overlap for this test to mean anything; got exit codes "
                             f"{[p.returncode for p, _, _ in results]}: {[e[-1500:] for _, _, e in results]}")
    (win, _, _), (lose, _, err) = sorted(results, key=lambda r: r[0].returncode)
    assert_one_line_refusal(err, what, win.pid)
    return win, lose


def test_two_sweeps_started_together_one_refuses_the_other_finishes_every_cell_complete(tmp_path):
    """Must-show 3 (sweeps): two real ``fedfleet sweep`` processes into one directory at once."""
    p = sweep_file(tmp_path)
    out = tmp_path / "out"
    cmd = [*_fedfleet_cmd(), "sweep", str(p), "--out", str(out), "--workers", "1", "-q"]
    _one_refused(_two_together(cmd, cmd), out / "sw")
    a = assert_every_cell_complete(out / "sw")
    assert len(a) == 6
    st = json.loads((out / "sw" / "status.json").read_text())
    assert st["status"] == "finished" and st["finished"] == 6 and st["skipped_already_finished"] == 0
    # the refused sweep touched nothing: the same index as one sweep alone
    r = fedfleet("sweep", str(p), "--out", str(tmp_path / "alone"), "--workers", "1", "-q", timeout=600)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "alone" / "sw" / "sweep.parquet"))


def test_a_sweep_refuses_while_another_holds_the_directory_and_touches_nothing(tmp_path):
    """A live sweep's temporary cell is never removed by a second sweep (the bug of issue 18, item 8)."""
    p = sweep_file(tmp_path, n_dev=4, rounds=2, seeds=(1,))
    sw = tmp_path / "out" / "sw"
    live = sw / "cells" / f".seed1-abc.{os.getpid()}.tmp" / "seed1-abc"
    live.mkdir(parents=True)
    (live / "rounds.parquet").write_bytes(b"being written")
    assert_refused_while_held(sw, "sweep", str(p), "--out", str(tmp_path / "out"), "-q")
    assert (live / "rounds.parquet").read_bytes() == b"being written"
    assert sorted(os.listdir(sw)) == [".lock", "cells"]  # no index, status or sweep.json written
    # the holder is dead now: its leftovers are removed and the sweep runs
    r = fedfleet("sweep", str(p), "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    assert not live.parent.exists()
    assert_every_cell_complete(sw)


def test_a_comparison_parent_is_locked_too(tmp_path):
    d = base_scenario(name="cmp")
    d["policies"] = {"a": {"name": "fixed", "params": {"prune_target": 0.0, "rank": 8}},
                     "b": {"name": "fixed", "params": {"prune_target": 0.2, "rank": 8}}}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(d))
    r = fedfleet("run", str(tmp_path / "cmp.yaml"), "--out", str(tmp_path / "o"), "-q")
    assert r.returncode == 0, r.stderr
    parent = Path(r.stdout.splitlines()[0])
    status = json.loads((parent / "status.json").read_text())
    (parent / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))  # resumable
    assert_refused_while_held(parent, "run", "--resume", str(parent), "-q")
    r = fedfleet("run", "--resume", str(parent), "-q")
    assert r.returncode == 0, r.stderr
    assert not (parent / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ resumes
KILL_AFTER = r"""
import os, signal, sys
from pathlib import Path
import sim.records as rec
from sim.loader import load_scenario
from sim.runner import run_scenario

scenario, out, k = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
add = rec.Recorder.add_round
def add_round(self, buf, **kw):  # SIGKILL once round k is recorded (its checkpoint is not written yet)
    row = add(self, buf, **kw)
    if buf.round == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return row
rec.Recorder.add_round = add_round
sc, base = load_scenario(scenario)
run_scenario(sc, base, out, progress=False)
"""

RESULTS = ("rounds.parquet", "device_rounds.parquet")


def resume_scenario(tmp_path: Path, rounds: int = 30, n_dev: int = 40) -> Path:
    d = base_scenario(name="rs")
    d["fleet"]["groups"] = [{"type": "tx2", "count": n_dev // 2, "placement": "lan"},
                            {"type": "xavier_nx", "count": n_dev - n_dev // 2, "placement": "lan"}]
    d["dynamics"] = {"power_mode": {"kind": "periodic", "every_rounds": 3, "initial": "random"},
                     "background_load": {"kind": "lognormal", "sigma": 0.3}, "dropout": {"prob": 0.1},
                     "availability": {"kind": "always"}}
    d["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.4}}
    d["training"] = {"rounds": rounds, "local_steps": 5}
    d["round"] = {"policy": "deadline", "deadline_factor": 1.3}
    d["output"] = {"plots": False, "progress": False, "checkpoint_every": 1}
    p = tmp_path / "rs.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _run_dir(out: Path) -> Path:
    dirs = [p.parent for p in out.rglob("scenario.yaml")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _same_results(a: Path, b: Path) -> None:
    for name in RESULTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("host"), sb.pop("host")
    sa.pop("run_id"), sb.pop("run_id")
    assert sa == sb


@pytest.fixture
def killed_run(tmp_path) -> tuple[Path, Path]:
    """(scenario, run directory of that scenario SIGKILLed after round 2, with stray temp files)."""
    scen = resume_scenario(tmp_path)
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER, str(scen), str(tmp_path / "killed"), "2"], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rd = _run_dir(tmp_path / "killed")
    assert (rd / LOCK_NAME).exists() and (rd / "checkpoint.bin").exists()
    return scen, rd


def test_two_resumes_started_together_one_refuses_the_other_finishes_byte_identical(killed_run, tmp_path):
    """Must-show 3 (resumes): two real ``fedfleet run --resume`` of one run directory at once."""
    scen, rd = killed_run
    cmd = [*_fedfleet_cmd(), "run", "--resume", str(rd), "-q"]
    _one_refused(_two_together(cmd, cmd), rd)
    clean = fedfleet("run", str(scen), "--out", str(tmp_path / "clean"), "-q", timeout=600)
    assert clean.returncode == 0, clean.stderr
    _same_results(_run_dir(tmp_path / "clean"), rd)
    assert json.loads((rd / "status.json").read_text())["status"] == "finished"
    assert not (rd / "checkpoint.bin").exists() and not (rd / LOCK_NAME).exists()
    # once it finished, a later resume is refused as finished (nothing rewritten)
    stamp = os.stat(rd / "rounds.parquet").st_mtime_ns
    r = fedfleet("run", "--resume", str(rd))
    assert r.returncode == 2 and "already finished" in r.stderr
    assert os.stat(rd / "rounds.parquet").st_mtime_ns == stamp


def test_a_resume_removes_stray_temp_files_of_the_killed_writer_only(killed_run, tmp_path):
    _, rd = killed_run
    strays = [".checkpoint.bin.x8k2_q1z.tmp", ".status.json.ab12cd34.tmp", ".rounds.parquet.partial.tmp"]
    for s in strays:
        (rd / s).write_bytes(b"half a file")
    (rd / ".report.html.zz99yy88.tmp").write_text("a reader's")  # not the writer's file: kept
    r = fedfleet("run", "--resume", str(rd), "-q", timeout=600)
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in rd.iterdir() if p.name.startswith("."))
    assert left == [".report.html.zz99yy88.tmp"]


def test_resume_refuses_while_the_run_is_being_written(killed_run):
    _, rd = killed_run
    before = {p.name: p.stat().st_mtime_ns for p in rd.iterdir() if p.name != LOCK_NAME}
    assert_refused_while_held(rd, "run", "--resume", str(rd), "-q")
    after = {p.name: p.stat().st_mtime_ns for p in rd.iterdir() if p.name != LOCK_NAME}
    assert after == before  # status.json, checkpoint and scenario untouched
