"""Running build tasks in one process: prefetch → oracle → records → writer.

Rows are read from the FASTA and one-hot encoded in a background thread, run through the
oracle in fixed-size batches, reduced to records (:mod:`chorus_store.build.records`) where
the predictions are, and handed to a writer thread (:func:`~chorus_store.build.tasks.write_task`).
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chorus_store.arrays import HostCopy, as_host_view, is_accelerated
from chorus_store.build.records import BlockIndex, GeneSlot, Records, TrackStats
from chorus_store.build.tasks import Task, gene_span, write_task
from chorus_store.errors import ChorusStoreError, OracleError, PredictionError, UsageError
from chorus_store.genome.fasta import Genome, one_hot
from chorus_store.oracles.base import Oracle
from chorus_store.reports import BuildReport
from chorus_store.store.core import ChorusStore

__all__ = ["RunContext", "run_tasks"]


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


class RunContext:
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


def _task_inputs(ctx: RunContext, task: Task) -> _TaskInputs:
    stats = ctx.stats(task.tracks)
    g0, g1 = gene_span(ctx.store, task)
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
    if task.group.bin_record is not None and stats.has_bins:
        span = slice(task.start, task.stop)
        inputs.bins = ctx.store.read("plan/positions/bin_index", span)
        inputs.gene_bins = ctx.store.read("plan/positions/gene_bin_index", span)
    return inputs


def _sequences(ctx: RunContext, tasks: list[Task]) -> Iterator[_Batch | tuple[object, int]]:
    """Batches of one-hot windows for every usable row of every task, then an end mark."""
    L = ctx.oracle.input_length
    B = ctx.batch_size
    for ti, task in enumerate(tasks):
        inputs = _task_inputs(ctx, task)
        rows = ctx.store.plan_table(task.group).iloc[task.start : task.stop]
        pending: list[tuple[int, int, bytes, str]] = []
        usable = rows["usable"].to_numpy()
        labels = row_labels(rows, alleles=task.group.has_alleles)
        for local, rec in enumerate(rows.itertuples(index=False)):
            if not usable[local]:
                continue
            seq = ctx.genome.window(rec.chrom, int(rec.pos), L)
            pending.append((local, 0, seq, labels[local]))
            if task.group.has_alleles:
                i = L // 2 - 1
                alt = seq[:i] + str(rec.alt).encode() + seq[i + 1 :]
                pending.append((local, 1, alt, labels[local]))
            while len(pending) >= B:
                yield _make_batch(ti, pending[:B], inputs)
                pending = pending[B:]
        if pending:
            yield _make_batch(ti, pending, inputs)
        yield (_END, ti)


def row_labels(rows: pd.DataFrame, *, alleles: bool) -> list[str]:
    """How errors name plan rows: ``chrom:pos``, and ``chrom:posREF>ALT`` for a SNP."""
    where = rows["chrom"].astype(str) + ":" + rows["pos"].astype(str)
    if alleles:
        where = where + rows["ref"].astype(str) + ">" + rows["alt"].astype(str)
    return [str(label) for label in where]


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
                if not _put_unless(q, item, stop):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            failure.append(exc)
        finally:
            q.put(_END)

    thread = threading.Thread(target=produce, name="chorus-store-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not _END:
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        _drain(q, thread)


def _put_unless(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` once there is room, unless ``stop`` is set first (then False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue[Any], thread: threading.Thread) -> None:
    """Empty ``q`` until its producer ``thread`` has ended (it may be blocked on a put)."""
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


@dataclass
class _TaskState:
    """A task's records while its batches come through the model (reducer thread)."""

    task: Task
    stats: TrackStats
    buffers: dict[str, np.ndarray]
    n_slots: int
    slot_rows: dict[int, int] = field(default_factory=dict)  # slot → local row, as absorbed


def _start_task(ctx: RunContext, task: Task) -> _TaskState:
    """Buffers named as the records they become (``summary``, ``gene_ref_summary``, ...),
    NaN until absorbed; float64 but for the per-bin record (rounded once, at the end)."""
    stats = ctx.stats(task.tracks)
    g0, g1 = gene_span(ctx.store, task)
    group = task.group
    lengths = {
        group.row_dim: task.n_rows,
        group.gene_dim: g1 - g0,
        "strand": ctx.n_strands,
        "bin_sample": ctx.store.layout.bin_samples,
        "track": len(task.tracks),
    }
    buffers = {
        spec.name: np.full(
            tuple(lengths[d] for d in spec.dims),
            np.nan,
            np.float32 if spec is group.bin_record else np.float64,
        )
        for spec in group.buffered
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
    for g in index.slots:
        st.slot_rows[g.slot] = int(rows[g.batch_row])
    group = st.task.group
    pairs = group.summaries  # per allele: (summary record, its gene twin)
    allele = batch.allele[start : start + index.rows]
    if len(pairs) == 1:
        buf[pairs[0][0].name][rows] = summaries
    else:
        for a, (record, _) in enumerate(pairs):
            mine = allele == a
            buf[record.name][rows[mine]] = summaries[mine]
    for i, g in enumerate(index.slots):
        buf[pairs[allele[g.batch_row]][1].name][g.slot] = means[i]
    if perbin is not None and group.bin_record is not None:
        buf[group.bin_record.name][rows] = perbin


def _finish(ctx: RunContext, st: _TaskState) -> dict[str, np.ndarray]:
    task, stats, buf = st.task, st.stats, st.buffers
    rows = ctx.store.plan_table(task.group).iloc[task.start : task.stop]
    out = {name: values.astype(np.float32, copy=False) for name, values in buf.items()}
    if not task.group.has_alleles:
        summary = out["summary"]
        skip = stats.summary_mask(rows["stratum"].tolist())  # CAGE routing
        summary[np.broadcast_to(skip[:, None, :], summary.shape)] = np.nan
        return out
    labels = row_labels(rows, alleles=True)
    ref, alt = ctx.oracle.effect_inputs(buf["ref_summary"], buf["alt_summary"], stats.track_idx)
    genes = stats.gene_positions
    effect = stats.effects(ref, alt, labels, np.setdiff1d(np.arange(stats.n), genes))
    gene_labels = [""] * st.n_slots
    for slot, local in st.slot_rows.items():
        gene_labels[slot] = labels[local]
    gene_effect = stats.effects(
        buf["gene_ref_summary"], buf["gene_alt_summary"], gene_labels, genes
    )
    return {
        **out,
        "effect": effect.astype(np.float32),
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


def _predict(ctx: RunContext, task: Task, batch: _Batch) -> list[_Block]:
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
            f"predicting {task.group.name} shard {task.shard} (rows {task.start}-{task.stop - 1}, "
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
        ctx: RunContext,
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
        self.report.rows_built[task.group.name] += task.n_rows
        self.report.tasks += 1
        if self.on_rows:
            self.on_rows(task.n_rows)


def run_tasks(
    ctx: RunContext,
    tasks: list[Task],
    *,
    on_rows: Callable[[int], None] | None = None,
    on_oracle: Callable[[float], None] | None = None,
    prefetch: int = 4,
) -> BuildReport:
    """Run ``tasks`` in this process, as a pipeline of four threads:

    prefetch (FASTA → one-hot, sampled bins) → this thread (the model; on an accelerator
    also the records, queued on the device) → reducer (records to host buffers, effects)
    → writer (store, done marks last). Each hand-off is a bounded queue, so the model
    runs batch i+1 while batch i is reduced and written, and memory holds a few batches.
    ``on_rows(n)`` is called as each task's rows are finished, ``on_oracle(seconds)``
    after each forward pass (a progress meter's oracle share).
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
                forward_s = time.perf_counter() - t0
                report.oracle_seconds += forward_s
                if on_oracle is not None:
                    on_oracle(forward_s)
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
