"""Scaling of the warm score job: wall time on 4x the windows over wall time on 1x, in one session.

    .venv/bin/python -m benchmarks.scaling --rows 50000 --out /tmp/scaling.json

Two features partitions of the same entities, --rows and --factor x --rows windows, are scored by
anomalake.pipelines.scoring.job.run_score (dense_autoencoder, local[2]) after a warm-up run of the small day, so
both timed runs find the Python workers started and the model loaded. scaling_4x = seconds(4x) / seconds(1x):
4.0 is linear, less means a fixed cost per job that the larger day spreads thinner.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common

DETECTOR = "dense_autoencoder"


def parse_args(argv: list[str] | None = None):
    """Command-line options."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="windows of the 1x day")
    parser.add_argument(
        "--factor", type=int, default=4, choices=range(2, 65), metavar="2..64", help="the large day has factor x rows"
    )
    parser.add_argument("--entities", type=int, default=100, help="at least this many entities")
    parser.add_argument("--train-windows", type=int, default=5000, help="windows of the training day")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write both days, train, warm up, time 1x and 4x, print the JSON."""
    args = parse_args(argv)
    entities = common.entities_for(args.rows * args.factor, args.entities)
    with common.temporary_lake(args.work) as lake, common.PeakRss() as rss:
        common.write_training_day(lake, args.train_windows, entities, args.seed)
        common.write_features(lake, common.SCORE_DAY, args.rows, entities, args.seed)
        common.write_features(lake, common.BIG_DAY, args.rows * args.factor, entities, args.seed + 2)
        runs = score_runs(lake, args.epochs, args.factor)
    small, large = runs["1x"], runs[f"{args.factor}x"]
    common.emit(
        {
            f"scaling_{args.factor}x": round(large["seconds"] / small["seconds"], 4),
            "absolute": runs,
            "peak_rss_mb": rss.peak_mb,
            "sizes": {"rows_1x": args.rows, f"rows_{args.factor}x": args.rows * args.factor, "entities": entities},
        },
        args.out,
    )


def score_runs(lake, epochs: int, factor: int) -> dict[str, Any]:
    """Train, score the small day once to warm up, then time the small and the large day."""
    from anomalake.pipelines.scoring.job import run_score

    ctx = common.job_context(lake)
    common.train_model(ctx, DETECTOR, epochs)
    table, runs = common.bench_table(), {}
    for name, day in (("warmup", common.SCORE_DAY), ("1x", common.SCORE_DAY), (f"{factor}x", common.BIG_DAY)):
        result, seconds = common.timed(run_score, ctx.with_new_run(), table, DETECTOR, day)
        runs[name] = {
            "seconds": round(seconds, 3),
            "rows": result.rows_in,
            "rows_per_s": common.rate(result.rows_in, seconds),
        }
    ctx.spark.stop()
    return runs


if __name__ == "__main__":
    main()
