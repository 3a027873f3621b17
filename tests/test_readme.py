"""Every command and code block in the README works as written, so the README cannot drift.

Each ```bash line and each ```python block runs as a user would run it after the Quick start
(``.venv/bin`` first on PATH, as ``source .venv/bin/activate`` does), in a fresh project
folder. Where a block is too long for a test, the README says so right before it in a comment
read by this test:

    <!-- readme-test: budget n_trials=20 -> n_trials=2 -->   text replaced before running
    <!-- readme-test: setup from experiments.digits import pipeline -->   a line run first
    <!-- readme-test: fragment -->   not runnable (placeholders): compiled, and every mo.* name it uses exists
    <!-- readme-test: skip <reason> -->
    <!-- readme-test: skipline <command> (reason) -->   one bash line not run (the test command itself)

A ```yaml block is validated as the config it shows.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import mlorch as mo
from tests.conftest import ROOT

README = ROOT / "README.md"
BLOCK = re.compile(r"((?:<!-- readme-test: [^\n]*-->\n)*)```(\w+)\n(.*?)```", re.S)
MARK = re.compile(r"<!-- readme-test: (\w+) ?(.*?) -->")


@dataclass
class Block:
    lang: str
    code: str
    line: int
    marks: list[tuple[str, str]] = field(default_factory=list)

    def mark(self, kind: str) -> list[str]:
        return [arg for k, arg in self.marks if k == kind]

    def budgeted(self, text: str) -> str:
        for rule in self.mark("budget"):
            old, new = (part.strip() for part in rule.split("->"))
            assert old in text, f"README line {self.line}: budget {old!r} not in the block"
            text = text.replace(old, new)
        return text


def blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(m.group(2), m.group(3), text[: m.start(2)].count("\n") + 1, MARK.findall(m.group(1))) for m in BLOCK.finditer(text)
    ]


def commands() -> list[tuple[Block, str]]:
    out = []
    for block in blocks():
        if block.lang != "bash" or block.mark("skip"):
            continue
        for raw in block.code.splitlines():
            line = raw.split("  #")[0].strip()
            if any(line.startswith(rule.split(" (")[0]) for rule in block.mark("skipline")):
                continue
            if line and not line.startswith("#"):
                out.append((block, line))
    return out


def _env(tmp_path: Path) -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLORCH_HOME": str(tmp_path / "project"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, as for a new user
    return env


def _run(args: list[str] | str, tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = _env(tmp_path)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, shell=isinstance(args, str))


def test_the_readme_has_the_blocks_this_test_runs():
    langs = [b.lang for b in blocks()]
    assert langs.count("bash") >= 4 and langs.count("python") >= 4 and "yaml" in langs
    assert all(k in ("budget", "setup", "fragment", "skip", "skipline") for b in blocks() for k, _ in b.marks)


@pytest.mark.parametrize("block, command", commands(), ids=[c for _, c in commands()])
def test_every_readme_command_works_as_written(block, command, tmp_path):
    line = block.budgeted(command)
    if line.startswith("python3 dev.py") and not (ROOT / ".venv").is_dir():
        pytest.skip("dev.py works from the repository's own .venv (made by the Quick start), absent in this checkout")
    out = _run(line, tmp_path)
    assert out.returncode == 0, f"README line {block.line}: {line}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


PYTHON = [b for b in blocks() if b.lang == "python"]


@pytest.mark.parametrize("block", PYTHON, ids=[f"line-{b.line}" for b in PYTHON])
def test_every_readme_python_block_runs_or_is_a_checked_fragment(block, tmp_path):
    code = block.budgeted(block.code)
    compile(code, f"README.md:{block.line}", "exec")
    used = set(re.findall(r"\bmo\.(\w+)", code))
    missing = sorted(name for name in used if not hasattr(mo, name))
    assert not missing, f"README line {block.line} uses mo.{', mo.'.join(missing)}, which mlorch does not have"
    if block.mark("fragment") or block.mark("skip"):
        return
    script = tmp_path / "block.py"
    script.write_text("\n".join([f"import sys; sys.path.insert(0, {str(ROOT)!r})", *block.mark("setup"), code, ""]))
    out = _run([sys.executable, str(script)], tmp_path)
    assert out.returncode == 0, f"README line {block.line}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def test_every_readme_yaml_block_is_a_valid_config(tmp_path):
    from mlorch.config import load_cluster_config

    for block in (b for b in blocks() if b.lang == "yaml"):
        path = tmp_path / f"line-{block.line}.yaml"
        path.write_text(block.code)
        load_cluster_config(path)  # raises a ConfigError naming the field if the README shows a bad config


def test_readme_inline_commands_name_real_subcommands_and_flags():
    text = README.read_text()
    from mlorch.cli import build_parser

    parser = build_parser()
    for inline in re.findall(r"`((?:\.venv/bin/)?mlorch [^`]+)`", text):
        words = shlex.split(inline.replace(".venv/bin/", ""))[1:]
        if not words or words[0] not in ("run", "sweep", "ui", "cluster"):
            continue
        flags = [w for w in words if w.startswith("--")]
        help_text = _help(parser, words[0] if words[0] != "cluster" else "cluster")
        for flag in flags:
            assert flag.split("=")[0] in help_text, f"README: `{inline}` uses {flag}, unknown to `mlorch {words[0]}`"


def _help(parser, command: str) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        parser.parse_args([command, "--help"])
    return buffer.getvalue()
