"""Shared fixtures: one local[2] SparkSession for the whole run, a fresh lake per test, tiny configs.

Tiers (markers): unit (the default, added to every test without a tier), spark, slow, airflow, cluster.
Each tier runs alone with `python -m pytest -m <tier>`; its fixtures start what it needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from datetime import date

import pandas as pd
import pytest

from anomalake.pipelines.config import DetectorSpec, parse_table
from anomalake.pipelines.settings import load_settings

TIERS = ("unit", "spark", "slow", "airflow", "cluster")

# Every job a test runs in a subprocess (the CLI, Airflow's tasks, the killed jobs, the benchmarks) starts a Spark
# driver JVM for a few hundred rows, where compiling hot code with C2 costs more than it saves: with the C1
# compiler alone and the serial collector a bare session's start and first job took 7.7 s instead of 9.9 s, and
# the CLI walk 139 s instead of 165 s. Tests only (spark-submit reads SPARK_SUBMIT_OPTS); production jobs keep
# the JVM's defaults. Set here, before any session starts, so every tier run alone gets it too.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -XX:+UseSerialGC")

TINY_TABLE = {
    "kind": "timeseries",
    "path": "raw/telemetry",
    "entity": "entity_id",
    "time": "ts",
    "features": ["cpu", "memory", "latency", "requests"],
    "step": "5min",
    "gaps": {"fill_limit": 2},
    "window": {"length": 8, "stride": 1},
    "detectors": ["dense_autoencoder"],
    "max_quarantine_share": 0.5,
}
TINY_DETECTOR = DetectorSpec(
    name="dense_autoencoder",
    family="dense_autoencoder",
    params={"hidden": [16, 4], "epochs": 2, "batch_size": 64, "seed": 3},
    calibration={"method": "robust_z", "threshold_z": 3.0, "holdout_fraction": 0.3},
)
START = date(2026, 2, 2)


def pytest_collection_modifyitems(items):
    """Tests without a tier marker belong to the unit tier."""
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS[1:]):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def tiny_table():
    """A telemetry table config with 8-step windows."""
    return parse_table("telemetry", TINY_TABLE)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The one SparkSession of the test run (local[2])."""
    from anomalake.pipelines.spark import get_spark

    lake = tmp_path_factory.mktemp("session-lake")
    settings = dataclasses.replace(
        load_settings(), lake=str(lake), master="local[2]", shuffle_partitions=2, driver_memory="2g"
    )
    session = get_spark(settings, "anomalake-tests")
    yield session
    session.stop()


@pytest.fixture
def ctx(spark, tmp_path):
    """A job context whose lake is this test's own folder."""
    from anomalake.pipelines.lake.context import JobContext

    settings = dataclasses.replace(load_settings(), lake=str(tmp_path / "lake"), master="local[2]")
    return JobContext(settings, spark)


def template_context(spark, tmp_path_factory, name: str):
    """A job context on a lake folder of its own: a module builds its expensive lake here once (windows, a trained
    model) and each test works on its own copy (`copy_lake`), so no test sees another's changes."""
    from anomalake.pipelines.lake.context import JobContext

    lake = tmp_path_factory.mktemp(name) / "lake"
    return JobContext(dataclasses.replace(load_settings(), lake=str(lake), master="local[2]"), spark)


def copy_lake(template, ctx) -> None:
    """Copy a template lake (a JobContext's) into this test's own lake folder."""
    shutil.copytree(template.lake.root, ctx.lake.root, dirs_exist_ok=True)


@pytest.fixture(scope="session", autouse=True)
def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def snapshot_rows(root, **partition) -> pd.DataFrame:
    """A Delta table's rows under `partition` (e.g. detector=..., dt=...) read without Spark, as the nightly check
    reads them; an empty frame when there are none."""
    from anomalake.pipelines.lake.delta import read_snapshot

    frame = read_snapshot(root, {key: str(value) for key, value in partition.items()})
    return frame if frame is not None else pd.DataFrame()


def append_features(ctx, table: str, rows: pd.DataFrame) -> None:
    """Rows (entity_id, ts, x, dt) added to a table's features in a commit of their own, beside the windows job's."""
    from anomalake.pipelines.lake.schemas import FEATURES

    frame = ctx.spark.createDataFrame(rows[[f.name for f in FEATURES.fields]], schema=FEATURES)
    frame.write.format("delta").mode("append").save(str(ctx.lake.features(table)))


def committed_by(root, **keys) -> dict[str, str]:
    """The run whose commit last replaced each day (under `keys`, e.g. detector=...) of a Delta table, from its
    history's user metadata (delta-rs, as a process without Spark reads it)."""
    from deltalake import DeltaTable

    last = {}
    for commit in sorted(DeltaTable(str(root)).history(), key=lambda c: c["version"]):
        metadata = json.loads(commit.get("userMetadata") or "{}")
        if metadata.get("partition") != keys:
            continue
        for day in metadata.get("days", []):
            last[day] = metadata["run_id"]
    return last


def read_rows(spark, root, **keys):
    """A lake table's rows as pandas (only those under `keys`, e.g. job=..., dt=...): a Delta table through its
    snapshot (its folder also holds files that commits removed), a Parquet folder as it is."""
    from pyspark.sql import functions as F

    from anomalake.pipelines.lake.delta import read_table

    frame = read_table(spark, root)
    for key, value in keys.items():
        frame = frame.where(F.col(key) == value)
    return frame.toPandas()


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory) -> str:
    """`anomalake demo`'s stdout, run once per session as a user runs it: the demo test reads its figures, and the
    getting-started walk compares its events with the demo's."""
    lake = tmp_path_factory.mktemp("demo") / "lake"
    env = {**os.environ, "ANOMALAKE_LAKE": str(lake), "ANOMALAKE_MASTER": "local[2]"}
    result = subprocess.run(
        [sys.executable, "-m", "anomalake.pipelines.jobs.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"anomalake demo failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result.stdout
