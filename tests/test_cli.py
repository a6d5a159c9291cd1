"""The command line: thin over the API, clear errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from chorus_store.cli import app
from chorus_store.demo import DemoInputs

runner = CliRunner()


def test_status_reports_stages_strata_and_disk(small_build: tuple[Path, Path]) -> None:
    res = runner.invoke(app, ["status", str(small_build[0]), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert st["build"]["baselines"]["shards_done"] == st["build"]["baselines"]["shards"]
    assert all(r["stale"] == 0 for r in st["reductions"].values())
    assert st["plan"]["positions"]["random"]["planned"] == 96
    assert st["disk"]["bytes"] > 0
    human = runner.invoke(app, ["status", str(small_build[0])])
    assert human.exit_code == 0 and "baselines" in human.stdout and "disk:" in human.stdout


def test_errors_are_one_clear_line_and_exit_2(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    res = runner.invoke(app, ["build", str(tmp_path / "nothing.zarr")])
    assert res.exit_code == 2
    assert "SchemaError" in res.stderr and "chorus-store plan" in res.stderr
    res = runner.invoke(
        app,
        [
            "plan",
            str(tmp_path / "s.zarr"),
            "--recipe",
            "demo",
            "--fasta",
            str(tmp_path / "missing.fa"),
        ],
    )
    assert res.exit_code == 2 and "InputFileError" in res.stderr and "missing.fa" in res.stderr
    res = runner.invoke(
        app,
        [
            "plan",
            str(tmp_path / "s.zarr"),
            "--recipe",
            "demo",
            "--fasta",
            str(demo_inputs.fasta),
            "--reference-set",
            str(Path(__file__).parents[1] / "examples/chorus/chorus_reference_positions_v1.npz"),
        ],
    )
    assert res.exit_code == 2 and "GenomeMismatchError" in res.stderr and "hg38" in res.stderr


def test_verify_and_unlock_on_a_healthy_store(small_copy: Path) -> None:
    res = runner.invoke(app, ["verify", str(small_copy)])
    assert res.exit_code == 0 and "built shard passed" in res.stdout
    res = runner.invoke(app, ["unlock", str(small_copy)])
    assert res.exit_code == 0


def test_recipes_and_version() -> None:
    assert "demo" in runner.invoke(app, ["recipes"]).stdout
    assert runner.invoke(app, ["--version"]).stdout.startswith("chorus-store ")


def test_the_console_script_is_installed() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "chorus_store.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("plan", "build", "reduce", "export", "status", "demo", "add-tracks"):
        assert command in res.stdout


def test_export_into_chorus_dir_needs_force_and_prints_what_it_kept(
    small_build: tuple[Path, Path], tmp_path: Path, monkeypatch: object
) -> None:
    import numpy as np
    import pytest

    from chorus_store.export import default_backgrounds_dir, write_npz_atomic

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path))
    res = runner.invoke(app, ["export", str(small_build[0])])
    assert res.exit_code == 2 and "ExportValidationError" in res.stderr and "--force" in res.stderr
    published = default_backgrounds_dir() / "demo_pertrack.npz"
    cfg = json.dumps({"schema_version": 4, "stamped_at": "2025-06-01T00:00:00+00:00"})
    write_npz_atomic(published, {"build_config": np.asarray([cfg])})
    res = runner.invoke(app, ["export", str(small_build[0]), "--force"])
    assert res.exit_code == 0, res.output
    aside = published.with_name("demo_pertrack.2025-06-01T00-00-00-00-00.npz")
    assert aside.is_file() and "was kept as" in res.stdout and aside.name in res.stdout
