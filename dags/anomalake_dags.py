"""anomalake's Airflow DAGs: one nightly DAG per configured table, the training DAG and the weekly maintenance DAG.

Thin on purpose: this file imports only airflow, the standard library and PyYAML (parsing stays fast and
needs no Spark or TensorFlow); every task runs one `anomalake` job for exactly the partition of its logical
date, so retries, re-runs and backfills are idempotent. Environment (read when the file is parsed and passed
on to the tasks): ANOMALAKE_TABLES (the catalog; default ../pipelines/conf/tables.yml from this file),
ANOMALAKE_LAKE (default ../lake), ANOMALAKE_MASTER (default local[*]), ANOMALAKE_CLI (how to call the jobs;
default this interpreter's `-m anomalake.pipelines.jobs.cli`), ANOMALAKE_RAW_WAIT_SECONDS (how long to wait for the
raw partition; default 6 hours). Alerts: when the Airflow connection `anomalake_alerts` exists (an HTTP URL), each
nightly check posts the night's new events, or its failure, to it (`anomalake alert`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Asset, BaseHook, BaseNotifier, Param, task

REPO = Path(__file__).resolve().parent.parent
TABLES_FILE = Path(os.environ.get("ANOMALAKE_TABLES", REPO / "pipelines" / "conf" / "tables.yml"))
LAKE = Path(os.environ.get("ANOMALAKE_LAKE", REPO / "lake")).resolve()
CLI = os.environ.get("ANOMALAKE_CLI", f"{sys.executable} -m anomalake.pipelines.jobs.cli")
RAW_WAIT_SECONDS = int(os.environ.get("ANOMALAKE_RAW_WAIT_SECONDS", 6 * 3600))
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)
SKIP = 99  # exit code that marks a training task as skipped (not selected by the run's params)
JOB_ENV = {"ANOMALAKE_LAKE": str(LAKE), "ANOMALAKE_TABLES": str(TABLES_FILE)}

# Names and params reach bash commands and paths: a strict pattern keeps quotes and separators out (as
# pipelines/config.py).
NAME = r"[A-Za-z][A-Za-z0-9_]{0,63}"
DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
VERSION = r"v?[0-9A-Za-z][0-9A-Za-z_.-]{0,127}"


def checked_tables(path: Path) -> dict:
    """The catalog's entries, refusing (at parse time, as an import error) a table or detector name out of pattern."""
    tables = yaml.safe_load(path.read_text()) or {}
    for table, entry in tables.items():
        for name in (table, *detectors_of(entry)):
            if not isinstance(name, str) or not re.fullmatch(NAME, name):
                raise ValueError(f"{path}: {name!r} is not a valid table or detector name (letters, digits, _)")
    return tables


DEFAULT_DETECTORS = {
    "timeseries": "dense_autoencoder",
    "image": "conv_autoencoder",
    "text": "text_transformer",
}  # as pipelines/config.py


def detectors_of(entry: dict) -> list[str]:
    """The detectors a catalog entry names, or its kind's default."""
    return entry.get("detectors", [DEFAULT_DETECTORS[entry.get("kind", "timeseries")]])


def job(task_id: str, arguments: str, **kwargs) -> BashOperator:
    """A task that runs `anomalake <arguments>` with the lake and catalog of this DAG file."""
    return BashOperator(task_id=task_id, bash_command=f"{CLI} {arguments}", env=JOB_ENV, append_env=True, **kwargs)


def raw_partition_present(raw_path: Path, fmt: str, day: str) -> bool:
    """Whether the raw table holds the day: a Parquet folder's dt= folder has files; a Delta table's snapshot names
    files of the day (its folder may hold files of a write that never committed, which no reader sees)."""
    if fmt != "delta":
        folder = raw_path / f"dt={day}"
        return folder.is_dir() and any(folder.glob("*.parquet"))
    if not (raw_path / "_delta_log").is_dir():
        return False
    from deltalake import DeltaTable  # when poking, not when parsing: the DAG file stays light

    return bool(DeltaTable(str(raw_path)).file_uris([("dt", "=", day)]))


ALERT_CONNECTION = "anomalake_alerts"  # the webhook's URL; alerts are off while no such connection exists


def webhook_url(connection) -> str:
    """The URL of an HTTP connection: its extra's `url`, a host that is a whole URL, or scheme://host:port/path."""
    url = (connection.extra_dejson or {}).get("url") or ""
    if url or (connection.host or "").startswith(("http://", "https://")):
        return url or connection.host
    port = f":{connection.port}" if connection.port else ""
    scheme = "https" if connection.conn_type == "https" else "http"
    return f"{scheme}://{connection.host}{port}/{connection.schema or ''}"


class WebhookAlert(BaseNotifier):
    """After the check task (passed or failed): `anomalake alert` posts the night's new events, or the failed
    check, to the webhook of the connection `anomalake_alerts`. A webhook that is down is logged, never fails the
    run; a report base URL may be given in the connection's extra (`report_base_url`)."""

    def __init__(self, table: str):
        super().__init__()
        self.table = table

    def notify(self, context) -> None:
        try:
            connection = BaseHook.get_connection(ALERT_CONNECTION)
        except Exception:  # noqa: BLE001 (Airflow's not-found error differs between its layers)
            self.log.info("no connection %s: alerts are off", ALERT_CONNECTION)
            return
        env = {**os.environ, **JOB_ENV, "ANOMALAKE_ALERT_URL": webhook_url(connection)}
        base = (connection.extra_dejson or {}).get("report_base_url")
        if base:
            env["ANOMALAKE_REPORT_BASE_URL"] = base
        command = [*shlex.split(CLI), "alert", "--table", self.table, "--date", context["ds"]]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            self.log.warning("anomalake alert for %s %s took over 300 s: stopped", self.table, context["ds"])
            return
        self.log.info("%s", done.stdout.strip())
        if done.returncode or done.stderr.strip():
            self.log.warning("anomalake alert (exit %s): %s", done.returncode, done.stderr.strip()[-2000:])


def scores_asset(table: str) -> Asset:
    """The Asset a nightly run publishes: the table's scores (the event's extra names the partition)."""
    return Asset(name=f"anomalake_scores_{table}", uri=f"file://{LAKE / 'scores' / table}")


def nightly_dag(table: str, entry: dict) -> DAG:
    """wait for raw/<table>/dt={{ ds }} -> windows -> score, then events, with each detector -> check (publish) ->
    catalog + reports."""
    raw_path = LAKE / entry.get("path", f"raw/{table}")
    detectors = detectors_of(entry)
    asset = scores_asset(table)
    with DAG(
        dag_id=f"anomalake_nightly_{table}",
        description=f"Nightly windows and scores of {table}",
        schedule="@daily",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
        tags=["anomalake", table],
    ) as dag:

        @task.sensor(
            task_id="wait_for_raw",
            poke_interval=min(60, RAW_WAIT_SECONDS),
            timeout=RAW_WAIT_SECONDS,
            mode="poke",
            retries=0,
        )
        def wait_for_raw(ds: str | None = None) -> bool:
            present = raw_partition_present(raw_path, entry.get("format", "parquet"), ds)
            if not present:
                print(f"table {table}, partition dt={ds}: raw partition {raw_path / f'dt={ds}'} is not there yet")
            return present

        def publish(context, result) -> None:
            context["outlet_events"][asset].extra = {"table": table, "dt": context["ds"]}

        windows = job("windows", f"windows --table {table} --date {{{{ ds }}}}")
        scores = [job(f"score_{d}", f"score --detector {d} --table {table} --date {{{{ ds }}}}") for d in detectors]
        events = [job(f"events_{d}", f"events --detector {d} --table {table} --date {{{{ ds }}}}") for d in detectors]
        alert = WebhookAlert(table)  # new events or a failed check reach the on-call engineer, if configured
        check = job(
            "check",
            f"check --table {table} --date {{{{ ds }}}}",
            outlets=[asset],
            post_execute=publish,
            on_success_callback=[alert],
            on_failure_callback=[alert],
        )
        catalog = job("catalog", f"catalog --table {table}")
        # One HTML page per detector next to its scored partition (scores/.../dt=D/_report.html).
        reports = [job(f"report_{d}", f"report --table {table} --detector {d} --date {{{{ ds }}}}") for d in detectors]
        wait_for_raw() >> windows >> scores
        for score, event in zip(scores, events):
            score >> event >> check
        check >> [catalog, *reports]
    return dag


def training_dag(tables: dict) -> DAG:
    """Weekly (or on demand): train a candidate per table and detector, then quality-gate and promote it."""
    pairs = [(t, d) for t, entry in tables.items() for d in detectors_of(entry)]
    with DAG(
        dag_id="anomalake_train",
        description="Train candidates and promote those that pass the quality gate",
        schedule="@weekly",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        params={
            "table": Param("all", type="string", pattern=f"^{NAME}$", description="a table of the catalog, or all"),
            "detector": Param(
                "all", type="string", pattern=f"^{NAME}$", description="a detector of that table, or all"
            ),
            "start": Param(
                "",
                type="string",
                pattern=f"^({DAY})?$",
                description="first training day (default: 28 days before the run)",
            ),
            "end": Param(
                "",
                type="string",
                pattern=f"^({DAY})?$",
                description="last training day (default: the day before the run)",
            ),
            "version": Param(
                "",
                type="string",
                pattern=f"^({VERSION})?$",
                description="gate this existing candidate instead of training one",
            ),
        },
        tags=["anomalake"],
    ) as dag:
        start = "{{ params.start or macros.ds_add(ds, -28) }}"
        end = "{{ params.end or macros.ds_add(ds, -1) }}"
        for table, detector in pairs:
            selected = (
                f"[ '{{{{ params.table }}}}' = all -o '{{{{ params.table }}}}' = {table} ] && "
                f"[ '{{{{ params.detector }}}}' = all -o '{{{{ params.detector }}}}' = {detector} ]"
            )
            train = job(
                f"train_{table}_{detector}",
                # The log goes to the task log; the last line (the XCom) is the candidate's version.
                f"train --candidate --detector {detector} --table {table} --start {start} --end {end} 2>&1 "
                "| tee /dev/stderr | sed -n 's/^candidate version: //p' | tail -n 1",
                do_xcom_push=True,
                skip_on_exit_code=SKIP,
            )
            given = "{{ params.version }}"
            train.bash_command = (
                f"{selected} || exit {SKIP}; set -o pipefail; "
                f"if [ -n '{given}' ]; then echo 'candidate version: {given}' && echo {given}; else "
                f"{train.bash_command}; fi"
            )
            version = f"{{{{ ti.xcom_pull(task_ids='train_{table}_{detector}') }}}}"
            train >> job(
                f"promote_{table}_{detector}", f"promote --detector {detector} --table {table} --version {version}"
            )
    return dag


def maintenance_dag(tables: dict) -> DAG:
    """Weekly: compact each table's Delta tables and delete the files their commits removed (past the retention)."""
    with DAG(
        dag_id="anomalake_maintain",
        description="Compact the lake's Delta tables and vacuum removed files",
        schedule="@weekly",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["anomalake"],
    ) as dag:
        for table in tables:
            job(f"maintain_{table}", f"maintain --table {table}")
    return dag


TABLES = checked_tables(TABLES_FILE)
for _table, _entry in TABLES.items():
    globals()[f"anomalake_nightly_{_table}"] = nightly_dag(_table, _entry)
anomalake_train = training_dag(TABLES)
anomalake_maintain = maintenance_dag(TABLES)
