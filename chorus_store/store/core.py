"""The Zarr v3 store: create, open, validate, grow, and view through xarray.

The layout is declared once, in ``schemas/store-v<N>.json``; this module creates stores
from that declaration and checks stores against it. Data arrays are sharded so that one
writer owns a whole shard (``position_shard_rows`` rows × ``track_shard`` tracks), and every
chunk carries a CRC32C checksum, so a corrupted chunk is an error rather than a value.
"""

from __future__ import annotations

import base64
import datetime as dt
import glob
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import zarr
from zarr.registry import get_codec_class

from chorus_store._version import __version__
from chorus_store.errors import (
    ChorusStoreError,
    CorruptChunkError,
    LocationError,
    RecipeError,
    SchemaError,
    StoreMismatchError,
    WriteError,
    os_reason,
)
from chorus_store.genome.tracks import TRACK_COLUMNS, TrackTable
from chorus_store.resources import data_dir
from chorus_store.store import claims as locks
from chorus_store.store.location import Location

__all__ = [
    "SCHEMA_VERSION",
    "Layout",
    "GeneRows",
    "PlanArrays",
    "ChorusStore",
    "load_schema",
    "layer_sources",
]

SCHEMA_VERSION = 2
ROOT_KEY = "chorus_store"
DATA_GROUPS: tuple[str, ...] = ("baselines", "variants")
LAYERS = ("effect", "summary", "perbin")
#: bins each usable position contributes to the per-bin null: chorus's 32, not a setting
BIN_SAMPLES = 32
#: the plan tables of each data group: its rows, and its (row, gene) pairs
PLAN_TABLES = {
    "baselines": ("plan/positions", "plan/position_genes"),
    "variants": ("plan/variants", "plan/variant_genes"),
}
#: the dims whose sizes are stored facts; every other dim is derived from them
PRIMARY_DIMS = (
    "track",
    "position",
    "variant",
    "resolution",
    "strand",
    "position_gene_range",
    "variant_gene_range",
)

warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
#: a copy of the root ``zarr.json`` (root attributes: provenance no other object holds),
#: refreshed by every :meth:`ChorusStore.consolidate`; ``verify --repair`` restores from it
ROOT_COPY = ".chorus-store/root-zarr.json"


@cache
def load_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The store schema ``schemas/store-v<version>.json``, with templates expanded."""
    path = data_dir("schemas") / f"store-v{version}.json"
    if not path.is_file():
        raise SchemaError(f"chorus-store {__version__} has no store schema v{version}")
    schema: dict[str, Any] = json.loads(path.read_text())
    for name, group in list(schema["groups"].items()):
        if "template" in group:
            schema["groups"][name] = {**schema["templates"][group["template"]], **group}
    return schema


def layer_sources(layer: str) -> list[str]:
    """The data arrays whose values a reduction layer ranks (rows concatenated)."""
    sources: list[str] = load_schema()["groups"][f"reductions/{layer}"]["sources"]
    return sources


@dataclass(frozen=True)
class GeneRows:
    """(row, gene) pairs of one plan table, padded to ``rows_per_shard`` per row shard.

    ``table`` has one line per slot (``row`` -1 for padding) with ``gene_id``,
    ``gene_name``, ``range_start`` and ``range_count`` into ``ranges`` ``(n, 2)``, the
    merged exon bin ranges ``[start, stop)``.
    """

    rows_per_shard: int
    table: pd.DataFrame
    ranges: np.ndarray

    @classmethod
    def empty(cls, n_shards: int = 0) -> GeneRows:
        table = pd.DataFrame(
            {
                "row": np.zeros(0, np.int64),
                "gene_id": [],
                "gene_name": [],
                "range_start": np.zeros(0, np.int64),
                "range_count": np.zeros(0, np.int64),
            }
        )
        return cls(0, table, np.zeros((0, 2), np.int64))


@dataclass(frozen=True)
class PlanArrays:
    """Everything the plan writes into a new store besides its attributes."""

    positions: pd.DataFrame  # chrom, pos, stratum, usable, reject_reason
    variants: pd.DataFrame  # + ref, alt
    resolutions: list[int]  # distinct bin sizes of the binned heads
    bin_index: np.ndarray  # (positions, resolutions, bin_samples)
    gene_bin_index: np.ndarray  # (positions, bin_samples)
    position_genes: GeneRows
    variant_genes: GeneRows
    strands: list[str]


@dataclass(frozen=True)
class Layout:
    """Chunking of a store. Fixed when the store is created.

    ``position_shard_rows`` / ``variant_shard_rows`` rows × ``track_shard`` tracks is one
    shard: the unit one writer owns and the build's unit of work and resume.
    ``track_chunk`` tracks is the inner chunk and the reduce's block.
    """

    position_shard_rows: int = 256
    variant_shard_rows: int = 256
    track_shard: int = 512
    track_chunk: int = 64
    bin_samples: int = BIN_SAMPLES
    n_points: int = 10_000
    coord_chunk: int = 65_536
    #: (row, gene) slots per row shard; set by the plan from the genes it finds
    position_gene_rows: int = 0
    variant_gene_rows: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name, value in asdict(self).items():
            lo = 0 if name.endswith("gene_rows") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                problems.append(f"{name} = {value!r} (allowed: an integer >= {lo})")
        if self.bin_samples != BIN_SAMPLES:
            # one source for the count: the plan's draws, the arrays and the export's notes
            # all use chorus's 32 (docs/design-notes.md, "Per-bin draws: 32, fixed")
            problems.append(
                f"bin_samples = {self.bin_samples!r} (fixed at chorus's {BIN_SAMPLES} bins "
                f"per position; remove the key)"
            )
        if not problems and self.track_shard % self.track_chunk:
            problems.append(
                f"track_shard = {self.track_shard} is not a multiple of track_chunk = "
                f"{self.track_chunk}"
            )
        if problems:
            raise RecipeError(
                "[layout] has values out of range: " + "; ".join(problems) + ". Fix them in "
                "the recipe's [layout] section."
            )

    def shard_rows(self, group: str) -> int:
        return self.position_shard_rows if group == "baselines" else self.variant_shard_rows

    def gene_rows(self, group: str) -> int:
        return self.position_gene_rows if group == "baselines" else self.variant_gene_rows

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise RecipeError(
                f"[layout] has unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**d)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compressors() -> list[Any]:
    """The codecs of a new array, from the schema's ``codecs`` entry (blosc lz4 + shuffle,
    then CRC32C). Only creation reads this: an existing array's zarr.json names its own
    codecs, so stores made with an earlier choice stay readable and keep it when grown."""
    return [get_codec_class(c["name"]).from_dict(c) for c in load_schema()["codecs"]["compressors"]]


def _as_str_list(values: Any) -> list[str]:
    return [str(v) for v in np.asarray(values).tolist()]


class ChorusStore:
    """An open chorus-store.

    Use :meth:`create` for a new store and :meth:`open` (or :func:`open_store` for the
    xarray view) for an existing one.
    """

    def __init__(self, location: Location, root: zarr.Group, *, writable: bool) -> None:
        self.location = location
        self.url = location.url
        self.root = root
        self.writable = writable
        stored = root.attrs.get(ROOT_KEY, {})
        self.attrs: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
        self.layout = Layout.from_dict(self.attrs.get("layout", {}))
        self._cache: dict[str, Any] = {}

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
            creating, claim = _begin_create(final)
            try:
                cls._write_new(creating, attrs, tracks, plan, layout)
            except BaseException:
                _abort_create(creating, claim)
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
        _finish_create(creating, final, claim)
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
        root = _open_group(creating, "a")  # empty but for the create claim
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
                "position_gene_rows": plan.position_genes.rows_per_shard,
                "variant_gene_rows": plan.variant_genes.rows_per_shard,
            }
        )
        full["layout"] = layout.as_dict()
        store.layout = layout
        store.attrs = full
        sizes = store._derive(
            {
                "track": len(tracks),
                "position": len(plan.positions),
                "variant": len(plan.variants),
                "resolution": len(plan.resolutions),
                "strand": len(plan.strands),
                "position_gene_range": len(plan.position_genes.ranges),
                "variant_gene_range": len(plan.variant_genes.ranges),
            }
        )
        for gname, gspec in load_schema()["groups"].items():
            group = root.require_group(gname)
            group.attrs["doc"] = gspec.get("doc", "")
            coord_names = [c for c in gspec.get("coords", {}) if c not in gspec["arrays"]]
            for aname, aspec in gspec["arrays"].items():
                store._create_array(group, gname, aname, aspec, sizes, coord_names)
            for cname, source in gspec.get("coords", {}).items():
                src_group, src_name = source.rsplit("/", 1)
                sspec = load_schema()["groups"][src_group]["arrays"][src_name]
                store._create_array(group, gname, cname, sspec, sizes, [])
        store._write_tracks(tracks, 0)
        store._write_table("plan/positions", plan.positions, 0)
        store._write_table("plan/variants", plan.variants, 0)
        store.array("plan/positions/resolution_bp")[:] = np.asarray(plan.resolutions, np.int64)
        for data_group in DATA_GROUPS:
            store.array(f"{data_group}/strand")[:] = np.asarray(plan.strands, dtype=object)
        _require_shape("bin_index", plan.bin_index, store.array("plan/positions/bin_index"))
        _require_shape(
            "gene_bin_index", plan.gene_bin_index, store.array("plan/positions/gene_bin_index")
        )
        if len(plan.positions):
            store.array("plan/positions/bin_index")[:] = plan.bin_index
            store.array("plan/positions/gene_bin_index")[:] = plan.gene_bin_index
        for genes, name in (
            (plan.position_genes, "plan/position_genes"),
            (plan.variant_genes, "plan/variant_genes"),
        ):
            store._write_table(name, genes.table, 0)
            if len(genes.ranges):
                store.array(f"{name}/bin_start")[:] = genes.ranges[:, 0]
                store.array(f"{name}/bin_stop")[:] = genes.ranges[:, 1]
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
        _require_directory(loc)
        if not loc.exists("zarr.json"):
            raise SchemaError(
                f"{path} is not a chorus-store (no zarr.json); create one with "
                f"`chorus-store plan {path} ...`"
            )
        try:
            root = _open_group(loc, mode)
        except Exception as exc:  # noqa: BLE001 - zarr raises many types for bad metadata
            raise SchemaError(f"{path}: cannot open as a Zarr v3 group: {exc}") from exc
        if ROOT_KEY not in root.attrs:
            raise SchemaError(
                f"{path} is a Zarr group but not a chorus-store (no '{ROOT_KEY}' attributes)"
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
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"{path} has store schema v{version}; chorus-store {__version__} reads "
                f"v{SCHEMA_VERSION}. Open it with the chorus-store version that wrote it "
                f"({store.attrs.get('software_version')}), or rebuild it with this one."
            )
        return store

    # ---------------------------------------------------------------- sizes and arrays
    def _derive(self, primary: dict[str, int]) -> dict[str, int]:
        """Every dim's size from the primary ones (:data:`PRIMARY_DIMS`) and the layout."""
        lay = self.layout
        n_pos_shards = math.ceil(primary["position"] / lay.position_shard_rows)
        n_var_shards = math.ceil(primary["variant"] / lay.variant_shard_rows)
        return {
            **{k: int(primary[k]) for k in PRIMARY_DIMS},
            "bin_sample": lay.bin_samples,
            "position_shard": n_pos_shards,
            "variant_shard": n_var_shards,
            "position_gene": n_pos_shards * lay.position_gene_rows,
            "variant_gene": n_var_shards * lay.variant_gene_rows,
            "track_block": math.ceil(primary["track"] / lay.track_chunk),
            "quantile": lay.n_points,
        }

    @property
    def sizes(self) -> dict[str, int]:
        return self._derive(
            {
                "track": self.array("tracks/track").shape[0],
                "position": self.array("plan/positions/pos").shape[0],
                "variant": self.array("plan/variants/pos").shape[0],
                "resolution": self.array("plan/positions/resolution_bp").shape[0],
                "strand": self.array("baselines/strand").shape[0],
                "position_gene_range": self.array("plan/position_genes/bin_start").shape[0],
                "variant_gene_range": self.array("plan/variant_genes/bin_start").shape[0],
            }
        )

    def _chunking(
        self, dims: list[str], role: str, sizes: dict[str, int], *, table: bool = False
    ) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        lay = self.layout
        fixed = {
            "bin_sample": lay.bin_samples,
            "strand": max(1, sizes["strand"]),
            "resolution": max(1, sizes["resolution"]),
        }
        if role in ("data", "gene_data"):
            if role == "data":
                rows = lay.position_shard_rows if dims[0] == "position" else lay.variant_shard_rows
            else:
                rows = max(
                    1, lay.gene_rows("baselines" if dims[0] == "position_gene" else "variants")
                )
            inner = tuple(
                rows if i == 0 else lay.track_chunk if d == "track" else fixed.get(d, 1)
                for i, d in enumerate(dims)
            )
            shard = tuple(
                lay.track_shard if d == "track" else c for d, c in zip(dims, inner, strict=True)
            )
            return inner, shard
        if role == "done":
            return (1, lay.track_shard), None
        if dims == ["track", "quantile"]:
            return (lay.track_chunk, lay.n_points), None
        if dims == ["track"] and role != "index" and not table:
            # per-track reduction outputs: one chunk per reduce block, so concurrent
            # blocks never rewrite each other's chunk
            return (lay.track_chunk,), None
        # track-table columns fall through: one object each (a store on S3 reads the
        # table in one GET per column); they are only written under the store claim
        if dims == ["track_block"]:
            return (1,), None
        if dims == ["quantile"]:
            return (lay.n_points,), None
        return tuple(fixed.get(d, lay.coord_chunk) for d in dims), None

    def _create_array(
        self,
        group: zarr.Group,
        gname: str,
        aname: str,
        spec: dict[str, Any],
        sizes: dict[str, int],
        coord_names: list[str],
    ) -> None:
        dims = spec["dims"]
        role = spec.get("role", "")
        chunks, shards = self._chunking(dims, role, sizes, table=gname == "tracks")
        dtype = str if spec["dtype"] == "str" else spec["dtype"]
        fill = spec.get("fill")
        if fill == "NaN":
            fill = float("nan")
        elif fill is None:
            fill = "" if dtype is str else False if dtype == "bool" else 0
        attributes: dict[str, Any] = {}
        if "coordinates" in spec:
            attributes["coordinates"] = spec["coordinates"]
        if "doc" in spec:
            attributes["doc"] = spec["doc"]
        group.create_array(
            aname,
            shape=tuple(sizes[d] for d in dims),
            chunks=tuple(max(1, c) for c in chunks),
            shards=shards,
            dtype=dtype,
            fill_value=fill,
            compressors=_compressors(),
            dimension_names=dims,
            attributes=attributes,
        )

    def array(self, name: str) -> zarr.Array[Any]:
        """The Zarr array ``group/name``, e.g. ``store.array("baselines/summary")``."""
        arr = self.root[name]
        if not isinstance(arr, zarr.Array):
            raise SchemaError(f"{self.url}/{name} is a group, expected an array")
        return arr

    def group(self, name: str) -> zarr.Group:
        grp = self.root[name]
        if not isinstance(grp, zarr.Group):
            raise SchemaError(f"{self.url}/{name} is an array, expected a group")
        return grp

    def read(self, name: str, selection: Any = slice(None)) -> np.ndarray:
        """Read ``array[selection]``; a chunk failing its checksum raises CorruptChunkError."""
        try:
            return np.asarray(self.array(name)[selection])
        except ValueError as exc:
            if is_checksum_error(exc):
                raise as_corruption(self.url, name, exc) from exc
            raise

    # ---------------------------------------------------------------- attrs
    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs
        self.root.attrs[ROOT_KEY] = attrs

    def consolidate(self) -> None:
        """Refresh consolidated metadata (after any change of shape or attributes)."""
        with warnings.catch_warnings():
            # the claims folder (.chorus-locks) is not a Zarr node; zarr says so when listing
            warnings.filterwarnings("ignore", message="Object at .chorus-")
            zarr.consolidate_metadata(self.location.zarr_store(read_only=False))
        root_doc = self.location.get("zarr.json")
        if root_doc is not None:
            self.location.put(ROOT_COPY, root_doc)

    # ---------------------------------------------------------------- tables
    def _write_table(self, gname: str, df: pd.DataFrame, start: int) -> None:
        names = set(self.group(gname).array_keys())
        for col in df.columns:
            if col in names:
                arr = self.array(f"{gname}/{col}")
                values = df[col].to_numpy()
                if arr.dtype.kind in ("T", "U", "O"):
                    values = np.asarray([str(v) for v in values], dtype=object)
                arr[start : start + len(df)] = values

    def _write_tracks(self, tracks: TrackTable, start: int) -> None:
        frame = tracks.frame.iloc[start:].rename(columns={"track_id": "track"})
        self._write_table("tracks", frame, start)

    def _sync_coords(self) -> None:
        for gname, gspec in load_schema()["groups"].items():
            for cname, source in gspec.get("coords", {}).items():
                src = self.array(source)
                self.array(f"{gname}/{cname}")[:] = src[:]

    def reuse_tables(self, other: ChorusStore) -> None:
        """Take ``other``'s already-read track and plan tables, if it is the same store in
        the same structure (identical root attributes: every change of tracks or plan
        rewrites them, through the journal), instead of reading them again."""
        if other.url == self.url and other.attrs == self.attrs:
            for key in ("tracks", "positions", "variants"):
                if key in other._cache:
                    self._cache.setdefault(key, other._cache[key])

    def _read_table(self, gname: str, columns: list[str]) -> pd.DataFrame:
        out = {}
        for col in columns:
            values = self.read(f"{gname}/{col}")
            out[col] = _as_str_list(values) if values.dtype.kind in ("T", "U", "O") else values
        return pd.DataFrame(out)

    @property
    def tracks(self) -> TrackTable:
        if "tracks" not in self._cache:
            cols = ["track" if c == "track_id" else c for c in TRACK_COLUMNS]
            frame = self._read_table("tracks", cols).rename(columns={"track": "track_id"})
            self._cache["tracks"] = TrackTable.from_frame(frame)
        table: TrackTable = self._cache["tracks"]
        return table

    @property
    def positions(self) -> pd.DataFrame:
        if "positions" not in self._cache:
            self._cache["positions"] = self._read_table(
                "plan/positions", ["chrom", "pos", "stratum", "usable", "reject_reason"]
            )
        df: pd.DataFrame = self._cache["positions"]
        return df

    @property
    def variants(self) -> pd.DataFrame:
        if "variants" not in self._cache:
            self._cache["variants"] = self._read_table(
                "plan/variants",
                ["chrom", "pos", "ref", "alt", "stratum", "usable", "reject_reason"],
            )
        df: pd.DataFrame = self._cache["variants"]
        return df

    def plan_table(self, group: str) -> pd.DataFrame:
        """The plan rows a data group is built over (``baselines`` → positions)."""
        return self.positions if group == "baselines" else self.variants

    @property
    def resolutions(self) -> list[int]:
        """Distinct bin sizes of the oracle's binned heads (the per-bin draws' axis)."""
        return [int(r) for r in self.read("plan/positions/resolution_bp")]

    @property
    def strands(self) -> list[str]:
        return _as_str_list(self.read("baselines/strand"))

    def gene_rows(self, group: str) -> tuple[pd.DataFrame, np.ndarray]:
        """(row, gene) slots of ``group`` and their exon bin ranges (see :class:`GeneRows`)."""
        key = f"genes/{group}"
        if key not in self._cache:
            name = PLAN_TABLES[group][1]
            table = self._read_table(
                name, ["row", "gene_id", "gene_name", "range_start", "range_count"]
            )
            ranges = np.stack([self.read(f"{name}/bin_start"), self.read(f"{name}/bin_stop")], 1)
            self._cache[key] = (table, ranges.reshape(-1, 2))
        out: tuple[pd.DataFrame, np.ndarray] = self._cache[key]
        return out

    # ---------------------------------------------------------------- growth
    def _resize_all(self, sizes: dict[str, int]) -> None:
        for gname, gspec in load_schema()["groups"].items():
            names = dict(gspec["arrays"])
            for cname, source in gspec.get("coords", {}).items():
                src_group, src_name = source.rsplit("/", 1)
                names.setdefault(cname, load_schema()["groups"][src_group]["arrays"][src_name])
            for aname, aspec in names.items():
                arr = self.array(f"{gname}/{aname}")
                shape = tuple(sizes[d] for d in aspec["dims"])
                if arr.shape != shape:
                    arr.resize(shape)
        # array handles come from the consolidated metadata: refresh it, then reopen
        self.consolidate()
        self.root = _open_group(self.location, "r+" if self.writable else "r")

    # A growth (append tracks or rows) resizes many arrays one after another. It is made
    # crash-safe as a journalled, idempotent change: the whole change (target sizes, the
    # rows to write, the attributes after it) is recorded in the root attributes first,
    # then applied, and the final attributes (without the journal) are written last. A
    # process killed in between leaves the journal; the next writer re-applies it.

    def append_tracks(self, tracks: TrackTable, attrs_after: dict[str, Any]) -> int:
        """Grow the store to ``tracks``, an extension of its track table; returns how many
        tracks were added. New tracks start unbuilt; nothing already built is touched."""
        old = self.tracks
        if not old.is_prefix_of(tracks):
            raise StoreMismatchError("internal: append_tracks needs an extension")
        n_new = len(tracks) - len(old)
        if n_new:
            new_rows = tracks.frame.iloc[len(old) :].rename(columns={"track_id": "track"})
            self._change(
                {
                    "op": "add-tracks",
                    "primary": {**self._primary(), "track": len(tracks)},
                    "tables": [
                        {"group": "tracks", "start": len(old), "rows": new_rows.to_dict("list")}
                    ],
                    "arrays": [],
                    "attrs_after": {
                        **attrs_after,
                        "tracks": {"n_tracks": len(tracks), "sha256": tracks.sha256()},
                    },
                }
            )
        return n_new

    def append_rows(
        self,
        group: str,
        rows: pd.DataFrame,
        genes: GeneRows,
        arrays: dict[str, np.ndarray],
        attrs_after: dict[str, Any],
    ) -> None:
        """Append plan rows (``group`` = ``baselines`` or ``variants``); new rows start unbuilt.

        ``genes`` are the (row, gene) slots of the shards the new rows touch, from the
        first of those shards on (slots of a shard are rewritten whole); ``arrays`` holds
        per-row plan arrays of the new rows (``bin_index``, ``gene_bin_index``).
        """
        table_name, genes_name = PLAN_TABLES[group]
        dim = "position" if group == "baselines" else "variant"
        primary = self._primary()
        start = primary[dim]
        first_shard = start // self.layout.shard_rows(group)
        old_genes, old_ranges = self.gene_rows(group)
        k = self.layout.gene_rows(group)
        keep = old_genes.iloc[: first_shard * k]
        n_kept_ranges = int((keep["range_start"] + keep["range_count"]).max()) if len(keep) else 0
        gene_table = genes.table.copy()
        gene_table["range_start"] += n_kept_ranges
        primary[dim] = start + len(rows)
        primary[f"{dim}_gene_range"] = n_kept_ranges + len(genes.ranges)
        packed = [
            {"name": f"{table_name}/{name}", "start": start, **_pack(values)}
            for name, values in arrays.items()
        ]
        if len(genes.ranges):
            packed += [
                {
                    "name": f"{genes_name}/bin_start",
                    "start": n_kept_ranges,
                    **_pack(genes.ranges[:, 0]),
                },
                {
                    "name": f"{genes_name}/bin_stop",
                    "start": n_kept_ranges,
                    **_pack(genes.ranges[:, 1]),
                },
            ]
        self._change(
            {
                "op": f"add-{group}",
                "primary": primary,
                "tables": [
                    {
                        "group": table_name,
                        "start": start,
                        "rows": {c: rows[c].tolist() for c in rows.columns},
                    },
                    {
                        "group": genes_name,
                        "start": first_shard * k,
                        "rows": gene_table.to_dict("list"),
                    },
                ],
                "arrays": packed,
                "attrs_after": attrs_after,
            }
        )

    def _primary(self) -> dict[str, int]:
        return {k: v for k, v in self.sizes.items() if k in PRIMARY_DIMS}

    def _change(self, change: dict[str, Any]) -> None:
        self.set_attrs({**self.attrs, "pending_change": change})  # the journal, first
        self._apply(change)

    def _apply(self, change: dict[str, Any]) -> None:
        """Apply a journalled change; applying it twice is the same as once."""
        self._resize_all(self._derive(change["primary"]))
        for table in change["tables"]:
            self._write_table(table["group"], pd.DataFrame(table["rows"]), int(table["start"]))
        for packed in change["arrays"]:
            values = _unpack(packed)
            start = int(packed["start"])
            arr = self.array(packed["name"])
            if tuple(values.shape[1:]) != tuple(arr.shape[1:]):
                _require_shape(packed["name"], values, arr)
            self.array(packed["name"])[start : start + len(values)] = values
        self._sync_coords()
        self.set_attrs({k: v for k, v in change["attrs_after"].items() if k != "pending_change"})
        self.consolidate()
        self._cache.clear()

    def _recover(self) -> None:
        """Finish a growth a killed process left half done (see :meth:`_change`)."""
        with self.structural_lock("finish an interrupted change"):
            root = _open_group(self.location, "r+")
            fresh = ChorusStore(self.location, root, writable=True)
            pending = fresh.attrs.get("pending_change")
            if pending:
                fresh._apply(pending)
        self.root = _open_group(self.location, "r+")
        self.attrs = dict(self.root.attrs[ROOT_KEY])  # type: ignore[arg-type]
        self._cache.clear()

    # ---------------------------------------------------------------- claims
    def claim(self, names: list[str], *, command: str | None = None) -> locks.LockSet:
        """Take claims on parts of this store (see :mod:`chorus_store.store.claims`)."""
        return locks.acquire(self.location, names, store=self.url, command=command)

    def structural_lock(self, command: str) -> locks.LockSet:
        """Claim the whole store's shape; refused while any build holds a part of it."""
        held = self.claim([locks.STRUCTURE], command=command)
        busy = locks.live_claims(self.location, exclude_run=held.holder.run_id, prefix="build/")
        if busy:
            held.release()
            raise locks_error(self.url, busy, command)
        return held

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:  # noqa: C901 - split in h11-store
        """Check every group and array of the schema: presence, dims, dtype, shape.

        Raises :class:`SchemaError` listing every problem found.
        """
        schema = load_schema()
        missing = [k for k in schema["root_attrs"]["required"] if k not in self.attrs]
        problems = [f"root attribute '{ROOT_KEY}.{k}' missing" for k in missing]
        try:
            sizes = self.sizes
        except KeyError as exc:
            raise SchemaError(f"{self.url}: core array missing ({exc}); not a valid store") from exc
        for gname, gspec in schema["groups"].items():
            if gname not in self.root:
                problems.append(f"group '{gname}' missing")
                continue
            names = dict(gspec["arrays"])
            for cname, source in gspec.get("coords", {}).items():
                src_group, src_name = source.rsplit("/", 1)
                names.setdefault(cname, schema["groups"][src_group]["arrays"][src_name])
            for aname, aspec in names.items():
                key = f"{gname}/{aname}"
                if key not in self.root:
                    problems.append(f"array '{key}' missing")
                    continue
                arr = self.array(key)
                dims = list(arr.metadata.dimension_names or [])  # type: ignore[union-attr]
                if dims != aspec["dims"]:
                    problems.append(f"'{key}' has dims {dims}, schema says {aspec['dims']}")
                want_shape = tuple(sizes[d] for d in aspec["dims"])
                if arr.shape != want_shape:
                    problems.append(f"'{key}' has shape {arr.shape}, expected {want_shape}")
                kind = arr.dtype.kind
                want = aspec["dtype"]
                ok = kind in ("T", "U", "O") if want == "str" else np.dtype(want) == arr.dtype
                if not ok:
                    problems.append(f"'{key}' has dtype {arr.dtype}, schema says {want}")
        if problems:
            raise SchemaError(
                f"{self.url} does not match store schema v{SCHEMA_VERSION}:\n  - "
                + "\n  - ".join(problems)
            )

    # ---------------------------------------------------------------- xarray
    def datasets(self) -> dict[str, Any]:
        """Every group as an ``xarray.Dataset`` with named dims and coordinates."""
        import xarray as xr

        out = {}
        for gname in load_schema()["groups"]:
            ds = xr.open_zarr(self.location.zarr_store(read_only=True), group=gname, zarr_format=3)
            # coordinates are small and used for selection: load them, keep data lazy
            out[gname] = ds.assign_coords({k: ds[k].load() for k in ds.coords})
        return out

    def iter_shards(self, group: str) -> Iterator[tuple[int, int, int]]:
        """``(shard, start_row, stop_row)`` of every row shard of ``baselines``/``variants``."""
        n = len(self.plan_table(group))
        rows = self.layout.shard_rows(group)
        for s in range(math.ceil(n / rows)):
            yield s, s * rows, min(n, (s + 1) * rows)


CREATING = "create"  # the claim held while a store is being created on an object store
CREATING_MARK = f"{locks.LOCK_DIR}/{CREATING}.json"


def _open_group(loc: Location, mode: Literal["r", "r+", "a"]) -> zarr.Group:
    return zarr.open_group(loc.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3)


def _require_directory(loc: Location) -> None:
    """Refuse a local store path that is an existing file (a store is a directory)."""
    path = loc.local_path
    if path is not None and path.exists() and not path.is_dir():
        raise LocationError(
            f"{path} is a file, not a store directory; give a new path (e.g. one ending "
            f"in .zarr) for `chorus-store plan`, or the directory of an existing store"
        )


def _begin_create(final: Location) -> tuple[Location, locks.LockSet | None]:
    """Where to write a new store that must appear at ``final`` whole or not at all.

    On a filesystem: a hidden sibling directory, renamed into place by
    :func:`_finish_create`, so a killed ``plan`` leaves no half-made store. An object
    store has no rename: the store is written in place under a ``create`` claim, and
    its root attributes (what makes it a chorus-store) are written last; a half-made
    store left by a killed ``plan`` is recognised by its claim and replaced by the next.
    """
    exists_msg = (
        f"{final.url} already exists and is not empty; choose a new store path, or "
        f"resume the existing store with `chorus-store build {final.url}`"
    )
    path = final.local_path
    if path is not None:
        _require_directory(final)
        if path.exists() and any(path.iterdir()):
            raise StoreMismatchError(exists_msg)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_creating(path)
        # the creator's host and pid in the name: a later plan can prove a leftover stale
        tmp = path.with_name(f".{path.name}.creating-{locks.writer_tag(12)}")
        return Location.of(tmp), None
    half_made = final.exists(CREATING_MARK) and not is_chorus_store(final)
    if not final.is_empty() and not half_made:
        raise StoreMismatchError(exists_msg)
    # refused while another `plan` is creating here (its claim is alive)
    claim = locks.acquire(final, [CREATING], store=final.url, command="chorus-store plan")
    for key, _ in list(final.list()):
        if not key.startswith(f"{locks.LOCK_DIR}/"):
            final.delete(key)  # a half-made store whose creator is gone
    return final, claim


def remove_stale_creating(path: Path) -> list[Path]:
    """Delete the ``.{name}.creating-<host>.<pid>.<id>`` directories a killed ``plan`` of
    ``path`` left, when their creator (a pid on this machine) is gone. A running plan's
    directory, another machine's, and older unnamed ones are kept. Returns those removed."""
    removed = []
    prefix = f".{path.name}.creating-"
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*"):
        if not locks.left_by_dead_writer(tmp.name[len(prefix) :]):
            continue  # still creating, another machine's, or not one of ours
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _abort_create(creating: Location, claim: locks.LockSet | None) -> None:
    """A create that failed in this process: remove what it wrote, then its claim."""
    if claim is None:
        path = creating.local_path
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        return
    for key, _ in list(creating.list()):
        if not key.startswith(f"{locks.LOCK_DIR}/"):
            creating.delete(key)
    claim.release()


def is_chorus_store(loc: Location) -> bool:
    """True when ``loc`` holds a finished chorus-store (its root attributes are written)."""
    raw = loc.get("zarr.json")
    return raw is not None and ROOT_KEY in json.loads(raw).get("attributes", {})


def _finish_create(creating: Location, final: Location, claim: locks.LockSet | None) -> None:
    if claim is not None:
        claim.release()  # the store is whole (its root attributes are written)
        return
    src, dst = creating.local_path, final.local_path
    assert src is not None and dst is not None
    try:
        os.rename(src, dst)  # replaces an empty directory; fails on a non-empty one
    except OSError as exc:
        shutil.rmtree(src, ignore_errors=True)
        raise StoreMismatchError(f"{dst} was created by another process meanwhile") from exc


def _require_shape(name: str, values: np.ndarray, arr: zarr.Array[Any]) -> None:
    # zarr would broadcast or truncate a mis-shaped plan array without a word (a plan of
    # 32 draws written into 16 slots kept the lowest bins of each sorted draw)
    if tuple(values.shape) != tuple(arr.shape):
        raise SchemaError(
            f"internal: the plan's {name} has shape {tuple(values.shape)} but the store's "
            f"array has {tuple(arr.shape)}; nothing was written"
        )


def _pack(values: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(values)
    return {
        "shape": list(arr.shape),
        "dtype": arr.dtype.str,
        "data": base64.b64encode(arr.tobytes()).decode(),
    }


def _unpack(packed: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(packed["data"])
    return np.frombuffer(raw, dtype=np.dtype(packed["dtype"])).reshape(packed["shape"])


def is_checksum_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "checksum" in str(exc).lower()


def as_corruption(path: str, name: str, exc: BaseException) -> CorruptChunkError:
    """The error to raise for a chunk of ``name`` failing its checksum."""
    return CorruptChunkError(
        f"{path}: a stored chunk of '{name}' fails its CRC32C checksum ({exc}); the data on "
        f"disk is damaged. Run `chorus-store verify {path} --repair` to find the damaged "
        f"chunks and mark them for rebuilding, then `chorus-store build {path}`."
    )


def locks_error(path: str, busy: list[str], command: str) -> Exception:
    from chorus_store.errors import StoreLockedError

    return StoreLockedError(
        f"{path}: cannot run {command!r} while parts of the store are being built by "
        f"{busy[0]}{f' and {len(busy) - 1} more' if len(busy) > 1 else ''}. Wait for the "
        f"build to finish (or stop it); stale claims of killed processes on other machines "
        f"are cleared with `chorus-store unlock {path}`."
    )
