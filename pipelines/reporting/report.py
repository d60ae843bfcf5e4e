"""`anomalake report`: one self-contained HTML page about one scored partition (plots embedded, no network).

It names the detector, model version and runs that scored the day, and shows the run's health (rows per stage,
quarantined by reason) and its alert volume judged twice: against the model's expected rate (its calibration puts
a share 10^-threshold of normal windows above the threshold) and against the last 14 days; red when the day's
share of flagged windows is more than twice either (twice the earlier days' only where it is also over the
expected share), saying which; the day's new events per entity are judged the same way (the expected bound: each
entity's windows of the day times 10^-threshold). Then the day's events from the events table
(id, entity, span, severity, explanation; each of the 20 most severe links to its picture; time series:
the metrics that drove it in the table's own units, the event shaded; images: the image beside its error map;
texts: the message with its surprising tokens marked); before the events job has run, flagged windows grouped
instead. Last, the score distribution with the threshold. It reads the lake's tables through their snapshots and
the run records (pyarrow and delta-rs): one partition is small, and no Spark is needed.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.events.grouping import anomaly_events
from anomalake.pipelines.lake.delta import read_snapshot
from anomalake.pipelines.lake.layout import Lake, partition_path
from anomalake.pipelines.lake.reading import raw_files
from anomalake.pipelines.lake.runs import latest_run_record, latest_run_records

TOP_EVENTS = 5  # groups of flagged windows pictured before the events job has run
PICTURED_EVENTS = 20  # events pictured (the most severe), each linked from the day's list
HISTORY_DAYS = 14
RED_FACTOR = 2.0  # a day's flagged share over twice the expected or usual share is red
MAX_DRIVERS = 3  # metrics drawn per event, each in its own units
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.bad{color:#b00020;font-weight:600}
.ok{color:#1b5e20;font-weight:600}img{max-width:100%;display:block;margin:6px 0}mark{background:#ffcc80}
.event{border:1px solid #eee;padding:8px 12px;margin:12px 0;border-radius:6px}.muted{color:#777}
td.text{text-align:left}
"""


def scores_dir(lake: Lake, table: str, detector: str, day: date) -> Path:
    """The scored partition a report describes (the report is written into it as _report.html)."""
    return partition_path(lake.scores(table), detector=detector, dt=day.isoformat())


def _png(fig, alt: str = "plot") -> str:
    """A matplotlib figure as an <img> with the PNG inline (base64) and `alt` text, then closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _utc_naive(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC (Spark writes UTC-adjusted ones, upstream tables often naive ones)."""
    values = pd.to_datetime(values)
    return values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values


def _read_scores(lake: Lake, table: TableConfig, detector: str, day: date) -> pd.DataFrame:
    scores = read_snapshot(lake.scores(table.name), {"detector": detector, "dt": day.isoformat()})
    if scores is None:
        raise JobError(
            f"table {table.name}, partition dt={day}: no scores of detector {detector} in {lake.scores(table.name)}; "
            "run `anomalake score` first"
        )
    if "ts" in scores:
        scores["ts"] = _utc_naive(scores["ts"])
    return scores


def _health(lake: Lake, table: TableConfig, detector: str, day: date) -> str:
    """Rows per stage and quarantined rows by reason."""
    windows = latest_run_record(lake.root, table.name, "windows", day) or {}
    score = latest_run_record(lake.root, table.name, f"score_{detector}", day) or {}
    rows = [
        ("raw rows in (windows job)", windows.get("rows_in")),
        ("windows / samples written", windows.get("rows_out")),
        ("context rows", windows.get("context")),
        ("windows scored", score.get("rows_out")),
        ("windows over the threshold", score.get("anomalies")),
    ]
    quarantined = {
        **{f"windows: {k}": v for k, v in windows.get("quarantined", {}).items()},
        **{f"score: {k}": v for k, v in score.get("quarantined", {}).items()},
    }
    stage_table = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{'–' if v is None else f'{v:,}'}</td></tr>" for k, v in rows
    )
    quarantine_table = (
        "".join(f"<tr><td>{html.escape(k)}</td><td>{v:,}</td></tr>" for k, v in quarantined.items())
        or "<tr><td>none</td><td>0</td></tr>"
    )
    return (
        f"<h2>Run health</h2><table><tr><th>stage</th><th>rows</th></tr>{stage_table}</table>"
        f"<table><tr><th>quarantined (reason)</th><th>rows</th></tr>{quarantine_table}</table>"
    )


@dataclass(frozen=True)
class RateVerdict:
    """A day's alert volume judged against what the model expects and the earlier days' average: the share of
    windows flagged (the default), or new events per entity (`events=True`)."""

    today: float
    expected: float
    usual: float | None  # the earlier days' mean; None without history
    days: int  # how many earlier days
    events: bool = False

    @property
    def over_expected(self) -> bool:
        return self.today > RED_FACTOR * self.expected

    @property
    def over_usual(self) -> bool:
        # and over the expected volume: a day the model expects is not red for a history quieter than expected
        return self.usual is not None and self.today > RED_FACTOR * self.usual and self.today > self.expected

    @property
    def red(self) -> bool:
        return self.over_expected or self.over_usual

    def _value(self, value: float) -> str:
        return f"{value:.2f} per entity" if self.events else f"{value:.2%}"

    def html(self) -> str:
        expected = (
            f"the model's expected at most {self._value(self.expected)} (each entity's windows of the day times "
            "10^-threshold, as if every window over the threshold began an event)"
            if self.events
            else f"the model's expected {self._value(self.expected)} (its calibration's share of normal windows "
            "above the threshold)"
        )
        usual = (
            "no history"
            if self.usual is None
            else f"{self._value(self.usual)} on average over {_earlier_days(self.days)}"
        )
        why = [text for over, text in ((self.over_expected, expected), (self.over_usual, usual)) if over]
        if why:
            judged = f"red: more than {RED_FACTOR:g}x {' and '.join(why)}"
        else:
            judged = f"within {RED_FACTOR:g}x of {expected} and of {usual}"
        what = "New events" if self.events else "Windows flagged"
        return (
            f'<p>{what}: <span class="verdict {"bad" if self.red else "ok"}">{self._value(self.today)} today, '
            f"{judged}</span></p>"
        )


def _earlier_days(n: int) -> str:
    return f"{n} earlier day{'s' if n != 1 else ''}"


def flagged_shares(lake: Lake, table: str, detector: str, days: list[date]) -> dict[date, float]:
    """The share of each day's windows that are flagged: inside events once the events job ran, else over the
    threshold as scored; days that were not scored are left out."""
    return _shares(*_events_and_score_records(lake, table, detector, days), days)


def _events_and_score_records(lake: Lake, table: str, detector: str, days: list[date]) -> tuple[dict, dict]:
    """The days' latest events records and score records of a detector (one read of the runs table each)."""
    events = latest_run_records(lake.root, table, f"events_{detector}", days)
    return events, latest_run_records(lake.root, table, f"score_{detector}", days)


def _shares(events: dict[date, dict], scores: dict[date, dict], days: list[date]) -> dict[date, float]:
    """`flagged_shares` from the days' latest events and score records."""
    shares = {}
    for day in days:
        if events.get(day, {}).get("rows_in"):
            shares[day] = events[day]["rows_out"] / events[day]["rows_in"]
        elif scores.get(day, {}).get("rows_out"):
            shares[day] = scores[day]["anomalies"] / scores[day]["rows_out"]
    return shares


def flagged_share(lake: Lake, table: str, detector: str, day: date) -> float | None:
    """One day's flagged share (see `flagged_shares`); None when the day was not scored."""
    return flagged_shares(lake, table, detector, [day]).get(day)


def _alert_volume(lake: Lake, table: TableConfig, detector: str, day: date, threshold: float) -> str:
    """The day's flagged share judged against the expected share and the last days', with the days plotted."""
    days = _history_days(day)
    events, scores = _events_and_score_records(lake, table.name, detector, days)
    rates = _shares(events, scores, days)
    if day not in rates:
        return "<h2>Alert volume</h2><p>No run record of this day's scoring.</p>"
    past = [r for d, r in rates.items() if d != day]
    verdict = RateVerdict(rates[day], 10.0**-threshold, float(np.mean(past)) if past else None, len(past))
    new_events = _new_events(events, day, threshold)
    return f"<h2>Alert volume</h2>{verdict.html()}{new_events}{_rate_plot(rates, day, verdict.expected)}"


def _new_events(records: dict[date, dict], day: date, threshold: float) -> str:
    """The day's new events per entity (the nightly check's alert-volume figure) judged as the flagged share is,
    from the days' latest events records."""
    per_entity = {d: record for d, record in records.items() if record.get("entities")}
    if day not in per_entity:
        return ""
    record = per_entity.pop(day)
    usual = float(np.mean([r["new_events"] / r["entities"] for r in per_entity.values()])) if per_entity else None
    expected = record["rows_in"] / record["entities"] * 10.0**-threshold
    verdict = RateVerdict(record["new_events"] / record["entities"], expected, usual, len(per_entity), events=True)
    return verdict.html() + f"<p>({record['new_events']} new events over {record['entities']} entities.)</p>"


def _history_days(day: date) -> list[date]:
    """The HISTORY_DAYS days before `day`, then `day`, oldest first (as the rate plot draws them)."""
    return [day - timedelta(days=n) for n in range(HISTORY_DAYS, -1, -1)]


def _rate_plot(rates: dict[date, float], day: date, expected: float) -> str:
    if not rates:
        return ""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 2.2))
    days = list(rates)
    axis.bar(
        [d.isoformat()[5:] for d in days],
        [100 * rates[d] for d in days],
        color=["tab:red" if d == day else "tab:gray" for d in days],
    )
    axis.axhline(100 * expected, color="tab:blue", linestyle="--", linewidth=1, label="expected")
    axis.set_ylabel("% of windows flagged")
    axis.set_title("windows flagged, last days (red: this partition; dashed: the model's expected share)", fontsize=9)
    axis.tick_params(axis="x", labelsize=7, rotation=45)
    return _png(fig)


def _distribution(scores: pd.DataFrame) -> str:
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 2.8))
    axis.hist(scores["score"], bins=60, color="tab:blue", alpha=0.8)
    threshold = float(scores["threshold"].iloc[0])
    axis.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.2f}")
    axis.set_yscale("log")
    axis.set_xlabel("score (-log10 of the tail probability)")
    axis.legend(fontsize=8)
    return f"<h2>Score distribution</h2>{_png(fig)}"


def _raw_around(lake: Lake, table: TableConfig, entity: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The entity's raw rows between start and end (every raw partition those days touch, through the raw table's
    reader: a Delta table's snapshot or a Parquet folder's files)."""
    columns = [table.entity, table.time, *table.features]
    frames = []
    for offset in range((end.normalize() - start.normalize()).days + 1):
        day = (start.normalize() + pd.Timedelta(days=offset)).date()
        frames += [pd.read_parquet(path, engine="pyarrow", columns=columns) for path in raw_files(lake, table, day)]
    if not frames:
        return pd.DataFrame(columns=["ts", *table.features])
    raw = pd.concat(frames, ignore_index=True).rename(columns={table.time: "ts"})
    raw["ts"] = _utc_naive(raw["ts"])
    # the entity column may be any type upstream (the jobs cast it to string), so compare as strings
    raw = raw[(raw[table.entity].astype(str) == entity) & (raw["ts"] >= start) & (raw["ts"] <= end)]
    return raw.sort_values("ts")


def _timeseries_event(lake: Lake, table: TableConfig, event: pd.Series, peak: pd.Series) -> str:
    """The entity's metrics that drove the event, each in its own panel and the table's own units, the event
    shaded."""
    step = pd.Timedelta(seconds=table.step_seconds)
    span_start = event["first_window"] - step * (table.window.length - 1)
    raw = _raw_around(
        lake,
        table,
        event["entity_id"],
        span_start - step * table.window.length * 2,
        event["last_window"] + step * table.window.length,
    )
    shares = dict(peak["feature_contributions"]) if peak["feature_contributions"] is not None else {}
    ranked = [f for f, s in sorted(shares.items(), key=lambda kv: -kv[1]) if s >= 0.2] or [peak["top_feature"]]
    drivers = ranked[:MAX_DRIVERS]
    plt = _pyplot()
    fig, axes = plt.subplots(len(drivers), 1, figsize=(9, 1.2 + 1.6 * len(drivers)), sharex=True, squeeze=False)
    for axis, feature in zip(axes[:, 0], drivers):
        axis.plot(raw["ts"], raw[feature].astype(float), linewidth=1.2, color="tab:blue")
        axis.axvspan(span_start, event["last_window"], color="tab:red", alpha=0.15)
        axis.set_ylabel(feature, fontsize=8)  # the column's own values: the table's units
        axis.set_title(f"{feature} ({shares.get(feature, 0):.0%} of the error)", fontsize=8, loc="left")
    axes[0, 0].set_title("event shaded", fontsize=8, loc="right", color="tab:red")
    caption = ", ".join(f"<b>{html.escape(f)}</b> {shares.get(f, 0):.0%}" for f in ranked)
    alt = f"{event['entity_id']}: {', '.join(drivers)} in the table's units around the event (shaded)"
    return f"<p>Metrics that drove it: {caption}</p>{_png(fig, alt)}"


def _sample(lake: Lake, table: TableConfig, entity: str, day: date) -> pd.DataFrame:
    """The features row of one image or text, from the features table's snapshot (only that row is read)."""
    row = read_snapshot(lake.features(table.name), {"dt": day.isoformat()}, where=ds.field("entity_id") == entity)
    return row if row is not None else pd.DataFrame(columns=["entity_id", "x"])


def _image_event(lake: Lake, table: TableConfig, peak: pd.Series, day: date) -> str:
    row = _sample(lake, table, peak["entity_id"], day)
    if row.empty:
        return '<p class="muted">(its image is no longer in the features table)</p>'
    image = np.asarray(row["x"].iloc[0], dtype=float).reshape(table.sample_shape)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(5, 2.6))
    left.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
    left.set_title("image", fontsize=8)
    right.imshow(np.array([list(r) for r in peak["error_map"]], dtype=float), cmap="magma")
    right.set_title("error map (share of the error)", fontsize=8)
    for axis in (left, right):
        axis.axis("off")
    regions = ", ".join(
        f"rows {r['row0']}-{r['row1']}, columns {r['col0']}-{r['col1']} ({r['share']:.0%})"
        for r in (peak["top_regions"] if peak["top_regions"] is not None else [])
    )
    return f"<p>The image beside its error map; the regions that drove the score: {regions or 'none'}</p>{_png(fig)}"


def _text_event(lake: Lake, table: TableConfig, peak: pd.Series, day: date) -> str:
    row = _sample(lake, table, peak["entity_id"], day)
    text = "" if row.empty else str(row["x"].iloc[0])
    tokens = [t["token"] for t in (peak["top_tokens"] if peak["top_tokens"] is not None else [])]
    marked = html.escape(text)
    for token in sorted(set(tokens), key=len, reverse=True):
        if token.strip():
            marked = re.sub(rf"(?i)\b({re.escape(html.escape(token))})\b", r"<mark>\1</mark>", marked)
    listed = ", ".join(
        f"<mark>{html.escape(t['token'])}</mark> {t['surprise']:.1f}"
        for t in (peak["top_tokens"] if peak["top_tokens"] is not None else [])
    )
    quoted = marked or "<span class=muted>(empty)</span>"
    return f"<blockquote>{quoted}</blockquote><p>Most surprising tokens (nats): {listed}</p>"


def _flagged_groups(scores: pd.DataFrame, table: TableConfig) -> pd.DataFrame:
    """Before the events job has run: flagged windows grouped (time series) or flagged samples, strongest first."""
    if table.kind == "timeseries":
        return anomaly_events(scores, table.window.length * table.step_seconds)
    flagged = scores[scores["is_anomaly"]].sort_values("score", ascending=False, kind="stable")
    return pd.DataFrame(
        {"entity_id": flagged["entity_id"], "peak_score": flagged["score"], "peak_index": flagged.index}
    ).reset_index(drop=True)


def _day_events(lake: Lake, table: TableConfig, detector: str, day: date) -> pd.DataFrame | None:
    """The day's rows of the events table, new and most severe first; None when the events job has not run."""
    if latest_run_record(lake.root, table.name, f"events_{detector}", day) is None:
        return None
    events = read_snapshot(lake.events(table.name), {"detector": detector, "dt": day.isoformat()})
    if events is None:
        return pd.DataFrame(columns=["event_id", "entity_id", "start", "end", "severity", "windows", "new", "open"])
    for column in ("start", "end", "peak_ts"):
        events[column] = _utc_naive(events[column])
    return events.sort_values(["new", "severity"], ascending=[False, False], kind="stable").reset_index(drop=True)


def _explanation(event: pd.Series, kind: str) -> str:
    """One line of what drove an event (its strongest window's explanation)."""
    if kind == "timeseries":
        shares = dict(event["feature_contributions"]) if event["feature_contributions"] is not None else {}
        return ", ".join(f"{f} {v:.0%}" for f, v in sorted(shares.items(), key=lambda kv: -kv[1])[:3])
    if kind == "image":
        regions = event["top_regions"] if event["top_regions"] is not None else []
        return "; ".join(f"rows {r['row0']}-{r['row1']}, columns {r['col0']}-{r['col1']}" for r in regions[:2])
    tokens = event["top_tokens"] if event["top_tokens"] is not None else []
    return ", ".join(str(t["token"]) for t in tokens[:5])


def _events_list(events: pd.DataFrame, kind: str, plotted: set[str]) -> str:
    """Every event of the day as a table row; those with a plot link to it."""
    if events.empty:
        return "<h2>Events</h2><p>No event on this day.</p>"
    rows = []
    for _, event in events.iterrows():
        ident = html.escape(str(event["event_id"]))
        link = f'<a href="#event-{ident}">{ident}</a>' if event["event_id"] in plotted else ident
        state = ("new" if event["new"] else "goes on") + (", open" if event["open"] else "")
        rows.append(
            f'<tr class="event-row"><td class="event-id">{link}</td><td>{html.escape(str(event["entity_id"]))}</td>'
            f'<td class="text">{event["start"]} .. {event["end"]}</td><td>{event["severity"]:.2f}</td>'
            f'<td class="text">{state}</td><td class="text">{html.escape(_explanation(event, kind))}</td></tr>'
        )
    head = "<tr><th>event</th><th>entity</th><th>span</th><th>severity</th><th>state</th><th>explanation</th></tr>"
    new = int(events["new"].sum())
    return f"<h2>Events ({len(events)}, {new} new)</h2><table>{head}{''.join(rows)}</table>"


def _event_picture(lake: Lake, table: TableConfig, event: pd.Series, peak: pd.Series, day: date) -> tuple[str, str]:
    """(when, picture) of one event."""
    if table.kind == "timeseries":
        return f"{event['first_window']} .. {event['last_window']}, {event['windows']} windows", _timeseries_event(
            lake, table, event, peak
        )
    return "one sample", (_image_event if table.kind == "image" else _text_event)(lake, table, peak, day)


def _pictures(lake: Lake, table: TableConfig, shown: list[tuple[str, pd.Series, pd.Series]], day: date) -> str:
    """A picture per (anchor, event, strongest window) under the 'Top anomalies' heading."""
    if not shown:
        return "<h2>Top anomalies</h2><p>No anomaly flagged in this partition.</p>"
    parts = [f"<h2>Top anomalies ({len(shown)} strongest events)</h2>"]  # the media tests read this heading
    for rank, (anchor, event, peak) in enumerate(shown):
        when, body = _event_picture(lake, table, event, peak, day)
        parts.append(
            f'<div class="event" id="{html.escape(anchor)}"><h3>{rank + 1}. <span class="entity">'
            f"{html.escape(str(event['entity_id']))}</span> — score {event['peak_score']:.2f} "
            f'<span class="muted">({when})</span></h3>{body}</div>'
        )
    return "".join(parts)


def _anomalies(lake: Lake, table: TableConfig, detector: str, scores: pd.DataFrame, day: date) -> str:
    """The day's events listed and the strongest pictured; flagged windows grouped before the events job ran."""
    events = _day_events(lake, table, detector, day)
    if events is None:
        groups = _flagged_groups(scores, table).head(TOP_EVENTS)
        shown = [(f"group-{n}", g, scores.loc[g["peak_index"]]) for n, g in groups.iterrows()]
        note = '<p class="muted">The events job has not run for this day: flagged windows, grouped.</p>'
        return note + _pictures(lake, table, shown, day)
    if events.empty:  # the events job ran and found none
        return _events_list(events, table.kind, set()) + _pictures(lake, table, [], day)
    strongest = events.sort_values("severity", ascending=False, kind="stable").head(PICTURED_EVENTS)
    # Shown as the grouped windows are: the span, and the calibrated score (severity) as the event's score.
    as_group = strongest.drop(columns="peak_score").rename(
        columns={"start": "first_window", "end": "last_window", "severity": "peak_score"}
    )
    shown = [(f"event-{e['event_id']}", e, e) for _, e in as_group.iterrows()]
    listed = _events_list(events, table.kind, set(strongest["event_id"]))
    return listed + _pictures(lake, table, shown, day)


def build_report(lake: Lake, table: TableConfig, detector: str, day: date) -> str:
    """The report's HTML for one scored partition."""
    scores = _read_scores(lake, table, detector, day)
    title = f"anomalake: {table.name}, dt={day}, detector {detector}"
    threshold, version = float(scores["threshold"].iloc[0]), html.escape(str(scores["model_version"].iloc[0]))
    runs = [
        f"{job} run {html.escape(str(record['run_id']))}"
        for job in (f"score_{detector}", f"events_{detector}")
        if (record := latest_run_record(lake.root, table.name, job, day))
    ]
    summary = (
        f"<p>Scored by detector <b>{html.escape(detector)}</b>, model version <b>{version}</b> "
        f"({', '.join(runs) or 'no run record'}). {len(scores):,} rows scored, {int(scores['is_anomaly'].sum()):,} "
        f"flagged; threshold {threshold:.2f} on the calibrated score.</p>"
    )
    body = (
        summary
        + _health(lake, table, detector, day)
        + _alert_volume(lake, table, detector, day, threshold)
        + _anomalies(lake, table, detector, scores, day)
        + _distribution(scores)
    )
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style>'
    return f'<!DOCTYPE html><html lang="en"><head>{head}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>'


def write_report(lake: Lake, table: TableConfig, detector: str, day: date, out: Path | None = None) -> Path:
    """Write the report (default: _report.html inside the scored partition, which Spark's readers skip)."""
    target = Path(out) if out else scores_dir(lake, table.name, detector, day) / "_report.html"
    text = build_report(lake, table, detector, day)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
