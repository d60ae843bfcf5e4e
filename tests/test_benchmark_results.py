"""Benchmark results: event merging, hand-computed records, the Markdown table, the dataset readers' errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomalake.pipelines.evaluation import results
from anomalake.pipelines.evaluation.cases import TIME_SERIES, load_cases, nab_cases, table_name
from anomalake.pipelines.evaluation.datasets import DatasetError, asd_entities, load_nab, load_skab
from anomalake.pipelines.evaluation.quick import QUICK_GROUPS, quick_summary, quick_table
from anomalake.pipelines.events.grouping import anomaly_events, event_starts, merge_close_runs

T0 = pd.Timestamp("2024-01-01")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def stamps(n: int) -> pd.Series:
    return pd.Series(T0 + pd.Timedelta("5min") * np.arange(n))


def test_close_runs_merge_into_one_event_and_far_ones_stay_apart():
    flags = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 1], dtype=bool)
    assert merge_close_runs(flags, 2).astype(int).tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 1, 1]
    assert merge_close_runs(flags, 0).tolist() == flags.tolist()
    assert event_starts(merge_close_runs(flags, 2)).astype(int).tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_anomaly_events_group_each_entitys_close_flags_and_rank_by_peak():
    ts = stamps(12)
    scores = pd.DataFrame(
        {
            "entity_id": ["a"] * 6 + ["b"] * 6,
            "ts": list(ts[:6]) * 2,
            "score": [1, 5, 1, 6, 1, 9, 1, 1, 8, 1, 1, 1],
            "is_anomaly": [0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0],
        }
    ).astype({"is_anomaly": bool})
    # a: flags at steps 1, 3, 5 (10 minutes apart) -> one event with a 10-minute gap, three with a 5-minute gap
    events = anomaly_events(scores, gap_seconds=600)
    assert events[["entity_id", "windows", "peak_score"]].values.tolist() == [["a", 3, 9.0], ["b", 1, 8.0]]
    assert scores.loc[events["peak_index"].iloc[0], "score"] == 9
    assert len(anomaly_events(scores, gap_seconds=300)) == 4


def series(n: int, flagged: list[int], labelled: list[int], unscored: int = 0) -> pd.DataFrame:
    """A scored series: scores 1 where flagged, 0 elsewhere, NaN on the first `unscored` rows."""
    ts = stamps(n)
    score = np.zeros(n)
    score[flagged] = 1.0
    score[:unscored] = np.nan
    label = np.zeros(n, dtype=int)
    label[labelled] = 1
    truth = pd.DataFrame({"entity_id": "e", "ts": ts, "label": label, "group": "g"})
    scored = pd.DataFrame(
        {"entity_id": "e", "ts": ts, "raw_score": score, "score": score, "threshold": 0.5, "is_anomaly": score > 0.5}
    )
    return results.series_frame(truth, scored.iloc[unscored:])


def test_records_sum_segment_and_point_counts_over_a_category():
    ts = stamps(40)
    # a: window rows 10-14; detections at 12-13 (hits) and 30 (a false event) -> tp 1, fp 1
    a = series(40, [12, 13, 30], list(range(10, 15)))
    # b: window rows 20-24, nothing flagged -> fn 1
    b = series(40, [], list(range(20, 25)))
    windows = {"cat/a.csv": ((ts[10], ts[14]),), "cat/b.csv": ((ts[20], ts[24]),)}
    records = results.timeseries_records(
        "nab",
        "det",
        {"cat/a.csv": a, "cat/b.csv": b},
        {"cat/a.csv": "cat", "cat/b.csv": "cat"},
        windows,
        {"cat/a.csv": 4, "cat/b.csv": 4},
        {"cat/a.csv": 2.0, "cat/b.csv": 4.0},
    )
    got = {(r["group"], r["metric"]): r["value"] for r in records}
    assert got[("cat", "overlap_segment_precision")] == 0.5
    assert got[("cat", "overlap_segment_recall")] == 0.5
    assert got[("cat", "overlap_segment_f1")] == 0.5
    # points: tp 2 (12, 13), fp 1 (30), fn 8 (3 of a's window + 5 of b's) -> F1 = 4 / (4 + 1 + 8)
    assert got[("cat", "pointwise_precision")] == pytest.approx(2 / 3, abs=1e-6)
    assert got[("cat", "pointwise_recall")] == pytest.approx(0.2, abs=1e-6)
    assert got[("cat", "pointwise_f1")] == pytest.approx(4 / 13, abs=1e-6)
    assert got[("cat/a.csv", "overlap_segment_f1")] == pytest.approx(2 / 3, abs=1e-6)
    assert got[("cat/b.csv", "overlap_segment_precision")] is None  # 0/0 stays undefined, as Orion reports it
    # alert volume: a's two events (12-13 and 30) and b's none over two entity-days; 3 of 80 windows flagged
    assert got[("cat", "events_per_series")] == got[("cat", "events_per_entity_day")] == 1.0
    assert got[("cat/a.csv", "events_per_entity_day")] == 2.0
    assert got[("cat", "flagged_share")] == pytest.approx(3 / 80, abs=1e-6)
    assert got[("cat", "seconds_per_series")] == 3.0
    assert {m for g, m in got if g == "overall"} == set(results.TIMESERIES_METRICS) | set(results.NAB_METRICS) | set(
        results.VOLUME_METRICS
    )
    assert all(set(r) == {"benchmark", "detector", "group", "metric", "value"} for r in records)


def test_unscored_rows_count_as_not_flagged_and_stay_out_of_the_aucs():
    frame = series(20, [5], [5, 6], unscored=3)
    records = results.timeseries_records("asd", "det", {"e": frame}, {"e": "asd"}, {}, {"e": 4}, {"e": 1.0})
    got = {(r["group"], r["metric"]): r["value"] for r in records}
    assert got[("e", "pointwise_recall")] == 0.5
    # scored rows 3..19: positives score 1 (row 5) and 0 (row 6), 15 negatives score 0 -> (1 + 0.5) / 2
    assert got[("e", "roc_auc")] == 0.75
    assert frame["score"].isna().sum() == 3 and not frame.loc[:2, "flag"].any()


def test_media_records_give_per_class_and_mean():
    a = pd.DataFrame({"label": [0, 0, 1, 1], "raw_score": [0.1, 0.2, 0.3, 0.4]})
    b = pd.DataFrame({"label": [0, 0, 1, 1], "raw_score": [0.4, 0.1, 0.3, 0.2]})
    got = {(r["group"], r["metric"]): r["value"] for r in results.media_records("mnist", "det", {"0": a, "1": b})}
    assert got[("0", "roc_auc")] == 1.0 and got[("1", "roc_auc")] == 0.5
    assert got[("overall", "roc_auc")] == 0.75


def test_markdown_table_lists_detectors_before_baselines():
    records = [
        results.record("nab", d, "overall", "roc_auc", v)
        for d, v in (("baseline_pca", 0.6), ("zeta", 0.7), ("alpha", float("nan")))
    ]
    text = results.markdown_table(records, ["overall"])
    rows = [
        line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "detector" not in line
    ]
    assert rows == ["alpha", "zeta", "baseline_pca"]
    assert "| alpha | – |" in text


def write_nab(root, series: dict[str, pd.DataFrame], windows: dict) -> None:
    for key, frame in series.items():
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def test_nab_reader_names_the_file_and_what_it_expected(tmp_path):
    good = pd.DataFrame({"timestamp": stamps(10).dt.strftime("%Y-%m-%d %H:%M:%S"), "value": np.arange(10.0)})
    write_nab(
        tmp_path,
        {"cat/a.csv": good, "cat/b.csv": good.rename(columns={"value": "v"})},
        {"cat/a.csv": [], "cat/b.csv": []},
    )
    with pytest.raises(DatasetError, match=r"cat/b.csv: expected a numeric column 'value'"):
        load_nab(tmp_path)
    write_nab(tmp_path, {"cat/b.csv": good}, {"cat/a.csv": []})
    with pytest.raises(DatasetError, match=r"combined_windows.json: no entry for cat/b.csv"):
        load_nab(tmp_path)
    with pytest.raises(DatasetError, match=r"anomaly-free.csv does not exist: expected SKAB's anomaly-free run"):
        load_skab(tmp_path)
    with pytest.raises(DatasetError, match="unknown benchmark"):
        load_cases("yahoo", tmp_path)


def test_nab_cases_are_one_table_per_series_on_its_own_step(tmp_path):
    hourly = pd.DataFrame(
        {
            "timestamp": pd.Series(T0 + pd.Timedelta("1h") * np.arange(60)).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "value": np.ones(60),
        }
    )
    window = [[str(T0 + pd.Timedelta("10h")), str(T0 + pd.Timedelta("12h"))]]
    write_nab(tmp_path, {"realX/s-1.csv": hourly}, {"realX/s-1.csv": window})
    (case,) = nab_cases(tmp_path, None)
    assert case.table.name == table_name("nab", "realX/s-1.csv") == "nab_realx_s_1"
    assert case.table.step_seconds == 3600 and case.train_days == case.score_days
    assert case.truth["label"].sum() == 3 and case.category == {"realX/s-1.csv": "realX"}


def test_evaluate_on_a_folder_of_the_wrong_format_exits_2_naming_the_file(tmp_path, capsys):
    from anomalake.pipelines.jobs.cli import main

    (tmp_path / "data" / "valve1").mkdir(parents=True)
    (tmp_path / "data" / "valve1" / "1.csv").write_text("datetime;x\n2020-01-01 00:00:00;1\n")
    code = main(
        [
            "evaluate",
            "--benchmark",
            "nab",
            "--data",
            str(tmp_path),
            "--detector",
            "default",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "combined_windows.json does not exist: expected NAB's anomaly windows" in err
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_an_unknown_detector_before_starting_spark(tmp_path, capsys):
    from anomalake.pipelines.jobs.cli import main

    code = main(["evaluate", "--benchmark", "sms", "--data", str(tmp_path), "--detector", "nope"])
    assert code == 2 and "detector nope: no" in capsys.readouterr().err


def test_pooled_baseline_gives_new_entities_the_median_of_the_known_ones():
    from anomalake.models.scaling import EntityScaling

    known = EntityScaling(
        ("a", "b"),
        {"h1": (0.0, 10.0), "h2": (2.0, 30.0), "h3": (4.0, 20.0)},
        {"h1": (1.0, 1.0), "h2": (3.0, 5.0), "h3": (2.0, 3.0)},
    )
    merged = known.merged(known.pooled(["new"]))
    assert merged.centers["new"] == (2.0, 20.0) and merged.scales["new"] == (2.0, 3.0)
    assert merged.centers["h1"] == (0.0, 10.0) and merged.knows(["new", "h2", "other"]).tolist() == [True, True, False]
    assert EntityScaling.from_json(merged.to_json()) == merged


def test_asd_layout_takes_any_number_of_metrics_and_names_a_file_that_does_not_fit(tmp_path):
    """The Server Machine Dataset (38 metrics, machine-G-N names) in ASD's layout is read like ASD (19)."""
    folder = tmp_path / "smd" / "npy"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("machine-2-1", "machine-1-10", "machine-1-2"):
        np.save(folder / f"{name}_train.npy", rng.normal(size=(600, 38)))
        np.save(folder / f"{name}_test.npy", rng.normal(size=(500, 38)))
        np.save(folder / f"{name}_test_label.npy", (np.arange(500) > 450).astype(int))
    assert asd_entities(tmp_path / "smd") == ["machine-1-2", "machine-1-10", "machine-2-1"]
    cases = load_cases("asd", tmp_path / "smd", ["machine-1-2"])
    assert [c.table.features for c in cases] == [tuple(f"m{i}" for i in range(38))]
    assert cases[0].truth["label"].sum() == 49
    np.save(folder / "machine-1-2_test.npy", rng.normal(size=(500, 37)))
    with pytest.raises(DatasetError, match=r"machine-1-2_test.npy: expected shape \(steps, 38\)"):
        load_cases("asd", tmp_path / "smd", ["machine-1-2"])
    np.save(folder / "machine-2-1_test_label.npy", np.zeros(400, dtype=int))
    with pytest.raises(DatasetError, match=r"machine-2-1_test_label.npy: expected shape \(500,\)"):
        load_cases("asd", tmp_path / "smd", ["machine-2-1"])


def test_quick_subset_spans_every_time_series_benchmark_in_shared():
    assert set(QUICK_GROUPS) == set(TIME_SERIES) - {"skab_runs", "nab_nightly"}  # the same series as skab, nab
    for benchmark, groups in QUICK_GROUPS.items():
        cases = load_cases(benchmark, SHARED / {"nab": "nab", "asd": "asd", "skab": "skab"}[benchmark], list(groups))
        assert sorted(g for c in cases for g in c.groups) == sorted(groups), benchmark


def test_quick_summary_averages_vus_pr_over_the_benchmarks():
    def rec(benchmark, detector, group, metric, value):
        return results.record(benchmark, detector, group, metric, value)

    records = [
        rec("nab", "det", "overall", "vus_pr", 0.2),
        rec("nab", "det", "realTweets", "vus_pr", 0.9),  # a category: not the benchmark's summary group
        rec("asd", "det", "asd", "vus_pr", 0.4),
        rec("skab", "det", "overall", "vus_pr", 0.6),
        rec("skab", "det", "overall", "events_per_entity_day", 3.0),
        rec("nab", "baseline_x", "overall", "vus_pr", 0.5),
        rec("asd", "baseline_x", "asd", "vus_pr", float("nan")),
        rec("skab", "baseline_x", "overall", "vus_pr", 0.5),
    ]
    summary = quick_summary(records)
    assert summary["aggregate"]["det"] == pytest.approx(0.4, abs=1e-9)
    assert summary["aggregate"]["baseline_x"] is None  # a benchmark without the figure: no aggregate to compare
    assert summary["figures"]["skab"]["det"]["events_per_entity_day"] == 3.0
    table = quick_table(summary)
    assert table.splitlines()[2].startswith("| det | 0.400 | 0.200 |")
    assert table.splitlines()[3].startswith("| baseline_x | – | 0.500 |")
    assert json.loads(json.dumps(summary)) == summary


def test_skab_runs_train_on_each_runs_first_400_rows_and_score_all_of_it():
    _, runs = load_skab(SHARED / "skab")
    cases = load_cases("skab_runs", SHARED / "skab")
    assert [c.groups for c in cases] == [(r.group,) for r in runs] and len(cases) == 34
    for case, run in zip(cases, runs):
        first, second = sorted(case.raw)
        assert case.train_days == (first,) and case.score_days == (first, second)
        assert len(case.raw[first]) == 400 and len(case.raw[second]) == len(run.frame) - 400
        moved = pd.concat([case.raw[first], case.raw[second]], ignore_index=True)["ts"]
        assert (moved.diff() == run.frame["timestamp"].diff()).iloc[1:].all(), "steps unchanged"
        assert case.truth["label"].tolist() == run.labels.tolist()


def test_skab_leaderboard_f1_counts_every_row_of_every_run():
    # a: labelled rows 10-14, flagged 12-13 and 30; rows 0-11 have no score (not flagged) -> tp 2, fp 1, fn 3
    a = series(40, [12, 13, 30], list(range(10, 15)))
    a.loc[:11, ["score", "raw_score"]] = np.nan
    b = series(40, [], [])  # nothing labelled, nothing flagged: 40 true negatives
    records = results.timeseries_records(
        "skab_runs",
        "det",
        {"v/a.csv": a, "v/b.csv": b},
        {"v/a.csv": "v", "v/b.csv": "v"},
        {},
        {"v/a.csv": 4, "v/b.csv": 4},
        {},
    )
    got = {(r["group"], r["metric"]): r["value"] for r in records}
    assert got[("v", "skab_f1")] == pytest.approx(2 / (2 + (3 + 1) / 2), abs=1e-6)
    assert got[("v", "skab_far")] == pytest.approx(100 / 75, abs=1e-6)  # 1 of 35 + 40 normal rows
    assert got[("v", "skab_mar")] == pytest.approx(60.0, abs=1e-6)


def test_nab_nightly_trains_on_the_first_days_and_scores_the_rest_with_windows_cut_to_them(tmp_path):
    cases = load_cases("nab_nightly", SHARED / "nab", ["realKnownCause", "realAdExchange"])
    assert len(cases) == 13
    for case in cases:
        days = sorted(case.raw)
        assert case.train_days + case.score_days == tuple(days), case.name
        rows = [len(case.raw[d]) for d in days]
        wanted = max(0.15 * sum(rows), 10 * case.table.window.length)
        trained = sum(rows[: len(case.train_days)])
        assert trained >= wanted > trained - rows[len(case.train_days) - 1], case.name  # the fewest whole days
        scored = pd.concat([case.raw[d] for d in case.score_days], ignore_index=True)
        assert case.truth["ts"].tolist() == scored["ts"].tolist(), case.name  # labels only of scored rows
        first = scored["ts"].iloc[0]
        (group,) = case.groups
        assert all(start >= first and end >= start for start, end in case.windows[group]), case.name
    # machine_temperature's first anomaly window ends before training does: it is not asked of the scored days
    (machine,) = [c for c in cases if c.groups == ("realKnownCause/machine_temperature_system_failure.csv",)]
    (whole,) = load_cases("nab", SHARED / "nab", [machine.groups[0]])
    assert len(machine.windows[machine.groups[0]]) < len(whole.windows[machine.groups[0]])
    short = pd.DataFrame({"timestamp": stamps(700).dt.strftime("%Y-%m-%d %H:%M:%S"), "value": np.arange(700.0)})
    write_nab(tmp_path, {"cat/short.csv": short}, {"cat/short.csv": []})
    with pytest.raises(DatasetError, match=r"NAB series cat/short.csv: 700 rows over 3 days leave no day to score"):
        load_cases("nab_nightly", tmp_path)
