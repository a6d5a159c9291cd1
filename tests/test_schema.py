"""The schema as one typed object: data groups, chunking per role, the layout's names, the
NPZ contract, and stores written before the issue-11 renames."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from chorus_store import status
from chorus_store.errors import RecipeError, SchemaError
from chorus_store.export import validate_npz
from chorus_store.genome.tracks import TRACK_COLUMNS
from chorus_store.store.core import ChorusStore
from chorus_store.store.layout import BIN_SAMPLES, Layout
from chorus_store.store.schema import npz_contract, schema
from chorus_store.store.tables import as_data_group


def _set_attrs(store: Path, **changes: object) -> None:
    g = zarr.open_group(str(store), mode="r+")
    attrs: dict[str, Any] = {**g.attrs["chorus_store"], **changes}  # type: ignore[dict-item]
    g.attrs["chorus_store"] = attrs
    with warnings.catch_warnings():  # the claims folder is no Zarr node; zarr says so
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(store))


def test_the_schema_is_parsed_once_into_data_groups_that_know_their_arrays() -> None:
    assert schema() is schema()
    base, var = schema().data_group("baselines"), schema().data_group("variants")
    assert (base.plan, base.genes, base.row_dim, base.gene_dim) == (
        "plan/positions",
        "plan/position_genes",
        "position",
        "position_gene",
    )
    assert [a.key for a in base.records] == [
        "baselines/summary",
        "baselines/perbin",
        "baselines/gene_summary",
    ]
    # the build buffers exactly the records nothing else derives from, by their names
    assert [a.name for a in var.buffered] == [
        "ref_summary",
        "alt_summary",
        "gene_ref_summary",
        "gene_alt_summary",
    ]
    assert [(a.name, b.name) for a, b in var.summaries] == [
        ("ref_summary", "gene_ref_summary"),
        ("alt_summary", "gene_alt_summary"),
    ]
    assert base.bin_record is not None and base.bin_record.name == "perbin"
    assert var.bin_record is None and var.has_alleles and not base.has_alleles
    assert schema().layer_group("effect") is var and schema().layer_group("perbin") is base
    assert as_data_group("variants") is var
    with pytest.raises(SchemaError, match="no data group 'genes'"):
        schema().data_group("genes")


def test_track_and_plan_columns_come_from_the_schema() -> None:
    stored = schema().columns("tracks")
    assert list(TRACK_COLUMNS) == ["track_id" if c == "track" else c for c in stored]
    assert schema().columns("plan/variants") == [
        "chrom",
        "pos",
        "ref",
        "alt",
        "stratum",
        "usable",
        "reject_reason",
    ]
    assert Layout().bin_samples == BIN_SAMPLES == schema().bin_samples == 32


def test_new_arrays_are_chunked_by_the_rule_of_their_role(small_build: tuple[Path, Path]) -> None:
    store = ChorusStore.open(small_build[0])
    lay = store.layout
    summary = store.array("baselines/summary")
    assert summary.shards == (lay.position_shard_rows, 1, lay.tracks_per_shard)
    assert summary.chunks == (lay.position_shard_rows, 1, lay.tracks_per_chunk)
    gene = store.array("variants/gene_effect")
    assert gene.chunks == (lay.variant_gene_rows, lay.tracks_per_chunk)
    assert store.array("variants/done_rows").chunks == (1, lay.tracks_per_shard)
    assert store.array("reductions/summary/grid").chunks == (lay.tracks_per_chunk, lay.n_points)
    assert store.array("reductions/summary/offered").chunks == (lay.tracks_per_chunk,)
    assert store.array("reductions/summary/fingerprint").chunks == (1,)
    assert store.array("tracks/signed").chunks == (lay.coord_chunk,)
    bins = store.array("plan/positions/bin_index")
    assert bins.chunks == (lay.coord_chunk, len(store.resolutions), BIN_SAMPLES)


def test_a_store_written_with_the_old_layout_names_opens_and_reports(small_copy: Path) -> None:
    """Stores keep their layout for life in their attributes: those written before the
    rename (``track_shard``, ``track_chunk``) must still open, report and build."""
    layout = dict(ChorusStore.open(small_copy).attrs["layout"])
    old = {**layout}
    old["track_shard"] = old.pop("tracks_per_shard")
    old["track_chunk"] = old.pop("tracks_per_chunk")
    _set_attrs(small_copy, layout=old)
    store = ChorusStore.open(small_copy)
    assert store.layout.as_dict() == layout
    assert status(small_copy).build["baselines"]["cells_done"] > 0


def test_the_old_layout_names_in_a_recipe_warn_and_both_names_are_refused() -> None:
    both = "'track_shard' is now 'tracks_per_shard' and 'track_chunk' is now 'tracks_per_chunk'"
    with pytest.warns(DeprecationWarning, match=both):
        lay = Layout.from_dict({"track_shard": 16, "track_chunk": 8}, source="recipe 'demo'")
    assert (lay.tracks_per_shard, lay.tracks_per_chunk) == (16, 8)
    with pytest.raises(RecipeError, match="both 'track_chunk' and 'tracks_per_chunk'"):
        Layout.from_dict({"track_chunk": 8, "tracks_per_chunk": 8})


def test_a_v1_store_is_refused_with_the_way_to_migrate(small_copy: Path) -> None:
    _set_attrs(small_copy, schema_version=1)
    with pytest.raises(SchemaError, match=r"schema v1, which .* no longer reads") as err:
        ChorusStore.open(small_copy)
    assert "chorus-store plan" in str(err.value)


def test_the_export_writes_the_npz_contract_and_its_validator_reads_it(
    small_build: tuple[Path, Path],
) -> None:
    contract = npz_contract()
    with np.load(small_build[1], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    n_tracks, n_points = len(arrays["track_ids"]), arrays["summary_cdfs"].shape[1]
    dims = {"track": n_tracks, "cdf_point": n_points}
    keys = dict(contract["keys"])
    for layer in contract["layers"]:
        if f"{layer}_cdfs" in arrays:
            keys.update({k.format(layer=layer): v for k, v in contract["per_layer"].items()})
    assert set(arrays) == set(keys)
    for key, spec in keys.items():
        assert arrays[key].shape == tuple(dims.get(d, d) for d in spec["shape"]), key
    assert json.loads(str(arrays["build_config"][0]))["schema_version"] == contract["version"]
    assert validate_npz(arrays, n_points=n_points) == []
    del arrays["signed_flags"]
    arrays["effect_counts"] = arrays["effect_counts"].astype(np.int32)
    problems = validate_npz(arrays, n_points=n_points)
    assert f"signed_flags missing (the contract: bool ({n_tracks},))" in problems
    assert f"effect_counts must be int64 ({n_tracks},), is int32 ({n_tracks},)" in problems
