"""Reading what a store and its export hold: :func:`open_store` (the store as an
``xarray.DataTree``: rows indexed by genomic label, the track table on every ``track``
dim), :func:`gene_records` (per-gene records joined to their rows) and
:class:`Backgrounds` (percentile lookups against an exported NPZ, by chorus's rules,
spec §6.4).

:class:`Backgrounds` checks an export the way chorus's ``PerTrackNormalizer`` reads it,
without chorus: ``percentile = min(rank / W, 1)`` with ``W`` the grid width (never the
sample count), ties in a grid broken by a stable blake2b hash of (track, value), and
signed layers mapped to ``2q - 1``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

import numpy as np
from numpy.typing import NDArray

from chorus_store.errors import UsageError
from chorus_store.genome.tracks import GENE_LAYER
from chorus_store.store.core import ChorusStore
from chorus_store.store.schema import DataGroup, schema

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Backgrounds", "gene_records", "open_store", "row_labels", "tie_rank"]

#: The CDF layers of an export, in chorus's order.
LAYERS = ("effect", "summary", "perbin")

#: What several track ids look like to :meth:`Backgrounds.percentile` (a ``str`` is one).
TrackIds = NDArray[Any] | list[str] | tuple[str, ...]
#: One value: a Python or NumPy number (its ``repr`` seeds the tie hash, as in chorus).
Scalar = float | np.floating[Any] | np.integer[Any]


def _tie_draw(track_id: str, value: float) -> int:
    """chorus's stable draw inside a run of ties: blake2b of ``track\\0repr(value)``."""
    digest = hashlib.blake2b(f"{track_id}\x00{value!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def tie_rank(row: np.ndarray, value: float, track_id: str) -> int:
    """chorus's rank of ``value`` in a sorted grid row, hash-spread across ties
    (``PerTrackNormalizer._rank_with_tie_breaking``: a single exact match keeps
    ``side="right"``; a run of two or more draws uniformly from ``[lo, hi]``).

    >>> tie_rank(np.array([0.0, 1.0, 2.0]), 1.0, "T")
    2
    """
    lo = int(np.searchsorted(row, value, side="left"))
    hi = int(np.searchsorted(row, value, side="right"))
    if hi - lo <= 1:
        return hi
    return lo + _tie_draw(track_id, value) % (hi - lo + 1)


def _before(a: np.ndarray, b: np.ndarray) -> NDArray[np.bool_]:
    """``a < b`` in NumPy's sort order (NaN after everything), as searchsorted compares."""
    out: NDArray[np.bool_] = (a < b) | (np.isnan(b) & ~np.isnan(a))
    return out


def searchsorted_rows(
    cdfs: np.ndarray, rows: np.ndarray, values: np.ndarray, side: str
) -> NDArray[np.int64]:
    """``np.searchsorted(cdfs[rows[k]], values[k], side)`` for every ``k`` at once: one
    binary search over the grid width in lockstep (``log2 W`` vectorised steps), in
    NumPy's order (NaN last), so a query over 21,947 tracks is not 21,947 calls."""
    width = cdfs.shape[1]
    lo = np.zeros(len(values), np.int64)
    hi = np.full(len(values), width, np.int64)
    active = lo < hi
    while active.any():
        mid = (lo + hi) // 2
        probe = cdfs[rows, np.minimum(mid, width - 1)]
        # left: the first entry not before the value; right: the first one after it
        right = _before(probe, values) if side == "left" else ~_before(values, probe)
        lo = np.where(active & right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
        active = lo < hi
    return lo


def _ranks(
    cdfs: np.ndarray, rows: np.ndarray, values: np.ndarray, ids: Sequence[str] | np.ndarray
) -> NDArray[np.int64]:
    """chorus's tie-spread rank of each ``values[k]`` in grid row ``rows[k]``; ``ids[k]``
    (the track id as asked for) seeds the hash, as in ``_lookup_batch``: vectorised, and
    per value only inside a run of ties."""
    if len(rows) and (rows == rows[0]).all():
        lo = np.searchsorted(cdfs[rows[0]], values, side="left")
        hi = np.searchsorted(cdfs[rows[0]], values, side="right")
    else:
        lo = searchsorted_rows(cdfs, rows, values, "left")
        hi = searchsorted_rows(cdfs, rows, values, "right")
    ranks = hi.astype(np.int64)
    for k in map(int, np.flatnonzero(hi - lo > 1)):
        ranks[k] = lo[k] + _tie_draw(str(ids[k]), float(values[k])) % int(hi[k] - lo[k] + 1)
    return ranks


def _as_floats(value: Any) -> NDArray[np.float64]:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"percentile values must be numbers or an array of numbers ({exc}); "
            "pass e.g. 0.12 or np.array([0.1, 0.5])"
        ) from None


@dataclass(frozen=True)
class Backgrounds:
    """An exported ``{oracle}_pertrack.npz``, loaded as chorus loads it.

    Examples
    --------
    >>> bg = Backgrounds.load("demo-out/demo_pertrack.npz")  # doctest: +SKIP
    >>> bg.percentile("effect", "DEMO-DNASE-liver", 0.12)  # doctest: +SKIP
    0.9871
    """

    track_ids: list[str]
    cdfs: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    signed: np.ndarray
    build_config: dict[str, Any]
    #: track id → row, built once (chorus's ``track_index``: a repeated id keeps its last row)
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {t: i for i, t in enumerate(self.track_ids)})

    @classmethod
    def load(cls, path: str | Path) -> Backgrounds:
        """Read an NPZ (``allow_pickle=False``, as chorus does)."""
        with np.load(path, allow_pickle=False) as z:
            layers = [x for x in LAYERS if f"{x}_cdfs" in z.files]
            return cls(
                track_ids=[str(t) for t in z["track_ids"]],
                cdfs={x: z[f"{x}_cdfs"] for x in layers},
                # a layer without counts has samples everywhere (chorus's _has_samples)
                counts={x: z[f"{x}_counts"].astype(np.int64) for x in layers if f"{x}_counts" in z},
                signed=z["signed_flags"].astype(bool),
                build_config=json.loads(str(z["build_config"][0])),
            )

    def resolve(self, track_id: str) -> int | None:
        """The row chorus ranks ``track_id`` against, or None (``_match_track_id``: the
        id itself, then ``:``↔``_``, the id without a ``:+``/``:-`` strand, its last
        ``:`` part)."""
        if track_id in self.index:
            return self.index[track_id]
        candidates = [track_id.replace(":", "_"), track_id.replace("_", ":")]
        if track_id.endswith((":+", ":-")):
            candidates.append(track_id.rsplit(":", 1)[0])
        parts = track_id.split(":")
        if len(parts) >= 2:
            candidates.append(parts[-1])
        return next((self.index[c] for c in candidates if c in self.index), None)

    def row(self, track_id: str) -> int:
        """The row of ``track_id`` (as :meth:`resolve`); an unknown id is a UsageError."""
        i = self.resolve(track_id)
        if i is None:
            shown = ", ".join(self.track_ids[:3])
            raise UsageError(
                f"track '{track_id}' is not in this export ({len(self.track_ids)} tracks, "
                f"e.g. {shown}); pick one of Backgrounds.track_ids"
            )
        return i

    def _grid(self, layer: str) -> np.ndarray | None:
        if layer not in LAYERS:
            raise UsageError(f"no CDF layer '{layer}'; use one of {', '.join(LAYERS)}")
        return self.cdfs.get(layer)

    def _has_samples(self, layer: str, rows: np.ndarray) -> NDArray[np.bool_]:
        counts = self.counts.get(layer)
        ok: NDArray[np.bool_] = (
            np.ones(len(rows), bool) if counts is None else np.asarray(counts[rows] > 0)
        )
        return ok

    @overload
    def percentile(
        self, layer: str, track_id: str, value: Scalar, *, signed: bool | None = None
    ) -> float | None: ...

    @overload
    def percentile(
        self,
        layer: str,
        track_id: str,
        value: NDArray[Any] | Sequence[float],
        *,
        signed: bool | None = None,
    ) -> NDArray[np.float64] | None: ...

    @overload
    def percentile(
        self,
        layer: str,
        track_id: TrackIds,
        value: Scalar | NDArray[Any] | Sequence[float],
        *,
        signed: bool | None = None,
    ) -> NDArray[np.float64]: ...

    def percentile(
        self,
        layer: str,
        track_id: str | TrackIds,
        value: Scalar | NDArray[Any] | Sequence[float],
        *,
        signed: bool | None = None,
    ) -> float | NDArray[np.float64] | None:
        """Percentile of ``value`` for ``track_id``, as chorus's ``PerTrackNormalizer``.

        * one track, one value: a float, or None when the track is unknown or has no
          samples in ``layer`` (chorus's ``_lookup``);
        * one track, an array of values: an array of the same shape, or None for such a
          track (chorus's ``_lookup_batch``);
        * an array of track ids and values (broadcast together): an array, NaN where the
          track is unknown or has no samples.

        Effects of unsigned tracks are ranked as ``|value|``; ``signed`` defaults to the
        track's ``signed_flags`` entry for the effect layer and False otherwise. A layer
        the export lacks gives None (all NaN for several tracks), as in chorus.

        >>> bg = Backgrounds(["T"], {"summary": np.array([[0.0, 1, 2, 3]])},
        ...                  {"summary": np.array([8])}, np.array([False]), {})
        >>> bg.percentile("summary", "T", 1.5), bg.percentile("summary", "U", 1.5)
        (0.5, None)
        >>> bg.percentile("summary", ["T", "T", "U"], np.array([0.5, 9.0, 1.0]))
        array([0.25, 1.  ,  nan])
        """
        cdfs = self._grid(layer)
        if not isinstance(track_id, str):
            return self._many(layer, cdfs, track_id, value, signed)
        i = self.resolve(track_id)
        if cdfs is None or i is None or not self._has_samples(layer, np.array([i]))[0]:
            return None
        sign = bool(self.signed[i]) and layer == "effect" if signed is None else signed
        if np.ndim(value) == 0:
            # the value as given (not converted) seeds the tie hash, as in chorus's _lookup
            one = cast(float, abs(cast(float, value)) if layer == "effect" and not sign else value)
            q = min(tie_rank(cdfs[i], one, track_id) / int(cdfs.shape[1]), 1.0)
            return float(2.0 * q - 1.0) if sign else float(q)
        values = _as_floats(value)
        flat = np.abs(values.ravel()) if layer == "effect" and not sign else values.ravel()
        ranks = _ranks(cdfs, np.full(flat.size, i), flat, [track_id] * flat.size)
        qs: NDArray[np.float64] = np.minimum(ranks.astype(np.float64) / cdfs.shape[1], 1.0)
        return (2.0 * qs - 1.0 if sign else qs).reshape(values.shape)

    def _many(
        self,
        layer: str,
        cdfs: np.ndarray | None,
        track_ids: TrackIds,
        value: Scalar | NDArray[Any] | Sequence[float],
        signed: bool | None,
    ) -> NDArray[np.float64]:
        try:
            ids, values = np.broadcast_arrays(
                np.asarray(track_ids).astype(object), _as_floats(value)
            )
        except ValueError as exc:
            raise UsageError(
                f"track ids and values do not broadcast together ({exc}); pass as many "
                "values as track ids, or one value"
            ) from None
        flat_ids, flat = ids.ravel(), values.ravel().copy()
        out = np.full(flat.size, np.nan)
        if cdfs is None or flat.size == 0:
            return out.reshape(values.shape)
        unique, inverse = np.unique(flat_ids, return_inverse=True)
        found = [self.resolve(str(t)) for t in unique]
        rows = np.array([-1 if r is None else r for r in found], np.int64)[inverse.ravel()]
        ok = rows >= 0
        ok[ok] = self._has_samples(layer, rows[ok])
        if signed is None:
            sign = self.signed[np.maximum(rows, 0)] & (layer == "effect")
        else:
            sign = np.full(flat.size, signed)
        if layer == "effect":
            flat = np.where(sign, flat, np.abs(flat))
        ranks = _ranks(cdfs, rows[ok], flat[ok], flat_ids[ok])
        qs = np.minimum(ranks.astype(np.float64) / cdfs.shape[1], 1.0)
        out[ok] = np.where(sign[ok], 2.0 * qs - 1.0, qs)
        return out.reshape(values.shape)


# --------------------------------------------------------------------------------------
# the store as an xarray.DataTree
# --------------------------------------------------------------------------------------


def row_labels(plan: xr.Dataset | xr.DataTree, group: DataGroup) -> NDArray[Any]:
    """The index labels of a plan table's rows: ``chr1:12345`` for a position,
    ``chr1:12345:C>G`` for a SNP (1-based ``pos``, as stored); a row repeating an
    earlier row's label gets ``#2``, ``#3``, … so every label is unique.
    """
    import pandas as pd

    def column(name: str) -> pd.Series:
        return pd.Series(np.asarray(plan[name].values).astype(object)).astype(str)

    label = column("chrom") + ":" + column("pos")
    if group.has_alleles:
        label = label + ":" + column("ref") + ">" + column("alt")
    seen = label.groupby(label).cumcount()
    label = label.where(seen == 0, label + "#" + (seen + 1).astype(str))
    return np.asarray(label.to_numpy(), dtype=np.dtypes.StringDType())


def open_store(path: str | Path) -> xr.DataTree:
    """Open a store read-only as an ``xarray.DataTree``: one node per group, the data
    lazy, every coordinate loaded.

    ``path`` is a directory or an object-store URL (``s3://bucket/demo.zarr``). Nodes:
    ``tracks``, ``plan/positions``, ``plan/variants`` (and their gene twins),
    ``baselines``, ``variants`` and ``reductions/{effect,summary,perbin}``; the root's
    attributes are the store's provenance. On top of the stored groups:

    * ``position`` and ``variant`` are indexed by a label, ``chr1:12345`` and
      ``chr1:12345:C>G`` (:func:`row_labels`), so ``.sel(position="chr1:12345")`` and
      ``.sel(variant=[...])`` work; ``chrom``, ``pos``, ``stratum`` (``ref``, ``alt``)
      stay coordinates for ``.where`` and ``groupby``;
    * every node with a ``track`` dim carries the track table's columns (``layer``,
      ``assay_type``, ``signed``, ``window_bp``, ``formula``, …) as in-memory coordinates,
      so ``tree["baselines"].summary.groupby("layer")`` needs no ``.load()``;
    * gene dims carry ``gene_id`` beside ``gene_name`` and ``gene_row`` (-1: padding);
      :func:`gene_records` joins them to their rows and drops the padding;
    * data variables carry ``long_name``, ``units`` and ``sign`` attributes (from
      ``schemas/store-v2.json``).

    Plain ``xr.open_datatree(path, engine="zarr")`` opens the same tree, without the
    schema check, the labels or the track columns, and with coordinates lazy.

    Examples
    --------
    >>> tree = open_store("demo-out/demo.zarr")  # doctest: +SKIP
    >>> tree["baselines"].summary.sel(track="DEMO-DNASE-liver", position="chr1:1103829")
    ... # doctest: +SKIP
    """
    import xarray as xr

    store = ChorusStore.open(path)
    store.validate()
    tree = xr.open_datatree(store.location.zarr_store(read_only=True), engine="zarr", zarr_format=3)
    tracks = _node(tree, "tracks").to_dataset(inherit=False)
    columns = [c for c in schema().columns("tracks") if c != "track" and c in tracks]
    table = tracks[columns].load()
    labels = {g.row_dim: row_labels(_node(tree, g.plan), g) for g in schema().data_groups.values()}
    genes = {
        g.gene_dim: np.asarray(_node(tree, g.genes)["gene_id"].values)
        for g in schema().data_groups.values()
    }
    nodes = {}
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False)
        # coordinates are small and used for selection: load them, keep data lazy
        ds = ds.assign_coords({k: ds[k].load() for k in ds.coords})
        ds = _with_tracks(ds.drop_vars(columns) if node.path == "/tracks" else ds, table)
        ds = ds.assign_coords({d: (d, labels[d]) for d in labels if d in ds.dims})
        for dim in (d for d in genes if d in ds.dims and "gene_row" in ds.coords):
            ds = ds.assign_coords(gene_id=(dim, genes[dim]))
        nodes[node.path] = _with_attrs(ds, node.path.lstrip("/"))
    return xr.DataTree.from_dict(nodes)


def _node(tree: xr.DataTree, path: str) -> xr.DataTree:
    import xarray as xr

    node = tree[path]
    if not isinstance(node, xr.DataTree):
        raise UsageError(
            f"'{path}' is a variable, not a group, of this tree; pass open_store's tree"
        )
    return node


def _with_tracks(ds: xr.Dataset, table: xr.Dataset) -> xr.Dataset:
    if "track" not in ds.dims:
        return ds
    rows = table.sel(track=ds["track"].values)  # by label: robust to any track order
    return ds.assign_coords({c: ("track", rows[c].values) for c in table.data_vars})


def _with_attrs(ds: xr.Dataset, group: str) -> xr.Dataset:
    spec = schema().groups.get(group)
    if spec is None:
        return ds
    for name, var in ds.data_vars.items():
        a = spec.arrays.get(str(name))
        if a is not None:
            extra = {"long_name": a.long_name, "units": a.units, "sign": a.sign}
            var.attrs.update({k: v for k, v in extra.items() if v})
    return ds


def gene_records(
    tree: xr.DataTree, group: str = "baselines", *, gene_tracks_only: bool = True
) -> xr.Dataset:
    """A data group's per-gene records joined to their rows, padding dropped.

    ``group`` is ``baselines`` (``gene_summary``) or ``variants`` (``gene_ref_summary``,
    ``gene_alt_summary``, ``gene_effect``). Dims ``(position_gene | variant_gene,
    track)``, data lazy; one entry per scored (row, gene) pair, indexed by a
    ``(position | variant, gene_id)`` MultiIndex, with the row's ``chrom``, ``pos``,
    ``stratum`` (``ref``, ``alt``), its plan ``row`` and ``gene_name`` as coordinates.
    ``gene_tracks_only`` keeps only the tracks scored per gene (``gene_expression``);
    the others are NaN there.

    Examples
    --------
    >>> rna = gene_records(open_store("demo-out/demo.zarr"))  # doctest: +SKIP
    >>> rna.gene_summary.sel(gene_id="DEMO0269")  # every position scored for the gene
    ... # doctest: +SKIP
    >>> rna.gene_summary.groupby("stratum").median()  # doctest: +SKIP
    """
    import xarray as xr

    g = schema().data_group(group)
    ds = _node(tree, g.name).to_dataset(inherit=False)
    keep = np.flatnonzero(np.asarray(ds["gene_row"].values) >= 0)
    rows = np.asarray(ds["gene_row"].values)[keep]
    names = [a.name for a in g.gene_rows]
    out = ds[names].isel({g.gene_dim: keep}).drop_vars(["gene_row"])
    if gene_tracks_only:
        out = out.isel(track=np.flatnonzero(np.asarray(out["layer"].values) == GENE_LAYER))
    plan = {
        c: (g.gene_dim, np.asarray(ds[c].values)[rows])
        for c in (g.row_dim, *g.plan_columns)
        if c in ds.coords and ds[c].dims == (g.row_dim,)
    }
    out = out.assign_coords({**plan, "row": (g.gene_dim, rows)})
    return out.set_xindex([g.row_dim, "gene_id"], xr.indexes.PandasMultiIndex)
