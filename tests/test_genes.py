"""Per-gene exon masks (spec §4.5): selection rules, bin arithmetic, per-bin draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus_store.genes import GeneIndex, bin_ranges, merge_intervals
from chorus_store.genome import read_gtf
from chorus_store.plan import gene_bin_draws
from chorus_store.store import GeneRows

GTF = """\
chr1\tT\tgene\t1001\t5000\t.\t+\t.\tgene_id "G1"; gene_type "protein_coding"; gene_name "A";
chr1\tT\ttranscript\t1001\t5000\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_type "protein_coding"; gene_name "A"; transcript_type "protein_coding";
chr1\tT\texon\t1001\t1200\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_name "A"; transcript_type "protein_coding";
chr1\tT\texon\t4001\t5000\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_name "A"; transcript_type "protein_coding";
chr1\tT\ttranscript\t3001\t5000\t.\t+\t.\tgene_id "G1"; transcript_id "T2"; gene_type "protein_coding"; gene_name "A"; transcript_type "retained_intron";
chr1\tT\texon\t3001\t3100\t.\t+\t.\tgene_id "G1"; transcript_id "T2"; gene_name "A"; transcript_type "retained_intron";
chr1\tT\tgene\t8001\t20000\t.\t-\t.\tgene_id "G2"; gene_type "protein_coding"; gene_name "B";
chr1\tT\ttranscript\t8001\t20000\t.\t-\t.\tgene_id "G2"; transcript_id "T3"; gene_type "protein_coding"; gene_name "B"; transcript_type "protein_coding";
chr1\tT\texon\t8001\t8500\t.\t-\t.\tgene_id "G2"; transcript_id "T3"; gene_name "B"; transcript_type "protein_coding";
chr1\tT\texon\t19001\t20000\t.\t-\t.\tgene_id "G2"; transcript_id "T3"; gene_name "B"; transcript_type "protein_coding";
chr1\tT\tgene\t30001\t31000\t.\t+\t.\tgene_id "G3"; gene_type "lncRNA"; gene_name "C";
chr1\tT\texon\t30001\t31000\t.\t+\t.\tgene_id "G3"; transcript_id "T4"; gene_name "C"; transcript_type "lncRNA";
"""


@pytest.fixture()
def gtf(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "g.gtf"
    path.write_text(GTF)
    return read_gtf(path, ("gene", "transcript", "exon"))


def test_overlap_mode_counts_protein_coding_gene_spans(gtf: pd.DataFrame) -> None:
    index = GeneIndex.from_gtf(gtf, "overlap")
    hits = index.genes_in("chr1", 4_500, 8_100)  # overlaps A's span and B's span
    assert [(gid, name) for gid, name, _ in hits] == [("G1", "A"), ("G2", "B")]
    exons_a = hits[0][2]  # every exon of gene A (both transcripts), merged, 0-based
    assert exons_a == [(1000, 1200), (3000, 3100), (4000, 5000)]
    assert index.genes_in("chr1", 29_000, 32_000) == []  # lncRNA genes are not counted


def test_tss_mode_counts_transcripts_whose_tss_is_inside(gtf: pd.DataFrame) -> None:
    index = GeneIndex.from_gtf(gtf, "tss")
    # T1's TSS is 1000 (+ strand); the window [4500, 8100) holds no TSS: B's TSS is 19,999
    assert index.genes_in("chr1", 4_500, 8_100) == []
    hits = index.genes_in("chr1", 900, 1_100)
    assert [(gid, name) for gid, name, _ in hits] == [("G1", "A")]
    assert hits[0][2] == [(1000, 1200), (4000, 5000)]  # only protein-coding transcript T1
    hits = index.genes_in("chr1", 19_990, 20_010)  # the − strand TSS is the last exon's end
    assert [name for _, name, _ in hits] == ["B"]


def test_bin_ranges_touch_every_bin_an_exon_covers() -> None:
    # exon [250, 260) at pred_start 100 is offset 150..160: inside bin 4 (128..160)
    assert bin_ranges([(250, 260)], 100, 32, 100) == [(4, 5)]
    assert bin_ranges([(250, 270)], 100, 32, 100) == [(4, 6)]  # crosses into bin 5
    assert bin_ranges([(90, 100)], 100, 32, 100) == []  # before the interval
    assert bin_ranges([(0, 10_000)], 100, 32, 10) == [(0, 10)]  # clipped
    assert bin_ranges([(100, 132), (132, 164)], 100, 32, 10) == [(0, 2)]  # merged


def test_masks_skip_genes_without_exon_bins(gtf: pd.DataFrame) -> None:
    index = GeneIndex.from_gtf(gtf, "overlap")
    masks = index.masks("chr1", 9_000, 10, 1_000)  # [9000, 19000): B's span, no B exon
    assert masks == []
    masks = index.masks("chr1", 8_000, 100, 100)  # [8000, 18000): B's first exon
    assert [(m.gene_name, m.ranges) for m in masks] == [("B", [(0, 5)])]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 60)), min_size=1, max_size=12))
def test_merge_intervals_is_the_union(intervals: list[tuple[int, int]]) -> None:
    starts = np.asarray([s for s, _ in intervals])
    ends = starts + np.asarray([n for _, n in intervals])
    merged = merge_intervals(starts, ends)
    covered = {x for s, e in zip(starts, ends, strict=True) for x in range(s, e)}
    assert {x for s, e in merged for x in range(s, e)} == covered
    assert all(a[1] < b[0] for a, b in zip(merged, merged[1:], strict=False))


def test_gene_bin_draws_come_from_the_union_of_exon_bins() -> None:
    table = pd.DataFrame({"row": [0, 0, 1, -1], "gene_id": ["a", "b", "c", ""],
                          "gene_name": ["a", "b", "c", ""], "range_start": [0, 1, 3, 0],
                          "range_count": [1, 2, 1, 0]})  # fmt: skip
    ranges = np.asarray([[0, 20], [10, 30], [40, 60], [5, 9]])
    draws = gene_bin_draws(GeneRows(4, table, ranges), 3, 0, 999)
    row0 = draws[0]
    union = set(range(0, 30)) | set(range(40, 60))
    assert (row0 >= 0).all() and set(row0.tolist()) <= union and len(set(row0.tolist())) == 32
    assert sorted(draws[1][draws[1] >= 0].tolist()) == [5, 6, 7, 8]  # fewer than 32: all
    assert (draws[2] == -1).all()  # no genes
    again = gene_bin_draws(GeneRows(4, table, ranges), 3, 0, 999)
    assert (again == draws).all()
