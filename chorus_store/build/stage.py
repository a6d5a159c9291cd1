"""The build: run the oracle over every plan row not yet done, write, mark done.

Work is cut into *tasks*: one row shard of ``baselines`` or ``variants`` and the tracks
of it still pending. A task's rows are read from the FASTA and one-hot encoded in a
background thread, run through the oracle in fixed-size batches, reduced to records
(:mod:`chorus_store.stats`), and handed to a writer thread that writes the data arrays
and only then the ``done_rows`` marks. A killed build therefore leaves every finished task
readable and every unfinished one pending; re-running computes exactly the pending ones.

Writers claim their shards (:mod:`chorus_store.locks`) before starting, so two builds of
disjoint parts run side by side and a second build of the same part is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chorus_store.arrays import HostCopy, as_host_view, is_accelerated
from chorus_store.build.cluster import (
    WorkerSpec,
    dashboard_link,
    open_client,
    oracle_facts,
    probe_on_cluster,
    run_on_cluster,
)
from chorus_store.build.records import BlockIndex, GeneSlot, Records, TrackStats
from chorus_store.errors import (
    ChorusStoreError,
    IncompleteStageError,
    OracleError,
    OracleMismatchError,
    PredictionError,
    RecipeError,
    StoreLockedError,
    TrackTableMismatchError,
    UsageError,
    WriteError,
)
from chorus_store.genome.fasta import Genome, one_hot
from chorus_store.oracles.base import Oracle
from chorus_store.recipes import Recipe
from chorus_store.store import claims as locks
from chorus_store.store.core import DATA_GROUPS, ChorusStore, as_corruption, is_checksum_error

__all__ = ["Task", "BuildReport", "build", "plan_tasks", "pending_summary"]

log = logging.getLogger(__name__)

_DATA_ARRAYS = {
    "baselines": ("summary", "perbin"),
    "variants": ("ref_summary", "alt_summary", "effect"),
}


@dataclass(frozen=True)
class Task:
    """Rows ``start:stop`` of row shard ``shard`` of ``group``, for the ``tracks`` pending."""

    group: str
    shard: int
    start: int
    stop: int
    shard_stop: int
    tracks: tuple[int, ...]

    def claims(self, track_shard: int) -> list[str]:
        shards = sorted({t // track_shard for t in self.tracks})
        return [f"build/{self.group}/s{self.shard:06d}-t{ts:04d}" for ts in shards]

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


@dataclass
class BuildReport:
    """What one :func:`build` call did."""

    rows_built: dict[str, int] = field(default_factory=lambda: {g: 0 for g in DATA_GROUPS})
    tasks: int = 0
    oracle_calls: int = 0
    seconds: float = 0.0
    oracle_seconds: float = 0.0
    sequences: int = 0

    def merge(self, other: BuildReport) -> None:
        for g, n in other.rows_built.items():
            self.rows_built[g] += n
        self.tasks += other.tasks
        self.oracle_calls += other.oracle_calls
        self.oracle_seconds += other.oracle_seconds
        self.sequences += other.sequences


# --------------------------------------------------------------------------------------
# what is pending
# --------------------------------------------------------------------------------------


def _selected_groups(part: str) -> tuple[str, ...]:
    if part == "all":
        return DATA_GROUPS
    if part in DATA_GROUPS:
        return (part,)
    raise UsageError(
        f"--part must be 'all', 'baselines' or 'variants', not {part!r}; e.g. "
        f"`chorus-store build STORE --part baselines`"
    )


def plan_tasks(
    store: ChorusStore,
    *,
    part: str = "all",
    shard: tuple[int, int] | None = None,
    per_model: bool = False,
    joint_tracks: bool = False,
) -> list[Task]:
    """The tasks still to do, for ``part`` and (``k``, ``n``) = every n-th row shard from k.

    One task per row shard holds all its pending tracks (one forward pass serves every
    track). For one-model-per-track oracles (``per_model``) a task is one row shard × one
    track shard, ordered track shard first, so each model group is loaded once in a row.
    For oracles whose effects need every track of a row at once (``joint_tracks``: Sei's
    histone equalisation), a row shard with any track pending is redone for all tracks.
    """
    tasks = []
    n_tracks = len(store.tracks)
    for group in _selected_groups(part):
        done = store.read(f"{group}/done_rows")
        for s, start, stop in store.iter_shards(group):
            if shard is not None and s % shard[1] != shard[0]:
                continue
            pending = np.flatnonzero(done[s, :n_tracks] < stop - start)
            if len(pending) == 0:
                continue
            if joint_tracks:
                pending = np.arange(n_tracks)
            groups = (
                [
                    pending[pending // store.layout.track_shard == ts]
                    for ts in np.unique(pending // store.layout.track_shard)
                ]
                if per_model
                else [pending]
            )
            for tracks in groups:
                first = int(done[s, tracks].min())
                tasks.append(
                    Task(group, s, start + first, stop, stop, tuple(int(t) for t in tracks))
                )
    if per_model:
        tasks.sort(key=lambda t: (min(t.tracks) // store.layout.track_shard, t.group, t.shard))
    return tasks


def pending_summary(store: ChorusStore) -> dict[str, dict[str, int]]:
    """Per group: shards, shards complete, rows × tracks done (for ``status``)."""
    out = {}
    n_tracks = len(store.tracks)
    for group in DATA_GROUPS:
        done = store.read(f"{group}/done_rows")[:, :n_tracks]
        lengths = np.asarray([stop - start for _, start, stop in store.iter_shards(group)])
        complete = (
            (done >= lengths[:, None]).all(axis=1) if n_tracks else np.ones(len(lengths), bool)
        )
        out[group] = {
            "shards": int(len(lengths)),
            "shards_done": int(complete.sum()),
            "cells": int(lengths.sum()) * n_tracks,
            "cells_done": int(np.minimum(done, lengths[:, None]).sum()),
        }
    return out


def require_complete(store: ChorusStore, groups: tuple[str, ...] = DATA_GROUPS) -> None:
    """Raise :class:`IncompleteStageError` unless every row of ``groups`` is built."""
    status = pending_summary(store)
    todo = {g: s for g, s in status.items() if g in groups and s["cells_done"] < s["cells"]}
    if todo:
        what = ", ".join(
            f"{g} {s['shards'] - s['shards_done']} of {s['shards']} shards" for g, s in todo.items()
        )
        raise IncompleteStageError(
            f"{store.url}: the build is not finished ({what} pending). Run "
            f"`chorus-store build {store.url}` (it resumes where it stopped)."
        )


# --------------------------------------------------------------------------------------
# running tasks
# --------------------------------------------------------------------------------------


@dataclass
class _Batch:
    task: int
    rows: np.ndarray  # local row of each sequence in its task
    allele: np.ndarray  # 0 = ref/position window, 1 = alt
    onehot: np.ndarray
    labels: list[str]
    #: sampled bins of each sequence (baselines): (n, resolutions, k) and (n, k)
    bins: np.ndarray | None = None
    gene_bins: np.ndarray | None = None
    #: the (row, gene) records read from this batch (slot: index in the task's records)
    slots: list[GeneSlot] = field(default_factory=list)

    def block(self, start: int, m: int, resolutions: list[int]) -> BlockIndex:
        """What to read of the model block holding sequences ``start:start+m``."""
        return BlockIndex(
            rows=m,
            resolutions=resolutions,
            bins=None if self.bins is None else self.bins[start : start + m],
            gene_bins=None if self.gene_bins is None else self.gene_bins[start : start + m],
            slots=[
                GeneSlot(s.slot, s.batch_row - start, s.bins)
                for s in self.slots
                if start <= s.batch_row < start + m
            ],
        )


_END = object()
#: the GIL switch interval while a build runs (see run_tasks)
_SWITCH_INTERVAL_S = 0.0005


class _Context:
    """What a process needs to run tasks: store, oracle, genome, statistics.

    ``records_on`` says where the statistics run: ``"auto"`` where the predictions are
    when that is an accelerator, and in numpy (a free view) when they are in host memory;
    ``"device"`` always in the predictions' own namespace, torch tensors on CPU included
    (the accelerator code path, run on CPU to test it).
    """

    def __init__(
        self,
        store: ChorusStore,
        oracle: Oracle,
        genome: Genome,
        batch_size: int | None = None,
        records_on: str = "auto",
    ) -> None:
        if records_on not in ("auto", "device"):
            raise UsageError(f"records_on must be 'auto' or 'device', not {records_on!r}")
        self.store = store
        self.oracle = oracle
        self.genome = genome
        self.batch_size = batch_size or oracle.batch_size
        self.records_on = records_on
        self.table = store.tracks
        self.resolutions = store.resolutions
        self.n_strands = len(store.strands)
        self._stats: dict[tuple[int, ...], TrackStats] = {}
        self._lock = threading.Lock()

    def stats(self, tracks: tuple[int, ...]) -> TrackStats:
        with self._lock:
            if tracks not in self._stats:
                self._stats[tracks] = TrackStats(
                    self.table, np.asarray(tracks), self.oracle.heads, self.n_strands
                )
            return self._stats[tracks]


@dataclass
class _TaskInputs:
    """What the prefetch thread reads once per task: rows, sampled bins, gene slots."""

    slots: dict[int, list[tuple[int, np.ndarray]]]  # local row → [(slot, exon bins)]
    n_slots: int
    bins: np.ndarray | None = None
    gene_bins: np.ndarray | None = None


def _task_inputs(ctx: _Context, task: Task) -> _TaskInputs:
    stats = ctx.stats(task.tracks)
    g0, g1 = _gene_span(ctx.store, task)
    slots: dict[int, list[tuple[int, np.ndarray]]] = {}
    if len(stats.gene_positions) and g1 > g0:
        table, ranges = ctx.store.gene_rows(task.group)
        for j, (row, start, count) in enumerate(
            zip(
                table["row"].iloc[g0:g1],
                table["range_start"].iloc[g0:g1],
                table["range_count"].iloc[g0:g1],
                strict=True,
            )
        ):
            if row >= 0:
                bins = GeneSlot.from_ranges(j, -1, ranges[start : start + count]).bins
                slots.setdefault(int(row) - task.start, []).append((j, bins))
    inputs = _TaskInputs(slots, g1 - g0)
    if task.group == "baselines" and stats.has_bins:
        span = slice(task.start, task.stop)
        inputs.bins = ctx.store.read("plan/positions/bin_index", span)
        inputs.gene_bins = ctx.store.read("plan/positions/gene_bin_index", span)
    return inputs


def _sequences(ctx: _Context, tasks: list[Task]) -> Iterator[_Batch | tuple[object, int]]:
    """Batches of one-hot windows for every usable row of every task, then an end mark."""
    L = ctx.oracle.input_length
    B = ctx.batch_size
    for ti, task in enumerate(tasks):
        inputs = _task_inputs(ctx, task)
        rows = ctx.store.plan_table(task.group).iloc[task.start : task.stop]
        pending: list[tuple[int, int, bytes, str]] = []
        usable = rows["usable"].to_numpy()
        for local, rec in enumerate(rows.itertuples(index=False)):
            if not usable[local]:
                continue
            label = f"{rec.chrom}:{rec.pos}"
            seq = ctx.genome.window(rec.chrom, int(rec.pos), L)
            pending.append((local, 0, seq, label))
            if task.group == "variants":
                i = L // 2 - 1
                alt = seq[:i] + str(rec.alt).encode() + seq[i + 1 :]
                pending.append((local, 1, alt, f"{label}{rec.ref}>{rec.alt}"))
            while len(pending) >= B:
                yield _make_batch(ti, pending[:B], inputs)
                pending = pending[B:]
        if pending:
            yield _make_batch(ti, pending, inputs)
        yield (_END, ti)


def _make_batch(ti: int, items: list[tuple[int, int, bytes, str]], inputs: _TaskInputs) -> _Batch:
    rows = np.asarray([it[0] for it in items])
    return _Batch(
        task=ti,
        rows=rows,
        allele=np.asarray([it[1] for it in items]),
        onehot=one_hot([it[2] for it in items]),
        labels=[it[3] for it in items],
        bins=None if inputs.bins is None else inputs.bins[rows],
        gene_bins=None if inputs.gene_bins is None else inputs.gene_bins[rows],
        slots=[
            GeneSlot(slot, i, bins)
            for i, row in enumerate(rows)
            for slot, bins in inputs.slots.get(int(row), [])
        ],
    )


def _background(gen: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``gen`` in a thread, ``depth`` items ahead; re-raise its exception here."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            failure.append(exc)
        finally:
            q.put(_END)

    thread = threading.Thread(target=produce, name="chorus-store-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                if failure:
                    raise failure[0]
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


class _Worker:
    """Runs ``handle(item)`` for each item put, in order, in a background thread.

    A failure stops the handling (later items are dropped) and is re-raised in the
    putting thread at its next :meth:`put` or at :meth:`close`.
    """

    def __init__(self, name: str, handle: Callable[[Any], None], depth: int = 2) -> None:
        self.handle = handle
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=f"chorus-store-{name}", daemon=True)
        self.thread.start()

    def put(self, item: Any) -> None:
        while True:
            self._raise()
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.q.put(_END)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.failure:
            raise self.failure[0]

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is _END:
                return
            if self.failure:
                continue
            try:
                self.handle(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the putting thread
                self.failure.append(exc)


def _runs(tracks: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Contiguous runs of track indices: (first position in ``tracks``, start, stop)."""
    out = []
    i = 0
    while i < len(tracks):
        j = i
        while j + 1 < len(tracks) and tracks[j + 1] == tracks[j] + 1:
            j += 1
        out.append((i, tracks[i], tracks[j] + 1))
        i = j + 1
    return out


def write_task(store: ChorusStore, task: Task, arrays: dict[str, np.ndarray]) -> None:
    """Write a finished task's records, then mark its rows done for its tracks.

    A failure (full disk, damaged shard) leaves the task unmarked: the next build redoes it.
    """
    try:
        _write_task(store, task, arrays)
    except ValueError as exc:
        if is_checksum_error(exc):
            raise as_corruption(store.url, f"{task.group} shard {task.shard}", exc) from exc
        raise
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
        raise WriteError(
            f"{store.url}: writing {task.group} shard {task.shard} failed: {reason}. That "
            f"shard was not marked done and everything written before is intact; fix it and "
            f"re-run `chorus-store build {store.url}` to resume."
        ) from exc


def _gene_span(store: ChorusStore, task: Task) -> tuple[int, int]:
    """The (row, gene) slots a task writes: those of its rows, and the shard's padding."""
    k = store.layout.gene_rows(task.group)
    table, _ = store.gene_rows(task.group)
    block = table["row"].to_numpy()[task.shard * k : (task.shard + 1) * k]
    first = int(((block >= 0) & (block < task.start)).sum())
    return task.shard * k + first, (task.shard + 1) * k


def _write_task(store: ChorusStore, task: Task, arrays: dict[str, np.ndarray]) -> None:
    r0, r1 = task.start, task.stop
    g0, g1 = _gene_span(store, task)
    for name, values in arrays.items():
        # an all-NaN unit is still stored, so "marked done" always means "its shard exists"
        # and a deleted shard is damage that verify can see (not a silent run of NaN)
        arr = store.array(f"{task.group}/{name}").with_config({"write_empty_chunks": True})
        rows = slice(g0, g1) if name.startswith("gene_") else slice(r0, r1)
        if rows.stop == rows.start:
            continue
        for i, t0, t1 in _runs(task.tracks):
            arr[rows, ..., t0:t1] = values[..., i : i + (t1 - t0)]
    done = store.array(f"{task.group}/done_rows")
    shard_len = task.shard_stop - task.shard * store.layout.shard_rows(task.group)
    for _, t0, t1 in _runs(task.tracks):
        done[task.shard, t0:t1] = shard_len


@dataclass
class _TaskState:
    """A task's records while its batches come through the model (reducer thread)."""

    task: Task
    stats: TrackStats
    buffers: dict[str, np.ndarray]
    n_slots: int
    slot_rows: dict[int, int] = field(default_factory=dict)  # slot → local row, as absorbed


def _start_task(ctx: _Context, task: Task) -> _TaskState:
    stats = ctx.stats(task.tracks)
    n, t, s = task.n_rows, len(task.tracks), ctx.n_strands
    g0, g1 = _gene_span(ctx.store, task)
    buffers: dict[str, np.ndarray]
    if task.group == "baselines":
        k = ctx.store.layout.bin_samples
        buffers = {
            "summary": np.full((n, s, t), np.nan),
            "perbin": np.full((n, s, k, t), np.nan, np.float32),
            "gene_summary": np.full((g1 - g0, t), np.nan),
        }
    else:
        buffers = {
            "ref": np.full((n, s, t), np.nan),
            "alt": np.full((n, s, t), np.nan),
            "gene_ref": np.full((g1 - g0, t), np.nan),
            "gene_alt": np.full((g1 - g0, t), np.nan),
        }
    return _TaskState(task, stats, buffers, g1 - g0)


def _absorb(
    st: _TaskState,
    batch: _Batch,
    start: int,
    index: BlockIndex,
    placed: tuple[np.ndarray, np.ndarray | None, np.ndarray],
) -> None:
    """Put one block's host records (:meth:`TrackStats.place`) into the task's buffers."""
    summaries, perbin, means = placed
    buf = st.buffers
    rows = batch.rows[start : start + index.rows]
    touched = [g.slot for g in index.slots]
    for g in index.slots:
        st.slot_rows[g.slot] = int(rows[g.batch_row])
    if st.task.group == "baselines":
        buf["summary"][rows] = summaries
        buf["gene_summary"][touched] = means
        if perbin is not None:
            buf["perbin"][rows] = perbin
        return
    allele = batch.allele[start : start + index.rows]
    ref = allele == 0
    buf["ref"][rows[ref]] = summaries[ref]
    buf["alt"][rows[~ref]] = summaries[~ref]
    for i, g in enumerate(index.slots):
        key = "gene_ref" if allele[g.batch_row] == 0 else "gene_alt"
        buf[key][g.slot] = means[i]


def _finish(ctx: _Context, st: _TaskState) -> dict[str, np.ndarray]:
    task, stats, buf = st.task, st.stats, st.buffers
    rows = ctx.store.plan_table(task.group).iloc[task.start : task.stop]
    if task.group == "baselines":
        summary = buf["summary"]
        skip = stats.summary_mask(rows["stratum"].tolist())  # CAGE routing
        summary[np.broadcast_to(skip[:, None, :], summary.shape)] = np.nan
        return {
            "summary": summary.astype(np.float32),
            "perbin": buf["perbin"],
            "gene_summary": buf["gene_summary"].astype(np.float32),
        }
    labels = [
        f"{c}:{p}{r}>{a}"
        for c, p, r, a in zip(rows["chrom"], rows["pos"], rows["ref"], rows["alt"], strict=True)
    ]
    ref, alt = ctx.oracle.effect_inputs(buf["ref"], buf["alt"], stats.track_idx)
    genes = stats.gene_positions
    effect = stats.effects(ref, alt, labels, np.setdiff1d(np.arange(stats.n), genes))
    gene_labels = [""] * st.n_slots
    for slot, local in st.slot_rows.items():
        gene_labels[slot] = labels[local]
    gene_effect = stats.effects(buf["gene_ref"], buf["gene_alt"], gene_labels, genes)
    return {
        "ref_summary": buf["ref"].astype(np.float32),
        "alt_summary": buf["alt"].astype(np.float32),
        "effect": effect.astype(np.float32),
        "gene_ref_summary": buf["gene_ref"].astype(np.float32),
        "gene_alt_summary": buf["gene_alt"].astype(np.float32),
        "gene_effect": gene_effect.astype(np.float32),
    }


@dataclass
class _Block:
    """One model block on its way to the host: records being copied, or host predictions
    whose records the reducer computes."""

    start: int
    index: BlockIndex
    copy: HostCopy | None = None
    heads: list[tuple[str, Any]] | None = None


def _predict(ctx: _Context, task: Task, batch: _Batch) -> list[_Block]:
    """Run the model on ``batch``; on an accelerator, queue its records' computation and
    their copy to the host too (nothing here waits for the device).

    An exception of the model itself (not one of ours: those already say what is wrong)
    is wrapped to name the shard and oracle."""
    stats = ctx.stats(task.tracks)
    blocks = []
    try:
        start = 0
        for m, heads in ctx.oracle.predict_blocks(batch.onehot, stats.columns):
            index = batch.block(start, m, ctx.resolutions)
            first = next(heads, None)
            if first is None:
                raise PredictionError(f"{ctx.oracle.name} returned no output heads")
            if is_accelerated(first[1]) or ctx.records_on == "device":
                records = stats.block_records(itertools.chain([first], heads), index)
                blocks.append(_Block(start, index, copy=HostCopy(records._asdict())))
            else:  # host memory: the reducer thread computes the records, off this thread
                host = [(name, as_host_view(a)) for name, a in itertools.chain([first], heads)]
                blocks.append(_Block(start, index, heads=host))
            start += m
    except ChorusStoreError:
        raise
    except Exception as exc:
        raise OracleError(
            f"the oracle {ctx.oracle.name!r} raised {type(exc).__name__}: {exc} while "
            f"predicting {task.group} shard {task.shard} (rows {task.start}-{task.stop - 1}, "
            f"first sequence {batch.labels[0]}); nothing of that shard was written. Fix the "
            f"model or its environment, then re-run `chorus-store build {ctx.store.url}` "
            f"(it resumes)."
        ) from exc
    return blocks


class _Reducer:
    """The host half, in its own thread: records of each block into its task's buffers;
    at a task's end, effects and CAGE routing, then the writer."""

    def __init__(
        self,
        ctx: _Context,
        tasks: list[Task],
        writer: _Worker,
        report: BuildReport,
        on_rows: Callable[[int], None] | None,
    ) -> None:
        self.ctx, self.tasks, self.writer, self.report = ctx, tasks, writer, report
        self.on_rows = on_rows
        self.states: dict[int, _TaskState] = {}

    def __call__(self, item: tuple[Any, ...]) -> None:
        if item[0] is _END:
            self._end(item[1])
            return
        batch, blocks = item
        st = self.states.get(batch.task) or _start_task(self.ctx, self.tasks[batch.task])
        self.states[batch.task] = st
        for b in blocks:
            if b.copy is not None:
                records = Records(**b.copy.result())
            else:
                assert b.heads is not None
                records = st.stats.block_records(b.heads, b.index)
            labels = batch.labels[b.start : b.start + b.index.rows]
            _absorb(st, batch, b.start, b.index, st.stats.place(records, b.index, labels))

    def _end(self, ti: int) -> None:
        task = self.tasks[ti]
        st = self.states.pop(ti, None) or _start_task(self.ctx, task)
        self.writer.put((task, _finish(self.ctx, st)))
        self.report.rows_built[task.group] += task.n_rows
        self.report.tasks += 1
        if self.on_rows:
            self.on_rows(task.n_rows)


def run_tasks(
    ctx: _Context,
    tasks: list[Task],
    *,
    on_rows: Callable[[int], None] | None = None,
    prefetch: int = 4,
) -> BuildReport:
    """Run ``tasks`` in this process, as a pipeline of four threads:

    prefetch (FASTA → one-hot, sampled bins) → this thread (the model; on an accelerator
    also the records, queued on the device) → reducer (records to host buffers, effects)
    → writer (store, done marks last). Each hand-off is a bounded queue, so the model
    runs batch i+1 while batch i is reduced and written, and memory holds a few batches.
    """
    report = BuildReport()
    t_start = time.perf_counter()
    # when the model's forward returns (it released the GIL: a GPU wait, a sleep), this
    # thread must get the GIL back at once; with Python's default 5 ms switch interval a
    # prefetch or writer thread in Python code can hold it that long each time
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, _SWITCH_INTERVAL_S))
    writer = _Worker("writer", lambda item: write_task(ctx.store, *item))
    reducer = _Worker("reducer", _Reducer(ctx, tasks, writer, report, on_rows))
    calls_before = ctx.oracle.calls
    try:
        try:
            for item in _background(_sequences(ctx, tasks), prefetch):
                if isinstance(item, tuple):  # end of a task
                    reducer.put(item)
                    continue
                batch: _Batch = item
                t0 = time.perf_counter()
                blocks = _predict(ctx, tasks[batch.task], batch)
                report.oracle_seconds += time.perf_counter() - t0
                report.sequences += len(batch.rows)
                reducer.put((batch, blocks))
        finally:
            reducer.close()
    finally:
        try:
            writer.close()
        finally:
            sys.setswitchinterval(switch)
            report.oracle_calls = ctx.oracle.calls - calls_before
            report.seconds = time.perf_counter() - t_start
    return report


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------


def _nothing_built(store: ChorusStore) -> bool:
    return all(not store.read(f"{g}/done_rows").any() for g in DATA_GROUPS)


def _check_oracle(
    store: ChorusStore, recipe: Recipe, facts: dict[str, Any], run_id: str | None = None
) -> None:
    """Check a loaded oracle (:func:`~chorus_store.cluster.oracle_facts`) against the
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


def _check_tracks(store: ChorusStore, recipe: Recipe) -> None:
    stored = store.tracks
    given = recipe.track_table()
    if given.sha256() == stored.sha256():
        return
    if stored.is_prefix_of(given):
        raise TrackTableMismatchError(
            f"the recipe's track table has {len(given) - len(stored)} track(s) more than "
            f"{store.url}; add them with `chorus-store add-tracks {store.url}` (only the "
            f"new tracks are computed), then build"
        )
    old, new = stored.frame, given.frame
    n = min(len(old), len(new))
    differing = [
        (i, c) for i in range(n) for c in old.columns if str(old[c].iat[i]) != str(new[c].iat[i])
    ]
    where = (
        (
            f"row {differing[0][0]} ({old['track_id'].iat[differing[0][0]]}), column "
            f"{differing[0][1]!r}"
        )
        if differing
        else f"length {len(old)} vs {len(new)}"
    )
    raise TrackTableMismatchError(
        f"the recipe's track table differs from {store.url}'s at {where}; a store holds one "
        f"track table. Build a new store for the new table."
    )


def build(
    store_path: str | Path,
    *,
    part: str = "all",
    shard: tuple[int, int] | None = None,
    workers: int = 1,
    fasta: str | Path | None = None,
    recipe: Recipe | None = None,
    weights: str | None = None,
    device: str = "auto",
    oracle: Oracle | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    client: Any = None,
    scheduler: str | None = None,
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
    client, scheduler
        Run the tasks on a dask.distributed cluster: a ``distributed.Client``, or the
        address of a scheduler (``tcp://host:8786``). Workers load the model from the
        recipe and write their shards straight to the store, which must be reachable
        from them (a shared filesystem or an object-store URL).
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
    if records_on not in ("auto", "device"):
        raise UsageError(f"records_on must be 'auto' or 'device', not {records_on!r}")
    if records_on != "auto" and (workers > 1 or client is not None or scheduler is not None):
        raise UsageError(
            "records_on is a single-process setting; cluster workers choose where the "
            "statistics run themselves (records_on='auto')"
        )
    if oracle is not None and (workers > 1 or client is not None or scheduler is not None):
        raise UsageError(
            "cluster workers load the oracle from the recipe in each process; pass either "
            "oracle= or workers=/client=/scheduler=, not both"
        )
    store = ChorusStore.open(store_path, mode="r+")
    store.validate()
    locks.clear_stale(store.location)  # a killed run's claims, finished shards' included
    stored_recipe = Recipe.from_stored(store.attrs["recipe"])
    if recipe is not None:
        _check_tracks(store, recipe)
    recipe = recipe or stored_recipe
    fasta_path = str(fasta or store.attrs["genome"]["fasta_path"])
    genome = Genome(fasta_path, assembly=store.attrs["genome"].get("assembly"))
    genome.require_same(store.attrs["genome"], what=f"the store {store.url}")
    report = BuildReport()
    t_start = time.perf_counter()
    per_model = bool(recipe.oracle.get("per_model", False))
    joint = bool(recipe.oracle.get("joint_tracks", False))
    tasks = plan_tasks(store, part=part, shard=shard, per_model=per_model, joint_tracks=joint)
    if not tasks:
        report.seconds = time.perf_counter() - t_start
        return report
    claims = store.claim(
        sorted({c for t in tasks for c in t.claims(store.layout.track_shard)}),
        command=f"chorus-store build {store.url}",
    )
    try:
        busy = locks.live_claims(
            store.location, exclude_run=claims.holder.run_id, prefix=locks.STRUCTURE
        )
        if busy:
            raise StoreLockedError(
                f"{store.url} is being restructured by {busy[0]}; build after it finishes"
            )
        # claims taken: re-read what is pending, another build may have finished some
        fresh = ChorusStore.open(store_path, mode="r+")
        fresh.reuse_tables(store)
        store = fresh
        tasks = plan_tasks(store, part=part, shard=shard, per_model=per_model, joint_tracks=joint)
        if client is None and scheduler is None and workers <= 1:
            if oracle is None:
                # the store's track table, not the recipe's files (another machine's paths)
                oracle = recipe.load_oracle(weights=weights, device=device, tracks=store.tracks)
            _check_oracle(store, recipe, oracle_facts(oracle), claims.holder.run_id)
            with _progress(progress, tasks) as advance:
                ctx = _Context(store, oracle, genome, batch_size, records_on)
                report.merge(run_tasks(ctx, tasks, on_rows=advance))
        else:
            spec = WorkerSpec(
                store=store.url,
                recipe=recipe.to_dict(),
                fasta=fasta_path,
                weights=weights,
                device=device,
                batch_size=batch_size,
                run_id=claims.holder.run_id,
                assembly=store.attrs["genome"].get("assembly"),
                tracks_sha256=store.tracks.sha256(),
            )
            cluster = (
                contextlib.nullcontext(client)
                if client is not None
                else open_client(scheduler, workers)
            )
            with cluster as cl:
                _check_oracle(store, recipe, probe_on_cluster(cl, spec), claims.holder.run_id)
                spec = dataclasses.replace(spec, fingerprint=store.attrs["oracle"]["fingerprint"])
                link = dashboard_link(cl)
                if progress and link:
                    _console().print(f"dask dashboard: {link}", highlight=False)
                with _progress(progress, tasks) as advance:
                    for part_report in run_on_cluster(cl, spec, tasks, advance):
                        report.merge(part_report)
    finally:
        claims.release()
    report.seconds = time.perf_counter() - t_start
    return report


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class _progress:
    """A rich progress bar (rows, rows/s, ETA), or nothing."""

    def __init__(self, enabled: bool, tasks: list[Task]) -> None:
        self.enabled = enabled
        self.total = sum(t.n_rows for t in tasks)
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]build[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.bar.start()
        task_id = self.bar.add_task("build", total=self.total)
        return lambda n: self.bar.advance(task_id, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
