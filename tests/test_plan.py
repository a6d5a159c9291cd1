"""The sampling plan: chorus's reference set, chorus's samplers, window checks."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus_store import build, plan_store
from chorus_store.demo import DemoInputs
from chorus_store.errors import (
    GenomeMismatchError,
    InputFileError,
    PlanHashMismatchError,
    PlanMismatchError,
    RecipeError,
    SchemaError,
    TrackTableMismatchError,
)
from chorus_store.genome import fasta as genome_module
from chorus_store.genome.fasta import Genome, read_ccre_bed, read_gtf
from chorus_store.plan.sampling import (
    SamplingConfig,
    _random_positions,
    generate_positions,
    generate_snps,
    rows_sha256,
)
from chorus_store.plan.stage import assess_windows, draw_perbin_bins, load_reference_set
from chorus_store.store.core import ChorusStore

from .helpers import small_recipe

REFERENCE = (
    Path(__file__).resolve().parents[1]
    / "examples"
    / "chorus"
    / "chorus_reference_positions_v1.npz"
)

HG38 = {
    "chr1": 248956422,
    "chr2": 242193529,
    "chr3": 198295559,
    "chr4": 190214555,
    "chr5": 181538259,
    "chr6": 170805979,
    "chr7": 159345973,
    "chr8": 145138636,
    "chr9": 138394717,
    "chr10": 133797422,
    "chr11": 135086622,
    "chr12": 133275309,
    "chr13": 114364328,
    "chr14": 107043718,
    "chr15": 101991189,
    "chr16": 90338345,
    "chr17": 83257441,
    "chr18": 80373285,
    "chr19": 58617616,
    "chr20": 64444167,
    "chr21": 46709983,
    "chr22": 50818468,
}


class _Lengths:
    def __init__(self, lengths: dict[str, int]) -> None:
        self.lengths = lengths


# ----------------------------------------------------------------------------- reference set


def test_reference_sets_load_and_hash_as_recorded() -> None:
    ref = load_reference_set(
        REFERENCE, positions="regions_genome_dominated", variants="snps_gene_anchored"
    )
    assert ref.positions is not None and ref.variants is not None
    assert len(ref.positions) == 31_500 and len(ref.variants) == 17_909
    assert ref.positions["stratum"].value_counts().to_dict() == {
        "random": 15_000,
        "ccre": 11_500,
        "tss": 3_000,
        "gene_body": 2_000,
    }
    assert ref.genome["assembly"] == "hg38" and ref.genome["chr1_length"] == 248_956_422
    for name in ("snps_promoter", "snps_accessibility"):
        variants = load_reference_set(REFERENCE, variants=name).variants
        assert variants is not None and len(variants) in (17_805, 18_672)


def test_a_tampered_reference_set_is_refused(tmp_path: Path) -> None:
    with np.load(REFERENCE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["regions_genome_dominated"]["pos"][7] += 1
    bad = tmp_path / "tampered.npz"
    np.savez_compressed(bad, **arrays)
    with pytest.raises(PlanHashMismatchError, match="regions_genome_dominated"):
        load_reference_set(bad, positions="regions_genome_dominated")
    # the untouched SNP set of the same file still loads
    assert load_reference_set(bad, variants="snps_promoter").variants is not None


def test_reference_set_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="has no snp set 'snps_nonsense'"):
        load_reference_set(REFERENCE, variants="snps_nonsense")
    with pytest.raises(InputFileError, match="does not exist"):
        load_reference_set(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    np.savez(junk, x=np.arange(3))
    with pytest.raises(InputFileError, match="not a chorus reference position set"):
        load_reference_set(junk)


def test_reference_plan_on_the_wrong_genome_names_the_expected_one(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    recipe = small_recipe(tmp_path)
    with pytest.raises(GenomeMismatchError, match=r"hg38 \(chr1 248,956,422 bp"):
        plan_store(tmp_path / "s.zarr", recipe, fasta=demo_inputs.fasta, reference_set=REFERENCE)
    assert not (tmp_path / "s.zarr").exists()  # nothing was created


def test_hash_rule_is_order_independent() -> None:
    rows = [("chr2", 5, "x"), ("chr1", 10, "y")]
    assert rows_sha256(rows) == rows_sha256(rows[::-1])
    assert rows_sha256(rows) != rows_sha256([("chr2", 5, "x"), ("chr1", 11, "y")])


# ----------------------------------------------------------------------------- samplers


def test_random_stratum_reproduces_chorus_reference_set() -> None:
    """chorus's random draw (seed 789, 682 per chromosome, [10 Mb, min(len-10 Mb, 200 Mb)])
    restated here reproduces the shipped reference set's 15,000 random positions exactly."""
    cfg = SamplingConfig()
    rows = _random_positions(_Lengths(HG38), cfg, random.Random(cfg.seed_random))  # type: ignore[arg-type]
    ref = load_reference_set(REFERENCE, positions="regions_genome_dominated").positions
    assert ref is not None
    shipped = ref[ref["stratum"] == "random"]
    assert [(c, p) for c, p, _ in rows] == list(zip(shipped["chrom"], shipped["pos"], strict=True))


def test_ccre_quotas_scale_and_keep_chorus_order() -> None:
    assert SamplingConfig().quotas()[0] == ("PLS", 3000)
    scaled = SamplingConfig(n_ccre=800).quotas()
    assert [c for c, _ in scaled] == [c for c, _ in SamplingConfig().ccre_quotas]
    assert sum(q for _, q in scaled) == 800


def test_generated_plan_is_deterministic_and_within_bounds(demo_inputs: DemoInputs) -> None:
    g = Genome(demo_inputs.fasta)
    ccre, genes = read_ccre_bed(demo_inputs.ccre), read_gtf(demo_inputs.gtf, ("gene",))
    cfg = SamplingConfig(
        n_random=300,
        n_ccre=200,
        n_tss=50,
        n_gene_body=40,
        n_snps=120,
        chromosomes=("chr1", "chr2", "chr3"),
        random_margin_bp=100_000,
        random_fallback_margin_bp=20_000,
        snp_margin_bp=50_000,
    )
    a = generate_positions(g, ccre, genes, cfg)
    b = generate_positions(g, ccre, genes, cfg)
    pd.testing.assert_frame_equal(a, b)
    counts = a["stratum"].value_counts().to_dict()
    assert counts == {"random": 300, "ccre": 200, "tss": 50, "gene_body": 40}
    rnd = a[a["stratum"] == "random"]
    assert rnd["chrom"].value_counts().to_dict() == {"chr1": 101, "chr2": 101, "chr3": 98}
    for chrom, grp in rnd.groupby("chrom"):
        assert grp["pos"].between(100_000, g.lengths[chrom] - 100_000).all()
    assert a["chrom"].isin(["chr1", "chr2", "chr3", "chrX"]).all()
    snps = generate_snps(g, cfg)
    assert len(snps) <= 120 and (snps["ref"] != snps["alt"]).all()
    assert all(
        g.base(c, int(p)) == r for c, p, r in zip(snps.chrom, snps.pos, snps.ref, strict=True)
    )
    pd.testing.assert_frame_equal(snps, generate_snps(g, cfg))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 200))
def test_snp_sampler_is_a_pure_function_of_its_seed(
    demo_inputs: DemoInputs, seed: int, n: int
) -> None:
    g = Genome(demo_inputs.fasta)
    cfg = SamplingConfig(
        n_snps=n, seed_snps=seed, chromosomes=("chr1", "chr2"), snp_margin_bp=50_000
    )
    a, b = generate_snps(g, cfg), generate_snps(g, cfg)
    pd.testing.assert_frame_equal(a, b)
    assert a["pos"].between(50_000, 2_000_000 - 50_000).all()
    assert a["ref"].isin(list("ACGT")).all()


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True),
    n_bins=st.integers(1, 2000),
    head=st.integers(0, 3),
)
def test_perbin_draws_depend_only_on_their_row(rows: list[int], n_bins: int, head: int) -> None:
    ids = np.asarray(rows)
    usable = np.ones(len(ids), bool)
    all_at_once = draw_perbin_bins(ids, usable, n_bins, 32, 999, head)
    one_by_one = np.concatenate(
        [
            draw_perbin_bins(ids[i : i + 1], usable[:1], n_bins, 32, 999, head)
            for i in range(len(ids))
        ]
    )
    assert (all_at_once == one_by_one).all()
    k = min(32, n_bins)
    assert (all_at_once[:, :k] >= 0).all() and (all_at_once[:, :k] < n_bins).all()
    assert all(len(set(r[:k])) == k for r in all_at_once)  # without replacement
    assert (all_at_once[:, k:] == -1).all()


def test_window_assessment_reports_rejections(demo_inputs: DemoInputs) -> None:
    g = Genome(demo_inputs.fasta)
    rows = pd.DataFrame(
        {
            "chrom": ["chr1", "chr3", "chr1", "chr2"],
            "pos": [500_000, 15_000, 980_000, 1_499_990],
            "stratum": ["random"] * 4,
        }
    )
    out = assess_windows(rows, g, 16_384, 0.5)
    assert out["reject_reason"].tolist() == ["", "too_many_n", "too_many_n", "off_contig"]
    assert out["usable"].tolist() == [True, False, False, False]
    snps = pd.DataFrame(
        {"chrom": ["chr1"], "pos": [500_000], "ref": ["N"], "alt": ["A"], "stratum": ["random"]}
    )
    snps["ref"] = "T" if g.base("chr1", 500_000) != "T" else "A"
    with pytest.raises(GenomeMismatchError, match="reference allele"):
        assess_windows(snps, g, 16_384, 0.5)


# ----------------------------------------------------------------------------- plan stage


def test_plan_is_written_first_and_rerun_is_a_noop(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    recipe = small_recipe(tmp_path)
    path = tmp_path / "s.zarr"
    report = plan_store(
        path, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf
    )
    store = ChorusStore.open(report.url)
    p = store.attrs["plan"]
    assert report.created and report.positions == p["position_strata"]
    assert sum(r["planned"] for r in report.positions.values()) == len(store.positions)
    assert sum(planned for _, _, planned, _, _ in report.rows()) == len(store.positions) + len(
        store.variants
    )
    assert store.attrs["oracle"]["fingerprint"] is None  # pinned by the first build
    mtime = (path / "zarr.json").stat().st_mtime_ns
    again = plan_store(
        path, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf
    )
    assert not again.created and again == dataclasses.replace(report, created=False)
    assert (path / "zarr.json").stat().st_mtime_ns == mtime


def test_plan_change_on_resume_is_refused(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    from chorus_store import build

    from .helpers import composition_oracle

    path = tmp_path / "s.zarr"
    kw: dict[str, Any] = {
        "fasta": demo_inputs.fasta,
        "ccre": demo_inputs.ccre,
        "gtf": demo_inputs.gtf,
    }
    plan_store(path, small_recipe(tmp_path, n_tracks=20), **kw)
    build(path, oracle=composition_oracle(), part="variants", progress=False)  # rows built
    with pytest.raises(PlanMismatchError, match="n_random: store 96 vs now 97"):
        plan_store(path, small_recipe(tmp_path, n_tracks=20, sampling={"n_random": 97}), **kw)
    with pytest.raises(TrackTableMismatchError, match="add-tracks"):
        plan_store(path, small_recipe(tmp_path), **kw)  # 40 tracks: an extension
    shuffled = tmp_path / "shuffled.tsv"
    table = pd.read_csv(tmp_path / "tracks_20.tsv", sep="\t")
    table.iloc[::-1].to_csv(shuffled, sep="\t", index=False)
    with pytest.raises(TrackTableMismatchError) as err:
        plan_store(path, small_recipe(tmp_path, tracks_table=shuffled), **kw)
    assert "add-tracks" not in str(err.value)
    other = tmp_path / "other.fa"
    shutil.copy(demo_inputs.fasta, other)
    with other.open("a") as fh:
        fh.write(">chrExtra\nACGT\n")
    with pytest.raises(GenomeMismatchError, match="Pass the FASTA"):
        plan_store(path, small_recipe(tmp_path, n_tracks=20), **{**kw, "fasta": other})
    assert json.loads((path / "zarr.json").read_text())  # still a readable store
    ChorusStore.open(path).validate()


def test_generated_plan_needs_its_annotations(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    with pytest.raises(InputFileError, match="--ccre"):
        plan_store(tmp_path / "s.zarr", small_recipe(tmp_path), fasta=demo_inputs.fasta)
    with pytest.raises(InputFileError, match="does not exist"):
        plan_store(
            tmp_path / "s.zarr",
            small_recipe(tmp_path),
            fasta=demo_inputs.fasta,
            ccre=tmp_path / "none.bed",
            gtf=demo_inputs.gtf,
        )
    assert not (tmp_path / "s.zarr").exists()


# ----------------------------------------------------------------------------- numbers (issue 9)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("sampling", {"n_random": -5}, r"n_random = -5 \(allowed: an integer in \[0, 1,000,000"),
        ("sampling", {"n_random": 50_000_000}, r"n_random = 50000000"),
        ("sampling", {"n_snps": 1.5}, r"n_snps = 1.5"),
        ("sampling", {"seed_perbin": -1}, r"seed_perbin = -1"),
        ("oracle", {"batch_size": 0}, r"\[oracle\] batch_size = 0 \(allowed: an integer >= 1\)"),
        ("oracle", {"max_n_fraction": 2.0}, r"max_n_fraction = 2.0"),
        (
            "layout",
            {"tracks_per_chunk": 5},
            r"tracks_per_shard = 16 is not a multiple of tracks_per_chunk = 5",
        ),
        ("layout", {"tracks_per_shard": 0}, r"tracks_per_shard = 0 \(allowed: an integer >= 1\)"),
        ("layout", {"bin_samples": 16}, r"bin_samples = 16 \(fixed at chorus's 32"),
        ("layout", {"position_shard_row": 8}, r"unknown key\(s\) \['position_shard_row'\]"),
    ],
)
def test_every_recipe_number_is_checked_at_recipe_load(
    tmp_path: Path, section: str, values: dict[str, object], message: str
) -> None:
    kwargs = {section: values}
    with pytest.raises(RecipeError, match=message):
        small_recipe(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_out_of_range_sampling_config_is_refused_at_plan(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    path = tmp_path / "s.zarr"
    with pytest.raises(RecipeError, match="n_random = -5"):
        plan_store(
            path,
            small_recipe(tmp_path),
            fasta=demo_inputs.fasta,
            ccre=demo_inputs.ccre,
            gtf=demo_inputs.gtf,
            sampling=SamplingConfig(n_random=-5),
        )
    assert not path.exists()


def test_a_plan_with_an_empty_layer_is_refused_at_plan(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    path = tmp_path / "s.zarr"
    with pytest.raises(RecipeError, match="no usable SNP .*effect null would be empty"):
        plan_store(
            path,
            small_recipe(tmp_path, sampling={"n_snps": 0}),
            fasta=demo_inputs.fasta,
            ccre=demo_inputs.ccre,
            gtf=demo_inputs.gtf,
        )
    assert not path.exists()


def test_a_capped_stratum_is_reported(
    tmp_path: Path, demo_inputs: DemoInputs, caplog: pytest.LogCaptureFixture
) -> None:
    n_bed = len(read_ccre_bed(demo_inputs.ccre))
    with caplog.at_level("WARNING", logger="chorus_store.plan.stage"):
        report = plan_store(
            tmp_path / "s.zarr",
            small_recipe(tmp_path, sampling={"n_ccre": n_bed + 500}),
            fasta=demo_inputs.fasta,
            ccre=demo_inputs.ccre,
            gtf=demo_inputs.gtf,
        )
    got = report.positions["ccre"]["planned"]
    assert got < n_bed + 500
    assert f"ccre: {got:,} of {n_bed + 500:,}" in caplog.text


def test_the_plan_draws_the_layouts_bin_sample_count(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    report = plan_store(
        tmp_path / "s.zarr",
        small_recipe(tmp_path),
        fasta=demo_inputs.fasta,
        ccre=demo_inputs.ccre,
        gtf=demo_inputs.gtf,
    )
    store = ChorusStore.open(report.url)
    bins = store.read("plan/positions/bin_index")
    assert bins.shape[-1] == store.layout.bin_samples == 32
    usable = store.positions["usable"].to_numpy()
    # unbiased: over 64 bins the mean drawn index is ~31.5 (a truncated draw gave ~15.7)
    assert abs(bins[usable].mean() - 31.5) < 2.0


def test_a_mis_shaped_plan_array_is_refused_not_truncated(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:

    from chorus_store.store import core as store_mod

    planned = plan_store(
        tmp_path / "s.zarr",
        small_recipe(tmp_path),
        fasta=demo_inputs.fasta,
        ccre=demo_inputs.ccre,
        gtf=demo_inputs.gtf,
    )
    src = ChorusStore.open(planned.url)
    plan = store_mod.PlanArrays(
        positions=src.positions,
        variants=src.variants,
        resolutions=src.resolutions,
        bin_index=src.read("plan/positions/bin_index")[:, :, :16],
        gene_bin_index=src.read("plan/positions/gene_bin_index"),
        position_genes=store_mod.GeneRows.empty(),
        variant_genes=store_mod.GeneRows.empty(),
        strands=src.strands,
    )
    with pytest.raises(SchemaError, match=r"bin_index has shape \(\d+, 1, 16\)"):
        ChorusStore.create(
            tmp_path / "bad.zarr",
            attrs={k: v for k, v in src.attrs.items() if k not in ("layout", "tracks")},
            tracks=src.tracks,
            plan=dataclasses.replace(plan),
            layout=src.layout,
        )
    assert not (tmp_path / "bad.zarr").exists()


def test_replanning_an_unbuilt_store_replaces_its_recipe(
    tmp_path: Path, demo_inputs: DemoInputs, caplog: pytest.LogCaptureFixture
) -> None:
    from chorus_store import build

    from .helpers import composition_oracle

    path = tmp_path / "s.zarr"
    kw: dict[str, Any] = {
        "fasta": demo_inputs.fasta,
        "ccre": demo_inputs.ccre,
        "gtf": demo_inputs.gtf,
    }
    plan_store(path, small_recipe(tmp_path), **kw)
    assert ChorusStore.open(path).attrs["recipe"]["oracle"]["batch_size"] == 8
    with caplog.at_level("WARNING", logger="chorus_store.plan.stage"):
        plan_store(path, small_recipe(tmp_path, oracle={"batch_size": 4}), **kw)
    assert ChorusStore.open(path).attrs["recipe"]["oracle"]["batch_size"] == 4
    assert "recipe was replaced" in caplog.text and "batch_size" in caplog.text
    caplog.clear()
    build(path, oracle=composition_oracle(4), part="variants", progress=False)
    with caplog.at_level("WARNING", logger="chorus_store.plan.stage"):
        plan_store(path, small_recipe(tmp_path, oracle={"batch_size": 2}), **kw)
    assert (
        ChorusStore.open(path).attrs["recipe"]["oracle"]["batch_size"] == 4
    )  # built with it: kept
    assert "keeps the recipe it was built with" in caplog.text


def test_a_fasta_differing_past_the_hashed_prefix_is_refused_naming_the_contig(
    tmp_path: Path, demo_inputs: DemoInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UCSC hg38 vs analysis-set case (chrY PARs N-masked): same names, lengths and
    first 64 MiB. Before: plan and build accepted it. The prefix is scaled to the test."""
    monkeypatch.setattr(genome_module, "_PREFIX_BYTES", 1024)
    store = tmp_path / "s.zarr"
    kw: dict[str, Any] = {
        "fasta": demo_inputs.fasta,
        "ccre": demo_inputs.ccre,
        "gtf": demo_inputs.gtf,
    }
    plan_store(store, small_recipe(tmp_path), **kw)
    record = ChorusStore.open(store).attrs["genome"]
    assert set(record["contig_sha256"]) == set(Genome(demo_inputs.fasta).lengths)
    other = tmp_path / "masked.fa"
    shutil.copy(demo_inputs.fasta, other)
    last = Path(str(demo_inputs.fasta) + ".fai").read_text().splitlines()[-1].split("\t")[0]
    with other.open("r+b") as fh:  # one base of the last contig's last full line
        fh.seek(-30, 2)
        base = fh.read(1)
        fh.seek(-30, 2)
        fh.write(b"N" if base != b"N" else b"A")
    with pytest.raises(GenomeMismatchError, match=f"the sequence of {last} differs"):
        plan_store(store, small_recipe(tmp_path), **{**kw, "fasta": other})
    with pytest.raises(GenomeMismatchError, match=f"the sequence of {last} differs"):
        build(store, fasta=other, progress=False)
    # the planned file itself is trusted by path, size and mtime: no rehash on resume
    genome_module._SEQUENCE_SHA256.clear()
    plan_store(store, small_recipe(tmp_path), **kw)
    assert genome_module._SEQUENCE_SHA256 == {}


@pytest.mark.parametrize("which", ["gtf", "ccre"])
def test_an_annotation_with_another_contig_naming_is_refused_naming_both(
    tmp_path: Path, demo_inputs: DemoInputs, which: str
) -> None:
    """Ensembl's ``1`` against UCSC's ``chr1``. Before: the plan succeeded with the TSS
    and gene-body strata (GTF) or the cCRE stratum (BED) silently empty."""
    source = getattr(demo_inputs, which)
    renamed = tmp_path / f"ensembl.{source.name}"
    lines = source.read_text().splitlines()
    renamed.write_text(
        "\n".join(ln if ln.startswith("#") else ln.removeprefix("chr") for ln in lines) + "\n"
    )
    kw: dict[str, Any] = {
        "fasta": demo_inputs.fasta,
        "ccre": demo_inputs.ccre,
        "gtf": demo_inputs.gtf,
    }
    with pytest.raises(InputFileError, match=r"names its contigs 1, 2.* names chr1, chr2"):
        plan_store(tmp_path / "s.zarr", small_recipe(tmp_path), **{**kw, which: renamed})
    assert not (tmp_path / "s.zarr").exists()
    # a few rows on contigs the FASTA lacks (another release's alt contigs) are fine
    extra = tmp_path / f"alt.{source.name}"
    alt = [ln.replace("chr1\t", "chr1_KI270706v1_random\t", 1) for ln in lines[-3:]]
    extra.write_text("\n".join(lines + alt) + "\n")
    plan_store(tmp_path / "t.zarr", small_recipe(tmp_path), **{**kw, which: extra})


def test_replanning_an_unbuilt_store_with_another_plan_or_tracks_lays_it_out_anew(
    tmp_path: Path, demo_inputs: DemoInputs, caplog: pytest.LogCaptureFixture
) -> None:
    """A first build that failed before writing a row leaves nothing to keep: a corrected
    plan or track table replaces the store (saying so) instead of being refused."""
    from chorus_store import build

    from .helpers import composition_oracle

    path = tmp_path / "s.zarr"
    kw: dict[str, Any] = {
        "fasta": demo_inputs.fasta,
        "ccre": demo_inputs.ccre,
        "gtf": demo_inputs.gtf,
    }
    plan_store(path, small_recipe(tmp_path, n_tracks=20), **kw)
    with caplog.at_level("WARNING", logger="chorus_store.plan.stage"):
        report = plan_store(
            path, small_recipe(tmp_path, n_tracks=20, sampling={"n_random": 97}), **kw
        )
    assert report.created and report.positions["random"]["planned"] == 97
    assert "planned anew" in caplog.text and "n_random" in caplog.text
    plan_store(path, small_recipe(tmp_path), **kw)  # 40 tracks
    assert len(ChorusStore.open(path).tracks) == 40
    ChorusStore.open(path).validate()
    assert not list(path.glob(".chorus-locks/*.json"))  # no claim left behind
    # once a row is built, the same change is refused and the store kept
    build(path, oracle=composition_oracle(), part="variants", progress=False)
    with pytest.raises(PlanMismatchError):
        plan_store(path, small_recipe(tmp_path, sampling={"n_random": 98}), **kw)
    assert len(ChorusStore.open(path).tracks) == 40


def test_a_plan_reads_its_gtf_once(
    tmp_path: Path, demo_inputs: DemoInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The samplers and the RNA tracks' gene index share one parse of the GTF."""
    import chorus_store.plan.stage as stage

    calls: list[Any] = []

    def counting_read_gtf(path: Any, features: tuple[str, ...] = ("gene", "exon")) -> Any:
        calls.append(path)
        return read_gtf(path, features)

    monkeypatch.setattr(stage, "read_gtf", counting_read_gtf)
    report = plan_store(
        tmp_path / "s.zarr",
        small_recipe(tmp_path),  # the demo table: RNA tracks, scored over exons
        fasta=demo_inputs.fasta,
        ccre=demo_inputs.ccre,
        gtf=demo_inputs.gtf,
    )
    store = ChorusStore.open(report.url)
    assert "genes" in store.attrs["plan"] and len(calls) == 1
    assert (
        store.attrs["plan"]["genes"]["gtf_sha256"]
        == store.attrs["plan"]["annotations"]["gtf_sha256"]
    )
