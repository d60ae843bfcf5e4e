"""The only Petastorm import: a Spark DataFrame column of arrays -> a tf.data.Dataset of batches."""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from anomalake.pipelines.errors import JobError

_AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow here


@dataclass(frozen=True)
class Feed:
    """A batched dataset over one column, with its row count and the batches that make one pass."""

    dataset: Any
    rows: int
    steps: int


@contextmanager
def open_feed(
    df: DataFrame, column: str = "x", batch_size: int = 256, repeat: bool = True, shuffle: bool = True, seed: int = 0
) -> Iterator[Feed]:
    """Materialise `df[column]` with Petastorm's converter and yield a Feed; the cache is deleted after.

    With repeat=True the reader never ends and each pass is `steps` batches (what Keras wants per epoch,
    re-iterated every epoch); with repeat=False the dataset is exactly one pass over the rows.
    shuffle=True orders the rows by a seeded random key before they are cached and reads them with one
    worker and a seeded row-group order, so the same data and seed give the same batches (and the same model).
    """
    with cached_column(df, column, shuffle, seed) as converter:
        with converter_feed(converter, column, batch_size, repeat, shuffle, seed) as feed:
            yield feed


@contextmanager
def converter_feed(
    converter: Any, column: str = "x", batch_size: int = 256, repeat: bool = True, shuffle: bool = True, seed: int = 0
) -> Iterator[Feed]:
    """A Feed over an already materialised column (`cached_column`): one copy read by several feeds in turn."""
    import tensorflow as tf

    steps = math.ceil(len(converter) / batch_size)
    with converter_dataset(converter, column, batch_size, repeat, shuffle, seed) as batches:
        if repeat:
            # Keras needs the pass length up front; a generator-backed dataset cannot report it.
            batches = batches.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
        yield Feed(batches, len(converter), steps)


@contextmanager
def cached_column(
    df: DataFrame, column: str = "x", shuffle: bool = True, seed: int = 0, files: int = 0, empty: str = ""
) -> Iterator[Any]:
    """Petastorm's Parquet copy of `df[column]` (a picklable converter that Spark tasks can read); deleted after.

    shuffle=True orders the rows by a seeded random key first. files > 0 writes that many files (one row group
    each at these sizes), so that as many workers can each read a shard of their own. No rows: a JobError with
    the `empty` line when given (what the user can do about it), else a ValueError.
    """
    # Petastorm 0.13.1 uses pyarrow's legacy API (pinned on purpose, see DESIGN.md): its warnings are noise.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\..*")
    logging.getLogger("petastorm").setLevel(logging.ERROR)
    from petastorm.spark import make_spark_converter

    rows_in = df.select(column)
    if shuffle:
        rows_in = rows_in.orderBy(F.rand(seed))
    if files:
        rows_in = rows_in.repartition(files)
    converter = make_spark_converter(rows_in, dtype="float32")
    try:
        if len(converter) == 0:
            if empty:
                raise JobError(empty)
            raise ValueError("the feed has no rows")
        yield converter
    finally:
        converter.delete()


@contextmanager
def converter_dataset(
    converter: Any,
    column: str,
    batch_size: int,
    repeat: bool,
    shuffle: bool,
    seed: int,
    shard: int | None = None,
    shards: int | None = None,
) -> Iterator[Any]:
    """A tf.data.Dataset of `column` batches read from the converter's files (shard `shard` of `shards` if given).

    One reader worker and a seeded row-group order: the same files and seed give the same batches. Petastorm
    reads a row group at a time; the converter's own `make_tf_dataset` then splits every row group into single
    rows and batches them again one by one, which cost a quarter of the training speed (benchmarks/feed.py).
    `rebatch` cuts the same batches out of the row groups in one step, so the model sees the same data, and
    MatrixResultsReader turns each row group into arrays without Python work per row.
    """
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset
    from tensorflow.python.util import deprecation

    sharding = {"cur_shard": shard, "shard_count": shards, "shard_seed": seed} if shards else {}
    reader = make_batch_reader(
        # Sorted: Petastorm lists the cache's files in no fixed order, and the seeded row-group order permutes
        # that list, so an unsorted one gave other batches (and another model) on each run.
        sorted(converter.file_urls),
        num_epochs=None if repeat else 1,
        workers_count=1,
        shuffle_row_groups=shuffle,
        seed=seed,
        **sharding,
    )
    reader._results_queue_reader = MatrixResultsReader()  # pinned Petastorm 0.13.1: see MatrixResultsReader
    try:
        with deprecation.silence():  # Petastorm 0.13.1 calls from_generator the deprecated way: a warning per train job
            dataset = make_petastorm_dataset(reader)
        dataset = dataset.rebatch(batch_size).prefetch(_AUTOTUNE)
        # Numbers reach the model as float32; strings (text tables) pass as they are, for its own vectoriser.
        yield dataset.map(lambda batch: _as_model_input(getattr(batch, column)))
    finally:
        reader.stop()
        reader.join()


class MatrixResultsReader:
    """Petastorm's batch results reader, mended: no row group lost at the end of a pass, no Python loop per row.

    Petastorm 0.13.1 (`ArrowReaderWorkerResultsQueueReader` over its `ThreadPool`) has two faults that this fixes:
    - Its end-of-data check reads "every item handed out is processed" before "the ventilator has finished", with
      the ventilator still running in its own thread. When the ventilator hands out the last row groups between
      the two reads, a single pass (num_epochs=1) ends early and those row groups are silently lost: 4 of 8 in
      about a third of the passes over one file (tests/test_feeding.py). It hands out 4 row groups at a time, so
      a pass over more than 4 can lose some. After the pool says it is empty, this reader checks again that
      every handed-out row group was read, and reads on if not.
    - It makes a list column a matrix by `np.vstack` over one NumPy array per row, under the GIL that Keras's
      step loop needs on the same cores: training through the feed ran at 0.83 of the in-memory speed
      (benchmarks/feed.py). `arrow_to_numpy` flattens the column instead.
    """

    batched_output = True

    def read_next(self, workers_pool, schema, ngram):
        """The next row group from the pool as the schema's namedtuple of arrays (StopIteration at the end)."""
        result = _next_result(workers_pool)
        if isinstance(result, dict):  # the pool already converted it (convert_early_to_numpy)
            return schema.make_namedtuple(**result)
        return schema.make_namedtuple(**arrow_to_numpy(result, schema))


def _next_result(workers_pool):
    """The pool's next result; StopIteration only once the ventilator is done and every row group it handed out was
    read."""
    from petastorm.workers_pool import EmptyResultError

    while True:
        try:
            return workers_pool.get_results()
        except EmptyResultError:
            # The pool raised this after the ventilator finished, so a second look at the counts is final.
            if workers_pool.all_workers_done():
                raise StopIteration from None


def arrow_to_numpy(table: pa.Table, schema) -> dict[str, Any]:
    """Petastorm's `convert_arrow_table_to_numpy_dict`, with fixed-length list columns converted without a loop per
    row."""
    from petastorm.arrow_reader_worker import convert_arrow_table_to_numpy_dict

    arrays = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if _fixed_length_lists(column):
            matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
            shape = tuple(schema.fields[name].shape)
            arrays[name] = matrix.reshape((len(column),) + shape) if len(shape) > 1 else matrix
    others = [name for name in table.column_names if name not in arrays]
    if others:
        arrays.update(convert_arrow_table_to_numpy_dict(table.select(others), schema))
    return {name: arrays[name] for name in table.column_names}


def _fixed_length_lists(column: pa.Array) -> bool:
    """Whether `column` is a non-empty list column without nulls whose lists all have one length."""
    if not pa.types.is_list(column.type) or column.null_count or len(column) == 0:
        return False
    bounds = pc.min_max(pc.list_value_length(column)).as_py()
    return bounds["min"] == bounds["max"]


def _as_model_input(values):
    import tensorflow as tf

    return values if values.dtype == tf.string else tf.cast(values, tf.float32)
