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
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from models.artifacts import Artifact, load_artifact
from models.scaling import EntityBaseline

TOP_PARTS = 3
MAP_SIDE = 8  # an image's error map is at most MAP_SIDE x MAP_SIDE cells
_SCORE_FIELDS = [
    T.StructField("raw_score", T.DoubleType()),
    T.StructField("score", T.DoubleType()),
    T.StructField("threshold", T.DoubleType()),
    T.StructField("is_anomaly", T.BooleanType()),
]
REGION = T.StructType([T.StructField(n, T.IntegerType()) for n in ("row0", "col0", "row1", "col1")] + [T.StructField("share", T.DoubleType())])
TOKEN = T.StructType([T.StructField("token", T.StringType()), T.StructField("position", T.IntegerType()), T.StructField("surprise", T.DoubleType())])
EXPLANATION_FIELDS = {
    "timeseries": [
        T.StructField("top_feature", T.StringType()),
        T.StructField("feature_contributions", T.MapType(T.StringType(), T.DoubleType())),
        T.StructField("top_step_offsets", T.ArrayType(T.IntegerType())),
    ],
    "image": [T.StructField("top_regions", T.ArrayType(REGION)), T.StructField("error_map", T.ArrayType(T.ArrayType(T.DoubleType())))],
    "text": [T.StructField("top_tokens", T.ArrayType(TOKEN))],
}
RESULTS = {kind: T.StructType(_SCORE_FIELDS + fields + [T.StructField("error", T.StringType())]) for kind, fields in EXPLANATION_FIELDS.items()}
RESULT = RESULTS["timeseries"]

_ARTIFACTS: dict[str, Artifact] = {}


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
        # One line per Python worker in the executor's log: the model is loaded once per worker, not per batch.
        print(f"anomalake: Python worker {os.getpid()} loaded {path} in {time.monotonic() - started:.2f} s", file=sys.stderr, flush=True)
    return _ARTIFACTS[path]


def _grid(size: int, parts: int) -> list[np.ndarray]:
    return [block for block in np.array_split(np.arange(size), min(parts, size)) if len(block)]


def _image_explanations(contributions: np.ndarray) -> tuple[list, list]:
    """Per image: the top regions of a 4 x 4 grid (boxes with their error share) and a coarse error-share map."""
    pixels = contributions.reshape(contributions.shape[:3] + (-1,)).sum(axis=3)
    total = np.maximum(pixels.sum(axis=(1, 2)), 1e-300)
    rows, cols = _grid(pixels.shape[1], 4), _grid(pixels.shape[2], 4)
    boxes = [(r, c) for r in rows for c in cols]
    shares = np.stack([pixels[:, r][:, :, c].sum(axis=(1, 2)) for r, c in boxes], axis=1) / total[:, None]
    top = np.argsort(-shares, axis=1, kind="stable")[:, :TOP_PARTS]
    regions = [
        [{"row0": int(boxes[j][0][0]), "col0": int(boxes[j][1][0]), "row1": int(boxes[j][0][-1]), "col1": int(boxes[j][1][-1]),
          "share": round(float(share[j]), 6)} for j in order]
        for share, order in zip(shares, top)
    ]
    map_rows, map_cols = _grid(pixels.shape[1], MAP_SIDE), _grid(pixels.shape[2], MAP_SIDE)
    cells = np.stack([np.stack([pixels[:, r][:, :, c].sum(axis=(1, 2)) for c in map_cols], axis=1) for r in map_rows], axis=1)
    maps = (cells / total[:, None, None]).round(4).tolist()
    return regions, maps


def _text_explanations(detector, samples: np.ndarray, contributions: np.ndarray) -> list:
    """Per text: its most surprising tokens with their position and surprise."""
    names, surprise = detector._explanation_parts(samples, contributions)
    top = np.argsort(-surprise, axis=1, kind="stable")[:, :TOP_PARTS]
    return [
        [{"token": row_names[j], "position": int(j), "surprise": round(float(row[j]), 4)} for j in order if row[j] > 0]
        for row_names, row, order in zip(names, surprise, top)
    ]


def _valid_rows(artifact: Artifact, kind: str, x: pd.Series, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows can be scored, and the error of the others."""
    if kind == "text":
        ok = known & np.array([isinstance(v, str) for v in x], dtype=bool)
        return ok, np.where(ok, None, np.where(known, "bad_input: expected a text", "unknown_entity"))
    expected = int(np.prod(artifact.detector.config.input_shape))
    ok = known & np.array([v is not None and len(v) == expected for v in x], dtype=bool)
    return ok, np.where(ok, None, np.where(known, f"bad_shape: expected {expected} values", "unknown_entity"))


def _samples(artifact: Artifact, kind: str, entity: pd.Series, x: pd.Series) -> np.ndarray:
    if kind == "text":
        return np.array(x.tolist(), dtype=object)
    shape = tuple(artifact.detector.config.input_shape)
    values = np.stack(x.to_numpy()).astype(np.float64).reshape((-1, *shape))
    return artifact.baseline.transform(entity.tolist(), values)


def _explanation_columns(artifact: Artifact, kind: str, samples: np.ndarray, contributions: np.ndarray) -> dict[str, list]:
    if kind == "image":
        regions, maps = _image_explanations(contributions)
        return {"top_regions": regions, "error_map": maps}
    return {"top_tokens": _text_explanations(artifact.detector, samples, contributions)}


def score_frame(artifact: Artifact, entity: pd.Series, x: pd.Series) -> pd.DataFrame:
    """Score one batch of images or texts (windows take `_score_windows`); unusable rows get an error, not a score."""
    n, kind = len(x), artifact.meta.get("kind", "timeseries")
    ok, errors = _valid_rows(artifact, kind, x, artifact.baseline.knows(entity.tolist()))
    out = pd.DataFrame({name: [None] * n for name in RESULTS[kind].fieldNames()})
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
        for name, values in _explanation_columns(artifact, kind, samples, contributions).items():
            column = np.full(n, None, dtype=object)  # None, not reindex's NaN: Arrow cannot put a NaN in a map
            column[rows] = pd.Series(values, dtype=object).to_numpy()
            out[name] = column
    return out


# ---- The score job's path: mapInArrow over (entity_id, ts, x, dt) Arrow batches ----
# Windows skip pandas entirely: the x column's flat float buffer is reshaped in place, per-entity baselines
# are looked up once per distinct entity, and the explanation columns are built as Arrow arrays (a map and a
# list column from offsets), where a pandas UDF converts a Python object per row each way.


WINDOW_ARROW = to_arrow_schema(RESULTS["timeseries"])


def output_schema(kind: str, key_fields: list[T.StructField]) -> T.StructType:
    """What `score_arrow_batches` yields: the key columns it passes through, then RESULTS[kind]."""
    return T.StructType(key_fields + list(RESULTS[kind].fields))


def score_arrow_batches(batches: Iterator[pa.RecordBatch], path: str, kind: str, unseen: str = "") -> Iterator[pa.RecordBatch]:
    """mapInArrow body: load the artifact once per worker, then score every batch of this task."""
    artifact = cached_artifact(path)
    if unseen:
        artifact = dataclasses.replace(artifact, baseline=artifact.baseline.merged(EntityBaseline.from_json(unseen)))
    schema = to_arrow_schema(RESULTS[kind])
    for batch in batches:
        keys = [batch.column(name) for name in ("entity_id", "ts", "dt")]
        results = _score_windows(artifact, batch) if kind == "timeseries" else _score_via_pandas(artifact, batch, schema)
        yield pa.RecordBatch.from_arrays(keys + results, names=["entity_id", "ts", "dt", *schema.names])


def _score_via_pandas(artifact: Artifact, batch: pa.RecordBatch, schema: pa.Schema) -> list[pa.Array]:
    """Images and texts: the per-sample explanations are Python structures anyway; score_frame builds them."""
    frame = score_frame(artifact, batch.column("entity_id").to_pandas(), batch.column("x").to_pandas())
    return [pa.array(frame[field.name].tolist(), type=field.type) for field in schema]


def _score_windows(artifact: Artifact, batch: pa.RecordBatch) -> list[pa.Array]:
    """Score one batch of windows with vectorised input and output conversion (RESULTS order)."""
    n, shape = batch.num_rows, tuple(artifact.detector.config.input_shape)
    codes, names, known = _entity_codes(artifact, batch.column("entity_id"))
    x = batch.column("x")
    lengths = np.diff(np.asarray(x.offsets))
    ok = known & (lengths == int(np.prod(shape))) & ~np.asarray(x.is_null())
    errors = np.where(ok, None, np.where(known, f"bad_shape: expected {int(np.prod(shape))} values", "unknown_entity")).astype(object)
    rows = np.flatnonzero(ok)
    samples = _window_samples(artifact, x, rows, codes[rows], names, shape)
    raw, contributions = artifact.detector.score_and_explain(samples) if len(rows) else (np.zeros(0), np.zeros((0, *shape)))
    finite = np.isfinite(raw)
    errors[rows[~finite]] = "non_finite_score"
    rows, raw, contributions = rows[finite], raw[finite], contributions[finite]
    calibrated = artifact.calibration.transform(raw)
    threshold = np.full(len(rows), artifact.calibration.threshold)
    scored = [_masked(n, rows, v, t) for v, t in ((raw, pa.float64()), (calibrated, pa.float64()), (threshold, pa.float64()),
                                                   (calibrated > artifact.calibration.threshold, pa.bool_()))]
    explanations = _window_explanations(n, rows, contributions, list(artifact.detector.config.feature_names))
    return scored + explanations + [pa.array(errors, pa.string())]


def _entity_codes(artifact: Artifact, entity: pa.Array) -> tuple[np.ndarray, list, np.ndarray]:
    """(index of each row's entity among the batch's distinct ones, those entities, whether the model knows each row's)."""
    encoded = entity.dictionary_encode()
    names = encoded.dictionary.to_pylist()
    codes = np.asarray(encoded.indices.fill_null(0), dtype=np.int64)
    known = artifact.baseline.knows(names)[codes] if names else np.zeros(len(entity), dtype=bool)
    return codes, names, known & ~np.asarray(entity.is_null())


def _window_samples(artifact: Artifact, x: pa.Array, rows: np.ndarray, codes: np.ndarray, names: list, shape: tuple) -> np.ndarray:
    """The windows of `rows` as (m, *shape), in their entities' own units (the arithmetic of score_frame)."""
    size = int(np.prod(shape))
    values = np.asarray(x.values)  # the flat float buffer, no copy
    starts = np.asarray(x.offsets)[:-1][rows]
    windows = values[starts[:, None] + np.arange(size)].astype(np.float64).reshape((-1, *shape))
    baseline = artifact.baseline
    if baseline.is_identity:
        return windows
    n_features = len(baseline.features)
    center = np.array([baseline.centers.get(e, (0.0,) * n_features) for e in names], dtype=np.float64)[codes]
    scale = np.array([baseline.scales.get(e, (1.0,) * n_features) for e in names], dtype=np.float64)[codes]
    per_sample = (len(rows),) + (1,) * (windows.ndim - 2) + (n_features,)
    return ((windows - center.reshape(per_sample)) / scale.reshape(per_sample)).astype(np.float32)


def _masked(n: int, rows: np.ndarray, values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A length-n Arrow array of type `kind` holding `values` at `rows` and nulls elsewhere."""
    full = np.full(n, "" if kind == pa.string() else 0, dtype=object if kind == pa.string() else values.dtype)
    full[rows] = values
    mask = np.ones(n, dtype=bool)
    mask[rows] = False
    return pa.array(full, type=kind, mask=mask)


def _window_explanations(n: int, rows: np.ndarray, contributions: np.ndarray, features: list[str]) -> list[pa.Array]:
    """top_feature, feature_contributions (a map) and top_step_offsets as Arrow arrays (empty for unscored rows)."""
    per_feature = contributions.sum(axis=1)
    shares = (per_feature / np.maximum(per_feature.sum(axis=1, keepdims=True), 1e-300)).round(6)
    top_feature = _masked(n, rows, np.array(features, dtype=object)[shares.argmax(axis=1)], pa.string())
    per_step = contributions.sum(axis=2)
    top = np.argsort(-per_step, axis=1, kind="stable")[:, :TOP_PARTS]
    offsets = (per_step.shape[1] - 1 - top).astype(np.int32)
    width = np.zeros(n, dtype=np.int32)
    width[rows] = len(features)
    map_offsets = np.concatenate([[0], np.cumsum(width)]).astype(np.int32)
    keys = pa.array(np.tile(np.array(features, dtype=object), len(rows)), pa.string())
    contributions_map = pa.MapArray.from_arrays(map_offsets, keys, pa.array(shares.reshape(-1), pa.float64())).cast(WINDOW_ARROW.field("feature_contributions").type)
    steps = np.zeros(n, dtype=np.int32)
    steps[rows] = offsets.shape[1]
    step_offsets = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(steps)]).astype(np.int32)), pa.array(offsets.reshape(-1), pa.int32()),
        type=WINDOW_ARROW.field("top_step_offsets").type,
    )
    return [top_feature, contributions_map, step_offsets]


# --- The score job's tasks write their rows themselves ------------------------------------------------------
# Handing scored rows back to Spark costs a conversion into the JVM, a cache and Spark's Parquet writer, about
# as much again as the model (benchmarks/profile_scoring.py); a task writes its days' files with pyarrow instead
# and sends Spark only the rows it could not score and its counts.

TALLY = T.StructType(
    [
        T.StructField("entity_id", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("dt", T.StringType(), False),
        T.StructField("error", T.StringType(), True),
        T.StructField("rows", T.LongType(), False),
        T.StructField("anomalies", T.LongType(), False),
    ]
)


@dataclasses.dataclass(frozen=True)
class ScoreFiles:
    """Where a score task writes and the columns every row shares (picklable: a path and constants)."""

    folder: str  # the run's staging folder down to the keys: the day folders go under it
    kind: str
    model_version: str
    run_id: str
    scored_at: datetime.datetime  # one time for the whole run, in UTC
    step_seconds: int

    @property
    def schema(self) -> pa.Schema:
        """The columns of a scores file: the scores table without its partition columns (detector, dt)."""
        from pipelines.schemas import scores_schema

        fields = [f for f in scores_schema(self.kind).fields if f.name not in ("detector", "dt")]
        return to_arrow_schema(T.StructType(fields))


def write_scores_arrow(batches: Iterator[pa.RecordBatch], path: str, kind: str, unseen: str, files: ScoreFiles) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: score as `score_arrow_batches`, write the scored rows to this task's files of their days,
    yield TALLY rows: each row that could not be scored, then per day the rows written and how many are anomalies."""
    import pyarrow.compute as pc

    from pipelines.publish import TaskFiles

    schema, counts = files.schema, {}
    with TaskFiles(Path(files.folder), schema) as out:
        for scored in score_arrow_batches(batches, path, kind, unseen):
            failed = scored.column("error").is_valid()
            if pc.any(failed).as_py():
                bad = scored.filter(failed)
                yield _tally(bad.column("entity_id"), bad.column("ts"), bad.column("dt"), bad.column("error"), np.ones(bad.num_rows, np.int64), np.zeros(bad.num_rows, np.int64))
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
        yield _tally(pa.nulls(size, pa.string()), pa.nulls(size, pa.timestamp("us", tz="UTC")), pa.array(days, pa.string()), pa.nulls(size, pa.string()),
                     np.array([counts[d][0] for d in days], np.int64), np.array([counts[d][1] for d in days], np.int64))


def _tally(entity, ts, dt, error, rows: np.ndarray, anomalies: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([entity, ts, dt, error, pa.array(rows), pa.array(anomalies)], schema=TALLY_ARROW)


def _score_rows(scored: pa.RecordBatch, files: ScoreFiles, schema: pa.Schema) -> pa.Table:
    """The scores-file rows of scored rows: their columns, top_steps as timestamps, the run's constant columns."""
    n = scored.num_rows
    constants = {
        "model_version": pa.array([files.model_version] * n, pa.string()),
        "run_id": pa.array([files.run_id] * n, pa.string()),
        "scored_at": pa.array([files.scored_at] * n, pa.timestamp("us", tz="UTC")),
    }
    if files.kind == "timeseries":
        constants["top_steps"] = _top_steps(scored.column("ts"), scored.column("top_step_offsets"), files.step_seconds, schema.field("top_steps").type)
    columns = [constants[f.name] if f.name in constants else scored.column(f.name) for f in schema]
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema)


def _top_steps(ts: pa.Array, offsets: pa.ListArray, step_seconds: int, kind: pa.DataType) -> pa.Array:
    """Each window's top steps as timestamps: its last step minus each offset times the grid step."""
    import pyarrow.compute as pc

    parents = pc.list_parent_indices(offsets)
    steps = np.asarray(pc.list_flatten(offsets), dtype=np.int64) * step_seconds * 1_000_000
    stamps = pc.subtract(pc.take(ts, parents), pa.array(steps, pa.duration("us")))
    starts = np.asarray(offsets.offsets, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(starts - starts[0]), stamps, type=kind)


TALLY_ARROW = to_arrow_schema(TALLY)
