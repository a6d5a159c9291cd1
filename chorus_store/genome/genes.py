"""Per-gene exon masks for the ``gene_expression`` layer (spec §4.5).

chorus scores an RNA track per gene at query time: the track summed over each merged exon's
bins, divided by the number of bins summed. Which genes a window counts (the population,
``[plan] rna_genes``) and how exons become bins (the convention, ``[plan] rna_convention``)
are chosen per recipe; ``docs/design-notes.md`` ("RNA per-gene statistic") says why each
default is what it is. Masks are kept as bin ranges, not bin lists, so 1 bp masks stay small.

The prediction interval of a row is its input window's start (``pos - L/2``) plus the
head's offset — the central interval the query maps exons through. (chorus's Borzoi
builder used the input start instead, placing masks 163,840 bp off; spec §10 item 1.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from chorus_store.errors import InputFileError, RecipeError

__all__ = [
    "Convention",
    "GeneIndex",
    "GeneMask",
    "Mode",
    "bin_ranges",
    "merge_intervals",
    "protein_coding",
    "gene_tss",
]


def protein_coding(gtf: pd.DataFrame) -> pd.DataFrame:
    """The protein-coding ``gene`` rows of a GTF table (chorus's gene population)."""
    return gtf[(gtf["feature"] == "gene") & (gtf["gene_type"] == "protein_coding")]


def gene_tss(genes: pd.DataFrame) -> np.ndarray:
    """Each gene's TSS as chorus's samplers take it: the GTF ``start`` on ``+``, ``end`` on
    ``-`` (GTF coordinates as read). The RNA scoring's transcript TSS is
    :class:`GeneIndex`'s, with its own convention."""
    return np.asarray(np.where(genes["strand"] == "+", genes["start"], genes["end"]))


#: the gene population: span overlaps the window (chorus's query) or a TSS lies in it
Mode = Literal["overlap", "tss"]
#: ``chorus-query``: GTF columns as chorus reads them, one bin span per merged exon (a bin
#: two exons touch counts twice); ``exact``: 0-based exons, each bin once
Convention = Literal["chorus-query", "exact"]


def merge_intervals(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Union of half-open intervals, sorted and merged (touching intervals join)."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(zip(starts.tolist(), ends.tolist(), strict=True)):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def bin_ranges(
    exons: list[tuple[int, int]],
    pred_start: int,
    resolution_bp: int,
    n_bins: int,
    *,
    merge: bool = True,
) -> list[tuple[int, int]]:
    """Bin ranges ``[b0, b1)`` touched by half-open ``exons``, clipped to the interval.

    One range per exon in exon order when ``merge`` is false (chorus's query sums each
    exon's span on its own, so a bin two exons touch counts twice); their union otherwise.
    """
    ranges = []
    for s, e in exons:
        b0 = max((s - pred_start) // resolution_bp, 0)
        b1 = min(math.ceil((e - pred_start) / resolution_bp), n_bins)
        if b1 > b0:
            ranges.append((b0, b1))
    if not ranges or not merge:
        return ranges
    arr = np.asarray(ranges)
    return merge_intervals(arr[:, 0], arr[:, 1])


@dataclass(frozen=True)
class GeneMask:
    gene_id: str
    gene_name: str
    #: bin ranges: one per exon (``chorus-query``, may overlap) or merged (``exact``)
    ranges: list[tuple[int, int]]


class GeneIndex:
    """Protein-coding genes and their exons, indexed for one population and convention.

    Build with :meth:`from_gtf` from rows of :func:`chorus_store.genome.read_gtf`
    (features ``gene`` and ``exon``).
    """

    def __init__(
        self,
        mode: Mode,
        convention: Convention,
        units: pd.DataFrame,
        exons: dict[str, list[tuple[int, int]]],
    ) -> None:
        self.mode = mode
        self.convention = convention
        self._units = {
            c: g.sort_values(["start", "gene_name"], kind="stable").reset_index(drop=True)
            for c, g in units.groupby("chrom")
        }
        self._exons = exons

    @classmethod
    def from_gtf(
        cls, gtf: pd.DataFrame, mode: Mode, convention: Convention = "chorus-query"
    ) -> GeneIndex:
        """Index ``gtf`` for population ``mode`` under ``convention``.

        Parameters
        ----------
        gtf
            Rows of :func:`chorus_store.genome.read_gtf` (1-based inclusive columns).
        mode
            ``"overlap"``: protein-coding genes whose ``gene`` row overlaps the window, by
            chorus's query test (``end >= start`` and ``start <= end`` on the raw columns
            for ``chorus-query``, half-open 0-based for ``exact``). ``"tss"``: genes with
            a transcript whose TSS (first exon start on +, last exon end on −) lies in
            ``[start, end)``, over every transcript of the gene (chorus's AlphaGenome
            builder).
        convention
            ``"chorus-query"`` or ``"exact"`` (see :data:`Convention`).

        Either way a gene's exons are every exon row carrying its ``gene_name`` (all
        transcripts of the gene, as chorus's ``get_gene_exons``), merged per (chrom,
        strand, gene_name) with touching exons joined.
        """
        if mode not in get_args(Mode):
            raise RecipeError(
                f"[plan] rna_genes must be one of {list(get_args(Mode))}, not {mode!r}; "
                f"fix the recipe"
            )
        if convention not in get_args(Convention):
            raise RecipeError(
                f"[plan] rna_convention must be one of {list(get_args(Convention))}, "
                f"not {convention!r}; fix the recipe"
            )
        genes = protein_coding(gtf)
        if genes.empty:
            raise InputFileError("the GTF has no protein-coding genes; RNA tracks need them")
        # chorus reads the start column as a 0-based start (one base late); exact shifts it
        shift = 0 if convention == "chorus-query" else 1
        exons = gtf[
            (gtf["feature"] == "exon") & gtf["gene_name"].isin(set(genes["gene_name"]))
        ].copy()
        exons["s"] = exons["start"] - shift
        exons["e"] = exons["end"]
        keys = exons["chrom"] + ":" + exons["gene_name"]
        exons = exons.assign(key=keys)
        merged: dict[str, list[tuple[int, int]]] = {}
        for (key, _strand), g in exons.groupby(["key", "strand"], sort=True):
            merged.setdefault(str(key), []).extend(
                merge_intervals(g["s"].to_numpy(), g["e"].to_numpy())
            )
        for spans in merged.values():
            spans.sort()
        if mode == "overlap":
            # a half-open anchor tested against [start, end): chorus's closed test on raw
            # columns (end >= start, start <= end) is the anchor [S - 1, E + 1)
            units = pd.DataFrame(
                {
                    "chrom": genes["chrom"],
                    "key": genes["chrom"] + ":" + genes["gene_name"],
                    "gene_id": genes["gene_id"],
                    "gene_name": genes["gene_name"],
                    "start": genes["start"] - 1,
                    "end": genes["end"] + (1 if convention == "chorus-query" else 0),
                }
            )
        else:
            tx = (
                exons.groupby("transcript_id", sort=True)
                .agg(
                    chrom=("chrom", "first"),
                    strand=("strand", "first"),
                    key=("key", "first"),
                    gene_id=("gene_id", "first"),
                    gene_name=("gene_name", "first"),
                    first=("s", "min"),
                    last=("e", "max"),
                )
                .reset_index()
            )
            # chorus: TSS = spans[0][0] on +, spans[-1][1] on − (raw columns); exact: the
            # 0-based first base on +, the last base on −
            tss = np.where(tx["strand"] == "+", tx["first"], tx["last"] - shift)
            units = pd.DataFrame(
                {
                    "chrom": tx["chrom"],
                    "key": tx["key"],
                    "gene_id": tx["gene_id"],
                    "gene_name": tx["gene_name"],
                    "start": tss,
                    "end": tss + 1,
                }
            )
        return cls(mode, convention, units, merged)

    def genes_in(
        self, chrom: str, start: int, end: int
    ) -> list[tuple[str, str, list[tuple[int, int]]]]:
        """``(gene_id, gene_name, exons)`` counted by ``[start, end)``, by gene name.

        ``exons`` are the gene's merged exons on ``chrom`` in the index's coordinates.
        """
        units = self._units.get(chrom)
        if units is None:
            return []
        hit = units[(units["start"] < end) & (units["end"] > start)]
        by_gene: dict[str, tuple[str, str]] = {}
        for rec in hit.itertuples(index=False):
            by_gene.setdefault(str(rec.gene_name), (str(rec.gene_id), str(rec.key)))
        return [
            (gid, name, self._exons.get(key, [])) for name, (gid, key) in sorted(by_gene.items())
        ]

    def masks(self, chrom: str, pred_start: int, resolution_bp: int, n_bins: int) -> list[GeneMask]:
        """The gene masks of a prediction interval; genes with an empty mask are skipped."""
        pred_end = pred_start + n_bins * resolution_bp
        merge = self.convention == "exact"
        out = []
        for gid, name, exons in self.genes_in(chrom, pred_start, pred_end):
            ranges = bin_ranges(exons, pred_start, resolution_bp, n_bins, merge=merge)
            if ranges:
                out.append(GeneMask(gid, name, ranges))
        return out
