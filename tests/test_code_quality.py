"""The code base stays clean: ruff (lint and format), mypy, and the import-linter layer contracts.

Each tool is configured in pyproject.toml; this runs them as CI would, so a lint error, a
type error or an upward import fails the test suite, not a later review.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
        ["lint-imports"],
    ],
    ids=["ruff-lint", "ruff-format", "mypy", "import-linter"],
)
def test_tool_is_clean(command):
    out = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
