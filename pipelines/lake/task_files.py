"""The files a Spark task writes itself into a Delta table's folder (pyarrow, no round trip through Spark's writer).

Until the driver's commit names them (anomalake.pipelines.lake.delta.commit_files) no reader sees them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 65_536  # rows a task buffers per day before it writes a row group


class TaskFiles:
    """One Spark task's files, one per day: dt=D/part-<partition><tag>.parquet in a Delta table's partition folder,
    tagged with the run id, for the driver to commit (see delta.run_files and delta.commit_files).

    Tasks that write their output with pyarrow (instead of handing rows back to Spark's writer) use this. Each
    file is written as a hidden temp file and renamed when the task's input is done, so a retried task replaces
    its own file whole; what a failed attempt leaves is deleted here, or by `run_files` if the attempt was killed.
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        part: int | None = None,
        attempt: int | None = None,
        tag: str = "",
        **options,
    ):
        from pyspark import TaskContext

        context = TaskContext.get()  # inside a Spark task; tests name the partition and attempt themselves
        self.folder, self.schema, self.tag, self.options = folder, schema, tag, options
        self.part = context.partitionId() if part is None else part
        self.attempt = context.attemptNumber() if attempt is None else attempt
        self.buffers: dict[str, list[pa.Table]] = {}
        self.writers: dict[str, pq.ParquetWriter] = {}

    def __enter__(self) -> "TaskFiles":
        return self

    def add(self, day: str, rows: pa.Table) -> None:
        """Buffer `rows` for the file of `day`; a full buffer is written as a row group."""
        self.buffers.setdefault(day, []).append(rows)
        if sum(len(t) for t in self.buffers[day]) >= ROW_GROUP_ROWS:
            self._flush(day)

    def _temp(self, day: str) -> Path:
        return self.folder / f"dt={day}" / f".part-{self.part:05d}{self.tag}-{self.attempt}.tmp"

    def _flush(self, day: str) -> None:
        if day not in self.writers:
            self._temp(day).parent.mkdir(parents=True, exist_ok=True)
            self.writers[day] = pq.ParquetWriter(self._temp(day), self.schema, **self.options)
        self.writers[day].write_table(pa.concat_tables(self.buffers.pop(day)), row_group_size=ROW_GROUP_ROWS)

    def __exit__(self, error_type, error, trace) -> None:
        for day in list(self.buffers):
            if error_type is None:
                self._flush(day)
        for day, writer in self.writers.items():
            writer.close()
            if error_type is None:
                os.replace(self._temp(day), self._temp(day).with_name(f"part-{self.part:05d}{self.tag}.parquet"))
            else:
                self._temp(day).unlink(missing_ok=True)
