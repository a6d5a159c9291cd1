"""``chorus-store``: the command line, a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chorus_store import __version__
from chorus_store.errors import ChorusStoreError, os_reason
from chorus_store.progress_log import configure_logging, interval_s

app = typer.Typer(
    name="chorus-store",
    help="Resumable, exact per-track background nulls for sequence-to-function oracles.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
log = logging.getLogger("chorus_store.cli")  # named, not __name__: `python -m` makes that __main__

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

    An interrupt (SIGINT, SIGTERM) prints one line: ``on_interrupt()`` (what was kept) and
    the command line that resumes (this one, :func:`_command_line`), and exits 128 + the
    signal's number (130, 143). Each line is also logged (a ``--log-file`` keeps it).
    """
    try:
        with _signals() as received:
            return fn(*args, **kwargs)
    except ChorusStoreError as exc:
        _fail("error:", type(exc).__name__, str(exc))
        raise typer.Exit(2) from None
    except OSError as exc:
        # not anticipated where it happened, but still the machine's state, not a bug:
        # one line as well (-v logs where it came from)
        log.debug("unwrapped OSError", exc_info=True)
        _fail("error:", type(exc).__name__, f"{os_reason(exc)}: {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        signum = received[0] if received else int(signal.SIGINT)
        what = "nothing half-written is kept"
        if on_interrupt is not None:
            with contextlib.suppress(Exception):
                what = f"{on_interrupt()}; resume with: {_command_line()}"
        _fail(f"interrupted ({signal.Signals(signum).name}):", "", what)
        raise typer.Exit(128 + signum) from None


def _fail(label: str, name: str, message: str) -> None:
    """:func:`_say`, and the same line in the log (not twice on the console)."""
    _say(label, name, message)
    log.error("%s %s%s%s", label, name, ": " if name else "", message, extra={"printed": True})


def _done(line: str) -> None:
    """A stage's summary line: printed on stdout, and in the log file."""
    out.print(line, highlight=False, soft_wrap=True)
    log.info(line, extra={"printed": True})


def _command_line() -> str:
    """The command line running now, quoted for a shell: ``chorus-store`` and the words
    it was given (``sys.argv``; called in-process, the words click parsed)."""
    program = Path(sys.argv[0] if sys.argv else "")
    # the entry point, or `python -m chorus_store.cli` (argv[0] is then this file)
    if program.name == "chorus-store" or program.resolve() == Path(__file__).resolve():
        return shlex.join(["chorus-store", *sys.argv[1:]])
    return shlex.join(["chorus-store", *_parsed_words(_current_context())])


def _current_context() -> Any:
    """The click context of the running command (typer carries its own copy of click,
    with its own context stack; older typer versions use click's)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - a typer that does not vendor click
        from click import get_current_context  # type: ignore[no-redef]
    return get_current_context(silent=True)


def _parsed_words(ctx: Any) -> list[str]:
    """The words of the parameters given on the command line, root command first."""
    if ctx is None:
        return []
    words = _parsed_words(ctx.parent)
    if ctx.parent is not None and ctx.info_name:
        words.append(ctx.info_name)
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name == "COMMANDLINE":
            words += _param_words(param, ctx.params.get(param.name))
    return words


def _param_words(param: Any, value: Any) -> list[str]:
    values = value if isinstance(value, list | tuple) else [value]
    texts = [str(getattr(v, "value", v)) for v in values]  # an enum by its value
    if param.param_type_name != "option":
        return texts
    name = max(param.opts, key=len)
    if param.is_flag and param.secondary_opts and not value:
        return [max(param.secondary_opts, key=len)]
    if param.is_flag:
        return [name]
    return [w for text in texts for w in (name, text)]


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
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log each stage's steps on stderr (INFO).")
    ] = False,
    log_file: Annotated[
        Path | None,
        typer.Option(
            help="Append the log (INFO and above, timestamped, with or without -v) to this "
            "file: a batch job's record, with a progress line every $CHORUS_STORE_PROGRESS_S "
            "seconds (default 60)."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Progress shows as a bar on a terminal, and as a line every $CHORUS_STORE_PROGRESS_S
    seconds (default 60) in a log (nohup, SLURM, a pipe)."""
    try:
        interval_s()  # a bad $CHORUS_STORE_PROGRESS_S is refused before any work
        ctx.call_on_close(configure_logging(verbose=verbose, log_file=log_file))
    except ChorusStoreError as exc:
        _say("error:", type(exc).__name__, str(exc))
        raise typer.Exit(2) from None
    log.info("chorus-store %s, pid %d: %s", __version__, os.getpid(), _command_line())


def _refuse(option: str, value: str, known: list[str]) -> None:
    """A bad value of an enumerated option: one line, as every other refusal, exit 2."""
    _fail("error:", "UsageError", f"{option} {value!r} is not one of {', '.join(known)}")
    raise typer.Exit(2)


def _choice(option: str, known: list[str], *, comma: bool = False) -> Any:
    """A parser-time check of an enumerated option (a comma list when ``comma``)."""

    def check(value: str | list[str] | None) -> Any:
        values = value if isinstance(value, list) else [value] if value else []
        for item in values:
            for part in item.split(",") if comma else [item]:
                if part.strip() not in known:
                    _refuse(option, part.strip(), known)
        return value

    return check


PARTS = ["all", "baselines", "variants"]
LAYERS = ["effect", "summary", "perbin"]


def _track_layers() -> list[str]:
    from chorus_store.genome.tracks import LAYER_CONFIGS

    return sorted(LAYER_CONFIGS)


def _chosen_tracks(recipe: str, tracks: str | None, layers: list[str]) -> Any:
    """The recipe over the tracks ``--tracks`` and ``--layer`` keep."""
    from chorus_store.errors import InputFileError
    from chorus_store.recipes import load_recipe

    ids: list[str] | None = None
    if tracks and tracks.startswith("@"):
        path = Path(tracks[1:]).expanduser()
        if not path.is_file():
            raise InputFileError(f"--tracks {tracks}: {path} is not a file of track ids")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif tracks:
        ids = [t.strip() for t in tracks.split(",") if t.strip()]
    return load_recipe(recipe).select_tracks(ids, layers or None)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device(value: str) -> str:
    """``--device``: a device name, checked before anything loads (whether this machine
    has it is the adapter's check, when the model loads)."""
    if not _DEVICE.fullmatch(value):
        _refuse("--device", value, ["auto", "cpu", "cuda", "cuda:N", "mps"])
    return value


DeviceOption = typer.Option(
    help="auto, cpu, cuda, cuda:1, mps",
    callback=_device,
    autocompletion=lambda: ["auto", "cpu", "cuda", "mps"],
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
    dry_run: Annotated[
        bool,
        typer.Option(help="Print what the plan and its build take (`estimate`); write nothing."),
    ] = False,
    tracks: Annotated[
        str | None,
        typer.Option(help="Only these track ids (comma list, or @file with one per line)."),
    ] = None,
    layer: Annotated[
        list[str] | None,
        typer.Option(
            help="Only tracks of this layer (repeatable): tss, chromatin_accessibility, ...",
            callback=lambda v: _choice("--layer", _track_layers())(v),
            autocompletion=_track_layers,
        ),
    ] = None,
) -> None:
    """Write the sampling plan into a new store (or confirm it matches an existing one)."""
    from chorus_store.plan.stage import plan_store, summary_line

    if tracks or layer:
        recipe = _run(_chosen_tracks, recipe, tracks, layer or [])

    if dry_run:
        from chorus_store.plan.estimate import estimate as run_estimate

        report = _run(
            run_estimate,
            recipe,
            fasta=fasta,
            reference_set=reference_set,
            positions_set=positions_set,
            variants_set=variants_set,
            ccre=ccre,
            gtf=gtf,
            dhs=dhs,
            assembly=assembly,
            measure=False,
        )
        _print_estimate(report)
        return
    t_start = time.perf_counter()
    report = _run(
        plan_store,
        store,
        recipe,
        on_interrupt=lambda: "a plan is written whole or not at all, so nothing was kept",
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
    _done(summary_line(report, time.perf_counter() - t_start))


@app.command()
def estimate(
    recipe: Annotated[str, typer.Argument(help="Recipe name (builders/<name>) or recipe.toml.")],
    fasta: Annotated[
        Path | None, typer.Option(help="Reference FASTA: the plan is computed, rows are exact.")
    ] = None,
    reference_set: Annotated[
        Path | None, typer.Option(help="chorus reference-positions NPZ.")
    ] = None,
    positions_set: Annotated[str | None, typer.Option(help="Region set in it.")] = None,
    variants_set: Annotated[str | None, typer.Option(help="SNP set in it.")] = None,
    ccre: Annotated[Path | None, typer.Option(help="SCREEN cCRE BED (generated plan).")] = None,
    gtf: Annotated[
        Path | None, typer.Option(help="GENCODE GTF (generated plan; RNA tracks).")
    ] = None,
    dhs: Annotated[Path | None, typer.Option(help="Meuleman DHS index.")] = None,
    assembly: Annotated[
        str | None, typer.Option(help="Name of a genome chorus does not know by chr1 length.")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Rows per second (as a build's progress bar shows): time = rows / rate."),
    ] = None,
    measure: Annotated[
        bool, typer.Option(help="Time a forward pass of the model (when --rate is not given).")
    ] = True,
    weights: Annotated[str | None, typer.Option(help="Weights path for the timed pass.")] = None,
    device: Annotated[str, DeviceOption] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Before a long build: its rows, tasks, store and NPZ sizes and time; writes nothing."""
    from chorus_store.plan.estimate import estimate as run_estimate

    report = _run(
        run_estimate,
        recipe,
        fasta=fasta,
        reference_set=reference_set,
        positions_set=positions_set,
        variants_set=variants_set,
        ccre=ccre,
        gtf=gtf,
        dhs=dhs,
        assembly=assembly,
        rate=rate,
        measure=measure,
        weights=weights,
        device=device,
    )
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    _print_estimate(report)


def _size(n: int | None) -> str:
    """Bytes in decimal units (GB = 10⁹ bytes, as disks are sold)."""
    if n is None:
        return "unknown"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 60:,.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _print_estimate(report: Any) -> None:
    """An :class:`~chorus_store.reports.EstimateReport` as tables and lines."""
    rows = Table("set", "stratum", "rows", "usable", title=f"{report.recipe}: {report.rows_basis}")
    for kind in ("positions", "variants"):
        for stratum, r in getattr(report, kind).items():
            usable = f"{r['usable']:,}" if "usable" in r else "?"
            rows.add_row(kind, stratum, f"{r['rows']:,}", usable)
    out.print(rows)
    if report.layers:
        out.print(_layers_table(report.layers, title=f"{report.tracks:,} tracks"))
    else:
        out.print(f"{report.tracks:,} tracks (from {report.tracks_basis})", highlight=False)
    tasks, shards = report.tasks, report.shards
    out.print(
        f"build: {sum(tasks.values()):,} tasks ({_per_group(tasks)}), "
        f"{sum(shards.values()):,} claimed shards ({_per_group(shards)})",
        highlight=False,
        soft_wrap=True,
    )
    _print_arrays(report)
    out.print(
        f"NPZ: ≈ {_size(report.npz_bytes)} ({', '.join(report.npz_layers)}: "
        f"{_size(report.npz_grid_bytes)} of float32 grids, stored as they are)",
        highlight=False,
        soft_wrap=True,
    )
    _print_build_time(report.build)
    for note in report.notes:
        out.print(f"note: {note}", highlight=False, soft_wrap=True)


def _per_group(counts: dict[str, int]) -> str:
    return ", ".join(f"{group} {n:,}" for group, n in counts.items())


def _print_arrays(report: Any) -> None:
    table = Table(title="store arrays: raw, and expected on disk", box=box.SIMPLE)
    table.add_column("array", no_wrap=True)
    for name in ("shape", "raw", "on disk", "filled"):
        table.add_column(name, justify="right", no_wrap=True)
    other_raw = other_expected = 0
    for a in report.arrays:
        if a.role not in ("data", "gene_data", "reduction") or a.dtype != "float32":
            other_raw += a.raw_bytes or 0
            other_expected += a.expected_bytes or a.raw_bytes or 0
            continue
        shape = "×".join(f"{n:,}" for n in a.shape)
        table.add_row(
            a.key, shape, _size(a.raw_bytes), _size(a.expected_bytes), f"{a.filled:.0%}"
        )
    table.add_row("other numeric arrays", "", _size(other_raw), _size(other_expected), "")
    table.add_row("total", "", _size(report.raw_bytes), _size(report.expected_bytes), "")
    out.print(table)
    out.print(
        f"on disk: {report.compression_basis}; filled: the share of cells that will hold "
        f"values (the rest stays NaN)",
        highlight=False,
        soft_wrap=True,
    )


def _print_build_time(b: Any) -> None:
    what = f"{b.rows:,} rows, {b.sequences:,} forward sequences"
    if b.source == "unknown":
        out.print(f"build time: unknown ({what}): {b.note}", highlight=False, soft_wrap=True)
        return
    how = (
        f"measured {b.sequences_per_s:,.2f} sequences/s on {b.device} "
        f"({b.batches_timed} timed batches of {b.batch_size} after one untimed; model loaded "
        f"in {b.load_seconds:.1f} s)"
        if b.source == "measured"
        else f"at the given {b.rows_per_s:,.2f} rows/s"
    )
    out.print(
        f"build time: ≈ {_duration(b.seconds)} for {what}, {how}"
        + (f"; {b.note}" if b.note else ""),
        highlight=False,
        soft_wrap=True,
    )


def _layers_table(layers: dict[str, int], *, title: str) -> Table:
    table = Table("layer", "tracks", title=title)
    for layer, n in layers.items():
        table.add_row(layer, f"{n:,}")
    return table


@app.command()
def build(
    store: StorePath,
    part: Annotated[
        str,
        typer.Option(
            help="all, baselines or variants.",
            callback=_choice("--part", PARTS),
            autocompletion=lambda: PARTS,
        ),
    ] = "all",
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
    device: Annotated[str, DeviceOption] = "auto",
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
    from chorus_store.build.stage import summary_line
    from chorus_store.recipes import load_recipe

    r = _run(load_recipe, recipe) if recipe else None
    report = _run(
        run_build,
        store,
        on_interrupt=lambda: _kept_shards(store),
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
    _done(summary_line(report, store, on_cluster=workers > 1 or scheduler is not None))


def _kept_shards(store: str) -> str:
    """What an interrupted build left: its finished row shards (every one is whole)."""
    from chorus_store.store.core import ChorusStore
    from chorus_store.store.progress import pending_summary

    summary = pending_summary(ChorusStore.open(store))
    done = sum(g["shards_done"] for g in summary.values())
    total = sum(g["shards"] for g in summary.values())
    return f"{done:,} of {total:,} row shards are built and kept; nothing written is lost"


@app.command()
def reduce(
    store: StorePath,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Comma list of effect, summary, perbin.",
            callback=_choice("--layers", LAYERS, comma=True),
            autocompletion=lambda: LAYERS,
        ),
    ] = None,
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
    from chorus_store.reduce import summary_line

    chosen = tuple(x.strip() for x in layers.split(",")) if layers else None
    report = _run(
        run_reduce,
        store,
        on_interrupt=lambda: _kept_blocks(store),
        layers=chosen,
        scheduler=scheduler,
        workers=workers,
        progress=progress,
    )
    _done(summary_line(report, store))


def _kept_blocks(store: str) -> str:
    """What an interrupted reduce left: its finished blocks (each written whole,
    fingerprint last)."""
    from chorus_store.reduce import active_layers, layer_fingerprints, stale_blocks
    from chorus_store.store.core import ChorusStore

    opened = ChorusStore.open(store)
    total = stale = 0
    for layer in active_layers(opened):
        want = layer_fingerprints(opened, layer)
        total += len(want)
        stale += len(stale_blocks(opened, layer, want))
    return f"{total - stale:,} of {total:,} grid blocks are current and kept"


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

    t_start = time.perf_counter()
    report = _run(
        run_export,
        store,
        out=out_path,
        force=force,
        on_interrupt=lambda: "nothing was replaced (a previous NPZ is intact)",
    )
    first, *more = report.messages
    _done(f"{first} in {time.perf_counter() - t_start:.1f} s")  # paths whole, to copy
    for line in more:
        out.print(line, highlight=False, soft_wrap=True)


@app.command()
def status(
    store: StorePath,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    claims: Annotated[
        bool, typer.Option("--claims", help="List every claimed shard, not one line per run.")
    ] = False,
) -> None:
    """Per-stage completion, counts per stratum, disk use, the runs holding claims."""
    from chorus_store.inspect.status import status as get_status

    st = _run(get_status, store).to_dict()
    if as_json:
        out.print_json(json.dumps(st))
        return
    out.print(
        f"[bold]{st['store']}[/]  oracle {st['oracle']} "
        f"({'pinned' if st['oracle_pinned'] else 'not yet built'}), genome {st['genome']}"
    )
    out.print(_layers_table(st["layers"], title=f"{st['tracks']:,} tracks"))
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
    _print_claims(st, every_shard=claims)


_CLAIM_STATE = {True: "live", False: "stale", None: "unknown (other host)"}


def _print_claims(st: dict[str, Any], *, every_shard: bool) -> None:
    """One line per run holding claims; with ``every_shard``, every claim as well."""
    if every_shard:
        for c in st["claims"]:
            out.print(
                f"claim {c['name']}: {c['holder']}, {_CLAIM_STATE[c['alive']]}", highlight=False
            )
    for run in st["runs"]:
        shards = run["shards"]
        held = [f"{sum(shards.values()):,} shards ({_per_group(shards)})"] if shards else []
        held += run["holds"]
        out.print(
            Text.assemble(
                f"run: pid {run['pid']} on {run['host']}, since {run['since']}, "
                f"{_CLAIM_STATE[run['alive']]}, holds {', '.join(held)}: ",
                run["command"],
            ),
            soft_wrap=True,  # the command whole, to copy
        )
    if st["runs"] and not every_shard:
        out.print("(--claims lists every claimed shard)")


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
        on_interrupt=lambda: f"finished work in {directory} is kept",
    )
    rows = sum(result.build.rows_built.values())
    out.print(f"store {result.store}\nnpz   {result.npz}")
    _done(
        f"demo: built {rows:,} rows in {result.build.seconds:.1f} s, reduced in "
        f"{result.reduce.seconds:.1f} s; wrote {result.npz}"
    )


@app.command()
def report(
    source: Annotated[
        str, typer.Argument(help="The background: an {oracle}_pertrack.npz, or a reduced store.")
    ],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    tracks_per_layer: Annotated[
        int, typer.Option(min=0, help="Tracks drawn per layer for the CDF plots.")
    ] = 12,
    seed: Annotated[int, typer.Option(help="Seed of that draw.")] = 0,
    compare_with: Annotated[
        str | None,
        typer.Option("--compare", help="A second background (B) to compare SOURCE (A) with."),
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Tracks that moved most, per layer.")] = 10,
) -> None:
    """One self-contained HTML page: CDFs, per-track quantiles, strata, flagged tracks."""
    from chorus_store.inspect.report import report as write_report

    result = _run(
        write_report,
        source,
        out=out_path,
        tracks_per_layer=tracks_per_layer,
        seed=seed,
        compare=compare_with,
        top=top,
    )
    for line in result.messages:
        out.print(line, highlight=False, soft_wrap=True)


class Gate(StrEnum):
    """What ``compare --fail-if`` checks (chorus_store.inspect.compare.GATES)."""

    body_moves = "body-moves"
    ceiling_falls = "ceiling-falls"


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Background A (the reference): an NPZ or a store.")],
    b: Annotated[str, typer.Argument(help="Background B, compared against A.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (schema_version 1).")] = False,
    fail_if: Annotated[
        list[Gate] | None,
        typer.Option("--fail-if", help="Exit 1 when this gate fails (repeatable)."),
    ] = None,
    body_ratio: Annotated[
        float,
        typer.Option(min=1.0, help="body-moves: median p50 ratio must be in [1/R, R]."),
    ] = 1.25,
    ceiling_ratio: Annotated[
        float,
        typer.Option(min=1.0, help="ceiling-falls: median p99 and max ratios must be >= 1/R."),
    ] = 1.25,
    ceiling_min_tracks: Annotated[
        int | None,
        typer.Option(help="Fewer tracks: a fallen max only advises (default 25, chorus's)."),
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Tracks that moved most, per layer.")] = 10,
) -> None:
    """Per layer, medians of per-track ratios B/A (p50, p90, p99, max) and KS distances."""
    from chorus_store.inspect.compare import compare as run_compare

    extra: dict[str, Any] = {}
    if ceiling_min_tracks is not None:
        extra["ceiling_min_tracks"] = ceiling_min_tracks
    result = _run(
        run_compare,
        a,
        b,
        fail_if=[g.value for g in fail_if or []],
        body_ratio=body_ratio,
        ceiling_ratio=ceiling_ratio,
        **extra,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(top=top), indent=1))
    else:
        _print_comparison(result, top)
    for finding in result.failures:
        _say("failed:", finding.gate, finding.message)
    if result.failures:
        raise typer.Exit(1)


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"  # None, NaN: no value


def _print_comparison(result: Any, top: int) -> None:
    """The terminal view of a CompareReport."""
    t = Table(
        "layer", "tracks", "p50", "p90", "p99", "max", "higher ceiling", "KS median", "KS max",
        title=f"B/A, medians of per-track ratios\nA {result.a}\nB {result.b}",
    )
    for layer, lc in result.layers.items():
        t.add_row(
            layer,
            str(len(lc.track_ids)),
            *(_fmt_ratio(v) for v in lc.median_ratio.values()),
            _fmt_ratio(lc.higher_ceiling_fraction),
            _fmt_ratio(lc.ks_median),
            _fmt_ratio(lc.ks_max),
        )
    out.print(t)
    for lc in result.layers.values():
        _print_moved(lc, top)
    for label, items in (
        ("tracks only in A", result.tracks_only_in_a),
        ("tracks only in B", result.tracks_only_in_b),
        ("layers only in A", result.layers_only_in_a),
        ("layers only in B", result.layers_only_in_b),
    ):
        if items:
            out.print(f"{label} ({len(items)}): {', '.join(items)}", highlight=False)
    if result.track_order_changed:
        out.print("the common tracks are in another order (queries look tracks up by id)")
    for finding in result.gates:
        if finding.outcome != "fail":
            out.print(f"{finding.outcome}: {finding.message}", highlight=False, soft_wrap=True)


def _print_moved(lc: Any, top: int) -> None:
    """One layer's tracks that moved most, and those left out for zero counts."""
    moved = [i for i in lc.top_moved(top) if lc.ks[i] > 0]
    if moved:
        m = Table("track", "KS", "p50", "p99", "max", title=f"{lc.layer}: moved most (by KS)")
        for i in moved:
            m.add_row(
                lc.track_ids[i],
                f"{lc.ks[i]:.4f}",
                *(_fmt_ratio(float(lc.ratios[k][i])) for k in ("p50", "p99", "max")),
            )
        out.print(m)
    elif top:
        out.print(f"{lc.layer}: no track moved (every KS distance is 0)")
    if lc.excluded_zero_counts:
        left = ", ".join(lc.excluded_zero_counts)
        out.print(f"{lc.layer}: left out (count 0 in A or B): {left}", highlight=False)


@app.command()
def where(
    oracle: Annotated[str, typer.Argument(help="The oracle, as chorus names it (enformer).")],
) -> None:
    """The NPZ chorus loads for ORACLE's backgrounds: the path alone on stdout (for
    scripts), whether it is there on stderr."""
    from chorus_store.export import default_backgrounds_dir

    path = default_backgrounds_dir() / f"{oracle}_pertrack.npz"
    out.print(str(path), highlight=False, soft_wrap=True)
    import importlib.util

    if importlib.util.find_spec("chorus") is not None:
        how = "chorus's own CHORUS_BACKGROUNDS_DIR"
    elif os.environ.get("CHORUS_DATA_DIR"):
        how = "$CHORUS_DATA_DIR/backgrounds (chorus is not installed here)"
    else:
        how = "~/.chorus/backgrounds, chorus's default (chorus is not installed here)"
    state = "present" if path.is_file() else "absent"
    console.print(
        f"{state}; from {how}; `chorus-store export STORE` writes it there",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def recipes() -> None:
    """List the shipped build recipes."""
    from chorus_store.recipes import list_recipes

    out.print("\n".join(list_recipes()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
