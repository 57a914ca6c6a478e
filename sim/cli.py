"""``fedfleet`` command line.

Exit codes: 0 success; 2 bad input (scenario file, YAML, schema, override, an output path that cannot be
written, a results file that cannot be read), with one line and no traceback; 1 a run that failed (one
line; ``--debug`` anywhere on the command line shows the traceback). Messages name files but never quote
more than a short, escaped excerpt of their contents.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="fedfleet: simulate heterogeneous Jetson fleets doing federated LoRA fine-tuning with pruning.")

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a key: dotted.key=value (repeatable)")]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of any error "
                                                            "(fedfleet --debug COMMAND ...)")] = False) -> None:
    """fedfleet: simulate heterogeneous Jetson fleets doing federated LoRA fine-tuning with pruning."""
    # read by main(), which sees the whole command line; nothing to do here


def _logging(level: int) -> None:
    """Log through rich's handler on the progress bars' console (sim.progress), so lines never break a bar."""
    from sim.progress import setup_logging  # noqa: PLC0415

    setup_logging(level)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _writable_dir(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) or exit 2 naming ``what`` (the option or key that chose it)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        _fail(f"{what} {path}: not a directory")
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        _fail(f"{what} {path}: cannot create a directory there ({getattr(e, 'strerror', None) or e})")
    if not os.access(path, os.W_OK | os.X_OK):
        _fail(f"{what} {path}: not writable")


def _one_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an unexpected error, on one line, control characters escaped, at most ``limit``
    characters (an error raised while reading a user file must not print the file back)."""
    text = f"{type(e).__name__}: {e}"
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


def _load(path: Path, sets: list[str] | None):
    from sim.loader import ScenarioError, load_scenario  # noqa: PLC0415

    try:
        return load_scenario(path, sets)
    except ScenarioError as e:
        _fail(str(e))


@app.command()
def validate(scenario: Path, set_: SetOpt = None) -> None:
    """Check a scenario file; print a one-line summary of the fleet."""
    sc, _ = _load(scenario, set_)
    groups = ", ".join(f"{g.count} {g.label}" for g in sc.fleet.groups)
    typer.echo(f"ok: {sc.name}: {sc.n_devices} devices ({groups}); model {sc.workload.model}; "
               f"{sc.training.rounds} rounds x {sc.training.local_steps} steps; "
               f"{'policies ' + ', '.join(sc.policies) if sc.policies else 'algorithm ' + sc.algorithm.name}; "
               f"round policy {sc.round.policy}; learning {sc.learning.kind}; seed {sc.seed}")


BackendOpt = Annotated[str, typer.Option(help="local (process pool) or ray")]
AddressOpt = Annotated[Optional[str], typer.Option(help="address of an existing Ray cluster (--backend ray)")]


@app.command()
def run(
    scenario: Annotated[Optional[Path], typer.Argument(help="scenario YAML (omit with --resume)")] = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="results root (default: output.dir of the scenario)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this run directory from its last "
                                                        "checkpoint (results as if never interrupted), or the "
                                                        "comparison in this directory (finished policies kept)")] = None,
    workers: Annotated[int, typer.Option(help="policies run in parallel (a scenario with policies:)")] = 1,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar, only the run directory")] = False,
    debug: Annotated[bool, typer.Option(help="show tracebacks of failed runs")] = False,
) -> None:
    """Run a scenario; writes results/<scenario>/<run id>/ and prints its path and headline figures.
    A scenario with policies: runs each policy as a cell (like a sweep's) into <run id>/<label>/."""
    _logging(logging.WARNING if quiet else logging.INFO)
    from sim.runner import scenario_of_run  # noqa: PLC0415

    if resume is not None:
        if scenario is not None or set_ or out is not None:
            _fail("--resume RUN_DIR takes no scenario, --set or --out: the run continues with its own scenario.yaml")
        sc, base = _resume_target(resume, scenario_of_run)
    elif scenario is None:
        _fail("missing the scenario file (or --resume RUN_DIR)")
    else:
        sc, base = _load(scenario, set_)
    if sc.policies:
        if resume is None:
            _writable_dir(out if out is not None else Path(sc.output.dir), "--out" if out is not None else "output.dir")
        return _run_policies(sc, base, out, resume, _executor(backend, workers, address), quiet)
    if workers != 1 or backend != "local" or address:
        _fail("--workers, --backend and --address run the policies of a scenario with policies:; this one has none")
    _run_single(sc, base, out, resume, quiet, debug)


def _run_single(sc, base, out: Path | None, resume: Path | None, quiet: bool, debug: bool) -> None:
    """One run (or the resume of one) and its headline figures."""
    from sim.checkpoint import CheckpointError  # noqa: PLC0415
    from sim.loader import ScenarioError  # noqa: PLC0415
    from sim.lock import LockError  # noqa: PLC0415
    from sim.runner import run_scenario  # noqa: PLC0415

    run_dir = resume if resume is not None else _new_run_dir(sc, out)
    try:
        res = run_scenario(sc, base, progress=not quiet and sc.output.progress,
                           run_dir=run_dir, resume=resume is not None)
    except (ScenarioError, CheckpointError, LockError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:  # noqa: BLE001 - report, don't dump, unless asked
        if debug:
            raise
        notes = "".join(f"\n{n}" for n in getattr(e, "__notes__", ()))
        status = run_dir / "status.json"
        where = f"see {status}; " if status.is_file() else ""
        _fail(f"run failed: {_one_line(e)} ({where}--debug for a traceback){notes}", 1)
    s = res.summary
    typer.echo(str(res.run_dir))
    if not quiet:
        idle = s["mean_idle_fraction"]
        from sim.views.results import stop_reason_words  # noqa: PLC0415

        typer.echo(f"{s['rounds_completed']} rounds ({stop_reason_words(s['stop_reason'])}), simulated {s['sim_time_s'] / 3600:.3f} h, "
                   f"mean round {s['mean_round_s']:.1f} s, mean idle {100 * idle:.1f}%, "
                   f"{(s['bytes_up_total'] + s['bytes_down_total']) / 1e6:.1f} MB moved, "
                   f"host {s['host']['host_time_s']:.2f} s" if idle is not None else f"{s['rounds_completed']} rounds")


def _new_run_dir(sc, out: Path | None) -> Path:
    """A fresh run directory under ``--out`` (or the scenario's output.dir); exit 2 if it cannot be made."""
    from sim.runner import run_id_of  # noqa: PLC0415
    from sim.store import new_run_dir  # noqa: PLC0415

    root, what = (out, "--out") if out is not None else (Path(sc.output.dir), "output.dir")
    _writable_dir(root, what)
    try:
        return new_run_dir(root, sc.name or "scenario", run_id_of(sc))
    except OSError as e:
        _fail(f"{what} {root}: cannot create the run directory ({e.strerror or e})")


def _resume_target(run_dir: Path, scenario_of_run):
    """The scenario of ``run_dir`` if it can be resumed: it exists and did not finish; a single run also
    needs a checkpoint, a comparison (a scenario with policies) the ``base_dir`` its status recorded."""
    import json  # noqa: PLC0415

    from sim.checkpoint import FILENAME, CheckpointError, read_header  # noqa: PLC0415
    from sim.loader import ScenarioError  # noqa: PLC0415
    from sim.store import read_regular  # noqa: PLC0415

    if not run_dir.is_dir():
        _fail(f"--resume {run_dir}: no such run directory")
    try:
        status = json.loads(read_regular(run_dir / "status.json", 1 << 20)).get("status")  # never a FIFO
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "finished":
        _fail(f"--resume {run_dir}: this run already finished; nothing to resume")
    from sim.studies.policies import comparison_base_dir  # noqa: PLC0415

    try:
        sc, base = scenario_of_run(run_dir, comparison_base_dir(run_dir))
        if sc.policies:
            return sc, base
        read_header(run_dir / FILENAME, payload=False)  # the payload is read and hashed once, by the resume
    except (ScenarioError, CheckpointError) as e:
        _fail(f"--resume {run_dir}: {e}")
    return sc, base


def _executor(backend: str, workers: int | None, address: str | None):
    """The cell executor of ``--backend``/``--workers``/``--address`` (exit 2 on a bad combination)."""
    from sim.studies.executors import make_executor  # noqa: PLC0415

    from sim.studies.executors import BACKENDS  # noqa: PLC0415
    from sim.views.results import did_you_mean  # noqa: PLC0415

    if workers is not None and workers < 1:
        _fail(f"--workers {workers}: must be at least 1")
    if backend not in BACKENDS:
        _fail(f"--backend {backend!r}; allowed: {', '.join(BACKENDS)}{did_you_mean(backend, list(BACKENDS))}")
    try:
        return make_executor(backend, workers, address)
    except ValueError as e:
        _fail(str(e))


def _run_policies(sc, base, out: Path | None, resume: Path | None, executor, quiet: bool) -> None:
    """Every policy of ``sc`` as a cell of one comparison directory; prints it and the table."""
    from sim.progress import CellProgress  # noqa: PLC0415
    from sim.studies.cells import StudyInterrupted  # noqa: PLC0415
    from sim.lock import LockError  # noqa: PLC0415
    from sim.studies.policies import run_policies  # noqa: PLC0415
    from sim.views.compare import format_table  # noqa: PLC0415

    try:
        with CellProgress(len(sc.policies), enabled=not quiet and sc.output.progress and sys.stderr.isatty()) as bar:
            res = run_policies(sc, base, out, executor, parent=resume, on_cell=bar.update)
    except LockError as e:  # another process writes this comparison
        _fail(str(e))
    except StudyInterrupted as e:
        _fail(str(e), 130)
    typer.echo(str(res.parent))
    typer.echo(format_table(res.table, "text"), nl=False)
    if res.failures:
        _fail("policies failed: " + "; ".join(f"{k}: {v}" for k, v in res.failures.items()), 1)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run directories, comparison directories (their child runs) "
                                                   "or sweep directories (their finished cells)")],
    target_acc: Annotated[Optional[float], typer.Option("--target-acc", help="accuracy for the time-to-target column (0-1)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, md, csv or latex (booktabs)")] = "text",
    reference: Annotated[Optional[str], typer.Option("--reference", help="policy the paired differences over "
                                                     "seeds are taken against (default: the first)")] = None,
) -> None:
    """One table over runs: final accuracy, simulated time to a target accuracy, mean idle fraction,
    bytes communicated, final sparsity. Runs of one policy with several seeds (a sweep, or comparisons
    run with different seeds) are pooled: mean ± std and n, and paired differences against --reference
    with a 95% t interval ('within noise' when it contains 0)."""
    from sim.views.compare import FORMATS, compare_paths, format_seed_table, format_table  # noqa: PLC0415

    if fmt not in FORMATS:
        from sim.views.results import did_you_mean  # noqa: PLC0415

        _fail(f"--format {fmt!r}; allowed: {', '.join(FORMATS)}{did_you_mean(fmt, list(FORMATS))}")
    if target_acc is not None and not 0.0 <= target_acc <= 1.0:
        _fail(f"--target-acc {target_acc}: must be a fraction in [0, 1]")
    try:
        table, pooled = compare_paths(runs, target_acc, reference)
        per_run = table.drop(columns=["group", "seed"])
        per_run.attrs = dict(table.attrs)
        text = format_seed_table(pooled, fmt) if pooled is not None else format_table(per_run, fmt)
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        _fail(str(e))
    typer.echo(text, nl=False)


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="sweep YAML: base, matrix, seeds (see scenarios/sweeps/)")],
    backend: BackendOpt = "local",
    workers: Annotated[Optional[int], typer.Option(help="parallel cells (default: CPU count; ray: CPUs of a local Ray)")] = None,
    address: AddressOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="results root (default: output.dir of the base scenario)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar, only the sweep directory")] = False,
) -> None:
    """Run every cell of a sweep (matrix x seeds); a rerun resumes, skipping finished cells.
    Writes OUT/<sweep name>/sweep.parquet (one row per cell) and cells/<cell id>/ run directories."""
    _logging(logging.WARNING if quiet else logging.INFO)
    from sim.loader import ScenarioError  # noqa: PLC0415
    from sim.lock import LockError  # noqa: PLC0415
    from sim.progress import CellProgress  # noqa: PLC0415
    from sim.studies.cells import StudyInterrupted  # noqa: PLC0415
    from sim.studies.sweep import load_sweep_file  # noqa: PLC0415
    from sim.studies.sweep_run import run_sweep  # noqa: PLC0415

    try:
        spec, cells = load_sweep_file(sweep_file)
    except ScenarioError as e:
        _fail(str(e))
    executor = _executor(backend, workers, address)
    root = out if out is not None else Path(cells[0].scenario.output.dir)
    _writable_dir(root, "--out" if out is not None else "output.dir")
    try:
        with CellProgress(len(cells), enabled=not quiet and sys.stderr.isatty()) as bar:
            sweep_dir = run_sweep(spec, cells, root, executor, base_dir=sweep_file.resolve().parent,
                                  on_cell=bar.update)
    except LockError as e:  # another process writes this sweep directory
        _fail(str(e))
    except StudyInterrupted as e:
        _fail(str(e), 130)
    import json  # noqa: PLC0415

    st = json.loads((sweep_dir / "status.json").read_text())
    typer.echo(str(sweep_dir))
    if not quiet:
        typer.echo(f"{st['cells']} cells: {st['finished']} finished ({st['skipped_already_finished']} from an "
                   f"earlier run), {st['failed']} failed")
    if st["failed"]:
        _fail("cells failed: " + "; ".join(f"{k}: {v}" for k, v in list(st["failures"].items())[:5])
              + f" (tracebacks in {sweep_dir}/cells/<cell id>/traceback.txt)", 1)


TargetOpt = Annotated[Optional[float], typer.Option("--target-acc", help="accuracy for time-to-target (0-1)")]


ReferenceOpt = Annotated[Optional[str], typer.Option(
    help="policy whose speed-up over the others is annotated (default fedspine; a name matching no policy "
         "is refused)")]


def _figures(path: Path, target_acc: float | None, rounds: list[int] | None, reference: str | None) -> list[Path]:
    """The figures of a results directory; a file that cannot be read, or a figures folder that cannot be
    written, is exit 2 naming the file."""
    from sim.progress import FigureProgress  # noqa: PLC0415
    from sim.views.figures import plot_runs, resolve_reference  # noqa: PLC0415
    from sim.views.results import ResultsError, collect, kind_of, load_sweep  # noqa: PLC0415

    if target_acc is not None and not 0.0 <= target_acc <= 1.0:
        _fail(f"--target-acc {target_acc}: must be a fraction in [0, 1]")
    try:
        kind = kind_of(path)
        runs = collect(path)
    except (FileNotFoundError, NotADirectoryError, ResultsError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or path}: cannot read ({e.strerror})")
    if not runs:
        _fail(f"{path}: no finished run to plot")
    try:
        reference, note = resolve_reference(runs, reference)
    except ValueError as e:
        _fail(str(e))
    try:
        sweep = load_sweep(path) if kind == "sweep" else None
        with FigureProgress(enabled=sys.stderr.isatty()) as bar:
            written = plot_runs(runs, path / "figures", sweep=sweep, target_acc=target_acc, reference=reference,
                                timeline_rounds=rounds or None, progress=bar)
        if note:  # only once the figures exist: an error stays the one line on stderr
            typer.echo(f"note: {note}", err=True)
        return written
    except ResultsError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or path / 'figures'}: cannot {'write' if e.filename else 'read or write'} ({e.strerror})")


@app.command()
def plot(
    path: Annotated[Path, typer.Argument(help="a run, comparison or sweep directory")],
    target_acc: TargetOpt = None,
    round_: Annotated[Optional[list[int]], typer.Option("--round", help="round for the timelines (repeatable; "
                                                                       "default first, middle, last)")] = None,
    reference: ReferenceOpt = None,
) -> None:
    """Paper-style figures (PNG and PDF) into DIR/figures/: accuracy vs simulated time, time to target,
    per-device-type times, pruning/rank heatmaps, timelines, bytes, memory, sweep sensitivity."""
    _logging(logging.WARNING)
    written = _figures(path, target_acc, round_, reference)
    typer.echo(str(path / "figures"))
    typer.echo(f"{len(written)} files: " + ", ".join(sorted({p.stem for p in written})))


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="a run, comparison or sweep directory")],
    target_acc: TargetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="HTML file (default DIR/report.html)")] = None,
    reference: ReferenceOpt = None,
    round_: Annotated[Optional[list[int]], typer.Option("--round", help="round for the timelines (repeatable); "
                                                                       "redraws the figures")] = None,
    replot: Annotated[bool, typer.Option("--replot", help="redraw DIR/figures/ even if fedfleet plot made them")]
    = False,
) -> None:
    """One self-contained HTML page: the findings, the figures inline, the tables, the resolved scenarios.
    Figures already in DIR/figures/ (from fedfleet plot, e.g. with --round) are embedded as they are; they are
    drawn only when missing, or with --round, --replot, --target-acc or --reference."""
    _logging(logging.WARNING)
    from sim.views.report import existing_figures, write_report  # noqa: PLC0415

    if out is not None:
        _report_target(out)
    kept = existing_figures(path)
    redraw = replot or round_ or target_acc is not None or reference is not None or not kept
    written = _figures(path, target_acc, round_, reference) if redraw else kept
    if not redraw:
        typer.echo(f"note: embedding the {len(kept)} figures already in {path / 'figures'} "
                   "(--replot to redraw them)", err=True)
    try:
        page = write_report(path, [p for p in written if p.suffix == ".png"], out, target_acc=target_acc)
    except OSError as e:
        _fail(f"--out {e.filename or out or path / 'report.html'}: cannot write ({e.strerror})")
    typer.echo(str(page))


def _report_target(out: Path) -> None:
    """Exit 2 unless ``out`` can be written as a page: its folder exists and is writable, and ``out`` is
    absent or a regular file."""
    parent = out.parent
    if not parent.is_dir():
        _fail(f"--out {out}: no such directory {parent}")
    if out.exists() and not out.is_file():
        _fail(f"--out {out}: not a regular file")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        _fail(f"--out {out}: not writable")


@app.command()
def calibrate(
    measurements: Annotated[Optional[Path], typer.Argument(help="CSV of measured step times (default: the shipped "
                                                           "devices/data/measurements.csv)")] = None,
    check: Annotated[bool, typer.Option("--check", help="fedfleet's prediction for every shipped measurement, "
                                                         "before and after fitting")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="write the fitted calibration blocks (YAML)")] = None,
) -> None:
    """Fit per-board speed factors to measured step times (least squares in log space) and print
    predicted vs measured, before and after, with ratios and residuals per point and per board."""
    from devices.calibration import CalibrationError, user_calibration_text  # noqa: PLC0415
    from devices.calibration_check import check as check_points  # noqa: PLC0415
    from devices.calibration_check import format_check  # noqa: PLC0415
    from devices.measurements import SHIPPED_CSV, read_measurements  # noqa: PLC0415
    from sim.store import atomic_write_text  # noqa: PLC0415

    if check and measurements is not None:
        _fail("--check reads the shipped measurements; give either --check or a MEASUREMENTS.csv")
    path = measurements or SHIPPED_CSV
    try:
        ms = read_measurements(path)
        typer.echo(format_check(check_points(ms)))
        if out is not None:
            atomic_write_text(out, user_calibration_text(ms, path.name))
            typer.echo(f"wrote {out}")
    except (ValueError, CalibrationError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or path}: cannot {'write' if out is not None and e.filename == str(out) else 'read'} "
              f"({e.strerror or e})")


@app.command()
def devices(
    type_: Annotated[Optional[str], typer.Option("--type", help="only this device type")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or csv")] = "table",
) -> None:
    """The catalog: every device type and power mode with its peaks and source."""
    from devices.catalog import load_catalog  # noqa: PLC0415

    cat = load_catalog()
    if type_ is not None and type_ not in cat:
        _fail(f"unknown device type {type_!r}; allowed: {', '.join(cat)}")
    if fmt not in ("table", "csv"):
        _fail(f"--format {fmt!r}; allowed: table, csv")
    header = ["type", "mode", "default", "cpus", "cpu_ghz", "gpu_sms", "gpu_mhz", "fp32_tflops", "fp16_tflops",
              "fp16_path", "mem_bw_gbps", "ram_gib", "source"]
    rows = []
    for t in cat.values():
        if type_ is not None and t.type != type_:
            continue
        for m in t.modes:
            rows.append([t.type, m.name, "*" if m.is_default else "", str(m.cpu_cores_online), f"{m.cpu_max_ghz:g}",
                         str(m.gpu_sms), f"{m.gpu_max_mhz:g}", f"{m.fp32_peak_flops / 1e12:.3f}",
                         f"{m.fp16_peak_flops / 1e12:.2f}", "tensor" if m.fp16_on_tensor_cores else "half2",
                         f"{m.mem_bw_bytes_per_s / 1e9:.1f}", f"{t.ram_bytes / 2**30:g}", m.source])
    if fmt == "csv":
        import csv  # noqa: PLC0415

        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(rows)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="fedfleet device catalog (peaks derived from NVIDIA's Jetson datasheets, see the source "
                        "column; * = default mode)")
    for h in header:
        table.add_column(h, justify="right" if h not in ("type", "mode", "source", "fp16_path") else "left")
    for r in rows:
        table.add_row(*r)
    Console(width=200).print(table)


@app.command()
def profile(scenario: Path, set_: SetOpt = None) -> None:
    """Per group and power mode: step time, round time and memory fit of the scenario's first-round plan,
    and the share of log-round-time variance that is per-round noise (devices/noise.py)."""
    sc, base = _load(scenario, set_)
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from devices.completion import completion_times  # noqa: PLC0415
    from devices.cost import plan_cost  # noqa: PLC0415
    from devices.timing import ModeTable  # noqa: PLC0415
    from sim.engine import Simulation  # noqa: PLC0415
    from sim.loader import ScenarioError  # noqa: PLC0415

    try:
        sim = Simulation(sc, base)  # fleet, workload and strategy exactly as a run builds them
    except ScenarioError as e:
        _fail(str(e))
    import numpy as np  # noqa: PLC0415

    from algorithms.base import FleetView  # noqa: PLC0415

    w, fleet = sim.workload, sim.fleet
    fleet.begin_round(0)
    plan = sim.strategy.plan(0, FleetView(0, fleet.ids, np.zeros(fleet.n)), np.array([0]))[0]
    table = Table(title=f"{sc.name}: {w.arch.name}, round-0 plan of device {fleet.ids[0]}: p={plan.prune_ratio:.2f}, "
                        f"r={plan.lora_rank}, b={plan.batch_size}, s={w.seq_len}, tau={plan.local_steps}; "
                        f"no background load")
    for h in ("group", "mode", "precision", "TFLOP/s achieved", "step s", "tau x step s", "up+down s @10 Mbit/s",
              "memory GiB", "capacity GiB", "fits"):
        table.add_column(h)
    for prof, label in zip(fleet.profiles, fleet.group_labels):
        c = plan_cost(w, plan, prof.precision)
        n = len(prof.modes)  # the round time a run's clock uses, per mode, at 10 Mbit/s both ways and load 1
        t = completion_times(ModeTable.build([(prof, m) for m in prof.modes]), np.arange(n),
                             np.full(n, c.flops_per_step), np.full(n, c.bytes_moved), np.full(n, float(c.kernels)),
                             np.ones(n), plan.local_steps, c.bytes_down, c.bytes_up, np.full(n, 10.0),
                             np.full(n, 10.0), sim.link.latency_s, sim.link.efficiency)
        for i, m in enumerate(prof.modes):
            table.add_row(label, m.name, prof.precision, f"{prof.effective_flops(m) / 1e12:.3f}", f"{t.step_s[i]:.3f}",
                          f"{t.compute_s[i]:.1f}", f"{t.download_s[i] + t.upload_s[i]:.2f}",
                          f"{prof.peak_memory_bytes(c) / 2**30:.2f}", f"{prof.capacity_bytes / 2**30:.1f}",
                          "yes" if prof.fits(c) else "NO (OOM)")
    Console(width=200).print(table)
    from devices.noise import one_lag_split  # noqa: PLC0415
    from sim.fleet import round_time_noise  # noqa: PLC0415

    times = round_time_noise(sc, base, w, plan, sim.link.latency_s, sim.link.efficiency)
    lag = one_lag_split(times.y)
    typer.echo(f"noise fraction of log round time: {times.noise_fraction:.3f} (per-round noise a policy cannot learn: "
               f"1 - R^2 of log t[i,r] predicted from the state round r-1 hands over; this plan on every device, "
               f"{times.y.shape[1]} rounds, this seed; devices/noise.py)")
    typer.echo(f"  from round times alone (one-lag autoregression, slope {lag.slope:.3f}): {lag.noise_fraction:.3f}")


@app.command()
def schema(fmt: Annotated[str, typer.Option("--format", help="text, md or json (a JSON Schema of the scenario "
                                                          "for editor completion)")] = "text") -> None:
    """Every scenario key with its default and meaning; --format json: the JSON Schema of a scenario file."""
    from sim.scenario import Scenario, schema_rows  # noqa: PLC0415
    from sim.views.results import did_you_mean  # noqa: PLC0415

    if fmt not in ("text", "md", "json"):
        _fail(f"--format {fmt!r}; allowed: text, md, json{did_you_mean(fmt, ['text', 'md', 'json'])}")
    if fmt == "json":
        doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Scenario.model_json_schema()}
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    rows = schema_rows()
    if fmt == "md":
        typer.echo("| key | default | meaning |\n|---|---|---|")
        for k, d, desc in rows:
            typer.echo(f"| `{k}` | {('`' + d + '`') if d else ''} | {desc.replace('|', '/')} |")
        return
    width = max(len(k) for k, _, _ in rows)
    for k, d, desc in rows:
        typer.echo(f"{k:<{width}}  {d:<24} {desc}")


@app.command()
def strategies(name: Annotated[Optional[str], typer.Argument(help="a strategy: its parameters with their "
                                                                  "meaning and allowed values")] = None) -> None:
    """Registered strategies and their parameters; with NAME, each parameter's default, allowed values and
    meaning."""
    from algorithms.registry import get_strategy_class, strategy_names  # noqa: PLC0415
    from sim.views.results import did_you_mean  # noqa: PLC0415

    names = strategy_names()
    if name is not None and name not in names:
        _fail(f"unknown strategy {name!r}; allowed: {', '.join(names)}{did_you_mean(name, names)}")
    for n in [name] if name else names:
        cls = get_strategy_class(n)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0].removeprefix(f"``{n}``: ")
        typer.echo(f"{n}: {doc}")
        props = cls.Params.model_json_schema().get("properties", {})
        for k, f in cls.Params.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default
            if name is None:
                typer.echo(f"    {k} = {default!r}")
                continue
            typer.echo(f"    {k} = {default!r}\n        allowed: {allowed_values(props.get(k, {}))}"
                       + (f"\n        meaning: {f.description}" if f.description else ""))


def allowed_values(prop: dict) -> str:
    """What a JSON Schema property accepts, in words: enum choices, number ranges, lists, null."""
    if "enum" in prop:
        return "one of " + ", ".join(map(str, prop["enum"]))
    if "anyOf" in prop:
        return " or ".join(allowed_values(p) for p in prop["anyOf"])
    if "$ref" in prop:
        return "a mapping (" + prop["$ref"].rsplit("/", 1)[-1] + ")"
    kind = prop.get("type")
    if kind in ("number", "integer"):
        lo = ("(" if "exclusiveMinimum" in prop else "[") + str(prop.get("exclusiveMinimum", prop.get("minimum", "-inf")))
        hi = str(prop.get("exclusiveMaximum", prop.get("maximum", "inf"))) + (")" if "exclusiveMaximum" in prop else "]")
        return f"{'an integer' if kind == 'integer' else 'a number'} in {lo}, {hi}"
    if kind == "array":
        return "a list of " + allowed_values(prop.get("items", {})).removeprefix("a ").removeprefix("an ")
    if kind == "object":
        return "a mapping"
    return {"null": "null", "string": "a string", "boolean": "true or false"}.get(str(kind), "any value")


def main() -> None:
    """The ``fedfleet`` entry point: any error a command did not handle is one line (exit 2 for an OS error
    on a path the user gave, 1 otherwise), never a traceback unless ``--debug`` is on the command line."""
    try:
        app()
    except Exception as e:  # noqa: BLE001 - the last line of defence; typer's own exits are SystemExit
        if "--debug" in sys.argv[1:]:
            raise
        if isinstance(e, OSError):
            typer.echo(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or _one_line(e)}", err=True)
            raise SystemExit(2) from None
        typer.echo(f"error: failed: {_one_line(e)} (--debug for a traceback)", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
