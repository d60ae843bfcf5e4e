"""A catalog entry for a user's metrics (`anomalake import metrics --write-config`), added to their own tables file.

The entry names the columns the user gave, the grid step found in the data (the median spacing of an entity's
readings, rounded to a step that divides a day) and the defaults of the demo's table. It is appended as text, so
the file keeps its comments and layout; it is never written into the package's own catalog.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from anomalake.pipelines.config import DEFAULT_DETECTORS, TableConfig, load_tables, parse_table
from anomalake.pipelines.errors import JobError

# Grid steps an entry may get (seconds; each divides a day).
STEPS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
WINDOW_LENGTH = 64  # the demo table's: a few hours at a 5-minute step
PROVISIONAL_STEP = "5min"  # what the files are read under before their own step is known


def step_text(seconds: int) -> str:
    """5min, 1h, 30s: the way a table's `step` is written."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}min" if seconds % 60 == 0 else f"{seconds}s"


def infer_step(rows: pd.DataFrame, entity: str, time: str, where: str) -> int:
    """The grid step of the rows (seconds): the median spacing of consecutive readings of one entity, rounded (on a
    log scale) to the nearest of STEPS."""
    ordered = rows[[entity, time]].drop_duplicates().sort_values([entity, time])
    spacing = ordered.groupby(entity)[time].diff().dt.total_seconds()
    spacing = spacing[spacing > 0]
    if spacing.empty:
        raise JobError(f"{where}: cannot tell the step: no entity has two readings at different times")
    median = float(spacing.median())
    return min(STEPS, key=lambda step: abs(math.log(step / median)))


def metrics_entry(name: str, entity: str, time: str, features: list[str], step_seconds: int) -> dict[str, Any]:
    """The catalog entry of a metrics table (validated by `parse_table` before it is written)."""
    return {
        "kind": "timeseries",
        "path": f"raw/{name}",
        "entity": entity,
        "time": time,
        "features": list(features),
        "step": step_text(step_seconds),
        "window": {"length": WINDOW_LENGTH, "stride": 1},
        "detectors": [DEFAULT_DETECTORS["timeseries"]],
        "max_quarantine_share": 0.2,
    }


def _entry_text(name: str, entry: dict[str, Any], source: str) -> str:
    window = entry["window"]
    return (
        f"\n# Added by `anomalake import metrics` on {date.today().isoformat()} from {source}.\n"
        f"{name}:\n"
        f"  kind: timeseries\n"
        f"  path: {entry['path']}\n"
        f"  entity: {entry['entity']}\n"
        f"  time: {entry['time']}\n"
        f"  features: [{', '.join(entry['features'])}]\n"
        f"  step: {entry['step']}  # the median spacing of an entity's readings in the imported data\n"
        f"  window: {{length: {window['length']}, stride: {window['stride']}}}\n"
        f"  detectors: [{', '.join(entry['detectors'])}]\n"
        f"  max_quarantine_share: {entry['max_quarantine_share']}\n"
    )


def add_table(tables_file: Path, package_file: Path, name: str, entry: dict[str, Any], source: str) -> TableConfig:
    """Append the entry to the user's tables file (created if missing) and return it parsed; an entry of that name
    already there is kept when it names the same columns (a re-import), else JobError."""
    tables_file = Path(tables_file)
    if tables_file.resolve() == Path(package_file).resolve():
        raise JobError(
            "--write-config adds the table to your own tables file: set ANOMALAKE_TABLES to it, e.g. "
            "export ANOMALAKE_TABLES=$PWD/tables.yml (it is created if missing)"
        )
    table = parse_table(name, entry, str(tables_file))
    existing = load_tables(tables_file) if tables_file.exists() else {}
    if name in existing:
        old = existing[name]
        if (old.entity, old.time, old.features) != (table.entity, table.time, table.features):
            raise JobError(
                f"table {name} is already in {tables_file} with other columns (entity {old.entity}, time {old.time}, "
                f"features {list(old.features)}): edit it there, or import without --write-config"
            )
        return old
    tables_file.parent.mkdir(parents=True, exist_ok=True)
    with open(tables_file, "a", encoding="utf-8") as handle:
        handle.write(_entry_text(name, entry, source))
    return load_tables(tables_file)[name]
