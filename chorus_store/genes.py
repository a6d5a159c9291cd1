"""Per-gene exon masks for the ``gene_expression`` layer (spec §4.5).

chorus scores an RNA track per gene: the mean of the track over the bins touched by the
gene's exons, one sample per (gene, track) and position. Which genes a window counts
depends on the oracle:

* ``overlap`` (Borzoi): protein-coding genes whose span overlaps the prediction interval;
  mask = the merged exons of every transcript of the gene;
* ``tss`` (AlphaGenome): genes with a protein-coding transcript whose TSS (first exon
  start on +, last exon end on −) lies in the prediction interval; mask = the merged
  exons of those transcripts only.

Bins of a gene: every bin touched by a clipped exon, ``b0 = (s - pred_start) // res``,
``b1 = ceil((e - pred_start) / res)``, clipped to ``[0, n_bins)``. Masks are kept as
merged bin ranges, not bin lists, so a 1 bp head's masks stay small.

The prediction interval of a row is its input window's start (``pos - L/2``) plus the
head's offset — the central interval the query maps exons through. (chorus's Borzoi
builder used the input start instead, placing masks 163,840 bp off; spec §10 item 1.
The statistic here is the one the query computes.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .errors import InputFileError

__all__ = ["GeneIndex", "GeneMask", "merge_intervals", "bin_ranges"]

Mode = Literal["overlap", "tss"]


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
    exons: list[tuple[int, int]], pred_start: int, resolution_bp: int, n_bins: int
) -> list[tuple[int, int]]:
    """Merged bin ranges ``[b0, b1)`` touched by genomic half-open ``exons``."""
    ranges = []
    for s, e in exons:
        b0 = max((s - pred_start) // resolution_bp, 0)
        b1 = min(math.ceil((e - pred_start) / resolution_bp), n_bins)
        if b1 > b0:
            ranges.append((b0, b1))
    if not ranges:
        return []
    arr = np.asarray(ranges)
    return merge_intervals(arr[:, 0], arr[:, 1])


@dataclass(frozen=True)
class GeneMask:
    gene_id: str
    gene_name: str
    ranges: list[tuple[int, int]]  # bin ranges, merged


@dataclass
class _Unit:
    """A gene (overlap mode) or a protein-coding transcript (tss mode) on one contig."""

    key: str
    gene_id: str
    gene_name: str
    anchor_start: np.ndarray  # span start (overlap) or TSS (tss), 0-based
    anchor_end: np.ndarray  # span end (overlap) or TSS + 1 (tss)
    exons: dict[str, list[tuple[int, int]]]


class GeneIndex:
    """Genes and their exons, indexed for one selection rule.

    Build with :meth:`from_gtf` from rows of :func:`chorus_store.genome.read_gtf`
    (features ``gene``, ``transcript`` and ``exon``).
    """

    def __init__(self, mode: Mode, units: pd.DataFrame, exons: dict[str, list[tuple[int, int]]]):
        self.mode = mode
        self._units = {
            c: g.sort_values("start").reset_index(drop=True) for c, g in units.groupby("chrom")
        }
        self._exons = exons

    @classmethod
    def from_gtf(cls, gtf: pd.DataFrame, mode: Mode) -> GeneIndex:
        if mode not in ("overlap", "tss"):
            raise ValueError(f"gene selection mode must be 'overlap' or 'tss', not {mode!r}")
        genes = gtf[(gtf["feature"] == "gene") & (gtf["gene_type"] == "protein_coding")]
        if genes.empty:
            raise InputFileError("the GTF has no protein-coding genes; RNA tracks need them")
        exons = gtf[gtf["feature"] == "exon"].copy()
        exons["s"] = exons["start"] - 1  # GTF 1-based inclusive → 0-based half-open
        exons["e"] = exons["end"]
        if mode == "overlap":
            # chorus: exon rows whose gene_name is a protein-coding gene's, merged per gene
            pc_names = set(genes["gene_name"])
            exons = exons[exons["gene_name"].isin(pc_names)]
            spans = (
                genes.groupby(["chrom", "gene_name"], sort=True)
                .agg(start=("start", "min"), end=("end", "max"), gene_id=("gene_id", "first"))
                .reset_index()
            )
            spans["start"] -= 1
            units = spans.assign(key=spans["chrom"] + ":" + spans["gene_name"])
            merged = {
                f"{c}:{n}": merge_intervals(g["s"].to_numpy(), g["e"].to_numpy())
                for (c, n), g in exons.groupby(["chrom", "gene_name"], sort=False)
            }
        else:
            pc_tx = exons[exons["transcript_type"] == "protein_coding"]
            if pc_tx.empty:
                raise InputFileError("the GTF has no protein-coding transcripts (transcript_type)")
            tx = (
                pc_tx.groupby("transcript_id", sort=True)
                .agg(
                    chrom=("chrom", "first"),
                    strand=("strand", "first"),
                    gene_id=("gene_id", "first"),
                    gene_name=("gene_name", "first"),
                    first=("s", "min"),
                    last=("e", "max"),
                )
                .reset_index()
            )
            tss = np.where(tx["strand"] == "+", tx["first"], tx["last"] - 1)
            units = pd.DataFrame(
                {
                    "chrom": tx["chrom"],
                    "key": tx["transcript_id"],
                    "gene_id": tx["gene_id"],
                    "gene_name": tx["gene_name"],
                    "start": tss,
                    "end": tss + 1,
                }
            )
            merged = {
                t: merge_intervals(g["s"].to_numpy(), g["e"].to_numpy())
                for t, g in pc_tx.groupby("transcript_id", sort=False)
            }
        return cls(mode, units, merged)

    def genes_in(
        self, chrom: str, start: int, end: int
    ) -> list[tuple[str, str, list[tuple[int, int]]]]:
        """``(gene_id, gene_name, merged exons)`` counted by ``[start, end)``, by gene name."""
        units = self._units.get(chrom)
        if units is None:
            return []
        hit = units[(units["start"] < end) & (units["end"] > start)]
        by_gene: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        for rec in hit.itertuples(index=False):
            gid, intervals = by_gene.get(rec.gene_name, (rec.gene_id, []))
            by_gene[rec.gene_name] = (gid, intervals + self._exons.get(rec.key, []))
        out = []
        for name in sorted(by_gene):
            gid, intervals = by_gene[name]
            arr = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
            out.append((gid, name, merge_intervals(arr[:, 0], arr[:, 1])))
        return out

    def masks(self, chrom: str, pred_start: int, resolution_bp: int, n_bins: int) -> list[GeneMask]:
        """The gene masks of a prediction interval; genes with an empty mask are skipped."""
        pred_end = pred_start + n_bins * resolution_bp
        out = []
        for gid, name, exons in self.genes_in(chrom, pred_start, pred_end):
            ranges = bin_ranges(exons, pred_start, resolution_bp, n_bins)
            if ranges:
                out.append(GeneMask(gid, name, ranges))
        return out
