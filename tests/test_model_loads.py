"""The score function reads a model from the lake once per Python worker: not per Arrow batch, not per task.

Counted where it happens (the score function's LOADS counter in each worker), with inputs cut into several Arrow
batches per task and more tasks than workers, so that a reload per batch or per task shows as a count above 1.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from anomalake.models.artifacts import save_artifact
from anomalake.models.calibration import fit_calibration
from anomalake.models.registry import get_family
from anomalake.models.scaling import EntityScaling

pytestmark = pytest.mark.spark
TASKS, ROWS, BATCH = 6, 720, 40  # 120 rows a task: 3 Arrow batches of 40


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory) -> str:
    family = get_family("dense_autoencoder")
    config = family.config_class.from_dict(
        {"input_shape": (8, 2), "feature_names": ("a", "b"), "hidden": (8, 2), "epochs": 1, "verbose": 0}
    )
    x = np.random.default_rng(0).normal(size=(64, 8, 2)).astype(np.float32)
    detector = family(config).fit(x)
    folder = tmp_path_factory.mktemp("loads") / "v1"
    save_artifact(
        folder, detector, EntityScaling.identity(), fit_calibration(detector.score_samples(x)), {"kind": "timeseries"}
    )
    return str(folder)


def test_each_python_worker_loads_the_model_once_across_batches_and_tasks(spark, artifact_path):
    rng = np.random.default_rng(1)
    frame = spark.createDataFrame(
        [
            (
                f"e{i % 5}",
                datetime(2026, 3, 1, tzinfo=timezone.utc),
                rng.normal(size=16).astype(float).tolist(),
                "2026-03-01",
            )
            for i in range(ROWS)
        ],
        "entity_id string, ts timestamp, x array<float>, dt string",
    ).repartition(TASKS)
    path = artifact_path

    def score_and_count(batches):  # nested: pickled by value; the scoring itself is the package's
        import os

        from anomalake.pipelines.scoring import udf

        seen = []

        def counted():
            for batch in batches:
                seen.append(batch.num_rows)
                yield batch

        scored = sum(out.num_rows for out in udf.score_arrow_batches(counted(), path, "timeseries"))
        yield pa.RecordBatch.from_pydict(
            {"pid": [os.getpid()], "loads": [udf.LOADS.get(path, 0)], "batches": [len(seen)], "scored": [scored]}
        )

    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
    try:
        tasks = frame.mapInArrow(score_and_count, "pid long, loads long, batches long, scored long").collect()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    assert len(tasks) == TASKS and sum(t["scored"] for t in tasks) == ROWS
    assert min(t["batches"] for t in tasks) >= 2, "each task must see several Arrow batches"
    per_worker = Counter(t["pid"] for t in tasks)
    assert max(per_worker.values()) >= 2, f"some Python worker must run several tasks: {per_worker}"
    loads = {t["pid"]: t["loads"] for t in tasks}
    assert all(t["loads"] == 1 for t in tasks), (
        f"loads per worker after each task: {[(t['pid'], t['loads']) for t in tasks]}"
    )
    assert len(loads) == len(per_worker)
