"""Scoring throughput: the Spark score job (cold and warm) beside one Python process doing the same work.

    .venv/bin/python -m benchmarks.scoring --rows 200000 --out /tmp/scoring.json
    .venv/bin/python -m benchmarks.scoring --rows 1000000 --families dense_autoencoder    # the issue's full size

Per family: a features partition of --rows windows (one feature, 64 steps, ~100+ entities) is scored by
anomalake.pipelines.scoring.job.run_score_days in a fresh local[2] SparkSession (cold: its own process, timed from
process start; warm: a second run in the same session), and by a baseline process that reads the same Parquet with
pyarrow, scores it with the same artifact (baseline, Keras model, calibration, explanation) and writes the same
columns with pyarrow (cold: TensorFlow import and model load included; warm: a second run). Ratios are Spark
rows/s over baseline rows/s. The phases (--phase train|spark|baseline) are the child processes of one run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import common


def parse_args(argv: list[str] | None = None):
    """Command-line options (the phase options are for the child processes)."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="windows to score (the issue's full size: 1000000)")
    parser.add_argument("--families", default=",".join(common.FAMILIES), help="comma-separated detector families")
    parser.add_argument(
        "--entities", type=int, default=100, help="at least this many entities (more when a day cannot hold the rows)"
    )
    parser.add_argument("--train-windows", type=int, default=5000, help="windows of the training day")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the tiny models")
    parser.add_argument(
        "--phase",
        choices=("all", "train", "spark", "baseline"),
        default="all",
        help="internal: the child process to run (default all: the whole benchmark)",
    )
    parser.add_argument("--lake", help="internal: the lake of a child phase")
    return parser.parse_args(argv)


def families(args) -> list[str]:
    """The families of --families."""
    return [f for f in args.families.split(",") if f]


def main(argv: list[str] | None = None) -> None:
    """Run the phase asked for."""
    args = parse_args(argv)
    if args.phase == "all":
        common.emit(run_all_phases(args), args.out)
        return
    phase = {"train": phase_train, "spark": phase_spark, "baseline": phase_baseline}[args.phase]
    common.emit(phase(args, Path(args.lake)), args.out)


def run_all_phases(args) -> dict[str, Any]:
    """Generate the data, train in a child, then per family a cold Spark child and a baseline child."""
    entities = common.entities_for(args.rows, args.entities)
    with common.temporary_lake(args.work) as lake, tempfile.TemporaryDirectory() as scratch:
        _, write_s = common.timed(write_inputs, lake, args, entities)
        trained = child(lake, Path(scratch), "train", args.families, "--epochs", args.epochs)
        runs = {
            f: {"spark": child(lake, Path(scratch), "spark", f), "baseline": child(lake, Path(scratch), "baseline", f)}
            for f in families(args)
        }
    return summarize(
        runs,
        trained,
        {
            "rows": args.rows,
            "entities": entities,
            "train_windows": args.train_windows,
            "epochs": args.epochs,
            "write_inputs_s": round(write_s, 3),
        },
    )


def child(lake: Path, scratch: Path, phase: str, families_arg: str, *extra) -> dict[str, Any]:
    """Run one phase of this benchmark in its own Python process; its JSON."""
    args = ["--phase", phase, "--lake", lake, "--families", families_arg, *extra]
    return common.run_module("benchmarks.scoring", args, scratch / f"{phase}-{families_arg}.json")


def write_inputs(lake: Path, args, entities: int) -> None:
    """The training day and the scored day of windows."""
    common.write_training_day(lake, args.train_windows, entities, args.seed)
    common.write_features(lake, common.SCORE_DAY, args.rows, entities, args.seed)


def summarize(runs: dict[str, Any], trained: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    """Ratios and the absolute numbers behind them."""
    ratio = lambda f, key: round(runs[f]["spark"][key] / runs[f]["baseline"][key], 4)  # noqa: E731
    return {
        "scoring_ratio": {f: ratio(f, "warm_rps") for f in runs},
        "scoring_ratio_cold": {f: ratio(f, "cold_rps") for f in runs},
        "scoring_vs_predict_batch_udf": {
            f: round(runs[f]["spark"]["warm_rps"] / runs[f]["spark"]["predict_batch_udf_rps"], 4) for f in runs
        },
        "model_only_rps": {f: runs[f]["baseline"]["model_only_rps"] for f in runs},
        "model_load_s": {f: runs[f]["baseline"]["model_load_s"] for f in runs},
        "loads_per_worker": {f: runs[f]["spark"]["loads_per_worker"] for f in runs},
        "python_workers": {f: runs[f]["spark"]["python_workers"] for f in runs},
        "peak_rss_mb": {
            f: {"spark": runs[f]["spark"]["peak_rss_mb"], "baseline": runs[f]["baseline"]["peak_rss_mb"]} for f in runs
        },
        "absolute": {"runs": runs, "train": trained},
        "sizes": sizes,
    }


def phase_train(args, lake: Path) -> dict[str, Any]:
    """Child: train every family on the training day (one session)."""
    with common.PeakRss() as rss:
        ctx = common.job_context(lake)
        seconds = {f: round(common.timed(common.train_model, ctx, f, args.epochs)[1], 3) for f in families(args)}
        ctx.spark.stop()
    return {"train_s": seconds, "peak_rss_mb": rss.peak_mb}


def phase_spark(args, lake: Path) -> dict[str, Any]:
    """Child: the first score job in a fresh session (cold), a second one (warm), then the workers' model caches."""
    from anomalake.pipelines.scoring.job import run_score_days

    family, table = families(args)[0], common.bench_table()
    with common.PeakRss() as rss:
        ctx = common.job_context(lake)
        cold, cold_s = common.timed(run_score_days, ctx.with_new_run(), table, family, [common.SCORE_DAY])
        cold_process_s = common.process_seconds()
        warm, warm_s = common.timed(run_score_days, ctx.with_new_run(), table, family, [common.SCORE_DAY])
        loads = worker_loads(ctx.spark)
        udf_rows, udf_s = predict_batch_udf_run(ctx, lake, family)
        ctx.spark.stop()
    check_scored(cold, warm)
    loaded = [count for _, count in loads if count >= 0]
    return {
        "rows": cold.rows_in,
        "anomalies": warm.anomalies,
        "cold_job_s": round(cold_s, 3),
        "cold_process_s": round(cold_process_s, 3),
        "warm_s": round(warm_s, 3),
        "cold_rps": common.rate(cold.rows_in, cold_process_s),
        "cold_job_rps": common.rate(cold.rows_in, cold_s),
        "warm_rps": common.rate(warm.rows_in, warm_s),
        "predict_batch_udf_s": round(udf_s, 3),
        "predict_batch_udf_rps": common.rate(udf_rows, udf_s),
        "loads_per_worker": max(loaded, default=0),
        "python_workers": len({pid for pid, count in loads if count >= 0}),
        "probed_workers": len({pid for pid, _ in loads}),
        "peak_rss_mb": rss.peak_mb,
    }


def predict_batch_udf_run(ctx, lake: Path, family: str) -> tuple[int, float]:
    """What a Spark user reaches for first, in the same warm session: `pyspark.ml.functions.predict_batch_udf` with
    the same artifact (each entity's scaling as Spark column arithmetic, the detector's raw score in the UDF, Arrow
    batches of the same size), the rows written as a Delta table. No explanation, calibration or accounting.
    (rows written, seconds)."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from anomalake.pipelines.lake.reading import read_partitions

    path = str(artifact_path(lake, family))
    scaling = load_artifact_of(lake, family).scaling
    centers = ctx.spark.createDataFrame(
        [(e, float(scaling.centers[e][0]), float(scaling.scales[e][0])) for e in scaling.centers],
        "entity_id string, center double, scale double",
    )

    def make_predict_fn():
        """In each Python worker, once: the artifact and its detector's raw score over a batch of windows."""
        from pathlib import Path as Path_

        import numpy as np_

        from anomalake.models.artifacts import load_artifact

        detector = load_artifact(Path_(path)).detector
        shape = tuple(detector.config.input_shape)

        def predict(x):
            return np_.asarray(detector.score_samples(x.reshape((-1, *shape)).astype(np_.float32)), dtype=np_.float64)

        return predict

    score = predict_batch_udf(
        make_predict_fn,
        return_type=T.DoubleType(),
        batch_size=common.ARROW_BATCH,
        input_tensor_shapes=[[common.WINDOW]],
    )
    features = read_partitions(ctx.spark, ctx.lake.features(common.TABLE), [common.SCORE_DAY], "features", common.TABLE)
    scaled = features.join(F.broadcast(centers), "entity_id").select(
        "entity_id", "ts", "dt", F.transform("x", lambda v: (v - F.col("center")) / F.col("scale")).alias("x")
    )
    out = scaled.select("entity_id", "ts", score("x").alias("raw_score"), "dt")
    target = lake / "predict_batch_udf_scores"
    began = time.perf_counter()
    out.write.format("delta").mode("overwrite").partitionBy("dt").save(str(target))
    seconds = time.perf_counter() - began
    return len(read_snapshot_rows(target)), seconds


def read_snapshot_rows(root: Path):
    """The rows of a Delta table written here, through its snapshot (no Spark)."""
    from anomalake.pipelines.lake.delta import read_snapshot

    return read_snapshot(root, {}, ["raw_score"])


def check_scored(*results) -> None:
    """Every window must have been scored (a quarantined window would make the comparison unequal)."""
    for r in results:
        if r.scored != r.rows_in:
            raise RuntimeError(f"score job scored {r.scored} of {r.rows_in} windows ({r.quarantined})")


def worker_loads(spark, rounds: int = 4) -> list[tuple[int, int]]:
    """(pid, model loads) of the reused Python workers: how often each read an artifact from the lake (the score
    function's LOADS counter, not the size of its cache); -1 where anomalake.pipelines.scoring.udf was never imported.

    The probe is a mapInPandas task: Spark reuses the SQL Python workers that ran the scoring UDF for it (an
    RDD map runs in a separate pool of workers, which never saw the UDF).
    """

    def probe(batches):
        """In each worker: its pid and how often anomalake.pipelines.scoring.udf loaded an artifact."""
        import os as os_
        import sys as sys_

        import pandas as pd_

        module = sys_.modules.get("anomalake.pipelines.scoring.udf")
        for _ in batches:
            yield pd_.DataFrame(
                {"pid": [os_.getpid()], "loads": [sum(module.LOADS.values()) if module is not None else -1]}
            )

    tasks = spark.sparkContext.defaultParallelism * rounds
    rows = spark.range(0, tasks, 1, tasks).mapInPandas(probe, "pid long, loads long").collect()
    return sorted({(r["pid"], r["loads"]) for r in rows})


def phase_baseline(args, lake: Path) -> dict[str, Any]:
    """Child: import TensorFlow, load the artifact, score the day (cold), score it again (warm), the model alone."""
    family = families(args)[0]
    with common.PeakRss() as rss:
        _, tf_import_s = common.timed(__import__, "tensorflow")
        artifact, load_s = common.timed(load_artifact_of, lake, family)
        cold = score_day(artifact, lake, family, "cold")
        cold_process_s = common.process_seconds()
        warm = score_day(artifact, lake, family, "warm")
        samples = read_samples(artifact, common.features_files(lake, common.SCORE_DAY))[1]
        _, model_s = common.timed(score_model_only, artifact, samples)
    rows = warm["rows"]
    return {
        "rows": rows,
        "tf_import_s": round(tf_import_s, 3),
        "model_load_s": round(load_s, 3),
        "cold_process_s": round(cold_process_s, 3),
        "cold_rps": common.rate(rows, cold_process_s),
        "warm_s": warm["total_s"],
        "warm_rps": common.rate(rows, warm["total_s"]),
        "model_only_s": round(model_s, 3),
        "model_only_rps": common.rate(rows, model_s),
        "phases_cold_s": cold["phases"],
        "phases_warm_s": warm["phases"],
        "peak_rss_mb": rss.peak_mb,
    }


def artifact_path(lake: Path, family: str) -> Path:
    """The CURRENT artifact folder of `family` on the benchmark table."""
    from anomalake.models.artifacts import read_current

    root = lake / "models" / family / common.TABLE
    return root / read_current(root)


def load_artifact_of(lake: Path, family: str):
    """anomalake.models.artifacts.load_artifact of the CURRENT version (checksums verified, Keras safe_mode)."""
    from anomalake.models.artifacts import load_artifact

    return load_artifact(artifact_path(lake, family))


def read_samples(artifact, files: list[str]) -> tuple[pa.Table, np.ndarray]:
    """The partition's files read with pyarrow and its windows in each entity's units, as the model takes them."""
    table = pq.read_table(files, partitioning=None)
    shape = tuple(artifact.detector.config.input_shape)
    values = np.stack(table.column("x").to_numpy()).astype(np.float64).reshape((-1, *shape))
    return table, artifact.scaling.transform(table.column("entity_id").to_pylist(), values)


def score_model_only(artifact, samples: np.ndarray) -> np.ndarray:
    """detector.score_samples over the in-memory array, in chunks of Spark's Arrow batch size."""
    chunks = [
        artifact.detector.score_samples(samples[i : i + common.ARROW_BATCH])
        for i in range(0, len(samples), common.ARROW_BATCH)
    ]
    return np.concatenate(chunks)


def score_day(artifact, lake: Path, family: str, run: str) -> dict[str, Any]:
    """What a user would write in one process: read, standardise, score and explain, calibrate, write; timed by
    phase."""
    phases: dict[str, float] = {}
    clock = Clock(phases)
    table = pq.read_table(common.features_files(lake, common.SCORE_DAY), partitioning=None)
    clock.lap("read")
    shape = tuple(artifact.detector.config.input_shape)
    values = np.stack(table.column("x").to_numpy()).astype(np.float64).reshape((-1, *shape))
    clock.lap("to_numpy")
    samples = artifact.scaling.transform(table.column("entity_id").to_pylist(), values)
    clock.lap("standardise")
    raw, contributions = score_and_explain(artifact, samples)
    clock.lap("model")
    calibrated = artifact.calibration.transform(raw)
    clock.lap("calibrate")
    out = output_table(table, artifact, raw, calibrated, contributions)
    clock.lap("explain")
    folder = lake / "baseline_scores" / run / f"detector={family}" / f"dt={common.SCORE_DAY.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, folder / "part-00000.parquet")
    clock.lap("write")
    return {
        "rows": table.num_rows,
        "total_s": round(sum(phases.values()), 3),
        "phases": {k: round(v, 3) for k, v in phases.items()},
    }


class Clock:
    """Lap times into a dict: each lap() adds the seconds since the previous one under a name."""

    def __init__(self, laps: dict[str, float]):
        self.laps, self.last = laps, time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the seconds since the last lap to `name`."""
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now


def score_and_explain(artifact, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The detector's scores and contributions, in chunks of Spark's Arrow batch size (bounded memory)."""
    parts = [
        artifact.detector.score_and_explain(samples[i : i + common.ARROW_BATCH])
        for i in range(0, len(samples), common.ARROW_BATCH)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def output_table(
    table: pa.Table, artifact, raw: np.ndarray, calibrated: np.ndarray, contributions: np.ndarray
) -> pa.Table:
    """The score table's columns: scores, verdict, top feature, feature shares (a map), top 3 steps (timestamps)."""
    n, features = len(raw), list(artifact.detector.config.feature_names)
    per_feature = contributions.sum(axis=1)
    shares = (per_feature / np.maximum(per_feature.sum(axis=1, keepdims=True), 1e-300)).round(6)
    per_step = contributions.sum(axis=2)
    top = np.argsort(-per_step, axis=1, kind="stable")[:, :3]
    ts_us = table.column("ts").cast(pa.int64()).to_numpy()
    steps_us = (
        ts_us[:, None] - (per_step.shape[1] - 1 - top).astype(np.int64) * artifact.meta["step_seconds"] * 1_000_000
    )
    list_offsets = lambda width: pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))  # noqa: E731
    threshold = artifact.calibration.threshold
    return pa.table(
        {
            "entity_id": table.column("entity_id"),
            "ts": table.column("ts"),
            "raw_score": raw,
            "score": calibrated,
            "threshold": np.full(n, threshold),
            "is_anomaly": calibrated > threshold,
            "top_feature": pa.array(np.asarray(features, dtype=object)[shares.argmax(axis=1)], pa.string()),
            "feature_contributions": pa.MapArray.from_arrays(
                list_offsets(len(features)),
                pa.array(np.tile(np.asarray(features, dtype=object), n), pa.string()),
                pa.array(shares.reshape(-1)),
            ),
            "top_steps": pa.ListArray.from_arrays(
                list_offsets(3), pa.array(steps_us.reshape(-1)).cast(pa.timestamp("us", tz="UTC"))
            ),
            "model_version": pa.array([artifact.version] * n, pa.string()),
            "run_id": pa.array(["baseline"] * n, pa.string()),
            "scored_at": pa.array(np.full(n, int(time.time() * 1e6), dtype=np.int64)).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
    )


if __name__ == "__main__":
    main()
