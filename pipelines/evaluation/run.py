"""`anomalake evaluate`: a public benchmark through the user's windows, train and score jobs, measured against its
labels.

Each case of the benchmark (pipelines/evaluation/cases.py) is written to a temporary lake as raw partitions,
windowed, trained on and scored by the same jobs a nightly run uses (local Spark); the scored rows are then
joined to the labels. Labels serve the metrics only. The baselines (pipelines/evaluation/reference_detectors.py) run on
the same windows, images or texts, in the same units, and are calibrated the same way.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from anomalake.models.calibration import fit_calibration
from anomalake.models.scaling import EntityScaling
from anomalake.pipelines.config import DEFAULT_DETECTORS, DetectorSpec, EventSettings, load_detector, replace_events
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.evaluation import reference_detectors as reference
from anomalake.pipelines.evaluation import results, vus
from anomalake.pipelines.evaluation.cases import TIME_SERIES, Case, load_cases
from anomalake.pipelines.events.detection import flag_windows
from anomalake.pipelines.events.job import run_events_days
from anomalake.pipelines.features.entity_scaling import fit_scaling, unseen_scaling
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.files import write_raw_partition
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.reading import days_with_data, read_partitions
from anomalake.pipelines.scoring.job import run_score_days
from anomalake.pipelines.training.holdout import split_holdout
from anomalake.pipelines.training.job import run_train

SUMMARY_GROUPS = {
    "nab": None,
    "nab_nightly": None,
    "asd": ["asd"],
    "skab": None,
    "skab_runs": None,
    "mnist": ["overall"],
    "sms": ["ham"],
}


@dataclass(frozen=True)
class EvaluateSpec:
    """What one `anomalake evaluate` run measures."""

    benchmark: str
    data: Path
    detectors: tuple[str, ...]
    out: Path
    groups: tuple[str, ...] = ()  # NAB categories or series, ASD entities, SKAB folders or runs, digits
    epochs: int | None = None  # cut training (quick checks); None = the detector's own setting
    baselines: bool = True
    plots: bool = True
    keep_lake: bool = False
    # (key, value) replaced in every detector's settings, or with `events.NAME` in every table's (sweeps)
    settings: tuple[tuple[str, Any], ...] = ()


def resolve_detectors(names: list[str], benchmark: str) -> tuple[str, ...]:
    """Detector names with `default` replaced by the family a new table of the benchmark's kind gets."""
    kind = "timeseries" if benchmark in TIME_SERIES else ("image" if benchmark == "mnist" else "text")
    return tuple(dict.fromkeys(DEFAULT_DETECTORS[kind] if n == "default" else n for n in names))


EVENTS_PREFIX = "events."  # a setting of the table's events stage, not of the detector


def apply_settings(spec: DetectorSpec, settings: tuple[tuple[str, Any], ...]) -> DetectorSpec:
    """The detector with `evaluate --set`'s settings; `events.NAME` ones are only checked here (they go to the
    tables, with_event_settings), so a bad one fails before Spark starts."""
    for key, value in settings:
        if key.startswith(EVENTS_PREFIX):
            replace_events(EventSettings(), {key.removeprefix(EVENTS_PREFIX): value}, f"--set {key}")
        else:
            spec = spec.with_setting(key, value)
    return spec


def _spec(name: str, epochs: int | None, settings: tuple[tuple[str, Any], ...] = ()) -> DetectorSpec:
    spec = apply_settings(load_detector(name), settings)
    return spec if epochs is None else spec.with_params(epochs=epochs)


def with_event_settings(case: Case, settings: tuple[tuple[str, Any], ...]) -> Case:
    """The case with the `events.NAME` settings replaced in its table (the detectors and baselines alike)."""
    changes = {k.removeprefix(EVENTS_PREFIX): v for k, v in settings if k.startswith(EVENTS_PREFIX)}
    return replace(case, table=case.table.with_events(**changes)) if changes else case


def run_evaluate(ctx: JobContext, spec: EvaluateSpec, cases: list[Case] | None = None) -> list[dict]:
    """Run every case of the benchmark; write results.json, results.md and plots under spec.out; return the records."""
    cases = cases if cases is not None else load_cases(spec.benchmark, spec.data, list(spec.groups) or None)
    cases = [with_event_settings(case, spec.settings) for case in cases]
    started = time.monotonic()
    run = _run_cases(ctx, cases, spec, started)
    done = [c for c in cases if c.name not in run.failed]
    categories = {g: c for case in done for g, c in case.category.items()}
    windows = {g: w for case in done for g, w in case.windows.items()}
    records = _records(spec.benchmark, run, categories, windows)
    summary = SUMMARY_GROUPS[spec.benchmark] or sorted(set(categories.values())) + ["overall"]
    notes = [f"FAILED, not in these figures: {name}: {why}" for name, why in run.failed.items()]
    json_path, md_path = results.write_results(spec.out, records, summary, notes)
    if spec.plots:
        _plots(spec, run.frames, run.values, windows)
    print(md_path.read_text())
    print(
        f"{len(records)} records -> {json_path}; table -> {md_path}; plots -> {spec.out / 'plots'}  "
        f"({time.monotonic() - started:.0f}s)"
    )
    if run.failed:
        raise JobError(
            f"{len(run.failed)} of {len(cases)} cases failed ({', '.join(run.failed)}); the others' results are in "
            f"{spec.out}"
        )
    return records


@dataclass
class _Run:
    """What the cases produced: scored frames per detector and group, raw values per series, failures."""

    frames: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    values: dict[str, pd.DataFrame] = field(default_factory=dict)
    sliding_lengths: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # per detector and group: its case's share
    failed: dict[str, str] = field(default_factory=dict)


def _run_cases(ctx: JobContext, cases: list[Case], spec: EvaluateSpec, started: float) -> _Run:
    """Each case through the jobs, step i of n printed; a failed case is recorded and the others go on."""
    run = _Run()
    for i, case in enumerate(cases, 1):
        print(
            f"[{i}/{len(cases)}] {spec.benchmark} {case.name}: {len(case.groups)} group(s)  "
            f"(t+{time.monotonic() - started:.0f}s)",
            flush=True,
        )
        try:
            outputs, seconds = _run_case(ctx, case, spec)
        except JobError as error:  # one awkward series must not cost the others' results; the run still fails
            run.failed[case.name] = str(error)
            print(f"  FAILED: {error}", flush=True)
            continue
        for detector, scored in outputs.items():
            for group, frame in _split_groups(case, scored).items():
                run.frames.setdefault(detector, {})[group] = frame
                run.seconds.setdefault(detector, {})[group] = seconds[detector] / len(case.groups)
        if case.table.kind == "timeseries":
            raw = pd.concat(case.raw.values(), ignore_index=True)
            for group in case.groups:
                run.values[group] = raw[raw["entity_id"] == group].drop(columns="entity_id")
                # TSB-AD sets the VUS buffer from the whole series' first metric, training steps included.
                run.sliding_lengths[group] = vus.sliding_length(run.values[group][case.table.features[0]].to_numpy())
    return run


def _records(benchmark: str, run: _Run, categories: dict, windows: dict) -> list[dict]:
    records: list[dict] = []
    for detector, per_group in run.frames.items():
        if benchmark in TIME_SERIES:
            records += results.timeseries_records(
                benchmark, detector, per_group, categories, windows, run.sliding_lengths, run.seconds[detector]
            )
        else:
            records += results.media_records(benchmark, detector, per_group)
    return records


def _run_case(ctx: JobContext, case: Case, spec: EvaluateSpec) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Scored rows (entity_id, [ts,] raw_score, score, threshold, is_anomaly) per detector and baseline, with
    is_anomaly set by the events stage as in the nightly path; and the seconds each took for the whole case."""
    for day, frame in case.raw.items():
        write_raw_partition(ctx.lake, case.table, day, frame)
    all_days = sorted(case.raw)
    made = run_windows(ctx.with_new_run(), case.table, all_days)
    print(
        f"  windows: rows in {made.rows_in:,} = windows {made.windows:,} + context {made.context:,} + quarantined "
        f"{made.quarantined_total:,} {made.quarantined or ''}",
        flush=True,
    )
    score_days = days_with_data(ctx.lake.features(case.table.name), case.score_days)
    out, seconds = {}, {}
    for name in spec.detectors:
        began = time.monotonic()
        trained = run_train(
            ctx.with_new_run(),
            case.table,
            name,
            case.train_days[0],
            case.train_days[-1],
            verbose=0,
            spec=_spec(name, spec.epochs, spec.settings),
            entities=case.train_entities,
        )
        scored = run_score_days(ctx.with_new_run(), case.table, name, score_days)
        found = run_events_days(ctx.with_new_run(), case.table, name, score_days)
        seconds[name] = time.monotonic() - began
        out[name] = _read_scores(ctx, case, name, score_days)
        print(
            f"  {name}: {trained.rows_train:,} training windows, threshold {trained.threshold:.2f}; {scored.scored:,} "
            f"scored, quarantined {scored.quarantined or 0}; {found.new_events:,} new events, {found.rows_out:,} "
            f"windows in events  ({seconds[name]:.0f}s)",
            flush=True,
        )
    if spec.baselines:
        baselines, times = baseline_rows(ctx, case, score_days, spec.detectors[0])
        out.update(baselines)
        seconds.update(times)
    return out, seconds


def _read_scores(ctx: JobContext, case: Case, detector: str, days: list) -> pd.DataFrame:
    columns = ["entity_id", "ts"] if case.table.kind == "timeseries" else ["entity_id"]
    df = read_partitions(
        ctx.spark, ctx.lake.scores(case.table.name), days, "scores", case.table.name, detector=detector
    )
    return df.select(*columns, "raw_score", "score", "threshold", "is_anomaly").toPandas()


def _split_groups(case: Case, scored: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The truth of each group joined to its scored rows (unscored rows keep NaN scores and no flag)."""
    out = {}
    for group in case.groups:
        truth = case.truth[case.truth["group"] == group]
        if case.table.kind == "timeseries":
            out[group] = results.series_frame(truth, scored)
        else:
            frame = truth.merge(scored, on="entity_id", how="left")
            frame["flag"] = frame["is_anomaly"].eq(True).to_numpy()
            out[group] = frame
    return out


def _features(ctx: JobContext, case: Case, days: list, entities: tuple[str, ...] = ()):
    """The feature rows of `days` (only `entities` when given) as a Spark DataFrame (entity_id, ts, x)."""
    root = ctx.lake.features(case.table.name)
    df = read_partitions(ctx.spark, root, days_with_data(root, days), "features", case.table.name)
    if entities:
        df = df.where(F.col("entity_id").isin(*entities))
    return df.select("entity_id", "ts", "x")


def _pandas(df) -> pd.DataFrame:
    return df.toPandas().sort_values(["entity_id", "ts"], kind="stable").reset_index(drop=True)


def baseline_rows(
    ctx: JobContext, case: Case, score_days: list, detector: str
) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Each baseline's scored rows, fitted on the training windows with the train job's own held-out split and
    flagged by the events stage on the score days (with the history days before them, as the nightly path sees
    them); and the seconds each took (the shared reading of the windows counted in each)."""
    began = time.monotonic()
    spec = load_detector(detector)
    fit_df, held_df, _ = split_holdout(
        _features(ctx, case, list(case.train_days), case.train_entities), case.table, spec.holdout_fraction
    )
    test_df = _features(ctx, case, _history_days(case, score_days) + list(score_days))
    scaling = _reference_scaling(case, fit_df, test_df)
    fit_part, held_part, test = (_known_rows(_pandas(df), scaling) for df in (fit_df, held_df, test_df))
    x_fit, x_held, x_test = (_samples(part, case, scaling) for part in (fit_part, held_part, test))
    if case.table.kind == "text":
        scorers = {"isolation_forest": reference.text_isolation_forest_scores, "pca": reference.text_pca_scores}
    else:
        scorers = {"isolation_forest": reference.isolation_forest_scores, "pca": reference.pca_scores}

    def fitted(scorer):  # a model fitted on the training windows: its held-out and test scores
        return lambda: (scorer(x_fit, x_held), scorer(x_fit, x_test))

    def rolling_z():  # no model: the raw values' rolling z-score at each window's end
        z = _rolling_z(case)
        return _at_window_ends(z, held_part), _at_window_ends(z, test)

    runs = {name: fitted(scorer) for name, scorer in scorers.items()}
    if case.table.kind == "timeseries":
        runs["rolling_z"] = rolling_z
    shared = time.monotonic() - began
    out, seconds = {}, {}
    for name, scored in runs.items():
        began = time.monotonic()
        held, scores = scored()
        out[f"baseline_{name}"] = _calibrated(test, held, scores, spec.calibration_options, case, score_days)
        seconds[f"baseline_{name}"] = shared + time.monotonic() - began
    return out, seconds


def _history_days(case: Case, score_days: list) -> list:
    """The days before the first score day that the events stage reads as history (as the nightly path would)."""
    reach = case.table.events.history_days + case.table.events.max_chain_days
    first = score_days[0]
    return [d for d in sorted(case.raw) if first - timedelta(days=reach) <= d < first]


def _reference_scaling(case: Case, fit_df, test_df) -> EntityScaling:
    """The per-entity scaling the jobs would use: fitted on the training part, unseen entities as the table says."""
    if case.table.kind != "timeseries":
        return EntityScaling.identity()
    known = fit_scaling(fit_df, case.table)
    unseen = unseen_scaling(test_df, case.table, known)
    return known.merged(unseen) if unseen is not None else known


def _known_rows(part: pd.DataFrame, scaling: EntityScaling) -> pd.DataFrame:
    """The rows a detector would score: an entity without a scale is quarantined by the score job, and left out here."""
    return part[scaling.knows(part["entity_id"].tolist())].reset_index(drop=True) if len(part) else part


def _samples(part: pd.DataFrame, case: Case, scaling: EntityScaling) -> np.ndarray:
    """Model inputs of a baseline: time series in each entity's own units (as the detectors see them)."""
    if case.table.kind == "text":
        return part["x"].to_numpy(dtype=object)
    x = (
        np.stack(part["x"].to_numpy()).astype(np.float64)
        if len(part)
        else np.zeros((0, int(np.prod(case.table.sample_shape))))
    )
    if case.table.kind != "timeseries":
        return x
    shape = case.table.sample_shape
    return scaling.transform(part["entity_id"].tolist(), x.reshape((-1, *shape))).reshape(len(part), -1)


def _rolling_z(case: Case) -> pd.DataFrame:
    """Rolling z-score of the raw values at every (entity_id, ts) (trailing window = the table's window length)."""
    raw = pd.concat(case.raw.values(), ignore_index=True).sort_values(["entity_id", "ts"], kind="stable")
    raw = raw.drop_duplicates(["entity_id", "ts"])  # a duplicate key is quarantined by the windows job
    features = list(case.table.features)
    raw["z"] = np.concatenate(
        [
            reference.rolling_z_scores(rows[features], case.table.window.length)
            for _, rows in raw.groupby("entity_id", sort=False)
        ]
    )
    return raw[["entity_id", "ts", "z"]]


def _at_window_ends(z: pd.DataFrame, windows: pd.DataFrame) -> np.ndarray:
    """The rolling z-score at each window's end."""
    return windows[["entity_id", "ts"]].merge(z, on=["entity_id", "ts"], how="left")["z"].fillna(0.0).to_numpy()


def _calibrated(
    test: pd.DataFrame, held: np.ndarray, scores: np.ndarray, calibration: dict, case: Case, score_days: list
) -> pd.DataFrame:
    """The score days' rows with calibrated scores and is_anomaly from the events stage (pipelines/events)."""
    cal = fit_calibration(held, **calibration)
    scored = test[["entity_id", "ts"]].assign(raw_score=scores, score=cal.transform(scores), threshold=cal.threshold)
    flagged = flag_windows(scored, case.table.kind, case.table.events, cal.threshold, score_days)
    columns = ["entity_id", "ts"] if case.table.kind == "timeseries" else ["entity_id"]
    return flagged[[*columns, "raw_score", "score", "threshold", "is_anomaly"]]


def _plots(spec: EvaluateSpec, frames: dict, values: dict, windows: dict) -> None:
    """One PNG per detector and series (or class) under out/plots/<detector>/."""
    for detector, per_group in frames.items():
        for group, frame in per_group.items():
            path = spec.out / "plots" / detector / (group.replace("/", "__").removesuffix(".csv") + ".png")
            title = f"{spec.benchmark} {group}: {detector}"
            if spec.benchmark in TIME_SERIES:
                results.plot_series(path, title, frame, values[group], windows.get(group, ()))
            else:
                results.plot_class(path, title + " (normal class)", frame)


def temporary_lake(keep: bool = False) -> tuple[Path, callable]:
    """A fresh lake folder and the function that removes it (unless kept)."""
    root = Path(tempfile.mkdtemp(prefix="anomalake-evaluate-"))
    return root, (lambda: None) if keep else (lambda: shutil.rmtree(root, ignore_errors=True))
