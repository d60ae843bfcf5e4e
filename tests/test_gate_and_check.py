"""The training quality gate and the nightly check, on real artifacts and run records (the `spark` tier)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import keras
import numpy as np
import pytest
from conftest import START, TINY_DETECTOR, TINY_TABLE, copy_lake, template_context

from anomalake.models.artifacts import read_current, write_checksums
from anomalake.pipelines.config import parse_table
from anomalake.pipelines.events.job import run_events
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.checks import run_check
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.lake.runs import append_records, latest_run_record
from anomalake.pipelines.scoring.job import run_score
from anomalake.pipelines.training.job import run_train
from anomalake.pipelines.training.promotion import run_promote

pytestmark = pytest.mark.spark
DAYS = day_range(START, START + timedelta(days=2))


@pytest.fixture(scope="module")
def model_lake(spark, tmp_path_factory):
    """Windows of three days and a model trained on the first two, built once for the module."""
    template = template_context(spark, tmp_path_factory, "gate")
    table = parse_table("telemetry", TINY_TABLE)
    write_generated(template.lake.root, GenerateSpec("telemetry", START, 3, 2, seed=9))
    run_windows(template, table, DAYS)
    first = run_train(
        template.with_new_run(), table, "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=TINY_DETECTOR
    )
    return template, first.version


@pytest.fixture
def lake_with_model(ctx, tiny_table, model_lake):
    """This test's own copy of the module's lake."""
    template, version = model_lake
    copy_lake(template, ctx)
    return ctx, tiny_table, version


def broken_copy(root, version: str, name: str) -> str:
    """A candidate whose weights are all NaN (as a diverged training run leaves them)."""
    shutil.copytree(root / version, root / name)
    model = keras.models.load_model(root / name / "model.keras", safe_mode=True, compile=False)
    for weight in model.weights:
        weight.assign(np.full(weight.shape, np.nan, dtype=weight.dtype))
    model.save(root / name / "model.keras")
    write_checksums(root / name)  # a diverged run writes a consistent artifact; only its numbers are wrong
    return name


def test_a_broken_candidate_is_refused_and_current_kept(lake_with_model):
    ctx, table, current = lake_with_model
    root = ctx.lake.models("dense_autoencoder", "telemetry")
    candidate = broken_copy(root, current, "v-broken")
    decision = run_promote(ctx, table, "dense_autoencoder", candidate)
    assert not decision.promoted and "non-finite" in decision.reasons[0]
    assert read_current(root) == current
    recorded = json.loads((root / "decisions" / f"{candidate}.json").read_text())
    assert recorded["promoted"] is False and recorded["current_before"] == current


def test_a_tampered_candidate_is_refused_recorded_and_current_kept(lake_with_model):
    ctx, table, current = lake_with_model
    candidate = run_train(
        ctx.with_new_run(), table, "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=TINY_DETECTOR, promote=False
    )
    root = ctx.lake.models("dense_autoencoder", "telemetry")
    model = root / candidate.version / "model.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, after training: the checksums no longer match
    model.write_bytes(bytes(data))
    decision = run_promote(ctx, table, "dense_autoencoder", candidate.version)
    assert not decision.promoted and "model.keras was changed after training (sha256 mismatch)" in decision.reasons[0]
    assert read_current(root) == current
    recorded = json.loads((root / "decisions" / f"{candidate.version}.json").read_text())
    assert recorded["promoted"] is False and recorded["reasons"] == list(decision.reasons)


def test_a_sound_candidate_is_promoted(lake_with_model):
    ctx, table, current = lake_with_model
    candidate = run_train(
        ctx.with_new_run(), table, "dense_autoencoder", DAYS[0], DAYS[1], verbose=0, spec=TINY_DETECTOR, promote=False
    )
    root = ctx.lake.models("dense_autoencoder", "telemetry")
    assert read_current(root) == current  # a candidate does not move CURRENT by itself
    decision = run_promote(ctx, table, "dense_autoencoder", candidate.version)
    assert decision.promoted, decision.reasons
    assert read_current(root) == candidate.version
    assert decision.metrics["alert_rate"] <= 0.05 and "current_median_raw_score" in decision.metrics


def test_check_passes_a_healthy_night_and_flags_broken_accounting(lake_with_model):
    ctx, table, _ = lake_with_model
    day = DAYS[2]
    run_score(ctx, table, "dense_autoencoder", day)
    run_events(ctx.with_new_run(), table, "dense_autoencoder", day)
    healthy = run_check(ctx.lake, table, ["dense_autoencoder"], day)
    assert healthy.problems == () and set(healthy.anomaly_rates) == {"dense_autoencoder"}
    record = latest_run_record(ctx.lake.root, "telemetry", "score_dense_autoencoder", day)
    lost = {**record, "rows_out": record["rows_out"] - 1, "finished_at": datetime.now(timezone.utc).isoformat()}
    append_records(ctx.lake.root, [lost])  # a later record of the day whose row went missing (no check on append)
    problems = run_check(ctx.lake, table, ["dense_autoencoder"], day).problems
    assert any("rows in" in p for p in problems) and all("windows job wrote" not in p for p in problems)
    assert (
        run_check(ctx.lake, table, ["dense_autoencoder"], day + timedelta(days=1))
        .problems[0]
        .endswith("no windows run recorded")
    )
