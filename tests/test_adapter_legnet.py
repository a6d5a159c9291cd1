"""LegNet adapter: a tiny instance of the real architecture with random weights, saved in
chorus's download layout (``LentiMPRA_<cell>/config.json`` + a Lightning
``example/weights.ckpt`` per cell type) and loaded through the recipe's ``load()``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from chorus_store import (
    Genome,
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
from chorus_store.genome.fasta import one_hot
from chorus_store.genome.track_tables import legnet_tracks
from chorus_store.oracles.legnet import LegNetOracle, encode, read_checkpoint
from chorus_store.oracles.models.legnet import LegNet, LegNetConfig

from .helpers import DEMO_TOML, SMALL_SAMPLING

CELLS = ("K562", "HepG2", "WTC11")
# chorus legnet_source/agarwal_meta.py and transforms.py, restated so the test checks them
LEFT, RIGHT = "CATTGCGTGAACCGA", "AGGACCGGATCAACT"
CODES = {"A": 0, "G": 1, "C": 2, "T": 3}

#: a real training config.json (TrainingConfig fields) with tiny widths
TINY_CONFIG: dict[str, Any] = {
    "stem_ch": 8, "stem_ks": 5, "ef_ks": 3, "ef_block_sizes": [8, 12], "resize_factor": 2,
    "pool_sizes": [2, 2], "reverse_augment": True, "use_reverse_channel": False,
    "use_shift": True, "max_shift": None, "max_lr": 0.01, "weight_decay": 0.1,
    "model_dir": "/models/LentiMPRA", "data_path": "data.tsv", "epoch_num": 25, "device": 0,
    "seed": 777, "train_batch_size": 1024, "valid_batch_size": 1024, "num_workers": 8,
}  # fmt: skip
#: the architecture of the real checkpoints (autosome-ru/human_legnet models/example.cfg)
FULL_CONFIG = {
    **TINY_CONFIG, "stem_ch": 64, "ef_block_sizes": [80, 96, 112, 128], "resize_factor": 4,
    "pool_sizes": [2, 2, 2, 2],
}  # fmt: skip


class _OneCycleLike:
    """torch 2.0's OneCycleLR pickled ``anneal_func`` (a bound method) into its state."""

    def _annealing_cos(self) -> None:
        pass


TRIPWIRE: list[int] = []


def _tripwire() -> int:
    TRIPWIRE.append(1)
    return 0


class _Tripwire:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_tripwire, ())


def _random_model(config: dict[str, Any], seed: int) -> LegNet:
    torch.manual_seed(seed)
    model = LegNetConfig.from_dict(config).build()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):  # non-trivial running statistics
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _lightning_checkpoint(model: LegNet, *, scheduler: bool = True) -> dict[str, Any]:
    """What MPRA-LegNet's Lightning 2.0 trainer saves (LitModel holds the net as .model)."""
    ckpt: dict[str, Any] = {
        "epoch": 24, "global_step": 1000, "pytorch-lightning_version": "2.0.3",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"ready": 25}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_pearson'}": {
            "best_model_score": torch.tensor(0.81), "best_model_path": "/m/model.ckpt"}},
        "optimizer_states": [torch.optim.AdamW(model.parameters()).state_dict()],
        "lr_schedulers": [],
    }  # fmt: skip
    if scheduler:
        ckpt["lr_schedulers"] = [{"anneal_func": _OneCycleLike()._annealing_cos, "last_epoch": 1}]
    return ckpt


def make_weights(
    root: Path,
    cells: tuple[str, ...] = CELLS,
    config: dict[str, Any] = TINY_CONFIG,
    *,
    scheduler: bool = True,
) -> Path:
    """chorus's LegNet download layout with a random tiny model per cell type."""
    for i, cell in enumerate(cells):
        d = root / f"LentiMPRA_{cell}"
        (d / "example").mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({**config, "model_dir": str(d)}, indent=4))
        model = _random_model(config, seed=100 + i)
        torch.save(_lightning_checkpoint(model, scheduler=scheduler), d / "example/weights.ckpt")
    return root


def direct_model(weights: Path, cell: str) -> LegNet:
    """The cell's network built and loaded by hand, as chorus's load_model does."""
    d = weights / f"LentiMPRA_{cell}"
    model = LegNetConfig.from_json(d / "config.json").build()
    state = torch.load(d / "example/weights.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict({k.replace("model.", ""): v for k, v in state["state_dict"].items()})
    return model.eval()


def chorus_input(seq: str, window: int = 200) -> np.ndarray:
    """chorus's AddFlanks → PadNs(200) → Seq2Tensor, on a string: ``(4, L)``."""
    s = LEFT + seq.upper() + RIGHT
    lp, mod = divmod(window - len(s), 2)
    s = (lp + mod) * "N" + s + lp * "N"  # a negative count is ''
    x = np.zeros((4, len(s)), np.float32)
    for i, base in enumerate(s):
        if base == "N":
            x[:, i] = 0.25
        else:
            x[CODES[base], i] = 1.0
    return x


def _random_seqs(n: int, length: int = 200, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        "".join(rng.choice(list("ACGTN"), p=[0.24] * 4 + [0.04], size=length)) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(tmp_path_factory.mktemp("legnet-weights") / "legnet")


def _shipped(batch_size: int = 8) -> Recipe:
    recipe = load_recipe("legnet")
    return dataclasses.replace(recipe, oracle={**recipe.oracle, "batch_size": batch_size})


# --------------------------------------------------------------------------------------
# the model, its input and its checkpoints
# --------------------------------------------------------------------------------------


def test_predictions_equal_the_module_on_the_flanked_encoded_input(weights: Path) -> None:
    oracle = _shipped().load_oracle(weights=str(weights), device="cpu")
    assert isinstance(oracle, LegNetOracle) and oracle.per_model
    seqs = _random_seqs(8)
    got = oracle.predict(one_hot([s.encode() for s in seqs]))["activity"]
    assert got.shape == (8, 3) and got.dtype == np.float32
    x = torch.from_numpy(np.stack([chorus_input(s) for s in seqs]))
    assert x.shape == (8, 4, 230)
    for col, cell in enumerate(CELLS):
        model = direct_model(weights, cell)
        with torch.inference_mode():
            np.testing.assert_array_equal(got[:, col], model(x).numpy())  # same batch shape
            # chorus runs batch_size = 1: equal up to float rounding of the batch shape
            one = np.concatenate([model(x[i : i + 1]).numpy() for i in range(8)])
        np.testing.assert_allclose(got[:, col], one, rtol=1e-5, atol=1e-6)
    # per-model: only the columns asked, in the order asked, and only their models run
    before = dict(oracle.model_calls)
    some = oracle.predict(one_hot([s.encode() for s in seqs]), {"activity": np.array([2, 0])})
    np.testing.assert_array_equal(some["activity"], got[:, [2, 0]])
    assert oracle.model_calls["HepG2"] == before["HepG2"]
    assert oracle.model_calls["WTC11"] == before["WTC11"] + 1


@pytest.mark.parametrize("length", [200, 100, 101])
def test_encoding_is_choruss_add_flanks_pad_ns_seq2tensor(length: int) -> None:
    seqs = _random_seqs(3, length, seed=length)
    got = encode(one_hot([s.encode() for s in seqs]))
    np.testing.assert_array_equal(got, np.stack([chorus_input(s) for s in seqs]))


def test_state_dict_layout_is_the_upstream_models() -> None:
    """Keys and shapes of the full-size network equal chorus's vendored ``LegNet`` (hash
    taken from ``legnet_source/model.py`` built with models/example.cfg): the real
    checkpoints load key for key."""
    state = LegNetConfig.from_dict(FULL_CONFIG).build().state_dict()
    layout = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    assert len(state) == 134
    assert hashlib.sha256(layout.encode()).hexdigest() == (
        "7a5d79b657f6a0dbbcfb677dbb1e9698fbfef7bba3c608f64c15eb2db8119dcc"
    )


def test_checkpoints_load_without_running_what_they_pickle(tmp_path: Path) -> None:
    model = _random_model(TINY_CONFIG, seed=1)
    want = model.state_dict()
    clean = tmp_path / "clean.ckpt"  # weights_only=True reads it as is
    torch.save(_lightning_checkpoint(model, scheduler=False), clean)
    lightning = tmp_path / "lightning.ckpt"  # needs the inert stand-ins
    ckpt = _lightning_checkpoint(model)
    ckpt["lr_schedulers"][0]["tripwire"] = _Tripwire()
    torch.save(ckpt, lightning)
    bare = tmp_path / "bare.pt"
    torch.save(want, bare)
    TRIPWIRE.clear()
    for path in (clean, lightning, bare):
        got = read_checkpoint(path)
        assert list(got) == list(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    assert TRIPWIRE == []  # the pickled call was never made


# --------------------------------------------------------------------------------------
# the track table
# --------------------------------------------------------------------------------------


def test_full_track_table_lines_up_with_the_models(weights: Path) -> None:
    recipe = _shipped()
    table = recipe.track_table()
    assert table.track_ids == list(CELLS)
    assert table.frame["column"].tolist() == [0, 1, 2]
    assert set(table.frame["head"]) == {"activity"} and table.layers == ["promoter_activity"] * 3
    assert table.signed.all() and set(table.frame["formula"]) == {"diff"}
    assert recipe.oracle["cell_types"] == list(CELLS) and recipe.heads[0].n_columns == 3
    assert recipe.input_length == 200 and recipe.max_n_fraction == 0.3
    assert recipe.plan["variants_set"] == "snps_promoter"
    oracle = recipe.load_oracle(weights=str(weights), device="cpu")
    assert [m["cell_type"] for m in oracle.describe()["models"]] == list(CELLS)


# --------------------------------------------------------------------------------------
# end to end on the demo genome
# --------------------------------------------------------------------------------------


def _e2e_recipe(tmp: Path, weights: Path, n_cells: int = 3) -> Recipe:
    if n_cells == 3:
        tracks: dict[str, Any] = {"format": "legnet"}
    else:  # a prefix of the legnet table, as a TSV (add-tracks appends the rest)
        raw = legnet_tracks().frame[
            ["track_id", "assay_type", "description", "head", "resolution_bp", "column"]
        ]
        raw.iloc[:n_cells].to_csv(tmp / "tracks.tsv", sep="\t", index=False)
        tracks = {"table": str(tmp / "tracks.tsv")}
    data = {
        "name": "legnet",
        "oracle": {
            "adapter": "legnet", "weights": str(weights), "input_length": 200,
            "batch_size": 16, "max_n_fraction": 0.3, "per_model": True,
            "cell_types": list(CELLS),
            # n_columns declared: the model has three columns whatever the table holds
            "heads": [{"name": "activity", "resolution_bp": 0, "n_columns": 3}],
        },
        "tracks": tracks,
        "plan": {"source": "generated", "assembly": "chorus-store-demo-v1",
                 "sampling": {**DEMO_TOML["plan"]["sampling"], **SMALL_SAMPLING}},
        "layout": {"position_shard_rows": 32, "variant_shard_rows": 32, "tracks_per_shard": 1,
                   "tracks_per_chunk": 1},
    }  # fmt: skip
    return Recipe.from_dict(data, base=tmp)


@pytest.fixture(scope="module")
def one_shot(
    tmp_path_factory: pytest.TempPathFactory, demo_inputs: DemoInputs, weights: Path
) -> tuple[Path, Path, float]:
    """A 3-cell-type build (store, NPZ, rows/s of the build)."""
    tmp = tmp_path_factory.mktemp("legnet-e2e")
    store = tmp / "legnet.zarr"
    recipe = _e2e_recipe(tmp, weights)
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    report = build(store, progress=False, device="cpu")
    rows = sum(report.rows_built.values())
    print(f"legnet e2e build: {rows} rows in {report.seconds:.2f} s = "
          f"{rows / report.seconds:.0f} rows/s ({report.oracle_calls} oracle calls)")  # fmt: skip
    reduce(store, progress=False)
    return store, export(store, out=tmp / "legnet_pertrack.npz"), rows / report.seconds


def test_end_to_end_scalar_export(one_shot: tuple[Path, Path, float], weights: Path,
                                  demo_inputs: DemoInputs) -> None:  # fmt: skip
    store, npz, _ = one_shot
    z = np.load(npz, allow_pickle=False)
    assert not [k for k in z.files if k.startswith("perbin")]  # scalar oracle: no perbin
    assert z["track_ids"].tolist() == list(CELLS)
    assert z["layers_per_row"].tolist() == ["promoter_activity"] * 3
    assert z["signed_flags"].tolist() == [True] * 3
    assert z["summary_cdfs"].shape == (3, 10_000) and z["effect_cdfs"].shape == (3, 10_000)
    ds = open_store(store)
    n_pos = int(ds["plan/positions"].usable.sum())
    n_var = int(ds["plan/variants"].usable.sum())
    assert n_pos > 100 and n_var > 30
    assert z["summary_counts"].tolist() == [n_pos] * 3
    assert z["effect_counts"].tolist() == [n_var] * 3
    cfg = json.loads(str(z["build_config"][0]))
    assert cfg["input_length"] == 200 and cfg["resolution"] is None
    # a stored baseline is the cell's model on the flanked 200 bp window of the position
    base = ds["baselines"]
    row = int(np.flatnonzero(ds["plan/positions"].usable.values)[0])
    seq = Genome(demo_inputs.fasta).window(
        str(base.chrom.values[row]), int(base.pos.values[row]), 200
    )
    with torch.inference_mode():
        want = direct_model(weights, "WTC11")(torch.from_numpy(chorus_input(seq.decode())[None]))
    got = np.ravel(base.summary.sel(track="WTC11").values[row])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_add_tracks_runs_only_the_new_model(
    tmp_path: Path, demo_inputs: DemoInputs, weights: Path, one_shot: tuple[Path, Path, float]
) -> None:
    store = tmp_path / "legnet.zarr"
    plan_store(store, _e2e_recipe(tmp_path, weights, n_cells=2), fasta=demo_inputs.fasta,
               ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)  # fmt: skip
    first = _e2e_recipe(tmp_path, weights, n_cells=2).load_oracle(device="cpu")
    assert isinstance(first, LegNetOracle)
    build(store, progress=False, oracle=first)
    assert first.model_calls["K562"] > 0 and first.model_calls["WTC11"] == 0
    assert add_tracks(store, _e2e_recipe(tmp_path, weights)) == 1
    second = _e2e_recipe(tmp_path, weights).load_oracle(device="cpu")
    assert isinstance(second, LegNetOracle)
    build(store, progress=False, oracle=second)
    assert second.model_calls["K562"] == second.model_calls["HepG2"] == 0
    assert second.model_calls["WTC11"] > 0
    reduce(store, progress=False)
    grown = export(store, out=tmp_path / "grown.npz").read_bytes()
    assert grown == one_shot[1].read_bytes()  # the same file as building all three at once


# --------------------------------------------------------------------------------------
# failure paths
# --------------------------------------------------------------------------------------


def test_missing_weights_are_refused_naming_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="--weights"):
        _shipped().load_oracle(device="cpu")
    with pytest.raises(RecipeError, match="does not exist"):
        _shipped().load_oracle(weights=str(tmp_path / "nowhere"), device="cpu")
    partial = make_weights(tmp_path / "partial", cells=("K562", "HepG2"))
    with pytest.raises(RecipeError, match=r"LentiMPRA_WTC11/example/weights\.ckpt"):
        _shipped().load_oracle(weights=str(partial), device="cpu")


def test_wrong_weights_are_refused(tmp_path: Path) -> None:
    wide = make_weights(tmp_path / "wide", config={**TINY_CONFIG, "stem_ch": 16})
    cfg = wide / "LentiMPRA_HepG2/config.json"
    cfg.write_text(json.dumps(TINY_CONFIG))  # the config no longer matches the weights
    with pytest.raises(RecipeError, match="do not fit"):
        _shipped().load_oracle(weights=str(wide), device="cpu")
    (wide / "LentiMPRA_HepG2/example/weights.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(RecipeError, match="not readable"):
        _shipped().load_oracle(weights=str(wide), device="cpu")
    torch.save({"epoch": 1}, wide / "LentiMPRA_HepG2/example/weights.ckpt")
    with pytest.raises(RecipeError, match="state_dict"):
        _shipped().load_oracle(weights=str(wide), device="cpu")
    cfg.write_text(json.dumps({**TINY_CONFIG, "use_reverse_channel": True}))
    with pytest.raises(RecipeError, match="use_reverse_channel"):
        _shipped().load_oracle(weights=str(wide), device="cpu")
    del_field = {k: v for k, v in TINY_CONFIG.items() if k != "ef_ks"}
    cfg.write_text(json.dumps(del_field))
    with pytest.raises(RecipeError, match="ef_ks"):
        _shipped().load_oracle(weights=str(wide), device="cpu")


def test_recipe_mismatches_are_refused(tmp_path: Path, weights: Path) -> None:
    recipe = _shipped()
    two_cols = dataclasses.replace(
        recipe, heads=(dataclasses.replace(recipe.heads[0], n_columns=2),)
    )
    with pytest.raises(RecipeError, match="one column per cell type"):
        two_cols.load_oracle(weights=str(weights), device="cpu")
    swapped = legnet_tracks().frame[["track_id", "assay_type", "description", "head", "column"]]
    swapped = swapped.assign(column=[1, 0, 2])
    swapped.to_csv(tmp_path / "swapped.tsv", sep="\t", index=False)
    bad = dataclasses.replace(recipe, tracks={"table": str(tmp_path / "swapped.tsv")})
    with pytest.raises(RecipeError, match="HepG2 model"):
        bad.load_oracle(weights=str(weights), device="cpu")
    too_long = dataclasses.replace(recipe, oracle={**recipe.oracle, "input_length": 400})
    with pytest.raises(RecipeError, match="one 200 bp window"):
        too_long.load_oracle(weights=str(weights), device="cpu")


# --------------------------------------------------------------------------------------
# full size
# --------------------------------------------------------------------------------------


@pytest.mark.fullsize
def test_full_size_architecture_through_load(tmp_path: Path) -> None:
    weights = make_weights(tmp_path / "legnet", config=FULL_CONFIG)
    oracle = load_recipe("legnet").load_oracle(weights=str(weights), device="cpu")
    out = oracle.predict(one_hot([s.encode() for s in _random_seqs(300)]))["activity"]
    assert out.shape == (300, 3) and np.isfinite(out).all()
