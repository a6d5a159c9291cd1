"""Command-line conventions: enumerated options checked in one line, the device checked
against this torch, `python -m chorus_store`, `where`, shell completion, planning only
some tracks, and a missing optional package named by its extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chorus_store import load_recipe
from chorus_store.cli import app
from chorus_store.demo import DemoInputs
from chorus_store.errors import MissingDependencyError, RecipeError, UsageError
from chorus_store.oracles.common import select_device
from chorus_store.oracles.registry import extra_for, load_oracle
from chorus_store.store.core import ChorusStore

runner = CliRunner()


def _one_line(res: object) -> str:
    err: str = res.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["build", "x.zarr", "--part", "foo"], "--part 'foo' is not one of all, baselines"),
        (["build", "x.zarr", "--device", "gpu0"], "--device 'gpu0' is not one of auto, cpu"),
        (["reduce", "x.zarr", "--layers", "summary,foo"], "--layers 'foo' is not one of effect"),
        (
            ["plan", "x.zarr", "--recipe", "demo", "--fasta", "y.fa", "--layer", "nope"],
            "--layer 'nope' is not one of chromatin_accessibility",
        ),
    ],
)
def test_enumerated_options_are_checked_in_one_line(
    args: list[str], said: str, tmp_path: Path
) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    line = _one_line(res)
    assert line.startswith("error: UsageError: ") and said in line, line
    assert not (tmp_path / "x.zarr").exists()


def test_cuda_on_a_cpu_torch_is_one_line() -> None:
    torch = pytest.importorskip("torch")
    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build")
    with pytest.raises(UsageError, match=r"is a CPU build.*--device cpu"):
        select_device("cuda")
    with pytest.raises(UsageError, match="not a torch device"):
        select_device("cuda:-1")
    assert select_device("cpu").type == "cpu"


def test_python_dash_m_runs_the_cli_and_completion_is_on() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "chorus_store", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "chorus-store" in res.stdout and "--install-completion" in res.stdout
    assert "where" in res.stdout and "estimate" in res.stdout


def test_where_prints_the_path_chorus_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path))
    res = runner.invoke(app, ["where", "enformer"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "backgrounds" / "enformer_pertrack.npz")
    assert "absent" in res.stderr
    (tmp_path / "backgrounds").mkdir()
    (tmp_path / "backgrounds" / "enformer_pertrack.npz").write_bytes(b"")
    assert "present" in runner.invoke(app, ["where", "enformer"]).stderr


def test_select_tracks_keeps_model_columns_and_refuses_unknown_ones() -> None:
    recipe = load_recipe("demo")
    full = recipe.track_table().frame
    some = recipe.select_tracks(layers=["chromatin_accessibility"])
    frame = some.track_table().frame
    assert set(frame["layer"]) == {"chromatin_accessibility"}
    want = full.loc[full["layer"] == "chromatin_accessibility", ["track_id", "column"]]
    assert frame[["track_id", "column"]].to_numpy().tolist() == want.to_numpy().tolist()
    pair = recipe.select_tracks(["DEMO-DNASE-K562", "DEMO-ATAC-K562"])
    assert list(pair.track_table().frame["track_id"]) == ["DEMO-DNASE-K562", "DEMO-ATAC-K562"]
    with pytest.raises(RecipeError, match="no track 'NOPE'"):
        recipe.select_tracks(["NOPE"])
    with pytest.raises(RecipeError, match="no track is both"):
        recipe.select_tracks(["DEMO-DNASE-K562"], ["tss_activity"])


def test_plan_with_tracks_writes_only_them(tmp_path: Path, demo_inputs: DemoInputs) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("DEMO-DNASE-K562\nDEMO-ATAC-K562\n")
    store = tmp_path / "some.zarr"
    args = ["plan", str(store), "--recipe", "demo", "--fasta", str(demo_inputs.fasta)]
    args += ["--ccre", str(demo_inputs.ccre), "--gtf", str(demo_inputs.gtf)]
    res = runner.invoke(app, [*args, "--tracks", f"@{ids}"])
    assert res.exit_code == 0, res.output
    tracks = ChorusStore.open(store).tracks.frame
    assert list(tracks["track_id"]) == ["DEMO-DNASE-K562", "DEMO-ATAC-K562"]
    again = runner.invoke(app, [*args, "--tracks", "DEMO-DNASE-K562,DEMO-ATAC-K562"])
    assert again.exit_code == 0 and "already planned (unchanged)" in again.stdout
    other = [args[0], str(tmp_path / "b.zarr"), *args[2:]]
    bad = runner.invoke(app, [*other, "--tracks", "X"])
    assert bad.exit_code == 2 and "RecipeError" in _one_line(bad)


def test_a_missing_framework_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extra_for("enformer", "torch") == "enformer"
    assert extra_for("enformer", "tensorflow") == "enformer-tf"
    assert extra_for("chrombpnet", "keras") == "chrombpnet"
    assert extra_for("chrombpnet", "bpnetlite") == "chrombpnet-torch"
    assert extra_for("pytorch", "torch") == "torch"
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError) as caught:
        load_oracle(load_recipe("demo"), weights=None, device="cpu")
    assert str(caught.value) == (
        'the pytorch adapter needs torch, which is not installed: pip install "chorus-store[torch]"'
    )
