"""What a store's objects must be: the data shards its done marks promise, and their identity.

Used by ``verify`` (to find damage), the reduce (to refuse missing data and to fingerprint
the data under each block) and ``status``. See docs/design-notes.md, "verify and repair".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.store.schema import DataGroup, schema
from chorus_store.store.tables import as_data_group

__all__ = ["Unit", "data_arrays", "units", "shard_objects", "missing_shards", "block_inputs"]


@dataclass(frozen=True)
class Unit:
    """One stored shard of a data array: row shard ``shard`` × track shard ``track_shard``."""

    array: str  # "baselines/summary"
    shard: int
    track_shard: int
    key: str  # the object holding it, "baselines/summary/c/2/0/0"

    def describe(self) -> str:
        return f"{self.array} shard {self.shard} track-shard {self.track_shard}"


def data_arrays(group: DataGroup | str) -> list[str]:
    """The record arrays of a data group (per row and per (row, gene))."""
    return [spec.key for spec in as_data_group(group).records]


def chunk_key(arr: zarr.Array[Any], coords: tuple[int, ...]) -> str:
    """The object key of the stored chunk (the shard, for a sharded array) at ``coords``."""
    return f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"


def index_bytes(arr: zarr.Array[Any]) -> int:
    """Length of a shard's index (16 bytes per inner chunk + its CRC32C), at its end."""
    shards = arr.shards or arr.chunks
    return 16 * math.prod(s // c for s, c in zip(shards, arr.chunks, strict=True)) + 4


def units(store: ChorusStore, group: DataGroup) -> Iterator[Unit]:
    """Every (array, row shard, track shard) unit of ``group`` that holds rows."""
    # from the array shapes, not the tables: verify runs this on a store whose plan or
    # track table may be damaged
    sizes = store.sizes
    ts_count = math.ceil(sizes["track"] / store.layout.tracks_per_shard)
    n_shards = sizes[group.shard_dim]
    for name in data_arrays(group):
        arr = store.array(name)
        if arr.shape[0] == 0:
            continue  # no (row, gene) slots in this store
        middle = (0,) * (arr.ndim - 2)
        for s in range(n_shards):
            for ts in range(ts_count):
                yield Unit(name, s, ts, chunk_key(arr, (s, *middle, ts)))


def shard_objects(store: ChorusStore, name: str) -> dict[str, int]:
    """``{key: size}`` of every stored shard of array ``name`` (one listing)."""
    return dict(store.location.list(f"{name}/c/"))


def built_units(store: ChorusStore, group: DataGroup, done: np.ndarray) -> Iterator[Unit]:
    """Units of ``group`` that its done marks ``(row shard, track)`` say are written."""
    lay = store.layout
    for unit in units(store, group):
        marks = done[unit.shard, unit.track_shard * lay.tracks_per_shard :][: lay.tracks_per_shard]
        if marks.size and int(marks.max()) > 0:
            yield unit


def missing_shards(store: ChorusStore, done: dict[str, np.ndarray]) -> list[tuple[Unit, str]]:
    """Units marked built whose shard is absent or too short to hold its index.

    ``done`` maps each data group to its ``done_rows``. A zarr shard read from an empty or
    absent object decodes as all fill value (NaN = "not sampled") without any error, so
    this is checked on the listing, not by reading.
    """
    out = []
    for group in DATA_GROUPS:
        sizes: dict[str, dict[str, int]] = {}
        for unit in built_units(store, group, done[group.name]):
            if unit.array not in sizes:
                sizes[unit.array] = shard_objects(store, unit.array)
            size = sizes[unit.array].get(unit.key)
            if size is None:
                out.append((unit, "missing"))
            elif size < index_bytes(store.array(unit.array)):
                out.append((unit, f"{size}-byte object"))
    return out


def block_inputs(store: ChorusStore, sources: list[str]) -> list[str]:
    """Per track block: a digest of the stored data under it, for the reduce fingerprint.

    It covers the done marks of the block's tracks and, for every shard of the block's
    track shard, the stored object's size and index bytes (each inner chunk's offset and
    compressed length, and the index's CRC32C): one listing per array and one small ranged
    read per shard, so it stays cheap at Enformer scale (~1,000 shards) while any rebuilt,
    deleted or rewritten shard changes it. It depends only on stored bytes, which are a
    function of the stored values, so it is the same whatever the interruptions or the
    number of workers.
    """
    lay = store.layout
    n_tracks = store.sizes["track"]
    group = schema().data_group(sources[0].split("/")[0])
    done = store.read(group.done)
    tails: dict[str, bytes] = {}
    listed: list[tuple[str, int, int]] = []
    for name in sources:
        n = index_bytes(store.array(name))
        listed += [(key, size, n) for key, size in shard_objects(store, name).items()]
    with ThreadPoolExecutor(8) as pool:  # object stores: overlap the small reads
        for (key, size, _), tail in zip(
            listed, pool.map(lambda x: store.location.get_tail(*x), listed), strict=True
        ):
            tails[key] = f"{size}:".encode() + (tail or b"")
    units_by_ts: dict[int, list[str]] = {}
    for name in sources:
        arr = store.array(name)
        if arr.shape[0] == 0:
            continue
        middle = (0,) * (arr.ndim - 2)
        n_shards = math.ceil(arr.shape[0] / (arr.shards or arr.chunks)[0])
        for ts in range(math.ceil(n_tracks / lay.tracks_per_shard)):
            units_by_ts.setdefault(ts, []).extend(
                chunk_key(arr, (s, *middle, ts)) for s in range(n_shards)
            )
    out = []
    for t0 in range(0, n_tracks, lay.tracks_per_chunk):
        t1 = min(t0 + lay.tracks_per_chunk, n_tracks)
        h = hashlib.sha256(np.ascontiguousarray(done[:, t0:t1], dtype="<i8").tobytes())
        for key in units_by_ts.get(t0 // lay.tracks_per_shard, []):
            h.update(key.encode() + b"=" + tails.get(key, b"absent") + b";")
        out.append(h.hexdigest())
    return out
