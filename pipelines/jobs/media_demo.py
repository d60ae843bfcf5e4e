"""The image and text demos: a labelled public set (or a generated one) through import -> windows -> train -> score.

Image: MNIST (`mnist_mlxtend5k`) with one digit normal; text: SMS spam with ham normal. Half of the normal
class is the training day, everything else the scored day; the labels only measure the scored table's
ROC-AUC. Without the public data the demo generates a labelled set of the same kind and says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import datasets
from pipelines.config import TableConfig
from pipelines.io import register_tables
from pipelines.jobs.context import JobContext
from pipelines.jobs.demo import Progress
from pipelines.jobs.importing import write_raw_partition
from pipelines.jobs.score import run_score
from pipelines.jobs.train import run_train
from pipelines.jobs.windows import run_windows

TRAIN_DAY, SCORE_DAY = date(2026, 3, 1), date(2026, 3, 2)
VERBS = ("restarted", "synced", "rotated", "paused", "resumed", "finished")
NOUNS = ("backup", "cache", "index", "queue", "node", "disk", "job", "report")


@dataclass(frozen=True)
class LabelledSet:
    """Samples (images (n, h, w, 1) in [0, 1], or strings) with their class, and where they came from."""

    samples: np.ndarray
    classes: np.ndarray
    source: str


def load_images(root: Path, seed: int = 0) -> LabelledSet:
    """MNIST when the public data is there, else generated 28 x 28 strokes (ten classes of bar angles)."""
    folder = root / "mnist_mlxtend5k"
    if folder.exists():
        images, digits = datasets.load_mnist(folder)
        return LabelledSet(images, digits.astype(str), f"MNIST 5,000 images from {folder}")
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(10), 200)
    yy, xx = np.mgrid[0:28, 0:28] - 13.5
    images = []
    for c in classes:
        angle = np.pi * c / 10 + rng.normal(0, 0.05)
        distance = np.abs(xx * np.sin(angle) - yy * np.cos(angle) + rng.normal(0, 1.0))
        images.append(np.clip(1.5 - distance / 1.5, 0, 1) * (np.hypot(xx, yy) < 11))
    return LabelledSet(np.stack(images)[..., None].astype(np.float32), classes.astype(str), "generated bars (no MNIST found)")


def load_texts(root: Path, seed: int = 0) -> LabelledSet:
    """SMS spam when the public data is there, else generated log lines (normal) and spam-like texts."""
    folder = root / "sms_spam"
    if folder.exists():
        texts, labels = datasets.load_sms(folder)
        return LabelledSet(texts, labels, f"SMS Spam Collection from {folder}")
    rng = np.random.default_rng(seed)
    ham = [f"the {rng.choice(NOUNS)} {rng.choice(VERBS)} at {rng.integers(1, 13)} pm" for _ in range(1500)]
    spam = [f"WIN ${rng.integers(100, 999)} now!!! call 0{rng.integers(10**8, 10**9)} txt STOP" for _ in range(200)]
    return LabelledSet(np.array(ham + spam, dtype=object), np.array(["ham"] * 1500 + ["spam"] * 200, dtype=object), "generated texts (no SMS data found)")


def raw_frames(data: LabelledSet, table: TableConfig, normal: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training day, scored day): half of the normal class, then everything else, as raw rows with labels."""
    from pipelines.media import encode_png

    split = datasets.one_class_split(np.arange(len(data.samples)), data.classes, normal, seed)
    frames = []
    for index in (split.train, split.test):
        ids = [f"{'img' if table.kind == 'image' else 'msg'}-{i:05d}" for i in index]
        if table.kind == "image":
            values = [encode_png(np.round(data.samples[i, :, :, 0] * 255).astype(np.uint8)) for i in index]
        else:
            values = [str(data.samples[i]) for i in index]
        frames.append(pd.DataFrame({table.entity: ids, table.value_column: values, "label": data.classes[index]}))
    return frames[0], frames[1]


def scored_with_labels(ctx: JobContext, table: TableConfig, detector: str) -> pd.DataFrame:
    """The scored day joined to its raw labels."""
    register_tables(ctx.spark, ctx.lake, [table])
    return ctx.spark.sql(
        f"SELECT s.entity_id, s.raw_score, s.score, s.is_anomaly, r.label FROM scores_{table.name} s "
        f"JOIN raw_{table.name} r ON s.entity_id = r.{table.entity} AND s.dt = r.dt "
        f"WHERE s.detector = '{detector}' AND s.dt = '{SCORE_DAY.isoformat()}'"
    ).toPandas()


def run_media_demo(ctx: JobContext, table: TableConfig, normal: str, verbose: int = 2, epochs: int | None = None) -> float:
    """Import, window, train and score a labelled set; print and return the scored table's ROC-AUC."""
    from sklearn.metrics import roc_auc_score

    from pipelines.config import load_detector

    progress = Progress(5)
    root = Path(ctx.settings.datasets)
    data = load_images(root) if table.kind == "image" else load_texts(root)
    detector = table.detectors[0]
    print(f"anomalake demo --kind {table.kind}: {data.source}; normal class '{normal}'; detector {detector}; lake {ctx.settings.lake}")
    progress.step(f"import -> raw/{table.name} (train day {TRAIN_DAY}, scored day {SCORE_DAY})")
    train, test = raw_frames(data, table, normal)
    write_raw_partition(ctx.lake, table, TRAIN_DAY, train)
    write_raw_partition(ctx.lake, table, SCORE_DAY, test)
    print(f"  {len(train):,} normal samples to train on; {len(test):,} to score, {int((test['label'] != normal).sum()):,} of them anomalous")
    progress.step(f"windows -> features/{table.name}")
    made = run_windows(ctx.with_new_run(), table, [TRAIN_DAY, SCORE_DAY])
    print(f"  rows in {made.rows_in:,} = samples {made.windows:,} + quarantined {made.quarantined_total:,} {made.quarantined}")
    progress.step(f"train {detector}")
    spec = load_detector(detector)
    if epochs is not None:
        spec = type(spec)(spec.name, spec.family, {**spec.params, "epochs": epochs}, spec.calibration)
    trained = run_train(ctx.with_new_run(), table, detector, TRAIN_DAY, TRAIN_DAY, verbose=verbose, spec=spec)
    print(f"  model {trained.version}: {trained.rows_train:,} training samples, {trained.rows_holdout:,} held out")
    progress.step(f"score {SCORE_DAY}")
    scored = run_score(ctx.with_new_run(), table, detector, SCORE_DAY)
    print(f"  {scored.rows_in:,} in, {scored.scored:,} scored, {scored.anomalies:,} flagged, quarantined {scored.quarantined or 0}")
    progress.step("report")
    result = scored_with_labels(ctx, table, detector)
    auc = float(roc_auc_score(result["label"] != normal, result["raw_score"]))
    _print_report(ctx, table, detector, result, normal, auc)
    return auc


def _print_report(ctx: JobContext, table: TableConfig, detector: str, result: pd.DataFrame, normal: str, auc: float) -> None:
    explanation = "top_regions" if table.kind == "image" else "top_tokens"
    top = ctx.spark.sql(
        f"SELECT entity_id, round(score, 2) AS score, {explanation} FROM scores_{table.name} "
        f"WHERE detector = '{detector}' ORDER BY score DESC LIMIT 5"
    ).toPandas()
    flagged = result[result["is_anomaly"]]
    print("\nThe 5 strongest anomalies:")
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        print(top.to_string(index=False))
    print(f"\nflagged {len(flagged):,} of {len(result):,}; of those, truly not '{normal}': {int((flagged['label'] != normal).sum()):,}")
    print(f"ROC-AUC: {auc:.3f}")
    print("\nTry next:")
    print(f'  anomalake sql "SELECT entity_id, score, {explanation} FROM scores_{table.name} WHERE is_anomaly ORDER BY score DESC LIMIT 20"')
    print(f'  anomalake sql "SELECT reason, count(*) FROM quarantine_{table.name} GROUP BY reason"')
