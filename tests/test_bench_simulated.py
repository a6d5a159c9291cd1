"""benchmarks/simulated.py on tiny shapes, so the benchmark cannot rot unnoticed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from chorus_store import Recipe
from chorus_store.demo import DemoInputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import simulated  # noqa: E402

# Borzoi's real track table, every 100th track (RNA ones among them: per-gene means run),
# at 1/8 of its input length, with a 5 ms forward pass
TINY = simulated.Simulated(
    "borzoi",
    0.005,
    n=2,
    chromosomes=("chr1", "chr2", "chr3"),
    input_length=65_536,
    tracks_every=100,
)


@pytest.fixture(scope="module")
def tiny_plan(
    tmp_path_factory: pytest.TempPathFactory, demo_inputs: DemoInputs
) -> tuple[Recipe, Path]:
    return simulated.plan_simulated(TINY, tmp_path_factory.mktemp("sim"), demo_inputs)


@pytest.mark.parametrize("array", simulated.ARRAYS)
def test_ratio_and_sequences_of_a_tiny_build(tiny_plan: tuple[Recipe, Path], array: str) -> None:
    r = simulated.measure(*tiny_plan, TINY.forward_s, array=array)
    assert r["array"] == array
    assert r["tracks"] == len(range(0, 7611, 100))
    assert r["heads"] == {"human": [1, 768, r["tracks"]]}
    assert r["planned_sequences"] > 0
    for run in ("zero_cost", "timed"):
        assert r[run]["sequences"] == r["planned_sequences"]
        assert r[run]["oracle_calls"] == r["planned_sequences"]  # model batch 1
    assert r["ideal_sequences_per_s"] == pytest.approx(200.0)
    # the forward pass sleeps at least 5 ms a sequence: the build cannot beat that
    assert 0 < r["ratio"] <= 1.0
    assert r["timed"]["oracle_seconds"] >= 0.005 * r["planned_sequences"]
    assert 0 < r["serial_cpu_ms_per_sequence"] < 10_000


@pytest.mark.parametrize("array", simulated.ARRAYS)
def test_simulated_alphagenome_returns_real_shapes_from_one_buffer(array: str) -> None:
    recipe = simulated.SIMULATED["alphagenome"].recipe_for(8_192)
    columns = simulated.requested_columns(recipe)
    assert sum(len(c) for c in columns.values()) == 5_168  # every real track, no padding
    oracle = simulated.SimulatedAccelerator(recipe, forward_s=0.0, array=array, columns=columns)
    onehot = np.zeros((1, 8_192, 4), np.float32)
    first = oracle._predict_batch(onehot, columns)
    second = oracle._predict_batch(onehot, columns)
    assert set(first) == set(columns)
    for name, cols in columns.items():
        head = recipe.heads[[h.name for h in recipe.heads].index(name)]
        assert tuple(first[name].shape) == (1, 8_192 // head.resolution_bp, len(cols))
        assert second[name] is first[name]  # made once: no per-call host cost
        values = np.asarray(first[name])
        assert values.dtype == np.float32
        assert np.isfinite(values).all() and (values > 0).all()
        assert values.min() < values.max()
    # base.predict takes the selected columns as they are (no copy of a full head)
    preds = oracle.predict(onehot, columns)
    assert np.shares_memory(preds["RNA_SEQ"], np.asarray(first["RNA_SEQ"]))
    assert len(oracle.calls_log) == 3


def test_serial_cpu_counts_the_model_threads_gaps_only() -> None:
    log = [(1, 0.0, 0.1), (2, 5.0, 5.0), (1, 0.3, 0.35), (1, 0.45, 0.5)]
    total, gaps = simulated.serial_cpu(log)
    assert gaps == 2 and total == pytest.approx(0.2 + 0.1)
    assert simulated.serial_cpu([]) == (0.0, 0)


def test_a_length_that_splits_a_bin_is_refused() -> None:
    with pytest.raises(SystemExit, match="multiple of 128 bp"):
        simulated.SIMULATED["alphagenome"].recipe_for(100_000)
