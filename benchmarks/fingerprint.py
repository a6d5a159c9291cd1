"""Cost of the whole-genome FASTA fingerprint: plan time with and without it.

    python benchmarks/fingerprint.py --gb 3

writes a random-base FASTA of ``--gb`` GB (the demo's contig names, lengths scaled up, so
the demo cCRE BED and GTF apply) under ``--workdir`` (default /tmp), plans the small
demo recipe on it twice (without the per-contig sequence hashes, as before, then with
them), prints one JSON line and deletes the FASTA.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from common import machine  # a script: its folder is on sys.path

from chorus_store import Recipe, plan_store
from chorus_store.demo import DEMO_CHROMOSOMES, make_demo_inputs
from chorus_store.genome import fasta as genome_module
from chorus_store.genome.fasta import Genome
from chorus_store.resources import data_dir

SAMPLING = {"n_random": 96, "n_ccre": 48, "n_tss": 24, "n_gene_body": 16, "n_snps": 64}


def write_random_fasta(path: Path, total_bp: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    acgt = np.frombuffer(b"ACGT", np.uint8)
    scale = total_bp / sum(DEMO_CHROMOSOMES.values())
    with path.open("wb") as fh:
        for chrom, length in DEMO_CHROMOSOMES.items():
            n = int(length * scale) // 60 * 60
            fh.write(f">{chrom}\n".encode())
            for start in range(0, n, 60 * 2**18):  # 15 Mb per write
                lines = min(2**18, (n - start) // 60)
                block = np.empty((lines, 61), np.uint8)
                block[:, :60] = acgt[rng.integers(0, 4, (lines, 60), dtype=np.uint8)]
                block[:, 60] = ord("\n")
                fh.write(block.tobytes())


def _recipe() -> Recipe:
    demo = data_dir("builders") / "demo"
    data = tomllib.loads((demo / "recipe.toml").read_text())
    data = copy.deepcopy(data)
    data["plan"]["sampling"].update(SAMPLING)
    return Recipe.from_dict(data, base=demo)


def run(gb: float, workdir: Path) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="chorus-fingerprint-", dir=workdir))
    try:
        inputs = make_demo_inputs(root / "demo")
        fasta = root / "random.fa"
        t = time.perf_counter()
        write_random_fasta(fasta, int(gb * 1e9))
        write_s = time.perf_counter() - t
        Genome(fasta).close()  # the .fai, outside both timings
        recipe = _recipe()
        kw: dict[str, Any] = {"fasta": fasta, "ccre": inputs.ccre, "gtf": inputs.gtf}
        full_record = Genome.record

        def prefix_only(self: Genome, *, sequence: bool = True) -> dict[str, object]:
            return full_record(self, sequence=False)

        Genome.record = prefix_only  # type: ignore[method-assign]  # the old fingerprint
        t = time.perf_counter()
        plan_store(root / "without.zarr", recipe, **kw)  # also warms the page cache
        without = time.perf_counter() - t
        Genome.record = full_record  # type: ignore[method-assign]
        genome_module._SEQUENCE_SHA256.clear()
        t = time.perf_counter()
        plan_store(root / "with.zarr", recipe, **kw)
        with_full = time.perf_counter() - t
        genome_module._SEQUENCE_SHA256.clear()
        t = time.perf_counter()
        Genome(fasta).sequence_sha256()
        hash_only = time.perf_counter() - t
        return {
            "machine": machine(),
            "fasta_bytes": fasta.stat().st_size,
            "write_s": round(write_s, 1),
            "plan_without_s": round(without, 2),
            "plan_with_s": round(with_full, 2),
            "ratio": round(with_full / without, 3),
            "hash_only_s": round(hash_only, 2),
            "hash_gb_per_s": round(fasta.stat().st_size / 1e9 / hash_only, 2),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="plan time with vs without the full fingerprint")
    ap.add_argument("--gb", type=float, default=0.5, help="FASTA size in GB (1e9 bases)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    a = ap.parse_args()
    print(json.dumps(run(a.gb, a.workdir)))
