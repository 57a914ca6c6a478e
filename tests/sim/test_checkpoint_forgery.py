"""Forged and corrupt checkpoints: opening a run directory someone else sent you never executes anything.

Each forgery is the strongest kind: the attacker rewrites ``checkpoint.bin`` and recomputes its SHA-256,
so only the format itself (JSON + pickle-free .npz) stands between the file and the process. Every
payload is first shown to be live (unpickling it with plain ``pickle`` in a scratch process really
starts the process, creates the file, truncates the file), then ``fedfleet run --resume`` must exit 2
with one line and leave no trace of it. The fuzz part flips and truncates a valid checkpoint: every
case is refused cleanly or resumes to the identical result, and none hangs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fleet_helpers import REPO, cli_env, fedfleet
from tests.sim.test_checkpoint import KILL_DRIVER, run_dir_of, timing_scenario

from sim import checkpoint as ckpt


# ------------------------------------------------------------------------------------------ helpers
def split(data: bytes) -> tuple[dict, bytes, bytes]:
    """(header, JSON document, .npz bytes) of a checkpoint file's bytes (no checks)."""
    end = data.index(b"\n", len(ckpt.MAGIC))
    header = json.loads(data[len(ckpt.MAGIC):end])
    body = data[end + 1 + 65:]
    return header, body[:header["json_bytes"]], body[header["json_bytes"]:]


def seal(header: dict, doc: bytes, arrays: bytes) -> bytes:
    """A checkpoint file with a correct SHA-256 over whatever header and payload it is given (a forger's tool)."""
    header = {**header, "json_bytes": len(doc), "arrays_bytes": len(arrays)}
    head = ckpt.MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
    return head + hashlib.sha256(head + doc + arrays).hexdigest().encode() + b"\n" + doc + arrays


def global_call(module: str, name: str, *args) -> bytes:
    """A protocol-4 pickle that calls ``module``'s dotted attribute ``name`` with ``args`` (STACK_GLOBAL + REDUCE)."""
    body = pickle.dumps(args, protocol=4)[2:-1]  # the argument tuple's opcodes, without PROTO and STOP
    unicode = lambda s: b"\x8c" + bytes([len(s.encode())]) + s.encode()  # noqa: E731 - SHORT_BINUNICODE
    return b"\x80\x04" + unicode(module) + unicode(name) + b"\x93" + body + b"R."


def npz_with_object_entry(payload: bytes) -> bytes:
    """An .npz whose entry 0.npy is an object-dtype array whose data is ``payload`` (how pickles hide in .npy)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open("0.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        f.write(payload)
    return buf.getvalue()


def live(payload: bytes, cwd: Path) -> None:
    """Unpickle ``payload`` with plain pickle in a scratch process (proves the forgery really acts)."""
    code = "import pickle, sys, time; pickle.loads(sys.stdin.buffer.read()); time.sleep(0.5)"
    subprocess.run([sys.executable, "-c", code], input=payload, cwd=cwd, env=cli_env(), capture_output=True,
                   timeout=60, check=False)


def refused(rd: Path, *needles: str, timeout: float = 120) -> float:
    """``fedfleet run --resume rd`` exits 2 with one line and no traceback; returns its wall seconds."""
    t0 = time.monotonic()
    res = fedfleet("run", "--resume", str(rd), timeout=timeout)
    wall = time.monotonic() - t0
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr
    return wall


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> tuple[Path, bytes]:
    """A timing-only run SIGKILLed after round 3, and its valid checkpoint's bytes."""
    tmp = tmp_path_factory.mktemp("stopped")
    scen = timing_scenario(tmp, rounds=6)
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(scen), str(tmp / "o"), "3", "after_round"],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rd = run_dir_of(tmp / "o")
    return rd, (rd / ckpt.FILENAME).read_bytes()


@pytest.fixture
def run(stopped, tmp_path) -> Path:
    """A fresh copy of the stopped run directory."""
    rd = tmp_path / "run"
    subprocess.run(["cp", "-a", str(stopped[0]), str(rd)], check=True)
    return rd


# ------------------------------------------------------------------------------------------ forgeries
def popen(tmp: Path):
    """("sim.cli", "typer._completion_shared.subprocess.Popen"): starts ``touch marker``."""
    marker = tmp / "popen-ran"
    payload = global_call("sim.cli", "typer._completion_shared.subprocess.Popen", ["touch", str(marker)])
    return payload, lambda: None, marker.exists, lambda: marker.unlink(missing_ok=True)


def memmap(tmp: Path):
    """("numpy", "memmap") in mode w+: creates a 4 KiB file."""
    created = tmp / "memmap-made"
    payload = global_call("numpy", "memmap", str(created), "uint8", "w+", 0, (4096,))
    return payload, lambda: None, created.exists, lambda: created.unlink(missing_ok=True)


def fileio(tmp: Path):
    """("sim.store", "io.FileIO") in mode w: truncates a file."""
    victim = tmp / "victim.txt"
    payload = global_call("sim.store", "io.FileIO", str(victim), "w")
    return payload, lambda: victim.write_text("precious"), lambda: victim.read_text() == "", lambda: None


@pytest.mark.parametrize("forgery", [popen, memmap, fileio], ids=lambda f: f.__name__)
def test_a_live_pickle_in_the_checkpoint_is_refused_without_side_effects(run, tmp_path, forgery):
    """The payload as the JSON document, then as an object entry of the .npz, each resealed."""
    payload, prepare, acted, reset = forgery(tmp_path)
    prepare()
    live(payload, tmp_path)
    assert acted(), "the forged pickle must be live (plain pickle.loads really does it)"
    reset()
    prepare()
    header, _, _ = split((run / ckpt.FILENAME).read_bytes())
    for doc, arrays in ((payload, b""), (b"{}", npz_with_object_entry(payload))):
        (run / ckpt.FILENAME).write_bytes(seal(header, doc, arrays))
        refused(run, "checkpoint")
        time.sleep(0.5)  # a process it started would have acted by now
        assert not acted()


def test_an_edited_header_is_refused(run):
    p = run / ckpt.FILENAME
    data = p.read_bytes()
    header, doc, arrays = split(data)
    for now in (header["now_s"] + 1.0, 1e308):  # edited in place: the SHA-256 covers the header
        edited = data.replace(json.dumps(header["now_s"]).encode(), json.dumps(now).encode(), 1)
        assert edited != data
        p.write_bytes(edited)
        refused(run, "SHA-256")
    p.write_bytes(seal({**header, "now_s": header["now_s"] + 1.0}, doc, arrays))  # and resealed: the payload disagrees
    refused(run, "clock or round differs")
    p.write_bytes(seal({**header, "round": header["round"] + 1}, doc, arrays))
    refused(run, "clock or round differs")


def test_forged_documents_that_decode_are_checked_against_the_run(run):
    """Well-formed, resealed documents of the wrong shape: refused before any set_state (exit 2)."""
    p = run / ckpt.FILENAME
    header, doc, arrays = split(p.read_bytes())
    state = json.loads(doc)
    bad_tag = json.dumps({**state, "sim": {**state["sim"], "fleet": {"$t": "pickle", "items": []}}}).encode()
    fewer = {**state, "sim": {**state["sim"], "channels": state["sim"]["channels"][:-1]}}
    nan_literal = doc.replace(b'"now_s":', b'"x":NaN,"now_s":', 1)
    for forged, needle in ((bad_tag, "unknown value kind"), (json.dumps(fewer).encode(), "another length"),
                           (nan_literal, "corrupt checkpoint payload")):
        p.write_bytes(seal(header, forged, arrays))
        refused(run, needle)


def test_an_array_declaring_an_absurd_shape_is_refused_without_allocating(run):
    p = run / ckpt.FILENAME
    header, doc, arrays = split(p.read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info in zipfile.ZipFile(io.BytesIO(arrays)).infolist():
            with zf.open(info.filename, "w") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                         "shape": (10**12,) if info.filename == "0.npy" else (0,)})
    p.write_bytes(seal(header, doc, buf.getvalue()))
    refused(run, "does not match")


def test_not_a_regular_file_is_refused_at_once(run, tmp_path):
    p = run / ckpt.FILENAME
    good = tmp_path / "good.bin"
    good.write_bytes(p.read_bytes())
    p.unlink()
    os.mkfifo(p)
    t0 = time.monotonic()
    with pytest.raises(ckpt.CheckpointError, match="not a regular file; a checkpoint is a regular file"):
        ckpt.read_header(p)
    assert time.monotonic() - t0 < 1.0
    refused(run, "not a regular file", timeout=30)
    p.unlink()
    p.symlink_to(good)  # a symlink, even to a valid checkpoint, is not followed
    refused(run, "(a symbolic link)")


# ------------------------------------------------------------------------------------------ fuzz
def _mutations(data: bytes, n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` mutations of ``data``: single and multiple byte flips anywhere, and truncations."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = bytearray(data)
        if i % 3 == 2:
            out.append(("truncate", bytes(b[: int(rng.integers(0, len(b)))])))
            continue
        for pos in rng.integers(0, len(b), size=1 if i % 3 == 0 else int(rng.integers(2, 9))):
            b[pos] ^= int(rng.integers(1, 256))
        out.append(("flip", bytes(b)))
    return out


def test_fuzzed_checkpoints_are_refused_or_resume_identically(stopped, tmp_path):
    """50 flips/truncations through the loader in-process (each under a 10 s alarm), 3 through the CLI."""
    from sim.engine import Simulation  # noqa: PLC0415
    from sim.runner import make_learner, scenario_digest, scenario_of_run  # noqa: PLC0415

    rd, data = stopped
    sc, base = scenario_of_run(rd)
    digest = scenario_digest(sc)
    counts = {"refused": 0, "other": 0}
    p = tmp_path / ckpt.FILENAME

    def alarm(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, alarm)
    try:
        for kind, mutated in _mutations(data, 50, seed=18):
            p.write_bytes(mutated)
            signal.alarm(10)
            try:
                ckpt.restore(Simulation(sc, base, learner=make_learner(sc, base)), ckpt.load(p, digest))
                counts["other"] += 1  # every byte is under the SHA-256: no mutation may load
            except ckpt.CheckpointError:
                counts["refused"] += 1
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert counts == {"refused": 50, "other": 0}
    for _, mutated in _mutations(data, 3, seed=19):
        copy = tmp_path / f"cli{len(mutated)}"
        subprocess.run(["cp", "-a", str(rd), str(copy)], check=True)
        (copy / ckpt.FILENAME).write_bytes(mutated)
        refused(copy, "checkpoint")


def test_a_fifo_at_status_json_does_not_hang_resume(run):
    """``--resume`` reads status.json (finished?) before the checkpoint: a FIFO there is skipped, not waited on."""
    (run / "status.json").unlink()
    os.mkfifo(run / "status.json")
    (run / ckpt.FILENAME).unlink()
    refused(run, "no checkpoint", timeout=30)


def test_growing_parts_are_bounded_by_the_scenario(run):
    """Resealed documents that are well-formed but claim more than the run can hold: refused (exit 2)."""
    p = run / ckpt.FILENAME
    header, doc, arrays = split(p.read_bytes())
    state = json.loads(doc)
    sim = state["sim"]
    extra_round = {**state, "sim": {**sim, "recorder": {**sim["recorder"],
                                                         "rounds": sim["recorder"]["rounds"] * 2}}}
    long_status = {**state, "sim": {**sim, "last_reports": {**sim["last_reports"], "status": {
        "$t": "strings", "items": ["ok"] * 10_000}}}}
    for forged in (extra_round, long_status):
        p.write_bytes(seal(header, json.dumps(forged).encode(), arrays))
        refused(run, "checkpoint state does not fit this run")
