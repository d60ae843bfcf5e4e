"""Every kind of bad input gets its clear error or its quarantine reason, and no row is lost (the spark tier).

One parametrised case per kind. Row cases run the real job on a tiny lake and then count what is on disk:
rows in (the raw or features partition) = rows out (features or scores, plus the windows job's context rows)
+ rows quarantined (the quarantine partition), and the quarantine reasons are exactly the expected ones.
Error cases check the one-line message and that nothing was written for the partition (0 = 0 + 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import START, TINY_DETECTOR, TINY_TABLE, append_features, read_rows

from anomalake.models.artifacts import ArtifactError, read_current, write_checksums
from anomalake.pipelines.config import parse_table
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.features.decoding import encode_png
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.files import write_raw_partition
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.jobs.cli import main
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.layout import is_delta, partition_path
from anomalake.pipelines.scoring.job import run_score
from anomalake.pipelines.settings import load_settings
from anomalake.pipelines.training.job import run_train

pytestmark = pytest.mark.spark
DAY = START + timedelta(days=1)  # the day each windows case runs (START is its lookback)
SCORE_DAY = START + timedelta(days=2)
DETECTOR = "dense_autoencoder"
IMAGE_TABLE = {
    "kind": "image",
    "path": "raw/shots",
    "entity": "image_id",
    "image": {"height": 8, "width": 8, "channels": 1},
    "max_quarantine_share": 0.5,
}
PATH_TABLE = {
    "kind": "image",
    "path": "raw/shots",
    "entity": "image_id",
    "image": {"path_column": "path", "height": 8, "width": 8, "channels": 1},
    "max_quarantine_share": 0.5,
}
TEXT_TABLE = {
    "kind": "text",
    "path": "raw/notes",
    "entity": "message_id",
    "text": {"column": "text"},
    "max_quarantine_share": 0.5,
}


@dataclass(frozen=True)
class Case:
    """One kind of bad input: how to make it, which job meets it, and what must come out."""

    job: str  # windows | image | text | score
    make: Callable
    error: tuple[type, str] | None = None  # (exception type, regex of its message)
    quarantined: dict[str, int] = field(default_factory=dict)
    table: dict = field(default_factory=lambda: TINY_TABLE)
    context: int = 0  # raw rows on the grid that end no window (stride 1: only readings folded into a step)


def raw_day(ctx, table, day=DAY) -> pd.DataFrame:
    return pd.read_parquet(partition_path(ctx.lake.raw(table), dt=day.isoformat()))


def rewrite(ctx, table, change: Callable[[pd.DataFrame], pd.DataFrame], day=DAY) -> None:
    write_raw_partition(ctx.lake, table, day, change(raw_day(ctx, table, day)))


def at(frame: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    frame = frame.copy()
    for column, value in values.items():
        if pd.api.types.is_datetime64_any_dtype(frame[column]) and value is not None:
            value = (
                pd.Timestamp(value).tz_localize(frame[column].dt.tz)
                if pd.Timestamp(value).tz is None
                else pd.Timestamp(value)
            )
        frame.loc[row, column] = value
    return frame


def second_reading(frame: pd.DataFrame) -> pd.DataFrame:
    """Row 10 read again 30 seconds later (the same grid step), with another cpu value."""
    return pd.concat(
        [frame, at(frame, 10, ts=frame["ts"][10] + pd.Timedelta(seconds=30), cpu=99.0).iloc[[10]]], ignore_index=True
    )


def gap(frame: pd.DataFrame) -> pd.DataFrame:
    """Four consecutive steps of one entity removed (fill_limit is 2)."""
    one = frame[frame["entity_id"] == frame["entity_id"].iloc[0]].sort_values("ts")
    return frame.drop(index=one.index[100:104])


def corrupt_file(ctx, table) -> None:
    next(partition_path(ctx.lake.raw(table), dt=DAY.isoformat()).glob("*.parquet")).write_bytes(
        b"PAR1 this is not parquet" * 40
    )


def one_row_without_history(ctx, table) -> None:
    shutil.rmtree(partition_path(ctx.lake.raw(table), dt=START.isoformat()))
    rewrite(ctx, table, lambda f: f.iloc[[0]])


def images(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image_id": [f"img-{i:03d}" for i in range(n)],
            "image": [encode_png((rng.random((8, 8, 1)) * 255).astype(np.uint8)) for _ in range(n)],
        }
    )


def texts(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "message_id": [f"m-{i:03d}" for i in range(n)],
            "text": [f"meeting moved to room {i} at noon" for i in range(n)],
        }
    )


def media(frame_change: Callable[[pd.DataFrame], pd.DataFrame], kind: str) -> Callable:
    def make(ctx, table):
        write_raw_partition(ctx.lake, table, DAY, frame_change(images() if kind == "image" else texts()))

    return make


def pandas_default(ctx, table, naive: bool) -> None:
    """The day rewritten the most common way in Python: pandas' to_parquet, nanosecond timestamps (naive or UTC)."""
    frame = raw_day(ctx, table)
    frame["ts"] = frame["ts"].astype("datetime64[ns, UTC]")  # what pd.read_csv and pd.to_datetime give
    if naive:
        frame["ts"] = frame["ts"].dt.tz_localize(None)
    folder = partition_path(ctx.lake.raw(table), dt=DAY.isoformat())
    for old in folder.glob("*.parquet"):
        old.unlink()
    frame.to_parquet(folder / "part-00000.parquet", index=False)
    assert pq.read_schema(folder / "part-00000.parquet").field("ts").type.unit == "ns"


def image_files(ctx, table) -> None:
    """Images named by path (relative to the lake), one of them missing."""
    frame = images()
    folder = ctx.lake.root / "files"
    folder.mkdir(parents=True)
    paths = []
    for i, png in enumerate(frame["image"]):
        if i != 3:
            (folder / f"img-{i:03d}.png").write_bytes(png)
        paths.append(f"files/img-{i:03d}.png")
    write_raw_partition(ctx.lake, table, DAY, pd.DataFrame({"image_id": frame["image_id"], "path": paths}))


def extra_window(ctx, values: list[float]) -> None:
    """One more row in the scored day's features, appended to the windows job's in a commit of its own."""
    row = pd.DataFrame(
        {"entity_id": ["host-000"], "ts": [pd.Timestamp(SCORE_DAY)], "x": [values], "dt": [SCORE_DAY.isoformat()]}
    )
    append_features(ctx, "telemetry", row)


# ---- the model cases: the lake of `trained_lake`, with its CURRENT artifact changed ----


def current_artifact(ctx):
    root = ctx.lake.models(DETECTOR, "telemetry")
    return root / read_current(root)


def flip_a_byte(ctx, table) -> None:
    path = current_artifact(ctx) / "model.keras"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def other_schema(ctx, table) -> None:
    """The artifact of a model trained on a table with other features, consistent in itself (checksums rewritten)."""
    folder = current_artifact(ctx)
    meta = json.loads((folder / "meta.json").read_text())
    meta["signature"]["features"] = ["temperature", "pressure", "flow", "vibration"]
    (folder / "meta.json").write_text(json.dumps(meta))
    write_checksums(folder)


def pickle_model(ctx, table) -> None:
    folder = current_artifact(ctx)
    # The bytes of a pickle (protocol 4) that would call os.system on load; written as bytes, never unpickled here.
    (folder / "model.keras").write_bytes(
        b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R."
    )
    write_checksums(folder)


def lambda_model(ctx, table) -> None:
    import keras

    folder = current_artifact(ctx)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Lambda(lambda x: x * 2.0)])
    model.save(folder / "model.keras")
    write_checksums(folder)


def traversal_pointer(ctx, table) -> None:
    (ctx.lake.models(DETECTOR, "telemetry") / "CURRENT").write_text("../../../../etc\n")


def unseen_entity(ctx, table) -> None:
    """A host the model never saw appears on the scored day (its windows are cut, then quarantined by the score job)."""
    for day in (SCORE_DAY - timedelta(days=1), SCORE_DAY):
        frame = raw_day(ctx, table, day)
        newcomer = frame[frame["entity_id"] == frame["entity_id"].iloc[0]].assign(entity_id="host-new")
        write_raw_partition(ctx.lake, table, day, pd.concat([frame, newcomer], ignore_index=True))
    run_windows(ctx, table, [SCORE_DAY - timedelta(days=1), SCORE_DAY])


NAN = float("nan")
CASES = {
    # Contract breaks of a raw partition: the job stops with one line, nothing is written.
    "missing_column": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: f.drop(columns="memory")), (JobError, r"column memory: missing")
    ),
    "wrong_type": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: f.assign(cpu=f["cpu"].astype(str))),
        (JobError, r"column cpu: expected a numeric type, found string"),
    ),
    "time_as_text": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: f.assign(ts=f["ts"].astype(str))),
        (JobError, r"column ts: expected a timestamp, found string"),
    ),
    "all_null_column": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: f.assign(latency=None)),
        (JobError, r"column latency: all 576 values are null"),
    ),
    "empty_partition": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: f.iloc[0:0]),
        (JobError, r"partition dt=2026-02-03: the partition holds no rows"),
    ),
    "corrupt_parquet": Case(
        "windows", corrupt_file, (JobError, r"partition dt=2026-02-03: file part-00000.parquet is not readable Parquet")
    ),
    "too_many_bad_rows": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: f.assign(cpu=np.where(np.arange(len(f)) % 3 == 0, f["cpu"], NAN))),
        (JobError, r"quarantined .* > max_quarantine_share 50%"),
    ),
    # Row problems: quarantined with a reason, the rest windowed.
    "nan_value": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: at(f, 5, cpu=NAN)), quarantined={"non_finite_value": 1}
    ),
    "positive_infinity": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: at(f, 5, latency=np.inf)), quarantined={"non_finite_value": 1}
    ),
    "negative_infinity": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: at(f, 5, memory=-np.inf)), quarantined={"non_finite_value": 1}
    ),
    "null_entity": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: at(f, 5, entity_id=None)), quarantined={"null_key": 1}
    ),
    "null_timestamp": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: at(f, 5, ts=None)), quarantined={"null_key": 1}
    ),
    "duplicate_key": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: pd.concat([f, f.iloc[[10]]], ignore_index=True)),
        quarantined={"duplicate_key": 1},
    ),
    "duplicate_timestamp": Case(  # a second reading in one step, where the table allows one (aggregate: none)
        "windows",
        lambda c, t: rewrite(c, t, second_reading),
        quarantined={"duplicate_key": 1},
        table={**TINY_TABLE, "gaps": {**TINY_TABLE["gaps"], "aggregate": "none"}},
    ),
    "second_reading_in_a_step": Case("windows", lambda c, t: rewrite(c, t, second_reading), context=1),  # resampled
    "out_of_order_timestamps": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: f.sample(frac=1.0, random_state=3))
    ),
    "timestamp_far_in_future": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: at(f, 5, ts="2200-01-01")), quarantined={"outside_partition": 1}
    ),
    "timestamp_before_epoch": Case(
        "windows", lambda c, t: rewrite(c, t, lambda f: at(f, 5, ts="1900-01-01")), quarantined={"outside_partition": 1}
    ),
    "gap_over_fill_limit": Case("windows", lambda c, t: rewrite(c, t, gap), quarantined={"gap_exceeds_fill_limit": 7}),
    "one_row_partition": Case("windows", one_row_without_history, quarantined={"insufficient_history": 1}),
    "value_outside_bounds": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: at(f, 5, cpu=1e6)),
        quarantined={"out_of_bounds": 1},
        table={**TINY_TABLE, "bounds": {"cpu": [None, 1e5]}},
    ),
    "extra_column": Case("windows", lambda c, t: rewrite(c, t, lambda f: f.assign(region="eu-west"))),
    # Images and texts.
    "corrupt_image": Case(
        "image",
        media(lambda f: at(f, 3, image=b"\x89PNG\r\n\x1a\n broken"), "image"),
        quarantined={"corrupt_image": 1},
        table=IMAGE_TABLE,
    ),
    "wrong_size_image": Case(
        "image",
        media(lambda f: at(f, 3, image=encode_png(np.zeros((9, 7, 1), np.uint8))), "image"),
        quarantined={"wrong_size": 1},
        table=IMAGE_TABLE,
    ),
    "null_image": Case(
        "image", media(lambda f: at(f, 3, image=None), "image"), quarantined={"null_image": 1}, table=IMAGE_TABLE
    ),
    "duplicate_image_id": Case(
        "image",
        media(lambda f: pd.concat([f, f.iloc[[2]]], ignore_index=True), "image"),
        quarantined={"duplicate_key": 1},
        table=IMAGE_TABLE,
    ),
    "empty_text": Case(
        "text", media(lambda f: at(f, 3, text="  \x00\t "), "text"), quarantined={"empty_text": 1}, table=TEXT_TABLE
    ),
    "null_text": Case(
        "text", media(lambda f: at(f, 3, text=None), "text"), quarantined={"null_text": 1}, table=TEXT_TABLE
    ),
    "ten_megabyte_string": Case(
        "text",
        media(lambda f: at(f, 3, text="spam " * 2_000_000), "text"),
        quarantined={"oversize_record": 1},
        table=TEXT_TABLE,
    ),
    "late_row": Case(
        "windows",
        lambda c, t: rewrite(c, t, lambda f: at(f, 5, ts=f["ts"][5] - pd.Timedelta(days=1))),
        quarantined={"outside_partition": 1},
    ),
    "pandas_default_parquet": Case("windows", lambda c, t: pandas_default(c, t, naive=False)),
    "pandas_naive_timestamps": Case("windows", lambda c, t: pandas_default(c, t, naive=True)),
    "missing_image_file": Case("image", image_files, quarantined={"null_image": 1}, table=PATH_TABLE),
    # The score job and its model.
    "bad_shape": Case("score", lambda c, t: extra_window(c, [0.5] * 5), quarantined={"bad_shape": 1}),
    "non_finite_score": Case(
        "score", lambda c, t: extra_window(c, [float("inf")] * 32), quarantined={"non_finite_score": 1}
    ),
    "unseen_entity": Case("score", unseen_entity, quarantined={"unknown_entity": 288}),
    "model_bytes_changed": Case(
        "score",
        flip_a_byte,
        (
            JobError,
            r"table telemetry, detector dense_autoencoder: .*model.keras was changed after training \(sha256 "
            r"mismatch\)",
        ),
    ),
    "model_of_another_schema": Case(
        "score", other_schema, (JobError, r"input signature differs: features: trained on \['temperature'")
    ),
    "pickle_model_file": Case("score", pickle_model, (JobError, r"model.keras is a pickle file: refused")),
    "lambda_layer_model": Case(
        "score",
        lambda_model,
        (
            JobError,
            r"pre-scan: model.keras needs unsafe deserialisation \(a Lambda layer at \$.config.layers\[1\]\): refused",
        ),
    ),
    "current_pointer_traversal": Case(
        "score", traversal_pointer, (ArtifactError, r"CURRENT: '../../../../etc' is not a version name")
    ),
}


@pytest.fixture(scope="module")
def trained_lake(spark, tmp_path_factory):
    """Windows of three days and a tiny model trained on the first two (copied into each score case's lake)."""
    root = tmp_path_factory.mktemp("bad-input") / "lake"
    ctx = JobContext(dataclasses.replace(load_settings(), lake=str(root), master="local[2]"), spark)
    table = parse_table("telemetry", TINY_TABLE)
    write_generated(root, GenerateSpec("telemetry", START, 3, 2, 11))
    run_windows(ctx, table, [START, DAY, SCORE_DAY])
    run_train(ctx, table, DETECTOR, START, DAY, spec=TINY_DETECTOR, verbose=0)
    return root


@dataclass(frozen=True)
class ConfigCase:
    """A bad table entry or command line: the job a user ran stops with one line on stderr and exit 2."""

    argv: tuple[str, ...]
    message: str  # regex of the line
    change: dict = field(default_factory=dict)  # what the user's tables file has wrong


WINDOWS = ("windows", "--table", "telemetry", "--date", DAY.isoformat())
CONFIG_CASES = {
    # Names that would reach a path or a statement, and settings that would do nothing.
    "unknown_detector_name": ConfigCase(
        (
            "train",
            "--detector",
            "no_such_detector",
            "--table",
            "telemetry",
            "--start",
            START.isoformat(),
            "--end",
            DAY.isoformat(),
        ),
        r"detector no_such_detector: no .*no_such_detector.yml \(known: ",
    ),
    "table_name_with_dotdot": ConfigCase(
        ("windows", "--table", "../../etc/passwd", "--date", DAY.isoformat()),
        r"table '../../etc/passwd' is not a valid name",
    ),
    "detector_name_with_quote_on_the_command_line": ConfigCase(
        (
            "score",
            "--detector",
            "x'; DROP TABLE scores_telemetry; --",
            "--table",
            "telemetry",
            "--date",
            DAY.isoformat(),
        ),
        r"detector \"x'; DROP TABLE scores_telemetry; --\" is not a valid name",
    ),
    "detector_name_with_quote": ConfigCase(
        WINDOWS, r"detector \"x'; DROP", {"detectors": ["x'; DROP TABLE scores_telemetry; --"]}
    ),
    "column_name_with_backtick": ConfigCase(
        WINDOWS, r"column 'cpu`' is not a valid column name", {"features": ["cpu`", "memory"]}
    ),
    "lake_path_escaping": ConfigCase(
        WINDOWS, r"path '../../home' must be a relative folder inside the lake", {"path": "../../home"}
    ),
    "misspelt_setting": ConfigCase(WINDOWS, r"tables.yml: table telemetry: unknown key 'fill_limt'", {"fill_limt": 2}),
    "fill_limit_outside_gaps": ConfigCase(
        WINDOWS, r"tables.yml: table telemetry: fill_limit moved into the gaps block", {"fill_limit": 2}
    ),
    "mask_named_like_a_feature": ConfigCase(
        WINDOWS,
        r"table telemetry: gaps: mask adds a channel named 'imputed', which is already a feature",
        {"features": ["cpu", "imputed"], "gaps": {"mask": True}},
    ),
    "bad_imputation": ConfigCase(
        WINDOWS, r"table telemetry: gaps: impute 'spline' is not one of", {"gaps": {"impute": "spline"}}
    ),
}


def rows(ctx, root, **keys) -> pd.DataFrame:
    if is_delta(root):
        return read_rows(ctx.spark, root, **keys)
    folder = partition_path(root, **keys)
    return pd.read_parquet(folder) if folder.is_dir() and any(folder.glob("*.parquet")) else pd.DataFrame()


def test_every_kind_of_bad_input_is_a_case():
    # 51 kinds: the README's count. A kind added or dropped must change both.
    assert len(CASES) + len(CONFIG_CASES) == 51


@pytest.mark.parametrize("kind", sorted(CONFIG_CASES))
def test_bad_configuration(kind, tmp_path, monkeypatch, capsys):
    case = CONFIG_CASES[kind]
    tables = tmp_path / "tables.yml"
    tables.write_text(yaml.safe_dump({"telemetry": {**TINY_TABLE, **case.change}}))
    monkeypatch.setenv("ANOMALAKE_TABLES", str(tables))
    lake = tmp_path / "lake"
    write_generated(lake, GenerateSpec("telemetry", START, 2, 2, 11))
    try:
        code = main(["--lake", str(lake), *case.argv])
    except SystemExit as stopped:  # argparse refuses a malformed name before any job starts
        code = stopped.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and re.search(case.message, lines[0]), (code, lines)
    assert not any((lake / folder).exists() for folder in ("features", "scores", "quarantine", "models", "runs"))


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input(ctx, kind, request, caplog):
    case = CASES[kind]
    table = parse_table({"image": "shots", "text": "notes"}.get(case.job, "telemetry"), case.table)
    if case.job == "score":
        shutil.copytree(request.getfixturevalue("trained_lake"), ctx.lake.root)
    elif case.job == "windows":
        write_generated(ctx.lake.root, GenerateSpec("telemetry", START, 2, 2, 11))
    day = SCORE_DAY if case.job == "score" else DAY
    case.make(ctx, table)
    run = {"score": lambda: run_score(ctx.with_new_run(), table, DETECTOR, day)}.get(
        case.job, lambda: run_windows(ctx, table, [day])
    )
    job = f"score_{DETECTOR}" if case.job == "score" else "windows"

    if case.error:
        with pytest.raises(case.error[0], match=case.error[1]) as error:
            run()
        assert "\n" not in str(error.value), "the error is one line"
        written = ctx.lake.scores(table.name) if case.job == "score" else ctx.lake.features(table.name)
        after = rows(ctx, written, **({"detector": DETECTOR} if case.job == "score" else {}), dt=day.isoformat())
        assert after.empty, "nothing is written for the partition of a refused run"
        assert rows(ctx, ctx.lake.quarantine(table.name), job=job, dt=day.isoformat()).empty, "nor quarantined"
        return

    caplog.set_level(logging.WARNING, logger="anomalake")
    result = run()
    quarantine = rows(ctx, ctx.lake.quarantine(table.name), job=job, dt=day.isoformat())
    reasons = quarantine["reason"].value_counts().to_dict() if len(quarantine) else {}
    expected = {**case.quarantined} if case.job != "windows" or case.quarantined else {}
    if case.job == "score":
        rows_in = len(rows(ctx, ctx.lake.features(table.name), dt=day.isoformat()))
        rows_out, context = len(rows(ctx, ctx.lake.scores(table.name), detector=DETECTOR, dt=day.isoformat())), 0
    else:
        rows_in = len(raw_day(ctx, table, day))
        # Stride 1: every target row ends a window, is folded into its step's reading or is quarantined.
        assert result.context == case.context, f"{kind}: {result.context} context rows, expected {case.context}"
        rows_out, context = len(rows(ctx, ctx.lake.features(table.name), dt=day.isoformat())), case.context
    assert reasons == expected, f"{kind}: quarantine reasons {reasons}, expected {expected}"
    assert rows_in == rows_out + context + len(quarantine) > 0, (
        f"{kind}: {rows_in} rows in, {rows_out} out, {context} context, {len(quarantine)} quarantined"
    )
    if kind == "extra_column":
        assert "columns not in the config are ignored: region" in caplog.text
