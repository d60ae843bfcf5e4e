"""`anomalake report`: the HTML of a scored partition, rendered by a real headless Chromium (the `spark` tier)."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import timedelta

import pandas as pd
import pytest

from anomalake.pipelines.events.grouping import anomaly_events
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.reporting.report import scores_dir, write_report
from anomalake.pipelines.scoring.job import run_score
from anomalake.pipelines.training.job import run_train
from tests.conftest import START, TINY_DETECTOR, snapshot_rows

pytestmark = pytest.mark.spark
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium_path():
    path = shutil.which("chromium") or CHROMIUM
    if not shutil.which(path):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make test` does: apt-get install chromium)")
    return path


def scored_lake(ctx, table):
    """Three days of generated telemetry, a model trained on two, the last two days scored."""
    days = day_range(START, START + timedelta(days=2))
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, 3, 3, 7))
    run_windows(ctx, table, days)
    # a low threshold, so that a two-epoch model surely flags some windows to show
    spec = dataclasses.replace(TINY_DETECTOR, calibration={**TINY_DETECTOR.calibration, "threshold_z": 1.0})
    run_train(ctx.with_new_run(), table, "dense_autoencoder", days[0], days[1], verbose=0, spec=spec)
    for day in days[1:]:
        run_score(ctx.with_new_run(), table, "dense_autoencoder", day)
    return days[-1]


def test_report_renders(ctx, tiny_table, tmp_path, chromium_path):
    from playwright.sync_api import sync_playwright

    day = scored_lake(ctx, tiny_table)
    path = write_report(ctx.lake, tiny_table, "dense_autoencoder", day)
    assert path == scores_dir(ctx.lake, "telemetry", "dense_autoencoder", day) / "_report.html"
    assert "http" not in path.read_text().split("<body>")[1][:200000].replace("http-equiv", "")  # self-contained
    scores = snapshot_rows(ctx.lake.scores("telemetry"), detector="dense_autoencoder", dt=day.isoformat())
    scores["ts"] = pd.to_datetime(scores["ts"]).dt.tz_localize(None)
    top_entity = anomaly_events(scores, tiny_table.window.length * tiny_table.step_seconds)["entity_id"].iloc[0]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(path.as_uri(), wait_until="load")
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        entities = page.eval_on_selector_all(".entity", "spans => spans.map(s => s.textContent)")
        text = page.inner_text("body")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    print(f"screenshot of the rendered report: {shot}")
    assert errors == []
    assert len(sizes) >= 3 and all(done and w > 0 and h > 0 for done, w, h in sizes), sizes
    assert entities and entities[0] == top_entity and top_entity in text
    assert "Run health" in text and "Score distribution" in text and shot.stat().st_size > 10000
