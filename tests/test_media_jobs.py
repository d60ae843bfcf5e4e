"""Image and text tables through the jobs: import -> windows -> train -> score, bad rows quarantined (spark tier)."""

from __future__ import annotations

import dataclasses
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import read_rows, snapshot_rows

from anomalake.models.artifacts import load_artifact, read_current
from anomalake.pipelines.config import DetectorSpec, load_tables
from anomalake.pipelines.demo.media import SCORE_DAY, TRAIN_DAY, scored_with_labels
from anomalake.pipelines.evaluation.datasets import load_images, load_texts, raw_frames
from anomalake.pipelines.events.job import run_events
from anomalake.pipelines.features.decoding import encode_png
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.files import import_images, import_text, write_raw_partition
from anomalake.pipelines.reporting.report import TOP_EVENTS, build_report
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
    features = snapshot_rows(ctx.lake.features(table.name), dt=SCORE_DAY.isoformat()).drop(columns="dt")
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
        ("digits", "conv_autoencoder", {"seed": 1}, "0"),  # its configured epochs: quality is compared below
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
    # Row by row: the score job's raw score of each sample is this process's (one TensorFlow thread there).
    np.testing.assert_allclose(merged["raw_score"], merged["expected"], rtol=1e-5, atol=1e-7)
    labels = merged["label"] != normal
    detector_auc, reference_auc = (
        roc_auc_score(labels, merged["raw_score"]),
        reference_roc_auc(ctx, table, labels, merged),
    )
    assert detector_auc > reference_auc, (detector_auc, reference_auc)
    check_explanations(ctx, table, artifact)
    page = build_report(ctx.lake, table, detector, SCORE_DAY)  # the HTML report of this kind's partition
    heading = re.search(r"<h2>Top anomalies[^<]*</h2>(<p>[^<]*)?", page)
    # Each flagged sample is an event of its own: the report shows the strongest TOP_EVENTS of them.
    shown = min(TOP_EVENTS, int(scored["is_anomaly"].sum()))
    assert shown >= 2 and f"Top anomalies ({shown} strongest events)" in page, heading and heading.group(0)
    assert page.count("<img") >= 2
    assert ("error map" in page) if table.kind == "image" else (page.count("<mark>") >= shown)
    check_events(ctx, table, detector, scored)


def check_events(ctx, table, detector: str, scored: pd.DataFrame) -> None:
    """Images and texts through the events job: with one earlier day of scores (too little history) each sample
    over the held-out threshold is an event of its own, explained like its score row, and is_anomaly agrees."""
    result = run_events(ctx.with_new_run(), table, detector, SCORE_DAY)
    events = snapshot_rows(ctx.lake.events(table.name), detector=detector)
    assert sorted(events["entity_id"]) == sorted(scored.loc[scored["is_anomaly"], "entity_id"]) != []
    assert (events["windows"] == 1).all() and set(events["threshold_source"]) == {"calibration"}
    explanation = "top_regions" if table.kind == "image" else "top_tokens"
    assert events[explanation].map(len).gt(0).all() and result.new_events == len(events)
    after = scored_with_labels(ctx, table, detector)
    assert sorted(after.loc[after["is_anomaly"], "entity_id"]) == sorted(events["entity_id"])


def day_samples(ctx, table, day) -> tuple[pd.Series, np.ndarray]:
    features = snapshot_rows(ctx.lake.features(table.name), dt=day.isoformat()).drop(columns="dt")
    x = np.array(features["x"].tolist(), dtype=object) if table.kind == "text" else np.stack(features["x"].to_numpy())
    return features["entity_id"], x


def reference_roc_auc(ctx, table, labels: pd.Series, merged: pd.DataFrame) -> float:
    """The reference detector of the same run (PCA reconstruction; TF-IDF + SVD for texts) on the same samples."""
    from sklearn.metrics import roc_auc_score

    from anomalake.pipelines.evaluation.reference_detectors import pca_scores, text_pca_scores

    _, train = day_samples(ctx, table, TRAIN_DAY)
    ids, test = day_samples(ctx, table, SCORE_DAY)
    scores = (text_pca_scores if table.kind == "text" else pca_scores)(train, test)
    by_id = pd.Series(scores, index=ids.to_numpy())
    return roc_auc_score(labels, by_id.loc[merged["entity_id"]].to_numpy())


def check_explanations(ctx, table, artifact) -> None:
    """The explanation columns the score job wrote are the ones this process computes for the same samples."""
    from anomalake.pipelines.scoring.explanations import image_explanations, text_explanations

    written = snapshot_rows(ctx.lake.scores(table.name), detector=artifact.meta["detector"], dt=SCORE_DAY.isoformat())
    ids, x = day_samples(ctx, table, SCORE_DAY)
    top = written.sort_values("score", ascending=False).head(5)
    pick = ids.reset_index(drop=True).pipe(lambda s: [int(s.index[s == e][0]) for e in top["entity_id"]])
    samples = x[pick] if table.kind == "text" else x[pick].reshape(-1, *table.sample_shape)
    contributions = artifact.detector.explain(samples)
    if table.kind == "image":
        regions, maps = image_explanations(contributions)
        for row, want_regions, want_map in zip(top.itertuples(), regions, maps):
            got = [dict(r) for r in row.top_regions]
            assert [(r["row0"], r["col0"], r["row1"], r["col1"]) for r in got] == [
                (r["row0"], r["col0"], r["row1"], r["col1"]) for r in want_regions
            ]
            np.testing.assert_allclose([r["share"] for r in got], [r["share"] for r in want_regions], atol=1e-5)
            grid = np.array([list(r) for r in row.error_map])
            assert grid.shape == (8, 8) and abs(grid.sum() - 1.0) < 1e-2
            np.testing.assert_allclose(grid, np.array(want_map), atol=1e-3)
    else:
        for row, want, text in zip(
            top.itertuples(), text_explanations(artifact.detector, samples, contributions), samples
        ):
            got = [dict(t) for t in row.top_tokens]
            assert [(t["token"], t["position"]) for t in got] == [(t["token"], t["position"]) for t in want] and got
            np.testing.assert_allclose([t["surprise"] for t in got], [t["surprise"] for t in want], atol=1e-3)
            assert all(t["token"] in text.split() or t["token"] in ("[UNK]", "[END]") for t in got)


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
    quarantine = read_rows(ctx.spark, ctx.lake.quarantine("digits"))
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
