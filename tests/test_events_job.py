"""The events job end to end on a real lake (spark tier): nightly day by day = a backfill in one job = a backfill in
another order = a re-run; is_anomaly marks exactly the windows inside events; every day is on record; a level
shift that stays is one event, and hosts without one stay quiet."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
from conftest import START, TINY_DETECTOR, TINY_TABLE, copy_lake, snapshot_rows, template_context
from webhook import Webhook

from anomalake.models.artifacts import CALIBRATION_FILE, read_current
from anomalake.pipelines.config import parse_table
from anomalake.pipelines.evaluation.labelled import write_detection_metrics
from anomalake.pipelines.events.detection import flag_windows
from anomalake.pipelines.events.job import run_events, run_events_days
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.delta import history, read_delta
from anomalake.pipelines.lake.layout import day_range, partition_path
from anomalake.pipelines.lake.query import run_sql, table_history
from anomalake.pipelines.lake.runs import latest_run_record
from anomalake.pipelines.scoring.job import run_score, run_score_days
from anomalake.pipelines.training.job import run_train

pytestmark = pytest.mark.spark
DAYS = day_range(START, START + timedelta(days=9))
TRAIN, SCORED = DAYS[:4], DAYS[4:]
DETECTOR = "dense_autoencoder"
SHIFTED = "host-002"
SHIFT_AT = datetime.combine(DAYS[5], datetime.min.time(), timezone.utc) + timedelta(hours=12)


@pytest.fixture(scope="module")
def trained_lake(spark, tmp_path_factory):
    """Ten days of three hosts without injected anomalies, except that host-002's memory steps up by 10 points at
    noon of the sixth day and stays there; windows of every day; a tiny model trained on the first four."""
    template = template_context(spark, tmp_path_factory, "events")
    table = parse_table("telemetry", TINY_TABLE)
    write_generated(template.lake.root, GenerateSpec("telemetry", START, len(DAYS), 3, 7, anomalies_per_entity_day=0))
    for day in DAYS[5:]:
        path = next(partition_path(template.lake.root / "raw" / "telemetry", dt=day.isoformat()).glob("*.parquet"))
        raw = pd.read_parquet(path)
        after = (raw["entity_id"] == SHIFTED) & (pd.to_datetime(raw["ts"], utc=True) >= pd.Timestamp(SHIFT_AT))
        raw.loc[after, "memory"] += 10.0
        raw.to_parquet(path, index=False, coerce_timestamps="us")
    run_windows(template, table, DAYS)
    run_train(template.with_new_run(), table, DETECTOR, TRAIN[0], TRAIN[-1], spec=TINY_DETECTOR, verbose=0)
    return template


@pytest.fixture(scope="module")
def nightly(spark, tmp_path_factory, trained_lake):
    """The trained lake after the nightly way: score, then events, one day at a time."""
    ctx = template_context(spark, tmp_path_factory, "nightly")
    copy_lake(trained_lake, ctx)
    table = parse_table("telemetry", TINY_TABLE)
    for day in SCORED:
        run_score(ctx.with_new_run(), table, DETECTOR, day)
        run_events(ctx.with_new_run(), table, DETECTOR, day)
    return ctx


def events(ctx) -> pd.DataFrame:
    frame = snapshot_rows(ctx.lake.events("telemetry"), detector=DETECTOR).drop(columns=["run_id"])
    for column in ("feature_contributions", "top_steps"):
        frame[column] = frame[column].map(lambda v: repr(list(v)) if v is not None else None)
    frame["dt"] = frame["dt"].astype(str)
    return frame.sort_values(["dt", "entity_id", "start"], ignore_index=True)


def scores(ctx) -> pd.DataFrame:
    frame = snapshot_rows(ctx.lake.scores("telemetry"), detector=DETECTOR)
    frame = frame[["entity_id", "ts", "raw_score", "score", "is_anomaly", "dt"]].assign(
        dt=lambda f: f["dt"].astype(str)
    )
    return frame.sort_values(["entity_id", "ts"], ignore_index=True)


def context_at(ctx, lake):
    """A job context on the same session with another lake."""
    return JobContext(dataclasses.replace(ctx.settings, lake=str(lake)), ctx.spark)


def test_nightly_equals_backfills_in_any_order_and_a_rerun(ctx, tiny_table, trained_lake, nightly, tmp_path):
    expected_events, expected_scores = events(nightly), scores(nightly)
    assert expected_events["new"].any(), "the level shift gives an event"
    assert expected_events["threshold_source"].eq("history").all(), "the trailing scores set every threshold"

    # The windows inside events, and only those, are anomalies; every day balances and says where history came from.
    for day in SCORED:
        record = latest_run_record(nightly.lake.root, "telemetry", f"events_{DETECTOR}", day)
        of_day = expected_scores["dt"] == day.isoformat()
        assert record["rows_in"] == record["rows_out"] + record["context"] == int(of_day.sum()) > 0
        assert record["rows_out"] == int(expected_scores.loc[of_day, "is_anomaly"].sum())
        assert record["rows_out"] == int(expected_events.loc[expected_events["dt"] == day.isoformat(), "windows"].sum())
    first = latest_run_record(nightly.lake.root, "telemetry", f"events_{DETECTOR}", SCORED[0])
    assert any(": rescored" in h for h in first["history"]), "training days had no scores: they are scored on the fly"
    queried = run_sql(nightly, [tiny_table], "SELECT count(*) AS n, sum(CAST(new AS INT)) AS new FROM events_telemetry")
    assert queried.to_dict("records") == [{"n": len(expected_events), "new": int(expected_events["new"].sum())}]

    for order in ("range", "reversed"):
        other = context_at(ctx, tmp_path / order / "lake")
        copy_lake(trained_lake, other)
        run_score_days(other.with_new_run(), tiny_table, DETECTOR, SCORED)
        if order == "range":
            run_events_days(other.with_new_run(), tiny_table, DETECTOR, SCORED)
        else:
            for day in reversed(SCORED):
                run_events(other.with_new_run(), tiny_table, DETECTOR, day)
        pd.testing.assert_frame_equal(events(other), expected_events, check_exact=True)
        pd.testing.assert_frame_equal(scores(other), expected_scores, check_exact=True)

    copy_lake(nightly, ctx)
    busy = date.fromisoformat(expected_events["dt"].iloc[0])
    rerun = ctx.with_new_run()
    run_events(rerun, tiny_table, DETECTOR, busy)
    again = snapshot_rows(ctx.lake.events("telemetry"), detector=DETECTOR, dt=busy.isoformat())
    assert set(again["run_id"]) == {rerun.run_id}, "the re-run replaced the day"
    pd.testing.assert_frame_equal(events(ctx), expected_events, check_exact=True)
    # Time travel: the history names the nightly run of that day and the re-run, and the version before the re-run
    # still holds the nightly run's rows of the day.
    commits = table_history(ctx.spark, ctx.lake, tiny_table, DETECTOR).query("table == 'events_telemetry'")
    of_day = commits[commits["partitions"] == f"detector={DETECTOR} dt={busy.isoformat()}"]
    nightly_run, rerun_commit = of_day.iloc[-2], of_day.iloc[-1]
    assert rerun_commit["run_id"] == rerun.run_id != nightly_run["run_id"]
    before = read_delta(ctx.spark, ctx.lake.events("telemetry"), version=int(rerun_commit["version"]) - 1)
    before = before.where(f"dt = '{busy.isoformat()}'").toPandas()
    assert set(before["run_id"]) == {nightly_run["run_id"]} and len(before) == len(again)


def test_a_level_shift_that_stays_is_one_event_and_quiet_hosts_stay_quiet(nightly):
    found, scored = events(nightly), scores(nightly)
    shifted = found[found["entity_id"] == SHIFTED]
    assert shifted["new"].sum() == 1 and shifted["event_id"].nunique() == 1, shifted
    start = pd.to_datetime(shifted.loc[shifted["new"], "start"], utc=True).iloc[0]
    assert abs(start - pd.Timestamp(SHIFT_AT)) <= pd.Timedelta(hours=1), start
    settled = scored[(scored["entity_id"] == SHIFTED) & (scored["dt"] == SCORED[-1].isoformat())]
    assert settled["is_anomaly"].mean() < 0.10, "once the history holds the new level, it is the entity's normal"
    # The alert volume of the hosts without a shift: new events per entity and day, and the share of windows flagged.
    quiet = scored[scored["entity_id"] != SHIFTED]
    new_events = int((found["entity_id"] != SHIFTED).mul(found["new"]).sum())
    per_entity_day = new_events / (quiet["entity_id"].nunique() * len(SCORED))
    assert per_entity_day <= 1.0 and quiet["is_anomaly"].mean() <= 0.10, (per_entity_day, quiet["is_anomaly"].mean())


def test_the_in_process_events_stage_flags_the_windows_the_job_flags(ctx, tiny_table, nightly):
    """`evaluate` runs its baselines through flag_windows: on the same scores it must flag exactly the windows the
    nightly events job flagged (the training days' scores, which the job rescored as history, written here)."""
    copy_lake(nightly, ctx)
    run_score_days(ctx.with_new_run(), tiny_table, DETECTOR, TRAIN)
    every_day = scores(ctx).drop(columns=["is_anomaly"])
    root = ctx.lake.models(DETECTOR, "telemetry")
    threshold = json.loads((root / read_current(root) / CALIBRATION_FILE).read_text())["threshold"]
    flagged = flag_windows(every_day, "timeseries", tiny_table.events, threshold, SCORED, DETECTOR)
    expected = scores(nightly)
    assert expected["is_anomaly"].sum() > 0
    utc = {"ts": lambda f: pd.to_datetime(f["ts"], utc=True)}
    got = expected[["entity_id", "ts"]].assign(**utc).merge(flagged.assign(**utc), on=["entity_id", "ts"], how="left")
    assert len(flagged) == len(expected)
    assert got["is_anomaly"].tolist() == expected["is_anomaly"].tolist()


def test_a_labelled_table_gets_detection_metrics_per_day_that_sql_reads(ctx, tiny_table, nightly):
    """Labels from the user (the shift, from its start to the end of the data) against the events of each day."""
    copy_lake(nightly, ctx)
    generated = write_detection_metrics(ctx.lake, tiny_table, [DETECTOR], SCORED[1])[DETECTOR]
    assert generated["labelled"] == 0 and generated["false_alarms"] == generated["detected"], "generated: no anomalies"
    shutil.rmtree(ctx.lake.labels("telemetry"))
    assert write_detection_metrics(ctx.lake, tiny_table, [DETECTOR], SCORED[1]) == {}, "no labels, no figures"
    last = datetime.combine(DAYS[-1], datetime.max.time(), timezone.utc)
    labels = pd.DataFrame({"entity_id": [SHIFTED], "start": [SHIFT_AT], "end": [last], "kind": ["level_shift"]})
    ctx.lake.labels("telemetry").mkdir(parents=True)
    labels.to_parquet(ctx.lake.labels("telemetry") / "labels.parquet", coerce_timestamps="us")
    found = events(ctx).assign(start=lambda f: pd.to_datetime(f["start"], utc=True))
    for day in SCORED:
        figures = write_detection_metrics(ctx.lake, tiny_table, [DETECTOR], day)[DETECTOR]
        of_day = found[found["dt"] == day.isoformat()]
        hits = of_day[(of_day["entity_id"] == SHIFTED) & (pd.to_datetime(of_day["end"], utc=True) >= SHIFT_AT)]
        labelled = int(day >= SHIFT_AT.date())
        assert figures["labelled"] == labelled and figures["detected"] == len(of_day), day
        assert figures["found"] == min(len(hits), labelled), day
        assert figures["false_alarms"] == len(of_day) - len(hits), day
    queried = run_sql(
        ctx, [tiny_table], "SELECT dt, value, model_version FROM detection_metrics WHERE metric = 'recall' ORDER BY dt"
    )
    assert [str(d) for d in queried["dt"]] == [d.isoformat() for d in SCORED]
    on_shift_day = queried[queried["dt"].astype(str) == SHIFT_AT.date().isoformat()]
    assert on_shift_day["value"].tolist() == [1.0], "the shift's event overlaps its label"
    assert queried["value"].isna().sum() == sum(d < SHIFT_AT.date() for d in SCORED), "nothing labelled: no recall"
    assert set(queried["model_version"]) == set(snapshot_rows(ctx.lake.events("telemetry"))["model_version"])
    # A Delta table written without Spark: one commit per day and check run; the day written twice was replaced.
    commits = history(ctx.spark, ctx.lake.detection_metrics())
    assert [c["metadata"]["days"] for c in commits] == [[SCORED[1].isoformat()]] + [[d.isoformat()] for d in SCORED]
    assert {c["metadata"]["job"] for c in commits} == {"check"}
    assert len({c["metadata"]["run_id"] for c in commits}) == len(commits), "each check run names its own run"


def test_alerts_announce_each_new_event_once_and_a_webhook_that_is_down_never_fails_the_night(
    ctx, nightly, tmp_path, monkeypatch, capsys
):
    from anomalake.pipelines.jobs.cli import main

    copy_lake(nightly, ctx)
    tables = tmp_path / "tables.yml"
    tables.write_text(json.dumps({"telemetry": TINY_TABLE}))
    monkeypatch.setenv("ANOMALAKE_TABLES", str(tables))
    monkeypatch.setenv("ANOMALAKE_REPORT_BASE_URL", "https://reports.example.com/lake/")
    alert = ["--lake", str(ctx.lake.root), "alert", "--table", "telemetry", "--date"]
    found = events(nightly)
    new = found[found["new"]]
    assert SHIFT_AT.date().isoformat() in set(new["dt"]) and set(new["dt"]) != {d.isoformat() for d in SCORED}

    with Webhook(statuses=(503,)) as hook:  # the first try fails: the second gets through
        monkeypatch.setenv("ANOMALAKE_ALERT_URL", hook.url)
        for day in SCORED:
            assert main([*alert, day.isoformat()]) == 0
        assert [m["day"] for m in hook.messages] == sorted(set(new["dt"])), "one message per day with new events"
        for message in hook.messages:  # only the events that start that day: one that goes on was announced
            ids = [e["event_id"] for d in message["detectors"] for e in d["events"]]
            assert sorted(ids) == sorted(new.loc[new["dt"] == message["day"], "event_id"]), message["day"]
        going_on = found[~found["new"]]
        assert len(going_on), "the data has an event that goes on past midnight"
        shift_day = next(m for m in hook.messages if m["day"] == SHIFT_AT.date().isoformat())
        assert shift_day["schema"] == "anomalake.alert/1" and shift_day["table"] == "telemetry"
        assert shift_day["check"] == {"passed": True, "problems": []}
        (detector,) = shift_day["detectors"]
        of_day = new[new["dt"] == shift_day["day"]]
        assert detector["detector"] == DETECTOR and detector["model_version"] == of_day["model_version"].iloc[0]
        assert detector["report"] == (
            f"https://reports.example.com/lake/scores/telemetry/detector={DETECTOR}/dt={shift_day['day']}/_report.html"
        )
        assert sorted(e["event_id"] for e in detector["events"]) == sorted(of_day["event_id"])
        shifted = next(e for e in detector["events"] if e["entity_id"] == SHIFTED)
        assert abs(pd.Timestamp(shifted["start"]) - pd.Timestamp(SHIFT_AT)) <= pd.Timedelta(hours=1), shifted
        assert shifted["explanation"]["top_feature"] == "memory", "the memory level shifted"
        assert set(shifted["explanation"]) == {"top_feature", "feature_contributions", "top_steps"}
        assert shifted["severity"] > 0 and shifted["start"].endswith("Z")
        sent = len(hook.messages)
        capsys.readouterr()
        assert main([*alert, shift_day["day"]]) == 0 and len(hook.messages) == sent, "a re-run announces nothing"
        assert "nothing to announce (no new events, the check passed)" in capsys.readouterr().out
        assert main([*alert, TRAIN[0].isoformat()]) == 0, "a day whose check fails is announced"
        failed = hook.messages[-1]
        assert (
            failed["day"] == TRAIN[0].isoformat() and failed["check"]["passed"] is False and failed["detectors"] == []
        )
        assert any("no run recorded" in p for p in failed["check"]["problems"]), failed

    shutil.rmtree(ctx.lake.root / "_alerts")  # forget what was announced: the webhook is now down
    capsys.readouterr()
    assert main([*alert, shift_day["day"]]) == 0, "a webhook that is down never fails the night"
    assert "the webhook did not take the alert after 3 tries" in capsys.readouterr().err
    assert not (ctx.lake.root / "_alerts").exists(), "nothing is remembered as announced"
