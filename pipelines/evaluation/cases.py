"""Public benchmarks as lake tables: each benchmark folder becomes cases of raw rows, days to train and score, and
labels.

A case is what one `evaluate` step runs through the user's jobs: a table config, the raw rows to write, the
days its model trains on and the days it scores, and the truth (used for metrics only, never for training
or thresholds). Protocols:
- nab: one table per series; the model trains on the series itself (no labels), then scores all of it.
- nab_nightly: NAB run the nightly way: the model trains on the series' first days (its probationary 15 % of
  rows, rounded up to whole days), then scores the days after them, day by day; the labelled windows are cut
  to the scored days.
- asd: one table per entity; train on `_train`, score `_test` (placed after it on a 5-minute grid).
- skab: one table; the model trains on the anomaly-free run and scores every labelled run (each run an entity).
- skab_runs: the SKAB leaderboard's protocol: one table per run, whose first 400 rows (anomaly-free) train
  that run's model, which then scores the whole run.
- mnist: one table per digit: half of that digit trains, the rest of the set is scored (other digits anomalous).
- sms: ham normal: half of the ham trains, the other half and all spam are scored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from anomalake.pipelines.config import TableConfig, parse_table
from anomalake.pipelines.evaluation import datasets

TIME_SERIES = ("nab", "nab_nightly", "asd", "skab", "skab_runs")
BENCHMARKS = TIME_SERIES + ("mnist", "sms")
# Window lengths in steps: long enough for a daily pattern's shape at NAB's 5-minute and hourly steps,
# the length ASD and SKAB detectors are usually run with.
WINDOWS = {"nab": 64, "nab_nightly": 64, "asd": 16, "skab": 32, "skab_runs": 32}
ASD_START = pd.Timestamp("2021-01-04")
ASD_STEP = pd.Timedelta("5min")
NAB_PROBATION = 0.15  # NAB leaves its detectors the first 15 % of each series to learn from
SKAB_TRAIN_ROWS = 400  # the leaderboard's notebooks fit each run's model on df[:400]
SKAB_RUN_DAY = pd.Timestamp("2026-04-02")  # each run is moved so that its row 400 falls on this midnight


@dataclass(frozen=True)
class Case:
    """One model's worth of a benchmark: a table, its raw rows, the days it trains on and scores, the truth.

    truth: timeseries (entity_id, ts, label, group) for every raw row of the scored days; image/text
    (entity_id, label) for every scored sample. windows: labelled (start, end) per group where the benchmark
    defines windows (NAB); other time series use their runs of labelled rows.
    """

    name: str
    groups: tuple[str, ...]
    category: dict[str, str]
    table: TableConfig
    raw: dict[date, pd.DataFrame]
    train_days: tuple[date, ...]
    score_days: tuple[date, ...]
    truth: pd.DataFrame
    windows: dict[str, tuple] = field(default_factory=dict)
    train_entities: tuple[str, ...] = ()


def table_name(prefix: str, group: str) -> str:
    """A lake table name for a group (lower case letters, digits and underscores)."""
    return f"{prefix}_{re.sub(r'[^a-z0-9]+', '_', group.lower().removesuffix('.csv')).strip('_')}"


def _step(stamps: pd.Series) -> str:
    """The series' regular step (its most common spacing), as a pandas offset string that divides a day."""
    step = stamps.diff().dropna().mode()
    seconds = int(step.iloc[0].total_seconds()) if len(step) else 300
    while seconds > 1 and 86400 % seconds:
        seconds -= 1
    return f"{max(seconds, 1)}s"


def _timeseries_table(name: str, features: list[str], step: str, window: int, **extra) -> TableConfig:
    entry = {
        "kind": "timeseries",
        "path": f"raw/{name}",
        "entity": "entity_id",
        "time": "ts",
        "features": features,
        "step": step,
        "gaps": {"fill_limit": 3},
        "window": {"length": window, "stride": 1},
        "max_quarantine_share": 0.5,
        **extra,
    }
    return parse_table(name, entry)


def _by_day(frame: pd.DataFrame) -> dict[date, pd.DataFrame]:
    days = frame["ts"].dt.date
    return {d: part.reset_index(drop=True) for d, part in frame.groupby(days)}


def nab_cases(root: Path, categories: list[str] | None, nightly: bool = False) -> list[Case]:
    """One case per NAB series: trained and scored on the series itself, or (nightly) trained on its first days
    and scored on the rest."""
    cases = []
    for s in datasets.load_nab(root, categories):
        name = table_name("nab", s.group)
        raw = pd.DataFrame({"entity_id": s.group, "ts": s.frame["timestamp"], "value": s.frame["value"]})
        # Some NAB series skip steps now and then (rogue_agent_key_hold: 63 gaps of 10-35 minutes); gaps of
        # up to an hour are interpolated, as OrionBench imputes its resampled series, longer ones quarantined.
        step = _step(raw["ts"])
        fill = max(3, 3600 // int(pd.Timedelta(step).total_seconds()))
        window = WINDOWS["nab_nightly" if nightly else "nab"]
        table = _timeseries_table(name, ["value"], step, window, gaps={"fill_limit": fill})
        by_day = _by_day(raw)
        days = tuple(sorted(by_day))
        train_days, score_days, windows = days, days, s.windows
        if nightly:
            train_days = _probation(s.group, by_day, window)
            score_days = days[len(train_days) :]
            first = pd.Timestamp(score_days[0])
            windows = tuple((max(start, first), end) for start, end in s.windows if end >= first)
        scored = raw["ts"].dt.date.isin(score_days).to_numpy()
        truth = pd.DataFrame({"entity_id": s.group, "ts": raw["ts"], "label": s.labels, "group": s.group})[scored]
        cases.append(
            Case(
                name,
                (s.group,),
                {s.group: s.category},
                table,
                by_day,
                train_days,
                score_days,
                truth.reset_index(drop=True),
                {s.group: windows},
            )
        )
    return cases


def _probation(series: str, by_day: dict[date, pd.DataFrame], window: int) -> tuple[date, ...]:
    """The first whole days holding NAB's probationary share of the rows (at least ten windows' worth), leaving
    at least one day to score."""
    days = sorted(by_day)
    rows = np.cumsum([len(by_day[d]) for d in days])
    wanted = max(NAB_PROBATION * rows[-1], 10 * window)
    count = int(np.searchsorted(rows, wanted)) + 1
    if count >= len(days):
        raise datasets.DatasetError(
            f"NAB series {series}: {rows[-1]} rows over {len(days)} days leave no day to score after training on "
            f"{int(wanted)} rows"
        )
    return tuple(days[:count])


def asd_cases(root: Path, groups: list[str] | None) -> list[Case]:
    """One case per ASD entity: its `_train` steps, then its `_test` steps from the next midnight on."""
    cases = []
    for entity in groups or datasets.asd_entities(root):
        train, test, labels = datasets.load_asd_series(root, entity)
        features = [f"m{i}" for i in range(train.shape[1])]
        train_ts = pd.date_range(ASD_START, periods=len(train), freq=ASD_STEP)
        test_ts = pd.date_range((train_ts[-1] + pd.Timedelta(days=1)).normalize(), periods=len(test), freq=ASD_STEP)
        frames = [
            pd.DataFrame(values, columns=features).assign(entity_id=entity, ts=ts)
            for values, ts in ((train, train_ts), (test, test_ts))
        ]
        raw = pd.concat(frames, ignore_index=True)[["entity_id", "ts", *features]]
        table = _timeseries_table(table_name("asd", entity), features, "5min", WINDOWS["asd"])
        truth = pd.DataFrame({"entity_id": entity, "ts": test_ts, "label": labels, "group": entity})
        train_days = tuple(sorted(set(train_ts.date)))
        score_days = tuple(sorted(set(test_ts.date)))
        cases.append(Case(table.name, (entity,), {entity: "asd"}, table, _by_day(raw), train_days, score_days, truth))
    return cases


def skab_cases(root: Path, groups: list[str] | None) -> list[Case]:
    """One case: a model trained on SKAB's anomaly-free run scores every labelled run (one entity per run)."""
    free, runs = datasets.load_skab(root)
    runs = [r for r in runs if not groups or r.group in groups or r.category in groups]
    features = list(datasets.SKAB_FEATURES)
    names = {f: re.sub(r"[^A-Za-z0-9]+", "_", f).strip("_") for f in features}
    frames = [free.assign(entity_id="anomaly-free/anomaly-free.csv")] + [
        r.frame.assign(entity_id=r.group) for r in runs
    ]
    raw = pd.concat(frames, ignore_index=True).rename(columns={"timestamp": "ts", **names})[
        ["entity_id", "ts", *names.values()]
    ]
    table = _timeseries_table("skab", list(names.values()), "1s", WINDOWS["skab"], unseen_entities="training_baseline")
    truth = pd.concat(
        [
            pd.DataFrame({"entity_id": r.group, "ts": r.frame["timestamp"], "label": r.labels, "group": r.group})
            for r in runs
        ],
        ignore_index=True,
    )
    train_days = tuple(sorted(set(free["timestamp"].dt.date)))
    score_days = tuple(sorted(set(truth["ts"].dt.date)))
    groups_out = tuple(r.group for r in runs)
    return [
        Case(
            "skab",
            groups_out,
            {r.group: r.category for r in runs},
            table,
            _by_day(raw),
            train_days,
            score_days,
            truth,
            train_entities=("anomaly-free/anomaly-free.csv",),
        )
    ]


def skab_run_cases(root: Path, groups: list[str] | None) -> list[Case]:
    """One case per SKAB run, as the SKAB leaderboard runs it: the first 400 rows train the run's own model,
    which scores the whole run. The run is moved in time (its steps unchanged) so that those 400 rows are the
    day before SKAB_RUN_DAY and the rest that day: the train job takes the first day, the score job both."""
    _, runs = datasets.load_skab(root)
    runs = [r for r in runs if not groups or r.group in groups or r.category in groups]
    names = {f: re.sub(r"[^A-Za-z0-9]+", "_", f).strip("_") for f in datasets.SKAB_FEATURES}
    cases = []
    for r in runs:
        if len(r.frame) <= SKAB_TRAIN_ROWS:
            raise datasets.DatasetError(
                f"SKAB run {r.group}: {len(r.frame)} rows, expected more than {SKAB_TRAIN_ROWS}"
            )
        ts = r.frame["timestamp"] + (SKAB_RUN_DAY - r.frame["timestamp"].iloc[SKAB_TRAIN_ROWS])
        raw = r.frame.rename(columns=names).assign(entity_id=r.group, ts=ts)[["entity_id", "ts", *names.values()]]
        table = _timeseries_table(table_name("skab", r.group), list(names.values()), "1s", WINDOWS["skab_runs"])
        truth = pd.DataFrame({"entity_id": r.group, "ts": ts, "label": r.labels, "group": r.group})
        days = tuple(sorted(_by_day(raw)))
        cases.append(Case(table.name, (r.group,), {r.group: r.category}, table, _by_day(raw), days[:1], days, truth))
    return cases


MEDIA_TRAIN_DAY, MEDIA_SCORE_DAY = date(2026, 3, 1), date(2026, 3, 2)


def _media_case(name: str, group: str, kind: str, samples: np.ndarray, classes: np.ndarray, normal: str) -> Case:
    if kind == "image":
        entry = {
            "kind": "image",
            "path": f"raw/{name}",
            "entity": "image_id",
            "image": {"column": "image", "height": samples.shape[1], "width": samples.shape[2], "channels": 1},
        }
    else:
        entry = {
            "kind": "text",
            "path": f"raw/{name}",
            "entity": "message_id",
            "text": {"column": "text", "max_chars": 1000},
        }
    table = parse_table(name, {**entry, "max_quarantine_share": 0.5})
    train, test = datasets.raw_frames(datasets.LabelledSet(samples, classes, ""), table, normal)
    truth = pd.DataFrame(
        {"entity_id": test[table.entity], "label": (test["label"] != normal).astype(int), "group": group}
    )
    raw = {MEDIA_TRAIN_DAY: train, MEDIA_SCORE_DAY: test}
    return Case(name, (group,), {group: "overall"}, table, raw, (MEDIA_TRAIN_DAY,), (MEDIA_SCORE_DAY,), truth)


def mnist_cases(root: Path, groups: list[str] | None) -> list[Case]:
    """One case per normal digit."""
    images, digits = datasets.load_mnist(root)
    chosen = groups or [str(d) for d in range(10)]
    return [_media_case(f"mnist_{d}", d, "image", images, digits.astype(str), d) for d in chosen]


def sms_cases(root: Path, groups: list[str] | None) -> list[Case]:
    """One case: ham normal, spam anomalous."""
    texts, labels = datasets.load_sms(root)
    return [_media_case("sms", "ham", "text", texts, labels, "ham")]


def load_cases(benchmark: str, root: Path, groups: list[str] | None = None) -> list[Case]:
    """The cases of `benchmark` read from `root` (a folder in that benchmark's format)."""
    readers = {
        "nab": nab_cases,
        "nab_nightly": lambda folder, groups: nab_cases(folder, groups, nightly=True),
        "asd": asd_cases,
        "skab": skab_cases,
        "skab_runs": skab_run_cases,
        "mnist": mnist_cases,
        "sms": sms_cases,
    }
    if benchmark not in readers:
        raise datasets.DatasetError(f"unknown benchmark '{benchmark}' (one of {', '.join(BENCHMARKS)})")
    return readers[benchmark](Path(root), groups)
