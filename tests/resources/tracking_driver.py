"""A driver process for the signal tests: runs ``sleepy`` on a 1-worker cluster.

    python tracking_driver.py MARKER_FILE
Uses MLFLOW_TRACKING_URI from the environment; exits 0 only if the flow returns.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlorch as mo  # noqa: E402
from tests.resources import tracking_flows as tf  # noqa: E402

if __name__ == "__main__":
    with mo.cluster(n_workers=1, gpus=0, dashboard_address=None):
        tf.sleepy(sys.argv[1], 120.0)
