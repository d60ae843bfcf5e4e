"""Fault injection shared by the crash tests: kill a job's process at a moment seen from outside it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

DATA_FILES = "*part-*"  # a task's data file, finished (part-...) or being written (a hidden .part-... temp file)


def kill_while_writing(process: subprocess.Popen, table: Path, timeout_s: float = 600) -> None:
    """SIGKILL the job as soon as its tasks have started writing data files into the table's folder (the first
    data file that was not there before appears; the transaction log and lock files do not count)."""
    before = set(table.rglob(DATA_FILES))
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        if any(p not in before and "_delta_log" not in p.parts for p in table.rglob(DATA_FILES)):
            process.kill()
            return
        time.sleep(0.005)


def orphan_files(table: Path, snapshot_files: set[Path]) -> set[Path]:
    """The data files in a table's folder that its snapshot does not name (what a killed run left)."""
    return {p for p in table.rglob("part-*.parquet") if "_delta_log" not in p.parts} - snapshot_files
