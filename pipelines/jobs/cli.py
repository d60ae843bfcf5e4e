"""The `anomalake` console script: one sub-command per job."""
from __future__ import annotations

import argparse
import sys
from datetime import date

from pipelines.config import ConfigError, load_table, load_tables
from pipelines.datasets import DatasetError
from pipelines.errors import JobError
from pipelines.settings import Settings, load_settings


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date (YYYY-MM-DD)") from None


def _days(args: argparse.Namespace) -> list[date]:
    from pipelines.io import day_range

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomalake", description="Deep-learning anomaly detection over a Parquet lake.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write synthetic telemetry with labelled anomalies to raw/<table>")
    gen.add_argument("--table", required=True)
    gen.add_argument("--start", type=_date, required=True)
    gen.add_argument("--days", type=int, required=True)
    gen.add_argument("--entities", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0)

    win = sub.add_parser("windows", help="raw partitions -> features/<table>/dt=D")
    win.add_argument("--table", required=True)
    _add_dates(win)

    train = sub.add_parser("train", help="train a detector on a range of features and promote it to CURRENT")
    train.add_argument("--detector", required=True)
    train.add_argument("--table", required=True)
    train.add_argument("--start", type=_date, required=True)
    train.add_argument("--end", type=_date, required=True)
    train.add_argument("--candidate", action="store_true", help="do not move CURRENT; print the version for `promote`")

    promote = sub.add_parser("promote", help="quality-gate a candidate model and move CURRENT to it if it passes")
    promote.add_argument("--detector", required=True)
    promote.add_argument("--table", required=True)
    promote.add_argument("--version", required=True)

    check = sub.add_parser("check", help="check a day's run records: row accounting, error rate, anomaly-rate jump")
    check.add_argument("--table", required=True)
    check.add_argument("--date", type=_date, required=True)
    check.add_argument("--detector", action="append", help="default: every detector of the table's config")

    score = sub.add_parser("score", help="score features/<table>/dt=D -> scores/<table>/detector=<name>/dt=D")
    score.add_argument("--detector", required=True)
    score.add_argument("--table", required=True)
    _add_dates(score)
    score.add_argument("--model-version", help="a version folder instead of CURRENT")

    sql = sub.add_parser("sql", help="run Spark SQL over the lake's tables")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument("--limit", type=int, default=1000)

    catalog = sub.add_parser("catalog", help="register the lake's tables in the persistent catalog (for spark-sql, notebooks)")
    catalog.add_argument("--table", action="append", help="default: every table of the catalog file")

    sub.add_parser("detectors", help="list the detector families, their input kinds, and the configured detectors")

    demo = sub.add_parser("demo", help="window, train, score and report on a labelled set (synthetic telemetry, MNIST, SMS)")
    demo.add_argument("--kind", choices=("timeseries", "image", "text"), default="timeseries")
    demo.add_argument("--table", default=None, help="the catalog entry the demo fills (default telemetry, digits or messages)")
    demo.add_argument("--normal-class", default="0", help="image demo: the digit that is normal (default 0)")

    ev = sub.add_parser(
        "evaluate",
        help="run a public benchmark through windows/train/score and measure it against its labels, beside baselines",
        epilog="example: anomalake evaluate --benchmark nab --data ../shared/datasets/nab --detector default --out results/nab",
    )
    ev.add_argument("--benchmark", required=True, choices=("nab", "asd", "skab", "mnist", "sms"))
    ev.add_argument("--data", help="a folder in the benchmark's format (default: <ANOMALAKE_DATASETS>/<its folder>)")
    ev.add_argument("--detector", required=True, help="NAME[,NAME...] from `anomalake detectors`, or default")
    ev.add_argument("--out", help="where results.json, results.md and plots/ go (default: evaluation/<benchmark>)")
    ev.add_argument("--groups", help="only these NAB categories or series, ASD entities, SKAB folders or runs, digits (comma-separated)")
    ev.add_argument("--epochs", type=int, help="cut every detector's training to this many epochs (quick checks)")
    ev.add_argument("--no-baselines", action="store_true", help="skip the IsolationForest, PCA and rolling z-score baselines")
    ev.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ev.add_argument("--keep-lake", action="store_true", help="keep the temporary lake (its path is printed)")

    imp = sub.add_parser("import", help="a folder of images or a CSV/TSV of texts -> raw/<table>/dt=D")
    imp.add_argument("what", choices=("images", "text"))
    imp.add_argument("--src", required=True, help="images: a folder (label = sub-folder); text: a .csv or .tsv file with a header")
    imp.add_argument("--table", required=True)
    imp.add_argument("--date", type=_date, default=date.today(), help="the raw partition to write (default today)")
    imp.add_argument("--text-column", help="text: the column holding the text")
    imp.add_argument("--label-column", help="text: an optional label column")
    imp.add_argument("--id-column", help="text: an optional id column (default: the row number)")
    return parser


def _session(settings: Settings, args: argparse.Namespace):
    """A job context on a fresh SparkSession named after the command."""
    from pipelines.jobs.context import JobContext
    from pipelines.spark import get_spark

    return JobContext(settings, get_spark(settings, f"anomalake-{args.command}"))


def _generate(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.generate import GenerateSpec, write_generated

    counts = write_generated(settings.lake_path, GenerateSpec(args.table, args.start, args.days, args.entities, args.seed))
    rows = sum(v for k, v in counts.items() if k != "labels")
    print(f"raw/{args.table}: {rows:,} rows in {args.days} partitions; labels/{args.table}: {counts['labels']} anomalies")


def _windows(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.jobs.windows import run_windows

    table = load_table(settings.tables_file, args.table)
    r = run_windows(_session(settings, args), table, _days(args))
    print(f"features/{table.name}: rows in {r.rows_in:,} = windows {r.windows:,} + context {r.context:,} + quarantined {r.quarantined_total:,} {r.quarantined}")


def _train(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.jobs.train import run_train

    table = load_table(settings.tables_file, args.table)
    r = run_train(_session(settings, args), table, args.detector, args.start, args.end, promote=not args.candidate)
    pointer = "candidate, CURRENT unchanged" if args.candidate else f"CURRENT -> {r.version}"
    print(f"models/{args.detector}/{table.name}/{r.version}: {r.rows_train:,} training windows, {r.rows_holdout:,} held out, threshold {r.threshold:.3f}; {pointer}")
    print(f"candidate version: {r.version}")  # what an orchestrator passes to `promote`


def _promote(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.jobs.promote import run_promote

    table = load_table(settings.tables_file, args.table)
    decision = run_promote(_session(settings, args), table, args.detector, args.version)
    where = f"models/{args.detector}/{table.name}/{args.version}"
    if not decision.promoted:
        raise JobError(f"{where}: refused, CURRENT unchanged: {'; '.join(decision.reasons)}")
    print(f"{where}: promoted to CURRENT {decision.metrics}")


def _score(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.jobs.score import run_score_days

    table = load_table(settings.tables_file, args.table)
    days = _days(args)
    r = run_score_days(_session(settings, args).with_new_run(), table, args.detector, days, args.model_version)
    where = f"dt={days[0]}" + (f"..{days[-1]} ({len(days)} days, one job)" if len(days) > 1 else "")
    print(f"scores/{table.name}/detector={args.detector}/{where}: {r.rows_in:,} windows in, {r.scored:,} scored, {r.anomalies:,} anomalies, quarantined {r.quarantined or 0}")


def _sql(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.jobs.sql import render, run_sql

    tables = list(load_tables(settings.tables_file).values())
    print(render(run_sql(_session(settings, args), tables, args.query, args.limit), args.format), end="")


def _catalog(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines import catalog
    from pipelines.io import Lake
    from pipelines.spark import get_spark

    lake = Lake(settings.lake_path)
    chosen = [load_table(settings.tables_file, name) for name in (args.table or load_tables(settings.tables_file))]
    missing = catalog.unregistered(lake, chosen)
    if missing:  # only a new table opens the metastore (embedded Derby admits one process at a time)
        catalog.register(get_spark(settings, "anomalake-catalog", catalog.catalog_conf(lake)), lake, missing)
    conf = catalog.write_spark_defaults(lake)
    print(f"catalog {catalog.catalog_dir(lake)}: registered {', '.join(sorted(missing)) or 'nothing new'}")
    print(f"query it with: SPARK_CONF_DIR={conf.parent} spark-sql -e 'SHOW TABLES'")


def _check(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.io import Lake
    from pipelines.jobs.check import run_check

    table = load_table(settings.tables_file, args.table)
    result = run_check(Lake(settings.lake_path), table, args.detector or list(table.detectors), args.date)
    if result.problems:
        raise JobError(f"table {table.name}, partition dt={args.date}: " + "; ".join(result.problems))
    print(f"table {table.name}, partition dt={args.date}: healthy; anomaly rates {result.anomaly_rates}")


DEMO_TABLES = {"timeseries": "telemetry", "image": "digits", "text": "messages"}


def _demo(settings: Settings, args: argparse.Namespace) -> None:
    table = load_table(settings.tables_file, args.table or DEMO_TABLES[args.kind])
    if table.kind != args.kind:
        raise JobError(f"table {table.name} is a {table.kind} table; --kind {args.kind} needs a {args.kind} table")
    if args.kind == "timeseries":
        from pipelines.jobs.demo import run_demo

        run_demo(_session(settings, args), table)
        return
    from pipelines.jobs.media_demo import run_media_demo

    run_media_demo(_session(settings, args), table, args.normal_class if args.kind == "image" else "ham")


def _import(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.io import Lake
    from pipelines.jobs.importing import import_images, import_text

    table, lake = load_table(settings.tables_file, args.table), Lake(settings.lake_path)
    if args.what == "images":
        rows = import_images(lake, table, args.src, args.date)
    else:
        if not args.text_column:
            raise JobError("import text needs --text-column (the column that holds the text)")
        rows = import_text(lake, table, args.src, args.date, args.text_column, args.label_column, args.id_column)
    print(f"raw/{table.name}/dt={args.date.isoformat()}: {rows:,} rows from {args.src}")


BENCHMARK_FOLDERS = {"nab": "nab", "asd": "asd", "skab": "skab", "mnist": "mnist_mlxtend5k", "sms": "sms_spam"}


def _evaluate(settings: Settings, args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from pipelines.config import load_detector
    from pipelines.benchmark_cases import load_cases
    from pipelines.jobs.evaluate import EvaluateSpec, resolve_detectors, run_evaluate, temporary_lake

    detectors = resolve_detectors([n.strip() for n in args.detector.split(",") if n.strip()], args.benchmark)
    for name in detectors:
        load_detector(name)  # an unknown name fails here, before Spark starts
    data = Path(args.data or Path(settings.datasets) / BENCHMARK_FOLDERS[args.benchmark])
    if not data.is_dir():
        raise JobError(f"--data {data}: not a folder (give a folder in the {args.benchmark} format)")
    groups = tuple(g.strip() for g in (args.groups or "").split(",") if g.strip())
    cases = load_cases(args.benchmark, data, list(groups) or None)  # a folder in the wrong format fails here, before Spark
    lake, cleanup = temporary_lake(args.keep_lake)
    spec = EvaluateSpec(
        args.benchmark, data, detectors, Path(args.out or f"evaluation/{args.benchmark}"),
        groups, args.epochs,
        not args.no_baselines, not args.no_plots, args.keep_lake,
    )
    print(f"anomalake evaluate: {args.benchmark} from {data}; detectors {', '.join(detectors)}; temporary lake {lake}")
    try:
        run_evaluate(_session(dataclasses.replace(settings, lake=str(lake)), args), spec, cases)
    finally:
        cleanup()


def _detectors(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.config import configured_detectors
    from models.registry import discover

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
    "sql": _sql,
    "catalog": _catalog,
    "check": _check,
    "demo": _demo,
    "import": _import,
    "evaluate": _evaluate,
}


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn expected failures into one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](load_settings(), args)
        return 0
    except (JobError, ConfigError, DatasetError, FileNotFoundError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"anomalake {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
