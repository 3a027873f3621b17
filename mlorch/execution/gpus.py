"""Which GPUs this machine has: CUDA_VISIBLE_DEVICES first, then ``nvidia-smi -L``."""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["detect_gpus"]


def detect_gpus() -> list[str]:
    """Device ids a local cluster should pin one worker process to each of."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
