"""The `anomalake` console script: one sub-command per job."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from anomalake.models.artifacts import ArtifactError
from anomalake.pipelines.config import ConfigError, check_name, load_table, load_tables
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.evaluation.datasets import DatasetError
from anomalake.pipelines.settings import Settings, load_settings


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date (YYYY-MM-DD)") from None


def _days(args: argparse.Namespace) -> list[date]:
    from anomalake.pipelines.lake.layout import day_range

    if args.date and (args.start or args.end):
        raise JobError("give either --date or --start/--end, not both")
    if args.date:
        return [args.date]
    if not (args.start and args.end):
        raise JobError("give --date D, or --start D1 --end D2")
    return day_range(args.start, args.end)


def _add_dates(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", type=_date, help="one day (YYYY-MM-DD)")
    parser.add_argument("--start", type=_date, help="first day of a range")
    parser.add_argument("--end", type=_date, help="last day of a range (included)")


EXAMPLES = {
    "generate": "anomalake generate --table telemetry --start 2026-03-01 --days 3 --entities 5 --seed 1",
    "windows": "anomalake windows --table telemetry --start 2026-03-01 --end 2026-03-03",
    "train": "anomalake train --detector dense_autoencoder --table telemetry --start 2026-03-01 --end 2026-03-02",
    "promote": "anomalake promote --detector dense_autoencoder --table telemetry --version v20260303T010000000000Z",
    "check": "anomalake check --table telemetry --date 2026-03-03",
    "alert": "anomalake alert --table telemetry --date 2026-03-03  # to $ANOMALAKE_ALERT_URL; unset: prints it",
    "score": "anomalake score --detector dense_autoencoder --table telemetry --date 2026-03-03",
    "events": "anomalake events --detector dense_autoencoder --table telemetry --date 2026-03-03",
    "sql": 'anomalake sql "SELECT entity_id, ts, score FROM scores_telemetry WHERE is_anomaly '
    'ORDER BY score DESC LIMIT 10"',
    "catalog": "anomalake catalog --table telemetry",
    "history": "anomalake history --table telemetry --detector dense_autoencoder",
    "maintain": "anomalake maintain --table telemetry",
    "detectors": "anomalake detectors",
    "demo": "anomalake demo --kind image --normal-class 3",
    "evaluate": "anomalake evaluate --benchmark nab --data ../shared/datasets/nab --detector default --out results/nab",
    "import": "anomalake import metrics --src ./hosts.csv --table my_servers --entity-column host --time-column time "
    "--features cpu,memory --write-config",
    "report": "anomalake report --table telemetry --date 2026-01-17 --out report.html",
    "doctor": "anomalake doctor",
}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit 2) that says where the help is."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse, but an unknown option is reported against the sub-command it was given to."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = f"{self.prog} {parsed.command}" if getattr(parsed, "command", None) else self.prog
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see `{prog} --help`)\n")
        return parsed


def _name(what: str):
    """An argparse type that accepts only a safe table or detector name (a bad one is a usage error, exit 2)."""

    def parse(value: str) -> str:
        try:
            return check_name(what, value)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with an example."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="anomalake",
        description="Deep-learning anomaly detection over a Parquet lake.",
        epilog="example:\n  anomalake demo\n\nexit codes: 0 ok, 1 the job failed, 2 a usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"anomalake {_version()}")
    parser.add_argument("--lake", help="the lake folder (default: $ANOMALAKE_LAKE, else ./lake)")
    parser.add_argument("--master", help="the Spark master (default: $ANOMALAKE_MASTER, else local[*])")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    gen = _command(sub, "generate", "write synthetic telemetry with labelled anomalies to raw/<table>")
    gen.add_argument("--table", required=True, type=_name("table"))
    gen.add_argument("--start", type=_date, required=True)
    gen.add_argument("--days", type=int, required=True)
    gen.add_argument("--entities", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--gaps",
        action="store_true",
        help="sample the series the way collectors report: jitter, second readings, lost readings, outages",
    )
    gen.add_argument(
        "--format",
        choices=("parquet", "csv"),
        default="parquet",
        help="parquet: raw/<table>/dt=D partitions (default); csv: one file to import (`import metrics`)",
    )
    gen.add_argument("--out", help="--format csv: the file to write (default <table>.csv)")

    win = _command(sub, "windows", "raw partitions -> features/<table>/dt=D")
    win.add_argument("--table", required=True, type=_name("table"))
    _add_dates(win)

    train = _command(sub, "train", "train a detector on a range of features and promote it to CURRENT")
    train.add_argument("--detector", required=True, type=_name("detector"))
    train.add_argument("--table", required=True, type=_name("table"))
    train.add_argument("--start", type=_date, required=True)
    train.add_argument("--end", type=_date, required=True)
    train.add_argument("--candidate", action="store_true", help="do not move CURRENT; print the version for `promote`")
    train.add_argument(
        "--workers",
        type=int,
        help="Spark tasks that train data-parallel on a cluster (default: ANOMALAKE_TRAIN_WORKERS, else 1)",
    )

    promote = _command(sub, "promote", "quality-gate a candidate model and move CURRENT to it if it passes")
    promote.add_argument("--detector", required=True, type=_name("detector"))
    promote.add_argument("--table", required=True, type=_name("table"))
    promote.add_argument("--version", required=True)

    check = _command(sub, "check", "check a day's run records: row accounting, error rate, anomaly-rate jump")
    check.add_argument("--table", required=True, type=_name("table"))
    check.add_argument("--date", type=_date, required=True)
    check.add_argument(
        "--detector", action="append", type=_name("detector"), help="default: every detector of the table's config"
    )

    score = _command(sub, "score", "score features/<table>/dt=D -> scores/<table>/detector=<name>/dt=D")
    score.add_argument("--detector", required=True, type=_name("detector"))
    score.add_argument("--table", required=True, type=_name("table"))
    _add_dates(score)
    score.add_argument("--model-version", help="a version folder instead of CURRENT")

    events = _command(sub, "events", "scores of day D and its history -> events/<table>/detector=<name>/dt=D")
    events.add_argument("--detector", required=True, type=_name("detector"))
    events.add_argument("--table", required=True, type=_name("table"))
    _add_dates(events)
    events.add_argument("--model-version", help="the scores of a version other than CURRENT")

    sql = _command(sub, "sql", "run Spark SQL over the lake's tables")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument("--limit", type=int, default=1000)

    hist = _command(sub, "history", "list the commits of a table's Delta tables: version, time, run id, partitions")
    hist.add_argument("--table", required=True, type=_name("table"))
    hist.add_argument("--detector", type=_name("detector"), help="only the commits of this detector's jobs")
    hist.add_argument("--format", choices=("table", "csv", "json"), default="table")

    maintain = _command(
        sub, "maintain", "compact a table's Delta tables and delete files removed over ANOMALAKE_RETENTION_DAYS ago"
    )
    maintain.add_argument("--table", required=True, type=_name("table"))

    catalog = _command(
        sub, "catalog", "register the lake's tables in the persistent catalog (for spark-sql, notebooks)"
    )
    catalog.add_argument(
        "--table", action="append", type=_name("table"), help="default: every table of the catalog file"
    )

    alert = _command(
        sub,
        "alert",
        "post the day's new anomaly events (and a failed check) as one JSON message to $ANOMALAKE_ALERT_URL, once",
    )
    alert.add_argument("--table", required=True, type=_name("table"))
    alert.add_argument("--date", type=_date, required=True)

    _command(sub, "detectors", "list the detector families, their input kinds, and the configured detectors")

    demo = _command(sub, "demo", "window, train, score and report on a labelled set (synthetic telemetry, MNIST, SMS)")
    demo.add_argument("--kind", choices=("timeseries", "image", "text"), default="timeseries")
    demo.add_argument(
        "--table",
        default=None,
        type=_name("table"),
        help="the catalog entry the demo fills (default telemetry, digits or messages)",
    )
    demo.add_argument("--normal-class", default="0", help="image demo: the digit that is normal (default 0)")
    demo.add_argument(
        "--gaps", action="store_true", help="time series demo: the telemetry sampled with gaps (generate --gaps)"
    )

    ev = _command(
        sub,
        "evaluate",
        "run a public benchmark through windows/train/score and measure it against its labels, beside baselines",
    )
    ev.add_argument(
        "--benchmark",
        choices=("nab", "nab_nightly", "asd", "skab", "skab_runs", "mnist", "sms"),
        help="required unless --quick; nab_nightly: NAB trained on each series' first days (its probationary "
        "15 %%), the later days scored day by day; skab_runs: SKAB under its leaderboard's protocol (each "
        "run's first 400 rows train its model)",
    )
    ev.add_argument(
        "--quick",
        action="store_true",
        help="a fixed subset of NAB, ASD and SKAB from ANOMALAKE_DATASETS (a few minutes) and one aggregate figure",
    )
    ev.add_argument("--data", help="a folder in the benchmark's format (default: <ANOMALAKE_DATASETS>/<its folder>)")
    ev.add_argument("--detector", required=True, help="NAME[,NAME...] from `anomalake detectors`, or default")
    ev.add_argument("--out", help="where results.json, results.md and plots/ go (default: evaluation/<benchmark>)")
    ev.add_argument(
        "--groups",
        help="only these NAB categories or series, ASD entities, SKAB folders or runs, digits (comma-separated)",
    )
    ev.add_argument("--epochs", type=int, help="cut every detector's training to this many epochs (quick checks)")
    ev.add_argument(
        "--set",
        dest="settings",
        action="append",
        type=_setting,
        default=[],
        metavar="KEY=VALUE",
        help="replace a setting of every detector (sweeps): a family parameter (epochs=60), training.NAME or "
        "calibration.NAME, or of every table's events stage: events.NAME; the value is read as YAML; repeatable",
    )
    ev.add_argument(
        "--no-baselines", action="store_true", help="skip the IsolationForest, PCA and rolling z-score baselines"
    )
    ev.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ev.add_argument("--keep-lake", action="store_true", help="keep the temporary lake (its path is printed)")

    imp = _command(
        sub, "import", "metrics (CSV/TSV/Parquet), a folder of images or a CSV/TSV of texts -> raw/<table>/dt=D"
    )
    imp.add_argument("what", choices=("metrics", "images", "text"))
    imp.add_argument(
        "--src",
        required=True,
        help="metrics: a .csv, .tsv or .parquet file or a folder of them; images: a folder (label = sub-folder); "
        "text: a .csv or .tsv file with a header",
    )
    imp.add_argument("--table", required=True, type=_name("table"))
    imp.add_argument(
        "--date", type=_date, help="images, text: the raw partition to write (default today); metrics: by timestamp"
    )
    imp.add_argument("--entity-column", help="metrics: the column naming the host, sensor or series")
    imp.add_argument("--time-column", help="metrics: the timestamp column")
    imp.add_argument("--features", help="metrics: the numeric columns to model, comma-separated")
    imp.add_argument(
        "--timezone", help="metrics: the zone of timestamps written without one (an IANA name: UTC, Europe/Berlin)"
    )
    imp.add_argument(
        "--write-config",
        action="store_true",
        help="metrics: add the table (these columns, the step found in the data) to $ANOMALAKE_TABLES",
    )
    imp.add_argument("--text-column", help="text: the column holding the text")
    imp.add_argument("--label-column", help="text: an optional label column")
    imp.add_argument("--id-column", help="text: an optional id column (default: the row number)")

    report = _command(
        sub,
        "report",
        "one self-contained HTML page about a scored partition: health, top anomalies with plots, score distribution",
    )
    report.add_argument("--table", required=True, type=_name("table"))
    report.add_argument("--date", type=_date, required=True)
    report.add_argument("--detector", type=_name("detector"), help="default: the table's first detector")
    report.add_argument("--out", help="default: _report.html inside the scored partition")

    _command(sub, "doctor", "check Java, Spark, TensorFlow, Petastorm and the lake folder; say what is missing")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anomalake")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _session(settings: Settings, args: argparse.Namespace, extra: dict[str, str] | None = None):
    """A job context on a fresh SparkSession named after the command (with `extra` Spark properties)."""
    from anomalake.pipelines.lake.context import JobContext
    from anomalake.pipelines.spark import get_spark

    return JobContext(settings, get_spark(settings, f"anomalake-{args.command}", extra))


def _generate(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated, write_generated_csv

    spec = GenerateSpec(args.table, args.start, args.days, args.entities, args.seed, gaps=args.gaps)
    if args.format == "csv":
        out = Path(args.out or f"{args.table}.csv")
        counts = write_generated_csv(settings.lake_path, spec, out)
        print(f"{out}: {counts['rows']:,} rows; labels/{args.table}: {counts['labels']} anomalies")
        return
    if args.out:
        raise JobError("--out names the file of --format csv; parquet goes to raw/<table> in the lake")
    counts = write_generated(settings.lake_path, spec)
    rows = sum(v for k, v in counts.items() if k != "labels")
    print(
        f"raw/{args.table}: {rows:,} rows in {args.days} partitions; labels/{args.table}: {counts['labels']} anomalies"
    )


def _windows(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.features.job import run_windows

    table = load_table(settings.tables_file, args.table)
    r = run_windows(_session(settings, args), table, _days(args))
    print(
        f"features/{table.name}: rows in {r.rows_in:,} = windows {r.windows:,} + context {r.context:,} + quarantined "
        f"{r.quarantined_total:,} {r.quarantined}; {r.gap_share:.1%} of rows lost to gaps longer than the fill limit"
    )


def _train(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.training.job import run_train

    table = load_table(settings.tables_file, args.table)
    verbose = 1 if settings.interactive else 2  # a progress bar in a terminal, one line per epoch in logs
    workers = settings.train_workers if args.workers is None else args.workers
    # A barrier task forms a TensorFlow cluster once per process: each one gets a fresh Python worker.
    ctx = _session(settings, args, {"spark.python.worker.reuse": "false"} if workers > 1 else None)
    r = run_train(
        ctx, table, args.detector, args.start, args.end, verbose=verbose, promote=not args.candidate, workers=workers
    )
    pointer = "candidate, CURRENT unchanged" if args.candidate else f"CURRENT -> {r.version}"
    print(
        f"models/{args.detector}/{table.name}/{r.version}: {r.rows_train:,} training windows, {r.rows_holdout:,} held "
        f"out, threshold {r.threshold:.3f}; {pointer}"
    )
    print(f"candidate version: {r.version}")  # what an orchestrator passes to `promote`


def _promote(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.training.promotion import run_promote

    table = load_table(settings.tables_file, args.table)
    decision = run_promote(_session(settings, args), table, args.detector, args.version)
    where = f"models/{args.detector}/{table.name}/{args.version}"
    if not decision.promoted:
        raise JobError(f"{where}: refused, CURRENT unchanged: {'; '.join(decision.reasons)}")
    print(f"{where}: promoted to CURRENT {decision.metrics}")


def _days_label(days: list) -> str:
    """dt=D, or dt=D1..D2 (N days, one job) for a range."""
    return f"dt={days[0]}" + (f"..{days[-1]} ({len(days)} days, one job)" if len(days) > 1 else "")


def _score(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.scoring.job import run_score_days

    table = load_table(settings.tables_file, args.table)
    days = _days(args)
    r = run_score_days(_session(settings, args).with_new_run(), table, args.detector, days, args.model_version)
    where = _days_label(days)
    print(
        f"scores/{table.name}/detector={args.detector}/{where}: {r.rows_in:,} windows in, {r.scored:,} scored, "
        f"{r.anomalies:,} anomalies, quarantined {r.quarantined or 0}"
    )


def _events(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.events.job import run_events_days

    table = load_table(settings.tables_file, args.table)
    days = _days(args)
    r = run_events_days(_session(settings, args).with_new_run(), table, args.detector, days, args.model_version)
    print(
        f"events/{table.name}/detector={args.detector}/{_days_label(days)}: {r.events:,} events ({r.new_events:,} "
        f"new), {r.rows_out:,} of {r.rows_in:,} windows in events"
    )


def _sql(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.lake.query import render, run_sql

    tables = list(load_tables(settings.tables_file).values())
    print(render(run_sql(_session(settings, args), tables, args.query, args.limit), args.format), end="")


def _history(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.lake.query import render, table_history

    table = load_table(settings.tables_file, args.table)
    ctx = _session(settings, args)
    print(render(table_history(ctx.spark, ctx.lake, table, args.detector), args.format), end="")


def _maintain(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.lake.delta import maintain
    from anomalake.pipelines.lake.layout import delta_locations

    table = load_table(settings.tables_file, args.table)
    ctx = _session(settings, args)
    for name, root in delta_locations(ctx.lake, table).items():
        n = maintain(ctx.spark, root, settings.retention_days, ctx.run_id)
        snapshot = f"snapshot files {n['snapshot_files_before']:,} -> {n['snapshot_files_after']:,}"
        disk = f"files on disk {n['disk_files_before']:,} -> {n['disk_files_after']:,}"
        print(f"{name}: {snapshot}, {disk} (retention {settings.retention_days} days)")


def _catalog(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.lake import catalog
    from anomalake.pipelines.lake.layout import Lake
    from anomalake.pipelines.spark import delta_conf, get_spark

    lake = Lake(settings.lake_path)
    chosen = [load_table(settings.tables_file, name) for name in (args.table or load_tables(settings.tables_file))]
    missing = catalog.unregistered(lake, chosen)
    if missing:  # only a new table opens the metastore (embedded Derby admits one process at a time)
        catalog.register(get_spark(settings, "anomalake-catalog", catalog.catalog_conf(lake)), lake, missing)
    conf = catalog.write_spark_defaults(lake, delta_conf(settings))
    print(f"catalog {catalog.catalog_dir(lake)}: registered {', '.join(sorted(missing)) or 'nothing new'}")
    print(f"query it with: SPARK_CONF_DIR={conf.parent} spark-sql -e 'SHOW TABLES'")


def _check(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.evaluation.labelled import write_detection_metrics
    from anomalake.pipelines.lake.checks import run_check
    from anomalake.pipelines.lake.layout import Lake

    table = load_table(settings.tables_file, args.table)
    detectors = args.detector or list(table.detectors)
    result = run_check(Lake(settings.lake_path), table, detectors, args.date)
    for detector, figures in write_detection_metrics(Lake(settings.lake_path), table, detectors, args.date).items():
        print(
            f"table {table.name}, partition dt={args.date}, {detector} against labels/{table.name}: events "
            f"precision {figures['precision']:.2f}, recall {figures['recall']:.2f}, F1 {figures['f1']:.2f} "
            f"({figures['found']:.0f} of {figures['labelled']:.0f} labelled found, {figures['false_alarms']:.0f} false "
            "alarms) -> detection_metrics"
        )
    if result.problems:
        raise JobError(f"table {table.name}, partition dt={args.date}: " + "; ".join(result.problems))
    rates = ", ".join(f"{d} {r:.2f}" for d, r in result.anomaly_rates.items())
    print(f"table {table.name}, partition dt={args.date}: healthy; new events per entity: {rates}")


def _alert(settings: Settings, args: argparse.Namespace) -> None:
    import json

    from anomalake.pipelines.lake.layout import Lake
    from anomalake.pipelines.reporting import alerts

    table, lake = load_table(settings.tables_file, args.table), Lake(settings.lake_path)
    where = f"table {table.name}, partition dt={args.date.isoformat()}"
    base_url = settings.report_base_url or settings.lake_path.resolve().as_uri()
    message, ids = alerts.build_message(lake, table, args.date, base_url)
    if message is None:
        print(f"{where}: nothing to announce (no new events, the check passed)")
        return
    events = sum(len(d["events"]) for d in message["detectors"])
    if not settings.alert_url:
        print(json.dumps(message, indent=1))
        print(f"{where}: {events} new events; no webhook (ANOMALAKE_ALERT_URL), so the message above was not sent")
        return
    problem = alerts.post(settings.alert_url, message)
    if problem:  # the events are in the lake either way: a webhook that is down never fails the night
        print(f"{where}: the webhook did not take the alert after {alerts.TRIES} tries: {problem}", file=sys.stderr)
        return
    alerts.remember(lake, table.name, args.date, ids)
    print(f"{where}: announced {events} new events{'' if message['check']['passed'] else ' and the failed check'}")


DEMO_TABLES = {"timeseries": "telemetry", "image": "digits", "text": "messages"}


def _demo(settings: Settings, args: argparse.Namespace) -> None:
    table = load_table(settings.tables_file, args.table or DEMO_TABLES[args.kind])
    if table.kind != args.kind:
        raise JobError(f"table {table.name} is a {table.kind} table; --kind {args.kind} needs a {args.kind} table")
    if args.kind == "timeseries":
        from anomalake.pipelines.demo.timeseries import DemoSpec, run_demo

        run_demo(_session(settings, args), table, DemoSpec(gaps=args.gaps))
        return
    from anomalake.pipelines.demo.media import run_media_demo

    run_media_demo(_session(settings, args), table, args.normal_class if args.kind == "image" else "ham")


def _import(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.ingest.files import import_images, import_text
    from anomalake.pipelines.lake.layout import Lake

    if args.what == "metrics":
        _import_metrics(settings, args)
        return
    table, lake, day = load_table(settings.tables_file, args.table), Lake(settings.lake_path), args.date or date.today()
    if args.what == "images":
        rows = import_images(lake, table, args.src, day)
    else:
        if not args.text_column:
            raise JobError("import text needs --text-column (the column that holds the text)")
        rows = import_text(lake, table, args.src, day, args.text_column, args.label_column, args.id_column)
    print(f"raw/{table.name}/dt={day.isoformat()}: {rows:,} rows from {args.src}")


def _import_metrics(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.ingest.metrics import count_import, quarantine_counts_line, read_sources, write_import
    from anomalake.pipelines.lake.layout import Lake

    if args.date:
        raise JobError("import metrics writes the days its timestamps fall on: drop --date")
    table, entry = _metrics_table(settings, args)
    sources = read_sources(table, args.src, args.timezone)
    result = count_import(table, sources)  # too many unusable rows: stop before the config entry is written
    if entry is not None:
        table = _write_config(settings, args, entry, sources)
    write_import(Lake(settings.lake_path), table, sources, result)
    days = sorted(result.rows_out)
    span = f"dt={days[0]}..{days[-1]}" if days else "no day"
    plural = {"days": "s" if len(days) != 1 else "", "files": "s" if len(result.files) != 1 else ""}
    print(
        f"raw/{table.name}: {result.total_out:,} of {result.total_in:,} rows in {len(days)} day "
        f"partition{plural['days']} ({span}) from {len(result.files)} file{plural['files']}"
        + quarantine_counts_line(result)
    )


def _metrics_table(settings: Settings, args: argparse.Namespace):
    """The table to import into, and the entry to write (None when the catalog has the table already)."""
    from anomalake.pipelines.config import parse_table
    from anomalake.pipelines.ingest.table_entry import PROVISIONAL_STEP, metrics_entry

    flags = {"--entity-column": args.entity_column, "--time-column": args.time_column, "--features": args.features}
    tables = load_tables(settings.tables_file) if Path(settings.tables_file).exists() else {}
    if args.table in tables and not args.write_config:
        given = [flag for flag, value in flags.items() if value]
        if given:
            raise JobError(
                f"table {args.table} is in {settings.tables_file}: its columns come from there; drop {', '.join(given)}"
            )
        return tables[args.table], None
    if not args.write_config:
        raise JobError(
            f"table {args.table} is not in {settings.tables_file}: name its columns with --entity-column, "
            "--time-column and --features, and add it with --write-config"
        )
    missing = [flag for flag, value in flags.items() if not value]
    if missing:
        raise JobError(f"import metrics --write-config needs {', '.join(missing)}")
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    entry = metrics_entry(args.table, args.entity_column, args.time_column, features, 300)
    entry["step"] = PROVISIONAL_STEP
    return parse_table(args.table, entry, "the command line"), entry


def _write_config(settings: Settings, args: argparse.Namespace, entry: dict, sources: list):
    """Add the table to the user's tables file with the step its rows show; the table as configured there."""
    import pandas as pd

    from anomalake.pipelines.ingest.table_entry import add_table, infer_step, step_text
    from anomalake.pipelines.settings import PACKAGE_TABLES

    rows = pd.concat([s.rows for s in sources], ignore_index=True)
    step = infer_step(rows, entry["entity"], entry["time"], f"--src {args.src}")
    table = add_table(
        Path(settings.tables_file),
        PACKAGE_TABLES,
        args.table,
        {**entry, "step": step_text(step)},
        Path(args.src).name,
    )
    print(f"table {table.name} in {settings.tables_file}: step {step_text(table.step_seconds)}")
    return table


def _report(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.lake.layout import Lake
    from anomalake.pipelines.reporting.report import write_report

    table = load_table(settings.tables_file, args.table)
    detector = args.detector or table.detectors[0]
    path = write_report(Lake(settings.lake_path), table, detector, args.date, args.out)
    print(f"report of {table.name}, dt={args.date}, detector {detector}: {path}")


def _doctor(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.pipelines.jobs.doctor import run_checks

    problems = 0
    for check in run_checks(settings):
        problems += not check.ok
        print(f"{'ok     ' if check.ok else 'MISSING'} {check.name:<11} {check.detail}")
    if problems:
        raise JobError(
            f"{problems} check(s) failed; fix the MISSING lines above (`make install` sets up the Python side)"
        )


BENCHMARK_FOLDERS = {
    "nab": "nab",
    "nab_nightly": "nab",
    "asd": "asd",
    "skab": "skab",
    "skab_runs": "skab",
    "mnist": "mnist_mlxtend5k",
    "sms": "sms_spam",
}


def _setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE of `evaluate --set` (config.parse_setting), refused the argparse way."""
    from anomalake.pipelines.config import parse_setting

    try:
        return parse_setting(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _evaluate(settings: Settings, args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from anomalake.pipelines.config import load_detector
    from anomalake.pipelines.evaluation.cases import load_cases
    from anomalake.pipelines.evaluation.run import (
        EvaluateSpec,
        apply_settings,
        resolve_detectors,
        run_evaluate,
        temporary_lake,
    )

    if args.quick:
        return _evaluate_quick(settings, args)
    if not args.benchmark:
        raise JobError("evaluate: give --benchmark (nab, nab_nightly, asd, skab, skab_runs, mnist or sms) or --quick")
    detectors = resolve_detectors([n.strip() for n in args.detector.split(",") if n.strip()], args.benchmark)
    for name in detectors:
        apply_settings(load_detector(name), tuple(args.settings))  # an unknown name or setting fails before Spark
    data = Path(args.data or Path(settings.datasets) / BENCHMARK_FOLDERS[args.benchmark])
    if not data.is_dir():
        raise DatasetError(f"--data {data}: not a folder (give a folder in the {args.benchmark} format)")
    groups = tuple(g.strip() for g in (args.groups or "").split(",") if g.strip())
    cases = load_cases(
        args.benchmark, data, list(groups) or None
    )  # a folder in the wrong format fails here, before Spark
    lake, cleanup = temporary_lake(args.keep_lake)
    spec = EvaluateSpec(
        args.benchmark,
        data,
        detectors,
        Path(args.out or f"evaluation/{args.benchmark}"),
        groups,
        args.epochs,
        not args.no_baselines,
        not args.no_plots,
        args.keep_lake,
        tuple(args.settings),
    )
    print(f"anomalake evaluate: {args.benchmark} from {data}; detectors {', '.join(detectors)}; temporary lake {lake}")
    try:
        run_evaluate(_session(dataclasses.replace(settings, lake=str(lake)), args), spec, cases)
    finally:
        cleanup()


def _evaluate_quick(settings: Settings, args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from anomalake.pipelines.config import load_detector
    from anomalake.pipelines.evaluation.quick import QUICK_GROUPS, run_quick
    from anomalake.pipelines.evaluation.run import apply_settings, resolve_detectors, temporary_lake

    if args.benchmark or args.data or args.groups:
        raise JobError("evaluate --quick runs its own subset: leave out --benchmark, --data and --groups")
    names = [n.strip() for n in args.detector.split(",") if n.strip()]
    for name in {d for b in QUICK_GROUPS for d in resolve_detectors(names, b)}:
        apply_settings(load_detector(name), tuple(args.settings))  # an unknown name or setting fails before Spark
    data = {b: Path(settings.datasets) / BENCHMARK_FOLDERS[b] for b in QUICK_GROUPS}
    for benchmark, folder in data.items():
        if not folder.is_dir():
            raise DatasetError(f"{folder}: not a folder (evaluate --quick reads {benchmark} from ANOMALAKE_DATASETS)")
    lake, cleanup = temporary_lake(args.keep_lake)
    print(f"anomalake evaluate --quick: {', '.join(names)}; temporary lake {lake}")
    try:
        ctx = _session(dataclasses.replace(settings, lake=str(lake)), args)
        out = Path(args.out or "evaluation/quick")
        run_quick(ctx, data, names, out, args.epochs, tuple(args.settings), not args.no_baselines)
    finally:
        cleanup()


def _detectors(settings: Settings, args: argparse.Namespace) -> None:
    from anomalake.models.registry import discover
    from anomalake.pipelines.config import configured_detectors

    families = discover()
    print(f"{'family':<20} {'input kinds':<20} description")
    for name, family in families.items():
        print(f"{name:<20} {', '.join(family.input_kinds):<20} {family.describe()}")
    print(f"\n{'detector (--detector)':<24} family")
    for spec in configured_detectors():
        print(f"{spec.name:<24} {spec.family}")


COMMANDS = {
    "detectors": _detectors,
    "generate": _generate,
    "windows": _windows,
    "train": _train,
    "promote": _promote,
    "score": _score,
    "events": _events,
    "sql": _sql,
    "history": _history,
    "maintain": _maintain,
    "catalog": _catalog,
    "check": _check,
    "alert": _alert,
    "demo": _demo,
    "import": _import,
    "evaluate": _evaluate,
    "report": _report,
    "doctor": _doctor,
}


USAGE_ERRORS = (
    ConfigError,
    DatasetError,
)  # what was asked for does not exist or is not in its format: exit 2, like a bad option
NEXT_STEP = {
    ConfigError: "`anomalake detectors` lists the detectors; the table catalog is $ANOMALAKE_TABLES",
    DatasetError: "point --data at a folder in the benchmark's layout (see the README)",
}


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with --lake and --master taking precedence."""
    import dataclasses
    from pathlib import Path

    settings = load_settings()
    if args.lake:
        settings = dataclasses.replace(settings, lake=str(Path(args.lake).resolve()))
    if args.master:
        settings = dataclasses.replace(settings, master=args.master)
    return settings


def main(argv: list[str] | None = None) -> int:
    """Parse and run; an expected failure is one line on stderr: exit 1 when a job failed, 2 for a usage error."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](_settings(args), args)
        return 0
    except (JobError, ConfigError, DatasetError, ArtifactError, FileNotFoundError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        hint = next((h for kind, h in NEXT_STEP.items() if isinstance(error, kind)), "")
        print(f"anomalake {args.command}: error: {message}" + (f" (next: {hint})" if hint else ""), file=sys.stderr)
        return 2 if isinstance(error, USAGE_ERRORS) else 1


if __name__ == "__main__":
    sys.exit(main())
