"""Strategy factory: the one place a `tf.distribute.Strategy` is chosen by name."""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf

from siamese_tf import compat
from siamese_tf.errors import InputError

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
CLUSTERS = ("tf_config", "slurm")


def cluster_resolver(cluster: str = "tf_config"):
    """The cluster resolver of a multi-worker job.

    Args:
      cluster: "tf_config" (the `TF_CONFIG` environment variable: Kubernetes, Vertex AI, our
        local launcher) or "slurm" (`SlurmClusterResolver` reads `SLURM_*` variables).

    Returns:
      A `tf.distribute.cluster_resolver.ClusterResolver`.

    Raises:
      InputError: an unknown cluster kind, or `TF_CONFIG` missing / malformed.
    """
    if cluster == "slurm":
        try:
            gpus = len(tf.config.list_physical_devices("GPU"))
            if gpus:
                return tf.distribute.cluster_resolver.SlurmClusterResolver(gpus_per_node=gpus)
            # CPU nodes: the resolver pairs each task with a GPU slot (and runs nvidia-smi to
            # count them), so it lists no task at all without GPUs. Give it one virtual slot per
            # task and leave CUDA_VISIBLE_DEVICES alone.
            tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
            return tf.distribute.cluster_resolver.SlurmClusterResolver(
                gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
            )
        except (RuntimeError, KeyError, ValueError) as err:
            raise InputError(
                f"--cluster=slurm but the Slurm environment is unusable: {err}"
            ) from None
    if cluster != "tf_config":
        raise InputError(f"unknown cluster {cluster!r}; choose one of: {', '.join(CLUSTERS)}")
    raw = os.environ.get("TF_CONFIG", "")
    try:
        parsed = json.loads(raw) if raw else {}
    except json.JSONDecodeError as err:
        raise InputError(f"TF_CONFIG is not valid JSON ({err.msg}); see WORKSPACE.md") from None
    if "cluster" not in parsed or "task" not in parsed:
        raise InputError(
            "--strategy=multi_worker needs TF_CONFIG with 'cluster' and 'task' "
            "(use python -m launch.multiworker locally; see WORKSPACE.md)"
        )
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def get_strategy(name: str = "auto", cluster: str = "tf_config") -> tf.distribute.Strategy:
    """Creates a strategy by name; the only place strategies are chosen.

    Args:
      name: "auto" (MirroredStrategy over all GPUs when there are several, else the default
        strategy), "default", "one_device" (first GPU, else CPU), "mirrored" (all GPUs, or all
        logical CPUs when there is no GPU), "multi_worker" (MultiWorkerMirroredStrategy over the
        cluster that `cluster` describes) or "tpu" (TPUStrategy; needs a TPU runtime).
      cluster: for "multi_worker": "tf_config" or "slurm".

    Returns:
      The strategy.

    Raises:
      InputError: an unknown name, or a cluster that cannot be resolved.
    """
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    # Cluster strategies first: listing logical devices initialises the runtime, after which
    # MultiWorkerMirroredStrategy can no longer configure its collective ops.
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver(cluster))
    if name == "tpu":
        # Wired as TensorFlow documents it; untestable without a TPU runtime.
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as err:
            raise InputError(f"--strategy=tpu but no TPU is reachable: {err}") from None
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


def distribute_pk_dataset(strategy, make_dataset, classes_per_batch: int, start_step: int = 0):
    """Per-replica P×K pipelines through `strategy.distribute_datasets_from_function`.

    Each replica receives whole P×K groups: the global P is divided among the replicas, so every
    replica mines complete classes. Each input pipeline samples its own stream (its pipeline id),
    and because a pipeline feeds its local replicas in turn, consecutive sampler steps go to
    different replicas; step numbers are scaled so `start_step` resumes exactly.

    Args:
      strategy: the strategy.
      make_dataset: `fn(classes_per_replica, stream, start_element) -> tf.data.Dataset` of
        per-replica batches.
      classes_per_batch: the global P.
      start_step: the global training step to start from.

    Returns:
      A distributed dataset (or the plain dataset for a single replica).

    Raises:
      InputError: P not divisible by the number of replicas.
    """
    replicas = strategy.num_replicas_in_sync
    per_replica = classes_per_replica(strategy, classes_per_batch)
    if replicas == 1:
        return make_dataset(per_replica, 0, start_step)

    def dataset_fn(context: tf.distribute.InputContext):
        local_replicas = replicas // context.num_input_pipelines
        return make_dataset(per_replica, context.input_pipeline_id, start_step * local_replicas)

    return strategy.distribute_datasets_from_function(dataset_fn)


def classes_per_replica(strategy, classes_per_batch: int) -> int:
    """P per replica: every replica gets whole P×K groups.

    Raises:
      InputError: the global P is not divisible by the number of replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if classes_per_batch % replicas:
        raise InputError(
            f"classes_per_batch={classes_per_batch} is not divisible by the {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    return classes_per_batch // replicas


def multi_worker_resolver(strategy):
    """The cluster resolver of a strategy that spans several processes, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return None
    spec = resolver.cluster_spec().as_dict()
    tasks = sum(len(spec.get(job, ())) for job in ("chief", "worker"))
    return resolver if tasks > 1 else None


def is_chief(strategy) -> bool:
    """Whether this process writes the workdir: always, except non-chief multi-worker tasks."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


_TASK = r"/job:(\w+)/replica:\d+/task:(\d+)"
# TensorFlow's wording (2.21) of the ways a collective learns that a peer is gone.
_LOST_PATTERNS = (
    # The coordination service missed the peer's heartbeats (a frozen or unreachable node).
    (re.compile(r"stopped sending heartbeats\)?:\s*" + _TASK), "it stopped sending heartbeats"),
    # The peer's process ended (its sockets closed at once: killed, OOM-killed, crashed).
    (re.compile(r"[Ss]ocket closed[\s\S]*?remote target " + _TASK), "its connection closed"),
    (re.compile(r"remote target " + _TASK + r"[\s\S]*?[Ss]ocket closed"), "its connection closed"),
)
_LOST_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


def _short(task: str) -> str:
    match = re.search(_TASK, task)
    return f"{match.group(1)} {match.group(2)}" if match else task


def lost_worker(error: BaseException, resolver=None) -> str | None:
    """Names the lost worker of a multi-worker job from the error a collective raised.

    A worker that dies or stops answering makes every other worker's pending collective fail:
    at once when its sockets close (killed, crashed), or within the coordination service's
    heartbeat timeout (10 s by default in TensorFlow 2.21) when it freezes or its node drops
    off the network. TensorFlow's message names the task in most cases; otherwise every peer
    is probed (5 s at most each) and those that do not answer are named.

    Args:
      error: the exception training raised.
      resolver: the job's cluster resolver (to name the coordination-service leader).

    Returns:
      What was lost, for "error: lost ...": the worker and what was seen ("worker 1
      (/job:worker/replica:0/task:1): its connection closed"), "contact with the cluster (...)"
      when no peer can be named, or None when `error` is not a collective failure.
    """
    if not isinstance(error, _LOST_ERRORS):
        return None
    message = str(getattr(error, "message", "") or error)
    for pattern, what in _LOST_PATTERNS:
        match = pattern.search(message)
        if match:
            job, task = match.group(1), int(match.group(2))
            return f"{job} {task} (/job:{job}/replica:0/task:{task}): {what}"
    peers = compat.unreachable_peers(resolver) if resolver is not None else []
    if peers:
        names = ", ".join(f"{_short(peer)} ({peer})" for peer in peers)
        return f"{names}: no answer to a health probe"
    if "CoordinationService" in message:
        # This worker lost the coordination service, which runs in the chief (or worker 0).
        job = "worker"
        if resolver is not None and "chief" in resolver.cluster_spec().as_dict():
            job = "chief"
        return (
            f"{job} 0 (/job:{job}/replica:0/task:0, which runs the coordination service): "
            "it stopped answering"
        )
    # Every peer answers: not provably a lost worker, but the collective is gone all the same.
    return f"contact with the cluster ({type(error).__name__}: {message.splitlines()[0][:200]})"
