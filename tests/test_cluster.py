"""The jobs on a real Spark standalone cluster on 127.0.0.1: one master, two workers, started by infra/cluster.sh.

Every cluster job is a real `anomalake` process (spark-submit's way: the driver is its own process, the code
reaches the executors as the zip that infra/package.sh builds, never from the driver's folder). The lake is
prepared once in this process on local[2]: raw telemetry, windows, a model trained in one process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import START, TINY_TABLE, committed_by, snapshot_rows
from faults import kill_while_writing

from anomalake.models.artifacts import read_current
from anomalake.pipelines.config import parse_table
from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.context import JobContext
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.scoring.job import run_score_days
from anomalake.pipelines.settings import REPO_ROOT, load_settings
from anomalake.pipelines.training.job import run_train
from anomalake.pipelines.training.promotion import run_promote

pytestmark = pytest.mark.cluster
DAYS = day_range(START, START + timedelta(days=3))
TRAIN_DAYS, SCORED = DAYS[:2], DAYS[2:]
ENTITIES = 4
VOLATILE = ["run_id", "scored_at"]  # differ between any two runs
JOB_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class Cluster:
    """A running standalone cluster: its master URL, its folder (pids, logs, executors' work) and the code zip."""

    url: str
    folder: Path
    code: Path
    env: dict[str, str]

    def script(self, *args: str) -> str:
        done = subprocess.run(
            [str(REPO_ROOT / "infra" / "cluster.sh"), *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"infra/cluster.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def worker_pid(self, i: int) -> int:
        return int((self.folder / f"worker-{i}.pid").read_text())

    def alive_workers(self) -> list[int]:
        return [
            int(line.split()[0].split("-")[1])
            for line in self.script("status").splitlines()
            if line.startswith("worker") and line.endswith("running")
        ]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Build the code zip, start a master and two workers (1 core, 2g each) on free ports; stop them after."""
    folder = tmp_path_factory.mktemp("spark-cluster")
    built = subprocess.run(
        [str(REPO_ROOT / "infra" / "package.sh"), str(folder / "dist")], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, f"infra/package.sh failed:\n{built.stdout}\n{built.stderr}"
    env = {
        **os.environ,
        "CLUSTER_DIR": str(folder),
        "MASTER_PORT": str(free_port()),
        "MASTER_UI_PORT": str(free_port()),
        "WORKER_CORES": "1",
        "WORKER_MEMORY": "2g",
        "PYTHON": sys.executable,
    }
    running = Cluster("", folder, Path(built.stdout.strip().splitlines()[-1]), env)
    try:
        running.url = running.script("start", "2").strip().splitlines()[-1]
        yield running
    finally:
        running.script("stop")


@pytest.fixture(scope="module")
def prepared_lake(spark, tmp_path_factory):
    """Raw telemetry, its windows and a model trained in one process (CURRENT), built on local[2]."""
    lake = tmp_path_factory.mktemp("cluster-lake") / "lake"
    ctx = JobContext(dataclasses.replace(load_settings(), lake=str(lake), master="local[2]"), spark)
    table = parse_table("telemetry", TINY_TABLE)
    write_generated(lake, GenerateSpec("telemetry", START, len(DAYS), ENTITIES, 5))
    run_windows(ctx, table, DAYS)
    run_train(ctx, table, "dense_autoencoder", TRAIN_DAYS[0], TRAIN_DAYS[-1], verbose=0)
    return lake


@pytest.fixture(scope="module")
def scored_lake(spark, prepared_lake, tmp_path_factory):
    """The prepared lake with SCORED scored by the local[2] job (what every cluster run must equal)."""
    lake = copy_lake(prepared_lake, tmp_path_factory.mktemp("local"))
    ctx = JobContext(dataclasses.replace(load_settings(), lake=str(lake), master="local[2]"), spark)
    run_score_days(ctx.with_new_run(), parse_table("telemetry", TINY_TABLE), "dense_autoencoder", SCORED)
    return lake


@pytest.fixture(scope="module")
def local_scores(scored_lake):
    return read_scores(scored_lake)


def copy_lake(lake: Path, where: Path) -> Path:
    return Path(shutil.copytree(lake, where / "lake"))


def read_scores(lake: Path) -> pd.DataFrame:
    """Every score row of the lake, in a stable order (the scores table's snapshot, read without Spark)."""
    frame = snapshot_rows(lake / "scores" / "telemetry")
    frame["dt"] = frame["dt"].astype(str)
    return frame.sort_values(["dt", "entity_id", "ts"]).reset_index(drop=True)


def job(cluster: Cluster, lake: Path, *args: str, conf_dir: Path | None = None, **env: str) -> subprocess.Popen:
    """Start `anomalake <args>` as its own driver process on the cluster, shipping the code zip."""
    tables = lake.parent / "tables.yml"
    tables.write_text(yaml.safe_dump({"telemetry": TINY_TABLE}))
    environment = {
        **os.environ,
        "ANOMALAKE_LAKE": str(lake),
        "ANOMALAKE_MASTER": cluster.url,
        "ANOMALAKE_TABLES": str(tables),
        "ANOMALAKE_CODE": str(cluster.code),
        "SPARK_CONF_DIR": str(conf_dir or REPO_ROOT / "infra"),
        **env,
    }
    command = [sys.executable, "-m", "anomalake.pipelines.jobs.cli", *args]
    # The driver's folder is not the repository: nothing may be found there by accident.
    return subprocess.Popen(
        command, env=environment, cwd=lake.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=JOB_TIMEOUT_S)[0]
    assert process.returncode == 0, f"the cluster job failed (rc {process.returncode}):\n{output[-4000:]}"
    return output


def score_args() -> list[str]:
    return [
        "score",
        "--detector",
        "dense_autoencoder",
        "--table",
        "telemetry",
        "--start",
        SCORED[0].isoformat(),
        "--end",
        SCORED[-1].isoformat(),
    ]


def assert_same_scores(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(got) == len(expected) and len(got) > 0
    assert not got.duplicated(["entity_id", "ts"]).any(), "a row was written twice"
    pd.testing.assert_frame_equal(got.drop(columns=VOLATILE), expected.drop(columns=VOLATILE), check_exact=True)


def model_loads(cluster: Cluster, app_started: float) -> list[str]:
    """The executors' 'loaded' lines (one per Python worker that loaded a model) of apps started after `app_started`."""
    lines = []
    for log in cluster.folder.glob("work-*/app-*/*/stderr"):
        if log.stat().st_mtime >= app_started:
            lines += [
                line for line in log.read_text(errors="replace").splitlines() if "anomalake: Python worker" in line
            ]
    return lines


def test_score_job_on_the_cluster_writes_the_same_rows_as_local(cluster, prepared_lake, local_scores, tmp_path):
    lake = copy_lake(prepared_lake, tmp_path)
    started = time.time()
    finished(job(cluster, lake, *score_args()))
    assert_same_scores(read_scores(lake), local_scores)
    # The executors ran the shipped zip (in their own work folders), and each Python worker loaded the model once.
    shipped = list(cluster.folder.glob(f"work-*/app-*/*/{cluster.code.name}"))
    assert shipped, f"no executor fetched {cluster.code.name}"
    loads = model_loads(cluster, started)
    workers = {line.split()[3] for line in loads}
    assert loads and len(loads) == len(workers), f"a Python worker loaded the model more than once: {loads}"


def python_daemon_in(pgid: int) -> bool:
    """Whether a Python worker daemon runs in this process group (a Python task has started there)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and "pyspark.daemon" in (stat.parent / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def retried_tasks(events: Path) -> list[tuple[int, int]]:
    """(stage, task index) of tasks that failed with their executor and later succeeded, from Spark's event log."""
    failed, succeeded = set(), set()
    for log in (path for path in events.rglob("events_*") if path.is_file()):  # Spark 4 rolls the log into a folder
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("Event") != "SparkListenerTaskEnd":
                continue
            key = (event["Stage ID"], event["Task Info"]["Index"])
            reason = event["Task End Reason"]["Reason"]
            if reason == "ExecutorLostFailure":
                failed.add(key)
            elif reason == "Success":
                succeeded.add(key)
    return sorted(failed & succeeded)


def test_killing_a_worker_mid_job_the_score_job_succeeds_with_every_row_once(
    cluster, prepared_lake, local_scores, tmp_path
):
    lake = copy_lake(prepared_lake, tmp_path)
    conf, events = tmp_path / "conf", tmp_path / "events"
    conf.mkdir(), events.mkdir()
    defaults = (REPO_ROOT / "infra" / "spark-defaults.conf").read_text()
    (conf / "spark-defaults.conf").write_text(
        defaults + f"\nspark.eventLog.enabled true\nspark.eventLog.dir file://{events}\nspark.eventLog.compress false\n"
    )
    process = job(cluster, lake, *score_args(), conf_dir=conf)
    victim = None
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while victim is None and process.poll() is None and time.monotonic() < deadline:
            victim = next((i for i in (1, 2) if python_daemon_in(cluster.worker_pid(i))), None)
            time.sleep(0.01)
        assert victim is not None, "no Python task started on the cluster before the job ended"
        os.killpg(cluster.worker_pid(victim), signal.SIGKILL)  # the worker, its executor and its Python workers
        finished(process)
    finally:
        if victim is not None:
            cluster.script("add-worker", str(victim))
    assert retried_tasks(events), "no task was lost with the killed worker and run again elsewhere"
    assert_same_scores(read_scores(lake), local_scores)


def holdout_loss(lake: Path, version: str) -> float:
    meta = json.loads((lake / "models" / "dense_autoencoder" / "telemetry" / version / "meta.json").read_text())
    return float(meta["holdout_loss"]), meta["training"]


def test_distributed_training_on_two_workers_matches_one_process(cluster, spark, prepared_lake, tmp_path):
    lake = copy_lake(prepared_lake, tmp_path)
    root = lake / "models" / "dense_autoencoder" / "telemetry"
    single = read_current(root)
    args = [
        "train",
        "--detector",
        "dense_autoencoder",
        "--table",
        "telemetry",
        "--start",
        TRAIN_DAYS[0].isoformat(),
        "--end",
        TRAIN_DAYS[-1].isoformat(),
    ]
    output = finished(job(cluster, lake, *args, "--workers", "2", "--candidate"))
    version = output.strip().splitlines()[-1].split()[-1]
    distributed_loss, training = holdout_loss(lake, version)
    single_loss, _ = holdout_loss(lake, single)
    assert training == {"workers": 2, "mode": "data-parallel barrier stage"}
    # Data-parallel steps see other batches than one process does, so the two losses differ either way; the
    # promise is that two workers lose no quality (a better model is no failure).
    assert distributed_loss <= 1.10 * single_loss, (
        f"held-out loss {distributed_loss:.4f} vs one process {single_loss:.4f}"
    )
    print(f"held-out loss: distributed {distributed_loss:.5f}, one process {single_loss:.5f}")
    # The same quality gate as any candidate, judged against the one-process model (CURRENT).
    ctx = JobContext(dataclasses.replace(load_settings(), lake=str(lake), master="local[2]"), spark)
    decision = run_promote(ctx, parse_table("telemetry", TINY_TABLE), "dense_autoencoder", version)
    assert decision.promoted, decision.reasons
    assert not (root / "_distributed").exists(), "the chief's hand-over folder was left behind"


def test_killing_the_driver_during_the_write_leaves_the_previous_partition_and_the_rerun_completes(
    cluster, scored_lake, local_scores, tmp_path
):
    lake = copy_lake(scored_lake, tmp_path)
    before = read_scores(lake)
    process = job(cluster, lake, *score_args())
    kill_while_writing(process, lake / "scores" / "telemetry", JOB_TIMEOUT_S)
    output = process.communicate(timeout=JOB_TIMEOUT_S)[0]
    assert process.returncode == -signal.SIGKILL, (
        f"the driver was not killed while writing (rc {process.returncode}):\n{output[-3000:]}"
    )
    pd.testing.assert_frame_equal(read_scores(lake), before)  # every day readable, complete, from the previous run
    finished(job(cluster, lake, *score_args()))
    after = read_scores(lake)
    assert_same_scores(after, local_scores)
    assert set(after["run_id"]).isdisjoint(before["run_id"]), "the re-run did not replace the partitions"
    assert committed_by(lake / "scores" / "telemetry", detector="dense_autoencoder") == {
        day: run_id for day, run_id in after.groupby("dt")["run_id"].first().items()
    }, "every day's rows are those of the commit that last replaced it"
