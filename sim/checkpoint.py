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

A checkpoint is data, never code: nothing on the load path unpickles or evaluates anything. File
format (``RUN_DIR/checkpoint.bin``, format 3), written atomically (temporary file, fsync, rename)::

    FEDFLEET-CHECKPOINT\\n
    {"format": 3, "digest": <scenario digest>, "round": r + 1, "now_s": t, "json_bytes": j,
     "arrays_bytes": a, "fedfleet": <version>}\\n
    <SHA-256, 64 hex digits, of every byte above and below this line>\\n
    <j bytes: the state as a JSON document>
    <a bytes: its arrays, an uncompressed .npz (numpy's .npy records in a zip, no pickles)>

The JSON document is :meth:`~sim.engine.Simulation.state` (which holds its learner's
:meth:`~learning.api.Learner.state`). Plain JSON values stand for themselves; the few other values a
state holds are JSON objects with one reserved key ``"$t"`` naming their kind: ``float`` (a NaN or
infinity, as its IEEE-754 bit pattern, so a NaN's sign survives), ``scalar`` (a numpy scalar and its
dtype), ``tuple``, ``map`` (a dict whose keys are not strings, as ``[key, value]`` pairs),
``ndarray`` and ``tensor`` (entry ``i`` of the .npz; a tensor is stored as its raw bytes with its torch
dtype and shape, so bfloat16 survives), and ``strings`` (a 1-D numpy object array of strings).
PCG64 bit-generator states are dicts of plain integers, so they round-trip exactly.

Loading refuses (with :class:`CheckpointError` and a message saying why) anything but a regular file
(a FIFO, device or symlink at ``checkpoint.bin`` is refused without blocking), a file over
:data:`MAX_CHECKPOINT_BYTES`, a bad magic, format, length or SHA-256 (which covers the header, so
editing ``now_s`` is refused), a scenario digest of another scenario, an unknown tag, a NaN or
Infinity literal, an array of an object or unknown dtype, a compressed .npz entry, or an entry whose
declared shape does not match its bytes (so a forged document can never allocate more memory than
the file holds). Finally the decoded state must have the structure of the freshly built
simulation's own state (same keys, the same fixed list lengths, array and tensor dtypes and shapes),
and its growing parts must fit the scenario (exactly ``next_round`` rounds recorded, fewer than
``training.rounds``; every per-device column 1-D and no longer than the fleet) before any
``set_state`` sees it; what ``set_state`` still rejects is refused too.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sim import __version__
from sim.store import atomic_write_bytes, open_regular

MAGIC = b"FEDFLEET-CHECKPOINT\n"
FORMAT = 3  # 3: JSON + .npz, SHA-256 over header and payload (2 was a pickle)
FILENAME = "checkpoint.bin"
MAX_HEADER_BYTES = 4096
MAX_CHECKPOINT_BYTES = 8 * 1024**3  # 8 GiB: 100,000 devices x 500 rounds of records, or a 1B-parameter model
_SHA_LINE = 65  # 64 hex digits and a newline
_TAG = "$t"
# numpy dtypes an array entry may have (never object, never structured); torch dtypes a tensor may have
_ARRAY_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                           "float16", "float32", "float64"})
_TENSOR_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "float16", "bfloat16",
                            "float32", "float64"})
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same state gives the same bytes


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupt, foreign, forged, or of another scenario)."""


# ------------------------------------------------------------------------------------------ encoding
def _float_tag(x: float) -> dict:
    """A NaN or infinity as its 64-bit IEEE-754 pattern (``struct``, little-endian), exact to the sign bit."""
    return {_TAG: "float", "bits": struct.unpack("<Q", struct.pack("<d", x))[0]}


class _Encoder:
    """Turns a state (dicts, lists, numbers, strings, numpy arrays and scalars, tensors) into a JSON
    document plus a list of arrays; anything else is a programming error (``TypeError``)."""

    def __init__(self):
        self.arrays: list[np.ndarray] = []

    def _entry(self, arr: np.ndarray) -> int:
        self.arrays.append(np.ascontiguousarray(arr))
        return len(self.arrays) - 1

    def encode(self, x: Any) -> Any:  # noqa: PLR0911 - one branch per kind of value
        if x is None or isinstance(x, (bool, str)) or type(x) is int:
            return x
        if type(x) is float:
            return x if math.isfinite(x) else _float_tag(x)
        if isinstance(x, dict):
            if all(type(k) is str for k in x) and _TAG not in x:
                return {k: self.encode(v) for k, v in x.items()}
            return {_TAG: "map", "items": [[self.encode(k), self.encode(v)] for k, v in x.items()]}
        if isinstance(x, list):
            return [self.encode(v) for v in x]
        if isinstance(x, tuple):
            return {_TAG: "tuple", "items": [self.encode(v) for v in x]}
        if isinstance(x, np.ndarray):
            return self._array(x)
        if isinstance(x, np.generic) and x.dtype.name in _ARRAY_DTYPES:
            return {_TAG: "scalar", "dtype": x.dtype.name, "value": self.encode(x.item())}
        torch = sys.modules.get("torch")  # no tensors exist unless torch was imported (timing-only runs never do)
        if torch is not None and isinstance(x, torch.Tensor):
            return self._tensor(x, torch)
        raise TypeError(f"a checkpoint cannot hold a {type(x).__module__}.{type(x).__qualname__}")

    def _array(self, x: np.ndarray) -> dict:
        if x.dtype == object:
            if x.ndim != 1 or not all(type(v) is str for v in x):
                raise TypeError("a checkpoint holds object arrays of strings (1-D) only")
            return {_TAG: "strings", "items": list(x)}
        if x.dtype.name not in _ARRAY_DTYPES:
            raise TypeError(f"a checkpoint cannot hold arrays of dtype {x.dtype}")
        return {_TAG: "ndarray", "entry": self._entry(x)}

    def _tensor(self, x, torch) -> dict:
        t = x.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in _TENSOR_DTYPES:
            raise TypeError(f"a checkpoint cannot hold tensors of dtype {dtype}")
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
        return {_TAG: "tensor", "dtype": dtype, "shape": list(t.shape), "entry": self._entry(raw)}


def _write_npz(arrays: list[np.ndarray]) -> bytes:
    """An uncompressed .npz of ``arrays`` (entries ``0.npy``, ``1.npy``, ...), written without pickles."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, arr in enumerate(arrays):
            with zf.open(zipfile.ZipInfo(f"{i}.npy", date_time=_ZIP_EPOCH), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    return buf.getvalue()


def dumps(sim, next_round: int, digest: str) -> bytes:
    """A checkpoint file's bytes of ``sim`` at the boundary before round ``next_round``."""
    enc = _Encoder()
    doc = json.dumps(enc.encode({"next_round": next_round, "sim": sim.state()}), allow_nan=False,
                     separators=(",", ":")).encode()
    arrays = _write_npz(enc.arrays)
    header = {"format": FORMAT, "digest": digest, "round": next_round, "now_s": float(sim.env.now),
              "json_bytes": len(doc), "arrays_bytes": len(arrays), "fedfleet": __version__}
    head = MAGIC + json.dumps(header, sort_keys=True, allow_nan=False).encode() + b"\n"
    sha = hashlib.sha256(head + doc + arrays).hexdigest().encode()
    return head + sha + b"\n" + doc + arrays


def save(path: Path, sim, next_round: int, digest: str) -> int:
    """Write the checkpoint atomically; returns its size in bytes."""
    data = dumps(sim, next_round, digest)
    atomic_write_bytes(path, data)
    return len(data)


# ------------------------------------------------------------------------------------------ reading
def _read_regular(path: Path, limit: int) -> tuple[bytes, int]:
    """(at most ``limit`` first bytes, size) of ``path`` if it is a regular file (:func:`sim.store.open_regular`:
    no symlink is followed, and a FIFO or device is refused by ``fstat`` before any read, never blocking)."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_CHECKPOINT_BYTES:
                raise CheckpointError(f"{path}: {size} bytes, over the checkpoint size limit of "
                                      f"{MAX_CHECKPOINT_BYTES} bytes")
            return f.read(min(limit, size)), size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint (was the run started with output.checkpoint_every > 0, "
                              "and did it finish a round?)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror}; a checkpoint is a regular "
                              "file, never a symlink, FIFO or device)") from None


def _parse_header(path: Path, data: bytes) -> tuple[dict, int]:
    """(header, offset of the SHA line) of a checkpoint's first bytes, checked for magic and format."""
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a fedfleet checkpoint (bad magic)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise CheckpointError(f"{path}: corrupt checkpoint (no header line)")
    try:
        header = json.loads(data[len(MAGIC):end], parse_constant=_no_constant)
        fmt = header["format"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise CheckpointError(f"{path}: corrupt checkpoint (unreadable header)") from None
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {str(fmt)[:20]!r}; this fedfleet reads format {FORMAT}")
    for key in ("json_bytes", "arrays_bytes", "round"):
        if type(header.get(key)) is not int or header[key] < 0:
            raise CheckpointError(f"{path}: corrupt checkpoint (header field {key})")
    now = header.get("now_s")
    if type(now) not in (int, float) or not 0.0 <= now < math.inf:
        raise CheckpointError(f"{path}: corrupt checkpoint (header field now_s)")
    return header, end + 1


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a checkpoint writes as a literal")


def read_header(path: Path, payload: bool = True) -> tuple[dict, bytes | None]:
    """(header, payload) of a checkpoint file, checked for file type, size, magic, format, length and the
    SHA-256 over header and payload. With ``payload=False`` only the header is read and the length
    checked from the file size (a cheap check before a resume; :func:`load` reads and hashes it all)."""
    data, size = _read_regular(path, MAX_CHECKPOINT_BYTES if payload else len(MAGIC) + MAX_HEADER_BYTES)
    header, sha_at = _parse_header(path, data)
    want = sha_at + _SHA_LINE + header["json_bytes"] + header["arrays_bytes"]
    if size != want:
        raise CheckpointError(f"{path}: truncated checkpoint ({size} of {want} bytes)" if size < want else
                              f"{path}: corrupt checkpoint ({size - want} bytes more than its header says)")
    if not payload:
        return header, None
    sha = data[sha_at:sha_at + _SHA_LINE]
    body = data[sha_at + _SHA_LINE:]
    if hashlib.sha256(data[:sha_at] + body).hexdigest().encode() + b"\n" != sha:
        raise CheckpointError(f"{path}: corrupt checkpoint (the SHA-256 of its header and payload does not match)")
    return header, body


def _read_npz(data: bytes) -> list[np.ndarray]:
    """The arrays of a .npz written by :func:`_write_npz`: uncompressed entries ``0.npy``..``n-1.npy``,
    each of a plain dtype whose declared shape needs exactly the bytes the entry holds."""
    if not data:
        return []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        if [i.filename for i in infos] != [f"{k}.npy" for k in range(len(infos))]:
            raise CheckpointError("its arrays are not entries 0.npy, 1.npy, ... in order")
        return [_read_entry(zf, info) for info in infos]


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy entry, read only after its header proved that the data fit the entry's stored bytes."""
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
        raise CheckpointError(f"array {info.filename} is compressed; fedfleet writes stored entries only")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise CheckpointError(f"array {info.filename}: .npy version {version}")
        shape, fortran, dtype = read(f, max_header_size=1024)
        if dtype.name not in _ARRAY_DTYPES or dtype.hasobject or dtype.fields is not None:
            raise CheckpointError(f"array {info.filename} has dtype {str(dtype)[:40]}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - f.tell():
            raise CheckpointError(f"array {info.filename}: shape {shape} does not match its {info.file_size} bytes")
        raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise CheckpointError(f"array {info.filename} is short")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


# ------------------------------------------------------------------------------------------ decoding
class _Decoder:
    """Turns a JSON document and its arrays back into a state; refuses unknown tags and misused entries."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.used: set[int] = set()

    def decode(self, x: Any) -> Any:
        if isinstance(x, list):
            return [self.decode(v) for v in x]
        if not isinstance(x, dict):
            return x
        if _TAG not in x:
            return {k: self.decode(v) for k, v in x.items()}
        kind = x[_TAG]
        tagged = {"float": self._float, "scalar": self._scalar, "tuple": self._tuple, "map": self._map,
                  "ndarray": self._ndarray, "tensor": self._tensor, "strings": self._strings}
        if not isinstance(kind, str) or kind not in tagged:
            raise CheckpointError(f"unknown value kind {str(kind)[:40]!r}")
        return tagged[kind](x)

    def _float(self, x: dict) -> float:
        bits = x.get("bits")
        if type(bits) is not int or not 0 <= bits < 2**64:
            raise CheckpointError("a float tag without 64 bits")
        return struct.unpack("<d", struct.pack("<Q", bits))[0]

    def _scalar(self, x: dict) -> np.generic:
        v = self.decode(x.get("value"))
        if x.get("dtype") not in _ARRAY_DTYPES or type(v) not in (bool, int, float):
            raise CheckpointError("a numpy scalar of an unknown dtype or value")
        return np.dtype(x["dtype"]).type(v)

    def _tuple(self, x: dict) -> tuple:
        return tuple(self._items(x))

    def _map(self, x: dict) -> dict:
        items = self._items(x)
        if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
            raise CheckpointError("a map whose items are not [key, value] pairs")
        pairs = [(self.decode(k), self.decode(v)) for k, v in items]
        if not all(isinstance(k, (str, int, float, bool, tuple)) or k is None for k, _ in pairs):
            raise CheckpointError("a map key that is not a number, string or tuple")
        return dict(pairs)

    def _items(self, x: dict) -> list:
        items = x.get("items")
        if not isinstance(items, list):
            raise CheckpointError("a tagged value without items")
        return [self.decode(v) for v in items] if x[_TAG] != "map" else items

    def _entry(self, x: dict) -> np.ndarray:
        i = x.get("entry")
        if type(i) is not int or not 0 <= i < len(self.arrays) or i in self.used:
            raise CheckpointError(f"array entry {str(i)[:20]} does not exist or is used twice")
        self.used.add(i)
        return self.arrays[i]

    def _ndarray(self, x: dict) -> np.ndarray:
        return self._entry(x)

    def _strings(self, x: dict) -> np.ndarray:
        items = x.get("items")
        if not isinstance(items, list) or not all(type(v) is str for v in items):
            raise CheckpointError("a string array that holds something else")
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out

    def _tensor(self, x: dict):
        raw, dtype, shape = self._entry(x), x.get("dtype"), x.get("shape")
        if dtype not in _TENSOR_DTYPES or not isinstance(shape, list) or \
                not all(type(n) is int and n >= 0 for n in shape) or raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError("a tensor of an unknown dtype or shape")
        import torch  # noqa: PLC0415 - only checkpoints of real-learning runs hold tensors

        dt = getattr(torch, dtype)
        if math.prod(shape) * torch.empty(0, dtype=dt).element_size() != raw.size:
            raise CheckpointError(f"a tensor of shape {shape[:8]} that does not match its {raw.size} bytes")
        if not raw.size:
            return torch.empty(shape, dtype=dt)
        return torch.frombuffer(bytearray(raw.tobytes()), dtype=torch.uint8).view(dt).reshape(shape).clone()


def load(path: Path, digest: str) -> dict[str, Any]:
    """Check ``path`` against the run's scenario ``digest`` and decode its state (``next_round``, ``sim``)."""
    header, payload = read_header(path)
    if header.get("digest") != digest:
        raise CheckpointError(f"{path}: checkpoint of another scenario (digest {str(header.get('digest'))[:12]}, "
                              f"this run's {digest[:12]})")
    n = header["json_bytes"]
    try:
        doc = json.loads(payload[:n], parse_constant=_no_constant)
        state = _Decoder(_read_npz(payload[n:])).decode(doc)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: refused checkpoint: {e}") from None
    except (ValueError, TypeError, RecursionError, zipfile.BadZipFile, EOFError, OverflowError, MemoryError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint payload ({type(e).__name__})") from None
    if not isinstance(state, dict) or not isinstance(state.get("sim"), dict) or \
            type(state.get("next_round")) is not int:
        raise CheckpointError(f"{path}: checkpoint payload is not a fedfleet run state")
    if state["sim"].get("now_s") != header["now_s"] or state["next_round"] != header["round"]:
        raise CheckpointError(f"{path}: corrupt checkpoint (the header's clock or round differs from the payload's)")
    return state


# ------------------------------------------------------------------------------------------ restoring
def _conforms(template: Any, value: Any, where: str) -> None:
    """Raise :class:`CheckpointError` unless ``value`` has the structure of ``template`` (a fresh
    simulation's own state): dicts have its keys, non-empty lists its length, numbers stay numbers,
    arrays and tensors keep its dtype, number of dimensions and (when it is not empty) shape. A part
    that is ``None`` or empty in the template (not yet known before round 0) is not constrained here."""
    if template is None:
        return
    if isinstance(template, dict):
        if not isinstance(value, dict) or any(k not in value for k in template):
            raise CheckpointError(f"state {where or '/'}: not the structure of this run's state")
        for k, t in template.items():
            _conforms(t, value[k], f"{where}/{k}")
    elif isinstance(template, list):
        if not isinstance(value, list) or (template and len(value) != len(template)):
            raise CheckpointError(f"state {where}: a list of another length")
        for i, (t, v) in enumerate(zip(template, value)):
            _conforms(t, v, f"{where}/{i}")
    elif isinstance(template, np.ndarray):
        if not isinstance(value, np.ndarray) or value.dtype != template.dtype or value.ndim != template.ndim or \
                (template.size and value.shape != template.shape):
            raise CheckpointError(f"state {where}: an array of another dtype or shape")
    elif isinstance(template, (bool, str)) and type(value) is not type(template):
        raise CheckpointError(f"state {where}: a {type(value).__name__} where a {type(template).__name__} belongs")
    elif isinstance(template, (int, float)) and not isinstance(template, bool) and \
            (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise CheckpointError(f"state {where}: {type(value).__name__} where a number belongs")
    elif type(template).__name__ == "Tensor" and (type(value) is not type(template) or value.dtype != template.dtype
                                                   or value.shape != template.shape):
        raise CheckpointError(f"state {where}: a tensor of another dtype or shape")


def _within_run(sim, st: dict[str, Any], next_round: int) -> None:
    """The parts that grow during a run, bounded by the scenario: ``next_round`` (1 .. rounds - 1)
    rounds recorded, each round's device columns and the last reports 1-D and at most one entry per
    device of the fleet, at most as many plans as devices."""
    rounds, n = sim.sc.training.rounds, sim.fleet.n
    rec = st["recorder"]
    if not 0 < next_round < rounds or not isinstance(rec, dict) or \
            not all(isinstance(rec.get(k), list) and len(rec[k]) == next_round for k in ("rounds", "device_rounds")):
        raise CheckpointError(f"state: {next_round} rounds recorded do not fit this run of {rounds} rounds")
    last = st["last_reports"] if isinstance(st["last_reports"], dict) else {}
    columns = [c for row in rec["device_rounds"] if isinstance(row, dict) for c in row.values()]
    extra = last.get("extra") if isinstance(last.get("extra"), dict) else {}
    columns += [*last.values(), *extra.values()]
    for c in columns:
        if isinstance(c, np.ndarray) and (c.ndim != 1 or len(c) > n) or isinstance(c, list) and len(c) > n:
            raise CheckpointError(f"state: a per-device column longer than this fleet of {n} devices")


def restore(sim, state: dict[str, Any]) -> int:
    """Put a state from :func:`load` onto a freshly built ``sim`` (same scenario); returns the next round."""
    try:
        _conforms(sim.state(), state["sim"], "")
        _within_run(sim, state["sim"], state["next_round"])
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint state does not fit this run: {e}") from None
    try:
        sim.set_state(state["sim"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint state does not fit this run: {type(e).__name__}: {str(e)[:200]}") from None
    return int(state["next_round"])
