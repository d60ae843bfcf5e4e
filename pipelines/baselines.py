"""Per-entity baselines in Spark: fitted on the training windows, applied before the Petastorm feed."""
from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models.scaling import EntityBaseline
from pipelines.config import TableConfig


def fit_baseline(features: DataFrame, table: TableConfig) -> EntityBaseline:
    """Quartiles of each entity's features, from the last step of its windows (every raw point once)."""
    n_features, width = len(table.features), table.n_inputs
    last_step = [F.element_at("x", width - n_features + i + 1) for i in range(n_features)]
    quartiles = features.groupBy("entity_id").agg(
        *[F.percentile_approx(col, [0.25, 0.5, 0.75], 10000).alias(f"q{i}") for i, col in enumerate(last_step)]
    )
    rows = quartiles.collect()
    return EntityBaseline.from_quartiles(
        table.features, {r["entity_id"]: np.array([r[f"q{i}"] for i in range(n_features)]) for r in rows}
    )


def apply_baseline(features: DataFrame, baseline: EntityBaseline, n_features: int) -> DataFrame:
    """Replace x by its per-entity standardised values (entities without a baseline are left out)."""
    spark = features.sparkSession
    stats = spark.createDataFrame(
        [(e, list(baseline.centers[e]), list(baseline.scales[e])) for e in baseline.centers],
        "entity_id string, center array<double>, scale array<double>",
    )
    standardized = F.expr(f"transform(x, (v, i) -> cast((v - center[i % {n_features}]) / scale[i % {n_features}] AS float))")
    return features.join(F.broadcast(stats), "entity_id").withColumn("x", standardized).drop("center", "scale")
