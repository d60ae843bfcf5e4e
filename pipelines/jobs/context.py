"""What every job receives: settings, the Spark session, the lake and a run id."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from pipelines.io import Lake
from pipelines.settings import Settings


@dataclass(frozen=True)
class JobContext:
    """One job invocation's shared state (built once at job start)."""

    settings: Settings
    spark: SparkSession
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def lake(self) -> Lake:
        return Lake(self.settings.lake_path)

    def with_new_run(self) -> "JobContext":
        """The same session and settings under a fresh run id (one per job run)."""
        return JobContext(self.settings, self.spark)
