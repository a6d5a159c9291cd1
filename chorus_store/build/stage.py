"""The build stage: check the store, the oracle and the track table, claim the pending
shards, and run their tasks here (:mod:`~chorus_store.build.runner`) or on a cluster
(:mod:`~chorus_store.build.cluster`).

Writers claim their shards (:mod:`chorus_store.store.claims`) before starting, so two
builds of disjoint parts run side by side and a second build of the same part is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any

from chorus_store.build.cluster import (
    WorkerSpec,
    open_client,
    probe_on_cluster,
    run_on_cluster,
)
from chorus_store.build.runner import RunContext, run_tasks
from chorus_store.build.tasks import Task, plan_tasks
from chorus_store.errors import (
    OracleMismatchError,
    RecipeError,
    StoreLockedError,
    UsageError,
)
from chorus_store.genome.fasta import Genome
from chorus_store.oracles.base import Oracle
from chorus_store.progress_log import Meter, rate
from chorus_store.recipes import Recipe
from chorus_store.reports import BuildReport
from chorus_store.scheduler import Scheduler, dashboard_link
from chorus_store.scheduler import check as check_scheduler
from chorus_store.store import claims as locks
from chorus_store.store.core import DATA_GROUPS, ChorusStore

__all__ = ["build", "summary_line"]

log = logging.getLogger(__name__)


def _nothing_built(store: ChorusStore) -> bool:
    return all(not store.read(g.done).any() for g in DATA_GROUPS)


def _check_oracle(
    store: ChorusStore, recipe: Recipe, facts: dict[str, Any], run_id: str | None = None
) -> None:
    """Check a loaded oracle (:meth:`~chorus_store.oracles.base.Oracle.facts`) against the
    recipe; pin its fingerprint at the first build and refuse a different one later.

    The pin binds once a row is written: while no row of any shard is done and no other
    build (other than ``run_id``) holds claims, a different oracle replaces the pin, so a
    first build that failed on its first batch does not lock the store to its mistake."""
    per_model = bool(recipe.oracle.get("per_model", False))
    if facts["joint_tracks"] and not recipe.oracle.get("joint_tracks", False):
        raise RecipeError(
            f"the {facts['name']} adapter computes effects from all tracks of a row at once; "
            f"set joint_tracks = true in the recipe's [oracle] section"
        )
    if facts["per_model"] != per_model:
        raise RecipeError(
            f"the recipe says per_model = {per_model} but the {facts['name']} adapter is "
            f"{'one model per track' if facts['per_model'] else 'one model for all tracks'}"
        )
    info = dict(store.attrs["oracle"])
    if info.get("fingerprint") is None:
        with store.claim(["oracle-pin"], command="pin oracle fingerprint"):
            fresh = ChorusStore.open(store.url, mode="r+")
            info = dict(fresh.attrs["oracle"])
            if info.get("fingerprint") is None:
                info["fingerprint"] = facts["fingerprint"]
                info["description"] = facts["description"]
                attrs = dict(fresh.attrs)
                attrs["oracle"] = info
                fresh.set_attrs(attrs)
                fresh.consolidate()
                store.attrs = attrs
                log.info(
                    "build %s: pinned the oracle's fingerprint %s (%s)",
                    store.url,
                    str(facts["fingerprint"])[:12],
                    facts["description"].get("adapter", facts["name"]),
                )
                return
    if info["fingerprint"] != facts["fingerprint"] and _repin_unbuilt(store, facts, run_id):
        return
    if info["fingerprint"] != facts["fingerprint"]:
        old = info.get("description") or {}
        new = facts["description"]
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = "; ".join(f"{k}: store {old.get(k)!r} vs now {new.get(k)!r}" for k in diff[:4])
        detail = detail or "batch shape or heads differ"
        raise OracleMismatchError(
            f"{store.url} was built with another oracle ({detail}). "
            f"Mixing predictions of two models (or two numerics: device, framework version, "
            f"batch size) would make the background depend on when the build was "
            f"interrupted. Use the original weights/settings, or build a new store."
        )


def _repin_unbuilt(store: ChorusStore, facts: dict[str, Any], run_id: str | None) -> bool:
    """Re-pin ``facts``' fingerprint if nothing was built with the pinned one."""
    with store.claim(["oracle-pin"], command="re-pin oracle fingerprint"):
        fresh = ChorusStore.open(store.url, mode="r+")
        others = locks.live_claims(fresh.location, exclude_run=run_id, prefix="build/")
        if not _nothing_built(fresh) or others:
            return False
        attrs = dict(fresh.attrs)
        log.warning(
            "%s: no row was built with the pinned oracle; pinning the one given now (%s)",
            store.url,
            facts["description"],
        )
        attrs["oracle"] = {
            **attrs["oracle"],
            "fingerprint": facts["fingerprint"],
            "description": facts["description"],
        }
        fresh.set_attrs(attrs)
        fresh.consolidate()
        store.attrs = attrs
    return True


def build(
    store_path: str | Path,
    *,
    part: str = "all",
    shard: tuple[int, int] | None = None,
    workers: int = 1,
    scheduler: Scheduler = None,
    fasta: str | Path | None = None,
    recipe: Recipe | None = None,
    weights: str | None = None,
    device: str = "auto",
    oracle: Oracle | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    records_on: str = "auto",
) -> BuildReport:
    """Build every pending row of ``store_path`` (resumable, idempotent).

    Parameters
    ----------
    part
        ``"all"``, ``"baselines"`` or ``"variants"``.
    shard
        ``(k, n)``: only row shards ``s`` with ``s % n == k``, to split a build over
        machines or GPUs without a merge step.
    workers
        Worker processes on this machine: more than one starts a dask.distributed
        ``LocalCluster`` (one GPU per worker where there are GPUs); each loads the model
        once.
    scheduler
        Run the tasks on a dask.distributed cluster: a ``distributed.Client``, or the
        address of a scheduler (``tcp://host:8786``); the same argument as
        :func:`~chorus_store.reduce`'s (which also takes dask's local schedulers). Workers
        load the model from the recipe and write their shards straight to the store,
        which must be reachable from them (a shared filesystem or an object-store URL).
    fasta, recipe, weights, device
        Override the FASTA path, recipe and weights recorded in the store; each must
        match what the store was planned with (refused otherwise, naming what differs).
    oracle
        An already-loaded oracle (Python API, one process); its fingerprint is checked
        like any other.
    batch_size
        Sequences read, encoded and passed to the oracle per step (default: the model's
        batch size). The model itself always runs on batches of the recipe's
        ``batch_size`` (part of its numerics), so this changes throughput, not results.
    records_on
        Where the statistics of each prediction are computed: ``"auto"`` on the
        accelerator that holds it (only the records cross to the host), in numpy for
        predictions in host memory; ``"device"`` in the prediction's own array namespace
        even on CPU (torch tensors on CPU run the accelerator code path). Both give the
        same records within float32 rounding (see docs/design-notes.md).

    Returns
    -------
    BuildReport
        Rows built, tasks, oracle calls and time spent in the oracle.
    """
    on_cluster = workers > 1 or scheduler is not None
    _check_arguments(scheduler, records_on, oracle, on_cluster)
    t_start = time.perf_counter()
    store, recipe, genome, fasta_path = _open_checked(store_path, recipe, fasta)
    report = BuildReport()
    pending = functools.partial(
        plan_tasks,
        part=part,
        shard=shard,
        per_model=bool(recipe.oracle.get("per_model", False)),
        joint_tracks=bool(recipe.oracle.get("joint_tracks", False)),
    )
    tasks = pending(store)
    _log_start(store, tasks, part, shard)
    if tasks:
        claims = store.claim(
            sorted({c for t in tasks for c in t.claims(store.layout.tracks_per_shard)}),
            command=f"chorus-store build {store.url}",
        )
        try:
            store = _reopen_claimed(store, claims)
            # claims taken: re-read what is pending, another build may have finished some
            tasks = pending(store)
            log.info(
                "build %s: claimed %d shard(s); %d task(s) to run",
                store.url,
                len(claims.names),
                len(tasks),
            )
            job = _Job(store, recipe, genome, fasta_path, tasks, claims.holder.run_id, progress)
            if on_cluster:
                _build_on_cluster(job, report, scheduler, workers, weights, device, batch_size)
            else:
                if oracle is None:
                    oracle = _load_oracle(store, recipe, weights, device)
                _build_here(job, report, oracle, batch_size, records_on)
        finally:
            claims.release()
    report.seconds = time.perf_counter() - t_start
    log.info(summary_line(report, store.url, on_cluster=on_cluster))
    return report


def _load_oracle(store: ChorusStore, recipe: Recipe, weights: str | None, device: str) -> Oracle:
    """The recipe's oracle with the store's track table (not the recipe's files: another
    machine's), its loading time logged (a large model takes minutes)."""
    t_load = time.perf_counter()
    oracle = recipe.load_oracle(weights=weights, device=device, tracks=store.tracks)
    log.info(
        "build %s: loaded the oracle %s (device %s) in %.1f s",
        store.url,
        oracle.name,
        device,
        time.perf_counter() - t_load,
    )
    return oracle


def _log_start(
    store: ChorusStore, tasks: list[Task], part: str, shard: tuple[int, int] | None
) -> None:
    rows: dict[str, int] = {}
    for t in tasks:
        rows[t.group.name] = rows.get(t.group.name, 0) + t.n_rows
    what = ", ".join(f"{g} {n:,}" for g, n in rows.items()) or "none"
    log.info(
        "build %s: part %s%s, %d track(s); %d task(s) pending, rows: %s",
        store.url,
        part,
        f", shard {shard[0]}/{shard[1]}" if shard else "",
        len(store.tracks),
        len(tasks),
        what,
    )


def summary_line(report: BuildReport, store: str, *, on_cluster: bool = False) -> str:
    """The line that sums up a build: rows, time, rate, the oracle's share, what was
    written (the build logs it, the CLI prints it)."""
    rows = sum(report.rows_built.values())
    if not report.tasks:
        return f"nothing to build in {store}: every row asked for is built"
    per_group = ", ".join(f"{g} {n:,}" for g, n in report.rows_built.items() if n)
    if on_cluster:  # the workers' forward passes overlap: their sum is no share of the wall
        oracle = f"oracle {report.oracle_seconds:,.1f} s summed over the workers"
    else:
        share = report.oracle_seconds / report.seconds if report.seconds else 0.0
        oracle = f"oracle {100 * share:.0f} % of wall time"
    return (
        f"built {rows:,} rows ({per_group}) in {report.tasks} tasks, "
        f"{report.oracle_calls} oracle calls, {report.seconds:.1f} s, "
        f"{rate(rows, report.seconds):,.1f} rows/s, {oracle}; wrote the records of "
        f"{report.tasks} task(s) (a row shard's tracks each) to {store}"
    )


def _check_arguments(
    scheduler: Scheduler, records_on: str, oracle: Oracle | None, on_cluster: bool
) -> None:
    """Refuse combinations of build arguments that cannot mean anything."""
    check_scheduler(scheduler, stage="build", local_ok=False)
    if records_on not in ("auto", "device"):
        raise UsageError(f"records_on must be 'auto' or 'device', not {records_on!r}")
    if records_on != "auto" and on_cluster:
        raise UsageError(
            "records_on is a single-process setting; cluster workers choose where the "
            "statistics run themselves (records_on='auto')"
        )
    if oracle is not None and on_cluster:
        raise UsageError(
            "cluster workers load the oracle from the recipe in each process; pass either "
            "oracle= or workers=/scheduler=, not both"
        )


def _open_checked(
    store_path: str | Path, recipe: Recipe | None, fasta: str | Path | None
) -> tuple[ChorusStore, Recipe, Genome, str]:
    """The store, the recipe (the stored one unless given; a given one's track table must
    be the store's), the genome (the store's, or ``fasta`` with the same contigs) and its
    path as given."""
    store = ChorusStore.open(store_path, mode="r+")
    store.validate()
    locks.clear_stale(store.location)  # a killed run's claims, finished shards' included
    if recipe is not None:
        store.tracks.require_same(recipe.track_table(), store=store.url)
    recipe = recipe or Recipe.from_stored(store.attrs["recipe"])
    fasta_path = str(fasta or store.attrs["genome"]["fasta_path"])
    genome = Genome(fasta_path, assembly=store.attrs["genome"].get("assembly"))
    genome.require_same(store.attrs["genome"], what=f"the store {store.url}")
    return store, recipe, genome, fasta_path


def _reopen_claimed(store: ChorusStore, claims: locks.LockSet) -> ChorusStore:
    """The store as it is now that the claims are held (refused while it is being
    restructured); its tables reused when nothing changed."""
    busy = locks.live_claims(
        store.location, exclude_run=claims.holder.run_id, prefix=locks.STRUCTURE
    )
    if busy:
        raise StoreLockedError(
            f"{store.url} is being restructured by {busy[0]}; build after it finishes"
        )
    fresh = ChorusStore.open(store.url, mode="r+")
    fresh.reuse_tables(store)
    return fresh


@dataclasses.dataclass(frozen=True)
class _Job:
    """One build's claimed work: the store, what to build and who builds it."""

    store: ChorusStore
    recipe: Recipe
    genome: Genome
    fasta_path: str
    tasks: list[Task]
    run_id: str
    progress: bool


def _build_here(
    job: _Job, report: BuildReport, oracle: Oracle, batch_size: int | None, records_on: str
) -> None:
    _check_oracle(job.store, job.recipe, oracle.facts(), job.run_id)
    with _meter(job, busy="oracle") as meter:
        ctx = RunContext(job.store, oracle, job.genome, batch_size, records_on)
        report.merge(run_tasks(ctx, job.tasks, on_rows=meter.advance, on_oracle=meter.add_busy))


def _build_on_cluster(
    job: _Job,
    report: BuildReport,
    scheduler: Scheduler,
    workers: int,
    weights: str | None,
    device: str,
    batch_size: int | None,
) -> None:
    store = job.store
    spec = WorkerSpec(
        store=store.url,
        recipe=job.recipe.to_dict(),
        fasta=job.fasta_path,
        weights=weights,
        device=device,
        batch_size=batch_size,
        run_id=job.run_id,
        assembly=store.attrs["genome"].get("assembly"),
        tracks_sha256=store.tracks.sha256(),
    )
    with open_client(scheduler, workers) as client:
        _check_oracle(store, job.recipe, probe_on_cluster(client, spec), job.run_id)
        spec = dataclasses.replace(spec, fingerprint=store.attrs["oracle"]["fingerprint"])
        link = dashboard_link(client)
        if link:
            log.info("build %s: dask dashboard %s", store.url, link)
        if job.progress and link:
            _console().print(f"dask dashboard: {link}", highlight=False)
        with _meter(job) as meter:
            for part_report in run_on_cluster(client, spec, job.tasks, meter.advance):
                report.merge(part_report)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _meter(job: _Job, busy: str | None = None) -> Meter:
    """The build's progress: rows of the claimed tasks (a bar, or a line in the log)."""
    return Meter("build", sum(t.n_rows for t in job.tasks), show=job.progress, busy=busy)
