"""AlphaGenome through its PyTorch port (alphagenome-pytorch): a tiny instance of the real
architecture (the port's own ``AlphaGenome`` + ``add_reference_heads``, small widths and
track counts, random weights) saved as the converter saves it (``torch.save`` of a state
dict with human and mouse heads) plus a ``track_means.tsv``, loaded through ``load()``.

The end-to-end build runs at 16,384 bp, not AlphaGenome's 1,048,576: on CPU even the tiny
instance takes ~10 s per 1 Mb sequence, and a plan of ~20 sequences would take minutes.
Every head keeps its real structure (9 OutputTypes, 1 bp and 128 bp, full length, offset
0), and one test runs the tiny instance at the real 1 Mb input.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from chorus_store import build, export, load_recipe, open_store, plan_store, reduce
from chorus_store.demo import DemoInputs
from chorus_store.errors import PredictionError, RecipeError
from chorus_store.genome.fasta import Genome, one_hot
from chorus_store.genome.track_tables import alphagenome_head_sizes
from chorus_store.oracles.alphagenome import OUTPUT_TYPES
from chorus_store.recipes import Recipe
from chorus_store.store.core import ChorusStore
from chorus_store.testing.adapters import AdapterTests
from chorus_store.testing.models.alphagenome import (
    E2E_SAMPLING,
    FULL_L,
    TINY_COLUMNS,
    TINY_CONFIG,
    TINY_TRACKS,
    TRACKS_JSON,
    L,
    alphagenome_recipe,
    random_onehot,
    tiny_model,
    track_slice,
)

ag = pytest.importorskip("alphagenome_pytorch.alphagenome")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("alphagenome")
    weights = root / "weights"
    weights.mkdir()
    torch.save(tiny_model().state_dict(), weights / "alphagenome_pytorch.pt")
    # nonzero_mean per column as the JAX metadata gives it; padding rows NaN
    rows = [(ot, i, np.nan if i == n - 1 else 0.5 + i) for ot, n in TINY_TRACKS.items()
            for i in range(n)]  # fmt: skip
    means = pd.DataFrame(rows, columns=["output_type", "local_index", "nonzero_mean"])
    means.to_csv(weights / "track_means.tsv", sep="\t", index=False)
    config = root / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    return {"weights": weights, "config": config, "tracks": track_slice(root / "tracks.json")}


def _jax_scaling(x: np.ndarray, means: np.ndarray, resolution: int, squash: bool) -> np.ndarray:
    """alphagenome_research heads.predictions_scaling, in numpy."""
    x = np.where(x > 10.0, (x + 10.0) ** 2 / 40.0, x)
    if squash:
        x = np.power(x, 1.0 / 0.75)
    scaled: np.ndarray = x * (means * resolution)
    return scaled


# --------------------------------------------------------------------------------------
# (a) the tiny real architecture through load() = the port run by hand + JAX activations
# --------------------------------------------------------------------------------------


def test_load_equals_the_port_run_by_hand_with_the_jax_activations(tiny: dict[str, Path]) -> None:
    oracle = alphagenome_recipe(tiny, weights=tiny["weights"]).load_oracle(device="cpu")
    assert "mouse" not in oracle.model.heads  # type: ignore[attr-defined]
    x = random_onehot(3, seed=1)
    got = oracle.predict(x)
    assert oracle.calls == 2  # batches of exactly 2, the last one zero-padded
    t0 = time.perf_counter()
    again = oracle.predict(x)
    print(f"\ntiny AlphaGenome, {L:,} bp: {(time.perf_counter() - t0) / 2:.2f} s per batch of 2")
    assert again["DNASE"].tobytes() == got["DNASE"].tobytes()  # no state kept between calls

    model = tiny_model(organisms=("human",))
    state = torch.load(tiny["weights"] / "alphagenome_pytorch.pt", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("heads.mouse.")})
    ag.set_update_running_var(model, False)
    model.eval()
    padded = np.concatenate([x, np.zeros_like(x[:1])])
    tokens = torch.from_numpy(np.where(padded.sum(-1) == 0, -1, padded.argmax(-1)))
    with torch.inference_mode():
        raw = [model(tokens[i : i + 2], 0)["human"] for i in (0, 2)]
    means = pd.read_csv(tiny["weights"] / "track_means.tsv", sep="\t").fillna(0.0)
    clipped = False
    for ot, spec in OUTPUT_TYPES.items():
        if spec.kind == "tracks":
            direct = np.concatenate([r[spec.port_head][spec.port_key].numpy() for r in raw])[:3]
            m = means[means["output_type"] == ot]["nonzero_mean"].to_numpy()
            want = _jax_scaling(direct.astype(np.float64), m, spec.resolution_bp, spec.squashed)
            clipped |= bool((direct > 10).any())
            assert (got[ot] >= 0).all()
        elif spec.kind == "softmax":
            logits = np.concatenate([r[spec.port_head].numpy() for r in raw])[:3].astype(float)
            want = np.exp(logits - logits.max(-1, keepdims=True))
            want /= want.sum(-1, keepdims=True)
            np.testing.assert_allclose(got[ot].sum(-1), 1.0, rtol=1e-6)  # all 5 classes
        else:
            direct = np.concatenate([r[spec.port_head].numpy() for r in raw])[:3]
            want = direct.astype(np.float16).astype(np.float32)
            assert ((got[ot] >= 0) & (got[ot] <= 1)).all()
            assert (got[ot].astype(np.float16).astype(np.float32) == got[ot]).all()
        assert got[ot].shape == (3, L // spec.resolution_bp, TINY_COLUMNS[ot]), ot
        np.testing.assert_allclose(got[ot], want, rtol=2e-6, atol=1e-30, err_msg=ot)
    assert clipped  # the inverse soft clip was exercised
    # padding columns get no mean: they read 0, and a track table never reads them
    assert (got["DNASE"][..., 2] == 0).all() and (got["DNASE"][..., :2] > 0).all()


def test_columns_are_selected_on_the_device_and_do_not_change_values(
    tiny: dict[str, Path],
) -> None:
    oracle = alphagenome_recipe(tiny, weights=tiny["weights"]).load_oracle(device="cpu")
    x = random_onehot(2, seed=2)
    everything = oracle.predict(x)
    some = oracle.predict(x, {"RNA_SEQ": np.array([1]), "SPLICE_SITES": np.array([3, 0])})
    assert set(some) == {"RNA_SEQ", "SPLICE_SITES"}
    assert some["RNA_SEQ"].tobytes() == everything["RNA_SEQ"][..., [1]].tobytes()
    assert some["SPLICE_SITES"].tobytes() == everything["SPLICE_SITES"][..., [3, 0]].tobytes()
    with pytest.raises(PredictionError, match="one-hot"):
        oracle.predict(np.full((1, L, 4), 0.25, np.float32))


def test_the_tiny_model_at_the_real_1mb_input(tiny: dict[str, Path]) -> None:
    recipe = alphagenome_recipe(tiny, weights=tiny["weights"], input_length=FULL_L, batch_size=1)
    oracle = recipe.load_oracle(device="cpu")
    heads = {h.name: h for h in oracle.heads}
    assert heads["DNASE"].n_bins == FULL_L and heads["CHIP_TF"].n_bins == 8_192
    assert all(h.start_bp(FULL_L) == 0 for h in oracle.heads)  # full length, offset 0
    t0 = time.perf_counter()
    out = oracle.predict(random_onehot(1, FULL_L, seed=3))
    print(f"\ntiny AlphaGenome, 1 Mb: {time.perf_counter() - t0:.1f} s per sequence (first call)")
    for ot, spec in OUTPUT_TYPES.items():
        assert out[ot].shape == (1, FULL_L // spec.resolution_bp, TINY_COLUMNS[ot]), ot
        assert np.isfinite(out[ot]).all()
    np.testing.assert_allclose(out["SPLICE_SITES"].sum(-1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------------------
# the real heads: the full track table lines up with the recipe and the port's heads
# --------------------------------------------------------------------------------------


def test_the_full_track_table_fits_the_real_heads() -> None:
    recipe = load_recipe("alphagenome")
    assert recipe.oracle["adapter"] == "alphagenome" and recipe.input_length == FULL_L
    assert recipe.plan["variants_set"] == "snps_gene_anchored"
    # RNA: the population and the per-gene value of chorus's query (design notes)
    assert recipe.plan["rna_genes"] == "overlap" and recipe.plan["rna_convention"] == "chorus-query"
    heads = {h.name: h for h in recipe.heads}
    sizes = alphagenome_head_sizes(TRACKS_JSON)
    # the port's published reference heads (what the converted checkpoint fills)
    port = {ot: ag.jax_genome_track_heads[s.port_head]["num_tracks"]
            for ot, s in OUTPUT_TYPES.items() if s.kind == "tracks"}  # fmt: skip
    port |= {"SPLICE_SITES": 5, "SPLICE_SITE_USAGE": ag.jax_splice_usage_tracks}
    assert set(heads) == set(sizes) == set(OUTPUT_TYPES) == set(port)
    for ot, spec in OUTPUT_TYPES.items():
        h = heads[ot]
        assert (h.resolution_bp, h.n_columns) == sizes[ot] == (spec.resolution_bp, port[ot]), ot
        assert h.n_bins * h.resolution_bp == FULL_L and h.start_bp(FULL_L) == 0
    table = recipe.track_table().frame
    assert len(table) == 5_168 and table["track_id"].is_unique
    assert Counter(table["head"]) == {
        "ATAC": 167, "CAGE": 546, "CHIP_HISTONE": 1_116, "CHIP_TF": 1_617, "DNASE": 305,
        "PROCAP": 12, "RNA_SEQ": 667, "SPLICE_SITES": 4, "SPLICE_SITE_USAGE": 734,
    }  # fmt: skip
    for head, rows in table.groupby("head"):
        assert rows["column"].is_unique and rows["column"].max() < heads[str(head)].n_columns
        assert (rows["resolution_bp"] == heads[str(head)].resolution_bp).all()
        # padding is at the end of every head: tracks are columns 0..n-1
        assert rows["column"].tolist() == list(range(len(rows)))


# --------------------------------------------------------------------------------------
# (b) end to end on the demo genome
# --------------------------------------------------------------------------------------


def test_plan_build_reduce_export_on_the_demo_genome(
    tmp_path: Path, demo_inputs: DemoInputs, tiny: dict[str, Path]
) -> None:
    recipe = alphagenome_recipe(tiny, weights=tiny["weights"], sampling=E2E_SAMPLING)
    table = recipe.track_table()
    store = tmp_path / "alphagenome.zarr"
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    report = build(store, progress=False, device="cpu")
    reduce(store, progress=False)
    z = np.load(export(store, out=tmp_path / "alphagenome_pertrack.npz").path)
    ds = open_store(store)
    positions, variants = ds["plan/positions"], ds["plan/variants"]
    n_pos, n_var = int(positions.usable.sum()), int(variants.usable.sum())
    assert n_pos >= 8 and n_var >= 4
    assert report.rows_built["baselines"] == len(positions.pos)
    assert report.sequences == n_pos + 2 * n_var
    rows = sum(report.rows_built.values())
    print(f"\nAlphaGenome e2e: {rows / report.seconds:.2f} rows/s, {report.sequences} sequences")
    # track order = the recipe's track table; every OutputType is there
    n = len(table)
    assert z["track_ids"].tolist() == table.track_ids and n == 7 * 2 + 4 + 3
    assert z["layers_per_row"].tolist() == table.layers
    assert set(np.asarray(ds["tracks"]["head"]).tolist()) == set(OUTPUT_TYPES)
    for family in ("effect", "summary", "perbin"):
        assert z[f"{family}_cdfs"].shape == (n, 10_000)
    frame = table.frame
    rna = (frame["layer"] == "gene_expression").to_numpy()
    cage_like = frame["summary_skip_strata"].str.contains("ccre").to_numpy()  # CAGE, PRO_CAP
    n_ccre = int((positions.usable.values & (positions.stratum.values == "ccre")).sum())
    gene_pos = int((ds["plan/position_genes"].row.values >= 0).sum())
    gene_var = int((ds["plan/variant_genes"].row.values >= 0).sum())
    assert gene_pos > 0 and cage_like.sum() == 4  # TSS-in-window genes were found
    want_summary = np.where(rna, gene_pos, np.where(cage_like, n_pos - n_ccre, n_pos))
    assert z["summary_counts"].tolist() == want_summary.tolist()
    assert z["effect_counts"].tolist() == np.where(rna, gene_var, n_var).tolist()
    perbin = z["perbin_counts"]
    assert (perbin[~rna] == 32 * n_pos).all() and (perbin[rna] > 0).all()
    # stored summaries against the adapter run by hand: a 1 bp DNase track (501 bins
    # around bin L/2) and a 128 bp histone track (15 bins around bin L/256)
    row = int(np.flatnonzero(positions.usable.values)[0])
    base = ds["baselines"]
    chrom, pos = str(base.chrom.values[row]), int(base.pos.values[row])
    window = one_hot([Genome(demo_inputs.fasta).window(chrom, pos, L)])
    pred = recipe.load_oracle(device="cpu").predict(window)
    for head, centre, half in (("DNASE", L // 2, 250), ("CHIP_HISTONE", L // 256, 7)):
        t = int(np.flatnonzero(frame["head"].to_numpy() == head)[0])
        col = int(frame["column"].iat[t])
        want = pred[head][0, centre - half : centre + half + 1, col].astype(np.float64).sum()
        got = base.summary.sel(track=table.track_ids[t]).values[row]
        np.testing.assert_allclose(got, np.float32(want), rtol=1e-5)


def test_a_build_brings_only_records_to_the_host_never_a_1bp_head(
    tmp_path: Path, demo_inputs: DemoInputs, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device path (records_on="device": what a CUDA build runs, on CPU tensors): the
    adapter hands back tensors, the statistics run on them, and what crosses to the host
    per sequence is the records, not the heads. Counted twice: by the build's one host
    copy (``arrays.transferred``) and by every tensor turned into numpy."""
    from chorus_store.arrays import transferred

    largest: list[int] = [0]
    real_numpy = torch.Tensor.numpy

    def counting_numpy(self: torch.Tensor, *args: Any, **kwargs: Any) -> np.ndarray:
        largest[0] = max(largest[0], self.numel() * self.element_size())
        return real_numpy(self, *args, **kwargs)

    recipe = alphagenome_recipe(tiny, weights=tiny["weights"], sampling=E2E_SAMPLING)
    store = tmp_path / "alphagenome.zarr"
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    oracle = recipe.load_oracle(device="cpu")
    transferred.reset()
    monkeypatch.setattr(torch.Tensor, "numpy", counting_numpy)
    report = build(store, oracle=oracle, progress=False, records_on="device")
    monkeypatch.undo()
    n_tracks = len(recipe.track_table())
    one_head = L * 2 * 4  # the smallest 1 bp head: 2 real columns of float32, one sequence
    per_sequence = transferred.bytes / report.sequences
    # records: summary (f64) + 32 sampled bins (f32) per track, + a few gene means
    records = n_tracks * (8 + 32 * 4)
    assert report.sequences > 0 and 0 < per_sequence < 2 * records < one_head / 10
    # the largest tensor ever made numpy is a block's records, not a head (nor the tokens:
    # those never leave the host side)
    assert largest[0] <= recipe.batch_size * records * 2 < one_head
    # and the build's own numbers are those of the host path
    ds = open_store(store)
    assert np.isfinite(ds["baselines"].summary.values[ds["plan/positions"].usable.values]).any()


# --------------------------------------------------------------------------------------
# (c) failure paths
# --------------------------------------------------------------------------------------


def test_missing_weights_name_what_to_convert(tmp_path: Path, tiny: dict[str, Path]) -> None:
    # no weights, an absent path: AdapterTests.test_missing_weights_say_what_to_download
    with pytest.raises(RecipeError, match="convert_checkpoint"):
        load_recipe("alphagenome").load_oracle(device="cpu")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "alphagenome_pytorch.pt").write_bytes(
        (tiny["weights"] / "alphagenome_pytorch.pt").read_bytes()
    )
    with pytest.raises(RecipeError, match="track means .* do not exist"):
        alphagenome_recipe(tiny, weights=lonely).load_oracle(device="cpu")


def test_weights_of_the_wrong_shape_are_refused(tmp_path: Path, tiny: dict[str, Path]) -> None:
    state = tiny_model().state_dict()
    key = "heads.human.dnase.resolutions.resolution_1.to_pred.weight"
    state[key] = torch.zeros(4, state[key].shape[1])  # 4 DNase tracks instead of 3
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    torch.save(state, wrong / "alphagenome_pytorch.pt")
    (wrong / "track_means.tsv").write_text((tiny["weights"] / "track_means.tsv").read_text())
    with pytest.raises(RecipeError, match="do not fit"):
        alphagenome_recipe(tiny, weights=wrong).load_oracle(device="cpu")
    (wrong / "alphagenome_pytorch.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RecipeError, match="not a readable state dict"):
        alphagenome_recipe(tiny, weights=wrong / "alphagenome_pytorch.pt").load_oracle(device="cpu")


def test_heads_and_means_that_do_not_fit_are_refused(tmp_path: Path, tiny: dict[str, Path]) -> None:
    with pytest.raises(RecipeError, match="DNASE: recipe 4 vs model 3"):
        alphagenome_recipe(
            tiny, weights=tiny["weights"], columns={**TINY_COLUMNS, "DNASE": 4}
        ).load_oracle(device="cpu")
    folder = tmp_path / "means"
    folder.mkdir()
    (folder / "alphagenome_pytorch.pt").write_bytes(
        (tiny["weights"] / "alphagenome_pytorch.pt").read_bytes()
    )
    means = pd.read_csv(tiny["weights"] / "track_means.tsv", sep="\t")
    means = means[~((means["output_type"] == "CAGE") & (means["local_index"] == 1))]
    means.to_csv(folder / "track_means.tsv", sep="\t", index=False)
    with pytest.raises(RecipeError, match="no positive nonzero_mean for 1 CAGE"):
        alphagenome_recipe(tiny, weights=folder).load_oracle(device="cpu")


# --------------------------------------------------------------------------------------
# the full-size architecture, once (deselected by default)
# --------------------------------------------------------------------------------------


@pytest.mark.fullsize
def test_full_size_architecture_gives_every_real_track(tmp_path: Path) -> None:
    """The published architecture (random weights, human and mouse heads as the converter
    writes them) through load(), at 16,384 bp: a 1 Mb pass needs a GPU's memory."""
    length = 16_384
    model = ag.AlphaGenome()
    for organism in ("human", "mouse"):
        model.add_reference_heads(organism)
    torch.save(model.state_dict(), tmp_path / "alphagenome_pytorch.pt")
    del model
    shipped = load_recipe("alphagenome")
    frame = shipped.track_table().frame
    means = pd.DataFrame({"output_type": frame["head"], "local_index": frame["column"]})
    means.assign(nonzero_mean=1.0).to_csv(tmp_path / "track_means.tsv", sep="\t", index=False)
    columns = {h.name: h.n_columns for h in shipped.heads}
    recipe = alphagenome_recipe(
        None, weights=tmp_path, input_length=length, batch_size=1, columns=columns
    )
    oracle = recipe.load_oracle(device="cpu")
    out = oracle.predict(random_onehot(1, length))
    for ot, spec in OUTPUT_TYPES.items():
        assert out[ot].shape == (1, length // spec.resolution_bp, columns[ot]), ot
        assert np.isfinite(out[ot]).all()
    assert sum(columns.values()) == 5_731 and len(frame) == 5_168


def test_a_stored_recipe_builds_when_its_track_table_file_is_gone(
    tmp_path: Path, demo_inputs: DemoInputs, tiny: dict[str, Path]
) -> None:
    """A cluster worker installed elsewhere has no file at the planning machine's path:
    the adapter takes the track table from the store. Before: the build (and a worker's
    load) read the recipe's path and failed."""
    from chorus_store.build.cluster import WorkerSpec, probe

    planned = tmp_path / "tracks.json"
    planned.write_bytes(tiny["tracks"].read_bytes())
    sampling = {**E2E_SAMPLING, "n_random": 1, "n_ccre": 1, "n_tss": 1, "n_snps": 2}
    recipe = alphagenome_recipe(
        {**tiny, "tracks": planned}, weights=tiny["weights"], sampling=sampling
    )
    store = tmp_path / "alphagenome.zarr"
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    planned.rename(tmp_path / "moved.json")
    spec = WorkerSpec(
        store=str(store),
        recipe=ChorusStore.open(store).attrs["recipe"],
        fasta=str(demo_inputs.fasta),
        weights=None,
        device="cpu",
        batch_size=None,
        run_id="moved-table",
    )
    assert probe(spec)["name"] == "alphagenome_tiny"  # what a worker loads
    report = build(store, progress=False, device="cpu")
    assert report.rows_built["baselines"] > 0


class TestAlphaGenomeAdapter(AdapterTests):
    """The shared adapter tests on the tiny AlphaGenome port."""

    adapter = "alphagenome"
    download_hint = "convert_checkpoint"
    absent_weights = "do not exist"

    @pytest.fixture(scope="class")
    def adapter_recipe(self, tiny: dict[str, Path]) -> Recipe:
        return alphagenome_recipe(tiny, weights=tiny["weights"])
