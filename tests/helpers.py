"""Shared test helpers: small recipes over the demo genome, and a fast numpy oracle."""

from __future__ import annotations

import copy
import dataclasses
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
from chorus_store.testing.models.demo import (
    DEMO_DIR,
    DEMO_TOML,
    DEMO_TRACKS,
    SMALL_LAYOUT,
    SMALL_SAMPLING,
)

N_TRACKS = 40  # the demo model's outputs (builders/demo/tracks.tsv)
HEAD = "128bp"


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
        # the model still has all its output columns; the table selects a prefix of them
        heads = tuple(dataclasses.replace(h, n_columns=N_TRACKS) for h in recipe.heads)
        recipe = dataclasses.replace(recipe, heads=heads)
    return recipe


def plan_small(store: str | Path, inputs: DemoInputs, recipe: Recipe) -> None:
    plan_store(store, recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf)


def run_all(
    store: Path, inputs: DemoInputs, recipe: Recipe, out: Path, **build_kwargs: Any
) -> bytes:
    """plan → build → reduce → export; returns the NPZ bytes."""
    plan_small(store, inputs, recipe)
    build(store, progress=False, **build_kwargs)
    reduce(store, progress=False)
    return export(store, out=out).path.read_bytes()


# --------------------------------------------------------------------------------------
# a fast oracle: a fixed random linear map of per-bin base composition, softplus
# --------------------------------------------------------------------------------------

_W = np.random.default_rng(5).normal(size=(8, N_TRACKS)).astype(np.float32)


def composition_oracle_fn(onehot: np.ndarray) -> dict[str, np.ndarray]:
    """(B, 16384, 4) → {"128bp": (B, 64, 40)}: the central 64 bins of 128 bp."""
    b = onehot.shape[0]
    central = onehot[:, 4096:12288].reshape(b, 64, 128, 4)
    comp = central.mean(axis=2)  # base composition per bin
    dinuc = (central[:, :, 1:, 1] * central[:, :, :-1, 2]).mean(axis=2, keepdims=True)  # CpG
    feats = np.concatenate([comp, comp**2 * 4, dinuc * 16], axis=2)[:, :, :8]
    return {HEAD: np.logaddexp(0, feats @ _W * 3 - 2).astype(np.float32)}


def composition_oracle(batch_size: int = 8) -> CallableOracle:
    return CallableOracle(
        composition_oracle_fn,
        name="demo",
        input_length=16384,
        heads=(OutputHead(HEAD, 128, 64, N_TRACKS),),
        batch_size=batch_size,
    )


# --------------------------------------------------------------------------------------
# a one-model-per-track oracle with two-strand heads (ChromBPNet / BPNet shaped)
# --------------------------------------------------------------------------------------

BPNET_CALLS: list[list[int]] = []  # the columns (models) each call asked for


def bpnet_like(onehot: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(B, 2114, 4) → {"profile": (B, 1000, len(models), 2)}: per model, a GC profile."""
    models = [int(c) for c in columns["profile"]]
    BPNET_CALLS.append(models)
    central = onehot[:, 557:1557]  # the 1,000 bp the profile covers
    gc = central[:, :, 1] + central[:, :, 2]
    out = np.zeros((onehot.shape[0], 1000, len(models), 2), np.float32)
    for j, m in enumerate(models):
        out[:, :, j, 0] = gc * (m + 1)
        out[:, :, j, 1] = (1 - gc) * (m + 2)
    return {"profile": out}


def bpnet_recipe(tmp: Path, n_tracks: int = 4) -> Recipe:
    rows = [("ATAC:K562", "ATAC", "ATAC:K562", 1), ("DNASE:HepG2", "DNASE", "DNASE:HepG2", 1),
            ("CHIP:HepG2:CEBPA", "CHIP", "CHIP:HepG2:CEBPA", 2),
            ("CHIP:K562:CTCF", "CHIP", "CHIP:K562:CTCF", 2)][:n_tracks]  # fmt: skip
    table = tmp / f"bpnet_tracks_{n_tracks}.tsv"
    pd.DataFrame(rows, columns=["track_id", "assay_type", "description", "n_strands"]).to_csv(
        table, sep="\t", index=False
    )
    data = {
        "name": "bpnet_like",
        "oracle": {
            "adapter": "callable", "callable": "tests.helpers:bpnet_like", "per_model": True,
            "identity": "bpnet-like-v1", "input_length": 2114, "batch_size": 4,
            "strands": ["+", "-"],
            "heads": [{"name": "profile", "resolution_bp": 1, "n_bins": 1000, "n_strands": 2,
                       "n_columns": 4}],
        },
        "tracks": {"table": str(table)},
        "plan": {"source": "generated", "assembly": "chorus-store-demo-v1",
                 "sampling": {**DEMO_TOML["plan"]["sampling"], **SMALL_SAMPLING}},
        "layout": {"position_shard_rows": 32, "variant_shard_rows": 32, "tracks_per_shard": 2,
                   "tracks_per_chunk": 2},
    }  # fmt: skip
    return Recipe.from_dict(data, base=tmp)


def gc_window_model(onehot: np.ndarray) -> dict[str, np.ndarray]:
    """A 'new oracle' as a plain function: 2 tracks, 16 bins of 64 bp over 2,048 bp."""
    gc = (onehot[:, :, 1] + onehot[:, :, 2]).reshape(onehot.shape[0], 32, 64).mean(axis=2)
    central = gc[:, 8:24]
    return {"bins": np.stack([central * 3, (1 - central) * 2], axis=2).astype(np.float32)}


def dies_in_a_worker(onehot: np.ndarray) -> dict[str, np.ndarray]:
    """``gc_window_model``, except that in a dask worker it kills its own process, like a
    model that runs the machine out of memory."""
    import os
    import signal

    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return gc_window_model(onehot)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")
