"""The metrics import: CSV, TSV or Parquet files of a user's metrics -> raw/<table>/dt=D partitions.

`anomalake import metrics --src FILE|FOLDER --table T` reads the table's entity, time and feature columns (the
catalog's, or the ones `table_entry` adds to the user's tables file), parses timestamps with their zone (naive ones
only with an explicit `timezone`), and writes each UTC day of each source file as one Parquet file,
raw/<table>/dt=D/import-<source id>.parquet (microsecond UTC timestamps, features as doubles), which the windows job
reads like any upstream partition. The source id is the file's name (its path below a folder that was imported), so
re-importing a file replaces its days and never duplicates them, while other files of the same days stay.

Rows that cannot be used (an empty entity or time, a time that does not parse or that a daylight-saving change skips
or repeats, a feature that is not a number) go to quarantine/<table> under job=import with a reason and a detail
that starts with the source id (a re-import replaces that file's quarantined rows in the same way), and a run
record per day goes to the `runs` table. Problems with the input as a whole (a missing column, a file that is
neither Parquet nor CSV/TSV, an empty file, a time column where nothing parses, naive times without a zone) stop
the import before anything is written, with one line naming the file and the column.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.lake.accounting import add_counts
from anomalake.pipelines.lake.layout import Lake, is_delta, partition_path

JOB = "import"
PARQUET_MAGIC = b"PAR1"
# A timestamp string that names its zone: Z, an offset (+01:00, +0100, -05) or UTC/GMT at its end.
ZONE_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?|UTC|GMT)$", re.IGNORECASE)


@dataclass(frozen=True)
class SourceRows:
    """One source file converted: its usable rows (entity, time in UTC, features) and its quarantined ones."""

    source_id: str
    rows: pd.DataFrame
    quarantine: pd.DataFrame  # entity_id, ts, reason, detail


@dataclass
class ImportResult:
    """What an import did: rows read, written and quarantined per day (day -> counts), and the files it read."""

    files: list[str]
    today: str  # the day rows without a usable time are quarantined under: the import's own (UTC)
    rows_in: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)  # day -> source id -> rows read
    rows_out: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, day: str, source_id: str, rows: int) -> None:
        """Count `rows` read from a source for a day."""
        self.rows_in[day] = self.rows_in.get(day, 0) + rows
        self.by_source[day] = add_counts(self.by_source.get(day, {}), source_id, rows)

    @property
    def total_in(self) -> int:
        return sum(self.rows_in.values())

    @property
    def total_out(self) -> int:
        return sum(self.rows_out.values())

    def quarantined_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for per_day in self.quarantined.values():
            for reason, n in per_day.items():
                counts = add_counts(counts, reason, n)
        return counts


def source_files(src: Path) -> list[tuple[Path, str]]:
    """(file, source id) for a file, or for every file below a folder (hidden and _-prefixed files skipped, as Spark
    and Hadoop write them); JobError for a path that does not exist or a folder without files."""
    src = Path(src)
    if src.is_file():
        return [(src, src.name)]
    if not src.is_dir():
        raise JobError(f"file {src}: does not exist")
    files = sorted(
        p
        for p in src.rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(src).parts)
    )
    if not files:
        raise JobError(f"folder {src}: holds no files to import")
    return [(p, p.relative_to(src).as_posix()) for p in files]


def file_format(path: Path) -> str:
    """parquet, csv or tsv, by the name (a .gz, .bz2, .zst or .xz CSV is read compressed) or Parquet's magic bytes."""
    name = path.name.lower()
    for compression in (".gz", ".bz2", ".zst", ".xz"):
        name = name.removesuffix(compression)
    suffix = Path(name).suffix
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    with open(path, "rb") as handle:
        if handle.read(4) == PARQUET_MAGIC:
            return "parquet"
    raise JobError(f"file {path}: neither Parquet nor CSV/TSV (name it .parquet, .csv or .tsv)")


def read_source(path: Path, columns: list[str]) -> pd.DataFrame:
    """The given columns of one file, as read (CSV/TSV: every value a string; Parquet: its own types)."""
    kind = file_format(path)
    if path.stat().st_size == 0:
        raise JobError(f"file {path}: empty")
    sep = "\t" if kind == "tsv" else ","
    try:
        found = pq.read_schema(path).names if kind == "parquet" else list(pd.read_csv(path, sep=sep, nrows=0).columns)
        missing = [c for c in columns if c not in found]
        if missing:
            raise JobError(
                f"file {path}, column {missing[0]}: not found (the file's columns: {', '.join(map(str, found))})"
            )
        frame = pq.read_table(path, columns=columns).to_pandas() if kind == "parquet" else _read_text(path, sep)
    except (OSError, ValueError, pa.ArrowException) as error:  # pandas' parser errors are ValueErrors
        raise JobError(f"file {path}: not a readable {kind.upper()} file ({str(error).splitlines()[0]})") from None
    if frame.empty:
        raise JobError(f"file {path}: no rows (only a header)")
    return frame[columns]


def _read_text(path: Path, sep: str) -> pd.DataFrame:
    """Every column of a CSV/TSV as strings; a row with more fields than the header is an error (pandas would
    otherwise cut it, or take its first fields as an index, without a word)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, index_col=False)
        except pd.errors.ParserWarning:
            raise ValueError("its rows have more fields than its header") from None


def check_timezone(name: str | None) -> str | None:
    """`name` when it is a time zone the system knows (IANA names such as UTC or Europe/Berlin)."""
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise JobError(f"--timezone {name}: not a time zone name (for example UTC or Europe/Berlin)") from None
    return name


def _utc(values: pd.Series, zone: str | None, where: str) -> tuple[pd.Series, pd.Series]:
    """Timestamps in UTC and each row's problem ('' when none) from a column of strings or timestamps."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if getattr(values.dt, "tz", None) is not None:
            return values.dt.tz_convert("UTC"), pd.Series("", index=values.index)
        if zone is None:
            raise JobError(f"{where}: timestamps without a time zone; say which one with --timezone (e.g. UTC)")
        return _localize(values, zone)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise JobError(
            f"{where}: holds numbers ({values.dtype}), not timestamps; write ISO 8601 times such as "
            "2024-05-01T12:00:00Z"
        )
    return _parse_strings(values.astype("string").str.strip(), zone, where)


def _parse_strings(text: pd.Series, zone: str | None, where: str) -> tuple[pd.Series, pd.Series]:
    empty = text.isna() | (text == "")
    zoned = ~empty & text.str.contains(ZONE_SUFFIX).fillna(False)
    naive = ~empty & ~zoned
    times = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    problem = pd.Series("", index=text.index, dtype=object)
    problem[empty] = "null_key"
    if zoned.any():
        times[zoned] = _to_datetime(text[zoned], utc=True)
    if naive.any():
        local = _to_datetime(text[naive], utc=False)
        if zone is None and local.notna().any():
            raise JobError(
                f"{where}: timestamps without a time zone (e.g. {text[naive][local.notna()].iloc[0]!r}); say which "
                "one with --timezone (e.g. --timezone UTC)"
            )
        if zone is None:  # nothing naive parsed: every such value is unparseable
            problem[naive] = "unparseable_timestamp"
        else:
            converted, local_problem = _localize(local, zone)
            times[naive], problem[naive] = converted, local_problem
    problem[~empty & times.isna() & (problem == "")] = "unparseable_timestamp"
    unparsed = problem == "unparseable_timestamp"
    if unparsed.any() and unparsed.sum() == (~empty).sum():
        raise JobError(f"{where}: no value parses as a timestamp (e.g. {text[unparsed].iloc[0]!r})")
    return times, problem


def _to_datetime(text: pd.Series, utc: bool) -> pd.Series:
    """ISO 8601 first (fast); what fails is tried once more with per-value format inference."""
    parsed = pd.to_datetime(text, errors="coerce", utc=utc, format="ISO8601")
    retry = parsed.isna()
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=utc, format="mixed")
    return parsed


def _localize(local: pd.Series, zone: str) -> tuple[pd.Series, pd.Series]:
    """Naive local times in `zone` as UTC; a time a daylight-saving change skips or repeats is a row problem."""
    aware = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    problem = pd.Series("", index=local.index, dtype=object)
    problem[local.isna()] = "unparseable_timestamp"
    problem[local.notna() & aware.isna()] = "ambiguous_local_time"
    return aware, problem


def _numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A feature column as doubles, and which rows held a value that is not a number (an empty cell is a null)."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64"), pd.Series(False, index=values.index)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64"), pd.Series(False, index=values.index)
    text = values.astype("string").str.strip()
    numbers = pd.to_numeric(text.where(text != ""), errors="coerce").astype("float64")
    return numbers, numbers.isna() & text.notna() & (text != "")


def convert_source(table: TableConfig, path: Path, source_id: str, zone: str | None) -> SourceRows:
    """One file's rows as the raw table holds them, and its rows that cannot be used (with reasons)."""
    frame = read_source(path, [table.entity, table.time, *table.features])
    times, problem = _utc(frame[table.time], zone, f"file {path}, column {table.time}")
    entity = frame[table.entity].astype("string").str.strip()
    detail = pd.Series("", index=frame.index, dtype=object)
    detail[problem != ""] = f"{source_id}: column {table.time}: " + frame[table.time].astype(str)
    no_entity = entity.isna() | (entity == "")
    problem[no_entity], detail[no_entity] = "null_key", f"{source_id}: column {table.entity} is empty"
    features = {}
    for name in table.features:
        features[name], bad = _numbers(frame[name])
        bad &= problem == ""
        problem[bad] = "non_numeric_value"
        detail[bad] = f"{source_id}: column {name}: not a number: " + frame[name].astype(str)
    good = (problem == "").to_numpy()
    rows = pd.DataFrame({table.entity: entity, table.time: times, **features})
    quarantine = pd.DataFrame({"entity_id": entity.where(~no_entity), "ts": times, "reason": problem, "detail": detail})
    return SourceRows(source_id, rows[good].reset_index(drop=True), quarantine[~good].reset_index(drop=True))


def source_file_name(source_id: str) -> str:
    """The Parquet file a source writes in each day it touches (stable in its id, so a re-import replaces it)."""
    return f"import-{hashlib.sha256(source_id.encode()).hexdigest()[:16]}.parquet"


def day_of(times: pd.Series) -> pd.Series:
    return times.dt.strftime("%Y-%m-%d")


def write_source_days(lake: Lake, table: TableConfig, source: SourceRows) -> dict[str, int]:
    """Write the source's rows as one file per UTC day (and remove its file from days it no longer has); day -> rows.

    Each file is written beside its target and renamed over it, so a reader sees the old file or the new one.
    """
    root, name = lake.raw(table), source_file_name(source.source_id)
    days = day_of(source.rows[table.time])
    written = {}
    for day, rows in source.rows.groupby(days, sort=True):
        folder = partition_path(root, dt=str(day))
        folder.mkdir(parents=True, exist_ok=True)
        rows = rows.sort_values([table.entity, table.time], kind="stable")
        staged = folder / f".{name}.{uuid.uuid4().hex[:8]}"
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), staged, coerce_timestamps="us")
        os.replace(staged, folder / name)
        written[str(day)] = len(rows)
    for stale in root.glob(f"dt=*/{name}"):
        if stale.parent.name.removeprefix("dt=") not in written:
            stale.unlink()
    return written


def write_quarantine(lake: Lake, table: TableConfig, sources: list[SourceRows], run_id: str, today: str) -> None:
    """Replace the import's quarantined rows of these sources in one commit (rows without a day go under `today`)."""
    from deltalake import CommitProperties, write_deltalake
    from pyspark.sql.pandas.types import to_arrow_schema

    from anomalake.pipelines.lake.schemas import QUARANTINE

    root = lake.quarantine(table.name).resolve()
    rows = pd.concat([s.quarantine for s in sources], ignore_index=True)
    if rows.empty and not is_delta(root):
        return  # nothing to replace and nothing to add
    rows["dt"] = day_of(rows["ts"]).fillna(today)
    rows["run_id"], rows["job"] = run_id, JOB
    arrow = pa.Table.from_pandas(
        rows[QUARANTINE.fieldNames()], schema=to_arrow_schema(QUARANTINE), preserve_index=False
    )
    same_source = " OR ".join(f'starts_with("detail", {_sql_string(s.source_id + ": ")})' for s in sources)
    metadata = {"run_id": run_id, "job": JOB, "partition": {"job": JOB}}
    write_deltalake(
        str(root),
        arrow,
        mode="overwrite",
        partition_by=["job", "dt"],
        predicate=f"\"job\" = '{JOB}' AND ({same_source})",
        commit_properties=CommitProperties(custom_metadata={"userMetadata": json.dumps(metadata, sort_keys=True)}),
    )


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _tally(result: ImportResult, sources: list[SourceRows], table: TableConfig, today: str) -> None:
    for source in sources:
        for day, n in day_of(source.rows[table.time]).value_counts().items():
            result.add(day, source.source_id, int(n))
            result.rows_out[day] = result.rows_out.get(day, 0) + int(n)
        q = source.quarantine
        for (day, reason), n in q.groupby([day_of(q["ts"]).fillna(today), q["reason"]]).size().items():
            result.add(day, source.source_id, int(n))
            result.quarantined[day] = add_counts(result.quarantined.get(day, {}), reason, int(n))


def read_sources(table: TableConfig, src: Path, zone: str | None = None) -> list[SourceRows]:
    """Every file of `src` converted for the table (nothing written yet); JobError for input that cannot be used."""
    if table.kind != "timeseries":
        raise JobError(f"table {table.name} is a {table.kind} table in the catalog; `import metrics` needs timeseries")
    if table.format != "parquet":
        raise JobError(f"table {table.name} is format: {table.format}; `import metrics` writes dt= folders of Parquet")
    zone = check_timezone(zone)
    return [convert_source(table, path, source_id, zone) for path, source_id in source_files(Path(src))]


def count_import(table: TableConfig, sources: list[SourceRows]) -> ImportResult:
    """The rows per day the sources hold, usable and quarantined; JobError when more are unusable than the table's
    max_quarantine_share allows (so nothing, not even a config entry, is written for such input)."""
    today = datetime.now(timezone.utc).date().isoformat()
    result = ImportResult(files=[s.source_id for s in sources], today=today)
    _tally(result, sources, table, today)
    _check_share(table, result)
    return result


def write_import(lake: Lake, table: TableConfig, sources: list[SourceRows], counted: ImportResult) -> None:
    """Write the sources' days, quarantined rows and run records (see the module docstring), as `count_import`
    counted them."""
    run_id = uuid.uuid4().hex[:12]
    for source in sources:
        write_source_days(lake, table, source)
    write_quarantine(lake, table, sources, run_id, counted.today)
    _record(lake, table, counted, run_id)


def import_metrics(lake: Lake, table: TableConfig, src: Path, zone: str | None = None) -> ImportResult:
    """Import every file of `src` into raw/<table> (see the module docstring); the counts per day."""
    sources = read_sources(table, src, zone)
    counted = count_import(table, sources)
    write_import(lake, table, sources, counted)
    return counted


def _check_share(table: TableConfig, result: ImportResult) -> None:
    quarantined = sum(result.quarantined_by_reason().values())
    if result.total_in and quarantined / result.total_in > table.max_quarantine_share:
        raise JobError(
            f"table {table.name}: {quarantined} of {result.total_in} imported rows cannot be used "
            f"({quarantined / result.total_in:.1%} > max_quarantine_share {table.max_quarantine_share:.0%}): "
            f"{result.quarantined_by_reason()}; nothing was written"
        )


def _record(lake: Lake, table: TableConfig, result: ImportResult, run_id: str) -> None:
    from anomalake.pipelines.lake.runs import write_run_records

    records = {
        date.fromisoformat(day): {
            "run_id": run_id,
            "rows_in": n,
            "rows_out": result.rows_out.get(day, 0),
            "quarantined": result.quarantined.get(day, {}),
            "inputs": [{"table": f"file {s}", "partition": None, "rows": n} for s, n in result.by_source[day].items()],
            "outputs": [
                {"table": f"raw_{table.name}", "partition": f"dt={day}", "rows": result.rows_out.get(day, 0)},
                {
                    "table": f"quarantine_{table.name}",
                    "partition": f"job={JOB}/dt={day}",
                    "rows": sum(result.quarantined.get(day, {}).values()),
                },
            ],
        }
        for day, n in result.rows_in.items()
    }
    write_run_records(lake.root, table.name, JOB, records)


def quarantine_counts_line(result: ImportResult) -> str:
    """'' or ', 3 quarantined (null_key 1, unparseable_timestamp 2)' for the summary the CLI prints."""
    counts = result.quarantined_by_reason()
    if not counts:
        return ""
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
    return f"; {sum(counts.values()):,} quarantined ({reasons})"
