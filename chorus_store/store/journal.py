"""Growth of a store (more tracks, more plan rows) as a journalled, idempotent change.

A growth resizes many arrays one after another. The whole change (target sizes, the rows
to write, the attributes after it) is recorded in the root attributes first, then
applied, and the final attributes (without the journal) are written last. A process
killed in between leaves the journal; the next writer re-applies it.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pandas as pd
import zarr

from chorus_store.errors import SchemaError, StoreMismatchError
from chorus_store.genome.tracks import TrackTable
from chorus_store.store.creation import open_group
from chorus_store.store.layout import GeneRows
from chorus_store.store.schema import DataGroup, schema
from chorus_store.store.tables import StoreTables, as_data_group

__all__ = ["StoreJournal", "require_shape"]


class StoreJournal(StoreTables):
    """The growth operations of a writable store."""

    def _resize_all(self, sizes: dict[str, int]) -> None:
        for spec in schema().arrays():
            arr = self.array(spec.key)
            shape = tuple(sizes[d] for d in spec.dims)
            if arr.shape != shape:
                arr.resize(shape)
        # array handles come from the consolidated metadata: refresh it, then reopen
        self.consolidate()
        self.root = open_group(self.location, "r+" if self.writable else "r")

    def append_tracks(self, tracks: TrackTable, attrs_after: dict[str, Any]) -> int:
        """Grow the store to ``tracks``, an extension of its track table; returns how many
        tracks were added. New tracks start unbuilt; nothing already built is touched."""
        old = self.tracks
        if not old.is_prefix_of(tracks):
            raise StoreMismatchError("internal: append_tracks needs an extension")
        n_new = len(tracks) - len(old)
        if n_new:
            new_rows = self._track_rows(tracks, len(old))
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
        group: DataGroup | str,
        rows: pd.DataFrame,
        genes: GeneRows,
        arrays: dict[str, np.ndarray],
        attrs_after: dict[str, Any],
    ) -> None:
        """Append plan rows to a data group's plan table; new rows start unbuilt.

        ``genes`` are the (row, gene) slots of the shards the new rows touch, from the
        first of those shards on (slots of a shard are rewritten whole); ``arrays`` holds
        per-row plan arrays of the new rows (``bin_index``, ``gene_bin_index``).
        """
        group = as_data_group(group)
        primary = self._primary()
        start = primary[group.row_dim]
        first_shard = start // self.layout.shard_rows(group)
        old_genes, _ = self.gene_rows(group)
        k = self.layout.gene_rows(group)
        keep = old_genes.iloc[: first_shard * k]
        n_kept_ranges = int((keep["range_start"] + keep["range_count"]).max()) if len(keep) else 0
        gene_table = genes.table.copy()
        gene_table["range_start"] += n_kept_ranges
        primary[group.row_dim] = start + len(rows)
        primary[group.gene_range_dim] = n_kept_ranges + len(genes.ranges)
        packed = [
            {"name": f"{group.plan}/{name}", "start": start, **_pack(values)}
            for name, values in arrays.items()
        ]
        if len(genes.ranges):
            packed += [
                {"name": f"{group.genes}/{name}", "start": n_kept_ranges, **_pack(column)}
                for name, column in (
                    ("bin_start", genes.ranges[:, 0]),
                    ("bin_stop", genes.ranges[:, 1]),
                )
            ]
        self._change(
            {
                "op": f"add-{group.name}",
                "primary": primary,
                "tables": [
                    {
                        "group": group.plan,
                        "start": start,
                        "rows": {c: rows[c].tolist() for c in rows.columns},
                    },
                    {
                        "group": group.genes,
                        "start": first_shard * k,
                        "rows": gene_table.to_dict("list"),
                    },
                ],
                "arrays": packed,
                "attrs_after": attrs_after,
            }
        )

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
                require_shape(packed["name"], values, arr)
            self.array(packed["name"])[start : start + len(values)] = values
        self._sync_coords()
        self.set_attrs({k: v for k, v in change["attrs_after"].items() if k != "pending_change"})
        self.consolidate()
        self._cache.clear()

    def _recover(self) -> None:
        """Finish a growth a killed process left half done (see :meth:`_change`)."""
        with self.structural_lock("finish an interrupted change"):
            root = open_group(self.location, "r+")
            fresh = type(self)(self.location, root, writable=True)
            pending = fresh.attrs.get("pending_change")
            if pending:
                fresh._apply(pending)
        self.root = open_group(self.location, "r+")
        self.attrs = dict(self.root.attrs[schema().root_key])  # type: ignore[arg-type]
        self._cache.clear()


def require_shape(name: str, values: np.ndarray, arr: zarr.Array[Any]) -> None:
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
