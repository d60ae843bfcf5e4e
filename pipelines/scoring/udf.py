"""Scoring inside Spark: a mapInArrow function that loads the model once per Python worker.

The artifact cache is a module-level dict of this importable module: Python workers are reused across
tasks, so the model is read from the lake once per worker, never per batch and never shipped in the closure.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from anomalake.models.artifacts import Artifact, load_artifact
from anomalake.models.scaling import EntityScaling
from anomalake.pipelines.lake.schemas import IMPUTED, SCORE_RESULTS, SCORE_TALLY_ARROW, score_file_schema
from anomalake.pipelines.lake.task_files import TaskFiles
from anomalake.pipelines.scoring.explanations import (
    imputed_steps,
    masked,
    media_explanation_columns,
    window_explanations,
)

# Why a row could not be scored (the quarantine reason; SCORE_TALLY's error), and what that means.
REASONS = {
    "unknown_entity": "the model has no scale for this entity (it was not in the training range)",
    "bad_shape": "x does not hold one sample of the model's input shape",
    "bad_input": "x is not a text",
    "non_finite_score": "the model gave a NaN or infinite score",
}
_ARTIFACTS: dict[str, Artifact] = {}
LOADS: dict[str, int] = {}  # artifact path -> how often this process read it from the lake (1, with the cache)


def cached_artifact(path: str) -> Artifact:
    """The artifact at `path`, loaded on first use in this process (one TensorFlow thread per worker)."""
    if path not in _ARTIFACTS:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow was already initialised in this process; keep its thread pools.
        started = time.monotonic()
        _ARTIFACTS[path] = load_artifact(Path(path))
        LOADS[path] = LOADS.get(path, 0) + 1
        # One line per Python worker in the executor's log: the model is loaded once per worker, not per batch.
        print(
            f"anomalake: Python worker {os.getpid()} loaded {path} in {time.monotonic() - started:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    return _ARTIFACTS[path]


def _valid_rows(artifact: Artifact, kind: str, x: pd.Series, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows can be scored, and the error of the others."""
    if kind == "text":
        ok = known & np.array([isinstance(v, str) for v in x], dtype=bool)
        return ok, np.where(ok, None, np.where(known, "bad_input", "unknown_entity"))
    expected = int(np.prod(artifact.detector.config.input_shape))
    ok = known & np.array([v is not None and len(v) == expected for v in x], dtype=bool)
    return ok, np.where(ok, None, np.where(known, "bad_shape", "unknown_entity"))


def _samples(artifact: Artifact, kind: str, entity: pd.Series, x: pd.Series) -> np.ndarray:
    if kind == "text":
        return np.array(x.tolist(), dtype=object)
    shape = tuple(artifact.detector.config.input_shape)
    values = np.stack(x.to_numpy()).astype(np.float64).reshape((-1, *shape))
    return artifact.scaling.transform(entity.tolist(), values)


def score_frame(artifact: Artifact, entity: pd.Series, x: pd.Series) -> pd.DataFrame:
    """Score one batch of images or texts (windows take `_score_windows`); unusable rows get an error, not a score."""
    n, kind = len(x), artifact.meta.get("kind", "timeseries")
    ok, errors = _valid_rows(artifact, kind, x, artifact.scaling.knows(entity.tolist()))
    out = pd.DataFrame({name: [None] * n for name in SCORE_RESULTS[kind].fieldNames()})
    out["error"] = errors
    if ok.any():
        samples = _samples(artifact, kind, entity[ok], x[ok])
        raw, contributions = artifact.detector.score_and_explain(samples)
        finite = np.isfinite(raw)
        rows = np.flatnonzero(ok)
        out.loc[rows[~finite], "error"] = "non_finite_score"
        rows, raw, contributions, samples = rows[finite], raw[finite], contributions[finite], samples[finite]
        calibrated = artifact.calibration.transform(raw)
        out.loc[rows, "raw_score"] = raw
        out.loc[rows, "score"] = calibrated
        out.loc[rows, "threshold"] = artifact.calibration.threshold
        out.loc[rows, "is_anomaly"] = calibrated > artifact.calibration.threshold
        for name, values in media_explanation_columns(artifact.detector, kind, samples, contributions).items():
            column = np.full(n, None, dtype=object)  # None, not reindex's NaN: Arrow cannot put a NaN in a map
            column[rows] = pd.Series(values, dtype=object).to_numpy()
            out[name] = column
    return out


# ---- The score job's path: mapInArrow over (entity_id, ts, x, dt) Arrow batches ----
# Windows skip pandas entirely: the x column's flat float buffer is reshaped in place, per-entity baselines
# are looked up once per distinct entity, and the explanation columns are built as Arrow arrays (a map and a
# list column from offsets), where a pandas UDF converts a Python object per row each way.


def model_inputs(features: DataFrame) -> DataFrame:
    """The columns of a features table that score_arrow_batches reads, in its order (a features table written before
    imputed steps were kept has no such column: none were imputed then that it knows of)."""
    imputed = F.col(IMPUTED) if IMPUTED in features.columns else F.lit(None).cast("array<int>").alias(IMPUTED)
    return features.select("entity_id", "ts", "x", imputed, "dt")


def score_arrow_batches(
    batches: Iterator[pa.RecordBatch], path: str, kind: str, unseen: str = ""
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: load the artifact once per worker, then score every batch of this task."""
    artifact = cached_artifact(path)
    if unseen:
        artifact = dataclasses.replace(artifact, scaling=artifact.scaling.merged(EntityScaling.from_json(unseen)))
    schema = to_arrow_schema(SCORE_RESULTS[kind])
    for batch in batches:
        keys = [batch.column(name) for name in ("entity_id", "ts", "dt")]
        results = (
            _score_windows(artifact, batch) if kind == "timeseries" else _score_via_pandas(artifact, batch, schema)
        )
        yield pa.RecordBatch.from_arrays(keys + results, names=["entity_id", "ts", "dt", *schema.names])


def _score_via_pandas(artifact: Artifact, batch: pa.RecordBatch, schema: pa.Schema) -> list[pa.Array]:
    """Images and texts: the per-sample explanations are Python structures anyway; score_frame builds them."""
    frame = score_frame(artifact, batch.column("entity_id").to_pandas(), batch.column("x").to_pandas())
    return [pa.array(frame[field.name].tolist(), type=field.type) for field in schema]


def _score_windows(artifact: Artifact, batch: pa.RecordBatch) -> list[pa.Array]:
    """Score one batch of windows with vectorised input and output conversion (SCORE_RESULTS order)."""
    n, shape = batch.num_rows, tuple(artifact.detector.config.input_shape)
    codes, names, known = _entity_codes(artifact, batch.column("entity_id"))
    x = batch.column("x")
    lengths = np.diff(np.asarray(x.offsets))
    ok = known & (lengths == int(np.prod(shape))) & ~np.asarray(x.is_null())
    errors = np.where(ok, None, np.where(known, "bad_shape", "unknown_entity")).astype(object)
    rows = np.flatnonzero(ok)
    samples = _window_samples(artifact, x, rows, codes[rows], names, shape)
    raw, contributions = (
        artifact.detector.score_and_explain(samples) if len(rows) else (np.zeros(0), np.zeros((0, *shape)))
    )
    finite = np.isfinite(raw)
    errors[rows[~finite]] = "non_finite_score"
    rows, raw, contributions = rows[finite], raw[finite], contributions[finite]
    calibrated = artifact.calibration.transform(raw)
    threshold = np.full(len(rows), artifact.calibration.threshold)
    scored = [
        masked(n, rows, v, t)
        for v, t in (
            (raw, pa.float64()),
            (calibrated, pa.float64()),
            (threshold, pa.float64()),
            (calibrated > artifact.calibration.threshold, pa.bool_()),
        )
    ]
    imputed = None
    if IMPUTED in batch.schema.names:  # features written before imputed steps were kept have none
        imputed = imputed_steps(batch.column(IMPUTED), shape[0])[rows]
    explanations = window_explanations(n, rows, contributions, list(artifact.detector.config.feature_names), imputed)
    return scored + explanations + [pa.array(errors, pa.string())]


def _entity_codes(artifact: Artifact, entity: pa.Array) -> tuple[np.ndarray, list, np.ndarray]:
    """(index of each row's entity among the batch's distinct ones, those entities, whether the model knows each
    row's)."""
    encoded = entity.dictionary_encode()
    names = encoded.dictionary.to_pylist()
    codes = np.asarray(encoded.indices.fill_null(0), dtype=np.int64)
    known = artifact.scaling.knows(names)[codes] if names else np.zeros(len(entity), dtype=bool)
    return codes, names, known & ~np.asarray(entity.is_null())


def _window_samples(
    artifact: Artifact, x: pa.Array, rows: np.ndarray, codes: np.ndarray, names: list, shape: tuple
) -> np.ndarray:
    """The windows of `rows` as (m, *shape), in their entities' own units (the arithmetic of score_frame)."""
    size = int(np.prod(shape))
    values = np.asarray(x.values)  # the flat float buffer, no copy
    starts = np.asarray(x.offsets)[:-1][rows]
    windows = values[starts[:, None] + np.arange(size)].astype(np.float64).reshape((-1, *shape))
    baseline = artifact.scaling
    if baseline.is_identity:
        return windows
    n_features = len(baseline.features)
    center = np.array([baseline.centers.get(e, (0.0,) * n_features) for e in names], dtype=np.float64)[codes]
    scale = np.array([baseline.scales.get(e, (1.0,) * n_features) for e in names], dtype=np.float64)[codes]
    per_sample = (len(rows),) + (1,) * (windows.ndim - 2) + (n_features,)
    return ((windows - center.reshape(per_sample)) / scale.reshape(per_sample)).astype(np.float32)


# --- The score job's tasks write their rows themselves ------------------------------------------------------
# Handing scored rows back to Spark costs a conversion into the JVM, a cache and Spark's Parquet writer, about
# as much again as the model (benchmarks/profile_scoring.py); a task writes its days' files with pyarrow instead
# and sends Spark only the rows it could not score and its counts.


@dataclasses.dataclass(frozen=True)
class ScoreFiles:
    """Where a score task writes and the columns every row shares (picklable: a path and constants)."""

    folder: str  # the scores table's folder down to the detector key: the day folders go under it
    kind: str
    model_version: str
    run_id: str
    scored_at: datetime.datetime  # one time for the whole run, in UTC
    step_seconds: int

    @property
    def schema(self) -> pa.Schema:
        """The columns of a scores file: the scores table without its partition columns (detector, dt)."""
        return score_file_schema(self.kind)


def write_scores_arrow(
    batches: Iterator[pa.RecordBatch], path: str, kind: str, unseen: str, files: ScoreFiles
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: score as `score_arrow_batches`, write the scored rows to this task's files of their days,
    yield SCORE_TALLY rows: each row that could not be scored, then per day the rows written and how many are
    anomalies."""
    schema, counts = files.schema, {}
    with TaskFiles(Path(files.folder), schema, tag=f"-{files.run_id}") as out:
        for scored in score_arrow_batches(batches, path, kind, unseen):
            failed = scored.column("error").is_valid()
            if pc.any(failed).as_py():
                bad = scored.filter(failed)
                yield _tally(
                    bad.column("entity_id"),
                    bad.column("ts"),
                    bad.column("dt"),
                    bad.column("error"),
                    np.ones(bad.num_rows, np.int64),
                    np.zeros(bad.num_rows, np.int64),
                )
            good = scored.filter(pc.invert(failed))
            days = good.column("dt").to_numpy(zero_copy_only=False)
            anomalous = good.column("is_anomaly").to_numpy(zero_copy_only=False)
            for day in pd.unique(days):
                pick = days == day
                out.add(day, _score_rows(good.filter(pa.array(pick)), files, schema))
                n, a = counts.get(day, (0, 0))
                counts[day] = (n + int(pick.sum()), a + int(anomalous[pick].sum()))
    if counts:
        days = list(counts)
        size = len(days)
        yield _tally(
            pa.nulls(size, pa.string()),
            pa.nulls(size, pa.timestamp("us", tz="UTC")),
            pa.array(days, pa.string()),
            pa.nulls(size, pa.string()),
            np.array([counts[d][0] for d in days], np.int64),
            np.array([counts[d][1] for d in days], np.int64),
        )


def _tally(entity, ts, dt, error, rows: np.ndarray, anomalies: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [entity, ts, dt, error, pa.array(rows), pa.array(anomalies)], schema=SCORE_TALLY_ARROW
    )


def _score_rows(scored: pa.RecordBatch, files: ScoreFiles, schema: pa.Schema) -> pa.Table:
    """The scores-file rows of scored rows: their columns, top_steps as timestamps, the run's constant columns."""
    n = scored.num_rows
    constants = {
        "model_version": pa.array([files.model_version] * n, pa.string()),
        "run_id": pa.array([files.run_id] * n, pa.string()),
        "scored_at": pa.array([files.scored_at] * n, pa.timestamp("us", tz="UTC")),
    }
    if files.kind == "timeseries":
        constants["top_steps"] = _top_steps(
            scored.column("ts"), scored.column("top_step_offsets"), files.step_seconds, schema.field("top_steps").type
        )
    columns = [constants[f.name] if f.name in constants else scored.column(f.name) for f in schema]
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema)


def _top_steps(ts: pa.Array, offsets: pa.ListArray, step_seconds: int, kind: pa.DataType) -> pa.Array:
    """Each window's top steps as timestamps: its last step minus each offset times the grid step."""
    parents = pc.list_parent_indices(offsets)
    steps = np.asarray(pc.list_flatten(offsets), dtype=np.int64) * step_seconds * 1_000_000
    stamps = pc.subtract(pc.take(ts, parents), pa.array(steps, pa.duration("us")))
    starts = np.asarray(offsets.offsets, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(starts - starts[0]), stamps, type=kind)
