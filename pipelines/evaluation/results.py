"""Benchmark results: scored rows joined to the truth -> metric records, a Markdown table and plots.

A record is {"benchmark", "detector", "group", "metric", "value"}; `group` is a series or class, a category
(for NAB the category folder's name) or "overall". Time-series detections are the anomaly events of the
events stage (pipelines/events), run on the scored days as the nightly path runs it, for the detectors and the
baselines alike: a run of flagged steps is one event. Beside the quality metrics each detector's alert volume
(new events per entity and day, the share of scored windows flagged) and its seconds per series.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from anomalake.pipelines.evaluation import metrics, vus
from anomalake.pipelines.events.grouping import event_starts

TIMESERIES_METRICS = (
    "overlap_segment_f1",
    "overlap_segment_precision",
    "overlap_segment_recall",
    "pointwise_f1",
    "pointwise_precision",
    "pointwise_recall",
    "roc_auc",
    "pr_auc",
    "vus_roc",
    "vus_pr",
)
VOLUME_METRICS = ("events_per_series", "events_per_entity_day", "flagged_share", "seconds_per_series")
NAB_METRICS = ("nab_standard", "nab_low_fp", "nab_low_fn")
SKAB_METRICS = ("skab_f1", "skab_far", "skab_mar")
NAB_PROFILE_OF = {"nab_standard": "standard", "nab_low_fp": "reward_low_FP_rate", "nab_low_fn": "reward_low_FN_rate"}
MEDIA_METRICS = ("roc_auc", "pr_auc")


def record(benchmark: str, detector: str, group: str, metric: str, value: float) -> dict:
    """One results.json record (NaN, a ratio of 0/0, is written as null)."""
    value = float(value)
    return {
        "benchmark": benchmark,
        "detector": detector,
        "group": group,
        "metric": metric,
        "value": None if np.isnan(value) else round(value, 6),
    }


def series_frame(truth: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """Every labelled row of one series with its score (NaN where no window ended) and flag (inside an event)."""
    frame = truth.merge(scored, on=["entity_id", "ts"], how="left").sort_values("ts").reset_index(drop=True)
    frame["flag"] = frame["is_anomaly"].eq(True).to_numpy()
    frame["event"] = frame["flag"]
    return frame


def _volume_counts(frame: pd.DataFrame) -> tuple[int, int, int, int]:
    """(events, entity-days scored, windows flagged, windows scored) of one series."""
    scored = frame[frame["score"].notna()]
    days = scored["ts"].dt.date.nunique()
    return int(event_starts(frame["event"].to_numpy()).sum()), days, int(scored["flag"].sum()), len(scored)


def _expected(frame: pd.DataFrame, windows: tuple) -> list:
    return list(windows) if windows else metrics.flags_to_intervals(frame["ts"], frame["label"].to_numpy() == 1)


def _counts(frame: pd.DataFrame, windows: tuple) -> metrics.SegmentCounts:
    return metrics.overlap_segment_counts(
        _expected(frame, windows), metrics.flags_to_intervals(frame["ts"], frame["event"].to_numpy())
    )


def _point_counts(frame: pd.DataFrame) -> tuple[int, int, int]:
    scored = frame[frame["score"].notna()]
    label, flag = scored["label"].to_numpy() == 1, scored["flag"].to_numpy()
    return int((label & flag).sum()), int((~label & flag).sum()), int((label & ~flag).sum())


def _skab(frames: list[pd.DataFrame]) -> dict[str, float]:
    """Outlier F1, false-alarm and missed-alarm rates (%) as the SKAB leaderboard computes them: every row of
    every run counts (a row no window ends on is not flagged); TP, FP, FN, TN summed over the runs."""
    tp = fp = fn = tn = 0
    for frame in frames:
        label, flag = frame["label"].to_numpy() == 1, frame["flag"].to_numpy()
        tp, fp = tp + int((label & flag).sum()), fp + int((~label & flag).sum())
        fn, tn = fn + int((label & ~flag).sum()), tn + int((~label & ~flag).sum())
    return {
        "skab_f1": tp / (tp + (fn + fp) / 2) if tp + fn + fp else float("nan"),
        "skab_far": 100 * fp / (fp + tn) if fp + tn else float("nan"),
        "skab_mar": 100 * fn / (fn + tp) if fn + tp else float("nan"),
    }


def _from_counts(tp: int, fp: int, fn: int) -> metrics.Scores:
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan")
    return metrics.Scores(precision, recall, f1)


def _aucs(frame: pd.DataFrame) -> tuple[float, float]:
    scored = frame[frame["score"].notna()]
    label = scored["label"].to_numpy().astype(int)
    return metrics.roc_auc(label, scored["raw_score"].to_numpy()), metrics.pr_auc(label, scored["raw_score"].to_numpy())


def _volumes(frame: pd.DataFrame, length: int) -> vus.Volumes:
    """VUS on the scored rows: a step's score is that of the window ending on it."""
    scored = frame[frame["score"].notna()]
    return vus.volumes(scored["label"].to_numpy().astype(int), scored["raw_score"].to_numpy(), length)


def _nab(frames: list[pd.DataFrame], windows: list[tuple], metric: str) -> float:
    series = [(f["ts"], event_starts(f["event"].to_numpy()), list(w)) for f, w in zip(frames, windows)]
    return metrics.nab_score(series, NAB_PROFILE_OF[metric])


def timeseries_records(
    benchmark: str,
    detector: str,
    frames: dict[str, pd.DataFrame],
    categories: dict[str, str],
    windows: dict[str, tuple],
    sliding_lengths: dict[str, int],
    seconds: dict[str, float],
) -> list[dict]:
    """Records per series, per category and overall: segment counts and point counts are summed before
    F1 (as OrionBench sums tp, fp and fn); ROC-AUC, PR-AUC, VUS-ROC and VUS-PR of a category are the mean over
    its series (as TSB-AD averages VUS); events per entity-day and the flagged share are summed counts, seconds per
    series a mean. sliding_lengths: each series' VUS buffer (vus.sliding_length); seconds: each series' time."""
    out: list[dict] = []
    volumes = {g: _volumes(frames[g], sliding_lengths[g]) for g in frames}
    by_category: dict[str, list[str]] = {}
    for group in frames:
        by_category.setdefault(categories[group], []).append(group)
    levels = [(g, [g]) for g in frames] + sorted(by_category.items())
    if len(by_category) > 1 or next(iter(by_category), "overall") != "overall":
        levels.append(("overall", list(frames)))
    for name, members in levels:
        seg = [_counts(frames[g], windows.get(g, ())) for g in members]
        segment = metrics.segment_scores(seg)
        point = _from_counts(*np.sum([_point_counts(frames[g]) for g in members], axis=0))
        aucs = np.array([_aucs(frames[g]) for g in members])
        vus_values = np.array([volumes[g] for g in members])
        events, days, flagged, windows_scored = np.sum([_volume_counts(frames[g]) for g in members], axis=0)
        values = {
            "overlap_segment_f1": segment.f1,
            "overlap_segment_precision": segment.precision,
            "overlap_segment_recall": segment.recall,
            "pointwise_f1": point.f1,
            "pointwise_precision": point.precision,
            "pointwise_recall": point.recall,
            "roc_auc": _nanmean(aucs[:, 0]),
            "pr_auc": _nanmean(aucs[:, 1]),
            "vus_roc": _nanmean(vus_values[:, 0]),
            "vus_pr": _nanmean(vus_values[:, 1]),
            "events_per_series": events / len(members),
            "events_per_entity_day": events / days if days else float("nan"),
            "flagged_share": flagged / windows_scored if windows_scored else float("nan"),
            "seconds_per_series": _nanmean([seconds.get(g, np.nan) for g in members]),
        }
        if benchmark == "skab_runs":
            values.update(_skab([frames[g] for g in members]))
        if benchmark in ("nab", "nab_nightly"):
            for metric in NAB_METRICS:
                values[metric] = _nab([frames[g] for g in members], [windows.get(g, ()) for g in members], metric)
        out += [record(benchmark, detector, name, metric, value) for metric, value in values.items()]
    return out


def media_records(benchmark: str, detector: str, frames: dict[str, pd.DataFrame]) -> list[dict]:
    """ROC-AUC and PR-AUC per normal class and their mean ("overall")."""
    out, per = [], []
    for group, frame in frames.items():
        label = frame["label"].to_numpy().astype(int)
        scored = frame["raw_score"].notna().to_numpy()
        values = (
            metrics.roc_auc(label[scored], frame["raw_score"].to_numpy()[scored]),
            metrics.pr_auc(label[scored], frame["raw_score"].to_numpy()[scored]),
        )
        per.append(values)
        out += [record(benchmark, detector, group, m, v) for m, v in zip(MEDIA_METRICS, values)]
    if len(frames) > 1:
        means = np.nanmean(np.array(per), axis=0)
        out += [record(benchmark, detector, "overall", m, v) for m, v in zip(MEDIA_METRICS, means)]
    return out


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def markdown_table(records: Iterable[dict], groups: Iterable[str] | None = None) -> str:
    """Detectors as rows, metrics as columns, one table per summary group (categories and overall)."""
    frame = pd.DataFrame(list(records))
    if frame.empty:
        return "(no results)\n"
    chosen = list(groups) if groups is not None else list(dict.fromkeys(frame["group"]))
    lines = []
    for group in chosen:
        part = frame[frame["group"] == group]
        if part.empty:
            continue
        table = part.pivot_table(index="detector", columns="metric", values="value", aggfunc="first", dropna=False)
        known = (*TIMESERIES_METRICS, *NAB_METRICS, *SKAB_METRICS, *VOLUME_METRICS)
        columns = [m for m in known if m in table.columns] or list(table.columns)
        order = sorted(table.index, key=lambda d: (d.startswith("baseline_"), d))
        lines += [
            f"\n### {part['benchmark'].iloc[0]}: {group}\n",
            "| detector | " + " | ".join(columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for detector in order:
            cells = ["–" if pd.isna(table.loc[detector, m]) else f"{table.loc[detector, m]:.3f}" for m in columns]
            lines.append(f"| {detector} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    out: Path, records: list[dict], summary_groups: list[str], notes: Iterable[str] = ()
) -> tuple[Path, Path]:
    """results.json (every record) and results.md (the summary groups' tables, then any notes)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(records, indent=1))
    md_path.write_text(markdown_table(records, summary_groups) + "".join(f"\n{note}\n" for note in notes))
    return json_path, md_path


def plot_series(path: Path, title: str, frame: pd.DataFrame, values: pd.DataFrame, windows: tuple) -> None:
    """Values (top) and calibrated score with threshold (bottom); labelled windows shaded, events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
    for column in values.columns.drop("ts")[:4]:
        top.plot(values["ts"], values[column], linewidth=0.6, label=column)
    top.set_ylabel("value")
    bottom.plot(frame["ts"], frame["score"], linewidth=0.6, color="black", label="score")
    threshold = frame["threshold"].dropna()
    if len(threshold):
        bottom.axhline(float(threshold.iloc[0]), color="red", linestyle="--", linewidth=0.8, label="threshold")
    bottom.set_ylabel("score (-log10 p)")
    for axis in (top, bottom):
        for start, end in _expected(frame, windows):
            axis.axvspan(start, end, color="orange", alpha=0.25, linewidth=0)
        for start, end in metrics.flags_to_intervals(frame["ts"], frame["event"].to_numpy()):
            axis.axvspan(start, end, ymin=0.0, ymax=0.06, color="red", alpha=0.9, linewidth=0)
    top.set_title(f"{title}  (orange: labelled anomaly; red bar: detected event)", fontsize=9)
    bottom.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_class(path: Path, title: str, frame: pd.DataFrame) -> None:
    """Histograms of the calibrated scores of normal and anomalous samples, with the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    scored = frame[frame["score"].notna()]
    bins = np.linspace(float(scored["score"].min()), float(scored["score"].max()) + 1e-9, 50)
    for label, name, color in ((0, "normal", "tab:blue"), (1, "anomalous", "tab:red")):
        axis.hist(scored.loc[scored["label"] == label, "score"], bins=bins, alpha=0.6, label=name, color=color)
    threshold = scored["threshold"].dropna()
    if len(threshold):
        axis.axvline(float(threshold.iloc[0]), color="black", linestyle="--", label="threshold (flagged to the right)")
    axis.set_xlabel("score (-log10 p)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
