"""Tiny ChromBPNet and BPNet models (both Keras architectures, random weights) saved
as the HDF5 files chorus downloads, and a recipe over them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus_store import (
    Recipe,
)
from chorus_store.genome.track_tables import chrombpnet_models
from chorus_store.oracles import chrombpnet as cb
from chorus_store.oracles.models import chrombpnet as cbm
from chorus_store.resources import data_dir
from chorus_store.testing.models.demo import DEMO_TOML, SMALL_SAMPLING

__all__ = [
    "JASPAR",
    "FILTERS",
    "FIRST",
    "ADDED",
    "keras2_layout",
    "write_models",
    "tiny_recipe",
]


JASPAR = data_dir("builders") / "chrombpnet" / "chrombpnet_JASPAR_metadata.tsv"


FILTERS = 8  # tiny; the real models have 512 (ChromBPNet) and 64 (BPNet)


# the 11 models of a registry slice: 9 accessibility models + the first two JASPAR rows
FIRST = ["ATAC:K562", "CHIP:K562:REST"]


ADDED = ["DNASE:HepG2", "CHIP:GM12878:REST"]


def _randomise(model: Any, rng: np.random.Generator, counts_layer: str, log_total: float) -> None:
    """Random weights; the count head's bias sets a positive total (log2fc needs it)."""
    model.set_weights([rng.normal(0, 0.15, w.shape).astype(np.float32) for w in model.weights])
    layer = model.get_layer(counts_layer)
    kernel, _ = layer.get_weights()
    layer.set_weights([kernel * 0.1, np.full((1,), log_total, np.float32)])


def keras2_layout(path: Path) -> None:
    """Rewrite a Keras 3 ``.h5`` into the layout of the Keras 2 files chorus downloads:
    weights named ``kernel:0``/``bias:0`` (bpnet-lite and :func:`fused_profile_bias` read
    those names) and a 2.x ``keras_version``. Keras 3 writes the same tensors without the
    ``:0`` suffix; its legacy loader reads both."""
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = "2.8.0"  # what ENCODE's ChromBPNet files carry
        weights = f["model_weights"]
        for layer in weights.attrs["layer_names"]:
            group = weights[layer]
            stored = group.attrs["weight_names"]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in stored]
            renamed = [n if n.endswith(":0") else f"{n}:0" for n in names]
            for old, new in zip(names, renamed, strict=True):
                if old != new:
                    group.move(old, new)
            group.attrs["weight_names"] = [n.encode() for n in renamed]


def write_models(directory: Path, registry: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    accessibility = cbm.chrombpnet_architecture(filters=FILTERS)
    chip = cbm.bpnet_architecture(filters=FILTERS)
    for i, m in enumerate(chrombpnet_models(registry)):
        spec = cb.ModelSpec(m["track_id"], m["kind"], m["accession"])
        if spec.kind == "chrombpnet":
            _randomise(accessibility, rng, "wo_bias_bpnet_logcount_predictions", 3.0 + 0.1 * i)
            accessibility.save(directory / spec.filename)
        else:
            _randomise(chip, rng, "logcounts_predictions", 4.0 + 0.1 * i)
            chip.save(directory / spec.filename)  # whole model, like the JASPAR files
        keras2_layout(directory / spec.filename)


def tiny_recipe(
    tmp: Path,
    registry: Path,
    weights: Path | None,
    *,
    tracks: list[str] | None = None,
    n_columns: int = 0,
    **oracle: Any,
) -> Recipe:
    """A ChromBPNet recipe on the demo genome; ``tracks`` (default: the whole registry)."""
    if tracks is None:
        table: dict[str, Any] = {"format": "chrombpnet", "path": str(registry)}
    else:
        path = tmp / f"tracks_{len(tracks)}.tsv"
        pd.DataFrame({
            "track_id": tracks, "assay_type": [t.split(":")[0] for t in tracks],
            "description": tracks, "n_strands": [2 if t.startswith("CHIP") else 1 for t in tracks],
        }).to_csv(path, sep="\t", index=False)  # fmt: skip
        table = {"table": str(path)}
    head = {"name": "profile", "resolution_bp": 1, "n_bins": 1000, "n_strands": 2,
            "offset_bp": 557, "n_columns": n_columns}  # fmt: skip
    data = {
        "name": "chrombpnet_tiny",
        "oracle": {
            "adapter": "chrombpnet", "registry": str(registry), "input_length": 2114,
            "batch_size": 16, "per_model": True, "strands": ["+", "-"], "max_n_fraction": 0.5,
            "bpnet_filters": FILTERS, "heads": [head],
            **({"weights": str(weights)} if weights is not None else {}), **oracle,
        },
        "tracks": table,
        "plan": {"source": "generated", "assembly": "chorus-store-demo-v1",
                 "sampling": {**copy.deepcopy(DEMO_TOML["plan"]["sampling"]), **SMALL_SAMPLING}},
        "layout": {"position_shard_rows": 64, "variant_shard_rows": 64, "tracks_per_shard": 2,
                   "tracks_per_chunk": 2},
    }  # fmt: skip
    return Recipe.from_dict(data, base=tmp)
