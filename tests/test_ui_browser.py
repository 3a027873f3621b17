"""`mlorch ui` shows a sweep in the real MLflow UI: checked in headless Chromium (Playwright).

The browser starts from a fresh profile (nothing pre-set in its storage) and opens the URL
`mlorch ui` prints, as a user would. It is Debian's Chromium (installed by
.ci/setup-services); Playwright never downloads one. Every request that does not go to the
local server is aborted, so nothing leaves the machine. Screenshots stay in
`test-artifacts/ui/` after the run (git ignores the folder).
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
ARTIFACTS = __import__("pathlib").Path(ROOT) / "test-artifacts" / "ui"


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
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
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
        runs_page = None
        for line in ui.stdout:  # the server's own start-up lines come first
            seen.append(line)
            match = re.search(r"training view: (http://127\.0\.0\.1:\d+/\S+)", line)
            if match or len(seen) > 200:
                runs_page = match.group(1) if match else None
                break
        assert runs_page, f"mlorch ui printed no runs URL: {seen!r}"
        url = runs_page.split("/#/")[0]
        view = "viewStateShareKey=mlorch-ui-sweep&workflowType=machine_learning"  # the sweep's view, training view
        assert runs_page == f"{url}/#/experiments/{experiment_id}/runs?{view}"
        blocked = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = browser.new_context(viewport={"width": 1600, "height": 900})  # a fresh profile

            def guard(route):
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.goto(runs_page, wait_until="domcontentloaded")  # the URL mlorch ui printed
            name_cell = '[col-id="attributes.`Run Name`"]'
            parent_row = page.locator(f'[role=row][row-id="{parent.info.run_id}"]:has({name_cell})')
            parent_row.wait_for(timeout=60_000)
            assert page.get_by_text("4 matching runs").first.is_visible()  # the parent and its 3 trials
            page.screenshot(path=str(ARTIFACTS / "runs-first-view.png"))
            # The swept parameter and the target metric are columns without any clicking.
            for column in ("params.`lr`", "metrics.`val_loss`"):
                page.locator(f'[role=columnheader][col-id="{column}"]').first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "runs.png"))
            parent_row.locator(f"{name_cell} button").first.click()  # only a run with nested runs has one: expand it
            for child in children:  # the trials, nested under the sweep's parent run
                row = page.locator(f'[role=row][row-id="{child.info.run_id}"]:has({name_cell})')
                row.wait_for(timeout=30_000)
            value = page.locator(f'[role=row][row-id="{children[0].info.run_id}"] [col-id="metrics.`val_loss`"]').first
            assert value.inner_text().strip() != ""  # the trial's val_loss is in its row
            page.screenshot(path=str(ARTIFACTS / "runs-nested.png"))

            best = study.best_run_id
            page.goto(f"{url}/#/experiments/{experiment_id}/runs/{best}/model-metrics?workflowType=machine_learning")
            points = page.locator(".js-plotly-plot .scatterlayer .point")
            points.first.wait_for(timeout=60_000)
            assert points.count() == 10  # train_loss logged at steps 0..9 from a worker process
            page.screenshot(path=str(ARTIFACTS / "metrics.png"))

            page.goto(f"{url}/#/models/ui-clf?workflowType=machine_learning", wait_until="domcontentloaded")
            page.get_by_text("best-ui-sweep").first.wait_for(timeout=60_000)  # the sweep's own alias
            page.get_by_text("@ best").or_(page.get_by_text("best", exact=True)).first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "model.png"))
            browser.close()
        assert blocked == []
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
