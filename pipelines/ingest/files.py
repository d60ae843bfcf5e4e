"""The import jobs: a folder of image files or a CSV/TSV of texts -> one raw partition of an image or text table.

They write what an upstream pipeline would: raw/<table>/dt=D/part-00000.parquet with the table's id column,
its image (bytes) or text column and a `label` column (the sub-folder name of an image, the label column of
a text file), so the windows job reads imported tables like any other.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.features.decoding import read_image_folder, read_text_file
from anomalake.pipelines.lake.layout import Lake, partition_path


def write_raw_partition(lake: Lake, table: TableConfig, day: date, frame: pd.DataFrame) -> Path:
    """Replace raw/<table>/dt=D with `frame` (one Parquet file, written by pyarrow; no pickle anywhere)."""
    folder = partition_path(lake.raw(table), dt=day.isoformat())
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    path = folder / "part-00000.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, coerce_timestamps="us")
    return path


def _require_kind(table: TableConfig, kind: str) -> None:
    if table.kind != kind:
        raise JobError(f"table {table.name} is a {table.kind} table in the catalog; `import {kind}` needs kind: {kind}")


def import_images(lake: Lake, table: TableConfig, src: Path, day: date) -> int:
    """Every image file under `src` (label = its sub-folder) into raw/<table>/dt=D; the row count."""
    _require_kind(table, "image")
    if table.path_column:
        raise JobError(
            f"table {table.name} reads images by path ({table.path_column}); import writes image bytes: configure "
            "image.column"
        )
    try:
        frame = read_image_folder(Path(src))
    except ValueError as error:
        raise JobError(str(error)) from None
    frame = frame.rename(columns={"image_id": table.entity, "image": table.value_column})
    write_raw_partition(lake, table, day, frame)
    return len(frame)


def import_text(
    lake: Lake,
    table: TableConfig,
    src: Path,
    day: date,
    text_column: str,
    label_column: str | None,
    id_column: str | None,
) -> int:
    """The rows of a CSV or TSV file into raw/<table>/dt=D (id, text, label); the row count."""
    _require_kind(table, "text")
    try:
        frame = read_text_file(Path(src), text_column, label_column, id_column)
    except ValueError as error:
        raise JobError(str(error)) from None
    frame = frame.rename(columns={"message_id": table.entity, "text": table.value_column})
    write_raw_partition(lake, table, day, frame)
    return len(frame)
