"""Named, seeded random streams (no global RNG anywhere).

One ``numpy.random.SeedSequence`` per run; every consumer asks for a stream by name. A stream's
seed depends only on (run seed, stream name, index), never on creation order or on how many other
streams exist, so adding a device or a process leaves every other stream unchanged.

:class:`PerDeviceStream` gives each device its own generator for one dynamics process and serves a
whole fleet's draws for a round as one vector. It draws blocks of ``block`` rounds per device at a
time, so the cost is a few numpy calls per device per block rather than per round; the values a
device sees depend only on its own generator.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream_key(name: str) -> int:
    """Stable 32-bit key of a stream name (crc32; Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def generator(seed: int, name: str, *index: int) -> np.random.Generator:
    """The generator of stream ``name`` (optionally indexed, e.g. by device) for run ``seed``."""
    ss = np.random.SeedSequence(entropy=seed, spawn_key=(stream_key(name), *index))
    return np.random.Generator(np.random.PCG64(ss))


def stream_seed(seed: int, name: str, *index: int) -> int:
    """A 63-bit integer seed drawn from stream ``name`` (for libraries that take an int, e.g. torch)."""
    return int(generator(seed, name, *index).integers(2**63))


class PerDeviceStream:
    """Per-device generators for one process; ``draw(round)`` returns one value per device.

    Draws are made for every device every round, whether or not it takes part, so a device's
    sequence never depends on the selection of others. Rounds must be drawn in order.
    """

    def __init__(self, seed: int, name: str, n_devices: int, dist: str = "random", block: int = 32):
        if dist not in ("random", "normal"):
            raise ValueError(dist)
        self.name = name
        self.dist = dist
        self.block = block
        self._gens = [generator(seed, name, i) for i in range(n_devices)]
        self._buf = np.empty((n_devices, 0))
        self._first_round = 0
        self._next_round = 0

    def draw(self, round_index: int) -> np.ndarray:
        if round_index != self._next_round:
            raise ValueError(f"stream {self.name}: round {round_index} drawn out of order (expected {self._next_round})")
        col = round_index - self._first_round
        if col >= self._buf.shape[1]:
            self._refill(round_index)
            col = 0
        self._next_round += 1
        return self._buf[:, col]

    def _refill(self, round_index: int) -> None:
        n, b = len(self._gens), self.block
        buf = np.empty((n, b))
        if self.dist == "random":
            for i, g in enumerate(self._gens):
                buf[i] = g.random(b)
        else:
            for i, g in enumerate(self._gens):
                buf[i] = g.standard_normal(b)
        self._buf = buf
        self._first_round = round_index

    def state(self) -> dict:
        """Everything needed to resume the stream exactly (for checkpoints)."""
        return {
            "gens": [g.bit_generator.state for g in self._gens],
            "buf": self._buf.copy(),
            "first_round": self._first_round,
            "next_round": self._next_round,
        }

    def set_state(self, st: dict) -> None:
        for g, s in zip(self._gens, st["gens"], strict=True):
            g.bit_generator.state = s
        self._buf = np.array(st["buf"])
        self._first_round = st["first_round"]
        self._next_round = st["next_round"]
