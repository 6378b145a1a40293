"""report.html is self-contained and renders its plot in headless Chromium."""

import re
import shutil
import subprocess

import pytest

from sia.store.report import write_report
from sia.store.run import Run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def finished_run(scripted_run):
    run_dir = scripted_run[0]
    with Run.open(run_dir) as run:
        path = write_report(run)
    return run_dir, path


def test_report_is_self_contained(finished_run):
    _, path = finished_run
    page = path.read_text()
    assert "<svg" in page and 'id="score-plot"' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the report must not fetch anything"
    assert "<script" not in page
    for section in ("Baseline versus final", "Lineage", "Accepted changes", "Decision log", "Design memory"):
        assert section in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    _, path = finished_run
    shot = tmp_path / "report.png"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                        "--window-size=1100,1400", f"--screenshot={shot}", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    pixels = list(img.get_flattened_data())
    blue = sum(1 for p in pixels if p[2] > 200 and p[0] < 80 and p[1] < 140)  # the harness lever's colour in the plot
    dark = sum(1 for p in pixels if max(p) < 40)  # the champion line and text
    assert blue > 30 and dark > 500, (blue, dark)


def test_the_report_lists_what_each_gate_won_and_lost(scripted_run):
    from sia.store.report import render_report
    from sia.store.run import Run

    run_dir, summary, _ = scripted_run
    accepted = next(g for g in summary["generations"] if g["accepted"])
    with Run.open(run_dir) as run:
        o = run.gate_outcomes(accepted["generation"])
        page = render_report(run)
    assert len(o["judged"]) == accepted["n"], "the examples the verdict rests on"
    assert (len(o["won"]) - len(o["lost"])) / accepted["n"] == pytest.approx(accepted["delta"])
    assert f"generation {accepted['generation']} ({accepted['kind']}): won {len(o['won'])}, lost {len(o['lost'])}" in page
    assert all(w["challenger"]["score"] > w["champion"]["score"] for w in o["won"])
    assert all(w["example"] in page for w in (o["won"] + o["lost"])[:5])
