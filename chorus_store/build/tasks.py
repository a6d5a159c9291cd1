"""Build tasks: what is pending in a store, and writing one finished task.

A task is one row shard of a data group and the tracks of it still pending. Its records
are written first and its ``done_rows`` marks last, so a killed build leaves every
finished task readable and every unfinished one pending.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import numpy as np

from chorus_store.errors import UsageError, WriteError
from chorus_store.store.base import as_corruption, is_checksum_error
from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.store.schema import DataGroup

__all__ = ["Task", "plan_tasks", "write_task", "gene_span"]


@dataclass(frozen=True)
class Task:
    """Rows ``start:stop`` of row shard ``shard`` of ``group``, for the ``tracks`` pending."""

    group: DataGroup
    shard: int
    start: int
    stop: int
    shard_stop: int
    tracks: tuple[int, ...]

    def claims(self, tracks_per_shard: int) -> list[str]:
        shards = sorted({t // tracks_per_shard for t in self.tracks})
        return [f"build/{self.group.name}/s{self.shard:06d}-t{ts:04d}" for ts in shards]

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


# --------------------------------------------------------------------------------------
# what is pending
# --------------------------------------------------------------------------------------


def _selected_groups(part: str) -> tuple[DataGroup, ...]:
    if part == "all":
        return DATA_GROUPS
    chosen = tuple(g for g in DATA_GROUPS if g.name == part)
    if chosen:
        return chosen
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
        done = store.read(group.done)
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
                    pending[pending // store.layout.tracks_per_shard == ts]
                    for ts in np.unique(pending // store.layout.tracks_per_shard)
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
        tasks.sort(
            key=lambda t: (min(t.tracks) // store.layout.tracks_per_shard, t.group.name, t.shard)
        )
    return tasks


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
            raise as_corruption(store.url, f"{task.group.name} shard {task.shard}", exc) from exc
        raise
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
        raise WriteError(
            f"{store.url}: writing {task.group.name} shard {task.shard} failed: {reason}. That "
            f"shard was not marked done and everything written before is intact; fix it and "
            f"re-run `chorus-store build {store.url}` to resume."
        ) from exc


def gene_span(store: ChorusStore, task: Task) -> tuple[int, int]:
    """The (row, gene) slots a task writes: those of its rows, and the shard's padding."""
    k = store.layout.gene_rows(task.group)
    table, _ = store.gene_rows(task.group)
    block = table["row"].to_numpy()[task.shard * k : (task.shard + 1) * k]
    first = int(((block >= 0) & (block < task.start)).sum())
    return task.shard * k + first, (task.shard + 1) * k


def _write_task(store: ChorusStore, task: Task, arrays: dict[str, np.ndarray]) -> None:
    r0, r1 = task.start, task.stop
    g0, g1 = gene_span(store, task)
    gene_records = {spec.name for spec in task.group.gene_rows}
    for name, values in arrays.items():
        # an all-NaN unit is still stored, so "marked done" always means "its shard exists"
        # and a deleted shard is damage that verify can see (not a silent run of NaN)
        arr = store.array(f"{task.group.name}/{name}").with_config({"write_empty_chunks": True})
        rows = slice(g0, g1) if name in gene_records else slice(r0, r1)
        if rows.stop == rows.start:
            continue
        for i, t0, t1 in _runs(task.tracks):
            arr[rows, ..., t0:t1] = values[..., i : i + (t1 - t0)]
    done = store.array(task.group.done)
    shard_len = task.shard_stop - task.shard * store.layout.shard_rows(task.group)
    for _, t0, t1 in _runs(task.tracks):
        done[task.shard, t0:t1] = shard_len
