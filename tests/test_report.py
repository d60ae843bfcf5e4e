"""`anomalake report`: the HTML of a scored partition, rendered by a real headless Chromium (the `spark` tier)."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from anomalake.pipelines.events.job import run_events
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.lake.runs import append_records, latest_run_record
from anomalake.pipelines.reporting.report import (
    PICTURED_EVENTS,
    RED_FACTOR,
    flagged_share,
    scores_dir,
    write_report,
)
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
        run_events(ctx.with_new_run(), table, "dense_autoencoder", day)
    return days[-1]


def test_the_report_lists_the_days_events_judges_its_rate_and_plots_in_the_tables_units(
    ctx, tiny_table, tmp_path, chromium_path
):
    from playwright.sync_api import sync_playwright

    day = scored_lake(ctx, tiny_table)
    path = write_report(ctx.lake, tiny_table, "dense_autoencoder", day)
    assert path == scores_dir(ctx.lake, "telemetry", "dense_autoencoder", day) / "_report.html"
    assert "http" not in path.read_text().split("<body>")[1][:200000].replace("http-equiv", "")  # self-contained
    events = snapshot_rows(ctx.lake.events("telemetry"), detector="dense_autoencoder", dt=day.isoformat())
    assert len(events) >= 1, "the low threshold flags windows: the day must have events to show"
    scores = snapshot_rows(ctx.lake.scores("telemetry"), detector="dense_autoencoder", dt=day.isoformat())
    # What the verdicts must say, before the 44 % records below are added: the share the events give and the new
    # events per entity, each judged against what the calibration expects and the earlier day.
    share = flagged_share(ctx.lake, "telemetry", "dense_autoencoder", day)
    before_day = day - timedelta(days=1)
    before = flagged_share(ctx.lake, "telemetry", "dense_autoencoder", before_day)
    expected = 10.0 ** -float(scores["threshold"].iloc[0])
    share_red = share > RED_FACTOR * expected or (share > RED_FACTOR * before and share > expected)
    records = [latest_run_record(ctx.lake.root, "telemetry", "events_dense_autoencoder", d) for d in (before_day, day)]
    earlier, today = (r["new_events"] / r["entities"] for r in records)
    expected_events = records[1]["rows_in"] / records[1]["entities"] * expected  # a bound: each exceedance an event
    events_red = today > RED_FACTOR * expected_events or (today > RED_FACTOR * earlier and today > expected_events)
    loud = forty_four_percent_day(ctx, tiny_table, day, tmp_path / "loud.html")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(path.as_uri(), wait_until="load")
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        listed = page.eval_on_selector_all(".event-row .event-id", "cells => cells.map(c => c.textContent)")
        links = page.eval_on_selector_all(
            ".event-id a", "links => links.map(a => [a.textContent, !!document.querySelector(a.hash)])"
        )
        alts = page.eval_on_selector_all(".event img", "imgs => imgs.map(i => i.alt)")
        verdicts = page.eval_on_selector_all(".verdict", "vs => vs.map(v => [v.className, v.textContent])")
        text = page.inner_text("body")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        page.goto(loud.as_uri(), wait_until="load")
        loud_verdict = page.eval_on_selector(".verdict", "v => [v.className, v.textContent]")
        browser.close()
    print(f"screenshot of the rendered report: {shot}")
    verdict, events_verdict = verdicts  # the flagged share, then new events per entity
    assert errors == []
    assert len(sizes) >= 3 and all(done and w > 0 and h > 0 for done, w, h in sizes), sizes
    # Every event of the day is listed by its id; the most severe link to their plots, which are on the page.
    assert sorted(listed) == sorted(events["event_id"]) and all(found for _, found in links), links
    assert len(links) == min(len(events), PICTURED_EVENTS)
    # Their plots are in the table's own units: each names the metric it draws and says so.
    assert len(alts) == len(links) and all("in the table's units" in a for a in alts), alts
    assert all(any(f"{feature}" in a for feature in tiny_table.features) for a in alts), alts
    assert verdict[0] == f"verdict {'bad' if share_red else 'ok'}" and f"{share:.2%} today" in verdict[1], verdict
    assert share == scores["is_anomaly"].mean()  # the events job set is_anomaly from the events
    assert events_verdict[0] == f"verdict {'bad' if events_red else 'ok'}", events_verdict
    assert f"{today:.2f} per entity today" in events_verdict[1] and f"{earlier:.2f} per entity on average" in text
    run_id = events["run_id"].iloc[0]
    assert f"model version {scores['model_version'].iloc[0]}" in text and run_id in text
    assert "Run health" in text and "Score distribution" in text and shot.stat().st_size > 10000
    # The case: a day with 44 % of its windows flagged, after a day of 33 %, is red against the expected rate.
    assert loud_verdict[0] == "verdict bad", loud_verdict
    assert loud_verdict[1].startswith("44.00% today, red: more than 2x"), loud_verdict
    assert "the model's expected" in loud_verdict[1] and "on average" not in loud_verdict[1], loud_verdict


def forty_four_percent_day(ctx, table, day, out):
    """The report of `day` written to `out` after later events records say 44 % of its windows were flagged and
    33 % of the day before's (records appended as a re-run would; the scores stay as they are)."""
    later = datetime.now(timezone.utc).isoformat()
    records = []
    for when, share in ((day - timedelta(days=1), 0.33), (day, 0.44)):
        record = latest_run_record(ctx.lake.root, "telemetry", "events_dense_autoencoder", when)
        records.append({**record, "rows_in": 10_000, "rows_out": int(share * 10_000), "finished_at": later})
    append_records(ctx.lake.root, records)
    threshold = float(snapshot_rows(ctx.lake.scores("telemetry"), detector="dense_autoencoder")["threshold"].iloc[0])
    assert 0.44 > RED_FACTOR * 10.0**-threshold and 0.44 < RED_FACTOR * 0.33  # red by the expected rate alone
    return write_report(ctx.lake, table, "dense_autoencoder", day, out)
