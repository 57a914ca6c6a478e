"""The README's key table is the schema's own (regenerate with `fedfleet schema --format md`)."""

from __future__ import annotations

from fleet_helpers import REPO
from typer.testing import CliRunner

from sim.cli import app


def test_readme_lists_every_scenario_key():
    res = CliRunner().invoke(app, ["schema", "--format", "md"])
    assert res.exit_code == 0
    readme = (REPO / "README.md").read_text()
    missing = [line for line in res.output.splitlines() if line.strip() and line not in readme]
    assert not missing, "README key table out of date; regenerate with `fedfleet schema --format md`:\n" + "\n".join(missing[:5])


def test_readme_quickstart_has_the_two_commands():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick and "make test" in quick


def test_every_scenario_and_sweep_file_is_listed_and_valid():
    from sim.loader import load_scenario
    from sim.studies.sweep import load_sweep_file

    readme = (REPO / "README.md").read_text()
    import yaml

    files = (sorted((REPO / "scenarios").glob("*.yaml")) + sorted((REPO / "scenarios" / "sweeps").glob("*.yaml"))
             + sorted((REPO / "scenarios" / "paper").glob("*.yaml")))
    for p in files:
        rel = p.relative_to(REPO).as_posix()
        assert f"`{rel}`" in readme, f"{rel} is not in the README's scenarios table"
        if "base" in yaml.safe_load(p.read_text()):  # a sweep file
            assert load_sweep_file(p)[1]
        else:
            load_scenario(p)
