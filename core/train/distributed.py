"""Training on several machines: TensorFlow's MultiWorkerMirroredStrategy, set up by TF_CONFIG.

Every machine runs the same `python -m core train --strategy multiworker ...` with its own
TF_CONFIG (see docs/scaling.md). The workers train one model in lockstep: each step, every
replica takes its share of the global batch and the gradients are summed across all of them.
The chief (the "chief" task, or worker 0 when the cluster has none) writes the run folder and
may activate it; every other worker saves its copy of the run into a temporary folder removed
when the process ends, and keeps its caches (features, decoded images) in a folder of its own
under the cache folder, so no worker races the chief for the run folder, active.local.json or
a cache on a shared disk.

Collectives deadlock unless every worker runs the same steps, so `check_same_split` refuses to
train when the workers disagree on the data, and the datasets are sharded by element (every
worker runs the same number of steps, whatever the files).
"""

import atexit
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tensorflow_trainer

from core import config

TF_CONFIG_VARIABLE = "TF_CONFIG"
ROLES = ("chief", "worker")
LOSS_METRIC = "loss"


@dataclass(frozen=True)
class Task:
    """This process's place in the cluster that TF_CONFIG describes."""

    role: str
    index: int
    # Roles and their addresses ("host:port"), as in TF_CONFIG.
    cluster: dict[str, tuple[str, ...]]

    @property
    def workers(self) -> int:
        return sum(len(addresses) for addresses in self.cluster.values())

    @property
    def is_chief(self) -> bool:
        # TensorFlow's own rule: the chief task, or worker 0 when there is no chief.
        return self.role == "chief" or ("chief" not in self.cluster and self.index == 0)


def parse_tf_config(text: str | None) -> Task:
    """The task TF_CONFIG names; ValueError says what is missing or malformed."""
    if not text:
        raise ValueError(
            f"--strategy multiworker needs the {TF_CONFIG_VARIABLE} environment variable, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}} (see docs/scaling.md)'
        )
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{TF_CONFIG_VARIABLE} is not valid JSON ({error})") from error
    # A JSON list or number has no cluster either: the message below says what is needed.
    payload = payload if isinstance(payload, dict) else {}
    cluster = parse_cluster(payload.get("cluster"))
    task = payload.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(
            f"{TF_CONFIG_VARIABLE} task must name a type of the cluster ({sorted(cluster)}), "
            f"got {task!r}"
        )
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(
            f"{TF_CONFIG_VARIABLE} task index must be 0 to {len(cluster[task['type']]) - 1} "
            f"for {task['type']!r}, got {index!r}"
        )
    return Task(task["type"], index, cluster)


def parse_cluster(cluster) -> dict[str, tuple[str, ...]]:
    """TF_CONFIG's cluster: chief (at most one) and workers, each a list of host:port."""
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"{TF_CONFIG_VARIABLE} needs a cluster of chief and worker addresses")
    unknown = sorted(set(cluster) - set(ROLES))
    if unknown:
        raise ValueError(
            f"{TF_CONFIG_VARIABLE} cluster roles must be chief and worker; "
            f"{unknown} are not used by this strategy"
        )
    parsed = {}
    for role, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f"{TF_CONFIG_VARIABLE} cluster {role!r} must be a list of host:port")
        for address in addresses:
            check_address(role, address)
        parsed[role] = tuple(addresses)
    if len(parsed.get("chief", ())) > 1:
        raise ValueError(f"{TF_CONFIG_VARIABLE} cluster may have one chief, got {parsed['chief']}")
    return parsed


def check_address(role: str, address) -> None:
    host, _, port = str(address).rpartition(":")
    if not isinstance(address, str) or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{TF_CONFIG_VARIABLE} {role} address must be host:port, got {address!r}")


def current_task() -> Task:
    return parse_tf_config(os.environ.get(TF_CONFIG_VARIABLE))


@functools.cache
def strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The process's one multi-worker strategy, made on first use.

    TensorFlow configures the collective ops when the strategy is made, which it refuses once
    any other op has run: `train` asks for it before touching data or models.
    """
    current_task()
    patch_keras()
    made = tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    return made


def worker_output(models_directory: Path | None, activate: bool) -> tuple[Path | None, bool]:
    """Where this worker saves its run and whether it may activate it.

    The chief keeps both. Another worker trains the same run but saves it in a temporary
    folder removed at exit, and caches in a folder of its own: on a shared disk, every worker
    would otherwise write (and evict from) the same folders at once. Its cache lasts, so the
    next run decodes nothing again.
    """
    strategy()
    task = current_task()
    if task.is_chief:
        return models_directory, activate
    # This process is one worker of one training: the setting is for its lifetime.
    config.CACHE_DIR = config.CACHE_DIR / "workers" / f"{task.role}-{task.index}"
    scratch = Path(tempfile.mkdtemp(prefix="dermo-worker-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch / "models", False


def is_multiworker(strategy_: tf.distribute.Strategy) -> bool:
    return isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy)


def check_same_split(strategy_: tf.distribute.Strategy, keys: Sequence[str], split) -> None:
    """Refuse to train, on every worker at once, unless all see the same images and split.

    Workers that disagree would run different numbers of steps and wait on each other for
    ever. Each contributes a digest of its (image hash, split) pairs; every worker gathers
    all of them, so all reach the same verdict.
    """
    if not is_multiworker(strategy_):
        return
    digest = hashlib.sha256()
    for key, name in zip(keys, split, strict=True):
        digest.update(f"{key} {name}\n".encode())
    local = tf.constant(list(digest.digest()[:16]), tf.float32)
    values = strategy_.experimental_distribute_values_from_function(lambda context: local)
    gathered = strategy_.gather(values, axis=0).numpy().reshape(-1, 16)
    if len(np.unique(gathered, axis=0)) > 1:
        raise ValueError(
            "the workers do not see the same images or split: give every worker the same "
            "data, CSV, sites and seed"
        )


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard by element, not by file: every worker then runs the same number of steps."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def example_counts(model: keras.Model) -> dict[str, int]:
    """Replicas, and training examples of the epoch in all and on this worker's replicas.

    Read from the loss tracker's example count before validation resets it: the evidence
    that the other workers took their share of every batch. Empty unless multi-worker.
    """
    if not is_multiworker(model.distribute_strategy):
        return {}
    tracker = next(metric for metric in model.metrics if metric.name == LOSS_METRIC)
    count = next(variable for variable in tracker.variables if variable.name == "count").value
    local = model.distribute_strategy.experimental_local_results(count)
    return {
        "replicas": model.distribute_strategy.num_replicas_in_sync,
        "examples": int(count.numpy()),
        "worker_examples": int(sum(value.numpy() for value in local)),
    }


def first_local(strategy_: tf.distribute.Strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy_.experimental_local_results(value)[0]
    return value


@functools.cache
def patch_keras() -> None:
    """Two fixes that let Keras 3's `fit` and `evaluate` run under this strategy.

    Keras 3.15 fails there (keras-team/keras#20585): it averages the first distributed batch
    across workers to learn its shapes, and averages each step's scalar logs along an axis
    they do not have. The first local replica's batch has the shapes; the step logs only feed
    batch callbacks, while the epoch's logs are read from the metrics, summed over every
    replica of every worker.
    """
    build, reduce = (
        tensorflow_trainer.TensorFlowTrainer._maybe_symbolic_build,
        tensorflow_trainer.reduce_per_replica,
    )

    def symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    functools.partial(first_local, self.distribute_strategy), next(batches)
                )
                break
        return build(self, data_batch=data_batch)

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and is_multiworker(strategy_):
            return tree.map_structure(functools.partial(first_local, strategy_), values)
        return reduce(values, strategy_, reduction)

    tensorflow_trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    tensorflow_trainer.reduce_per_replica = reduce_per_replica
