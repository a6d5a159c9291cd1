"""The build on a dask.distributed cluster.

The coordinator (the process running :func:`chorus_store.build`) takes the claims,
cuts the work into tasks exactly as a one-process build does, and submits one dask task
per build task. Each worker process loads the oracle once — lazily, on its first task,
from the recipe — and keeps it for every later task of the run; tasks carry only a
small :class:`WorkerSpec` and the task's row range. A worker writes its shards straight
to the store (a shared filesystem or an object store), and returns a few counters: the
coordinator never holds a prediction.

Faults are the cluster's to handle: a worker killed mid-task loses that task, which
the scheduler reruns elsewhere. Rerunning is safe because a task's output is a pure
function of the store's plan and the oracle, written whole, with ``done_rows`` marked
last. Workers that advertise a ``GPU`` resource get one task at a time each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from chorus_store.build.runner import RunContext, run_tasks
from chorus_store.errors import ClusterError, OracleMismatchError, TrackTableMismatchError
from chorus_store.genome.fasta import Genome
from chorus_store.recipes import Recipe
from chorus_store.scheduler import Scheduler, connect, is_client
from chorus_store.store.core import ChorusStore

__all__ = [
    "WorkerSpec",
    "gpu_assignment",
    "local_cluster",
    "open_client",
    "probe_on_cluster",
    "run_on_cluster",
]

log = logging.getLogger(__name__)

#: the resource name a GPU worker advertises (``dask worker --resources GPU=1``)
GPU = "GPU"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to run tasks of one build run (small; shipped once)."""

    store: str
    recipe: dict[str, Any]
    fasta: str
    weights: str | None
    device: str
    batch_size: int | None
    run_id: str
    assembly: str | None = None
    fingerprint: str | None = None  # the store's pinned oracle; None for the probe
    # the store's track table, which the worker reads from the store: part of the model key
    tracks_sha256: str | None = None

    def model_key(self) -> str:
        """Workers keep one loaded oracle per distinct (recipe, weights, device, FASTA)."""
        d = asdict(self)
        for k in ("store", "run_id", "fingerprint", "batch_size"):
            d.pop(k)
        # the plan and layout do not change the model: a worker keeps it across stores
        d["recipe"] = {k: v for k, v in self.recipe.items() if k not in ("plan", "layout")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------
# worker side: state kept per worker process
# --------------------------------------------------------------------------------------

_LOCK = threading.Lock()
_ORACLES: dict[str, Any] = {}  # model_key -> (oracle, genome)
_CONTEXTS: dict[str, Any] = {}  # run_id -> build.runner.RunContext


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except ValueError:
        return "local"


def gpu_assignment(worker_name: str, gpus: list[str]) -> str | None:
    """The GPU of worker ``worker_name`` among ``gpus``: LocalCluster names its workers
    0, 1, …; worker ``i`` gets ``gpus[i % len(gpus)]``. None without GPUs or a name
    that is not a number (a worker started by hand picks its own GPU)."""
    if not gpus or not worker_name.isdigit():
        return None
    return gpus[int(worker_name) % len(gpus)]


def _pin_gpu() -> None:
    """On a LocalCluster worker of a several-GPU machine, see only this worker's GPU.

    Must run before the worker's first CUDA call (its first oracle load)."""
    gpus = [g for g in os.environ.get("CHORUS_STORE_GPUS", "").split(",") if g]
    gpu = gpu_assignment(_worker_name(), gpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _oracle(spec: WorkerSpec) -> tuple[Any, Any]:

    key = spec.model_key()
    with _LOCK:
        if key not in _ORACLES:
            # one model per worker process at a time: free the last one before loading
            # (a GPU may not hold two)
            _ORACLES.clear()
            _CONTEXTS.clear()
            _pin_gpu()
            # the track table comes from the store, not from the recipe's paths, which
            # are the planning machine's
            tracks = ChorusStore.open(spec.store).tracks
            if spec.tracks_sha256 is not None and tracks.sha256() != spec.tracks_sha256:
                raise TrackTableMismatchError(
                    f"{spec.store}'s track table changed during the build (add-tracks?); "
                    f"rerun `chorus-store build {spec.store}`"
                )
            oracle = Recipe.from_stored(spec.recipe, tracks=tracks).load_oracle(
                weights=spec.weights, device=spec.device
            )
            genome = Genome(spec.fasta, assembly=spec.assembly)
            _ORACLES[key] = (oracle, genome)
            log.info("worker %s loaded %s", _worker_name(), oracle.name)
        return _ORACLES[key]  # type: ignore[no-any-return]


def probe(spec: WorkerSpec) -> dict[str, Any]:
    """Load the oracle on a worker (kept for its later tasks); what the coordinator checks."""
    oracle, _ = _oracle(spec)
    facts: dict[str, Any] = oracle.facts()
    return facts


def _context(spec: WorkerSpec) -> Any:

    oracle, genome = _oracle(spec)
    if oracle.fingerprint != spec.fingerprint:
        raise OracleMismatchError(
            f"worker {_worker_name()} computes a different oracle than the one pinned in "
            f"{spec.store}: {oracle.describe()} (another framework or package version, "
            f"device type or TF32 setting?). Every worker of a build must compute the same "
            f"numbers: give the cluster uniform workers (one software environment, one "
            f"kind of device)."
        )
    with _LOCK:
        if spec.run_id not in _CONTEXTS:
            _CONTEXTS.clear()
            store = ChorusStore.open(spec.store, mode="r+")
            # the FASTA at this path on this machine must be the one the store was planned on
            genome.require_same(
                store.attrs["genome"],
                what=f"the store {store.url} (read on worker {_worker_name()})",
            )
            _CONTEXTS[spec.run_id] = RunContext(store, oracle, genome, spec.batch_size)
        return _CONTEXTS[spec.run_id]


def run_task(spec: WorkerSpec, task: Any) -> Any:
    """One build task on a worker: rows read, predicted, reduced and written to the store."""
    return run_tasks(_context(spec), [task])


# --------------------------------------------------------------------------------------
# coordinator side
# --------------------------------------------------------------------------------------


def _visible_gpus() -> list[str]:
    """GPU ids this machine's workers may use: CUDA_VISIBLE_DEVICES, else every GPU torch
    sees (without initialising CUDA in this process), else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch, or a torch without CUDA
        return []


@contextlib.contextmanager
def local_cluster(
    n_workers: int, *, threads_per_worker: int = 1, cpu_threads: int | None = None
) -> Iterator[Any]:
    """A ``LocalCluster`` of ``n_workers`` processes and a client to it.

    Each worker runs one task at a time (``threads_per_worker``) and its model on
    ``cpu_threads`` intra-op threads (default: the machine's cores shared out). On a
    machine with GPUs each worker advertises ``GPU=1`` and sees one GPU (worker ``i``
    gets GPU ``i % n_gpus``)."""
    import dask
    from distributed import Client, LocalCluster

    # dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which made the demo model's
    # forward pass 3x slower in a worker (5.6 s vs 1.9 s for the same rows: every large
    # tensor allocation went back to mmap/munmap); workers keep glibc's default. Threads:
    # the machine's cores shared out, so N workers do not oversubscribe them (results do
    # not depend on it: see oracles.common.select_device)
    # (dask writes its pre-spawn variables into this process's own environment, where
    # they would outlive the cluster: the thread counts go in each worker's env instead)
    environ = {
        k: v
        for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
        if k != "MALLOC_TRIM_THRESHOLD_" and not k.endswith("_NUM_THREADS")
    }
    threads = str(cpu_threads or max(1, (os.cpu_count() or 1) // n_workers))
    env = {f"{lib}_NUM_THREADS": threads for lib in ("OMP", "MKL", "OPENBLAS")}
    kwargs: dict[str, Any] = {}
    gpus = _visible_gpus()
    if gpus:
        kwargs["resources"] = {GPU: 1}
        env["CHORUS_STORE_GPUS"] = ",".join(gpus)
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=":0",
            env=env,
            **kwargs,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextlib.contextmanager
def open_client(scheduler: Scheduler, workers: int) -> Iterator[Any]:
    """``scheduler`` when it is a client; else a client to the cluster at the address
    ``scheduler``, or to a new LocalCluster of ``workers`` (closed after)."""
    if is_client(scheduler):
        yield scheduler
    elif isinstance(scheduler, str):
        with connect(scheduler) as client:
            yield client
    else:
        with local_cluster(workers) as client:
            yield client


def _task_resources(client: Any) -> dict[str, float] | None:
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    if any(GPU in (w.get("resources") or {}) for w in workers):
        return {GPU: 1}
    return None


def probe_on_cluster(client: Any, spec: WorkerSpec) -> dict[str, Any]:
    """:meth:`~chorus_store.oracles.base.Oracle.facts` of the oracle as a worker loads it
    (the coordinator loads no model: it may be a CPU login node)."""
    fut = client.submit(probe, spec, pure=False, resources=_task_resources(client))
    result: dict[str, Any] = fut.result()
    return result


def run_on_cluster(
    client: Any,
    spec: WorkerSpec,
    tasks: list[Any],
    advance: Callable[[int], None],
) -> list[Any]:
    """Run ``tasks`` on the cluster; the workers' reports, in completion order.

    A task that raises stops the build: the others are cancelled and the error is
    raised here (what finished is kept in the store; the next build resumes)."""
    from distributed import KilledWorker, as_completed

    resources = _task_resources(client)
    # the spec (~1 KB: paths, the recipe) travels with each task rather than scattered: a
    # scattered value dies with the workers holding it, and the tasks needing it with it
    futures = {
        client.submit(
            run_task,
            spec,
            task,
            key=f"chorus-build-{task.group.name}-{task.shard}-{task.tracks[0]}-{spec.run_id[:8]}",
            pure=False,
            resources=resources,
        ): task
        for task in tasks
    }
    reports = []
    try:
        for fut in as_completed(futures):
            try:
                reports.append(fut.result())  # raises the task's error
            except KilledWorker as exc:
                task = futures[fut]
                raise ClusterError(
                    f"{spec.store}: {task.group.name} shard {task.shard} killed every worker that "
                    f"ran it ({exc}); out of memory is the usual cause (GPU or host: a smaller "
                    f"model batch, or workers with more memory). Finished shards are kept; "
                    f"`chorus-store build {spec.store}` resumes."
                ) from exc
            advance(futures[fut].n_rows)
    finally:
        client.cancel([f for f in futures if not f.done()])
    return reports
