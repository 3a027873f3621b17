"""A tracked flow whose runs the browser test looks at in the MLflow UI."""

from __future__ import annotations

import mlorch as mo


@mo.task
def fit(lr: float, steps: int) -> dict:
    loss = 1.0
    for step in range(steps):
        loss *= 1 - lr
        mo.log_metric("train_loss", loss, step=step)
    return {"val_loss": loss}


@mo.flow(experiment="ui-check")
def trainer(lr: float = 0.1, steps: int = 10) -> dict:
    return fit(lr, steps)
