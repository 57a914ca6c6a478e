"""fedfleet's discrete-event core: scenario schema, engine, records, run store, verify, CLI.

Subpackages: :mod:`sim.studies` (sweeps, comparisons of policies, executors) and :mod:`sim.views`
(results API, comparison tables, plots, figures, HTML report, paper page).

Never imports torch: timing-only runs stay light (``python -c "import sim, devices"``).
"""

__version__ = "0.1.0"


def load_scenario(path, overrides=None):
    """Read, override and validate a scenario file; returns (Scenario, base directory)."""
    from sim.loader import load_scenario as _load  # noqa: PLC0415

    return _load(path, overrides)


def run(scenario, overrides=None, out=None):
    """Run a scenario (a file path, or a mapping like a scenario file's contents) and write its run
    directory under ``out`` (default: the scenario's ``output.dir``); returns its ``RunData``
    (``.scenario``, ``.summary``, ``.rounds``, ``.device_rounds``, ``.evals`` as pandas DataFrames).
    A scenario with ``policies:`` runs each policy into one comparison directory, as ``fedfleet run``
    does, and returns its ``Comparison`` (``.parent``, ``.table`` one row per policy, ``.failures``)."""
    from sim.runner import run_scenario  # noqa: PLC0415
    from sim.views.results import load_run as _load_run  # noqa: PLC0415

    if isinstance(scenario, dict):
        import copy  # noqa: PLC0415
        from pathlib import Path  # noqa: PLC0415

        from sim.loader import apply_override, validate  # noqa: PLC0415

        data = copy.deepcopy(scenario)
        for o in overrides or []:
            apply_override(data, o)
        sc, base = validate(data, "<dict>", Path.cwd()), Path.cwd()
    else:
        sc, base = load_scenario(scenario, overrides)
    if sc.policies:
        from sim.studies.policies import run_policies  # noqa: PLC0415

        return run_policies(sc, base, out)
    return _load_run(run_scenario(sc, base, out, progress=False).run_dir)


def load_run(run_dir):
    """A finished run directory as ``RunData`` (scenario dict, summary dict, DataFrames)."""
    from sim.views.results import load_run as _load_run  # noqa: PLC0415

    return _load_run(run_dir)


def load_sweep(sweep_dir):
    """A sweep directory as ``SweepData``: ``.index`` (one row per cell), ``.spec``, ``.runs()``."""
    from sim.views.results import load_sweep as _load_sweep  # noqa: PLC0415

    return _load_sweep(sweep_dir)


def load_comparison(*paths, target_acc=None, reference=None):
    """What ``fedfleet compare PATHS`` shows, as DataFrames: ``(runs, over_seeds)``. ``runs`` has one
    row per run (run directories, comparison directories, sweeps; columns as ``compare.csv`` plus
    ``group`` and ``seed``); ``over_seeds`` one row per policy (mean, std, n over seeds and the paired
    difference against ``reference`` with its 95% t interval) when some policy ran several seeds, else
    None. ``attrs['target_accuracy']`` and ``attrs['target_source']`` say which target was used."""
    from sim.views.compare import compare_paths  # noqa: PLC0415

    return compare_paths(list(paths), target_acc, reference)


def figures(path, *, target_acc=None, reference=None, rounds=None, report=False):
    """The figures ``fedfleet plot PATH`` draws (a run, comparison or sweep directory), as matplotlib
    Figures for a notebook: a dict from the file stem (``accuracy_vs_time``, ``heatmap_fedspine``,
    ``timeline_fedspine``, ``sweep_final_accuracy``, ...) to its open Figure; nothing is written.
    ``rounds``: the timelines' rounds. ``report=True`` also writes ``PATH/report.html`` (with the figures
    ``fedfleet plot`` left in ``PATH/figures``, if any) and returns its path under the key ``report``."""
    from pathlib import Path  # noqa: PLC0415

    from sim.views.figures import plot_runs, resolve_reference  # noqa: PLC0415
    from sim.views.results import collect, kind_of, load_sweep  # noqa: PLC0415

    path = Path(path)
    runs = collect(path)
    ref, _ = resolve_reference(runs, reference)
    keep: dict = {}
    plot_runs(runs, path / "figures", sweep=load_sweep(path) if kind_of(path) == "sweep" else None,
              target_acc=target_acc, reference=ref, timeline_rounds=rounds, keep=keep)
    if report:
        from sim.views.report import existing_figures, write_report  # noqa: PLC0415

        keep["report"] = write_report(path, existing_figures(path), target_acc=target_acc)
    return keep


__all__ = ["__version__", "figures", "load_comparison", "load_run", "load_scenario", "load_sweep", "run"]
