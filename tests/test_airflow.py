"""The DAGs under real Airflow 3 and real local Spark (the `airflow` tier).

The module's fixture creates and migrates its own AIRFLOW_HOME (SQLite), writes a tiny table catalog, fills
a lake and trains a model through the CLI; the backfill test starts `airflow standalone` on 127.0.0.1 and
stops it (and every process it left) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_TABLE, committed_by, snapshot_rows
from webhook import Webhook

from anomalake.pipelines.lake.runs import latest_run_record

pytestmark = pytest.mark.airflow
REPO = Path(__file__).resolve().parent.parent
DAG_ID = "anomalake_nightly_telemetry"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def run(env, *args, timeout=900, check=True):
    result = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    return result


def anomalake(env, *args):
    return run(env, sys.executable, "-m", "anomalake.pipelines.jobs.cli", *args)


def dags_test(env, dag_id, day, *extra):
    result = run(env, AIRFLOW, "dags", "test", dag_id, day, *extra, check=False)
    return result, result.stdout + result.stderr


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    tables = home / "tables.yml"
    tables.write_text(yaml.safe_dump({"telemetry": TINY_TABLE}))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "ANOMALAKE_LAKE": str(home / "lake"),
        "ANOMALAKE_TABLES": str(tables),
        "ANOMALAKE_MASTER": "local[2]",
        "ANOMALAKE_RAW_WAIT_SECONDS": "4",
    }
    run(env, AIRFLOW, "db", "migrate")
    anomalake(
        env,
        "generate",
        "--table",
        "telemetry",
        "--start",
        "2026-02-02",
        "--days",
        "6",
        "--entities",
        "2",
        "--seed",
        "3",
    )
    anomalake(env, "windows", "--table", "telemetry", "--start", "2026-02-02", "--end", "2026-02-04")
    anomalake(
        env,
        "train",
        "--detector",
        "dense_autoencoder",
        "--table",
        "telemetry",
        "--start",
        "2026-02-02",
        "--end",
        "2026-02-04",
    )
    yield env
    _kill_processes_of(home)


def _kill_processes_of(home: Path) -> None:
    """End every process started with this AIRFLOW_HOME (task workers detach from their parents)."""
    marker = f"AIRFLOW_HOME={home}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") and int(proc.name) != os.getpid():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def scores(env, day: str) -> pd.DataFrame:
    """A day's scored rows in a fixed order, without the columns that name the run; lists and maps as exact reprs."""
    frame = _day_rows(env, day).drop(columns=["run_id", "scored_at", "detector", "dt"])
    for column in ("feature_contributions", "top_steps"):
        frame[column] = frame[column].map(lambda v: repr(list(v)))
    return frame.sort_values(["entity_id", "ts"], ignore_index=True)


def new_events(env, days: list[str]) -> dict[str, list[str]]:
    """The ids of the events that start on each day (days with none left out), from the events table."""
    out = {}
    for day in days:
        events = snapshot_rows(Path(env["ANOMALAKE_LAKE"]) / "events" / "telemetry", dt=day)
        ids = sorted(events.loc[events["new"].astype(bool), "event_id"]) if len(events) else []
        if ids:
            out[day] = ids
    return out


def written_by(env, day: str) -> str:
    """The one run that wrote a day's scores: its rows' run_id, which the commit that last replaced the day must
    name too."""
    run_ids = set(_day_rows(env, day)["run_id"])
    committed = committed_by(_scores_root(env), detector="dense_autoencoder").get(day)
    assert len(run_ids) == 1 and committed in run_ids, (run_ids, committed, day)
    return run_ids.pop()


def _scores_root(env) -> Path:
    return Path(env["ANOMALAKE_LAKE"]) / "scores" / "telemetry"


def _day_rows(env, day: str) -> pd.DataFrame:
    """A day's scored rows as a reader sees them (the table's snapshot)."""
    return snapshot_rows(_scores_root(env), detector="dense_autoencoder", dt=day)


def test_dagbag_parses_fast_without_heavy_imports(airflow_env):
    probe = (
        "import sys, time; import airflow; t = time.time()\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "print(repr({'seconds': time.time() - t, 'errors': dict(bag.import_errors), 'dags': sorted(bag.dags),"
        " 'heavy': [m for m in ('pyspark', 'tensorflow', 'keras') if m in sys.modules]}))"
    )
    out = run(airflow_env, sys.executable, "-c", probe, str(REPO / "dags")).stdout.strip().splitlines()[-1]
    report = eval(out)  # noqa: S307 - our own probe's repr of plain values
    assert report["errors"] == {} and report["heavy"] == []
    assert report["dags"] == ["anomalake_maintain", "anomalake_nightly_telemetry", "anomalake_train"]
    assert report["seconds"] < 5


def test_training_dag_params_refuse_names_that_could_reach_a_shell_or_a_path(airflow_env):
    probe = (
        "import sys; from airflow.dag_processing.dagbag import DagBag; from airflow.exceptions import "
        "ParamValidationError\n"
        "params = DagBag(dag_folder=sys.argv[1]).dags['anomalake_train'].params\n"
        "def ok(key, value):\n"
        "    try:\n"
        "        params.get_param(key).resolve(value); return True\n"
        "    except ParamValidationError:\n"
        "        return False\n"
        "print(repr([ok('table', 'telemetry'), ok('table', \"x'; rm -rf ~; '\"), ok('table', '../raw'), ok('detector', "
        "'a b'),"
        " ok('start', '2026-03-01'), ok('start', '2026-03-01; id'), ok('version', 'v20260301T000000Z'), ok('version', "
        "'../v1')]))"
    )
    out = run(airflow_env, sys.executable, "-c", probe, str(REPO / "dags")).stdout.strip().splitlines()[-1]
    assert eval(out) == [True, False, False, False, True, False, True, False]  # noqa: S307 - our probe's repr of booleans


def test_a_missing_raw_partition_fails_the_run_and_publishes_nothing(airflow_env):
    result, log = dags_test(airflow_env, DAG_ID, "2026-03-01")
    assert "state=failed" in log
    assert "table telemetry, partition dt=2026-03-01: raw partition" in log and "is not there yet" in log
    assert not (
        Path(airflow_env["ANOMALAKE_LAKE"]) / "scores" / "telemetry" / "detector=dense_autoencoder" / "dt=2026-03-01"
    ).exists()


def test_the_raw_sensor_asks_a_delta_tables_snapshot_not_its_folders(airflow_env, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    raw = tmp_path / "raw"
    write_deltalake(str(raw), pa.table({"entity_id": ["a"], "dt": ["2026-03-01"]}), partition_by=["dt"])
    uncommitted = raw / "dt=2026-03-02"  # a write that died before its commit: files, but no day in the snapshot
    uncommitted.mkdir()
    pq.write_table(pa.table({"entity_id": ["b"]}), uncommitted / "part-0.parquet")
    probe = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import anomalake_dags as d\n"
        "raw = Path(sys.argv[2])\n"
        "print(repr([d.raw_partition_present(raw, f, day) for f in ('delta', 'parquet')"
        " for day in ('2026-03-01', '2026-03-02', '2026-03-03')]))"
    )
    out = run(airflow_env, sys.executable, "-c", probe, str(REPO / "dags"), str(raw)).stdout.strip().splitlines()[-1]
    # A Parquet folder has what its dt= folder holds; a Delta table only what its snapshot names.
    assert eval(out) == [True, False, False, True, True, False]  # noqa: S307 - our probe's repr of booleans


def test_training_dag_trains_a_candidate_and_promotes_it(airflow_env):
    models = Path(airflow_env["ANOMALAKE_LAKE"]) / "models" / "dense_autoencoder" / "telemetry"
    before = (models / "CURRENT").read_text().strip()
    conf = json.dumps(
        {"table": "telemetry", "detector": "dense_autoencoder", "start": "2026-02-02", "end": "2026-02-04"}
    )
    result, log = dags_test(airflow_env, "anomalake_train", "2026-02-07", "--conf", conf)
    assert result.returncode == 0 and "state=success" in log, log[-3000:]  # a failed task fails the run
    after = (models / "CURRENT").read_text().strip()
    decision = json.loads((models / "decisions" / f"{after}.json").read_text())
    assert after != before and decision["promoted"] and decision["current_before"] == before


def test_training_dag_gate_refuses_a_broken_candidate(airflow_env):
    models = Path(airflow_env["ANOMALAKE_LAKE"]) / "models" / "dense_autoencoder" / "telemetry"
    current = (models / "CURRENT").read_text().strip()
    breaker = (
        "import shutil, sys, numpy as np, keras\n"
        "root, current = sys.argv[1], sys.argv[2]\n"
        "shutil.copytree(f'{root}/{current}', f'{root}/v-broken')\n"
        "model = keras.models.load_model(f'{root}/v-broken/model.keras', safe_mode=True, compile=False)\n"
        "[w.assign(np.full(w.shape, np.nan, dtype=w.dtype)) for w in model.weights]\n"
        "model.save(f'{root}/v-broken/model.keras')\n"
        "from anomalake.models.artifacts import write_checksums; write_checksums(f'{root}/v-broken')\n"
    )
    run(airflow_env, sys.executable, "-c", breaker, str(models), current)
    conf = json.dumps({"table": "telemetry", "detector": "dense_autoencoder", "version": "v-broken"})
    result, log = dags_test(airflow_env, "anomalake_train", "2026-02-08", "--conf", conf)
    assert "state=failed" in log and "refused, CURRENT unchanged: the candidate gives non-finite" in log
    assert (models / "CURRENT").read_text().strip() == current
    assert json.loads((models / "decisions" / "v-broken.json").read_text())["promoted"] is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_backfill(env, days: list[str], since: str, timeout: float = 600) -> dict:
    """States of the runs of `days` that started after `since` (a backfill re-runs existing runs in place)."""
    deadline = time.monotonic() + timeout
    states: dict = {}
    while time.monotonic() < deadline:
        out = run(env, AIRFLOW, "dags", "list-runs", DAG_ID, "-o", "json", check=False).stdout
        listing = [line for line in out.splitlines() if line.startswith("[{") or line.strip() == "[]"]
        runs = json.loads(listing[-1]) if listing else []
        states = {r["logical_date"][:10]: r["state"] for r in runs if (r["start_date"] or "") >= since}
        if all(states.get(d) in ("success", "failed") for d in days):
            return {d: states[d] for d in days}
        time.sleep(5)
    raise AssertionError(f"backfill did not finish in {timeout}s: {states}")


def _wait_for_api_server(port: int, timeout: float = 300) -> None:
    """Until `airflow standalone` answers on `port` with a healthy scheduler: a task queued before its API server
    listens cannot start (its worker's first call is refused) and fails the run."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if json.load(response).get("scheduler", {}).get("status") == "healthy":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(2)
    raise AssertionError(f"airflow standalone did not answer on {url} in {timeout}s")


def _error_logs(home: Path) -> str:
    """The end of every task log that holds an error (so that a failed run in CI says why)."""
    logs = [
        p
        for p in sorted((home / "logs").glob("dag_id=*/run_id=*/task_id=*/*.log"))
        if '"level":"error"' in p.read_text()
    ]
    return "\n".join(f"--- {p.relative_to(home)}\n{p.read_text()[-3000:]}" for p in logs)


def test_nightly_runs_rerun_identically_and_a_backfill_gives_their_partitions(airflow_env):
    """One pipeline run for two promises (each dags test costs a Spark job per task): a nightly run re-run gives
    the same rows, rewritten by the new run; a backfill of the same days gives the nightly runs' partitions."""
    days = ["2026-02-04", "2026-02-05"]  # two days: the backfill runs them at once, as it would a month
    with Webhook() as hook:  # the nightly check's notifier posts each night's new events to the connection's URL
        alerting = {**airflow_env, "AIRFLOW_CONN_ANOMALAKE_ALERTS": hook.url}
        for day in days:
            result, log = dags_test(alerting, DAG_ID, day)
            assert result.returncode == 0 and "state=success" in log, log[-3000:]  # a failed task fails the run
        announced = {
            m["day"]: sorted(e["event_id"] for d in m["detectors"] for e in d["events"]) for m in hook.messages
        }
        assert announced == new_events(airflow_env, days) and announced, (announced, log[-3000:])
        nightly = {day: scores(airflow_env, day) for day in days}
        for day in days:  # the events task ran after scoring and saw every scored window
            record = latest_run_record(
                Path(airflow_env["ANOMALAKE_LAKE"]), "telemetry", "events_dense_autoencoder", day
            )
            assert record is not None and record["rows_in"] == len(nightly[day]), record
        first = nightly["2026-02-05"]
        assert len(first) == 2 * 288 and first["is_anomaly"].dtype == bool
        assert (
            "Run health"
            in (_scores_root(airflow_env) / "detector=dense_autoencoder" / "dt=2026-02-05" / "_report.html").read_text()
        )
        first_run = written_by(airflow_env, "2026-02-05")
        result, log = dags_test(alerting, DAG_ID, "2026-02-05")
        assert result.returncode == 0 and "state=success" in log, log[-3000:]  # a failed task fails the run
        assert written_by(airflow_env, "2026-02-05") != first_run, "the re-run replaced the partition"
        pd.testing.assert_frame_equal(first, scores(airflow_env, "2026-02-05"), check_exact=True)
        assert len(hook.messages) == len(announced), "the re-run announced nothing twice"

    nightly_runs = {day: written_by(airflow_env, day) for day in days}
    # The backfill is created before the scheduler starts: SQLite admits one writer, and a `backfill create` that
    # meets the starting scheduler's lock leaves a backfill row without its runs (seen on the 2-core machine).
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    run(airflow_env, AIRFLOW, "dags", "unpause", DAG_ID)
    run(
        airflow_env,
        AIRFLOW,
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        days[0],
        "--to-date",
        days[-1],
        "--reprocess-behavior",
        "completed",
    )
    port = _free_port()
    env = {
        **airflow_env,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # The scheduler may start the backfill's first tasks before the API server listens: their workers wait.
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "30",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": "10",
    }
    log = open(Path(env["AIRFLOW_HOME"]) / "standalone.log", "w")
    server = subprocess.Popen(
        [AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
    )
    try:
        _wait_for_api_server(port)
        states = _wait_for_backfill(env, days, since)
        assert states == {day: "success" for day in days}, f"{states}\n{_error_logs(Path(env['AIRFLOW_HOME']))}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        _kill_processes_of(Path(env["AIRFLOW_HOME"]))
    for day in days:  # every partition written again, by the backfill's own run, to the same rows
        assert written_by(airflow_env, day) != nightly_runs[day], f"the backfill did not rewrite dt={day}"
        pd.testing.assert_frame_equal(nightly[day], scores(airflow_env, day), check_exact=True)
