"""The export: chorus's loader contract (spec §6.3, §11), validation, atomic writes."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from chorus_store import export
from chorus_store.errors import ExportValidationError, IncompleteStageError
from chorus_store.export import (
    collect_arrays,
    default_backgrounds_dir,
    validate_npz,
    write_npz_atomic,
)
from chorus_store.inspect.query import Backgrounds
from chorus_store.store.core import ChorusStore

KEYS = {
    "track_ids",
    "effect_cdfs",
    "summary_cdfs",
    "perbin_cdfs",
    "effect_counts",
    "summary_counts",
    "perbin_counts",
    "effect_retained",
    "summary_retained",
    "perbin_retained",
    "signed_flags",
    "layers_per_row",
    "build_config",
}


def chorus_superseded(path: Path) -> bool:
    """chorus's `_ensure_loaded` step 4, restated: would it warn the file is superseded?"""
    with np.load(path, allow_pickle=True) as z:
        for layer in ("effect", "summary", "perbin"):
            if f"{layer}_cdfs" in z.files and f"{layer}_retained" not in z.files:
                return True
        if "build_config" not in z.files:
            return True
        try:
            cfg = json.loads(str(np.asarray(z["build_config"]).reshape(-1)[0]))
        except ValueError:
            return True
        version = cfg.get("schema_version")
        return not (isinstance(version, int) and not isinstance(version, bool) and version >= 4)


def test_npz_has_exactly_chorus_keys_dtypes_and_shapes(small_build: tuple[Path, Path]) -> None:
    with np.load(small_build[1], allow_pickle=False) as z:
        assert set(z.files) == KEYS
        T = len(z["track_ids"])
        assert z["track_ids"].dtype.kind == "U" and len(set(z["track_ids"].tolist())) == T
        for layer in ("effect", "summary", "perbin"):
            assert z[f"{layer}_cdfs"].dtype == np.float32 and z[f"{layer}_cdfs"].shape == (
                T,
                10_000,
            )
            assert (
                z[f"{layer}_counts"].dtype == np.int64 and z[f"{layer}_retained"].dtype == np.int64
            )
            assert (z[f"{layer}_retained"] == z[f"{layer}_counts"]).all()  # exact, never thinned
            assert (np.diff(z[f"{layer}_cdfs"], axis=1) >= 0).all()
        assert z["signed_flags"].dtype == np.bool_
        assert z["build_config"].shape == (1,)
        assert z["layers_per_row"].dtype.kind == "U"


def test_chorus_loads_it_without_warning(small_build: tuple[Path, Path]) -> None:
    assert not chorus_superseded(small_build[1])
    bg = Backgrounds.load(small_build[1])
    cfg = bg.build_config
    assert cfg["schema_version"] == 4 and type(cfg["schema_version"]) is int
    assert cfg["genome"] == "chorus-store-demo-v1"  # as recorded; chorus ranks only hg38 files
    assert cfg["histone_window_bp"] == 2001 and cfg["other_window_bp"] == 501
    assert cfg["layers_present"] == sorted(set(np.load(small_build[1])["layers_per_row"].tolist()))
    assert set(cfg) >= {
        "oracle",
        "n_tracks",
        "fai_sha256",
        "fasta_sha256_prefix64mb",
        "stamped_at",
        "input_length",
        "resolution",
        "cdf_points",
        "statistics_per_layer",
        "signed_fraction",
        "sampling",
        "reference_sets",
        "notes",
        "determinism",
    }
    assert (
        cfg["sampling"]["perbin"]["mode"] == "exact"
        and cfg["sampling"]["effect"]["thinned_tracks"] == 0
    )
    assert cfg["input_length"] == 16384 and cfg["resolution"] == 128
    assert cfg["reference_sets"]["seeds"]["perbin"] == 999


def _padded(n: int) -> np.ndarray:
    """A row gridded at width n and padded with its maximum: the #143 shape."""
    return np.concatenate([np.arange(n, dtype=np.float32), np.full(10_000 - n, n - 1, np.float32)])


def _good_arrays(small_build: tuple[Path, Path]) -> dict[str, np.ndarray]:
    return collect_arrays(ChorusStore.open(small_build[0]))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda a: a.__setitem__("track_ids", np.asarray(["x"] * len(a["track_ids"]))),
            "not unique",
        ),
        (lambda a: a["effect_cdfs"].__setitem__((3, 100), 1e9), "not non-decreasing"),
        (lambda a: a["summary_counts"].__setitem__(slice(None, 30), 0), "only 10 of 40 tracks"),
        (
            lambda a: a["summary_cdfs"].__setitem__(
                (0, slice(None)), _padded(int(a["summary_counts"][0]))
            ),
            "padded",
        ),
        (lambda a: a["layers_per_row"].__setitem__(0, "other"), "non-canonical"),
        (
            lambda a: a.__setitem__(
                "build_config", np.asarray([json.dumps({"schema_version": "4"})])
            ),
            "schema_version must be the int 4",
        ),
        (lambda a: a.__setitem__("perbin_cdfs", a["perbin_cdfs"].astype(np.float64)), "float32"),
        (lambda a: a["effect_retained"].__setitem__(0, 1), "thinned"),
    ],
)
def test_validation_refuses_each_broken_contract(
    small_build: tuple[Path, Path], damage: object, message: str
) -> None:
    arrays = _good_arrays(small_build)
    assert validate_npz(arrays) == []
    damage(arrays)  # type: ignore[operator]
    problems = validate_npz(arrays)
    assert any(message in p for p in problems), problems


def test_a_failed_write_leaves_the_previous_file_intact(
    small_build: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "demo_pertrack.npz"
    target.write_bytes(b"previous")
    calls = {"n": 0}
    real = np.lib.format.write_array

    def dies_midway(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", dies_midway)
    with pytest.raises(OSError, match="disk is full.*intact"):
        export(small_build[0], out=tmp_path)
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]  # no temporary left behind
    monkeypatch.undo()
    assert export(small_build[0], out=tmp_path).path == target
    assert target.read_bytes() == small_build[1].read_bytes()


def test_the_bytes_depend_only_on_the_contents(
    small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    a = export(small_build[0], out=tmp_path / "a.npz").path.read_bytes()
    os.utime(small_build[1])
    b = export(small_build[0], out=tmp_path / "b.npz").path.read_bytes()
    assert a == b == small_build[1].read_bytes()


def test_float_grids_are_stored_and_the_rest_deflated(
    small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    """Deflating the grids was most of a full-scale export for ~16 %; they are stored, and
    every array reads back exactly as the store holds it (issue 10)."""
    import zipfile

    with zipfile.ZipFile(small_build[1]) as zf:
        methods = {i.filename.removesuffix(".npy"): i.compress_type for i in zf.infolist()}
    assert set(methods) == KEYS
    for key, method in methods.items():
        floats = key.endswith("_cdfs")
        assert method == (zipfile.ZIP_STORED if floats else zipfile.ZIP_DEFLATED), key
    want = collect_arrays(ChorusStore.open(small_build[0]))
    with np.load(small_build[1], allow_pickle=False) as z:
        for key, arr in want.items():
            if key == "build_config":  # stamped_at is the export's own time
                continue
            assert z[key].dtype == arr.dtype and z[key].tobytes() == arr.tobytes(), key


def test_default_directory_is_where_chorus_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path))
    assert default_backgrounds_dir() == tmp_path / "backgrounds"
    monkeypatch.delenv("CHORUS_DATA_DIR")
    assert default_backgrounds_dir() == Path.home() / ".chorus" / "backgrounds"


def test_export_refuses_an_unfinished_store(small_copy: Path, tmp_path: Path) -> None:
    store = ChorusStore.open(small_copy, mode="r+")
    store.array("reductions/summary/fingerprint")[1] = ""
    with pytest.raises(IncompleteStageError, match="chorus-store reduce"):
        export(small_copy, out=tmp_path)
    store.array("variants/done_rows")[0, 3] = 0
    with pytest.raises(IncompleteStageError, match="chorus-store build"):
        export(small_copy, out=tmp_path)
    assert not list(tmp_path.glob("*.npz"))


def test_write_npz_atomic_round_trips(tmp_path: Path) -> None:
    arrays = {"a": np.arange(5, dtype=np.int64), "b": np.asarray(["x", "yy"])}
    write_npz_atomic(tmp_path / "x.npz", arrays)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert z["a"].tolist() == [0, 1, 2, 3, 4] and z["b"].tolist() == ["x", "yy"]


def test_validation_error_is_raised_before_writing(
    small_build: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = importlib.import_module("chorus_store.export")  # the module, not the function
    real = ex.collect_arrays

    def broken(store):  # type: ignore[no-untyped-def]
        arrays = real(store)
        arrays["effect_cdfs"][0] = arrays["effect_cdfs"][0][::-1].copy()  # decreasing row
        return arrays

    monkeypatch.setattr(ex, "collect_arrays", broken)
    with pytest.raises(ExportValidationError, match="nothing was written"):
        export(small_build[0], out=tmp_path)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ what export leaves (issue 9)


def _as_hg38(store_path: Path) -> None:
    store = ChorusStore.open(store_path, mode="r+")
    attrs = dict(store.attrs)
    attrs["genome"] = {**attrs["genome"], "assembly": "hg38"}
    store.set_attrs(attrs)
    store.consolidate()


def test_an_npz_in_chorus_dir_is_moved_aside_under_its_own_stamp(
    small_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path / "chorus"))
    backgrounds = default_backgrounds_dir()
    published = backgrounds / "demo_pertrack.npz"
    cfg = json.dumps({"schema_version": 4, "stamped_at": "2025-01-02T03:04:05+00:00"})
    write_npz_atomic(published, {"build_config": np.asarray([cfg])})
    before = published.read_bytes()
    _as_hg38(small_copy)
    report = export(small_copy)
    assert report.path == published
    aside = backgrounds / "demo_pertrack.2025-01-02T03-04-05-00-00.npz"
    assert report.moved_aside == aside and aside.read_bytes() == before
    assert any(str(aside) in line for line in report.messages)
    with np.load(published, allow_pickle=False) as z:
        assert "track_ids" in z.files  # the new export is in place
    # outside chorus's directory a file is replaced as before (no copies pile up)
    other = tmp_path / "elsewhere"
    export(small_copy, out=other)
    assert export(small_copy, out=other).moved_aside is None
    assert sorted(p.name for p in other.iterdir()) == ["demo_pertrack.npz"]


def test_a_non_hg38_npz_into_chorus_dir_needs_force(
    small_build: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path / "chorus"))
    with pytest.raises(ExportValidationError, match="chorus-store-demo-v1.*--force"):
        export(small_build[0])
    assert not default_backgrounds_dir().exists() or not list(default_backgrounds_dir().iterdir())
    path = export(small_build[0], force=True).path
    assert path == default_backgrounds_dir() / "demo_pertrack.npz" and Path(path).is_file()


def test_a_killed_exports_partial_is_removed_and_a_running_ones_kept(
    small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    import socket
    import subprocess
    import sys

    host = socket.gethostname().replace(".", "_")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".demo_pertrack.npz.{host}.{dead.pid}.{'a' * 32}.partial"
        live = tmp_path / f".demo_pertrack.npz.{host}.{running.pid}.{'b' * 32}.partial"
        stale.write_bytes(b"x" * 1000)
        live.write_bytes(b"y" * 1000)
        export(small_build[0], out=tmp_path)
        assert not stale.exists()
        assert live.exists()
    finally:
        running.kill()
        running.wait()
