"""The Sei adapter: a tiny instance of the real architecture, saved like the released
``sei.pth`` (DataParallel(NonStrandSpecific(Sei)) keys), loaded through ``load()``.

What is checked: predictions equal a direct call of the network (strand-averaged) and
chorus's projection formula; the full-size key layout is the released one; the full
21,947-track table lines up with the model's outputs; effects are histone-equalised
exactly as sei-framework's ``sc_hnorm_varianteffect`` (restated here in numpy) before
differencing and re-projection; plan → build → reduce → export on the demo genome; the
refusals of bad weights.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from chorus_store import Recipe, build, export, open_store, plan_store, reduce
from chorus_store.demo import DemoInputs
from chorus_store.errors import RecipeError
from chorus_store.oracles.models.sei import SEI_CLASSES, SEI_PROFILES, NonStrandSpecific, Sei
from chorus_store.oracles.sei import SeiOracle, load
from chorus_store.testing.adapters import AdapterTests
from chorus_store.testing.models.sei import (
    HISTONE,
    N_PROFILES,
    SEI_DIR,
    TINY,
    TINY_NAMES,
    tiny_network,
    tiny_recipe,
    write_weights,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Any:
    """The tiny model's ops are microseconds long: with 2 intra-op threads on 2 shared cores
    (the build's prefetch and writer threads run beside them) they spend ~30x longer
    waiting for each other than computing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_weights(tmp_path_factory.mktemp("sei-weights"))


def random_onehot(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(n, 4096))]


def chorus_projection(profiles: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """chorus's ``SeiProjector.project``: dot with each row, over the row norm, first 40."""
    out: np.ndarray = (np.dot(profiles, projection.T) / np.linalg.norm(projection, axis=1))[:, :40]
    return out


def sc_hnorm(ref: np.ndarray, alt: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sei-framework ``utils.sc_hnorm_varianteffect``'s equalisation, restated."""
    s_ref, s_alt = ref[:, h].sum(axis=1), alt[:, h].sum(axis=1)
    mean = s_ref * 0.5 + s_alt * 0.5
    ref_adj, alt_adj = ref.copy(), alt.copy()
    ref_adj[:, h] = ref[:, h] * (mean / s_ref)[:, None]
    alt_adj[:, h] = alt[:, h] * (mean / s_alt)[:, None]
    return ref_adj, alt_adj


# ------------------------------------------------------------------------------ (a)
def test_tiny_sei_loads_and_equals_the_network_called_directly(weights: Path) -> None:
    oracle = tiny_recipe(weights).load_oracle(weights=str(weights / "model"), device="cpu")
    assert isinstance(oracle, SeiOracle)
    x = random_onehot(4)  # exactly one model batch
    got = oracle.predict(x)
    net = Sei(n_genomic_features=N_PROFILES, **TINY).eval()
    state = torch.load(weights / "model" / "sei.pth", weights_only=True)
    net.load_state_dict({k.removeprefix("module.model."): v for k, v in state.items()})
    xt = torch.from_numpy(x).transpose(1, 2).contiguous()
    with torch.inference_mode():  # selene's NonStrandSpecific(mode="mean"), written out
        want = ((net(xt) + net(torch.flip(xt, dims=(1, 2)))) / 2).numpy()
        forward_only = net(xt).numpy()
    assert got["profiles"].shape == (4, N_PROFILES) and got["classes"].shape == (4, 40)
    assert np.array_equal(got["profiles"], want)
    assert not np.array_equal(want, forward_only)  # the strands really differ
    projection = np.load(weights / "model" / "projvec_targets.npy")
    np.testing.assert_allclose(
        got["classes"], chorus_projection(want, projection), rtol=1e-6, atol=1e-7
    )
    # five sequences: the last block is zero-padded, the first four are unchanged
    five = oracle.predict(random_onehot(5))
    assert np.array_equal(five["profiles"][:4], got["profiles"])
    fwd = tiny_recipe(weights, strand_average=False).load_oracle(weights=str(weights))
    assert np.array_equal(fwd.predict(x)["profiles"], forward_only)
    assert fwd.fingerprint != oracle.fingerprint
    desc = oracle.describe()
    assert desc["adapter"] == "sei" and desc["config"]["channels"] == [8, 8, 12]
    assert len(desc["weights_sha256"]) == 64 and desc["device_type"] == "cpu"


def test_full_size_port_has_the_released_checkpoint_layout() -> None:
    """``DataParallel(NonStrandSpecific(Sei()))``: the 38 keys of the released sei.pth."""
    c = {"lconv1.0": (480, 4, 9), "lconv1.1": (480, 480, 9), "conv1.0": (480, 480, 9),
         "conv1.2": (480, 480, 9), "lconv2.2": (640, 480, 9), "lconv2.3": (640, 640, 9),
         "conv2.1": (640, 640, 9), "conv2.3": (640, 640, 9), "lconv3.2": (960, 640, 9),
         "lconv3.3": (960, 960, 9), "conv3.1": (960, 960, 9), "conv3.3": (960, 960, 9),
         **{f"dconv{i}.1": (960, 960, 5) for i in range(1, 6)},
         "classifier.0": (SEI_PROFILES, 960 * 16),
         "classifier.2": (SEI_PROFILES, SEI_PROFILES)}  # fmt: skip
    expected = {}
    for name, shape in c.items():
        expected[f"module.model.{name}.weight"] = shape
        expected[f"module.model.{name}.bias"] = shape[:1]
    with torch.device("meta"):
        wrapped = torch.nn.DataParallel(NonStrandSpecific(Sei()))
    got = {k: tuple(v.shape) for k, v in wrapped.state_dict().items()}
    assert got == expected


def test_full_track_table_lines_up_with_the_model_outputs(tmp_path: Path) -> None:
    names = tmp_path / "target.names"
    assays = ["DNase", "H3K27ac", "CTCF", "ATAC-seq", "H3K9me3"]
    names.write_text("".join(f"Cell{i} | {assays[i % 5]} | ID:{i}\n" for i in range(SEI_PROFILES)))
    data = tomllib.loads((SEI_DIR / "recipe.toml").read_text())
    data["tracks"]["target_names"] = str(names)
    recipe = Recipe.from_dict(data, base=SEI_DIR)
    table = recipe.track_table()
    frame = table.frame
    assert len(table) == SEI_PROFILES + SEI_CLASSES == 21947
    heads = {h.name: h for h in recipe.heads}
    with torch.device("meta"):  # the released defaults, without allocating 3.5 GB
        released = Sei().config
    assert heads["profiles"].n_columns == SEI_PROFILES == released["n_genomic_features"]
    assert heads["classes"].n_columns == SEI_CLASSES and recipe.input_length == 4096
    prof, cls = frame[frame["head"] == "profiles"], frame[frame["head"] == "classes"]
    assert prof.index.tolist() == list(range(SEI_PROFILES))  # profiles first, in order
    assert prof["column"].tolist() == list(range(SEI_PROFILES))
    assert cls["column"].tolist() == list(range(SEI_CLASSES))
    assert frame["resolution_bp"].eq(0).all() and frame["track_id"].is_unique
    assert table.track_ids[0] == "TA#Cell0@DNase@ID:0"
    assert table.track_ids[SEI_PROFILES] == "CA#PC1@Polycomb / Heterochromatin@Polycomb-repressed@0"
    assert recipe.plan["variants_set"] == "snps_gene_anchored"


# ------------------------------------------------------------------------------ effects
def test_effects_are_histone_equalised_like_sei_framework(weights: Path) -> None:
    oracle = tiny_recipe(weights).load_oracle(weights=str(weights))
    assert isinstance(oracle, SeiOracle)
    n_tracks = N_PROFILES + SEI_CLASSES
    ref_seq, alt_seq = random_onehot(6, seed=1), random_onehot(6, seed=2)
    p_ref, p_alt = oracle.predict(ref_seq), oracle.predict(alt_seq)

    def stats(p: dict[str, np.ndarray]) -> np.ndarray:  # scalar heads: the value itself
        return np.concatenate([p["profiles"], p["classes"]], axis=1)[:, None, :].astype(float)

    ref, alt = stats(p_ref), stats(p_alt)
    ref[5], alt[5] = np.nan, np.nan  # a variant whose window was unusable
    eq_ref, eq_alt = oracle.effect_inputs(ref, alt, np.arange(n_tracks))
    want_ref, want_alt = sc_hnorm(p_ref["profiles"][:5], p_alt["profiles"][:5], HISTONE)
    assert np.array_equal(eq_ref[:5, 0, :N_PROFILES], want_ref)
    assert np.array_equal(eq_alt[:5, 0, :N_PROFILES], want_alt)
    other = np.setdiff1d(np.arange(N_PROFILES), HISTONE)
    assert np.array_equal(eq_ref[:5, 0, other], ref[:5, 0, other])  # non-histone untouched
    assert not np.allclose(eq_ref[:5, 0, HISTONE], ref[:5, 0, HISTONE])  # not a no-op
    totals = [e[:5, 0, HISTONE].sum(axis=1) for e in (eq_ref, eq_alt)]
    np.testing.assert_allclose(totals[0], totals[1], rtol=1e-5)
    projection = np.load(weights / "model" / "projvec_targets.npy")
    class_effect = eq_alt[:5, 0, N_PROFILES:] - eq_ref[:5, 0, N_PROFILES:]
    upstream = chorus_projection(want_alt, projection) - chorus_projection(want_ref, projection)
    np.testing.assert_allclose(class_effect, upstream, rtol=1e-6, atol=1e-9)
    raw = alt[:5, 0, N_PROFILES:] - ref[:5, 0, N_PROFILES:]
    assert np.abs(class_effect - raw).max() > 1e-4  # the classes used equalised profiles
    assert np.isnan(eq_ref[5]).all() and np.isnan(eq_alt[5]).all()
    # any order and subset of tracks that carries what the correction needs
    perm = np.random.default_rng(0).permutation(n_tracks)
    p_ref_, p_alt_ = oracle.effect_inputs(ref[:, :, perm], alt[:, :, perm], perm)
    assert np.array_equal(p_ref_, eq_ref[:, :, perm], equal_nan=True)
    assert np.array_equal(p_alt_, eq_alt[:, :, perm], equal_nan=True)
    hist_only = oracle.effect_inputs(ref[:, :, HISTONE], alt[:, :, HISTONE], HISTONE)
    assert np.array_equal(hist_only[0], eq_ref[:, :, HISTONE], equal_nan=True)
    same = oracle.effect_inputs(ref[:, :, other], alt[:, :, other], other)
    assert np.array_equal(same[0], ref[:, :, other], equal_nan=True)  # returned as is
    # refusals: classes without every profile; a histone mark without the others
    sel = np.r_[np.arange(1, N_PROFILES), N_PROFILES + np.arange(SEI_CLASSES)]
    with pytest.raises(RecipeError, match="whole equalised profile vector"):
        oracle.effect_inputs(ref[:, :, sel], alt[:, :, sel], sel)
    with pytest.raises(RecipeError, match="histone total"):
        oracle.effect_inputs(ref[:, :, HISTONE[:3]], alt[:, :, HISTONE[:3]], HISTONE[:3])


# ------------------------------------------------------------------------------ (b)
@pytest.mark.parametrize("effects", ["query", "builder"])
def test_end_to_end_on_the_demo_genome(
    tmp_path: Path, weights: Path, demo_inputs: DemoInputs, effects: str
) -> None:
    recipe = tiny_recipe(weights, effects=effects, weights_in_recipe=True)
    store = tmp_path / "sei.zarr"
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    t0 = time.perf_counter()
    report = build(store, recipe=recipe, progress=False, device="cpu")
    seconds = time.perf_counter() - t0
    reduce(store, progress=False)
    z = np.load(export(store, out=tmp_path / "sei_pertrack.npz").path, allow_pickle=False)
    table = recipe.track_table()
    n = len(table)
    assert n == N_PROFILES + SEI_CLASSES
    assert sorted(z.files) == sorted(
        [
            "track_ids",
            "effect_cdfs",
            "summary_cdfs",
            "effect_counts",
            "summary_counts",
            "effect_retained",
            "summary_retained",
            "signed_flags",
            "layers_per_row",
            "build_config",
        ]
    )  # fmt: skip  (a scalar oracle: no perbin layer, 10 keys, spec §6.1)
    assert z["track_ids"].tolist() == table.track_ids
    assert z["layers_per_row"].tolist() == table.layers
    assert z["effect_cdfs"].shape == z["summary_cdfs"].shape == (n, 10_000)
    ds = open_store(store)
    n_pos = int(ds["plan/positions"].usable.sum())
    n_var = int(ds["plan/variants"].usable.sum())
    assert n_pos > 80 and n_var > 30
    assert z["summary_counts"].tolist() == [n_pos] * n
    assert z["effect_counts"].tolist() == [n_var] * n
    is_class = np.arange(n) >= N_PROFILES
    want_signed = np.ones(n, bool) if effects == "builder" else is_class
    assert z["signed_flags"].tolist() == want_signed.tolist()
    # stored effects: histone-equalised profiles; classes re-projected from them
    var = ds["variants"]
    ok = ds["plan/variants"].usable.values
    ref = var.ref_summary.values[ok, 0].astype(np.float32)
    alt = var.alt_summary.values[ok, 0].astype(np.float32)
    eq_ref, eq_alt = sc_hnorm(ref[:, :N_PROFILES], alt[:, :N_PROFILES], HISTONE)
    projection = np.load(weights / "model" / "projvec_targets.npy")
    effect = var.effect.values[ok, 0]
    np.testing.assert_allclose(
        effect[:, N_PROFILES:],
        chorus_projection(eq_alt, projection) - chorus_projection(eq_ref, projection),
        rtol=1e-5, atol=1e-7,
    )  # fmt: skip
    prof_effect = (
        eq_alt - eq_ref
        if effects == "builder"
        else np.log2((eq_alt.astype(float) + 1) / (eq_ref.astype(float) + 1))
    )
    np.testing.assert_allclose(effect[:, :N_PROFILES], prof_effect, rtol=1e-5, atol=1e-7)
    # the activity pass is not corrected: stored class scores project the raw profiles
    base = ds["baselines"].summary.values[ds["plan/positions"].usable.values, 0]
    np.testing.assert_allclose(
        base[:, N_PROFILES:], chorus_projection(base[:, :N_PROFILES], projection), rtol=1e-6
    )
    assert report.rows_built["variants"] == len(ds["plan/variants"].pos)
    rows = sum(report.rows_built.values())
    print(
        f"\nsei tiny build ({effects}): {rows} rows, {report.sequences} sequences, {seconds:.2f} s"
        f" ({rows / seconds:.1f} rows/s; oracle {report.oracle_seconds:.2f} s in "
        f"{report.oracle_calls} calls)"
    )


# ------------------------------------------------------------------------------ (c)
def test_missing_weights_are_refused(weights: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(weights)
    # no weights, an absent path: AdapterTests.test_missing_weights_say_what_to_download
    partial = tmp_path / "partial"
    write_weights(partial)
    (partial / "model" / "histone_inds.npy").unlink()
    with pytest.raises(RecipeError, match=r"lacks histone_inds\.npy"):
        load(recipe, weights=str(partial))


def test_weights_of_the_wrong_shape_are_refused(weights: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(weights)
    other = write_weights(tmp_path / "ten", net=tiny_network(n_profiles=10))
    with pytest.raises(RecipeError, match="does not fit Sei"):
        load(recipe, weights=str(other))
    bad_proj = write_weights(tmp_path / "proj", projection=np.ones((30, N_PROFILES)))
    with pytest.raises(RecipeError, match="projvec_targets.npy has shape"):
        load(recipe, weights=str(bad_proj))
    bad_hist = write_weights(tmp_path / "hist", histone=np.asarray([2, N_PROFILES]))
    with pytest.raises(RecipeError, match="histone_inds.npy must be"):
        load(recipe, weights=str(bad_hist))
    mask = np.isin(np.arange(N_PROFILES), HISTONE)  # a boolean mask is the same selection
    masked = load(recipe, weights=str(write_weights(tmp_path / "mask", histone=mask)))
    assert masked.histone_inds.tolist() == HISTONE.tolist()
    renamed = write_weights(tmp_path / "names")
    (renamed / "model" / "target.names").write_text("\n".join(reversed(TINY_NAMES)) + "\n")
    with pytest.raises(RecipeError, match="not this model's target.names"):
        load(recipe, weights=str(renamed))
    data = copy.deepcopy(recipe.to_dict())
    data["oracle"]["heads"][1]["name"] = "seqclass"
    with pytest.raises(RecipeError, match="two scalar heads"):
        load(Recipe.from_stored(data), weights=str(weights))
    wide = dataclasses.replace(recipe, oracle={**recipe.oracle, "config": {"channels": [8, 8, 16]}})
    with pytest.raises(RecipeError, match="does not fit Sei"):
        load(wide, weights=str(weights))


# ------------------------------------------------------------------------------ full size
@pytest.mark.fullsize
def test_full_size_sei_forward_on_cpu() -> None:
    """The released architecture once, random weights: 21,907 profiles, 40 classes."""
    data = tomllib.loads((SEI_DIR / "recipe.toml").read_text())
    data["tracks"]["target_names"] = None  # the 40 classes suffice to build the oracle
    recipe = Recipe.from_dict(data, base=SEI_DIR)
    projection = np.random.default_rng(0).normal(size=(61, SEI_PROFILES)).astype(np.float32)
    oracle = SeiOracle(
        Sei(), projection, np.arange(0, SEI_PROFILES, 2), name="sei", heads=recipe.heads,
        batch_size=1, tracks=recipe.track_table(), device="cpu",
    )  # fmt: skip
    out = oracle.predict(random_onehot(1))
    assert out["profiles"].shape == (1, 21907) and out["classes"].shape == (1, 40)
    assert np.isfinite(out["profiles"]).all() and (out["profiles"] > 0).all()


class TestSeiAdapter(AdapterTests):
    """The shared adapter tests on the tiny Sei."""

    adapter = "sei"
    download_hint = "zenodo.org/record/4906997"

    @pytest.fixture(scope="class")
    def adapter_recipe(self, weights: Path) -> Recipe:
        return tiny_recipe(weights, weights_in_recipe=True)
