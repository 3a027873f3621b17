"""How experiments mlorch writes open in the MLflow UI: the training view, the sweep's columns shown.

Checked against MLflow 3.17.2's UI bundle (``mlflow/server/js/build``). The UI picks its view
from the URL's ``workflowType``, else the browser's storage, else GenAI (traces); a fresh
browser would land in GenAI. Its runs table shows only a few attribute columns until the user
picks more, but it loads a "shared view" named in the URL (``viewStateShareKey=<key>``) from
the experiment tag ``mlflow.sharedViewState.<key>``: JSON with the table's columns, expanded
runs and sort. So a sweep writes one such view (its parameters and metrics as columns), and
``mlorch ui`` prints the URL that opens
it. ``tests/test_ui_browser.py`` checks it in Chromium from a fresh profile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from mlorch.names import EXPERIMENT_KIND_TAG, TRAINING_KIND

__all__ = ["TRAINING_VIEW", "runs_url", "sweep_view", "write_sweep_view"]

TRAINING_VIEW = "workflowType=machine_learning"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + key (MLflow's own prefix)
LATEST_VIEW_TAG = "mlorch.latest_view"  # the key of the view the experiment's last sweep wrote
DEFAULT_ATTRIBUTES = ("Source", "Models")


def _column(group: str, key: str) -> str:
    return f"{group}.`{key}`"  # how the UI names a column


def view_key(study_name: str) -> str:
    return "mlorch-" + re.sub(r"[^A-Za-z0-9_-]", "-", study_name)[:200]


def sweep_view(params: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """The runs table of a sweep: its metrics and swept parameters as columns. Not sorted by the
    metric: the UI nests the trials under their parent run only under its default sort (the parent
    has no value of the trials' metric). Which runs are expanded is not part of a shared view in
    MLflow 3.17 (``runsExpanded`` is dropped), so the parent opens collapsed, with a [+]."""
    columns = [_column("attributes", a) for a in DEFAULT_ATTRIBUTES]
    columns += [_column("metrics", m) for m in metrics] + [_column("params", p) for p in params]
    return {"selectedColumns": columns}


def write_sweep_view(client: Any, experiment_id: str, study_name: str, view: dict[str, Any]) -> str:
    """Store ``view`` on the experiment (MLflow's shared-view tag) and mark it the latest; its key."""
    key = view_key(study_name)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(view))
    client.set_experiment_tag(experiment_id, LATEST_VIEW_TAG, key)
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return key


def runs_url(url: str, client: Any) -> str:
    """The runs table of the experiment with the newest run, in the training view, with the view its
    last sweep wrote (if any); the experiment list when the store has no run."""
    try:
        experiments = {e.experiment_id: e for e in client.search_experiments(max_results=1000)}
        newest = client.search_runs(list(experiments), order_by=["attributes.start_time DESC"], max_results=1)
        latest = experiments.get(newest[0].info.experiment_id) if newest else None
    except Exception:  # an empty or unreadable store
        latest = None
    if latest is None:
        return f"{url}/#/experiments?{TRAINING_VIEW}"
    key = (latest.tags or {}).get(LATEST_VIEW_TAG)
    shared = f"viewStateShareKey={key}&" if key else ""
    return f"{url}/#/experiments/{latest.experiment_id}/runs?{shared}{TRAINING_VIEW}"
