"""Scale-out benchmarks: one command, ratios against baselines measured in the same run.

    python benchmarks/scale_out.py            # the demo plan and 400-position zero-cost plan
    python benchmarks/scale_out.py --quick    # small sizes, a smoke run

Parts (each in its own process):

* cluster   the demo model's build (PyTorch, CPU) in one process, and on a dask.distributed
            LocalCluster of 1 and of 2 worker processes: rows/s and the 2-vs-1 ratio.
* s3        a zero-cost oracle with Enformer-shaped outputs (896 bins x 5,313 tracks)
            building into a store on local disk, and into one on an S3-protocol server
            (moto) on loopback: positions/s and the S3-vs-disk ratio, with the S3
            requests the build made (counted from the server's request log) per shard.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # `chorus_store` and `tests` (the S3 server helper)
sys.path.insert(0, str(HERE))

from common import machine, parse_args, run_part  # noqa: E402

# ------------------------------------------------------------------------------ cluster


def part_cluster(work: Path, quick: bool) -> dict[str, Any]:
    """One process vs a LocalCluster of 1 and 2 workers, on the same plan.

    Each cluster first builds a tiny store of the same recipe, so its workers hold the
    model (they keep it across stores): the timed build is steady-state throughput; the
    warm-up's time is reported as the start-up cost (worker start, torch import, load)."""
    from chorus_store import build, load_recipe, plan_store
    from chorus_store.build.cluster import local_cluster
    from chorus_store.demo import make_demo_inputs
    from chorus_store.store.core import ChorusStore

    inputs = make_demo_inputs(work / "inputs")
    recipe = load_recipe("demo")

    def sized(n: int) -> Any:
        plan = copy.deepcopy(recipe.plan)
        plan["sampling"].update(
            n_random=n, n_ccre=n // 2, n_tss=n // 4, n_gene_body=n // 4, n_snps=n // 2
        )
        return dataclasses.replace(recipe, plan=plan)

    timed = sized(200) if quick else recipe
    one_thread = os.environ.get("OMP_NUM_THREADS") == "1"
    out: dict[str, Any] = {"threads": "1" if one_thread else "cores / workers"}
    for label, workers in (("one_process", 0), ("cluster_1", 1), ("cluster_2", 2)):
        store = work / f"demo-{label}.zarr"
        plan_store(store, timed, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
        s = ChorusStore.open(store)
        rows = len(s.positions) + len(s.variants)
        entry: dict[str, Any] = {"rows": rows}
        if workers == 0:
            t0 = time.perf_counter()
            build(store, progress=False)
            seconds = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            with local_cluster(workers, cpu_threads=1 if one_thread else None) as client:
                client.wait_for_workers(workers)
                warm = work / f"warm-{label}.zarr"
                plan_store(warm, sized(8), fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
                build(warm, scheduler=client, progress=False)
                entry["startup_seconds"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                build(store, scheduler=client, progress=False)
                seconds = time.perf_counter() - t0
        out[label] = {**entry, "seconds": seconds, "rows_per_s": rows / seconds}
    out["ratio_2_vs_1_workers"] = out["cluster_2"]["rows_per_s"] / out["cluster_1"]["rows_per_s"]
    out["ratio_1_worker_vs_one_process"] = (
        out["cluster_1"]["rows_per_s"] / out["one_process"]["rows_per_s"]
    )
    return out


# ------------------------------------------------------------------------------ s3


def _requests(log: Path) -> Counter[str]:
    return Counter(re.findall(r'"(GET|PUT|HEAD|DELETE|POST) /', log.read_text(errors="replace")))


def part_s3(work: Path, quick: bool) -> dict[str, Any]:
    from run import zero_cost_oracle, zero_cost_recipe

    from chorus_store import build, plan_store
    from chorus_store.demo import make_demo_inputs
    from chorus_store.store.core import ChorusStore

    inputs = make_demo_inputs(work / "inputs")
    recipe = zero_cost_recipe(60 if quick else 400)
    log = work / "moto.log"
    from chorus_store.testing.s3 import create_bucket, s3_server

    with s3_server(log) as endpoint:
        create_bucket(endpoint, "bench")
        out: dict[str, Any] = {}
        for label, url in (("disk", str(work / "zero.zarr")), ("s3", "s3://bench/zero.zarr")):
            plan_store(url, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
            store = ChorusStore.open(url)
            usable = int(store.positions["usable"].sum()) + int(store.variants["usable"].sum())
            shards = sum(1 for _ in store.iter_shards("baselines")) + sum(
                1 for _ in store.iter_shards("variants")
            )
            before = _requests(log)
            t0 = time.perf_counter()
            build(url, oracle=zero_cost_oracle(), progress=False)
            seconds = time.perf_counter() - t0
            reqs = _requests(log) - before
            out[label] = {
                "rows": usable,
                "seconds": seconds,
                "rows_per_s": usable / seconds,
                "shards": shards,
            }
            if label == "s3":
                out[label]["requests"] = dict(reqs)
                out[label]["requests_per_shard"] = sum(reqs.values()) / shards
                out[label]["puts_per_shard"] = reqs["PUT"] / shards
                out[label]["requests_per_s"] = sum(reqs.values()) / seconds
        out["ratio_s3_vs_disk"] = out["s3"]["rows_per_s"] / out["disk"]["rows_per_s"]
        return out


PARTS = {"cluster": part_cluster, "s3": part_s3}


def main() -> None:
    args = parse_args(__doc__, PARTS, sorted(PARTS))
    if args is None:
        return
    with tempfile.TemporaryDirectory(prefix="chorus-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {
            "machine": machine(),
            "quick": args.quick,
        }
        if args.only in (None, "cluster"):
            # the cores shared out (what --workers does), then 1 thread per process
            for tag, env in (("cluster", None), ("cluster-1thread", {"OMP_NUM_THREADS": "1"})):
                out[tag] = c = run_part(__file__, "cluster", work / tag, args.quick, env)
                print(
                    f"demo build (PyTorch CPU, threads per process: {c['threads']}), "
                    f"{c['one_process']['rows']} rows: one process "
                    f"{c['one_process']['rows_per_s']:.0f} rows/s | LocalCluster 1 worker "
                    f"{c['cluster_1']['rows_per_s']:.0f} rows/s "
                    f"({c['ratio_1_worker_vs_one_process']:.2f}x one process; start-up "
                    f"{c['cluster_1']['startup_seconds']:.1f} s) | 2 workers "
                    f"{c['cluster_2']['rows_per_s']:.0f} rows/s (start-up "
                    f"{c['cluster_2']['startup_seconds']:.1f} s) -> 2 vs 1 workers: "
                    f"{c['ratio_2_vs_1_workers']:.2f}x",
                    flush=True,
                )
        if args.only in (None, "s3"):
            out["s3"] = s = run_part(__file__, "s3", work / "s3", args.quick)
            print(
                f"zero-cost Enformer-shaped build, {s['disk']['rows']} rows: local disk "
                f"{s['disk']['rows_per_s']:.1f} rows/s | loopback S3 (moto) "
                f"{s['s3']['rows_per_s']:.1f} rows/s (ratio {s['ratio_s3_vs_disk']:.2f}); "
                f"S3 requests per shard {s['s3']['requests_per_shard']:.1f} "
                f"({s['s3']['puts_per_shard']:.1f} PUT), {s['s3']['requests_per_s']:.1f} req/s",
                flush=True,
            )
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
