"""Data-parallel Keras training across processes: a MultiWorkerMirroredStrategy and the data each worker reads.

Whoever starts the processes (the train job's barrier stage, pipelines/training/distributed.py) gives each one the
addresses of all and its own rank; inside `distributed_training(...)` the Keras families build their model under
the strategy and `fit_keras` trains on the worker's shard. Each worker reads a different shard with a batch of
batch_size / workers, so the global batch and the number of updates per epoch are those of one process.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class Distribution:
    """The strategy of this worker and what it trains on: its shards, and the steps every worker takes."""

    strategy: Any
    rank: int
    workers: int
    train_shard: Any  # a repeating tf.data.Dataset of this worker's batches
    validation_shard: Any
    steps_per_epoch: int
    validation_steps: int

    @property
    def is_chief(self) -> bool:
        """Worker 0 writes the model and the logs; the others hold identical copies."""
        return self.rank == 0


_DISTRIBUTION: ContextVar[Distribution | None] = ContextVar("distribution", default=None)


def current_distribution() -> Distribution | None:
    """The distribution of the fit running in this context, or None for a one-process fit."""
    return _DISTRIBUTION.get()


@contextmanager
def distributed_training(distribution: Distribution) -> Iterator[None]:
    """Within this block families build their model under the strategy and fit on this worker's shard."""
    token = _DISTRIBUTION.set(distribution)
    try:
        yield
    finally:
        _DISTRIBUTION.reset(token)


def model_scope() -> Any:
    """Where a family creates its model and optimiser: the strategy's scope when training is distributed."""
    from contextlib import nullcontext

    distribution = current_distribution()
    return distribution.strategy.scope() if distribution is not None else nullcontext()


def multi_worker_strategy(addresses: list[str], rank: int, threads: int = 0) -> Any:
    """A MultiWorkerMirroredStrategy over `addresses` (host:port each) as worker `rank`, on `threads` CPU threads.

    Must be the first TensorFlow call in the process (the collective runtime is configured at start-up).
    The cluster is given by a resolver, not TF_CONFIG, so no process-wide variable is changed.
    """
    import tensorflow as tf

    if threads:  # a task owns the cores Spark gave it, not the machine's
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": list(addresses)}), task_type="worker", task_id=rank
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    _patch_keras_multi_worker()
    return strategy


def without_autoshard(dataset: Any) -> Any:
    """`dataset` marked as already sharded: the strategy must not shard a worker's own shard again."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def _patch_keras_multi_worker() -> None:
    """Work around keras-team/keras#20585: Keras 3's `fit` fails under MultiWorkerMirroredStrategy.

    Two steps of its TensorFlow trainer assume one worker: it builds the model from the first batch reduced
    across workers ("Attempt to convert a value (PerReplica...)"), and it reduces each scalar log along axis 0.
    Here the first batch is this worker's own (only its shapes matter) and the logs' mean is taken without an
    axis. Only processes that train distributed call this (a barrier task's fresh Python worker).
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_anomalake_multi_worker_patch", False):
        return
    reduce_per_replica = trainer.reduce_per_replica

    def reduce_logs(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return trainer.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def build_from_local_batch(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return

        def local(value):  # this worker's part of a distributed value
            if isinstance(value, tf.distribute.DistributedValues):
                return self.distribute_strategy.experimental_local_results(value)[0]
            return value

        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = trainer.tree.map_structure(local, next(batches))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_logs
    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    trainer._anomalake_multi_worker_patch = True
