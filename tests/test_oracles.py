"""Oracle adapters: the PyTorch loading path on the demo model, the callable adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chorus_store import CallableOracle, OutputHead, load_recipe
from chorus_store.errors import PredictionError, RecipeError
from chorus_store.genome.fasta import one_hot
from chorus_store.oracles.models.demo import DemoConvNet


def _random_onehot(n: int, length: int = 16_384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bases = np.frombuffer(b"ACGT", np.uint8)
    return one_hot([bases[rng.integers(0, 4, length)].tobytes() for _ in range(n)])


def test_demo_recipe_loads_the_state_dict_through_the_torch_adapter() -> None:
    recipe = load_recipe("demo")
    oracle = recipe.load_oracle(device="cpu")
    assert oracle.input_length == 16_384 and oracle.heads == (OutputHead("128bp", 128, 64, 40),)
    out = oracle.predict(_random_onehot(3))
    y = out["128bp"]
    assert set(out) == {"128bp"} and y.shape == (3, 64, 40) and y.dtype == np.float32
    assert (y >= 0).all()  # softplus head, like Enformer
    # identical to running the module by hand on the same weights
    model = DemoConvNet(**oracle.config)  # type: ignore[attr-defined]
    model.load_state_dict(torch.load(recipe.oracle["weights"], weights_only=True))
    model.eval()
    x = torch.from_numpy(np.concatenate([_random_onehot(3), np.zeros((5, 16_384, 4), np.float32)]))
    with torch.inference_mode():
        direct = model(x.transpose(1, 2).contiguous()).numpy()[:3]
    np.testing.assert_array_equal(y, direct)


def test_a_sequences_prediction_does_not_depend_on_its_batch() -> None:
    oracle = load_recipe("demo").load_oracle(device="cpu")
    x = _random_onehot(11, seed=3)
    together = oracle.predict(x)["128bp"]
    alone = np.concatenate([oracle.predict(x[i : i + 1])["128bp"] for i in range(11)])
    np.testing.assert_array_equal(together, alone)
    assert oracle.calls == 2 + 11  # fixed model batches of 8, padded


def test_fingerprint_tracks_weights_and_numerics(tmp_path: Path) -> None:
    recipe = load_recipe("demo")
    a = recipe.load_oracle(device="cpu")
    state = torch.load(recipe.oracle["weights"], weights_only=True)
    state["stem.bias"] += 1e-6
    torch.save(state, tmp_path / "w.pt")
    b = recipe.load_oracle(weights=str(tmp_path / "w.pt"), device="cpu")
    assert a.fingerprint != b.fingerprint
    assert a.describe()["weights_sha256"] != b.describe()["weights_sha256"]


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(DemoConvNet(n_tracks=5).state_dict(), tmp_path / "w.pt")
    with pytest.raises(RecipeError, match="do not fit"):
        load_recipe("demo").load_oracle(weights=str(tmp_path / "w.pt"))
    with pytest.raises(RecipeError, match="do not exist"):
        load_recipe("demo").load_oracle(weights=str(tmp_path / "absent.pt"))
    with pytest.raises(RecipeError, match="no recipe named"):
        load_recipe("no-such-oracle")


def test_callable_oracle_checks_shapes() -> None:
    good = CallableOracle(
        lambda x: np.ones((x.shape[0], 4, 2), np.float32),
        name="c",
        input_length=10,
        heads=(OutputHead("1bp", 1, 4, 2),),
        batch_size=2,
    )
    assert good.predict(np.zeros((3, 10, 4), np.float32))["1bp"].shape == (3, 4, 2)
    bad = CallableOracle(
        lambda x: np.ones((x.shape[0], 5, 2), np.float32),
        name="c",
        input_length=10,
        heads=(OutputHead("1bp", 1, 4, 2),),
        batch_size=2,
    )
    with pytest.raises(PredictionError, match=r"shape \(2, 5, 2\)"):
        bad.predict(np.zeros((1, 10, 4), np.float32))
    with pytest.raises(ValueError, match="one-hot input"):
        good.predict(np.zeros((1, 9, 4), np.float32))


def _at_threads(n: int, fn):  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_cpu_predictions_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """What lets N workers share a machine's cores without changing a bit (oneDNN off)."""
    oracle = load_recipe("demo").load_oracle(device="cpu")
    assert oracle.describe()["onednn"] is False
    x = _random_onehot(8, seed=5)
    one, two, four = (_at_threads(n, lambda: oracle.predict(x)["128bp"]) for n in (1, 2, 4))
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, four)
    # the tiny real Enformer too (convolutions, attention, batch norm)
    from tests.test_adapter_enformer import _random_onehot as enformer_onehot
    from tests.test_adapter_enformer import _recipe, _save_tiny_torch

    enformer = _recipe(_save_tiny_torch(tmp_path), batch_size=1).load_oracle(device="cpu")
    xe = enformer_onehot(1, seed=2)
    a, b = (_at_threads(n, lambda: enformer.predict(xe)["human"]) for n in (1, 2))
    np.testing.assert_array_equal(a, b)
