"""Scoring inside Spark: an iterator pandas UDF that loads the model once per Python worker.

The artifact cache is a module-level dict of this importable module: Python workers are reused across
tasks, so the model is read from the lake once per worker, never per batch and never shipped in the closure.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

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
        _ARTIFACTS[path] = load_artifact(Path(path))
    return _ARTIFACTS[path]


def _explanations(contributions: np.ndarray, features: list[str]) -> tuple[list, list, list]:
    """Per sample: the top feature, each feature's share of the error, the top steps (0 = window end)."""
    per_feature = contributions.sum(axis=1)
    shares = per_feature / np.maximum(per_feature.sum(axis=1, keepdims=True), 1e-300)
    top_feature = [features[i] for i in shares.argmax(axis=1)]
    share_maps = [dict(zip(features, row.round(6).tolist())) for row in shares]
    per_step = contributions.sum(axis=2)
    length = per_step.shape[1]
    top = np.argsort(-per_step, axis=1, kind="stable")[:, :TOP_PARTS]
    offsets = [(length - 1 - row).tolist() for row in top]
    return top_feature, share_maps, offsets


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
    if kind == "text":
        return {"top_tokens": _text_explanations(artifact.detector, samples, contributions)}
    top_feature, shares, offsets = _explanations(contributions, list(artifact.detector.config.feature_names))
    return {"top_feature": top_feature, "feature_contributions": shares, "top_step_offsets": offsets}


def score_frame(artifact: Artifact, entity: pd.Series, x: pd.Series) -> pd.DataFrame:
    """Score one Arrow batch of samples (windows, images or texts); unusable rows get an error instead of a score."""
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


def score_batches(batches: Iterator[tuple[pd.Series, pd.Series]], path: str, unseen: str = "") -> Iterator[pd.DataFrame]:
    """The UDF body: load once, then score every batch of this task.

    `unseen`: the JSON of baselines for entities the model never saw (each in its own units), or "".
    """
    artifact = cached_artifact(path)
    if unseen:
        artifact = dataclasses.replace(artifact, baseline=artifact.baseline.merged(EntityBaseline.from_json(unseen)))
    for entity, x in batches:
        yield score_frame(artifact, entity, x)


def score_column(artifact_path: str, entity: Column, x: Column, kind: str = "timeseries", unseen: str = "") -> Column:
    """A struct column (RESULTS[kind]) scoring samples `x` of `entity` with the artifact at `artifact_path`.

    `unseen`: baselines (JSON) of entities the model never saw, fitted by the score job; "" quarantines them.
    """

    @pandas_udf(RESULTS[kind])
    def score(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        yield from score_batches(batches, artifact_path, unseen)

    return score(entity, x)
