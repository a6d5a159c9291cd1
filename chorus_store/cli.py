"""``chorus-store``: the command line, a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chorus_store import __version__
from chorus_store.errors import ChorusStoreError, os_reason

app = typer.Typer(
    name="chorus-store",
    help="Resumable, exact per-track background nulls for sequence-to-function oracles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
log = logging.getLogger(__name__)

StorePath = Annotated[
    str,
    typer.Argument(
        help="The Zarr store: a directory, or an object-store URL (s3://bucket/x.zarr)."
    ),
]


def _say(label: str, name: str, message: str) -> None:
    """One line on stderr: no markup read from the message, no wrapping, no newlines."""
    text = " ".join(message.split())
    line = Text.assemble((label, "bold red"), f" {name}{': ' if name else ''}{text}")
    console.print(line, soft_wrap=True)


@contextlib.contextmanager
def _signals() -> Iterator[list[int]]:
    """While a command runs, SIGTERM unwinds it like SIGINT (a KeyboardInterrupt), so both
    release claims and let the writer finish what it holds; yields the signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(fn: Any, *args: Any, on_interrupt: Callable[[], str] | None = None, **kwargs: Any) -> Any:
    """Call the API; print a chorus-store error as one clear line and exit 2.

    An interrupt (SIGINT, SIGTERM) prints one line, ``on_interrupt()``: what was kept and
    how to resume, and exits 128 + the signal's number.
    """
    try:
        with _signals() as received:
            return fn(*args, **kwargs)
    except ChorusStoreError as exc:
        _say("error:", type(exc).__name__, str(exc))
        raise typer.Exit(2) from None
    except OSError as exc:
        # not anticipated where it happened, but still the machine's state, not a bug:
        # one line as well (-v logs where it came from)
        log.debug("unwrapped OSError", exc_info=True)
        _say("error:", type(exc).__name__, f"{os_reason(exc)}: {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        signum = received[0] if received else int(signal.SIGINT)
        what = "nothing half-written is kept"
        if on_interrupt is not None:
            with contextlib.suppress(Exception):
                what = on_interrupt()
        _say(f"interrupted ({signal.Signals(signum).name}):", "", what)
        raise typer.Exit(128 + signum) from None


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
    from chorus_store.plan.stage import plan_store

    report = _run(
        plan_store,
        store,
        recipe,
        on_interrupt=lambda: (
            "a plan is written whole or not at all, so nothing was kept; run the same "
            "`chorus-store plan` again"
        ),
        fasta=fasta,
        reference_set=reference_set,
        positions_set=positions_set,
        variants_set=variants_set,
        ccre=ccre,
        gtf=gtf,
        dhs=dhs,
        assembly=assembly,
    )
    verb = "planned" if report.created else "already planned (unchanged)"
    table = Table("set", "stratum", "planned", "usable", "rejected", title=f"{verb}: {report.url}")
    for kind, stratum, planned, usable, rejected in report.rows():
        why = ", ".join(f"{reason} {n}" for reason, n in rejected.items())
        table.add_row(kind, stratum, str(planned), str(usable), why or "0")
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
    from chorus_store.build.stage import build as run_build
    from chorus_store.recipes import load_recipe

    r = _run(load_recipe, recipe) if recipe else None
    resume = " ".join(
        ["chorus-store build", store]
        + ([f"--part {part}"] if part != "all" else [])
        + ([f"--shard {shard}"] if shard else [])
    )
    report = _run(
        run_build,
        store,
        on_interrupt=lambda: f"{_kept_shards(store)}; resume with: {resume}",
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


def _kept_shards(store: str) -> str:
    """What an interrupted build left: its finished row shards (every one is whole)."""
    from chorus_store.store.core import ChorusStore
    from chorus_store.store.progress import pending_summary

    summary = pending_summary(ChorusStore.open(store))
    done = sum(g["shards_done"] for g in summary.values())
    total = sum(g["shards"] for g in summary.values())
    return f"{done} of {total} row shards are built and kept"


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
    from chorus_store.reduce import reduce as run_reduce

    chosen = tuple(x.strip() for x in layers.split(",")) if layers else None
    report = _run(
        run_reduce,
        store,
        on_interrupt=lambda: (
            f"every finished block is kept; resume with: chorus-store reduce {store}"
        ),
        layers=chosen,
        scheduler=scheduler,
        workers=workers,
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
    from chorus_store.export import export as run_export

    report = _run(
        run_export,
        store,
        out=out_path,
        force=force,
        on_interrupt=lambda: (
            f"nothing was replaced (a previous NPZ is intact); run `chorus-store export "
            f"{store}` again"
        ),
    )
    for line in report.messages:
        out.print(line, highlight=False, soft_wrap=True)  # paths whole, to copy


@app.command()
def status(
    store: StorePath,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-stage completion, counts per stratum, disk use, claims."""
    from chorus_store.inspect.status import status as get_status

    st = _run(get_status, store).to_dict()
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
    from chorus_store.plan.stage import add_tracks as run

    n = _run(run, store, recipe)
    out.print(f"added {n} track(s); run `chorus-store build {store}`")


def _add_rows(
    store: str,
    table: Path,
    fields: tuple[str, ...],
    add: Callable[..., int],
    group: str,
    fasta: Path | None,
) -> None:
    from chorus_store.plan.stage import read_rows_table

    rows = _run(read_rows_table, table, fields)
    n = _run(add, store, rows, fasta=fasta)
    out.print(f"added {n} row(s) to {group}; run `chorus-store build {store}`")


@app.command("add-positions")
def add_positions(
    store: StorePath,
    table: Annotated[Path, typer.Argument(help="TSV with chrom, pos (1-based), stratum.")],
    fasta: Annotated[Path | None, typer.Option(help="FASTA, if moved since planning.")] = None,
) -> None:
    """Append baseline positions; the next build computes only them."""
    from chorus_store.plan.sampling import POSITION_FIELDS
    from chorus_store.plan.stage import add_positions

    _add_rows(store, table, POSITION_FIELDS, add_positions, "baselines", fasta)


@app.command("add-variants")
def add_variants(
    store: StorePath,
    table: Annotated[Path, typer.Argument(help="TSV with chrom, pos, ref, alt, stratum.")],
    fasta: Annotated[Path | None, typer.Option(help="FASTA, if moved since planning.")] = None,
) -> None:
    """Append SNPs; the next build computes only them."""
    from chorus_store.plan.sampling import VARIANT_FIELDS
    from chorus_store.plan.stage import add_variants

    _add_rows(store, table, VARIANT_FIELDS, add_variants, "variants", fasta)


@app.command()
def verify(
    store: StorePath,
    repair: Annotated[
        bool, typer.Option(help="Mark damaged data for rebuilding; rewrite damaged metadata.")
    ] = False,
) -> None:
    """Check every chunk, done mark and metadata document; --repair mends what it can."""
    from chorus_store.inspect.status import verify as run

    report = _run(run, store, repair=repair)
    bad = report.damaged()
    if not bad:
        out.print("every metadata document, chunk and built shard passed")
        return
    for line in bad:
        out.print(line, highlight=False)
    if report.repaired:
        out.print(
            f"repaired: metadata rewritten, damaged data marked for rebuilding; run "
            f"`chorus-store build {store}` then `chorus-store reduce {store}`",
            highlight=False,
        )
    elif not repair:
        out.print(f"run `chorus-store verify {store} --repair` to mend it", highlight=False)
    for line in report.lost:
        out.print(f"lost: {line}", highlight=False)
    raise typer.Exit(1)


@app.command()
def unlock(
    store: StorePath,
    force: Annotated[
        bool, typer.Option(help="Also clear claims of other machines (make sure they are stopped).")
    ] = False,
) -> None:
    """Clear claims left by killed processes."""
    from chorus_store.store.upkeep import unlock as run

    cleared = _run(run, store, force=force)
    out.print("\n".join(f"cleared {c}" for c in cleared) or "no stale claims")


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Output directory.")] = Path("demo-out"),
    workers: Annotated[int, typer.Option(help="Build worker processes.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """plan → build → reduce → export on the bundled synthetic genome and demo model."""
    from chorus_store.demo import run_demo

    result = _run(
        run_demo,
        directory,
        workers=workers,
        progress=progress,
        on_interrupt=lambda: (
            f"finished work in {directory} is kept; resume with: chorus-store demo {directory}"
        ),
    )
    rows = sum(result.build.rows_built.values())
    out.print(
        f"store {result.store}\nnpz   {result.npz}\n"
        f"built {rows:,} rows in {result.build.seconds:.1f} s, reduced in "
        f"{result.reduce.seconds:.1f} s"
    )


@app.command()
def recipes() -> None:
    """List the shipped build recipes."""
    from chorus_store.recipes import list_recipes

    out.print("\n".join(list_recipes()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
