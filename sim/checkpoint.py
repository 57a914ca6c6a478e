"""Round-boundary checkpoints of a run, and resuming from them (``fedfleet run --resume RUN_DIR``).

What a checkpoint holds (after round ``r`` ended, before round ``r + 1`` begins): the simulated clock;
the fleet model (power modes, background load, bandwidth processes, dropout and fault draws,
every device's sparsity, and the named numpy generators of each); the strategy (every bandit's
counts, rewards and RNG); the server's selection RNG; the shared channels' service counters; the
records of rounds ``0..r``; the deadline policy's last median; the last round's reports (what the
strategy sees next round); the last evaluation; and the learner's state (every
device's pruning masks, importance averages and reported rank, the global LoRA state and head, the
evaluations so far, host counters). Optimiser state and LoRA factors live only inside one local
update (each round starts them from the global state), so a round boundary holds none. The torch
RNG is never carried between rounds (every local update seeds its own streams). Hence a resumed run
produces the same result files, byte for byte, as an uninterrupted one (tested by killing runs).

File format (``RUN_DIR/checkpoint.bin``), written atomically (temporary file, fsync, rename)::

    FEDFLEET-CHECKPOINT\\n
    {"format": 2, "digest": <scenario digest>, "round": r + 1, "sha256": <of the payload>,
     "payload_bytes": n, "fedfleet": <version>}\\n
    <payload: a pickle>

The payload is read only after the header's magic, format, scenario digest, length and SHA-256 all
match, and then with an unpickler that accepts classes from fedfleet's own packages, numpy, torch
and a few standard-library modules only; anything else (a foreign or corrupt file) is refused with
:class:`CheckpointError` and a message that says why. The payload is plain data: the simulation's
:meth:`~sim.engine.Simulation.state` (which holds its learner's :meth:`~learning.api.Learner.state`),
dicts, lists, numbers, numpy arrays and tensors (written as raw bytes); a resumed run rebuilds every
live object from its scenario and hands it its state (``set_state``).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sys
from pathlib import Path
from typing import Any

from sim import __version__
from sim.store import atomic_write_bytes

MAGIC = b"FEDFLEET-CHECKPOINT\n"
FORMAT = 2  # 2: the payload is plain data from Simulation.state()
FILENAME = "checkpoint.bin"
MAX_HEADER_BYTES = 4096

# What the unpickler accepts: classes of fedfleet's own packages and of numpy/pydantic/collections,
# plain builtin types, and the few reconstructor functions numpy and pickle itself use. Tensors never
# go through pickle's reducers (torch's would call ``torch.load``): they are written as raw bytes.
_CLASS_ROOTS = {"sim", "devices", "algorithms", "learning", "numpy", "collections", "pydantic", "pydantic_core",
                "enum", "datetime", "pathlib"}
_BUILTIN_TYPES = {"set", "frozenset", "list", "dict", "tuple", "slice", "complex", "range", "bytearray", "bytes",
                  "str", "int", "float", "bool"}
_FUNCTIONS = {("copyreg", "_reconstructor"), ("numpy.core.multiarray", "_reconstruct"),
              ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
              ("numpy._core.multiarray", "scalar"), ("numpy.random._pickle", "__generator_ctor"),
              ("numpy.random._pickle", "__bit_generator_ctor"), ("numpy.random._pickle", "__randomstate_ctor"),
              ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
              ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"), ("_codecs", "encode")}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupt, foreign, or of another scenario)."""


class _Pickler(pickle.Pickler):
    """Writes tensors, dtypes and torch devices as persistent ids (raw bytes), never through torch's reducers."""

    def __init__(self, f):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)

    def persistent_id(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")  # no tensors exist unless torch was imported (timing-only runs never do)
        if torch is None:
            return None
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            return ("tensor", str(t.dtype).removeprefix("torch."), tuple(t.shape), raw)
        if isinstance(obj, torch.dtype):
            return ("dtype", str(obj).removeprefix("torch."))
        if isinstance(obj, torch.device):
            return ("device", str(obj))
        return None


class _Unpickler(pickle.Unpickler):
    """Reads what :class:`_Pickler` wrote; refuses every class outside the allowed roots."""

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and pid[0] in ("tensor", "dtype", "device"):
            import torch  # noqa: PLC0415 - only checkpoints of real-learning runs hold tensors
        if isinstance(pid, tuple) and pid and pid[0] == "tensor":
            _, dtype, shape, raw = pid
            t = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            dt = getattr(torch, str(dtype), None)
            if not isinstance(dt, torch.dtype):
                raise CheckpointError(f"checkpoint names tensor dtype {dtype!r}")
            return t.view(dt).reshape(shape).clone()
        if isinstance(pid, tuple) and pid and pid[0] == "dtype":
            dt = getattr(torch, str(pid[1]), None)
            if not isinstance(dt, torch.dtype):
                raise CheckpointError(f"checkpoint names dtype {pid[1]!r}")
            return dt
        if isinstance(pid, tuple) and pid and pid[0] == "device":
            return torch.device(pid[1])
        raise CheckpointError(f"checkpoint refers to {pid!r}, which a fedfleet checkpoint never contains")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FUNCTIONS:
            return super().find_class(module, name)
        ok = module == "builtins" and name in _BUILTIN_TYPES or module.split(".")[0] in _CLASS_ROOTS
        obj = super().find_class(module, name) if ok else None
        if not isinstance(obj, type):
            raise CheckpointError(f"checkpoint names {module}.{name}, which a fedfleet checkpoint never contains; "
                                  "refusing to load it")
        return obj


def dumps(sim, next_round: int, digest: str) -> bytes:
    """A checkpoint file's bytes (header + payload) of ``sim`` at the boundary before round ``next_round``."""
    buf = io.BytesIO()
    _Pickler(buf).dump({"next_round": next_round, "sim": sim.state()})
    payload = buf.getvalue()
    header = {"format": FORMAT, "digest": digest, "round": next_round, "now_s": float(sim.env.now),
              "payload_bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest(), "fedfleet": __version__}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def save(path: Path, sim, next_round: int, digest: str) -> int:
    """Write the checkpoint atomically; returns its size in bytes."""
    data = dumps(sim, next_round, digest)
    atomic_write_bytes(path, data)
    return len(data)


def read_header(path: Path, payload: bool = True) -> tuple[dict, bytes | None]:
    """(header, payload) of a checkpoint file, checked for magic, format, length and SHA-256. With
    ``payload=False`` only the header is read and the length checked from the file size (a cheap
    check before a resume; :func:`load` reads and hashes the payload once)."""
    try:
        with open(path, "rb") as f:
            data = f.read() if payload else f.read(len(MAGIC) + MAX_HEADER_BYTES)
            size = f.seek(0, 2)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint (was the run started with output.checkpoint_every > 0, "
                              "and did it finish a round?)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {e}") from None
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a fedfleet checkpoint (bad magic)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise CheckpointError(f"{path}: corrupt checkpoint (no header line)")
    try:
        header = json.loads(data[len(MAGIC):end])
        fmt, n, sha = header["format"], int(header["payload_bytes"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: corrupt checkpoint (unreadable header)") from None
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {fmt!r}; this fedfleet reads format {FORMAT}")
    got = size - (end + 1)
    if got != n:
        raise CheckpointError(f"{path}: truncated checkpoint ({got} of {n} payload bytes)")
    if not payload:
        return header, None
    body = data[end + 1:]
    if hashlib.sha256(body).hexdigest() != sha:
        raise CheckpointError(f"{path}: corrupt checkpoint (SHA-256 of the payload does not match its header)")
    return header, body


def load(path: Path, digest: str) -> dict[str, Any]:
    """Check ``path`` against the run's scenario ``digest`` and unpickle its state."""
    header, payload = read_header(path)
    if header.get("digest") != digest:
        raise CheckpointError(f"{path}: checkpoint of another scenario (digest {str(header.get('digest'))[:12]}, "
                              f"this run's {digest[:12]})")
    now = header.get("now_s")
    if not isinstance(now, (int, float)) or not now >= 0.0:
        raise CheckpointError(f"{path}: corrupt checkpoint (clock {now!r})")
    try:
        state = _Unpickler(io.BytesIO(payload)).load()
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a refused checkpoint
        raise CheckpointError(f"{path}: cannot restore the checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("sim"), dict) or "next_round" not in state:
        raise CheckpointError(f"{path}: checkpoint payload is not a fedfleet run state")
    if state["sim"].get("now_s") != now:
        raise CheckpointError(f"{path}: corrupt checkpoint (the header's clock differs from the payload's)")
    return state


def restore(sim, state: dict[str, Any]) -> int:
    """Put a state from :func:`load` onto a freshly built ``sim`` (same scenario); returns the next round."""
    try:
        sim.set_state(state["sim"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint state does not fit this run: {type(e).__name__}: {e}") from None
    return int(state["next_round"])
