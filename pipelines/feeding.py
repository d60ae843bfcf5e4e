"""The only Petastorm import: a Spark DataFrame column of arrays -> a tf.data.Dataset of batches."""
from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


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
    import tensorflow as tf

    # Petastorm 0.13.1 uses pyarrow's legacy API (pinned on purpose, see DESIGN.md): its warnings are noise.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\..*")
    logging.getLogger("petastorm").setLevel(logging.ERROR)
    from petastorm.spark import make_spark_converter

    rows_in = df.select(column)
    if shuffle:
        rows_in = rows_in.orderBy(F.rand(seed))
    converter = make_spark_converter(rows_in, dtype="float32")
    try:
        rows = len(converter)
        if rows == 0:
            raise ValueError("the feed has no rows")
        steps = math.ceil(rows / batch_size)
        with converter.make_tf_dataset(
            batch_size=batch_size,
            num_epochs=None if repeat else 1,
            workers_count=1,
            shuffle_row_groups=shuffle,
            seed=seed,
        ) as dataset:
            # Numbers reach the model as float32; strings (text tables) pass as they are, for its own vectoriser.
            batches = dataset.map(lambda batch: _as_model_input(getattr(batch, column)))
            if repeat:
                # Keras needs the pass length up front; a generator-backed dataset cannot report it.
                batches = batches.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
            yield Feed(batches, rows, steps)
    finally:
        converter.delete()


def _as_model_input(values):
    import tensorflow as tf

    return values if values.dtype == tf.string else tf.cast(values, tf.float32)
