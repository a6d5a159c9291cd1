"""Where a store stands, and its upkeep: status, verify (and repair), unlock."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from chorus_store.reduce import active_layers, layer_fingerprints, stale_blocks
from chorus_store.store import claims as locks
from chorus_store.store.base import ROOT_COPY, locks_error
from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.store.integrity import chunk_key, data_arrays, missing_shards
from chorus_store.store.location import Location
from chorus_store.store.progress import pending_summary
from chorus_store.store.schema import schema

__all__ = ["status", "verify", "unlock", "disk_usage"]


def disk_usage(loc: Location) -> tuple[int, int, int]:
    """Bytes, files (objects), and leftover ``*.partial`` temporaries (of writes a kill
    interrupted; object stores never leave any: a PUT lands whole or not at all)."""
    total = files = partial = 0
    for key, size in loc.list():
        files += 1
        total += size
        partial += key.endswith(".partial")
    return total, files, partial


def status(store_path: str | Path) -> dict[str, Any]:
    """Per-stage completion, counts per stratum, disk use and who holds claims."""
    store = ChorusStore.open(store_path)
    locks.clear_stale(store.location)  # dead runs' claims: listed no more
    attrs = store.attrs
    tracks = store.tracks
    reductions = {}
    for layer in active_layers(store):
        total = len(layer_fingerprints(store, layer))
        reductions[layer] = {"blocks": total, "stale": len(stale_blocks(store, layer))}
    size, files, partial = disk_usage(store.location)
    return {
        "store": store.url,
        "schema_version": attrs["schema_version"],
        "software_version": attrs["software_version"],
        "oracle": attrs["oracle"]["name"],
        "oracle_pinned": attrs["oracle"].get("fingerprint") is not None,
        "genome": attrs["genome"]["assembly"],
        "tracks": len(tracks),
        "layers": dict(sorted(Counter(tracks.layers).items())),
        "plan": {
            "source": attrs["plan"]["source"],
            "positions": attrs["plan"]["position_strata"],
            "variants": attrs["plan"]["variant_strata"],
            "additions": len(attrs["plan"].get("additions", [])),
        },
        "build": pending_summary(store),
        "reductions": reductions,
        "disk": {"bytes": size, "files": files, "partial_files": partial},
        "claims": [
            {"name": name, "holder": holder.describe(), "alive": alive}
            for name, holder, alive in locks.list_claims(store.location)
        ],
    }


def _parse_doc(raw: bytes | None) -> dict[str, Any] | None:
    """A zarr.json document, or None when absent or not a JSON object."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None
    return doc if isinstance(doc, dict) and doc.get("zarr_format") == 3 else None


def _schema_nodes() -> dict[str, dict[str, Any] | None]:
    """Every group and array path of the schema; groups map to their document."""
    nodes: dict[str, dict[str, Any] | None] = {}
    for gname, gspec in schema().groups.items():
        parts = gname.split("/")
        for i in range(1, len(parts)):  # parent groups ("plan", "reductions")
            nodes.setdefault("/".join(parts[:i]), {"attributes": {}})
        nodes[gname] = {"attributes": {"doc": gspec.doc}}
        for spec in gspec.every_array.values():
            nodes[spec.key] = None
    return nodes


_ROOT_LOST = (
    "the root zarr.json is damaged and its copy {copy} is missing or damaged too: the "
    "store's provenance and settings (recipe, oracle and genome fingerprints, plan seeds and "
    "hashes, layout) are lost; the arrays are intact but no command can trust them. Recover "
    "by planning a new store with the same recipe and inputs (`chorus-store plan NEW ...`) "
    "and building it; if you know this store came from that recipe and model, its built "
    "shards can be kept by copying the `baselines/*/c` and `variants/*/c` folders (and the "
    "`done_rows` chunks) into NEW before its first build."
)


def _check_metadata(loc: Location, repair: bool) -> tuple[list[str], list[str], bool]:
    """Check every metadata document (root, groups, arrays) as stored, not through the
    consolidated copy that masks a missing or damaged one. Returns (damaged, lost, whether
    the store can be opened now). With ``repair``: the root document is restored from its
    copy (:data:`~chorus_store.store.ROOT_COPY`), a group's from the schema, an array's
    from the consolidated metadata (an exact copy of it)."""
    damaged: list[str] = []
    lost: list[str] = []
    raw = loc.get("zarr.json")
    root = _parse_doc(raw)
    root_key = schema().root_key
    if root is None or root_key not in root.get("attributes", {}):
        damaged.append(f"zarr.json (root metadata, {'missing' if raw is None else 'unreadable'})")
        copy = _parse_doc(loc.get(ROOT_COPY))
        if copy is None or root_key not in copy.get("attributes", {}):
            lost.append(_ROOT_LOST.format(copy=ROOT_COPY))
            return damaged, lost, False
        root = copy
        if repair:
            loc.put("zarr.json", json.dumps(copy, indent=2).encode())
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    for path, group_doc in _schema_nodes().items():
        key = f"{path}/zarr.json"
        stored = loc.get(key)
        if _parse_doc(stored) is not None:
            continue
        damaged.append(f"{key} ({'missing' if stored is None else 'unreadable'})")
        doc = consolidated.get(path)
        if doc is None and group_doc is not None:
            doc = {**group_doc, "zarr_format": 3, "node_type": "group"}
        if doc is None:
            lost.append(
                f"{key}: no copy to restore it from (the consolidated metadata lacks it); "
                f"re-plan into a new store with the same recipe and inputs"
            )
            continue
        if repair:
            doc = {k: v for k, v in doc.items() if k != "consolidated_metadata"}
            loc.put(key, json.dumps(doc, indent=2).encode())
    return damaged, lost, repair or not damaged


def _bad_chunks(arr: zarr.Array[Any]) -> list[tuple[tuple[int, ...], str]]:
    """(chunk coords, key) of every stored chunk (shard) of ``arr`` that cannot be read."""
    step = arr.shards or arr.chunks
    grid = [math.ceil(n / c) for n, c in zip(arr.shape, step, strict=True)]
    bad = []
    for coords in np.ndindex(*grid):
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, step, strict=True))
        try:
            arr[region]
        except Exception:  # noqa: BLE001 - any failure to decode one object is damage to it
            bad.append((tuple(int(i) for i in coords), chunk_key(arr, tuple(coords))))
    return bad


REDUCED = ("grid", "offered", "retained", "fingerprint")  # per reduce block
_PLAN_LOST = (
    "{name}: the plan or track table is damaged and cannot be rebuilt from this store. "
    "Re-plan into a new store with the same recipe and inputs (`chorus-store plan NEW ...`): "
    "the plan is deterministic, so NEW's plan hash must equal this one's "
    "({plan_hash}); only then can its built shards be kept, by copying the "
    "`baselines/*/c` and `variants/*/c` folders and the `done_rows` chunks into NEW."
)


def verify(store_path: str | Path, *, repair: bool = False) -> dict[str, Any]:
    """Check everything the other commands read; with ``repair``, mend what can be mended.

    Checked: every metadata document (root, group and array ``zarr.json``, read as stored,
    not through the consolidated copy), every stored chunk of every array (checksums and
    decoding: data shards, ``done_rows`` marks, reductions, plan and track tables, coordinate
    copies), and that every data shard the done marks say is written exists.

    With ``repair`` (under the store claim, refused while a build or reduce runs):
    damaged or missing data shards are deleted and their rows marked not done (the next
    ``build`` recomputes exactly them) and the reduction blocks over them marked stale;
    a damaged done mark is reset (its rows are rebuilt); damaged reduction blocks are marked
    stale; metadata documents and derived arrays (coordinate copies, quantiles) are
    rewritten. What cannot be rebuilt from the store (its root attributes without their
    copy, the plan and track tables) is listed under ``lost`` with how to recover.
    """
    loc = Location.of(store_path)
    locks.clear_stale(loc)
    held = _repair_claims(loc) if repair else None
    try:
        return _verify(loc, repair)
    finally:
        if held is not None:
            held.release()


def _repair_claims(loc: Location) -> locks.LockSet:
    """The claims a repair needs: the whole store's shape (refused while any build holds a
    shard) and the reduce's (it rewrites done marks, shards and reduction fingerprints)."""
    command = f"chorus-store verify {loc.url} --repair"
    held = locks.acquire(loc, [locks.STRUCTURE, "reduce"], store=loc.url, command=command)
    busy = locks.live_claims(loc, exclude_run=held.holder.run_id, prefix="build/")
    if busy:
        held.release()
        raise locks_error(loc.url, busy, command)
    return held


def _verify(loc: Location, repair: bool) -> dict[str, Any]:
    report: dict[str, Any] = {
        "damaged_shards": [],
        "damaged_marks": [],
        "damaged_reductions": [],
        "damaged_metadata": [],
        "damaged_plan": [],
        "damaged_derived": [],
        "lost": [],
        "repaired": False,
    }
    damaged_docs, lost, can_open = _check_metadata(loc, repair)
    report["damaged_metadata"] = damaged_docs
    report["lost"] = lost
    if not can_open:
        return report  # (without repair, a damaged root doc stops every reader)
    store = ChorusStore.open(loc.url, mode="r+" if repair else "r")
    if repair and damaged_docs:
        # a restored root copy may hold older consolidated metadata than the documents
        store.consolidate()
        store = ChorusStore.open(loc.url, mode="r+")
    lay = store.layout
    bad_units: dict[tuple[str, int, int], str] = {}  # (array, shard, track shard) → key
    bad_marks: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    done: dict[str, np.ndarray] = {}
    for data_group in DATA_GROUPS:
        group = data_group.name
        arr = store.array(data_group.done)
        bad_marks[group] = _bad_chunks(arr)
        marks = np.zeros(arr.shape, dtype=np.int64)
        for (s, ts), _ in bad_marks[group]:
            report["damaged_marks"].append(f"{data_group.done} shard {s} track-shard {ts}")
        unreadable = {c for c, _ in bad_marks[group]}
        for s in range(arr.shape[0]):
            for ts in range(math.ceil(arr.shape[1] / lay.tracks_per_shard)):
                if (s, ts) not in unreadable:  # read as 0: its unit is rebuilt
                    t0 = ts * lay.tracks_per_shard
                    marks[s, t0 : t0 + lay.tracks_per_shard] = arr[
                        s, t0 : t0 + lay.tracks_per_shard
                    ]
        done[group] = marks
        for name in data_arrays(data_group):
            data = store.array(name)
            for coords, key in _bad_chunks(data):
                report["damaged_shards"].append(
                    f"{name} shard {coords[0]} track-shard {coords[-1]}"
                )
                bad_units[(name, coords[0], coords[-1])] = key
    for unit, why in missing_shards(store, done):
        report["damaged_shards"].append(f"{unit.describe()} ({why})")
        bad_units[(unit.array, unit.shard, unit.track_shard)] = unit.key
    stale: set[tuple[str, int]] = set()
    bad_reduction_keys: list[str] = []
    for layer in active_layers(store):
        for name in REDUCED:
            for coords, key in _bad_chunks(store.array(f"reductions/{layer}/{name}")):
                stale.add((layer, coords[0]))
                bad_reduction_keys.append(key)
    report["damaged_reductions"] = [f"{layer} block {b}" for layer, b in sorted(stale)]
    derived: list[str] = []  # arrays rewritten from others: quantiles, coordinate copies
    bad_derived_keys: list[str] = []
    for spec in schema().arrays():
        full = spec.key
        if spec.role in ("data", "gene_data", "done"):
            continue
        if spec.group.startswith("reductions/") and spec.name in REDUCED:
            continue  # checked per block above
        bad = _bad_chunks(store.array(full))
        if bad:
            if spec.source is not None or spec.name in ("quantile", "strand"):
                derived.append(full)
                bad_derived_keys += [key for _, key in bad]
            else:
                report["damaged_plan"].append(full)
    if report["damaged_plan"]:
        report["lost"].append(
            _PLAN_LOST.format(
                name=", ".join(report["damaged_plan"]),
                plan_hash=store.attrs["plan"].get("positions_sha256"),
            )
        )
    report["damaged_derived"] = derived
    if not repair:
        return report
    for data_group in DATA_GROUPS:
        for _, key in bad_marks[data_group.name]:
            store.location.delete(key)  # a reset mark: the unit's rows are rebuilt
    reset: set[tuple[str, int, int]] = set()  # (group, shard, track shard)
    for (name, s, ts), key in bad_units.items():
        store.location.delete(key)
        reset.add((name.split("/")[0], s, ts))
    damaged_mark_units = {(g.name, c[0], c[1]) for g in DATA_GROUPS for c, _ in bad_marks[g.name]}
    for group, s, ts in sorted(reset - damaged_mark_units):
        t0 = ts * lay.tracks_per_shard
        store.array(f"{group}/done_rows")[s, t0 : t0 + lay.tracks_per_shard] = 0
    for key in bad_reduction_keys + bad_derived_keys:
        store.location.delete(key)
    # a rebuilt shard re-reduces the blocks over it, whatever its new bytes
    blocks_per_ts = lay.tracks_per_shard // lay.tracks_per_chunk
    for layer in active_layers(store):
        group = schema().layer_group(layer).name
        for g, _, ts in reset | damaged_mark_units:
            if g == group:
                stale.update((layer, ts * blocks_per_ts + i) for i in range(blocks_per_ts))
    for layer, b in stale:
        fingerprints = store.array(f"reductions/{layer}/fingerprint")
        if b < fingerprints.shape[0]:
            store.location.delete(chunk_key(fingerprints, (b,)))
    for full in derived:
        if full.endswith("/quantile"):
            store.array(full)[:] = np.linspace(0.0, 1.0, lay.n_points)
        elif full.endswith("/strand"):
            other = [g for g in DATA_GROUPS if not full.startswith(f"{g.name}/")][0]
            store.array(full)[:] = store.read(f"{other.name}/strand")
    if any(not (f.endswith("/quantile") or f.endswith("/strand")) for f in derived):
        store._sync_coords()
    if damaged_docs or derived:
        store.consolidate()
    report["repaired"] = bool(reset or damaged_mark_units or stale or damaged_docs or derived)
    return report


def unlock(store_path: str | Path, *, force: bool = False) -> list[str]:
    """Clear claims left by dead processes; ``force`` also clears other machines' claims.

    Only use ``force`` when no process anywhere is still building this store.
    """
    store = ChorusStore.open(store_path)
    return locks.clear_claims(store.location, force=force)
