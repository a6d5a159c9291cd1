"""The demo recipe (``builders/demo``) as data, and the small plan and layout the tests
and the tiny-model recipes use on the demo genome."""

from __future__ import annotations

import tomllib
from typing import Any

from chorus_store.resources import data_dir

__all__ = ["DEMO_DIR", "DEMO_TOML", "DEMO_TRACKS", "SMALL_LAYOUT", "SMALL_SAMPLING"]

DEMO_DIR = data_dir("builders") / "demo"
DEMO_TOML: dict[str, Any] = tomllib.loads((DEMO_DIR / "recipe.toml").read_text())
DEMO_TRACKS = DEMO_DIR / "tracks.tsv"

#: a plan of ~180 positions and ~64 SNPs on the demo genome
SMALL_SAMPLING = {"n_random": 96, "n_ccre": 48, "n_tss": 24, "n_gene_body": 16, "n_snps": 64}
SMALL_LAYOUT = {
    "position_shard_rows": 32,
    "variant_shard_rows": 32,
    "tracks_per_shard": 16,
    "tracks_per_chunk": 8,
}
