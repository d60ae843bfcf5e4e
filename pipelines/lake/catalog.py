"""A persistent Spark SQL catalog of the lake's tables (Hive metastore on embedded Derby, under the lake).

`anomalake catalog` (run by the nightly DAG after each night) creates `raw_/features_/scores_/events_/quarantine_/
labels_<table>`, `runs` and `detection_metrics` as external tables over the lake's folders (Delta tables, or
Parquet for raw input and labels, whose partitions are found at query time), and writes
lake/_catalog/conf/spark-defaults.conf so that `SPARK_CONF_DIR=lake/_catalog/conf spark-sql` or a notebook's
SparkSession sees the same tables with no other set-up. Embedded Derby admits one process at a time, so the
jobs themselves keep to session views (`anomalake sql`) and only this step opens the metastore, and only when
a table is not registered yet (a marker file per table says so), so a nightly run does not contend with an
analyst's open spark-sql session.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.lake.layout import Lake, is_delta, lake_locations, table_locations


def catalog_dir(lake: Lake) -> Path:
    return lake.root / "_catalog"


def catalog_conf(lake: Lake) -> dict[str, str]:
    """The Spark settings that open the lake's metastore (absolute paths: any working directory works)."""
    root = catalog_dir(lake).resolve()
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(root / "warehouse"),
        # Partitions are discovered from the folders at query time, so a new night needs no registration.
        "spark.sql.hive.manageFilesourcePartitions": "false",
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.legacy.parquet.nanosAsLong": "true",  # as the jobs: pandas-written raw tables stay readable
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={root}",
    }


def write_spark_defaults(lake: Lake, delta: dict[str, str]) -> Path:
    """lake/_catalog/conf/spark-defaults.conf, for SPARK_CONF_DIR: the metastore and Delta Lake's settings."""
    folder = catalog_dir(lake) / "conf"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spark-defaults.conf"
    path.write_text("".join(f"{key} {value}\n" for key, value in {**catalog_conf(lake), **delta}.items()))
    return path


def _marker(lake: Lake, name: str) -> Path:
    return catalog_dir(lake) / "registered" / name


def _registration(path: Path) -> str:
    """What a marker records: the table's format and folder (a Parquet folder that became a Delta table changes)."""
    return f"{'delta' if is_delta(path) else 'parquet'} {path.resolve()}\n"


def unregistered(lake: Lake, tables: list[TableConfig]) -> dict[str, Path]:
    """Folders with data whose table is not in the catalog yet, or is there in another format (checked without
    opening the metastore)."""
    found = {name: path for table in tables for name, path in table_locations(lake, table).items()}
    found.update(lake_locations(lake))
    return {
        name: path
        for name, path in found.items()
        if not _marker(lake, name).exists() or _marker(lake, name).read_text() != _registration(path)
    }


def register(spark: SparkSession, lake: Lake, locations: dict[str, Path]) -> list[str]:
    """Create an external table per folder (replacing its entry: dropping an external table keeps its files) and
    mark it registered."""
    for name, path in locations.items():
        fmt = _registration(path).split()[0]
        spark.sql(f"DROP TABLE IF EXISTS {name}")
        spark.sql(f"CREATE TABLE {name} USING {fmt} LOCATION '{path.resolve()}'")
        _marker(lake, name).parent.mkdir(parents=True, exist_ok=True)
        _marker(lake, name).write_text(_registration(path))
    return sorted(locations)
