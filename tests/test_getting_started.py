"""The README's "Getting started with your own metrics" walk, run exactly as written (the `slow` tier).

The commands are read from the README's blocks marked `getting-started`, so the walk and this test cannot drift
apart; they run in bash (-e: any failing command fails the test) in a fresh folder that stands in for the
repository root (its `dags` is the repository's). The events the walk ends with are measured the way `anomalake
demo` measures its own, against the labels the walk generated, and compared with the demo's of the same session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from anomalake.pipelines.evaluation import event_matching
from anomalake.pipelines.lake.delta import read_snapshot
from anomalake.pipelines.lake.layout import Lake

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
MARKER = "<!-- getting-started: run by tests/test_getting_started.py -->"
SCORED_DAYS = ["2026-11-11", "2026-11-12", "2026-11-13", "2026-11-14"]
WINDOW_SECONDS = (64 - 1) * 300  # the entry import writes: 64 steps of 5 minutes


def walk_commands() -> list[str]:
    """The bash blocks that follow the marker in the README, in order."""
    text = (REPO / "README.md").read_text()
    return re.findall(re.escape(MARKER) + r"\n```bash\n(.*?)```", text, re.S)


def walk_env() -> dict[str, str]:
    """This environment without the settings the walk exports itself, with the virtualenv's scripts on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANOMALAKE_", "AIRFLOW"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANOMALAKE_MASTER"] = "local[2]"  # the tests' Spark master (2 cores); the walk itself leaves the default
    return env


def demo_way_f1(lake: Lake) -> event_matching.EventScore:
    """The event-level score of the walk's events over the scored days, computed as `anomalake demo` computes its."""
    events = pd.concat(
        read_snapshot(lake.events("my_servers"), {"detector": "dense_autoencoder", "dt": d}) for d in SCORED_DAYS
    )
    scores = pd.concat(
        read_snapshot(lake.scores("my_servers"), {"detector": "dense_autoencoder", "dt": d}) for d in SCORED_DAYS
    )
    labels = pd.read_parquet(lake.labels("my_servers"))
    for frame, columns in ((events, ["start", "end"]), (scores, ["ts"]), (labels, ["start", "end"])):
        for column in columns:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    in_scope = event_matching.labels_in_scope(labels, scores, WINDOW_SECONDS)
    return event_matching.event_score(event_matching.event_spans(events, WINDOW_SECONDS), in_scope)


def test_the_walk_runs_as_written_and_its_events_find_the_anomalies(tmp_path, demo_output):
    blocks = walk_commands()
    assert len(blocks) == 2 and "import metrics" in blocks[0] and "airflow dags test" in blocks[1]
    (tmp_path / "dags").symlink_to(REPO / "dags")
    script = "set -euo pipefail\n" + "\n".join(blocks)
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=walk_env(), capture_output=True, text=True, timeout=2400
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout

    assert re.search(r"table my_servers in .*walk/tables.yml: step 5min", out), out[:2000]
    assert "raw/my_servers: 80,640 of 80,640 rows in 14 day partitions (dt=2026-11-01..2026-11-14)" in out
    assert re.search(r"^table my_servers, partition dt=2026-11-14: healthy", out, re.M), out[-3000:]
    assert (tmp_path / "walk" / "report.html").stat().st_size > 10_000
    printed = re.search(r"^\s*f1\s+precision\s+recall\n\s*(\d\.\d+)\s+(\d\.\d+)\s+(\d\.\d+)$", out, re.M)
    assert printed, "the last query prints the F1, precision and recall of the 4 days: " + out[-2000:]

    lake = Lake(tmp_path / "walk" / "lake")
    walk = demo_way_f1(lake)
    demo = float(re.search(r"^F1: (\d\.\d{3})$", demo_output, re.M).group(1))
    print(f"walk: F1 {walk.f1:.3f} (precision {walk.precision:.3f}, recall {walk.recall:.3f}); demo: F1 {demo:.3f}")
    assert walk.f1 >= demo - 0.1, (walk, demo)
    # The night the DAG ran replaced 2026-11-14 with runs of its own, and its rows are those the range runs wrote.
    assert re.search(r"DagRun Finished: dag_id=anomalake_nightly_my_servers, .*state=success", out + result.stderr)
    for table, key in (("scores", ["entity_id", "ts"]), ("events", ["entity_id", "start"])):
        root = getattr(lake, table)("my_servers")
        walk_version, night_version = events_commits(root)
        walk_rows, night_rows = day_rows(root, walk_version, key), day_rows(root, night_version, key)
        assert len(night_rows) > 0
        pd.testing.assert_frame_equal(walk_rows, night_rows, check_exact=True)


def events_commits(root: Path) -> tuple[int, int]:
    """The versions of the walk's events run (the 4 scored days) and of the night's (2026-11-14 alone)."""
    from deltalake import DeltaTable

    commits = {}
    for commit in DeltaTable(str(root)).history():
        meta = json.loads(commit.get("userMetadata") or "{}")
        if meta.get("job") == "events_dense_autoencoder":
            commits[len(meta["days"])] = commit["version"]
    return commits[4], commits[1]


def day_rows(root: Path, version: int, key: list[str]) -> pd.DataFrame:
    """2026-11-14's rows of a Delta table as of a version (time travel), without the columns that name the run."""
    from deltalake import DeltaTable

    files = DeltaTable(str(root), version=version).file_uris(partition_filters=[("dt", "=", "2026-11-14")])
    rows = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    rows = rows.drop(columns=["run_id", "scored_at"], errors="ignore").sort_values(key, ignore_index=True)
    return rows.astype({column: str for column in rows.columns})  # writers differ in timestamp units, not values
