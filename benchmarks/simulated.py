"""A simulated accelerator: does the build keep the model busy?

    python benchmarks/simulated.py                 # Enformer, Borzoi, AlphaGenome (~5 min)
    python benchmarks/simulated.py --quick         # small sizes, a smoke run
    python benchmarks/simulated.py --only borzoi --array torch
    python benchmarks/simulated.py --alphagenome-length 524288

The oracle's forward pass sleeps a fixed time (releasing the GIL, as a GPU kernel wait
does) and returns a prediction of the real shape (the real recipe's heads and track table,
only the columns the build asks for, as the real adapters select on the device), float32,
from one buffer per shape made once: a real accelerator writes its outputs into device
memory at no host cost, so what is timed is the build around the model. Forward times per
model batch: Enformer 30 ms, Borzoi 75 ms, AlphaGenome 700 ms (issue 10's estimates for an
H100). Stores are planned over the demo genome with the real recipes, planning untimed.

Per oracle it prints
* build seq/s: sequences through ``chorus_store.build`` per second of the build call;
* ideal seq/s: model batch / forward time; ratio = build / ideal ("GPU busy");
* serial CPU ms/seq: CPU time of the thread that calls the model, between one forward
  call and the next, per sequence, measured on a build with a zero-cost forward pass
  (what runs in series with the model).
Each oracle runs in its own process (its peak memory is its own).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    demo_genome_recipe,
    demo_sampling,
    machine,
    peak_rss_mb,
    prediction_like,
    run_part,
)

from chorus_store.oracles.base import Columns, Oracle, OutputHead  # noqa: E402

if TYPE_CHECKING:
    from chorus_store import Recipe
    from chorus_store.demo import DemoInputs

ARRAYS = ("numpy", "torch")


@dataclass(frozen=True)
class Simulated:
    """One simulated oracle: a shipped recipe, its forward time and a plan size."""

    recipe: str
    forward_s: float
    #: demo_sampling's n: ~2n positions + n/2 SNPs (two sequences each)
    n: int
    chromosomes: tuple[str, ...] = ("chr1", "chr2")
    #: input length (bp); None: the recipe's. Heads are scaled with it (bins and offset)
    input_length: int | None = None
    #: keep every k-th track of the recipe's table (tests: a small subset)
    tracks_every: int = 1

    def recipe_for(self, length: int | None = None) -> Recipe:
        """The shipped recipe at ``length`` (default: ``input_length``), planned over the
        demo genome, random positions and SNPs at least half a window from the ends."""
        from chorus_store import load_recipe
        from chorus_store.genome.tracks import TrackTable

        base = load_recipe(self.recipe)
        length = length or self.input_length or base.input_length
        heads = scaled_heads(base.heads, base.input_length, length)
        if self.tracks_every > 1:
            frame = base.track_table().frame.iloc[:: self.tracks_every]
            base = base.with_track_table(TrackTable.from_frame(frame.reset_index(drop=True)))
        margin = length // 2 + 1_000
        return demo_genome_recipe(
            base,
            demo_sampling(
                self.n,
                chromosomes=self.chromosomes,
                margin_bp=margin,
                ccre_chromosomes=self.chromosomes,
            ),
            input_length=length,
            heads=heads,
        )


#: the issue's three shapes; sizes give ~25-35 s of forward time a build, so that the
#: build's fixed costs (store open, first window, the last task's write: ~2 s) weigh little
SIMULATED = {
    "enformer": Simulated("enformer", 0.030, n=300),
    "borzoi": Simulated("borzoi", 0.075, n=120, chromosomes=("chr1", "chr2", "chr3")),
    # 1 Mb windows: only chr1 (2 Mb) and the middle of chr2 (1.5 Mb) of the demo genome
    "alphagenome": Simulated("alphagenome", 0.700, n=20),
}
QUICK = {
    "enformer": replace(SIMULATED["enformer"], n=16),
    "borzoi": replace(SIMULATED["borzoi"], n=8),
    "alphagenome": replace(SIMULATED["alphagenome"], n=2, input_length=131_072),
}
ALPHAGENOME_LENGTH = 1_048_576


def scaled_heads(
    heads: tuple[OutputHead, ...], from_length: int, to_length: int
) -> tuple[OutputHead, ...]:
    """``heads`` of an input of ``from_length`` bp, for an input of ``to_length``: bins
    and offsets scaled by the same factor (a shorter AlphaGenome covers fewer bins)."""
    if to_length == from_length:
        return heads
    out = []
    for h in heads:
        if h.is_scalar:
            out.append(h)
            continue
        bins = h.n_bins * to_length / from_length
        offset = None if h.offset_bp is None else h.offset_bp * to_length / from_length
        if bins != int(bins) or (offset is not None and offset != int(offset)):
            raise SystemExit(
                f"--alphagenome-length {to_length}: head {h.name!r} would have "
                f"{bins} bins; give a length that is a multiple of {from_length // h.n_bins} bp"
            )
        out.append(replace(h, n_bins=int(bins), offset_bp=None if offset is None else int(offset)))
    return tuple(out)


class SimulatedAccelerator(Oracle):
    """An oracle whose forward pass sleeps ``forward_s`` and returns a fixed prediction.

    Per head and column count one buffer is made once (``prediction_like``) and returned
    on every call, as a numpy array or a torch CPU tensor of the same memory
    (``array="torch"``). Each call records the calling thread and its CPU time on entry
    and exit (:attr:`calls_log`), from which :func:`serial_cpu` computes the CPU spent
    on that thread between forward passes.
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        forward_s: float,
        array: str = "numpy",
        columns: Columns | None = None,
    ) -> None:
        super().__init__(
            name=recipe.name,
            input_length=recipe.input_length,
            heads=recipe.heads,
            batch_size=recipe.batch_size,
        )
        if array not in ARRAYS:
            raise ValueError(f"array must be one of {ARRAYS}, not {array!r}")
        self.forward_s = forward_s
        self.array = array
        self._buffers: dict[tuple[str, int], Any] = {}
        #: (thread id, thread CPU s on entry, on exit) per forward call
        self.calls_log: list[tuple[int, float, float]] = []
        #: (wall clock on entry, on exit) per forward call
        self.wall_log: list[tuple[float, float]] = []
        for head, cols in (columns or {}).items():
            self._buffer(head, len(cols))

    def describe(self) -> dict[str, Any]:
        return {"adapter": "simulated", "forward_s": self.forward_s, "array": self.array}

    def _buffer(self, head: str, n_columns: int) -> Any:
        key = (head, n_columns)
        if key not in self._buffers:
            shape = self.head(head).shape(self.batch_size, n_columns)
            buf = prediction_like(shape, seed=len(self._buffers))
            if self.array == "torch":
                import torch

                self._buffers[key] = torch.from_numpy(buf)
            else:
                self._buffers[key] = buf
        return self._buffers[key]

    def buffer_bytes(self) -> int:
        return sum(int(np.prod(b.shape)) * 4 for b in self._buffers.values())

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        entry, wall = time.thread_time(), time.perf_counter()
        if self.forward_s > 0:
            time.sleep(self.forward_s)
        out = {name: self._buffer(name, len(cols)) for name, cols in columns.items()}
        self.calls_log.append((threading.get_ident(), entry, time.thread_time()))
        self.wall_log.append((wall, time.perf_counter()))
        return out


def requested_columns(recipe: Recipe) -> dict[str, np.ndarray]:
    """Per head, the columns a build of every track asks the oracle for."""
    frame = recipe.track_table().frame
    return {
        h.name: np.unique(frame.loc[frame["head"] == h.name, "column"].to_numpy())
        for h in recipe.heads
        if (frame["head"] == h.name).any()
    }


def serial_cpu(calls_log: list[tuple[int, float, float]]) -> tuple[float, int]:
    """CPU seconds the model's thread (the one that made most forward calls) spent between
    consecutive calls, and how many such gaps there were."""
    if not calls_log:
        return 0.0, 0
    threads = [t for t, _, _ in calls_log]
    model_thread = max(set(threads), key=threads.count)
    mine = [(entry, exit_) for t, entry, exit_ in calls_log if t == model_thread]
    gaps = [b[0] - a[1] for a, b in zip(mine, mine[1:], strict=False)]
    return float(sum(gaps)), len(gaps)


def planned_sequences(store: Path) -> int:
    """Sequences a build of ``store`` runs: one per usable position, two per usable SNP."""
    from chorus_store.store.core import ChorusStore

    s = ChorusStore.open(store)
    return int(s.positions["usable"].sum()) + 2 * int(s.variants["usable"].sum())


def _timed_build(store: Path, oracle: SimulatedAccelerator) -> dict[str, Any]:
    from chorus_store import build

    oracle.wall_log.clear()
    t0 = time.perf_counter()
    report = build(store, oracle=oracle, progress=False)
    t1 = time.perf_counter()
    seconds = t1 - t0
    serial, gaps = serial_cpu(oracle.calls_log)
    first, last = oracle.wall_log[0][0], oracle.wall_log[-1][1]
    in_model = sum(b - a for a, b in oracle.wall_log)
    calls = len(oracle.calls_log)
    seqs = report.sequences
    return {
        "sequences": seqs,
        "oracle_calls": calls,
        "seconds": seconds,
        "oracle_seconds": report.oracle_seconds,
        "sequences_per_s": seqs / seconds,
        # fixed costs of a build call: before the first forward pass (store open, checks,
        # the oracle pin, the first window) and after the last (its task's reduce, write)
        "startup_s": first - t0,
        "tail_s": t1 - last,
        # the model's share of the time from its first call to the end of its last
        "model_busy_between_calls": in_model / (last - first),
        # per gap (one per forward call but the last), scaled to the sequences of all calls
        "serial_cpu_ms_per_sequence": 1e3 * serial / gaps * calls / seqs if gaps else 0.0,
    }


def plan_simulated(
    sim: Simulated, work: Path, inputs: DemoInputs, *, length: int | None = None
) -> tuple[Recipe, Path]:
    """``sim``'s recipe at ``length`` and a fresh store of it planned under ``work``."""
    from chorus_store import plan_store

    recipe = sim.recipe_for(length)
    store = work / f"{sim.recipe}-{recipe.input_length}" / "planned.zarr"
    shutil.rmtree(store.parent, ignore_errors=True)
    store.parent.mkdir(parents=True)
    plan_store(store, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
    return recipe, store


def measure(
    recipe: Recipe, planned: Path, forward_s: float, *, array: str = "numpy"
) -> dict[str, Any]:
    """Build copies of the ``planned`` store twice: with a zero-cost forward pass (serial
    CPU per sequence) and with ``forward_s`` a model batch (throughput, ratio)."""
    stores = {}
    for kind in ("zero", "timed"):
        stores[kind] = planned.parent / f"{kind}-{array}.zarr"
        shutil.rmtree(stores[kind], ignore_errors=True)
        shutil.copytree(planned, stores[kind])
    columns = requested_columns(recipe)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    zero = SimulatedAccelerator(recipe, forward_s=0.0, array=array, columns=columns)
    buffers_s = time.perf_counter() - t0
    timed = SimulatedAccelerator(recipe, forward_s=forward_s, array=array)
    timed._buffers = zero._buffers  # the same memory: one set of buffers per process
    zero_run = _timed_build(stores["zero"], zero)
    timed_run = _timed_build(stores["timed"], timed)
    ideal = recipe.batch_size / forward_s
    return {
        "oracle": recipe.name,
        "input_length": recipe.input_length,
        "tracks": len(recipe.track_table()),
        "heads": {
            h.name: list(h.shape(recipe.batch_size, len(columns[h.name])))
            for h in recipe.heads
            if h.name in columns
        },
        "batch_size": recipe.batch_size,
        "forward_s": forward_s,
        "array": array,
        "planned_sequences": planned_sequences(planned),
        "prediction_gb": zero.buffer_bytes() / 1e9,
        "buffers_seconds": buffers_s,
        "zero_cost": zero_run,
        "timed": timed_run,
        "ideal_sequences_per_s": ideal,
        "ratio": timed_run["sequences_per_s"] / ideal,
        "serial_cpu_ms_per_sequence": zero_run["serial_cpu_ms_per_sequence"],
        "peak_rss_mb": peak_rss_mb(),
        # other jobs on the cores show here: 1-minute load average before and after
        "load_average": [load_before, os.getloadavg()[0]],
    }


def _part(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from chorus_store.demo import make_demo_inputs

    sim = (QUICK if args.quick else SIMULATED)[name]
    length = None
    if name == "alphagenome" and args.alphagenome_length:
        length = args.alphagenome_length
    elif name == "alphagenome" and not args.quick:
        length = ALPHAGENOME_LENGTH
    recipe, planned = plan_simulated(sim, work, make_demo_inputs(work / "inputs"), length=length)
    return measure(recipe, planned, sim.forward_s, array=args.array)


def _row(r: dict[str, Any]) -> str:
    length = r["input_length"]
    shape = f"{length / 2**20:g} Mb" if length >= 2**20 else f"{length // 1024} kb"
    return (
        f"| {r['oracle']} ({shape}, {r['prediction_gb']:.3g} GB/prediction) | "
        f"{r['serial_cpu_ms_per_sequence']:.1f} | {r['timed']['sequences_per_s']:.2f} | "
        f"{r['ideal_sequences_per_s']:.2f} | {r['ratio']:.2f} | {r['timed']['sequences']} | "
        f"{r['timed']['startup_s']:.1f} + {r['timed']['tail_s']:.1f} | "
        f"{r['timed']['model_busy_between_calls']:.3f} | "
        f"{r['peak_rss_mb'] / 1024:.1f} | {r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--only", choices=sorted(SIMULATED), help="run only this oracle")
    ap.add_argument("--array", choices=ARRAYS, default="numpy", help="what the oracle returns")
    ap.add_argument(
        "--alphagenome-length",
        type=int,
        help=f"AlphaGenome input bp (default {ALPHAGENOME_LENGTH:,}, the real one; --quick: "
        f"131,072); a prediction is ~9.8 kB per bp",
    )
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--part", choices=sorted(SIMULATED), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(_part(args.part, args.workdir, args)))
        return
    extra = ["--array", args.array]
    if args.alphagenome_length:
        extra += ["--alphagenome-length", str(args.alphagenome_length)]
    with tempfile.TemporaryDirectory(prefix="chorus-sim-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {"machine": machine(), "quick": args.quick, "array": args.array}
        print(
            "| oracle | serial CPU ms/seq | build seq/s | ideal seq/s | ratio | sequences "
            "| start-up + tail s | model busy, first to last call | peak RSS GB | load avg |"
            "\n|---|---|---|---|---|---|---|---|---|---|",
            flush=True,
        )
        for name in [args.only] if args.only else list(SIMULATED):
            out[name] = r = run_part(__file__, name, work, args.quick, extra_args=extra)
            print(_row(r), flush=True)
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
