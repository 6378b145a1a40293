"""`sia ui`: Debian's Chromium, driven headless through Selenium and chromedriver, watches a live run: a new generation
appears without a reload, a harness diff and a trajectory open, and screenshots are saved (`SIA_UI_SCREENSHOTS=docs/ui`
writes the ones the README shows). The JSON endpoints are checked without a browser too."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import new_run

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class GatedAgent:
    """Proposes its changes one at a time, each once the test lets it (`go`), so the test sees a generation arrive."""

    name = "gated"

    def __init__(self, proposals):
        self.proposals, self.go = list(proposals), threading.Semaphore(0)

    def decide(self, state):
        from sia.agents.contract import Decision
        from sia.agents.proposal import Stop

        if not self.go.acquire(timeout=300):
            return Decision(Stop("the test stopped waiting"))
        return Decision(self.proposals.pop(0) if self.proposals else Stop("script finished"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "sia ui did not start"
    return server, thread


def _wait(cond, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.model
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="Debian's chromium and chromium-driver are not installed")
def test_chromium_watches_a_live_run_and_opens_a_diff_and_a_trajectory(tmp_path, runtime):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from sia.agents.proposal import HarnessEdit
    from sia.cli.ui import make_app
    from sia.harness.template import make_config, render
    from sia.loop.config import RunConfig
    from sia.loop.loop import Loop
    from sia.task.loading import load_task

    task = load_task("sentiment")
    score = make_config(task.public_info(), mode="score")
    agent = GatedAgent([HarnessEdit(render(score), "label scoring", "score_labels"),
                        HarnessEdit(render(make_config(task.public_info(), mode="score", calibrate=True)), "calibrated", "calibrate")])
    config = RunConfig(task="sentiment", budget=900, val_limit=20, test_limit=8, analysis_examples=4, patience=5)
    run_dir = tmp_path / "run"
    result: dict = {}

    def work():
        with new_run(run_dir, config) as run:
            result["summary"] = Loop(run, runtime, config, agent=agent).run()

    loop = threading.Thread(target=work, daemon=True)
    loop.start()
    _wait(lambda: (run_dir / "sia.db").is_file(), "the run to start", 60)
    port = _free_port()
    server, thread = _serve(make_app([run_dir], poll_s=0.3), port)
    shots = Path(os.environ.get("SIA_UI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--proxy-server=direct://", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.set_page_load_timeout(60)
        browser.get(f"http://127.0.0.1:{port}/")
        # the page redraws as the run moves on, so what it shows is read, and clicked, in the page's own script
        js = browser.execute_script
        runs = _wait(lambda: js("return [...document.querySelectorAll('#runs tr.click')].map((r) => r.innerText)"), "the run list", 60)
        assert "sentiment" in runs[0]
        js("document.querySelector('#runs tr.click').click()")
        _wait(lambda: browser.find_elements(By.ID, "timeline"), "the run view", 60)
        js("window.__notReloaded = true")
        rows = lambda: js("return [...document.querySelectorAll('#timeline tr[data-gen]')].map((r) => r.innerText)")  # noqa: E731
        decided = lambda k: len(rows()) >= k and any(w in rows()[k - 1] for w in ("accepted", "rejected"))  # noqa: E731
        assert rows() == [], "no generation before the agent is let go"
        agent.go.release()
        _wait(lambda: decided(1), "generation 1 to appear", 240)
        agent.go.release()
        _wait(lambda: decided(2), "generation 2 to appear", 240)
        assert browser.execute_script("return window.__notReloaded === true"), "the page was not reloaded"
        browser.save_screenshot(str(shots / "run.png"))
        agent.go.release()  # the script is over: the run stops and scores its champion on test
        loop.join(timeout=300)
        assert "summary" in result, "the run finished"
        # a side-by-side diff of the baseline and the last version
        versions = browser.execute_script("return [...document.querySelectorAll('#da option')].map((o) => o.value)")
        assert versions[0] == "h0" and len(versions) >= 2, versions
        assert browser.execute_script("return document.querySelector('#db').value") == versions[-1], "b follows the newest"
        browser.execute_script("document.querySelector('#da').value = 'h0'")
        js("document.querySelector('#diff').click()")
        table = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#difftable tr.changed, #difftable tr.added"), "the diff", 30)
        assert table
        browser.save_screenshot(str(shots / "diff.png"))
        # a gate's looks and the examples it won and lost, then a trajectory with its tokens coloured by logprob
        js("document.querySelector('a.gate').click()")
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#looks tr td"), "the gate's looks", 30)
        js("document.querySelector('#rolltable tr.click').click()")
        _wait(lambda: browser.find_elements(By.ID, "trajectory"), "a trajectory", 30)
        text = js("return document.querySelector('#trajectory').innerText")
        assert "model call" in text and "grade" in text
        browser.save_screenshot(str(shots / "trajectory.png"))
    finally:
        browser.quit()
        server.should_exit = True
        thread.join(timeout=10)
    for name in ("run.png", "diff.png", "trajectory.png"):
        assert (shots / name).stat().st_size > 10_000, name


def test_the_endpoints_answer_a_finished_run_and_ask_for_a_token_off_loopback(scripted_run):
    from fastapi.testclient import TestClient

    from sia.cli.ui import find_runs, make_app

    run_dir, summary, _ = scripted_run
    assert find_runs([run_dir.parent]) == [run_dir] and find_runs([run_dir]) == [run_dir]
    c = TestClient(make_app([run_dir], poll_s=0.1, stream_s=0.3))
    from sia.store.run import Run

    with Run.open(run_dir) as run:  # the run as it is now (a test of rollback may have moved its champion)
        champion_val, status = run.score(run.store.champion(), "val"), run.store.get_meta("status")
    (row,) = c.get("/api/runs").json()
    assert row["task"] == "sentiment" and row["status"] == status and row["champion"]["score"] == pytest.approx(champion_val)
    d = c.get("/api/runs/0").json()
    assert [g["generation"] for g in d["summary"]["generations"]] == [g["generation"] for g in summary["generations"]]
    assert d["curve"][0]["val"] == pytest.approx(summary["baseline"]["val"]) and len(d["curve"]) == len(summary["generations"]) + 1
    assert [h["version"] for h in d["lineage"]["harness"]][0] == "h0"
    accepted = next(g for g in summary["generations"] if g["accepted"])
    gate = c.get(f"/api/runs/0/gate/{accepted['generation']}").json()
    assert gate["looks"] and gate["looks"][-1]["delta"] == pytest.approx(accepted["delta"])
    assert len(gate["won"]) - len(gate["lost"]) == round(accepted["delta"] * gate["looks"][-1]["n"])
    page = c.get("/api/runs/0/rollouts?offset=0").json()
    assert page["total"] >= len(page["rollouts"]) == min(50, page["total"])
    t = c.get(f"/api/runs/0/rollout/{gate['won'][0]['challenger']['rollout']}").json()
    assert any(e["kind"] == "llm_call" for e in t["events"]) and t["example"]["target"]
    with c.stream("GET", "/api/runs/0/events") as s:
        assert next(line for line in s.iter_lines() if line).startswith("data: ")
    assert c.get("/api/runs/0/diff?a=h0&b=h99").status_code == 404 and c.get("/api/runs/3").status_code == 404
    locked = TestClient(make_app([run_dir], token="t0ken"))
    assert locked.get("/api/runs").status_code == 401 and locked.get("/api/runs?token=t0ken").status_code == 200
