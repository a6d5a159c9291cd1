"""The ChromBPNet/BPNet adapter on tiny instances of the real architectures (spec §3).

The tiny models are the real layer graphs (chrombpnet's ``model_wo_bias`` and
bpnet-refactor's stranded BPNet with control inputs, 8 dilated layers as shipped) with 8
filters and random weights, saved as whole-model Keras 2 HDF5 files under the names the
adapter expects (``<ENCFF>.h5``, ``<BP id>_model.h5``), and loaded through
``Recipe.load_oracle`` as a real build loads them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from chorus_store import (
    Recipe,
    add_tracks,
    build,
    export,
    load_recipe,
    open_store,
    plan_store,
    reduce,
)
from chorus_store.demo import DemoInputs
from chorus_store.errors import RecipeError
from chorus_store.genome.fasta import Genome, one_hot
from chorus_store.genome.track_tables import chrombpnet_models
from chorus_store.oracles import chrombpnet as cb
from chorus_store.oracles.models import chrombpnet as cbm
from chorus_store.resources import data_dir
from chorus_store.testing.adapters import AdapterTests
from chorus_store.testing.models.chrombpnet import (
    ADDED,
    FILTERS,
    FIRST,
    JASPAR,
    keras2_layout,
    tiny_recipe,
    write_models,
)

# --------------------------------------------------------------------------------------
# tiny models on disk
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(registry TSV: the 9 accessibility models + 2 JASPAR rows, weights directory)."""
    root = tmp_path_factory.mktemp("chrombpnet")
    registry = root / "registry.tsv"
    pd.read_csv(JASPAR, sep="\t").iloc[:2].to_csv(registry, sep="\t", index=False)
    weights = root / "weights"
    weights.mkdir()
    write_models(weights, registry)
    return registry, weights


@pytest.fixture(scope="module")
def tiny_oracle(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The 11-model registry slice loaded through ``load()`` (Keras on TensorFlow), shared."""
    registry, weights = tiny
    return tiny_recipe(tmp_path_factory.mktemp("recipe"), registry, weights).load_oracle()


def _onehot(n: int, seed: int = 1) -> np.ndarray:
    x = np.eye(4, dtype=np.float32)[np.random.default_rng(seed).integers(0, 4, (n, 2114))]
    x[0, 100:160] = 0  # a run of N
    return x


def _direct(path: Path, onehot: np.ndarray, kind: str) -> np.ndarray:
    """The saved model, loaded whole by Keras and called directly; counts by numpy."""
    import keras
    import tensorflow as tf

    # the tiny BPNet's Lambda is a named function, which Keras 3 saves by name
    named = {"tf": tf, "_logsumexp_strands": cbm._logsumexp_strands}
    model = keras.models.load_model(str(path), compile=False, custom_objects=named, safe_mode=False)
    if kind == "chrombpnet":
        logits, log_counts = (t.numpy() for t in model(onehot, training=False))
        logits, total = logits[:, :, None], np.expm1(log_counts[:, 0])
    else:
        n = len(onehot)
        controls = [np.zeros((n, 1000, 2), np.float32), np.zeros((n, 2), np.float32)]
        logits, log_counts = (t.numpy() for t in model([onehot, *controls], training=False))
        total = np.exp(log_counts[:, 0]) - 2  # two pooled log1p tracks (chorus #120)
    flat = softmax(logits.reshape(len(logits), -1).astype(np.float64), axis=1)
    expected: np.ndarray = flat.reshape(logits.shape) * total[:, None, None]
    return expected


# --------------------------------------------------------------------------------------
# the count head
# --------------------------------------------------------------------------------------


def test_count_head_is_one_joint_softmax_times_the_pooled_total() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (3, 1000, 2))
    log_counts = rng.uniform(1, 6, (3, 1))
    got = cbm.expected_counts(logits.astype(np.float32), log_counts.astype(np.float32))
    joint = softmax(logits.reshape(3, -1), axis=1).reshape(3, 1000, 2)
    want = joint * (np.exp(log_counts[:, 0]) - 2)[:, None, None]
    np.testing.assert_allclose(got, want, rtol=2e-6)
    # the strands together carry the total, not twice it (chorus #120: 2.00x)
    np.testing.assert_allclose(got.sum(axis=(1, 2)), np.exp(log_counts[:, 0]) - 2, rtol=1e-6)

    one = cbm.expected_counts(logits[:, :, 0], log_counts[:, 0])  # one track: expm1 (#113)
    want_one = softmax(logits[:, :, 0], axis=1) * np.expm1(log_counts)
    np.testing.assert_allclose(one[:, :, 0], want_one, rtol=1e-12)
    summed = cbm.expected_counts(logits, np.c_[log_counts * 0.25, log_counts * 0.75])
    np.testing.assert_allclose(summed, want, rtol=1e-12)  # count columns summed first
    # no overflow where chorus's mean-centred float32 softmax would
    big = cbm.expected_counts(np.array([[0.0, 900.0, 1000.0]]), np.log1p([5.0]))
    np.testing.assert_allclose(big[0, :, 0], [0.0, 5.0 / (1 + np.exp(100)), 5.0], atol=1e-12)


# --------------------------------------------------------------------------------------
# (a) loading: tiny real-architecture models through load() equal the models called directly
# --------------------------------------------------------------------------------------


def test_tiny_models_load_and_match_the_saved_models(
    tiny: tuple[Path, Path], tiny_oracle: Any
) -> None:
    registry, weights = tiny
    oracle = tiny_oracle
    assert oracle.per_model and oracle.heads[0].n_columns == 11
    x = _onehot(37)  # two full batches of 16 and a padded one
    columns = np.array([9, 0, 10, 4])
    out = oracle.predict(x, {"profile": columns})["profile"]
    assert out.shape == (37, 1000, 4, 2) and out.dtype == np.float32
    models = chrombpnet_models(registry)
    for j, c in enumerate(columns):
        m = models[c]
        suffix = ".h5" if m["kind"] == "chrombpnet" else "_model.h5"
        want = _direct(weights / f"{m['accession']}{suffix}", x, m["kind"])
        np.testing.assert_allclose(out[:, :, j, : want.shape[2]], want, rtol=1e-5, atol=1e-9)
        if m["kind"] == "chrombpnet":
            assert not out[:, :, j, 1].any()  # accessibility: one strand, the other zero
    assert oracle.models_loaded[:4] == [models[c]["track_id"] for c in columns]
    # same model, same input, different neighbours in the batch: same values
    again = oracle.predict(x[5:6], {"profile": np.array([10])})["profile"]
    np.testing.assert_array_equal(again[0], out[5, :, 2:3])
    desc = oracle.describe()
    assert desc["adapter"] == "chrombpnet" and desc["models"] == 11
    assert len(desc["weights_sha256"]) == 64 and desc["device_type"] == "cpu"


def test_bpnet_lite_reads_the_same_files_and_gives_the_same_profiles(
    tiny: tuple[Path, Path], tiny_oracle: Any, tmp_path: Path
) -> None:
    registry, weights = tiny
    keras = tiny_oracle
    lite = tiny_recipe(tmp_path, registry, weights, framework="bpnet-lite").load_oracle()
    x = _onehot(16, seed=2)
    cols = {"profile": np.array([0, 4, 9, 10])}  # models the first test loaded
    a, b = keras.predict(x, cols)["profile"], lite.predict(x, cols)["profile"]
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-7)
    assert not b[:, :, :2, 1].any()
    assert lite.describe()["framework"].startswith("bpnet-lite")
    assert lite.fingerprint != keras.fingerprint  # another framework, other numerics


# --------------------------------------------------------------------------------------
# the real recipe: 753 tracks, one model each, in the head's column order
# --------------------------------------------------------------------------------------


def test_full_track_table_lines_up_with_the_models(tmp_path: Path) -> None:
    recipe = load_recipe("chrombpnet")
    (head,) = recipe.heads
    assert (head.name, head.resolution_bp, head.n_bins, head.n_strands) == ("profile", 1, 1000, 2)
    assert head.start_bp(recipe.input_length) == 557 and recipe.input_length == 2114
    assert recipe.oracle["per_model"] and recipe.strands == ["+", "-"]
    assert recipe.batch_size == 64 and recipe.max_n_fraction == 0.5
    frame = recipe.track_table().frame
    assert len(frame) == head.n_columns == 753
    assert frame["column"].tolist() == list(range(753))
    registry = [
        cb.ModelSpec(m["track_id"], m["kind"], m["accession"])
        for m in chrombpnet_models(recipe.tracks["path"])
    ]
    models = cb._column_models(recipe, "profile", registry)
    assert [models[c].track_id for c in range(753)] == frame["track_id"].tolist()
    assert [models[c].n_strands for c in range(753)] == frame["n_strands"].tolist()
    assert frame["layer"].value_counts().to_dict() == {
        "tf_binding": 744, "chromatin_accessibility": 9,
    }  # fmt: skip
    urls = pd.read_csv(JASPAR, sep="\t").drop_duplicates(["TF_NAME", "CELL_LINE"])["MODEL_URL"]
    assert [models[c].filename for c in range(9, 753)] == [u.rsplit("/", 1)[1] for u in urls]
    assert models[7].filename == "ENCFF574YLK.h5"  # DNASE:K562
    with pytest.raises(RecipeError, match="--weights"):
        recipe.load_oracle()
    with pytest.raises(RecipeError, match="753 of the 753 .*ENCFF984RAF.h5"):
        recipe.load_oracle(weights=str(tmp_path))


# --------------------------------------------------------------------------------------
# (b) end to end: plan → build → add tracks → build only the new models → reduce → export
# --------------------------------------------------------------------------------------


def test_end_to_end_on_the_demo_genome(
    tiny: tuple[Path, Path], tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    registry, weights = tiny
    first = tiny_recipe(tmp_path, registry, weights, tracks=FIRST, n_columns=4)
    store = tmp_path / "cbp.zarr"
    plan_store(store, first, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    report = build(store, progress=False)  # loads the oracle from the stored recipe

    second = tiny_recipe(tmp_path, registry, weights, tracks=FIRST + ADDED, n_columns=4)
    assert add_tracks(store, second) == 2
    oracle2 = second.load_oracle()
    assert isinstance(oracle2, cb.ChromBPNetOracle)
    report2 = build(store, oracle=oracle2, progress=False)
    assert oracle2.models_loaded == ADDED  # only the new models ran
    built = sum(report.rows_built.values()) + sum(report2.rows_built.values())
    busy = report.seconds + report2.seconds
    print(f"\nbuild: {built} rows of 2 models in {busy:.1f} s = {built / busy:.0f} rows/s "
          f"(oracle {report.oracle_seconds + report2.oracle_seconds:.1f} s)")  # fmt: skip
    ds = open_store(store)
    n_pos = int(ds["plan/positions"].usable.sum())
    n_var = int(ds["plan/variants"].usable.sum())
    assert report2.rows_built["baselines"] == len(ds["plan/positions"].pos)

    reduce(store, progress=False)
    z = np.load(export(store, out=tmp_path / "chrombpnet_pertrack.npz").path)
    order = FIRST + ADDED
    assert z["track_ids"].tolist() == order == second.track_table().frame["track_id"].tolist()
    layers = ["chromatin_accessibility", "tf_binding"] * 2
    assert z["layers_per_row"].tolist() == layers
    strands = np.array([1, 2, 1, 2])  # CHIP rows: two strands, one sample each
    assert z["summary_counts"].tolist() == (strands * n_pos).tolist()
    assert z["effect_counts"].tolist() == (strands * n_var).tolist()
    assert z["perbin_counts"].tolist() == (strands * 32 * n_pos).tolist()
    for family in ("effect_cdfs", "summary_cdfs", "perbin_cdfs"):
        assert z[family].shape == (4, 10000)
        assert np.isfinite(z[family]).all()

    # one stored value against the saved model called directly: sum of bins [250, 751)
    base = ds["baselines"]
    row = int(np.flatnonzero(ds["plan/positions"].usable.values)[0])
    genome = Genome(demo_inputs.fasta)
    x = one_hot(genome.window(str(base.chrom.values[row]), int(base.pos.values[row]), 2114))
    profile = _direct(weights / "BP000002.1_model.h5", x, "bpnet")[0]  # CHIP:GM12878:REST
    got = base.summary.sel(track="CHIP:GM12878:REST").values[row]
    np.testing.assert_allclose(got, profile[250:751].sum(axis=0), rtol=1e-5)
    assert np.isnan(base.summary.sel(track="DNASE:HepG2", strand="-").values).all()


# --------------------------------------------------------------------------------------
# (c) failure paths
# --------------------------------------------------------------------------------------


def test_missing_weights_are_refused_naming_the_files(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    registry, weights = tiny
    # no weights, an absent path: AdapterTests.test_missing_weights_say_what_to_download
    partial = tmp_path / "partial"
    shutil.copytree(weights, partial)
    (partial / "BP000001.1_model.h5").unlink()
    (partial / "ENCFF142IOR.h5").unlink()
    with pytest.raises(RecipeError, match=r"2 of the 11 .*ENCFF142IOR\.h5, BP000001\.1_model\.h5"):
        tiny_recipe(tmp_path, registry, weights).load_oracle(weights=str(partial))
    with pytest.raises(RecipeError, match="no model in the registry"):
        tiny_recipe(
            tmp_path, registry, weights, tracks=["CHIP:K562:CTCF"], n_columns=1
        ).load_oracle()
    with pytest.raises(RecipeError, match="framework"):
        tiny_recipe(tmp_path, registry, weights, framework="jax").load_oracle()


# column → (a model of the wrong shape written there, what the error says)
WRONG: dict[str, dict[int, tuple[Callable[[], Any], str]]] = {
    "tf_keras": {
        0: (lambda: cbm.chrombpnet_architecture(FILTERS, output_length=500), "returns"),
        9: (lambda: cbm.bpnet_architecture(2 * FILTERS), "not a loadable bpnet"),
        10: (lambda: cbm.chrombpnet_architecture(FILTERS), "weighted layers differ"),
    },
    "bpnet-lite": {
        0: (lambda: cbm.chrombpnet_architecture(FILTERS, n_dil_layers=7), "7 dilated layers"),
        9: (lambda: cbm.bpnet_architecture(2 * FILTERS), "16 filters"),
        10: (lambda: cbm.chrombpnet_architecture(FILTERS), "bpnet-lite can read"),
    },
}


@pytest.mark.parametrize("framework", sorted(WRONG))
def test_models_of_the_wrong_shape_are_refused(
    tiny: tuple[Path, Path], tmp_path: Path, framework: str
) -> None:
    registry, weights = tiny
    bad = tmp_path / "bad"
    shutil.copytree(weights, bad)
    models = chrombpnet_models(registry)
    for column, (make, _) in WRONG[framework].items():
        m = models[column]
        path = bad / (f"{m['accession']}.h5" if column < 9 else f"{m['accession']}_model.h5")
        make().save(path)
        keras2_layout(path)
    oracle = tiny_recipe(tmp_path, registry, bad, framework=framework).load_oracle()
    x = _onehot(16)
    for column, (_, match) in WRONG[framework].items():
        with pytest.raises(RecipeError, match=match):
            oracle.predict(x, {"profile": np.array([column])})
    assert oracle.predict(x, {"profile": np.array([1])})["profile"].shape == (16, 1000, 1, 2)


# --------------------------------------------------------------------------------------
# full size: the shipped architectures (512-filter ChromBPNet, 64-filter BPNet), once
# --------------------------------------------------------------------------------------


@pytest.mark.fullsize
def test_full_size_architectures(tmp_path: Path) -> None:
    registry = tmp_path / "registry.tsv"
    pd.read_csv(JASPAR, sep="\t").iloc[:1].to_csv(registry, sep="\t", index=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    models = chrombpnet_models(registry)
    cbm.chrombpnet_architecture().save(weights / f"{models[0]['accession']}.h5")
    keras2_layout(weights / f"{models[0]['accession']}.h5")
    for m in models[1:9]:  # the same bytes under the other accessibility names
        (weights / f"{m['accession']}.h5").symlink_to(weights / f"{models[0]['accession']}.h5")
    cbm.bpnet_architecture().save(weights / f"{models[9]['accession']}_model.h5")
    keras2_layout(weights / f"{models[9]['accession']}_model.h5")
    recipe = tiny_recipe(tmp_path, registry, weights, bpnet_filters=64, batch_size=64)
    x = _onehot(64)
    cols = {"profile": np.array([0, 9])}
    out = recipe.load_oracle().predict(x, cols)["profile"]
    assert out.shape == (64, 1000, 2, 2) and np.isfinite(out).all()
    lite = tiny_recipe(tmp_path, registry, weights, bpnet_filters=64, framework="bpnet-lite")
    np.testing.assert_allclose(lite.load_oracle().predict(x, cols)["profile"], out, rtol=1e-3)


def test_a_stored_registry_path_of_another_install_finds_this_installs_file() -> None:
    """The registry (also the [tracks] file) is shipped in builders/; a stored recipe names
    the planning machine's copy. Before: a worker installed elsewhere could not read it."""
    from chorus_store import load_recipe

    stored = load_recipe("chrombpnet").to_dict()
    shipped = data_dir("builders") / "chrombpnet" / "chrombpnet_JASPAR_metadata.tsv"
    elsewhere = "/nonexistent/site-packages/chorus_store/_data/builders/chrombpnet/"
    stored["tracks"]["path"] = elsewhere + shipped.name
    recipe = Recipe.from_stored(stored)
    assert recipe.tracks["path"] == str(shipped)
    assert cb._registry_path(recipe) == shipped
    stored["tracks"]["path"] = "/nonexistent/elsewhere/registry.tsv"  # not shipped: kept
    assert Recipe.from_stored(stored).tracks["path"] == "/nonexistent/elsewhere/registry.tsv"


class TestChromBPNetAdapter(AdapterTests):
    """The shared adapter tests on the tiny models, through Keras on TensorFlow (as chorus)."""

    adapter = "chrombpnet"
    download_hint = "needs the ChromBPNet/BPNet weights"
    absent_weights = "is not a directory"
    runs_on_torch = False

    @pytest.fixture(scope="class")
    def adapter_recipe(
        self, tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
    ) -> Recipe:
        registry, weights = tiny
        tmp = tmp_path_factory.mktemp("chrombpnet-kit")
        return tiny_recipe(tmp, registry, weights, tracks=FIRST, n_columns=4)


class TestChromBPNetTorchAdapter(TestChromBPNetAdapter):
    """The same, through bpnet-lite (PyTorch): its fingerprint records the torch numerics."""

    runs_on_torch = True

    @pytest.fixture(scope="class")
    def adapter_recipe(
        self, tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
    ) -> Recipe:
        registry, weights = tiny
        tmp = tmp_path_factory.mktemp("chrombpnet-kit-torch")
        return tiny_recipe(
            tmp, registry, weights, tracks=FIRST, n_columns=4, framework="bpnet-lite"
        )
