"""The reduce and export at full Enformer scale, against an in-RAM numpy sort, in one run.

    python benchmarks/fullscale.py            # 5,313 tracks (store built once, ~20 GB)
    python benchmarks/fullscale.py --quick    # 128 tracks, same rows (a smoke run)
    python benchmarks/run.py --only fullscale # the same, as a part of the suite

The store has Enformer's real size and layout (the 5,313 tracks of
``builders/enformer/enformer_human_targets.txt`` x 31,500 positions x 32 bins, summary,
18,000 variants; shards of 256 rows x 1,024 tracks, reduce blocks of 64 tracks), filled
with synthetic prediction-like values written through :class:`ChorusStore`, so the reduce
and export run unchanged. It is built once and cached under
``~/.cache/chorus-store-bench/`` (``--cache DIR``), keyed by :data:`STORE_VERSION`, the
sizes and the store codec; a stale or unfinished one is rebuilt. Each stage runs in its
own process (wall, CPU seconds and peak RSS are its own).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import machine, synthetic_plan  # noqa: E402

#: Bump when the synthetic values or the way the store is written change.
STORE_VERSION = "enformer-fullscale/v1"
ENFORMER_TARGETS = HERE.parent / "builders/enformer/enformer_human_targets.txt"
#: reduce + export goal of issue 10 (wall seconds, peak GB)
GOAL_SECONDS = 180.0
GOAL_PEAK_GB = 4.0


@dataclass(frozen=True)
class Scale:
    """Sizes of a synthetic store (Enformer's by default)."""

    n_tracks: int = 5_313
    n_positions: int = 31_500
    n_variants: int = 18_000
    position_shard_rows: int = 256
    variant_shard_rows: int = 256
    tracks_per_shard: int = 1_024
    tracks_per_chunk: int = 64
    seed: int = 10

    @property
    def n_values(self) -> int:
        return self.n_tracks * (self.n_positions * 33 + self.n_variants)


FULL = Scale()
QUICK = Scale(n_tracks=128)


# ------------------------------------------------------------------------------ the store


def _codec() -> str:
    """The codec the store code writes with: a store of another codec is stale."""
    from chorus_store.store import core as store_mod

    return repr(getattr(store_mod, "_compressors", lambda: None)())


def store_key(scale: Scale) -> str:
    from chorus_store.store.core import SCHEMA_VERSION

    doc = {"version": STORE_VERSION, "scale": asdict(scale), "schema": SCHEMA_VERSION}
    doc["codec"] = _codec()
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chorus-store-bench"


def _tracks(n: int) -> Any:
    from chorus_store.genome.track_tables import enformer_tracks

    table = enformer_tracks(ENFORMER_TARGETS)
    return table if n == len(table) else table.subset(0, n)


def _track_params(scale: Scale) -> dict[str, np.ndarray]:
    """Per-track shapes: a lognormal body with a heavier upper tail, a share of exact
    zeros (the lower tail clipped) and, for effects, a per-track scale."""
    rng = np.random.default_rng([scale.seed, 0])
    t = scale.n_tracks
    return {
        "mu": rng.normal(-1.0, 1.0, t).astype(np.float32),
        "sigma": rng.uniform(0.5, 1.6, t).astype(np.float32),
        "tail": rng.uniform(0.0, 0.6, t).astype(np.float32),
        # z below this is an exact zero: ~0.1 % to ~20 % of a track's values
        "zero_z": rng.uniform(-3.1, -0.85, t).astype(np.float32),
        "summary_log_scale": rng.normal(3.0, 1.0, t).astype(np.float32),
        "effect_scale": np.exp(rng.normal(-3.0, 0.7, t)).astype(np.float32),
    }


def prediction_like(
    z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, tail: np.ndarray, zero_z: np.ndarray
) -> np.ndarray:
    """Positive heavy-tailed values from standard normals ``z`` (tracks on the last axis),
    in place: ``exp(mu + sigma z + tail max(z - 1, 0)^2)``, zero where ``z < zero_z``."""
    zeros = z < zero_z
    excess = np.maximum(z - 1.0, 0.0, dtype=np.float32)
    excess *= excess
    excess *= tail
    z *= sigma
    z += mu
    z += excess
    np.exp(z, out=z)
    z[zeros] = 0.0
    return z


def _fill_shard(path: str, scale: Scale, group: str, shard: int) -> None:
    """Write row shard ``shard`` of ``group`` for every track (one writer per shard)."""
    from chorus_store.store.core import ChorusStore

    s = ChorusStore.open(path, mode="r+")
    p = _track_params(scale)
    rng = np.random.default_rng([scale.seed, 1 if group == "baselines" else 2, shard])
    t = scale.n_tracks
    if group == "baselines":
        r0 = shard * scale.position_shard_rows
        r1 = min(scale.n_positions, r0 + scale.position_shard_rows)
        z = rng.standard_normal((r1 - r0, 1, 32, t), dtype=np.float32)
        s.array("baselines/perbin")[r0:r1] = prediction_like(
            z, p["mu"], p["sigma"], p["tail"], p["zero_z"]
        )
        del z
        z = rng.standard_normal((r1 - r0, 1, t), dtype=np.float32)
        summary = prediction_like(z, p["mu"] + p["summary_log_scale"], p["sigma"] * 0.7,
                                  p["tail"], p["zero_z"] - 1.0)  # fmt: skip
        s.array("baselines/summary")[r0:r1] = summary
        return
    r0 = shard * scale.variant_shard_rows
    r1 = min(scale.n_variants, r0 + scale.variant_shard_rows)
    shape = (r1 - r0, 1, t)
    # signed, concentrated near 0 with heavy tails (a normal scaled by a lognormal), and
    # exact zeros where a variant changes nothing
    eff = rng.standard_normal(shape, dtype=np.float32)
    eff *= np.exp(0.8 * rng.standard_normal(shape, dtype=np.float32))
    eff *= p["effect_scale"]
    eff[np.abs(eff) < p["effect_scale"] * 0.02] = 0.0
    ref = np.ones(shape, np.float32)  # not reduced; present because the done marks say so
    s.array("variants/effect")[r0:r1] = eff
    s.array("variants/ref_summary")[r0:r1] = ref
    s.array("variants/alt_summary")[r0:r1] = ref


def _create(path: Path, scale: Scale) -> None:
    from chorus_store.store.core import ChorusStore, Layout

    tracks = _tracks(scale.n_tracks)
    positions = pd.DataFrame({
        "chrom": "chr1", "pos": np.arange(scale.n_positions) * 1_000 + 1_000_000,
        "stratum": "random", "usable": True, "reject_reason": "",
    })  # fmt: skip
    variants = pd.DataFrame({
        "chrom": "chr1", "pos": np.arange(scale.n_variants) * 1_000 + 1_000_000,
        "ref": "A", "alt": "C", "stratum": "random", "usable": True, "reject_reason": "",
    })  # fmt: skip
    layout = Layout(
        position_shard_rows=scale.position_shard_rows,
        variant_shard_rows=scale.variant_shard_rows,
        tracks_per_shard=scale.tracks_per_shard,
        tracks_per_chunk=scale.tracks_per_chunk,
    )
    strata = {
        "position_strata": {"random": {"planned": scale.n_positions, "usable": scale.n_positions}},
        "variant_strata": {"random": {"planned": scale.n_variants, "usable": scale.n_variants}},
    }
    head = {"name": "human", "resolution_bp": 128, "n_bins": 896, "n_columns": scale.n_tracks}
    attrs = {
        "oracle": {"name": "enformer", "fingerprint": f"synthetic:{STORE_VERSION}",
                   "description": {}},
        "genome": {"assembly": "synthetic", "fai_sha256": "0", "fasta_sha256_prefix64mb": "0",
                   "fasta_path": "/dev/null"},
        "plan": {"name": "fullscale", "positions_sha256": "synthetic-positions",
                 "variants_sha256": "synthetic-variants", **strata},
        "recipe": {"name": "enformer", "oracle": {"input_length": 393_216, "heads": [head]}},
        "inputs": {},
    }  # fmt: skip
    plan = synthetic_plan(positions, variants)
    ChorusStore.create(path, attrs=attrs, tracks=tracks, plan=plan, layout=layout)


def build_store(path: Path, scale: Scale, *, workers: int = 2) -> Path:
    """Create and fill a synthetic store of ``scale`` at ``path`` (deterministic: the values
    depend on the seed and the shard, not on ``workers``)."""
    from chorus_store.store.core import ChorusStore

    _create(path, scale)
    jobs = [("baselines", i) for i in range(-(-scale.n_positions // scale.position_shard_rows))]
    jobs += [("variants", i) for i in range(-(-scale.n_variants // scale.variant_shard_rows))]
    if workers <= 1:
        for group, i in jobs:
            _fill_shard(str(path), scale, group, i)
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_fill_shard, str(path), scale, g, i) for g, i in jobs]
            for f in futures:
                f.result()
    s = ChorusStore.open(path, mode="r+")
    for group, n, rows in (
        ("baselines", scale.n_positions, scale.position_shard_rows),
        ("variants", scale.n_variants, scale.variant_shard_rows),
    ):
        lengths = np.asarray([min(rows, n - r0) for r0 in range(0, n, rows)], np.int32)
        s.array(f"{group}/done_rows")[:] = np.repeat(lengths[:, None], scale.n_tracks, axis=1)
    return path


def cached_store(scale: Scale, cache: Path | None = None, *, workers: int = 2) -> Path:
    """The store of ``scale`` in the cache, built first if absent, unfinished or stale."""
    root = (cache or default_cache()) / f"enformer-{scale.n_tracks}-{store_key(scale)}"
    store = root / "store.zarr"
    done = root / "complete.json"
    if done.is_file() and store.is_dir():
        return store
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    build_store(store, scale, workers=workers)
    info = {"version": STORE_VERSION, "scale": asdict(scale), "codec": _codec(),
            "build_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    done.write_text(json.dumps(info, indent=1))
    return store


# ------------------------------------------------------------------------------ the parts


def _usage() -> dict[str, float]:
    """CPU of this process and its finished children (the ``processes`` scheduler's
    workers); peak RSS of the largest of them."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return {"cpu_s": cpu, "peak_gb": max(me.ru_maxrss, kids.ru_maxrss) / 2**20}


def _timed(fn: Any) -> dict[str, Any]:
    before = _usage()
    t0 = time.perf_counter()
    extra = fn() or {}
    after = _usage()
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": after["cpu_s"] - before["cpu_s"],
        "peak_gb": after["peak_gb"],
        **extra,
    }


def part_reduce(store: Path, workers: int, scheduler: str = "threads") -> dict[str, Any]:
    """Every block of every layer recomputed (the fingerprints are cleared first)."""
    from chorus_store import reduce
    from chorus_store.reduce import active_layers
    from chorus_store.store.core import ChorusStore

    s = ChorusStore.open(store, mode="r+")
    for layer in active_layers(s):
        s.array(f"reductions/{layer}/fingerprint")[:] = ""

    def run() -> dict[str, Any]:
        report = reduce(store, progress=False, workers=workers, scheduler=scheduler)
        return {"values": report.values_reduced, "blocks": report.blocks_total}

    return _timed(run)


def part_export(store: Path, out: Path) -> dict[str, Any]:
    from chorus_store import export

    def run() -> dict[str, Any]:
        path = Path(export(store, out=out).path)
        return {"npz_mb": path.stat().st_size / 1e6}

    return _timed(run)


def part_in_ram(store: Path, k: int) -> dict[str, Any]:
    """Baseline: the first ``k`` tracks of every layer loaded into RAM (one read per
    source), then per track numpy's sort and the grid; scaled per track to all tracks."""
    from chorus_store.reduce import active_layers, grid_row
    from chorus_store.store.core import ChorusStore
    from chorus_store.store.schema import layer_sources

    s = ChorusStore.open(store)
    n_tracks = len(s.tracks)
    k = min(k, n_tracks)
    loaded: dict[str, np.ndarray] = {}

    def load() -> None:
        for layer in active_layers(s):
            parts = [s.read(src, (..., slice(0, k))).reshape(-1, k) for src in layer_sources(layer)]
            loaded[layer] = np.concatenate(parts)

    def sort() -> None:
        for values in loaded.values():
            for t in range(k):
                v = values[:, t]
                grid_row(np.sort(v[~np.isnan(v)]).astype(np.float64))

    t_load, t_sort = _timed(load), _timed(sort)
    scale = n_tracks / k
    return {
        "tracks_timed": k,
        "wall_s": (t_load["wall_s"] + t_sort["wall_s"]) * scale,
        "cpu_s": (t_load["cpu_s"] + t_sort["cpu_s"]) * scale,
        "sort_wall_s": t_sort["wall_s"] * scale,
        "load_wall_s": t_load["wall_s"] * scale,
        "peak_gb_all_tracks": t_sort["peak_gb"] * scale,
    }


def _part(name: str, args: list[str]) -> dict[str, Any]:
    """Run a part in a fresh process: its wall, CPU and peak memory are its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, *args]
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    if res.returncode:
        raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def summary_table(out: dict[str, Any]) -> str:
    """The Markdown table of one run (pasted into docs/design-notes.md)."""
    r, e, m = out["reduce"], out["export"], out["in_ram"]
    total = r["wall_s"] + e["wall_s"]
    peak = max(r["peak_gb"], e["peak_gb"])
    rows = [
        ("reduce", r["wall_s"], r["cpu_s"], r["peak_gb"]),
        ("export", e["wall_s"], e["cpu_s"], e["peak_gb"]),
        ("reduce + export", total, r["cpu_s"] + e["cpu_s"], peak),
        (f"in-RAM numpy sort (scaled from {m['tracks_timed']} tracks)", m["wall_s"], m["cpu_s"],
         m["peak_gb_all_tracks"]),
    ]  # fmt: skip
    lines = [
        f"{out['scale']['n_tracks']:,} tracks, {out['values']:,} values; {out['machine']}; "
        f"load average {out['load_before']:.1f} before the run, {out['load_after']:.1f} after; "
        f"reduce scheduler {out['scheduler']} x {out['workers']}; chorus_store from "
        f"{out['chorus_store']}",
        "",
        "| stage | wall s | CPU s | peak GB |",
        "|---|---|---|---|",
        *(f"| {a} | {b:.1f} | {c:.1f} | {d:.2f} |" for a, b, c, d in rows),
        "",
        f"reduce + export: {total:.1f} s wall (goal <= {GOAL_SECONDS:.0f} s: "
        f"{'met' if total <= GOAL_SECONDS else 'NOT met'}), peak {peak:.2f} GB (goal <= "
        f"{GOAL_PEAK_GB:.0f} GB: {'met' if peak <= GOAL_PEAK_GB else 'NOT met'}); reduce "
        f"wall / in-RAM numpy wall = {r['wall_s'] / m['wall_s']:.2f}, export "
        f"{e['npz_mb']:.0f} MB",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="128 tracks (a smoke run)")
    ap.add_argument("--cache", type=Path, help="store cache (default ~/.cache/chorus-store-bench)")
    ap.add_argument("--workers", type=int, default=2, help="reduce workers (default 2)")
    ap.add_argument("--scheduler", default="threads", choices=["threads", "processes"],
                    help="the reduce's Dask scheduler (default threads, as the CLI's)")  # fmt: skip
    ap.add_argument("--baseline-tracks", type=int, default=64, help="in-RAM baseline subset")
    ap.add_argument("--part", choices=["reduce", "export", "in_ram"], help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        parts = {
            "reduce": lambda: part_reduce(args.store, args.workers, args.scheduler),
            "export": lambda: part_export(args.store, args.out),
            "in_ram": lambda: part_in_ram(args.store, args.baseline_tracks),
        }
        print(json.dumps(parts[args.part]()))
        return
    print(json.dumps(run_benchmark(QUICK if args.quick else FULL, cache=args.cache,
                                   workers=args.workers, baseline_tracks=args.baseline_tracks,
                                   scheduler=args.scheduler),
                     indent=1))  # fmt: skip


def run_benchmark(
    scale: Scale,
    *,
    cache: Path | None = None,
    workers: int = 2,
    baseline_tracks: int = 64,
    scheduler: str = "threads",
) -> dict[str, Any]:
    """Build (or reuse) the store, then time reduce, export and the in-RAM baseline, each
    in its own process; prints the summary table and returns every figure."""
    import chorus_store

    t0 = time.perf_counter()
    store = cached_store(scale, cache, workers=workers)
    built = time.perf_counter() - t0
    out: dict[str, Any] = {
        "machine": machine(),
        "scale": asdict(scale),
        "values": scale.n_values,
        "store": str(store),
        "store_gb": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e9,
        "store_ready_s": built,
        "chorus_store": str(Path(chorus_store.__file__).parent),
        "load_before": os.getloadavg()[0],
    }
    w = ["--store", str(store), "--workers", str(workers)]
    out["scheduler"] = scheduler
    out["reduce"] = _part("reduce", [*w, "--scheduler", scheduler])
    with tempfile.TemporaryDirectory(prefix="chorus-fullscale-") as tmp:
        out["export"] = _part("export", [*w, "--out", tmp])
    out["in_ram"] = _part("in_ram", [*w, "--baseline-tracks", str(baseline_tracks)])
    out["load_after"] = os.getloadavg()[0]
    out["workers"] = workers
    out["table"] = summary_table(out)
    print(out["table"], flush=True)
    return out


if __name__ == "__main__":
    main()
