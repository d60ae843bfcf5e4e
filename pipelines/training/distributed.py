"""Data-parallel training on a Spark cluster: one barrier stage whose tasks train one model together.

The driver caches the training and held-out rows with Petastorm (as many files as there are shards), then
starts `workers` barrier tasks at once. They swap addresses (`allGather`), form a MultiWorkerMirroredStrategy
(models/distributed.py) and each fits on its own shard; the gradients are averaged every step, so every task
holds the same model. Task 0 saves it beside the artifacts and the driver loads it from there: only the plan
(configs and file names) travels in the closure, never data or weights.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from pyspark import BarrierTaskContext
from pyspark.sql import DataFrame, SparkSession

from anomalake.models.base import Detector
from anomalake.models.distributed import Distribution, distributed_training, multi_worker_strategy
from anomalake.models.registry import get_family
from anomalake.models.training import training_logs
from anomalake.pipelines.training.feed import cached_column, converter_dataset

FILES_PER_SHARD = 4  # Petastorm shards by row group: several per worker keeps the shards near equal in size


@dataclass(frozen=True)
class TrainPlan:
    """What every barrier task needs: the family and its config, the cached feeds and where the model goes."""

    family: str
    config: dict[str, Any]
    train: Any  # Petastorm converters: picklable lists of Parquet files, no rows
    validation: Any
    workers: int
    model_dir: str
    log_dir: str

    @property
    def batch_size(self) -> int:
        return int(self.config.get("batch_size", 256))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


def train_distributed(
    spark: SparkSession,
    detector: Detector,
    train: DataFrame,
    validation: DataFrame,
    workers: int,
    model_dir: Path,
    log_dir: Path,
) -> tuple[Detector, int, int]:
    """Fit `detector`'s family on `workers` Spark tasks; (the fitted detector, training rows, validation rows)."""
    seed = detector.config.seed
    files = workers * FILES_PER_SHARD
    with (
        cached_column(train, seed=seed, files=files) as train_cache,
        cached_column(validation, seed=seed, files=files) as validation_cache,
    ):
        plan = TrainPlan(
            detector.family,
            detector.config.to_dict(),
            train_cache,
            validation_cache,
            workers,
            str(model_dir),
            str(log_dir),
        )
        tasks = spark.sparkContext.parallelize(range(workers), workers).barrier()
        results = [r for r in tasks.mapPartitions(partial(_train_task, plan)).collect() if r]
        rows = len(train_cache), len(validation_cache)
    try:
        fitted = Detector.load(model_dir)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
        if model_dir.parent.exists() and not any(model_dir.parent.iterdir()):
            model_dir.parent.rmdir()
    fitted.history_ = json.loads(results[0])
    return fitted, *rows


def _train_task(plan: TrainPlan, _: Iterator[int]) -> Iterator[str]:
    """One barrier task: join the strategy, fit on this task's shard; task 0 saves and returns the history."""
    context = BarrierTaskContext.get()
    rank = context.partitionId()
    host = context.getTaskInfos()[rank].address.split(":")[0]
    addresses = context.allGather(f"{host}:{_free_port(host)}")
    strategy = multi_worker_strategy(addresses, rank, threads=max(1, int(context.cpus())))
    family = get_family(plan.family)
    detector = family(family.config_class.from_dict(plan.config))
    local_batch = max(1, plan.batch_size // plan.workers)  # the global batch stays the configured one
    steps = math.ceil(len(plan.train) / plan.batch_size)
    validation_steps = math.ceil(len(plan.validation) / plan.batch_size)
    shard = {"shard": rank, "shards": plan.workers}
    with (
        converter_dataset(plan.train, "x", plan.batch_size, repeat=False, shuffle=True, seed=plan.seed) as whole_train,
        converter_dataset(
            plan.train, "x", local_batch, repeat=True, shuffle=True, seed=plan.seed, **shard
        ) as train_shard,
        converter_dataset(
            plan.validation, "x", local_batch, repeat=True, shuffle=False, seed=plan.seed, **shard
        ) as validation_shard,
    ):
        distribution = Distribution(
            strategy, rank, plan.workers, train_shard, validation_shard, steps, validation_steps
        )
        logs = training_logs(plan.log_dir) if distribution.is_chief else nullcontext()
        with distributed_training(distribution), logs:
            # The whole training set adapts the normaliser and fixes the residual scale (the same on every task).
            detector.fit(whole_train, validation=validation_shard)
    if distribution.is_chief:
        detector.save(plan.model_dir)
    context.barrier()  # no task leaves (and tears down the collective) before the chief has saved
    yield json.dumps(detector.history_) if distribution.is_chief else ""


def _free_port(host: str) -> int:
    """A port that is free on `host` now (TensorFlow's server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
