"""`anomalake import metrics`: a user's CSV, TSV or Parquet metrics -> raw day partitions, quarantine, run records,
and the catalog entry in the user's own tables file (unit tier: pandas, pyarrow and delta-rs; one Spark test)."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable

from anomalake.pipelines.config import load_tables, parse_table
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.ingest.metrics import import_metrics, source_file_name
from anomalake.pipelines.ingest.table_entry import add_table, infer_step, metrics_entry
from anomalake.pipelines.jobs.cli import main
from anomalake.pipelines.lake.layout import Lake
from anomalake.pipelines.settings import PACKAGE_TABLES

HOSTS = parse_table(
    "hosts",
    {
        "kind": "timeseries",
        "entity": "host",
        "time": "time",
        "features": ["cpu", "mem"],
        "step": "5min",
        "window": {"length": 4},
        "max_quarantine_share": 0.5,
    },
)
CSV = """host,time,cpu,mem
a,2026-03-01T23:55:00Z,1.0,10
a,2026-03-02T00:00:00+01:00,2.0,11
a,2026-03-02T00:05:00Z,3.5,12
b,2026-03-02T00:00:00Z,n/a,13
,2026-03-02T00:05:00Z,1.0,14
b,yesterday,1.0,15
b,2026-03-02T00:10:00Z,4.0,
"""


def raw(lake: Lake) -> pd.DataFrame:
    frame = pd.read_parquet(lake.raw(HOSTS))
    return frame.sort_values(["host", "time"], ignore_index=True)


def quarantine(lake: Lake) -> pd.DataFrame:
    return DeltaTable(str(lake.quarantine("hosts"))).to_pandas().sort_values("detail", ignore_index=True)


def runs(lake: Lake) -> pd.DataFrame:
    return DeltaTable(str(lake.runs())).to_pandas()


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake")


def test_rows_land_on_their_utc_day_and_unusable_rows_are_quarantined_with_a_reason(lake, tmp_path):
    (tmp_path / "hosts.csv").write_text(CSV)
    result = import_metrics(lake, HOSTS, tmp_path / "hosts.csv")

    assert sorted(p.parent.name for p in lake.raw(HOSTS).glob("dt=*/*.parquet")) == ["dt=2026-03-01", "dt=2026-03-02"]
    rows = raw(lake)
    assert rows["time"].dt.tz is not None
    assert [(r.host, r.time.isoformat(), r.cpu) for r in rows.itertuples()] == [
        ("a", "2026-03-01T23:00:00+00:00", 2.0),  # +01:00 midnight is 23:00 UTC of the day before
        ("a", "2026-03-01T23:55:00+00:00", 1.0),
        ("a", "2026-03-02T00:05:00+00:00", 3.5),
        ("b", "2026-03-02T00:10:00+00:00", 4.0),
    ]
    assert pd.isna(rows["mem"].iloc[3]), "an empty cell is a null (the windows job fills or quarantines it)"
    q = quarantine(lake)
    assert list(q["reason"]) == ["non_numeric_value", "null_key", "unparseable_timestamp"]
    assert list(q["detail"]) == [
        "hosts.csv: column cpu: not a number: n/a",
        "hosts.csv: column host is empty",
        "hosts.csv: column time: yesterday",
    ]
    assert set(q["job"]) == {"import"} and q["run_id"].nunique() == 1
    records = runs(lake)
    assert (
        records["rows_in"] == records["rows_out"] + records["quarantined"].map(lambda q: sum(n for _, n in q))
    ).all()
    assert records["rows_in"].sum() == 7 == result.total_in and result.total_out == 4


def test_a_reimport_replaces_its_days_and_keeps_other_files_of_the_same_days(lake, tmp_path):
    (tmp_path / "hosts.csv").write_text(CSV)
    (tmp_path / "more.csv").write_text("host,time,cpu,mem\nc,2026-03-02T00:00:00Z,7,70\n")
    import_metrics(lake, HOSTS, tmp_path / "hosts.csv")
    import_metrics(lake, HOSTS, tmp_path / "more.csv")
    first = raw(lake)
    import_metrics(lake, HOSTS, tmp_path / "hosts.csv")
    pd.testing.assert_frame_equal(raw(lake), first)
    assert len(first) == 5 and len(quarantine(lake)) == 3, "a re-import never duplicates rows or quarantined rows"

    (tmp_path / "hosts.csv").write_text("host,time,cpu,mem\na,2026-03-05T00:00:00Z,9,90\n")
    import_metrics(lake, HOSTS, tmp_path / "hosts.csv")
    assert sorted(zip(raw(lake)["host"], raw(lake)["cpu"])) == [("a", 9.0), ("c", 7.0)]
    assert not (lake.raw(HOSTS) / "dt=2026-03-01" / source_file_name("hosts.csv")).exists()
    assert quarantine(lake).empty, "the file's quarantined rows went with its old content"


def test_a_folder_of_csv_tsv_and_parquet_files_is_imported_with_spark_side_files_skipped(lake, tmp_path):
    folder = tmp_path / "export"
    (folder / "2026").mkdir(parents=True)
    (folder / "2026" / "a.csv").write_text("host,time,cpu,mem\na,2026-03-02T00:00:00Z,1,2\n")
    (folder / "b.tsv").write_text("host\ttime\tcpu\tmem\textra\nb\t2026-03-02T00:00:00Z\t3\t4\tx\n")
    frame = pd.DataFrame({"host": ["c"], "time": pd.to_datetime(["2026-03-02T00:05:00Z"]), "cpu": [5], "mem": [6.0]})
    frame.to_parquet(folder / "c.parquet")  # pandas writes nanosecond timestamps
    (folder / "_SUCCESS").write_text("")
    (folder / ".c.parquet.crc").write_text("x")
    result = import_metrics(lake, HOSTS, folder)
    assert result.files == ["2026/a.csv", "b.tsv", "c.parquet"]
    assert list(raw(lake)[["host", "cpu", "mem"]].itertuples(index=False, name=None)) == [
        ("a", 1.0, 2.0),
        ("b", 3.0, 4.0),
        ("c", 5.0, 6.0),
    ]
    assert pq.read_schema(next(lake.raw(HOSTS).glob("dt=*/*.parquet"))).field("time").type == pa.timestamp("us", "UTC")


def test_naive_timestamps_need_a_zone_and_one_a_clock_change_skips_is_quarantined(lake, tmp_path):
    (tmp_path / "local.csv").write_text(
        "host,time,cpu,mem\na,2026-07-01 12:00:00,1,1\na,2026-03-29 02:30:00,1,1\na,2026-07-01 12:05:00,1,1\n"
    )
    with pytest.raises(JobError, match=r"file .*local.csv, column time: timestamps without a time zone .*--timezone"):
        import_metrics(lake, HOSTS, tmp_path / "local.csv")
    assert not lake.root.exists(), "nothing is written"
    import_metrics(lake, HOSTS, tmp_path / "local.csv", "Europe/Berlin")
    assert [t.isoformat() for t in raw(lake)["time"]] == ["2026-07-01T10:00:00+00:00", "2026-07-01T10:05:00+00:00"]
    assert list(quarantine(lake)["reason"]) == ["ambiguous_local_time"]  # 02:30 does not exist that night


# Bad input as a whole: (file name, content or None for bytes below, the error's pattern). Each stops the import
# with one line naming the file and, where one is at fault, the column; nothing is written.
BAD_FILES = {
    "wrong_column": (
        "hosts.csv",
        "host,time,cpu,memory\na,2026-03-02T00:00:00Z,1,2\n",
        r"file .*hosts.csv, column mem: not found \(the file's columns: host, time, cpu, memory\)",
    ),
    "neither_parquet_nor_csv": (
        "hosts.xlsx",
        "PK\x03\x04 a spreadsheet",
        r"file .*hosts.xlsx: neither Parquet nor CSV/TSV",
    ),
    "parquet_that_is_not": ("hosts.parquet", "host,time\n", r"file .*hosts.parquet: not a readable PARQUET file"),
    "unclosed_quote": (
        "hosts.csv",
        'host,time,cpu,mem\na,2026-03-02T00:00:00Z,1,2\nb,"2026-03-02,1,2\n',
        r"file .*hosts.csv: not a readable CSV file \(Error tokenizing data. C error: EOF inside string",
    ),
    "more_fields_than_the_header": (
        "hosts.csv",
        "host,time,cpu,mem\na,2026-03-02T00:00:00Z,1,2,3,4\n",
        r"file .*hosts.csv: not a readable CSV file \(its rows have more fields than its header\)",
    ),
    "empty_file": ("hosts.csv", "", r"file .*hosts.csv: empty$"),
    "header_only": ("hosts.csv", "host,time,cpu,mem\n", r"file .*hosts.csv: no rows \(only a header\)"),
    "time_that_never_parses": (
        "hosts.csv",
        "host,time,cpu,mem\na,soon,1,2\nb,later,1,2\n",
        r"file .*hosts.csv, column time: no value parses as a timestamp \(e.g. 'soon'\)",
    ),
    "epoch_numbers_as_time": (
        "hosts.parquet",
        None,
        r"file .*hosts.parquet, column time: holds numbers \(int64\), not timestamps",
    ),
    "naive_parquet_times": (
        "hosts.parquet",
        None,
        r"file .*hosts.parquet, column time: timestamps without a time zone; say which one with --timezone",
    ),
}


def test_every_kind_of_bad_file_is_a_case():
    assert len(BAD_FILES) == 10  # the README's count: a kind added or dropped must change both


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_input_file(kind, lake, tmp_path):
    name, content, message = BAD_FILES[kind]
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    else:
        times = (
            [1772409600, 1772409900]
            if kind == "epoch_numbers_as_time"
            else pd.to_datetime(["2026-03-02 00:00", "2026-03-02 00:05"])
        )
        pd.DataFrame({"host": ["a", "a"], "time": times, "cpu": [1.0, 2.0], "mem": [3.0, 4.0]}).to_parquet(path)
    with pytest.raises(JobError) as error:
        import_metrics(lake, HOSTS, path)
    assert "\n" not in str(error.value) and re.search(message, str(error.value)), str(error.value)
    assert not lake.root.exists()


def test_too_many_unusable_rows_stop_the_import_before_anything_is_written(lake, tmp_path):
    (tmp_path / "hosts.csv").write_text(
        "host,time,cpu,mem\na,2026-03-02T00:00:00Z,x,1\na,2026-03-02T00:05:00Z,1,1\n,2026-03-02T00:10:00Z,1,1\n"
    )
    with pytest.raises(JobError, match=r"table hosts: 2 of 3 imported rows cannot be used .*nothing was written"):
        import_metrics(lake, HOSTS, tmp_path / "hosts.csv")
    assert not lake.root.exists()


def test_the_step_is_the_median_spacing_of_an_entitys_readings():
    times = pd.to_datetime(
        ["2026-03-02 00:00", "2026-03-02 00:01", "2026-03-02 00:02", "2026-03-02 00:03:10", "2026-03-02 00:00"],
        utc=True,
        format="mixed",
    )
    rows = pd.DataFrame({"host": ["a", "a", "a", "a", "b"], "time": times})
    assert infer_step(rows, "host", "time", "x") == 60
    with pytest.raises(JobError, match="cannot tell the step"):
        infer_step(rows[rows["host"] == "b"], "host", "time", "x")


def test_write_config_appends_to_the_users_file_keeping_its_comments(tmp_path):
    tables = tmp_path / "tables.yml"
    tables.write_text("# my lake's tables\nother:  # kept\n  features: [x]\n  window: {length: 4}\n")
    entry = metrics_entry("hosts", "host", "time", ["cpu", "mem"], 60)
    table = add_table(tables, PACKAGE_TABLES, "hosts", entry, "hosts.csv")
    assert (table.entity, table.time, table.features, table.step_seconds) == ("host", "time", ("cpu", "mem"), 60)
    text = tables.read_text()
    assert text.startswith("# my lake's tables\nother:  # kept\n") and sorted(load_tables(tables)) == ["hosts", "other"]
    assert add_table(tables, PACKAGE_TABLES, "hosts", entry, "hosts.csv") == table and tables.read_text() == text
    with pytest.raises(JobError, match=r"table hosts is already in .* with other columns"):
        add_table(tables, PACKAGE_TABLES, "hosts", {**entry, "features": ["cpu"]}, "hosts.csv")
    with pytest.raises(JobError, match=r"--write-config adds the table to your own tables file: set ANOMALAKE_TABLES"):
        add_table(PACKAGE_TABLES, PACKAGE_TABLES, "hosts", entry, "hosts.csv")


def test_the_command_adds_the_table_and_imports_or_says_in_one_line_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANOMALAKE_TABLES", str(tmp_path / "mine.yml"))
    (tmp_path / "hosts.csv").write_text(CSV)
    argv = [
        "--lake",
        str(tmp_path / "lake"),
        "import",
        "metrics",
        "--src",
        str(tmp_path / "hosts.csv"),
        "--table",
        "hosts",
    ]
    columns = ["--entity-column", "host", "--time-column", "time", "--features", "cpu,mem"]

    assert main(argv) == 1
    assert re.fullmatch(
        r"anomalake import: error: table hosts is not in .*mine.yml: name its columns .*--write-config\n",
        capsys.readouterr().err,
    )
    assert main([*argv, "--write-config", "--entity-column", "host"]) == 1
    assert "--write-config needs --time-column, --features" in capsys.readouterr().err
    assert main([*argv, *columns, "--write-config", "--timezone", "Mars/Olympus"]) == 1
    assert "--timezone Mars/Olympus: not a time zone name" in capsys.readouterr().err
    assert not (tmp_path / "mine.yml").exists()

    monkeypatch.setenv("ANOMALAKE_TABLES", str(tmp_path / "mine.yml"))
    times = pd.date_range("2026-03-01T23:30Z", periods=9, freq="5min").strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "hosts.csv").write_text("host,time,cpu,mem\n" + "".join(f"a,{t},1,2\n" for t in times) + "b,x,1,2\n")
    assert main([*argv, *columns, "--write-config"]) == 0
    out = capsys.readouterr().out
    assert "raw/hosts: 9 of 10 rows in 2 day partitions (dt=2026-03-01..2026-03-02) from 1 file; 1 quarantined" in out
    table = load_tables(tmp_path / "mine.yml")["hosts"]
    assert (table.entity, table.features, table.step_seconds) == ("host", ("cpu", "mem"), 300)
    assert yaml.safe_load((tmp_path / "mine.yml").read_text())["hosts"]["window"] == {"length": 64, "stride": 1}
    assert main([*argv, "--features", "cpu"]) == 1, "a configured table's columns come from its entry"
    assert main(argv) == 0, "a configured table imports by name"


@pytest.mark.spark
def test_the_windows_job_reads_an_imported_table(ctx, tmp_path):
    from anomalake.pipelines.features.job import run_windows

    times = pd.date_range("2026-03-02", periods=40, freq="5min", tz="UTC")
    frame = pd.DataFrame({"host": "a", "time": times.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": range(40), "mem": 1.0})
    frame.to_csv(tmp_path / "hosts.csv", index=False)
    import_metrics(ctx.lake, HOSTS, tmp_path / "hosts.csv")
    result = run_windows(ctx, HOSTS, [pd.Timestamp("2026-03-02").date()])
    assert result.windows == 40 - (HOSTS.window.length - 1)


def test_generate_as_csv_imports_to_the_rows_it_generated(tmp_path, monkeypatch, capsys):
    import numpy as np

    from anomalake.pipelines.ingest.generate import FEATURES, GenerateSpec, generate_frames

    argv = ["--lake", str(tmp_path / "lake"), "generate", "--format", "csv", "--table", "hosts", "--start"]
    argv += ["2026-03-01", "--days", "2", "--entities", "2", "--seed", "5", "--out", str(tmp_path / "a.csv")]
    assert main(argv) == 0 and main([*argv[:-1], str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes(), "same seed, same bytes"
    assert "a.csv: 1,152 rows; labels/hosts:" in capsys.readouterr().out
    assert main([*argv[:-2], "--format", "parquet", "--out", "x.csv"]) == 1, "--out is the csv's"

    table = parse_table(
        "hosts", {"entity": "host", "time": "time", "features": list(FEATURES), "window": {"length": 4}}
    )
    import_metrics(Lake(tmp_path / "lake"), table, tmp_path / "a.csv")
    imported = pd.read_parquet(Lake(tmp_path / "lake").raw(table)).sort_values(["host", "time"], ignore_index=True)
    generated, labels = generate_frames(GenerateSpec("hosts", pd.Timestamp("2026-03-01").date(), 2, 2, 5))
    assert list(imported["host"]) == list(generated["entity_id"])
    assert (imported["time"] == generated["ts"]).all()
    for name in FEATURES:  # written with 6 significant digits
        assert np.allclose(imported[name], generated[name], rtol=1e-5, atol=0), name
    assert len(pd.read_parquet(tmp_path / "lake" / "labels" / "hosts")) == len(labels) > 0
