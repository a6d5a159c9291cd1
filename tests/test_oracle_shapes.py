"""One model per track, two strands per track: ChromBPNet/BPNet-shaped oracles (spec §3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chorus_store import add_tracks, build, export, open_store, plan_store, reduce
from chorus_store.demo import DemoInputs

from . import helpers
from .helpers import bpnet_recipe


def _plan(tmp: Path, inputs: DemoInputs, n_tracks: int) -> Path:
    store = tmp / "bp.zarr"
    plan_store(store, bpnet_recipe(tmp, n_tracks), fasta=inputs.fasta, ccre=inputs.ccre,
               gtf=inputs.gtf)  # fmt: skip
    return store


def test_strands_are_two_samples_of_one_row(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    store = _plan(tmp_path, demo_inputs, 4)
    build(store, progress=False)
    reduce(store, progress=False)
    z = np.load(export(store, out=tmp_path / "bp.npz").path)
    ds = open_store(store)
    n_pos = int(ds["plan/positions"].usable.sum())
    n_var = int(ds["plan/variants"].usable.sum())
    assert z["summary_counts"].tolist() == [n_pos, n_pos, 2 * n_pos, 2 * n_pos]
    assert z["effect_counts"].tolist() == [n_var, n_var, 2 * n_var, 2 * n_var]
    assert z["perbin_counts"].tolist() == [32 * n_pos, 32 * n_pos, 64 * n_pos, 64 * n_pos]
    assert z["layers_per_row"].tolist() == ["chromatin_accessibility"] * 2 + ["tf_binding"] * 2
    # the statistic: sum of profile[250:751] per strand (chorus's ChromBPNet window)
    base = ds["baselines"]
    row = int(np.flatnonzero(ds["plan/positions"].usable.values)[0])
    from chorus_store.genome.fasta import Genome, one_hot

    g = Genome(demo_inputs.fasta)
    seq = g.window(str(base.chrom.values[row]), int(base.pos.values[row]), 2114)
    profile = helpers.bpnet_like(one_hot(seq), {"profile": np.asarray([2])})["profile"][0, :, 0]
    want = profile[250:751].astype(np.float64).sum(axis=0)
    got = base.summary.sel(track="CHIP:HepG2:CEBPA").values[row]
    np.testing.assert_allclose(got, want.astype(np.float32))
    assert np.isnan(base.summary.sel(track="ATAC:K562", strand="-").values).all()


def test_per_model_oracles_run_only_the_models_asked(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = _plan(tmp_path, demo_inputs, 2)
    helpers.BPNET_CALLS.clear()
    build(store, progress=False)
    assert {tuple(c) for c in helpers.BPNET_CALLS} == {(0, 1)}
    assert add_tracks(store, bpnet_recipe(tmp_path, 4)) == 2
    helpers.BPNET_CALLS.clear()
    report = build(store, progress=False)
    assert {tuple(c) for c in helpers.BPNET_CALLS} == {(2, 3)}  # only the new models ran
    assert report.rows_built["baselines"] == len(open_store(store)["plan/positions"].pos)
    reduce(store, progress=False)
    added = export(store, out=tmp_path / "added.npz").path.read_bytes()
    one_shot = tmp_path / "one"
    one_shot.mkdir()
    store2 = _plan(one_shot, demo_inputs, 4)
    build(store2, progress=False)
    reduce(store2, progress=False)
    assert export(store2, out=one_shot / "o.npz").path.read_bytes() == added
