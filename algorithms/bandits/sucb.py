"""S-UCB ("Smooth UCB"): a UCB policy over a continuum of arms, refined as a tree of cells.

This is our reconstruction of FedSpine's S-UCB (arXiv 2501.02438, which names a smooth UCB that
partitions and refines a continuous configuration space, with a discount λ, an exploration scale s
and a parameter δ), *not* the paper's equations, which are not public (``docs/method.md`` section 5).
The arm space is a box of dimensions (:class:`Dim`), each a continuous interval [lo, hi] or a
sorted set of discrete values (cells then cover index ranges [a, b)). It starts as a grid of
``init_bins[j]`` equal bins per dimension (depth 0); a leaf played often enough is split in half,
so the tree deepens where the policy plays most, in the spirit of zooming bandits (Kleinberg,
Slivkins & Upfal 2008, "Multi-armed bandits in metric spaces", STOC) and HOO (Bubeck, Munos,
Stoltz & Szepesvári 2011, "X-armed bandits", JMLR 12).

Statistics per leaf c are discounted exactly as in D-UCB (Garivier & Moulines 2011): on every
update all leaves' N and S are multiplied by λ, then the played leaf gets N += 1, S += r:

    N_λ(c) = Σ_s λ^{t−s} 1{c_s = c},   S_λ(c) = Σ_s λ^{t−s} r_s 1{c_s = c},   n_λ = Σ_leaves N_λ(c)

    UCB(c) = S_λ(c) / N_λ(c) + s sqrt(2 ln(max(n_λ / δ, 1)) / N_λ(c))

Leaves never played (and without inherited statistics) are played first, uniformly at random;
otherwise the feasible leaf with the largest UCB (ties at random). A played leaf whose N_λ has
underflowed to 0 scores +inf.

Refinement: after an update, the played leaf is split in half along its widest splittable
dimension, in normalised width ((hi − lo)/(Dim.hi − Dim.lo), or (b − a)/len(values) for a
discrete range; a single-value range cannot be split), when

    N_λ(c) ≥ n_split · 2^depth(c)   and   depth(c) < max_depth.

The children inherit a copy of the parent's N and S (our choice), so n_λ double-counts those plays until
they decay away. Since every N_λ stays below 1/(1 − λ), a leaf at depth d can only split if n_split ·
2^d < 1/(1 − λ): with the defaults (bound 20) leaves stop at depth 3 whatever ``max_depth`` says. The
same bound keeps n_λ ≤ 20 (plus inherited copies), so with s = 1 the bonus (≈ sqrt(2 ln 400 / N))
dominates the [0, 1] reward range and play stays broad; a larger λ or a smaller s concentrates it.

Defaults λ = 0.95, s = 1, δ = 0.05, n_split = 3 are our choices (the paper's values are not public).

Two options the sources leave open (defaults keep the literal rule):

- ``untried="low_first"``: untried leaves are played in increasing order of their lower bound in
  the first dimension (random among ties). For FedSpine the first dimension is the cumulative
  pruning ratio, which can never go back down: a random untried order makes every device try a
  high ratio within a few rounds and stay there.
- ``scale="reward_std"``: the bonus uses s times the discounted standard deviation of all rewards
  seen so far (at least ``std_floor``; 1 before two plays), in the spirit of UCB1-Tuned (Auer et
  al. 2002), so that s is relative to how much the rewards actually vary.

Feasibility (``lower``): a leaf is excluded when, in some dimension j with lower[j] given, its
upper end (continuous: hi; discrete: the largest value in its range) is below lower[j]. The point
played is the leaf's centre (discrete: values[(a + b − 1) // 2]) or a uniform draw in it, then
raised to lower[j] (continuous: max(x, lower[j]), at most hi; discrete: the smallest value in the
range that is ≥ lower[j]).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from algorithms.bandits.base import (
    check_int,
    check_real,
    check_reward,
    check_rng,
    jsonable,
)

PLAYS = ("centre", "uniform")


@dataclass
class Dim:
    """One dimension of the arm space: [lo, hi], or the sorted ``values`` (then lo/hi ignored)."""

    lo: float = 0.0
    hi: float = 1.0
    values: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.values is not None:
            vals = tuple(float(v) for v in self.values)
            if not vals or not all(map(math.isfinite, vals)) \
                    or any(a >= b for a, b in itertools.pairwise(vals)):
                raise ValueError(f"Dim values must be non-empty, finite and strictly increasing, "
                                 f"got {self.values!r}")
            self.values = vals
            return
        lo, hi = float(self.lo), float(self.hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"Dim needs finite lo < hi, got lo={self.lo!r}, hi={self.hi!r}")
        self.lo, self.hi = lo, hi

    def width(self, bounds: tuple[float, float]) -> float:
        """Normalised width of a cell's bounds in this dimension."""
        a, b = bounds
        return (b - a) / (len(self.values) if self.values is not None else self.hi - self.lo)


@dataclass
class Cell:
    """A cell of the tree. ``bounds[j]`` is (lo, hi) for a continuous dimension and the index
    range [a, b) (ints) for a discrete one."""

    id: int
    depth: int
    bounds: list[tuple[float, float]]
    N: float = 0.0
    S: float = 0.0
    parent: int | None = None
    tried: bool = False   # played, or inherited statistics from a played parent


UNTRIED = ("random", "low_first")
SCALES = ("absolute", "reward_std")


class SUCB:
    name: ClassVar[str] = "sucb"

    def __init__(self, dims: list[Dim], rng: np.random.Generator, *, discount: float = 0.95,
                 exploration: float = 1.0, delta: float = 0.05, n_split: float = 3,
                 init_bins: list[int] | None = None,
                 play: Literal["centre", "uniform"] = "centre", max_depth: int = 12,
                 untried: Literal["random", "low_first"] = "random",
                 scale: Literal["absolute", "reward_std"] = "absolute", std_floor: float = 0.01) -> None:
        if not dims or not all(isinstance(d, Dim) for d in dims):
            raise ValueError("dims must be a non-empty list of Dim")
        self.dims = list(dims)
        self.rng = check_rng(rng)
        self.discount = check_real("discount", discount, 0.0, 1.0, lo_open=True)
        self.exploration = check_real("exploration", exploration, 0.0)
        self.delta = check_real("delta", delta, 0.0, 1.0, lo_open=True)
        self.n_split = check_real("n_split", n_split, 0.0, lo_open=True)
        self.max_depth = check_int("max_depth", max_depth, 0)
        if play not in PLAYS:
            raise ValueError(f"play must be one of {PLAYS}, got {play!r}")
        self.play = play
        if untried not in UNTRIED:
            raise ValueError(f"untried must be one of {UNTRIED}, got {untried!r}")
        self.untried = untried
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.scale = scale
        self.std_floor = check_real("std_floor", std_floor, 0.0)
        self._moments = [0.0, 0.0, 0.0]  # discounted sum of weights, rewards, squared rewards (all plays)
        bins = init_bins if init_bins is not None else [
            2 if d.values is None else len(d.values) for d in self.dims]
        if len(bins) != len(self.dims):
            raise ValueError(f"init_bins must have one entry per dim ({len(self.dims)}), got {bins!r}")
        self.t = 0
        self._next_id = 0
        self._leaves: dict[int, Cell] = {}
        ranges = [self._bins(j, d, k) for j, (d, k) in enumerate(zip(self.dims, bins))]
        for bounds in itertools.product(*ranges):
            self._add(0, list(bounds), None)

    @staticmethod
    def _bins(j: int, dim: Dim, k: int) -> list[tuple[float, float]]:
        if dim.values is None:
            k = check_int(f"init_bins[{j}]", k, 1)
            e = [dim.lo + (dim.hi - dim.lo) * i / k for i in range(k)] + [dim.hi]
        else:
            if isinstance(k, (int, np.integer)) and k > len(dim.values):
                raise ValueError(f"init_bins[{j}] must be in [1, {len(dim.values)}] "
                                 f"(the number of values), got {k!r}")
            k = check_int(f"init_bins[{j}]", k, 1)
            e = [i * len(dim.values) // k for i in range(k + 1)]
        return list(itertools.pairwise(e))

    def _add(self, depth: int, bounds: list[tuple[float, float]], parent: Cell | None) -> None:
        cell = Cell(self._next_id, depth, bounds, parent=None if parent is None else parent.id)
        if parent is not None:
            cell.N, cell.S, cell.tried = parent.N, parent.S, parent.tried
        self._leaves[cell.id] = cell
        self._next_id += 1

    # -- queries ------------------------------------------------------------------------------------

    def leaves(self) -> list[Cell]:
        """Copies of the current leaves, by id."""
        return [replace(c, bounds=list(c.bounds)) for _, c in sorted(self._leaves.items())]

    def scores(self) -> dict[int, float]:
        """UCB(c) per leaf id (+inf for leaves never played)."""
        n_tot = sum(c.N for c in self._leaves.values())
        log_term = 2.0 * math.log(max(n_tot / self.delta, 1.0))
        s = self.exploration * (self.reward_std() if self.scale == "reward_std" else 1.0)
        return {i: (c.S / c.N + s * math.sqrt(log_term / c.N)
                    if c.tried and c.N > 0 else math.inf)
                for i, c in sorted(self._leaves.items())}

    def reward_std(self) -> float:
        """Discounted standard deviation of every reward observed so far, at least ``std_floor``
        (1.0 before two plays): the bonus scale of ``scale="reward_std"``."""
        w, m1, m2 = self._moments
        if w <= 1.0:
            return 1.0
        mean = m1 / w
        return max(math.sqrt(max(m2 / w - mean * mean, 0.0)), self.std_floor)

    def _feasible(self, cell: Cell, lower: list[float | None]) -> bool:
        for d, (a, b), lo in zip(self.dims, cell.bounds, lower):
            top = b if d.values is None else d.values[b - 1]
            if lo is not None and top < lo:
                return False
        return True

    def _point(self, cell: Cell, lower: list[float | None]) -> list[float]:
        point = []
        for d, (a, b), lo in zip(self.dims, cell.bounds, lower):
            if d.values is None:
                x = (a + b) / 2 if self.play == "centre" else float(self.rng.uniform(a, b))
                point.append(x if lo is None else min(max(x, lo), b))
            else:
                i = (a + b - 1) // 2 if self.play == "centre" else int(self.rng.integers(a, b))
                if lo is not None and d.values[i] < lo:
                    i = bisect.bisect_left(d.values, lo, a, b)
                point.append(d.values[i])
        return point

    # -- play -----------------------------------------------------------------------------------------

    def select(self, lower: list[float | None] | None = None) -> tuple[list[float], int]:
        """(point, cell id): a point of the chosen leaf with every coordinate >= lower[j]."""
        if lower is None:
            lower = [None] * len(self.dims)
        if len(lower) != len(self.dims):
            raise ValueError(f"lower must have one entry per dim ({len(self.dims)}), got {lower!r}")
        lower = [None if v is None else check_real(f"lower[{j}]", v) for j, v in enumerate(lower)]
        scores = self.scores()
        feasible = [i for i in scores if self._feasible(self._leaves[i], lower)]
        if not feasible:
            raise ValueError(f"no cell is feasible for lower={lower}")
        untried = [i for i in feasible if not self._leaves[i].tried]
        if untried:
            if self.untried == "low_first":  # an irreversible first dim: explore it from below
                low = min(self._leaves[i].bounds[0][0] for i in untried)
                untried = [i for i in untried if self._leaves[i].bounds[0][0] == low]
            cid = untried[int(self.rng.integers(len(untried)))]
        else:
            best = max(scores[i] for i in feasible)
            ties = [i for i in feasible if scores[i] == best]
            cid = ties[int(self.rng.integers(len(ties)))]
        return self._point(self._leaves[cid], lower), cid

    def update(self, cell_id: int, reward: float) -> None:
        if cell_id not in self._leaves:
            raise ValueError(f"cell_id {cell_id!r} is not a current leaf")
        r = check_reward(reward)
        self.t += 1
        m = self._moments
        self._moments = [self.discount * m[0] + 1.0, self.discount * m[1] + r, self.discount * m[2] + r * r]
        for c in self._leaves.values():
            c.N *= self.discount
            c.S *= self.discount
        cell = self._leaves[cell_id]
        cell.N += 1.0
        cell.S += r
        cell.tried = True
        if cell.N >= self.n_split * 2 ** cell.depth and cell.depth < self.max_depth:
            self._split(cell)

    def _split(self, cell: Cell) -> None:
        widths = [d.width(bd) if d.values is None or bd[1] - bd[0] >= 2 else 0.0
                  for d, bd in zip(self.dims, cell.bounds)]
        j = int(np.argmax(widths))
        if widths[j] <= 0:
            return
        a, b = cell.bounds[j]
        mid = (a + b) / 2 if self.dims[j].values is None else (a + b) // 2
        del self._leaves[cell.id]
        for half in ((a, mid), (mid, b)):
            self._add(cell.depth + 1, [half if k == j else bd for k, bd in enumerate(cell.bounds)],
                      cell)

    # -- persistence ----------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return jsonable({"dims": [asdict(d) for d in self.dims], "discount": self.discount,
                         "exploration": self.exploration, "delta": self.delta,
                         "n_split": self.n_split, "play": self.play, "max_depth": self.max_depth,
                         "untried": self.untried, "scale": self.scale, "std_floor": self.std_floor})

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON-serialisable Python values."""
        return jsonable({"name": self.name, "config": self._config(), "t": self.t,
                         "next_id": self._next_id, "rng": self.rng.bit_generator.state, "moments": self._moments,
                         "leaves": [asdict(c) for c in self.leaves()]})

    def set_state(self, st: dict[str, Any]) -> None:
        """Resume from ``state()`` output; dims and parameters must match this instance's."""
        if st.get("name") != self.name or jsonable(st.get("config")) != self._config():
            raise ValueError("state is for a different S-UCB configuration")
        self._leaves = {}
        for c in st["leaves"]:
            bounds = [(a, b) if d.values is None else (int(a), int(b))
                      for d, (a, b) in zip(self.dims, c["bounds"])]
            self._leaves[int(c["id"])] = Cell(int(c["id"]), int(c["depth"]), bounds,
                                              float(c["N"]), float(c["S"]), c["parent"],
                                              bool(c["tried"]))
        self.t = int(st["t"])
        self._moments = [float(x) for x in st.get("moments", [0.0, 0.0, 0.0])]
        self._next_id = int(st["next_id"])
        self.rng.bit_generator.state = st["rng"]
