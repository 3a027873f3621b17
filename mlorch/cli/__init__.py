"""``mlorch`` command line. Each sub-command lives in its own module with ``add_parser``/``main``.

Errors mlorch raises on purpose (``MlorchError``) print one clear line and exit 2;
anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from mlorch.errors import MlorchError

__all__ = ["main"]

# name -> module under mlorch.cli providing add_parser(subparsers) and main(args) -> int
COMMANDS = {"run": "mlorch.cli.run", "sweep": "mlorch.cli.sweep", "ui": "mlorch.cli.ui", "cluster": "mlorch.cli.cluster"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlorch", description="Run ML flows and sweeps on a Dask cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``scancel`` of a driver job): unwound like Ctrl-C, so clusters, jobs and runs are closed."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = importlib.import_module(COMMANDS[args.command])
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(command.main(args) or 0)
    except MlorchError as exc:
        from mlorch.tracking.secrets import scrub

        print(f"mlorch: error: {scrub(str(exc))}", file=sys.stderr)  # a task's error may quote a secret
        return 2
    except Terminated:
        print("mlorch: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("mlorch: interrupted", file=sys.stderr)
        return 130
