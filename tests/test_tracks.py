"""Layers, windows and formulas: chorus's query-side rules (spec §4)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from chorus_store.errors import RecipeError
from chorus_store.genome.tracks import (
    LAYER_CONFIGS,
    TrackTable,
    canonical_layer,
    centered_bin_span,
    classify_chip_layer,
    classify_track_layer,
    compute_effect,
)
from chorus_store.testing.models.demo import DEMO_TRACKS


@pytest.mark.parametrize(
    ("resolution", "window", "bins"),
    [(128, 501, 3), (128, 2001, 15), (32, 501, 15), (32, 2001, 63), (1, 501, 501), (1, 2001, 2001)],
)
def test_window_spans_match_the_spec_table(resolution: int, window: int, bins: int) -> None:
    n_bins = {128: 896, 32: 6144, 1: 1_048_576}[resolution]
    start, stop = centered_bin_span(n_bins, window, resolution)
    assert stop - start == bins
    assert (start + stop) // 2 == n_bins // 2  # centred on the centre bin


def test_enformer_centre_bin_is_448() -> None:
    assert centered_bin_span(896, 501, 128) == (447, 450)
    assert centered_bin_span(896, None, 128) == (0, 896)
    assert centered_bin_span(10, 2001, 128) == (0, 10)  # clipped to the array


def test_layer_configs_are_chorus_values() -> None:
    assert LAYER_CONFIGS["histone_marks"].window_bp == 2001
    assert LAYER_CONFIGS["chromatin_accessibility"].window_bp == 501
    assert LAYER_CONFIGS["gene_expression"].pseudocount == 0.001
    signed = {k for k, v in LAYER_CONFIGS.items() if v.signed}
    assert signed == {"gene_expression", "promoter_activity", "regulatory_classification"}


@pytest.mark.parametrize(
    ("assay_type", "assay_id", "description", "layer"),
    [
        ("DNASE", "ENCFF833POA", "DNASE:cerebellum", "chromatin_accessibility"),
        ("CHIP", "ENCFF1", "CHIP:H3K27ac:liver", "histone_marks"),
        ("CHIP", "ENCFF2", "CHIP:CTCF:K562", "tf_binding"),
        ("CHIP", "CHIP_HISTONE/H2BK12ac x/.", "CHIP:cell", "histone_marks"),
        ("CHIP", "CHIP_TF/x/.", "CHIP:cell H3K4me3", "tf_binding"),  # prefix wins (#122)
        ("CAGE", "CNhs10608", "CAGE:x", "tss_activity"),
        ("PRO_CAP", "p", "", "tss_activity"),
        ("RNA", "r", "", "gene_expression"),
        ("LentiMPRA", "HepG2", "", "promoter_activity"),
        ("sequence-class", "CA#PC1", "", "regulatory_classification"),
        ("H3K27ac", "TA#liver@H3K27ac@1", "", "histone_marks"),
        ("DNase", "TA#liver@DNase@2", "", "chromatin_accessibility"),
        ("mystery", "x", "", "other"),
    ],
)
def test_classify_track_layer(assay_type: str, assay_id: str, description: str, layer: str) -> None:
    assert classify_track_layer(assay_type, assay_id, description) == layer


def test_histone_patterns_are_case_insensitive() -> None:
    assert classify_chip_layer("x", "chip:h3k36me3:brain") == "histone_marks"


def test_canonical_layer_refuses_unknown_keys() -> None:
    assert canonical_layer("CHIP_HIST") == "histone_marks"
    assert canonical_layer("tf_binding") == "tf_binding"
    with pytest.raises(KeyError):
        canonical_layer("CHIP_MYSTERY")


def test_effect_formulas() -> None:
    assert compute_effect(1.0, 3.0, "log2fc", 1.0) == pytest.approx(1.0)
    assert compute_effect(0.0, math.e - 0.001, "logfc", 0.001) == pytest.approx(
        math.log(math.e / 0.001)
    )
    assert compute_effect(2.0, -1.0, "diff", 0.0) == -3.0
    with pytest.raises(ValueError, match="unknown effect formula"):
        compute_effect(1.0, 1.0, "ratio", 0.0)


def test_demo_track_table_resolves_every_track() -> None:
    table = TrackTable.read_tsv(DEMO_TRACKS, resolution_bp=128)
    counts = pd.Series(table.layers).value_counts().to_dict()
    assert counts == {
        "chromatin_accessibility": 10,
        "tf_binding": 8,
        "histone_marks": 8,
        "tss_activity": 6,
        "promoter_activity": 4,
        "gene_expression": 4,
    }
    frame = table.frame.set_index("track_id")
    assert frame.loc["CNhsDEMO01", "summary_skip_strata"] == "ccre"  # CAGE routing
    assert frame.loc["DEMO-DNASE-liver", "summary_skip_strata"] == ""
    assert frame.loc["K562", "window_bp"] == -1 and bool(frame.loc["K562", "signed"])
    assert frame.loc["DEMO-CHIP-H3K27ac-HepG2", "window_bp"] == 2001


def test_track_table_refuses_duplicates_and_unscoreable_tracks() -> None:
    meta = pd.DataFrame({"track_id": ["a", "a"], "assay_type": ["DNASE", "DNASE"]})
    with pytest.raises(RecipeError, match="unique"):
        TrackTable.from_metadata(meta, resolution_bp=128)
    meta = pd.DataFrame({"track_id": ["a"], "assay_type": ["MYSTERY"]})
    with pytest.raises(RecipeError, match="no scoreable layer"):
        TrackTable.from_metadata(meta, resolution_bp=128)


def test_prefix_detection() -> None:
    full = TrackTable.read_tsv(DEMO_TRACKS, resolution_bp=128)
    part = full.subset(0, 20)
    assert part.is_prefix_of(full)
    assert not full.is_prefix_of(part)
    shuffled = TrackTable.from_frame(full.frame.iloc[np.r_[1, 0, 2:40]])
    assert not part.is_prefix_of(shuffled)


def test_one_track_table_check_names_where_tables_differ() -> None:
    """build, plan and add-tracks share one check (it was written three times)."""
    from chorus_store.errors import TrackTableMismatchError

    full = TrackTable.read_tsv(DEMO_TRACKS, resolution_bp=128)
    head = TrackTable.from_frame(full.frame.iloc[:20])
    head.require_same(TrackTable.from_frame(full.frame.iloc[:20]), store="S")
    with pytest.raises(TrackTableMismatchError, match="20 track.s. more than S.*add-tracks S"):
        head.require_same(full, store="S")
    head.require_extended_by(full, store="S")
    renamed = full.frame.copy()
    renamed.loc[3, "track_id"] = "other"
    other = TrackTable.from_frame(renamed)
    with pytest.raises(TrackTableMismatchError, match=r"at row 3 \(.*\), column 'track_id'"):
        full.require_same(other, store="S")
    with pytest.raises(TrackTableMismatchError, match="does not extend S's.*row 3"):
        head.require_extended_by(other, store="S")
    with pytest.raises(TrackTableMismatchError, match="length 40 vs 20"):
        full.require_same(head, store="S")
