"""Records computed where the predictions are: one implementation (array API) for numpy
and torch, equal to the numpy reference, deterministic, and overlapped with the model.

The accelerator code path runs here on CPU torch tensors (``records_on="device"``): the
same array-API statements a CUDA build runs, minus the device.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from chorus_store import CallableOracle, OutputHead, build, export, reduce
from chorus_store.arrays import HostCopy, transferred
from chorus_store.build.records import BlockIndex, GeneSlot, Records, TrackStats
from chorus_store.demo import DemoInputs
from chorus_store.store.core import ChorusStore

from .helpers import HEAD, N_TRACKS, plan_small, small_recipe

#: the stated tolerance between the device path and the numpy reference: the records
#: are float64 sums rounded to float32, so they may differ by the last float32 bit
MAX_ULP = 1


def _random_block(seed: int, rows: int = 5, bins: int = 64) -> tuple[np.ndarray, BlockIndex]:
    rng = np.random.default_rng(seed)
    pred = rng.lognormal(0, 1.5, (rows, bins, N_TRACKS)).astype(np.float32)
    drawn = rng.integers(-1, bins, (rows, 1, 32))
    gene_bins = rng.integers(-1, bins, (rows, 32))
    slots = [
        GeneSlot(i, int(rng.integers(rows)), rng.integers(0, bins, int(rng.integers(1, 9))))
        for i in range(7)
    ]
    return pred, BlockIndex(rows, [128], drawn, gene_bins, slots)


def _stats(tmp_path: Path, tracks: np.ndarray) -> TrackStats:
    table = small_recipe(tmp_path).track_table()
    return TrackStats(table, tracks, (OutputHead(HEAD, 128, 64, N_TRACKS),))


@pytest.mark.parametrize("subset", [False, True], ids=["all-tracks", "every-third-track"])
def test_torch_records_equal_the_numpy_reference(tmp_path: Path, subset: bool) -> None:
    tracks = np.arange(0, N_TRACKS, 3) if subset else np.arange(N_TRACKS)
    stats = _stats(tmp_path, tracks)
    pred, index = _random_block(1)
    labels = [f"row{i}" for i in range(index.rows)]
    want = stats.records_of({HEAD: pred}, index, labels)
    # the same statements on torch tensors, given every column of the head (what an
    # adapter returns) and, when a subset, only the requested columns
    variants = [torch.from_numpy(pred)]
    if subset:
        variants.append(torch.from_numpy(np.ascontiguousarray(pred[:, :, stats.columns[HEAD]])))
    for t in variants:
        rec = stats.block_records([(HEAD, t)], index)
        assert all(isinstance(a, torch.Tensor) for a in rec)  # computed in torch, not numpy
        got = stats.place(Records(**HostCopy(rec._asdict()).result()), index, labels)
        for w, g in zip(want, got, strict=True):
            w32, g32 = np.asarray(w, np.float32), np.asarray(g, np.float32)
            assert np.array_equal(np.isnan(w32), np.isnan(g32))
            ok = ~np.isnan(w32)
            np.testing.assert_array_max_ulp(w32[ok], g32[ok], maxulp=MAX_ULP)
    # and the reference itself: a window sum and an exon mean written out by hand
    summary, perbin, genes = want
    j = int(np.flatnonzero(tracks == 0)[0])  # chromatin track 0: 501 bp -> bins 31..33
    np.testing.assert_allclose(summary[2, 0, j], pred[2, 31:34, 0].astype(np.float64).sum())
    col = int(stats.gene_positions[0])  # a gene_expression track
    s = index.slots[3]
    np.testing.assert_allclose(genes[3, col], pred[s.batch_row, s.bins, tracks[col]].mean())
    assert perbin is not None and index.bins is not None
    not_drawn = index.bins[:, 0, :] < 0
    assert not_drawn.any() and np.isnan(perbin[:, 0][not_drawn][:, j]).all()  # not drawn: NaN
    r, k = np.argwhere(~not_drawn)[0]
    assert perbin[r, 0, k, j] == pred[r, index.bins[r, 0, k], 0]


@pytest.mark.parametrize("subset", [False, True], ids=["one-run-of-columns", "scattered"])
def test_both_ways_to_the_exon_sums_agree(tmp_path: Path, subset: bool) -> None:
    """'gather' (accelerators) and 'ranges' (host) group the float64 sum differently:
    within the stated tolerance of each other, on numpy and torch, and both equal to a
    plain mean over the slot's bins (a bin listed twice counts twice)."""
    tracks = np.arange(0, N_TRACKS, 3) if subset else np.arange(N_TRACKS)
    stats = _stats(tmp_path, tracks)
    pred, index = _random_block(3)
    index.slots.append(GeneSlot(7, 1, np.array([5, 6, 7, 6, 7, 30, 2])))  # runs, repeats
    labels = [str(i) for i in range(index.rows)]
    got = {}
    for way in ("gather", "ranges"):
        stats.exon_sums = way
        for name, p in (("numpy", pred), ("torch", torch.from_numpy(pred))):
            rec = stats.block_records([(HEAD, p)], index)
            got[way, name] = stats.place(
                Records(**HostCopy(rec._asdict()).result()), index, labels
            )[2]
    genes = stats.gene_positions
    want = np.stack(
        [pred[s.batch_row, s.bins][:, tracks[genes]].astype(float).mean(0) for s in index.slots]
    )
    for g in got.values():
        np.testing.assert_array_max_ulp(
            g[:, genes].astype(np.float32), want.astype(np.float32), maxulp=MAX_ULP
        )
    np.testing.assert_array_equal(got["gather", "numpy"], got["gather", "torch"])


def test_a_rows_records_do_not_depend_on_the_rest_of_its_block(tmp_path: Path) -> None:
    stats = _stats(tmp_path, np.arange(N_TRACKS))
    pred, index = _random_block(2, rows=6)
    labels = [str(i) for i in range(6)]
    for xp_pred in (pred, torch.from_numpy(pred)):
        whole = stats.place(
            Records(**HostCopy(stats.block_records([(HEAD, xp_pred)], index)._asdict()).result()),
            index,
            labels,
        )
        other = pred.copy()
        other[[0, 1, 3, 4, 5]] = np.random.default_rng(9).lognormal(size=other[[0]].shape)
        alone = stats.records_of({HEAD: other}, index, labels)
        # this table has per-bin and gene records
        assert whole[1] is not None and alone[1] is not None
        assert whole[2] is not None and alone[2] is not None
        np.testing.assert_array_equal(whole[0][2], alone[0][2])
        np.testing.assert_array_equal(whole[1][2], alone[1][2])
        on_row2 = [i for i, s in enumerate(index.slots) if s.batch_row == 2]
        np.testing.assert_array_equal(whole[2][on_row2], alone[2][on_row2])


def test_the_device_path_builds_the_same_npz_for_any_batch_size(
    tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    """The demo model (torch) through the accelerator code path on CPU tensors: the same
    NPZ bytes as the numpy path, for two build batch sizes; records within 1 ulp."""
    recipe = small_recipe(tmp_path)
    oracle = recipe.load_oracle(device="cpu")
    for batch_size in (3, 40):
        store = tmp_path / f"b{batch_size}.zarr"
        plan_small(store, demo_inputs, recipe)
        build(store, oracle=oracle, batch_size=batch_size, records_on="device", progress=False)
        reduce(store, progress=False)
        npz = export(store, out=tmp_path / f"b{batch_size}.npz").path.read_bytes()
        assert npz == small_build[1].read_bytes()
    got, want = ChorusStore.open(tmp_path / "b3.zarr"), ChorusStore.open(small_build[0])
    for name in ("baselines/summary", "baselines/perbin", "variants/effect"):
        g, w = got.read(name), want.read(name)
        assert np.array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_max_ulp(g[~np.isnan(g)], w[~np.isnan(w)], maxulp=MAX_ULP)


def test_the_model_runs_the_next_batch_while_the_last_is_reduced(
    tmp_path: Path, demo_inputs: DemoInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overlap: with a slow host half (the reducer thread), model calls start while it
    is busy with an earlier batch, instead of after it."""
    build_module = importlib.import_module("chorus_store.build.runner")
    from tests.helpers import composition_oracle_fn

    calls: list[float] = []
    reducing: list[tuple[float, float]] = []

    def model(onehot: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(time.perf_counter())
        return composition_oracle_fn(onehot)

    real_call = build_module._Reducer.__call__

    def slow_reducer(self: object, item: tuple[object, ...]) -> None:
        t0 = time.perf_counter()
        time.sleep(0.05)
        real_call(self, item)
        reducing.append((t0, time.perf_counter()))

    monkeypatch.setattr(build_module._Reducer, "__call__", slow_reducer)
    oracle = CallableOracle(
        model,
        name="demo",
        input_length=16384,
        heads=(OutputHead(HEAD, 128, 64, N_TRACKS),),
        batch_size=8,
        identity="composition-v1",
    )
    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    threads = threading.active_count()
    build(store, part="baselines", oracle=oracle, progress=False)
    overlapped = sum(any(a < c < b for a, b in reducing) for c in calls)
    # all but the first few calls (before the reducer's queue fills) overlap a reduction
    assert len(calls) > 10 and overlapped >= len(calls) - 4, (overlapped, len(calls))
    assert threading.active_count() == threads  # the pipeline's threads are gone


def test_host_copy_counts_what_crosses_and_passes_numpy_through() -> None:
    transferred.reset()
    t = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    a = np.ones(5)
    out = HostCopy({"t": t, "a": a, "none": None}).result()
    assert out["a"] is a and out["none"] is None
    np.testing.assert_array_equal(out["t"], t.numpy())
    assert transferred.bytes == 12 * 8 and transferred.copies == 1


def test_records_on_is_checked(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    from chorus_store.errors import UsageError

    store = tmp_path / "s.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    with pytest.raises(UsageError, match="records_on must be"):
        build(store, records_on="gpu", progress=False)
    with pytest.raises(UsageError, match="single-process"):
        build(store, records_on="device", workers=2, progress=False)
