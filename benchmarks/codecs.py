"""The store's codec: size and speed of lossless codecs on the records a build stores.

    python benchmarks/codecs.py                      # about 3 minutes on 2 cores
    python benchmarks/codecs.py --quick              # smaller plans, shorter timings
    python benchmarks/codecs.py --workdir DIR        # keep (and reuse) the built stores

The values are real records, not synthetic noise: three stores are planned and built on
the bundled demo genome with the default layout (256 rows x 64 tracks per inner chunk),

* demo      the demo model (``builders/demo``, 40 tracks), a quarter of its plan;
* enformer  a tiny ``enformer_pytorch.Enformer`` with random weights and the real
            5,313-track human head (the factory of tests/test_adapter_enformer.py);
* borzoi    a narrow ``borzoi_pytorch.Borzoi`` with random weights (tests/test_adapter_borzoi.py)
            over every 4th track of the real 7,611-track table (RNA tracks included);

and their ``baselines/summary``, ``baselines/perbin`` (32 sampled bins) and
``variants/effect`` arrays are cut into the store's inner chunks (NaN where the store holds
NaN: skipped strata, unusable rows). Every candidate encodes and decodes every chunk on ONE
thread (blosc's own threads off), timed by the thread's CPU clock so other load on the
machine does not count; speeds are MB/s of raw float32 per core. Every candidate is
checked to round-trip bit for bit. Sizes are compressed / raw, in the same run.
The CRC32C that every chunk also carries is timed on its own (it is the same for all).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # `tests` (the tiny-model factories) and `chorus_store`
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

KINDS = {
    "summary": "baselines/summary",
    "perbin": "baselines/perbin",
    "effect": "variants/effect",
}


# ------------------------------------------------------------------------------ the stores


def _scaled_sampling(sampling: dict[str, Any], scale: float) -> dict[str, Any]:
    keys = ("n_random", "n_ccre", "n_tss", "n_gene_body", "n_snps", "n_effect_positions")
    return {k: max(1, round(v * scale)) if k in keys else v for k, v in sampling.items()}


def recipe_demo(work: Path, quick: bool) -> Any:
    from chorus_store import load_recipe

    recipe = load_recipe("demo")
    sampling = _scaled_sampling(recipe.plan["sampling"], 0.1 if quick else 0.25)
    return dataclasses.replace(recipe, plan={**recipe.plan, "sampling": sampling})


def recipe_enformer(work: Path, quick: bool) -> Any:
    from chorus_store.testing.models.enformer import (
        E2E_SAMPLING,
        TARGETS,
        enformer_recipe,
        save_tiny_torch,
    )

    weights = work / "enformer-weights"
    if not weights.exists():
        save_tiny_torch(weights)
    sampling = _scaled_sampling(E2E_SAMPLING, 0.5 if quick else 1.0)
    sampling["n_snps"] = 6 if quick else 24  # effects are one value per SNP and track
    return enformer_recipe(weights, tracks=TARGETS, sampling=sampling)


def recipe_borzoi(work: Path, quick: bool) -> Any:
    import pandas as pd

    from chorus_store.testing.models.borzoi import (
        SAMPLING,
        SHALLOW,
        TARGETS,
        borzoi_recipe,
        save_narrow,
    )

    meta = pd.read_csv(TARGETS, sep="\t", index_col=0)
    meta = meta.iloc[:: 16 if quick else 4].reset_index(drop=True)
    table = work / "borzoi_targets.txt"
    meta.to_csv(table, sep="\t")
    parent = work / f"borzoi-{len(meta)}"
    if not parent.exists():
        save_narrow(parent / "borzoi-replicate-0", len(meta), seed=5, config=SHALLOW)
    plan = {
        "source": "generated",
        "assembly": "chorus-store-demo-v1",
        "rna_genes": "overlap",
        "sampling": _scaled_sampling(SAMPLING, 0.5 if quick else 1.0),
    }
    return borzoi_recipe(parent, table, len(meta), plan=plan)


SOURCES: dict[str, Callable[[Path, bool], Any]] = {
    "demo": recipe_demo,
    "enformer": recipe_enformer,
    "borzoi": recipe_borzoi,
}


def built_store(name: str, work: Path, quick: bool) -> tuple[Path, float]:
    """Plan and build source ``name`` under ``work`` (a finished store is reused)."""
    from chorus_store import build, plan_store
    from chorus_store.demo import make_demo_inputs
    from chorus_store.store.core import Layout

    inputs = make_demo_inputs(work / "inputs")
    sub = work / ("quick" if quick else "full") / name
    sub.mkdir(parents=True, exist_ok=True)
    recipe = SOURCES[name](sub, quick)
    store = sub / f"{name}.zarr"
    t0 = time.perf_counter()
    plan_store(store, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf, layout=Layout())
    build(store, progress=False, device="cpu")
    return store, time.perf_counter() - t0


def chunks_of(store: Path) -> dict[str, list[np.ndarray]]:
    """Each record array cut into the store's inner chunks (rows x ... x tracks)."""
    from chorus_store.store.core import ChorusStore

    s = ChorusStore.open(store)
    rows_per_chunk = {"summary": s.layout.position_shard_rows, "perbin": s.layout.position_shard_rows,
                      "effect": s.layout.variant_shard_rows}  # fmt: skip
    out: dict[str, list[np.ndarray]] = {}
    for kind, name in KINDS.items():
        values = s.read(name)
        rows, tracks = rows_per_chunk[kind], s.layout.tracks_per_chunk
        out[kind] = [
            np.ascontiguousarray(values[r : r + rows, ..., t : t + tracks])
            for r in range(0, values.shape[0], rows)
            for t in range(0, values.shape[-1], tracks)
        ]
    return out


# ------------------------------------------------------------------------------ the codecs


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    zarr: dict[str, Any] | None  # the zarr.json codec entry it would store (None: no codec)
    make: Callable[[], Any] | None  # the numcodecs object zarr runs for it

    def codec(self) -> Any:
        return None if self.make is None else self.make()


def candidates() -> list[Candidate]:
    import numcodecs

    out = [Candidate("none (raw float32)", None, None)]
    shuffles = {"shuffle": numcodecs.Blosc.SHUFFLE, "bitshuffle": numcodecs.Blosc.BITSHUFFLE,
                "noshuffle": numcodecs.Blosc.NOSHUFFLE}  # fmt: skip
    for cname in ("lz4", "lz4hc", "zstd"):
        for clevel in (1, 3):
            for sname, shuffle in shuffles.items():
                out.append(
                    Candidate(
                        f"blosc {cname} {clevel} {sname}",
                        {
                            "name": "blosc",
                            "configuration": {
                                "cname": cname,
                                "clevel": clevel,
                                "shuffle": sname,
                                "typesize": 4,
                                "blocksize": 0,
                            },
                        },  # fmt: skip
                        functools.partial(
                            numcodecs.Blosc,
                            cname=cname,
                            clevel=clevel,
                            shuffle=shuffle,
                            typesize=4,
                        ),
                    )
                )
    for level in (1, 3):
        out.append(
            Candidate(
                f"zstd {level}",
                {"name": "zstd", "configuration": {"level": level, "checksum": False}},
                functools.partial(numcodecs.Zstd, level=level),
            )
        )
    return out


def _cpu_rate(fn: Callable[[Any], Any], items: list[Any], nbytes: int, min_seconds: float) -> float:
    """MB/s of ``nbytes`` per CPU-second of this thread, over whole passes of ``items``."""
    passes, t0 = 0, time.thread_time()
    while True:
        for item in items:
            fn(item)
        passes += 1
        seconds = time.thread_time() - t0
        if seconds >= min_seconds:
            return passes * nbytes / seconds / 1e6


def measure(
    cand: Candidate, data: dict[str, dict[str, list[np.ndarray]]], min_seconds: float
) -> dict[str, Any]:
    codec = cand.codec()
    sizes: dict[str, float] = {}
    raw_total = packed_total = 0
    enc_s = dec_s = 0.0  # CPU-seconds per pass over every chunk
    for source, kinds in data.items():
        for kind, chunks in kinds.items():
            raw = sum(c.nbytes for c in chunks)
            if codec is None:
                encoded: list[Any] = [c.tobytes() for c in chunks]
            else:
                encoded = [codec.encode(c) for c in chunks]
                for c, e in zip(chunks, encoded, strict=True):
                    back = np.frombuffer(codec.decode(e), dtype=c.dtype)
                    if not np.array_equal(back.view(np.uint32), c.reshape(-1).view(np.uint32)):
                        raise SystemExit(f"{cand.name} does not round-trip {source} {kind}")
                enc_s += raw / 1e6 / _cpu_rate(codec.encode, chunks, raw, min_seconds)
                dec_s += raw / 1e6 / _cpu_rate(codec.decode, encoded, raw, min_seconds)
            packed = sum(len(e) for e in encoded)
            sizes[f"{source}/{kind}"] = packed / raw
            raw_total += raw
            packed_total += packed
    out: dict[str, Any] = {"codec": cand.name, "zarr": cand.zarr, "sizes": sizes,
                           "size_all": packed_total / raw_total}  # fmt: skip
    if codec is not None:
        out["encode_mb_s"] = raw_total / 1e6 / enc_s
        out["decode_mb_s"] = raw_total / 1e6 / dec_s
    return out


def crc32c_rate(data: dict[str, dict[str, list[np.ndarray]]], min_seconds: float) -> float:
    import google_crc32c  # what zarr's Crc32cCodec runs

    chunks = [c for kinds in data.values() for cs in kinds.values() for c in cs]
    raw = sum(c.nbytes for c in chunks)
    return _cpu_rate(lambda c: google_crc32c.value(c.tobytes()), chunks, raw, min_seconds)


# ------------------------------------------------------------------------------ the table


def table(results: list[dict[str, Any]], columns: list[str], current: str) -> str:
    head = "| codec | " + " | ".join(columns) + " | all | encode MB/s | decode MB/s |"
    lines = [head, "|" + "---|" * (len(columns) + 4)]
    for r in results:
        speed = (
            f"{r['encode_mb_s']:,.0f} | {r['decode_mb_s']:,.0f}" if "encode_mb_s" in r else "— | —"
        )
        name = r["codec"] + (" (today)" if r["codec"] == current else "")
        cells = " | ".join(f"{r['sizes'][c]:.3f}" for c in columns)
        lines.append(f"| {name} | {cells} | {r['size_all']:.3f} | {speed} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller plans, shorter timings")
    ap.add_argument("--workdir", type=Path, help="keep the built stores here (reused)")
    ap.add_argument("--only", nargs="+", choices=sorted(SOURCES), help="these sources only")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()

    import numcodecs.blosc
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    numcodecs.blosc.use_threads = False  # one thread per codec call: per-core speeds
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chorus-codecs-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        data: dict[str, dict[str, list[np.ndarray]]] = {}
        stores: dict[str, Any] = {}
        for name in args.only or list(SOURCES):
            store, seconds = built_store(name, work, args.quick)
            data[name] = chunks_of(store)
            stores[name] = {
                "plan_build_seconds": seconds,
                **{
                    kind: {
                        "chunks": len(cs),
                        "mb": sum(c.nbytes for c in cs) / 1e6,
                        "chunk_shape": list(cs[0].shape),
                        "nan_fraction": float(np.mean([np.isnan(c).mean() for c in cs])),
                    }
                    for kind, cs in data[name].items()
                },  # fmt: skip
            }
            print(f"{name}: store built in {seconds:.0f} s; " + ", ".join(
                f"{k} {v['mb']:.1f} MB in {v['chunks']} chunks of {v['chunk_shape']}"
                for k, v in stores[name].items() if isinstance(v, dict)
            ), flush=True)  # fmt: skip
        min_seconds = 0.05 if args.quick else 0.3
        results = []
        for cand in candidates():
            results.append(measure(cand, data, min_seconds))
            print(f"  {cand.name}: {results[-1]['size_all']:.3f} x raw", flush=True)
        crc = crc32c_rate(data, min_seconds)
    total = time.perf_counter() - t_start
    columns = [f"{s}/{k}" for s in data for k in KINDS]
    header = machine()
    print()
    print(f"machine: {header}; one thread per codec call; total {total:.0f} s")
    print("size = compressed / raw float32 (lower is smaller); MB/s of raw data per core")
    print(f"CRC32C (every chunk, whatever the codec): {crc:,.0f} MB/s per core")
    print()
    print(table(results, columns, "blosc zstd 3 shuffle"))
    out = {"machine": header, "quick": args.quick, "seconds": total, "stores": stores,
           "crc32c_mb_s": crc, "codecs": results}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    print()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
