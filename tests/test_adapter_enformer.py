"""Enformer adapter: tiny models in the real on-disk formats, through the real ``load()``.

PyTorch: a tiny ``enformer_pytorch.Enformer`` (the package's own class and config, small
``dim``/``depth``, the real 896-bin target and 5,313-track human head) written with
``save_pretrained`` as a Hugging Face directory, the layout of
EleutherAI/enformer-official-rough. TensorFlow: a tiny SavedModel with TF-Hub's interface
(``.model.predict_on_batch`` on ``(B, 393216, 4)`` returning ``{'human', 'mouse'}``); no
TensorFlow Enformer package exists here, so its layers are a stand-in, its interface and
format are the real ones.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from chorus_store import Recipe, build, export, load_recipe, open_store, plan_store, reduce
from chorus_store.demo import DemoInputs
from chorus_store.errors import RecipeError
from chorus_store.genome.fasta import Genome, one_hot
from chorus_store.oracles.enformer import TRUNK_INPUT_BP, EnformerTorchOracle
from chorus_store.resources import data_dir

ENFORMER_DIR = data_dir("builders") / "enformer"
TARGETS = ENFORMER_DIR / "enformer_human_targets.txt"
L = 393_216
TRIM = (L - TRUNK_INPUT_BP) // 2  # 98,304 bp cut from each side before the trunk
BINS, TRACKS = 896, 5313
#: the real architecture, shrunk: 128 bp bins (7 downsamplings) and the real heads
TINY = {
    "dim": 24,
    "depth": 1,
    "heads": 1,
    "attn_dim_key": 8,
    "dim_divisible_by": 4,
    "target_length": BINS,
    "output_heads": {"human": TRACKS},
}


def _random_onehot(n: int, seed: int = 0, length: int = L) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bases = np.frombuffer(b"ACGTN", np.uint8)
    seqs = [bases[rng.choice(5, length, p=[0.24] * 4 + [0.04])].tobytes() for _ in range(n)]
    return one_hot(seqs)  # N -> all-zero rows, as chorus encodes them


def _save_tiny_torch(directory: Path, seed: int = 0, **overrides: Any) -> Path:
    """A randomly initialised tiny Enformer, every weight non-trivial, saved like the hub's."""
    from enformer_pytorch import Enformer

    torch.manual_seed(seed)
    model = Enformer.from_hparams(**{**TINY, **overrides})
    with torch.no_grad():  # upstream zero-initialises attention outputs; BN starts at identity
        for name, p in model.named_parameters():
            if "to_out" in name:
                p.normal_(0.0, 0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    # the official weights are a pytorch_model.bin (its shared trunk/stem aliases rule out
    # safetensors for this class)
    model.save_pretrained(directory, safe_serialization=False)
    return directory


def _save_tiny_tf(directory: Path, *, wrapped: bool = True, seed: int = 0) -> Path:
    """A SavedModel with TF-Hub Enformer's interface and output layout."""
    import tensorflow as tf

    class Trunk(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(seed)
            self.w = tf.Variable(rng.normal(0, 0.05, (128 * 4, 8)).astype(np.float32))
            self.human = tf.Variable(rng.normal(0, 0.3, (8, TRACKS)).astype(np.float32))
            self.mouse = tf.Variable(rng.normal(0, 0.3, (8, 1643)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, L, 4], tf.float32)])  # type: ignore[untyped-decorator]
        def predict_on_batch(self, x: Any) -> dict[str, Any]:
            # like the hub model: central 196,608 bp, 128 bp bins, central 896 bins, softplus
            x = x[:, TRIM : TRIM + TRUNK_INPUT_BP]
            h = tf.nn.gelu(tf.reshape(x, [-1, TRUNK_INPUT_BP // 128, 128 * 4]) @ self.w)
            h = h[:, (1536 - BINS) // 2 : (1536 + BINS) // 2]
            return {
                "human": tf.nn.softplus(h @ self.human),
                "mouse": tf.nn.softplus(h @ self.mouse),
            }

    trunk = Trunk()
    root = tf.Module()
    root.model = trunk
    tf.saved_model.save(root if wrapped else trunk, str(directory))
    return directory


def _recipe(
    weights: Path | None,
    *,
    framework: str = "pytorch",
    tracks: Path = TARGETS,
    batch_size: int = 2,
    oracle: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
) -> Recipe:
    """The shipped recipe with test weights, batch and (optionally) a generated demo plan."""
    import tomllib

    data = tomllib.loads((ENFORMER_DIR / "recipe.toml").read_text())
    data["oracle"].update(framework=framework, batch_size=batch_size, use_tf_gamma=False)
    if weights is not None:
        data["oracle"]["weights"] = str(weights)
    data["oracle"].update(oracle or {})
    data["tracks"]["path"] = str(tracks)
    if sampling is not None:  # 393 kb windows fit the demo genome's chr1/chr2 only
        data["plan"] = {
            "source": "generated",
            "assembly": "chorus-store-demo-v1",
            "sampling": sampling,
        }
        data["layout"] = {
            "position_shard_rows": 8,
            "variant_shard_rows": 8,
            "tracks_per_shard": 4,
            "tracks_per_chunk": 2,
        }
    return Recipe.from_dict(data, base=ENFORMER_DIR)


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_torch(tmp_path_factory.mktemp("enformer-hf"))


@pytest.fixture(scope="module")
def tf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_tf(tmp_path_factory.mktemp("enformer-tfhub"))


# --------------------------------------------------------------------------------------
# (a) the real formats load through load() and match the upstream model called directly
# --------------------------------------------------------------------------------------


def test_pytorch_weights_load_through_load_and_match_the_upstream_model(torch_dir: Path) -> None:
    from enformer_pytorch import Enformer

    oracle = _recipe(torch_dir).load_oracle(device="cpu")
    assert isinstance(oracle, EnformerTorchOracle) and oracle.batch_size == 2
    x = _random_onehot(3, seed=1)
    y = oracle.predict(x)["human"]
    assert y.shape == (3, BINS, TRACKS) and y.dtype == np.float32 and (y >= 0).all()
    # the upstream class, loaded on its own, on the same two padded batches of the cropped input
    model = Enformer.from_pretrained(str(torch_dir), local_files_only=True).eval()
    crop = torch.from_numpy(x[:, TRIM : TRIM + TRUNK_INPUT_BP])
    batches = [crop[:2], torch.cat([crop[2:], torch.zeros_like(crop[2:])])]
    with torch.inference_mode():
        direct = torch.cat([model(b)["human"] for b in batches])[:3].numpy()
    np.testing.assert_array_equal(y, direct)
    # only the central 196,608 bp reach the trunk, like the TF-Hub model
    flanks = x.copy()
    flanks[:, :TRIM] = flanks[:, :TRIM][:, ::-1]
    flanks[:, TRIM + TRUNK_INPUT_BP :] = 0.0
    np.testing.assert_array_equal(oracle.predict(flanks[:2])["human"], y[:2])
    desc = oracle.describe()
    assert desc["framework"] == "pytorch" and desc["device_type"] == "cpu"
    assert desc["config"]["dim"] == 24 and desc["config"]["output_heads"] == {"human": TRACKS}
    assert len(desc["weights_sha256"]) == 64 and desc["versions"]["enformer_pytorch"]


def test_use_tf_gamma_reaches_every_attention_layer(tmp_path: Path) -> None:
    from enformer_pytorch.modeling_enformer import Attention

    # 192 relative-position features per head, as in the official model (1536 / 8 heads)
    weights = _save_tiny_torch(tmp_path / "gamma", dim=192, attn_dim_key=8)
    oracle = _recipe(weights, batch_size=1, oracle={"use_tf_gamma": True}).load_oracle(device="cpu")
    attention = [m for m in oracle.model.modules() if isinstance(m, Attention)]  # type: ignore[attr-defined]
    assert attention and all(m.use_tf_gamma for m in attention)
    assert oracle.describe()["config"]["use_tf_gamma"] is True
    # (a forward pass with the gammas, which needs the crop's 1,536 trunk positions, is the
    # full-size test's: at dim 192 it costs more than this whole file may)


def test_tensorflow_savedmodel_loads_through_load_and_matches_a_direct_call(tf_dir: Path) -> None:
    import tensorflow as tf

    oracle = _recipe(tf_dir, framework="tensorflow").load_oracle(device="cpu")
    x = _random_onehot(3, seed=3)
    y = oracle.predict(x)["human"]
    assert y.shape == (3, BINS, TRACKS) and y.dtype == np.float32
    hub = tf.saved_model.load(str(tf_dir))  # chorus: model.predict_on_batch(x)['human']
    padded = np.concatenate([x, np.zeros_like(x[:1])])
    direct = np.concatenate(
        [hub.model.predict_on_batch(tf.constant(padded[i : i + 2]))["human"] for i in (0, 2)]
    )[:3]
    np.testing.assert_array_equal(y, direct)
    desc = oracle.describe()
    assert desc["framework"] == "tensorflow" and desc["device_type"] == "cpu"
    assert desc["signature"]["outputs"]["human"] == [None, BINS, TRACKS]
    assert desc["signature"]["input"] == [None, L, 4]


def test_a_bare_savedmodel_without_the_hub_wrapper_loads_too(tmp_path: Path) -> None:
    bare = _save_tiny_tf(tmp_path / "bare", wrapped=False)  # chorus accepts both layouts
    oracle = _recipe(bare, framework="tensorflow", batch_size=1).load_oracle(device="cpu")
    assert oracle.predict(_random_onehot(1))["human"].shape == (1, BINS, TRACKS)


# --------------------------------------------------------------------------------------
# the two frameworks and the full track table line up
# --------------------------------------------------------------------------------------


def test_both_frameworks_give_the_human_head_of_the_full_track_table(
    torch_dir: Path, tf_dir: Path
) -> None:
    shipped = load_recipe("enformer")
    table = shipped.track_table()
    (head,) = shipped.heads
    # the full table: row i is the targets file's row i, read from column i of "human"
    targets = pd.read_csv(TARGETS, sep="\t")
    assert len(table) == len(targets) == head.n_columns == TRACKS
    assert table.track_ids == targets["identifier"].tolist()
    assert (table.frame["head"] == "human").all() and (table.frame["resolution_bp"] == 128).all()
    assert table.frame["column"].tolist() == list(range(TRACKS))
    assert Counter(table.layers) == {
        "chromatin_accessibility": 684,
        "tf_binding": 2101,
        "histone_marks": 1890,
        "tss_activity": 638,
    }
    assert (head.name, head.resolution_bp, head.n_bins) == ("human", 128, BINS)
    assert head.start_bp(L) == 139_264 == (L - BINS * 128) // 2
    x = _random_onehot(2, seed=4)
    fingerprints = set()
    for framework, weights in (("pytorch", torch_dir), ("tensorflow", tf_dir)):
        recipe = _recipe(weights, framework=framework)
        assert recipe.track_table().sha256() == table.sha256() and recipe.heads == shipped.heads
        oracle = recipe.load_oracle(device="cpu")
        out = oracle.predict(x)
        assert list(out) == ["human"] and out["human"].shape == (2, BINS, TRACKS)
        fingerprints.add(oracle.fingerprint)
    assert len(fingerprints) == 2  # two runtimes are two numerics, never mixed in one store


# --------------------------------------------------------------------------------------
# (b) end to end on the demo genome
# --------------------------------------------------------------------------------------

#: about 16 positions and 8 SNPs on chr1/chr2, margins wider than half a 393 kb window
E2E_SAMPLING = {
    "n_random": 5,
    "n_ccre": 5,
    "n_tss": 3,
    "n_gene_body": 3,
    "n_snps": 6,
    "chromosomes": ["chr1", "chr2"],
    "ccre_chromosomes": ["chr1", "chr2"],
    "random_margin_bp": 200_000,
    "random_fallback_margin_bp": 200_000,
    "snp_margin_bp": 200_000,
}


def _subset_targets(path: Path) -> tuple[Path, list[int]]:
    """Two tracks of each layer from the real targets file, CAGE first (not column order)."""
    targets = pd.read_csv(TARGETS, sep="\t")
    table = load_recipe("enformer").track_table()
    layers = np.asarray(table.layers)
    order = ["tss_activity", "chromatin_accessibility", "histone_marks", "tf_binding"]
    rows = [int(i) for layer in order for i in np.flatnonzero(layers == layer)[[0, -1]]]
    targets.iloc[rows].to_csv(path, sep="\t", index=False)
    return path, rows


def test_plan_build_reduce_export_on_the_demo_genome(
    tmp_path: Path, demo_inputs: DemoInputs, torch_dir: Path
) -> None:
    tracks, columns = _subset_targets(tmp_path / "targets_subset.txt")
    recipe = _recipe(torch_dir, tracks=tracks, sampling=E2E_SAMPLING)
    store = tmp_path / "enformer.zarr"
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    report = build(store, progress=False, device="cpu")
    reduce(store, progress=False)
    z = np.load(export(store, out=tmp_path / "enformer_pertrack.npz"))
    ds = open_store(store)
    positions, variants = ds["plan/positions"], ds["plan/variants"]
    n_pos, n_var = int(positions.usable.sum()), int(variants.usable.sum())
    assert n_pos >= 10 and n_var >= 5  # the plan is small but not empty
    assert report.rows_built["baselines"] == len(positions.pos)
    assert report.sequences == n_pos + 2 * n_var and report.seconds > 0
    # track order = the recipe's track table (CAGE first), values from the targets' columns
    targets = pd.read_csv(TARGETS, sep="\t")
    assert z["track_ids"].tolist() == targets["identifier"].iloc[columns].tolist()
    assert ds["tracks"].column.values.tolist() == columns
    assert z["layers_per_row"].tolist() == [
        "tss_activity", "tss_activity", "chromatin_accessibility", "chromatin_accessibility",
        "histone_marks", "histone_marks", "tf_binding", "tf_binding",
    ]  # fmt: skip
    for family in ("effect", "summary", "perbin"):
        assert z[f"{family}_cdfs"].shape == (8, 10_000)
    n_ccre = int((positions.usable.values & (positions.stratum.values == "ccre")).sum())
    assert z["summary_counts"].tolist() == [n_pos - n_ccre] * 2 + [n_pos] * 6  # CAGE routing
    assert z["perbin_counts"].tolist() == [32 * n_pos] * 8
    assert z["effect_counts"].tolist() == [n_var] * 8
    # one stored summary against the model run by hand: DNase, 3 bins around bin 448
    row = int(np.flatnonzero(positions.usable.values)[0])
    base = ds["baselines"]
    chrom, pos = str(base.chrom.values[row]), int(base.pos.values[row])
    window = one_hot([Genome(demo_inputs.fasta).window(chrom, pos, L)])
    oracle = recipe.load_oracle(device="cpu")
    track = z["track_ids"][2]
    want = oracle.predict(window)["human"][0, 447:450, columns[2]].astype(np.float64).sum()
    got = base.summary.sel(track=track).values[row]
    np.testing.assert_allclose(got, np.float32(want), rtol=1e-5)


# --------------------------------------------------------------------------------------
# (c) failure paths
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["pytorch", "tensorflow"])
def test_missing_weights_name_what_to_download(tmp_path: Path, framework: str) -> None:
    recipe = _recipe(None, framework=framework)
    hint = "enformer-official-rough" if framework == "pytorch" else "deepmind/enformer/1"
    with pytest.raises(RecipeError, match=hint):
        recipe.load_oracle(device="cpu")
    with pytest.raises(RecipeError, match="does not exist"):
        recipe.load_oracle(weights=str(tmp_path / "absent"), device="cpu")
    (tmp_path / "empty").mkdir()
    required = "config.json" if framework == "pytorch" else "saved_model.pb"
    with pytest.raises(RecipeError, match=f"hold no {required}"):
        recipe.load_oracle(weights=str(tmp_path / "empty"), device="cpu")
    with pytest.raises(RecipeError, match="framework must be"):
        _recipe(tmp_path, framework="jax").load_oracle(device="cpu")


def test_pytorch_weights_of_the_wrong_shape_are_refused(torch_dir: Path, tmp_path: Path) -> None:
    # config.json and the tensors disagree (a head of 100 tracks in the config)
    bad = tmp_path / "bad"
    shutil.copytree(torch_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "output_heads": {"human": 100}}))
    with pytest.raises(RecipeError, match="do not load"):
        _recipe(bad).load_oracle(device="cpu")
    # a consistent model whose head is not the recipe's 5,313 tracks
    small = _save_tiny_torch(tmp_path / "small", output_heads={"human": 7})
    with pytest.raises(RecipeError, match="return 896 bins x 7 tracks"):
        _recipe(small).load_oracle(device="cpu")
    # a tensor missing from the checkpoint (from_pretrained alone would only warn)
    holed = tmp_path / "holed"
    shutil.copytree(torch_dir, holed)
    state = torch.load(holed / "pytorch_model.bin", weights_only=True)
    del state["_heads.human.0.bias"]
    torch.save(state, holed / "pytorch_model.bin")
    with pytest.raises(RecipeError, match=r"missing_keys: \['_heads.human.0.bias'\]"):
        _recipe(holed).load_oracle(device="cpu")
    # the recipe asks for TF gammas the tiny trunk cannot use, or a head it lacks
    with pytest.raises(RecipeError, match="use_tf_gamma needs the official trunk"):
        _recipe(torch_dir, oracle={"use_tf_gamma": True}).load_oracle(device="cpu")
    recipe = _recipe(torch_dir)
    mouse = {**recipe.heads[0].as_dict(), "name": "mouse", "n_columns": 1643}
    data = {**recipe.to_dict(), "oracle": {**recipe.oracle, "heads": [mouse]}}
    with pytest.raises(RecipeError, match="the Enformer weights .* have \\['human'\\]"):
        Recipe.from_dict(data, base=ENFORMER_DIR).load_oracle(device="cpu")


def test_tensorflow_savedmodels_of_the_wrong_shape_are_refused(
    tf_dir: Path, tmp_path: Path
) -> None:
    recipe = _recipe(tf_dir, framework="tensorflow")

    def with_head(**changes: Any) -> Recipe:
        head = {**recipe.heads[0].as_dict(), **changes.pop("head", {})}
        oracle = {**recipe.oracle, **changes, "heads": [head]}
        return Recipe.from_dict({**recipe.to_dict(), "oracle": oracle}, base=ENFORMER_DIR)

    # the recipe's window is not the SavedModel's input
    with pytest.raises(RecipeError, match="input_length 196608"):
        with_head(input_length=196_608, head={"offset_bp": None}).load_oracle(device="cpu")
    # the recipe's head is not the SavedModel's output
    with pytest.raises(RecipeError, match="return 896 bins x 5313 tracks"):
        with_head(head={"n_columns": 5000}).load_oracle(device="cpu")
    with pytest.raises(RecipeError, match="returns \\['human', 'mouse'\\]"):
        with_head(head={"name": "dog"}).load_oracle(device="cpu")
    # a head that is not centred in the window
    with pytest.raises(RecipeError, match="binned and centred"):
        with_head(head={"offset_bp": 0}).load_oracle(device="cpu")
    # a SavedModel that is not Enformer's
    import tensorflow as tf

    other = tf.Module()
    other.v = tf.Variable(1.0)
    tf.saved_model.save(other, str(tmp_path / "other"))
    with pytest.raises(RecipeError, match="no predict_on_batch"):
        _recipe(tmp_path / "other", framework="tensorflow").load_oracle(device="cpu")


# --------------------------------------------------------------------------------------
# the full-size architecture, once (deselected by default: -m fullsize)
# --------------------------------------------------------------------------------------


@pytest.mark.fullsize
def test_full_size_enformer_through_load(tmp_path: Path) -> None:
    """The official architecture (dim 1536, 11 layers, TF gammas) with random weights."""
    from enformer_pytorch import Enformer

    model = Enformer.from_hparams(output_heads={"human": TRACKS, "mouse": 1643})
    model.save_pretrained(tmp_path / "full", safe_serialization=False)
    del model
    oracle = _recipe(tmp_path / "full", batch_size=1, oracle={"use_tf_gamma": True}).load_oracle(
        device="cpu"
    )
    assert oracle.predict(_random_onehot(1))["human"].shape == (1, BINS, TRACKS)
