"""Where the scoring time goes: the Spark score job cut into phases, beside cProfiles of the UDF body and the baseline.

    .venv/bin/python -m benchmarks.profile_scoring --rows 100000 --family dense_autoencoder --out /tmp/profile.json

Not part of `make bench` (it measures no ratio). In one warm local[2] session, each step alone: reading x;
moving the job's input columns to the Python workers as pandas and as Arrow batches (and back a count); the
scoring into a no-op sink through the job's mapInArrow function (score_arrow_batches); the whole job (persist, tally,
two publishes, run records). Then, each in a fresh process: cProfiles of the scoring body over the partition in
Arrow-batch-sized pieces (one TensorFlow thread, as a Spark worker runs it) and of the benchmark's one-process baseline.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import pyarrow.parquet as pq

from benchmarks import common, scoring


def parse_args(argv: list[str] | None = None):
    """Command-line options."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="windows scored")
    parser.add_argument("--family", default="dense_autoencoder", help="the detector family")
    parser.add_argument("--entities", type=int, default=100, help="at least this many entities")
    parser.add_argument("--top", type=int, default=15, help="functions listed per profile")
    parser.add_argument(
        "--phase", choices=("all", "udf", "baseline"), default="all", help="internal: the child process to run"
    )
    parser.add_argument("--lake", help="internal: the lake of a child phase")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the phase asked for and print its JSON."""
    args = parse_args(argv)
    if args.phase != "all":
        common.emit({"udf": profile_udf, "baseline": profile_baseline}[args.phase](args, Path(args.lake)), args.out)
        return
    entities = common.entities_for(args.rows, args.entities)
    with common.temporary_lake(args.work) as lake, tempfile.TemporaryDirectory() as scratch:
        common.write_training_day(lake, 5000, entities, args.seed)
        common.write_features(lake, common.SCORE_DAY, args.rows, entities, args.seed)
        spark = spark_phases(lake, args.family)
        child = lambda phase: common.run_module(  # noqa: E731
            "benchmarks.profile_scoring",
            ["--phase", phase, "--lake", lake, "--family", args.family, "--top", args.top],
            Path(scratch) / f"{phase}.json",
        )
        common.emit(
            {
                "rows": args.rows,
                "family": args.family,
                "spark": spark,
                "udf": child("udf"),
                "baseline": child("baseline"),
            },
            args.out,
        )


def spark_phases(lake: Path, family: str) -> dict[str, float]:
    """Seconds of each stage of the warm score job, each measured alone (see the module docstring)."""
    from pyspark.sql import functions as F

    from anomalake.pipelines.lake.reading import read_partitions
    from anomalake.pipelines.scoring.job import run_score

    ctx = common.job_context(lake)
    common.train_model(ctx, family, 1)
    table, day = common.bench_table(), common.SCORE_DAY
    path = str(scoring.artifact_path(lake, family))
    run_score(ctx.with_new_run(), table, family, day)  # warm-up: workers started, TensorFlow imported, model loaded
    features = read_partitions(ctx.spark, ctx.lake.features(common.TABLE), [day], "features", common.TABLE)
    columns = features.select("entity_id", "ts", "x", "dt")
    steps: dict[str, Callable[[], Any]] = {
        "read_x": lambda: features.select(F.sum(F.size("x"))).collect(),
        "to_python_as_pandas": lambda: columns.mapInPandas(count_rows, "n long").agg(F.sum("n")).collect(),
        "to_python_as_arrow": lambda: columns.mapInArrow(count_arrow_rows, "n long").agg(F.sum("n")).collect(),
        **udf_steps(features, path),
        "whole_job": lambda: run_score(ctx.with_new_run(), table, family, day),
    }
    seconds = {name: round(common.timed(step)[1], 3) for name, step in steps.items()}
    ctx.spark.stop()
    return seconds


def udf_steps(features, path: str) -> dict[str, Callable[[], Any]]:
    """Scoring into a no-op sink through the score job's mapInArrow function (no publish, no tally)."""
    import anomalake.pipelines.scoring.udf as ps
    from anomalake.pipelines.lake.schemas import scored_batch_schema

    noop = lambda df: df.write.format("noop").mode("overwrite").save()  # noqa: E731
    keys = [features.schema[name] for name in ("entity_id", "ts", "dt")]
    score = partial(ps.score_arrow_batches, path=path, kind="timeseries")
    return {
        "map_in_arrow_to_noop": lambda: noop(
            features.select("entity_id", "ts", "x", "dt").mapInArrow(score, scored_batch_schema("timeseries", keys))
        )
    }


def count_rows(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """A pandas batch in, its row count out (what moving the inputs to Python as pandas costs)."""
    for batch in batches:
        yield pd.DataFrame({"n": [len(batch)]})


def count_arrow_rows(batches):
    """An Arrow batch in, its row count out (what moving the inputs to Python as Arrow costs)."""
    import pyarrow as pa

    for batch in batches:
        yield pa.RecordBatch.from_pydict({"n": pa.array([batch.num_rows], pa.int64())})


def profile_udf(args, lake: Path) -> dict[str, Any]:
    """Child: a cProfile of the score job's mapInArrow body over the day in Arrow-batch pieces."""
    import pyarrow as pa

    import anomalake.pipelines.scoring.udf as ps

    path = str(scoring.artifact_path(lake, args.family))
    ps.cached_artifact(path)  # one TensorFlow thread, as in a worker
    table = pq.read_table(common.features_files(lake, common.SCORE_DAY), partitioning=None)
    table = table.append_column("dt", pa.array([common.SCORE_DAY.isoformat()] * table.num_rows, pa.string()))
    batches = table.to_batches(max_chunksize=common.ARROW_BATCH)
    return {"map_in_arrow": profiled(lambda: list(ps.score_arrow_batches(iter(batches), path, "timeseries")), args.top)}


def profile_baseline(args, lake: Path) -> dict[str, Any]:
    """Child: cProfile of the one-process baseline (read, score, explain, write) after a warm-up run."""
    artifact = scoring.load_artifact_of(lake, args.family)
    scoring.score_day(artifact, lake, args.family, "warmup")
    result = {}
    profile = profiled(lambda: result.update(scoring.score_day(artifact, lake, args.family, "profiled")), args.top)
    return {**profile, "phases": result["phases"]}


def profiled(fn: Callable[[], Any], top: int) -> dict[str, Any]:
    """Wall seconds of fn under cProfile and its `top` functions by cumulative and by own time."""
    profile = cProfile.Profile()
    _, seconds = common.timed(profile.runcall, fn)
    stats = pstats.Stats(profile).stats

    def listed(index: int) -> list[dict[str, Any]]:  # the `top` functions by one of pstats' columns
        ranked = sorted(stats.items(), key=lambda item: -item[1][index])[:top]
        return [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": calls,
                "tottime": round(tt, 3),
                "cumtime": round(ct, 3),
            }
            for (file, line, name), (_, calls, tt, ct, _) in ranked
        ]

    return {"seconds": round(seconds, 3), "top_cumulative": listed(3), "top_own": listed(2)}


if __name__ == "__main__":
    main()
