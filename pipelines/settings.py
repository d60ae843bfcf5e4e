"""Process settings read from the environment: the only module that reads os.environ."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_TABLES = Path(__file__).parent / "conf" / "tables.yml"  # the catalog shipped with the package (the demo's)


@dataclass(frozen=True)
class Settings:
    """Where the lake is, which Spark master to use, where the public datasets live."""

    lake: str
    master: str  # empty: the one spark-submit was given
    datasets: str
    tables_file: str
    python: str
    shuffle_partitions: int
    driver_memory: str
    interactive: bool = False  # a terminal, not Airflow: progress bars; otherwise log lines only
    crash_at: str = ""  # fault-injection tests only: a commit point at which the job kills itself
    code: str = ""  # the project's code as a zip (`make package`) shipped to executors; empty: they have it installed
    train_workers: int = 1  # Spark tasks that train one model together (data parallel); 1: the driver trains alone
    jars: str = str(REPO_ROOT / "infra" / "jars")  # the JARs of infra/jars.txt (Delta Lake) that every job loads
    retention_days: int = 7  # `anomalake maintain` deletes files that commits removed longer ago than this
    alert_url: str = ""  # `anomalake alert` posts to this webhook (the DAG passes its connection's); empty: prints
    report_base_url: str = ""  # where alerts say the reports are (the lake's folder under it); empty: file:// lake

    @property
    def lake_path(self) -> Path:
        """The lake as a local path (file:// URIs are stripped)."""
        return Path(self.lake.removeprefix("file://"))


def load_settings() -> Settings:
    """Read every ANOMALAKE_* variable once; jobs pass the frozen result around."""
    env = os.environ
    return Settings(
        lake=str(Path(env.get("ANOMALAKE_LAKE", "lake")).resolve()),
        # Under spark-submit (it starts the JVM and tells Python its port) the master is spark-submit's --master.
        master=env.get("ANOMALAKE_MASTER") or ("" if "PYSPARK_GATEWAY_PORT" in env else "local[*]"),
        datasets=env.get("ANOMALAKE_DATASETS", str(REPO_ROOT.parent / "shared" / "datasets")),
        tables_file=env.get("ANOMALAKE_TABLES", str(PACKAGE_TABLES)),
        python=env.get("PYSPARK_PYTHON", sys.executable),
        shuffle_partitions=int(env.get("ANOMALAKE_SHUFFLE_PARTITIONS", "8")),
        driver_memory=env.get("ANOMALAKE_DRIVER_MEMORY", "4g"),
        # Airflow sets AIRFLOW_CTX_DAG_ID in every task; a task's log wants lines, not redrawn bars.
        interactive=sys.stdout.isatty() and "AIRFLOW_CTX_DAG_ID" not in env,
        crash_at=env.get("ANOMALAKE_CRASH_AT", ""),
        code=str(Path(env["ANOMALAKE_CODE"]).resolve()) if env.get("ANOMALAKE_CODE") else "",
        train_workers=int(env.get("ANOMALAKE_TRAIN_WORKERS", "1")),
        jars=str(Path(env.get("ANOMALAKE_JARS", str(REPO_ROOT / "infra" / "jars"))).resolve()),
        retention_days=int(env.get("ANOMALAKE_RETENTION_DAYS", "7")),
        alert_url=env.get("ANOMALAKE_ALERT_URL", ""),
        report_base_url=env.get("ANOMALAKE_REPORT_BASE_URL", ""),
    )


def export_spark_environment(settings: Settings) -> None:
    """Set the variables Spark's launcher and Python workers read (they cannot take arguments)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = settings.python
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("TZ", "UTC")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
