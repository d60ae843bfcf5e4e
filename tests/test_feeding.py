"""The training feed: Petastorm's reader with list columns turned into matrices by Arrow gives the same arrays."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anomalake.pipelines.training.feed import (
    MatrixResultsReader,
    arrow_to_numpy,
    cached_column,
    converter_dataset,
    open_feed,
)


def _write_rows(folder, rows: int = 1000, width: int = 8):
    """A Parquet file of `rows` windows (list<float32>), an id and a text column, in row groups of 128."""
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(rows, width)).astype(np.float32)
    table = pa.table(
        {
            "x": pa.array(list(windows), type=pa.list_(pa.float32())),
            "id": pa.array(np.arange(rows)),
            "text": pa.array([f"row {i}" for i in range(rows)]),
        }
    )
    path = folder / "part-0.parquet"
    pq.write_table(table, path, row_group_size=128)
    return path, windows


def _passes(path, passes: int) -> list[list[dict]]:
    """Each of `passes` single passes (num_epochs=1) of Petastorm's batch reader over `path` through
    MatrixResultsReader."""
    from petastorm import make_batch_reader

    read = []
    for _ in range(passes):
        with make_batch_reader(f"file://{path}", num_epochs=1, workers_count=1, shuffle_row_groups=False) as reader:
            reader._results_queue_reader = MatrixResultsReader()
            read.append([batch._asdict() for batch in reader])
    return read


def _schema_of(path):
    """The Unischema Petastorm's batch reader infers for `path`."""
    from petastorm import make_batch_reader

    with make_batch_reader(f"file://{path}", num_epochs=1, workers_count=1) as reader:
        return reader.schema


def test_every_pass_reads_every_row_group_in_order(tmp_path):
    # Petastorm 0.13.1's own reader ends about a third of these passes after 4 of the 8 row groups.
    path, windows = _write_rows(tmp_path)
    for batches in _passes(path, 20):
        assert [len(batch["id"]) for batch in batches] == [128] * 7 + [104]
        assert np.array_equal(np.concatenate([batch["id"] for batch in batches]), np.arange(len(windows)))
        assert np.array_equal(np.concatenate([batch["x"] for batch in batches]), windows)


def test_each_row_group_converts_to_what_petastorms_own_conversion_gives(tmp_path):
    from petastorm.arrow_reader_worker import convert_arrow_table_to_numpy_dict

    path, _ = _write_rows(tmp_path)
    schema, parquet = _schema_of(path), pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        theirs, mine = convert_arrow_table_to_numpy_dict(table, schema), arrow_to_numpy(table, schema)
        assert list(mine) == list(theirs) == ["x", "id", "text"]
        for name in theirs:
            assert mine[name].dtype == theirs[name].dtype and mine[name].shape == theirs[name].shape, name
            assert np.array_equal(mine[name], theirs[name]), name


def _error_of(convert, table, schema) -> type:
    """The type of the exception `convert(table, schema)` raises (AssertionError when it raises none)."""
    try:
        convert(table, schema)
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return type(error)
    raise AssertionError(f"{convert.__name__} converted a column it cannot make a matrix of")


@pytest.mark.parametrize("lists", [[[1.0, 2.0], [3.0]], [[1.0, 2.0], None]], ids=["unequal lengths", "a null list"])
def test_lists_it_cannot_make_a_matrix_of_go_to_petastorms_own_conversion(lists):
    from petastorm.arrow_reader_worker import convert_arrow_table_to_numpy_dict
    from petastorm.unischema import Unischema, UnischemaField

    table = pa.table({"x": pa.array(lists, type=pa.list_(pa.float32()))})
    schema = Unischema("rows", [UnischemaField("x", np.float32, (None,), None, True)])
    assert _error_of(arrow_to_numpy, table, schema) is _error_of(convert_arrow_table_to_numpy_dict, table, schema)


def test_a_sliced_multi_chunk_column_converts_to_its_own_rows():
    from petastorm.unischema import Unischema, UnischemaField

    windows = np.arange(40, dtype=np.float32).reshape(10, 4)
    column = pa.chunked_array(
        [
            pa.array(list(windows[:6]), type=pa.list_(pa.float32())),
            pa.array(list(windows[6:]), type=pa.list_(pa.float32())),
        ]
    )
    table = pa.table({"x": column}).slice(3, 5)
    converted = arrow_to_numpy(table, Unischema("rows", [UnischemaField("x", np.float32, (None,), None, False)]))
    assert np.array_equal(converted["x"], windows[3:8])


@pytest.mark.spark
def test_one_pass_of_the_feed_holds_every_row_once_in_full_batches(spark):
    rows, batch = 1000, 64
    windows = np.random.default_rng(1).normal(size=(rows, 8)).astype(np.float32)
    df = spark.createDataFrame([(w.tolist(),) for w in windows], "x array<float>")
    with open_feed(df, batch_size=batch, repeat=False, shuffle=True, seed=3) as feed:
        batches = [b.numpy() for b in feed.dataset]
    assert feed.rows == rows and feed.steps == -(-rows // batch)
    assert [len(b) for b in batches] == [batch] * (rows // batch) + [rows % batch]
    fed = np.concatenate(batches)
    assert fed.dtype == np.float32 and not np.array_equal(fed, windows), (
        "shuffle=True fed the rows in their stored order"
    )
    assert np.array_equal(fed[np.lexsort(fed.T[::-1])], windows[np.lexsort(windows.T[::-1])])


@pytest.mark.spark
def test_the_shuffled_feed_does_not_depend_on_the_order_petastorm_lists_its_files_in(spark):
    # Petastorm lists the cached copy's files in another order on each run (their names hold a random id); the
    # seeded row-group order must not follow that listing, or the same data and seed train another model.
    windows = np.random.default_rng(2).normal(size=(600, 4)).astype(np.float32)
    df = spark.createDataFrame([(w.tolist(),) for w in windows], "x array<float>")

    def batches(converter) -> list[np.ndarray]:
        with converter_dataset(converter, "x", 50, repeat=False, shuffle=True, seed=5) as dataset:
            return [b.numpy() for b in dataset]

    with cached_column(df, seed=5, files=4) as converter:
        assert len(converter.file_urls) == 4
        listed_otherwise = copy.copy(converter)
        listed_otherwise.file_urls = list(reversed(converter.file_urls))
        first, second = batches(converter), batches(listed_otherwise)
    assert len(first) == len(second) == 12
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
