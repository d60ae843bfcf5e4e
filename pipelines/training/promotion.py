"""The promote job: a quality gate between a trained candidate and the CURRENT model.

A candidate is promoted only when its held-out scores are finite, its alert rate on the held-out windows is
within bounds, and it is not worse than the current model on the same windows (median raw score, same
family). The decision is recorded as models/<detector>/<table>/decisions/<version>.json either way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone

import numpy as np

from anomalake.models.artifacts import CURRENT_FILE, Artifact, ArtifactError, load_artifact, read_current, write_current
from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.lake.reading import read_partitions
from anomalake.pipelines.training.holdout import split_holdout

MAX_ALERT_RATE = 0.05
TOLERANCE = 0.25  # the candidate's median held-out score may exceed the current model's by this share
MAX_ROWS = 50_000


@dataclass(frozen=True)
class GateDecision:
    """Whether `version` was promoted, why not if it was not, and the figures behind the decision."""

    version: str
    promoted: bool
    reasons: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)


def _holdout_samples(ctx: JobContext, table: TableConfig, artifact: Artifact) -> tuple[list[str], np.ndarray]:
    """The candidate's held-out samples (at most MAX_ROWS) as the training job split them: ids and values."""
    first, last = (date.fromisoformat(d) for d in artifact.meta["train_range"])
    features = read_partitions(ctx.spark, ctx.lake.features(table.name), day_range(first, last), "features", table.name)
    _, holdout, _ = split_holdout(
        features.select("entity_id", "ts", "x"), table, float(artifact.meta.get("holdout_fraction", 0.2))
    )
    rows = holdout.select("entity_id", "x").limit(MAX_ROWS).toPandas()
    if table.kind == "text":
        return rows["entity_id"].tolist(), np.array(rows["x"].tolist(), dtype=object)
    x = np.stack(rows["x"].to_numpy()).astype(np.float64).reshape(-1, *table.sample_shape)
    return rows["entity_id"].tolist(), x


def _raw_scores(artifact: Artifact, entities: list[str], x: np.ndarray) -> np.ndarray:
    known = artifact.scaling.knows(entities)
    kept = [e for e, k in zip(entities, known) if k]
    return artifact.detector.score_samples(artifact.scaling.transform(kept, x[known]))


def _judge(candidate: Artifact, current: Artifact | None, entities: list[str], x: np.ndarray) -> tuple[list[str], dict]:
    raw = _raw_scores(candidate, entities, x)
    if raw.size == 0 or not np.all(np.isfinite(raw)):
        return ["the candidate gives non-finite (or no) scores on the held-out windows"], {}
    metrics = {
        "alert_rate": float(candidate.calibration.is_anomaly(raw).mean()),
        "median_raw_score": float(np.median(raw)),
    }
    reasons = []
    if metrics["alert_rate"] > MAX_ALERT_RATE:
        reasons.append(f"alert rate {metrics['alert_rate']:.2%} on held-out windows is above {MAX_ALERT_RATE:.0%}")
    if current is not None and current.meta["family"] == candidate.meta["family"]:
        current_raw = _raw_scores(current, entities, x)
        metrics["current_median_raw_score"] = float(np.median(current_raw))
        if metrics["median_raw_score"] > (1 + TOLERANCE) * metrics["current_median_raw_score"]:
            reasons.append(
                f"median held-out score {metrics['median_raw_score']:.4g} is worse than the current model's "
                f"{metrics['current_median_raw_score']:.4g}"
            )
    return reasons, metrics


def run_promote(ctx: JobContext, table: TableConfig, detector: str, version: str) -> GateDecision:
    """Judge candidate `version`; move CURRENT to it only when it passes; record the decision."""
    root = ctx.lake.models(detector, table.name)
    current_version = read_current(root) if (root / CURRENT_FILE).exists() else None
    try:
        candidate = load_artifact(root / version)
    except ArtifactError as error:  # a changed or unsafe artifact is refused like a bad one, and recorded
        decision = GateDecision(version, False, (str(error),), {})
    else:
        current = load_artifact(root / current_version) if current_version and current_version != version else None
        entities, x = _holdout_samples(ctx, table, candidate)
        reasons, metrics = _judge(candidate, current, entities, x)
        decision = GateDecision(version, not reasons, tuple(reasons), metrics)
    decisions = root / "decisions"
    decisions.mkdir(parents=True, exist_ok=True)
    record = {
        **asdict(decision),
        "current_before": current_version,
        "decided_at": datetime.now(timezone.utc).isoformat(),
    }
    (decisions / f"{version}.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    if decision.promoted:
        write_current(root, version)
    return decision
