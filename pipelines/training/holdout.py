"""The hold-out split every detector is calibrated on, the same for the train job, the promote gate and `evaluate`."""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from anomalake.pipelines.config import TableConfig


def split_holdout(
    features: DataFrame, table: TableConfig, holdout_fraction: float, salt: str = ""
) -> tuple[DataFrame, DataFrame, str]:
    """(train, holdout, where the holdout starts): the latest part of a time series, a hash share of other samples.

    Time series: windows overlapping the cut are left out of both sides. Images and texts have no order
    that matters: a fixed share of ids (by hash, so reruns agree) is held out; a `salt` makes another hash, so
    that a second split of the kept part (the validation split) does not find it empty.
    """
    if table.kind != "timeseries":
        key = F.xxhash64("entity_id", F.lit(salt)) if salt else F.xxhash64("entity_id")
        held = (F.abs(key) % 1000) < int(holdout_fraction * 1000)
        return features.where(~held), features.where(held), f"{holdout_fraction:.0%} of ids by hash"
    bounds = features.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    cutoff = bounds["lo"] + (bounds["hi"] - bounds["lo"]) * (1 - holdout_fraction)
    embargo = timedelta(seconds=(table.window.length - 1) * table.step_seconds)
    return (
        features.where(F.col("ts") < F.lit(cutoff)),
        features.where(F.col("ts") >= F.lit(cutoff + embargo)),
        cutoff.isoformat(),
    )
