"""GPU throughput: the bare forward pass of each full-size architecture vs a full build.

    python benchmarks/gpu.py                       # on a GPU machine: a few minutes in all
    python benchmarks/gpu.py --only enformer --sequences 32
    python benchmarks/gpu.py --smoke               # tiny models on CPU (a minute), a check

For Enformer (enformer-pytorch), Borzoi (borzoi-pytorch) and AlphaGenome
(alphagenome-pytorch), each in its own process with a time box (``--timeout``):

* the model at its published size with RANDOM weights (nothing is downloaded), saved in
  the on-disk format its adapter loads;
* bare forward   the model object itself on the device, one fixed batch of random one-hot
                 sequences, after warm-up calls, ``torch.cuda.synchronize()`` after each;
                 only the heads the store needs (Enformer ``human``; AlphaGenome the
                 recipe's heads); nothing is copied to the host;
* predict        the loaded oracle's ``predict`` on the same batch, the track table's
                 columns (what the adapter hands the build, host copy included today);
* build          ``plan_store`` from the real recipe (``builders/<oracle>/recipe.toml``:
                 its oracle, track table and layout; the plan generated over a synthetic
                 genome) and ``build(store, oracle=<the loaded oracle>)``; build/bare is
                 the share of the model's own speed the whole pipeline keeps.

The synthetic genome (random ACGT, two chromosomes, long enough for 1 Mb windows) comes
with a GTF of random genes and a cCRE BED, so RNA tracks have genes and every stratum of
the generated plan is drawn. ``--smoke`` swaps in the tiny models of the adapter tests
(tests/test_adapter_*.py), short plans and the CPU, so that the script is exercised where
there is no GPU (tests/test_bench_gpu.py). Results: a table and one JSON on stdout, and
``gpu_bench.json`` + ``gpu_bench.md`` under ``--out`` (default: ``$OUT`` if set).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # `tests` (the tiny models of --smoke) and `chorus_store`
sys.path.insert(0, str(HERE))

from adapters import peak_rss_mb, table_columns  # noqa: E402
from common import machine  # noqa: E402

RESULT = "@@gpu-bench@@ "
BUILDERS = ROOT / "builders"
ASSEMBLY = "chorus-store-gpu-bench-v1"
#: sequences per oracle (positions + 2 x SNPs): small, the model dominates a GPU minute
DEFAULT_SEQUENCES = {"enformer": 64, "borzoi": 32, "alphagenome": 16}
#: seconds per oracle process, model creation and saving included (Enformer's random init
#: alone took 92 s on the 2 loaded cores here); together under a 10-minute command
DEFAULT_TIMEOUT = {"enformer": 200.0, "borzoi": 150.0, "alphagenome": 240.0}
SMOKE_SEQUENCES = 4
SMOKE_TIMEOUT = 600.0  # a shared CPU: tiny models, but 393-524 kb inputs
#: what of a recipe's [plan] names chorus's reference set (replaced by a generated plan)
REFERENCE_PLAN_KEYS = ("source", "reference_set", "positions_set", "variants_set", "assembly",
                       "sampling", "additions")  # fmt: skip


@dataclasses.dataclass
class Prepared:
    """One oracle ready to time: its recipe (weights written), and the same model in memory
    with the call that is its bare forward pass."""

    recipe: Any
    model: Any  # torch.nn.Module
    forward: Callable[[Any, Any], Any]  # (model, one-hot (B, L, 4) on the device) -> outputs


def _real_recipe(name: str) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((BUILDERS / name / "recipe.toml").read_text())
    data["tracks"]["path"] = str(BUILDERS / name / data["tracks"]["path"])
    return data


# ------------------------------------------------------------------------------ Enformer

#: enformer_pytorch's published architecture (EleutherAI/enformer-official-rough)
ENFORMER_FULL = {
    "dim": 1536,
    "depth": 11,
    "heads": 8,
    "output_heads": {"human": 5313, "mouse": 1643},
    "target_length": 896,
}


def prepare_enformer(work: Path, smoke: bool) -> Prepared:
    import torch
    from enformer_pytorch import Enformer

    from chorus_store import Recipe
    from chorus_store.oracles.enformer import TRUNK_INPUT_BP

    if smoke:
        from chorus_store.testing.models.enformer import TINY as hparams
    else:
        hparams = ENFORMER_FULL
    torch.manual_seed(0)
    model = Enformer.from_hparams(**hparams)
    weights = work / "enformer-weights"
    model.save_pretrained(weights, safe_serialization=False)  # as the hub's: a .bin
    data = _real_recipe("enformer")
    # random weights: no TF gamma table (from_pretrained enables it for the official ones)
    data["oracle"].update(weights=str(weights), use_tf_gamma=False)
    recipe = Recipe.from_dict(data, base=BUILDERS / "enformer")

    def forward(m: Any, x: Any) -> Any:
        trim = (x.shape[1] - TRUNK_INPUT_BP) // 2  # the adapter feeds the central 196,608 bp
        return m(x[:, trim : trim + TRUNK_INPUT_BP], head="human")

    return Prepared(recipe, model, forward)


# ------------------------------------------------------------------------------ Borzoi


def prepare_borzoi(work: Path, smoke: bool) -> Prepared:
    import pandas as pd
    import torch
    from borzoi_pytorch import Borzoi
    from borzoi_pytorch.config_borzoi import BorzoiConfig

    from chorus_store import Recipe

    data = _real_recipe("borzoi")
    parent = work / "borzoi-weights"
    torch.manual_seed(0)
    if smoke:
        from chorus_store.testing.models.borzoi import SHALLOW, NarrowBorzoi

        # every 16th track of the real table (all layers, RNA included), renumbered
        meta = pd.read_csv(data["tracks"]["path"], sep="\t", index_col=0).iloc[::16]
        table = work / "borzoi_targets_smoke.txt"
        meta.reset_index(drop=True).to_csv(table, sep="\t")
        data["tracks"]["path"] = str(table)
        data["oracle"]["heads"][0]["n_columns"] = len(meta)
        data["oracle"]["architecture"] = f"{NarrowBorzoi.__module__}:NarrowBorzoi"
        model = NarrowBorzoi(BorzoiConfig(**SHALLOW, n_human_tracks=len(meta)))
    else:
        model = Borzoi(BorzoiConfig())  # the published config: 7,611 human tracks
    model.eval().save_pretrained(parent / "borzoi-replicate-0")
    data["oracle"]["weights"] = str(parent)
    recipe = Recipe.from_dict(data, base=BUILDERS / "borzoi")

    def forward(m: Any, x: Any) -> Any:
        return m(x.transpose(1, 2))  # (B, 4, L) -> (B, tracks, bins)

    return Prepared(recipe, model, forward)


# ------------------------------------------------------------------------------ AlphaGenome


def prepare_alphagenome(work: Path, smoke: bool) -> Prepared:
    import pandas as pd
    import torch
    from alphagenome_pytorch.alphagenome import AlphaGenome

    from chorus_store import Recipe
    from chorus_store.oracles.alphagenome import OUTPUT_TYPES

    weights = work / "alphagenome-weights"
    weights.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if smoke:
        from chorus_store.testing.models.alphagenome import (
            TINY_CONFIG,
            TINY_TRACKS,
            alphagenome_recipe,
            tiny_model,
            track_slice,
        )

        model = tiny_model(organisms=("human",))
        config = work / "alphagenome-config.json"
        config.write_text(json.dumps(TINY_CONFIG))
        tiny = {"config": config, "tracks": track_slice(work / "alphagenome-tracks.json")}
        recipe = alphagenome_recipe(tiny, weights=weights, batch_size=1)
        columns = dict(TINY_TRACKS)
    else:
        model = AlphaGenome()  # the published architecture, as the adapter builds it
        model.add_reference_heads("human")
        data = _real_recipe("alphagenome")
        data["oracle"]["weights"] = str(weights)
        recipe = Recipe.from_dict(data, base=BUILDERS / "alphagenome")
        columns = {h.name: h.n_columns for h in recipe.heads}
    torch.save(model.state_dict(), weights / "alphagenome_pytorch.pt")
    # nonzero_mean 1.0 for every column of every genome-track head (random weights: any
    # positive scale does)
    rows = [
        (ot, i, 1.0)
        for ot, n in columns.items()
        if OUTPUT_TYPES[ot].kind == "tracks"
        for i in range(n)
    ]
    pd.DataFrame(rows, columns=["output_type", "local_index", "nonzero_mean"]).to_csv(
        weights / "track_means.tsv", sep="\t", index=False
    )
    heads = {OUTPUT_TYPES[h.name].port_head for h in recipe.heads}

    def forward(m: Any, x: Any) -> Any:
        tokens = x.argmax(-1)  # the port embeds base tokens (no N in random sequences)
        return m.inference(tokens, 0, requested_heads=heads)

    return Prepared(recipe, model, forward)


PREPARE: dict[str, Callable[[Path, bool], Prepared]] = {
    "enformer": prepare_enformer,
    "borzoi": prepare_borzoi,
    "alphagenome": prepare_alphagenome,
}


# ------------------------------------------------------------------------------ the genome


def synthetic_genome(directory: Path, chrom_bp: int, seed: int = 0) -> dict[str, Path]:
    """Two chromosomes of random ACGT, a GTF of random multi-exon genes and a cCRE BED."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {k: directory / f"synthetic.{k}" for k in ("fa", "gtf", "bed")}
    stamp = directory / "synthetic.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == {"chrom_bp": chrom_bp, "seed": seed}:
        return paths
    rng = np.random.default_rng(seed)
    bases = np.frombuffer(b"ACGT", np.uint8)
    gtf, bed = [], []
    with paths["fa"].open("wb") as fa:
        for c in ("chr1", "chr2"):
            seq = bases[rng.integers(0, 4, chrom_bp)].tobytes()
            fa.write(f">{c}\n".encode())
            fa.write(b"\n".join(seq[i : i + 60] for i in range(0, chrom_bp, 60)) + b"\n")
            for g in range(max(4, chrom_bp // 50_000)):
                glen = int(rng.integers(12_000, 60_000))
                start = int(rng.integers(10_000, chrom_bp - glen - 10_000))
                strand = "+" if rng.random() < 0.5 else "-"
                gid = f"ENSGSYN{c[3:]}{g:05d}.1"
                attrs = f'gene_id "{gid}"; gene_type "protein_coding"; gene_name "S{c[3:]}_{g}";'
                t_attrs = f'{attrs} transcript_id "{gid}.t"; transcript_type "protein_coding";'
                gtf.append(f"{c}\tSYN\tgene\t{start + 1}\t{start + glen}\t.\t{strand}\t.\t{attrs}")
                gtf.append(
                    f"{c}\tSYN\ttranscript\t{start + 1}\t{start + glen}\t.\t{strand}\t.\t{t_attrs}"
                )
                cuts = np.sort(rng.choice(np.arange(500, glen - 500, 100), 3, replace=False))
                for k, s in enumerate([0, *cuts.tolist()], 1):
                    e = glen - 1 if k == 4 else s + int(rng.integers(100, 400))
                    gtf.append(f"{c}\tSYN\texon\t{start + s + 1}\t{start + e + 1}\t.\t{strand}\t.\t"
                               f"{t_attrs} exon_number {k};")  # fmt: skip
            for i, centre in enumerate(np.sort(rng.integers(5_000, chrom_bp - 5_000, 400))):
                cat = ("dELS", "pELS", "PLS", "CA-CTCF", "CA-TF", "TF", "CA")[i % 7]
                bed.append(
                    f"{c}\t{centre - 150}\t{centre + 150}\tEH38D{i:07d}\tEH38E{i:07d}\t{cat}"
                )
    paths["gtf"].write_text("\n".join(gtf) + "\n")
    paths["bed"].write_text("\n".join(sorted(bed)) + "\n")
    Path(str(paths["fa"]) + ".fai").unlink(missing_ok=True)
    stamp.write_text(json.dumps({"chrom_bp": chrom_bp, "seed": seed}))
    return paths


def generated_plan(input_length: int, n_sequences: int) -> dict[str, Any]:
    """About ``n_sequences`` forward passes: 3/4 positions, 1/4 SNPs (two passes each)."""
    margin = input_length // 2 + 20_000
    n_pos = max(2, (3 * n_sequences) // 4)
    return {
        "source": "generated",
        "assembly": ASSEMBLY,
        "sampling": {
            "n_random": max(1, n_pos // 3), "n_ccre": max(1, n_pos // 3),
            "n_tss": max(1, n_pos // 6), "n_gene_body": max(1, n_pos - 2 * (n_pos // 3) - n_pos // 6),
            "n_snps": max(1, n_sequences // 8),
            "chromosomes": ["chr1", "chr2"], "ccre_chromosomes": ["chr1", "chr2"],
            "random_margin_bp": margin, "random_fallback_margin_bp": margin,
            "snp_margin_bp": margin,
        },
    }  # fmt: skip


# ------------------------------------------------------------------------------ timing


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    call: Callable[[], Any], device: Any, batch: int, *, warmup: int, min_calls: int,
    min_seconds: float,
) -> dict[str, float]:  # fmt: skip
    """Sequences/s of ``call`` after ``warmup`` calls; the device is synchronised after each."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        call()
        _sync(device)
    warm = time.perf_counter() - t0
    calls, t0 = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < min_seconds:
        call()
        _sync(device)
        calls += 1
    seconds = time.perf_counter() - t0
    return {"warmup_seconds": warm, "calls": calls, "seconds": seconds,
            "sequences_per_s": calls * batch / seconds}  # fmt: skip


def torch_flags() -> dict[str, bool]:
    """The switches that change speed and the last bits of a prediction."""
    import torch

    return {
        "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def time_bare(
    prep: Prepared, onehot: np.ndarray, dev: Any, *, smoke: bool, min_calls: int,
    min_seconds: float,
) -> dict[str, float]:  # fmt: skip
    """The model object's own forward pass on the device; no host copy of its outputs."""
    import torch

    with torch.inference_mode():
        model = prep.model.to(dev).eval()
        x = torch.from_numpy(onehot).to(dev)
        return time_calls(lambda: prep.forward(model, x), dev, len(onehot),
                          warmup=1 if smoke else 3, min_calls=min_calls,
                          min_seconds=min_seconds)  # fmt: skip


def run_oracle(
    name: str, work: Path, genome: dict[str, Path], *, smoke: bool, device: str,
    n_sequences: int, batch_size: int | None = None, emit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every figure of one oracle; ``emit`` gets the partial result after each stage (a
    process killed by its time box still reports what it measured)."""
    import torch

    from chorus_store import build, plan_store
    from chorus_store.store.core import ChorusStore

    out: dict[str, Any] = {"oracle": name, "smoke": smoke}
    report = emit or (lambda _: None)
    dev = torch.device(device)
    out["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    t0 = time.perf_counter()
    prep = PREPARE[name](work, smoke)
    B = batch_size or int(prep.recipe.oracle.get("batch_size", 1))
    # the real recipe's plan options (RNA gene rule and convention, ...) over a generated
    # plan: its reference set is hg38's, not the synthetic genome's
    options = {k: v for k, v in prep.recipe.plan.items() if k not in REFERENCE_PLAN_KEYS}
    plan = {**options, **generated_plan(prep.recipe.input_length, n_sequences)}
    recipe = dataclasses.replace(prep.recipe, plan=plan)
    out.update(setup_seconds=time.perf_counter() - t0, input_length=recipe.input_length,
               batch_size=B, parameters=sum(p.numel() for p in prep.model.parameters()),
               plan_options=options)  # fmt: skip
    report(out)

    rng = np.random.default_rng(0)
    onehot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(B, recipe.input_length))]
    min_calls, min_seconds = (2, 0.0) if smoke else (5, 3.0)
    bare = time_bare(prep, onehot, dev, smoke=smoke, min_calls=min_calls, min_seconds=min_seconds)
    out.update({f"bare_{k}": v for k, v in bare.items()}, bare_torch_flags=torch_flags())
    if dev.type == "cuda":
        out["bare_peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    prep.model = None  # free the device for the oracle's own copy
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    report(out)

    t0 = time.perf_counter()
    oracle = recipe.load_oracle(device=device)
    out["load_seconds"] = time.perf_counter() - t0
    # the numerics the build ran under (an adapter may set them when it loads)
    out["torch_flags"] = torch_flags()
    columns = table_columns(recipe)
    out["tracks"] = int(sum(len(c) for c in columns.values()))
    predict = time_calls(lambda: oracle.predict(onehot, columns), dev, B, warmup=1,
                         min_calls=min_calls, min_seconds=min_seconds / 2)  # fmt: skip
    out.update({f"predict_{k}": v for k, v in predict.items()})
    report(out)

    store = work / f"{name}.zarr"
    t0 = time.perf_counter()
    plan_store(store, recipe, fasta=genome["fa"], ccre=genome["bed"], gtf=genome["gtf"])
    out["plan_seconds"] = time.perf_counter() - t0
    s = ChorusStore.open(store)
    out["positions"] = int(s.positions["usable"].sum())
    out["variants"] = int(s.variants["usable"].sum())
    t0 = time.perf_counter()
    rep = build(store, oracle=oracle, batch_size=B, progress=False)
    wall = time.perf_counter() - t0
    build_per_s = rep.sequences / rep.seconds
    out.update(
        sequences=rep.sequences,
        build_seconds=rep.seconds,
        build_wall_seconds=wall,
        oracle_seconds=rep.oracle_seconds,
        oracle_share=rep.oracle_seconds / rep.seconds,
        build_sequences_per_s=build_per_s,
        build_over_bare=build_per_s / out["bare_sequences_per_s"],
        predict_over_bare=out["predict_sequences_per_s"] / out["bare_sequences_per_s"],
        peak_rss_gb=peak_rss_mb() / 1e3,
    )
    if dev.type == "cuda":
        out["build_peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    report(out)
    return out


# ------------------------------------------------------------------------------ the driver


def run_part(name: str, args: argparse.Namespace, work: Path, genome_dir: Path) -> dict[str, Any]:
    """One oracle in its own process, killed after its time box; returns what it reported."""
    cmd = [
        sys.executable, __file__, "--part", name, "--workdir", str(work / name),
        "--genome", str(genome_dir), "--device", args.device,
        "--sequences", str(args.sequences or (SMOKE_SEQUENCES if args.smoke else DEFAULT_SEQUENCES[name])),
    ] + (["--smoke"] if args.smoke else []) + (
        ["--batch-size", str(args.batch_size)] if args.batch_size else [])  # fmt: skip
    timeout = args.timeout or (SMOKE_TIMEOUT if args.smoke else DEFAULT_TIMEOUT[name])
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=timeout)  # fmt: skip
        stdout, stderr, error = res.stdout, res.stderr, (
            f"exit status {res.returncode}" if res.returncode else None)  # fmt: skip
    except subprocess.TimeoutExpired as exc:

        def text(b: Any) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")

        stdout, stderr = text(exc.stdout), text(exc.stderr)
        error = f"time box of {timeout:.0f} s reached"
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT)]
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT) :]) if lines else {"oracle": name}
    result["process_seconds"] = time.perf_counter() - t0
    if error:
        result["error"] = error
        result["stderr_tail"] = "\n".join(stderr.strip().splitlines()[-20:])
    return result


def _f(r: dict[str, Any], key: str, fmt: str) -> str:
    return format(r[key], fmt) if key in r else "—"


def table(results: list[dict[str, Any]]) -> str:
    head = ("| oracle | device | input bp | batch | params (M) | tracks | plan (pos / SNPs) "
            "| bare seq/s | predict seq/s | build seq/s | build/bare | predict/bare "
            "| in oracle | peak GPU GB | note |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for r in results:
        plan = f"{r['positions']} / {r['variants']}" if "positions" in r else "—"
        params = f"{r['parameters'] / 1e6:,.1f}" if "parameters" in r else "—"
        peak = max(r.get("bare_peak_gpu_gb", 0), r.get("build_peak_gpu_gb", 0))
        note = r.get("error", "").replace("|", "/")
        lines.append(
            f"| {r['oracle']} | {r.get('device', '—')} | {_f(r, 'input_length', ',')} "
            f"| {_f(r, 'batch_size', 'd')} | {params} | {_f(r, 'tracks', ',')} | {plan} "
            f"| {_f(r, 'bare_sequences_per_s', '.2f')} | {_f(r, 'predict_sequences_per_s', '.2f')} "
            f"| {_f(r, 'build_sequences_per_s', '.2f')} | {_f(r, 'build_over_bare', '.2f')} "
            f"| {_f(r, 'predict_over_bare', '.2f')} | {_f(r, 'oracle_share', '.0%')} "
            f"| {f'{peak:.1f}' if peak else '—'} | {note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="tiny models, CPU, short plans")
    ap.add_argument("--only", nargs="+", choices=sorted(PREPARE), help="these oracles only")
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--sequences", type=int, help="forward passes per build (default per oracle)")
    ap.add_argument("--batch-size", type=int, help="batch (default: the recipe's, chorus's 1)")
    ap.add_argument("--timeout", type=float, help="seconds per oracle (default per oracle)")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, help="write gpu_bench.json/.md here (default: $OUT)")
    ap.add_argument("--part", choices=sorted(PREPARE), help=argparse.SUPPRESS)
    ap.add_argument("--genome", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.part:
        args.workdir.mkdir(parents=True, exist_ok=True)
        genome = {k: args.genome / f"synthetic.{k}" for k in ("fa", "gtf", "bed")}  # the driver's
        run_oracle(
            args.part, args.workdir, genome, smoke=args.smoke, device=args.device,
            n_sequences=args.sequences, batch_size=args.batch_size,
            emit=lambda r: print(RESULT + json.dumps(r), flush=True),
        )  # fmt: skip
        return None
    names = args.only or list(PREPARE)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chorus-gpu-bench-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        # 2 x 3 Mb (AlphaGenome's 1 Mb windows with margins); smoke: 3 x Borzoi's window
        chrom_bp = 1_600_000 if args.smoke else 3_000_000
        genome_dir = work / "genome"
        synthetic_genome(genome_dir, chrom_bp)
        header = machine()
        print(f"# GPU benchmark ({header}; device {args.device}; smoke {args.smoke})", flush=True)
        results = []
        for name in names:
            r = run_part(name, args, work, genome_dir)
            results.append(r)
            if "error" in r:
                print(f"{name}: {r['error']}\n{r.get('stderr_tail', '')}", flush=True)
            if "build_over_bare" in r:
                print(f"{name}: bare {r['bare_sequences_per_s']:.2f} seq/s, build "
                      f"{r['build_sequences_per_s']:.2f} seq/s, build/bare "
                      f"{r['build_over_bare']:.2f}", flush=True)  # fmt: skip
    total = time.perf_counter() - t_start
    out = {"machine": header, "device": args.device, "smoke": args.smoke, "seconds": total,
           "torch": torch.__version__, "oracles": results}  # fmt: skip
    text = table(results)
    print()
    print(f"machine: {header}; total {total:.0f} s")
    print()
    print(text)
    print()
    print(json.dumps(out))
    dest = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "gpu_bench.json").write_text(json.dumps(out, indent=1))
        (dest / "gpu_bench.md").write_text(f"machine: {header}\n\n{text}\n")
    return out


if __name__ == "__main__":
    main()
