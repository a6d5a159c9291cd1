"""Shared test helpers: small recipes over the demo genome, and a fast numpy oracle."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus_store import (
    CallableOracle,
    OutputHead,
    Recipe,
    build,
    export,
    plan_store,
    reduce,
)
from chorus_store.demo import DemoInputs
from chorus_store.resources import data_dir

DEMO_DIR = data_dir("builders") / "demo"
DEMO_TOML = tomllib.loads((DEMO_DIR / "recipe.toml").read_text())
DEMO_TRACKS = DEMO_DIR / "tracks.tsv"

SMALL_SAMPLING = {"n_random": 96, "n_ccre": 48, "n_tss": 24, "n_gene_body": 16, "n_snps": 64}
SMALL_LAYOUT = {
    "position_shard_rows": 32,
    "variant_shard_rows": 32,
    "track_shard": 16,
    "track_chunk": 8,
}


def small_recipe(
    tmp: Path,
    *,
    n_tracks: int | None = None,
    sampling: dict[str, Any] | None = None,
    layout: dict[str, Any] | None = None,
    oracle: dict[str, Any] | None = None,
    tracks_table: Path | None = None,
) -> Recipe:
    """The demo recipe with a small plan (~180 positions, ~64 SNPs) and small shards."""
    data = copy.deepcopy(DEMO_TOML)
    data["plan"]["sampling"].update(SMALL_SAMPLING | (sampling or {}))
    data["layout"] = SMALL_LAYOUT | (layout or {})
    data["oracle"].update(oracle or {})
    if n_tracks is not None:
        table = pd.read_csv(DEMO_TRACKS, sep="\t").iloc[:n_tracks]
        tracks_table = tmp / f"tracks_{n_tracks}.tsv"
        table.to_csv(tracks_table, sep="\t", index=False)
    if tracks_table is not None:
        data["tracks"]["table"] = str(tracks_table)
    recipe = Recipe.from_dict(data, base=DEMO_DIR)
    if n_tracks is not None or tracks_table is not None:
        # the model still has 36 output columns; the table selects a prefix of them
        heads = tuple(OutputHead(h.resolution_bp, h.n_bins, 36) for h in recipe.heads)
        recipe = Recipe(
            recipe.name,
            recipe.oracle,
            heads,
            recipe.tracks_table,
            recipe.plan,
            recipe.layout,
            recipe.source,
            recipe.description,
        )
    return recipe


def plan_small(store: Path, inputs: DemoInputs, recipe: Recipe) -> None:
    plan_store(store, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)


def run_all(
    store: Path, inputs: DemoInputs, recipe: Recipe, out: Path, **build_kwargs: Any
) -> bytes:
    """plan → build → reduce → export; returns the NPZ bytes."""
    plan_small(store, inputs, recipe)
    build(store, progress=False, **build_kwargs)
    reduce(store, progress=False)
    return export(store, out=out).read_bytes()


# --------------------------------------------------------------------------------------
# a fast oracle: a fixed random linear map of per-bin base composition, softplus
# --------------------------------------------------------------------------------------

_W = np.random.default_rng(5).normal(size=(8, 36)).astype(np.float32)


def composition_oracle_fn(onehot: np.ndarray) -> dict[int, np.ndarray]:
    """(B, 16384, 4) → {128: (B, 64, 36)}: the central 64 bins of 128 bp."""
    b = onehot.shape[0]
    central = onehot[:, 4096:12288].reshape(b, 64, 128, 4)
    comp = central.mean(axis=2)  # base composition per bin
    dinuc = (central[:, :, 1:, 1] * central[:, :, :-1, 2]).mean(axis=2, keepdims=True)  # CpG
    feats = np.concatenate([comp, comp**2 * 4, dinuc * 16], axis=2)[:, :, :8]
    return {128: np.logaddexp(0, feats @ _W * 3 - 2).astype(np.float32)}


def composition_oracle(batch_size: int = 8) -> CallableOracle:
    return CallableOracle(
        composition_oracle_fn,
        name="demo",
        input_length=16384,
        heads=(OutputHead(128, 64, 36),),
        batch_size=batch_size,
    )
