"""`mlorch ui` shows a sweep in the real MLflow UI: checked in headless Chromium (Playwright).

The browser is Debian's Chromium (installed by .ci/setup-services); Playwright never downloads one.
Every request that does not go to the local server is aborted, so nothing leaves the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUIET_UI = """
for (const [k, v] of Object.entries({
  "mlflow.assistant.panelOpen_v1": false, "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": true,
  "mlflow.detectIssues.guidanceShown_v1": true, "_mlflow_model_registry_promo_modal_dismissed_v1": true,
  "mlflow.workflowType_v1": "machine_learning"})) { localStorage.setItem(k, JSON.stringify(v)); }
"""


@pytest.fixture
def populated_project(tmp_path, monkeypatch, cluster):
    """A project whose store holds one sweep: a parent run and 3 child runs with per-step metrics."""
    from mlflow import MlflowClient

    import mlorch as mo
    from tests.resources.ui_flows import trainer

    monkeypatch.setenv("MLORCH_HOME", str(tmp_path / "project"))
    monkeypatch.setenv("MLORCH_TRACKING", "on")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = mo.sweep(
        trainer,
        space={"lr": mo.uniform(0.05, 0.3)},
        metric="val_loss",
        direction="minimize",
        n_trials=3,
        name="ui-sweep",
        seed=0,
        progress=False,
        cluster=cluster,
    )
    uri = f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ui-check")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3, (len(parents), len(children))
    return tmp_path / "project", experiment.experiment_id, parents[0], children, study


@pytest.mark.slow
def test_sweep_is_browsable_in_the_mlflow_ui(populated_project, tmp_path):
    from playwright.sync_api import sync_playwright

    home, experiment_id, parent, children, study = populated_project
    env = {**os.environ, "MLORCH_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlorch", "ui", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        seen = []
        for line in ui.stdout:  # the server's own start-up lines come first
            seen.append(line)
            match = re.search(r"MLflow UI for .*: (http://127\.0\.0\.1:\d+)", line)
            if match or len(seen) > 200:
                break
        assert match, f"mlorch ui printed no 127.0.0.1 URL: {seen!r}"
        url = match.group(1)
        base = url + "/#/experiments/" + experiment_id
        blocked = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(QUIET_UI)

            def guard(route):
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.goto(base + "/runs?workflowType=machine_learning", wait_until="domcontentloaded")
            name_cell = '[col-id="attributes.`Run Name`"]'
            parent_row = page.locator(f'[role=row][row-id="{parent.info.run_id}"]:has({name_cell})')
            parent_row.wait_for(timeout=60_000)
            assert page.get_by_text("4 matching runs").first.is_visible()  # the parent and its 3 trials
            parent_row.locator(f"{name_cell} button").first.click()  # expand the sweep's parent run
            for child in children:
                page.locator(f'[role=row][row-id="{child.info.run_id}"]:has({name_cell})').wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "runs.png"))

            best = study.best_run_id
            page.goto(f"{base}/runs/{best}/model-metrics", wait_until="domcontentloaded")
            points = page.locator(".js-plotly-plot .scatterlayer .point")
            points.first.wait_for(timeout=60_000)
            assert points.count() == 10  # train_loss logged at steps 0..9 from a worker process
            page.screenshot(path=str(tmp_path / "metrics.png"))
            browser.close()
        assert blocked == []
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
