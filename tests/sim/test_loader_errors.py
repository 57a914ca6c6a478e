"""Bad scenario input: every problem is a ScenarioError / exit status 2 with a message that names the
key path, the offending value and (where there is a closed set) the allowed values; no traceback, and
nothing is written.

Most cases go through the Python API (``sim.loader.load_scenario``) and the in-process CLI
(``typer.testing.CliRunner`` on ``sim.cli.app``); a representative subset also runs the real
``fedfleet`` executable in a subprocess to pin the process exit code and the absence of a traceback.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet_helpers import fedfleet

from sim.cli import app
from sim.loader import MAX_DEPTH, MAX_SCENARIO_BYTES, ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def _keep_root_logger():
    """``fedfleet run`` calls logging.basicConfig; keep the in-process CLI from leaking handlers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

GROUP = "fleet:\n  groups:\n    - {type: tx2, count: 2}\ntraining: {rounds: 2}\n"


@dataclass(frozen=True)
class Bad:
    id: str
    text: str | bytes | None  # None: no file at all; "@DIR@": a directory; "@TMP@" is replaced by tmp_path
    expect: tuple[str, ...]   # substrings of the message (key path, bad value, allowed values)
    overrides: tuple[str, ...] = ()

    def write(self, tmp: Path) -> Path:
        p = tmp / "bad.yaml"
        if self.text is None:
            return p
        if self.text == "@DIR@":
            p.mkdir()
        elif isinstance(self.text, bytes):
            p.write_bytes(self.text)
        else:
            p.write_text(self.text.replace("@TMP@", str(tmp)), encoding="utf-8")
        return p


def _too_large() -> str:
    return GROUP + "#" * (MAX_SCENARIO_BYTES - len(GROUP)) + "\n"  # MAX + 1 bytes


def _nested_map(levels: int) -> str:
    return GROUP + "x: " + "{a: " * levels + "1" + "}" * levels + "\n"


SCHEMA_CASES = [
    Bad("unknown_key", "fleet:\n  groups:\n    - {type: tx2, count: 2, colour: red}\n",
        ("fleet.groups[0]", "unknown key 'colour'", "allowed keys", "type, count, name, power_modes")),
    Bad("unknown_top_level_key", GROUP + "bogus: 1\n",
        ("unknown key 'bogus'", "allowed keys", "fleet", "network", "algorithm", "output")),
    Bad("unknown_nested_key", GROUP + "round: {policy: all, deadlin_s: 5}\n",
        ("round", "unknown key 'deadlin_s'", "deadline_s", "deadline_factor")),
    Bad("wrong_type", "fleet:\n  groups:\n    - {type: tx2, count: many}\n",
        ("fleet.groups[0].count", "'many'", "integer")),
    Bad("wrong_type_fraction", "fleet:\n  groups:\n    - {type: tx2, count: 2.5}\n",
        ("fleet.groups[0].count", "2.5", "integer")),
    Bad("wrong_type_section", GROUP + "network: 5\n", ("network", "5", "dictionary")),
    Bad("wrong_type_list", "fleet:\n  groups:\n    - {type: tx2, count: 2, power_modes: MAXN}\n",
        ("fleet.groups[0].power_modes", "'MAXN'", "list")),
    Bad("negative_count", "fleet:\n  groups:\n    - {type: tx2, count: -3}\n",
        ("fleet.groups[0].count", "-3", "greater than or equal to 1")),
    Bad("zero_count_second_group", "fleet:\n  groups:\n    - {type: tx2, count: 2}\n    - {type: nano, count: 0}\n",
        ("fleet.groups[1].count", "0", "greater than or equal to 1")),
    Bad("negative_seed", "seed: -1\n" + GROUP, ("seed", "-1", "greater than or equal to 0")),
    Bad("count_too_large", "fleet:\n  groups:\n    - {type: tx2, count: 99999999999999999999999}\n",
        ("fleet.groups[0].count", "99999999999999999999999", "less than or equal to 1000000")),
    Bad("unknown_device_type", "fleet:\n  groups:\n    - {type: tx3, count: 2}\n",
        ("fleet.groups[0].type", "unknown device type 'tx3'", "allowed", "tx2", "xavier_nx", "agx_orin_64gb")),
    Bad("unknown_power_mode", "fleet:\n  groups:\n    - {type: tx2, count: 2, power_modes: [MAXN, TURBO]}\n",
        ("fleet.groups[0]", "power_modes[1]", "unknown power mode 'TURBO'", "allowed",
         "MAXN, MAXQ, MAXP_CORE_ALL, MAXP_CORE_ARM, MAXP_CORE_DENVER")),
    Bad("power_mode_of_other_type", "fleet:\n  groups:\n    - {type: agx_xavier, count: 2, power_modes: [MAXQ]}\n",
        ("fleet.groups[0]", "power_modes[0]", "'MAXQ'", "agx_xavier", "MODE_30W_ALL")),
    Bad("unknown_initial_mode", "fleet:\n  groups:\n    - {type: tx2, count: 2, initial_mode: TURBO}\n",
        ("fleet.groups[0].initial_mode", "'TURBO'", "MAXN")),
    Bad("empty_power_modes", "fleet:\n  groups:\n    - {type: tx2, count: 2, power_modes: []}\n",
        ("fleet.groups[0].power_modes", "must not be empty")),
    Bad("unknown_placement_class", "fleet:\n  groups:\n    - {type: tx2, count: 2, placement: moon}\n",
        ("fleet.groups[0].placement", "unknown class 'moon'", "allowed: near, mid, far")),
    Bad("unknown_placement_share", "fleet:\n  groups:\n    - {type: tx2, count: 2, placement: {near: 1, moon: 1}}\n",
        ("fleet.groups[0].placement", "unknown class 'moon'", "near, mid, far")),
    Bad("placement_not_in_custom_classes",
        "fleet:\n  groups:\n    - {type: tx2, count: 2}\nnetwork: {classes: {lab: {mbps: [5, 10]}}}\n",
        ("fleet.groups[0].placement", "unknown class 'mid'", "allowed: lab")),
    Bad("placement_zero_shares", "fleet:\n  groups:\n    - {type: tx2, count: 2, placement: {near: 0}}\n",
        ("fleet.groups[0].placement", "shares must sum to more than 0")),
    Bad("unknown_algorithm", GROUP + "algorithm: {name: fedspin}\n",
        ("algorithm.name", "unknown strategy 'fedspin'", "allowed: comp, fedapt, fedlora", "fedspine")),
    Bad("bad_algorithm_param", GROUP + "algorithm: {name: fixed, params: {rank: -1}}\n",
        ("algorithm.params.rank", "-1", "greater than or equal to 1")),
    Bad("unknown_algorithm_param", GROUP + "algorithm: {name: fixed, params: {rnak: 8}}\n",
        ("algorithm.params", "unknown key 'rnak'", "prune_target", "rank")),
    Bad("bad_random_param_item", GROUP + "algorithm: {name: random, params: {ranks: [4, -1]}}\n",
        ("algorithm.params.ranks[1]", "-1")),
    Bad("algorithm_params_not_mapping", GROUP + "algorithm: {name: fixed, params: [1, 2]}\n",
        ("algorithm.params", "dictionary")),
    Bad("deadline_without_deadline", GROUP + "round: {policy: deadline}\n",
        ("round", "'deadline'", "deadline_s", "deadline_factor")),
    Bad("deadline_with_both", GROUP + "round: {policy: deadline, deadline_s: 60, deadline_factor: 1.5}\n",
        ("round", "exactly one of deadline_s or deadline_factor")),
    Bad("first_k_without_k", GROUP + "round: {policy: first_k}\n", ("round", "'first_k' needs k")),
    Bad("first_k_above_fleet", GROUP + "round: {policy: first_k, k: 5}\n", ("round.k", "5", "fleet size 2")),
    Bad("unknown_policy", GROUP + "round: {policy: fastest}\n",
        ("round.policy", "'fastest'", "'all'", "'deadline'", "'first_k'")),
    Bad("unknown_model_preset", GROUP + "workload: {model: gpt-5}\n",
        ("workload.model", "'gpt-5'", "roberta-base", "roberta-large", "bert-base", "llama-7b", "minilm-l6")),
    Bad("unreadable_model_config", GROUP + "workload: {model: cfg.json}\n",
        ("workload.model", "cfg.json")),
    Bad("seq_len_above_positions", GROUP + "workload: {model: bert-base, seq_len: 1024}\n",
        ("workload.seq_len", "1024", "512 positions")),
    Bad("seq_len_above_positions_llama", GROUP + "workload: {model: llama-7b, seq_len: 4096}\n",
        ("workload.seq_len", "4096", "2048 positions")),
    Bad("unknown_precision", GROUP + "workload: {precision: fp64}\n",
        ("workload.precision", "'fp64'", "'auto'", "'fp32'", "'amp'", "'fp16'")),
    Bad("unknown_lora_target", GROUP + "workload: {lora_targets: [query, qkv]}\n",
        ("workload.lora_targets[1]", "'qkv'", "'query'", "'value'")),
    Bad("nan", GROUP + "network: {rtt_ms: .nan}\n", ("network.rtt_ms", "nan", "finite")),
    Bad("inf", GROUP + "network: {rtt_ms: .inf}\n", ("network.rtt_ms", "inf", "finite")),
    Bad("negative_inf", GROUP + "dynamics: {background_load: {mu: -.inf}}\n",
        ("dynamics.background_load.mu", "-inf", "finite")),
    Bad("nan_count", "fleet:\n  groups:\n    - {type: tx2, count: .nan}\n", ("fleet.groups[0].count", "nan")),
    Bad("nan_in_list", GROUP + "network: {classes: {mid: {mbps: [.nan, 5]}}}\n",
        ("network.classes.mid.mbps[0]", "nan", "finite")),
    Bad("nan_algorithm_param", GROUP + "algorithm: {name: fixed, params: {prune_target: .NaN}}\n",
        ("algorithm.params.prune_target", "nan", "finite")),
    Bad("nan_placement_share", "fleet:\n  groups:\n    - {type: tx2, count: 2, placement: {mid: .inf}}\n",
        ("fleet.groups[0].placement", "mid", "inf", "finite")),
    Bad("empty_key_in_class", GROUP + "network: {classes: {mid: {'': [1, 5]}}}\n",
        ("network.classes.mid", "unknown key ''", "network.classes.mid.mbps: required key is missing")),
    Bad("mbps_low_above_high", GROUP + "network: {classes: {mid: {mbps: [9, 1]}}}\n",
        ("network.classes.mid.mbps", "low 9.0 exceeds high 1.0")),
    Bad("run_name_traversal", GROUP + "output: {run_name: ../x}\n",
        ("output.run_name", "'../x'", "no path separators")),
    Bad("run_name_slash", GROUP + "output: {run_name: a/b}\n", ("output.run_name", "'a/b'", "no path separators")),
    Bad("run_name_absolute", GROUP + "output: {run_name: /tmp/x}\n", ("output.run_name", "'/tmp/x'")),
    Bad("run_name_backslash", GROUP + "output: {run_name: 'a\\b'}\n", ("output.run_name", "a\\\\b")),
    Bad("run_name_dotdot", GROUP + "output: {run_name: '..'}\n", ("output.run_name", "'..'")),
    Bad("run_name_nul", GROUP + 'output: {run_name: "a\\0b"}\n', ("output.run_name", "\\x00")),
    Bad("scenario_name_traversal", "name: ../../etc\n" + GROUP, ("name", "'../../etc'", "no path separators")),
    Bad("group_name_traversal", "fleet:\n  groups:\n    - {type: tx2, count: 2, name: ../g}\n",
        ("fleet.groups[0].name", "'../g'")),
    Bad("class_name_traversal",
        "fleet:\n  groups:\n    - {type: tx2, count: 2, placement: ../c}\nnetwork: {classes: {../c: {mbps: [1, 2]}}}\n",
        ("network.classes", "'../c'")),
    Bad("empty_output_dir", GROUP + "output: {dir: ''}\n", ("output.dir", "non-empty")),
    Bad("missing_fleet", "seed: 1\n", ("fleet", "required key is missing")),
    Bad("missing_group_type", "fleet:\n  groups:\n    - {count: 2}\n", ("fleet.groups[0].type", "missing")),
    Bad("empty_groups", "fleet: {groups: []}\n", ("fleet.groups", "at least 1 item")),
    Bad("duplicate_group_labels", "fleet:\n  groups:\n    - {type: tx2, count: 2}\n    - {type: tx2, count: 1}\n",
        ("fleet.groups", "labels must be unique")),
    Bad("missing_trace_file", GROUP + "dynamics: {availability: {kind: trace, trace: nope.csv}}\n",
        ("dynamics.availability.trace", "'nope.csv'", "not found")),
    Bad("trace_kind_without_file", GROUP + "dynamics: {availability: {kind: trace}}\n",
        ("dynamics.availability", "needs a trace file")),
]

FILE_CASES = [
    Bad("missing_file", None, ("bad.yaml", "no such file")),
    Bad("directory", "@DIR@", ("bad.yaml", "not a regular file")),
    Bad("empty_file", "", ("bad.yaml", "empty scenario file")),
    Bad("comments_only", "# nothing here\n   \n", ("empty scenario file",)),
    Bad("null_document", "~\n", ("empty scenario file",)),
    Bad("python_object_tag", '!!python/object/apply:os.system ["echo pwned"]\n',
        ("invalid YAML", "line 1", "python/object/apply:os.system", "Python object tags are not allowed")),
    Bad("python_object_tag_nested",
        'fleet:\n  groups:\n    - type: !!python/object/apply:os.system ["touch @TMP@/pwned"]\n      count: 1\n',
        ("invalid YAML", "line 3", "python/object/apply:os.system", "not allowed")),
    Bad("python_object_new_tag", 'seed: !!python/object/new:os.system ["touch @TMP@/pwned"]\n' + GROUP,
        ("invalid YAML", "line 1", "python/object/new:os.system", "not allowed")),
    Bad("python_name_tag", "seed: !!python/name:os.system\n" + GROUP, ("invalid YAML", "python/name:os.system")),
    Bad("too_large", _too_large(), (f"{MAX_SCENARIO_BYTES + 1} bytes", f"{MAX_SCENARIO_BYTES}-byte limit")),
    Bad("top_level_list", "- fleet: {groups: [{type: tx2, count: 2}]}\n", ("must be a mapping", "got list")),
    Bad("top_level_scalar", "just a string\n", ("must be a mapping", "got str")),
    Bad("invalid_syntax", "fleet:\n  groups:\n    - {type: tx2, count: 2\nseed: 1\n", ("invalid YAML", "line 4")),
    Bad("invalid_syntax_tab", "fleet:\n\tgroups: []\n", ("invalid YAML", "line 2")),
    Bad("not_utf8", b"\xff\xfe\x00fleet: 1\n", ("not UTF-8",)),
    Bad("non_string_key", GROUP + "1: 2\n", ("key 1 must be a string",)),
    Bad("deep_nesting", _nested_map(MAX_DEPTH + 10), (f"nested deeper than {MAX_DEPTH} levels",)),
    Bad("deep_nesting_recursion", "x: " + "[" * 600 + "]" * 600 + "\n", ("nested too deeply",)),
]

OVERRIDE_CASES = [
    Bad("set_missing_equals", GROUP, ("--set 'foo'", "expected dotted.key=value"), ("foo",)),
    Bad("set_index_out_of_range", GROUP, ("--set fleet.groups.9", "'9'", "0..0"), ("fleet.groups.9.count=1",)),
    Bad("set_index_not_a_number", GROUP, ("--set fleet.groups.x", "'x'"), ("fleet.groups.x.count=1",)),
    Bad("set_negative_index", GROUP, ("--set fleet.groups.-1", "'-1'"), ("fleet.groups.-1.count=1",)),
    Bad("set_empty_key", GROUP, ("empty key",), ("=3",)),
    Bad("set_empty_component", GROUP, ("empty key",), ("training..rounds=3",)),
    Bad("set_into_scalar", GROUP, ("fleet.groups.0.count", "is a int, not a section"), ("fleet.groups.0.count.x=1",)),
    Bad("set_negative_count", GROUP, ("fleet.groups[0].count", "-1", "greater than or equal to 1"),
        ("fleet.groups.0.count=-1",)),
    Bad("set_wrong_type", GROUP, ("training.rounds", "'many'", "integer"), ("training.rounds=many",)),
    Bad("set_nan", GROUP, ("seed", "nan", "finite"), ("seed=.nan",)),
    Bad("set_unknown_key", GROUP, ("training", "unknown key 'roundz'", "rounds"), ("training.roundz=3",)),
    Bad("set_unknown_type", GROUP, ("fleet.groups[0].type", "'tx3'", "xavier_nx"), ("fleet.groups.0.type=tx3",)),
    Bad("set_python_tag_refused", GROUP, ("--set fleet.groups.0.type", "YAML tags", "not allowed"),
        ('fleet.groups.0.type=!!python/object/apply:os.system ["touch @TMP@/pwned"]',)),
    Bad("set_run_name_traversal", GROUP, ("output.run_name", "'../x'"), ("output.run_name=../x",)),
    Bad("set_second_bad_override", GROUP, ("--set 'bar'",), ("training.rounds=3", "bar")),
]

ALL_CASES = SCHEMA_CASES + FILE_CASES + OVERRIDE_CASES
_ids = [c.id for c in ALL_CASES]
assert len(set(_ids)) == len(_ids), "duplicate case ids"


def _prepare(case: Bad, tmp_path: Path) -> tuple[Path, list[str]]:
    if case.id == "unreadable_model_config":
        (tmp_path / "cfg.json").write_text("{not json", encoding="utf-8")
    path = case.write(tmp_path)
    overrides = [o.replace("@TMP@", str(tmp_path)) for o in case.overrides]
    return path, overrides


def _snapshot(tmp_path: Path) -> set[str]:
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}


def _set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_api_rejects_with_named_problem(case: Bad, tmp_path: Path) -> None:
    path, overrides = _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(path, overrides)
    msg = str(ei.value)
    for s in case.expect:
        assert s in msg, f"{s!r} not in message:\n{msg}"
    assert "Traceback" not in msg
    assert _snapshot(tmp_path) == before, "loading a scenario must not write anything"
    assert not (tmp_path / "pwned").exists()


def test_scenario_error_is_a_value_error() -> None:
    assert issubclass(ScenarioError, ValueError)


def test_error_lists_every_problem(tmp_path: Path) -> None:
    p = tmp_path / "two.yaml"
    p.write_text("fleet:\n  groups:\n    - {type: tx2, count: -1}\n    - {type: nano, count: x}\nseed: -5\n")
    msg = str(pytest.raises(ScenarioError, load_scenario, p).value)
    for s in ("fleet.groups[0].count", "-1", "fleet.groups[1].count", "'x'", "seed", "-5"):
        assert s in msg, msg


def test_file_at_size_limit_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "exact.yaml"
    p.write_text(GROUP + "#" * (MAX_SCENARIO_BYTES - len(GROUP) - 1) + "\n")
    assert p.stat().st_size == MAX_SCENARIO_BYTES
    sc, _ = load_scenario(p)
    assert sc.n_devices == 2


def test_nesting_at_limit_is_accepted_by_the_yaml_check(tmp_path: Path) -> None:
    # depth MAX_DEPTH passes the nesting check and is then judged by the schema (x is not a key)
    p = tmp_path / "nest.yaml"
    p.write_text(_nested_map(MAX_DEPTH - 1))
    msg = str(pytest.raises(ScenarioError, load_scenario, p).value)
    assert "nested" not in msg and "unknown key 'x'" in msg


def test_good_overrides_apply(tmp_path: Path) -> None:
    original = QUICKSTART.read_text()
    sc, base = load_scenario(QUICKSTART, ["training.rounds=3", "fleet.groups.0.count=2",
                                          "round.deadline_factor=2", "output.run_name=r1"])
    assert sc.training.rounds == 3
    assert sc.fleet.groups[0].count == 2 and sc.n_devices == 10
    assert sc.round.deadline_factor == 2.0
    assert sc.output.run_name == "r1"
    assert base == QUICKSTART.parent.resolve()
    assert QUICKSTART.read_text() == original, "overrides must not touch the file"


def test_override_later_wins_and_creates_sections(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(GROUP)
    sc, _ = load_scenario(p, ["training.rounds=3", "training.rounds=4", "dynamics.dropout.prob=0.1",
                              "fleet.groups.0.power_modes=[MAXN, MAXQ]"])
    assert sc.training.rounds == 4
    assert sc.dynamics.dropout.prob == 0.1
    assert sc.fleet.groups[0].power_modes == ["MAXN", "MAXQ"]
    assert sc.name == "s"  # default name: the file stem


# ---------------------------------------------------------------------------------------------
# CLI, in process
# ---------------------------------------------------------------------------------------------

def _check_cli_failure(result, case: Bad) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr
    assert err.startswith("error: "), err
    for s in case.expect:
        assert s in err, f"{s!r} not in stderr:\n{err}"
    assert "Traceback" not in result.output
    assert result.stdout == "", result.stdout


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_cli_validate_exits_2(case: Bad, tmp_path: Path) -> None:
    path, overrides = _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["validate", str(path), *_set_args(overrides)])
    _check_cli_failure(result, case)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_cli_run_exits_2_and_writes_nothing(case: Bad, tmp_path: Path) -> None:
    path, overrides = _prepare(case, tmp_path)
    out = tmp_path / "out"
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--quiet", *_set_args(overrides)])
    _check_cli_failure(result, case)
    assert not out.exists(), f"bad input wrote {sorted(map(str, out.rglob('*')))}"
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------
# CLI, the real executable (exit status of the process, no traceback)
# ---------------------------------------------------------------------------------------------

SUBPROCESS_IDS = ["unknown_key", "wrong_type", "negative_count", "unknown_device_type", "unknown_power_mode",
                  "unknown_placement_class", "bad_algorithm_param", "missing_file", "empty_file",
                  "python_object_tag", "too_large", "invalid_syntax", "nan", "deep_nesting_recursion",
                  "run_name_traversal", "set_missing_equals", "set_index_out_of_range"]
SUBPROCESS_CASES = [c for c in ALL_CASES if c.id in SUBPROCESS_IDS]
assert len(SUBPROCESS_CASES) == len(SUBPROCESS_IDS)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_real_cli_exits_2_without_traceback(case: Bad, command: str, tmp_path: Path) -> None:
    path, overrides = _prepare(case, tmp_path)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command == "run" else []
    proc = fedfleet(command, str(path), *extra, *_set_args(overrides))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stdout == "", proc.stdout  # in particular, no "pwned" from os.system
    assert proc.stderr.startswith("error: ")
    for s in case.expect:
        assert s in proc.stderr, f"{s!r} not in stderr:\n{proc.stderr}"
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()


def test_real_cli_set_overrides_are_applied(tmp_path: Path) -> None:
    proc = fedfleet("validate", str(QUICKSTART), "--set", "training.rounds=3", "--set", "fleet.groups.0.count=2")
    assert proc.returncode == 0, proc.stderr
    assert "10 devices (2 tx2, 6 xavier_nx, 2 agx_xavier)" in proc.stdout
    assert "3 rounds" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Regressions: bugs found by review, now fixed
# ---------------------------------------------------------------------------------------------

def _write_bad_traces(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "avail.csv").write_text("device,start_s,end_s\ntx2,abc,5\n")
    (tmp_path / "net.csv").write_text("time_s,foo\n0,1\n")
    avail = tmp_path / "avail.yaml"
    avail.write_text(GROUP + "dynamics: {availability: {kind: trace, trace: avail.csv}}\n")
    net = tmp_path / "net.yaml"
    net.write_text(GROUP + "network: {classes: {mid: {mbps: [1, 5], trace: net.csv}}}\n")
    return {"dynamics.availability.trace": avail, "network.classes.mid.trace": net}


@pytest.mark.parametrize("key", ["dynamics.availability.trace", "network.classes.mid.trace"])
def test_fixed_malformed_trace_rejected_by_loader(key: str, tmp_path: Path) -> None:
    path = _write_bad_traces(tmp_path)[key]
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        load_scenario(path)


def test_fixed_malformed_trace_run_writes_nothing(tmp_path: Path) -> None:
    path = _write_bad_traces(tmp_path)["dynamics.availability.trace"]
    out = tmp_path / "out"
    proc = fedfleet("run", str(path), "--out", str(out), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "dynamics.availability.trace" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists(), sorted(map(str, out.rglob("*")))


def test_fixed_malformed_trace_profile_exits_2(tmp_path: Path) -> None:
    path = _write_bad_traces(tmp_path)["dynamics.availability.trace"]
    result = runner.invoke(app, ["profile", str(path)])
    assert result.exit_code == 2, (result.exit_code, repr(result.exception))
    assert "dynamics.availability.trace" in result.stderr


def test_fixed_lora_depth_above_layers_is_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "depth.yaml"
    p.write_text(GROUP + "algorithm: {name: fixed, params: {lora_depth: 100}}\n")  # roberta-base has 12 layers
    out = tmp_path / "out"
    proc = fedfleet("run", str(p), "--out", str(out), "--quiet")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "algorithm.params.lora_depth" in proc.stderr and "100" in proc.stderr
    assert not out.exists()


def test_fixed_lora_depth_above_layers_rejected_by_loader(tmp_path: Path) -> None:
    p = tmp_path / "depth.yaml"
    p.write_text(GROUP + "algorithm: {name: random, params: {lora_depth: 100}}\n")
    with pytest.raises(ScenarioError, match=r"algorithm\.params\.lora_depth"):
        load_scenario(p)


def test_fixed_boolean_count_is_a_wrong_type(tmp_path: Path) -> None:
    p = tmp_path / "b.yaml"
    p.write_text("fleet:\n  groups:\n    - {type: tx2, count: true}\n")
    with pytest.raises(ScenarioError, match=r"fleet\.groups\[0\]\.count"):
        load_scenario(p)


def test_fixed_run_name_with_trailing_newline(tmp_path: Path) -> None:
    p = tmp_path / "nl.yaml"
    p.write_text(GROUP + 'output: {run_name: "ok\\n"}\n')
    with pytest.raises(ScenarioError, match=r"output\.run_name"):
        load_scenario(p)


_DEEP_SET = "training=" + "[" * 600 + "]" * 600


def test_fixed_deep_set_value_api(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(GROUP)
    with pytest.raises(ScenarioError):
        load_scenario(p, [_DEEP_SET])


def test_fixed_deep_set_value_cli(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(GROUP)
    proc = fedfleet("validate", str(p), "--set", _DEEP_SET)
    assert proc.returncode == 2, proc.returncode
    assert "Traceback" not in proc.stderr


def test_fixed_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    width, levels = 9, 10
    lines = ["bomb0: &a0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"bomb{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n" + GROUP)
    assert p.stat().st_size < 1000

    def _alarm(signum, frame):
        raise TimeoutError("loader still busy after 1 s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(ScenarioError):
            load_scenario(p)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("text,expected", [
    ("fleet: {groups: [{type: tx2, count: 2, power_modes: [MAXN, FOO]}]}\n",
     "fleet.groups[0].power_modes[1]: unknown power mode 'FOO'"),
    ("fleet: {groups: [{type: tx2, count: 2, placement: [1]}]}\n",
     "fleet.groups[0].placement: must be a class name or a mapping"),
    ("fleet: {groups: [{type: tx2, count: 2}]}\nround: {policy: first_k, k: 5}\n",
     "\nround.k: 5 exceeds the fleet size 2"),
    ("fleet: {groups: [{type: tx2, count: 2}]}\nseed: 1\nseed: 2\n", "duplicate key 'seed'"),
])
def test_messages_carry_full_key_paths(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    assert expected in str(ei.value)
    assert "(top level)" not in str(ei.value) and "placement.str" not in str(ei.value)
