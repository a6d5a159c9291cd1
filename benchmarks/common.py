"""What the benchmark scripts share: the machine line, each part in its own process, and
stores of the real recipes planned over the demo genome with a stand-in oracle."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from chorus_store import Recipe
    from chorus_store.oracles.base import OutputHead
    from chorus_store.store.core import Layout


def machine() -> str:
    """One line naming the machine the figures were measured on."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {ram:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_part(
    script: str,
    name: str,
    work: Path,
    quick: bool,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run part ``name`` of ``script`` in a fresh process (its peak memory is its own);
    the part prints its result as one JSON line. ``extra_args`` go on its command line."""
    cmd = [sys.executable, script, "--part", name, "--workdir", str(work), *(extra_args or [])]
    res = subprocess.run(
        cmd + (["--quick"] if quick else []),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    if res.returncode:
        raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def parse_args(
    doc: str | None, parts: Mapping[str, Callable[[Path, bool], dict[str, Any]]], only: list[str]
) -> argparse.Namespace | None:
    """The scripts' common options. Runs and prints a ``--part`` itself (returns None)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--part", choices=sorted(parts), help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=only, help="run only this part")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    if args.part:
        print(json.dumps(parts[args.part](args.workdir, args.quick)))
        return None
    return args


# ------------------------------------------------------------------ real recipes, demo genome


def demo_sampling(
    n: int,
    *,
    chromosomes: tuple[str, ...] = ("chr1", "chr2"),
    margin_bp: int = 200_000,
    ccre_chromosomes: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """``[plan.sampling]`` over the demo genome: ~2n positions (n random, n/2 cCREs,
    n/4 TSSs, n/4 gene bodies) and n/2 SNPs on ``chromosomes``, random positions and SNPs
    at least ``margin_bp`` from the ends (at least half the input window, or they are
    planned off the contig and left unbuilt); cCREs on ``ccre_chromosomes`` (default:
    the sampler's, every chromosome)."""
    extra = {} if ccre_chromosomes is None else {"ccre_chromosomes": list(ccre_chromosomes)}
    return {
        "n_random": n,
        "n_ccre": n // 2,
        "n_tss": n // 4,
        "n_gene_body": n // 4,
        "n_snps": n // 2,
        "chromosomes": list(chromosomes),
        "random_margin_bp": margin_bp,
        "snp_margin_bp": margin_bp,
        **extra,
    }


def demo_genome_recipe(
    base: str | Recipe,
    sampling: dict[str, Any],
    *,
    name: str | None = None,
    input_length: int | None = None,
    batch_size: int | None = None,
    heads: tuple[OutputHead, ...] | None = None,
    layout: Layout | None = None,
) -> Recipe:
    """Recipe ``base`` (a shipped one by name: its heads, track table, layout and RNA gene
    rule) with a stand-in ``callable`` oracle (the benchmark passes the oracle object to
    ``build``) and a plan generated over the demo genome with ``sampling``."""
    import dataclasses

    from chorus_store import load_recipe

    recipe = load_recipe(base) if isinstance(base, str) else base
    oracle = {
        "adapter": "callable",
        "callable": "none:none",
        "input_length": input_length or recipe.input_length,
        "batch_size": batch_size or recipe.batch_size,
        "max_n_fraction": recipe.max_n_fraction,
    }
    plan = {
        "source": "generated",
        "assembly": "demo",
        "sampling": sampling,
        **{k: v for k, v in recipe.plan.items() if k in ("rna_genes", "rna_convention")},
    }
    return dataclasses.replace(
        recipe,
        name=name or recipe.name,
        oracle=oracle,
        heads=heads or recipe.heads,
        plan=plan,
        layout=layout or recipe.layout,
    )


def prediction_like(shape: tuple[int, ...], seed: int = 0, period: int = 4099) -> np.ndarray:
    """A positive, NaN-free float32 array of ``shape`` whose values vary like predictions
    (gamma(0.5) + 0.001). Along axis 1 (bins) it repeats with ``period``: a 1 Mb x 2,435
    AlphaGenome buffer then costs a copy, not 2.5e9 draws of the random generator."""
    rng = np.random.default_rng(seed)
    if len(shape) < 2 or shape[1] <= period:
        return (rng.gamma(0.5, 1.0, size=shape) + 1e-3).astype(np.float32)
    block = (rng.gamma(0.5, 1.0, size=(shape[0], period, *shape[2:])) + 1e-3).astype(np.float32)
    out = np.empty(shape, np.float32)
    for start in range(0, shape[1], period):
        stop = min(shape[1], start + period)
        out[:, start:stop] = block[:, : stop - start]
    return out


def synthetic_plan(positions: Any, variants: Any) -> Any:
    """A plan of ``positions`` and ``variants`` at one 128 bp resolution, bin 0 sampled 32
    times and no gene rows: what the reduce benchmarks' synthetic stores are laid out with."""
    import numpy as np

    from chorus_store.store.core import GeneRows, PlanArrays

    n_pos = len(positions)
    return PlanArrays(
        positions=positions,
        variants=variants,
        resolutions=[128],
        bin_index=np.zeros((n_pos, 1, 32), np.int32),
        gene_bin_index=np.full((n_pos, 32), -1, np.int32),
        position_genes=GeneRows.empty(),
        variant_genes=GeneRows.empty(),
        strands=["."],
    )
