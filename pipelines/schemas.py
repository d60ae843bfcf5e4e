"""The StructTypes of every table anomalake writes: the one source of truth for their columns and order.

Partition columns (job, detector, dt) come last, as Spark writes them.
"""
from __future__ import annotations

from pyspark.sql import types as T

FEATURES = T.StructType(
    [
        T.StructField("entity_id", T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),  # the window's last step
        T.StructField("x", T.ArrayType(T.FloatType(), False), False),  # time-major: step by step, features per step
        T.StructField("dt", T.StringType(), False),
    ]
)

FEATURES_TEXT = T.StructType([*FEATURES.fields[:2], T.StructField("x", T.StringType(), False), FEATURES.fields[3]])


def features_schema(kind: str) -> T.StructType:
    """The feature table of a table kind: x is floats (windows, images flattened row-major) or a string (texts)."""
    return FEATURES_TEXT if kind == "text" else FEATURES


QUARANTINE = T.StructType(
    [
        T.StructField("entity_id", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("reason", T.StringType(), False),
        T.StructField("detail", T.StringType(), True),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("dt", T.StringType(), False),
    ]
)

SCORES = T.StructType(
    [
        T.StructField("entity_id", T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),
        T.StructField("raw_score", T.DoubleType(), False),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("threshold", T.DoubleType(), False),
        T.StructField("is_anomaly", T.BooleanType(), False),
        T.StructField("top_feature", T.StringType(), False),
        T.StructField("feature_contributions", T.MapType(T.StringType(), T.DoubleType()), False),
        T.StructField("top_steps", T.ArrayType(T.TimestampType()), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("scored_at", T.TimestampType(), False),
        T.StructField("detector", T.StringType(), False),
        T.StructField("dt", T.StringType(), False),
    ]
)


def scores_schema(kind: str) -> T.StructType:
    """The scores table of a table kind: the common columns, with the kind's explanation in place of a window's."""
    from pipelines.scoring import EXPLANATION_FIELDS

    if kind == "timeseries":
        return SCORES
    common = [f for f in SCORES.fields]
    head, tail = common[:6], common[9:]  # the window's top_feature / feature_contributions / top_steps go
    return T.StructType(head + list(EXPLANATION_FIELDS[kind]) + tail)
