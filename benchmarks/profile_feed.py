"""Where the training feed's time goes: the Petastorm feed beside in-memory datasets and its own tf.data steps alone.

    .venv/bin/python -m benchmarks.profile_feed --rows 200000 --rounds 3 --out /tmp/profile_feed.json

Not part of `make bench` (feed.py gives feed_ratio). One process, the same windows and model as feed.py; each
round trains one warm-up and one timed epoch through each of:
- `petastorm`: anomalake.pipelines.training.feed.open_feed over the features table, as the train job;
- `in_memory`: from_tensor_slices, all rows reshuffled every epoch (feed_ratio's baseline);
- `in_memory_shuffled_once`: from_tensor_slices of rows shuffled once up front, as the feed's cache is;
- `feed_steps_without_petastorm`: the feed's tf.data steps (rebatch of row-group-sized elements, prefetch,
  cast, take, cardinality) over the same rows in memory, cut into elements the size of the cache's row groups.
The medians over the rounds, and their ratios to `in_memory_shuffled_once`, separate what Petastorm's reader
costs from what the tf.data steps cost.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks import common, feed


def parse_args(argv: list[str] | None = None):
    """Command-line options."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="training windows")
    parser.add_argument("--entities", type=int, default=100, help="at least this many entities")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of every dataset")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of every dataset (medians are reported)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the windows, train through every dataset `rounds` times, print the medians and ratios."""
    args = parse_args(argv)
    entities = common.entities_for(args.rows, args.entities)
    with common.temporary_lake(args.work) as lake:
        files = common.write_features(lake, common.SCORE_DAY, args.rows, entities, args.seed)
        ctx = common.job_context(lake)
        group_rows = cache_row_group_rows(ctx)
        windows = np.stack(pq.read_table(files, partitioning=None).column("x").to_numpy()).astype(np.float32)
        rates: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, steps_per_s in one_round(ctx, files, windows, group_rows, args.batch_size).items():
                rates.setdefault(name, []).append(steps_per_s)
        ctx.spark.stop()
    medians = {name: round(statistics.median(values), 1) for name, values in rates.items()}
    common.emit(
        {
            "steps_per_s": medians,
            "rounds": rates,
            "ratio_to_in_memory_shuffled_once": {
                name: round(v / medians["in_memory_shuffled_once"], 4) for name, v in medians.items()
            },
            "sizes": {"rows": args.rows, "batch_size": args.batch_size, "row_group_rows": group_rows},
        },
        args.out,
    )


def one_round(ctx, files: list[str], windows: np.ndarray, group_rows: int, batch_size: int) -> dict[str, float]:
    """Timed-epoch steps/s of every dataset, once each."""
    steps = -(-len(windows) // batch_size)
    rates = {name: result["steps_per_s"] for name, result in feed.one_round(ctx, files, batch_size).items()}
    without = feed.epoch_times(feed_steps_in_memory(windows, group_rows, batch_size, steps), steps)["steps_per_s"]
    return {**rates, "feed_steps_without_petastorm": without}


def cache_row_group_rows(ctx) -> int:
    """Rows per row group of the Petastorm cache the train job writes for this table (its first row group)."""
    from anomalake.pipelines.lake.reading import read_partitions
    from anomalake.pipelines.training.feed import cached_column

    df = read_partitions(
        ctx.spark, ctx.lake.features(common.TABLE), [common.SCORE_DAY], "features", common.TABLE
    ).select("x")
    with cached_column(df) as converter:
        return pq.ParquetFile(converter.file_urls[0].removeprefix("file://")).metadata.row_group(0).num_rows


def feed_steps_in_memory(windows: np.ndarray, group_rows: int, batch_size: int, steps: int) -> Any:
    """anomalake.pipelines.training.feed's tf.data steps after the reader, over `windows` in elements of `group_rows`
    rows."""
    import tensorflow as tf

    groups = tf.data.Dataset.from_tensor_slices(windows).batch(group_rows).repeat()
    batches = groups.rebatch(batch_size).prefetch(tf.data.AUTOTUNE).map(lambda b: tf.cast(b, tf.float32))
    batches = batches.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
    return batches.map(lambda b: (b, b)).repeat()


if __name__ == "__main__":
    main()
