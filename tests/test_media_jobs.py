"""Image and text tables through the jobs: import -> windows -> train -> score, bad rows quarantined (spark tier)."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomalake.models.artifacts import load_artifact, read_current
from anomalake.pipelines.config import DetectorSpec, load_tables
from anomalake.pipelines.demo.media import SCORE_DAY, TRAIN_DAY, load_images, load_texts, raw_frames, scored_with_labels
from anomalake.pipelines.features.decoding import encode_png
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.files import import_images, import_text, write_raw_partition
from anomalake.pipelines.reporting.report import build_report
from anomalake.pipelines.scoring.job import run_score
from anomalake.pipelines.settings import load_settings
from anomalake.pipelines.training.job import run_train

pytestmark = pytest.mark.spark
TABLES = load_tables(load_settings().tables_file)
DATASETS = Path(load_settings().datasets)


def small(frame: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    return frame.sample(n=min(n, len(frame)), random_state=seed).sort_values(frame.columns[0], ignore_index=True)


def through_the_jobs(ctx, table, data, normal: str, detector: str, params: dict, sizes=(200, 600)):
    """Raw days from a labelled set, then windows, train and score; returns (scored rows with labels, artifact)."""
    train, test = raw_frames(data, table, normal)
    write_raw_partition(ctx.lake, table, TRAIN_DAY, small(train, sizes[0]))
    write_raw_partition(ctx.lake, table, SCORE_DAY, small(test, sizes[1]))
    run_windows(ctx, table, [TRAIN_DAY, SCORE_DAY])
    spec = DetectorSpec(detector, detector, params, {"method": "pot", "risk": 0.01, "holdout_fraction": 0.2})
    run_train(ctx.with_new_run(), table, detector, TRAIN_DAY, TRAIN_DAY, verbose=0, spec=spec)
    outcome = run_score(ctx.with_new_run(), table, detector, SCORE_DAY)
    assert outcome.rows_in == outcome.scored == sizes[1]
    root = ctx.lake.models(detector, table.name)
    return scored_with_labels(ctx, table, detector), load_artifact(root / read_current(root))


def one_process_scores(ctx, table, artifact) -> pd.DataFrame:
    """The same day's features scored in this process, without Spark's UDF."""
    features = pd.read_parquet(ctx.lake.features(table.name) / f"dt={SCORE_DAY.isoformat()}")
    x = features["x"].tolist() if table.kind == "text" else np.stack(features["x"].to_numpy())
    return pd.DataFrame(
        {
            "entity_id": features["entity_id"],
            "expected": artifact.detector.score_samples(
                np.asarray(x, dtype=object if table.kind == "text" else np.float32)
            ),
        }
    )


@pytest.mark.parametrize(
    "table_name, detector, params, normal",
    [
        ("digits", "conv_autoencoder", {"epochs": 3, "batch_size": 32, "seed": 1}, "0"),
        ("messages", "text_transformer", {"epochs": 2, "seed": 1, "sequence_length": 24}, "ham"),
    ],
)
def test_public_data_scored_through_the_jobs_equals_one_process(ctx, table_name, detector, params, normal):
    from sklearn.metrics import roc_auc_score

    table = TABLES[table_name]
    folder = "mnist_mlxtend5k" if table.kind == "image" else "sms_spam"
    if not (DATASETS / folder).exists():
        pytest.fail(f"{DATASETS / folder} is missing: set ANOMALAKE_DATASETS to the shared datasets folder")
    data = load_images(DATASETS) if table.kind == "image" else load_texts(DATASETS)
    scored, artifact = through_the_jobs(ctx, table, data, normal, detector, params)
    merged = scored.merge(one_process_scores(ctx, table, artifact), on="entity_id")
    assert len(merged) == len(scored) and merged["label"].nunique() > 1
    labels = merged["label"] != normal
    spark_auc, local_auc = roc_auc_score(labels, merged["raw_score"]), roc_auc_score(labels, merged["expected"])
    assert abs(spark_auc - local_auc) <= 1e-6 and spark_auc > 0.7, (spark_auc, local_auc)
    page = build_report(ctx.lake, table, detector, SCORE_DAY)  # the HTML report of this kind's partition
    assert "Top anomalies (5 strongest events)" in page and page.count("<img") >= 2
    assert ("error map" in page) if table.kind == "image" else (page.count("<mark>") >= 5)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims another size (a decompression bomb's header)."""
    png = bytearray(encode_png(np.zeros((2, 2), dtype=np.uint8)))
    png[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    return bytes(png)


def test_bad_images_and_texts_are_quarantined_with_reasons(ctx):
    digits, messages = TABLES["digits"], TABLES["messages"]
    good = encode_png(np.full((28, 28), 128, dtype=np.uint8))
    images = pd.DataFrame(
        {
            "image_id": ["ok-1", "ok-2", "corrupt", "small", "colour", "bomb", "null", "ok-1", None],
            "image": [
                good,
                good,
                b"\x89PNG not really",
                encode_png(np.zeros((10, 10), np.uint8)),
                encode_png(np.zeros((28, 28, 3), np.uint8)),
                png_declaring(100_000, 100_000),
                None,
                good,
                good,
            ],
        }
    )
    texts = pd.DataFrame({"message_id": ["a", "b", "c", "d"], "text": ["hello there", None, "   \t ", "fine"]})
    write_raw_partition(ctx.lake, digits, TRAIN_DAY, images)
    write_raw_partition(ctx.lake, messages, TRAIN_DAY, texts)
    tolerant = lambda t: dataclasses.replace(t, max_quarantine_share=1.0)  # noqa: E731 - this table is mostly bad on purpose
    image_result = run_windows(ctx, tolerant(digits), [TRAIN_DAY])
    text_result = run_windows(ctx, tolerant(messages), [TRAIN_DAY])
    assert image_result.rows_in == 9 == image_result.windows + image_result.quarantined_total
    assert image_result.windows == 2
    assert image_result.quarantined == {
        "corrupt_image": 1,
        "wrong_size": 1,
        "wrong_channels": 1,
        "image_too_large": 1,
        "null_image": 1,
        "duplicate_key": 1,
        "null_key": 1,
    }
    assert text_result.quarantined == {"null_text": 1, "empty_text": 1} and text_result.windows == 2
    quarantine = pd.read_parquet(ctx.lake.quarantine("digits"))
    assert set(quarantine["reason"]) == set(image_result.quarantined) and quarantine["detail"].notna().all()


def test_too_many_bad_rows_fail_the_job_with_the_table_named(ctx):
    from anomalake.pipelines.errors import JobError

    broken = pd.DataFrame({"image_id": [f"i{i}" for i in range(5)], "image": [b"junk"] * 5})
    write_raw_partition(ctx.lake, TABLES["digits"], TRAIN_DAY, broken)
    with pytest.raises(JobError, match="table digits: 5 of 5 raw rows quarantined"):
        run_windows(ctx, TABLES["digits"], [TRAIN_DAY])


def test_import_commands_write_raw_partitions_the_windows_job_reads(ctx, tmp_path):
    for label in ("cats", "dogs"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((28, 28), 40 * i, dtype=np.uint8)
            (tmp_path / "images" / label / f"{i}.png").write_bytes(encode_png(pixels))
    (tmp_path / "texts.tsv").write_text("id\tbody\tkind\n1\tdisk full on node 3\tops\n2\tbackup finished\tops\n")
    assert import_images(ctx.lake, TABLES["digits"], tmp_path / "images", TRAIN_DAY) == 6
    assert import_text(ctx.lake, TABLES["messages"], tmp_path / "texts.tsv", TRAIN_DAY, "body", "kind", "id") == 2
    assert run_windows(ctx, TABLES["digits"], [TRAIN_DAY]).windows == 6
    assert run_windows(ctx, TABLES["messages"], [TRAIN_DAY]).windows == 2
    raw = pd.read_parquet(ctx.lake.raw(TABLES["digits"]) / f"dt={TRAIN_DAY.isoformat()}")
    assert sorted(raw["label"].unique()) == ["cats", "dogs"] and raw["image_id"].iloc[0] == "cats/0.png"
