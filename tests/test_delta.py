"""Delta Lake in every job's session: the JARs pinned in infra/jars.txt, Delta's SQL extension and catalog.

What later steps build on (../shared/DESIGN.md): a partitioned write, replacing one day with replaceWhere, reading
an older version, and the commit history with the run id in the commit's user metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from anomalake.pipelines.errors import JobError
from anomalake.pipelines.settings import REPO_ROOT, load_settings
from anomalake.pipelines.spark import installed_jars


@pytest.mark.unit
def test_the_jars_are_the_pinned_ones_and_a_missing_folder_says_how_to_fetch_them(tmp_path):
    pinned = {}
    for line in (REPO_ROOT / "infra" / "jars.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            coordinates, sha256 = line.split()
            _, artifact, version = coordinates.split(":")
            pinned[f"{artifact}-{version}.jar"] = sha256
    jars = installed_jars(load_settings())
    assert {Path(j).name for j in jars} == set(pinned)
    for jar in jars:
        assert hashlib.sha256(Path(jar).read_bytes()).hexdigest() == pinned[Path(jar).name]
    with pytest.raises(JobError, match=rf"ANOMALAKE_JARS={tmp_path}: no delta-spark_2.13 or delta-storage JAR; "):
        installed_jars(dataclasses.replace(load_settings(), jars=str(tmp_path)))


@pytest.mark.spark
def test_a_partitioned_delta_table_replaces_one_day_and_keeps_its_history(spark, tmp_path):
    path = str(tmp_path / "scores")
    rows = [("a", "2026-01-01", 1.0), ("a", "2026-01-02", 2.0), ("b", "2026-01-02", 3.0)]
    df = spark.createDataFrame(rows, "entity_id string, dt string, score double")
    df.write.format("delta").partitionBy("dt").option("userMetadata", '{"run_id": "run1"}').save(path)
    rerun = spark.createDataFrame([("a", "2026-01-02", 20.0)], "entity_id string, dt string, score double")
    (
        rerun.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", "dt = '2026-01-02'")
        .option("userMetadata", '{"run_id": "run2"}')
        .save(path)
    )
    now = sorted(tuple(r) for r in spark.read.format("delta").load(path).collect())
    assert now == [("a", "2026-01-01", 1.0), ("a", "2026-01-02", 20.0)]  # the other day untouched
    before = sorted(tuple(r) for r in spark.read.format("delta").option("versionAsOf", 0).load(path).collect())
    assert before == sorted(rows)
    assert sorted(tuple(r) for r in spark.sql(f"SELECT * FROM delta.`{path}` VERSION AS OF 0").collect()) == before
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [(h["version"], h["operation"], h["userMetadata"]) for h in history] == [
        (0, "WRITE", '{"run_id": "run1"}'),
        (1, "WRITE", '{"run_id": "run2"}'),
    ]
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == "2"
