"""Fault injection shared by the crash tests: kill a job's process at a moment seen from outside it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def kill_while_writing(process: subprocess.Popen, staging: Path, timeout_s: float = 600) -> None:
    """SIGKILL the job as soon as its tasks have started writing staged files (the first file appears there)."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        if staging.exists() and any(path.is_file() for path in staging.rglob("*")):
            process.kill()
            return
        time.sleep(0.005)
