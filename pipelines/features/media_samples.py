"""Model inputs of image and text tables: each raw row becomes one sample or one quarantine row with a reason.

Images are decoded from a binary column (PNG, JPEG, ...) or from files named by a path column (read with
Spark's binaryFile source), checked against the table's size and channels (declared sizes above the
limit are refused before decoding) and scaled to [0, 1], flattened row-major. Texts are normalised and cut
to `max_chars`. Duplicate ids within a partition keep their first row; the others are quarantined.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import input_error
from anomalake.pipelines.features import decoding
from anomalake.pipelines.lake.layout import Lake, partition_path
from anomalake.pipelines.lake.reading import TIME_TYPES, parquet_rows, raw_delta_rows, read_raw_files

SAMPLE, QUARANTINE = "window", "quarantine"  # the windows job's outcome names (as features.windowing)
KEY_REASONS = {
    "null_key": "the id is null",
    "duplicate_key": "another row of the partition has this id (the first is kept)",
}


def _check_columns(table: TableConfig, day: date, schema: T.StructType) -> None:
    """Stop with one line when a configured column is missing or of the wrong type."""
    fields = {f.name: f.dataType for f in schema.fields}
    partition = f"dt={day.isoformat()}"
    value = table.path_column or table.value_column
    wanted = T.StringType if (table.kind == "text" or table.path_column) else T.BinaryType
    checks = [(table.entity, None), (value, wanted)] + ([(table.time, TIME_TYPES)] if table.time else [])
    for column, types in checks:
        if column not in fields:
            raise input_error(table.name, partition, column, f"missing (found columns: {', '.join(fields)})")
        if types and not isinstance(fields[column], types):
            expected = "a timestamp" if types is TIME_TYPES else ("binary" if types is T.BinaryType else "a string")
            raise input_error(
                table.name, partition, column, f"expected {expected}, found {fields[column].simpleString()}"
            )


def read_media_day(spark: SparkSession, lake: Lake, table: TableConfig, day: date) -> DataFrame:
    """One raw partition as (entity_id, ts, value, dt, duplicate); file paths are read as bytes."""
    if table.format == "delta":
        df = raw_delta_rows(spark, lake, table, [day]).drop("dt")
    else:
        folder = partition_path(lake.raw(table), dt=day.isoformat())
        parquet_rows(table, day, folder)
        df = read_raw_files(spark, table, day, folder)
    _check_columns(table, day, df.schema)
    ts = F.col(table.time).cast("timestamp") if table.time else F.to_timestamp(F.lit(day.isoformat()))
    rows = _with_value(spark, lake, table, df).select(
        F.col(table.entity).cast("string").alias("entity_id"), ts.alias("ts"), F.col("value")
    )
    first = Window.partitionBy("entity_id").orderBy(F.monotonically_increasing_id())
    return rows.withColumn("dt", F.lit(day.isoformat())).withColumn(
        "duplicate", F.col("entity_id").isNotNull() & (F.row_number().over(first) > 1)
    )


def _with_value(spark: SparkSession, lake: Lake, table: TableConfig, df: DataFrame) -> DataFrame:
    """`df` with a column `value`: the encoded image or text; a path column is joined to its file's bytes.

    A path that names no file gets a null value (quarantined as null_image), not a failed job.
    """
    if not table.path_column:
        return df.withColumn("value", F.col(table.value_column))
    paths = [r[0] for r in df.select(table.path_column).distinct().collect() if r[0]]
    resolved = {p: Path(p) if Path(p).is_absolute() else lake.root / p for p in paths}
    present = [str(v) for v in resolved.values() if v.is_file()]
    if not present:
        return df.withColumn("value", F.lit(None).cast("binary"))
    files = (
        spark.read.format("binaryFile")
        .load(present)
        .select(F.col("path").alias("uri"), F.col("content").alias("value"))
    )
    mapping = spark.createDataFrame(
        [(k, v.resolve().as_uri()) for k, v in resolved.items()], "given string, uri string"
    )
    files = files.withColumn("uri", F.regexp_replace("uri", "^file:/+", "file:///"))
    joined = df.join(F.broadcast(mapping), df[table.path_column] == mapping["given"], "left")
    return joined.join(files, "uri", "left").drop("given", "uri")


def media_outcomes(batches: Iterator[pd.DataFrame], table: TableConfig) -> Iterator[pd.DataFrame]:
    """mapInPandas body: decode and validate each row; one outcome row per raw row."""
    details = {**KEY_REASONS, **decoding.IMAGE_REASONS, **decoding.TEXT_REASONS}
    image = table.kind == "image"
    spec = (
        decoding.ImageSpec(*table.sample_shape, resize=table.resize, convert_channels=table.convert_channels)
        if image
        else None
    )
    for rows in batches:
        reasons: list = [None] * len(rows)
        if spec is not None:
            pixels, reasons = decoding.decode_images(rows["value"].tolist(), spec)
            x = [row for row in pixels]
        else:
            pairs = [
                decoding.normalize_text(v, table.max_chars, table.max_record_chars) for v in rows["value"].tolist()
            ]
            x, reasons = [p[0] for p in pairs], [p[1] for p in pairs]
        reasons = [
            "null_key" if pd.isna(e) else "duplicate_key" if d else r
            for e, d, r in zip(rows["entity_id"], rows["duplicate"], reasons)
        ]
        yield pd.DataFrame(
            {
                "entity_id": rows["entity_id"],
                "ts": rows["ts"],
                "x": [None if r else v for v, r in zip(x, reasons)],
                "dt": rows["dt"],
                "outcome": [QUARANTINE if r else SAMPLE for r in reasons],
                "reason": reasons,
                "detail": [details.get(r) if r else None for r in reasons],
            }
        )
