"""The train job: features of a date range -> Petastorm -> fit -> calibrate on held-out -> artifact + CURRENT."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import models
from models.artifacts import save_artifact, write_current
from models.calibration import fit_calibration
from models.registry import get_family
from models.residual import ResidualDetector
from models.scaling import EntityBaseline
from models.training import training_logs, write_calibration_summary
from pipelines.baselines import apply_baseline, fit_baseline
from pipelines.config import DetectorSpec, TableConfig, load_detector
from pipelines.distributed import train_distributed
from pipelines.errors import JobError
from pipelines.feeding import open_feed
from pipelines.io import day_range, has_data, partition_dir, read_partitions
from pipelines.jobs.context import JobContext

TENSORBOARD_DIR = "_tensorboard"
DISTRIBUTED_DIR = "_distributed"  # where the chief task of a distributed fit leaves the model for the driver
log = logging.getLogger("anomalake")
CALIBRATION_KEYS = ("method", "threshold_z", "risk", "tail_quantile", "quantile", "contamination", "max_threshold")


@dataclass(frozen=True)
class TrainResult:
    """Where the artifact went and what it was trained on."""

    version: str
    path: str
    rows_train: int
    rows_holdout: int
    threshold: float


def split_holdout(features: DataFrame, table: TableConfig, holdout_fraction: float) -> tuple[DataFrame, DataFrame, str]:
    """(train, holdout, where the holdout starts): the latest part of a time series, a hash share of other samples.

    Time series: windows overlapping the cut are left out of both sides. Images and texts have no order
    that matters: a fixed share of ids (by hash, so reruns agree) is held out.
    """
    if table.kind != "timeseries":
        held = (F.abs(F.xxhash64("entity_id")) % 1000) < int(holdout_fraction * 1000)
        return features.where(~held), features.where(held), f"{holdout_fraction:.0%} of ids by hash"
    bounds = features.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    cutoff = bounds["lo"] + (bounds["hi"] - bounds["lo"]) * (1 - holdout_fraction)
    embargo = timedelta(seconds=(table.window.length - 1) * table.step_seconds)
    return features.where(F.col("ts") < F.lit(cutoff)), features.where(F.col("ts") >= F.lit(cutoff + embargo)), cutoff.isoformat()


def build_detector(spec: DetectorSpec, table: TableConfig, verbose: int = 2) -> models.base.Detector:
    """The detector family of `spec`, configured for the samples of `table` (a family must accept its kind)."""
    family = get_family(spec.family)
    if table.kind not in family.input_kinds:
        raise JobError(f"table {table.name}: detector {spec.name} ({spec.family}) takes {', '.join(family.input_kinds)} input, the table is {table.kind}")
    params = {**spec.params, "verbose": verbose}
    config = family.config_class.from_dict({**params, "input_shape": table.sample_shape, "feature_names": table.features})
    return family(config)


def standardize(train_df: DataFrame, holdout_df: DataFrame, table: TableConfig) -> tuple[DataFrame, DataFrame, EntityBaseline]:
    """Time series in each entity's own units (a baseline fitted on the training part); other kinds unchanged."""
    if table.kind != "timeseries":
        return train_df, holdout_df, EntityBaseline.identity()
    baseline = fit_baseline(train_df, table)
    n_features = len(table.features)
    return apply_baseline(train_df, baseline, n_features), apply_baseline(holdout_df, baseline, n_features), baseline


def training_workers(master: str, detector: models.base.Detector, name: str, wanted: int) -> int:
    """How many Spark tasks train: `wanted` on a cluster for a family that supports it, else 1 (and why)."""
    if wanted <= 1:
        return 1
    if master.startswith("local"):
        reason = f"the master is {master}: on one machine training runs in one process"
    elif not detector.distributable:
        reason = f"family {detector.family} trains in one process only (see models/distributed.py)"
    else:
        return wanted
    log.warning("detector %s: %d training workers asked for, using 1: %s", name, wanted, reason)
    return 1


def _fit_here(detector: models.base.Detector, train_df: DataFrame, holdout_df: DataFrame, logs) -> int:
    """Fit in this process on the Petastorm feeds of both sides; the training rows."""
    batch, seed = int(getattr(detector.config, "batch_size", 256)), detector.config.seed
    with open_feed(train_df, batch_size=batch, seed=seed) as train_feed, open_feed(holdout_df, batch_size=batch, seed=seed) as val_feed:
        with training_logs(logs):
            detector.fit(train_feed.dataset, validation=val_feed.dataset)
        return train_feed.rows


def _holdout_loss(detector: models.base.Detector, holdout_df: DataFrame) -> float | None:
    """The loss a residual family was trained on, over the held-out windows (compares two fits); else None."""
    if not isinstance(detector, ResidualDetector):
        return None
    with open_feed(holdout_df, batch_size=4096, repeat=False, shuffle=False) as holdout:
        return detector.residual_mse(holdout.dataset)


def _training_features(ctx: JobContext, table: TableConfig, start: date, end: date) -> DataFrame:
    """The feature partitions of [start, end] that hold windows (a day of only context or quarantine has none)."""
    root = ctx.lake.features(table.name)
    days = [d for d in day_range(start, end) if has_data(partition_dir(root, dt=d.isoformat()))]
    if not days:
        raise JobError(f"table {table.name}: no features partition between {start} and {end} under {root}; run the windows job first")
    return read_partitions(ctx.spark, root, days, "features", table.name)


def run_train(
    ctx: JobContext,
    table: TableConfig,
    detector_name: str,
    start: date,
    end: date,
    verbose: int = 2,
    spec: DetectorSpec | None = None,
    promote: bool = True,
    entities: tuple[str, ...] = (),
    workers: int | None = None,
) -> TrainResult:
    """Train `detector_name` (conf/detectors/<name>.yml unless `spec` is given) on [start, end].

    With promote=False the artifact is a candidate: CURRENT stays where it is (`anomalake promote` judges it).
    `entities`: train on these entities only (known-good ones), default all. `workers` > 1: data-parallel on
    that many Spark tasks (default: the ANOMALAKE_TRAIN_WORKERS setting), where the master and family allow.
    """
    spec = spec or load_detector(detector_name)
    detector = build_detector(spec, table, verbose)
    features = _training_features(ctx, table, start, end)
    if entities:
        features = features.where(F.col("entity_id").isin(*entities))
    holdout_fraction = float(spec.calibration.get("holdout_fraction", 0.2))
    train_df, holdout_df, cutoff = split_holdout(features.select("entity_id", "ts", "x"), table, holdout_fraction)
    train_df, holdout_df, baseline = standardize(train_df, holdout_df, table)
    version = datetime.now(timezone.utc).strftime("v%Y%m%dT%H%M%S%fZ")
    root = ctx.lake.models(detector_name, table.name)
    logs = root / TENSORBOARD_DIR / version  # beside the artifacts: tensorboard --logdir <root>/_tensorboard
    wanted = ctx.settings.train_workers if workers is None else workers
    workers = training_workers(ctx.spark.sparkContext.master, detector, detector_name, wanted)
    if workers > 1:
        detector, rows_train = train_distributed(ctx.spark, detector, train_df, holdout_df, workers, root / DISTRIBUTED_DIR / ctx.run_id, logs)
    else:
        rows_train = _fit_here(detector, train_df, holdout_df, logs)
    with open_feed(holdout_df, batch_size=4096, repeat=False, shuffle=False) as holdout:
        raw = detector.score_samples(holdout.dataset)
    if len(raw) != holdout.rows:  # calibrating on part of the held-out rows would go unnoticed
        raise JobError(f"table {table.name}: detector {detector_name} scored {len(raw)} of {holdout.rows} held-out windows; not promoted")
    if not np.all(np.isfinite(raw)):
        raise JobError(f"table {table.name}: detector {detector_name} gave non-finite held-out scores; not promoted")
    calibration = fit_calibration(raw, **{k: v for k, v in spec.calibration.items() if k in CALIBRATION_KEYS})
    write_calibration_summary(logs / "calibration", raw, calibration.transform(raw), calibration.threshold)
    meta = {
        "detector": detector_name,
        "family": spec.family,
        "table": table.name,
        "features": list(table.features),
        "kind": table.kind,
        "sample_shape": list(table.sample_shape),
        "window": dataclasses.asdict(table.window),
        "step_seconds": table.step_seconds,
        "signature": table.signature(),
        "train_range": [start.isoformat(), end.isoformat()],
        "holdout_from": cutoff,
        "holdout_fraction": holdout_fraction,
        "rows_train": rows_train,
        "rows_holdout": int(raw.size),
        "entities": len(baseline.centers),
        "holdout_raw_score_quantiles": {q: float(np.quantile(raw, float(q))) for q in ("0.5", "0.99", "0.999")},
        "history": getattr(detector, "history_", {}),
        "holdout_loss": _holdout_loss(detector, holdout_df),
        "training": {"workers": workers, "mode": "data-parallel barrier stage" if workers > 1 else "one process"},
        "run_id": ctx.run_id,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    save_artifact(root / version, detector, baseline, calibration, meta)
    if promote:
        write_current(root, version)
    ctx.record(table.name, f"train_{detector_name}", end, {
        "detector": detector_name, "model_version": version,
        "inputs": [{"table": f"features_{table.name}", "partition": f"dt={start.isoformat()}..{end.isoformat()}", "rows": rows_train + int(raw.size)}],
        "outputs": [{"table": f"models/{detector_name}/{table.name}", "partition": version, "rows": rows_train + int(raw.size)}],
    })
    return TrainResult(version, str(root / version), rows_train, int(raw.size), calibration.threshold)
