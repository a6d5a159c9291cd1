"""The store schema as typed objects, parsed once from ``schemas/store-v<N>.json``.

Every other module asks :func:`schema` for arrays, coordinates, table columns and data
groups instead of indexing the JSON or branching on group names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from chorus_store._version import __version__
from chorus_store.errors import SchemaError
from chorus_store.resources import data_dir

__all__ = [
    "SCHEMA_VERSION",
    "ArraySpec",
    "GroupSpec",
    "DataGroup",
    "Schema",
    "schema",
    "layer_sources",
    "npz_contract",
]

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class ArraySpec:
    """One array of the schema: where it lives, its dims, dtype, fill and role.

    A coordinate copy (``baselines/chrom`` of ``plan/positions/chrom``) is its own spec
    with ``source`` naming the array it copies.
    """

    group: str
    name: str
    dims: tuple[str, ...]
    dtype: str  # a NumPy dtype name, or "str"
    role: str = ""  # "", "index", "data", "gene_data", "done", "reduction"
    fill: Any = None
    doc: str = ""
    coordinates: str | None = None
    derived_from: tuple[str, ...] = ()
    source: str | None = None
    # what a reader is told (open_store's variable attrs); the store itself never holds them
    long_name: str = ""
    units: str = ""
    sign: str = ""

    @property
    def key(self) -> str:
        """``group/name``, the array's path in the store."""
        return f"{self.group}/{self.name}"

    @property
    def is_str(self) -> bool:
        return self.dtype == "str"

    def fill_value(self) -> Any:
        """The Zarr fill value: the schema's, else the dtype's zero."""
        if self.fill == "NaN":
            return float("nan")
        if self.fill is not None:
            return self.fill
        return "" if self.is_str else False if self.dtype == "bool" else 0

    def matches_dtype(self, dtype: np.dtype[Any]) -> bool:
        """True when a stored array's ``dtype`` is this spec's (any string kind for str)."""
        return dtype.kind in ("T", "U", "O") if self.is_str else np.dtype(self.dtype) == dtype


@dataclass(frozen=True)
class GroupSpec:
    """One group: its own arrays, its coordinate copies, and (reductions) its sources."""

    name: str
    doc: str
    arrays: dict[str, ArraySpec]
    coords: dict[str, ArraySpec]  # coordinate copies only (not the group's own arrays)
    sources: tuple[str, ...] = ()

    @property
    def every_array(self) -> dict[str, ArraySpec]:
        """Own arrays, then coordinate copies: everything stored under this group."""
        return {**self.arrays, **self.coords}

    def with_role(self, *roles: str) -> list[ArraySpec]:
        return [a for a in self.arrays.values() if a.role in roles]


@dataclass(frozen=True)
class DataGroup:
    """A group of build records (``baselines`` or ``variants``), and what belongs to it.

    ``rows`` and ``gene_rows`` are the records over plan rows and over (row, gene) slots
    (the gene-record twins); ``plan`` and ``genes`` the plan tables they are built over.
    """

    name: str
    row_dim: str  # "position" / "variant"
    gene_dim: str  # "position_gene" / "variant_gene"
    shard_dim: str  # "position_shard" / "variant_shard"
    plan: str  # the plan table: "plan/positions"
    genes: str  # its (row, gene) table: "plan/position_genes"
    rows: tuple[ArraySpec, ...]
    gene_rows: tuple[ArraySpec, ...]
    plan_columns: tuple[str, ...]  # the per-row columns of the plan table

    @property
    def done(self) -> str:
        """The done marks: one per (row shard, track)."""
        return f"{self.name}/done_rows"

    @property
    def records(self) -> tuple[ArraySpec, ...]:
        """Every record array, rows first then gene twins."""
        return self.rows + self.gene_rows

    @property
    def plan_name(self) -> str:
        """The plan table's short name (``positions``), as in plan attributes and the CLI."""
        return self.plan.rsplit("/", 1)[1]

    @property
    def has_alleles(self) -> bool:
        """True for SNP rows (a ref and an alt window per row)."""
        return "alt" in self.plan_columns

    @property
    def gene_range_dim(self) -> str:
        return f"{self.gene_dim}_range"

    @property
    def shard_rows_key(self) -> str:
        """The :class:`~chorus_store.store.layout.Layout` field of rows per row shard."""
        return f"{self.row_dim}_shard_rows"

    @property
    def gene_rows_key(self) -> str:
        """The :class:`~chorus_store.store.layout.Layout` field of gene slots per shard."""
        return f"{self.row_dim}_gene_rows"

    @property
    def bin_record(self) -> ArraySpec | None:
        """The per-bin record (over ``bin_sample``), if the group has one."""
        return next((a for a in self.rows if "bin_sample" in a.dims), None)

    @property
    def summaries(self) -> tuple[tuple[ArraySpec, ArraySpec], ...]:
        """Per allele (positions: one; SNPs: ref, alt): its window-summary record and that
        record's gene twin (``summary`` → ``gene_summary``)."""
        twins = {a.name: a for a in self.gene_rows}
        return tuple(
            (a, twins[f"gene_{a.name}"])
            for a in self.rows
            if not a.derived_from and "bin_sample" not in a.dims
        )

    @property
    def buffered(self) -> tuple[ArraySpec, ...]:
        """The records the build accumulates per task (the rest derive from them)."""
        return tuple(a for a in self.records if not a.derived_from)


@dataclass(frozen=True)
class Schema:
    """A parsed store schema. Get the current one with :func:`schema`."""

    version: int
    root_key: str
    required_attrs: tuple[str, ...]
    compressors: tuple[dict[str, Any], ...]
    dims: dict[str, str]
    chunking: dict[str, dict[str, dict[str, Any]]]
    bin_samples: int
    groups: dict[str, GroupSpec]
    data_groups: dict[str, DataGroup] = field(default_factory=dict)

    def array(self, key: str) -> ArraySpec:
        """The spec of ``group/name`` (own array or coordinate copy)."""
        group, name = key.rsplit("/", 1)
        try:
            return self.groups[group].every_array[name]
        except KeyError:
            raise SchemaError(f"store schema v{self.version} has no array '{key}'") from None

    def arrays(self) -> list[ArraySpec]:
        """Every array of every group, coordinate copies included, in schema order."""
        return [a for g in self.groups.values() for a in g.every_array.values()]

    def columns(self, group: str) -> list[str]:
        """The per-row columns of a table group (``tracks``, ``plan/positions``, …): its
        arrays over the group's first dim."""
        arrays = list(self.groups[group].arrays.values())
        return [a.name for a in arrays if a.dims == arrays[0].dims[:1]]

    def data_group(self, name: str) -> DataGroup:
        """The data group ``baselines`` or ``variants``."""
        try:
            return self.data_groups[name]
        except KeyError:
            raise SchemaError(
                f"no data group '{name}'; known: {', '.join(self.data_groups)}"
            ) from None

    def data_group_of_dim(self, dim: str) -> DataGroup:
        """The data group whose rows or gene slots ``dim`` counts."""
        for g in self.data_groups.values():
            if dim in (g.row_dim, g.gene_dim, g.shard_dim):
                return g
        raise SchemaError(f"internal: dim '{dim}' belongs to no data group")

    def layer_group(self, layer: str) -> DataGroup:
        """The data group whose records a reduction layer ranks (``effect`` → variants)."""
        return self.data_group(self.groups[f"reductions/{layer}"].sources[0].split("/")[0])


def _array(group: str, name: str, raw: dict[str, Any], source: str | None = None) -> ArraySpec:
    return ArraySpec(
        group=group,
        name=name,
        dims=tuple(raw["dims"]),
        dtype=raw["dtype"],
        role=raw.get("role", ""),
        fill=raw.get("fill"),
        doc=raw.get("doc", ""),
        coordinates=raw.get("coordinates"),
        derived_from=tuple(raw.get("derived_from", ())),
        source=source,
        long_name=raw.get("long_name", ""),
        units=raw.get("units", ""),
        sign=raw.get("sign", ""),
    )


def _parse(raw: dict[str, Any]) -> Schema:
    raw_groups: dict[str, dict[str, Any]] = {}
    for name, group in raw["groups"].items():
        raw_groups[name] = (
            {**raw["templates"][group["template"]], **group} if "template" in group else group
        )
    groups: dict[str, GroupSpec] = {}
    for gname, g in raw_groups.items():
        arrays = {a: _array(gname, a, spec) for a, spec in g["arrays"].items()}
        coords = {}
        for cname, source in g.get("coords", {}).items():
            if cname in arrays:
                continue
            src_group, src_name = source.rsplit("/", 1)
            coords[cname] = _array(gname, cname, raw_groups[src_group]["arrays"][src_name], source)
        groups[gname] = GroupSpec(
            gname, g.get("doc", ""), arrays, coords, tuple(g.get("sources", ()))
        )
    out = Schema(
        version=int(raw["version"]),
        root_key=raw["root_attrs"]["key"],
        required_attrs=tuple(raw["root_attrs"]["required"]),
        compressors=tuple(raw["codecs"]["compressors"]),
        dims=dict(raw["dims"]),
        chunking={k: v for k, v in raw["chunking"].items() if k != "doc"},
        bin_samples=int(raw["bin_samples"]["count"]),
        groups=groups,
    )
    for gspec in groups.values():
        rows = gspec.with_role("data")
        if not rows:
            continue
        gene_rows = gspec.with_role("gene_data")
        plan = gspec.coords["chrom"].source
        genes = gspec.coords["gene_row"].source
        assert plan is not None and genes is not None
        plan_group = plan.rsplit("/", 1)[0]
        done = gspec.arrays["done_rows"]
        out.data_groups[gspec.name] = DataGroup(
            name=gspec.name,
            row_dim=rows[0].dims[0],
            gene_dim=gene_rows[0].dims[0],
            shard_dim=done.dims[0],
            plan=plan_group,
            genes=genes.rsplit("/", 1)[0],
            rows=tuple(rows),
            gene_rows=tuple(gene_rows),
            plan_columns=tuple(out.columns(plan_group)),
        )
    return out


@cache
def schema(version: int = SCHEMA_VERSION) -> Schema:
    """The store schema ``schemas/store-v<version>.json``, parsed once per process."""
    path = data_dir("schemas") / f"store-v{version}.json"
    if not path.is_file():
        raise SchemaError(f"chorus-store {__version__} has no store schema v{version}")
    return _parse(json.loads(path.read_text()))


def layer_sources(layer: str) -> list[str]:
    """The record arrays whose values a reduction layer ranks (rows concatenated)."""
    return list(schema().groups[f"reductions/{layer}"].sources)


@cache
def npz_contract() -> dict[str, Any]:
    """The NPZ contract ``schemas/npz-v4.json``: the keys a ``{oracle}_pertrack.npz``
    carries, their dtypes and shapes, which the export's validator checks."""
    path = data_dir("schemas") / "npz-v4.json"
    if not path.is_file():
        raise SchemaError(f"chorus-store {__version__} has no NPZ contract {path.name}")
    contract: dict[str, Any] = json.loads(path.read_text())
    return contract
