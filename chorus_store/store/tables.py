"""Tables of a store as pandas frames: the track table, the plan rows, the gene slots.

Each table is a group of 1-d arrays over one dim (``schemas/store-v2.json``); its columns
are the schema's, read once per open store and cached.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from chorus_store.genome.tracks import TrackTable
from chorus_store.store.base import StoreBase
from chorus_store.store.schema import DataGroup, schema

__all__ = ["StoreTables", "as_data_group", "as_str_list"]

#: the stored track table names its id column ``track`` (the dim), the frame ``track_id``
_TRACK_ID = {"track": "track_id"}


def as_str_list(values: Any) -> list[str]:
    return [str(v) for v in np.asarray(values).tolist()]


def as_data_group(group: DataGroup | str) -> DataGroup:
    """``group`` itself, or the schema's data group of that name."""
    return group if isinstance(group, DataGroup) else schema().data_group(group)


class StoreTables(StoreBase):
    """Reads and writes of a store's tables (pandas <-> zarr)."""

    def _write_table(self, gname: str, df: pd.DataFrame, start: int) -> None:
        names = set(self.group(gname).array_keys())
        for col in df.columns:
            if col in names:
                arr = self.array(f"{gname}/{col}")
                values = df[col].to_numpy()
                if arr.dtype.kind in ("T", "U", "O"):
                    values = np.asarray([str(v) for v in values], dtype=object)
                arr[start : start + len(df)] = values

    @staticmethod
    def _track_rows(tracks: TrackTable, start: int) -> pd.DataFrame:
        """Rows ``start:`` of a track table, named as stored."""
        return tracks.frame.iloc[start:].rename(columns={v: k for k, v in _TRACK_ID.items()})

    def _write_tracks(self, tracks: TrackTable, start: int) -> None:
        self._write_table("tracks", self._track_rows(tracks, start), start)

    def _sync_coords(self) -> None:
        for spec in schema().arrays():
            if spec.source is not None:
                self.array(spec.key)[:] = self.array(spec.source)[:]

    def reuse_tables(self, other: StoreTables) -> None:
        """Take ``other``'s already-read track and plan tables, if it is the same store in
        the same structure (identical root attributes: every change of tracks or plan
        rewrites them, through the journal), instead of reading them again."""
        if other.url == self.url and other.attrs == self.attrs:
            keys = ["tracks", *(g.plan for g in schema().data_groups.values())]
            for key in keys:
                if key in other._cache:
                    self._cache.setdefault(key, other._cache[key])

    def read_table(self, gname: str) -> pd.DataFrame:
        """Every per-row column of the table group ``gname`` (schema order)."""
        out = {}
        for col in schema().columns(gname):
            values = self.read(f"{gname}/{col}")
            out[col] = as_str_list(values) if values.dtype.kind in ("T", "U", "O") else values
        return pd.DataFrame(out)

    def _cached_table(self, gname: str) -> pd.DataFrame:
        if gname not in self._cache:
            self._cache[gname] = self.read_table(gname)
        df: pd.DataFrame = self._cache[gname]
        return df

    @property
    def tracks(self) -> TrackTable:
        """The store's track table."""
        if "tracks" not in self._cache:
            frame = self.read_table("tracks").rename(columns=_TRACK_ID)
            self._cache["tracks"] = TrackTable.from_frame(frame)
        table: TrackTable = self._cache["tracks"]
        return table

    @property
    def positions(self) -> pd.DataFrame:
        """The plan's baseline positions: chrom, pos, stratum, usable, reject_reason."""
        return self._cached_table("plan/positions")

    @property
    def variants(self) -> pd.DataFrame:
        """The plan's SNPs: chrom, pos, ref, alt, stratum, usable, reject_reason."""
        return self._cached_table("plan/variants")

    def plan_table(self, group: DataGroup | str) -> pd.DataFrame:
        """The plan rows a data group is built over (``baselines`` → positions)."""
        return self._cached_table(as_data_group(group).plan)

    @property
    def resolutions(self) -> list[int]:
        """Distinct bin sizes of the oracle's binned heads (the per-bin draws' axis)."""
        return [int(r) for r in self.read("plan/positions/resolution_bp")]

    @property
    def strands(self) -> list[str]:
        """The strand samples of every row (``["+"]`` for most oracles)."""
        return as_str_list(self.read("baselines/strand"))

    def gene_rows(self, group: DataGroup | str) -> tuple[pd.DataFrame, np.ndarray]:
        """(row, gene) slots of ``group`` and their exon bin ranges (see
        :class:`~chorus_store.store.layout.GeneRows`)."""
        name = as_data_group(group).genes
        if name not in self._cache:
            table = self.read_table(name)
            ranges = np.stack([self.read(f"{name}/bin_start"), self.read(f"{name}/bin_stop")], 1)
            self._cache[name] = (table, ranges.reshape(-1, 2))
        out: tuple[pd.DataFrame, np.ndarray] = self._cache[name]
        return out
