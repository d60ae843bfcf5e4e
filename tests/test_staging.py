"""Staging folders of concurrent and crashed runs, without Spark: a live run's folder is never taken for debris."""

from __future__ import annotations

import subprocess
import sys

from anomalake.pipelines.lake.publishing import JOURNAL, OWNER, begin_staging, end_staging, recover, staging_root

KEYS = {"detector": "dense_autoencoder"}


def test_a_run_started_meanwhile_leaves_a_live_runs_staging_alone(tmp_path):
    first = begin_staging(tmp_path, KEYS, "run1")
    (first / "dt=2026-02-03").mkdir()
    (first / "dt=2026-02-03" / "part-00000.parquet").write_bytes(b"rows of the first run")
    second = begin_staging(tmp_path, KEYS, "run2")  # a backfill's next day, same table and detector
    assert (first / "dt=2026-02-03" / "part-00000.parquet").exists(), "the second run deleted a live run's files"
    assert recover(tmp_path, KEYS) == []
    end_staging(first)
    end_staging(second)
    assert not any(staging_root(tmp_path, KEYS).iterdir())


def test_the_staging_of_a_run_whose_process_died_is_recovered(tmp_path):
    # A child process stages, holds the lock and dies without cleaning up (as a killed job does).
    code = (
        "import sys, os; from pathlib import Path; from anomalake.pipelines.lake.publishing import begin_staging;"
        f"stage = begin_staging(Path({str(tmp_path)!r}), {KEYS!r}, 'dead'); (stage / 'x.parquet').write_text('x'); "
        "os._exit(137)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 137
    dead = staging_root(tmp_path, KEYS) / "dead"
    assert (dead / OWNER).exists() and not (dead / JOURNAL).exists()
    assert recover(tmp_path, KEYS) == ["dead"]
    assert not dead.exists()
