"""Stores and exports on an object store: a real S3-protocol server (moto) on loopback.

Everything a user does on local disk — plan, build, resume after a kill, reduce,
export, status, verify, two builders at once — is done here against ``s3://`` URLs, and
the result is compared with the local-disk one byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chorus_store import build, export, open_store, reduce
from chorus_store.demo import DemoInputs
from chorus_store.errors import (
    CorruptChunkError,
    SchemaError,
    StoreLockedError,
    StoreMismatchError,
)
from chorus_store.inspect.status import status, verify
from chorus_store.store.claims import acquire, list_claims
from chorus_store.store.core import ChorusStore
from chorus_store.store.location import Location

from .helpers import composition_oracle, plan_small, small_recipe

CLI = [sys.executable, "-m", "chorus_store.cli"]


def _read_url(url: str) -> bytes:
    parent, name = url.rsplit("/", 1)
    data = Location.of(parent).get(name)
    assert data is not None, url
    return data


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "local":
        return Location.of(tmp_path / "loc")
    return Location.of(request.getfixturevalue("s3_bucket") + "/loc")


def test_location_primitives_are_atomic_on_disk_and_on_s3(location: Location) -> None:
    assert location.is_empty() and location.get("a/b.json") is None
    assert location.create("a/b.json", b"one")
    assert not location.create("a/b.json", b"two")  # create-if-absent refuses
    assert location.get("a/b.json") == b"one"
    assert not location.swap("a/b.json", b"three", expect=b"not what is there")
    assert location.swap("a/b.json", b"three", expect=b"one")
    assert location.get("a/b.json") == b"three"
    assert not location.swap("missing.json", b"x", expect=b"")
    location.put("c.bin", b"\x00" * 10)
    assert sorted(location.list()) == [("a/b.json", 5), ("c.bin", 10)]
    location.delete("a/b.json")
    location.delete("a/b.json")  # absent is fine
    assert [k for k, _ in location.list()] == ["c.bin"]


def test_racing_writers_get_exactly_one_winner(location: Location) -> None:
    """Eight threads create one key at once, then eight replace the same old value at
    once: each time exactly one succeeds, and the key holds the winner's bytes."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda i: location.create("k", b"c%d" % i), range(8)))
        assert created.count(True) == 1
        assert location.get("k") == b"c%d" % created.index(True)
        old = location.get("k") or b""
        swapped = list(pool.map(lambda i: location.swap("k", b"s%d" % i, expect=old), range(8)))
    assert swapped.count(True) == 1
    assert location.get("k") == b"s%d" % swapped.index(True)


def test_stale_claims_are_taken_over_on_s3_and_live_ones_refused(s3_bucket: str) -> None:
    loc = Location.of(f"{s3_bucket}/claims")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from chorus_store.store.claims import acquire;"
            "from chorus_store.store.location import Location;"
            "acquire(Location.of(sys.argv[1]), ['build/x'], store='s', command='other');"
            "print('held', flush=True); time.sleep(120)",
            loc.url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}"):
            acquire(loc, ["build/x"], store="s")
        [(name, who, alive)] = list(list_claims(loc))
        assert (name, who.pid, alive) == ("build/x", holder.pid, True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with acquire(loc, ["build/x"], store="s") as mine:  # the dead holder's claim
        [(_, who, _)] = list(list_claims(loc))
        assert who.run_id == mine.holder.run_id
    assert list(list_claims(loc)) == []


def test_the_whole_pipeline_on_s3_equals_local_disk(
    s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    url = f"{s3_bucket}/demo.zarr"
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    assert build(url, progress=False).rows_built["baselines"] > 0
    reduce(url, progress=False)
    written = export(url, out=f"{s3_bucket}/backgrounds/").url
    assert written == f"{s3_bucket}/backgrounds/demo_pertrack.npz"
    assert _read_url(written) == small_build[1].read_bytes()
    # the raw values are queryable with xarray straight from the bucket
    local, remote = open_store(small_build[0]), open_store(url)
    np.testing.assert_array_equal(
        remote["baselines"].summary.values, local["baselines"].summary.values
    )
    info = status(url)
    assert info.store == url and info.disk["files"] > 0 and info.claims == []
    assert verify(url).damaged_shards == []


def test_a_killed_build_on_s3_resumes_to_the_same_npz(
    s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    url = f"{s3_bucket}/demo.zarr"
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    proc = subprocess.Popen(
        [*CLI, "build", url, "--no-progress"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        done = ChorusStore.open(url).read("baselines/done_rows")
        if 0 < done.sum() < done.size * 32:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build ended before the kill landed"
    store = ChorusStore.open(url)
    # a row shard is done when all its tracks are (a kill may fall between the done marks
    # of its track shards: its pending tracks are then built again)
    done = store.read("baselines/done_rows")[:, : len(store.tracks)].min(axis=1)
    report = build(url, progress=False)
    assert report.rows_built["baselines"] == len(store.positions) - int(done.sum())
    reduce(url, progress=False)
    npz = export(url, out=tmp_path / "resumed.npz").path
    assert Path(npz).read_bytes() == small_build[1].read_bytes()


def test_two_builders_on_one_s3_store_share_disjoint_work_and_never_a_shard(
    s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    url = f"{s3_bucket}/demo.zarr"
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    a = subprocess.Popen(
        [*CLI, "build", url, "--part", "baselines", "--no-progress"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    loc = Location.of(url)
    deadline = time.monotonic() + 120
    while a.poll() is None and time.monotonic() < deadline:
        if any(n.startswith("build/baselines") for n, _, _ in list_claims(loc)):
            break
        time.sleep(0.05)
    b = subprocess.run(
        [*CLI, "build", url, "--part", "variants", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    overlap = subprocess.run(
        [*CLI, "build", url, "--part", "baselines", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    a_err = a.communicate()[1]
    assert a.returncode == 0, a_err
    assert b.returncode == 0, b.stderr
    # the overlapping build either found the work claimed (refused) or already done
    assert overlap.returncode == 0 or "StoreLockedError" in overlap.stderr, overlap.stderr
    reduce(url, progress=False)
    npz = export(url, out=tmp_path / "two.npz").path
    assert Path(npz).read_bytes() == small_build[1].read_bytes()


def test_overlapping_work_on_s3_is_refused_while_claimed(
    s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    url = f"{s3_bucket}/demo.zarr"
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    with acquire(Location.of(url), ["build/baselines/s000000-t0000"], store=url):
        with pytest.raises(StoreLockedError, match="s000000-t0000"):
            build(url, oracle=composition_oracle(), progress=False)
        build(url, oracle=composition_oracle(), part="variants", progress=False)
    assert (ChorusStore.open(url).read("baselines/done_rows") == 0).all()


def test_an_interrupted_plan_on_s3_is_replaced_and_a_store_never_overwritten(
    s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    url = f"{s3_bucket}/demo.zarr"
    loc = Location.of(url)
    # what a `plan` killed mid-way leaves: its claim (holder dead) and some arrays
    dead = b'{"host": "h", "boot_id": "", "pid": -1, "command": "plan", "started_at": 0, '
    dead += b'"run_id": "x"}'
    loc.put(".chorus-locks/create.json", dead)
    loc.put("zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    loc.put("tracks/zarr.json", b"{}")
    with pytest.raises(SchemaError, match="plan` was interrupted"):
        ChorusStore.open(url)
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    store = ChorusStore.open(url)
    store.validate()
    assert not loc.exists(".chorus-locks/create.json")
    with pytest.raises(StoreMismatchError, match="already exists"):
        ChorusStore.create(url, attrs={}, tracks=store.tracks, plan=None, layout=store.layout)  # type: ignore[arg-type]
    # a prefix with foreign objects is not a half-made store: never cleared
    other = f"{s3_bucket}/other.zarr"
    Location.of(other).put("data.csv", b"precious")
    with pytest.raises(StoreMismatchError, match="not empty"):
        plan_small(other, demo_inputs, small_recipe(tmp_path))
    assert Location.of(other).get("data.csv") == b"precious"


def test_a_corrupted_object_on_s3_is_found_repaired_and_rebuilt(
    s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    url = f"{s3_bucket}/demo.zarr"
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    build(url, progress=False)
    loc = Location.of(url)
    key = "baselines/summary/c/2/0/0"
    data = bytearray(loc.get(key) or b"")
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the stored object
    loc.put(key, bytes(data))
    assert verify(url).damaged_shards == ["baselines/summary shard 2 track-shard 0"]
    verify(url, repair=True)
    assert loc.get(key) is None and verify(url).damaged_shards == []
    assert build(url, progress=False).rows_built == {"baselines": 32, "variants": 0}
    reduce(url, progress=False)
    assert export(url, out=tmp_path / "r.npz").path.read_bytes() == small_build[1].read_bytes()


def test_a_deleted_object_on_s3_is_found_refused_by_the_reduce_and_rebuilt(
    s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    url = f"{s3_bucket}/demo.zarr"
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    build(url, progress=False)
    loc = Location.of(url)
    loc.delete("baselines/perbin/c/2/0/0/0")
    with pytest.raises(CorruptChunkError, match="verify .*--repair"):
        reduce(url, progress=False)
    want = ["baselines/perbin shard 2 track-shard 0 (missing)"]
    assert verify(url).damaged_shards == want
    assert verify(url, repair=True).repaired
    assert verify(url).damaged_shards == []
    assert build(url, progress=False).rows_built == {"baselines": 32, "variants": 0}
    reduce(url, progress=False)
    assert export(url, out=tmp_path / "r.npz").path.read_bytes() == small_build[1].read_bytes()


def test_file_urls_and_unknown_schemes(tmp_path: Path) -> None:
    assert Location.of(f"file://{tmp_path}/x.zarr").local_path == tmp_path / "x.zarr"
    assert Location.of("s3://bucket/x.zarr").is_remote
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        Location.of("ftp://host/x.zarr")


def _foreign_claim(loc: Location, name: str, lease_s: float, *, beat: bool) -> None:
    """A claim as a process on another machine leaves it (its pid cannot be checked)."""
    import json

    holder = {
        "host": "another-machine", "boot_id": "", "pid": 4242, "command": "chorus-store build",
        "started_at": time.time(), "run_id": f"run-{name.replace('/', '-')}", "lease_s": lease_s,
    }  # fmt: skip
    raw = json.dumps(holder).encode()
    if beat:
        loc.put(f".chorus-locks/runs/{holder['run_id']}.json", raw)
    loc.put(f".chorus-locks/{name}.json", raw)


def test_claims_of_other_machines_are_judged_by_their_heartbeat(location: Location) -> None:
    _foreign_claim(location, "beating", 60, beat=True)
    _foreign_claim(location, "silent", 0.5, beat=True)
    _foreign_claim(location, "no-beat", 60, beat=False)
    _foreign_claim(location, "legacy", 0, beat=False)  # written before leases existed
    time.sleep(1.0)  # "silent" has not beaten for longer than its lease
    alive = {name: a for name, _, a in list_claims(location)}
    assert alive == {"beating": True, "silent": False, "no-beat": False, "legacy": None}
    with pytest.raises(StoreLockedError, match="another-machine"):
        acquire(location, ["beating"], store="s")
    with pytest.raises(StoreLockedError, match="unlock"):
        acquire(location, ["legacy"], store="s")
    with acquire(location, ["silent", "no-beat"], store="s") as mine:
        assert {n for n, h, _ in list_claims(location) if h.run_id == mine.holder.run_id} == {
            "silent",
            "no-beat",
        }


def test_a_holder_beats_while_it_holds_claims_and_stops_after(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 timestamps have whole seconds: a 3 s lease (a beat every 0.75 s) stays readable
    monkeypatch.setenv("CHORUS_STORE_LEASE_S", "3")
    claims = acquire(location, ["a", "b"], store="s")
    beat = f".chorus-locks/runs/{claims.holder.run_id}.json"
    for _ in range(5):
        time.sleep(0.8)
        age = location.age(beat)
        assert age is not None and age < 2.0  # rewritten every lease/4
    assert all(alive for _, _, alive in list_claims(location))
    claims.release()
    assert location.get(beat) is None and list(list_claims(location)) == []
