"""The build: resume, idempotence, appends, refusals, concurrency, faults."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chorus_store import (
    CallableOracle,
    OutputHead,
    add_positions,
    add_tracks,
    add_variants,
    build,
    export,
    reduce,
    status,
)
from chorus_store.demo import DemoInputs
from chorus_store.errors import (
    GenomeMismatchError,
    IncompleteStageError,
    OracleMismatchError,
    PredictionError,
    StoreLockedError,
    TrackTableMismatchError,
    WriteError,
)
from chorus_store.plan.stage import read_rows_table
from chorus_store.store.core import ChorusStore
from chorus_store.testing.faults import Fault, StoreFaults

from .helpers import (
    HEAD,
    N_TRACKS,
    composition_oracle,
    composition_oracle_fn,
    plan_small,
    small_recipe,
)

CLI = [sys.executable, "-m", "chorus_store.cli"]


def _records(store: Path, group: str) -> dict[str, np.ndarray]:
    s = ChorusStore.open(store)
    names = (
        ("summary", "perbin") if group == "baselines" else ("ref_summary", "alt_summary", "effect")
    )
    return {n: s.read(f"{group}/{n}") for n in names}


def test_rerun_of_a_finished_build_calls_the_oracle_zero_times(small_copy: Path) -> None:
    oracle = small_recipe(small_copy.parent).load_oracle()
    report = build(small_copy, oracle=oracle, progress=False)
    assert oracle.calls == 0 and report.oracle_calls == 0
    assert report.rows_built == {"baselines": 0, "variants": 0} and report.tasks == 0


def _faulty(
    after_calls: int, *, nan: bool = True, shape: tuple[int, ...] | None = None
) -> CallableOracle:
    """The composition oracle, failing after some calls (a transient fault, same identity)."""
    state = {"calls": 0}

    def fn(onehot: np.ndarray) -> dict[str, np.ndarray]:
        state["calls"] += 1
        out = composition_oracle_fn(onehot)
        if state["calls"] > after_calls:
            if shape is not None:
                return {HEAD: np.zeros(shape, np.float32)}
            out[HEAD][1, 32, 3] = np.nan if nan else np.inf  # inside the window
        return out

    return CallableOracle(
        fn,
        name="demo",
        input_length=16384,
        heads=(OutputHead(HEAD, 128, 64, N_TRACKS),),
        identity=composition_oracle().identity,
    )


def test_nan_predictions_are_refused_and_nothing_written_is_lost(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    recipe = small_recipe(tmp_path)
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, recipe)
    with pytest.raises(PredictionError, match=r"returned nan in the .* of track .* at chr\d:\d+"):
        build(store, oracle=_faulty(after_calls=9), part="baselines", progress=False)
    done = ChorusStore.open(store).read("baselines/done_rows")
    finished = (done == 32).all(axis=1)
    assert finished[:2].all() and not finished.all()  # 2 shards of 32 rows = 8 calls of 8
    before = _records(store, "baselines")
    # a clean oracle with the same identity resumes and touches only what was pending
    build(store, oracle=composition_oracle(), progress=False)
    after = _records(store, "baselines")
    np.testing.assert_array_equal(after["summary"][:64], before["summary"][:64])
    assert not np.isnan(after["summary"][finished.repeat(32)[: len(after["summary"])]]).all()

    fresh = tmp_path / "fresh.zarr"
    plan_small(fresh, demo_inputs, recipe)
    build(fresh, oracle=composition_oracle(), progress=False)
    for name, values in _records(fresh, "baselines").items():
        np.testing.assert_array_equal(values, after[name])


def test_inf_and_wrongly_shaped_predictions_are_refused(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    with pytest.raises(PredictionError, match="returned inf"):
        build(store, oracle=_faulty(0, nan=False), progress=False)
    with pytest.raises(PredictionError, match=r"shape \(8, 32, 40\).*expected \(8, 64, 40\)"):
        build(store, oracle=_faulty(0, shape=(8, 32, 40)), progress=False)
    assert (ChorusStore.open(store).read("baselines/done_rows") == 0).all()
    assert status(store).claims == []  # a refused build leaves no claims behind


def test_resume_with_other_weights_fasta_or_tracks_is_refused(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    recipe = small_recipe(tmp_path)
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, recipe)
    build(store, part="variants", progress=False)
    weights = tmp_path / "weights.pt"
    import torch

    state = torch.load(recipe.oracle["weights"], weights_only=True)
    state["head.2.bias"] += 0.01
    torch.save(state, weights)
    with pytest.raises(OracleMismatchError, match="weights_sha256"):
        build(store, weights=str(weights), progress=False)
    fasta = tmp_path / "g.fa"
    shutil.copy(demo_inputs.fasta, fasta)
    with fasta.open("r+b") as fh:  # same lengths, one base changed: the FAI still matches
        fh.seek(200)
        base = fh.read(1)
        fh.seek(200)
        fh.write(b"A" if base != b"A" else b"C")
    Path(str(fasta) + ".fai").unlink(missing_ok=True)
    with pytest.raises(GenomeMismatchError, match="Pass the FASTA"):
        build(store, fasta=fasta, progress=False)
    other = small_recipe(tmp_path, n_tracks=30)
    with pytest.raises(TrackTableMismatchError, match="differs"):
        build(store, recipe=other, progress=False)
    with pytest.raises(IncompleteStageError, match="chorus-store build"):
        reduce(store, progress=False)
    assert build(store, progress=False).rows_built["baselines"] > 0  # the original inputs resume


def test_a_second_writer_is_refused_and_a_dead_ones_claims_are_taken_over(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from chorus_store.store.claims import acquire;"
            "from chorus_store.store.location import Location;"
            "acquire(Location.of(sys.argv[1]), ['build/baselines/s000001-t0001'], store='s',"
            " command='another build'); print('held', flush=True); time.sleep(120)",
            str(store),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid} .*another build.*unlock"):
            build(store, oracle=composition_oracle(), progress=False)
        assert (ChorusStore.open(store).read("baselines/done_rows") == 0).all()
        # a disjoint part is not blocked
        build(store, oracle=composition_oracle(), part="variants", progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    report = build(store, oracle=composition_oracle(), progress=False)  # stale claim taken over
    assert report.rows_built["baselines"] == len(ChorusStore.open(store).positions)


def _wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError
        time.sleep(0.05)


def test_two_processes_build_disjoint_parts_and_overlap_is_refused(
    tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    store = tmp_path / "demo.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    a = subprocess.Popen(
        [*CLI, "build", str(store), "--part", "baselines", "--no-progress"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    locks = store / ".chorus-locks" / "build" / "baselines"
    _wait_for(lambda: locks.is_dir() and any(locks.iterdir()) or a.poll() is not None)
    b = subprocess.run(
        [*CLI, "build", str(store), "--part", "variants", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    overlap = subprocess.run(
        [*CLI, "build", str(store), "--no-progress"], env=env, capture_output=True, text=True
    )
    a_err = a.communicate()[1]
    assert a.returncode == 0, a_err
    assert b.returncode == 0, b.stderr
    if ChorusStore.open(store).read("baselines/done_rows").min() == 0 or overlap.returncode:
        assert overlap.returncode == 2 and "StoreLockedError" in overlap.stderr
    reduce(store, progress=False)
    npz = export(store, out=tmp_path / "out.npz").path
    assert npz.read_bytes() == small_build[1].read_bytes()


def test_adding_tracks_computes_only_the_new_tracks(
    tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    store = tmp_path / "demo.zarr"
    # 16 tracks: exactly the first track shard, so any write to it would touch old tracks
    plan_small(store, demo_inputs, small_recipe(tmp_path, n_tracks=16))
    build(store, progress=False)
    before = _records(store, "variants")
    added = add_tracks(store, small_recipe(tmp_path))
    assert added == 24
    with StoreFaults(url=store) as watch:  # records every key written, fails none
        build(store, progress=False)
    records = [k for k in watch.written if "/c/" in k and "/done_rows/" not in k]
    assert records, "the build wrote no records"
    # a record chunk's last index is its track shard: shard 0 (the old tracks) never written
    assert all(int(k.rsplit("/", 1)[1]) >= 1 for k in records), records
    after = _records(store, "variants")
    for name, values in before.items():
        np.testing.assert_array_equal(after[name][..., :16], values)
    reduce(store, progress=False)
    assert export(store, out=tmp_path / "o.npz").path.read_bytes() == small_build[1].read_bytes()


def test_adding_positions_and_snps_computes_only_them(small_copy: Path, tmp_path: Path) -> None:
    before = {g: _records(small_copy, g) for g in ("baselines", "variants")}
    n_pos = len(ChorusStore.open(small_copy).positions)
    table = tmp_path / "extra.tsv"
    table.write_text(
        "chrom\tpos\tstratum\n"
        + "".join(f"chr2\t{300_000 + 7_919 * i}\textra\n" for i in range(10))
    )
    assert add_positions(small_copy, read_rows_table(table, ("chrom", "pos", "stratum"))) == 10
    snps = tmp_path / "snps.tsv"
    s = ChorusStore.open(small_copy)
    from chorus_store.genome.fasta import Genome

    g = Genome(s.attrs["genome"]["fasta_path"])
    rows = [(p, g.base("chr3", p)) for p in range(500_001, 500_200, 37)]
    snps.write_text(
        "chrom\tpos\tref\talt\tstratum\n"
        + "".join(f"chr3\t{p}\t{r}\t{'A' if r != 'A' else 'G'}\textra\n" for p, r in rows)
    )
    add_variants(small_copy, read_rows_table(snps, ("chrom", "pos", "ref", "alt", "stratum")))
    oracle = small_recipe(tmp_path).load_oracle()
    report = build(small_copy, oracle=oracle, progress=False)
    assert report.rows_built == {"baselines": 10, "variants": len(rows)}
    assert report.sequences == 10 + 2 * len(rows)  # nothing else went through the model
    for group, records in before.items():
        after = _records(small_copy, group)
        for name, values in records.items():
            np.testing.assert_array_equal(after[name][: len(values)], values)
    st = status(small_copy)
    assert st.plan["positions"]["extra"] == {"planned": 10, "usable": 10}
    assert len(ChorusStore.open(small_copy).positions) == n_pos + 10
    reduce(small_copy, progress=False)
    export(small_copy, out=tmp_path / "o.npz")


def test_a_full_disk_fails_cleanly_and_the_build_resumes(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    # the disk fills after 16 chunk writes: the first baseline shard's records and done
    # marks (4 arrays x 3 track shards) land, the second one's do not
    with (
        StoreFaults(Fault("*/c/*", after=16, kind="full_disk"), url=store) as faults,
        pytest.raises(WriteError, match="disk is full.*re-run `chorus-store build"),
    ):
        build(store, oracle=composition_oracle(), progress=False)
    assert faults.failed
    done_before = ChorusStore.open(store).read("baselines/done_rows")
    assert 0 < (done_before > 0).sum() < done_before.size
    assert not list(store.rglob("*.partial"))
    build(store, oracle=composition_oracle(), progress=False)
    reduce(store, progress=False)
    export(store, out=tmp_path / "o.npz")


def test_a_growth_killed_midway_is_finished_by_the_next_writer(
    tmp_path: Path,
    demo_inputs: DemoInputs,
    small_build: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import zarr

    store = tmp_path / "demo.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path, n_tracks=20))
    build(store, progress=False)
    real_resize = zarr.Array.resize
    calls = {"n": 0}

    def dies_after_three(self, shape):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # stands for the process being killed here
        return real_resize(self, shape)

    monkeypatch.setattr(zarr.Array, "resize", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        add_tracks(store, small_recipe(tmp_path))
    monkeypatch.undo()
    from chorus_store.errors import SchemaError

    with pytest.raises(SchemaError, match="'add-tracks' was interrupted"):
        ChorusStore.open(store)  # readers are told, not served a half-grown store
    build(store, progress=False)  # a writer finishes the change, then builds the new tracks
    ChorusStore.open(store).validate()
    reduce(store, progress=False)
    assert export(store, out=tmp_path / "o.npz").path.read_bytes() == small_build[1].read_bytes()


def test_joint_track_oracles_never_split_a_row_shard(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    from chorus_store.build.tasks import plan_tasks

    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    s = ChorusStore.open(store, mode="r+")
    s.array("baselines/done_rows")[0, :16] = 32  # a kill left track shard 0 of row shard 0 done
    s = ChorusStore.open(store)
    split = plan_tasks(s, part="baselines")
    assert split[0].tracks == tuple(range(16, 40))
    joint = plan_tasks(s, part="baselines", joint_tracks=True)
    assert joint[0].tracks == tuple(range(40)) and joint[0].start == 0


def test_a_first_build_that_fails_before_any_row_does_not_pin_its_oracle(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    wrong = CallableOracle(
        lambda x: {HEAD: np.zeros((x.shape[0], 64, N_TRACKS - 1), np.float32)},  # a track short
        name="demo",
        input_length=16384,
        heads=(OutputHead(HEAD, 128, 64, N_TRACKS),),
        batch_size=8,
        identity="first-try-v1",
    )
    with pytest.raises(PredictionError, match="shape"):
        build(store, oracle=wrong, progress=False)
    assert (ChorusStore.open(store).read("baselines/done_rows") == 0).all()
    # the corrected oracle is accepted (it was refused with OracleMismatchError) ...
    build(store, oracle=composition_oracle(), part="variants", progress=False)
    pinned = ChorusStore.open(store).attrs["oracle"]["fingerprint"]
    assert pinned == composition_oracle().fingerprint
    # ... and once rows are built with it, the pin binds
    with pytest.raises(OracleMismatchError):
        build(store, oracle=wrong, progress=False)
