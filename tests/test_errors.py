"""Every bad input ends in one clear error: a ChorusStoreError, one line, exit status 2.

Read-only directories and full disks are real here: a tmpfs mounted read-only or a few
KiB large (as root; without root, a read-only directory is one without write permission
and the full-disk cases are skipped).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from chorus_store import build, errors, export, load_recipe, plan_store, reduce, status
from chorus_store.cli import app
from chorus_store.demo import DemoInputs
from chorus_store.errors import (
    InputFileError,
    OracleError,
    PredictionError,
    StoreLockedError,
    UsageError,
    WriteError,
)
from chorus_store.genome.fasta import read_ccre_bed, read_gtf
from chorus_store.store.claims import LockSet, acquire
from chorus_store.store.core import ChorusStore

from .helpers import gc_window_model

runner = CliRunner()
ROOT = Path(__file__).parents[1]
REFERENCE_SET = ROOT / "examples/chorus/chorus_reference_positions_v1.npz"

# --------------------------------------------------------------------------------------
# a small callable-oracle recipe (as tests/test_new_oracle.py), with the model swappable
# --------------------------------------------------------------------------------------

RECIPE = """
name = "gcmodel"
[oracle]
adapter = "callable"
callable = "{callable}"
identity = "{identity}"
input_length = 2048
batch_size = 16
[[oracle.heads]]
name = "bins"
resolution_bp = 64
n_bins = 16
[tracks]
table = "tracks.tsv"
[plan]
source = "generated"
assembly = "chorus-store-demo-v1"
[plan.sampling]
n_random = {n_random}
n_ccre = 20
n_tss = 10
n_gene_body = 10
n_snps = 30
chromosomes = ["chr1", "chr2"]
random_margin_bp = 100000
snp_margin_bp = 50000
[layout]
position_shard_rows = 16
variant_shard_rows = 16
tracks_per_shard = 8
tracks_per_chunk = 8
"""
TRACKS = (
    "track_id\tassay_type\tdescription\nGC:one\tDNASE\tDNASE:gc\nAT:two\tCHIP\tCHIP:H3K27ac:at\n"
)


def negative_model(onehot: np.ndarray) -> dict[str, np.ndarray]:
    """``gc_window_model`` shifted below zero: wrong for DNASE (a log2 ratio layer)."""
    return {"bins": gc_window_model(onehot)["bins"] - 5.0}


def raising_model(onehot: np.ndarray) -> dict[str, np.ndarray]:
    raise RuntimeError("CUDA error: device-side assert triggered")


def slow_model(onehot: np.ndarray) -> dict[str, np.ndarray]:
    """``gc_window_model``, slowed by ``$SLOW_MODEL_S`` per call (set in the build to be
    interrupted, so there is a moment mid-build to interrupt it)."""
    time.sleep(float(os.environ.get("SLOW_MODEL_S", "0")))
    return gc_window_model(onehot)


def write_recipe(
    directory: Path,
    *,
    model: str = "gc_window_model",
    identity: str = "gc-window-model v1",
    n_random: int = 40,
    tracks: str = TRACKS,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    module = "tests.helpers" if model == "gc_window_model" else "tests.test_errors"
    (directory / "recipe.toml").write_text(
        RECIPE.format(callable=f"{module}:{model}", identity=identity, n_random=n_random)
    )
    (directory / "tracks.tsv").write_text(tracks)
    return directory / "recipe.toml"


def gc_store(tmp_path: Path, inputs: DemoInputs, name: str = "gc", **recipe: str) -> Path:
    """A planned (not built) store of the gc recipe."""
    toml = write_recipe(tmp_path / f"{name}-recipe", **recipe)  # type: ignore[arg-type]
    store = tmp_path / f"{name}.zarr"
    plan_store(store, load_recipe(toml), fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)
    return store


def plan_args(store: Path, inputs: DemoInputs, recipe: str | Path, **extra: Path) -> list[str]:
    args = ["plan", str(store), "--recipe", str(recipe), "--fasta", str(inputs.fasta)]
    args += [
        "--ccre",
        str(extra.get("ccre", inputs.ccre)),
        "--gtf",
        str(extra.get("gtf", inputs.gtf)),
    ]
    return args


# --------------------------------------------------------------------------------------
# real read-only and full filesystems
# --------------------------------------------------------------------------------------


@pytest.fixture()
def mounts(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``mount(name, size=..., read_only=..., fill_from=...)``: a fresh tmpfs (root only)."""
    mounted: list[Path] = []

    def mount(
        name: str, *, size: str = "4m", read_only: bool = False, fill_from: Path | None = None
    ) -> Path:
        where = tmp_path / name
        where.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
        )
        if res.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
        mounted.append(where)
        if fill_from is not None:
            shutil.copytree(fill_from, where / fill_from.name)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture()
def read_only(mounts: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """A read-only directory (optionally holding a copy of ``fill_from``): a read-only
    tmpfs as root, a directory without write permission otherwise."""

    def make(name: str, fill_from: Path | None = None) -> Path:
        if os.geteuid() == 0:
            return mounts(name, read_only=True, fill_from=fill_from)
        where = tmp_path / name
        where.mkdir()
        if fill_from is not None:
            shutil.copytree(fill_from, where / fill_from.name)
        for path in [where, *where.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        return where

    return make


def one_line(res: object) -> str:
    """The refusal a CLI call printed: exactly one line on stderr, no traceback."""
    err: str = res.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err and "Traceback" not in res.stdout, err  # type: ignore[attr-defined]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------
# the cases of issue 9, item 4
# --------------------------------------------------------------------------------------


def test_a_gtf_with_only_its_header_is_an_input_error(tmp_path: Path) -> None:
    gtf = tmp_path / "header.gtf"
    gtf.write_text("##description: evidence-based annotation\n##provider: GENCODE\n")
    with pytest.raises(InputFileError, match="holds no rows.*--gtf"):
        read_gtf(gtf)


def test_bed_track_and_browser_lines_are_skipped(tmp_path: Path) -> None:
    body = "chr1\t100\t200\tEH38D1\tEH38E1\tpELS\nchr2\t300\t400\tEH38D2\tEH38E2\tCA-CTCF\n"
    bed = tmp_path / "ccre.bed"
    bed.write_text('browser position chr1:1-1000\ntrack name="cCREs" itemRgb=On\n' + body)
    plain = tmp_path / "plain.bed"
    plain.write_text(body)
    got = read_ccre_bed(bed)
    assert got.equals(read_ccre_bed(plain)) and got["category"].tolist() == ["pELS", "CA-CTCF"]
    only_header = tmp_path / "header.bed"
    only_header.write_text("track name=x\n")
    with pytest.raises(InputFileError, match="holds no rows"):
        read_ccre_bed(only_header)


def test_a_store_path_that_is_a_file_is_refused(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a store")
    for args in (
        plan_args(a_file, demo_inputs, write_recipe(tmp_path / "r")),
        ["build", str(a_file)],
        ["status", str(a_file)],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "LocationError" in one_line(res) and "is a file" in res.stderr
    assert a_file.read_text() == "not a store"


def test_an_unknown_url_scheme_is_refused(tmp_path: Path) -> None:
    res = runner.invoke(app, ["status", "ftp://example.org/demo.zarr"])
    assert res.exit_code == 2
    line = one_line(res)
    assert "LocationError" in line and "unsupported URL scheme 'ftp'" in line and "s3://" in line


def test_build_of_an_unknown_part_is_a_usage_error(small_copy: Path) -> None:
    with pytest.raises(UsageError, match="'foo'"):
        build(small_copy, part="foo", progress=False)
    res = runner.invoke(app, ["build", str(small_copy), "--part", "foo", "--no-progress"])
    assert res.exit_code == 2 and "UsageError" in one_line(res) and "--part" in res.stderr


def test_reduce_of_an_unknown_layer_is_a_usage_error(small_copy: Path) -> None:
    res = runner.invoke(app, ["reduce", str(small_copy), "--layers", "summary,foo"])
    assert res.exit_code == 2 and "UsageError" in one_line(res)
    assert "--layers 'foo' is not one of effect, summary, perbin" in res.stderr
    with pytest.raises(UsageError, match="no layer 'foo'"):  # the API's own check
        reduce(small_copy, layers=("summary", "foo"), progress=False)


def test_plan_into_a_read_only_directory(
    tmp_path: Path, demo_inputs: DemoInputs, read_only: Callable[..., Path]
) -> None:
    where = read_only("ro")
    store = where / "gc.zarr"
    res = runner.invoke(app, plan_args(store, demo_inputs, write_recipe(tmp_path / "r")))
    assert res.exit_code == 2, res.output
    line = one_line(res)
    assert "WriteError" in line and "could not create the store" in line
    assert "read-only" in line or "permission denied" in line
    assert list(where.iterdir()) == []


def test_plan_on_a_full_disk_keeps_nothing(
    tmp_path: Path, demo_inputs: DemoInputs, mounts: Callable[..., Path]
) -> None:
    where = mounts("full", size="64k")
    toml = write_recipe(tmp_path / "r")
    with pytest.raises(WriteError, match="the disk is full") as info:
        plan_store(where / "gc.zarr", load_recipe(toml), fasta=demo_inputs.fasta,
                   ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)  # fmt: skip
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert list(where.iterdir()) == []  # no half-made store, no .creating-* directory
    res = runner.invoke(app, plan_args(where / "gc.zarr", demo_inputs, toml))
    assert res.exit_code == 2 and "the disk is full" in one_line(res)


def test_build_of_a_read_only_store(
    tmp_path: Path, demo_inputs: DemoInputs, read_only: Callable[..., Path]
) -> None:
    planned = gc_store(tmp_path, demo_inputs)
    store = read_only("ro", fill_from=planned) / planned.name
    res = runner.invoke(app, ["build", str(store), "--no-progress"])
    assert res.exit_code == 2, res.output
    line = one_line(res)
    assert "WriteError" in line and "cannot write the claims" in line
    assert (ChorusStore.open(store).read("baselines/done_rows") == 0).all()
    assert runner.invoke(app, ["status", str(store)]).exit_code == 0  # reading still works


def test_export_into_a_read_only_directory(
    small_build: tuple[Path, Path], read_only: Callable[..., Path]
) -> None:
    where = read_only("ro")
    with pytest.raises(WriteError, match="could not write .*Nothing was replaced") as info:
        export(small_build[0], out=where)
    assert isinstance(info.value.__cause__, OSError)
    res = runner.invoke(app, ["export", str(small_build[0]), "--out", str(where)])
    assert res.exit_code == 2 and "WriteError" in one_line(res)
    assert list(where.iterdir()) == []


def test_export_onto_a_full_disk_leaves_no_partial_file(
    small_build: tuple[Path, Path], mounts: Callable[..., Path]
) -> None:
    where = mounts("full", size="16k")
    with pytest.raises(WriteError, match="the disk is full"):
        export(small_build[0], out=where)
    assert list(where.iterdir()) == []


def test_an_oracle_that_raises_is_wrapped_naming_shard_and_oracle(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = gc_store(tmp_path, demo_inputs, model="raising_model", identity="raising v1")
    with pytest.raises(OracleError, match=r"oracle 'gcmodel' raised RuntimeError: CUDA error.*"
                       r"baselines shard 0 .*re-run `chorus-store build") as info:  # fmt: skip
        build(store, progress=False)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert (ChorusStore.open(store).read("baselines/done_rows") == 0).all()
    assert status(store).claims == []
    res = runner.invoke(app, ["build", str(store), "--no-progress"])
    assert res.exit_code == 2 and "OracleError" in one_line(res)


def test_negative_predictions_of_a_log_ratio_layer_are_refused(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = gc_store(tmp_path, demo_inputs, model="negative_model", identity="negative v1")
    with pytest.raises(PredictionError, match=r"-\d.* of track 'GC:one' at chr\d:\d+.*log ratio"):
        build(store, progress=False)
    assert (ChorusStore.open(store).read("baselines/done_rows") == 0).all()
    # the same negative outputs for layers scored by difference are legitimate
    diff = "\tformula\tpseudocount\tsigned\n".join(["track_id\tassay_type\tdescription", ""])
    diff += "GC:one\tDNASE\tDNASE:gc\tdiff\t0\ttrue\nAT:two\tCHIP\tCHIP:H3K27ac:at\tdiff\t0\ttrue\n"
    ok = gc_store(tmp_path, demo_inputs, "diff", model="negative_model", identity="neg v1",
                  tracks=diff)  # fmt: skip
    assert build(ok, progress=False).rows_built["baselines"] > 0
    assert np.nanmax(ChorusStore.open(ok).read("baselines/summary")) < 0


def test_a_second_reduce_is_refused_without_build_advice(small_copy: Path) -> None:
    held = acquire(ChorusStore.open(small_copy).location, ["reduce"], store=str(small_copy),
                   command="chorus-store reduce (another)")  # fmt: skip
    try:
        with pytest.raises(StoreLockedError) as info:
            reduce(small_copy, progress=False)
    finally:
        held.release()
    message = str(info.value)
    assert "'reduce' is being written by" in message and "Wait for it to finish" in message
    assert "--part" not in message and "build" not in message.split("unlock")[0]


# --------------------------------------------------------------------------------------
# SIGINT / SIGTERM: one line saying what was kept and how to resume; resume is exact
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_build_says_what_was_kept_and_resumes_exactly(
    tmp_path: Path, demo_inputs: DemoInputs, sig: signal.Signals
) -> None:
    reference = gc_store(tmp_path, demo_inputs, "reference", model="slow_model", identity="slow")
    store = tmp_path / "interrupted.zarr"
    shutil.copytree(reference, store)  # the same plan, built twice
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "SLOW_MODEL_S": "0.15"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chorus_store.cli", "build", str(store), "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    done = store / "baselines" / "done_rows"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        # wait for the first finished shard, then interrupt mid-build
        if (ChorusStore.open(store).read("baselines/done_rows") > 0).any():
            break
        time.sleep(0.05)
    assert done.exists()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    line = err.strip()
    assert line.startswith(f"interrupted ({sig.name}):")
    assert "row shards are built and kept" in line
    assert line.endswith(f"resume with: chorus-store build {store} --no-progress")  # argv
    kept = int(line.split(":")[1].split(" of ")[0])
    assert 1 <= kept < sum(g["shards"] for g in status(store).build.values())
    assert status(store).claims == []  # released on the way out
    res = runner.invoke(app, ["build", str(store), "--no-progress"])
    assert res.exit_code == 0, res.output
    build(reference, progress=False)
    for s in (store, reference):
        reduce(s, progress=False)
    a = export(store, out=tmp_path / "a.npz").path
    b = export(reference, out=tmp_path / "b.npz").path
    assert Path(a).read_bytes() == Path(b).read_bytes()


# --------------------------------------------------------------------------------------
# one CLI invocation per error class: exit 2, one line, the class named
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _flip_a_byte(directory: Path) -> None:
    chunk = max((p for p in directory.rglob("*") if p.is_file() and p.name != "zarr.json"),
                key=lambda p: p.stat().st_size)  # fmt: skip
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def _tampered_reference_set(tmp_path: Path) -> Path:
    with np.load(REFERENCE_SET, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    regions = arrays["regions_genome_dominated"].copy()
    regions["pos"][0] += 1
    arrays["regions_genome_dominated"] = regions
    path = tmp_path / "tampered.npz"
    np.savez(path, **arrays)
    return path


def _when_input_file_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    header_only = tmp_path / "header.gtf"
    header_only.write_text("##provider: GENCODE\n")
    return plan_args(tmp_path / "s.zarr", inputs, recipe, gtf=header_only)


def _when_genome_mismatch_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    return [*plan_args(tmp_path / "s.zarr", inputs, recipe), "--reference-set",
            str(REFERENCE_SET)]  # fmt: skip


def _when_plan_hash_mismatch_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    return [*plan_args(tmp_path / "s.zarr", inputs, recipe), "--reference-set",
            str(_tampered_reference_set(tmp_path))]  # fmt: skip


def _when_store_mismatch_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "data.txt").write_text("mine")
    return plan_args(tmp_path / "occupied", inputs, recipe)


def _when_plan_mismatch_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    store = gc_store(tmp_path, inputs)
    build(store, part="baselines", progress=False)  # unbuilt, it would be planned anew
    return plan_args(store, inputs, write_recipe(tmp_path / "other", n_random=41))


def _when_oracle_mismatch_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    store = gc_store(tmp_path, inputs)
    build(store, part="baselines", progress=False)
    other = write_recipe(tmp_path / "other", identity="gc-window-model v2")
    return ["build", str(store), "--recipe", str(other), "--no-progress"]


def _when_track_table_mismatch_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    store = gc_store(tmp_path, inputs)
    more = write_recipe(tmp_path / "more", tracks=TRACKS + "GC:three\tDNASE\tDNASE:gc3\n")
    return ["build", str(store), "--recipe", str(more), "--no-progress"]


def _when_schema_error(tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path) -> list[str]:
    return ["build", str(tmp_path / "nothing.zarr")]


def _when_store_locked_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    claim = acquire(ChorusStore.open(small).location, ["reduce"], store=str(small))
    HELD.append(claim)  # held by this process, released after the command
    return ["reduce", str(small), "--no-progress"]


def _when_prediction_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    store = gc_store(tmp_path, inputs, model="negative_model", identity="negative v1")
    return ["build", str(store), "--no-progress"]


def _when_corrupt_chunk_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    _flip_a_byte(small / "reductions" / "summary" / "grid")
    return ["export", str(small), "--out", str(tmp_path)]


def _when_incomplete_stage_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    return ["reduce", str(gc_store(tmp_path, inputs)), "--no-progress"]


def _when_export_validation_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    grid = ChorusStore.open(small, mode="r+").array("reductions/summary/grid")
    grid[0] = np.asarray(grid[0])[::-1]  # a CDF that decreases: chorus's loader would break on it
    return ["export", str(small), "--out", str(tmp_path)]


def _when_recipe_error(tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path) -> list[str]:
    return plan_args(tmp_path / "s.zarr", inputs, "no-such-recipe")


def _when_write_error(tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path) -> list[str]:
    (tmp_path / "a-file").write_text("")
    return ["export", str(small), "--out", str(tmp_path / "a-file" / "x.npz")]


def _when_cluster_error(tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path) -> list[str]:
    store = gc_store(tmp_path, inputs)
    return ["build", str(store), "--scheduler", f"tcp://127.0.0.1:{_free_port()}",
            "--no-progress"]  # fmt: skip


def _when_location_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    return ["status", "ftp://example.org/demo.zarr"]


def _when_oracle_error(tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path) -> list[str]:
    store = gc_store(tmp_path, inputs, model="raising_model", identity="raising v1")
    return ["build", str(store), "--no-progress"]


def _when_usage_error(tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path) -> list[str]:
    return ["estimate", "demo", "--rate", "-1"]


def _when_missing_dependency_error(
    tmp_path: Path, inputs: DemoInputs, small: Path, recipe: Path
) -> list[str]:
    # torch as a fresh core install lacks it: an import of it raises ModuleNotFoundError
    saved = sys.modules.get("torch")
    sys.modules["torch"] = None  # type: ignore[assignment]
    UNDO.append(lambda: sys.modules.__setitem__("torch", saved))  # type: ignore[assignment]
    return ["demo", str(tmp_path / "demo-out"), "--no-progress"]


#: one command line per error class, ending in it
_CASES: dict[str, Callable[[Path, DemoInputs, Path, Path], list[str]]] = {
    "InputFileError": _when_input_file_error,
    "GenomeMismatchError": _when_genome_mismatch_error,
    "PlanHashMismatchError": _when_plan_hash_mismatch_error,
    "StoreMismatchError": _when_store_mismatch_error,
    "PlanMismatchError": _when_plan_mismatch_error,
    "OracleMismatchError": _when_oracle_mismatch_error,
    "TrackTableMismatchError": _when_track_table_mismatch_error,
    "SchemaError": _when_schema_error,
    "StoreLockedError": _when_store_locked_error,
    "PredictionError": _when_prediction_error,
    "CorruptChunkError": _when_corrupt_chunk_error,
    "IncompleteStageError": _when_incomplete_stage_error,
    "ExportValidationError": _when_export_validation_error,
    "RecipeError": _when_recipe_error,
    "WriteError": _when_write_error,
    "ClusterError": _when_cluster_error,
    "LocationError": _when_location_error,
    "OracleError": _when_oracle_error,
    "UsageError": _when_usage_error,
    "MissingDependencyError": _when_missing_dependency_error,
}


def _case(name: str, tmp_path: Path, inputs: DemoInputs, small: Path) -> list[str]:
    """A command line that ends in ``name``."""
    if name not in _CASES:
        raise AssertionError(f"no CLI case drives {name}; add one to _CASES")
    return _CASES[name](tmp_path, inputs, small, write_recipe(tmp_path / "recipe"))


HELD: list[LockSet] = []
UNDO: list[Callable[[], None]] = []  # what a case changed in this process, undone after it
ERROR_CLASSES = [name for name in errors.__all__ if name != "ChorusStoreError"]


@pytest.mark.parametrize("name", ERROR_CLASSES)
def test_each_error_class_is_one_line_and_exit_2(
    name: str, tmp_path: Path, demo_inputs: DemoInputs, small_copy: Path
) -> None:
    import dask

    args = _case(name, tmp_path, demo_inputs, small_copy)
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
            res = runner.invoke(app, args)
    finally:
        while HELD:
            HELD.pop().release()
        while UNDO:
            UNDO.pop()()
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    line = one_line(res)
    assert line.startswith(f"error: {name}: "), line
