"""The reduce: exact per-track CDF grids of every stored value, with Dask, out of core.

For each layer (effect, summary, perbin) and each block of ``tracks_per_chunk`` tracks, one
Dask task reads the block's column of the store (all rows, only those tracks, a few
chunks at a time into track-major order), sorts each track's non-NaN values in place
and takes chorus's grid (spec §5.4): evenly spaced order statistics at
``linspace(0, n-1, P, dtype=int)`` when ``n >= P``, ``np.interp`` onto the full width
when ``n < P``, never padded, an all-zero row for an empty track. Nothing is sampled or
thinned: every grid is an exact function of the stored values.

Each block's result is written with a fingerprint of its inputs (plan, track rows, oracle,
genome, grid rules); a re-run recomputes only blocks whose fingerprint is stale, so an
interrupted reduce resumes and adding tracks or rows recomputes only what they touch.
Peak memory is about one block (``rows × bin_samples × tracks_per_chunk`` values) per Dask
worker thread, whatever the number of tracks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.callbacks import Callback

from chorus_store.errors import CorruptChunkError, IncompleteStageError, UsageError
from chorus_store.progress_log import Meter, rate
from chorus_store.reports import ReduceReport
from chorus_store.scheduler import Scheduler, dashboard_link, is_client, local_or_client
from chorus_store.scheduler import check as check_scheduler
from chorus_store.store import claims as locks
from chorus_store.store.base import as_corruption, is_checksum_error
from chorus_store.store.core import DATA_GROUPS, LAYERS, ChorusStore
from chorus_store.store.integrity import block_inputs, missing_shards
from chorus_store.store.progress import require_complete
from chorus_store.store.schema import layer_sources, schema

__all__ = [
    "GRID_RULES",
    "grid_row",
    "grid_block",
    "grid_columns",
    "read_columns",
    "reduce",
    "layer_fingerprints",
    "active_layers",
    "require_reduced",
    "summary_line",
]

log = logging.getLogger(__name__)

#: Version tag of the grid rules; part of every block fingerprint.
GRID_RULES = "chorus-spec-5.4/exact/v1"
#: rows per tile of the chunk-by-chunk transpose in :func:`read_columns` (a tile of 64
#: tracks is 256 kB: it stays in a core's L2 cache while it is read and scattered)
_TILE_ROWS = 1024
#: bytes of one read in :func:`read_columns` (a whole chunk at least)
_READ_BYTES = 16 * 2**20


def grid_row(sorted_values: np.ndarray, n_points: int = 10_000) -> np.ndarray:
    """chorus's grid of one track's sorted values (float64 in, float64 out).

    >>> grid_row(np.array([1.0, 2.0, 3.0]), 5).tolist()
    [1.0, 1.6666666666666667, 2.3333333333333335, 3.0, 3.0]
    """
    n = len(sorted_values)
    if n == 0:
        return np.zeros(n_points)
    if n >= n_points:
        picked: np.ndarray = sorted_values[np.linspace(0, n - 1, n_points, dtype=int)]
        return picked
    grid = np.linspace(0, 1, n_points)
    interpolated: np.ndarray = np.interp(grid, np.arange(n) / n, sorted_values)
    return interpolated


def grid_block(
    values: np.ndarray, absolute: np.ndarray, n_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Grids and offered counts of a ``(rows, tracks)`` block; NaN = not sampled.

    ``absolute[j]`` ranks ``|value|`` (unsigned layers' effects).
    """
    return grid_columns(np.array(values.T, dtype=np.float32, order="C"), absolute, n_points)


def grid_columns(
    columns: np.ndarray, absolute: np.ndarray, n_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`grid_block` of a C-contiguous ``(tracks, rows)`` float32 block, which is
    sorted in place (the reduce hands it over; it is not read afterwards).

    The same bytes as :func:`grid_row` of each track's sorted non-NaN values: the sort
    sees exactly the values, in the order, that the one-track path gives it (so even
    the order of ``-0.0`` and ``0.0``, which compare equal, is the same), and for
    ``n >= n_points`` the order statistics are taken from the float32 values, which
    the float64 path only widens and narrows back.
    """
    grids = np.zeros((columns.shape[0], n_points), dtype=np.float32)
    offered = np.zeros(columns.shape[0], dtype=np.int64)
    picks: dict[int, np.ndarray] = {}
    for j, col in enumerate(columns):
        # most tracks have no unsampled rows: then the column itself is sorted, no copy
        v = col[~np.isnan(col)] if np.isnan(col).any() else col
        if absolute[j]:
            np.abs(v, out=v)
        v.sort()
        n = len(v)
        offered[j] = n
        if n >= n_points:
            if n not in picks:
                picks[n] = np.linspace(0, n - 1, n_points, dtype=int)
            grids[j] = v[picks[n]]
        else:
            grids[j] = grid_row(v.astype(np.float64), n_points)
    return grids, offered


def read_columns(store: ChorusStore, sources: list[str], t0: int, t1: int) -> np.ndarray:
    """Tracks ``t0:t1`` of every value of ``sources`` (rows concatenated), as a C-contiguous
    ``(tracks, rows)`` float32 block.

    Stored chunks hold rows × tracks with the track fastest; a sort needs each track's
    values contiguous. Transposing a few chunks at a time, in tiles of :data:`_TILE_ROWS`
    rows, is several times faster than one transpose of the whole block, and keeps one
    block (not two) in memory.
    """
    arrays = [store.array(name) for name in sources]
    n_rows = sum(math.prod(a.shape[:-1]) for a in arrays)
    out = np.empty((t1 - t0, n_rows), dtype=np.float32)
    at = 0
    for name, arr in zip(sources, arrays, strict=True):
        # several stored chunks per read (zarr's fixed cost per call is milliseconds, a
        # summary chunk of 64 tracks holds 64 kB), about _READ_BYTES at a time
        chunk_rows = max(1, arr.chunks[0])
        row_bytes = 4 * (t1 - t0) * math.prod(arr.shape[1:-1])
        step = chunk_rows * max(1, _READ_BYTES // max(1, chunk_rows * row_bytes))
        for r0 in range(0, arr.shape[0], step):
            try:
                piece: np.ndarray = np.asarray(arr[r0 : r0 + step, ..., t0:t1])
            except ValueError as exc:
                if is_checksum_error(exc):
                    raise as_corruption(store.url, name, exc) from exc
                raise
            flat = piece.reshape(-1, t1 - t0)
            for a in range(0, len(flat), _TILE_ROWS):
                tile = flat[a : a + _TILE_ROWS]
                out[:, at : at + len(tile)] = tile.T
                at += len(tile)
    return out


def active_layers(store: ChorusStore) -> tuple[str, ...]:
    """Layers this store's oracle has: no per-bin null for scalar-output oracles."""
    binned = bool(store.resolutions)
    return LAYERS if binned else tuple(x for x in LAYERS if x != "perbin")


def layer_fingerprints(store: ChorusStore, layer: str) -> list[str]:
    """The fingerprint each track block of ``layer`` must carry to be current."""
    sources = layer_sources(layer)
    plan_key = f"{schema().layer_group(layer).plan_name}_sha256"
    common = {
        "layer": layer,
        "rules": GRID_RULES,
        "n_points": store.layout.n_points,
        "shapes": {src: list(store.array(src).shape[:-1]) for src in sources},
        "plan": store.attrs["plan"][plan_key],
        "oracle": store.attrs["oracle"].get("fingerprint"),
        "genome": store.attrs["genome"]["fai_sha256"],
    }
    tracks = store.tracks
    chunk = store.layout.tracks_per_chunk
    data = block_inputs(store, sources)  # the stored values themselves, not only the plan
    out = []
    for b, t0 in enumerate(range(0, len(tracks), chunk)):
        t1 = min(t0 + chunk, len(tracks))
        doc = {**common, "tracks": tracks.sha256(t0, t1), "block": [t0, t1], "data": data[b]}
        out.append(hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest())
    return out


def stale_blocks(store: ChorusStore, layer: str, want: list[str] | None = None) -> list[int]:
    """Blocks of ``layer`` whose stored fingerprint is not ``want`` (default: computed)."""
    want = layer_fingerprints(store, layer) if want is None else want
    have = [str(x) for x in np.asarray(store.array(f"reductions/{layer}/fingerprint")[:]).tolist()]
    return [b for b, fp in enumerate(want) if b >= len(have) or have[b] != fp]


def require_reduced(store: ChorusStore) -> None:
    stale = {layer: len(stale_blocks(store, layer)) for layer in active_layers(store)}
    stale = {k: v for k, v in stale.items() if v}
    if stale:
        what = ", ".join(f"{k} {v} block(s)" for k, v in stale.items())
        raise IncompleteStageError(
            f"{store.url}: reductions are missing or out of date ({what}). Run "
            f"`chorus-store reduce {store.url}`."
        )


def require_shards(store: ChorusStore) -> None:
    """Refuse to rank the fill value of a shard its done marks say is written (a deleted
    or emptied object reads back as NaN, "not sampled", without any error)."""
    done = {g.name: store.read(g.done) for g in DATA_GROUPS}
    missing = missing_shards(store, done)
    if missing:
        unit, why = missing[0]
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CorruptChunkError(
            f"{store.url}: {unit.describe()} is marked built but its object {unit.key} is "
            f"{why}{more}. Run `chorus-store verify {store.url} --repair` (it marks them for "
            f"rebuilding), then `chorus-store build {store.url}` and reduce again."
        )


@functools.lru_cache(maxsize=2)
def _open_for_tasks(store_path: str, run: str) -> ChorusStore:
    """One open store per worker process and reduce run (``run``), not one per block."""
    return ChorusStore.open(store_path, mode="r+")


def _write_block(
    store_path: str,
    run: str,
    layer: str,
    block: int,
    t0: int,
    t1: int,
    absolute: np.ndarray,
    fingerprint: str,
) -> int:
    store = _open_for_tasks(store_path, run)
    # the task reads its own block: one chunk at a time, straight into track-major order
    columns = read_columns(store, layer_sources(layer), t0, t1)
    grids, offered = grid_columns(columns, absolute, store.layout.n_points)
    del columns
    store.array(f"reductions/{layer}/grid")[t0:t1] = grids
    store.array(f"reductions/{layer}/offered")[t0:t1] = offered
    store.array(f"reductions/{layer}/retained")[t0:t1] = offered  # exact: every value kept
    store.array(f"reductions/{layer}/fingerprint")[block] = fingerprint  # written last
    return int(offered.sum())


def reduce(
    store_path: str | Path,
    *,
    layers: tuple[str, ...] | None = None,
    scheduler: Scheduler = None,
    workers: int | None = None,
    progress: bool = True,
) -> ReduceReport:
    """Compute every stale grid of ``store_path`` (resumable).

    Parameters
    ----------
    layers
        Subset of ``("effect", "summary", "perbin")``; default all the oracle has.
    scheduler
        Where the block tasks run: one of dask's local schedulers (``"threads"``, the
        default, ``"processes"``, ``"sync"``), the address of a dask.distributed
        scheduler (``"tcp://host:8786"``) or a ``distributed.Client``; the same argument
        as :func:`~chorus_store.build`'s.
    workers
        Threads/processes for the local schedulers (default: Dask's).

    Returns
    -------
    ReduceReport
        Blocks recomputed per layer, values read, seconds.
    """
    check_scheduler(scheduler, stage="reduce", local_ok=True)
    t_start = time.perf_counter()
    store = ChorusStore.open(store_path, mode="r+")
    store.validate()
    require_complete(store)
    require_shards(store)
    layers = _chosen_layers(store, layers)
    report = ReduceReport()
    with store.claim(["reduce"], command=f"chorus-store reduce {store.url}"):
        busy = locks.live_claims(store.location, prefix=locks.STRUCTURE)
        if busy:
            raise IncompleteStageError(f"{store.url} is being restructured by {busy[0]}")
        tasks = _block_tasks(store, layers, report)
        log.info(
            "reduce %s: %d of %d block(s) stale (%s), %d track(s), %d per block",
            store.url,
            len(tasks),
            report.blocks_total,
            ", ".join(f"{k} {v}" for k, v in report.blocks_computed.items()),
            len(store.tracks),
            store.layout.tracks_per_chunk,
        )
        if tasks:
            with local_or_client(scheduler) as target:
                counts = _compute(store, tasks, target, workers, progress)
            report.values_reduced = int(sum(counts))
    report.seconds = time.perf_counter() - t_start
    log.info(summary_line(report, store.url))
    return report


def summary_line(report: ReduceReport, store: str) -> str:
    """The line that sums up a reduce: blocks, values, time, rate, what was written (the
    reduce logs it, the CLI prints it)."""
    blocks = sum(report.blocks_computed.values())
    if not blocks:
        return f"nothing to reduce in {store}: all {report.blocks_total} block(s) are current"
    per_layer = ", ".join(f"{k} {v}" for k, v in report.blocks_computed.items() if v)
    return (
        f"reduced {report.values_reduced:,} values in {blocks} of {report.blocks_total} "
        f"block(s) ({per_layer}), {report.seconds:.1f} s, "
        f"{rate(report.values_reduced, report.seconds):,.0f} values/s; wrote {blocks} "
        f"grid block(s) to {store}"
    )


def _chosen_layers(store: ChorusStore, layers: tuple[str, ...] | None) -> tuple[str, ...]:
    unknown = sorted(set(layers or ()) - set(active_layers(store)))
    if unknown:
        raise UsageError(
            f"{store.url} has no layer {', '.join(map(repr, unknown))} to reduce; --layers "
            f"takes a comma list of {','.join(active_layers(store))}"
        )
    return layers or active_layers(store)


def _block_tasks(store: ChorusStore, layers: tuple[str, ...], report: ReduceReport) -> list[Any]:
    """One delayed task per stale block of each layer (counted in ``report``)."""
    tracks = store.tracks
    signed = tracks.signed
    chunk = store.layout.tracks_per_chunk
    tasks = []
    run = uuid.uuid4().hex
    for layer in layers:
        want = layer_fingerprints(store, layer)
        stale = stale_blocks(store, layer, want)  # one shard-index pass, not two
        report.blocks_total += len(want)
        report.blocks_computed[layer] = len(stale)
        absolute = ~signed if layer == "effect" else np.zeros(len(tracks), bool)
        for b in stale:
            t0, t1 = b * chunk, min((b + 1) * chunk, len(tracks))
            task = dask.delayed(_write_block)(
                store.url, run, layer, b, t0, t1, absolute[t0:t1], want[b]
            )
            tasks.append(task)
    return tasks


def _compute(
    store: ChorusStore, tasks: list[Any], target: Any, workers: int | None, progress: bool
) -> tuple[int, ...]:
    """Run the block tasks on ``target`` (a local scheduler's name or a client), counting
    finished blocks on one :class:`~chorus_store.progress_log.Meter`."""
    try:
        with Meter("reduce", len(tasks), unit="blocks", show=progress) as meter:
            if is_client(target):
                return _compute_on_cluster(target, tasks, meter, progress)
            kwargs = {} if workers is None else {"num_workers": workers}
            with _BlocksDone({t.key for t in tasks}, meter):
                return tuple(dask.compute(*tasks, scheduler=target, **kwargs))
    except ValueError as exc:
        if is_checksum_error(exc):
            raise as_corruption(store.url, "a reduced layer's source", exc) from exc
        raise


class _BlocksDone(Callback):
    """A dask callback (local schedulers) advancing ``meter`` as each block task ends."""

    def __init__(self, keys: set[Any], meter: Meter) -> None:
        super().__init__()
        self.keys, self.meter = keys, meter

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in self.keys:
            self.meter.advance()


def _compute_on_cluster(
    client: Any, tasks: list[Any], meter: Meter, progress: bool
) -> tuple[int, ...]:
    """The block tasks as futures on a dask.distributed cluster, counted as they finish;
    an interrupt or a failure cancels those still running."""
    from distributed import as_completed

    link = dashboard_link(client)
    if link:
        log.info("reduce: dask dashboard %s", link)
    if progress and link:
        _console().print(f"dask dashboard: {link}", highlight=False)
    futures = client.compute(tasks)
    try:
        for future in as_completed(futures):
            future.result()  # raises the block's error here
            meter.advance()
        return tuple(int(f.result()) for f in futures)
    finally:
        client.cancel([f for f in futures if not f.done()])


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
