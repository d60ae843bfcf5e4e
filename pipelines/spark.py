"""The SparkSession every job uses, configured once from Settings."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from anomalake.pipelines.errors import JobError
from anomalake.pipelines.settings import Settings, export_spark_environment


def installed_jars(settings: Settings) -> list[str]:
    """The JARs in the settings' folder (infra/jars.txt's, fetched at install time); a JobError says how to get them
    when Delta Lake's are missing."""
    folder = Path(settings.jars)
    jars = sorted(folder.glob("*.jar"))
    missing = [name for name in ("delta-spark_2.13", "delta-storage") if not any(j.name.startswith(name) for j in jars)]
    if missing:
        raise JobError(
            f"ANOMALAKE_JARS={folder}: no {' or '.join(missing)} JAR; `make install` fetches them from Maven Central "
            "(infra/fetch_jars.sh infra/jars.txt <folder>)"
        )
    return [str(j) for j in jars]


def delta_conf(settings: Settings) -> dict[str, str]:
    """Delta Lake's settings: its JARs (resolved at install time) and its SQL extension and catalog; what a job's
    session and an analyst's spark-sql (the catalog's spark-defaults.conf) both need to read the lake's tables."""
    return {
        # spark.jars: the driver ships them to a cluster's executors itself.
        "spark.jars": ",".join(installed_jars(settings)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }


def get_spark(settings: Settings, app: str = "anomalake", extra: dict[str, str] | None = None) -> SparkSession:
    """Create (or reuse) the session: UTC everywhere, dynamic partition overwrite, Arrow on, Delta Lake's SQL and
    catalog (plus `extra`)."""
    if settings.code and not Path(settings.code).is_file():
        raise JobError(f"ANOMALAKE_CODE={settings.code}: no such file (build it with `make package`)")
    export_spark_environment(settings)
    extra = dict(extra or {})
    delta = delta_conf(settings)
    delta["spark.jars"] = ",".join(filter(None, [delta["spark.jars"], extra.pop("spark.jars", "")]))
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
        # A table's snapshot is read with as many tasks as a shuffle has (Delta's default, 50, suits clusters).
        .config("spark.databricks.delta.snapshotPartitions", str(settings.shuffle_partitions))
        # Stage progress bars in a terminal; none under Airflow or in logs.
        .config("spark.ui.showConsoleProgress", "true" if settings.interactive else "false")
    )
    if settings.master:
        builder = builder.master(settings.master)
    for key, value in {**delta, **extra}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if settings.code:
        # The standard way to ship Python code: executors put the zip first on their path (not the driver's cwd).
        spark.sparkContext.addPyFile(settings.code)
    # A session conf, not a launcher property: Petastorm's converter caches its Parquet copy here.
    spark.conf.set("petastorm.spark.converter.parentCacheDirUrl", f"file://{settings.lake_path / '_petastorm_cache'}")
    spark.sparkContext.setLogLevel("ERROR")
    return spark
