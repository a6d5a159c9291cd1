"""The seed oracles' track tables from their shipped metadata (spec §3, issue 4 counts)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chorus_store.errors import InputFileError
from chorus_store.genome.track_tables import (
    alphagenome_head_sizes,
    alphagenome_tracks,
    borzoi_tracks,
    chrombpnet_models,
    chrombpnet_tracks,
    enformer_tracks,
    legnet_tracks,
    sei_tracks,
)
from chorus_store.genome.tracks import TrackTable
from chorus_store.resources import data_dir

B = data_dir("builders")


def _counts(table: TrackTable) -> dict[str, int]:
    return {str(k): int(v) for k, v in pd.Series(table.layers).value_counts().items()}


def test_enformer() -> None:
    t = enformer_tracks(B / "enformer/enformer_human_targets.txt")
    assert len(t) == 5_313
    assert _counts(t) == {"chromatin_accessibility": 684, "tf_binding": 2_101,
                          "histone_marks": 1_890, "tss_activity": 638}  # fmt: skip
    f = t.frame
    assert f["track_id"].iat[0] == "ENCFF833POA" and f["column"].iat[-1] == 5_312
    cage = f[f["assay_type"] == "CAGE"]
    assert len(cage) == 638 and (cage["summary_skip_strata"] == "ccre").all()
    assert cage["track_id"].str.startswith("CNhs").all()  # the ids chorus #115 was about


def test_borzoi() -> None:
    t = borzoi_tracks(B / "borzoi/borzoi_human_targets.txt")
    assert len(t) == 7_611
    assert _counts(t) == {"tss_activity": 1_276, "chromatin_accessibility": 906,
                          "tf_binding": 1_996, "histone_marks": 1_890,
                          "gene_expression": 1_543}  # fmt: skip
    assert t.track_ids[:2] == ["CNhs10608+", "CNhs10608-"]  # stranded ids
    rna = t.frame[t.frame["layer"] == "gene_expression"]
    assert (rna["formula"] == "logfc").all() and rna["signed"].all()
    assert (rna["pseudocount"] == 0.001).all()


def test_alphagenome() -> None:
    path = B / "alphagenome/alphagenome_tracks.json"
    t = alphagenome_tracks(path)
    assert len(t) == 5_168
    assert _counts(t) == {"chromatin_accessibility": 472, "tss_activity": 558,
                          "gene_expression": 667, "histone_marks": 1_116, "tf_binding": 1_617,
                          "splicing": 738}  # fmt: skip
    f = t.frame
    assert "DNASE/EFO:0001187 DNase-seq/." in t.track_ids
    assert not f["track_id"].str.contains("Padding").any()
    sizes = alphagenome_head_sizes(path)
    assert sizes["ATAC"] == (1, 256) and sizes["CHIP_HISTONE"] == (128, 1_152)
    # padding rows are skipped but index-aligned: columns are the OutputType's local index
    atac = f[f["head"] == "ATAC"]
    assert atac["column"].max() < 256 and len(atac) == 167
    procap = f[f["head"] == "PROCAP"]
    assert (procap["layer"] == "tss_activity").all() and (
        procap["summary_skip_strata"] == "ccre"
    ).all()
    chip = f[f["head"].str.startswith("CHIP")]
    assert (chip["resolution_bp"] == 128).all()
    hist = f[f["head"] == "CHIP_HISTONE"]
    assert (hist["layer"] == "histone_marks").all() and (hist["window_bp"] == 2001).all()


def test_chrombpnet() -> None:
    path = B / "chrombpnet/chrombpnet_JASPAR_metadata.tsv"
    t = chrombpnet_tracks(path)
    assert len(t) == 753 and _counts(t) == {"chromatin_accessibility": 9, "tf_binding": 744}
    f = t.frame.set_index("track_id")
    assert f.loc["DNASE:HepG2", "n_strands"] == 1 and f.loc["ATAC:K562", "window_bp"] == 501
    chip = f[f["assay_type"] == "CHIP"]
    assert (chip["n_strands"] == 2).all()
    assert "CHIP:HepG2:CEBPA" in f.index
    models = chrombpnet_models(path)
    assert [m["track_id"] for m in models] == t.track_ids
    assert models[0]["accession"] == "ENCFF984RAF" and models[9]["url"].endswith("_model.h5")


def test_sei(tmp_path: Path) -> None:
    classes = sei_tracks(None, B / "sei/seqclass_info.txt")
    assert len(classes) == 40 and _counts(classes) == {"regulatory_classification": 40}
    assert classes.track_ids[0] == "CA#PC1@Polycomb / Heterochromatin@Polycomb-repressed@0"
    names = tmp_path / "target.names"
    names.write_text("HepG2 | DNase | ID:1\nK562 | H3K27ac | ID:2\nK562 | H3K27ac | ID:2 | 1\n"
                     "GM12878 | CTCF | ID:3\nA549 | ATAC-seq | ID:4\n")  # fmt: skip
    t = sei_tracks(names, B / "sei/seqclass_info.txt")
    assert t.track_ids[:5] == ["TA#HepG2@DNase@ID:1", "TA#K562@H3K27ac@ID:2",
                               "TA#K562@H3K27ac@ID:2@1", "TA#GM12878@CTCF@ID:3",
                               "TA#A549@ATAC-seq@ID:4"]  # fmt: skip
    assert t.layers[:5] == ["chromatin_accessibility", "histone_marks", "histone_marks",
                            "tf_binding", "chromatin_accessibility"]  # fmt: skip
    assert t.frame["head"].tolist()[4:6] == ["profiles", "classes"]
    names.write_text("HepG2 DNase ID:1\n")
    with pytest.raises(InputFileError, match="cell \\| assay"):
        sei_tracks(names, B / "sei/seqclass_info.txt")


def test_legnet() -> None:
    t = legnet_tracks()
    assert t.track_ids == ["K562", "HepG2", "WTC11"]
    assert _counts(t) == {"promoter_activity": 3} and t.signed.all()
