"""Oracle adapters: the PyTorch loading path on the demo model, the callable adapter."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import chorus_store
import chorus_store.oracles
from chorus_store import CallableOracle, OutputHead, Recipe, load_recipe
from chorus_store.errors import PredictionError, RecipeError
from chorus_store.genome.fasta import one_hot
from chorus_store.oracles.models.demo import DemoConvNet
from chorus_store.oracles.registry import BUILT_IN, ENTRY_POINT_GROUP, adapters
from chorus_store.testing.models.demo import DEMO_DIR, DEMO_TOML


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
    from chorus_store.testing.models.enformer import enformer_recipe, save_tiny_torch
    from chorus_store.testing.models.enformer import random_onehot as enformer_onehot

    enformer = enformer_recipe(save_tiny_torch(tmp_path), batch_size=1).load_oracle(device="cpu")
    xe = enformer_onehot(1, seed=2)
    a, b = (_at_threads(n, lambda: enformer.predict(xe)["human"]) for n in (1, 2))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- the registry
def _recipe_with_adapter(tmp_path: Path, adapter: str, **oracle: object) -> Recipe:
    """The demo recipe with ``[oracle] adapter = adapter`` (and more keys)."""
    data = copy.deepcopy(DEMO_TOML)
    data["oracle"].update({"adapter": adapter, **oracle})
    return Recipe.from_dict(data, base=DEMO_DIR)


def _install_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, code: str,
                  entry_points: dict[str, str]) -> None:  # fmt: skip
    """A real installed distribution on a tmp ``sys.path`` entry: a module and a
    dist-info whose entry_points.txt declares ``entry_points`` (name → module:attr)."""
    (tmp_path / f"{module}.py").write_text(code)
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))


THIRD_PARTY = """
import numpy as np
from chorus_store import CallableOracle


def load(recipe, *, weights, device):
    def ones(x):
        head = recipe.heads[0]
        return np.ones(head.shape(x.shape[0]), np.float32)

    return CallableOracle(ones, name=recipe.name, input_length=recipe.input_length,
                          heads=recipe.heads, batch_size=recipe.batch_size, identity="ones v1")
"""


def test_pyproject_declares_the_built_in_adapters_as_entry_points() -> None:
    """One table in two places (an editable install made before the entry points has
    none): they must agree, and each adapter module is named as its recipe names it."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == BUILT_IN
    package = Path(chorus_store.oracles.__file__).parent
    assert all((package / f"{name}.py").is_file() for name in BUILT_IN)
    assert set(BUILT_IN) <= set(adapters())


def test_an_unknown_adapter_names_the_registered_ones(tmp_path: Path) -> None:
    listed = "alphagenome, borzoi, callable, chrombpnet, enformer, legnet, pytorch, sei"
    with pytest.raises(RecipeError, match=f"unknown adapter 'nosuch'; registered: {listed}"):
        _recipe_with_adapter(tmp_path, "nosuch").load_oracle()


def test_a_third_party_adapter_loads_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_dist(tmp_path, monkeypatch, "ones_oracle", THIRD_PARTY,
                  {"ones": "ones_oracle:load"})  # fmt: skip
    assert adapters()["ones"] == "ones_oracle:load"
    oracle = _recipe_with_adapter(tmp_path, "ones").load_oracle()
    assert oracle.describe() == {"adapter": "callable", "identity": "ones v1"}
    y = oracle.predict(_random_onehot(2))["128bp"]
    assert y.shape == (2, 64, 40) and (y == 1).all()


def test_an_entry_point_cannot_take_a_built_in_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_dist(tmp_path, monkeypatch, "fake_enformer", THIRD_PARTY,
                  {"enformer": "fake_enformer:load"})  # fmt: skip
    with pytest.raises(RecipeError, match="claims the name of the built-in adapter"):
        _recipe_with_adapter(tmp_path, "enformer").load_oracle()
    # the other adapters are unaffected
    assert load_recipe("demo").load_oracle(device="cpu").describe()["adapter"] == "pytorch"


def test_an_adapter_whose_framework_is_missing_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "import chorus_store_no_such_framework\n\ndef load(recipe, *, weights, device): ...\n"
    _install_dist(tmp_path, monkeypatch, "needs_more", code, {"needy": "needs_more:load"})
    with pytest.raises(RecipeError, match="needs 'chorus_store_no_such_framework', which is not"):
        _recipe_with_adapter(tmp_path, "needy").load_oracle()


def test_facts_are_what_a_build_checks_of_an_oracle() -> None:
    """``Oracle.facts`` is the one place (``build.cluster.oracle_facts`` is gone)."""
    from chorus_store.build import cluster

    oracle = load_recipe("demo").load_oracle(device="cpu")
    facts = oracle.facts()
    assert facts == {
        "name": "demo",
        "fingerprint": oracle.fingerprint,
        "description": oracle.describe(),
        "per_model": False,
        "joint_tracks": False,
    }
    assert not hasattr(cluster, "oracle_facts")


def test_the_torch_numerics_are_set_in_one_place() -> None:
    """The cuDNN autotuner switch (copied into seven adapters before) is written once."""
    package = Path(chorus_store.__file__).parent
    sites = [
        f"{p.relative_to(package)}:{i}"
        for p in package.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "cudnn.benchmark = False" in line
    ]
    assert len(sites) == 1 and sites[0].startswith("oracles/common.py:"), sites
