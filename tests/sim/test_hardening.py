"""Issue 18, items 4-7 and 9: every hostile or careless input of the issue, run through the ``fedfleet``
command in a subprocess, with the behaviour it must have now (exit code, one line, no traceback, nothing
leaked, nothing written, no network).

One test per case; the list is the issue's "must show 4" for these items.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from devices.errors import excerpt
from sim.scenario import Scenario
from sim.scenario import _numeric as numeric_annotation

ROOT = Path(__file__).resolve().parents[2]
QUICK = str(ROOT / "scenarios" / "quickstart.yaml")
PAPER = str(ROOT / "scenarios" / "paper-fleet-80.yaml")
SECRET = "fedfleet-secret-4b1d"


def fedfleet(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    """``fedfleet ARGS`` through the console entry point (``sim.cli.main``), as a user runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), SECRET.upper().replace("-", "_"): SECRET, **(env or {})}
    return subprocess.run([sys.executable, "-c", "from sim.cli import main; main()", *args], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_clean(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, one ``error:`` line on stderr naming every needle, no traceback."""
    err = res.stderr
    assert res.returncode == code, (res.returncode, res.stdout, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("INFO", "WARNING"))]
    assert lines and lines[0].startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


# ---- item 4: errors that leak nothing -------------------------------------------------------------

def test_trace_at_proc_self_environ_names_the_file_and_prints_no_environment() -> None:
    res = fedfleet("validate", PAPER, "--set", "network.classes.near.trace=/proc/self/environ")
    err = assert_clean(res, 2, "network.classes.near.trace", "/proc/self/environ", "not a time_s,mbps CSV")
    assert SECRET not in err and "PATH=" not in err


def test_trace_at_etc_passwd_quotes_no_line_of_it() -> None:
    res = fedfleet("validate", PAPER, "--set", "network.classes.near.trace=/etc/passwd")
    err = assert_clean(res, 2, "network.classes.near.trace", "not a time_s,mbps CSV")
    first = Path("/etc/passwd").read_text().splitlines()[0]
    assert first not in err and "root:" not in err


def test_availability_trace_quotes_at_most_an_escaped_excerpt(tmp_path: Path) -> None:
    trace = tmp_path / "avail.csv"
    key = "\x1b[31m" + "A" * 5000
    trace.write_text(f"device,start_s,end_s\n{key},0,10\n")
    res = fedfleet("validate", QUICK, "--set", "dynamics.availability.kind=trace",
                   "--set", f"dynamics.availability.trace={trace}")
    err = assert_clean(res, 2, "dynamics.availability.trace", "unknown device or group")
    assert "\x1b" not in err and "A" * 41 not in err and "\\x1b" in err


def test_excerpt_is_short_printable_and_marks_the_cut() -> None:
    assert excerpt("abc") == "'abc'"
    long = excerpt("x\n" * 100)
    assert long.endswith("…'") and "\n" not in long and long.count("x") == 20


# ---- item 5: offline by construction --------------------------------------------------------------

def test_learning_sets_the_offline_environment_before_huggingface_hub_reads_it() -> None:
    code = "import learning, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "True", res.stderr


def test_uncached_hub_model_fails_in_seconds_without_touching_the_network(tmp_path: Path) -> None:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(  # any connection attempt is recorded and refused
        "import socket, os\n"
        "def _refuse(self, *a, **k):\n"
        "    open(os.environ['FEDFLEET_NET_LOG'], 'a').write('connect\\n')\n"
        "    raise OSError('network disabled by the test')\n"
        "socket.socket.connect = _refuse\n"
        "socket.socket.connect_ex = _refuse\n")
    log = tmp_path / "net.log"
    t0 = time.monotonic()
    res = fedfleet("run", QUICK, "--set", "learning.kind=real", "--set", "learning.model=bert-base-uncased",
                   "--out", str(tmp_path / "out"), cwd=tmp_path,
                   env={"PYTHONPATH": f"{guard}{os.pathsep}{ROOT}", "FEDFLEET_NET_LOG": str(log),
                        "HF_HOME": str(tmp_path / "hf")})
    elapsed = time.monotonic() - t0
    assert_clean(res, 2, "learning.model", "not available offline", "local folder", "learning.allow_download: true")
    assert elapsed < 10, elapsed
    assert not log.exists(), "a network connection was attempted"
    assert not (tmp_path / "out").exists()


# ---- item 6: clean errors from every command ------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "a/b", ".."])
def test_sweep_name_that_is_a_path_is_bad_input(tmp_path: Path, name: str) -> None:
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(f"base: {QUICK}\nname: '{name}'\nmatrix:\n  training.local_steps: [2]\nseeds: [1]\n")
    res = fedfleet("sweep", str(sweep), "--out", str(tmp_path / "out"), "-q")
    assert_clean(res, 2, "invalid sweep", "name:", "no path separators")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("sweep") / "sw.yaml"
    p.write_text(f"base: {QUICK}\nname: ok\nset:\n  training.rounds: 2\nmatrix:\n  training.local_steps: [2]\n"
                 "seeds: [1]\n")
    return p


def test_sweep_out_at_a_file_is_bad_input(tmp_path: Path, sweep_file: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("keep")
    assert_clean(fedfleet("sweep", str(sweep_file), "--out", str(f), "-q"), 2, "--out", "not a directory")
    assert f.read_text() == "keep"


def test_sweep_out_at_an_unwritable_path_is_bad_input(sweep_file: Path) -> None:
    assert_clean(fedfleet("sweep", str(sweep_file), "--out", "/proc/self/fedfleet-out", "-q"), 2, "--out",
                 "/proc/self/fedfleet-out")


def test_run_out_at_a_file_is_bad_input_without_pointing_to_a_status_file(tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("keep")
    err = assert_clean(fedfleet("run", QUICK, "--set", "training.rounds=2", "--out", str(f), "-q"), 2,
                       "--out", "not a directory")
    assert "status.json" not in err and f.read_text() == "keep"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    res = fedfleet("run", QUICK, "--set", "training.rounds=2", "--set", "output.plots=false", "--out", str(out), "-q")
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


def test_plot_of_a_truncated_rounds_parquet_is_bad_input(tmp_path: Path, finished_run: Path) -> None:
    import shutil  # noqa: PLC0415

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with open(run / "rounds.parquet", "r+b") as f:
        f.truncate(100)
    assert_clean(fedfleet("plot", str(run)), 2, f"{run}/rounds.parquet: not a readable parquet file")


def test_compare_of_a_corrupt_summary_names_the_file_and_quotes_nothing(tmp_path: Path, finished_run: Path) -> None:
    import shutil  # noqa: PLC0415

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "summary.json").write_text(f"\x1b[2J{{ {SECRET}")
    err = assert_clean(fedfleet("compare", str(run)), 2, f"{run}/summary.json: not a readable JSON file")
    assert SECRET not in err and "\x1b" not in err


def test_report_out_under_proc_is_bad_input(finished_run: Path) -> None:
    assert_clean(fedfleet("report", str(finished_run), "--out", "/proc/self/r.html"), 2, "--out",
                 "/proc/self/r.html")


def test_a_fifo_in_a_results_directory_is_never_opened(tmp_path: Path) -> None:
    """A FIFO where summary.json should be would block a reader forever: it is not a run, exit 2 at once."""
    d = tmp_path / "fifo-run"
    d.mkdir()
    os.mkfifo(d / "summary.json")  # not a regular file: refused, never opened (it would block)
    res = fedfleet("compare", str(d), timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr


def test_an_unhandled_error_is_one_bounded_line_and_debug_shows_the_traceback() -> None:
    """The entry point's last line of defence (sim.cli.main): any error no command handled is exit 1 with one
    escaped line of at most ~300 characters; ``fedfleet --debug COMMAND`` shows the traceback instead."""
    code = ("import sim.cli as c, sim.views.compare as v\n"
            "def boom(*a, **k): raise RuntimeError('x' * 1000 + '\\x1b[2J')\n"
            "v.compare_paths = boom\nc.main()")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet, loud = (subprocess.run([sys.executable, "-c", code, *extra, "compare", str(ROOT)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=60) for extra in ([], ["--debug"]))
    err = assert_clean(quiet, 1, "failed: RuntimeError", "--debug for a traceback")
    assert len(err) < 400 and "\x1b" not in err
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "boom" in loud.stderr


# ---- item 7: Python tags in --set -----------------------------------------------------------------

def test_python_tag_in_set_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    res = fedfleet("run", QUICK, "--set", 'output.dir=!!python/object/apply:os.system ["id"]', cwd=tmp_path)
    assert_clean(res, 2, "--set output.dir", "YAML tags")
    assert list(tmp_path.iterdir()) == []


def test_any_tag_in_set_is_refused_but_a_quoted_one_is_text() -> None:
    assert_clean(fedfleet("validate", QUICK, "--set", "name=!foo bar"), 2, "--set name", "YAML tags")
    assert fedfleet("validate", QUICK, "--set", "name='!x'").returncode == 2  # '!x' is not a valid name: text
    ok = fedfleet("validate", QUICK, "--set", "output.dir='!!python/x'")
    assert ok.returncode == 0, ok.stderr


def test_python_tag_in_a_scenario_file_is_refused(tmp_path: Path) -> None:
    sc = tmp_path / "tag.yaml"
    sc.write_text('output:\n  dir: !!python/object/apply:os.system ["id"]\n')
    assert_clean(fedfleet("validate", str(sc)), 2, "Python object tags are not allowed")


# ---- item 9: bounds -------------------------------------------------------------------------------

def test_rtt_of_1e308_fails_validation_naming_the_key_and_range() -> None:
    assert_clean(fedfleet("validate", PAPER, "--set", "network.rtt_ms=1e308"), 2, "network.rtt_ms",
                 "less than or equal to 10000")


@pytest.mark.parametrize("key,value", [("network.classes.near.mbps", "[1, 1e12]"), ("training.time_budget_s", "1e300"),
                                       ("round.deadline_s", "1.0e20"), ("learning.test_size", "10000000000")])
def test_other_physical_keys_are_bounded(key: str, value: str) -> None:
    assert_clean(fedfleet("validate", PAPER, "--set", f"{key}={value}"), 2, key.split(".")[-1])


UNBOUNDED_BY_DESIGN = {
    "fleet.groups.placement": "relative shares of a group over classes, normalised by their sum; finite and >= 0",
}


def _upper_bound(ann: Any) -> float | None:
    """The tightest ``le``/``lt`` in the metadata of ``ann`` and of the types inside it (None: none)."""
    found = []
    for meta in getattr(ann, "__metadata__", ()) or ():
        for m in [meta, *(getattr(meta, "metadata", None) or [])]:
            found += [v for v in (getattr(m, "le", None), getattr(m, "lt", None)) if v is not None]
    for a in getattr(ann, "__args__", ()) or ():
        if not isinstance(a, (str, int, float)):
            b = _upper_bound(a)
            if b is not None:
                found.append(b)
    return min(found) if found else None


def _numeric_fields(model: type[BaseModel], prefix: str = "", seen: set | None = None) -> list[tuple[str, Any]]:
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    out = []
    for name, f in model.model_fields.items():
        key = prefix + name
        if numeric_annotation(f.annotation):
            bounds = [b for m in f.metadata for b in (getattr(m, "le", None), getattr(m, "lt", None)) if b is not None]
            inner = _upper_bound(f.annotation)
            bounds += [inner] if inner is not None else []
            out.append((key, min(bounds) if bounds else None))
        for sub in _models_in(f.annotation):
            out += _numeric_fields(sub, key + ".", seen)
    return out


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in getattr(ann, "__args__", ()) or () for m in _models_in(a)]


def test_every_numeric_scenario_key_has_a_finite_upper_bound() -> None:
    fields = _numeric_fields(Scenario)
    assert len(fields) > 60  # the walk reaches the nested sections
    unbounded = [k for k, b in fields if (b is None or not math.isfinite(b)) and k not in UNBOUNDED_BY_DESIGN]
    assert not unbounded, f"numeric keys without a finite upper bound: {unbounded}"
    assert all(k in dict(fields) for k in UNBOUNDED_BY_DESIGN)
