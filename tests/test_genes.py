"""Per-gene exon masks (spec §4.5): selection rules, bin arithmetic, per-bin draws."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus_store import OutputHead, Recipe, build
from chorus_store.build.records import GeneSlot, TrackStats
from chorus_store.demo import DemoInputs
from chorus_store.errors import PlanMismatchError, RecipeError
from chorus_store.genome.fasta import Genome, one_hot, read_gtf
from chorus_store.genome.genes import GeneIndex, bin_ranges, merge_intervals
from chorus_store.plan.stage import gene_bin_draws
from chorus_store.store.core import ChorusStore, GeneRows

from .helpers import HEAD, N_TRACKS, composition_oracle, plan_small, small_recipe

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
    index = GeneIndex.from_gtf(gtf, "overlap", "exact")
    hits = index.genes_in("chr1", 4_500, 8_100)  # overlaps A's span and B's span
    assert [(gid, name) for gid, name, _ in hits] == [("G1", "A"), ("G2", "B")]
    exons_a = hits[0][2]  # every exon of gene A (both transcripts), merged, 0-based
    assert exons_a == [(1000, 1200), (3000, 3100), (4000, 5000)]
    assert index.genes_in("chr1", 29_000, 32_000) == []  # lncRNA genes are not counted
    # chorus's query reads the start column as a 0-based start: one base shorter
    query = GeneIndex.from_gtf(gtf, "overlap")
    assert query.genes_in("chr1", 4_500, 8_100)[0][2] == [(1001, 1200), (3001, 3100), (4001, 5000)]
    # ... and its overlap test is closed on the raw columns: B (8001..20000) meets [0, 8001)
    assert [n for _, n, _ in query.genes_in("chr1", 0, 8_001)] == ["A", "B"]
    assert [n for _, n, _ in index.genes_in("chr1", 0, 8_000)] == ["A"]


def test_tss_mode_counts_every_transcript_of_a_coding_gene(gtf: pd.DataFrame) -> None:
    index = GeneIndex.from_gtf(gtf, "tss", "exact")
    # T1's TSS is 1000 (+ strand); the window [4500, 8100) holds no TSS: B's TSS is 19,999
    assert index.genes_in("chr1", 4_500, 8_100) == []
    hits = index.genes_in("chr1", 900, 1_100)
    assert [(gid, name) for gid, name, _ in hits] == [("G1", "A")]
    # the mask is gene-level: the retained-intron transcript T2's exon too
    assert hits[0][2] == [(1000, 1200), (3000, 3100), (4000, 5000)]
    # T2 (retained_intron, TSS 3000) alone puts gene A in a window
    assert [n for _, n, _ in index.genes_in("chr1", 2_900, 3_050)] == ["A"]
    hits = index.genes_in("chr1", 19_990, 20_010)  # the − strand TSS is the last exon's end
    assert [name for _, name, _ in hits] == ["B"]
    # chorus's builder: TSS = the raw end column on − (20,000), the raw start on + (1,001)
    query = GeneIndex.from_gtf(gtf, "tss")
    assert [n for _, n, _ in query.genes_in("chr1", 20_000, 20_001)] == ["B"]
    assert query.genes_in("chr1", 900, 1_001) == []


def test_bin_ranges_touch_every_bin_an_exon_covers() -> None:
    # exon [250, 260) at pred_start 100 is offset 150..160: inside bin 4 (128..160)
    assert bin_ranges([(250, 260)], 100, 32, 100) == [(4, 5)]
    assert bin_ranges([(250, 270)], 100, 32, 100) == [(4, 6)]  # crosses into bin 5
    assert bin_ranges([(90, 100)], 100, 32, 100) == []  # before the interval
    assert bin_ranges([(0, 10_000)], 100, 32, 10) == [(0, 10)]  # clipped
    assert bin_ranges([(100, 132), (132, 164)], 100, 32, 10) == [(0, 2)]  # merged


def test_masks_skip_genes_without_exon_bins(gtf: pd.DataFrame) -> None:
    index = GeneIndex.from_gtf(gtf, "overlap", "exact")
    masks = index.masks("chr1", 9_000, 10, 1_000)  # [9000, 19000): B's span, no B exon
    assert masks == []
    masks = index.masks("chr1", 8_000, 100, 100)  # [8000, 18000): B's first exon
    assert [(m.gene_name, m.ranges) for m in masks] == [("B", [(0, 5)])]


def test_bin_ranges_keep_one_range_per_exon_unmerged() -> None:
    # chorus's query sums each exon's span: a bin two exons touch is summed twice
    assert bin_ranges([(100, 133), (140, 150)], 100, 32, 10, merge=False) == [(0, 2), (1, 2)]
    assert bin_ranges([(100, 133), (140, 150)], 100, 32, 10) == [(0, 2)]
    # an empty exon off a bin boundary still touches one bin (floor/ceil), as in chorus
    assert bin_ranges([(150, 150)], 100, 32, 10, merge=False) == [(1, 2)]
    assert bin_ranges([(164, 164)], 100, 32, 10, merge=False) == []


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


# --------------------------------------------------------------------------------------
# the per-gene value equals chorus's query value (issue 9, item 1)
# --------------------------------------------------------------------------------------

# Window [10000, 14096) at 1, 32 and 128 bp. A (+): overlapping coding transcripts T1/T2,
# a retained-intron T3 bridging the intron, an exon starting on a bin boundary (10256),
# exons 10256..10300 and 10306.. sharing a 32 bp (and 128 bp) bin. B (−): coding TSS
# outside the window, a non-coding transcript's TSS inside. C: lncRNA. D: coding, TSS
# before the window, body reaching into it. E: a one-base exon.
QUERY_GTF = "".join(
    "\t".join((c, "T", f, str(s), str(e), ".", st, ".", a)) + "\n"
    for c, f, s, e, st, a in [
        ("chr1", "gene", 10100, 12000, "+", 'gene_id "GA"; gene_type "protein_coding"; gene_name "A";'),
        *[("chr1", "exon", s, e, "+", f'gene_id "GA"; transcript_id "{t}"; gene_type "protein_coding"; gene_name "A"; transcript_type "{tt}";')
          for t, tt, s, e in [("T1", "protein_coding", 10256, 10300), ("T1", "protein_coding", 10306, 10500),
                              ("T1", "protein_coding", 11001, 11200), ("T2", "protein_coding", 10256, 10300),
                              ("T2", "protein_coding", 10400, 10600), ("T2", "protein_coding", 11001, 11200),
                              ("T3", "retained_intron", 10450, 11100)]],
        ("chr1", "gene", 12501, 20000, "-", 'gene_id "GB"; gene_type "protein_coding"; gene_name "B";'),
        *[("chr1", "exon", s, e, "-", f'gene_id "GB"; transcript_id "{t}"; gene_type "protein_coding"; gene_name "B"; transcript_type "{tt}";')
          for t, tt, s, e in [("T4", "protein_coding", 12501, 12700), ("T4", "protein_coding", 19001, 20000),
                              ("T5", "processed_transcript", 13001, 13500)]],
        ("chr1", "gene", 13601, 13900, "+", 'gene_id "GC"; gene_type "lncRNA"; gene_name "C";'),
        ("chr1", "exon", 13601, 13900, "+", 'gene_id "GC"; transcript_id "T6"; gene_type "lncRNA"; gene_name "C"; transcript_type "lncRNA";'),
        ("chr1", "gene", 9001, 10128, "+", 'gene_id "GD"; gene_type "protein_coding"; gene_name "D";'),
        *[("chr1", "exon", s, e, "+", 'gene_id "GD"; transcript_id "T7"; gene_type "protein_coding"; gene_name "D"; transcript_type "protein_coding";')
          for s, e in [(9001, 9100), (10050, 10128)]],
        ("chr1", "gene", 13950, 13990, "+", 'gene_id "GE"; gene_type "protein_coding"; gene_name "E";'),
        *[("chr1", "exon", s, e, "+", 'gene_id "GE"; transcript_id "T8"; gene_type "protein_coding"; gene_name "E"; transcript_type "protein_coding";')
          for s, e in [(13950, 13950), (13960, 13990)]],
    ]
)  # fmt: skip
PRED_START, WINDOW_BP = 10_000, 4_096


def _chorus_rows(text: str) -> list[dict[str, Any]]:
    """chorus's ``_load_gtf_features``: raw columns, attributes split on ``;`` and space."""
    rows = []
    for line in text.splitlines():
        parts = line.split("\t", 9)
        if line.startswith("#") or len(parts) < 9:
            continue
        attrs = {}
        for attr in parts[8].strip().split(";"):
            kv = attr.strip().split(" ", 1)
            if len(kv) == 2:
                attrs[kv[0]] = kv[1].strip('"')
        rows.append({"chrom": parts[0], "feature": parts[2], "start": int(parts[3]),
                     "end": int(parts[4]), "strand": parts[6], **attrs})  # fmt: skip
    return rows


def _chorus_query_genes(rows: list[dict[str, Any]], chrom: str, start: int, end: int) -> list[str]:
    """``variant_report._find_nearby_genes``: coding gene rows with end >= start, start <= end."""
    names: list[str] = []
    for r in rows:
        if (r["feature"] == "gene" and r["chrom"] == chrom and r["end"] >= start
                and r["start"] <= end and r.get("gene_type") == "protein_coding"
                and r["gene_name"] not in names):  # fmt: skip
            names.append(r["gene_name"])
    return names


def _chorus_builder_tss_genes(
    rows: list[dict[str, Any]], chrom: str, start: int, end: int
) -> list[str]:
    """``build_transcript_exon_index`` + ``genes_with_tss_in_window`` (AlphaGenome builder)."""
    coding = {
        r["gene_name"]
        for r in rows
        if r["feature"] == "gene" and r.get("gene_type") == "protein_coding"
    }
    per_tx: dict[str, list[Any]] = {}
    for r in rows:
        if r["feature"] == "exon" and r["gene_name"] in coding:
            entry = per_tx.setdefault(
                r["transcript_id"], [r["chrom"], r["strand"], r["gene_name"], []]
            )
            entry[3].append((r["start"], r["end"]))
    names: set[str] = set()
    for c, strand, name, spans in per_tx.values():
        spans.sort()
        tss = spans[0][0] if strand == "+" else spans[-1][1]
        if c == chrom and start <= tss < end:
            names.add(name)
    return sorted(names)


def _chorus_gene_exons(rows: list[dict[str, Any]], name: str) -> list[tuple[str, int, int]]:
    """``get_gene_exons(name)``: every exon row of the name, merged per (chrom, strand)."""
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for r in rows:
        if r["feature"] == "exon" and r["gene_name"] == name:
            groups.setdefault((r["chrom"], r["strand"]), []).append((r["start"], r["end"]))
    out = []
    for (c, _), intervals in sorted(groups.items()):
        intervals.sort(key=lambda x: x[0])
        merged = [intervals[0]]
        for s, e in intervals[1:]:
            if s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        out += [(c, s, e) for s, e in merged]
    return out


def _chorus_query_value(exons: list[tuple[str, int, int]], chrom: str, values: np.ndarray,
                        res: int, pred_start: int = PRED_START) -> np.ndarray | None:  # fmt: skip
    """``scorers.score_track_effect``'s gene_expression branch over ``score_region``."""
    pred_end = pred_start + len(values) * res
    total, n_bins = np.zeros(values.shape[1]), 0
    for c, start, end in exons:
        if c != chrom or start >= pred_end or end <= pred_start:
            continue
        s, e = max(start, pred_start), min(end, pred_end)
        b0 = (s - pred_start) // res
        b1 = min((e - pred_start + res - 1) // res, len(values))
        b0 = min(b0, b1)
        if b0 >= b1:
            continue
        total = total + values[b0:b1].astype(np.float64).sum(axis=0)
        n_bins += b1 - b0
    return None if n_bins == 0 else total / n_bins


def _exact_value(exons: list[tuple[str, int, int]], chrom: str, values: np.ndarray,
                 res: int) -> np.ndarray | None:  # fmt: skip
    """The genomically exact variant: 0-based exons (start - 1), each touched bin once."""
    bins = set()
    for c, start, end in exons:
        for base in range(start - 1, end):
            b = (base - PRED_START) // res
            if c == chrom and 0 <= b < len(values):
                bins.add(b)
    return values[sorted(bins)].astype(np.float64).mean(axis=0) if bins else None


def _store_values(
    tmp: Path, convention: str, mode: str, res: int, values: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-gene values through the store's code: GeneIndex masks → GeneSlot → gene_means."""
    (tmp / "q.gtf").write_text(QUERY_GTF)
    index = GeneIndex.from_gtf(read_gtf(tmp / "q.gtf"), mode, convention)  # type: ignore[arg-type]
    n_bins = len(values)
    masks = index.masks("chr1", PRED_START, res, n_bins)
    recipe = small_recipe(tmp, n_tracks=N_TRACKS)
    table = recipe.track_table()
    rna = np.flatnonzero(table.frame["layer"].to_numpy() == "gene_expression")
    stats = TrackStats(table, rna, (OutputHead(HEAD, res, n_bins, N_TRACKS),))
    # every requested column of the head holds ``values``: each RNA track reads it
    preds = {HEAD: np.repeat(values[None], len(stats.columns[HEAD]), axis=2)}
    slots = [GeneSlot.from_ranges(i, 0, np.asarray(m.ranges)) for i, m in enumerate(masks)]
    means = stats.gene_means(preds, slots, ["row"])
    return {m.gene_name: means[i] for i, m in enumerate(masks)}


@pytest.mark.parametrize("res", [1, 32, 128])
@pytest.mark.parametrize("mode", ["overlap", "tss"])
def test_gene_value_equals_chorus_query_value(tmp_path: Path, res: int, mode: str) -> None:
    values = np.random.default_rng(res).gamma(2.0, size=(WINDOW_BP // res, 1)).astype(np.float32)
    rows = _chorus_rows(QUERY_GTF)
    pick = _chorus_query_genes if mode == "overlap" else _chorus_builder_tss_genes
    expected = {}
    for name in pick(rows, "chr1", PRED_START, PRED_START + WINDOW_BP):
        v = _chorus_query_value(_chorus_gene_exons(rows, name), "chr1", values, res)
        if v is not None:
            expected[name] = v
    got = _store_values(tmp_path, "chorus-query", mode, res, values)
    assert sorted(got) == sorted(expected)
    assert sorted(got) == (["A", "B", "D", "E"] if mode == "overlap" else ["A", "B", "E"])
    rna = ~np.isnan(next(iter(got.values())))
    for name, v in expected.items():
        np.testing.assert_allclose(got[name][rna], v[0], rtol=1e-12)
    # the exact variant is another number here (the quirks matter at every resolution)
    exact = _store_values(tmp_path, "exact", mode, res, values)
    for name in expected:
        want = _exact_value(_chorus_gene_exons_exact(rows, name), "chr1", values, res)
        assert want is not None
        np.testing.assert_allclose(exact[name][0], want[0], rtol=1e-12)
    assert any(abs(exact[n][0] - expected[n][0]) > 1e-9 for n in expected)


def _chorus_gene_exons_exact(rows: list[dict[str, Any]], name: str) -> list[tuple[str, int, int]]:
    """Every exon row of the gene name (1-based inclusive, as in the file)."""
    return [(r["chrom"], r["start"], r["end"]) for r in rows
            if r["feature"] == "exon" and r["gene_name"] == name]  # fmt: skip


def test_built_gene_records_equal_chorus_query_value(
    small_build: tuple[Path, Path], demo_inputs: DemoInputs
) -> None:
    """End to end: the demo store's per-gene records against the restated query rule."""
    store = ChorusStore.open(small_build[0])
    positions = store.plan_table("baselines")
    table, _ = store.gene_rows("baselines")
    records = store.read("baselines/gene_summary")
    frame = store.tracks.frame
    rna = np.flatnonzero(frame["layer"].to_numpy() == "gene_expression")
    assert len(rna) and store.attrs["plan"]["genes"]["convention"] == "chorus-query"
    rows = _chorus_rows(demo_inputs.gtf.read_text())
    picked = sorted(set(table["row"][table["row"] >= 0].tolist()))[:24]
    with Genome(demo_inputs.fasta) as genome:
        where = [(str(positions["chrom"].iat[r]), int(positions["pos"].iat[r])) for r in picked]
        onehot = one_hot([genome.window(c, p, 16_384) for c, p in where])
    oracle = Recipe.from_stored(store.attrs["recipe"]).load_oracle(device="cpu")
    preds = oracle.predict(onehot)[HEAD][:, :, frame["column"].to_numpy()[rna]]
    checked = 0
    for row, (chrom, pos), values in zip(picked, where, preds, strict=True):
        pred_start = pos - 16_384 // 2 + 4_096  # the head's central 64 bins of 128 bp
        expected = {}
        for name in _chorus_query_genes(rows, chrom, pred_start, pred_start + 64 * 128):
            v = _chorus_query_value(_chorus_gene_exons(rows, name), chrom, values, 128, pred_start)
            if v is not None:
                expected[name] = v
        mine = table.index[table["row"] == row]
        assert sorted(table["gene_name"][mine]) == sorted(expected)
        for i in mine:
            np.testing.assert_allclose(records[i][rna], expected[table["gene_name"][i]], rtol=1e-5)
            checked += 1
    assert checked > 10


def test_replanning_under_another_rna_convention_is_a_plan_mismatch(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    recipe = small_recipe(tmp_path)
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, recipe)
    assert ChorusStore.open(store).attrs["plan"]["genes"]["convention"] == "chorus-query"
    plan_small(store, demo_inputs, recipe)  # the same plan resumes
    # once a row is built (an unbuilt store would simply be planned anew)
    build(store, oracle=composition_oracle(), part="variants", progress=False)
    exact = dataclasses.replace(recipe, plan={**recipe.plan, "rna_convention": "exact"})
    with pytest.raises(PlanMismatchError, match=r"genes\.convention: store 'chorus-query'"):
        plan_small(store, demo_inputs, exact)
    typo = dataclasses.replace(recipe, plan={**recipe.plan, "rna_convention": "chorus"})
    with pytest.raises(RecipeError, match="rna_convention must be one of"):
        plan_small(tmp_path / "t.zarr", demo_inputs, typo)


def test_one_protein_coding_filter_and_one_sampler_tss() -> None:
    """The samplers and the gene index share one filter and one TSS rule."""
    import pandas as pd

    from chorus_store.genome.genes import gene_tss, protein_coding
    from chorus_store.plan import sampling

    gtf = pd.DataFrame(
        {
            "chrom": ["chr1"] * 4,
            "feature": ["gene", "gene", "exon", "gene"],
            "gene_type": ["protein_coding", "protein_coding", "protein_coding", "lncRNA"],
            "gene_name": ["A", "B", "A", "C"],
            "start": [100, 500, 100, 900],
            "end": [200, 800, 150, 990],
            "strand": ["+", "-", "+", "+"],
        }
    )
    pc = protein_coding(gtf)
    assert pc["gene_name"].tolist() == ["A", "B"]
    assert gene_tss(pc).tolist() == [100, 800]
    assert not hasattr(sampling, "_pc")
    cfg = sampling.SamplingConfig.from_dict({"chromosomes": ["chr1"]})
    assert sampling._protein_coding_genes(gtf, cfg)["tss"].tolist() == [100, 800]
