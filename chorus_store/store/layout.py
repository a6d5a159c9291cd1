"""Chunking of a store (:class:`Layout`) and what the plan hands the store to write.

A store's layout is fixed when it is created and kept in its root attributes; stores
written before the ``tracks_per_shard``/``tracks_per_chunk`` names open unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from chorus_store.errors import RecipeError
from chorus_store.store.schema import ArraySpec, DataGroup, schema

__all__ = ["BIN_SAMPLES", "Layout", "GeneRows", "PlanArrays", "RENAMED_KEYS"]

#: bins each usable position contributes to the per-bin null: chorus's 32, declared in
#: the store schema (``bin_samples``), not a setting
BIN_SAMPLES = schema().bin_samples

#: layout keys as stores and recipes before issue 11 name them → their names now
RENAMED_KEYS = {"track_shard": "tracks_per_shard", "track_chunk": "tracks_per_chunk"}


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
    def empty(cls) -> GeneRows:
        """No (row, gene) slots: the oracle has no gene_expression track."""
        group = schema().groups["plan/position_genes"]
        table = pd.DataFrame(
            {
                name: [] if group.arrays[name].is_str else np.zeros(0, group.arrays[name].dtype)
                for name in schema().columns(group.name)
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

    def rows(self, group: DataGroup) -> pd.DataFrame:
        """The plan rows of a data group."""
        frame: pd.DataFrame = getattr(self, group.plan_name)
        return frame

    def genes(self, group: DataGroup) -> GeneRows:
        """The (row, gene) slots of a data group."""
        genes: GeneRows = getattr(self, f"{group.row_dim}_genes")
        return genes


@dataclass(frozen=True)
class Layout:
    """Chunking of a store. Fixed when the store is created.

    ``position_shard_rows`` / ``variant_shard_rows`` rows × ``tracks_per_shard`` tracks is
    one shard: the unit one writer owns and the build's unit of work and resume.
    ``tracks_per_chunk`` tracks is the inner chunk and the reduce's block.
    """

    position_shard_rows: int = 256
    variant_shard_rows: int = 256
    tracks_per_shard: int = 512
    tracks_per_chunk: int = 64
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
        if not problems and self.tracks_per_shard % self.tracks_per_chunk:
            problems.append(
                f"tracks_per_shard = {self.tracks_per_shard} is not a multiple of "
                f"tracks_per_chunk = {self.tracks_per_chunk}"
            )
        if problems:
            raise RecipeError(
                "[layout] has values out of range: " + "; ".join(problems) + ". Fix them in "
                "the recipe's [layout] section."
            )

    def shard_rows(self, group: DataGroup) -> int:
        """Rows per row shard of ``group``."""
        rows: int = getattr(self, group.shard_rows_key)
        return rows

    def gene_rows(self, group: DataGroup) -> int:
        """(row, gene) slots per row shard of ``group``."""
        rows: int = getattr(self, group.gene_rows_key)
        return rows

    def chunking(
        self, spec: ArraySpec, sizes: dict[str, int]
    ) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """Inner chunks and shards of a new array, by its role's rule in the schema's
        ``chunking`` (``None``: not sharded)."""
        rules = schema().chunking
        rule = rules.get(spec.role, rules["default"])
        chunks = self._lengths(spec, rule["chunks"], sizes)
        if "shards" not in rule:
            return chunks, None
        return chunks, self._lengths(spec, {**rule["chunks"], **rule["shards"]}, sizes)

    def _lengths(
        self, spec: ArraySpec, rule: dict[str, Any], sizes: dict[str, int]
    ) -> tuple[int, ...]:
        out = []
        for i, dim in enumerate(spec.dims):
            token = rule["@rows"] if i == 0 and "@rows" in rule else rule.get(dim, rule.get("*"))
            if token == "whole":
                out.append(sizes[dim])
            elif token in ("shard_rows", "gene_rows"):
                group = schema().data_group_of_dim(dim)
                out.append(
                    self.shard_rows(group) if token == "shard_rows" else self.gene_rows(group)
                )
            elif isinstance(token, int):
                out.append(token)
            else:
                out.append(int(getattr(self, str(token))))
        # a dim of size 0 (no genes, no resolutions) still needs a chunk of 1
        return tuple(max(1, n) for n in out)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "") -> Layout:
        """A layout from stored attributes or a recipe's ``[layout]``.

        The names before issue 11 (``track_shard``, ``track_chunk``) are read too: a store's
        attributes keep them for life. ``source`` (a recipe path) asks for a deprecation
        warning when a recipe uses them.
        """
        d = dict(d)
        renamed = []
        for old, new in RENAMED_KEYS.items():
            if old not in d:
                continue
            if new in d:
                raise RecipeError(f"[layout] sets both {old!r} and {new!r}; keep only {new!r}")
            d[new] = d.pop(old)
            renamed.append(f"{old!r} is now {new!r}")
        if renamed and source:
            warnings.warn(
                f"{source}: in [layout], {' and '.join(renamed)}; rename them",
                DeprecationWarning,
                stacklevel=2,
            )
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise RecipeError(
                f"[layout] has unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**d)
