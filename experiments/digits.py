"""Digits classification with k-fold cross-validation: the example flow to copy.

Uses scikit-learn's digits data set (it ships with scikit-learn: no download).

    mlorch run experiments/digits.py:pipeline --set lr=0.01 --set hidden=64
"""

from __future__ import annotations

import logging

import numpy as np

import mlorch as mo

log = logging.getLogger(__name__)

# skops (MLflow's safe sklearn format) must be told the MLP's optimizer is a trusted type.
ADAM = ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]


@mo.task(cache=True)
def load_data() -> dict:
    """The 1,797 8x8 digit images, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"X": (digits.data / 16.0).astype(np.float32), "y": digits.target}


@mo.task(cache=True)
def make_folds(data: dict, k: int = 3, seed: int = 0) -> list:
    """Train/validation index pairs for k-fold cross-validation."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(train, val) for train, val in splitter.split(data["X"], data["y"])]


@mo.task(retries=1, retry_delay=0.5)
def train_fold(i: int, folds: list, data: dict, lr: float, hidden: int, alpha: float, epochs: int) -> dict:
    """One MLP trained on fold ``i``; its validation loss is logged per epoch."""
    from sklearn.metrics import accuracy_score, log_loss

    train_idx, val_idx = folds[i]
    X, y = data["X"], data["y"]
    clf = _mlp(lr, hidden, alpha)
    classes = np.unique(y)
    val_loss = float("nan")
    for epoch in range(epochs):
        clf.partial_fit(X[train_idx], y[train_idx], classes=classes)
        val_loss = float(log_loss(y[val_idx], clf.predict_proba(X[val_idx]), labels=classes))
        mo.log_metric(f"fold{i}_val_loss", val_loss, step=epoch)  # buffered; sent to the driver in batches
    accuracy = float(accuracy_score(y[val_idx], clf.predict(X[val_idx])))
    log.info("fold %d done: val_loss=%.4f accuracy=%.4f", i, val_loss, accuracy)
    return {"val_loss": val_loss, "accuracy": accuracy}


@mo.task
def fit_final(data: dict, lr: float, hidden: int, alpha: float, epochs: int) -> None:
    """The model on all the data, logged to MLflow (a sweep registers the best trial's)."""
    clf = _mlp(lr, hidden, alpha)
    classes = np.unique(data["y"])
    for _ in range(epochs):
        clf.partial_fit(data["X"], data["y"], classes=classes)
    mo.log_model(clf, name="digits-mlp", input_example=data["X"][:5], skops_trusted_types=ADAM)


@mo.task
def summarize(scores: list) -> dict:
    """Mean validation loss and accuracy over the folds."""
    return {
        "val_loss": float(np.mean([s["val_loss"] for s in scores])),
        "accuracy": float(np.mean([s["accuracy"] for s in scores])),
    }


def _mlp(lr: float, hidden: int, alpha: float):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(hidden,), learning_rate_init=lr, alpha=alpha, random_state=0)


@mo.flow(experiment="digits")
def pipeline(lr: float = 0.01, hidden: int = 32, alpha: float = 1e-4, epochs: int = 15, k: int = 3) -> dict:
    data = load_data()
    folds = make_folds(data, k=k)
    scores = train_fold.map(range(k), folds=folds, data=data, lr=lr, hidden=hidden, alpha=alpha, epochs=epochs)
    fit_final(data, lr, hidden, alpha, epochs)
    return summarize(scores)
