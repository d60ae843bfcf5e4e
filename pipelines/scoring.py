"""Scoring inside Spark: an iterator pandas UDF that loads the model once per Python worker.

The artifact cache is a module-level dict of this importable module: Python workers are reused across
tasks, so the model is read from the lake once per worker, never per batch and never shipped in the closure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from models.artifacts import Artifact, load_artifact

TOP_STEPS = 3
RESULT = T.StructType(
    [
        T.StructField("raw_score", T.DoubleType()),
        T.StructField("score", T.DoubleType()),
        T.StructField("threshold", T.DoubleType()),
        T.StructField("is_anomaly", T.BooleanType()),
        T.StructField("top_feature", T.StringType()),
        T.StructField("feature_contributions", T.MapType(T.StringType(), T.DoubleType())),
        T.StructField("top_step_offsets", T.ArrayType(T.IntegerType())),
        T.StructField("error", T.StringType()),
    ]
)

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
    top = np.argsort(-per_step, axis=1, kind="stable")[:, :TOP_STEPS]
    offsets = [(length - 1 - row).tolist() for row in top]
    return top_feature, share_maps, offsets


def score_frame(artifact: Artifact, entity: pd.Series, x: pd.Series) -> pd.DataFrame:
    """Score one Arrow batch of flattened windows; unusable rows get an error instead of a score."""
    n = len(x)
    shape = tuple(artifact.detector.config.input_shape)
    expected = int(np.prod(shape))
    known = artifact.baseline.knows(entity.tolist())
    ok = known & np.array([v is not None and len(v) == expected for v in x], dtype=bool)
    out = pd.DataFrame({name: [None] * n for name in RESULT.fieldNames()})
    out["error"] = np.where(ok, None, np.where(known, f"bad_shape: expected {expected} values", "unknown_entity"))
    if ok.any():
        windows = np.stack(x[ok].to_numpy()).astype(np.float64).reshape((-1, *shape))
        samples = artifact.baseline.transform(entity[ok].tolist(), windows)
        raw, contributions = artifact.detector.score_and_explain(samples)
        finite = np.isfinite(raw)
        rows = np.flatnonzero(ok)
        out.loc[rows[~finite], "error"] = "non_finite_score"
        rows, raw, contributions = rows[finite], raw[finite], contributions[finite]
        calibrated = artifact.calibration.transform(raw)
        features = list(artifact.detector.config.feature_names)
        top_feature, shares, offsets = _explanations(contributions, features)
        out.loc[rows, "raw_score"] = raw
        out.loc[rows, "score"] = calibrated
        out.loc[rows, "threshold"] = artifact.calibration.threshold
        out.loc[rows, "is_anomaly"] = calibrated > artifact.calibration.threshold
        out["top_feature"] = pd.Series(top_feature, index=rows).reindex(range(n))
        out["feature_contributions"] = pd.Series(shares, index=rows, dtype=object).reindex(range(n))
        out["top_step_offsets"] = pd.Series(offsets, index=rows, dtype=object).reindex(range(n))
    return out


def score_batches(batches: Iterator[tuple[pd.Series, pd.Series]], path: str) -> Iterator[pd.DataFrame]:
    """The UDF body: load once, then score every batch of this task."""
    artifact = cached_artifact(path)
    for entity, x in batches:
        yield score_frame(artifact, entity, x)


def score_column(artifact_path: str, entity: Column, x: Column) -> Column:
    """A struct column (RESULT) scoring windows `x` of `entity` with the artifact at `artifact_path`."""

    @pandas_udf(RESULT)
    def score(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        yield from score_batches(batches, artifact_path)

    return score(entity, x)
