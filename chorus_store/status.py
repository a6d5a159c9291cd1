"""Where a store stands, and its upkeep: status, verify (and repair), unlock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from . import locks
from .build import pending_summary
from .location import Location
from .reduce import active_layers, layer_fingerprints, stale_blocks
from .store import DATA_GROUPS, ChorusStore, is_checksum_error, load_schema

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


def _chunk_keys(store: ChorusStore, name: str, shard: int, track_shard: int) -> list[str]:
    arr = store.array(name)
    middle = "/0" * (arr.ndim - 2)
    return [f"{name}/c/{shard}{middle}/{track_shard}"]


def verify(store_path: str | Path, *, repair: bool = False) -> dict[str, Any]:
    """Read every stored chunk and report those failing their checksum.

    With ``repair``, damaged build shards are deleted and marked not done (the next
    ``build`` recomputes exactly them) and damaged reduction blocks are marked stale (the
    next ``reduce`` recomputes them). Damage to the plan or track table cannot be
    rebuilt from the store; it is reported for a re-plan.
    """
    store = ChorusStore.open(store_path, mode="r+" if repair else "r")
    locks.clear_stale(store.location)
    lay = store.layout
    n_tracks = len(store.tracks)
    damaged_units: list[tuple[str, int, int]] = []
    damaged_other: list[str] = []
    for group in DATA_GROUPS:
        arrays = load_schema()["groups"][group]["arrays"]
        names = [a for a, spec in arrays.items() if spec.get("role") in ("data", "gene_data")]
        k = lay.gene_rows(group)
        for shard, start, stop in store.iter_shards(group):
            for ts in range(0, max(n_tracks, 1), lay.track_shard):
                for name in names:
                    rows = (
                        slice(shard * k, (shard + 1) * k)
                        if name.startswith("gene_")
                        else slice(start, stop)
                    )
                    if rows.stop == rows.start:
                        continue
                    try:
                        store.array(f"{group}/{name}")[rows, ..., ts : ts + lay.track_shard]
                    except ValueError as exc:
                        if not is_checksum_error(exc):
                            raise
                        damaged_units.append((f"{group}/{name}", shard, ts // lay.track_shard))
    stale_reductions: list[tuple[str, int]] = []
    for layer in active_layers(store):
        for b in range(len(layer_fingerprints(store, layer))):
            t0, t1 = b * lay.track_chunk, (b + 1) * lay.track_chunk
            for name in ("grid", "offered", "retained"):
                try:
                    store.array(f"reductions/{layer}/{name}")[t0:t1]
                except ValueError as exc:
                    if not is_checksum_error(exc):
                        raise
                    stale_reductions.append((layer, b))
                    break
    for name in ("tracks", "plan/positions", "plan/variants"):
        for aname in store.root[name].array_keys():  # type: ignore[union-attr]
            try:
                store.array(f"{name}/{aname}")[:]
            except ValueError as exc:
                if not is_checksum_error(exc):
                    raise
                damaged_other.append(f"{name}/{aname}")
    if repair:
        for name, shard, ts in damaged_units:
            group = name.split("/")[0]
            for key in _chunk_keys(store, name, shard, ts):
                store.location.delete(key)
            t0 = ts * lay.track_shard
            store.array(f"{group}/done_rows")[shard, t0 : t0 + lay.track_shard] = 0
        for layer, b in stale_reductions:
            store.array(f"reductions/{layer}/fingerprint")[b] = ""
    return {
        "damaged_shards": [f"{n} shard {s} track-shard {t}" for n, s, t in damaged_units],
        "damaged_reductions": [f"{layer} block {b}" for layer, b in stale_reductions],
        "damaged_plan": damaged_other,
        "repaired": repair and bool(damaged_units or stale_reductions),
    }


def unlock(store_path: str | Path, *, force: bool = False) -> list[str]:
    """Clear claims left by dead processes; ``force`` also clears other machines' claims.

    Only use ``force`` when no process anywhere is still building this store.
    """
    store = ChorusStore.open(store_path)
    return locks.clear_claims(store.location, force=force)
