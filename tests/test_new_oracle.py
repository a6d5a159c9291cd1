"""Adding an oracle is writing one recipe: a plain Python function, from a recipe alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chorus_store import build, export, load_recipe, plan_store, reduce
from chorus_store.demo import DemoInputs

RECIPE = """
name = "gcmodel"
[oracle]
adapter = "callable"
callable = "tests.helpers:gc_window_model"
identity = "gc-window-model v1"
input_length = 2048
batch_size = 16
[[oracle.heads]]
name = "bins"
resolution_bp = 64
n_bins = 16
[tracks]
table = "tracks.tsv"
[plan]
source = "generated"
assembly = "chorus-store-demo-v1"
[plan.sampling]
n_random = 40
n_ccre = 20
n_tss = 10
n_gene_body = 10
n_snps = 30
chromosomes = ["chr1", "chr2"]
random_margin_bp = 100000
snp_margin_bp = 50000
[layout]
position_shard_rows = 16
variant_shard_rows = 16
tracks_per_shard = 8
tracks_per_chunk = 8
"""


def test_a_callable_oracle_builds_from_a_recipe_alone(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    (tmp_path / "recipe.toml").write_text(RECIPE)
    (tmp_path / "tracks.tsv").write_text(
        "track_id\tassay_type\tdescription\nGC:one\tDNASE\tDNASE:gc\nAT:two\tCHIP\tCHIP:H3K27ac:at\n"
    )
    recipe = load_recipe(tmp_path / "recipe.toml")
    store = tmp_path / "gc.zarr"
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    report = build(store, progress=False)  # the oracle is loaded from the recipe, nothing else
    assert report.oracle_calls > 0
    reduce(store, progress=False)
    z = np.load(export(store, out=tmp_path).path)
    assert z["track_ids"].tolist() == ["GC:one", "AT:two"]
    assert z["layers_per_row"].tolist() == ["chromatin_accessibility", "histone_marks"]
    assert (z["summary_counts"] > 0).all() and z["effect_cdfs"].shape == (2, 10_000)
