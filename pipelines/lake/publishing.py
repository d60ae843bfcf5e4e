"""Crash-safe replacement of table partitions: stage the new rows, then swap each partition folder in one step.

Spark's dynamic partition overwrite deletes a partition's old files before it moves the new ones in, so a job
killed in between leaves a partition empty or half written. Here a job instead:

1. recovers what a crashed run of the same table and keys left (see `recover`);
2. writes its rows under `<root>/_staging/<keys>/<run_id>/` (Spark's readers skip folders named `_...`);
3. writes a journal, `_COMMIT.json`, listing each day to replace or remove; from here on the run is committed;
4. swaps every staged day into place with `renameat2(RENAME_EXCHANGE)`, so readers see the old partition or
   the new one and never a mix or nothing (each swapped-in folder holds a `_RUN` marker naming its run);
5. deletes its staging folder.

A crash before the journal exists leaves the old partitions; the next run deletes the staging folder. A crash
after it leaves every day old or new, each complete; the next run finishes the swaps from the journal (roll
forward). Where the file system cannot exchange two paths (not Linux, or not a local disk), the swap is two
renames and a crash between them leaves that day missing until the next run rolls it forward.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from anomalake.models.files import write_text_atomically
from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.lake.delta import with_keys
from anomalake.pipelines.lake.layout import partition_path
from anomalake.pipelines.lake.reading import parquet_rows

STAGING = "_staging"
JOURNAL = "_COMMIT.json"
OWNER = "_OWNER"  # in a run's staging folder: the file whose lock says that the run is alive
MUTEX = "_STAGING.lock"  # beside a table's _staging folder: held while a run creates, recovers or deletes stagings
RUN_MARKER = "_RUN"
CRASH_POINTS = ("staged", "journaled", "swapping", "swapped")
ROW_GROUP_ROWS = 65_536  # rows a task buffers per day before it writes a row group
_HELD: dict[str, int] = {}  # this process's staging folders -> the descriptor that holds each one's lock
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staging_root(root: Path, keys: dict[str, str]) -> Path:
    """Where runs of this table and these keys stage their rows (one sub-folder per run)."""
    return partition_path(root / STAGING, **keys)


def publish_partitions(
    df: DataFrame,
    schema: T.StructType,
    root: Path,
    keys: dict[str, str],
    days: Iterable[str],
    written: set[str],
    run_id: str,
    crash_at: str = "",
) -> None:
    """Replace the `days` partitions of root/<keys> with df's rows (a day not in `written` is removed).

    `crash_at` names a point at which the process kills itself (fault-injection tests only).
    """
    stage = begin_staging(root, keys, run_id)
    out = with_keys(df, schema, keys)
    try:
        if written:  # a run that only empties days (no bad rows this time) needs no Spark job
            # append: the folder already holds this run's _OWNER lock, which an overwrite would delete
            out.write.mode("append").partitionBy(*keys, "dt").parquet(str(stage))
        commit_staged(root, keys, days, written, run_id, crash_at)
    finally:
        end_staging(stage)


def begin_staging(root: Path, keys: dict[str, str], run_id: str) -> Path:
    """Recover what crashed runs of root/<keys> left; create this run's staging folder (days go in dt=D/) and hold
    its lock, so that a run of the same table started meanwhile (a backfill's next day) leaves it alone."""
    with _staging_mutex(root):
        _recover(root, keys)
        stage = staging_root(root, keys) / run_id
        stage.mkdir(parents=True, exist_ok=True)
        lock = os.open(stage / OWNER, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by end_staging, or by the kernel when this process dies
    _HELD[str(stage)] = lock
    return stage


def end_staging(stage: Path) -> None:
    """Delete what is left of this run's staging folder and let go of its lock (after a commit or a failure)."""
    with _staging_mutex(next(p.parent for p in stage.parents if p.name == STAGING)):
        shutil.rmtree(stage, ignore_errors=True)
        lock = _HELD.pop(str(stage), None)
        if lock is not None:
            os.close(lock)


@contextmanager
def _staging_mutex(root: Path):
    """Hold the table's staging mutex. Runs of one table on different days start and end at the same moments in a
    backfill; without it one run's recovery could take another's staging for debris in the instant between its
    folder appearing and its lock being taken, or delete a folder that its owner is deleting itself."""
    root.mkdir(parents=True, exist_ok=True)
    handle = os.open(root / MUTEX, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _owner_alive(stage: Path) -> bool:
    """Whether the run that staged here still runs: its process holds the _OWNER lock (a flock dies with it)."""
    path = stage / OWNER
    if not path.exists():
        return False
    try:
        probe = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # its run finished a moment ago and is deleting the folder itself
        return True
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(probe)  # also lets go of the lock if the probe took it
    return False


def commit_staged(
    root: Path, keys: dict[str, str], days: Iterable[str], written: set[str], run_id: str, crash_at: str = ""
) -> None:
    """Publish what this run staged: `written` days replace the live ones, the other `days` are removed."""
    stage = staging_root(root, keys) / run_id
    stage.mkdir(parents=True, exist_ok=True)
    _crash_if(crash_at, "staged")
    for temp in stage.rglob(".*.tmp"):  # what task attempts that failed left unfinished (see TaskFiles)
        temp.unlink()
    plan = [{"dt": day, "action": "replace" if day in written else "remove"} for day in sorted(set(days))]
    for step in plan:
        if step["action"] == "replace":
            (partition_path(stage, **keys, dt=step["dt"]) / RUN_MARKER).write_text(run_id + "\n")
    write_text_atomically(stage / JOURNAL, json.dumps({"run_id": run_id, "keys": keys, "plan": plan}))
    _crash_if(crash_at, "journaled")
    _apply(root, keys, stage, run_id, plan, crash_at)
    _crash_if(crash_at, "swapped")
    end_staging(stage)


def check_staged(table: TableConfig, stage: Path, keys: dict[str, str], counts: dict[str, int], noun: str) -> None:
    """Each day's staged files hold (by their footers) the rows the tasks counted for it; else the job stops."""
    for day, counted in counts.items():
        on_disk = parquet_rows(table, date.fromisoformat(day), partition_path(stage, **keys, dt=day))
        if on_disk != counted:
            raise JobError(f"table {table.name}, partition dt={day}: {counted} {noun} counted but {on_disk} staged")


class TaskFiles:
    """One Spark task's files, one per day: dt=D/part-<partition><tag>.parquet, in a staging folder (see
    `begin_staging`) or, tagged with the run id, in a Delta table's folder (see delta.commit_files).

    Tasks that write their output with pyarrow (instead of handing rows back to Spark's writer) use this. Each
    file is written as a hidden temp file and renamed when the task's input is done, so a retried task replaces
    its own files whole; what a failed attempt leaves is deleted, or skipped by readers and by `commit_staged`.
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


def recover(root: Path, keys: dict[str, str]) -> list[str]:
    """Finish committed runs left by a crash (roll forward) and delete uncommitted ones; return their run ids."""
    with _staging_mutex(root):
        return _recover(root, keys)


def _recover(root: Path, keys: dict[str, str]) -> list[str]:
    parent = staging_root(root, keys)
    if not parent.is_dir():
        return []
    handled = []
    for stage in sorted(p for p in parent.iterdir() if p.is_dir()):
        if _owner_alive(stage):  # another run, still going: its staging is not debris
            continue
        journal = stage / JOURNAL
        if journal.exists():
            entry = json.loads(journal.read_text())
            _apply(root, keys, stage, entry["run_id"], entry["plan"], "")
        shutil.rmtree(stage)
        handled.append(stage.name)
    return handled


def _apply(root: Path, keys: dict[str, str], stage: Path, run_id: str, plan: list[dict], crash_at: str) -> None:
    """Swap each planned day into place; days already swapped by this run (their marker names it) are skipped."""
    for number, step in enumerate(plan):
        if number == 1:
            _crash_if(crash_at, "swapping")
        live = partition_path(root, **keys, dt=step["dt"])
        staged = partition_path(stage, **keys, dt=step["dt"])
        if step["action"] == "remove":
            if live.exists():
                retired = stage / "_retired" / live.name
                retired.parent.mkdir(parents=True, exist_ok=True)
                os.rename(live, retired)
        elif _marker(live) != run_id and staged.exists():
            _swap_in(staged, live)


def _marker(folder: Path) -> str | None:
    path = folder / RUN_MARKER
    return path.read_text().strip() if path.exists() else None


def _swap_in(staged: Path, live: Path) -> None:
    """Make `staged` visible at `live` in one step; the old folder (if any) ends up at `staged`."""
    live.parent.mkdir(parents=True, exist_ok=True)
    if not live.exists():
        os.rename(staged, live)
    elif not _exchange(staged, live):
        # No atomic exchange here: two renames; a crash between them is rolled forward by the next run.
        retired = staged.with_name(staged.name + "._retired")
        os.rename(live, retired)
        os.rename(staged, live)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where the system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"renameat2 exchange of {a} and {b}: {os.strerror(code)}")


def _crash_if(crash_at: str, point: str) -> None:
    """Kill this process without any clean-up when fault injection asks for this point (tests only)."""
    if crash_at == point:
        os._exit(137)
