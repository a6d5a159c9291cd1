"""The sampling plan: which genomic positions and which SNPs a background is built on.

Two sources, both deterministic:

* :func:`load_reference_set` — chorus's shipped ``chorus_reference_positions_v1.npz``
  (spec §1.6); every set's content hash is recomputed and checked against its provenance.
* :func:`generate_positions` / :func:`generate_snps` — chorus's baseline sampler
  (spec §1.3) and its uniform SNP sampler (spec §2.2 (a)), from a FASTA, a SCREEN cCRE BED
  and a GENCODE GTF, with chorus's seeds and Python ``random`` streams.

:func:`assess_windows` then marks each row usable or not for an oracle's input window
(runs off the contig, too many N, spec §1.4). A plan is written into the store before any
prediction, so every later stage and every worker sees one plan.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus_store.errors import (
    GenomeMismatchError,
    InputFileError,
    PlanHashMismatchError,
    PlanMismatchError,
    RecipeError,
    TrackTableMismatchError,
)
from chorus_store.genome.fasta import Genome, read_ccre_bed, read_gtf
from chorus_store.genome.genes import GeneIndex, merge_intervals
from chorus_store.genome.tracks import TrackTable
from chorus_store.hashing import sha256_file
from chorus_store.oracles.base import OutputHead
from chorus_store.plan.sampling import (
    POSITION_FIELDS,
    VARIANT_FIELDS,
    SamplingConfig,
    dhs_rows,
    generate_positions,
    generate_snps,
    read_dhs_index,
    rows_sha256,
    table_sha256,
)
from chorus_store.progress_log import Meter
from chorus_store.recipes import Recipe, load_recipe
from chorus_store.reports import PlanReport
from chorus_store.store import claims as locks
from chorus_store.store.core import DATA_GROUPS, ChorusStore, is_chorus_store
from chorus_store.store.layout import BIN_SAMPLES, GeneRows, Layout, PlanArrays
from chorus_store.store.location import Location
from chorus_store.store.schema import DataGroup, schema

__all__ = [
    "SamplingConfig",
    "ReferenceSet",
    "rows_sha256",
    "load_reference_set",
    "generate_positions",
    "generate_snps",
    "assess_windows",
    "strata_report",
    "draw_perbin_bins",
    "POSITION_FIELDS",
    "VARIANT_FIELDS",
    "ComputedPlan",
    "compute_plan",
    "plan_store",
    "add_tracks",
    "add_positions",
    "add_variants",
    "read_rows_table",
    "summary_line",
]

# --------------------------------------------------------------------------------------
# chorus's shipped reference set
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceSet:
    """One region set and/or one SNP set out of a reference-positions NPZ."""

    path: Path
    file_sha256: str
    provenance: dict[str, Any]
    positions_name: str | None
    variants_name: str | None
    positions: pd.DataFrame | None = field(repr=False)
    variants: pd.DataFrame | None = field(repr=False)

    @property
    def genome(self) -> dict[str, Any]:
        """The genome the set was drawn on, as :meth:`GenomeFingerprint.require_same` wants."""
        p = self.provenance
        chr1 = {"hg38": 248_956_422, "hg19": 249_250_621}.get(str(p.get("genome")))
        return {
            "assembly": p.get("genome"),
            "chr1_length": chr1,
            "fai_sha256": p.get("fai_sha256"),
            "fasta_sha256_prefix64mb": p.get("fasta_sha256_prefix64mb"),
        }

    def set_meta(self, name: str) -> dict[str, Any]:
        meta: dict[str, Any] = self.provenance["sets"][name]
        return meta


def load_reference_set(
    path: str | Path, *, positions: str | None = None, variants: str | None = None
) -> ReferenceSet:
    """Load named sets from chorus's reference-positions NPZ, verifying their hashes.

    Parameters
    ----------
    path
        ``chorus_reference_positions_v1.npz`` (or a later schema-1 file).
    positions
        Name of a region set (``regions_genome_dominated``), or None.
    variants
        Name of a SNP set (``snps_gene_anchored``, ``snps_promoter``,
        ``snps_accessibility``), or None.

    Raises
    ------
    InputFileError
        The file is missing, unreadable, or lacks a named set.
    PlanHashMismatchError
        A set's recomputed content hash differs from its provenance.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"reference position set {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        provenance = json.loads(str(arrays["provenance"][0]))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise InputFileError(
            f"{path} is not a chorus reference position set (needs a 'provenance' JSON "
            f"array and structured set arrays): {exc}"
        ) from exc
    if not isinstance(provenance, dict) or "sets" not in provenance:
        raise InputFileError(f"{path}: provenance has no 'sets' block")

    def take(name: str | None, kind: str, fields: tuple[str, ...]) -> pd.DataFrame | None:
        if name is None:
            return None
        if name not in arrays or name not in provenance["sets"]:
            sets = sorted(k for k, v in provenance["sets"].items() if v.get("kind") == kind)
            raise InputFileError(f"{path} has no {kind} set {name!r}; it has {sets}")
        arr = arrays[name]
        if arr.dtype.names is None or tuple(arr.dtype.names) != fields:
            raise InputFileError(
                f"{path}: set {name!r} has fields {arr.dtype.names}, expected {fields}"
            )
        df = pd.DataFrame({f: arr[f].tolist() for f in fields})
        got = table_sha256(df, fields)
        want = provenance["sets"][name].get("sha256")
        if got != want:
            raise PlanHashMismatchError(
                f"{path}: set {name!r} hashes to {got} but its provenance records {want}; "
                f"the file was modified or truncated. Re-download the reference set (chorus "
                f"ships it as reference_sets/chorus_reference_positions_v1.npz)."
            )
        return df

    return ReferenceSet(
        path=path.resolve(),
        file_sha256=sha256_file(path),
        provenance=provenance,
        positions_name=positions,
        variants_name=variants,
        positions=take(positions, "region", POSITION_FIELDS),
        variants=take(variants, "snp", VARIANT_FIELDS),
    )


# --------------------------------------------------------------------------------------
# Usability for one oracle, and per-bin draws
# --------------------------------------------------------------------------------------


def assess_windows(
    table: pd.DataFrame, genome: Genome, input_length: int, max_n_fraction: float
) -> pd.DataFrame:
    """Add ``usable`` and ``reject_reason`` columns for an oracle's input window.

    ``off_contig``: the window runs off the chromosome; ``too_many_n``: more than
    ``input_length * max_n_fraction`` non-ACGT bases (spec §1.4). For SNP tables the
    reference base is also checked against the FASTA; a mismatch is an error (chorus
    #128: a wrong ref allele scored a synthetic sequence), never a silent skip.
    """
    genome.require_contigs(set(table["chrom"]), what="the plan")
    unit = "SNP windows" if "ref" in table else "position windows"
    with Meter("plan", len(table), unit=unit) as meter:  # reads every window: minutes on hg38
        reasons = [
            genome.window_status(c, int(p), input_length, max_n_fraction)
            for c, p in meter.iterate(zip(table["chrom"], table["pos"], strict=True))
        ]
    out = table.copy()
    out["reject_reason"] = reasons
    out["usable"] = out["reject_reason"] == ""
    if "ref" in out:
        bad = [
            (c, int(p), r, b)
            for c, p, r in zip(out["chrom"], out["pos"], out["ref"], strict=True)
            if (b := genome.base(c, int(p))) != r
        ]
        if bad:
            ex = ", ".join(f"{c}:{p} plan {r} FASTA {b}" for c, p, r, b in bad[:3])
            raise GenomeMismatchError(
                f"{len(bad)} SNP reference allele(s) disagree with {genome.path} ({ex}); the "
                f"SNP set was drawn on another genome. Use the FASTA it was made from."
            )
    return out


def strata_report(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per stratum: rows, usable rows and rejections by reason."""
    report: dict[str, dict[str, int]] = {}
    for stratum, grp in table.groupby("stratum", sort=True):
        entry = {"planned": int(len(grp)), "usable": int(grp["usable"].sum())}
        for reason, n in grp.loc[~grp["usable"], "reject_reason"].value_counts().items():
            entry[f"rejected_{reason}"] = int(n)
        report[str(stratum)] = entry
    return report


def draw_perbin_bins(
    row_ids: np.ndarray, usable: np.ndarray, n_bins: int, n_samples: int, seed: int, head: int
) -> np.ndarray:
    """The bins whose values a position contributes to the per-bin null (spec §4.6).

    chorus draws ``RandomState(999).choice(n_bins, 32, replace=False)`` per position in
    iteration order, shared by all tracks. Here each row's draw comes from its own stream
    ``default_rng([seed, row, head])``, so the draw of a row never depends on which other
    rows exist, were usable, or were built first — appending positions or resuming leaves
    every earlier draw unchanged. Unusable rows get -1.
    """
    k = min(n_samples, n_bins)
    out = np.full((len(row_ids), n_samples), -1, dtype=np.int32)
    for i, (row, ok) in enumerate(zip(row_ids, usable, strict=True)):
        if ok:
            rng = np.random.default_rng([seed, int(row), head])
            out[i, :k] = np.sort(rng.choice(n_bins, k, replace=False))
    return out


# --------------------------------------------------------------------------------------
# The plan stage: write a plan into a new store (or confirm an existing one)
# --------------------------------------------------------------------------------------


#: stream tag of the gene_expression per-bin draws (distinct from every resolution index)
_GENE_STREAM = 1_000_003
log = logging.getLogger(__name__)


def binned_resolutions(recipe: Recipe) -> list[int]:
    """Distinct bin sizes of the recipe's binned heads, in head order (one draw each)."""
    out: list[int] = []
    for h in recipe.heads:
        if not h.is_scalar and h.resolution_bp not in out:
            out.append(h.resolution_bp)
    return out


def _bin_draws(recipe: Recipe, positions: pd.DataFrame, first_row: int, seed: int) -> np.ndarray:
    """``(rows, resolutions, 32)`` per-bin draws: one per distinct bin size (spec §4.6)."""
    rows = np.arange(first_row, first_row + len(positions))
    usable = positions["usable"].to_numpy()
    n_bins = {h.resolution_bp: h.n_bins for h in recipe.heads if not h.is_scalar}
    draws = [
        draw_perbin_bins(rows, usable, n_bins[r], BIN_SAMPLES, seed, i)
        for i, r in enumerate(binned_resolutions(recipe))
    ]
    if not draws:
        return np.zeros((len(rows), 0, BIN_SAMPLES), np.int32)
    return np.stack(draws, axis=1)


def _gene_head(recipe: Recipe, tracks: TrackTable) -> OutputHead | None:
    gene_heads = {tracks.frame["head"].iat[i] for i in tracks.gene_tracks}
    if not gene_heads:
        return None
    if len(gene_heads) > 1:
        raise RecipeError(
            f"gene_expression tracks must come from one head, not {sorted(gene_heads)}"
        )
    head = next(h for h in recipe.heads if h.name == next(iter(gene_heads)))
    if head.is_scalar:
        raise RecipeError("gene_expression tracks need a binned head (exon masks are bins)")
    return head


def gene_slots(
    table: pd.DataFrame,
    first_row: int,
    shard_rows: int,
    index: GeneIndex,
    head: OutputHead,
    input_length: int,
    rows_per_shard: int | None = None,
) -> GeneRows:
    """The (row, gene) slots of plan rows ``first_row...`` (a shard boundary), padded per shard.

    Each usable row gets one slot per gene its prediction interval counts (see
    :mod:`chorus_store.genome.genes`). ``rows_per_shard`` fixes the padding (appends); by default
    it is the largest shard's count rounded up to a multiple of 8.
    """
    if first_row % shard_rows:
        raise ValueError("gene slots start at a shard boundary")
    per_shard: dict[int, list[tuple[int, str, str, list[tuple[int, int]]]]] = {}
    offset = head.start_bp(input_length)
    usable = table["usable"].to_numpy()
    for i, (chrom, pos) in enumerate(zip(table["chrom"], table["pos"], strict=True)):
        row = first_row + i
        slots = per_shard.setdefault(row // shard_rows, [])
        if not usable[i]:
            continue
        pred_start = int(pos) - input_length // 2 + offset
        for m in index.masks(str(chrom), pred_start, head.resolution_bp, head.n_bins):
            slots.append((row, m.gene_id, m.gene_name, m.ranges))
    most = max((len(v) for v in per_shard.values()), default=0)
    k = rows_per_shard if rows_per_shard is not None else max(8, -(-most // 8) * 8)
    if most > k:
        raise RecipeError(
            f"a row shard now has {most} (row, gene) pairs, more than the {k} slots per shard "
            f"the store was planned with; plan a new store including these rows"
        )
    first_shard = first_row // shard_rows
    n_shards = max(per_shard, default=first_shard - 1) - first_shard + 1
    rows = np.full(n_shards * k, -1, np.int64)
    ids = [""] * (n_shards * k)
    names = [""] * (n_shards * k)
    starts = np.zeros(n_shards * k, np.int64)
    counts = np.zeros(n_shards * k, np.int64)
    ranges: list[tuple[int, int]] = []
    for shard, slots in sorted(per_shard.items()):
        for j, (row, gid, name, rng) in enumerate(slots):
            at = (shard - first_shard) * k + j
            rows[at], ids[at], names[at] = row, gid, name
            starts[at], counts[at] = len(ranges), len(rng)
            ranges.extend(rng)
    frame = pd.DataFrame(
        {
            "row": rows,
            "gene_id": ids,
            "gene_name": names,
            "range_start": starts,
            "range_count": counts,
        }
    )
    return GeneRows(k, frame, np.asarray(ranges, np.int64).reshape(-1, 2))


def gene_bin_draws(genes: GeneRows, n_rows: int, first_row: int, seed: int) -> np.ndarray:
    """Per position, up to 32 bins drawn from the union of its genes' exon bins (§4.5).

    The union whatever the convention: a bin two exons share is one bin of the track
    (chorus's builder draws from the set of exon bins too); the convention only decides
    which bins the exons touch.

    More than 32 → 32 without replacement from the union; fewer → all of them; none →
    -1. Each row draws from its own stream, like :func:`draw_perbin_bins`.
    """
    out = np.full((n_rows, BIN_SAMPLES), -1, np.int32)
    rows = genes.table["row"]
    table = genes.table[(rows >= first_row) & (rows < first_row + n_rows)]
    for row, grp in table.groupby("row", sort=True):
        parts = [
            genes.ranges[s : s + c]
            for s, c in zip(grp["range_start"], grp["range_count"], strict=True)
        ]
        union = merge_intervals(*np.concatenate(parts).T) if parts else []
        lengths = np.asarray([e - s for s, e in union], np.int64)
        total = int(lengths.sum())
        if total == 0:
            continue
        k = min(BIN_SAMPLES, total)
        rng = np.random.default_rng([seed, int(row), _GENE_STREAM])
        picks = np.sort(rng.choice(total, k, replace=False)) if total > k else np.arange(total)
        cum = np.concatenate(([0], np.cumsum(lengths)))
        which = np.searchsorted(cum, picks, side="right") - 1
        starts = np.asarray([s for s, _ in union], np.int64)
        out[int(row) - first_row, :k] = starts[which] + (picks - cum[which])
    return out


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: store {old!r} vs now {new!r}"]


def _reference_plan(
    reference_set: str | Path,
    plan_cfg: dict[str, Any],
    genome: Genome,
    positions_set: str | None,
    variants_set: str | None,
    dhs: str | Path | None,
    meta: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Positions and SNPs of chorus's reference set (its provenance into ``meta``), and
    the per-bin seed."""
    ref = load_reference_set(
        reference_set,
        positions=positions_set or plan_cfg.get("positions_set", "regions_genome_dominated"),
        variants=variants_set or plan_cfg.get("variants_set", "snps_gene_anchored"),
    )
    genome.fingerprint.require_same(
        ref.genome, what=f"the reference set {ref.path.name}", fasta=genome.path
    )
    assert ref.positions is not None and ref.variants is not None
    positions, variants = ref.positions, ref.variants
    region_meta = ref.set_meta(str(ref.positions_name))
    derivation = _derive_population(positions, plan_cfg, dhs)
    if derivation is not None:
        positions, derivation_meta = derivation
    meta.update(
        source="reference",
        reference_set={
            "artefact": ref.path.name,
            "artefact_schema": ref.provenance.get("schema_version"),
            "file_sha256": ref.file_sha256,
            "positions": ref.positions_name,
            "variants": ref.variants_name,
        },
        effect_family=str(ref.variants_name).removeprefix("snps_"),
        activity_set=ref.positions_name if derivation is None else derivation_meta["name"],
        activity_derivation=None if derivation is None else derivation_meta,
        seeds={
            **ref.provenance.get("seeds", {}),
            **region_meta.get("seeds", {}),
            "perbin": 999,
        },
    )
    seed_perbin = 999
    return positions, variants, seed_perbin


@dataclass
class _Gtf:
    """One plan call's GTF, read, checked and hashed once: the samplers and the gene index
    of the RNA tracks both use it (a GENCODE GTF takes seconds to parse)."""

    path: str | Path
    genome: Genome
    _frame: pd.DataFrame | None = field(default=None, repr=False)
    _sha256: str | None = None

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = read_gtf(self.path, ("gene", "exon"))
            self.genome.require_annotation_contigs(
                self._frame["chrom"], what=f"GTF {self.path} (--gtf)"
            )
        return self._frame

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(Path(str(self.path)))
        return self._sha256


def _generated_plan(
    plan_cfg: dict[str, Any],
    genome: Genome,
    ccre: str | Path | None,
    gtf: _Gtf | None,
    dhs: str | Path | None,
    sampling: SamplingConfig | None,
    meta: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Positions and SNPs drawn by chorus's samplers from the annotations (their config
    and hashes into ``meta``), and the per-bin seed."""
    if ccre is None or gtf is None:
        raise InputFileError(
            "a generated plan needs a cCRE BED (--ccre) and a GTF (--gtf); or pass "
            "chorus's reference set (--reference-set)"
        )
    cfg = sampling or SamplingConfig.from_dict(dict(plan_cfg.get("sampling", {})))
    ccre_df = read_ccre_bed(ccre)
    genome.require_annotation_contigs(ccre_df["chrom"], what=f"cCRE BED {ccre} (--ccre)")
    genes = gtf.frame
    dhs_df = None
    if cfg.needs_dhs:
        if dhs is None:
            raise InputFileError(
                f"the {cfg.population} population / {cfg.effect_family} SNPs need the DHS "
                f"index (--dhs DHS_Index_and_Vocabulary_hg38_WM20190703.txt.gz)"
            )
        dhs_df = read_dhs_index(dhs)
        meta["dhs_sha256"] = sha256_file(Path(dhs))
    positions = generate_positions(genome, ccre_df, genes, cfg, dhs_df)
    variants = generate_snps(genome, cfg, ccre=ccre_df, genes=genes, dhs=dhs_df)
    meta.update(
        source="generated",
        config=cfg.as_dict(),
        annotations={
            "ccre_sha256": sha256_file(Path(ccre)),
            "gtf_sha256": gtf.sha256,
        },
        effect_family=cfg.effect_family,
        activity_set=f"generated_{cfg.population}",
        activity_derivation={
            "sampler": "chorus baseline sampler (spec 1.3)",
            "population": cfg.population,
            "snps": f"chorus {cfg.effect_family} SNP sampler (spec 2.2)",
        },
        seeds={
            "random": cfg.seed_random,
            "ccre": cfg.seed_ccre,
            "tss": cfg.seed_tss,
            "gene_body": cfg.seed_gene_body,
            "snps": cfg.seed_snps
            if cfg.effect_family in ("uniform", "accessibility")
            else cfg.seed_effect,
            "perbin": cfg.seed_perbin,
            **({"dhs_positions": cfg.seed_dhs_positions} if cfg.needs_dhs else {}),
        },
    )
    seed_perbin = cfg.seed_perbin
    _say_capped(positions, variants, cfg)
    return positions, variants, seed_perbin


@dataclass(frozen=True)
class ComputedPlan:
    """A plan as :func:`compute_plan` works it out, before anything is written: the rows
    (assessed against the oracle's window), the plan attributes, the track table and what
    the (row, gene) slots of RNA tracks are drawn from. :func:`plan_store` writes it;
    ``chorus-store estimate`` sizes a store from it without writing anything."""

    recipe: Recipe
    genome: Genome
    positions: pd.DataFrame
    variants: pd.DataFrame
    meta: dict[str, Any]
    tracks: TrackTable
    seed_perbin: int
    gtf: str | Path | None = None
    gene_head: OutputHead | None = None
    gene_index: GeneIndex | None = None

    def genes(self, layout: Layout) -> tuple[GeneRows, GeneRows]:
        """The (row, gene) slots of the positions and of the variants under ``layout``."""
        if self.gene_head is None or self.gene_index is None:
            return GeneRows.empty(), GeneRows.empty()
        args = (self.gene_index, self.gene_head, self.recipe.input_length)
        return (
            gene_slots(self.positions, 0, layout.position_shard_rows, *args),
            gene_slots(self.variants, 0, layout.variant_shard_rows, *args),
        )

    def arrays(self, layout: Layout) -> PlanArrays:
        """Everything the store holds of the plan besides its attributes."""
        position_genes, variant_genes = self.genes(layout)
        if self.gene_head is not None:
            gene_bins = gene_bin_draws(position_genes, len(self.positions), 0, self.seed_perbin)
        else:
            gene_bins = np.full((len(self.positions), BIN_SAMPLES), -1, np.int32)
        return PlanArrays(
            positions=self.positions,
            variants=self.variants,
            resolutions=binned_resolutions(self.recipe),
            bin_index=_bin_draws(self.recipe, self.positions, 0, self.seed_perbin),
            gene_bin_index=gene_bins,
            position_genes=position_genes,
            variant_genes=variant_genes,
            strands=self.recipe.strands,
        )


def compute_plan(
    recipe: Recipe | str | Path,
    *,
    fasta: str | Path,
    reference_set: str | Path | None = None,
    positions_set: str | None = None,
    variants_set: str | None = None,
    ccre: str | Path | None = None,
    gtf: str | Path | None = None,
    dhs: str | Path | None = None,
    sampling: SamplingConfig | None = None,
    assembly: str | None = None,
) -> ComputedPlan:
    """The plan :func:`plan_store` would write (same arguments), computed in memory."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    plan_cfg = recipe.plan
    genome = Genome(fasta, assembly=assembly or plan_cfg.get("assembly"))
    log.info("plan: recipe %s, FASTA %s", recipe.name, fasta)
    reference_set = reference_set or (
        plan_cfg.get("reference_set") if plan_cfg.get("source") == "reference" else None
    )
    meta: dict[str, Any] = {"name": plan_cfg.get("name", recipe.name)}
    gtf_path = gtf or plan_cfg.get("gtf")
    annotations = _Gtf(gtf_path, genome) if gtf_path is not None else None
    if reference_set is not None:
        positions, variants, seed_perbin = _reference_plan(
            reference_set, plan_cfg, genome, positions_set, variants_set, dhs, meta
        )
    else:
        positions, variants, seed_perbin = _generated_plan(
            plan_cfg, genome, ccre, annotations if gtf is not None else None, dhs, sampling, meta
        )
    log.info(
        "plan: %s positions and %s SNPs drawn; checking their %s bp windows",
        f"{len(positions):,}",
        f"{len(variants):,}",
        f"{recipe.input_length:,}",
    )
    positions = assess_windows(positions, genome, recipe.input_length, recipe.max_n_fraction)
    variants = assess_windows(variants, genome, recipe.input_length, recipe.max_n_fraction)
    _refuse_empty_layers(positions, variants)
    meta.update(
        input_length=recipe.input_length,
        max_n_fraction=recipe.max_n_fraction,
        positions_sha256=table_sha256(positions, POSITION_FIELDS),
        variants_sha256=table_sha256(variants, VARIANT_FIELDS),
        position_strata=strata_report(positions),
        variant_strata=strata_report(variants),
        seed_perbin=seed_perbin,
        additions=[],
    )
    tracks = recipe.track_table()
    head = _gene_head(recipe, tracks)
    index = None
    if head is not None:
        index = _gene_index(recipe, annotations)
        assert annotations is not None  # _gene_index refused a missing GTF
        # the population and the convention define the statistic: a resume under another
        # one is a plan mismatch
        meta["genes"] = {
            "mode": index.mode,
            "convention": index.convention,
            "gtf_sha256": annotations.sha256,
        }
    return ComputedPlan(
        recipe, genome, positions, variants, meta, tracks, seed_perbin, gtf_path, head, index
    )


def plan_store(
    store_path: str | Path,
    recipe: Recipe | str | Path,
    *,
    fasta: str | Path,
    reference_set: str | Path | None = None,
    positions_set: str | None = None,
    variants_set: str | None = None,
    ccre: str | Path | None = None,
    gtf: str | Path | None = None,
    dhs: str | Path | None = None,
    sampling: SamplingConfig | None = None,
    assembly: str | None = None,
    layout: Layout | None = None,
) -> PlanReport:
    """Write the plan of ``recipe`` into a new store at ``store_path``; returns what was
    planned (:class:`~chorus_store.PlanReport`: rows per stratum, planned and usable).

    Positions and SNPs come from chorus's reference set (``reference_set``, with set
    names defaulting to the recipe's, and the recipe's ``drop_strata`` / ``add_dhs``
    derivations of the activity population) or are generated from ``fasta`` + ``ccre`` +
    ``gtf`` (+ ``dhs`` for the accessibility populations) with ``sampling`` (default: the
    recipe's ``[plan.sampling]``, else chorus's defaults).
    Every row is checked against the oracle's input window; the store records which rows
    are usable and why the others are not.

    If the store already exists, the plan is recomputed and compared: identical → the
    store is left untouched and ``created`` is false (so re-running a pipeline is safe);
    different → refused with :class:`PlanMismatchError` (or the genome/track-table
    error) naming what differs.
    """
    t_start = time.perf_counter()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    planned = compute_plan(
        recipe,
        fasta=fasta,
        reference_set=reference_set,
        positions_set=positions_set,
        variants_set=variants_set,
        ccre=ccre,
        gtf=gtf,
        dhs=dhs,
        sampling=sampling,
        assembly=assembly,
    )
    loc = Location.of(store_path)
    if is_chorus_store(loc):
        try:
            store = _confirm_existing(loc.url, planned.genome, planned.meta, planned.tracks)
        except (PlanMismatchError, TrackTableMismatchError) as exc:
            if not discard_unbuilt(loc):
                raise
            log.warning(
                "%s: nothing was built yet, so it was planned anew with the recipe given (%s)",
                loc.url,
                exc,
            )
        else:
            store = _update_recipe(store, recipe)
            report = PlanReport.from_plan(store.url, store.attrs["plan"], created=False)
            log.info(summary_line(report, time.perf_counter() - t_start))
            return report
    attrs = {
        "oracle": {"name": recipe.name, "fingerprint": None, "description": None},
        # the whole sequence is hashed here, once; resumes compare against it
        "genome": planned.genome.record(),
        "plan": planned.meta,
        "recipe": recipe.to_dict(),
        "inputs": {"gtf": str(Path(planned.gtf).resolve()) if planned.gtf else None},
    }
    layout = layout or recipe.layout
    store = ChorusStore.create(
        loc.url,
        attrs=attrs,
        tracks=planned.tracks,
        plan=planned.arrays(layout),
        layout=layout,
    )
    report = PlanReport.from_plan(store.url, store.attrs["plan"], created=True)
    log.info(summary_line(report, time.perf_counter() - t_start))
    return report


def summary_line(report: PlanReport, seconds: float) -> str:
    """The line that sums up a plan: rows planned and usable, time, what was written
    (the plan logs it, the CLI prints it)."""

    def rows(strata: dict[str, dict[str, int]]) -> str:
        planned = sum(r["planned"] for r in strata.values())
        usable = sum(r["usable"] for r in strata.values())
        return f"{planned:,} ({usable:,} usable)"

    counts = f"{rows(report.positions)} positions and {rows(report.variants)} SNPs"
    if not report.created:
        return f"already planned, unchanged: {counts} in {report.url} ({seconds:.1f} s)"
    return f"planned {counts} in {seconds:.1f} s; wrote the plan to {report.url}"


def _say_capped(positions: pd.DataFrame, variants: pd.DataFrame, cfg: SamplingConfig) -> None:
    """Log each stratum that yielded fewer rows than its count asked for (the annotation
    has fewer candidates, e.g. ``n_ccre`` beyond the BED's size): chorus takes them all."""
    got = positions["stratum"].value_counts().to_dict()
    asked = {"random": cfg.n_random, "ccre": cfg.n_ccre, "tss": cfg.n_tss}
    if cfg.population == "genome_dominated":
        asked["gene_body"] = cfg.n_gene_body
    if cfg.population.endswith("plus_dhs"):
        asked["dhs"] = cfg.n_dhs_positions
    capped = [
        f"{stratum}: {got.get(stratum, 0):,} of {n:,}"
        for stratum, n in asked.items()
        if got.get(stratum, 0) < n
    ]
    if cfg.effect_family == "uniform" and len(variants) < cfg.n_snps:
        capped.append(f"SNPs: {len(variants):,} of {cfg.n_snps:,}")
    if capped:
        log.warning(
            "the annotations have fewer candidates than [plan.sampling] asks for; these "
            "strata are capped: %s",
            "; ".join(capped),
        )


def _refuse_empty_layers(positions: pd.DataFrame, variants: pd.DataFrame) -> None:
    """A plan whose rows give a layer nothing to rank is refused here, not after the build
    (``n_snps = 0`` used to pass plan, build and reduce and fail only at export)."""
    empty = []
    if not positions["usable"].any():
        empty.append(
            f"no usable position ({len(positions):,} planned): the summary and per-bin nulls "
            f"would be empty (check n_random / n_ccre / n_tss / n_gene_body, or the positions "
            f"set)"
        )
    if not variants["usable"].any():
        empty.append(
            f"no usable SNP ({len(variants):,} planned): the effect null would be empty "
            f"(check n_snps / n_effect_positions, or the variants set)"
        )
    if empty:
        raise RecipeError("the plan yields " + "; and ".join(empty) + ". Nothing was written.")


def _derive_population(
    positions: pd.DataFrame, plan_cfg: dict[str, Any], dhs: str | Path | None
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The recipe's derivation of a reference region set (spec §1.1, chorus's stamper):
    drop strata (``drop_strata = ["gene_body"]`` for Sei and LegNet) and add DHS summits
    (``add_dhs = {n = 5000, seed = 567}`` for ChromBPNet)."""
    drop = [str(x) for x in plan_cfg.get("drop_strata", [])]
    add = plan_cfg.get("add_dhs")
    if not drop and not add:
        return None
    base_sha = table_sha256(positions, POSITION_FIELDS)
    out = positions[~positions["stratum"].isin(drop)].reset_index(drop=True)
    if add:
        if dhs is None:
            raise InputFileError("the recipe adds DHS summits to the positions: pass --dhs")
        rows = dhs_rows(read_dhs_index(dhs), int(add.get("n", 5000)), int(add.get("seed", 567)))
        out = pd.concat([out, pd.DataFrame(rows, columns=list(POSITION_FIELDS))], ignore_index=True)
    name = (
        "regions_genome_dominated"
        + "".join(f"_minus_{d}" for d in drop)
        + ("_plus_dhs" if add else "")
    )
    return out, {
        "name": name,
        "from_sha256": base_sha,
        "drop_strata": drop,
        "add_strata": {"dhs": dict(add)} if add else {},
        "hash": "sorted (chrom, pos, stratum) tuples",
    }


def _gene_index(recipe: Recipe, gtf: _Gtf | None) -> GeneIndex:
    if gtf is None:
        raise InputFileError(
            f"the {recipe.name} track table has gene_expression (RNA) tracks, scored per gene "
            f"over its exons: pass the GENCODE GTF (--gtf)"
        )
    mode = recipe.plan.get("rna_genes", "overlap")
    convention = recipe.plan.get("rna_convention", "chorus-query")
    return GeneIndex.from_gtf(gtf.frame, mode, convention)


def _confirm_existing(
    path: str, genome: Genome, meta: dict[str, Any], tracks: TrackTable
) -> ChorusStore:
    store = ChorusStore.open(path)
    genome.require_same(store.attrs["genome"], what=f"the store {store.url}")
    stored = dict(store.attrs["plan"])
    stored.update(stored.pop("base", None) or {})  # rows appended later: compare the base plan
    meta = {**meta, "additions": stored.get("additions", [])}
    diffs = _diff_keys(stored, meta)
    if diffs:
        raise PlanMismatchError(
            f"{store.url} holds a different plan; refusing to mix plans in one store. "
            f"Differences: " + "; ".join(diffs[:6]) + ". Build a new store for the new plan."
        )
    store.tracks.require_same(tracks, store=store.url)
    return store


def discard_unbuilt(loc: Location) -> bool:
    """Delete the store at ``loc`` if nothing of it is built, so ``plan`` can lay it out
    again (a corrected plan or track table); ``False``, untouched, once any row is built.

    Taken under the structural claim, so refused while a build runs. The root document
    goes first: a process killed midway leaves no store (``plan`` makes a new one), never
    a half-deleted one that opens.
    """
    store = ChorusStore.open(loc.url)
    held = store.structural_lock(f"chorus-store plan {loc.url}")
    try:
        fresh = ChorusStore.open(loc.url)
        if any(fresh.read(g.done).any() for g in DATA_GROUPS):
            return False
        keys = [k for k, _ in loc.list() if not k.startswith(f"{locks.LOCK_DIR}/")]
        loc.delete("zarr.json")
        for key in keys:
            if key != "zarr.json":
                loc.delete(key)
    finally:
        held.release()
    for key, _ in list(loc.list(f"{locks.LOCK_DIR}/")):
        loc.delete(key)
    path = loc.local_path
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
    return True


def _update_recipe(store: ChorusStore, recipe: Recipe) -> ChorusStore:
    """A re-plan with the same plan and tracks but another recipe (a corrected model
    section, say): recorded when nothing is built yet, since the build loads the oracle
    from the stored recipe; kept (with a warning) once rows were built with it."""
    new = json.loads(json.dumps(recipe.to_dict()))
    diffs = _diff_keys(store.attrs["recipe"], new)
    if not diffs:
        return store
    layout_changed = any(d.startswith("layout.") for d in diffs)
    with store.structural_lock(f"chorus-store plan {store.url}"):
        fresh = ChorusStore.open(store.url, mode="r+")
        built = any(fresh.read(g.done).any() for g in DATA_GROUPS)
        if built or layout_changed:
            log.warning(
                "%s keeps the recipe it was %s with; the new recipe's differences are not "
                "applied (%s). Plan a new store to use them.",
                store.url,
                "built" if built else "laid out",
                "; ".join(diffs[:4]),
            )
            return fresh
        fresh.set_attrs({**fresh.attrs, "recipe": new})
        fresh.consolidate()
    log.warning(
        "%s: nothing is built yet, so its recipe was replaced by the one given (%s)",
        store.url,
        "; ".join(diffs[:4]),
    )
    return ChorusStore.open(store.url)


def add_tracks(store_path: str | Path, recipe: Recipe | str | Path) -> int:
    """Append the tracks ``recipe``'s table has beyond the store's; returns how many.

    Only the new tracks are computed by the next build; nothing built is recomputed.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    tracks = recipe.track_table()
    store = ChorusStore.open(store_path, mode="r+")
    if len(tracks.gene_tracks) and not store.layout.position_gene_rows:
        raise TrackTableMismatchError(
            f"the new tracks include gene_expression (RNA) tracks, which are scored per gene, "
            f"but {store.url} was planned without any, so it has no (position, gene) "
            f"records; plan a new store with the whole track table (and --gtf)"
        )
    store.tracks.require_extended_by(tracks, store=store.url)
    with store.structural_lock(f"chorus-store add-tracks {store.url}"):
        store = ChorusStore.open(store_path, mode="r+")
        recipe_attrs = {**store.attrs["recipe"], "tracks": recipe.tracks}
        added = store.append_tracks(tracks, {**store.attrs, "recipe": recipe_attrs})
    return added


def read_rows_table(path: str | Path, fields: tuple[str, ...]) -> pd.DataFrame:
    """A TSV/CSV of plan rows with a header naming at least ``fields``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"{path} does not exist")
    try:
        df = pd.read_csv(path, sep=None, engine="python", dtype={"chrom": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not a readable table: {exc}") from exc
    missing = [f for f in fields if f not in df.columns]
    if missing:
        raise InputFileError(f"{path} lacks column(s) {missing}; it needs {list(fields)}")
    df = df.loc[:, list(fields)].copy()
    df["pos"] = pd.to_numeric(df["pos"], errors="raise").astype(np.int64)
    if "ref" in df:
        bad = (
            ~df["ref"].isin(list("ACGT")) | ~df["alt"].isin(list("ACGT")) | (df["ref"] == df["alt"])
        )
        if bad.any():
            raise InputFileError(
                f"{path}: SNP rows need ref != alt in ACGT (row {int(np.flatnonzero(bad)[0])})"
            )
    return df


def add_positions(
    store_path: str | Path, rows: pd.DataFrame, *, fasta: str | Path | None = None
) -> int:
    """Append baseline positions (columns chrom, pos (1-based), stratum) to a store's plan.

    The rows are checked against the oracle's window like the original plan; the next
    build computes only them. ``fasta`` is the genome, if it moved since planning.
    Returns the number of rows added (``chorus-store add-positions``).
    """
    return _add_rows(store_path, schema().data_group("baselines"), rows, fasta)


def add_variants(
    store_path: str | Path, rows: pd.DataFrame, *, fasta: str | Path | None = None
) -> int:
    """Append SNPs (columns chrom, pos (1-based), ref, alt, stratum) to a store's plan.

    As :func:`add_positions`; ``ref`` must be the FASTA base (``chorus-store add-variants``).
    """
    return _add_rows(store_path, schema().data_group("variants"), rows, fasta)


def _add_rows(
    store_path: str | Path, group: DataGroup, rows: pd.DataFrame, fasta: str | Path | None
) -> int:
    fields = VARIANT_FIELDS if group.has_alleles else POSITION_FIELDS
    store = ChorusStore.open(store_path, mode="r+")
    genome = Genome(
        fasta or store.attrs["genome"]["fasta_path"], assembly=store.attrs["genome"].get("assembly")
    )
    genome.require_same(store.attrs["genome"], what=f"the store {store.url}")
    plan = store.attrs["plan"]
    rows = assess_windows(
        rows.loc[:, list(fields)].reset_index(drop=True),
        genome,
        int(plan["input_length"]),
        float(plan["max_n_fraction"]),
    )
    recipe = Recipe.from_stored(store.attrs["recipe"])
    with store.structural_lock(f"chorus-store add-{group.plan_name} {store.url}"):
        store = ChorusStore.open(store_path, mode="r+")
        first = len(store.plan_table(group))
        table = pd.concat([store.plan_table(group), rows], ignore_index=True)
        shard_rows = store.layout.shard_rows(group)
        seed = int(plan["seed_perbin"])
        head = _gene_head(recipe, store.tracks)
        if head is not None:
            # the slots of the first shard the new rows touch are rewritten whole
            from_row = first // shard_rows * shard_rows
            gtf = store.attrs["inputs"]["gtf"]
            index = _gene_index(recipe, _Gtf(gtf, genome) if gtf is not None else None)
            genes = gene_slots(
                table.iloc[from_row:],
                from_row,
                shard_rows,
                index,
                head,
                recipe.input_length,
                store.layout.gene_rows(group),
            )
        else:
            genes = GeneRows.empty()
        arrays: dict[str, np.ndarray] = {}
        if group.bin_record is not None:
            arrays["bin_index"] = _bin_draws(recipe, rows, first, seed)
            all_bins = gene_bin_draws(genes, len(table) - first, first, seed) if head else None
            arrays["gene_bin_index"] = (
                all_bins
                if all_bins is not None
                else np.full((len(rows), BIN_SAMPLES), -1, np.int32)
            )
        plan = dict(store.attrs["plan"])
        if not plan.get("additions"):
            plan["base"] = {
                k: plan[k]
                for k in (
                    "positions_sha256",
                    "variants_sha256",
                    "position_strata",
                    "variant_strata",
                )
            }
        plan[f"{group.plan_name}_sha256"] = table_sha256(table, fields)
        plan[f"{group.row_dim}_strata"] = strata_report(table)
        plan["additions"] = [
            *plan.get("additions", []),
            {
                "group": group.name,
                "rows": len(rows),
                "first_row": first,
                "sha256": table_sha256(rows, fields),
            },
        ]
        store.append_rows(group, rows, genes, arrays, {**store.attrs, "plan": plan})
    return len(rows)
