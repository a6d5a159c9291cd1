"""Reading what a store and its export hold: :func:`open_store` (an ``xarray.DataTree``
of the store) and :class:`Backgrounds` (percentile lookups against an exported NPZ, by
chorus's rules, spec §6.4).

:class:`Backgrounds` checks an export the way chorus will read it, without chorus:
``percentile = min(rank / W, 1)`` with ``W`` the grid width (never the sample count),
ties in a grid broken by a stable blake2b hash of (track, value), and signed layers mapped
to ``2q - 1``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.store.core import ChorusStore

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Backgrounds", "open_store", "tie_rank"]


def tie_rank(row: np.ndarray, value: float, track_id: str) -> int:
    """chorus's rank of ``value`` in a sorted grid row, hash-spread across ties."""
    lo = int(np.searchsorted(row, value, side="left"))
    hi = int(np.searchsorted(row, value, side="right"))
    if hi - lo <= 1:
        return hi
    digest = hashlib.blake2b(f"{track_id}\x00{value!r}".encode(), digest_size=8).digest()
    return lo + int.from_bytes(digest, "big") % (hi - lo + 1)


@dataclass(frozen=True)
class Backgrounds:
    """An exported ``{oracle}_pertrack.npz``, loaded as chorus loads it."""

    track_ids: list[str]
    cdfs: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    signed: np.ndarray
    build_config: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Backgrounds:
        with np.load(path, allow_pickle=False) as z:
            layers = [x for x in ("effect", "summary", "perbin") if f"{x}_cdfs" in z.files]
            return cls(
                track_ids=[str(t) for t in z["track_ids"]],
                cdfs={x: z[f"{x}_cdfs"] for x in layers},
                counts={x: z[f"{x}_counts"].astype(np.int64) for x in layers},
                signed=z["signed_flags"].astype(bool),
                build_config=json.loads(str(z["build_config"][0])),
            )

    def row(self, track_id: str) -> int:
        return self.track_ids.index(track_id)

    def percentile(
        self, layer: str, track_id: str, value: float, *, signed: bool | None = None
    ) -> float | None:
        """Percentile of ``value`` for ``track_id`` (None when the track has no samples).

        Effects of unsigned layers are ranked as ``|value|``; ``signed`` defaults to the
        track's ``signed_flags`` entry for the effect layer and False otherwise.
        """
        i = self.row(track_id)
        if self.counts[layer][i] <= 0:
            return None
        grid = self.cdfs[layer][i]
        if signed is None:
            signed = bool(self.signed[i]) and layer == "effect"
        if layer == "effect" and not signed:
            value = abs(value)
        q = min(tie_rank(grid, value, track_id) / int(grid.shape[0]), 1.0)
        return 2 * q - 1 if signed else q


def open_store(path: str | Path) -> xr.DataTree:
    """Open a store read-only as an ``xarray.DataTree``: one node per group, with named
    dims and the coordinates each group carries (loaded; the data stay lazy).

    ``path`` is a directory or an object-store URL (``s3://bucket/demo.zarr``). Nodes:
    ``tracks``, ``plan/positions``, ``plan/variants`` (and their gene twins),
    ``baselines``, ``variants`` and ``reductions/{effect,summary,perbin}``; the root's
    attributes are the store's provenance. Plain ``xr.open_datatree(path, engine="zarr")``
    opens the same tree, without the schema check and with coordinates lazy.

    Examples
    --------
    >>> tree = open_store("demo-out/demo.zarr")  # doctest: +SKIP
    >>> tree["baselines"].summary.sel(track="DEMO-DNASE-liver").mean().item()  # doctest: +SKIP
    """
    import xarray as xr

    store = ChorusStore.open(path)
    store.validate()
    tree = xr.open_datatree(store.location.zarr_store(read_only=True), engine="zarr", zarr_format=3)
    # coordinates are small and used for selection: load them, keep data lazy
    return tree.map_over_datasets(_load_coords)


def _load_coords(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign_coords({k: ds[k].load() for k in ds.coords})
