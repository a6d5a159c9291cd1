"""chorus's SNP families and activity populations (spec §1.1, §2.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from chorus_store.demo import DemoInputs
from chorus_store.errors import InputFileError
from chorus_store.genome.fasta import Genome, read_ccre_bed, read_gtf
from chorus_store.plan.sampling import (
    POSITION_FIELDS,
    SamplingConfig,
    gene_anchored_positions,
    generate_positions,
    generate_snps,
    promoter_positions,
    read_dhs_index,
    table_sha256,
)
from chorus_store.plan.stage import _derive_population, load_reference_set

REFERENCE = (
    Path(__file__).resolve().parents[1] / "examples/chorus/chorus_reference_positions_v1.npz"
)
# keyword arguments of SamplingConfig, of several types
SMALL: dict[str, Any] = {
    "chromosomes": ("chr1", "chr2", "chr3"),
    "random_margin_bp": 100_000,
    "random_fallback_margin_bp": 20_000,
    "snp_margin_bp": 50_000,
    "n_random": 60,
    "n_ccre": 40,
    "n_tss": 20,
    "n_gene_body": 10,
    "n_snps": 50,
    "anchored_margin_bp": 50_000,
    "promoter_margin_bp": 50_000,
}


@pytest.fixture(scope="module")
def inputs(demo_inputs: DemoInputs) -> tuple[Genome, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (
        Genome(demo_inputs.fasta),
        read_ccre_bed(demo_inputs.ccre),
        read_gtf(demo_inputs.gtf, ("gene", "exon")),
        read_dhs_index(demo_inputs.dhs),
    )


def test_default_fractions_give_chorus_counts() -> None:
    cfg = SamplingConfig()
    counts = {name: int(round(cfg.n_effect_positions * f)) for name, f in cfg.anchored_strata}
    assert counts == {
        "tss_near": 1_800,
        "tss_far": 1_800,
        "junction": 2_970,
        "gene_body": 1_080,
        "random": 1_350,
        "ccre": 9_000,
    }
    promoter = {n: int(round(18_000 * f)) for n, f in cfg.promoter_strata}
    assert promoter == {
        "tss_promoter": 7_200,
        "ccre_pls": 5_400,
        "ccre_pels": 2_700,
        "random": 2_700,
    }


def test_gene_anchored_mixture(inputs) -> None:  # type: ignore[no-untyped-def]
    genome, ccre, genes, _ = inputs
    cfg = SamplingConfig(**SMALL, n_effect_positions=300)
    rows = gene_anchored_positions(genome, ccre, genes, cfg)
    assert rows == gene_anchored_positions(genome, ccre, genes, cfg)  # pure function of seeds
    strata = pd.Series([r[2] for r in rows]).value_counts().to_dict()
    assert strata == {
        "ccre": 150,
        "junction": 50,
        "tss_near": 30,
        "tss_far": 30,
        "random": 22,
        "gene_body": 18,
    }
    for chrom, pos, _ in rows:
        assert 50_000 <= pos <= genome.lengths[chrom] - 50_000  # usable interval, no clamping away
    tss = genes[(genes["feature"] == "gene") & (genes["gene_type"] == "protein_coding")]
    tss_pos = np.where(tss["strand"] == "+", tss["start"], tss["end"])
    near = [p for c, p, s in rows if s == "tss_near"]
    assert all(np.abs(tss_pos - p).min() <= 1_000 for p in near)
    snps = generate_snps(
        genome,
        SamplingConfig(**SMALL, n_effect_positions=300, effect_family="gene_anchored"),
        ccre=ccre,
        genes=genes,
    )
    assert len(snps) <= 300 and (snps["ref"] != snps["alt"]).all()
    assert set(snps["stratum"]) <= set(strata)


def test_promoter_mixture(inputs) -> None:  # type: ignore[no-untyped-def]
    genome, ccre, genes, _ = inputs
    rows = promoter_positions(genome, ccre, genes, SamplingConfig(**SMALL, n_effect_positions=200))
    strata = pd.Series([r[2] for r in rows]).value_counts().to_dict()
    assert strata == {"tss_promoter": 80, "ccre_pls": 60, "ccre_pels": 30, "random": 30}


def test_accessibility_family_and_dhs_population(inputs) -> None:  # type: ignore[no-untyped-def]
    genome, ccre, genes, dhs = inputs
    cfg = SamplingConfig(
        **SMALL,
        effect_family="accessibility",
        n_dhs_snps=40,
        population="minus_gene_body_plus_dhs",
        n_dhs_positions=25,
    )
    snps = generate_snps(genome, cfg, ccre=ccre, genes=genes, dhs=dhs)
    assert snps["stratum"].iloc[0] == "random" and (snps["stratum"] == "dhs").sum() > 30
    summits = set(zip(dhs["seqname"], dhs["summit"], strict=True))
    for c, p in zip(
        snps.loc[snps.stratum == "dhs", "chrom"],
        snps.loc[snps.stratum == "dhs", "pos"],
        strict=True,
    ):
        assert any((c, p + d) in summits for d in range(-150, 151))
    pos = generate_positions(genome, ccre, genes, cfg, dhs)
    assert pos["stratum"].value_counts().to_dict() == {
        "random": 60,
        "ccre": 40,
        "tss": 20,
        "dhs": 25,
    }
    with pytest.raises(InputFileError, match="DHS"):
        generate_positions(genome, ccre, genes, cfg, None)


def test_reference_population_derivations_match_chorus() -> None:
    """Dropping gene bodies from chorus's region set gives chorus's 29,500 population, whose
    content hash chorus's stamper records as ddbc4b246ab3… (spec §1.1)."""
    ref = load_reference_set(REFERENCE, positions="regions_genome_dominated").positions
    assert ref is not None
    out = _derive_population(ref, {"drop_strata": ["gene_body"]}, None)
    assert out is not None
    positions, meta = out
    assert len(positions) == 29_500 and "gene_body" not in set(positions["stratum"])
    assert table_sha256(positions, POSITION_FIELDS).startswith("ddbc4b246ab3")
    assert meta["from_sha256"].startswith("86ea592d46c4")
    with pytest.raises(InputFileError, match="--dhs"):
        _derive_population(ref, {"add_dhs": {"n": 5000, "seed": 567}}, None)


def test_strata_errors() -> None:
    with pytest.raises(InputFileError, match="sum to 1"):
        SamplingConfig(anchored_strata=(("tss_near", 0.5),))
    with pytest.raises(InputFileError, match="effect_family"):
        SamplingConfig(effect_family="gwas")
