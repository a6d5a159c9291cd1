"""Where a store stands: :func:`status`, and :func:`verify` (which finds damage; mending
it, and clearing claims, is upkeep: :mod:`chorus_store.store.upkeep`)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from chorus_store.reduce import active_layers, layer_fingerprints, stale_blocks
from chorus_store.reports import StatusReport, VerifyReport
from chorus_store.store import claims as locks
from chorus_store.store.base import ROOT_COPY
from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.store.integrity import chunk_key, data_arrays, missing_shards
from chorus_store.store.location import Location
from chorus_store.store.progress import pending_summary
from chorus_store.store.schema import schema
from chorus_store.store.upkeep import BadChunk, Damage, repair_claims, restore_documents
from chorus_store.store.upkeep import repair as mend

__all__ = ["status", "verify", "disk_usage", "claim_runs"]


def disk_usage(loc: Location) -> tuple[int, int, int]:
    """Bytes, files (objects), and leftover ``*.partial`` temporaries (of writes a kill
    interrupted; object stores never leave any: a PUT lands whole or not at all)."""
    total = files = partial = 0
    for key, size in loc.list():
        files += 1
        total += size
        partial += key.endswith(".partial")
    return total, files, partial


def status(store_path: str | Path) -> StatusReport:
    """Per-stage completion, counts per stratum, disk use and who holds claims.

    Returns
    -------
    StatusReport
        ``report.to_dict()`` is what ``chorus-store status --json`` prints.
    """
    store = ChorusStore.open(store_path)
    locks.clear_stale(store.location)  # dead runs' claims: listed no more
    attrs = store.attrs
    tracks = store.tracks
    reductions = {}
    for layer in active_layers(store):
        total = len(layer_fingerprints(store, layer))
        reductions[layer] = {"blocks": total, "stale": len(stale_blocks(store, layer))}
    size, files, partial = disk_usage(store.location)
    claims = list(locks.list_claims(store.location))
    return StatusReport(
        store=store.url,
        schema_version=attrs["schema_version"],
        software_version=attrs["software_version"],
        oracle=attrs["oracle"]["name"],
        oracle_pinned=attrs["oracle"].get("fingerprint") is not None,
        genome=attrs["genome"]["assembly"],
        tracks=len(tracks),
        layers=dict(sorted(Counter(tracks.layers).items())),
        plan={
            "source": attrs["plan"]["source"],
            "positions": attrs["plan"]["position_strata"],
            "variants": attrs["plan"]["variant_strata"],
            "additions": len(attrs["plan"].get("additions", [])),
        },
        build=pending_summary(store),
        reductions=reductions,
        disk={"bytes": size, "files": files, "partial_files": partial},
        claims=[
            {"name": name, "holder": holder.describe(), "alive": alive}
            for name, holder, alive in claims
        ],
        runs=claim_runs(claims),
    )


def claim_runs(claims: list[tuple[str, locks.Holder, bool | None]]) -> list[dict[str, Any]]:
    """One entry per run holding claims (a build holds one claim per shard: ~1,000 for
    Enformer): its pid, host, command line, start (``since``, local time, and
    ``started_at``, seconds since the epoch), whether it is alive, the build shards it
    holds per data group (``shards``) and its other claims (``holds``: ``store``,
    ``reduce``, ...), oldest run first."""
    runs: dict[str, dict[str, Any]] = {}
    for name, holder, alive in claims:
        run = runs.setdefault(
            holder.run_id or name,
            {
                "run_id": holder.run_id,
                "pid": holder.pid,
                "host": holder.host,
                "command": holder.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.started_at)),
                "started_at": holder.started_at,
                "alive": alive,
                "shards": {},
                "holds": [],
            },
        )
        kind, _, rest = name.partition("/")
        if kind == "build" and "/" in rest:
            group = rest.split("/", 1)[0]
            run["shards"][group] = run["shards"].get(group, 0) + 1
        else:
            run["holds"].append(name)
    return sorted(runs.values(), key=lambda r: (r["started_at"], r["pid"]))


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


@dataclass
class _Documents:
    """The metadata check: damaged documents, what is lost, and the restored documents
    (key → content) a repair writes back."""

    damaged: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    restore: dict[str, dict[str, Any]] = field(default_factory=dict)
    root_lost: bool = False


def _check_metadata(loc: Location) -> _Documents:
    """Check every metadata document (root, groups, arrays) as stored, not through the
    consolidated copy that masks a missing or damaged one. The root document is restored
    from its copy (:data:`~chorus_store.store.core.ROOT_COPY`), a group's from the schema,
    an array's from the consolidated metadata (an exact copy of it)."""
    found = _Documents()
    raw = loc.get("zarr.json")
    root = _parse_doc(raw)
    root_key = schema().root_key
    if root is None or root_key not in root.get("attributes", {}):
        found.damaged.append(
            f"zarr.json (root metadata, {'missing' if raw is None else 'unreadable'})"
        )
        copy = _parse_doc(loc.get(ROOT_COPY))
        if copy is None or root_key not in copy.get("attributes", {}):
            found.lost.append(_ROOT_LOST.format(copy=ROOT_COPY))
            found.root_lost = True
            return found
        root = found.restore["zarr.json"] = copy
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    for path, group_doc in _schema_nodes().items():
        key = f"{path}/zarr.json"
        stored = loc.get(key)
        if _parse_doc(stored) is not None:
            continue
        found.damaged.append(f"{key} ({'missing' if stored is None else 'unreadable'})")
        doc = consolidated.get(path)
        if doc is None and group_doc is not None:
            doc = {**group_doc, "zarr_format": 3, "node_type": "group"}
        if doc is None:
            found.lost.append(
                f"{key}: no copy to restore it from (the consolidated metadata lacks it); "
                f"re-plan into a new store with the same recipe and inputs"
            )
            continue
        found.restore[key] = {k: v for k, v in doc.items() if k != "consolidated_metadata"}
    return found


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


def verify(store_path: str | Path, *, repair: bool = False) -> VerifyReport:
    """Check everything the other commands read; with ``repair``, mend what can be mended.

    Checked: every metadata document (root, group and array ``zarr.json``, read as stored,
    not through the consolidated copy), every stored chunk of every array (checksums and
    decoding: data shards, ``done_rows`` marks, reductions, plan and track tables, coordinate
    copies), and that every data shard the done marks say is written exists.

    With ``repair`` (under the store claim, refused while a build or reduce runs; the
    mending is :func:`chorus_store.store.upkeep.repair`): damaged or missing data shards are
    deleted and their rows marked not done (the next ``build`` recomputes exactly them) and
    the reduction blocks over them marked stale; a damaged done mark is reset (its rows are
    rebuilt); damaged reduction blocks are marked stale; metadata documents and derived
    arrays (coordinate copies, quantiles) are rewritten. What cannot be rebuilt from the
    store (its root attributes without their copy, the plan and track tables) is listed
    under ``lost`` with how to recover.

    Returns
    -------
    VerifyReport
        One line per damaged thing, by kind; ``lost``; whether a repair changed anything.
    """
    loc = Location.of(store_path)
    locks.clear_stale(loc)
    held = repair_claims(loc) if repair else None
    try:
        return _verify(loc, repair)
    finally:
        if held is not None:
            held.release()


def _verify(loc: Location, repair: bool) -> VerifyReport:
    docs = _check_metadata(loc)
    report = VerifyReport(damaged_metadata=docs.damaged, lost=docs.lost)
    if docs.root_lost or (docs.damaged and not repair):
        return report  # (without repair, a damaged root doc stops every reader)
    store = (
        restore_documents(loc, docs.restore, consolidate=bool(docs.damaged))
        if repair
        else ChorusStore.open(loc.url, mode="r")
    )
    damage = Damage(documents=bool(docs.damaged))
    _find_data_damage(store, damage, report)
    _find_reduction_damage(store, damage, report)
    _find_table_damage(store, damage, report)
    if repair:
        report.repaired = mend(store, damage, active_layers(store))
    return report


def _readable_marks(store: ChorusStore, group: str, bad: list[BadChunk]) -> np.ndarray:
    """``group``'s done marks, an unreadable chunk read as 0 (its unit is rebuilt)."""
    arr = store.array(f"{group}/done_rows")
    step = store.layout.tracks_per_shard
    marks = np.zeros(arr.shape, dtype=np.int64)
    unreadable = {c for c, _ in bad}
    for s in range(arr.shape[0]):
        for ts in range(math.ceil(arr.shape[1] / step)):
            if (s, ts) not in unreadable:
                marks[s, ts * step : (ts + 1) * step] = arr[s, ts * step : (ts + 1) * step]
    return marks


def _find_data_damage(store: ChorusStore, damage: Damage, report: VerifyReport) -> None:
    """Unreadable done marks and data shards, and shards the marks say exist but do not."""
    done: dict[str, np.ndarray] = {}
    for data_group in DATA_GROUPS:
        group = data_group.name
        bad_marks = damage.marks[group] = _bad_chunks(store.array(data_group.done))
        for (s, ts), _ in bad_marks:
            report.damaged_marks.append(f"{data_group.done} shard {s} track-shard {ts}")
        done[group] = _readable_marks(store, group, bad_marks)
        for name in data_arrays(data_group):
            for coords, key in _bad_chunks(store.array(name)):
                report.damaged_shards.append(f"{name} shard {coords[0]} track-shard {coords[-1]}")
                damage.units[(name, coords[0], coords[-1])] = key
    for unit, why in missing_shards(store, done):
        report.damaged_shards.append(f"{unit.describe()} ({why})")
        damage.units[(unit.array, unit.shard, unit.track_shard)] = unit.key


def _find_reduction_damage(store: ChorusStore, damage: Damage, report: VerifyReport) -> None:
    """Unreadable chunks of the per-block reduction arrays: their blocks are stale."""
    for layer in active_layers(store):
        for name in REDUCED:
            for coords, key in _bad_chunks(store.array(f"reductions/{layer}/{name}")):
                damage.stale.add((layer, coords[0]))
                damage.keys.append(key)
    report.damaged_reductions = [f"{layer} block {b}" for layer, b in sorted(damage.stale)]


def _find_table_damage(store: ChorusStore, damage: Damage, report: VerifyReport) -> None:
    """Unreadable chunks of every other array: derived ones (coordinate copies, quantiles,
    strands) are rewritten by a repair, the plan and track tables are lost."""
    for spec in schema().arrays():
        if spec.role in ("data", "gene_data", "done"):
            continue
        if spec.group.startswith("reductions/") and spec.name in REDUCED:
            continue  # checked per block
        bad = _bad_chunks(store.array(spec.key))
        if not bad:
            continue
        if spec.source is not None or spec.name in ("quantile", "strand"):  # derived
            damage.derived.append(spec.key)
            damage.keys += [key for _, key in bad]
        else:
            report.damaged_plan.append(spec.key)
    report.damaged_derived = list(damage.derived)
    if report.damaged_plan:
        report.lost.append(
            _PLAN_LOST.format(
                name=", ".join(report.damaged_plan),
                plan_hash=store.attrs["plan"].get("positions_sha256"),
            )
        )
