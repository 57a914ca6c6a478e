"""fedfleet's discrete-event core: scenario schema, engine, records, run store, verify, CLI.

Never imports torch: timing-only runs stay light (``python -c "import sim, devices"``).
"""

__version__ = "0.1.0"


def load_scenario(path, overrides=None):
    """Read, override and validate a scenario file; returns (Scenario, base directory)."""
    from sim.loader import load_scenario as _load  # noqa: PLC0415

    return _load(path, overrides)


def run(path, overrides=None, out=None):
    """Run a scenario file and write its run directory; returns a ``RunResult``."""
    from sim.runner import run_scenario  # noqa: PLC0415

    sc, base = load_scenario(path, overrides)
    return run_scenario(sc, base, out, progress=False)


__all__ = ["__version__", "load_scenario", "run"]
