"""The Zarr v3 store: create, open, validate, and view through xarray.

The layout is declared once, in ``schemas/store-v<N>.json`` (parsed by
:mod:`chorus_store.store.schema`); data arrays are sharded so that one writer owns a whole
shard (``position_shard_rows`` rows × ``tracks_per_shard`` tracks), and every chunk carries
a CRC32C checksum, so a corrupted chunk is an error rather than a value. Tables live in
:mod:`~chorus_store.store.tables`, growth in :mod:`~chorus_store.store.journal`.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.registry import get_codec_class

from chorus_store._version import __version__
from chorus_store.errors import ChorusStoreError, SchemaError, WriteError, os_reason
from chorus_store.genome.tracks import TrackTable
from chorus_store.store.base import ROOT_COPY, as_corruption, is_checksum_error, locks_error
from chorus_store.store.creation import (
    CREATING_MARK,
    abort_create,
    begin_create,
    finish_create,
    is_chorus_store,
    open_group,
    remove_stale_creating,
    require_directory,
)
from chorus_store.store.journal import StoreJournal, require_shape
from chorus_store.store.layout import BIN_SAMPLES, GeneRows, Layout, PlanArrays
from chorus_store.store.location import Location
from chorus_store.store.schema import SCHEMA_VERSION, ArraySpec, DataGroup, schema
from chorus_store.store.tables import as_data_group

__all__ = [
    "SCHEMA_VERSION",
    "BIN_SAMPLES",
    "DATA_GROUPS",
    "Layout",
    "GeneRows",
    "PlanArrays",
    "DataGroup",
    "ChorusStore",
    "ROOT_COPY",
    "as_corruption",
    "is_checksum_error",
    "is_chorus_store",
    "locks_error",
    "remove_stale_creating",
]

#: the data groups, ``baselines`` then ``variants``
DATA_GROUPS: tuple[DataGroup, ...] = tuple(schema().data_groups.values())
LAYERS = ("effect", "summary", "perbin")

warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compressors() -> list[Any]:
    """The codecs of a new array, from the schema's ``codecs`` entry (blosc lz4 + shuffle,
    then CRC32C). Only creation reads this: an existing array's zarr.json names its own
    codecs, so stores made with an earlier choice stay readable and keep it when grown."""
    return [get_codec_class(c["name"]).from_dict(c) for c in schema().compressors]


class ChorusStore(StoreJournal):
    """An open chorus-store.

    Use :meth:`create` for a new store and :meth:`open` (or :func:`open_store` for the
    xarray view) for an existing one.
    """

    # ---------------------------------------------------------------- create / open
    @classmethod
    def create(
        cls,
        url: str | Path,
        *,
        attrs: dict[str, Any],
        tracks: TrackTable,
        plan: PlanArrays,
        layout: Layout,
    ) -> ChorusStore:
        """Write a new store: its metadata, track table and plan; no predictions.

        ``attrs`` are the root attributes (oracle, genome, plan, ...); schema version,
        software version, creation time, layout and the track-table hash are added here.
        """
        final = Location.of(url)
        try:
            creating, claim = begin_create(final)
            try:
                cls._write_new(creating, attrs, tracks, plan, layout)
            except BaseException:
                abort_create(creating, claim)
                raise
        except ChorusStoreError:
            raise
        except OSError as exc:
            # a read-only directory or a full disk: nothing of the new store was kept
            raise WriteError(
                f"could not create the store {final.url}: {os_reason(exc)}. Nothing was "
                f"kept; choose a writable directory with free space and re-run "
                f"`chorus-store plan`."
            ) from exc
        finish_create(creating, final, claim)
        return cls.open(final.url, mode="r+")

    @classmethod
    def _write_new(
        cls,
        creating: Location,
        attrs: dict[str, Any],
        tracks: TrackTable,
        plan: PlanArrays,
        layout: Layout,
    ) -> ChorusStore:
        root = open_group(creating, "a")  # empty but for the create claim
        store = cls(creating, root, writable=True)
        full = {
            "schema_version": SCHEMA_VERSION,
            "software_version": __version__,
            "created_at": _now(),
            **attrs,
            "layout": layout.as_dict(),
        }
        layout = Layout.from_dict(
            {
                **layout.as_dict(),
                **{g.gene_rows_key: plan.genes(g).rows_per_shard for g in DATA_GROUPS},
            }
        )
        full["layout"] = layout.as_dict()
        store.layout = layout
        store.attrs = full
        sizes = store._derive(
            {
                "track": len(tracks),
                "resolution": len(plan.resolutions),
                "strand": len(plan.strands),
                **{g.row_dim: len(plan.rows(g)) for g in DATA_GROUPS},
                **{g.gene_range_dim: len(plan.genes(g).ranges) for g in DATA_GROUPS},
            }
        )
        for gspec in schema().groups.values():
            group = root.require_group(gspec.name)
            group.attrs["doc"] = gspec.doc
            for spec in gspec.every_array.values():
                store._create_array(group, spec, sizes)
        store._write_tracks(tracks, 0)
        store.array("plan/positions/resolution_bp")[:] = np.asarray(plan.resolutions, np.int64)
        for data_group in DATA_GROUPS:
            store._write_table(data_group.plan, plan.rows(data_group), 0)
            store.array(f"{data_group.name}/strand")[:] = np.asarray(plan.strands, dtype=object)
            genes = plan.genes(data_group)
            store._write_table(data_group.genes, genes.table, 0)
            if len(genes.ranges):
                store.array(f"{data_group.genes}/bin_start")[:] = genes.ranges[:, 0]
                store.array(f"{data_group.genes}/bin_stop")[:] = genes.ranges[:, 1]
        require_shape("bin_index", plan.bin_index, store.array("plan/positions/bin_index"))
        require_shape(
            "gene_bin_index", plan.gene_bin_index, store.array("plan/positions/gene_bin_index")
        )
        if len(plan.positions):
            store.array("plan/positions/bin_index")[:] = plan.bin_index
            store.array("plan/positions/gene_bin_index")[:] = plan.gene_bin_index
        for layer in LAYERS:
            store.array(f"reductions/{layer}/quantile")[:] = np.linspace(0.0, 1.0, layout.n_points)
        store._sync_coords()
        full["tracks"] = {"n_tracks": len(tracks), "sha256": tracks.sha256()}
        store.set_attrs(full)  # the mark of a finished store: written last
        store.consolidate()
        return store

    @classmethod
    def open(cls, url: str | Path, *, mode: Literal["r", "r+"] = "r") -> ChorusStore:
        """Open an existing store (``mode="r"`` or ``"r+"``) and check its schema version.

        ``url`` is a directory, ``file://`` path or an object-store URL (``s3://…``).
        """
        loc = Location.of(url)
        path = loc.url
        require_directory(loc)
        if not loc.exists("zarr.json"):
            raise SchemaError(
                f"{path} is not a chorus-store (no zarr.json); create one with "
                f"`chorus-store plan {path} ...`"
            )
        try:
            root = open_group(loc, mode)
        except Exception as exc:  # noqa: BLE001 - zarr raises many types for bad metadata
            raise SchemaError(f"{path}: cannot open as a Zarr v3 group: {exc}") from exc
        root_key = schema().root_key
        if root_key not in root.attrs:
            raise SchemaError(
                f"{path} is a Zarr group but not a chorus-store (no '{root_key}' attributes)"
                + (
                    "; it is a store whose `chorus-store plan` was interrupted: plan again "
                    "(the half-made store is replaced)"
                    if loc.exists(CREATING_MARK)
                    else ""
                )
            )
        store = cls(loc, root, writable=mode != "r")
        if "pending_change" in store.attrs:
            op = store.attrs["pending_change"].get("op", "change")
            if mode == "r":
                raise SchemaError(
                    f"{path}: an '{op}' was interrupted and is not finished. Any command that "
                    f"writes (e.g. `chorus-store build {path}`) finishes it first."
                )
            store._recover()
        version = store.attrs.get("schema_version")
        if version == 1:
            # v1 (flat done marks, no gene slots) is not shipped any more: no v1 store
            # outlived its day, and v2 holds facts a v1 store cannot be converted to
            raise SchemaError(
                f"{path} is a store of schema v1, which chorus-store {__version__} no longer "
                f"reads or converts (v2 adds gene slots and per-shard done marks). Plan it "
                f"again into a new store with `chorus-store plan <new store> --recipe <recipe>` "
                f"and build that, or open it with chorus-store "
                f"{store.attrs.get('software_version')}, which wrote it."
            )
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"{path} has store schema v{version}; chorus-store {__version__} reads "
                f"v{SCHEMA_VERSION}. Open it with the chorus-store version that wrote it "
                f"({store.attrs.get('software_version')}), or rebuild it with this one."
            )
        return store

    def _create_array(self, group: zarr.Group, spec: ArraySpec, sizes: dict[str, int]) -> None:
        chunks, shards = self.layout.chunking(spec, sizes)
        attributes: dict[str, Any] = {}
        if spec.coordinates is not None:
            attributes["coordinates"] = spec.coordinates
        if spec.doc:
            attributes["doc"] = spec.doc
        group.create_array(
            spec.name,
            shape=tuple(sizes[d] for d in spec.dims),
            chunks=chunks,
            shards=shards,
            dtype=str if spec.is_str else spec.dtype,
            fill_value=spec.fill_value(),
            compressors=_compressors(),
            dimension_names=spec.dims,
            attributes=attributes,
        )

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check every group and array of the schema: presence, dims, dtype, shape.

        Raises :class:`SchemaError` listing every problem found.
        """
        spec = schema()
        missing = [k for k in spec.required_attrs if k not in self.attrs]
        problems = [f"root attribute '{spec.root_key}.{k}' missing" for k in missing]
        try:
            sizes = self.sizes
        except KeyError as exc:
            raise SchemaError(f"{self.url}: core array missing ({exc}); not a valid store") from exc
        for gspec in spec.groups.values():
            if gspec.name not in self.root:
                problems.append(f"group '{gspec.name}' missing")
                continue
            for aspec in gspec.every_array.values():
                problems += self._array_problems(aspec, sizes)
        if problems:
            raise SchemaError(
                f"{self.url} does not match store schema v{SCHEMA_VERSION}:\n  - "
                + "\n  - ".join(problems)
            )

    def _array_problems(self, spec: ArraySpec, sizes: dict[str, int]) -> list[str]:
        key = spec.key
        if key not in self.root:
            return [f"array '{key}' missing"]
        arr = self.array(key)
        problems = []
        dims = tuple(arr.metadata.dimension_names or [])  # type: ignore[union-attr]
        if dims != spec.dims:
            problems.append(f"'{key}' has dims {list(dims)}, schema says {list(spec.dims)}")
        want_shape = tuple(sizes[d] for d in spec.dims)
        if arr.shape != want_shape:
            problems.append(f"'{key}' has shape {arr.shape}, expected {want_shape}")
        if not spec.matches_dtype(arr.dtype):
            problems.append(f"'{key}' has dtype {arr.dtype}, schema says {spec.dtype}")
        return problems

    # ---------------------------------------------------------------- xarray
    def datasets(self) -> dict[str, Any]:
        """Every group as an ``xarray.Dataset`` with named dims and coordinates."""
        import xarray as xr

        out = {}
        for gname in schema().groups:
            ds = xr.open_zarr(self.location.zarr_store(read_only=True), group=gname, zarr_format=3)
            # coordinates are small and used for selection: load them, keep data lazy
            out[gname] = ds.assign_coords({k: ds[k].load() for k in ds.coords})
        return out

    def iter_shards(self, group: DataGroup | str) -> Iterator[tuple[int, int, int]]:
        """``(shard, start_row, stop_row)`` of every row shard of a data group."""
        group = as_data_group(group)
        n = len(self.plan_table(group))
        rows = self.layout.shard_rows(group)
        for s in range(math.ceil(n / rows)):
            yield s, s * rows, min(n, (s + 1) * rows)
