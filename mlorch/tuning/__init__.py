"""Optuna sweeps on the cluster: ``mo.sweep``, ``mo.report`` and the search-space helpers.

Layout (one responsibility each): ``space`` (search-space specs), ``options``
(samplers, pruners, directions), ``plan`` (argument checks before any trial),
``storage`` (the Optuna journal and its reopening on workers), ``pool`` (keys shared
by trials), ``driver`` (the ask/run/tell loop), ``report`` (``mo.report`` on workers),
``objective`` (plain Optuna objectives on workers), ``hooks`` (what the driver tells
MLflow tracking and other listeners), ``handle`` (the ``Sweep`` study), ``api`` (``sweep()`` itself).
"""

from mlorch.tuning.api import sweep
from mlorch.tuning.report import report
from mlorch.tuning.space import choice, intrange, loguniform, uniform

__all__ = ["Sweep", "choice", "intrange", "loguniform", "report", "sweep", "uniform"]


def __getattr__(name: str) -> object:
    """``Sweep`` subclasses ``optuna.Study``: imported on first use, so ``import mlorch`` stays free of Optuna."""
    if name == "Sweep":
        from mlorch.tuning.handle import Sweep

        return Sweep
    raise AttributeError(f"module 'mlorch.tuning' has no attribute {name!r}")
