"""The tests every oracle adapter must pass, written once: subclass :class:`AdapterTests`
in ``tests/test_adapter_<name>.py`` and give it a recipe over a tiny real model.

Needs pytest (the base class defines fixtures).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from chorus_store.errors import PredictionError, RecipeError
from chorus_store.oracles.base import Oracle, OutputHead
from chorus_store.oracles.registry import adapters, find_adapter
from chorus_store.recipes import Recipe

__all__ = ["AdapterTests", "random_onehot"]


def random_onehot(n: int, length: int, seed: int = 0) -> np.ndarray:
    """``(n, length, 4)`` float32 one-hot of random bases, ~4% N (all-zero rows)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 4, (n, length))
    out = np.eye(4, dtype=np.float32)[base]
    out[rng.random((n, length)) < 0.04] = 0.0
    return out


def _table_columns(recipe: Recipe) -> dict[str, np.ndarray]:
    """Per head, the columns the recipe's track table reads (a per-model adapter has
    models for those only)."""
    frame = recipe.track_table().frame
    return {
        h.name: np.unique(frame.loc[frame["head"] == h.name, "column"].to_numpy(np.int64))
        for h in recipe.heads
        if (frame["head"] == h.name).any()
    }


class AdapterTests:
    """What each adapter is checked for, against its tiny real model.

    A subclass sets :attr:`adapter` (the recipe's ``[oracle] adapter``), :attr:`download_hint`
    (a regex of what the error for a recipe without weights says to fetch) and, where it
    differs, :attr:`absent_weights`; and defines the fixture ``adapter_recipe``: a recipe
    whose weights exist (class- or module-scoped, so the model is written once). The
    oracle is loaded once per class (on CPU).

    The shared tests: the recipe loads through the registry into an oracle of its shape
    and a fingerprint of plain data (torch adapters: the oneDNN flag recorded); one-hot
    input, N rows included, gives every head its declared shape, finite float32; a
    missing weights path is a :class:`RecipeError` saying what to download; a head whose
    declared shape is not what the model returns is a :class:`PredictionError`.
    """

    adapter: ClassVar[str]
    #: regex the RecipeError for a recipe without weights matches (what to download)
    download_hint: ClassVar[str]
    #: regex the RecipeError for a weights path that does not exist matches
    absent_weights: ClassVar[str] = "does not exist"
    #: whether a head declared with one more bin (or column) than the model returns is
    #: caught; a per-model scalar head returns exactly the requested columns, so no
    #: declaration can disagree with it (LegNet)
    wrong_shape_detectable: ClassVar[bool] = True
    #: the model runs on torch, so its fingerprint records the numerics select_device fixed
    runs_on_torch: ClassVar[bool] = True

    @pytest.fixture(scope="class")
    def oracle(self, adapter_recipe: Recipe) -> Any:
        oracle = adapter_recipe.load_oracle(device="cpu")
        yield oracle
        oracle.close()

    def test_the_recipe_loads_through_the_registry(
        self, adapter_recipe: Recipe, oracle: Oracle
    ) -> None:
        assert adapter_recipe.oracle["adapter"] == self.adapter
        assert self.adapter in adapters() and callable(find_adapter(self.adapter))
        assert (oracle.name, oracle.input_length) == (
            adapter_recipe.name,
            adapter_recipe.input_length,
        )
        assert oracle.heads == adapter_recipe.heads
        assert oracle.batch_size == adapter_recipe.batch_size
        facts = oracle.facts()
        assert re.fullmatch("[0-9a-f]{64}", facts["fingerprint"])
        json.dumps(facts)  # plain data: a cluster worker returns it to the coordinator
        description = oracle.describe()
        if self.runs_on_torch:  # on CPU: oneDNN off, deterministic algorithms on
            assert str(description.get("runtime")).startswith("torch "), description
            assert description.get("onednn") is False, description
            assert description.get("deterministic") is True, description

    def test_one_hot_input_gives_every_head_its_shape(
        self, adapter_recipe: Recipe, oracle: Oracle
    ) -> None:
        x = random_onehot(2, oracle.input_length, seed=11)
        columns = _table_columns(adapter_recipe)
        out = oracle.predict(x, columns)
        assert set(out) == set(columns)
        for name, cols in columns.items():
            head = oracle.head(name)
            y = out[name]
            want = head.shape(2, len(cols))
            assert y.shape == want and y.dtype == np.float32, head.name
            assert np.isfinite(y).all(), head.name
        with pytest.raises(ValueError, match="one-hot input"):
            oracle.predict(x[:, 1:])

    def test_missing_weights_say_what_to_download(
        self, adapter_recipe: Recipe, tmp_path: Path
    ) -> None:
        without = dataclasses.replace(
            adapter_recipe,
            oracle={k: v for k, v in adapter_recipe.oracle.items() if k != "weights"},
        )
        with pytest.raises(RecipeError, match=self.download_hint):
            without.load_oracle(device="cpu")
        with pytest.raises(RecipeError, match=self.absent_weights):
            adapter_recipe.load_oracle(weights=str(tmp_path / "absent"), device="cpu")

    def test_a_head_of_the_wrong_shape_is_a_prediction_error(
        self, adapter_recipe: Recipe, oracle: Oracle
    ) -> None:
        if not self.wrong_shape_detectable:
            pytest.skip("a per-model scalar head returns exactly the columns asked for")
        head = next((h for h in oracle.heads if not h.is_scalar), oracle.heads[0])
        wrong: OutputHead = (
            dataclasses.replace(head, n_columns=head.n_columns + 1)
            if head.is_scalar
            else dataclasses.replace(head, n_bins=head.n_bins + 1)
        )
        # the same loaded model, told its head is one bin (column) larger than it is
        misdeclared = copy.copy(oracle)
        misdeclared.heads = tuple(wrong if h is head else h for h in oracle.heads)
        x = random_onehot(1, oracle.input_length, seed=12)
        # a scalar head: every column (one more than the model has); binned: the table's
        columns = (
            np.arange(wrong.n_columns)
            if head.is_scalar
            else _table_columns(adapter_recipe)[head.name]
        )
        with pytest.raises(PredictionError, match=rf"returned shape .* head '{head.name}'"):
            misdeclared.predict(x, {head.name: columns})
