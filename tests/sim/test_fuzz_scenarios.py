"""Hostile scenario input, fuzzed: whatever the bytes, the loader raises only :class:`ScenarioError`.

Every property drives the in-process API (``parse_yaml``, ``check_structure``, ``apply_override``,
``validate``, ``read_yaml`` / ``load_scenario`` on a file) and requires that the only exception is a
``ScenarioError`` whose message is non-empty and names the file (the origin) or the ``--set`` key; any
other exception type is a loader bug. Inputs: random YAML values dumped with ``yaml.safe_dump``, raw
text and bytes (invalid UTF-8, tabs, tags, anchors, deep nesting), a YAML "token soup", mutations of
every shipped scenario (``scenarios/*.yaml``) and random ``--set`` overrides; hostile names and output
paths (accepted ones must keep the run directory inside the results root); hostile model names (nothing
reaches transformers with ``trust_remote_code=True``). A few nasty files also go through the real
``fedfleet validate`` in a subprocess (exit 2, ``error:``, no traceback).

Hypothesis runs derandomized (same examples every run, no example database);
``FEDFLEET_FUZZ_EXAMPLES=N`` raises the per-property example count for a longer local campaign.
"""

from __future__ import annotations

import copy
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from fleet_helpers import base_scenario, fedfleet
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sim.loader import (MAX_SCENARIO_BYTES, ScenarioError, apply_override, check_structure, load_scenario,
                        parse_yaml, read_yaml, scenario_digest, validate)
from sim.store import new_run_dir, safe_child
from sim.studies.fuzz import doc_parent, doc_paths

REPO = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO / "scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.yaml"))  # not sweeps/: those are sweep files, not scenarios

EXAMPLES = int(os.environ.get("FEDFLEET_FUZZ_EXAMPLES", "100"))
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=EXAMPLES, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])
FEW = settings(FUZZ, max_examples=max(10, EXAMPLES // 3))


# ---------------------------------------------------------------------------------------------
# The oracle: only ScenarioError, with a message that names the origin or the key
# ---------------------------------------------------------------------------------------------

def clean(fn: Callable[[], Any], *origins: str) -> Any:
    """Call ``fn``; return its result, or the ScenarioError it raised after checking the message.

    Any other exception propagates and fails the test (that is the bug this file hunts)."""
    try:
        return fn()
    except ScenarioError as e:
        msg = str(e)
        assert msg.strip(), "empty ScenarioError message"
        assert "Traceback" not in msg
        assert msg.startswith(tuple(origins) + ("--set ",)), f"message names neither {origins} nor a --set key:\n{msg}"
        lines = msg.splitlines()
        if lines[0].endswith("invalid scenario"):  # then every following line is "key.path: problem"
            assert len(lines) > 1, msg
            for line in lines[1:]:
                assert re.match(r"^\S.*?: \S", line), f"line without a key: {line!r}\n{msg}"
        return e


def check_accepted(sc: Any, out_root: Path) -> None:
    """What the runner does first with a scenario: digest, run id, run directory inside ``out_root``."""
    from sim.runner import run_id_of  # noqa: PLC0415 (imports the engine)

    assert len(scenario_digest(sc)) == 64  # json.dumps(allow_nan=False): no NaN/inf slipped through
    run_dir = new_run_dir(out_root, sc.name or "scenario", run_id_of(sc))
    root = out_root.resolve()
    assert root in run_dir.resolve().parents, f"{run_dir} escapes {root}"
    assert run_dir.resolve().parent.parent == root
    run_dir.rmdir()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the whole module (hypothesis examples reuse it; function fixtures are not reset)."""
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

NASTY_NUMBERS = [0, -1, -(10**400), 10**400, 2**63, 2**64 + 1, -(2**63) - 1, 1e308, -1e308, 5e-324, -0.0,
                 math.nan, math.inf, -math.inf, True, False, 0.5, 1.5, 1e-300, 10**18]
NASTY_STRINGS = ["", " ", "../../etc", "/etc/passwd", "a/../../b", "\x00", "a\x00b", "~", "~root/x", "..", ".",
                 "http://evil.example/x", "file:///etc/passwd", "é", "\u202e", "\x1b[31mred", "a\nb", "a\\b", "CON",
                 "-rf", "$HOME", "%2e%2e", "x" * 300, "x" * 5000, "!!python/object/apply:os.system", "*a", "&a",
                 "nan", ".nan", "1e400", "2001-02-30", "yes", "null", "~/x", "\t", "\ufeff", "\ud800"]

keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["fleet", "groups", "type", "count", "name", "seed", "network", "classes", "mbps", "workload",
                     "model", "learning", "kind", "output", "dir", "run_name", "algorithm", "params", "round",
                     "policies", "dynamics", "trace", "placement", "training", "rounds", "faults"]),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(NASTY_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(NASTY_STRINGS),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=4),
                      max_leaves=24)
any_keys = st.one_of(keys, st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))
odd_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(any_keys, c, max_size=3),
                          max_leaves=12)

# pieces of YAML syntax, glued at random: tags, anchors, aliases, flow and block structure, odd scalars
TOKENS = ["{", "}", "[", "]", ",", ": ", ":", "- ", "-", " ", "  ", "\n", "\n  ", "\t", "? ", "---\n", "...\n",
          "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "&a ", "*a", "&b ", "*b", "<<: ", "'", '"', "#", "|\n", ">\n", "a",
          "b", "fleet", "groups", "type: tx2", "count: 2", "seed", "1", "-1", "0x", "0o9", "0b2", "1_0", ".nan",
          ".inf", "-.inf", "1e400", "9" * 50, "~", "null", "true", "yes", "2001-02-30", "2001-12-14t21:59:43.10-99:99",
          "12:30:45", "!!python/object/apply:os.system ", "!!python/name:os.system ", "!!int ", "!!float ",
          "!!bool ", "!!str ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ",
          "!!null ", "!!merge ", "!custom ", "!<tag:yaml.org,2002:int> ", "\x00", "\x85", "\u2028", "\ufeff",
          "\ud800", "é", "\x1b", "\\", "\\x00", '"\\0"', "'\\'", "\r\n", "\r"]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
raw_text = st.one_of(token_soup, st.text(st.characters(codec=None, exclude_categories=()), max_size=200))


def _deep(opening: str, closing: str, n: int, prefix: str = "x: ") -> str:
    return prefix + opening * n + "1" + closing * n + "\n"


def _laughs(width: int = 10, levels: int = 12) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


GROUP = "fleet:\n  groups:\n    - {type: tx2, count: 2}\n"


# ---------------------------------------------------------------------------------------------
# 1. Random documents
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(doc=values)
def test_random_yaml_documents_only_raise_scenario_error(doc: Any) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    data = clean(lambda: parse_yaml(text, "doc.yaml"), "doc.yaml")
    if isinstance(data, dict):
        clean(lambda: validate(data, "doc.yaml", SCENARIO_DIR), "doc.yaml")


@FUZZ
@given(doc=odd_values)
def test_random_python_values_only_raise_scenario_error(doc: Any) -> None:
    """The API without YAML in between: non-string keys, NaN, huge ints straight into the checks."""
    clean(lambda: check_structure(doc, "<api>"), "<api>")
    if isinstance(doc, dict) and all(isinstance(k, str) for k in doc):
        clean(lambda: validate(doc, "<api>", SCENARIO_DIR), "<api>")


@FUZZ
@example(text="a: !!float ''")
@example(text="a: !!int 0x")
@example(text="seed: 2001-02-30")
@example(text="a: !!timestamp xyz")
@example(text="a: !!bool maybe")
@example(text="a: !!set [1]")
@example(text="a: !!map [1]")
@example(text="a: 2001-12-14t21:59:43.10-99:99")
@example(text="a: &a {x: 1}\nb: {<<: *a}\n")
@given(text=raw_text)
def test_random_text_only_raises_scenario_error(text: str) -> None:
    data = clean(lambda: parse_yaml(text, "soup.yaml"), "soup.yaml")
    if isinstance(data, dict):
        clean(lambda: validate(data, "soup.yaml", SCENARIO_DIR), "soup.yaml")
        assignment = f"training.rounds={text}"
        clean(lambda: apply_override(data, assignment), "--set")


@FEW
@example(raw=b"\xff\xfe\x00f\x00")
@example(raw=b"\xc3\x28: 1\n")
@example(raw=b"\xef\xbb\xbffleet: {groups: [{type: tx2, count: 1}]}\n")
@given(raw=st.one_of(st.binary(max_size=300), token_soup.map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_random_bytes_in_a_file_only_raise_scenario_error(raw: bytes, scratch: Path) -> None:
    p = scratch / "bytes.yaml"
    p.write_bytes(raw)
    res = clean(lambda: load_scenario(p), str(p))
    if not isinstance(res, ScenarioError):
        check_accepted(res[0], scratch / "out")


@dataclass(frozen=True)
class Nasty:
    id: str
    content: bytes
    expect: tuple[str, ...] = ()  # substrings of the message
    extra: tuple[tuple[str, bytes], ...] = ()  # other files in the same folder (traces, config.json)


def _b(s: str) -> bytes:
    return s.encode("utf-8")


_ARCH = ('{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, '
         '"intermediate_size": 128, "vocab_size": 100')
NASTY = [
    Nasty("billion_laughs", _b(_laughs() + GROUP), ("more than",)),
    Nasty("deep_brackets_10000", _b(_deep("[", "]", 10_000, GROUP + "x: ")), ("nested",)),
    Nasty("deep_braces_10000", _b(_deep("{a: ", "}", 10_000, GROUP + "x: ")), ("nested",)),
    Nasty("deep_block_mapping", _b(GROUP + "".join(" " * i + "a:\n" for i in range(1000))), ()),
    Nasty("python_apply_tag", _b('seed: !!python/object/apply:os.system ["echo pwned"]\n' + GROUP),
          ("Python object tags are not allowed",)),
    Nasty("huge_int_seed", _b("seed: " + "9" * 400 + "\n" + GROUP), ("seed",)),
    Nasty("invalid_utf8", b"fleet:\n  groups: [\xc3\x28]\n", ("not UTF-8",)),
    Nasty("utf16_with_bom", "fleet: {groups: [{type: tx2, count: 1}]}\n".encode("utf-16"), ("not UTF-8",)),
    Nasty("nul_byte", b"fleet: \x00\n", ("invalid YAML",)),
    Nasty("tab_indent", _b("fleet:\n\tgroups: []\n"), ("invalid YAML",)),
    Nasty("duplicate_key", _b(GROUP + "seed: 1\nseed: 2\n"), ("duplicate key 'seed'",)),
    Nasty("non_string_keys", _b(GROUP + "? [1, 2]\n: x\n"), ("invalid YAML",)),
    Nasty("null_and_bool_keys", _b(GROUP + "~: 1\ntrue: 2\n"), ("must be a string",)),
    Nasty("multiple_documents", _b(GROUP + "---\n" + GROUP), ("invalid YAML",)),
    Nasty("document_markers_only", _b("---\n...\n"), ("empty scenario file",)),
    Nasty("unicode_keys", _b("flëet:\n  groups: [{type: tx2, count: 1}]\n"), ("unknown key 'flëet'",)),
    Nasty("bad_timestamp", _b(GROUP + "seed: 2001-02-30\n"), ("line 4", "2001-02-30")),
    Nasty("bad_int_tag", _b(GROUP + "seed: !!int 0x\n"), ("line 4", "'0x'")),
    Nasty("set_tag_on_sequence", _b(GROUP + "seed: !!set [1]\n"), ("line 4",)),
    Nasty("bad_bool_tag", _b(GROUP + "seed: !!bool maybe\n"), ("line 4", "'maybe'")),
    Nasty("merge_key", _b("a: &a {type: tx2, count: 1}\nfleet: {groups: [{<<: *a}]}\n"), ("merge keys",)),
    Nasty("huge_placement_share", _b("fleet: {groups: [{type: tx2, count: 1, placement: {mid: " + "9" * 400 + "}}]}\n"),
          ("fleet.groups[0].placement", "finite")),
    Nasty("huge_bandit_param", _b(GROUP + "algorithm: {name: fedspine, params: {bandit: ducb, bandit_params: "
                                  "{discount: " + "9" * 400 + "}}}\n"), ("algorithm.params",)),
    Nasty("model_path_too_long", _b(GROUP + "workload: {model: " + "m" * 5000 + "}\n"), ("workload.model",)),
    Nasty("trace_path_too_long", _b(GROUP + "dynamics: {availability: {kind: trace, trace: " + "t" * 5000 + "}}\n"),
          ("dynamics.availability.trace",)),
    Nasty("availability_trace_not_utf8", _b(GROUP + "dynamics: {availability: {kind: trace, trace: av.csv}}\n"),
          ("dynamics.availability.trace",), (("av.csv", b"device,start_s,end_s\n\xff\xfe,0,1\n"),)),
    Nasty("network_trace_huge_field", _b(GROUP + "network: {classes: {mid: {mbps: [1, 5], trace: net.csv}}}\n"),
          ("network.classes.mid.trace",), (("net.csv", b"time_s,mbps\n0," + b"1" * 200_000 + b"\n"),)),
    Nasty("availability_trace_huge_field", _b(GROUP + "dynamics: {availability: {kind: trace, trace: av.csv}}\n"),
          ("dynamics.availability.trace",), (("av.csv", b"device,start_s,end_s\n" + b"x" * 200_000 + b",0,1\n"),)),
    Nasty("config_json_kv_heads_string", _b(GROUP + "workload: {model: cfg}\n"), ("workload.model",),
          (("cfg/config.json", _b(_ARCH + ', "num_key_value_heads": "x"}')),)),
    Nasty("config_json_head_dim_string", _b(GROUP + "workload: {model: cfg}\n"), ("workload.model", "head_dim"),
          (("cfg/config.json", _b(_ARCH + ', "head_dim": "x"}')),)),
    Nasty("config_json_positions_nan", _b(GROUP + "workload: {model: cfg}\n"), ("max_position_embeddings",),
          (("cfg/config.json", _b(_ARCH + ', "max_position_embeddings": NaN}')),)),
    Nasty("learning_model_url", _b(GROUP + "learning: {kind: real, model: 'http://evil.example/m'}\n"),
          ("learning.model", "http://evil.example/m")),
    Nasty("learning_model_traversal", _b(GROUP + "learning: {kind: real, model: ../../nonexistent/x}\n"),
          ("learning.model",)),
    Nasty("learning_trust_remote_code", _b(GROUP + "learning: {kind: real, trust_remote_code: true}\n"),
          ("learning", "unknown key 'trust_remote_code'")),
    Nasty("run_name_traversal", _b(GROUP + "output: {run_name: ../../etc}\n"), ("output.run_name",)),
    Nasty("name_control_chars", _b('name: "\\e[31mx"\n' + GROUP), ("name", "\\x1b")),
    Nasty("unknown_key_with_escape", _b(GROUP + 'training: {"\\e[2J": 1}\n'), ("unknown key '\\x1b[2J'",)),
]
NASTY_IDS = [n.id for n in NASTY]
assert len(set(NASTY_IDS)) == len(NASTY_IDS)


def _write_nasty(case: Nasty, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in case.extra:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    p = folder / f"{case.id}.yaml"
    p.write_bytes(case.content)
    assert p.stat().st_size <= MAX_SCENARIO_BYTES
    return p


@pytest.mark.parametrize("case", NASTY, ids=NASTY_IDS)
def test_nasty_files_are_refused_by_name(case: Nasty, tmp_path: Path) -> None:
    p = _write_nasty(case, tmp_path)
    err = clean(lambda: load_scenario(p), str(p))
    assert isinstance(err, ScenarioError), f"{case.id} was accepted"
    for s in case.expect:
        assert s in str(err), f"{s!r} not in:\n{err}"
    assert "\x1b" not in str(err), "raw terminal escape in the message"
    assert len(str(err)) < 2000, "a hostile value should not make a huge message"


CLI_IDS = ["billion_laughs", "deep_brackets_10000", "python_apply_tag", "huge_int_seed", "invalid_utf8", "nul_byte",
           "duplicate_key", "null_and_bool_keys", "bad_timestamp", "bad_int_tag", "set_tag_on_sequence",
           "huge_placement_share", "huge_bandit_param", "model_path_too_long", "trace_path_too_long",
           "availability_trace_not_utf8", "config_json_kv_heads_string", "learning_model_url",
           "learning_trust_remote_code", "name_control_chars"]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``fedfleet validate FILE`` for every CLI case, three processes at a time (each is ~1 s of startup)."""
    root = tmp_path_factory.mktemp("cli")
    by_id = {n.id: n for n in NASTY}
    paths = {i: _write_nasty(by_id[i], root / i) for i in CLI_IDS}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {i: pool.submit(fedfleet, "validate", str(p)) for i, p in paths.items()}
        return {i: f.result() for i, f in futures.items()}


@pytest.mark.parametrize("case_id", CLI_IDS)
def test_real_cli_validate_refuses_nasty_file(case_id: str, cli_results: dict[str, Any]) -> None:
    proc = cli_results[case_id]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert proc.stderr.startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stdout == ""
    assert "\x1b" not in proc.stderr
    for s in next(n for n in NASTY if n.id == case_id).expect:
        assert s in proc.stderr, f"{s!r} not in:\n{proc.stderr[-2000:]}"


# ---------------------------------------------------------------------------------------------
# 2. Mutations of the shipped scenarios
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped() -> dict[str, dict]:
    out = {}
    for p in SCENARIOS:
        data = read_yaml(p)
        validate(copy.deepcopy(data), str(p), SCENARIO_DIR)  # the mutations start from valid scenarios
        out[p.name] = data
    assert len(out) >= 3, out.keys()
    return out




@st.composite
def mutated(draw: st.DrawFn, names: list[str]) -> tuple[str, list[tuple[str, Any]]]:
    """A shipped scenario's name and 1-4 mutation operations, applied later (they need the document)."""
    name = draw(st.sampled_from(names))
    ops = draw(st.lists(st.tuples(
        st.sampled_from(["delete", "replace", "number", "string", "rename", "wrap", "override", "override_raw"]),
        st.integers(0, 10_000), st.one_of(values, st.sampled_from(NASTY_NUMBERS), st.sampled_from(NASTY_STRINGS)),
        keys, token_soup), min_size=1, max_size=4))
    return name, ops


def _mutate(doc: dict, op: str, pick: int, value: Any, key: str, soup: str) -> None:
    paths = doc_paths(doc)
    if not paths:
        return
    path = paths[pick % len(paths)]
    parent, last = doc_parent(doc, path), path[-1]
    if op == "delete":
        del parent[last]
    elif op in ("replace", "number", "string"):
        parent[last] = value
    elif op == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(last)
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif op == "override":
        dotted = ".".join(str(p) for p in path)
        text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()
        clean(lambda: apply_override(doc, f"{dotted}={text}"), "--set")
    elif op == "override_raw":
        dotted = ".".join(str(p) for p in path[: 1 + pick % len(path)]) + ("." + key if pick % 3 == 0 else "")
        clean(lambda: apply_override(doc, f"{dotted}={soup}"), "--set")


@FUZZ
@given(data=st.data())
def test_mutated_shipped_scenarios_only_raise_scenario_error(data: st.DataObject, shipped: dict[str, dict],
                                                             scratch: Path) -> None:
    name, ops = data.draw(mutated(sorted(shipped)))
    doc = copy.deepcopy(shipped[name])
    for op in ops:
        _mutate(doc, *op)
    origin = str(SCENARIO_DIR / name)
    if clean(lambda: check_structure(doc, origin), origin) is not None:
        return
    sc = clean(lambda: validate(doc, origin, SCENARIO_DIR), origin)
    if not isinstance(sc, ScenarioError):
        check_accepted(sc, scratch / "out")


@FEW
@given(data=st.data())
def test_mutated_shipped_scenarios_from_files(data: st.DataObject, shipped: dict[str, dict], scratch: Path) -> None:
    """The same through a file and load_scenario's own --set handling (dumped with odd but valid YAML)."""
    name, ops = data.draw(mutated(sorted(shipped)))
    doc = copy.deepcopy(shipped[name])
    for op in ops:
        if op[0] not in ("override", "override_raw"):
            _mutate(doc, *op)
    p = scratch / "mutated.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    sets = data.draw(st.lists(st.tuples(st.sampled_from(doc_paths(doc) or [("seed",)]), token_soup), max_size=3))
    overrides = [".".join(map(str, path)) + "=" + text for path, text in sets]
    res = clean(lambda: load_scenario(p, overrides), str(p))
    if not isinstance(res, ScenarioError):
        check_accepted(res[0], scratch / "out")


@pytest.mark.parametrize("assignment", [
    "fleet.groups.²=1", "fleet.groups.١.count=1", "fleet.groups.0.count=" + "9" * 400, "seed=!!int 0x",
    "seed=2001-02-30", "training=!!set [1]", "seed=.nan", "learning.trust_remote_code=true", "output.dir=\x00",
    "fleet.groups.0.placement={mid: " + "9" * 400 + "}", "name=../../etc", "a.b.c.d.e.f=1", "fleet.groups.0.x.y=1",
])
def test_odd_overrides_only_raise_scenario_error(assignment: str, tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(GROUP)
    res = clean(lambda: load_scenario(p, [assignment]), str(p))
    assert isinstance(res, ScenarioError), f"{assignment!r} accepted"


# ---------------------------------------------------------------------------------------------
# 3. Names and output paths: refused, or the run directory stays inside the results root
# ---------------------------------------------------------------------------------------------

PATH_LIKE = ["../../etc", "/abs", "/", "a/../../b", "..", ".", "\x00", "a\x00b", "a" * 100, "a" * 101, "a" * 4096,
             "a\\..\\..\\b", "~", "~/x", "-x", ".hidden", "a b", "a\nb", "ok\n", "é", "CON", "a/b", "x/..", "x/.",
             "%2e%2e%2f", "\u202e", "..\u2215..", "a" * 99 + "."]


@pytest.mark.parametrize("value", PATH_LIKE, ids=[repr(v)[:30] for v in PATH_LIKE])
@pytest.mark.parametrize("key", ["name", "output.run_name", "output.dir"])
def test_hostile_names_and_output_paths(key: str, value: str, tmp_path: Path) -> None:
    d = base_scenario()
    if key == "name":
        d["name"] = value
    else:
        d["output"][key.split(".")[1]] = value
    sc = clean(lambda: validate(d, "<names>", REPO), "<names>")
    if isinstance(sc, ScenarioError):
        assert key in str(sc) or key.split(".")[-1] in str(sc)
        return
    out = tmp_path / "out"
    check_accepted(sc, out)
    if key == "output.dir":  # the user's results root, used as given; the run lands inside it
        from sim.runner import run_id_of  # noqa: PLC0415

        root = Path(sc.output.dir)
        child = safe_child(root, sc.name or "scenario", run_id_of(sc))  # resolves, creates nothing
        assert root.resolve() in child.parents


@FUZZ
@given(name=st.one_of(st.text(max_size=120), st.sampled_from(NASTY_STRINGS)),
       run_name=st.one_of(st.none(), st.text(max_size=120), st.sampled_from(NASTY_STRINGS)))
def test_random_names_never_escape_the_results_root(name: str, run_name: str | None, scratch: Path) -> None:
    d = base_scenario(name=name)
    d["output"]["run_name"] = run_name
    sc = clean(lambda: validate(d, "<names>", REPO), "<names>")
    if not isinstance(sc, ScenarioError):
        check_accepted(sc, scratch / "out")


@pytest.mark.parametrize("stem", ["..", "-x", "_x", "é", "résumé", "a b", "a\nb", "x" * 200, "ok.v2", "\u202e"])
def test_default_name_from_any_file_name_is_valid(stem: str, tmp_path: Path) -> None:
    """No ``name:`` key: the name comes from the file stem and must always pass the name check."""
    p = tmp_path / f"{stem}.yaml"
    p.write_text(GROUP)
    sc, _ = load_scenario(p)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", sc.name), sc.name
    check_accepted(sc, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# 4. Model names: never trust_remote_code=True, only sane learning.model values
# ---------------------------------------------------------------------------------------------

def test_no_code_passes_trust_remote_code_true() -> None:
    """Every ``trust_remote_code`` in the project's code is ``=False``; every ``from_pretrained`` on a name
    that may come from a scenario passes it explicitly."""
    offenders = []
    for folder in ("learning", "sim", "devices", "algorithms", "benchmarks"):
        for f in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                for m in re.finditer(r"trust_remote_code\s*=\s*(\w+)", code):
                    if m.group(1) != "False":
                        offenders.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


class _Recorder:
    """Stands in for transformers' Auto classes: records each call's kwargs, then fails like a missing model."""

    def __init__(self, calls: list, what: str):
        self.calls, self.what = calls, what

    def from_pretrained(self, ref: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((self.what, str(ref), kwargs))
        raise OSError(f"fake {self.what}: not loading {ref!r} in a test")

    def from_config(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((self.what + ".from_config", type(cfg).__name__, kwargs))
        raise OSError("fake from_config")


MODEL_NAMES = ["minilm", "tiny-bert", "tiny-llama", "../../x", "/etc/passwd", "http://evil.example/m", "org/model",
               "hf://org/model", "~root", "a\x00b", "x" * 5000]


def test_load_proxy_never_asks_for_remote_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import transformers  # noqa: PLC0415

    import learning.models as models  # noqa: PLC0415

    calls: list = []
    current = {"name": ""}

    class Recorder(_Recorder):
        def from_pretrained(self, ref: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["_scenario_name"] = current["name"]
            return super().from_pretrained(ref, *args, **kwargs)

    for cls in ("AutoTokenizer", "AutoModelForSequenceClassification", "AutoModel", "AutoConfig",
                "AutoModelForCausalLM"):
        monkeypatch.setattr(transformers, cls, Recorder(calls, cls), raising=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    monkeypatch.setattr(models, "packaged_dir", lambda name="minilm": tmp_path / "model")
    for name in MODEL_NAMES + [str(tmp_path / "model")]:
        current["name"] = name
        with pytest.raises((OSError, RuntimeError, ValueError)):
            models.load_proxy(name, num_labels=2, seed=0)
    assert {c[2].get("_scenario_name") for c in calls if "_scenario_name" in c[2]} >= {"minilm", "org/model"}
    for what, ref, kwargs in calls:
        assert kwargs.get("trust_remote_code") is not True, (what, ref, kwargs)
        if kwargs.get("_scenario_name") not in models.MODEL_NAMES:  # a Hub name or a folder from the scenario
            assert kwargs.get("trust_remote_code") is False, (what, ref, kwargs)
    assert set(models.MODEL_NAMES) == {"minilm", "tiny-bert", "tiny-llama"}  # the loader's copy of the list


REAL = {"kind": "real", "test_size": 100, "train_examples": 400, "partition": {"min_size": 1}}


@pytest.mark.parametrize("model", ["../../x", "/etc/passwd", "/etc", "http://evil.example/m", "hf://org/model",
                                   "file:///etc/passwd", "a\x00b", "~nosuchuser_fuzz/x", "org/../model", "org/mo--del",
                                   "", " ", "\x1b[31m", "x" * 5000, "a/b/c"])
def test_bad_learning_model_names_are_refused(model: str) -> None:
    d = base_scenario(learning={**REAL, "model": model})
    err = clean(lambda: validate(d, "<model>", REPO), "<model>")
    assert isinstance(err, ScenarioError), f"learning.model {model!r} accepted"
    assert "learning.model" in str(err)


@pytest.mark.parametrize("model", ["minilm", "tiny-bert", "tiny-llama", "org/model", "bert-base-uncased", "@folder"])
def test_good_learning_model_names_are_accepted(model: str, tmp_path: Path) -> None:
    if model == "@folder":
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "config.json").write_text("{}")
        model = str(tmp_path / "m")
    hub = model in ("org/model", "bert-base-uncased")  # not in the local cache: valid names only when online
    d = base_scenario(learning={**REAL, "model": model, **({"allow_download": True} if hub else {})})
    assert validate(d, "<model>", REPO).learning.model == model
    if hub:  # offline (the default) refuses them at validation, saying how to provide them
        d["learning"].pop("allow_download")
        err = clean(lambda: validate(d, "<model>", REPO), "<model>")
        assert isinstance(err, ScenarioError) and "learning.allow_download: true" in str(err)


@pytest.mark.parametrize("where", ["learning", "workload", "top"])
def test_trust_remote_code_key_is_unknown_everywhere(where: str, tmp_path: Path) -> None:
    d = base_scenario(learning=dict(REAL))
    target = d if where == "top" else d.setdefault(where, {})
    target["trust_remote_code"] = True
    err = clean(lambda: validate(d, "<trc>", REPO), "<trc>")
    assert isinstance(err, ScenarioError) and "unknown key 'trust_remote_code'" in str(err), err
    p = tmp_path / "s.yaml"
    p.write_text(GROUP)
    err = clean(lambda: load_scenario(p, ["learning.kind=real", "learning.trust_remote_code=true"]), str(p))
    assert isinstance(err, ScenarioError) and "trust_remote_code" in str(err)


@FEW
@given(model=st.one_of(st.text(max_size=60), st.sampled_from(NASTY_STRINGS)))
def test_random_learning_model_names_only_raise_scenario_error(model: str) -> None:
    d = base_scenario(learning={**REAL, "model": model})
    sc = clean(lambda: validate(d, "<model>", REPO), "<model>")
    if not isinstance(sc, ScenarioError):
        name = sc.learning.model
        assert name in ("minilm", "tiny-bert", "tiny-llama") or "://" not in name
        assert name.isprintable() and ".." not in name.split("/")

