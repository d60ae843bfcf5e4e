"""What every job receives: settings, the Spark session, the lake and a run id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from pyspark.sql import SparkSession

from anomalake.pipelines.lake.delta import DataFile, commit_files, replace_days
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.lake.runs import write_run_records
from anomalake.pipelines.settings import Settings


@dataclass(frozen=True)
class JobContext:
    """One job invocation's shared state (built once at job start)."""

    settings: Settings
    spark: SparkSession
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def lake(self) -> Lake:
        return Lake(self.settings.lake_path)

    def replace(self, df, schema, root, keys: dict[str, str], days, written: set[str], job: str) -> None:
        """Replace the `days` partitions of the Delta table at root under `keys` in one commit that names this run
        and `job` (see anomalake.pipelines.lake.delta)."""
        replace_days(df, schema, root, keys, [d.isoformat() for d in days], written, self.run_id, job)

    def commit_files(self, root, keys: dict[str, str], files: dict[str, list[DataFile]], job: str) -> None:
        """Replace the days of `files` under `keys` of the Delta table at root by the files this run's tasks wrote
        into it, in one commit that names this run and `job` (see anomalake.pipelines.lake.delta)."""
        commit_files(root, keys, files, self.run_id, job)

    def record(self, table: str, job: str, records: dict[date, dict]) -> None:
        """Append this run's records, one per day, in one commit to the runs table (refused, and nothing written,
        when a day's rows do not balance)."""
        stamped = {day: {"run_id": self.run_id, **record} for day, record in records.items()}
        write_run_records(self.lake.root, table, job, stamped, self.started_at)

    def with_new_run(self) -> "JobContext":
        """The same session and settings under a fresh run id (one per job run)."""
        return JobContext(self.settings, self.spark)
