"""A tiny AlphaGenome port model with random weights, its track means and recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chorus_store import (
    Recipe,
)
from chorus_store.genome.fasta import one_hot
from chorus_store.oracles.alphagenome import OUTPUT_TYPES
from chorus_store.resources import data_dir

__all__ = [
    "BUILDER",
    "TRACKS_JSON",
    "FULL_L",
    "L",
    "TINY_MODEL",
    "TINY_TRACKS",
    "TINY_COLUMNS",
    "TINY_HEADS",
    "TINY_CONFIG",
    "tiny_model",
    "track_slice",
    "alphagenome_recipe",
    "random_onehot",
    "E2E_SAMPLING",
]


BUILDER = data_dir("builders") / "alphagenome"


TRACKS_JSON = BUILDER / "alphagenome_tracks.json"


FULL_L = 1_048_576


L = 16_384  # a short input the port accepts (a multiple of 2,048 bp: 128 bp x 16)


#: a tiny U-Net + transformer: 7 widths (7 poolings to 128 bp) with 2 x first == last
TINY_MODEL: dict[str, Any] = {
    "dims": [6, 7, 8, 9, 10, 11, 12],
    "transformer_kwargs": {
        "depth": 2, "heads": 1, "dim_head_qk": 8, "dim_head_v": 8, "dim_pairwise": 8,
        "single_to_pairwise_heads": 2, "pool_size": 16, "max_positions": 8192,
    },
}  # fmt: skip


#: tracks per head of the tiny model: 2 real tracks + 1 padding column per genome head
TINY_TRACKS = {ot: 3 for ot, s in OUTPUT_TYPES.items() if s.kind == "tracks"}


TINY_COLUMNS = {**TINY_TRACKS, "SPLICE_SITES": 5, "SPLICE_SITE_USAGE": 3}


TINY_HEADS: dict[str, Any] = {
    "genome_track_heads": {
        s.port_head: {
            "num_tracks": TINY_TRACKS[ot],
            "resolutions": [1, 128] if s.resolution_bp == 1 else [128],
        }
        for ot, s in OUTPUT_TYPES.items()
        if s.kind == "tracks"
    },
    "num_tracks_contacts": 2,
    "num_splice_usage_tracks": TINY_COLUMNS["SPLICE_SITE_USAGE"],
    "splice_junction_hidden_dim": 8,
    "splice_junction_max_tissues": 2,
}


TINY_CONFIG = {"model": TINY_MODEL, "reference_heads": TINY_HEADS}


def _heads(input_length: int, columns: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"name": ot, "resolution_bp": s.resolution_bp, "n_bins": input_length // s.resolution_bp,
         "n_columns": columns[ot], "offset_bp": 0}
        for ot, s in OUTPUT_TYPES.items()
    ]  # fmt: skip


def tiny_model(seed: int = 0, organisms: tuple[str, ...] = ("human", "mouse")) -> Any:
    from alphagenome_pytorch import alphagenome as ag

    torch.manual_seed(seed)
    model = ag.AlphaGenome(**TINY_MODEL)
    for organism in organisms:
        model.add_reference_heads(organism, **TINY_HEADS)
    # a large learnt scale on column 1 of each genome head, so that some predictions pass
    # the soft-clip threshold (10) and the inverse clip is exercised
    for head in model.heads["human"].values():
        for sub in getattr(head, "resolutions", {}).values():
            with torch.no_grad():
                sub.scale[1] = 30.0
    return model


def track_slice(path: Path) -> Path:
    """The real metadata cut to the tiny heads: per genome head its first two tracks and
    one padding row, all 5 splice-site classes, 3 usage tracks; local_index remapped."""
    meta = pd.DataFrame(json.loads(TRACKS_JSON.read_text()))
    parts = []
    for ot in OUTPUT_TYPES:
        rows = meta[meta["output_type"] == ot]
        if ot in TINY_TRACKS:
            rows = pd.concat([rows[rows["name"] != "Padding"].iloc[:2],
                              rows[rows["name"] == "Padding"].iloc[:1]])  # fmt: skip
        rows = rows.iloc[: TINY_COLUMNS[ot]].copy()
        rows["local_index"] = range(len(rows))
        parts.append(rows)
    pd.concat(parts).to_json(path, orient="records")
    return path


def alphagenome_recipe(
    tiny: dict[str, Path] | None,
    *,
    weights: Path | None = None,
    input_length: int = L,
    batch_size: int = 2,
    columns: dict[str, int] | None = None,
    sampling: dict[str, Any] | None = None,
) -> Recipe:
    oracle: dict[str, Any] = {
        "adapter": "alphagenome", "input_length": input_length, "batch_size": batch_size,
        "heads": _heads(input_length, columns or TINY_COLUMNS),
    }  # fmt: skip
    tracks: dict[str, Any] = {"format": "alphagenome", "path": str(TRACKS_JSON)}
    if tiny is not None:
        oracle["config"] = str(tiny["config"])
        tracks["path"] = str(tiny["tracks"])
    if weights is not None:
        oracle["weights"] = str(weights)
    data = {
        "name": "alphagenome_tiny",
        "oracle": oracle,
        "tracks": tracks,
        "plan": {"source": "generated", "assembly": "chorus-store-demo-v1", "rna_genes": "tss",
                 "sampling": sampling or {}},
        "layout": {"position_shard_rows": 8, "variant_shard_rows": 8, "tracks_per_shard": 16,
                   "tracks_per_chunk": 8},
    }  # fmt: skip
    return Recipe.from_dict(data, base=BUILDER)


def random_onehot(n: int, length: int = L, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seqs = rng.choice(np.frombuffer(b"ACGTN", np.uint8), size=(n, length), p=[0.24] * 4 + [0.04])
    return one_hot([s.tobytes() for s in seqs])


#: ~10 positions and 5 SNPs on chr1/chr2 of the demo genome, margins wider than 16 kb
E2E_SAMPLING = {
    "n_random": 3, "n_ccre": 3, "n_tss": 3, "n_gene_body": 1, "n_snps": 5,
    "chromosomes": ["chr1", "chr2"], "ccre_chromosomes": ["chr1", "chr2"],
    "random_margin_bp": 50_000, "random_fallback_margin_bp": 50_000, "snp_margin_bp": 50_000,
}  # fmt: skip
