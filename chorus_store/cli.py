"""``chorus-store``: the command line, a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import ChorusStoreError

app = typer.Typer(
    name="chorus-store",
    help="Resumable, exact per-track background nulls for sequence-to-function oracles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

StorePath = Annotated[
    str,
    typer.Argument(
        help="The Zarr store: a directory, or an object-store URL (s3://bucket/x.zarr)."
    ),
]


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the API; print a chorus-store error as one clear message and exit 2."""
    try:
        return fn(*args, **kwargs)
    except ChorusStoreError as exc:
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(2) from None


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise typer.BadParameter("use K/N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise typer.BadParameter("need 0 <= K < N")
    return k, n


def _version(value: bool) -> None:
    if value:
        out.print(f"chorus-store {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


@app.command()
def plan(
    store: StorePath,
    recipe: Annotated[str, typer.Option(help="Recipe name (builders/<name>) or recipe.toml path.")],
    fasta: Annotated[Path, typer.Option(help="Reference FASTA (indexed with pyfaidx).")],
    reference_set: Annotated[
        Path | None, typer.Option(help="chorus reference-positions NPZ.")
    ] = None,
    positions_set: Annotated[str | None, typer.Option(help="Region set in it.")] = None,
    variants_set: Annotated[str | None, typer.Option(help="SNP set in it.")] = None,
    ccre: Annotated[Path | None, typer.Option(help="SCREEN cCRE BED (generated plan).")] = None,
    gtf: Annotated[
        Path | None, typer.Option(help="GENCODE GTF (generated plan; RNA tracks).")
    ] = None,
    dhs: Annotated[
        Path | None, typer.Option(help="Meuleman DHS index (accessibility populations/SNPs).")
    ] = None,
    assembly: Annotated[
        str | None, typer.Option(help="Name of a genome chorus does not know by chr1 length.")
    ] = None,
) -> None:
    """Write the sampling plan into a new store (or confirm it matches an existing one)."""
    from .plan import plan_store

    s = _run(
        plan_store,
        store,
        recipe,
        fasta=fasta,
        reference_set=reference_set,
        positions_set=positions_set,
        variants_set=variants_set,
        ccre=ccre,
        gtf=gtf,
        dhs=dhs,
        assembly=assembly,
    )
    p = s.attrs["plan"]
    table = Table("set", "stratum", "planned", "usable", "rejected", title=f"plan of {s.url}")
    for kind, key in (("positions", "position_strata"), ("variants", "variant_strata")):
        for stratum, r in p[key].items():
            rejected = ", ".join(f"{k[9:]} {v}" for k, v in r.items() if k.startswith("rejected_"))
            table.add_row(kind, stratum, str(r["planned"]), str(r["usable"]), rejected or "0")
    out.print(table)


@app.command()
def build(
    store: StorePath,
    part: Annotated[str, typer.Option(help="all, baselines or variants.")] = "all",
    shard: Annotated[
        str | None, typer.Option(help="K/N: only every N-th row shard from K.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="Worker processes on this machine (>1: a dask LocalCluster)."),
    ] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address of a dask.distributed scheduler (tcp://host:8786)."),
    ] = None,
    fasta: Annotated[Path | None, typer.Option(help="FASTA, if moved since planning.")] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe to check against the store.")] = None,
    weights: Annotated[str | None, typer.Option(help="Weights path, if moved.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Sequences per pipeline step (the model's own batch shape is fixed by the recipe)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run the oracle over every pending plan row (resumes; does nothing when done)."""
    from .build import build as run_build
    from .recipes import load_recipe

    r = _run(load_recipe, recipe) if recipe else None
    report = _run(
        run_build,
        store,
        part=part,
        shard=_parse_shard(shard),
        workers=workers,
        scheduler=scheduler,
        fasta=fasta,
        recipe=r,
        weights=weights,
        device=device,
        batch_size=batch_size,
        progress=progress,
    )
    rows = sum(report.rows_built.values())
    one_process = workers <= 1 and scheduler is None
    share = 1 - report.oracle_seconds / report.seconds if report.seconds and one_process else None
    out.print(
        f"built {rows:,} rows ({report.rows_built}) in {report.tasks} tasks, "
        f"{report.oracle_calls} oracle calls, {report.seconds:.1f} s"
        + (f", {share:.0%} of the time outside the oracle" if share is not None and rows else "")
    )


@app.command()
def reduce(
    store: StorePath,
    layers: Annotated[str | None, typer.Option(help="Comma list of effect,summary,perbin.")] = None,
    scheduler: Annotated[
        str,
        typer.Option(
            help="Dask scheduler: threads, processes, sync, or a dask.distributed "
            "scheduler's address (tcp://host:8786)."
        ),
    ] = "threads",
    workers: Annotated[int | None, typer.Option(help="Dask workers.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Compute exact per-track CDF grids of everything built (only stale blocks)."""
    import contextlib

    from .reduce import reduce as run_reduce

    chosen = tuple(x.strip() for x in layers.split(",")) if layers else None
    with contextlib.ExitStack() as stack:
        target: Any = scheduler
        if "://" in scheduler:
            from distributed import Client

            from .cluster import dashboard_link

            target = stack.enter_context(Client(scheduler))  # type: ignore[no-untyped-call]
            link = dashboard_link(target)
            if link:
                console.print(f"dask dashboard: {link}", highlight=False)
        report = _run(
            run_reduce,
            store,
            layers=chosen,
            scheduler=target,
            num_workers=workers,
            progress=progress,
        )
    out.print(
        f"reduced {report.values_reduced:,} values; blocks recomputed "
        f"{report.blocks_computed} of {report.blocks_total}; {report.seconds:.1f} s"
    )


@app.command()
def export(
    store: StorePath,
    out_path: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Directory, .npz path or object-store URL (default: chorus's backgrounds dir).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Write a non-hg38 background into chorus's backgrounds dir anyway."),
    ] = False,
) -> None:
    """Write the validated {oracle}_pertrack.npz that chorus loads (atomically)."""
    from .export import export_report

    report = _run(export_report, store, out=out_path, force=force)
    for line in report.messages:
        out.print(line, highlight=False, soft_wrap=True)  # paths whole, to copy


@app.command()
def status(
    store: StorePath,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-stage completion, counts per stratum, disk use, claims."""
    from .status import status as get_status

    st = _run(get_status, store)
    if as_json:
        out.print_json(json.dumps(st))
        return
    out.print(
        f"[bold]{st['store']}[/]  oracle {st['oracle']} "
        f"({'pinned' if st['oracle_pinned'] else 'not yet built'}), genome {st['genome']}, "
        f"{st['tracks']} tracks {st['layers']}"
    )
    t = Table("stage", "part", "done", "of", "complete")
    for group, b in st["build"].items():
        pct = b["cells_done"] / b["cells"] if b["cells"] else 1.0
        t.add_row("build", group, f"{b['shards_done']} shards", f"{b['shards']}", f"{pct:.1%}")
    for layer, r in st["reductions"].items():
        done = r["blocks"] - r["stale"]
        t.add_row(
            "reduce",
            layer,
            f"{done} blocks",
            f"{r['blocks']}",
            f"{done / r['blocks']:.1%}" if r["blocks"] else "-",
        )
    out.print(t)
    strata = Table("set", "stratum", "planned", "usable")
    for kind in ("positions", "variants"):
        for stratum, r in st["plan"][kind].items():
            strata.add_row(kind, stratum, str(r["planned"]), str(r["usable"]))
    out.print(strata)
    d = st["disk"]
    out.print(
        f"disk: {d['bytes'] / 1e6:,.1f} MB in {d['files']:,} files"
        + (f", {d['partial_files']} leftover *.partial files" if d["partial_files"] else "")
    )
    for c in st["claims"]:
        state = {True: "live", False: "stale", None: "unknown (other host)"}[c["alive"]]
        out.print(f"claim {c['name']}: {c['holder']} [{state}]")


@app.command("add-tracks")
def add_tracks(
    store: StorePath,
    recipe: Annotated[str, typer.Option(help="Recipe whose track table extends the store's.")],
) -> None:
    """Append new tracks; the next build computes only them."""
    from .plan import add_tracks as run

    n = _run(run, store, recipe)
    out.print(f"added {n} track(s); run `chorus-store build {store}`")


def _add_rows(store: str, table: Path, group: str, fasta: Path | None) -> None:
    from .plan import add_rows, read_rows_table
    from .sampling import POSITION_FIELDS, VARIANT_FIELDS

    fields = POSITION_FIELDS if group == "baselines" else VARIANT_FIELDS
    rows = _run(read_rows_table, table, fields)
    n = _run(add_rows, store, group, rows, fasta=fasta)
    out.print(f"added {n} row(s) to {group}; run `chorus-store build {store}`")


@app.command("add-positions")
def add_positions(
    store: StorePath,
    table: Annotated[Path, typer.Argument(help="TSV with chrom, pos (1-based), stratum.")],
    fasta: Annotated[Path | None, typer.Option(help="FASTA, if moved since planning.")] = None,
) -> None:
    """Append baseline positions; the next build computes only them."""
    _add_rows(store, table, "baselines", fasta)


@app.command("add-variants")
def add_variants(
    store: StorePath,
    table: Annotated[Path, typer.Argument(help="TSV with chrom, pos, ref, alt, stratum.")],
    fasta: Annotated[Path | None, typer.Option(help="FASTA, if moved since planning.")] = None,
) -> None:
    """Append SNPs; the next build computes only them."""
    _add_rows(store, table, "variants", fasta)


@app.command()
def verify(
    store: StorePath,
    repair: Annotated[bool, typer.Option(help="Mark damaged shards for rebuilding.")] = False,
) -> None:
    """Read every chunk; report (and with --repair, reset) those failing their checksum."""
    from .status import verify as run

    report = _run(run, store, repair=repair)
    bad = report["damaged_shards"] + report["damaged_reductions"] + report["damaged_plan"]
    if not bad:
        out.print("every chunk passed its checksum")
        return
    for line in bad:
        out.print(f"damaged: {line}")
    if report["repaired"]:
        out.print(f"marked for rebuilding; run `chorus-store build {store}` then reduce")
    if report["damaged_plan"]:
        out.print("the plan/track table is damaged: re-plan into a new store")
    raise typer.Exit(1)


@app.command()
def unlock(
    store: StorePath,
    force: Annotated[
        bool, typer.Option(help="Also clear claims of other machines (make sure they are stopped).")
    ] = False,
) -> None:
    """Clear claims left by killed processes."""
    from .status import unlock as run

    cleared = _run(run, store, force=force)
    out.print("\n".join(f"cleared {c}" for c in cleared) or "no stale claims")


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Output directory.")] = Path("demo-out"),
    workers: Annotated[int, typer.Option(help="Build worker processes.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """plan → build → reduce → export on the bundled synthetic genome and demo model."""
    from .demo import run_demo

    result = _run(run_demo, directory, workers=workers, progress=progress)
    rows = sum(result.build.rows_built.values())
    out.print(
        f"store {result.store}\nnpz   {result.npz}\n"
        f"built {rows:,} rows in {result.build.seconds:.1f} s, reduced in "
        f"{result.reduce.seconds:.1f} s"
    )


@app.command()
def recipes() -> None:
    """List the shipped build recipes."""
    from .recipes import list_recipes

    out.print("\n".join(list_recipes()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
