"""Per-entity scaling in Spark: fitted on the training windows, applied before the Petastorm feed, and the one
policy for entities a model never saw (`unseen_entities`), which the score job and `evaluate` both use."""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from anomalake.models.scaling import EntityScaling
from anomalake.pipelines.config import MASK_FEATURE, TableConfig


def fit_scaling(features: DataFrame, table: TableConfig) -> EntityScaling:
    """Quartiles of each entity's features, from the last step of its windows (every raw point once); the
    imputation mask channel, where the table has one, is left as it is (0 or 1)."""
    n_features, width = len(table.features), table.n_inputs
    first = width - len(table.input_features)  # the last step's first channel, 0-based
    last_step = [F.element_at("x", first + i + 1) for i in range(n_features)]
    quartiles = features.groupBy("entity_id").agg(
        *[F.percentile_approx(col, [0.25, 0.5, 0.75], 10000).alias(f"q{i}") for i, col in enumerate(last_step)]
    )
    rows = quartiles.collect()
    scaling = EntityScaling.from_quartiles(
        table.features, {r["entity_id"]: np.array([r[f"q{i}"] for i in range(n_features)]) for r in rows}
    )
    return scaling.with_unscaled(MASK_FEATURE) if table.gaps.mask else scaling


def apply_scaling(features: DataFrame, scaling: EntityScaling, n_features: int) -> DataFrame:
    """Replace x by its per-entity standardised values (entities without a scale are left out)."""
    spark = features.sparkSession
    stats = spark.createDataFrame(
        [(e, list(scaling.centers[e]), list(scaling.scales[e])) for e in scaling.centers],
        "entity_id string, center array<double>, scale array<double>",
    )
    standardized = F.expr(
        f"transform(x, (v, i) -> cast((v - center[i % {n_features}]) / scale[i % {n_features}] AS float))"
    )
    return features.join(F.broadcast(stats), "entity_id").withColumn("x", standardized).drop("center", "scale")


def unseen_scaling(features: DataFrame, table: TableConfig, known: EntityScaling) -> EntityScaling | None:
    """The scaling of the entities in `features` that `known` lacks, as the table's `unseen_entities` says; None
    when there are none or they are to be quarantined.

    own_baseline: each new entity in its own units (median and IQR of its windows being scored; a new host at
    another level). training_baseline: the median scale of the training entities (a new run of the same machine,
    whose level itself may be the anomaly). No labels either way.
    """
    if table.kind != "timeseries" or table.unseen_entities == "quarantine":
        return None
    entities = [r["entity_id"] for r in features.select("entity_id").distinct().collect()]
    new = sorted(e for e in entities if e not in known.centers)
    if not new:
        return None
    if table.unseen_entities == "training_baseline":
        return known.pooled(new)
    return fit_scaling(features.where(F.col("entity_id").isin(new)), table)
