"""`anomalake report`: one self-contained HTML page about one scored partition (plots embedded, no network).

It shows the run's health (rows per stage, quarantined by reason, anomaly rate against the last 14 days),
the strongest anomaly events with a picture each (time series: the entity's metrics around the event with
the event shaded and the metrics that drove it drawn strong; images: the image beside its error map; texts:
the message with its surprising tokens marked), and the score distribution with the threshold. It reads
the lake's Parquet and run records directly (pyarrow): one partition is small, and no Spark is needed.
"""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.events.grouping import anomaly_events
from anomalake.pipelines.lake.delta import read_snapshot
from anomalake.pipelines.lake.layout import Lake, has_data, partition_path
from anomalake.pipelines.lake.runs import latest_run_record

TOP_EVENTS = 5
HISTORY_DAYS = 14
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.bad{color:#b00020;font-weight:600}
.ok{color:#1b5e20;font-weight:600}img{max-width:100%;display:block;margin:6px 0}mark{background:#ffcc80}
.event{border:1px solid #eee;padding:8px 12px;margin:12px 0;border-radius:6px}.muted{color:#777}
"""


def scores_dir(lake: Lake, table: str, detector: str, day: date) -> Path:
    """The scored partition a report describes (the report is written into it as _report.html)."""
    return partition_path(lake.scores(table), detector=detector, dt=day.isoformat())


def _png(fig) -> str:
    """A matplotlib figure as an <img> with the PNG inline (base64), then closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


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
    """Rows per stage, quarantined by reason, and today's anomaly rate beside the last 14 days'."""
    windows = latest_run_record(lake.root, table.name, "windows", day) or {}
    score = latest_run_record(lake.root, table.name, f"score_{detector}", day) or {}
    rows = [
        ("raw rows in (windows job)", windows.get("rows_in")),
        ("windows / samples written", windows.get("rows_out")),
        ("context rows", windows.get("context")),
        ("windows scored", score.get("rows_out")),
        ("anomalies flagged", score.get("anomalies")),
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
    rates = _rates(lake, table.name, detector, day)
    today = rates.get(day)
    past = [r for d, r in rates.items() if d != day]
    usual = float(np.mean(past)) if past else None
    verdict = (
        ""
        if today is None or usual is None
        else (
            f'<span class="{"bad" if today > 5 * max(usual, 0.002) else "ok"}">{today:.2%} today against {usual:.2%} '
            f"on average over {len(past)} earlier days</span>"
        )
    )
    return (
        f"<h2>Run health</h2><table><tr><th>stage</th><th>rows</th></tr>{stage_table}</table>"
        f"<table><tr><th>quarantined (reason)</th><th>rows</th></tr>{quarantine_table}</table>"
        f"<p>Anomaly rate: {verdict or 'no history yet'}</p>{_rate_plot(rates, day)}"
    )


def _rates(lake: Lake, table: str, detector: str, day: date) -> dict[date, float]:
    out = {}
    for n in range(HISTORY_DAYS, -1, -1):
        d = day - timedelta(days=n)
        record = latest_run_record(lake.root, table, f"score_{detector}", d)
        if record and record.get("rows_out"):
            out[d] = record["anomalies"] / record["rows_out"]
    return out


def _rate_plot(rates: dict[date, float], day: date) -> str:
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
    axis.set_ylabel("% flagged")
    axis.set_title("anomaly rate, last days (red: this partition)", fontsize=9)
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
    """The entity's raw rows between start and end (every raw partition those days touch)."""
    frames = []
    for offset in range((end.normalize() - start.normalize()).days + 1):
        day = (start.normalize() + pd.Timedelta(days=offset)).date().isoformat()
        columns = [table.entity, table.time, *table.features]
        folder = partition_path(lake.raw(table), dt=day)
        if table.format == "delta":
            frame = read_snapshot(lake.raw(table), {"dt": day}, columns)
            frames += [frame] if frame is not None else []
        elif has_data(folder):
            frames.append(pd.read_parquet(folder, engine="pyarrow", columns=columns))
    if not frames:
        return pd.DataFrame(columns=["ts", *table.features])
    raw = pd.concat(frames, ignore_index=True).rename(columns={table.time: "ts"})
    raw["ts"] = _utc_naive(raw["ts"])
    # the entity column may be any type upstream (the jobs cast it to string), so compare as strings
    raw = raw[(raw[table.entity].astype(str) == entity) & (raw["ts"] >= start) & (raw["ts"] <= end)]
    return raw.sort_values("ts")


def _timeseries_event(lake: Lake, table: TableConfig, event: pd.Series, peak: pd.Series) -> str:
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
    drivers = [f for f, s in sorted(shares.items(), key=lambda kv: -kv[1]) if s >= 0.2] or [peak["top_feature"]]
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(9, 3))
    for feature in table.features:
        values = raw[feature].astype(float)
        spread = values.std() or 1.0
        strong = feature in drivers
        axis.plot(
            raw["ts"],
            (values - values.mean()) / spread,
            linewidth=1.6 if strong else 0.7,
            color=None if strong else "lightgray",
            label=f"{feature} ({shares.get(feature, 0):.0%})" if strong else None,
        )
    axis.axvspan(span_start, event["last_window"], color="tab:red", alpha=0.15, label="anomalous span")
    axis.set_ylabel("standardised value")
    axis.legend(fontsize=7, loc="upper left")
    caption = ", ".join(f"<b>{html.escape(f)}</b> {shares.get(f, 0):.0%}" for f in drivers)
    return f"<p>Metrics that drove it: {caption} (grey: the others)</p>{_png(fig)}"


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


def _events(scores: pd.DataFrame, table: TableConfig) -> pd.DataFrame:
    if table.kind == "timeseries":
        return anomaly_events(scores, table.window.length * table.step_seconds)
    flagged = scores[scores["is_anomaly"]].sort_values("score", ascending=False, kind="stable")
    return pd.DataFrame(
        {"entity_id": flagged["entity_id"], "peak_score": flagged["score"], "peak_index": flagged.index}
    ).reset_index(drop=True)


def _top_events(lake: Lake, table: TableConfig, scores: pd.DataFrame, day: date) -> str:
    events = _events(scores, table).head(TOP_EVENTS)
    if events.empty:
        return "<h2>Top anomalies</h2><p>No anomaly flagged in this partition.</p>"
    parts = [f"<h2>Top anomalies ({len(events)} strongest events)</h2>"]
    for rank, event in events.iterrows():
        peak = scores.loc[event["peak_index"]]
        if table.kind == "timeseries":
            when = f"{event['first_window']} .. {event['last_window']}, {event['windows']} windows"
            body = _timeseries_event(lake, table, event, peak)
        else:
            when = "one sample"
            body = (_image_event if table.kind == "image" else _text_event)(lake, table, peak, day)
        parts.append(
            f'<div class="event"><h3>{rank + 1}. <span class="entity">{html.escape(str(event["entity_id"]))}</span>'
            f' — score {event["peak_score"]:.2f} <span class="muted">({when})</span></h3>{body}</div>'
        )
    return "".join(parts)


def build_report(lake: Lake, table: TableConfig, detector: str, day: date) -> str:
    """The report's HTML for one scored partition."""
    scores = _read_scores(lake, table, detector, day)
    title = f"anomalake: {table.name}, dt={day}, detector {detector}"
    threshold, version = float(scores["threshold"].iloc[0]), html.escape(str(scores["model_version"].iloc[0]))
    summary = (
        f"<p>{len(scores):,} rows scored, {int(scores['is_anomaly'].sum()):,} flagged (score above the threshold "
        f"{threshold:.2f}); model {version}.</p>"
    )
    body = summary + _health(lake, table, detector, day) + _top_events(lake, table, scores, day) + _distribution(scores)
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
