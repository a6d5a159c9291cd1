"""``chorus-store estimate``: what a build takes, against what a real build writes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from chorus_store import EstimateReport, Recipe, estimate, load_recipe, plan_store
from chorus_store.build.tasks import plan_tasks
from chorus_store.cli import app
from chorus_store.demo import DemoInputs
from chorus_store.oracles.models.sei import SEI_PROFILES
from chorus_store.plan.estimate import COMPRESSION, NAN_RATIO
from chorus_store.plan.stage import load_reference_set
from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.store.schema import schema

from .helpers import small_recipe

runner = CliRunner()
REFERENCE = Path(__file__).parents[1] / "examples/chorus/chorus_reference_positions_v1.npz"


def _exact(recipe: Recipe, inputs: DemoInputs, **kwargs: Any) -> EstimateReport:
    return estimate(
        recipe, fasta=inputs.fasta, ccre=inputs.ccre, gtf=inputs.gtf, measure=False, **kwargs
    )


def _check_against_store(report: EstimateReport, store: ChorusStore, per_model: bool) -> None:
    """Every numeric array's shape and raw bytes, the rows, and (a store not built yet) the
    tasks, shards and rows a build of it runs: as the store has them."""
    sized = {a.key: a for a in report.arrays}
    numeric = [s for s in schema().arrays() if not s.is_str and s.source is None]
    assert set(sized) == {s.key for s in numeric}
    for spec in numeric:
        arr = store.array(spec.key)
        assert sized[spec.key].shape == arr.shape, spec.key
        assert sized[spec.key].raw_bytes == math.prod(arr.shape) * arr.dtype.itemsize, spec.key
    plan = store.attrs["plan"]
    planned = {"positions": plan["position_strata"], "variants": plan["variant_strata"]}
    for kind, strata in planned.items():
        got = getattr(report, kind)
        assert {s: (r["rows"], r["usable"]) for s, r in got.items()} == {
            s: (r["planned"], r["usable"]) for s, r in strata.items()
        }
    if any(store.read(g.done).any() for g in DATA_GROUPS):
        return
    tasks = plan_tasks(store, per_model=per_model)
    assert report.tasks == {g.name: sum(t.group == g for t in tasks) for g in DATA_GROUPS}
    claims = {c for t in tasks for c in t.claims(store.layout.tracks_per_shard)}
    assert sum(report.shards.values()) == len(claims)
    assert report.build.rows == sum(t.n_rows for t in tasks)
    usable = {g.name: int(store.plan_table(g)["usable"].sum()) for g in DATA_GROUPS}
    assert report.build.sequences == usable["baselines"] + 2 * usable["variants"]


def test_the_estimate_of_the_demo_is_what_its_build_writes(
    small_build: tuple[Path, Path], demo_inputs: DemoInputs, tmp_path: Path
) -> None:
    store_path, npz = small_build
    report = _exact(small_recipe(tmp_path), demo_inputs)
    store = ChorusStore.open(store_path)
    _check_against_store(report, store, per_model=False)  # what the build wrote
    fresh = tmp_path / "fresh.zarr"
    plan_store(fresh, small_recipe(tmp_path), fasta=demo_inputs.fasta, ccre=demo_inputs.ccre,
               gtf=demo_inputs.gtf)  # fmt: skip
    _check_against_store(report, ChorusStore.open(fresh), per_model=False)  # what it will run
    assert report.rows_basis == "plan" and report.tracks == len(store.tracks)
    assert report.layers == {"chromatin_accessibility": 10, "gene_expression": 4,
                             "histone_marks": 8, "promoter_activity": 4, "tf_binding": 8,
                             "tss_activity": 6}  # fmt: skip
    # the NPZ: its float32 grids exactly, the file within 1 % (build_config, zip headers)
    with np.load(npz) as z:
        grids = sum(z[k].nbytes for k in z.files if k.endswith("_cdfs"))
    assert report.npz_grid_bytes == grids
    assert abs(report.npz_bytes - npz.stat().st_size) < 0.01 * npz.stat().st_size
    with zipfile.ZipFile(npz) as zf:
        assert {n.removesuffix(".npy") for n in zf.namelist() if n.endswith("_cdfs.npy")} == {
            f"{layer}_cdfs" for layer in report.npz_layers
        }
    # on disk: what a build and reduce wrote, against the expectation from the demo's ratios
    for a in report.arrays:
        if a.key in COMPRESSION:
            on_disk = sum(
                p.stat().st_size for p in (store_path / a.key / "c").rglob("*") if p.is_file()
            )
            assert a.expected_bytes is not None
            assert abs(a.expected_bytes - on_disk) < 0.25 * on_disk, (a.key, on_disk)
    gene = report.array("baselines/gene_summary")
    assert gene.filled == pytest.approx(4 / 40)
    assert report.notes == []


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    position_rows=st.sampled_from([16, 32, 48, 200]),
    variant_rows=st.sampled_from([8, 32, 100]),
    chunk=st.sampled_from([4, 8]),
    chunks_per_shard=st.integers(1, 6),
    per_model=st.booleans(),
)
def test_for_any_layout_the_estimate_is_the_store_plan_lays_out(
    demo_inputs: DemoInputs,
    tmp_path: Path,
    position_rows: int,
    variant_rows: int,
    chunk: int,
    chunks_per_shard: int,
    per_model: bool,
) -> None:
    layout = {
        "position_shard_rows": position_rows,
        "variant_shard_rows": variant_rows,
        "tracks_per_chunk": chunk,
        "tracks_per_shard": chunk * chunks_per_shard,
    }
    recipe = small_recipe(tmp_path, layout=layout, oracle={"per_model": per_model})
    report = _exact(recipe, demo_inputs)
    path = tmp_path / f"{uuid.uuid4().hex}.zarr"
    plan_store(path, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    _check_against_store(report, ChorusStore.open(path), per_model=per_model)


def test_without_inputs_the_rows_are_the_sampling_targets() -> None:
    report = estimate("demo", measure=False)
    sampling = load_recipe("demo").plan["sampling"]
    assert {s: r["rows"] for s, r in report.positions.items()} == {
        "random": sampling["n_random"], "ccre": sampling["n_ccre"],
        "tss": sampling["n_tss"], "gene_body": sampling["n_gene_body"],
    }  # fmt: skip
    assert report.variants == {"random": {"rows": sampling["n_snps"]}}
    assert "targets" in report.rows_basis
    # the gene records need the GTF: not sized, and said so
    assert report.array("variants/gene_effect").raw_bytes is None
    assert any("--gtf" in note for note in report.notes)
    assert report.build.source == "unknown" and "--rate" in report.build.note


def test_a_given_rate_gives_the_time(demo_inputs: DemoInputs) -> None:
    res = runner.invoke(app, ["estimate", "demo", "--rate", "50", "--json"])
    assert res.exit_code == 0, res.output
    build = json.loads(res.stdout)["build"]
    rows = 1200 + 800 + 300 + 200 + 1000  # the demo recipe's targets
    assert build["source"] == "given" and build["rows"] == rows
    assert build["seconds"] == pytest.approx(rows / 50)
    human = runner.invoke(app, ["estimate", "demo", "--rate", "50"])
    assert human.exit_code == 0 and "at the given 50.00 rows/s" in human.stdout
    assert "1.2 min" in human.stdout  # 3,500 rows / 50 rows/s = 70 s
    res = runner.invoke(app, ["estimate", "demo", "--rate", "0"])
    assert res.exit_code == 2 and "UsageError" in res.stderr and "--rate" in res.stderr


def test_a_measured_forward_pass_of_the_demo_model(tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path)
    report = estimate(recipe, device="cpu", batches=1)
    b = report.build
    assert b.source == "measured" and b.device == "cpu" and b.batches_timed == 1
    assert b.batch_size == recipe.batch_size and b.load_seconds is not None
    assert b.sequences_per_s is not None and b.sequences_per_s > 0
    assert b.seconds == pytest.approx(b.sequences / b.sequences_per_s)
    assert b.seconds is not None and b.rows_per_s == pytest.approx(b.rows / b.seconds)
    res = runner.invoke(app, ["estimate", "demo", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "sequences/s on cpu" in res.stdout and "build time: ≈" in res.stdout


def test_a_model_that_cannot_be_loaded_is_said_so_not_guessed() -> None:
    report = estimate("enformer")  # no weights here
    assert report.build.source == "unknown" and report.build.seconds is None
    assert "--weights" in report.build.note and "--rate" in report.build.note
    res = runner.invoke(app, ["estimate", "enformer"])
    assert res.exit_code == 0 and "build time: unknown" in res.stdout


def _reference_rows(recipe: Recipe) -> tuple[int, int]:
    ref = load_reference_set(
        REFERENCE, positions=recipe.plan["positions_set"], variants=recipe.plan["variants_set"]
    )
    assert ref.positions is not None and ref.variants is not None
    kept = ~ref.positions["stratum"].isin(recipe.plan.get("drop_strata", []))
    return int(kept.sum()), len(ref.variants)


def test_enformer_sizes_follow_from_its_track_table() -> None:
    recipe = load_recipe("enformer")
    n = len(recipe.track_table())
    positions, variants = _reference_rows(recipe)
    report = estimate(recipe, measure=False)
    assert report.tracks == n and report.tracks_basis == "the track table"
    bins = schema().bin_samples
    assert report.array("baselines/perbin").raw_bytes == positions * bins * n * 4  # ≈ 21.4 GB
    assert report.array("baselines/summary").raw_bytes == positions * n * 4
    assert report.array("variants/effect").raw_bytes == variants * n * 4
    assert report.array("baselines/gene_summary").raw_bytes == 0  # no RNA tracks
    assert report.npz_layers == ("effect", "summary", "perbin")
    assert report.npz_grid_bytes == 3 * n * 10_000 * 4
    rows = recipe.layout.position_shard_rows, recipe.layout.variant_shard_rows
    assert report.tasks == {
        "baselines": math.ceil(positions / rows[0]),
        "variants": math.ceil(variants / rows[1]),
    }
    shards = math.ceil(n / recipe.layout.tracks_per_shard)
    assert report.shards == {g: t * shards for g, t in report.tasks.items()}


def test_sei_has_no_per_bin_values_so_its_per_bin_array_holds_only_nan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = tmp_path / "target.names"
    assays = ["DNase", "H3K27ac", "CTCF", "ATAC-seq", "H3K9me3"]
    names.write_text("".join(f"Cell{i} | {assays[i % 5]} | ID:{i}\n" for i in range(SEI_PROFILES)))
    monkeypatch.setenv("SEI_MODEL", str(tmp_path))
    recipe = load_recipe("sei")
    n = len(recipe.track_table())
    positions, variants = _reference_rows(recipe)
    report = estimate(recipe, measure=False)
    assert report.tracks == n == 21_947 and report.tracks_basis == "the track table"
    assert report.npz_layers == ("effect", "summary")  # scalar heads: no per-bin layer
    assert report.npz_grid_bytes == 2 * n * 10_000 * 4
    perbin = report.array("baselines/perbin")
    # the schema's array exists at full size (the build writes it as NaN chunks) ...
    assert perbin.raw_bytes == positions * schema().bin_samples * n * 4
    # ... but holds nothing, and costs what NaN chunks compress to
    assert perbin.filled == 0 and perbin.expected_bytes == round(perbin.raw_bytes * NAN_RATIO)
    assert report.array("reductions/perbin/grid").expected_bytes == 0
    for name in ("ref_summary", "alt_summary", "effect"):
        assert report.array(f"variants/{name}").raw_bytes == variants * n * 4
    # without target.names the count still comes from the recipe's heads, said so
    monkeypatch.delenv("SEI_MODEL")
    bare = estimate("sei", measure=False)
    assert bare.tracks == n and "n_columns" in bare.tracks_basis and bare.layers == {}


def test_a_recipe_with_an_error_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "recipe.toml"
    text = Path(load_recipe("demo").source).read_text()
    assert "batch_size = 8" in text
    bad.write_text(text.replace("batch_size = 8", "batch_size = 0"))
    res = runner.invoke(app, ["estimate", str(bad)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "RecipeError" in lines[0] and "batch_size = 0" in lines[0]
    res = runner.invoke(app, ["estimate", "no-such-oracle"])
    assert res.exit_code == 2 and "no recipe named 'no-such-oracle'" in res.stderr


def test_plan_dry_run_prints_the_estimate_and_writes_nothing(
    demo_inputs: DemoInputs, tmp_path: Path
) -> None:
    store = tmp_path / "s.zarr"
    args = ["plan", str(store), "--recipe", "demo", "--fasta", str(demo_inputs.fasta)]
    args += ["--ccre", str(demo_inputs.ccre), "--gtf", str(demo_inputs.gtf), "--dry-run"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "demo: plan" in res.stdout and "baselines/perbin" in res.stdout
    assert not store.exists() and os.listdir(tmp_path) == []


def test_the_report_is_plain_data() -> None:
    report = estimate("legnet", rate=10.0)
    data = json.loads(json.dumps(report.to_dict()))  # JSON-able as it is
    assert data["tracks"] == 3 and data["recipe"] == "legnet"
    assert data["raw_bytes"] == sum(a["raw_bytes"] or 0 for a in data["arrays"])
    assert data["build"]["source"] == "given"
    assert data["build"] == json.loads(json.dumps(dataclasses.asdict(report.build)))
