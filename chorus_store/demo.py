"""The bundled demo: a synthetic genome with annotations, and the whole pipeline on it.

:func:`make_demo_inputs` writes a deterministic ~5 Mb genome (four chromosomes with GC
isochores, assembly gaps, planted promoter and CTCF-like motifs), a GENCODE-style GTF of
its genes and a SCREEN-style cCRE BED. :func:`run_demo` then runs plan → build → reduce →
export with the demo recipe (``builders/demo``), whose model is a small Enformer-shaped
PyTorch network with random weights shipped in ``examples/demo/model``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chorus_store.build.stage import build
from chorus_store.errors import require_module
from chorus_store.export import export
from chorus_store.plan.stage import plan_store
from chorus_store.recipes import Recipe, load_recipe
from chorus_store.reduce import reduce
from chorus_store.reports import BuildReport, ReduceReport
from chorus_store.store.core import Layout

__all__ = ["DemoInputs", "make_demo_inputs", "run_demo", "DEMO_CHROMOSOMES"]

#: chromosome → length of the synthetic genome
DEMO_CHROMOSOMES = {"chr1": 2_000_000, "chr2": 1_500_000, "chr3": 1_000_000, "chrX": 600_000}
#: assembly gaps (0-based start, length): windows over them are rejected as too_many_n
DEMO_GAPS = {
    "chr1": [(0, 10_000), (950_000, 60_000)],
    "chr2": [(400_000, 30_000)],
    "chr3": [(0, 20_000), (700_000, 25_000)],
    "chrX": [(300_000, 40_000)],
}
_SEED = 20261124
_GENERATOR_VERSION = "demo-genome/v2"
_TATA = b"TATAAAAG"
_CTCF = b"CCGCGAGGGGGCAGC"
_CCRE_MIX = (
    ("dELS", 0.40),
    ("pELS", 0.12),
    ("PLS", 0.10),
    ("CA-CTCF", 0.10),
    ("CA-TF", 0.08),
    ("TF", 0.06),
    ("CA-H3K4me3", 0.07),
    ("CA", 0.07),
)


@dataclass(frozen=True)
class DemoInputs:
    fasta: Path
    ccre: Path
    gtf: Path
    dhs: Path


def _sequence(rng: np.random.Generator, length: int) -> bytearray:
    """Random bases in 50–300 kb isochores of GC content 0.35–0.60."""
    out = bytearray()
    while len(out) < length:
        seg = min(int(rng.integers(50_000, 300_000)), length - len(out))
        gc = rng.uniform(0.35, 0.60)
        p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
        out += np.frombuffer(b"ACGT", np.uint8)[rng.choice(4, seg, p=p)].tobytes()
    return out


def _genes(rng: np.random.Generator, chrom: str, length: int, n: int) -> list[dict[str, Any]]:
    genes = []
    for _ in range(n):
        glen = int(np.exp(rng.uniform(np.log(2_000), np.log(80_000))))
        start = int(rng.integers(20_000, length - glen - 20_000))
        n_exons = int(rng.integers(2, 12))
        cuts = np.sort(rng.choice(np.arange(1, glen - 400), n_exons - 1, replace=False))
        starts = np.concatenate(([0], cuts))
        exons = [
            (start + int(s), start + int(min(s + rng.integers(100, 400), glen - 1))) for s in starts
        ]
        exons[-1] = (exons[-1][0], start + glen - 1)
        genes.append(
            {
                "chrom": chrom,
                "start": start + 1,
                "end": start + glen,
                "strand": "+" if rng.random() < 0.5 else "-",
                "exons": exons,
                "type": "protein_coding" if rng.random() < 0.82 else "lncRNA",
            }
        )
    return genes


def _add_gene(
    rng: np.random.Generator,
    seq: bytearray,
    chrom: str,
    g: dict[str, Any],
    gene_no: int,
    gtf_lines: list[str],
    bed_rows: list[tuple[str, int, int, str]],
) -> None:
    """One gene's GTF lines (gene, transcript, exons), its TATA box and, for a
    protein-coding gene, a promoter-like cCRE at its TSS."""
    length = len(seq)
    name = f"DEMO{gene_no:04d}"
    gid, tid = f"ENSGDEMO{gene_no:07d}.1", f"ENSTDEMO{gene_no:07d}.1"
    tss0 = g["start"] - 1 if g["strand"] == "+" else g["end"] - 1
    if g["type"] == "protein_coding":  # a TATA box 30 bp upstream of the TSS
        at = tss0 - 30 if g["strand"] == "+" else tss0 + 22
        if 0 <= at < length - len(_TATA):
            seq[at : at + len(_TATA)] = _TATA
    attrs = f'gene_id "{gid}"; gene_type "{g["type"]}"; gene_name "{name}"; level 2;'
    t_attrs = (
        f'gene_id "{gid}"; transcript_id "{tid}"; gene_type "{g["type"]}"; '
        f'gene_name "{name}"; transcript_type "{g["type"]}"; level 2;'
    )
    gtf_lines.append(f"{chrom}\tDEMO\tgene\t{g['start']}\t{g['end']}\t.\t{g['strand']}\t.\t{attrs}")
    gtf_lines.append(
        f"{chrom}\tDEMO\ttranscript\t{g['start']}\t{g['end']}\t.\t{g['strand']}\t.\t{t_attrs}"
    )
    for k, (s, e) in enumerate(g["exons"], 1):
        gtf_lines.append(
            f"{chrom}\tDEMO\texon\t{s + 1}\t{e + 1}\t.\t{g['strand']}\t.\t"
            f"{t_attrs} exon_number {k};"
        )
    # promoter-like elements at protein-coding TSSs
    if g["type"] == "protein_coding":
        c = tss0 + int(rng.integers(-150, 150))
        bed_rows.append((chrom, c - 150, c + 150, "PLS"))


def _add_ccres(
    rng: np.random.Generator,
    seq: bytearray,
    chrom: str,
    length: int,
    bed_rows: list[tuple[str, int, int, str]],
) -> None:
    """The cCREs of one chromosome, by category mix; CTCF sites carry the CTCF motif."""
    n_ccre = int(length / 1_000) * 2
    cats = rng.choice(len(_CCRE_MIX), n_ccre, p=[w for _, w in _CCRE_MIX])
    centres = rng.integers(5_000, length - 5_000, n_ccre)
    widths = rng.integers(150, 350, n_ccre)
    for cat, c, w in zip(cats, centres, widths, strict=True):
        category = _CCRE_MIX[int(cat)][0]
        if category == "CA-CTCF":
            seq[int(c) : int(c) + len(_CTCF)] = _CTCF
        bed_rows.append((chrom, int(c) - int(w) // 2, int(c) + int(w) - int(w) // 2, category))


def make_demo_inputs(directory: str | Path) -> DemoInputs:
    """Write the synthetic genome, GTF and cCRE BED into ``directory`` (deterministic).

    Existing files from the same generator version are kept; the function is idempotent.
    """
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    inputs = DemoInputs(
        directory / "demo_genome.fa",
        directory / "demo_ccres.bed",
        directory / "demo_genes.gtf",
        directory / "demo_dhs.txt.gz",
    )
    stamp = directory / "demo_inputs.json"
    if (
        stamp.is_file()
        and json.loads(stamp.read_text()).get("generator") == _GENERATOR_VERSION
        and all(p.is_file() for p in (inputs.fasta, inputs.ccre, inputs.gtf, inputs.dhs))
    ):
        return inputs
    rng = np.random.default_rng(_SEED)
    fasta_lines: list[bytes] = []
    gtf_lines: list[str] = []
    bed_rows: list[tuple[str, int, int, str]] = []
    gene_no = 0
    for chrom, length in DEMO_CHROMOSOMES.items():
        seq = _sequence(rng, length)
        genes = _genes(rng, chrom, length, n=int(length / 2_000_000 * 260))
        for g in genes:
            gene_no += 1
            _add_gene(rng, seq, chrom, g, gene_no, gtf_lines, bed_rows)
        _add_ccres(rng, seq, chrom, length, bed_rows)
        for start, glen in DEMO_GAPS.get(chrom, []):
            seq[start : start + glen] = b"N" * glen
        fasta_lines.append(f">{chrom}".encode())
        fasta_lines.extend(bytes(seq[i : i + 60]) for i in range(0, length, 60))
    inputs.fasta.write_bytes(b"\n".join(fasta_lines) + b"\n")
    for stale in (Path(str(inputs.fasta) + ".fai"),):
        stale.unlink(missing_ok=True)
    header = "##description: chorus-store synthetic demo annotation (GENCODE-style)\n"
    inputs.gtf.write_text(header + "\n".join(gtf_lines) + "\n")
    bed_rows.sort()
    inputs.ccre.write_text(
        "".join(
            f"{c}\t{s}\t{e}\tEH38D{i:07d}\tEH38E{i:07d}\t{cat}\n"
            for i, (c, s, e, cat) in enumerate(bed_rows)
        )
    )
    _write_dhs(inputs.dhs, rng)
    digest = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (inputs.fasta, inputs.ccre, inputs.gtf, inputs.dhs)
    }
    stamp.write_text(json.dumps({"generator": _GENERATOR_VERSION, "sha256": digest}, indent=1))
    return inputs


def _write_dhs(path: Path, rng: np.random.Generator) -> None:
    """A DHS index in the Meuleman vocabulary's layout (autosomes only, as chorus reads it)."""
    import gzip

    lines = ["seqname\tstart\tend\tidentifier\tmean_signal\tnumsamples\tsummit\tcomponent"]
    i = 0
    for chrom, length in DEMO_CHROMOSOMES.items():
        if chrom == "chrX":
            continue
        for summit in np.sort(rng.integers(20_000, length - 20_000, length // 2_000)):
            width = int(rng.integers(100, 600))
            lines.append(
                f"{chrom}\t{summit - width // 2}\t{summit + width // 2}\t{chrom}.{i}\t"
                f"{rng.gamma(2.0, 0.5):.4f}\t{int(rng.integers(1, 733))}\t{summit}\t"
                f"Component{int(rng.integers(1, 17))}"
            )
            i += 1
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(("\n".join(lines) + "\n").encode())


@dataclass
class DemoResult:
    store: Path
    npz: Path
    build: BuildReport
    reduce: ReduceReport


def run_demo(
    directory: str | Path,
    *,
    recipe: Recipe | str = "demo",
    workers: int = 1,
    layout: Layout | None = None,
    progress: bool = True,
) -> DemoResult:
    """plan → build → reduce → export of the demo recipe into ``directory``.

    The store is ``directory/demo.zarr`` and the NPZ ``directory/demo_pertrack.npz``.
    Re-running resumes: a finished stage does nothing.
    """
    require_module("torch", "the demo's model", "demo")
    directory = Path(directory).expanduser().resolve()
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    inputs = make_demo_inputs(directory / "inputs")
    store_path = directory / f"{recipe.name}.zarr"
    plan_store(
        store_path, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf, layout=layout
    )
    build_report = build(store_path, workers=workers, progress=progress)
    reduce_report = reduce(store_path, progress=progress)
    npz = export(store_path, out=directory / f"{recipe.name}_pertrack.npz").path
    return DemoResult(store_path, npz, build_report, reduce_report)
