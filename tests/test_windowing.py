"""Windowing rules on one entity's rows, without Spark: grid, gap filling, stride alignment, quarantine."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date, timedelta

import numpy as np
import pandas as pd

from anomalake.pipelines.config import CONF_DIR, GapFill, load_tables, parse_table
from anomalake.pipelines.features import windowing
from anomalake.pipelines.ingest.generate import FEATURES, GenerateSpec, generate_frames
from anomalake.pipelines.lake.schemas import FEATURE_FILE
from anomalake.pipelines.lake.task_files import TaskFiles

TARGET = frozenset({"2026-02-03"})


def rows(n: int = 40, start: str = "2026-02-02 21:00") -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="5min")
    values = np.arange(n, dtype=float)
    frame = pd.DataFrame(
        {"entity_id": "e1", "ts": ts, "cpu": values, "memory": values, "latency": values, "requests": values}
    )
    frame["dt"] = frame["ts"].dt.strftime("%Y-%m-%d")
    return frame


def outcomes(frame: pd.DataFrame, table) -> pd.DataFrame:
    return windowing.cut_windows(frame, table, TARGET).set_index("ts")


def test_every_target_row_gets_one_outcome_and_lookback_rows_none(tiny_table):
    frame = rows()
    out = outcomes(frame, tiny_table)
    assert len(out) == (frame["dt"] == "2026-02-03").sum()
    assert set(out["outcome"]) == {windowing.WINDOW}


def test_window_holds_the_last_steps_time_major(tiny_table):
    out = outcomes(rows(), tiny_table)
    first = out.iloc[0]
    window = np.asarray(first["x"]).reshape(8, 4)
    assert window[-1, 0] == 36 and window[0, 0] == 29  # 2026-02-03 00:00 is row 36
    assert np.all(window[:, 0] == window[:, 3])


def test_short_gap_is_interpolated_long_gap_quarantines(tiny_table):
    frame = rows().drop(index=[30, 31])  # 2 missing steps = fill_limit
    out = outcomes(frame, tiny_table)
    assert set(out["outcome"]) == {windowing.WINDOW}
    np.testing.assert_allclose(np.asarray(out.iloc[0]["x"]).reshape(8, 4)[:, 0], np.arange(29, 37))
    assert out.iloc[0]["imputed_step_offsets"] == [5, 6]  # rows 30 and 31 of the window ending at row 36
    assert out.iloc[-1]["imputed_step_offsets"] == []  # row 39's window starts at row 32

    frame = rows().drop(index=[30, 31, 32])  # 3 missing > fill_limit
    out = outcomes(frame, tiny_table)
    assert (out["reason"] == "gap_exceeds_fill_limit").sum() == 4  # ends 36..39 reach back over the gap
    assert (out["outcome"] == windowing.WINDOW).sum() == 0


def test_bad_rows_are_quarantined_with_reasons(tiny_table):
    frame = rows()
    frame.loc[38, "cpu"] = np.nan
    duplicate = frame.iloc[[39]].assign(cpu=-1.0)
    out = windowing.cut_windows(pd.concat([frame, duplicate], ignore_index=True), tiny_table, TARGET)
    reasons = out["reason"].value_counts().to_dict()
    assert reasons == {"non_finite_value": 1, "duplicate_key": 1}
    assert len(out) == 5


def test_first_rows_without_history_are_quarantined(tiny_table):
    out = outcomes(rows(10, start="2026-02-03 00:00"), tiny_table)
    assert (out["reason"] == "insufficient_history").sum() == 7
    assert (out["outcome"] == windowing.WINDOW).sum() == 3


def test_stride_ends_are_aligned_to_the_epoch(tiny_table):
    import dataclasses

    table = dataclasses.replace(tiny_table, window=dataclasses.replace(tiny_table.window, stride=3))
    out = outcomes(rows(), table)
    ends = out.index[out["outcome"] == windowing.WINDOW]
    assert len(ends) > 0 and all((t.value // 10**9 // 300) % 3 == 0 for t in ends)
    assert set(out["outcome"]) == {windowing.WINDOW, windowing.CONTEXT}


def test_timestamps_are_snapped_to_the_nearest_grid_step(tiny_table):
    on_grid = outcomes(rows(), tiny_table)
    late, early = rows(), rows()
    late["ts"] += pd.Timedelta("140s")  # under half a 5-minute step: each row keeps its step
    early["ts"] -= pd.Timedelta("140s")
    for moved in (late, early):
        out = outcomes(moved, tiny_table)
        assert set(out["outcome"]) == {windowing.WINDOW}
        np.testing.assert_array_equal(np.stack(out["x"]), np.stack(on_grid["x"]))  # the same values at the same steps
    jumped = rows()
    jumped.loc[38, "ts"] += pd.Timedelta("160s")  # over half a step: onto row 39's step, which is then taken twice
    strict = dataclasses.replace(tiny_table, gaps=dataclasses.replace(tiny_table.gaps, aggregate="none"))
    out = windowing.cut_windows(jumped, strict, TARGET).set_index("ts")
    assert out.loc[jumped.loc[38, "ts"], "outcome"] == windowing.WINDOW  # the earlier of the two keeps the step
    assert out.loc[jumped.loc[39, "ts"], "reason"] == "duplicate_key"
    # Resampled (the default): the step's reading is the mean of both, owned by the later row; step 38 is filled.
    out = windowing.cut_windows(jumped, tiny_table, TARGET).set_index("ts")
    assert out.loc[jumped.loc[38, "ts"], "outcome"] == windowing.CONTEXT
    window = np.asarray(out.loc[jumped.loc[39, "ts"], "x"]).reshape(8, 4)[:, 0]
    np.testing.assert_allclose(window[-3:], [37.0, 37.75, 38.5])  # 38 lies between 37 and the step's mean 38.5


def test_fill_short_gaps_leaves_open_ends_alone():
    grid = np.array([[np.nan], [1.0], [np.nan], [3.0], [np.nan]])
    filled = windowing.fill_short_gaps(grid.copy(), (GapFill(2),))
    assert np.isnan(filled[0, 0]) and filled[2, 0] == 2.0 and np.isnan(filled[4, 0])


def test_gaps_are_filled_per_feature_by_its_own_limit_and_method():
    grid = np.array([[0.0, 10.0], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan], [4.0, 50.0]])
    filled = windowing.fill_short_gaps(grid.copy(), (GapFill(3, "linear"), GapFill(2, "previous")))
    np.testing.assert_array_equal(filled[1:4, 0], [1.0, 2.0, 3.0])
    assert np.isnan(filled[1:4, 1]).all()  # 3 missing steps > this feature's limit of 2: left missing
    filled = windowing.fill_short_gaps(grid.copy(), (GapFill(3, "linear"), GapFill(3, "previous")))
    np.testing.assert_array_equal(filled[1:4, 1], [10.0, 10.0, 10.0])


def test_entities_come_whole_across_batch_boundaries_with_nulls_as_one_group():
    import pyarrow as pa

    entity = [None, None, "a", "a", "a", "b", "c", "c"]
    frame = pd.DataFrame(
        {"entity_id": entity, "ts": pd.date_range("2026-02-03", periods=8, freq="5min", tz="UTC"), "v": range(8)}
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    batches = table.to_batches(max_chunksize=3)  # boundaries inside the null group and inside "a" and "c"
    groups = [
        (g["entity_id"].iloc[0], g["v"].tolist()) for g in windowing._entities(iter(batches), ["entity_id", "ts", "v"])
    ]
    assert groups == [(None, [0, 1]), ("a", [2, 3, 4]), ("b", [5]), ("c", [6, 7])]


def feature_rows(n: int, entity: str = "e1", day: str = "2026-02-03"):
    ts = pd.date_range(day, periods=n, freq="5min", tz="UTC")
    rows = pd.DataFrame({"entity_id": entity, "ts": ts, "dt": day})
    return rows, np.arange(n * 4, dtype=np.float32).reshape(n, 4), np.zeros((n, 2), dtype=bool)


def test_a_task_attempt_that_fails_leaves_no_file_and_a_retry_replaces_the_whole_file(tmp_path):
    import pyarrow.parquet as pq

    rows, flat, imputed = feature_rows(10)
    try:
        with TaskFiles(tmp_path, FEATURE_FILE, part=3, attempt=0) as files:
            windowing._add_windows(files, rows, flat, imputed)
            files._flush("2026-02-03")  # a row group is on disk when the task dies
            raise RuntimeError("executor lost")
    except RuntimeError:
        pass
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "a failed attempt left files behind"
    for attempt in (1, 2):  # the retry, then a second computation of the same partition
        with TaskFiles(tmp_path, FEATURE_FILE, part=3, attempt=attempt) as files:
            windowing._add_windows(files, rows, flat, imputed)
    written = [p.name for p in (tmp_path / "dt=2026-02-03").iterdir()]
    assert written == ["part-00003.parquet"]
    table = pq.read_table(tmp_path / "dt=2026-02-03" / "part-00003.parquet")
    assert table.schema.equals(FEATURE_FILE) and table.num_rows == 10
    assert np.array_equal(np.stack(table.column("x").to_pylist()), flat)


def test_windows_counted_but_not_written_stop_the_job(tmp_path):
    import pytest

    from anomalake.pipelines.errors import JobError
    from anomalake.pipelines.lake.delta import check_written, run_files

    rows, flat, imputed = feature_rows(5)
    with TaskFiles(tmp_path, FEATURE_FILE, part=0, attempt=0, tag="-run1") as files:
        windowing._add_windows(files, rows, flat, imputed)
    written = run_files(tmp_path, {}, ["2026-02-03"], "-run1")
    check_written("telemetry", written, {"2026-02-03": 5}, "windows")
    with pytest.raises(JobError, match="table telemetry, partition dt=2026-02-03: 6 windows counted but 5 written"):
        check_written("telemetry", written, {"2026-02-03": 6}, "windows")
    assert run_files(tmp_path, {}, ["2026-02-03"], "-run2") == {"2026-02-03": []}, "another run's files are not ours"


def _windows_of(raw: pd.DataFrame, table, days: frozenset[str]) -> pd.DataFrame:
    raw = raw.assign(dt=raw["ts"].dt.strftime("%Y-%m-%d"))
    return pd.concat([windowing.cut_windows(rows, table, days) for _, rows in raw.groupby("entity_id")])


GAPPY = GenerateSpec("telemetry", date(2026, 3, 1), 6, 3, 7, gaps=True)
SCORED_DAYS = frozenset((GAPPY.start + timedelta(days=d)).isoformat() for d in range(1, GAPPY.days))


def test_a_gappy_table_is_mostly_windowed_by_the_default_gap_policy():
    raw, _ = generate_frames(GAPPY)
    regular, _ = generate_frames(dataclasses.replace(GAPPY, gaps=False))
    assert len(raw) < 0.97 * len(regular)  # outages and lost readings, though some steps were read twice
    table = parse_table("gappy", {"features": list(FEATURES), "window": {"length": 64}})  # no gaps block
    out = _windows_of(raw, table, SCORED_DAYS)
    share = (out["outcome"] == windowing.WINDOW).mean()
    assert share >= 0.9, f"{share:.1%} of the rows end a window: {out['reason'].value_counts().to_dict()}"
    assert (out["outcome"] == windowing.CONTEXT).any()  # second readings in a step are folded into it
    strict = parse_table("gappy", {"features": list(FEATURES), "window": {"length": 64}, "gaps": {"fill_limit": 3}})
    assert (_windows_of(raw, strict, SCORED_DAYS)["outcome"] == windowing.WINDOW).mean() < share - 0.1


def test_windows_of_a_regular_table_are_those_before_gap_policies():
    # Digest of the generated regular table's windows (with three bad values filled) by the windowing code before
    # the gaps block existed (fill_limit 3, duplicates quarantined): the same bytes today.
    raw, _ = generate_frames(GenerateSpec("telemetry", date(2026, 3, 1), 3, 3, 5))
    raw.loc[[100, 101, 700], "cpu"] = np.nan
    table = load_tables(CONF_DIR / "tables.yml")["telemetry"]
    digest = hashlib.sha256()
    for _, rows in raw.assign(dt=raw["ts"].dt.strftime("%Y-%m-%d")).groupby("entity_id"):
        out = windowing.cut_windows(rows, table, frozenset({"2026-03-02", "2026-03-03"}))
        digest.update(out[["outcome"]].to_csv().encode())
        digest.update(str(out["reason"].tolist()).encode())
        for x in out["x"]:
            if x is not None:
                digest.update(np.asarray(x, dtype=np.float32).tobytes())
    assert digest.hexdigest() == "a89a323d3b99bc6fd7f867165f5317d79d56913e776b520477e0ff937573c0c1"


def test_rows_after_an_outage_longer_than_a_window_start_again_and_are_no_data_problem(tiny_table):
    frame = rows(60).drop(index=range(38, 48))  # ten missing steps: longer than the 8-step window, over fill 2
    out = outcomes(frame, tiny_table)
    after = out["reason"] == "after_long_gap"
    assert after.sum() == tiny_table.window.length - 1  # rows 48..54 reach back into the outage
    assert (out["outcome"] == windowing.WINDOW).sum() == len(out) - after.sum()
    assert "after_long_gap" in windowing.NOT_A_DATA_PROBLEM  # like the start of a table: not held against the job
    short = outcomes(rows(60).drop(index=range(40, 43)), tiny_table)  # three steps: over fill 2, under a window
    assert set(short["reason"].dropna()) == {"gap_exceeds_fill_limit"}


def test_a_mask_channel_shows_the_model_which_steps_were_imputed(tiny_table):
    masked = dataclasses.replace(tiny_table, gaps=dataclasses.replace(tiny_table.gaps, mask=True))
    assert masked.input_features == (*tiny_table.features, "imputed") and masked.n_inputs == 8 * 5
    assert masked.signature()["features"][-1] == "imputed"
    out = outcomes(rows().drop(index=[30, 31]), masked)
    first = np.asarray(out.iloc[0]["x"]).reshape(8, 5)
    np.testing.assert_array_equal(first[:, 4], [0, 1, 1, 0, 0, 0, 0, 0])  # rows 30 and 31 of rows 29..36
    np.testing.assert_array_equal(
        first[:, :4], np.asarray(outcomes(rows().drop(index=[30, 31]), tiny_table).iloc[0]["x"]).reshape(8, 4)
    )
    parsed = parse_table("t", {"features": ["cpu"], "window": {"length": 4}, "gaps": {"mask": True}})
    assert parsed.sample_shape == (4, 2) and parsed.n_inputs == 8
