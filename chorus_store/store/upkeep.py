"""Upkeep that changes a store: repair what :func:`~chorus_store.verify` found damaged,
and clear the claims of dead runs (:func:`unlock`).

Finding damage is read-only and lives with the status (:mod:`chorus_store.inspect.status`);
this module only mends, from a :class:`Damage` it is handed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chorus_store.store import claims as locks
from chorus_store.store.base import locks_error
from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.store.integrity import chunk_key
from chorus_store.store.location import Location
from chorus_store.store.schema import schema

__all__ = ["Damage", "repair", "repair_claims", "restore_documents", "unlock"]

#: (chunk coords, store key) of one unreadable chunk or shard
BadChunk = tuple[tuple[int, ...], str]


@dataclass
class Damage:
    """What a verify found that a repair can mend, by store key."""

    #: per data group, the unreadable ``done_rows`` chunks (coords are (shard, track shard))
    marks: dict[str, list[BadChunk]] = field(default_factory=dict)
    #: (array, shard, track shard) → key of each damaged or missing data shard
    units: dict[tuple[str, int, int], str] = field(default_factory=dict)
    #: (layer, block) of every reduction block to recompute
    stale: set[tuple[str, int]] = field(default_factory=set)
    #: keys of unreadable reduction chunks and derived-array chunks, to delete
    keys: list[str] = field(default_factory=list)
    #: derived arrays (coordinate copies, quantiles) to rewrite from their sources
    derived: list[str] = field(default_factory=list)
    #: whether metadata documents were restored while checking
    documents: bool = False


def repair_claims(loc: Location) -> locks.LockSet:
    """The claims a repair needs: the whole store's shape (refused while any build holds a
    shard) and the reduce's (it rewrites done marks, shards and reduction fingerprints)."""
    command = f"chorus-store verify {loc.url} --repair"
    held = locks.acquire(loc, [locks.STRUCTURE, "reduce"], store=loc.url, command=command)
    busy = locks.live_claims(loc, exclude_run=held.holder.run_id, prefix="build/")
    if busy:
        held.release()
        raise locks_error(loc.url, busy, command)
    return held


def restore_documents(
    loc: Location, docs: dict[str, dict[str, Any]], *, consolidate: bool
) -> ChorusStore:
    """Write metadata documents back (``zarr.json`` keys → their restored content) and
    open the store for the repair (``r+``), its metadata consolidated anew where
    ``consolidate`` (some document was damaged)."""
    for key, doc in docs.items():
        loc.put(key, json.dumps(doc, indent=2).encode())
    store = ChorusStore.open(loc.url, mode="r+")
    if consolidate:
        # a restored root copy may hold older consolidated metadata than the documents
        store.consolidate()
        store = ChorusStore.open(loc.url, mode="r+")
    return store


def repair(store: ChorusStore, damage: Damage, layers: tuple[str, ...]) -> bool:
    """Mend ``damage`` in ``store`` (opened ``r+``, under :func:`repair_claims`): damaged
    shards deleted and their rows marked not done, the reduction blocks of ``layers`` over
    them marked stale, derived arrays rewritten. Returns whether anything changed."""
    reset, reset_marks = _reset_units(store, damage)
    for key in damage.keys:
        store.location.delete(key)
    stale = damage.stale | _blocks_over(store, reset | reset_marks, layers)
    for layer, b in stale:
        fingerprints = store.array(f"reductions/{layer}/fingerprint")
        if b < fingerprints.shape[0]:
            store.location.delete(chunk_key(fingerprints, (b,)))
    _rewrite_derived(store, damage.derived)
    if damage.documents or damage.derived:
        store.consolidate()
    return bool(reset or reset_marks or stale or damage.documents or damage.derived)


def _reset_units(
    store: ChorusStore, damage: Damage
) -> tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]:
    """Delete damaged shards and done marks; returns the (group, shard, track shard)
    units reset through their data and through their marks."""
    lay = store.layout
    for group in DATA_GROUPS:
        for _, key in damage.marks.get(group.name, []):
            store.location.delete(key)  # a reset mark: the unit's rows are rebuilt
    reset: set[tuple[str, int, int]] = set()
    for (name, s, ts), key in damage.units.items():
        store.location.delete(key)
        reset.add((name.split("/")[0], s, ts))
    by_marks = {(g, c[0], c[1]) for g, bad in damage.marks.items() for c, _ in bad}
    for gname, s, ts in sorted(reset - by_marks):
        t0 = ts * lay.tracks_per_shard
        store.array(schema().data_group(gname).done)[s, t0 : t0 + lay.tracks_per_shard] = 0
    return reset, by_marks


def _blocks_over(
    store: ChorusStore, units: set[tuple[str, int, int]], layers: tuple[str, ...]
) -> set[tuple[str, int]]:
    """The reduction blocks over rebuilt units: they re-reduce, whatever the new bytes."""
    lay = store.layout
    per_ts = lay.tracks_per_shard // lay.tracks_per_chunk
    out: set[tuple[str, int]] = set()
    for layer in layers:
        group = schema().layer_group(layer).name
        for g, _, ts in units:
            if g == group:
                out.update((layer, ts * per_ts + i) for i in range(per_ts))
    return out


def _rewrite_derived(store: ChorusStore, derived: list[str]) -> None:
    for full in derived:
        if full.endswith("/quantile"):
            store.array(full)[:] = np.linspace(0.0, 1.0, store.layout.n_points)
        elif full.endswith("/strand"):
            other = [g for g in DATA_GROUPS if not full.startswith(f"{g.name}/")][0]
            store.array(full)[:] = store.read(f"{other.name}/strand")
    if any(not (f.endswith("/quantile") or f.endswith("/strand")) for f in derived):
        store._sync_coords()


def unlock(store_path: str | Path, *, force: bool = False) -> list[str]:
    """Clear claims left by dead processes; ``force`` also clears other machines' claims.

    Only use ``force`` when no process anywhere is still building this store.

    Returns
    -------
    list of str
        The claims cleared.
    """
    store = ChorusStore.open(store_path)
    return locks.clear_claims(store.location, force=force)
