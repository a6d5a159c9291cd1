"""The Borzoi adapter (spec §3): ``borzoi_pytorch`` models saved as Hugging Face directories,
loaded through the recipe exactly as a real ``johahi/borzoi-replicate-N`` download is.

``borzoi_pytorch.Borzoi`` hard-codes its convolution widths (512 ... 1,920 channels) and its
7,611-track human head; only the transformer is configurable, so even its smallest config
costs ~20 s per 524,288 bp window on two CPU cores. The forward-pass tests therefore use
:class:`NarrowBorzoi`: the package's class with the same layers, forward pass, crop and
softplus, and narrower convolutions and head, read from its ``config.json`` (one
transformer layer for the prediction test, none for the end-to-end build). The package's
own class, at full width, is loaded through the real recipe (no forward pass), and run
once at full size under ``-m fullsize``.
"""

from __future__ import annotations

import copy
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("borzoi_pytorch")

import torch  # noqa: E402
from borzoi_pytorch import Borzoi  # noqa: E402
from borzoi_pytorch.config_borzoi import BorzoiConfig  # noqa: E402
from borzoi_pytorch.pytorch_borzoi_model import ConvBlock  # noqa: E402
from borzoi_pytorch.pytorch_borzoi_transformer import Attention  # noqa: E402

from chorus_store import ChorusStore, Recipe, build, export, open_store, plan_store, reduce  # noqa: E402
from chorus_store.demo import DemoInputs  # noqa: E402
from chorus_store.errors import RecipeError  # noqa: E402
from chorus_store.genome.track_tables import borzoi_tracks  # noqa: E402
from chorus_store.oracles.borzoi import BorzoiOracle, weights_dir  # noqa: E402
from chorus_store.recipes import load_recipe  # noqa: E402
from chorus_store.resources import data_dir  # noqa: E402

BORZOI_DIR = data_dir("builders") / "borzoi"
BORZOI_TOML = tomllib.loads((BORZOI_DIR / "recipe.toml").read_text())
TARGETS = BORZOI_DIR / "borzoi_human_targets.txt"
INPUT_BP = 524_288

#: the package's hard-coded widths (conv_dna 512, res tower 608 ... 1,280, joined 1,920)
#: divided by 32; one single-head transformer layer
NARROW = {
    "dim": 16,
    "depth": 1,
    "heads": 1,
    "attn_dim_key": 8,
    "attn_dim_value": 8,
    "conv_widths": [16, 19, 23, 28, 33, 40],
    "final_width": 60,
}
#: for the end-to-end build: no transformer layer (BorzoiConfig.depth = 0), 8 channels;
#: the attention over 4,096 positions is half of NARROW's CPU time whatever its width
SHALLOW = {**NARROW, "depth": 0, "dim": 8, "conv_widths": [8] * 6, "final_width": 8}


class NarrowBorzoi(Borzoi):  # type: ignore[misc]  # untyped package
    """``borzoi_pytorch.Borzoi`` with its fixed convolution widths and human-head size read
    from the config (``conv_widths``, ``final_width``, ``n_human_tracks``).

    Every module keeps its name and kind, and ``forward`` (U-net, transformer, crop,
    softplus) is the package's, so loading and calling it exercises the package's code.
    """

    def __init__(self, config: BorzoiConfig) -> None:
        super().__init__(config)
        w = list(config.conv_widths)
        self.conv_dna.conv_layer = torch.nn.Conv1d(4, w[0], kernel_size=15, padding="same")
        tower: list[torch.nn.Module] = []
        for c_in, c_out in zip(w[:-1], w[1:], strict=True):
            tower += [ConvBlock(c_in, c_out, kernel_size=5), self._max_pool]
        self.res_tower = torch.nn.Sequential(*tower[:-1])
        self.unet1 = torch.nn.Sequential(self._max_pool, ConvBlock(w[-1], config.dim, 5))
        self.horizontal_conv0 = ConvBlock(w[-1], config.dim, kernel_size=1)
        self.final_joined_convs = torch.nn.Sequential(
            ConvBlock(config.dim, config.final_width, kernel_size=1),
            torch.nn.Dropout(0.1),
            torch.nn.GELU(approximate="tanh"),
        )
        self.human_head = torch.nn.Conv1d(config.final_width, config.n_human_tracks, 1)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Random values where the package initialises constants (the attention output is
    zero-initialised, BatchNorm statistics are 0/1), so that a tensor lost on loading, or a
    wrong relative-position table, changes the predictions."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _subset_rows() -> list[int]:
    """Rows of the real table: two tracks of each layer, four RNA (8 + 4 = 12 tracks)."""
    frame = borzoi_tracks(TARGETS).frame
    per_layer = {"gene_expression": 4}
    rows: list[int] = []
    for layer in ("tss_activity", "chromatin_accessibility", "tf_binding", "histone_marks",
                  "gene_expression"):  # fmt: skip
        rows += frame.index[frame["layer"] == layer][: per_layer.get(layer, 2)].tolist()
    return sorted(int(frame["column"].iat[r]) for r in rows)


SUBSET = _subset_rows()


def _save_narrow(
    directory: Path, n_tracks: int, seed: int = 0, config: dict[str, Any] = NARROW
) -> NarrowBorzoi:
    torch.manual_seed(seed)
    model = NarrowBorzoi(BorzoiConfig(**config, n_human_tracks=n_tracks)).eval()
    _randomise(model, seed)
    model.save_pretrained(directory)  # config.json + model.safetensors, the hub's layout
    return model  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, NarrowBorzoi]:
    """(parent folder holding borzoi-replicate-0/, the model saved there)."""
    parent = tmp_path_factory.mktemp("borzoi-weights")
    return parent, _save_narrow(parent / "borzoi-replicate-0", len(SUBSET))


@pytest.fixture(scope="module")
def shallow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding borzoi-replicate-0/: the :data:`SHALLOW` model."""
    parent = tmp_path_factory.mktemp("borzoi-shallow")
    _save_narrow(parent / "borzoi-replicate-0", len(SUBSET), seed=5, config=SHALLOW)
    return parent


@pytest.fixture(scope="module")
def subset_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real targets file reduced to :data:`SUBSET`, re-indexed: column i = row i."""
    meta = pd.read_csv(TARGETS, sep="\t", index_col=0).iloc[SUBSET].reset_index(drop=True)
    path = tmp_path_factory.mktemp("borzoi-tracks") / "borzoi_subset_targets.txt"
    meta.to_csv(path, sep="\t")
    return path


def _recipe(
    weights: Path | None,
    tracks: Path,
    n_columns: int,
    *,
    plan: dict[str, Any] | None = None,
    **oracle: Any,
) -> Recipe:
    """The real recipe with the narrow architecture, a track table and a plan swapped in."""
    data = copy.deepcopy(BORZOI_TOML)
    data["oracle"].update(
        {"architecture": f"{NarrowBorzoi.__module__}:NarrowBorzoi", "batch_size": 2, **oracle}
    )
    if weights is not None:
        data["oracle"]["weights"] = str(weights)
    data["oracle"]["heads"][0]["n_columns"] = n_columns
    data["tracks"]["path"] = str(tracks)
    if plan is not None:
        data["plan"] = plan
    data["layout"] = {"position_shard_rows": 8, "variant_shard_rows": 8, "tracks_per_shard": 4,
                      "tracks_per_chunk": 4}  # fmt: skip
    return Recipe.from_dict(data, base=BORZOI_DIR)


def _onehot(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(n, INPUT_BP))]
    x[:, 1000:1500] = 0.0  # an N run, as chorus-store encodes it
    return x


def _package_forward(model: Borzoi, onehot: np.ndarray) -> np.ndarray:
    """What chorus does: model((B, 4, L)) -> (B, tracks, bins), permuted to (B, bins, tracks)."""
    with torch.no_grad():
        y = model.eval()(torch.from_numpy(onehot).transpose(1, 2).contiguous())
    out: np.ndarray = y.transpose(1, 2).numpy()
    return out


# --------------------------------------------------------------------------------------
# (a) the saved model loads through the recipe and predicts what the package predicts
# --------------------------------------------------------------------------------------


def test_narrow_model_loads_through_the_recipe_and_matches_the_package(
    narrow: tuple[Path, NarrowBorzoi], subset_table: Path
) -> None:
    parent, model = narrow
    oracle = _recipe(None, subset_table, len(SUBSET)).load_oracle(weights=str(parent), device="cpu")
    assert isinstance(oracle, BorzoiOracle)
    assert oracle.weights == parent / "borzoi-replicate-0"
    # from_pretrained left the relative-position tables on the meta device; the adapter's
    # recomputed ones are the package's
    loaded = [m.positions for m in oracle.model.modules() if isinstance(m, Attention)]
    built = [m.positions for m in model.modules() if isinstance(m, Attention)]
    assert len(loaded) == len(built) == 1 and torch.equal(loaded[0], built[0])

    # one sequence: predict pads it to the model's batch of 2 with an all-zero window
    onehot = _onehot(1, seed=1)
    t0 = time.perf_counter()
    got = oracle.predict(onehot)["human"]
    seconds = time.perf_counter() - t0
    want = _package_forward(model, np.concatenate([onehot, np.zeros_like(onehot)]))[:1]
    assert got.shape == (1, 6144, len(SUBSET)) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert (got > 0).all()  # softplus'd, as chorus scores them
    # a column subset is selected before the copy to the host, in the order asked
    cols = np.array([5, 0, 11])
    sub = oracle.predict(onehot, {"human": cols})["human"]
    np.testing.assert_array_equal(sub, want[:, :, cols])
    print(f"\nnarrow Borzoi, CPU: {seconds:.2f} s per batch of {oracle.batch_size}")

    desc = oracle.describe()
    assert desc["adapter"] == "borzoi" and desc["replicate"] == 0
    assert desc["config"]["dim"] == NARROW["dim"] and desc["device_type"] == "cpu"
    again = _recipe(parent, subset_table, len(SUBSET)).load_oracle(device="cpu")
    assert again.fingerprint == oracle.fingerprint  # recipe weights key = --weights


def test_the_package_class_loads_through_the_real_recipe(tmp_path: Path) -> None:
    """``borzoi_pytorch.Borzoi`` itself (full-width convolutions, the 7,611-track head, a
    one-layer transformer): the shipped recipe takes its directory unchanged."""
    torch.manual_seed(2)
    model = Borzoi(BorzoiConfig(**{k: v for k, v in NARROW.items() if "width" not in k}))
    _randomise(model.eval(), 2)
    model.save_pretrained(tmp_path / "borzoi-replicate-0")
    oracle = load_recipe("borzoi").load_oracle(weights=str(tmp_path), device="cpu")
    assert isinstance(oracle, BorzoiOracle)
    state = oracle.model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name
    for a, b in zip(oracle.model.modules(), model.modules(), strict=True):
        if isinstance(a, Attention):
            assert torch.equal(a.positions, b.positions)  # repaired, not on meta
    assert oracle.model.human_head.out_channels == oracle.head("human").n_columns == 7611
    assert oracle.describe()["architecture"] == "borzoi_pytorch:Borzoi"


def test_full_track_table_lines_up_with_the_7611_track_head() -> None:
    recipe = load_recipe("borzoi")
    (human,) = recipe.heads
    frame = recipe.track_table().frame
    assert (human.name, human.resolution_bp, human.n_bins, human.n_columns) == (
        "human",
        32,
        6144,
        7611,
    )
    assert human.start_bp(recipe.input_length) == 163_840
    assert len(frame) == 7611 and frame["track_id"].is_unique
    assert (frame["column"].to_numpy() == np.arange(7611)).all()
    assert set(frame["head"]) == {"human"}
    assert frame["layer"].value_counts().to_dict() == {
        "tf_binding": 1996, "histone_marks": 1890, "gene_expression": 1543,
        "tss_activity": 1276, "chromatin_accessibility": 906,
    }  # fmt: skip
    # the package's own list of its human head's outputs: same tracks, same order
    import borzoi_pytorch

    pkg = pd.read_csv(
        Path(borzoi_pytorch.__file__).parent / "precomputed" / "targets.txt", sep="\t",
        index_col=0,
    )  # fmt: skip
    assert pkg["identifier"].tolist() == frame["track_id"].tolist()
    assert pkg["description"].tolist() == frame["description"].tolist()
    # the full-size architecture (built without memory) has that head and that crop
    with torch.device("meta"):
        full = Borzoi(BorzoiConfig())
    assert full.human_head.out_channels == human.n_columns
    assert full.crop.target_length == human.n_bins


# --------------------------------------------------------------------------------------
# (b) end to end on the demo genome
# --------------------------------------------------------------------------------------

#: a tiny plan on chr1/chr2 with margins beyond half the 524,288 bp window
SAMPLING = {
    "n_random": 4, "n_ccre": 4, "n_tss": 4, "n_gene_body": 2,
    "chromosomes": ["chr1", "chr2"], "ccre_chromosomes": ["chr1", "chr2"],
    "random_margin_bp": 270_000, "random_fallback_margin_bp": 270_000,
    "effect_family": "gene_anchored", "n_effect_positions": 10,
    "anchored_margin_bp": 270_000,
}  # fmt: skip


def test_end_to_end_on_the_demo_genome(
    tmp_path: Path,
    demo_inputs: DemoInputs,
    shallow: Path,
    subset_table: Path,
) -> None:
    plan = {"source": "generated", "assembly": "chorus-store-demo-v1", "rna_genes": "overlap",
            "sampling": SAMPLING}  # fmt: skip
    recipe = _recipe(shallow, subset_table, len(SUBSET), plan=plan)
    store = tmp_path / "borzoi.zarr"
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre,
               gtf=demo_inputs.gtf)  # fmt: skip
    report = build(store, progress=False, device="cpu")
    reduce(store, progress=False)
    z = np.load(export(store, out=tmp_path / "borzoi.npz"), allow_pickle=False)
    ds = open_store(store)

    table = recipe.track_table().frame
    T = len(SUBSET)
    assert z["track_ids"].tolist() == table["track_id"].tolist()
    assert z["layers_per_row"].tolist() == table["layer"].tolist()
    n_points = ChorusStore.open(store).layout.n_points
    for layer in ("summary", "perbin", "effect"):
        assert z[f"{layer}_cdfs"].shape == (T, n_points)
        assert z[f"{layer}_counts"].shape == z[f"{layer}_retained"].shape == (T,)

    pos, var = ds["plan/positions"], ds["plan/variants"]
    n_pos, n_var = int(pos.usable.sum()), int(var.usable.sum())
    assert n_pos >= 10 and n_var >= 8
    n_ccre = int((pos.usable.values & (pos.stratum.values == "ccre")).sum())
    position_genes = ds["plan/position_genes"].row.values >= 0
    variant_genes = ds["plan/variant_genes"].row.values >= 0
    assert position_genes.sum() > 0 and variant_genes.sum() > 0  # genes in the windows
    gene_bins = int((ds["plan/positions"].gene_bin_index.values >= 0).sum())
    for t, layer in enumerate(table["layer"]):
        counts = (z["summary_counts"][t], z["perbin_counts"][t], z["effect_counts"][t])
        if layer == "gene_expression":  # per (row, gene) records (spec 4.5)
            assert counts == (position_genes.sum(), gene_bins, variant_genes.sum()), t
        elif layer == "tss_activity":  # CAGE takes no summary at cCREs (spec 4.4)
            assert counts == (n_pos - n_ccre, 32 * n_pos, n_var), t
        else:
            assert counts == (n_pos, 32 * n_pos, n_var), t
    assert report.rows_built["baselines"] == len(pos.pos)
    assert report.rows_built["variants"] == len(var.pos)
    rows = sum(report.rows_built.values())
    print(f"\nBorzoi build: {rows} rows in {report.seconds:.1f} s ({rows / report.seconds:.2f} "
          f"rows/s; oracle {report.oracle_seconds:.1f} s)")  # fmt: skip


# --------------------------------------------------------------------------------------
# (c) failure paths
# --------------------------------------------------------------------------------------


def test_missing_weights_name_what_to_download(tmp_path: Path, subset_table: Path) -> None:
    with pytest.raises(RecipeError, match="johahi/borzoi-replicate-0"):
        load_recipe("borzoi").load_oracle(device="cpu")
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("borzoi").load_oracle(weights=str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(RecipeError, match="borzoi-replicate-0/config.json"):
        load_recipe("borzoi").load_oracle(weights=str(tmp_path), device="cpu")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RecipeError, match="no model.safetensors"):
        load_recipe("borzoi").load_oracle(weights=str(tmp_path), device="cpu")
    with pytest.raises(RecipeError, match="replicate must be one of"):
        _recipe(tmp_path, subset_table, len(SUBSET), replicate=4).load_oracle(device="cpu")


def test_weights_of_the_wrong_shape_are_refused(
    tmp_path: Path, narrow: tuple[Path, NarrowBorzoi], subset_table: Path
) -> None:
    parent, _ = narrow
    source = parent / "borzoi-replicate-0"
    # the narrow weights under the real recipe: Borzoi's full-width layers do not fit them
    with pytest.raises(RecipeError, match="do not load into borzoi_pytorch:Borzoi"):
        load_recipe("borzoi").load_oracle(weights=str(parent), device="cpu")
    # a config.json that does not describe the tensors next to it
    bad = tmp_path / "wider"
    bad.mkdir()
    (bad / "model.safetensors").symlink_to(source / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "dim": 24}))
    with pytest.raises(RecipeError, match="size mismatch|do not load"):
        _recipe(bad, subset_table, len(SUBSET)).load_oracle(device="cpu")
    # a tensor missing from the file: from_pretrained would initialise it at random
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((source / "config.json").read_text())
    tensors = load_file(source / "model.safetensors")
    tensors.pop("human_head.bias")
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RecipeError, match="missing_keys.*human_head.bias"):
        _recipe(partial, subset_table, len(SUBSET)).load_oracle(device="cpu")
    # the right weights, but a window the transformer's position table does not fit
    with pytest.raises(RecipeError, match="Borzoi takes 524288 bp"):
        _recipe(parent, subset_table, len(SUBSET), input_length=2 * INPUT_BP).load_oracle(
            device="cpu"
        )
    # the right weights, but a recipe head of another size
    with pytest.raises(RecipeError, match="not the model the recipe describes"):
        _recipe(parent, subset_table, len(SUBSET) + 1).load_oracle(device="cpu")
    # an architecture that is not Borzoi's
    with pytest.raises(RecipeError, match="not a subclass of borzoi_pytorch.Borzoi"):
        _recipe(parent, subset_table, len(SUBSET), architecture="torch.nn:Linear").load_oracle(
            device="cpu"
        )


def test_weights_folder_layouts(tmp_path: Path) -> None:
    """A model directory, a folder of replicates, or a Hugging Face cache."""
    model = tmp_path / "borzoi-replicate-2"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert weights_dir(model, 0) == model
    assert weights_dir(tmp_path, 2) == model
    cache = tmp_path / "models--johahi--borzoi-replicate-1"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text("abc123\n")
    (cache / "snapshots" / "abc123").mkdir(parents=True)
    (cache / "snapshots" / "abc123" / "config.json").write_text("{}")
    assert weights_dir(tmp_path, 1) == cache / "snapshots" / "abc123"
    with pytest.raises(RecipeError, match="borzoi-replicate-3"):
        weights_dir(tmp_path, 3)


# --------------------------------------------------------------------------------------
# the full-size architecture, once (deselected by default: -m fullsize)
# --------------------------------------------------------------------------------------


@pytest.mark.fullsize
def test_full_size_borzoi_through_the_real_recipe(tmp_path: Path) -> None:
    """The real config (dim 1,536, 8 layers, mouse head enabled as in johahi's config.json),
    random weights, saved and loaded like the download; one forward pass on the CPU."""
    torch.manual_seed(3)
    model = Borzoi(BorzoiConfig(enable_mouse_head=True)).eval()
    model.save_pretrained(tmp_path / "borzoi-replicate-0")
    oracle = load_recipe("borzoi").load_oracle(weights=str(tmp_path), device="cpu")
    onehot = _onehot(1, seed=4)
    got = oracle.predict(onehot)["human"]
    assert got.shape == (1, 6144, 7611)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _package_forward(model, onehot), rtol=1e-5, atol=1e-6)
