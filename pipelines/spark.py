"""The SparkSession every job uses, configured once from Settings."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from anomalake.pipelines.errors import JobError
from anomalake.pipelines.settings import Settings, export_spark_environment


def get_spark(settings: Settings, app: str = "anomalake", extra: dict[str, str] | None = None) -> SparkSession:
    """Create (or reuse) the session: UTC everywhere, dynamic partition overwrite, Arrow on (plus `extra`)."""
    if settings.code and not Path(settings.code).is_file():
        raise JobError(f"ANOMALAKE_CODE={settings.code}: no such file (build it with `make package`)")
    export_spark_environment(settings)
    extra = dict(extra or {})
    java_options = " ".join(["-Duser.timezone=UTC", extra.pop("spark.driver.extraJavaOptions", "")]).strip()
    builder = (
        SparkSession.builder.appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        # Re-running a day replaces only that day's partition (static mode would wipe the others).
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # dt stays the string 'YYYY-MM-DD' the table contracts name, not an inferred DATE.
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # pandas' default Parquet holds nanosecond timestamps, which Spark 4 refuses with a stack trace; read them
        # as integers and let the raw readers convert them (anomalake's own tables hold microseconds).
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.ui.enabled", "false")
        # Stage progress bars in a terminal; none under Airflow or in logs.
        .config("spark.ui.showConsoleProgress", "true" if settings.interactive else "false")
    )
    if settings.master:
        builder = builder.master(settings.master)
    for key, value in extra.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if settings.code:
        # The standard way to ship Python code: executors put the zip first on their path (not the driver's cwd).
        spark.sparkContext.addPyFile(settings.code)
    # A session conf, not a launcher property: Petastorm's converter caches its Parquet copy here.
    spark.conf.set("petastorm.spark.converter.parentCacheDirUrl", f"file://{settings.lake_path / '_petastorm_cache'}")
    spark.sparkContext.setLogLevel("ERROR")
    return spark
