"""chorus's samplers, restated: baseline positions, SNP families, DHS summits (spec §1–§2).

Every sampler uses chorus's seeds and Python ``random`` streams in chorus's order, so that
given the same FASTA and annotations it draws the same rows:

* :func:`generate_positions` — the 31,500-position baseline (random / cCRE / TSS / gene
  body), optionally minus gene bodies and plus DHS summits (the three activity
  populations of spec §1.1);
* :func:`generate_snps` — the effect SNPs of one family: ``uniform`` (the seed README's
  10,000), ``gene_anchored`` (Enformer, Borzoi, AlphaGenome, Sei), ``promoter`` (LegNet),
  ``accessibility`` (ChromBPNet);
* :func:`read_dhs_index` / :func:`sample_dhs_positions` — the Meuleman DHS vocabulary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus_store.errors import GenomeMismatchError, InputFileError, RecipeError
from chorus_store.genome.fasta import Genome
from chorus_store.genome.genes import gene_tss, protein_coding

__all__ = [
    "POSITION_FIELDS",
    "VARIANT_FIELDS",
    "CHORUS_CCRE_QUOTAS",
    "GENE_ANCHORED_STRATA",
    "PROMOTER_STRATA",
    "SamplingConfig",
    "rows_sha256",
    "table_sha256",
    "generate_positions",
    "generate_snps",
    "positions_to_snps",
    "read_dhs_index",
    "sample_dhs_positions",
    "ccre_draw",
]

POSITION_FIELDS = ("chrom", "pos", "stratum")
VARIANT_FIELDS = ("chrom", "pos", "ref", "alt", "stratum")

#: chorus's cCRE quotas for the 31,500-position baseline, in draw order (spec §1.1).
CHORUS_CCRE_QUOTAS: tuple[tuple[str, int], ...] = (
    ("PLS", 3000),
    ("dELS", 2500),
    ("pELS", 1500),
    ("CA-CTCF", 1500),
    ("CA-TF", 1000),
    ("TF", 500),
    ("CA-H3K4me3", 1000),
    ("CA", 500),
)

_AUTOSOMES = tuple(f"chr{i}" for i in range(1, 23))
Row = tuple[str, int, str]  # (chrom, 1-based pos, stratum)

#: chorus ``DEFAULT_REGION_STRATA``: the gene-anchored SNP mixture, in chorus's order
GENE_ANCHORED_STRATA: tuple[tuple[str, float], ...] = (
    ("tss_near", 0.100),
    ("tss_far", 0.100),
    ("junction", 0.165),
    ("gene_body", 0.060),
    ("random", 0.075),
    ("ccre", 0.500),
)
#: chorus ``PROMOTER_REGION_STRATA`` (LegNet's SNPs)
PROMOTER_STRATA: tuple[tuple[str, float], ...] = (
    ("tss_promoter", 0.40),
    ("ccre_pls", 0.30),
    ("ccre_pels", 0.15),
    ("random", 0.15),
)
#: per-class weights of the gene-anchored cCRE pool, in chorus's draw order
_ANCHORED_CCRE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("PLS", 0.22),
    ("dELS", 0.28),
    ("pELS", 0.15),
    ("CA-CTCF", 0.10),
    ("CA-H3K4me3", 0.08),
    ("CA-TF", 0.07),
    ("CA", 0.06),
    ("TF", 0.04),
)
POPULATIONS = ("genome_dominated", "minus_gene_body", "minus_gene_body_plus_dhs")
EFFECT_FAMILIES = ("uniform", "gene_anchored", "promoter", "accessibility")


@dataclass(frozen=True)
class SamplingConfig:
    """Parameters of a generated plan; defaults are chorus's (spec §1.3, §2.2).

    Counts are targets: a stratum with fewer candidates than its count yields them all,
    as in chorus. Margins are parameters so that small genomes (the demo) can be sampled
    by the same code as hg38.
    """

    n_random: int = 15_000
    n_ccre: int = 11_500
    ccre_quotas: tuple[tuple[str, int], ...] = CHORUS_CCRE_QUOTAS
    n_tss: int = 3_000
    n_gene_body: int = 2_000
    gene_body_min_bp: int = 10_000
    n_snps: int = 10_000
    seed_random: int = 789
    seed_ccre: int = 456
    seed_tss: int = 111
    seed_gene_body: int = 222
    seed_snps: int = 42
    seed_perbin: int = 999
    chromosomes: tuple[str, ...] = _AUTOSOMES  # random / TSS / gene-body strata and SNPs
    ccre_chromosomes: tuple[str, ...] = (*_AUTOSOMES, "chrX")
    random_margin_bp: int = 10_000_000
    random_max_pos: int = 200_000_000
    random_fallback_margin_bp: int = 1_000_000
    snp_margin_bp: int = 5_000_000
    snp_max_pos: int = 200_000_000
    shuffle: bool = True  # chorus iterates the combined list after one global shuffle
    # activity population (spec §1.1): the 31,500 set, minus gene bodies (Sei, LegNet),
    # or minus gene bodies plus DHS summits (ChromBPNet); DHS needs the DHS index file
    population: str = "genome_dominated"
    n_dhs_positions: int = 5_000
    seed_dhs_positions: int = 567
    # effect family (spec §2.2)
    effect_family: str = "uniform"
    n_effect_positions: int = 18_000
    seed_effect: int = 42  # the anchored samplers' RNG and the alt-allele stream
    anchored_strata: tuple[tuple[str, float], ...] = GENE_ANCHORED_STRATA
    anchored_margin_bp: int = 5_000_000
    promoter_strata: tuple[tuple[str, float], ...] = PROMOTER_STRATA
    promoter_margin_bp: int = 100_000
    tss_near_bp: int = 1_000
    tss_far_bp: tuple[int, int] = (1_000, 10_000)
    junction_bp: int = 100
    tss_jitter_bp: int = 250
    n_dhs_snps: int = 10_000
    seed_dhs_pool: int = 43
    seed_dhs_jitter: int = 44
    dhs_jitter_bp: int = 150

    def __post_init__(self) -> None:
        _check_numbers(self)
        if self.population not in POPULATIONS:
            raise InputFileError(
                f"population must be one of {POPULATIONS}, not {self.population!r}"
            )
        if self.effect_family not in EFFECT_FAMILIES:
            raise InputFileError(
                f"effect_family must be one of {EFFECT_FAMILIES}, not {self.effect_family!r}"
            )
        for name, strata in (
            ("anchored", self.anchored_strata),
            ("promoter", self.promoter_strata),
        ):
            if abs(sum(f for _, f in strata) - 1.0) > 1e-6:
                raise InputFileError(f"{name}_strata must sum to 1")

    @property
    def needs_dhs(self) -> bool:
        return self.population.endswith("plus_dhs") or self.effect_family == "accessibility"

    def quotas(self) -> list[tuple[str, int]]:
        """Per-category cCRE quotas scaled to ``n_ccre`` (largest remainder, in order)."""
        base = sum(q for _, q in self.ccre_quotas)
        if self.n_ccre == base:
            return list(self.ccre_quotas)
        exact = [q * self.n_ccre / base for _, q in self.ccre_quotas]
        counts = [int(x) for x in exact]
        short = self.n_ccre - sum(counts)
        order = sorted(range(len(exact)), key=lambda i: -(exact[i] - counts[i]))
        for i in order[:short]:
            counts[i] += 1
        return [(c, n) for (c, _), n in zip(self.ccre_quotas, counts, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json_ready(asdict(self))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingConfig:
        d = dict(d)
        for key in ("ccre_quotas",):
            if key in d:
                d[key] = tuple((str(c), int(q)) for c, q in d[key])
        for key in ("anchored_strata", "promoter_strata"):
            if key in d:
                d[key] = tuple((str(c), float(q)) for c, q in d[key])
        for key in ("chromosomes", "ccre_chromosomes", "tss_far_bp"):
            if key in d:
                d[key] = tuple(d[key])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputFileError(f"unknown sampling parameter(s) {sorted(unknown)}")
        return cls(**d)


#: the most rows one count of a plan may ask for: chorus's counts are 10^3-10^4, and
#: beyond this a plan is a typo (sampling is in-memory Python; 10^6 rows take minutes)
MAX_PLAN_COUNT = 1_000_000
_COUNTS = ("n_random", "n_ccre", "n_tss", "n_gene_body", "n_snps", "n_dhs_positions",
           "n_effect_positions", "n_dhs_snps")  # fmt: skip
_BP = ("gene_body_min_bp", "random_margin_bp", "random_max_pos", "random_fallback_margin_bp",
       "snp_margin_bp", "snp_max_pos", "anchored_margin_bp", "promoter_margin_bp",
       "tss_near_bp", "junction_bp", "tss_jitter_bp", "dhs_jitter_bp")  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_numbers(cfg: SamplingConfig) -> None:
    """Every count, distance and seed of ``cfg`` is an integer in its range, else a
    :class:`RecipeError` naming the ``[plan.sampling]`` key (a negative count used to be
    taken as 0, a huge one ran for minutes)."""
    problems = _integer_problems(cfg) + _range_problems(cfg)
    if problems:
        raise RecipeError(
            "[plan.sampling] has values out of range: " + "; ".join(problems) + ". Fix them "
            "in the recipe's [plan.sampling] section."
        )


def _integer_problems(cfg: SamplingConfig) -> list[str]:
    """Counts, distances, seeds and quotas that are not integers in their range."""
    problems: list[str] = []

    def check(key: str, value: Any, lo: int, hi: int | None) -> None:
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            where = f"[{lo:,}, {hi:,}]" if hi is not None else f">= {lo:,}"
            problems.append(f"{key} = {value!r} (allowed: an integer in {where})")

    for key in _COUNTS:
        check(key, getattr(cfg, key), 0, MAX_PLAN_COUNT)
    for key in _BP:
        check(key, getattr(cfg, key), 0, None)
    for key in (f.name for f in dataclasses.fields(cfg) if f.name.startswith("seed_")):
        # numpy's streams (the per-bin draws) take only non-negative seeds
        check(key, getattr(cfg, key), 0, 2**63 - 1)
    for category, n in cfg.ccre_quotas:
        check(f"ccre_quotas[{category!r}]", n, 0, MAX_PLAN_COUNT)
    return problems


def _range_problems(cfg: SamplingConfig) -> list[str]:
    """A distance range that is not ``[min, max]``, fractions outside [0, 1]."""
    problems: list[str] = []
    lo_hi = cfg.tss_far_bp
    if len(lo_hi) != 2 or not all(_is_int(v) and v >= 0 for v in lo_hi) or lo_hi[0] > lo_hi[1]:
        problems.append(f"tss_far_bp = {list(lo_hi)!r} (allowed: [min, max] with 0 <= min <= max)")
    for name in ("anchored_strata", "promoter_strata"):
        for stratum, frac in getattr(cfg, name):
            if not 0.0 <= float(frac) <= 1.0:
                problems.append(f"{name}[{stratum!r}] = {frac!r} (allowed: a fraction in [0, 1])")
    return problems


def json_ready(value: Any) -> Any:
    """Tuples → lists, recursively (how the config is stored and compared)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def rows_sha256(rows: Iterable[tuple[Any, ...]]) -> str:
    """chorus's content hash: sorted rows, ``"|".join(str(field)) + "\\n"``, one sha256.

    Order-independent by design (spec §1.6).
    """
    h = hashlib.sha256()
    for row in sorted(rows):
        h.update(("|".join(str(x) for x in row) + "\n").encode())
    return h.hexdigest()


def table_sha256(df: pd.DataFrame, fields: tuple[str, ...]) -> str:
    cols = [df[f].tolist() for f in fields]
    return rows_sha256(zip(*cols, strict=True))


# --------------------------------------------------------------------------------------
# Generated plans (chorus's samplers, restated)
# --------------------------------------------------------------------------------------


def _random_positions(genome: Genome, cfg: SamplingConfig, rng: random.Random) -> list[Row]:
    out: list[Row] = []
    per_chrom = cfg.n_random // len(cfg.chromosomes) + 1
    for chrom in cfg.chromosomes:
        max_pos = _last_draw(
            genome, chrom, cfg.random_margin_bp, cfg.random_max_pos, "random positions",
            "random_margin_bp", fallback_margin=cfg.random_fallback_margin_bp,
        )  # fmt: skip
        for _ in range(per_chrom):
            if len(out) >= cfg.n_random:
                break
            out.append((chrom, rng.randint(cfg.random_margin_bp, max_pos), "random"))
    return out


def ccre_draw(
    ccre: pd.DataFrame, quotas: Iterable[tuple[str, int]], seed: int, chromosomes: Iterable[str]
) -> list[tuple[str, int]]:
    """chorus's ``sample_ccre_positions``: per category in order, ``Random(seed).sample`` of
    its rows (BED order), centres ``(start + end) // 2``, then one shuffle of the whole list.
    A category with no rows is skipped, as chorus does."""
    rng = random.Random(seed)
    df = ccre[ccre["chrom"].isin(set(chromosomes))]
    out: list[tuple[str, int]] = []
    for category, n in quotas:
        cat = df[df["category"] == category]
        if len(cat) == 0:
            continue
        idx = rng.sample(range(len(cat)), min(n, len(cat)))
        centre = ((cat["start"].to_numpy() + cat["end"].to_numpy()) // 2)[idx]
        out.extend(
            (str(c), int(p)) for c, p in zip(cat["chrom"].to_numpy()[idx], centre, strict=True)
        )
    rng.shuffle(out)
    return out


def _ccre_positions(ccre: pd.DataFrame, cfg: SamplingConfig) -> list[Row]:
    return [
        (c, p, "ccre")
        for c, p in ccre_draw(ccre, cfg.quotas(), cfg.seed_ccre, cfg.ccre_chromosomes)
    ]


def _protein_coding_genes(genes: pd.DataFrame, cfg: SamplingConfig) -> pd.DataFrame:
    pc = protein_coding(genes).copy()
    pc["tss"] = gene_tss(pc)
    return pc[pc["chrom"].isin(set(cfg.chromosomes))]


def _first_per_gene(df: pd.DataFrame, value: str) -> list[tuple[str, int]]:
    # chorus de-duplicates by gene name with groupby('gene_name').first(): sorted by name
    first = df.groupby("gene_name").first().reset_index()
    return [(str(c), int(p)) for c, p in zip(first["chrom"], first[value], strict=True)]


def generate_positions(
    genome: Genome,
    ccre: pd.DataFrame,
    genes: pd.DataFrame,
    cfg: SamplingConfig,
    dhs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """chorus's baseline positions: random, cCRE, protein-coding TSS, gene-body midpoints.

    Each stratum has its own RNG as in chorus (spec §1.3): ``random`` draws per chromosome
    from ``Random(seed_random)``; cCREs per category from ``Random(seed_ccre)``; TSS and
    gene bodies ``Random(seed).sample`` of the per-gene lists. The combined list is
    shuffled by the random stratum's generator, the order chorus iterates in.
    ``cfg.population`` drops the gene bodies (Sei, LegNet) and adds ``n_dhs_positions`` DHS
    summits drawn with ``seed_dhs_positions`` from ``dhs`` (ChromBPNet), spec §1.1.
    """
    genome.require_contigs(cfg.chromosomes, what="the sampling config's chromosomes")
    rng = random.Random(cfg.seed_random)
    rows = _random_positions(genome, cfg, rng)
    rows += _ccre_positions(ccre, cfg)
    pc = _protein_coding_genes(genes, cfg)
    tss = _first_per_gene(pc, "tss")
    if len(tss) > cfg.n_tss:
        tss = random.Random(cfg.seed_tss).sample(tss, cfg.n_tss)
    rows += [(c, p, "tss") for c, p in tss]
    long_genes = pc[(pc["end"] - pc["start"]) > cfg.gene_body_min_bp].copy()
    long_genes["midpoint"] = (long_genes["start"] + long_genes["end"]) // 2
    bodies = _first_per_gene(long_genes, "midpoint")
    if len(bodies) > cfg.n_gene_body:
        bodies = random.Random(cfg.seed_gene_body).sample(bodies, cfg.n_gene_body)
    if cfg.population == "genome_dominated":
        rows += [(c, p, "gene_body") for c, p in bodies]
    if cfg.population.endswith("plus_dhs"):
        rows += dhs_rows(dhs, cfg.n_dhs_positions, cfg.seed_dhs_positions)
    if cfg.shuffle:
        rng.shuffle(rows)
    missing = {r[0] for r in rows} - set(genome.lengths)
    if missing:
        raise GenomeMismatchError(
            f"the annotations place positions on contig(s) {sorted(missing)[:5]} that "
            f"{genome.path} lacks; are the BED/GTF for the same assembly as the FASTA?"
        )
    return pd.DataFrame(rows, columns=list(POSITION_FIELDS))


def generate_snps(
    genome: Genome,
    cfg: SamplingConfig,
    *,
    ccre: pd.DataFrame | None = None,
    genes: pd.DataFrame | None = None,
    dhs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The effect SNPs of ``cfg.effect_family`` (spec §2.2).

    ``uniform``: :func:`uniform_snps`. ``gene_anchored`` / ``promoter``: chorus's anchored
    samplers of ``n_effect_positions`` positions, turned into SNPs by
    :func:`positions_to_snps`. ``accessibility``: the uniform 10,000 followed by SNPs
    jittered around DHS summits (ChromBPNet's family).
    """
    if cfg.effect_family == "uniform":
        return uniform_snps(genome, cfg)
    if cfg.effect_family in ("gene_anchored", "promoter"):
        if ccre is None or genes is None:
            raise InputFileError(f"the {cfg.effect_family} SNP family needs the cCRE BED and GTF")
        sampler = (
            gene_anchored_positions if cfg.effect_family == "gene_anchored" else promoter_positions
        )
        return positions_to_snps(sampler(genome, ccre, genes, cfg), genome, cfg.seed_effect)
    uniform = uniform_snps(genome, cfg)
    return pd.concat([uniform, dhs_snps(genome, dhs, cfg)], ignore_index=True)


def uniform_snps(genome: Genome, cfg: SamplingConfig) -> pd.DataFrame:
    """chorus's uniform synthetic SNPs (spec §2.2 (a)): ``n_snps`` over ``chromosomes``.

    ``Random(seed_snps)`` draws ``n // n_chrom + 1`` positions per chromosome in
    ``[margin, min(len - margin, max_pos)]``; a non-ACGT reference base is skipped (its
    position draw is spent, no allele is drawn); the alt allele is drawn from the same
    stream among the three other bases; then the list is shuffled and truncated.
    """
    genome.require_contigs(cfg.chromosomes, what="the sampling config's chromosomes")
    rng = random.Random(cfg.seed_snps)
    rows: list[tuple[str, int, str, str, str]] = []
    per_chrom = cfg.n_snps // len(cfg.chromosomes) + 1
    for chrom in cfg.chromosomes:
        max_pos = _last_draw(
            genome, chrom, cfg.snp_margin_bp, cfg.snp_max_pos, "SNPs", "snp_margin_bp"
        )
        for _ in range(per_chrom):
            if len(rows) >= cfg.n_snps:
                break
            snp = _snp_at(genome, chrom, rng.randint(cfg.snp_margin_bp, max_pos), rng, "random")
            if snp is not None:
                rows.append(snp)
    rng.shuffle(rows)
    return pd.DataFrame(rows[: cfg.n_snps], columns=list(VARIANT_FIELDS))


# --------------------------------------------------------------------------------------
# anchored SNP families (chorus's sample_gene_anchored_positions / ..._promoter_...)
# --------------------------------------------------------------------------------------


def _last_draw(
    genome: Genome,
    chrom: str,
    margin: int,
    cap: int,
    what: str,
    knob: str,
    *,
    fallback_margin: int | None = None,
) -> int:
    """The last position chorus's uniform draws on ``chrom`` may take: ``margin`` from
    its end and at most ``cap`` (``fallback_margin`` from the end when that leaves nothing
    past ``margin``: chorus's random sampler on short contigs)."""
    clen = genome.lengths[chrom]
    max_pos = min(clen - margin, cap)
    if fallback_margin is not None and max_pos <= margin:
        max_pos = clen - fallback_margin
    if max_pos < margin:
        raise InputFileError(
            f"{chrom} ({clen:,} bp) is too short for {what} with a {margin:,} bp margin; "
            f"lower {knob}"
        )
    return max_pos


def _usable_contigs(genome: Genome, pc: pd.DataFrame, margin_bp: int) -> dict[str, int]:
    # long enough for the margin AND carrying protein-coding genes (chorus #164: without the
    # second rule 81.7% of a stratum landed on alt/unplaced contigs)
    pc_chroms = set(pc["chrom"])
    return {c: n for c, n in genome.lengths.items() if n > 2 * margin_bp and c in pc_chroms}


def gene_anchored_positions(
    genome: Genome, ccre: pd.DataFrame, genes: pd.DataFrame, cfg: SamplingConfig
) -> list[Row]:
    """chorus's gene-anchored mixture: TSS-near/far, junction, gene body, random, cCRE.

    Restates ``sample_gene_anchored_positions(n, chrom_sizes, seed)``: pools filtered to
    the usable interval ``[margin, len - margin]`` of usable contigs; one
    ``Random(seed_effect)`` for every draw; the cCRE pool drawn by chorus's cCRE sampler
    with 2× per-class quotas; each stratum ``round(n × fraction)`` positions with its own
    cursor; the list shuffled at the end.
    """
    n, margin = cfg.n_effect_positions, cfg.anchored_margin_bp
    pc = protein_coding(genes)
    exons = genes[(genes["feature"] == "exon") & genes["gene_name"].isin(set(pc["gene_name"]))]
    usable = _usable_contigs(genome, pc, margin)

    def inside(chrom: str, pos: int) -> bool:
        return chrom in usable and margin <= pos <= usable[chrom] - margin

    tss = [(c, int(p)) for c, p in zip(pc["chrom"], gene_tss(pc), strict=True) if inside(c, int(p))]
    junctions = [(str(c), int(p)) for c, p in zip(exons["chrom"], exons["start"], strict=True)]
    junctions += [(str(c), int(p)) for c, p in zip(exons["chrom"], exons["end"], strict=True)]
    junctions = [(c, p) for c, p in junctions if inside(c, p)]
    bodies = [
        (str(c), int(s), int(e))
        for c, s, e in zip(pc["chrom"], pc["start"], pc["end"], strict=True)
        if inside(c, int(s)) and inside(c, int(e))
    ]
    chrom_list = sorted(usable)
    rng = random.Random(cfg.seed_effect)
    strata = dict(cfg.anchored_strata)
    ccre_pool: list[tuple[str, int]] = []
    if strata.get("ccre"):
        want = int(round(n * strata["ccre"]))
        quotas = [(k, max(1, int(round(want * w * 2.0)))) for k, w in _ANCHORED_CCRE_WEIGHTS]
        raw = ccre_draw(ccre, quotas, cfg.seed_effect, cfg.ccre_chromosomes)
        ccre_pool = [(c, p) for c, p in raw if inside(c, p)]
        rng.shuffle(ccre_pool)
    pools: dict[str, list[Any]] = {
        "ccre": ccre_pool,
        "tss_near": tss,
        "tss_far": tss,
        "junction": junctions,
        "gene_body": bodies,
    }
    out: list[Row] = []
    for name, frac in cfg.anchored_strata:
        _check_stratum(name, pools, margin)
        for i in range(int(round(n * frac))):
            if name == "ccre":
                c, p = ccre_pool[i % len(ccre_pool)]
            elif name == "tss_near":
                c, p = rng.choice(tss)
                p += rng.randint(-cfg.tss_near_bp, cfg.tss_near_bp)
            elif name == "tss_far":
                c, p = rng.choice(tss)
                off = rng.randint(*cfg.tss_far_bp)
                p += off if rng.random() < 0.5 else -off
            elif name == "junction":
                c, p = rng.choice(junctions)
                p += rng.randint(-cfg.junction_bp, cfg.junction_bp)
            elif name == "gene_body":
                c, s0, e0 = rng.choice(bodies)
                p = rng.randint(s0, e0) if e0 > s0 else s0
            else:  # random: chromosome chosen uniformly, as chorus does
                c = rng.choice(chrom_list)
                p = rng.randint(margin, usable[c] - margin)
            out.append((c, min(max(p, margin), usable[c] - margin), name))
    rng.shuffle(out)
    return out


def promoter_positions(
    genome: Genome, ccre: pd.DataFrame, genes: pd.DataFrame, cfg: SamplingConfig
) -> list[Row]:
    """chorus's promoter mixture (LegNet): TSS ± 250 bp, PLS and pELS cCREs, random."""
    n, margin = cfg.n_effect_positions, cfg.promoter_margin_bp
    pc = protein_coding(genes)
    usable = _usable_contigs(genome, pc, margin)
    if not usable:
        raise InputFileError("no chromosome long enough for the promoter sampler's margin")
    rng = random.Random(cfg.seed_effect)
    tss = []
    for c, p in zip(pc["chrom"], gene_tss(pc), strict=True):
        pos = int(p)
        if c in usable and margin <= pos <= usable[c] - margin:
            tss.append((str(c), pos))
    strata = dict(cfg.promoter_strata)

    def pool(category: str, frac: float) -> list[tuple[str, int]]:
        want = int(round(n * frac))
        raw = ccre_draw(
            ccre,
            [(category, max(1, int(round(want * 2.0))))],
            cfg.seed_effect,
            cfg.ccre_chromosomes,
        )
        out = [(c, p) for c, p in raw if c in usable and margin <= p <= usable[c] - margin]
        rng.shuffle(out)
        return out

    pls = pool("PLS", strata["ccre_pls"]) if strata.get("ccre_pls") else []
    pels = pool("pELS", strata["ccre_pels"]) if strata.get("ccre_pels") else []
    pools: dict[str, list[Any]] = {"tss_promoter": tss, "ccre_pls": pls, "ccre_pels": pels}
    out: list[Row] = []
    for name, frac in cfg.promoter_strata:
        _check_stratum(name, pools, margin)
        for i in range(int(round(n * frac))):
            if name == "tss_promoter":
                c, p = rng.choice(tss)
                p += rng.randint(-cfg.tss_jitter_bp, cfg.tss_jitter_bp)
            elif name == "ccre_pls":
                c, p = pls[i % len(pls)]
            elif name == "ccre_pels":
                c, p = pels[i % len(pels)]
            else:  # random
                c = rng.choice(list(usable))
                p = rng.randint(margin, usable[c] - margin)
            out.append((c, min(max(p, margin), usable[c] - margin), name))
    rng.shuffle(out)
    return out


def _check_stratum(name: str, pools: dict[str, list[Any]], margin: int) -> None:
    # chorus #164: an unknown name or an empty pool must fail, never fall through to
    # uniform random positions tagged with the stratum's name
    if name != "random" and name not in pools:
        raise InputFileError(f"unhandled stratum {name!r}; known: {sorted(pools) + ['random']}")
    if name != "random" and not pools[name]:
        raise InputFileError(
            f"stratum {name!r} has no source positions after the {margin:,} bp contig-end margin"
        )


def _snp_at(
    genome: Genome, chrom: str, pos: int, rng: random.Random, stratum: str
) -> tuple[str, int, str, str, str] | None:
    """The SNP at ``pos`` as chorus draws it: the reference base there and an alt drawn from
    ``rng`` among the three others; None, and no draw, where the reference is not ACGT."""
    ref = genome.base(chrom, pos)
    if ref not in ("A", "C", "G", "T"):
        return None
    return (chrom, pos, ref, rng.choice([b for b in "ACGT" if b != ref]), stratum)


def positions_to_snps(rows: list[Row], genome: Genome, seed: int) -> pd.DataFrame:
    """chorus's position → SNP step: ``Random(seed)``, in order; the reference base at
    ``pos``; non-ACGT skipped (no draw); alt drawn among the three other bases."""
    rng = random.Random(seed)
    out = []
    for chrom, pos, stratum in rows:
        snp = _snp_at(genome, chrom, int(pos), rng, stratum)
        if snp is not None:
            out.append(snp)
    return pd.DataFrame(out, columns=list(VARIANT_FIELDS))


# --------------------------------------------------------------------------------------
# DHS summits (Meuleman DHS Index & Vocabulary)
# --------------------------------------------------------------------------------------

_DHS_COLUMNS = [
    "seqname",
    "start",
    "end",
    "identifier",
    "mean_signal",
    "numsamples",
    "summit",
    "component",
]


def read_dhs_index(path: str | Path) -> pd.DataFrame:
    """The Meuleman DHS index (``DHS_Index_and_Vocabulary_hg38_WM20190703.txt.gz``),
    filtered to chr1–22 as chorus does. Plain or gzipped TSV with a header."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"DHS index {path} does not exist; pass an existing --dhs")
    try:
        df = pd.read_csv(path, sep="\t", usecols=_DHS_COLUMNS, low_memory=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise InputFileError(
            f"DHS index {path} is malformed ({exc}); expected columns {_DHS_COLUMNS}"
        ) from exc
    return df[df["seqname"].isin(set(_AUTOSOMES))].reset_index(drop=True)


def sample_dhs_positions(dhs: pd.DataFrame | None, n: int, seed: int) -> list[tuple[str, int]]:
    """chorus's ``sample_dhs_positions``: ``Random(seed).sample`` of row indices, summits."""
    if dhs is None:
        raise InputFileError("this population/SNP family needs the DHS index (--dhs)")
    idx = random.Random(seed).sample(range(len(dhs)), min(n, len(dhs)))
    chroms = dhs["seqname"].to_numpy()[idx]
    summits = dhs["summit"].to_numpy()[idx]
    return [(str(c), int(p)) for c, p in zip(chroms, summits, strict=True)]


def dhs_rows(dhs: pd.DataFrame | None, n: int, seed: int) -> list[Row]:
    """DHS baseline positions: summits without jitter, stratum ``dhs`` (spec §1.1)."""
    return [(c, p, "dhs") for c, p in sample_dhs_positions(dhs, n, seed)]


def dhs_snps(genome: Genome, dhs: pd.DataFrame | None, cfg: SamplingConfig) -> pd.DataFrame:
    """ChromBPNet's DHS SNPs: summits (seed 43) jittered ± 150 bp from ``Random(44)``, kept
    inside ``[margin, len - margin]`` and with an ACGT reference, alt from the same stream."""
    summits = sample_dhs_positions(dhs, cfg.n_dhs_snps, cfg.seed_dhs_pool)
    rng = random.Random(cfg.seed_dhs_jitter)
    out = []
    for chrom, summit in summits:
        pos = summit + rng.randint(-cfg.dhs_jitter_bp, cfg.dhs_jitter_bp)
        clen = genome.lengths.get(chrom)
        if clen is None or pos < cfg.snp_margin_bp or pos > clen - cfg.snp_margin_bp:
            continue
        snp = _snp_at(genome, chrom, pos, rng, "dhs")
        if snp is not None:
            out.append(snp)
    return pd.DataFrame(out, columns=list(VARIANT_FIELDS))
