"""``sim.views.report``: one self-contained HTML page for a run, a comparison or a sweep, checked as text and in a
real headless Chromium (skipped only where no ``chromium`` is installed: ``make chromium``)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import markupsafe
import pandas as pd
import pytest
from fleet_helpers import base_scenario, fedfleet

from sim.loader import resolved_dict, scenario_digest, validate
from sim.studies.policies import run_policies
from sim.views.report import write_report
from sim.runner import run_scenario
from sim.store import atomic_write_json, atomic_write_parquet, atomic_write_yaml

PNG = "data:image/png;base64,"
EVIL = "<script>alert('x')</script>"


# ------------------------------------------------------------------------------------------------
# fixtures: a real 3-policy comparison and a hand-built 2 x 2 sweep (3 cells run, 1 failed), timing only


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("cmp")
    d = base_scenario(name="cmp")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 3, "placement": "lan"},
                            {"type": "agx_xavier", "count": 2, "placement": "lan", "power_modes": ["MAXN"]}]
    d["training"] = {"rounds": 4, "local_steps": 5}
    d["policies"] = {"spine": {"name": "fedspine", "params": {"prune_target": 0.3}},
                     "apt": {"name": "fedapt", "params": {"prune_target": 0.3}},
                     "lora": {"name": "fedlora"}}
    d["output"].update(dir=str(root), plots=True)
    res = run_policies(validate(d))
    assert res.failures == {}
    parent = res.parent
    figs = [parent / p / "plots" / f for p in ["spine", "apt", "lora"]
            for f in ["round_times.png", "device_types.png", "timeline.png"]]
    assert all(f.is_file() for f in figs)
    return parent, figs


MATRIX_KEY = "training.local_steps"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, list[Path]]:
    """``sweep.json`` + ``sweep.parquet`` + ``cells/<id>/`` as ``fedfleet sweep`` writes them."""
    sw = tmp_path_factory.mktemp("sweep") / "steps"
    (sw / "cells").mkdir(parents=True)
    spec = {"name": "steps", "base": "base.yaml", "set": {"training.rounds": 3},
            "matrix": {MATRIX_KEY: [5, 10]}, "seeds": [0, 1]}
    atomic_write_json(sw / "sweep.json", spec)
    rows, figs = [], []
    for i, (steps, seed) in enumerate([(5, 0), (5, 1), (10, 0), (10, 1)]):
        d = base_scenario(name="steps", seed=seed)
        d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "placement": "lan"},
                                {"type": "agx_xavier", "count": 1, "placement": "lan", "power_modes": ["MAXN"]}]
        d["training"] = {"rounds": 3, "local_steps": steps}
        d["output"]["plots"] = True
        sc = validate(d)
        cell_id = f"seed{seed}-{scenario_digest(sc)[:12]}"
        cell = sw / "cells" / cell_id
        cell.mkdir()
        row = {"cell_index": i, "policy": "fixed", MATRIX_KEY: steps, "seed": seed, "cell_id": cell_id}
        if i == 3:  # a failed cell: its scenario was written, then it raised
            atomic_write_yaml(cell / "scenario.yaml", {**resolved_dict(sc), "_meta": {"digest": scenario_digest(sc)}})
            err = f"RuntimeError: device exploded {EVIL}"
            atomic_write_json(cell / "status.json", {"status": "failed", "error": err})
            rows.append({**row, "status": "failed", "error": err})
            continue
        run_scenario(sc, run_dir=cell, progress=False)
        s = json.loads((cell / "summary.json").read_text())
        rows.append({**row, "status": "finished", "error": None,
                     "final_accuracy": s["final_accuracy"], "time_to_target_s": s["time_to_target_s"],
                     "sim_time_s": s["sim_time_s"], "mean_idle_fraction": s["mean_idle_fraction"],
                     "mean_round_s": s["mean_round_s"], "bytes_total": s["bytes_up_total"] + s["bytes_down_total"],
                     "final_mean_prune_ratio": s["final_mean_prune_ratio"],
                     "rounds_completed": s["rounds_completed"], "stop_reason": s["stop_reason"]})
        figs.append(cell / "plots" / "round_times.png")
    cols = ["cell_index", "policy", MATRIX_KEY, "seed", "cell_id", "status", "error", "final_accuracy",
            "time_to_target_s", "sim_time_s", "mean_idle_fraction", "mean_round_s", "bytes_total",
            "final_mean_prune_ratio", "rounds_completed", "stop_reason"]
    atomic_write_parquet(sw / "sweep.parquet", pd.DataFrame(rows, columns=cols))
    return sw, figs


# ------------------------------------------------------------------------------------------------
# helpers


def table_rows(page: str, first_cell: str) -> dict[str, list[str]]:
    """The first data row (3 cells or more) whose first cell is ``first_cell`` (unescaped text of every <td>)."""
    out = {}
    page = re.sub(r'<section id="findings">.*?</section>', "", page, flags=re.S)  # the summary tables only
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", page, flags=re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
        if len(cells) >= 3 and cells[0] == first_cell:
            out.setdefault(first_cell, cells)
    return out


def row_of(page: str, first_cell: str) -> list[str]:
    rows = table_rows(page, first_cell)
    assert first_cell in rows, f"no table row starting with {first_cell!r}"
    return rows[first_cell]


def dur(v: float) -> str:
    return f"{v / 3600:.2f} h" if v >= 3600 else f"{v:.0f} s"


# ------------------------------------------------------------------------------------------------
# the page as text


def test_comparison_page_matches_the_summaries_and_embeds_every_figure(comparison, tmp_path):
    parent, figs = comparison
    pdf = parent / "spine" / "plots" / "round_times.pdf"  # a PDF beside a PNG is linked, never embedded
    pdf.write_bytes(b"%PDF-1.4 stub")
    try:
        out = write_report(parent, [*figs, pdf])
    finally:
        pdf.unlink()
    assert out == parent / "report.html"
    page = out.read_text()
    for label in ["spine", "apt", "lora"]:
        s = json.loads((parent / label / "summary.json").read_text())
        cells = row_of(page, label)
        assert cells[1] == s["algorithm"]
        # timing only: no accuracy, no majority rate, no time to target
        assert cells[2] == "-" and cells[3] == "-" and cells[4] == "-"
        assert cells[5] == f"{100 * s['mean_idle_fraction']:.1f}"
        assert cells[6] == f"{(s['bytes_up_total'] + s['bytes_down_total']) / 1e6:.1f}"
        assert cells[7] == f"{s['final_mean_prune_ratio']:.3f}"
        assert cells[8] == str(s["rounds_completed"])
        assert cells[9] == dur(s["sim_time_s"])
        assert cells[10] == f"{s['host']['host_time_s']:.1f}"
    # every PNG inline, byte for byte, with a caption naming its run
    assert page.count(PNG) == len(figs) == 9
    payloads = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(p) for p in payloads] == [f.read_bytes() for f in figs]
    assert "<figcaption>Round times (spine)" in page and "Device types (lora)" in page
    # defect 7: PDFs are named, never linked (the page loads and links nothing outside itself)
    assert "<code>spine/plots/round_times.pdf</code>" in page and "application/pdf" not in page
    assert "href=" not in page
    # the header and the scenarios: facts from the data, collapsible YAML per policy
    assert "comparison of 3 policies" in page and "Target accuracy: no accuracy (timing-only runs)" in page
    assert row_of(page, "spine")[0] == "spine" and "<th>fedfleet version</th><td>0.1.0</td>" in page
    assert page.count("<details") == 4 and "spine: resolved scenario" in page
    # self-contained, no host paths
    assert str(parent.parent) not in page and str(Path.home()) + "/" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "started_unix" not in page


def test_the_same_results_give_the_same_bytes(comparison, tmp_path):
    parent, figs = comparison
    a = write_report(parent, figs, tmp_path / "a.html")
    b = write_report(parent, figs, tmp_path / "b.html")
    assert a.read_bytes() == b.read_bytes()


def test_text_is_escaped(comparison, tmp_path):
    parent, figs = comparison
    copy = tmp_path / "cmp"
    shutil.copytree(parent, copy)
    evil_label = "x<img src=y onerror=alert(1)>"
    (copy / "lora").rename(copy / evil_label)
    page = write_report(copy, [], title=f"title {EVIL}").read_text()
    assert "<img src=y" not in page and EVIL not in page
    assert html.escape(evil_label) in page and str(markupsafe.escape(f"title {EVIL}")) in page
    assert row_of(page, evil_label)[1] == "fedlora"
    findings = page[page.index('<section id="findings">'):page.index("</section>")]
    assert str(markupsafe.escape(evil_label)) in findings and "<img" not in findings  # Jinja2 escapes it too
    assert "<p class=note>No figures.</p>" in page


def test_sweep_page_has_the_index_the_failed_cell_and_the_seed_aggregates(sweep, tmp_path):
    sw, figs = sweep
    page = write_report(sw, figs, tmp_path / "r.html").read_text()
    index = pd.read_parquet(sw / "sweep.parquet")
    # the index: one row per cell, the failed cell's (escaped) error on a full-width row below it
    for r in index.itertuples(index=False):
        cells = row_of(page, str(r.cell_index))
        assert cells[1:5] == ["fixed", str(getattr(r, "_2")), str(r.seed), r.status]
        assert cells[-1] == r.cell_id
        if r.status == "finished":
            assert cells[5:9] == [f"{100 * r.mean_idle_fraction:.1f}", f"{r.bytes_total / 1e6:.1f}",
                                  f"{r.final_mean_prune_ratio:.3f}", str(int(r.rounds_completed))]
        else:
            assert cells[5:] == ["-", "-", "-", "-", "-", r.cell_id]
    errors = [html.unescape(e) for e in re.findall(r'<td class="err" colspan="\d+">(.*?)</td>', page, flags=re.S)]
    assert errors == [f"error: RuntimeError: device exploded {EVIL}"]
    assert EVIL not in page and html.escape(EVIL) in page
    assert "final acc (%)" not in page  # timing only: no accuracy column at all
    # mean ± std over seeds per matrix value (steps 5: two seeds; steps 10: one finished of two)
    rows = [[html.unescape(re.sub(r"<[^>]+>", "", c)).replace("\xa0", " ")
             for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
            for tr in re.findall(r"<tr>(<td>fixed</td>.*?)</tr>", page, flags=re.S)]
    assert len(rows) == 2
    five = index[(index[MATRIX_KEY] == 5)]
    idle = 100 * five["mean_idle_fraction"].to_numpy()
    mb = five["bytes_total"].to_numpy() / 1e6
    assert rows[0][:4] == ["fixed", "5", "2 / 2", "0, 1"]
    assert rows[0][4] == f"{idle.mean():.1f} ± {idle.std(ddof=1):.1f}"
    assert rows[0][5] == f"{mb.mean():.1f} ± {mb.std(ddof=1):.1f}"
    ten = index[(index[MATRIX_KEY] == 10) & (index["status"] == "finished")].iloc[0]
    assert rows[1][:4] == ["fixed", "10", "1 / 2", "0"] and rows[1][4] == f"{100 * ten.mean_idle_fraction:.1f}"
    # facts, figures and scenarios: the spec, one full scenario, then differences only
    assert "steps: sweep of 4 cells" in page and "4 (3 finished, 1 failed, 0 other)" in page
    assert page.count(PNG) == 3 and page.count("<h3>seed") == 3
    assert page.count("<details") == 3 and "sweep spec (sweep.json)" in page
    assert "local_steps: 5 -&gt; 10" in page and "seed: 0 -&gt; 1" in page
    assert str(sw) not in page


def test_a_sweep_without_any_finished_cell(sweep, tmp_path):
    sw, _ = sweep
    copy = tmp_path / "failed"
    shutil.copytree(sw, copy)
    index = pd.read_parquet(copy / "sweep.parquet")
    index = index[index["status"] == "failed"].reset_index(drop=True)
    atomic_write_parquet(copy / "sweep.parquet", index)
    page = write_report(copy, []).read_text()
    assert "1 (0 finished, 1 failed, 0 other)" in page and "fedfleet version</th><td>unknown" in page
    assert row_of(page, "fixed")[2:4] == ["0 / 1", "-"]
    assert page.count("<details") == 2  # the spec and the failed cell's scenario


def test_a_single_run_and_the_default_output(sweep):
    sw, _ = sweep
    run = sorted((sw / "cells").glob("*/summary.json"))[0].parent
    out = write_report(run, [], target_acc=0.5)
    assert out == run / "report.html"
    page = out.read_text()
    s = json.loads((run / "summary.json").read_text())
    assert row_of(page, "fixed")[5] == f"{100 * s['mean_idle_fraction']:.1f}"
    assert "Target accuracy 50.0% (--target-acc)" in page and f"run {run.name}" in page
    out.unlink()


# ------------------------------------------------------------------------------------------------
# the page in a real browser

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make chromium)")

# Chromium logs every console message of the page, whatever its level, as an INFO line tagged CONSOLE:
#   [8011:8011:1201/081121.859216:INFO:CONSOLE:622] "deliberate <error>", source: file:///.../broken.html (622)
#   [8011:8011:1201/081121.860519:INFO:CONSOLE:622] "Uncaught TypeError: deliberate uncaught", source: ... (622)
# (older builds write CONSOLE(622)). The report writes to the console only on errors, so every such line
# counts; chromium's own noise (dbus, vaapi, sandbox ERROR/WARNING lines) has no CONSOLE tag.
CONSOLE = re.compile(r"^\[[^\]]*:CONSOLE[:(]?\d*\)?\]\s*(?P<msg>.*)$")


def page_console_errors(stderr: str) -> list[str]:
    """The page's console messages and uncaught exceptions in Chromium's stderr log."""
    out = []
    for line in stderr.splitlines():
        m = CONSOLE.match(line.strip())
        if m:
            out.append(m.group("msg"))
        elif "Uncaught" in line:
            out.append(line.strip())
    return out


def render(page: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path, str]:
    """Load ``page`` in headless Chromium: screenshot + the DOM after scripts ran."""
    shot = tmp_path / f"{page.stem}.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--enable-logging=stderr", "--v=0", "--no-first-run", "--virtual-time-budget=5000",
           f"--user-data-dir={tmp_path / f'profile-{page.stem}'}", f"--screenshot={shot}",
           "--window-size=1280,2000", "--dump-dom", page.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    body = re.search(r"<body[^>]*>", r.stdout)
    return r, shot, body.group(0) if body else ""


@needs_chromium
@pytest.mark.parametrize("which", ["comparison", "sweep"])
def test_the_page_renders_in_chromium_without_console_errors(which, request, tmp_path):
    target, figs = request.getfixturevalue(which)
    page = write_report(target, figs, tmp_path / f"{which}.html")
    r, shot, body = render(page, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert page_console_errors(r.stderr) == []
    assert f'data-images-ok="{len(figs)}"' in body and 'data-images-bad="0"' in body, body
    # the findings section is in the rendered DOM, above the summary, with its answers and tables
    dom = r.stdout
    assert dom.index('<section id="findings">') < dom.index("<h2>Figures")
    assert "Fastest to target." in dom and "No speed-up is claimed: no accuracy (timing-only runs)." in dom
    for part in ("finding-setters", "finding-types", "finding-params"):
        assert f'id="{part}"' in dom, part
    assert re.search(r"the round is set by (tx2|agx_xavier) in \d+ of \d+ rounds", dom)


@needs_chromium
def test_the_console_detector_catches_errors_exceptions_and_broken_images(comparison, tmp_path):
    parent, figs = comparison
    text = write_report(parent, figs[:2], tmp_path / "ok.html").read_text()
    i = text.index(PNG) + len(PNG)
    text = text[:i] + "bm90IGEgcG5n" + text[text.index('"', i):]  # first figure: "not a png"
    text = text.replace("</main>", "</main><script>console.error('deliberate <error>');"
                                   "throw new TypeError('deliberate uncaught');</script>")
    broken = tmp_path / "broken.html"
    broken.write_text(text)
    r, shot, body = render(broken, tmp_path)
    assert r.returncode == 0 and shot.is_file()
    errors = page_console_errors(r.stderr)
    assert any('"deliberate <error>"' in e for e in errors), r.stderr[-3000:]
    assert any("Uncaught TypeError: deliberate uncaught" in e for e in errors)
    assert any("report image failed to load: Round times (" in e for e in errors)
    assert 'data-images-ok="1"' in body and 'data-images-bad="1"' in body
    # chromium's own noise is not a page error
    noise = "[1:2:1201/081013.629202:ERROR:dbus/bus.cc:405] Failed to connect to the bus: no such file"
    assert page_console_errors(noise) == []


def test_report_keeps_the_figures_plot_drew_and_has_round(comparison, tmp_path):
    """Defect 7: fedfleet report embeds the figures fedfleet plot drew (plot --round 1 is not undone);
    --round redraws them for the given rounds."""
    parent, _ = comparison
    copy = tmp_path / "cmp"
    shutil.copytree(parent, copy)
    r = fedfleet("plot", str(copy), "--round", "1", timeout=900)
    assert r.returncode == 0, r.stderr
    timeline = copy / "figures" / "timeline_spine.png"
    drawn = timeline.read_bytes()
    mtime = timeline.stat().st_mtime_ns
    r = fedfleet("report", str(copy), timeout=900)
    assert r.returncode == 0, r.stderr
    assert timeline.stat().st_mtime_ns == mtime and "--replot to redraw" in r.stderr
    page = (copy / "report.html").read_text()
    assert base64.b64encode(drawn).decode() in page
    r = fedfleet("report", str(copy), "--round", "0", "--round", "3", timeout=900)
    assert r.returncode == 0, r.stderr
    assert timeline.read_bytes() != drawn  # redrawn for rounds 0 and 3
