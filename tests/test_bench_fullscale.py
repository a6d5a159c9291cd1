"""benchmarks/fullscale.py at a tiny size: the store builder, its cache, and one run."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from chorus_store import export, reduce
from chorus_store.reduce import grid_row
from chorus_store.store.core import ChorusStore
from chorus_store.store.schema import layer_sources

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def fullscale() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the script imports its neighbour common.py
    spec = importlib.util.spec_from_file_location("fullscale", BENCH / "fullscale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fullscale"] = module  # its dataclasses and worker processes look it up
    spec.loader.exec_module(module)
    return module


def tiny(fullscale: ModuleType) -> Any:  # a fullscale.Scale (a module loaded by path)
    return fullscale.Scale(
        n_tracks=20, n_positions=100, n_variants=50, position_shard_rows=32,
        variant_shard_rows=32, tracks_per_shard=16, tracks_per_chunk=8,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


def test_the_store_is_built_once_and_rebuilt_when_stale(
    fullscale: ModuleType, cache: Path, tmp_path: Path
) -> None:
    scale = tiny(fullscale)
    store = fullscale.cached_store(scale, cache, workers=1)
    stamp = (store.parent / "complete.json").stat().st_mtime_ns
    assert fullscale.cached_store(scale, cache, workers=1) == store  # reused as it is
    assert (store.parent / "complete.json").stat().st_mtime_ns == stamp
    other = replace(scale, seed=11)  # another version of the values: another store
    assert fullscale.store_key(other) != fullscale.store_key(scale)
    (store.parent / "complete.json").unlink()  # an unfinished build is not trusted
    assert fullscale.cached_store(scale, cache, workers=1) == store
    assert (store.parent / "complete.json").stat().st_mtime_ns != stamp

    s = ChorusStore.open(store)
    assert len(s.tracks) == 20 and s.tracks.track_ids[0] == "ENCFF833POA"  # Enformer's table
    per = s.read("baselines/perbin")
    assert per.shape == (100, 1, 32, 20) and not np.isnan(per).any()
    assert (per >= 0).all() and (per == 0).any()  # positive, some exact zeros
    eff = s.read("variants/effect")
    assert (eff < 0).any() and (eff > 0).any() and abs(float(np.median(eff))) < 0.01
    # the values depend on the seed and the shard, not on the number of writers
    two = fullscale.build_store(tmp_path / "two.zarr", scale, workers=2)
    for name in ("baselines/perbin", "baselines/summary", "variants/effect"):
        assert ChorusStore.open(two).read(name).tobytes() == s.read(name).tobytes(), name


def test_reduce_and_export_run_unchanged_on_it(
    fullscale: ModuleType, cache: Path, tmp_path: Path
) -> None:
    store = fullscale.cached_store(tiny(fullscale), cache, workers=1)
    reduce(store, progress=False)
    npz = export(store, out=tmp_path / "out").path
    s = ChorusStore.open(store)
    signed = s.tracks.signed
    with np.load(npz, allow_pickle=False) as z:
        assert len(z["track_ids"]) == 20
        for layer in ("effect", "summary", "perbin"):
            values = np.concatenate([s.read(src).reshape(-1, 20) for src in layer_sources(layer)])
            for t in (0, 9, 19):
                v = values[:, t]
                v = np.abs(v) if layer == "effect" and not signed[t] else v
                want = grid_row(np.sort(v).astype(np.float64)).astype(np.float32)
                assert z[f"{layer}_cdfs"][t].tobytes() == want.tobytes(), (layer, t)


def test_one_run_prints_the_table(
    fullscale: ModuleType, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fullscale.run_benchmark(tiny(fullscale), cache=cache, workers=1, baseline_tracks=4)
    printed = capsys.readouterr().out
    assert "| reduce + export |" in printed and "goal <= 180 s" in printed
    assert out["reduce"]["blocks"] == 9 and out["reduce"]["values"] == 20 * (100 * 33 + 50)
    assert out["export"]["npz_mb"] > 0 and out["in_ram"]["tracks_timed"] == 4
    json.dumps(out)  # the whole record is JSON, as the script prints it
