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


def test_runs_of_one_table_starting_and_ending_at_once_never_take_each_others_staging(tmp_path):
    # A backfill starts and ends jobs of one table on different days at the same moments. Each of three processes
    # stages and deletes many runs in a row; a run whose own file vanished before it ended, or a recovery that
    # met a folder being deleted by its owner, fails its process.
    code = (
        "import sys; from pathlib import Path; "
        "from anomalake.pipelines.lake.publishing import begin_staging, end_staging\n"
        "for n in range(400):\n"
        f"    stage = begin_staging(Path({str(tmp_path)!r}), {KEYS!r}, f'{{sys.argv[1]}}-{{n}}')\n"
        "    (stage / 'dt=2026-02-03').mkdir()\n"
        "    (stage / 'dt=2026-02-03' / 'part-00000.parquet').write_bytes(b'rows')\n"
        "    if not (stage / 'dt=2026-02-03' / 'part-00000.parquet').exists(): sys.exit(f'run {n} lost its rows')\n"
        "    end_staging(stage)\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, f"p{i}"], stderr=subprocess.PIPE, text=True) for i in range(3)
    ]
    failures = [w.communicate(timeout=300)[1] for w in workers if w.wait(timeout=300) != 0]
    assert not failures, failures[0][-2000:]
    assert not any(p.is_dir() for p in staging_root(tmp_path, KEYS).iterdir())
