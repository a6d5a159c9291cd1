"""chorus-store benchmarks: one command, ratios against baselines measured in the same run.

    python benchmarks/run.py            # full sizes (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick    # small sizes, a smoke run

Parts (each runs in its own process, so its peak memory is its own):

* build-zero   build throughput with a zero-cost oracle returning Enformer-shaped outputs
               (896 bins x 5,313 tracks), vs chorus's per-position Python loop over tracks
               feeding reservoirs, on the same predictions;
* build-demo   the demo model (PyTorch, CPU): share of build time spent outside the oracle;
* build-sim    a simulated accelerator at Enformer's shape (forward 30 ms, sleeping): build
               throughput / (1 / forward time), the "GPU busy" ratio, and the serial CPU per
               sequence on the model's thread (Borzoi and AlphaGenome too:
               ``python benchmarks/simulated.py``);
* reduce       exact grids of 1,000 tracks x 31,500 positions x 32 bins (plus summary and
               effect layers), time and peak memory, vs (a) an in-RAM numpy sort of the same
               values and (b) chorus's reservoir path, measured on a subset of tracks and
               scaled per track.
* fullscale    (only with ``--only fullscale``) the reduce and export of a store of
               Enformer's full size, built once and cached: ``benchmarks/fullscale.py``.

Per oracle adapter (Enformer, Borzoi, AlphaGenome, ChromBPNet, Sei, LegNet, each on a tiny
instance of its real architecture): ``python benchmarks/adapters.py [--quick]`` times the
bare forward pass against a full build with the same loaded model.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    demo_genome_recipe,
    demo_sampling,
    machine,
    parse_args,
    peak_rss_mb,
    run_part,
    synthetic_plan,
)

# ------------------------------------------------------------------------------ build-zero


ZERO_SHAPE = (393_216, 4, 5_313, 896)  # input bp, batch, tracks, bins (Enformer)


def zero_cost_recipe(n: int) -> Any:
    """A recipe for an Enformer-shaped oracle over the demo genome, ~2n positions."""
    from chorus_store.store.core import Layout

    return demo_genome_recipe(
        "enformer",
        demo_sampling(n, chromosomes=("chr1", "chr2"), margin_bp=200_000),
        name="enformer_shaped",
        batch_size=ZERO_SHAPE[1],
        layout=Layout(
            position_shard_rows=32,
            variant_shard_rows=32,
            tracks_per_shard=1024,
            tracks_per_chunk=64,
        ),
    )


def zero_cost_oracle() -> Any:
    """Returns one fixed random Enformer-shaped prediction: the build's own cost alone."""
    from chorus_store import CallableOracle, OutputHead

    L, B, T, NB = ZERO_SHAPE
    pred = np.random.default_rng(0).gamma(0.5, 1.0, size=(B, NB, T)).astype(np.float32)

    def zero_cost(onehot: np.ndarray) -> dict[str, np.ndarray]:
        return {"human": pred}

    return CallableOracle(
        zero_cost,
        name="enformer_shaped",
        input_length=L,
        heads=(OutputHead("human", 128, NB, T),),
        batch_size=B,
        identity="zero-cost",
    )


def part_build_zero(work: Path, quick: bool) -> dict[str, Any]:
    from chorus_baseline import ReservoirSampler, baseline_position

    from chorus_store import build, plan_store
    from chorus_store.demo import make_demo_inputs
    from chorus_store.genome.tracks import centered_bin_span

    inputs = make_demo_inputs(work / "inputs")
    L, B, T, NB = ZERO_SHAPE
    n = 60 if quick else 400
    recipe = zero_cost_recipe(n)
    store = work / "zero.zarr"
    plan_store(store, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
    oracle = zero_cost_oracle()
    pred = oracle.fn(np.zeros((1, 1, 4), np.float32))["human"]
    t0 = time.perf_counter()
    rb = build(store, part="baselines", oracle=oracle, progress=False)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    rv = build(store, part="variants", oracle=oracle, progress=False)
    t_var = time.perf_counter() - t0
    from chorus_store.store.core import ChorusStore

    s = ChorusStore.open(store)
    usable_pos = int(s.positions["usable"].sum())
    usable_var = int(s.variants["usable"].sum())

    # chorus's loop over the same predictions: window sums + 32 bins into reservoirs
    table = s.tracks
    spans = [centered_bin_span(NB, table.window_bp(i), 128) for i in range(T)]
    summary, perbin = ReservoirSampler(T, None), ReservoirSampler(T, 50_000)
    n_base = 5 if quick else 20
    t0 = time.perf_counter()
    for i in range(n_base):
        bins = np.random.RandomState(999 + i).choice(NB, 32, replace=False)
        baseline_position(pred[i % B], spans, bins, summary, perbin)
    t_chorus = time.perf_counter() - t0
    return {
        "positions": usable_pos,
        "snps": usable_var,
        "baselines_positions_per_s": usable_pos / t_base,
        "variants_snps_per_s": usable_var / t_var,
        "sequences_per_s": (rb.sequences + rv.sequences) / (t_base + t_var),
        "chorus_loop_positions_per_s": n_base / t_chorus,
        "speedup_vs_chorus_loop": (usable_pos / t_base) / (n_base / t_chorus),
        "store_mb": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6,
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------ build-demo


def part_build_demo(work: Path, quick: bool) -> dict[str, Any]:
    from chorus_store import build, load_recipe, plan_store
    from chorus_store.demo import make_demo_inputs

    inputs = make_demo_inputs(work / "inputs")
    recipe = load_recipe("demo")
    if quick:
        import copy

        plan = copy.deepcopy(recipe.plan)
        plan["sampling"].update(n_random=200, n_ccre=100, n_tss=50, n_gene_body=50, n_snps=100)
        recipe = dataclasses.replace(recipe, plan=plan)
    store = work / "demo.zarr"
    plan_store(store, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
    oracle = recipe.load_oracle(device="cpu")
    import torch

    x = np.zeros((oracle.batch_size, oracle.input_length, 4), np.float32)
    x[:, :, 0] = 1
    oracle.predict(x)  # warm-up outside the timing
    t0 = time.perf_counter()
    for _ in range(10):
        oracle.predict(x)
    bare = 10 * oracle.batch_size / (time.perf_counter() - t0)
    report = build(store, oracle=oracle, progress=False)
    return {
        "torch_threads": torch.get_num_threads(),
        "sequences": report.sequences,
        "bare_forward_sequences_per_s": bare,
        "build_sequences_per_s": report.sequences / report.seconds,
        "oracle_seconds": report.oracle_seconds,
        "build_seconds": report.seconds,
        "share_outside_oracle": 1 - report.oracle_seconds / report.seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------ build-sim


def part_build_sim(work: Path, quick: bool) -> dict[str, Any]:
    from simulated import QUICK, SIMULATED, measure, plan_simulated

    from chorus_store.demo import make_demo_inputs

    sim = (QUICK if quick else SIMULATED)["enformer"]
    recipe, planned = plan_simulated(sim, work / "sim", make_demo_inputs(work / "inputs"))
    return measure(recipe, planned, sim.forward_s)


# ------------------------------------------------------------------------------ reduce


def _reduce_store(work: Path, quick: bool) -> Path:
    """A store of the reduce benchmark's size, filled with synthetic values (no oracle)."""
    from chorus_store.genome.tracks import TrackTable
    from chorus_store.store.core import ChorusStore, Layout

    n_tracks, n_pos, n_var = (128, 4_000, 2_000) if quick else (1_000, 31_500, 18_000)
    store = work / "reduce.zarr"
    if (store / "zarr.json").exists():
        return store
    meta = pd.DataFrame(
        {
            "track_id": [f"T{i:05d}" for i in range(n_tracks)],
            "assay_type": ["DNASE", "CHIP", "CAGE", "LentiMPRA"] * (n_tracks // 4),
        }
    )
    tracks = TrackTable.from_metadata(meta, resolution_bp=128)
    positions = pd.DataFrame(
        {
            "chrom": "chr1",
            "pos": np.arange(n_pos) + 1_000,
            "stratum": "random",
            "usable": True,
            "reject_reason": "",
        }
    )
    variants = pd.DataFrame(
        {
            "chrom": "chr1",
            "pos": np.arange(n_var) + 1_000,
            "ref": "A",
            "alt": "C",
            "stratum": "random",
            "usable": True,
            "reject_reason": "",
        }
    )
    layout = Layout(
        position_shard_rows=512, variant_shard_rows=512, tracks_per_shard=512, tracks_per_chunk=64
    )
    attrs = {
        "oracle": {"name": "bench", "fingerprint": "bench", "description": {}},
        "genome": {
            "assembly": "bench",
            "fai_sha256": "0",
            "fasta_sha256_prefix64mb": "0",
            "fasta_path": "/dev/null",
        },
        "plan": {
            "positions_sha256": "p",
            "variants_sha256": "v",
            "position_strata": {},
            "variant_strata": {},
        },
        "recipe": {},
    }
    plan = synthetic_plan(positions, variants)
    s = ChorusStore.create(
        store, attrs={**attrs, "inputs": {}}, tracks=tracks, plan=plan, layout=layout
    )
    rng = np.random.default_rng(1)
    rows = layout.position_shard_rows
    for r0 in range(0, n_pos, rows):
        r1 = min(n_pos, r0 + rows)
        perbin = rng.gamma(0.5, 1.0, (r1 - r0, 1, 32, n_tracks)).astype(np.float32)
        s.array("baselines/perbin")[r0:r1] = perbin
        s.array("baselines/summary")[r0:r1] = rng.gamma(2.0, 1.0, (r1 - r0, 1, n_tracks)).astype(
            np.float32
        )
    for r0 in range(0, n_var, rows):
        r1 = min(n_var, r0 + rows)
        s.array("variants/effect")[r0:r1] = rng.normal(0, 0.1, (r1 - r0, 1, n_tracks)).astype(
            np.float32
        )
        # every array a done mark covers must hold its shards (the reduce checks them)
        ref = rng.gamma(2.0, 1.0, (r1 - r0, 1, n_tracks)).astype(np.float32)
        s.array("variants/ref_summary")[r0:r1] = ref
        s.array("variants/alt_summary")[r0:r1] = ref
    for group, n in (("baselines", n_pos), ("variants", n_var)):
        lengths = [min(rows, n - r0) for r0 in range(0, n, rows)]
        s.array(f"{group}/done_rows")[:] = np.repeat(np.asarray(lengths)[:, None], n_tracks, axis=1)
    return store


def part_reduce(work: Path, quick: bool) -> dict[str, Any]:
    from chorus_store import reduce

    store = _reduce_store(work, quick)
    t0 = time.perf_counter()
    report = reduce(store, progress=False, workers=2)
    return {
        "seconds": time.perf_counter() - t0,
        "values": report.values_reduced,
        "blocks": report.blocks_total,
        "peak_rss_mb": peak_rss_mb(),
    }


def part_reduce_in_ram(work: Path, quick: bool) -> dict[str, Any]:
    """Baseline (a): load every value into RAM, sort per track with numpy, grid."""
    import zarr

    from chorus_store.reduce import grid_row

    store = _reduce_store(work, quick)
    t0 = time.perf_counter()
    per: np.ndarray = np.asarray(zarr.open_array(str(store / "baselines/perbin"))[:])
    per = per.reshape(-1, per.shape[-1])
    for t in range(per.shape[1]):
        grid_row(np.sort(per[:, t]).astype(np.float64))
    for name in ("baselines/summary", "variants/effect"):
        vals: np.ndarray = np.asarray(zarr.open_array(str(store / name))[:])
        vals = vals.reshape(-1, vals.shape[-1])
        for t in range(vals.shape[1]):
            grid_row(np.sort(vals[:, t]).astype(np.float64))
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def part_reduce_chorus(work: Path, quick: bool) -> dict[str, Any]:
    """Baseline (b): chorus's reservoir path (perbin capacity 50,000; summary/effect exact),
    timed on a few tracks and scaled to all of them (the path is per-track linear)."""
    import zarr
    from chorus_baseline import ReservoirSampler

    store = _reduce_store(work, quick)
    k = 4 if quick else 8
    per: np.ndarray = np.asarray(zarr.open_array(str(store / "baselines/perbin"))[..., :k]).reshape(
        -1, k
    )
    summ: np.ndarray = np.asarray(
        zarr.open_array(str(store / "baselines/summary"))[..., :k]
    ).reshape(-1, k)
    eff: np.ndarray = np.asarray(zarr.open_array(str(store / "variants/effect"))[..., :k]).reshape(
        -1, k
    )
    n_tracks = zarr.open_array(str(store / "baselines/perbin")).shape[-1]
    t0 = time.perf_counter()
    for values, cap in ((per, 50_000), (summ, None), (eff, None)):
        r = ReservoirSampler(k, cap)
        for row in values:
            for t in range(k):
                r.add(t, float(row[t]))
        r.to_cdf_matrix()
    measured = time.perf_counter() - t0
    return {"tracks_timed": k, "seconds_timed": measured, "seconds_scaled": measured * n_tracks / k}


PARTS = {
    "build-zero": part_build_zero,
    "build-demo": part_build_demo,
    "build-sim": part_build_sim,
    "reduce": part_reduce,
    "reduce-in-ram": part_reduce_in_ram,
    "reduce-chorus": part_reduce_chorus,
}


def main() -> None:
    args = parse_args(__doc__, PARTS, ["build", "reduce", "fullscale"])
    if args is None:
        return
    if args.only == "fullscale":  # its own store cache and parts: see fullscale.py
        from fullscale import FULL, QUICK, run_benchmark

        print(json.dumps(run_benchmark(QUICK if args.quick else FULL), indent=1))
        return
    with tempfile.TemporaryDirectory(prefix="chorus-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {
            "machine": machine(),
            "quick": args.quick,
        }
        if args.only in (None, "build"):
            out["build-zero"] = z = run_part(__file__, "build-zero", work, args.quick)
            print(
                f"build, zero-cost Enformer-shaped oracle (896 x 5,313): "
                f"{z['baselines_positions_per_s']:.1f} positions/s, {z['variants_snps_per_s']:.1f} SNPs/s; "
                f"chorus's per-track loop {z['chorus_loop_positions_per_s']:.2f} positions/s "
                f"-> {z['speedup_vs_chorus_loop']:.1f}x; peak RSS {z['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            out["build-demo"] = d = run_part(__file__, "build-demo", work, args.quick)
            print(
                f"build, demo model on CPU: bare forward {d['bare_forward_sequences_per_s']:.0f} seq/s, "
                f"full build {d['build_sequences_per_s']:.0f} seq/s "
                f"(ratio {d['build_sequences_per_s'] / d['bare_forward_sequences_per_s']:.2f}); "
                f"{d['share_outside_oracle']:.1%} of build time outside the oracle",
                flush=True,
            )
            out["build-sim"] = g = run_part(__file__, "build-sim", work, args.quick)
            print(
                f"build, simulated accelerator at Enformer's shape (30 ms forward): "
                f"{g['timed']['sequences_per_s']:.1f} seq/s of {g['ideal_sequences_per_s']:.1f} "
                f"(GPU busy {g['ratio']:.2f}); serial CPU {g['serial_cpu_ms_per_sequence']:.1f} "
                f"ms/sequence on the model's thread",
                flush=True,
            )
        if args.only in (None, "reduce"):
            out["reduce"] = r = run_part(__file__, "reduce", work, args.quick)
            out["reduce-in-ram"] = m = run_part(__file__, "reduce-in-ram", work, args.quick)
            out["reduce-chorus"] = c = run_part(__file__, "reduce-chorus", work, args.quick)
            print(
                f"reduce, {r['values']:,} values in {r['blocks']} blocks: {r['seconds']:.1f} s, "
                f"peak RSS {r['peak_rss_mb']:.0f} MB | in-RAM numpy {m['seconds']:.1f} s, "
                f"{m['peak_rss_mb']:.0f} MB (memory ratio {m['peak_rss_mb'] / r['peak_rss_mb']:.1f}x, "
                f"time ratio {m['seconds'] / r['seconds']:.2f}x) | chorus reservoir path "
                f"~{c['seconds_scaled']:.0f} s scaled from {c['tracks_timed']} tracks "
                f"({c['seconds_scaled'] / r['seconds']:.1f}x slower)",
                flush=True,
            )
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
