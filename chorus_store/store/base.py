"""What every part of an open store shares: its root group, attributes, layout, array
access and dim sizes (:class:`StoreBase`; the tables, the journal and
:class:`~chorus_store.store.core.ChorusStore` build on it)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import zarr

from chorus_store.errors import CorruptChunkError, SchemaError, StoreLockedError
from chorus_store.store import claims as locks
from chorus_store.store.layout import Layout
from chorus_store.store.location import Location
from chorus_store.store.schema import schema

__all__ = [
    "ROOT_COPY",
    "PRIMARY_DIMS",
    "StoreBase",
    "dim_sizes",
    "is_checksum_error",
    "as_corruption",
    "locks_error",
]

#: a copy of the root ``zarr.json`` (root attributes: provenance no other object holds),
#: refreshed by every :meth:`StoreBase.consolidate`; ``verify --repair`` restores from it
ROOT_COPY = ".chorus-store/root-zarr.json"

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
#: the array whose length is each primary dim's size
_PRIMARY_ARRAYS = {
    "track": "tracks/track",
    "position": "plan/positions/pos",
    "variant": "plan/variants/pos",
    "resolution": "plan/positions/resolution_bp",
    "strand": "baselines/strand",
    "position_gene_range": "plan/position_genes/bin_start",
    "variant_gene_range": "plan/variant_genes/bin_start",
}


def dim_sizes(layout: Layout, primary: dict[str, int]) -> dict[str, int]:
    """Every dim's size from the primary ones (:data:`PRIMARY_DIMS`) and ``layout``: what
    an open store derives, and what ``chorus-store estimate`` sizes a store by before one
    exists."""
    sizes = {k: int(primary[k]) for k in PRIMARY_DIMS}
    for group in schema().data_groups.values():
        n_shards = math.ceil(sizes[group.row_dim] / layout.shard_rows(group))
        sizes[group.shard_dim] = n_shards
        sizes[group.gene_dim] = n_shards * layout.gene_rows(group)
    return {
        **sizes,
        "bin_sample": layout.bin_samples,
        "track_block": math.ceil(primary["track"] / layout.tracks_per_chunk),
        "quantile": layout.n_points,
    }


class StoreBase:
    """An open store's root group and root attributes, and reads of its arrays."""

    def __init__(self, location: Location, root: zarr.Group, *, writable: bool) -> None:
        self.location = location
        self.url = location.url
        self.root = root
        self.writable = writable
        stored = root.attrs.get(schema().root_key, {})
        self.attrs: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
        self.layout = Layout.from_dict(self.attrs.get("layout", {}))
        self._cache: dict[str, Any] = {}

    # ---------------------------------------------------------------- sizes and arrays
    def _derive(self, primary: dict[str, int]) -> dict[str, int]:
        """Every dim's size from the primary ones (:data:`PRIMARY_DIMS`) and the layout."""
        return dim_sizes(self.layout, primary)

    @property
    def sizes(self) -> dict[str, int]:
        """The size of every dim of the schema."""
        return self._derive({d: self.array(a).shape[0] for d, a in _PRIMARY_ARRAYS.items()})

    def _primary(self) -> dict[str, int]:
        return {k: v for k, v in self.sizes.items() if k in PRIMARY_DIMS}

    def array(self, name: str) -> zarr.Array[Any]:
        """The Zarr array ``group/name``, e.g. ``store.array("baselines/summary")``."""
        arr = self.root[name]
        if not isinstance(arr, zarr.Array):
            raise SchemaError(f"{self.url}/{name} is a group, expected an array")
        return arr

    def group(self, name: str) -> zarr.Group:
        """The Zarr group ``name``, e.g. ``store.group("plan/positions")``."""
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

    # ---------------------------------------------------------------- attrs
    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """Replace the root attributes (``chorus_store`` key) with ``attrs``."""
        self.attrs = attrs
        self.root.attrs[schema().root_key] = attrs

    def consolidate(self) -> None:
        """Refresh consolidated metadata (after any change of shape or attributes)."""
        with warnings.catch_warnings():
            # the claims folder (.chorus-locks) is not a Zarr node; zarr says so when listing
            warnings.filterwarnings("ignore", message="Object at .chorus-")
            zarr.consolidate_metadata(self.location.zarr_store(read_only=False))
        root_doc = self.location.get("zarr.json")
        if root_doc is not None:
            self.location.put(ROOT_COPY, root_doc)


def locks_error(path: str, busy: list[str], command: str) -> Exception:
    return StoreLockedError(
        f"{path}: cannot run {command!r} while parts of the store are being built by "
        f"{busy[0]}{f' and {len(busy) - 1} more' if len(busy) > 1 else ''}. Wait for the "
        f"build to finish (or stop it); stale claims of killed processes on other machines "
        f"are cleared with `chorus-store unlock {path}`."
    )


def is_checksum_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "checksum" in str(exc).lower()


def as_corruption(path: str, name: str, exc: BaseException) -> CorruptChunkError:
    """The error to raise for a chunk of ``name`` failing its checksum."""
    return CorruptChunkError(
        f"{path}: a stored chunk of '{name}' fails its CRC32C checksum ({exc}); the data on "
        f"disk is damaged. Run `chorus-store verify {path} --repair` to find the damaged "
        f"chunks and mark them for rebuilding, then `chorus-store build {path}`."
    )
