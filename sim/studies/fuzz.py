"""Seeded hostile scenario documents, for fuzzing the scenario loader (``benchmarks/bench_fuzz.py``) and
for the loader's property tests (``tests/sim/test_fuzz_scenarios.py``, which share the document walkers
:func:`doc_paths` and :func:`doc_parent`).

:class:`Gen` draws documents from a seeded numpy generator (``np.random.default_rng(seed)``), one of six
kinds (:data:`KINDS`): ``random_value`` (nested mappings / lists / scalars, with huge and non-finite
numbers, odd strings and non-string keys, dumped with ``yaml.safe_dump``), ``token_soup`` (YAML syntax
pieces glued at random: tags, anchors, aliases, flow and block structure, odd scalars), ``raw_bytes``
(random bytes, invalid UTF-8), ``nasty`` (deep nesting up to 20,000 levels, alias bombs, 400-digit
integers, multiple documents, Python tags, ...), ``mutation`` (1-4 random edits of a shipped scenario:
delete a key, replace a value with one of another type, nasty numbers, unicode key renames, wrap in a
list) and ``override`` (a shipped scenario plus 1-4 random ``--set dotted.key=value``). The same seed
gives the same documents.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import yaml

KINDS = ("random_value", "token_soup", "raw_bytes", "nasty", "mutation", "override")

NASTY_NUMBERS: list[Any] = [0, -1, -(10**400), 10**400, 2**63, 2**64 + 1, 1e308, -1e308, 5e-324, -0.0, math.nan,
                            math.inf, -math.inf, True, False, 0.5, 1.5, 10**18, 1_000_001]
PLAUSIBLE_STRINGS = ["tx2", "agx_xavier", "xavier_nx", "nano", "mid", "near", "far", "fixed", "fedspine", "hetlora",
                     "fedlora", "legend", "random", "svd", "zero_pad", "real", "none", "periodic", "markov", "amp",
                     "fp16", "minilm", "tiny-bert", "roberta-base", "bert-base", "llama-7b", "deadline", "first_k",
                     "all", "trace", "rotten_tomatoes", "tweets", "org/model", "MAXN", "MODE_15W", "ducb", "x1"]
NASTY_STRINGS = ["", " ", "../../etc", "/etc/passwd", "a/../../b", "\x00", "a\x00b", "~", "~root/x", "..", ".",
                 "http://evil.example/x", "file:///etc/passwd", "é", "\u202e", "\x1b[31mred", "a\nb", "a\\b", "CON",
                 "-rf", "$HOME", "x" * 300, "x" * 5000, "!!python/object/apply:os.system", "*a", "&a", "nan",
                 "1e400", "2001-02-30", "yes", "null", "\t", "\ufeff", *PLAUSIBLE_STRINGS]
KEYS = ["fleet", "groups", "type", "count", "name", "seed", "network", "classes", "mbps", "workload", "model",
        "learning", "kind", "output", "dir", "run_name", "algorithm", "params", "round", "policies", "dynamics",
        "trace", "placement", "training", "rounds", "trust_remote_code", "bandit_params", "calibration", "faults"]
TOKENS = ["{", "}", "[", "]", ",", ": ", ":", "- ", "-", " ", "  ", "\n", "\n  ", "\t", "? ", "---\n", "...\n",
          "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "&a ", "*a", "&b ", "*b", "<<: ", "'", '"', "#", "|\n", ">\n",
          "a", "b", "fleet", "groups", "type: tx2", "count: 2", "seed", "1", "-1", "0x", "0o9", "0b2", "1_0", ".nan",
          ".inf", "-.inf", "1e400", "9" * 50, "~", "null", "true", "yes", "2001-02-30", "2001-12-14t21:59:43.10-99:99",
          "12:30:45", "!!python/object/apply:os.system ", "!!python/name:os.system ", "!!int ", "!!float ", "!!bool ",
          "!!str ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ", "!!null ",
          "!!merge ", "!custom ", "!<tag:yaml.org,2002:int> ", "\x00", "\x85", "\u2028", "\ufeff", "é", "\x1b",
          "\\", "\\x00", '"\\0"', "'\\'", "\r\n", "\r"]
GROUP = "fleet:\n  groups:\n    - {type: tx2, count: 2}\n"


class Gen:
    """Seeded generator of hostile scenario documents (text or bytes, plus --set overrides)."""

    def __init__(self, seed: int, shipped: dict[str, dict]):
        self.rng = np.random.default_rng(seed)
        self.shipped = shipped
        self.names = sorted(shipped)

    def pick(self, seq: list | tuple) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def text(self, max_len: int = 16) -> str:
        n = int(self.rng.integers(0, max_len + 1))
        pools = [(0x20, 0x7F), (0x0, 0x20), (0xA0, 0x800), (0x800, 0xD800), (0xE000, 0x110000)]
        out = []
        for _ in range(n):
            lo, hi = pools[int(self.rng.choice(5, p=[0.7, 0.05, 0.1, 0.1, 0.05]))]
            out.append(chr(int(self.rng.integers(lo, hi))))
        return "".join(out)

    def scalar(self) -> Any:
        r = int(self.rng.integers(8))
        if r == 0:
            return None
        if r == 1:
            return bool(self.rng.integers(2))
        if r == 2:
            return int(self.rng.integers(-(2**62), 2**62)) * int(self.pick([1, 1, 10**20, 10**300]))
        if r == 3:
            return self.pick(NASTY_NUMBERS)
        if r == 4:
            return float(self.rng.standard_normal() * 10.0 ** int(self.rng.integers(-5, 300)))
        if r == 5:
            return self.text()
        return self.pick(NASTY_STRINGS)

    def key(self, odd: bool = False) -> Any:
        r = self.rng.random()
        if odd and r < 0.1:
            return self.pick([1, -1, None, True, 2.5, 10**30])
        return self.pick(KEYS) if r < 0.6 else self.text(10)

    def value(self, depth: int = 0, odd: bool = False) -> Any:
        r = self.rng.random()
        if depth >= 4 or r < 0.5:
            return self.scalar()
        n = int(self.rng.integers(0, 5))
        if r < 0.75:
            return [self.value(depth + 1, odd) for _ in range(n)]
        return {self.key(odd): self.value(depth + 1, odd) for _ in range(n)}

    def soup(self, max_tokens: int = 40) -> str:
        return "".join(self.pick(TOKENS) for _ in range(int(self.rng.integers(0, max_tokens + 1))))

    def nasty(self) -> str | bytes:
        r = int(self.rng.integers(14))
        depth = int(self.pick([49, 50, 51, 600, 1000, 5000, 20000]))
        if r == 0:
            return GROUP + "x: " + "[" * depth + "]" * depth + "\n"
        if r == 1:
            return GROUP + "x: " + "{a: " * depth + "1" + "}" * depth + "\n"
        if r == 2:
            return "[" * depth  # unterminated
        if r == 3:
            width, levels = int(self.rng.integers(2, 12)), int(self.rng.integers(2, 14))
            lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
            lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
            return "\n".join(lines) + "\n" + GROUP
        if r == 4:
            key = self.pick(["seed", "fleet.groups.0.count", "training.rounds", "workload.seq_len",
                             "fleet.groups.0.placement.mid", "algorithm.params.rank"])
            return _with(key, "9" * int(self.rng.integers(20, 4400)))
        if r == 5:
            return _with(self.pick(["network.rtt_ms", "dynamics.dropout.prob", "learning.lr",
                                    "fleet.groups.0.placement.mid", "algorithm.params.prune_target"]),
                         self.pick([".nan", ".inf", "-.inf", ".NaN", "1e400", "-1e400"]))
        if r == 6:
            return GROUP + "---\n" + self.pick([GROUP, "", "a: 1\n", "---\n"])
        if r == 7:
            return self.pick(["", "---\n", "...\n", "~\n", "# only\n", "\n\n\n", "---\n...\n"])
        if r == 8:
            return self.pick(['!!python/object/apply:os.system ["echo pwned"]\n', "seed: !!python/name:os.system\n",
                              'x: !!python/object/new:os.system ["echo pwned"]\n', "x: !!python/module:os\n"]) + GROUP
        if r == 9:
            return GROUP + self.pick(["seed: 1\nseed: 2\n", "1: 2\n", "~: 1\n", "? [a]\n: 1\n", "true: 1\n",
                                      "2001-12-14: 1\n", "flëet: 1\n", "\u202e: 1\n"])
        if r == 10:
            return GROUP + "".join(" " * i + "a:\n" for i in range(int(self.pick([10, 60, 1000]))))
        if r == 11:
            return (GROUP + "seed: 1\n").encode(self.pick(["utf-16", "utf-32", "latin-1", "utf-8-sig"]))
        if r == 12:
            field = self.pick(["workload.model", "dynamics.availability.trace", "learning.model",
                               "network.classes.mid.trace", "output.dir", "output.run_name", "name"])
            val = self.pick(NASTY_STRINGS + ["m" * 5000, "/dev/zero", "/proc/self/environ", "/etc", "/"])
            return _with(field, json.dumps(val))
        return GROUP + "x: " + self.soup(20) + "\n"

    def plausible(self, old: Any) -> Any:
        """A value near ``old``: a scaled or shifted number, another string of the kind the scenarios use."""
        if isinstance(old, bool):
            return not old
        if isinstance(old, (int, float)):
            new = old * self.pick([0, -1, 2, 10, 1000, 0.5, 1e6]) + self.pick([0, 1, -1])
            return int(new) if isinstance(old, int) and self.rng.random() < 0.8 else float(new)
        if isinstance(old, str):
            return self.pick(PLAUSIBLE_STRINGS) if self.rng.random() < 0.8 else self.pick(NASTY_STRINGS)
        return self.scalar()

    def mutate(self, doc: dict) -> None:
        for _ in range(int(self.rng.integers(1, 4))):
            paths = doc_paths(doc)
            if not paths:
                return
            path = paths[int(self.rng.integers(len(paths)))]
            parent, last = doc_parent(doc, path), path[-1]
            op = int(self.rng.integers(9))
            if op >= 6:
                parent[last] = self.plausible(parent[last])
            elif op == 0:
                del parent[last]
            elif op == 1:
                parent[last] = self.value(odd=True)
            elif op == 2:
                parent[last] = self.pick(NASTY_NUMBERS)
            elif op == 3:
                parent[last] = self.pick(NASTY_STRINGS)
            elif op == 4 and isinstance(parent, dict):
                parent[self.text(8) or "é"] = parent.pop(last)
            else:
                parent[last] = [parent[last]]

    def overrides(self, doc: dict) -> list[str]:
        out = []
        paths = doc_paths(doc) or [("seed",)]
        for _ in range(int(self.rng.integers(1, 4))):
            path = paths[int(self.rng.integers(len(paths)))]
            if self.rng.random() < 0.4:  # a plausible change of an existing key
                old = doc_parent(doc, path)[path[-1]]
                val = yaml.safe_dump(self.plausible(old), default_flow_style=True, width=10**9)
                out.append(".".join(str(p) for p in path) + "=" + val.strip().removesuffix("...").strip())
                continue
            r = self.rng.random()
            dotted = ".".join(str(p) for p in path)
            if r < 0.15:
                dotted += "." + str(self.key())
            elif r < 0.25:
                dotted = ".".join(str(p) for p in path[: 1 + int(self.rng.integers(len(path)))])
            elif r < 0.3:
                dotted = self.pick(["", ".", "a..b", "fleet.groups.²", "fleet.groups.-1", "fleet.groups.99",
                                    "learning.trust_remote_code", "x" * 300])
            if self.rng.random() < 0.5:
                val = yaml.safe_dump(self.value(), default_flow_style=True, allow_unicode=True, width=10**9)
                val = val.strip().removesuffix("...").strip()
            else:
                val = self.soup(12)
            out.append(f"{dotted}={val}" if self.rng.random() > 0.03 else dotted)  # a few without "="
        return out

    def document(self, kind: str) -> tuple[str | bytes, list[str]]:
        """(file content, --set overrides) for one document of ``kind``."""
        if kind == "random_value":
            doc = self.value(odd=True)
            if self.rng.random() < 0.5:  # mostly scenario-shaped: a real skeleton with random sections
                doc = {"fleet": {"groups": [{"type": "tx2", "count": 2}]}, self.pick(KEYS): doc}
            return yaml.safe_dump(doc, allow_unicode=bool(self.rng.integers(2)), sort_keys=False), []
        if kind == "token_soup":
            return self.soup(), []
        if kind == "raw_bytes":
            n = int(self.rng.integers(0, 400))
            raw = self.rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            return (GROUP.encode() + raw) if self.rng.random() < 0.5 else raw, []
        if kind == "nasty":
            return self.nasty(), []
        doc = copy.deepcopy(self.shipped[self.pick(self.names)])
        if kind == "mutation":
            self.mutate(doc)
            return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), []
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), self.overrides(doc)


def _with(dotted: str, raw: str) -> str:
    """A small valid scenario whose key ``dotted`` holds the raw YAML text ``raw`` (pasted, not dumped), with the
    sibling keys that make the key matter (an availability trace needs kind trace, a proxy model real learning)."""
    doc: dict[str, Any] = {"fleet": {"groups": [{"type": "tx2", "count": 2}]},
                           "dynamics": {"availability": {"kind": "trace" if "availability" in dotted else "always"}},
                           "learning": {"kind": "real" if dotted == "learning.model" else "none"}}
    node: Any = doc
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = "@@VALUE@@"
    return yaml.safe_dump(doc, sort_keys=False).replace("'@@VALUE@@'", raw).replace("@@VALUE@@", raw)


def doc_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested document (mappings and lists), depth first, e.g. ``("fleet", "groups", 0)``."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += doc_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += doc_paths(v, prefix + (i,))
    return out


def doc_parent(doc: Any, path: tuple) -> Any:
    """The container holding the last element of ``path`` in ``doc``."""
    node = doc
    for p in path[:-1]:
        node = node[p]
    return node
