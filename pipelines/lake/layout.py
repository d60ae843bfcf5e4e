"""Where the lake's tables live: one folder per table, one sub-folder per partition key, and their SQL names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from anomalake.pipelines.config import TableConfig


@dataclass(frozen=True)
class Lake:
    """Paths of the lake's tables (one folder per table, one sub-folder per partition)."""

    root: Path

    def raw(self, table: TableConfig) -> Path:
        return self.root / table.path

    def features(self, table: str) -> Path:
        return self.root / "features" / table

    def scores(self, table: str) -> Path:
        return self.root / "scores" / table

    def events(self, table: str) -> Path:
        return self.root / "events" / table

    def quarantine(self, table: str) -> Path:
        return self.root / "quarantine" / table

    def labels(self, table: str) -> Path:
        return self.root / "labels" / table

    def runs(self) -> Path:
        """The run records of every table and job (partitioned by table, job and dt; see lake.runs)."""
        return self.root / "runs"

    def detection_metrics(self) -> Path:
        """One table for every labelled table (partitioned by table, detector and dt), written by the nightly check."""
        return self.root / "detection_metrics"

    def models(self, detector: str, table: str) -> Path:
        return self.root / "models" / detector / table


def partition_path(root: Path, **keys: str) -> Path:
    """root/k1=v1/k2=v2/... for the given partition keys, in order (dt last, as Spark writes them)."""
    path = Path(root)
    for key, value in keys.items():
        path = path / f"{key}={value}"
    return path


def day_range(start: date, end: date) -> list[date]:
    """Every day from start to end, both included."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


DELTA_LOG = "_delta_log"


def is_delta(root: Path) -> bool:
    """True when `root` holds a Delta table (its transaction log; see anomalake.pipelines.lake.delta)."""
    return (Path(root) / DELTA_LOG).is_dir()


def has_data(folder: Path) -> bool:
    """True when the folder holds at least one Parquet file."""
    return folder.is_dir() and any(folder.glob("*.parquet"))


def table_locations(lake: Lake, table: TableConfig) -> dict[str, Path]:
    """The stable SQL name of each of a table's folders that holds data -> that folder."""
    names = {
        f"raw_{table.name}": lake.raw(table),
        f"features_{table.name}": lake.features(table.name),
        f"scores_{table.name}": lake.scores(table.name),
        f"events_{table.name}": lake.events(table.name),
        f"quarantine_{table.name}": lake.quarantine(table.name),
        f"labels_{table.name}": lake.labels(table.name),
    }
    return {name: path for name, path in names.items() if _holds_data(path)}


def _holds_data(path: Path) -> bool:
    """A Delta table, or a Parquet folder with files (raw input, labels, a table written before Delta)."""
    return is_delta(path) or (path.exists() and any(path.rglob("*.parquet")))


def lake_locations(lake: Lake) -> dict[str, Path]:
    """The lake-wide tables (run records, detection metrics) that hold data, by their SQL name."""
    names = {"runs": lake.runs(), "detection_metrics": lake.detection_metrics()}
    return {name: path for name, path in names.items() if _holds_data(path)}


def delta_locations(lake: Lake, table: TableConfig) -> dict[str, Path]:
    """The table's Delta tables by their Spark SQL name (what `history` and `maintain` work on)."""
    return {name: path for name, path in table_locations(lake, table).items() if is_delta(path)}
