"""The image and text demos: a labelled public set (or a generated one) through import -> windows -> train -> score.

Image: MNIST (`mnist_mlxtend5k`) with one digit normal; text: SMS spam with ham normal. Half of the normal
class is the training day, everything else the scored day; the labels only measure the scored table's
ROC-AUC. Without the public data the demo generates a labelled set of the same kind and says so.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from anomalake.pipelines.config import TableConfig, load_detector
from anomalake.pipelines.demo.timeseries import Progress
from anomalake.pipelines.evaluation import reference_detectors as reference
from anomalake.pipelines.evaluation.datasets import load_images, load_texts, raw_frames
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.files import write_raw_partition
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.delta import read_table
from anomalake.pipelines.lake.query import register_tables
from anomalake.pipelines.scoring.job import run_score
from anomalake.pipelines.training.job import run_train

TRAIN_DAY, SCORE_DAY = date(2026, 3, 1), date(2026, 3, 2)


def scored_with_labels(ctx: JobContext, table: TableConfig, detector: str) -> pd.DataFrame:
    """The scored day joined to its raw labels."""
    register_tables(ctx.spark, ctx.lake, [table])
    return ctx.spark.sql(
        f"SELECT s.entity_id, s.raw_score, s.score, s.is_anomaly, r.label FROM scores_{table.name} s "
        f"JOIN raw_{table.name} r ON s.entity_id = r.{table.entity} AND s.dt = r.dt "
        f"WHERE s.detector = '{detector}' AND s.dt = '{SCORE_DAY.isoformat()}'"
    ).toPandas()


def run_media_demo(
    ctx: JobContext, table: TableConfig, normal: str, verbose: int = 2, epochs: int | None = None
) -> float:
    """Import, window, train and score a labelled set; print and return the scored table's ROC-AUC."""
    progress = Progress(5)
    root = Path(ctx.settings.datasets)
    data = load_images(root) if table.kind == "image" else load_texts(root)
    detector = table.detectors[0]
    print(
        f"anomalake demo --kind {table.kind}: {data.source}; normal class '{normal}'; detector {detector}; lake "
        f"{ctx.settings.lake}"
    )
    progress.step(f"import -> raw/{table.name} (train day {TRAIN_DAY}, scored day {SCORE_DAY})")
    train, test = raw_frames(data, table, normal)
    write_raw_partition(ctx.lake, table, TRAIN_DAY, train)
    write_raw_partition(ctx.lake, table, SCORE_DAY, test)
    print(
        f"  {len(train):,} normal samples to train on; {len(test):,} to score, "
        f"{int((test['label'] != normal).sum()):,} of them anomalous"
    )
    progress.step(f"windows -> features/{table.name}")
    made = run_windows(ctx.with_new_run(), table, [TRAIN_DAY, SCORE_DAY])
    print(
        f"  rows in {made.rows_in:,} = samples {made.windows:,} + quarantined {made.quarantined_total:,} "
        f"{made.quarantined}"
    )
    progress.step(f"train {detector}")
    spec = load_detector(detector)
    if epochs is not None:
        spec = spec.with_params(epochs=epochs)
    trained = run_train(ctx.with_new_run(), table, detector, TRAIN_DAY, TRAIN_DAY, verbose=verbose, spec=spec)
    print(f"  model {trained.version}: {trained.rows_train:,} training samples, {trained.rows_holdout:,} held out")
    progress.step(f"score {SCORE_DAY}")
    scored = run_score(ctx.with_new_run(), table, detector, SCORE_DAY)
    print(
        f"  {scored.rows_in:,} in, {scored.scored:,} scored, {scored.anomalies:,} flagged, quarantined "
        f"{scored.quarantined or 0}"
    )
    progress.step("report")
    result = scored_with_labels(ctx, table, detector)
    auc = float(roc_auc_score(result["label"] != normal, result["raw_score"]))
    baseline = baseline_auc(ctx, table, result, normal)
    _print_report(ctx, table, detector, result, normal, auc, baseline)
    return auc


def baseline_auc(ctx: JobContext, table: TableConfig, result: pd.DataFrame, normal: str) -> float:
    """ROC-AUC of the PCA baseline (TF-IDF + SVD for texts) on the same samples: fitted on the training day's
    samples, scoring the scored day's, so the demo shows what the detector adds over a simple method."""
    samples = (
        read_table(ctx.spark, ctx.lake.features(table.name))
        .where(f"dt IN ('{TRAIN_DAY.isoformat()}', '{SCORE_DAY.isoformat()}')")
        .select("entity_id", "x", "dt")
        .toPandas()
    )
    samples["dt"] = samples["dt"].astype(str)
    train = samples[samples["dt"] == TRAIN_DAY.isoformat()]
    test = result[["entity_id", "label"]].merge(samples[samples["dt"] == SCORE_DAY.isoformat()], on="entity_id")
    if table.kind == "text":
        scores = reference.text_pca_scores(train["x"].to_numpy(dtype=object), test["x"].to_numpy(dtype=object))
    else:
        scores = reference.pca_scores(np.stack(train["x"].to_numpy()), np.stack(test["x"].to_numpy()))
    return float(roc_auc_score(test["label"] != normal, scores))


def _print_report(
    ctx: JobContext, table: TableConfig, detector: str, result: pd.DataFrame, normal: str, auc: float, baseline: float
) -> None:
    explanation = "top_regions" if table.kind == "image" else "top_tokens"
    top = ctx.spark.sql(
        f"SELECT entity_id, round(score, 2) AS score, {explanation} FROM scores_{table.name} "
        f"WHERE detector = '{detector}' ORDER BY score DESC LIMIT 5"
    ).toPandas()
    flagged = result[result["is_anomaly"]]
    print("\nThe 5 strongest anomalies:")
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        print(top.to_string(index=False))
    print(
        f"\nflagged {len(flagged):,} of {len(result):,}; of those, truly not '{normal}': "
        f"{int((flagged['label'] != normal).sum()):,}"
    )
    print(f"ROC-AUC: {auc:.3f}")
    print(f"baseline ROC-AUC: {baseline:.3f} ({'TF-IDF + SVD' if table.kind == 'text' else 'PCA'}, same samples)")
    print("\nTry next:")
    print(
        f'  anomalake sql "SELECT entity_id, score, {explanation} FROM scores_{table.name} WHERE is_anomaly ORDER BY '
        'score DESC LIMIT 20"'
    )
    print(f'  anomalake sql "SELECT reason, count(*) FROM quarantine_{table.name} GROUP BY reason"')
