"""The Zarr store: schema, attributes, xarray views, checksums."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import pytest
import xarray as xr
import zarr

from chorus_store import reduce, status, verify
from chorus_store.build.stage import build
from chorus_store.demo import DemoInputs
from chorus_store.errors import CorruptChunkError, SchemaError
from chorus_store.export import export
from chorus_store.store import claims as locks
from chorus_store.store.core import ChorusStore

from .helpers import plan_small, small_recipe


def test_root_attributes_record_provenance(small_build: tuple[Path, Path]) -> None:
    attrs = ChorusStore.open(small_build[0]).attrs
    assert attrs["schema_version"] == 2
    assert attrs["software_version"]
    assert len(attrs["oracle"]["fingerprint"]) == 64
    assert attrs["oracle"]["description"]["weights_sha256"]
    assert attrs["genome"]["assembly"] == "chorus-store-demo-v1"
    assert len(attrs["genome"]["fai_sha256"]) == 64
    assert attrs["plan"]["seeds"] == {
        "random": 789,
        "ccre": 456,
        "tss": 111,
        "gene_body": 222,
        "snps": 42,
        "perbin": 999,
    }
    assert attrs["plan"]["config"]["n_random"] == 96
    assert len(attrs["tracks"]["sha256"]) == 64 and attrs["tracks"]["n_tracks"] == 40
    assert attrs["layout"]["position_shard_rows"] == 32


def test_arrays_are_sharded_with_checksums(small_build: tuple[Path, Path]) -> None:
    arr = zarr.open_array(str(small_build[0] / "baselines" / "perbin"))
    assert arr.shards == (32, 1, 32, 16) and arr.chunks == (32, 1, 32, 8)
    meta: dict[str, Any] = dict(arr.metadata.to_dict())
    codecs = json.dumps(meta["codecs"])
    assert "sharding_indexed" in codecs and codecs.count("crc32c") == 2  # chunks and index
    inner = meta["codecs"][0]["configuration"]["codecs"]
    # blosc lz4 + byte shuffle over float32 items, then the chunk's checksum
    assert [c["name"] for c in inner] == ["bytes", "blosc", "crc32c"]
    assert inner[1]["configuration"] | {"blocksize": 0} == {
        "cname": "lz4", "clevel": 1, "shuffle": "shuffle", "typesize": 4, "blocksize": 0
    }  # fmt: skip


#: what stores created before the codec choice of docs/design-notes.md "Store codec" use
OLD_COMPRESSORS: list[dict[str, Any]] = [
    {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 3, "shuffle": "shuffle"}},
    {"name": "crc32c"},
]


def _inner_codecs(store: Path, name: str) -> list[dict[str, Any]]:
    codecs: list[dict[str, Any]] = json.loads((store / name / "zarr.json").read_text())["codecs"]
    if codecs[0]["name"] == "sharding_indexed":
        codecs = codecs[0]["configuration"]["codecs"]
    return codecs


def test_a_store_written_with_the_old_codec_reads_and_grows_with_it(
    tmp_path: Path,
    demo_inputs: DemoInputs,
    small_build: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store planned and half built by the old code (zstd), then grown, built, reduced and
    exported by today's: same NPZ bytes as a store made by today's code alone, and every
    array keeps the codec it was created with (a store's codec never changes mid-store)."""
    from zarr.registry import get_codec_class

    import chorus_store.store.core as store_module
    from chorus_store import add_tracks

    def old_compressors() -> list[object]:
        return [get_codec_class(c["name"]).from_dict(c) for c in OLD_COMPRESSORS]

    store = tmp_path / "demo.zarr"
    with monkeypatch.context() as m:  # the old code: only the creation codecs differ
        m.setattr(store_module, "_compressors", old_compressors)
        plan_small(store, demo_inputs, small_recipe(tmp_path, n_tracks=20))
        build(store, progress=False, part="baselines")
    assert _inner_codecs(store, "baselines/perbin")[1]["configuration"]["cname"] == "zstd"
    assert add_tracks(store, small_recipe(tmp_path)) == 20  # today's code from here on
    build(store, progress=False)
    reduce(store, progress=False)
    npz = export(store, out=tmp_path / "o.npz").path
    assert npz.read_bytes() == small_build[1].read_bytes()
    verify(store)
    for name in ("baselines/perbin", "variants/effect", "reductions/summary/grid"):
        blosc = _inner_codecs(store, name)[1]
        assert blosc["name"] == "blosc" and blosc["configuration"]["cname"] == "zstd", name


def test_raw_xarray_open_zarr_works_without_warnings(small_build: tuple[Path, Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(small_build[0], group="variants")
    assert ds.effect.sel(track="K562").dims == ("variant", "strand")


def test_validate_names_every_problem(small_copy: Path) -> None:
    ChorusStore.open(small_copy).validate()
    shutil.rmtree(small_copy / "variants" / "effect")
    g = zarr.open_group(str(small_copy), mode="r+")
    summary = g["baselines/summary"]
    assert isinstance(summary, zarr.Array)
    summary.resize((3, 1, 40))
    zarr.consolidate_metadata(str(small_copy))
    with pytest.raises(SchemaError) as err:
        ChorusStore.open(small_copy).validate()
    assert "'variants/effect' missing" in str(err.value)
    assert "'baselines/summary' has shape (3, 1, 40)" in str(err.value)


def test_unknown_schema_version_is_refused(small_copy: Path) -> None:
    g = zarr.open_group(str(small_copy), mode="r+")
    attrs = dict(cast("dict[str, Any]", g.attrs["chorus_store"]))
    attrs["schema_version"] = 99
    g.attrs["chorus_store"] = attrs
    with pytest.raises(SchemaError, match="schema v99"):
        ChorusStore.open(small_copy)
    with pytest.raises(SchemaError, match="not a chorus-store"):
        ChorusStore.open(small_copy / "baselines")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_chunk_is_an_error_and_is_repaired(
    small_copy: Path, small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    shard = small_copy / "baselines" / "summary" / "c" / "2" / "0" / "0"
    _flip_a_byte(shard)
    store = ChorusStore.open(small_copy)
    with pytest.raises(CorruptChunkError, match="verify .* --repair"):
        store.read("baselines/summary", (slice(64, 96), slice(0, 16)))
    # the reduce reads every value: it refuses rather than ranking against garbage
    ChorusStore.open(small_copy, mode="r+").array("reductions/summary/fingerprint")[0] = ""
    with pytest.raises(CorruptChunkError):
        reduce(small_copy, progress=False)
    report = verify(small_copy)
    assert report.damaged_shards == ["baselines/summary shard 2 track-shard 0"]
    verify(small_copy, repair=True)
    assert verify(small_copy).damaged_shards == []
    rebuilt = build(small_copy, progress=False)
    assert rebuilt.rows_built == {"baselines": 32, "variants": 0}  # exactly the damaged shard
    reduce(small_copy, progress=False)
    npz = export(small_copy, out=tmp_path / "out.npz").path
    assert npz.read_bytes() == small_build[1].read_bytes()


def test_arrays_written_per_reduce_block_have_a_chunk_per_block(
    small_build: tuple[Path, Path],
) -> None:
    """Reduce blocks run concurrently and each writes its tracks' slice of ``offered``,
    ``retained`` and ``grid``: a chunk shared by two blocks would be rewritten by both,
    one of them losing the other's values (a read-modify-write race)."""
    store = ChorusStore.open(small_build[0])
    chunk = store.layout.tracks_per_chunk
    for layer in ("effect", "summary", "perbin"):
        for name in ("grid", "offered", "retained"):
            assert store.array(f"reductions/{layer}/{name}").chunks[0] == chunk, (layer, name)
    # the track table is written only under the store claim: one object per column
    assert store.array("tracks/layer").chunks[0] >= len(store.tracks)


# ---------------------------------------------------- leftovers of killed runs (issue 9)


def _dead_and_running() -> tuple[int, subprocess.Popen[bytes]]:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return dead.pid, running


def test_a_killed_plans_creating_dir_is_removed_and_a_running_ones_kept(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    host = socket.gethostname().replace(".", "_")
    dead_pid, running = _dead_and_running()
    try:
        stale = tmp_path / f".s.zarr.creating-{host}.{dead_pid}.aaaaaaaaaaaa"
        live = tmp_path / f".s.zarr.creating-{host}.{running.pid}.bbbbbbbbbbbb"
        for d in (stale, live):
            (d / "plan").mkdir(parents=True)
            (d / "zarr.json").write_text("{}")
        plan_small(tmp_path / "s.zarr", demo_inputs, small_recipe(tmp_path))
        assert not stale.exists()
        assert live.exists()
        assert sorted(p.name for p in tmp_path.iterdir() if "creating" in p.name) == [live.name]
    finally:
        running.kill()
        running.wait()


def test_a_dead_runs_claims_are_cleared_by_the_next_status(small_copy: Path) -> None:
    dead_pid, running = _dead_and_running()
    try:
        for name, pid in (("s000000-t0000", dead_pid), ("s000001-t0000", running.pid)):
            holder = locks.Holder(
                host=socket.gethostname(),
                boot_id=locks._boot_id(),
                pid=pid,
                command="chorus-store build",
                started_at=0.0,
                run_id=f"run-{pid}",
            )
            key = small_copy / locks.LOCK_DIR / "build" / "baselines" / f"{name}.json"
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_text(json.dumps(holder.__dict__))
        claims = status(small_copy).claims
        assert [c["name"] for c in claims] == ["build/baselines/s000001-t0000"]
        assert claims[0]["alive"] is True
        assert not (small_copy / locks.LOCK_DIR / "build/baselines/s000000-t0000.json").exists()
    finally:
        running.kill()
        running.wait()


def test_one_writer_tag_for_every_temporary_a_kill_can_leave() -> None:
    """export's ``.partial`` files and plan's ``.creating-`` folders share one
    ``<host>.<pid>.<id>`` tag and one test of whether its writer is gone."""
    import subprocess
    import sys

    from chorus_store.store.claims import left_by_dead_writer, writer_tag

    mine = writer_tag()
    host, pid, ident = mine.split(".")
    assert int(pid) == os.getpid() and len(ident) == 32 and len(writer_tag(12).split(".")[2]) == 12
    assert not left_by_dead_writer(mine)  # this process is alive
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert left_by_dead_writer(f"{host}.{done.stdout.strip()}.abc")
    assert not left_by_dead_writer(f"other_host.{done.stdout.strip()}.abc")
    assert not left_by_dead_writer(f"{host}.notapid.abc") and not left_by_dead_writer("x")
