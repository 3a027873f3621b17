"""A tracked flow whose runs the browser test looks at in the MLflow UI."""

from __future__ import annotations

import mlorch as mo


@mo.task
def fit(lr: float, steps: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    loss = 1.0
    for step in range(steps):
        loss *= 1 - lr
        mo.log_metric("train_loss", loss, step=step)
    model = LogisticRegression(C=lr).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    mo.log_model(model, "ui-clf", input_example=[[0.5]])
    return {"val_loss": loss}


@mo.flow(experiment="ui-check")
def trainer(lr: float = 0.1, steps: int = 10) -> dict:
    return fit(lr, steps)
