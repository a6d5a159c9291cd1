"""The export is byte-identical whatever the chunking, batching, workers and order (invariant 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus_store import build, export, reduce
from chorus_store.demo import DemoInputs

from .helpers import plan_small, run_all, small_recipe


@pytest.mark.parametrize(
    ("layout", "build_kwargs"),
    [
        (
            {
                "position_shard_rows": 7,
                "variant_shard_rows": 50,
                "tracks_per_shard": 32,
                "tracks_per_chunk": 32,
            },
            {"batch_size": 3},
        ),
        (
            {
                "position_shard_rows": 200,
                "variant_shard_rows": 8,
                "tracks_per_shard": 8,
                "tracks_per_chunk": 4,
            },
            {"batch_size": 40},
        ),
        ({}, {"workers": 2}),
    ],
    ids=["small-shards-batch3", "large-shards-batch40", "two-workers"],
)
def test_export_does_not_depend_on_chunks_batches_or_workers(
    tmp_path: Path,
    demo_inputs: DemoInputs,
    small_build: tuple[Path, Path],
    layout: dict[str, int],
    build_kwargs: dict[str, int],
) -> None:
    recipe = small_recipe(tmp_path, layout=layout)
    got = run_all(tmp_path / "demo.zarr", demo_inputs, recipe, tmp_path / "o.npz", **build_kwargs)
    assert got == small_build[1].read_bytes()


def test_export_does_not_depend_on_build_order(
    tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    store = tmp_path / "demo.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    oracle = small_recipe(tmp_path).load_oracle()
    build(store, part="variants", shard=(1, 2), oracle=oracle, progress=False)
    build(store, part="baselines", shard=(2, 3), oracle=oracle, progress=False)
    build(store, part="variants", shard=(0, 2), oracle=oracle, progress=False)
    build(store, part="baselines", oracle=oracle, progress=False)
    reduce(store, progress=False)
    assert export(store, out=tmp_path / "o.npz").path.read_bytes() == small_build[1].read_bytes()
