"""Damage verify must find and --repair must mend: every object the other commands read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

from chorus_store import build, export, reduce, status
from chorus_store.cli import app
from chorus_store.errors import CorruptChunkError, SchemaError, StoreLockedError
from chorus_store.inspect.status import verify
from chorus_store.reduce import stale_blocks
from chorus_store.store.base import ROOT_COPY
from chorus_store.store.claims import acquire
from chorus_store.store.core import ChorusStore
from chorus_store.store.location import Location

PERBIN_SHARD = Path("baselines/perbin/c/2/0/0/0")  # rows 64-95, tracks 0-15


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def _rebuilt_npz_equals(store: Path, small_build: tuple[Path, Path], tmp_path: Path) -> bool:
    reduce(store, progress=False)
    again = export(store, out=tmp_path / "again.npz").path
    return again.read_bytes() == small_build[1].read_bytes()


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_lost_data_shard_is_found_refused_by_the_reduce_and_rebuilt(
    small_copy: Path, small_build: tuple[Path, Path], tmp_path: Path, damage: str
) -> None:
    """A shard read back from an absent or 0-byte object is all NaN ("not sampled"), with
    no error: only the done marks say it should hold values."""
    shard = small_copy / PERBIN_SHARD
    if damage == "deleted":
        shard.unlink()
    else:
        shard.write_bytes(b"")
    # the blocks over the shard are stale: their input fingerprint covers the stored data
    assert stale_blocks(ChorusStore.open(small_copy), "perbin") == [0, 1]
    with pytest.raises(
        CorruptChunkError, match=r"perbin shard 2 track-shard 0 .* verify .*--repair"
    ):
        reduce(small_copy, progress=False)
    why = "missing" if damage == "deleted" else "0-byte object"
    assert verify(small_copy).damaged_shards == [f"baselines/perbin shard 2 track-shard 0 ({why})"]
    assert verify(small_copy, repair=True).repaired
    assert verify(small_copy).damaged_shards == []
    assert build(small_copy, progress=False).rows_built == {"baselines": 32, "variants": 0}
    # the repair marked the blocks over the shard stale: they are reduced again
    assert reduce(small_copy, progress=False).blocks_computed == {
        "effect": 0,
        "summary": 2,
        "perbin": 2,
    }
    again = export(small_copy, out=tmp_path / "r.npz").path
    assert again.read_bytes() == small_build[1].read_bytes()


def test_an_all_nan_unit_is_still_stored(small_build: tuple[Path, Path]) -> None:
    """gene_summary of a track shard without RNA tracks is all NaN; it is written anyway,
    so that "marked built" always means "its object exists"."""
    store = ChorusStore.open(small_build[0])
    n_track_shards = -(-len(store.tracks) // store.layout.tracks_per_shard)
    keys = {k for k, _ in store.location.list("baselines/gene_summary/c/")}
    assert keys == {
        f"baselines/gene_summary/c/{s}/{ts}"
        for s in range(store.sizes["position_shard"])
        for ts in range(n_track_shards)
    }


def test_a_flipped_byte_in_done_rows_is_found_and_its_rows_rebuilt(
    small_copy: Path, small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    _flip_a_byte(small_copy / "baselines" / "done_rows" / "c" / "2" / "0")
    with pytest.raises(CorruptChunkError, match="verify .* --repair"):
        status(small_copy)
    report = verify(small_copy)
    assert report.damaged_marks == ["baselines/done_rows shard 2 track-shard 0"]
    verify(small_copy, repair=True)
    assert verify(small_copy).damaged_marks == []
    assert build(small_copy, progress=False).rows_built == {"baselines": 32, "variants": 0}
    assert _rebuilt_npz_equals(small_copy, small_build, tmp_path)


def test_a_flipped_byte_in_the_root_document_is_restored_from_its_copy(
    small_copy: Path, small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    _flip_a_byte(small_copy / "zarr.json")
    with pytest.raises(SchemaError):
        ChorusStore.open(small_copy)
    assert verify(small_copy).damaged_metadata == ["zarr.json (root metadata, unreadable)"]
    assert verify(small_copy, repair=True).repaired
    after = verify(small_copy)
    assert not (after.damaged_metadata or after.lost)
    assert status(small_copy).build["baselines"]["shards_done"] == 6
    assert build(small_copy, progress=False).rows_built == {"baselines": 0, "variants": 0}
    assert _rebuilt_npz_equals(small_copy, small_build, tmp_path)


def test_a_root_document_without_a_copy_says_what_is_lost(small_copy: Path) -> None:
    _flip_a_byte(small_copy / "zarr.json")
    (small_copy / ROOT_COPY).unlink()
    report = verify(small_copy, repair=True)
    assert not report.repaired and len(report.lost) == 1
    lost = report.lost[0]
    assert "recipe, oracle and genome fingerprints" in lost and "chorus-store plan NEW" in lost
    res = CliRunner().invoke(app, ["verify", str(small_copy)])
    assert res.exit_code == 1 and "lost: the root zarr.json is damaged" in res.stdout


@pytest.mark.parametrize(
    "doc", ["baselines/zarr.json", "plan/zarr.json", "variants/effect/zarr.json"]
)
@pytest.mark.parametrize("damage", ["flipped", "deleted"])
def test_a_damaged_group_or_array_document_is_found_and_rewritten(
    small_copy: Path, doc: str, damage: str
) -> None:
    """The consolidated metadata masks such damage from the commands, not from a reader
    that opens the hierarchy node by node (xarray with consolidated=False, zarr.open_array)."""
    path = small_copy / doc
    before = json.loads(path.read_bytes())
    if damage == "flipped":
        _flip_a_byte(path)
    else:
        path.unlink()
    status(small_copy)  # masked
    why = "unreadable" if damage == "flipped" else "missing"
    assert verify(small_copy).damaged_metadata == [f"{doc} ({why})"]
    verify(small_copy, repair=True)
    assert json.loads(path.read_bytes()) == before
    assert verify(small_copy).damaged_metadata == []
    xr.open_zarr(small_copy, group="variants", consolidated=False).effect.load()
    zarr.open_array(str(small_copy / "variants" / "effect"), mode="r")[:]


def test_damaged_reductions_and_coordinate_copies_are_rewritten(
    small_copy: Path, small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    _flip_a_byte(small_copy / "reductions" / "summary" / "grid" / "c" / "1" / "0")
    _flip_a_byte(small_copy / "baselines" / "pos" / "c" / "0")
    _flip_a_byte(small_copy / "reductions" / "effect" / "quantile" / "c" / "0")
    report = verify(small_copy)
    assert report.damaged_reductions == ["summary block 1"]
    assert report.damaged_derived == ["baselines/pos", "reductions/effect/quantile"]
    verify(small_copy, repair=True)
    assert verify(small_copy).damaged() == []
    assert reduce(small_copy, progress=False).blocks_computed["summary"] == 1
    again = export(small_copy, out=tmp_path / "r.npz").path
    assert again.read_bytes() == small_build[1].read_bytes()


def test_a_damaged_plan_table_is_reported_with_its_recovery(small_copy: Path) -> None:
    _flip_a_byte(small_copy / "plan" / "positions" / "pos" / "c" / "0")
    report = verify(small_copy, repair=True)
    plan_hash = ChorusStore.open(small_copy).attrs["plan"]["positions_sha256"]
    assert report.damaged_plan == ["plan/positions/pos"]
    assert "Re-plan into a new store" in report.lost[0] and plan_hash in report.lost[0]


@pytest.mark.parametrize("claim", ["build/baselines/s000002-t0000", "reduce"])
def test_repair_is_refused_while_a_build_or_reduce_holds_its_claims(
    small_copy: Path, claim: str
) -> None:
    shard = small_copy / PERBIN_SHARD
    shard.unlink()
    done_before = (small_copy / "baselines" / "done_rows" / "c" / "2" / "0").read_bytes()
    held = acquire(Location.of(small_copy), [claim], store=str(small_copy), command="build")
    try:
        with pytest.raises(StoreLockedError):
            verify(small_copy, repair=True)
    finally:
        held.release()
    done_after = (small_copy / "baselines" / "done_rows" / "c" / "2" / "0").read_bytes()
    assert done_after == done_before  # nothing changed
    assert verify(small_copy, repair=True).repaired  # and once released, it runs
    assert not (small_copy / ".chorus-locks" / "store.json").exists()


def test_the_cli_lists_each_kind_of_damage(small_copy: Path) -> None:
    (small_copy / PERBIN_SHARD).unlink()
    _flip_a_byte(small_copy / "variants" / "done_rows" / "c" / "0" / "0")
    res = CliRunner().invoke(app, ["verify", str(small_copy)])
    assert res.exit_code == 1
    assert "damaged data: baselines/perbin shard 2 track-shard 0 (missing)" in res.stdout
    assert "damaged done mark: variants/done_rows shard 0 track-shard 0" in res.stdout
    assert "--repair" in res.stdout
