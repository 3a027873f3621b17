"""The reproducibility record of a run: code version, library versions, machine, command.

Git facts come from the repository of the launched script, or of the working
directory when there is no script (a notebook, ``python -c``), which is what MLflow
itself misses for notebooks. Versions are read from package metadata, so torch is
never imported just to report its version.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mlorch.names import HOST_TAG

__all__ = ["git_info", "launch_info", "repro_tags", "versions"]

PACKAGES = ("mlorch", "dask", "distributed", "optuna", "mlflow", "torch", "scikit-learn", "numpy")


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on (read once per process: they are what was imported)."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _source_dir() -> Path:
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and not _in_notebook():
        path = Path(script).resolve()
        # An entry point (``mlorch``, ``pytest``) lives in the environment, not the project: use cwd.
        if not path.is_relative_to(Path(sys.prefix).resolve()):
            return path.parent
    return Path.cwd()


def git_info(where: Path | None = None) -> dict[str, str]:
    """commit, dirty flag, branch and repo root of the code being run ({} outside git)."""
    cwd = where or _source_dir()
    commit = _git(cwd, "rev-parse", "HEAD")
    if not commit:
        return {}
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    info = {"commit": commit, "dirty": "true" if status else "false"}
    branch = _git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
    if branch:
        info["branch"] = branch
    root = _git(cwd, "rev-parse", "--show-toplevel")
    if root:
        info["root"] = root
    return info


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (not merely when ipykernel was imported by a tool)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _notebook_path() -> str | None:
    for var in ("JPY_SESSION_NAME", "MLORCH_NOTEBOOK"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        from IPython import get_ipython

        shell = get_ipython()
        path = shell.user_ns.get("__vsc_ipynb_file__") if shell is not None else None
        return str(path) if path else None
    except Exception:
        return None


def launch_info() -> dict[str, str]:
    """How the run was launched: the command line, or the notebook."""
    if _in_notebook():
        return {"source_type": "NOTEBOOK", "source": _notebook_path() or "notebook (unknown path)"}
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else "python")
    return {"source_type": "LOCAL", "source": str(script), "command": " ".join([Path(sys.executable).name, *sys.argv])}


def repro_tags(cluster: Any = None) -> dict[str, str]:
    """Tags describing code, libraries, host, cluster and launch of this run."""
    tags: dict[str, str] = {HOST_TAG: socket.gethostname(), "mlorch.platform": platform.platform()}
    for name, version in versions().items():
        tags[f"mlorch.version.{name}"] = version
    git = git_info()
    if git:
        tags["mlflow.source.git.commit"] = git["commit"]
        tags["mlorch.git.commit"] = git["commit"]
        tags["mlorch.git.dirty"] = git["dirty"]
        if "branch" in git:
            tags["mlflow.source.git.branch"] = git["branch"]
        if "root" in git:
            tags["mlorch.git.root"] = git["root"]
    else:
        tags["mlorch.git.commit"] = "none (not a git repository)"
    launch = launch_info()
    tags["mlflow.source.type"] = launch["source_type"]
    tags["mlflow.source.name"] = launch["source"]
    if "command" in launch:
        tags["mlorch.command"] = launch["command"]
    else:
        tags["mlorch.notebook"] = launch["source"]
    if cluster is not None:
        tags["mlorch.cluster.kind"] = str(getattr(cluster, "kind", "unknown"))
        try:
            tags["mlorch.cluster.workers"] = str(cluster.n_workers)
        except Exception:
            tags["mlorch.cluster.workers"] = "unknown"
        gpus = list(getattr(cluster, "gpu_ids", []) or [])
        tags["mlorch.gpus"] = ",".join(str(g) for g in gpus) if gpus else "none"
    try:
        import getpass

        tags["mlflow.user"] = getpass.getuser()
    except Exception:
        pass
    return tags
