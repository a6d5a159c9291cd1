"""Per-adapter CPU throughput: the bare forward pass vs a full build with the same model.

    python benchmarks/adapters.py            # plans 4x the adapter tests' (about 3 minutes on 2 cores)
    python benchmarks/adapters.py --quick    # the adapter tests' own plans (about 2 minutes)
    python benchmarks/adapters.py --only borzoi sei --threads 4

Every oracle adapter runs on a TINY instance of its real architecture with random weights
in the real on-disk format, made by the factories of its tests (tests/test_adapter_*.py),
with the track subset, plan and layout of its end-to-end test (plan sizes scaled by
``--scale``; 4 by default, 1 with ``--quick``). For each one, in its own process (so one
adapter's imports, threads and memory do not touch another's):

* bare forward   ``oracle.predict(x)`` on exactly ``batch_size`` random one-hot sequences,
                 every column (per-model oracles: every column of the track table), one
                 warm-up call, then at least 3 timed calls;
* full build     ``plan_store`` + ``build(store, oracle=<the same loaded oracle>)`` on the
                 bundled synthetic demo genome: ``report.sequences / report.seconds``, the
                 share of build time inside the oracle, and build/bare, the store's overhead.

A build asks the oracle for the track table's columns only, which can cost less than
every column (Borzoi and AlphaGenome select them on the device, fewer values are copied
and kept): where the store's columns are not every column, the bare forward is also timed
on them, and build/bare on those is the overhead of the store alone.

Per-model oracles (ChromBPNet, LegNet) run a sequence once per track shard of the layout
(``passes``), each pass through that shard's models; ``report.sequences`` counts every
pass, so build/bare compares equal work: ``report.sequences / passes`` sequences through
every model, against the bare forward through every model.

The numbers are those of tiny models: they show the cost of the store's machinery
(reading, encoding, statistics, writing) next to a cheap forward pass, not a real model's
speed. Torch (intra-op) and TensorFlow (intra- and inter-op) threads are set to
``--threads`` (default: the machine's cores) in every part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # `tests` (the tiny-model factories) and `chorus_store`

RESULT = "@@adapter-bench@@ "
#: plan sizes scaled by --scale (every other sampling key is the test's own)
COUNT_KEYS = ("n_random", "n_ccre", "n_tss", "n_gene_body", "n_snps", "n_effect_positions")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------
# the tiny models and recipes, from each adapter's end-to-end test
# --------------------------------------------------------------------------------------


def _enformer(work: Path, framework: str) -> Any:
    from chorus_store.testing.models.enformer import (
        E2E_SAMPLING,
        enformer_recipe,
        save_tiny_tf,
        save_tiny_torch,
        subset_targets,
    )

    save = save_tiny_torch if framework == "pytorch" else save_tiny_tf
    weights = save(work / f"enformer-{framework}")
    tracks, _ = subset_targets(work / "targets_subset.txt")
    return enformer_recipe(weights, framework=framework, tracks=tracks, sampling=E2E_SAMPLING)


def setup_enformer_pytorch(work: Path) -> Any:
    return _enformer(work, "pytorch")


def setup_enformer_tensorflow(work: Path) -> Any:
    return _enformer(work, "tensorflow")


def setup_borzoi(work: Path) -> Any:
    import pandas as pd

    from chorus_store.testing.models.borzoi import (
        SAMPLING,
        SHALLOW,
        SUBSET,
        TARGETS,
        borzoi_recipe,
        save_narrow,
    )

    parent = work / "borzoi-shallow"  # the `shallow` fixture
    save_narrow(parent / "borzoi-replicate-0", len(SUBSET), seed=5, config=SHALLOW)
    meta = pd.read_csv(TARGETS, sep="\t", index_col=0).iloc[SUBSET].reset_index(drop=True)
    table = work / "borzoi_subset_targets.txt"  # the `subset_table` fixture
    meta.to_csv(table, sep="\t")
    plan = {
        "source": "generated",
        "assembly": "chorus-store-demo-v1",
        "rna_genes": "overlap",
        "sampling": dict(SAMPLING),
    }
    return borzoi_recipe(parent, table, len(SUBSET), plan=plan)


def setup_alphagenome(work: Path) -> Any:
    import pandas as pd
    import torch

    from chorus_store.testing.models.alphagenome import (
        E2E_SAMPLING,
        TINY_CONFIG,
        TINY_TRACKS,
        alphagenome_recipe,
        tiny_model,
        track_slice,
    )

    weights = work / "weights"  # the `tiny` fixture
    weights.mkdir()
    torch.save(tiny_model().state_dict(), weights / "alphagenome_pytorch.pt")
    rows = [
        (ot, i, np.nan if i == n - 1 else 0.5 + i)
        for ot, n in TINY_TRACKS.items()
        for i in range(n)
    ]
    means = pd.DataFrame(rows, columns=["output_type", "local_index", "nonzero_mean"])
    means.to_csv(weights / "track_means.tsv", sep="\t", index=False)
    config = work / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    tiny = {"weights": weights, "config": config, "tracks": track_slice(work / "tracks.json")}
    return alphagenome_recipe(tiny, weights=weights, sampling=E2E_SAMPLING)


def _chrombpnet(work: Path, framework: str) -> Any:
    import pandas as pd

    from chorus_store.testing.models.chrombpnet import FIRST, JASPAR, tiny_recipe, write_models

    registry = work / "registry.tsv"  # the `tiny` fixture: 9 accessibility + 2 JASPAR models
    pd.read_csv(JASPAR, sep="\t").iloc[:2].to_csv(registry, sep="\t", index=False)
    weights = work / "weights"
    weights.mkdir()
    write_models(weights, registry)
    return tiny_recipe(work, registry, weights, tracks=FIRST, n_columns=4, framework=framework)


def setup_chrombpnet_tf_keras(work: Path) -> Any:
    return _chrombpnet(work, "tf_keras")


def setup_chrombpnet_bpnet_lite(work: Path) -> Any:
    return _chrombpnet(work, "bpnet-lite")


def setup_sei(work: Path) -> Any:
    from chorus_store.testing.models.sei import tiny_recipe, write_weights

    weights = write_weights(work / "sei-weights")
    return tiny_recipe(weights, effects="query", weights_in_recipe=True)


def setup_legnet(work: Path) -> Any:
    from chorus_store.testing.models.legnet import e2e_recipe, make_weights

    weights = make_weights(work / "legnet")
    return e2e_recipe(work, weights)


@dataclasses.dataclass(frozen=True)
class Adapter:
    setup: Callable[[Path], Any]
    framework: str
    tensorflow: bool  # the part uses TensorFlow (its threads are set before first use)


ADAPTERS = {
    "enformer-pytorch": Adapter(setup_enformer_pytorch, "pytorch", False),
    "enformer-tensorflow": Adapter(setup_enformer_tensorflow, "tensorflow", True),
    "borzoi": Adapter(setup_borzoi, "pytorch", False),
    "alphagenome": Adapter(setup_alphagenome, "pytorch", False),
    "chrombpnet-tf_keras": Adapter(setup_chrombpnet_tf_keras, "tf_keras", True),
    "chrombpnet-bpnet-lite": Adapter(setup_chrombpnet_bpnet_lite, "bpnet-lite (torch)", True),
    "sei": Adapter(setup_sei, "pytorch", False),
    "legnet": Adapter(setup_legnet, "pytorch", False),
}


# --------------------------------------------------------------------------------------
# one adapter, in its own process
# --------------------------------------------------------------------------------------


def set_threads(threads: int, tensorflow: bool) -> dict[str, int]:
    import torch

    torch.set_num_threads(threads)
    out = {"torch_threads": torch.get_num_threads()}
    if tensorflow:  # before TensorFlow's runtime starts (saving the tiny models starts it)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        out["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        out["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    return out


def scaled(recipe: Any, scale: float) -> Any:
    sampling = dict(recipe.plan.get("sampling") or {})
    for key in COUNT_KEYS:
        if key in sampling:
            sampling[key] = max(1, round(sampling[key] * scale))
    return dataclasses.replace(recipe, plan={**recipe.plan, "sampling": sampling})


def table_columns(recipe: Any) -> dict[str, np.ndarray]:
    """The columns a build asks for: those of the track table, per head, in table order."""
    import pandas as pd

    frame = recipe.track_table().frame
    return {str(h): pd.unique(rows["column"].to_numpy()) for h, rows in frame.groupby("head")}


def time_predict(
    oracle: Any, x: np.ndarray, columns: dict[str, np.ndarray] | None, quick: bool
) -> dict[str, float]:
    """One warm-up call (lazy model loads, graph tracing), then at least 3 timed calls."""
    t0 = time.perf_counter()
    oracle.predict(x, columns)
    warmup = time.perf_counter() - t0
    min_calls, min_seconds = (3, 1.0) if quick else (5, 5.0)
    calls, t0 = 0, time.perf_counter()
    while calls < min_calls or (time.perf_counter() - t0 < min_seconds and calls < 500):
        oracle.predict(x, columns)
        calls += 1
    seconds = time.perf_counter() - t0
    return {
        "warmup_seconds": warmup,
        "calls": calls,
        "seconds": seconds,
        "sequences_per_s": calls * len(x) / seconds,
    }


def part(
    name: str, work: Path, inputs_dir: Path, threads: int, scale: float, quick: bool
) -> dict[str, Any]:
    adapter = ADAPTERS[name]
    out: dict[str, Any] = {"adapter": name, "framework": adapter.framework}
    out.update(set_threads(threads, adapter.tensorflow))

    from chorus_store import build, plan_store
    from chorus_store.demo import make_demo_inputs
    from chorus_store.store.core import ChorusStore

    inputs = make_demo_inputs(inputs_dir)
    t0 = time.perf_counter()
    recipe = scaled(adapter.setup(work), scale)
    out["setup_seconds"] = time.perf_counter() - t0

    store = work / f"{name}.zarr"
    t0 = time.perf_counter()
    plan_store(store, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
    out["plan_seconds"] = time.perf_counter() - t0
    s = ChorusStore.open(store)
    out["positions"] = int(s.positions["usable"].sum())
    out["variants"] = int(s.variants["usable"].sum())
    out["tracks"] = n_tracks = len(s.tracks)
    tracks_per_shard = s.layout.tracks_per_shard

    t0 = time.perf_counter()
    oracle = recipe.load_oracle(device="cpu")
    out["load_seconds"] = time.perf_counter() - t0
    B, L = oracle.batch_size, oracle.input_length
    store_columns = table_columns(recipe)
    # every column: all of every head, or for a per-model oracle every column of the track
    # table (its head may declare columns no model backs)
    columns = store_columns if oracle.per_model else None
    out.update(
        input_length=L,
        batch_size=B,
        per_model=bool(oracle.per_model),
        columns={
            h.name: (h.n_columns if columns is None else len(columns[h.name]))
            for h in oracle.heads
            if columns is None or h.name in columns
        },
        store_columns={h: len(c) for h, c in store_columns.items()},
    )
    rng = np.random.default_rng(0)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(B, L))]
    bare = time_predict(oracle, x, columns, quick)
    out.update({f"bare_{k}": v for k, v in bare.items()})
    # the build asks for the track table's columns only, which may cost less
    everything = all(
        np.array_equal(np.sort(store_columns.get(h.name, [])), np.arange(h.n_columns))
        for h in oracle.heads
    )
    # when the store's columns are every column, it is the same measurement
    same = bare if oracle.per_model or everything else time_predict(oracle, x, store_columns, quick)
    out.update({f"bare_store_columns_{k}": v for k, v in same.items()})

    report = build(store, oracle=oracle, progress=False)
    passes = -(-n_tracks // tracks_per_shard) if oracle.per_model else 1
    build_per_s = report.sequences / report.seconds
    out.update(
        sequences=report.sequences,
        rows_built=dict(report.rows_built),
        tasks=report.tasks,
        oracle_calls=report.oracle_calls,
        build_seconds=report.seconds,
        oracle_seconds=report.oracle_seconds,
        build_sequences_per_s=build_per_s,
        oracle_share=report.oracle_seconds / report.seconds,
        passes_per_sequence=passes,
        build_over_bare=build_per_s / passes / out["bare_sequences_per_s"],
        build_over_bare_store_columns=(
            build_per_s / passes / out["bare_store_columns_sequences_per_s"]
        ),
        store_mb=sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6,
        peak_rss_mb=peak_rss_mb(),
    )
    return out


def run_part(
    name: str, work: Path, inputs: Path, threads: int, scale: float, quick: bool, timeout: float
) -> dict[str, Any]:
    sub = work / name
    sub.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, __file__, "--part", name, "--workdir", str(sub),
        "--inputs", str(inputs), "--threads", str(threads), "--scale", str(scale),
    ] + (["--quick"] if quick else [])  # fmt: skip
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"adapter": name, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(RESULT)]
    if res.returncode or not lines:
        tail = "\n".join(res.stderr.strip().splitlines()[-25:])
        return {
            "adapter": name,
            "error": (tail.splitlines() or [f"exit status {res.returncode}"])[-1],
            "stderr_tail": tail,
            "process_seconds": wall,
        }
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    result["process_seconds"] = wall
    return result


# --------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| adapter | framework | input bp | batch | columns (store's) | plan (pos / SNPs) "
        "| sequences | bare seq/s | bare seq/s, store's columns | build seq/s | in oracle "
        "| build/bare | build/bare, store's columns | build s | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for r in results:
        if "error" in r:
            error = r["error"][:150].replace("|", "/")
            lines.append(f"| {r['adapter']} | failed: {error} |" + " |" * 13)
            continue
        cols, store_cols = sum(r["columns"].values()), sum(r["store_columns"].values())
        passes = r["passes_per_sequence"]
        seqs = f"{r['sequences']:,}" + (f" ({passes} passes)" if passes > 1 else "")
        lines.append(
            f"| {r['adapter']} | {r['framework']} | {r['input_length']:,} | {r['batch_size']} "
            f"| {cols:,}{' models' if r['per_model'] else ''} ({store_cols:,}) "
            f"| {r['positions']} / {r['variants']} | {seqs} "
            f"| {r['bare_sequences_per_s']:.1f} | {r['bare_store_columns_sequences_per_s']:.1f} "
            f"| {r['build_sequences_per_s']:.1f} | {r['oracle_share']:.0%} "
            f"| {r['build_over_bare']:.2f} | {r['build_over_bare_store_columns']:.2f} "
            f"| {r['build_seconds']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def machine(threads: int) -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip() + ", "
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {cpu}{os.cpu_count()} cores, {ram:.0f} GiB, "
        f"Python {platform.python_version()}, torch threads {threads}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the tests' plans, fewer timed calls")
    ap.add_argument("--only", nargs="+", choices=sorted(ADAPTERS), help="run only these")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch/TF threads")
    ap.add_argument("--scale", type=float, help="plan sizes x the tests' (default 4; --quick 1)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per adapter")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--part", choices=sorted(ADAPTERS), help=argparse.SUPPRESS)
    ap.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    scale = args.scale if args.scale is not None else (1.0 if args.quick else 4.0)
    if args.part:
        result = part(args.part, args.workdir, args.inputs, args.threads, scale, args.quick)
        print(RESULT + json.dumps(result), flush=True)
        return
    names = args.only or list(ADAPTERS)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chorus-adapters-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        from chorus_store.demo import make_demo_inputs

        inputs = work / "inputs"
        make_demo_inputs(inputs)  # once; every part reads the same files
        header = machine(args.threads)
        print(f"# adapter throughput on CPU ({header}; plans x{scale:g} the tests')", flush=True)
        results = []
        for name in names:
            r = run_part(name, work, inputs, args.threads, scale, args.quick, args.timeout)
            results.append(r)
            if "error" in r:
                print(f"{name}: FAILED\n{r.get('stderr_tail', r['error'])}", flush=True)
            else:
                print(
                    f"{name}: bare {r['bare_sequences_per_s']:.1f} seq/s, build "
                    f"{r['build_sequences_per_s']:.1f} seq/s ({r['build_seconds']:.1f} s, "
                    f"{r['oracle_share']:.0%} in the oracle, build/bare "
                    f"{r['build_over_bare']:.2f}, on the store's columns "
                    f"{r['build_over_bare_store_columns']:.2f}); process {r['process_seconds']:.0f} s",
                    flush=True,
                )
        total = time.perf_counter() - t_start
    print()
    print(f"machine: {header}; plans x{scale:g} the end-to-end tests'; total {total:.0f} s")
    print()
    print(table(results))
    print()
    out = {
        "machine": header,
        "threads": args.threads,
        "quick": args.quick,
        "scale": scale,
        "seconds": total,
        "adapters": results,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
