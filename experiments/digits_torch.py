"""Digits with a small PyTorch MLP (CPU): metrics per epoch, the model logged and registered.

Uses scikit-learn's digits data set (it ships with scikit-learn: no download) and
torch on CPU. Each run adds a version of the registered model ``digits-mlp``;
``promote`` points the ``champion`` alias at the newest one.

    mlorch run experiments/digits_torch.py:pipeline --set epochs=5 --set hidden=64
    mlorch ui        # then open the run, its metrics and the registered model
"""

from __future__ import annotations

import numpy as np

import mlorch as mo

MODEL_NAME = "digits-mlp"


@mo.task(cache=True)
def load_split(seed: int = 0) -> dict:
    """The 1,797 8x8 digit images scaled to [0, 1], split 80/20 (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    X_tr, X_va, y_tr, y_va = train_test_split(X, digits.target, test_size=0.2, stratify=digits.target, random_state=seed)
    return {"X_train": X_tr, "y_train": y_tr, "X_val": X_va, "y_val": y_va}


@mo.task
def train_mlp(data: dict, hidden: int, lr: float, epochs: int, batch_size: int, seed: int, register: bool) -> dict:
    """Train the MLP, log loss/accuracy per epoch, then log (and register) the model."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    X, y = torch.from_numpy(data["X_train"]), torch.from_numpy(data["y_train"]).long()
    X_val, y_val = torch.from_numpy(data["X_val"]), torch.from_numpy(data["y_val"]).long()
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(X))
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            mo.log_metric("train_loss", loss.item(), step=epoch * len(X) + start)
        model.eval()
        with torch.no_grad():
            logits = model(X_val)
            val_loss = loss_fn(logits, y_val).item()
            accuracy = (logits.argmax(1) == y_val).float().mean().item()
        mo.log_metrics({"val_loss": val_loss, "val_accuracy": accuracy}, step=epoch)
    mo.log_model(model, name=MODEL_NAME, register=register, input_example=data["X_val"][:5])
    return {"val_loss": val_loss, "val_accuracy": accuracy}


@mo.flow(experiment="digits-torch")
def pipeline(
    hidden: int = 64, lr: float = 0.01, epochs: int = 5, batch_size: int = 64, seed: int = 0, register: bool = True
) -> dict:
    data = load_split(seed)
    return train_mlp(data, hidden, lr, epochs, batch_size, seed, register)


def promote(alias: str = "champion") -> int | None:
    """Point ``alias`` at the newest registered version (run after ``pipeline``)."""
    return mo.set_model_alias(MODEL_NAME, alias)


if __name__ == "__main__":
    with mo.cluster(n_workers=2, dashboard_address=None):
        print(pipeline())
    print("champion ->", promote())
