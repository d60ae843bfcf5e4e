"""The train job: features of a date range -> Petastorm -> fit -> calibrate on held-out -> artifact + CURRENT."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from anomalake.models.artifacts import save_artifact, write_current
from anomalake.models.base import Detector
from anomalake.models.calibration import Calibration, fit_calibration
from anomalake.models.families.residual import ResidualDetector
from anomalake.models.scaling import EntityScaling
from anomalake.models.training import training_logs, write_calibration_summary
from anomalake.pipelines.config import DetectorSpec, TableConfig, load_detector
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.features.entity_scaling import apply_scaling, fit_scaling
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.lake.reading import days_with_data, read_partitions
from anomalake.pipelines.training.detectors import build_detector
from anomalake.pipelines.training.distributed import train_distributed
from anomalake.pipelines.training.feed import cached_column, converter_feed, open_feed
from anomalake.pipelines.training.holdout import split_holdout

TENSORBOARD_DIR = "_tensorboard"
DISTRIBUTED_DIR = "_distributed"  # where the chief task of a distributed fit leaves the model for the driver
log = logging.getLogger("anomalake")


@dataclass(frozen=True)
class TrainResult:
    """Where the artifact went and what it was trained on."""

    version: str
    path: str
    rows_train: int
    rows_holdout: int
    threshold: float


def standardize(
    train_df: DataFrame, holdout_df: DataFrame, table: TableConfig
) -> tuple[DataFrame, DataFrame, EntityScaling]:
    """Time series in each entity's own units (a scaling fitted on the training part); other kinds unchanged."""
    if table.kind != "timeseries":
        return train_df, holdout_df, EntityScaling.identity()
    scaling = fit_scaling(train_df, table)
    n_features = len(table.input_features)
    return apply_scaling(train_df, scaling, n_features), apply_scaling(holdout_df, scaling, n_features), scaling


def training_workers(master: str, detector: Detector, name: str, wanted: int) -> int:
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


def _validation_split(
    train_df: DataFrame, table: TableConfig, spec: DetectorSpec
) -> tuple[DataFrame, DataFrame | None, str | None]:
    """(fit, validation, where it starts): the latest part of the training part, which early stopping watches so
    that the calibration hold-out stays unseen; (train_df, None, None) at validation_fraction 0."""
    if spec.validation_fraction <= 0:
        return train_df, None, None
    return split_holdout(train_df, table, spec.validation_fraction, salt="validation")


def _fit_here(detector: Detector, train_df: DataFrame, validation: Any, logs) -> tuple[int, int]:
    """Fit in this process on the Petastorm feeds of the training rows and of the cached validation copy;
    (training rows, validation rows), as the feeds gave them."""
    batch, seed = int(getattr(detector.config, "batch_size", 256)), detector.config.seed
    with (
        open_feed(train_df, batch_size=batch, seed=seed) as train_feed,
        converter_feed(validation, batch_size=batch, shuffle=False) as val_feed,  # a loss over all: order is moot
    ):
        with training_logs(logs):
            detector.fit(train_feed.dataset, validation=val_feed.dataset)
        return train_feed.rows, val_feed.rows


def _holdout_loss(detector: Detector, holdout: Any) -> float | None:
    """The loss a residual family was trained on, over the held-out windows (compares two fits); else None."""
    if not isinstance(detector, ResidualDetector):
        return None
    with converter_feed(holdout, batch_size=4096, repeat=False, shuffle=False) as feed:
        return detector.residual_mse(feed.dataset)


def _training_features(ctx: JobContext, table: TableConfig, start: date, end: date) -> DataFrame:
    """The feature partitions of [start, end] that hold windows (a day of only context or quarantine has none)."""
    root = ctx.lake.features(table.name)
    days = days_with_data(root, day_range(start, end))
    if not days:
        raise JobError(
            f"table {table.name}: no features partition between {start} and {end} under {root}; run the windows job "
            "first"
        )
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
    detector = build_detector(
        spec, table.kind, table.sample_shape, table.input_features, verbose, where=f"table {table.name}"
    )
    features = _training_features(ctx, table, start, end)
    if entities:
        features = features.where(F.col("entity_id").isin(*entities))
    train_df, holdout_df, cutoff = split_holdout(features.select("entity_id", "ts", "x"), table, spec.holdout_fraction)
    train_df, holdout_df, scaling = standardize(train_df, holdout_df, table)
    version = datetime.now(timezone.utc).strftime("v%Y%m%dT%H%M%S%fZ")
    root = ctx.lake.models(detector_name, table.name)
    logs = root / TENSORBOARD_DIR / version  # beside the artifacts: tensorboard --logdir <root>/_tensorboard
    wanted = ctx.settings.train_workers if workers is None else workers
    workers = training_workers(ctx.spark.sparkContext.master, detector, detector_name, wanted)
    # The held-out windows are materialised once, for the validation loss, the calibration and the holdout loss.
    empty = (
        f"table {table.name}: detector {detector_name}: no held-out windows in {start}..{end} (the last "
        f"{spec.holdout_fraction:.0%} of the range, from {cutoff}, after {table.window.length - 1} steps that "
        "overlap the cut); train on more days or raise calibration.holdout_fraction"
    )
    fit_df, validation_df, validation_from = _validation_split(train_df, table, spec)
    with ExitStack() as stack:
        holdout = stack.enter_context(cached_column(holdout_df, shuffle=False, empty=empty))
        if workers > 1:  # the distributed fit caches its own shards of both
            detector, rows_train, rows_validation = train_distributed(
                ctx.spark,
                detector,
                fit_df,
                holdout_df if validation_df is None else validation_df,
                workers,
                root / DISTRIBUTED_DIR / ctx.run_id,
                logs,
            )
        else:
            validation = holdout  # early stopping watches the hold-out unless training.validation_fraction says
            if validation_df is not None:
                empty = (
                    f"table {table.name}: detector {detector_name}: no validation windows in the last "
                    f"{spec.validation_fraction:.0%} of the training part (from {validation_from}); train on more "
                    "days or lower training.validation_fraction"
                )
                validation = stack.enter_context(cached_column(validation_df, shuffle=False, empty=empty))
            rows_train, rows_validation = _fit_here(detector, fit_df, validation, logs)
        where = f"table {table.name}: detector {detector_name}"
        raw, calibration = _calibrate(detector, holdout, spec, logs, where)
        holdout_loss = _holdout_loss(detector, holdout)
    meta = {
        **_meta(table, spec, detector_name, (start, end), cutoff),
        "rows_train": rows_train,
        "rows_holdout": int(raw.size),
        "validation": {
            "fraction": spec.validation_fraction,
            "from": validation_from,
            "rows": rows_validation,
        },  # fraction 0: early stopping watched the hold-out, these rows
        "entities": len(scaling.centers),
        "holdout_raw_score_quantiles": {q: float(np.quantile(raw, float(q))) for q in ("0.5", "0.99", "0.999")},
        "history": getattr(detector, "history_", {}),
        "holdout_loss": holdout_loss,
        "training": {"workers": workers, "mode": "data-parallel barrier stage" if workers > 1 else "one process"},
        "run_id": ctx.run_id,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    save_artifact(root / version, detector, scaling, calibration, meta)
    if promote:
        write_current(root, version)
    rows = rows_train + int(raw.size)
    ctx.record(
        table.name,
        f"train_{detector_name}",
        {
            end: {
                "detector": detector_name,
                "model_version": version,
                "inputs": [
                    {
                        "table": f"features_{table.name}",
                        "partition": f"dt={start.isoformat()}..{end.isoformat()}",
                        "rows": rows,
                    }
                ],
                "outputs": [{"table": f"models/{detector_name}/{table.name}", "partition": version, "rows": rows}],
            },
        },
    )
    return TrainResult(version, str(root / version), rows_train, int(raw.size), calibration.threshold)


def _calibrate(
    detector: Detector, holdout: Any, spec: DetectorSpec, logs: Path, where: str
) -> tuple[np.ndarray, Calibration]:
    """The held-out raw scores and the calibration fitted to them; every held-out window must get a finite score."""
    with converter_feed(holdout, batch_size=4096, repeat=False, shuffle=False) as feed:
        raw = detector.score_samples(feed.dataset)
    if len(raw) != feed.rows:  # calibrating on part of the held-out rows would go unnoticed
        raise JobError(f"{where} scored {len(raw)} of {feed.rows} held-out windows; not promoted")
    if not np.all(np.isfinite(raw)):
        raise JobError(f"{where} gave non-finite held-out scores; not promoted")
    calibration = fit_calibration(raw, **spec.calibration_options)
    write_calibration_summary(logs / "calibration", raw, calibration.transform(raw), calibration.threshold)
    return raw, calibration


def _meta(
    table: TableConfig, spec: DetectorSpec, detector_name: str, train_range: tuple[date, date], cutoff: str
) -> dict[str, Any]:
    """What meta.json says about the inputs and the split (the scoring side checks the signature)."""
    return {
        "detector": detector_name,
        "family": spec.family,
        "table": table.name,
        "features": list(table.input_features),
        "kind": table.kind,
        "sample_shape": list(table.sample_shape),
        "window": dataclasses.asdict(table.window),
        "step_seconds": table.step_seconds,
        "signature": table.signature(),
        "train_range": [d.isoformat() for d in train_range],
        "holdout_from": cutoff,
        "holdout_fraction": spec.holdout_fraction,
    }
