"""The reduce: chorus's grid rules, exactness against the stored values, resumption."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chorus_store import open_store, reduce
from chorus_store.reduce import grid_block, grid_row, read_columns
from chorus_store.store.core import ChorusStore
from chorus_store.store.schema import layer_sources

P = 10_000
reduce_module = importlib.import_module("chorus_store.reduce")  # the module, not the function


def chorus_to_cdf_row(arr: np.ndarray, n_points: int = P) -> np.ndarray:
    """chorus's ReservoirSampler.to_cdf_matrix for one exact (unthinned) track, verbatim rules."""
    row = np.zeros(n_points, dtype=np.float64)
    n = len(arr)
    if n == 0:
        return row
    if n >= n_points:
        return np.asarray(arr[np.linspace(0, n - 1, n_points, dtype=int)])
    return np.asarray(np.interp(np.linspace(0, 1, n_points), np.arange(n) / n, arr))


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(values=arrays(np.float32, st.integers(0, 25_000), elements=finite))
def test_grid_row_is_chorus_grid(values: np.ndarray) -> None:
    v = np.sort(values).astype(np.float64)
    ours = grid_row(v)
    assert np.array_equal(ours, chorus_to_cdf_row(v))
    n = len(v)
    if n == 0:
        assert (ours == 0).all()
        return
    assert ours[0] == v[0] and ours[-1] == v[-1]
    assert (np.diff(ours) >= 0).all()
    if n >= P:  # every slot is an exact order statistic of the sample
        assert np.isin(ours, v).all()
    elif v[0] != v[-1] and len(np.unique(v)) == n:
        # never padded: the first maximum sits where interpolation puts it (spec 5.4)
        assert int(np.argmax(ours)) == math.ceil((P - 1) * (n - 1) / n)


@settings(max_examples=40, deadline=None)
@given(
    block=arrays(
        np.float32,
        st.tuples(st.integers(0, 300), st.integers(1, 12)),
        elements=st.one_of(finite, st.just(np.nan)),
    ),
    cut=st.integers(0, 12),
    data=st.data(),
)
def test_grid_block_does_not_depend_on_partition(
    block: np.ndarray, cut: int, data: st.DataObject
) -> None:
    absolute = np.asarray(
        data.draw(st.lists(st.booleans(), min_size=block.shape[1], max_size=block.shape[1]))
    )
    whole_g, whole_n = grid_block(block, absolute, 500)
    cut = min(cut, block.shape[1])
    parts = [
        grid_block(block[:, a:b], absolute[a:b], 500) for a, b in ((0, cut), (cut, block.shape[1]))
    ]
    assert np.array_equal(whole_g, np.concatenate([p[0] for p in parts]))
    assert np.array_equal(whole_n, np.concatenate([p[1] for p in parts]))
    assert (whole_n == (~np.isnan(block)).sum(axis=0)).all()  # NaN = not sampled, not counted


def one_track_grids(block: np.ndarray, absolute: np.ndarray, n_points: int) -> np.ndarray:
    """The reduce before issue 10, verbatim: per track, a copy of the non-NaN values,
    sorted, widened to float64, gridded and narrowed back."""
    out = np.zeros((block.shape[1], n_points), np.float32)
    for j in range(block.shape[1]):
        col = np.ascontiguousarray(block[:, j])
        v = col[~np.isnan(col)]
        if absolute[j]:
            v = np.abs(v)
        v.sort()
        out[j] = grid_row(v.astype(np.float64), n_points).astype(np.float32)
    return out


@settings(max_examples=60, deadline=None)
@given(
    block=arrays(
        np.float32,
        st.tuples(st.integers(0, 700), st.integers(1, 6)),
        elements=st.one_of(finite, st.sampled_from([np.nan, 0.0, -0.0, 1.5, -1.5])),
    ),
    n_points=st.sampled_from([3, 50, 500]),
    data=st.data(),
)
def test_grid_block_is_byte_identical_to_the_one_track_path(
    block: np.ndarray, n_points: int, data: st.DataObject
) -> None:
    """Sorting in place, without a copy for NaN-free tracks, and taking order statistics
    in float32 changes no byte: not even the sign of a zero among ties (issue 10)."""
    absolute = np.asarray(
        data.draw(st.lists(st.booleans(), min_size=block.shape[1], max_size=block.shape[1]))
    )
    grids, _ = grid_block(block, absolute, n_points)
    assert grids.tobytes() == one_track_grids(block, absolute, n_points).tobytes()


def test_read_columns_is_the_transposed_concatenation_of_the_sources(
    small_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChorusStore.open(small_copy)
    for layer in ("summary", "effect", "perbin"):  # two sources (rows + gene rows), one
        sources = layer_sources(layer)
        want = np.concatenate([store.read(s)[..., 8:16].reshape(-1, 8) for s in sources]).T
        for read_bytes in (1, 10_000, 2**24):  # one chunk per read, a few, all at once
            monkeypatch.setattr(reduce_module, "_READ_BYTES", read_bytes)
            got = read_columns(store, sources, 8, 16)
            assert got.flags.c_contiguous and got.tobytes() == want.tobytes(), (layer, read_bytes)


def test_every_grid_is_the_exact_order_statistics_of_the_store(
    small_build: tuple[Path, Path],
) -> None:
    store_path, npz = small_build
    ds = open_store(store_path)
    z = np.load(npz, allow_pickle=False)
    signed = ds["tracks"].signed.values
    T = len(signed)
    base, var = ds["baselines"], ds["variants"]
    layers = {  # every stored record, one column per track (rows of all sources concatenated)
        "effect": np.concatenate([var.effect.values.reshape(-1, T), var.gene_effect.values]),
        "summary": np.concatenate([base.summary.values.reshape(-1, T), base.gene_summary.values]),
        "perbin": base.perbin.values.reshape(-1, T),
    }
    for layer, values in layers.items():
        for t in range(values.shape[1]):
            v = values[:, t]
            v = v[~np.isnan(v)].astype(np.float64)
            if layer == "effect" and not signed[t]:
                v = np.abs(v)
            expected = chorus_to_cdf_row(np.sort(v)).astype(np.float32)
            assert np.array_equal(z[f"{layer}_cdfs"][t], expected), (layer, t)
            assert z[f"{layer}_counts"][t] == len(v) == z[f"{layer}_retained"][t]
    # the CAGE tracks' summary skips cCRE positions; per-bin does not
    pos = ds["plan/positions"]
    usable = pos.usable.values
    n_ccre = int((usable & (pos.stratum.values == "ccre")).sum())
    cage = list(ds["tracks"].assay_type.values).index("CAGE")
    assert z["summary_counts"][cage] == usable.sum() - n_ccre
    assert z["perbin_counts"][cage] == usable.sum() * 32
    # RNA tracks: one summary per (position, gene), one effect per (SNP, gene) (spec 4.5)
    rna = list(ds["tracks"].layer.values).index("gene_expression")
    assert z["summary_counts"][rna] == int((ds["plan/position_genes"].row.values >= 0).sum()) > 0
    assert z["effect_counts"][rna] == int((ds["plan/variant_genes"].row.values >= 0).sum())
    assert np.isnan(base.summary.values[:, :, rna]).all()  # not sampled per position


def test_reduce_resumes_only_stale_blocks(small_copy: Path) -> None:
    store = ChorusStore.open(small_copy, mode="r+")
    grid_before = store.read("reductions/perbin/grid")
    store.array("reductions/perbin/fingerprint")[2] = ""
    store.array("reductions/perbin/grid")[16:24] = 0.0  # what an interrupted block may leave
    report = reduce(small_copy, progress=False)
    assert report.blocks_computed == {"effect": 0, "summary": 0, "perbin": 1}
    assert np.array_equal(ChorusStore.open(small_copy).read("reductions/perbin/grid"), grid_before)
    again = reduce(small_copy, progress=False)
    assert sum(again.blocks_computed.values()) == 0 and again.values_reduced == 0


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_reduce_result_does_not_depend_on_the_dask_scheduler(
    small_copy: Path, scheduler: str
) -> None:
    store = ChorusStore.open(small_copy, mode="r+")
    before = {x: store.read(f"reductions/{x}/grid") for x in ("effect", "summary", "perbin")}
    for layer in before:
        store.array(f"reductions/{layer}/fingerprint")[:] = ""
    reduce(small_copy, scheduler=scheduler, workers=2, progress=False)
    after = ChorusStore.open(small_copy)
    for layer, grid in before.items():
        assert np.array_equal(after.read(f"reductions/{layer}/grid"), grid)
