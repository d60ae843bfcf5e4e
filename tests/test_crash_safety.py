"""Fault injection: the windows and score jobs killed at each point of their write leave every partition old or new,
complete.

The killed job is a real `anomalake windows` or `anomalake score` process, SIGKILLed by a watcher while its tasks
are writing data files into the features or scores table's folder, or ending itself with os._exit (no clean-up code
runs, as with `kill -9`) after its files are written and before its Delta commit ("written"), or right after the
commit ("committed"). After each kill a reader (Spark, as `anomalake sql` reads) must see each day with all its
rows from one run, never a file that no commit added; the next run must complete the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import START, TINY_DETECTOR, TINY_TABLE, copy_lake, read_rows, template_context
from faults import kill_while_writing, orphan_files

from anomalake.models.artifacts import write_current
from anomalake.pipelines.config import parse_table
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.delta import read_delta
from anomalake.pipelines.lake.delta import snapshot_files as snapshot_files_of
from anomalake.pipelines.lake.layout import day_range, partition_path
from anomalake.pipelines.scoring.job import run_score_days
from anomalake.pipelines.training.job import run_train

pytestmark = pytest.mark.slow
DAYS = day_range(START, START + timedelta(days=3))
SCORED = DAYS[2:]  # two days, replaced in one commit


@pytest.fixture(scope="module")
def two_models_lake(spark, tmp_path_factory):
    """A lake whose SCORED days were scored with model `old`; CURRENT now points at a newer model. Built once for
    the module (two trainings and a scoring); each test kills a job in its own copy."""
    ctx = template_context(spark, tmp_path_factory, "two-models")
    table = parse_table("telemetry", TINY_TABLE)
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(DAYS), 2, 7))
    run_windows(ctx, table, DAYS)
    old = run_train(ctx, table, "dense_autoencoder", DAYS[0], DAYS[1], spec=TINY_DETECTOR, verbose=0)
    run_score_days(ctx.with_new_run(), table, "dense_autoencoder", SCORED)
    new = run_train(ctx.with_new_run(), table, "dense_autoencoder", DAYS[0], DAYS[1], spec=TINY_DETECTOR, verbose=0)
    write_current(ctx.lake.models("dense_autoencoder", "telemetry"), new.version)
    expected = {
        r["dt"]: r["n"] for r in read_scores(ctx).groupBy("dt").count().withColumnRenamed("count", "n").collect()
    }
    assert set(expected) == {d.isoformat() for d in SCORED}
    return ctx, old.version, new.version, expected


@pytest.fixture
def two_models(ctx, two_models_lake):
    """This test's own copy of the two-models lake, as the test's lake: (old version, new version, rows per day)."""
    template, old, new, expected = two_models_lake
    copy_lake(template, ctx)
    return old, new, expected


def read_scores(ctx):
    return read_delta(ctx.spark, ctx.lake.scores("telemetry"))


def snapshot_files(ctx) -> set:
    """The data files the scores table's snapshot names."""
    return {Path(unquote(urlparse(f).path)) for f in read_scores(ctx).inputFiles()}


def versions_by_day(ctx) -> dict[str, tuple[set[str], set[str], int]]:
    """Per day: the model versions and run ids of its rows, and its row count, as a reader sees them now."""
    rows = (
        read_scores(ctx)
        .groupBy("dt")
        .agg({"model_version": "collect_set", "run_id": "collect_set", "*": "count"})
        .collect()
    )
    return {r["dt"]: (set(r["collect_set(model_version)"]), set(r["collect_set(run_id)"]), r["count(1)"]) for r in rows}


def job_process(ctx, tmp_path, crash_at: str, args: list[str]) -> subprocess.Popen:
    """A real `anomalake` job process on the test's lake, told to kill itself at `crash_at` (not at "writing": the
    test's watcher kills it then)."""
    tables = tmp_path / "tables.yml"
    tables.write_text(yaml.safe_dump({"telemetry": TINY_TABLE}))
    env = {
        **os.environ,
        "ANOMALAKE_LAKE": str(ctx.lake.root),
        "ANOMALAKE_MASTER": "local[2]",
        "ANOMALAKE_TABLES": str(tables),
    }
    if crash_at != "writing":
        env["ANOMALAKE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "anomalake.pipelines.jobs.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_kill(process: subprocess.Popen, table: Path, crash_at: str) -> None:
    """Kill the job once its tasks write into `table` ("writing"), or let it kill itself; it must end killed."""
    if crash_at == "writing":
        kill_while_writing(process, table)
    output = process.communicate(timeout=600)[0]
    assert process.returncode in (137, -signal.SIGKILL), (
        f"the job was not killed at {crash_at}: rc {process.returncode}\n{output[-3000:]}"
    )


def score_process(ctx, tmp_path, crash_at: str) -> subprocess.Popen:
    args = [
        "score",
        "--detector",
        "dense_autoencoder",
        "--table",
        "telemetry",
        "--start",
        SCORED[0].isoformat(),
        "--end",
        SCORED[-1].isoformat(),
    ]
    return job_process(ctx, tmp_path, crash_at, args)


@pytest.mark.parametrize("crash_at", ["writing", "written", "committed"])
def test_killed_score_job_leaves_old_or_new_partitions_and_the_rerun_completes(
    ctx, tiny_table, tmp_path, two_models, crash_at
):
    old, new, expected = two_models
    wait_for_kill(score_process(ctx, tmp_path, crash_at), ctx.lake.scores("telemetry"), crash_at)

    seen = versions_by_day(ctx)
    assert set(seen) == set(expected), f"a day vanished after a kill at {crash_at}: {sorted(seen)}"
    for day, (versions, run_ids, count) in seen.items():
        assert len(versions) == 1 and len(run_ids) == 1, (
            f"{day} mixes runs after a kill at {crash_at}: {versions} {run_ids}"
        )
        assert count == expected[day], (
            f"{day} is incomplete after a kill at {crash_at}: {count} of {expected[day]} rows"
        )
    after_commit = {new} if crash_at == "committed" else {old}
    assert all(versions == after_commit for versions, _, _ in seen.values()), f"after a kill at {crash_at}: {seen}"
    orphans = orphan_files(ctx.lake.scores("telemetry"), snapshot_files(ctx))
    if crash_at == "written":
        assert orphans, "the killed run had written its files, which no commit names"

    run_score_days(ctx.with_new_run(), tiny_table, "dense_autoencoder", SCORED)
    seen = versions_by_day(ctx)
    assert {day: (versions, count) for day, (versions, _, count) in seen.items()} == {
        day: ({new}, n) for day, n in expected.items()
    }
    live = snapshot_files(ctx)
    assert live and not live & orphans, "a file of the killed run is read"


def features_now(ctx) -> pd.DataFrame:
    """The features table as a reader sees it now (Spark, through the snapshot), in a fixed order."""
    frame = read_rows(ctx.spark, ctx.lake.features("telemetry"))
    frame["x"] = frame["x"].map(lambda x: tuple(np.asarray(x).tolist()))
    return frame.sort_values(["dt", "entity_id", "ts"], ignore_index=True)


@pytest.mark.parametrize("crash_at", ["writing", "written", "committed"])
def test_killed_windows_job_leaves_old_or_new_features_and_the_rerun_completes(ctx, tiny_table, tmp_path, crash_at):
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(DAYS), 2, 7))
    run_windows(ctx, tiny_table, DAYS)
    old = features_now(ctx)
    for day in SCORED:  # new raw values, so new windows: the killed run's rows differ from the old ones
        folder = partition_path(ctx.lake.raw(tiny_table), dt=day.isoformat())
        for part in folder.glob("*.parquet"):
            frame = pd.read_parquet(part)
            frame.assign(cpu=frame["cpu"] * 2).to_parquet(part, index=False, coerce_timestamps="us")
    args = ["windows", "--table", "telemetry", "--start", SCORED[0].isoformat(), "--end", SCORED[-1].isoformat()]
    wait_for_kill(job_process(ctx, tmp_path, crash_at, args), ctx.lake.features("telemetry"), crash_at)
    seen = features_now(ctx)
    root = ctx.lake.features("telemetry")
    orphans = orphan_files(root, {Path(f) for f in snapshot_files_of(root, {})})
    if crash_at == "written":
        assert orphans, "the killed run had written its files, which no commit names"

    run_windows(ctx.with_new_run(), tiny_table, SCORED)
    new = features_now(ctx)
    assert len(new) == len(old) and not new.equals(old), "the new raw values give new windows"
    pd.testing.assert_frame_equal(seen, new if crash_at == "committed" else old, check_exact=True)
    live = {Path(f) for f in snapshot_files_of(root, {})}
    assert live and not live & orphans, "a file of the killed run is read"
