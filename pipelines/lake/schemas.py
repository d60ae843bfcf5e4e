"""Every schema anomalake writes or passes between Spark and its tasks: the one source of truth for columns and order.

Lake tables (Spark StructTypes; partition columns job, detector, dt come last, as Spark writes them): features,
scores, quarantine and the run records. Task outputs (what mapInArrow functions yield and the files tasks write
themselves): the windows job's tally and feature files, the score function's results and tally, the media
outcomes. Composite schemas are built from named fields, never by slicing another schema by position.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema


def _fields(*pairs: tuple[str, T.DataType], nullable: bool = True) -> list[T.StructField]:
    return [T.StructField(name, kind, nullable) for name, kind in pairs]


# --- Lake tables ---------------------------------------------------------------------------------------------
WINDOW_X = T.ArrayType(T.FloatType(), False)  # time-major: step by step, all features per step; images row-major
FEATURES = T.StructType(
    [
        T.StructField("entity_id", T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),  # the window's last step
        T.StructField("x", WINDOW_X, False),
        T.StructField("dt", T.StringType(), False),
    ]
)
FEATURES_TEXT = T.StructType(
    [T.StructField("x", T.StringType(), False) if f.name == "x" else f for f in FEATURES.fields]
)
# Windows of metrics also say which of their steps were imputed (gaps filled; offsets back from the window's last
# step, as top_step_offsets): explanations never name an imputed step. Null or empty: none was.
IMPUTED = "imputed_step_offsets"
FEATURES_WINDOWS = T.StructType(
    [
        FEATURES["entity_id"],
        FEATURES["ts"],
        FEATURES["x"],
        T.StructField(IMPUTED, T.ArrayType(T.IntegerType(), False), True),
        FEATURES["dt"],
    ]
)


def features_schema(kind: str) -> T.StructType:
    """The feature table of a table kind: x is floats (windows, images flattened row-major) or a string (texts)."""
    return {"text": FEATURES_TEXT, "timeseries": FEATURES_WINDOWS}.get(kind, FEATURES)


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

REGION = T.StructType(
    _fields(*((n, T.IntegerType()) for n in ("row0", "col0", "row1", "col1")), ("share", T.DoubleType()))
)
TOKEN = T.StructType(_fields(("token", T.StringType()), ("position", T.IntegerType()), ("surprise", T.DoubleType())))
# The explanation columns of a scored sample, per table kind, as the scores table holds them.
EXPLANATIONS = {
    "timeseries": _fields(
        ("top_feature", T.StringType()),
        ("feature_contributions", T.MapType(T.StringType(), T.DoubleType())),
        ("top_steps", T.ArrayType(T.TimestampType())),
        nullable=False,
    ),
    "image": _fields(("top_regions", T.ArrayType(REGION)), ("error_map", T.ArrayType(T.ArrayType(T.DoubleType())))),
    "text": _fields(("top_tokens", T.ArrayType(TOKEN))),
}
SCORE_KEYS = _fields(("entity_id", T.StringType()), ("ts", T.TimestampType()), nullable=False)
SCORE_VALUES = _fields(
    ("raw_score", T.DoubleType()),
    ("score", T.DoubleType()),
    ("threshold", T.DoubleType()),
    ("is_anomaly", T.BooleanType()),
    nullable=False,
)
SCORE_PROVENANCE = _fields(
    ("model_version", T.StringType()), ("run_id", T.StringType()), ("scored_at", T.TimestampType()), nullable=False
)
SCORE_PARTITIONS = _fields(("detector", T.StringType()), ("dt", T.StringType()), nullable=False)


def scores_schema(kind: str) -> T.StructType:
    """The scores table of a table kind: keys, scores and verdict, the kind's explanation, provenance, partitions."""
    return T.StructType(SCORE_KEYS + SCORE_VALUES + EXPLANATIONS[kind] + SCORE_PROVENANCE + SCORE_PARTITIONS)


SCORES = scores_schema("timeseries")


def score_file_schema(kind: str) -> pa.Schema:
    """The columns of a scores file a score task writes: the scores table without its partition columns."""
    return to_arrow_schema(T.StructType(SCORE_KEYS + SCORE_VALUES + EXPLANATIONS[kind] + SCORE_PROVENANCE))


COUNT = T.StructType(_fields(("table", T.StringType()), ("partition", T.StringType()), ("rows", T.LongType())))
RUNS = T.StructType(
    _fields(
        ("run_id", T.StringType()),
        ("job", T.StringType()),
        ("table", T.StringType()),
        ("dt", T.StringType()),
        ("rows_in", T.LongType()),
        ("rows_out", T.LongType()),
        ("context", T.LongType()),
        ("anomalies", T.LongType()),
        ("quarantined", T.MapType(T.StringType(), T.LongType())),
        ("inputs", T.ArrayType(COUNT)),
        ("outputs", T.ArrayType(COUNT)),
        ("detector", T.StringType()),
        ("model_version", T.StringType()),
        ("code_version", T.StringType()),
        ("started_at", T.StringType()),
        ("finished_at", T.StringType()),
        ("seconds", T.DoubleType()),
        ("events", T.LongType()),  # events: the day's events and the new ones among them, over how many entities
        ("new_events", T.LongType()),
        ("entities", T.LongType()),
        ("fallback_entities", T.ArrayType(T.StringType())),  # entities whose events the calibration decided
    )
)

# --- The windows job's tasks ---------------------------------------------------------------------------------
# What they send back to Spark: every raw row that did not become a window (quarantined rows one by one) and,
# per task, one count per day of the windows it wrote and of its context rows.
WINDOWS_TALLY = T.StructType(
    [
        T.StructField("entity_id", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("outcome", T.StringType(), False),
        T.StructField("reason", T.StringType(), True),
        T.StructField("detail", T.StringType(), True),
        T.StructField("dt", T.StringType(), False),
        T.StructField("rows", T.LongType(), False),
    ]
)
WINDOWS_TALLY_ARROW = to_arrow_schema(WINDOWS_TALLY)
# The feature files they write (dt is the folder): the column types Spark reads as FEATURES.
FEATURE_FILE = pa.schema(
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("x", pa.list_(pa.field("element", pa.float32(), nullable=False)), nullable=False),
        pa.field(IMPUTED, pa.list_(pa.field("element", pa.int32(), nullable=False)), nullable=True),
    ]
)


def media_outcomes_schema(kind: str) -> T.StructType:
    """One outcome row per raw image or text row: entity_id, ts, x (floats or a string), dt, outcome, reason, detail."""
    x_type = T.StringType() if kind == "text" else WINDOW_X
    return T.StructType(
        _fields(
            ("entity_id", T.StringType()),
            ("ts", T.TimestampType()),
            ("x", x_type),
            ("dt", T.StringType()),
            ("outcome", T.StringType()),
            ("reason", T.StringType()),
            ("detail", T.StringType()),
        )
    )


# --- The score function ----------------------------------------------------------------------------------------
# What scoring one batch gives per row, before the task writes it: the scores, the kind's explanation (windows
# carry their top steps as offsets from the window's end until the row is written) and an error for a row that
# could not be scored.
RESULT_EXPLANATIONS = {
    **EXPLANATIONS,
    "timeseries": _fields(
        ("top_feature", T.StringType()),
        ("feature_contributions", T.MapType(T.StringType(), T.DoubleType())),
        ("top_step_offsets", T.ArrayType(T.IntegerType())),
    ),
}
_RESULT_VALUES = _fields(
    ("raw_score", T.DoubleType()),
    ("score", T.DoubleType()),
    ("threshold", T.DoubleType()),
    ("is_anomaly", T.BooleanType()),
)
SCORE_RESULTS = {
    kind: T.StructType(
        _RESULT_VALUES + [T.StructField(f.name, f.dataType) for f in fields] + _fields(("error", T.StringType()))
    )
    for kind, fields in RESULT_EXPLANATIONS.items()
}
WINDOW_RESULTS_ARROW = to_arrow_schema(SCORE_RESULTS["timeseries"])
# What a score task sends back to Spark: each row it could not score, then per day the rows it wrote and how
# many of them are anomalies.
SCORE_TALLY = T.StructType(
    [
        T.StructField("entity_id", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("dt", T.StringType(), False),
        T.StructField("error", T.StringType(), True),
        T.StructField("rows", T.LongType(), False),
        T.StructField("anomalies", T.LongType(), False),
    ]
)
SCORE_TALLY_ARROW = to_arrow_schema(SCORE_TALLY)


def scored_batch_schema(kind: str, key_fields: list[T.StructField]) -> T.StructType:
    """What the score function yields per batch: the key columns it passes through, then SCORE_RESULTS[kind]."""
    return T.StructType(key_fields + list(SCORE_RESULTS[kind].fields))


# --- Anomaly events ----------------------------------------------------------------------------------------
EVENT_FIELDS = _fields(
    ("entity_id", T.StringType()),
    ("event_id", T.StringType()),  # stable: entity, detector and start, whichever day reports the event
    ("start", T.TimestampType()),  # the first window of the event (an earlier day's, for an event that goes on)
    ("end", T.TimestampType()),  # its last window on this day
    ("peak_ts", T.TimestampType()),
    ("peak_score", T.DoubleType()),  # the strongest window's raw score (the detector's own scale)
    ("severity", T.DoubleType()),  # its calibrated score: -log10 of the tail probability under normal data
    ("windows", T.LongType()),  # windows of this day inside the event
    ("open", T.BooleanType()),  # the event runs to the day's last window and may go on tomorrow
    ("new", T.BooleanType()),  # the event starts on this day (what an alert announces)
    ("threshold", T.DoubleType()),  # the day's threshold on the smoothed raw scores (null: calibration decided)
    ("threshold_source", T.StringType()),  # history (the entity's trailing days) or calibration (too little history)
)
# What the events function yields per event and day, before the explanation of its strongest window is joined.
EVENT_ROWS = T.StructType(
    EVENT_FIELDS
    + _fields(
        ("strongest_ts", T.TimestampType()), ("window_ends", T.ArrayType(T.TimestampType())), ("dt", T.StringType())
    )
)
EVENT_PROVENANCE = _fields(("model_version", T.StringType()), ("run_id", T.StringType()))


def events_schema(kind: str) -> T.StructType:
    """The events table of a table kind: the event, the explanation of its strongest window that day, provenance,
    partitions (detector, dt)."""
    explanation = [T.StructField(f.name, f.dataType, True) for f in EXPLANATIONS[kind]]
    return T.StructType(EVENT_FIELDS + explanation + EVENT_PROVENANCE + SCORE_PARTITIONS)
