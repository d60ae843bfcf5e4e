"""Training feed throughput: Keras steps/s through the Petastorm feed beside tf.data over the same array in memory.

    .venv/bin/python -m benchmarks.feed --rows 50000 --out /tmp/feed.json

The same small dense autoencoder (64 -> 64 -> 8 -> 64 -> 64, the dense_autoencoder family's widths) trains
with the same batch size on the same windows: once from anomalake.pipelines.training.feed.open_feed over the features
DataFrame (what the train job does), once from tf.data.Dataset.from_tensor_slices of a numpy array of them.
Each trains one warm-up epoch, then one timed epoch of the same number of steps, in each of --rounds rounds
(the feeds take turns, so a slow spell of the machine hits all of them); the medians are reported.
feed_ratio = Petastorm steps/s over in-memory steps/s. The in-memory dataset reshuffles every row each epoch;
the feed's cache is shuffled once when written and its row groups are reordered each epoch, so the absolute
figures also hold an in-memory run shuffled once up front (feed_ratio_shuffled_once), the same work per step.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks import common


def parse_args(argv: list[str] | None = None):
    """Command-line options."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="training windows")
    parser.add_argument("--entities", type=int, default=100, help="at least this many entities")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of both feeds (the configured one)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timed rounds of each feed; the medians are reported (this machine is noisy)",
    )
    parser.add_argument("--device", default="cpu", help="label of the device the run used (cpu or gpu)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the windows, train through each feed `rounds` times, print the JSON (medians over the rounds)."""
    args = parse_args(argv)
    entities = common.entities_for(args.rows, args.entities)
    with common.temporary_lake(args.work) as lake, common.PeakRss() as rss:
        files = common.write_features(lake, common.SCORE_DAY, args.rows, entities, args.seed)
        ctx = common.job_context(lake)
        rounds = [one_round(ctx, files, args.batch_size) for _ in range(args.rounds)]
        ctx.spark.stop()
    feeds = {name: median_round([r[name] for r in rounds]) for name in rounds[0]}
    petastorm, memory, once = (feeds[k]["steps_per_s"] for k in ("petastorm", "in_memory", "in_memory_shuffled_once"))
    common.emit(
        {
            "feed_ratio": round(petastorm / memory, 4),
            "absolute": {**feeds, "feed_ratio_shuffled_once": round(petastorm / once, 4)},
            "peak_rss_mb": rss.peak_mb,
            "device": args.device,
            "sizes": {"rows": args.rows, "entities": entities, "batch_size": args.batch_size, "rounds": args.rounds},
        },
        args.out,
    )


def one_round(ctx, files: list[str], batch_size: int) -> dict[str, dict[str, Any]]:
    """One timed epoch through each feed: Petastorm, in memory reshuffled every epoch, in memory shuffled once."""
    return {
        "petastorm": petastorm_feed(ctx, batch_size),
        "in_memory": in_memory_feed(files, batch_size),
        "in_memory_shuffled_once": in_memory_feed(files, batch_size, reshuffle=False),
    }


def median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median steps/s (the lower middle one for an even count), with every round's steps/s."""
    ranked = sorted(results, key=lambda r: r["steps_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "rounds_steps_per_s": [r["steps_per_s"] for r in results]}


def autoencoder(seed: int = 7):
    """The dense_autoencoder family's layers on 64 inputs (hidden 64, 8), compiled with Adam and MSE."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(common.WINDOW,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(common.WINDOW),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def epoch_times(dataset, steps: int) -> dict[str, Any]:
    """Fit a fresh model two epochs of `steps` batches; the second (timed) epoch's steps/s."""
    import keras

    class Clock(keras.callbacks.Callback):
        """Each epoch's wall seconds into `seconds`."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    seconds: list[float] = []
    autoencoder().fit(dataset, steps_per_epoch=steps, epochs=2, verbose=0, callbacks=[Clock()])
    return {
        "steps": steps,
        "warmup_epoch_s": round(seconds[0], 3),
        "epoch_s": round(seconds[1], 3),
        "steps_per_s": common.rate(steps, seconds[1]),
    }


def petastorm_feed(ctx, batch_size: int) -> dict[str, Any]:
    """Train from anomalake.pipelines.training.feed.open_feed over the features DataFrame (shuffled, repeating, as the
    train job)."""
    from anomalake.pipelines.lake.reading import read_partitions
    from anomalake.pipelines.training.feed import open_feed

    df = read_partitions(
        ctx.spark, ctx.lake.features(common.TABLE), [common.SCORE_DAY], "features", common.TABLE
    ).select("x")
    started = time.perf_counter()
    with open_feed(df, batch_size=batch_size, seed=0) as feed:
        setup_s = time.perf_counter() - started
        result = epoch_times(feed.dataset.map(lambda x: (x, x)).repeat(), feed.steps)
    return {**result, "setup_s": round(setup_s, 3), "rows": feed.rows}


def in_memory_feed(files: list[str], batch_size: int, reshuffle: bool = True) -> dict[str, Any]:
    """Train from tf.data.Dataset.from_tensor_slices of the same windows as one numpy array (shuffled, repeating).

    reshuffle=True shuffles all rows again every epoch (what a user writes); reshuffle=False shuffles them once,
    up front, as the feed's cache is (the feed then only reorders row groups per epoch): the same work per
    step on both sides, reported beside feed_ratio.
    """
    import tensorflow as tf

    started = time.perf_counter()
    x = np.stack(pq.read_table(files, partitioning=None).column("x").to_numpy()).astype(np.float32)
    if reshuffle:
        dataset = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=0)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(x[np.random.default_rng(0).permutation(len(x))])
    dataset = dataset.batch(batch_size).map(lambda b: (b, b)).repeat()
    setup_s = time.perf_counter() - started
    steps = -(-len(x) // batch_size)
    return {**epoch_times(dataset, steps), "setup_s": round(setup_s, 3), "rows": len(x)}


if __name__ == "__main__":
    main()
