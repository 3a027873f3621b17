#!/usr/bin/env python3
"""One entry point that installs what it needs, then runs: ``python3 dev.py sweep|test|run ...``.

It makes ``.venv`` (if missing), installs torch's CPU wheel first (so the ``torch``
extra is already met and pip never fetches a CUDA build), then this project with
its extras. Reinstalls only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".mlorch-installed"
TORCH = "torch==2.13.0"


def sh(*cmd: str, **kw: object) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, **kw)  # type: ignore[arg-type]


def ensure_venv() -> None:
    if not PY.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if sh(*pip, TORCH) != 0:
        print(f"note: {TORCH} could not be installed; the torch example and its tests need it", flush=True)
    if sh(*pip, "-e", ".[torch,hpc,dev,notebook]") != 0 and sh(*pip, "-e", ".[hpc,dev,notebook]") != 0:
        sys.exit("dev.py: installing the project failed")
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("commands: sweep [--n-trials N] (the digits sweep), test [pytest args], run <mlorch args>")
        return 0
    ensure_venv()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    command, rest = argv[0], argv[1:]
    if command == "test":
        setup = ROOT / ".ci" / "setup-services"
        if setup.exists() and sh("bash", str(setup)) != 0:
            return 1
        code = sh(str(PY), "-m", "pytest", *rest, env=env)
        if code == 5:
            print("dev.py: pytest collected no tests; that is a failure", flush=True)
            return 1
        return code
    if command == "sweep":
        return sh(str(PY), "-m", "mlorch", "sweep", "configs/sweeps/digits.yaml", *rest, env=env)
    if command == "run":
        return sh(str(PY), "-m", "mlorch", *rest, env=env)
    print(f"dev.py: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
