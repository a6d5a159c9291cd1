"""chorus-store compare: per-track ratios, KS distances, gates, on real exports with a
known shift (the small demo build's NPZ, and copies of it changed by known factors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp
from typer.testing import CliRunner

from chorus_store.cli import Gate, app
from chorus_store.errors import InputFileError, UsageError
from chorus_store.inspect.compare import (
    CEILING_MIN_TRACKS,
    GATES,
    compare,
    ks_distance,
    load_nulls,
)

runner = CliRunner()

FACTOR = 2.0
SHIFTED = range(30)  # the effect grids of the first 30 tracks are multiplied by FACTOR
DROPPED = 39  # B lacks the last track
NO_SUMMARY = 35  # B has no summary samples for this track


def _arrays(npz: Path) -> dict[str, np.ndarray]:
    with np.load(npz, allow_pickle=False) as z:
        return {k: z[k].copy() for k in z.files}


def _per_row(arrays: dict[str, np.ndarray]) -> list[str]:
    n = len(arrays["track_ids"])
    return [k for k, v in arrays.items() if k != "build_config" and v.shape[:1] == (n,)]


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module")
def files(
    small_build: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A (the small demo export) and Bs made from it with known changes."""
    a = small_build[1]
    tmp = tmp_path_factory.mktemp("compare")
    b = _arrays(a)
    b["effect_cdfs"][list(SHIFTED)] *= np.float32(FACTOR)
    b["summary_counts"][NO_SUMMARY] = 0
    b["summary_retained"][NO_SUMMARY] = 0
    b["summary_cdfs"][NO_SUMMARY] = 0
    keep = np.arange(len(b["track_ids"])) != DROPPED
    for key in _per_row(b):
        b[key] = b[key][keep]
    halved = _arrays(a)
    halved["perbin_cdfs"] *= np.float32(0.5)
    reordered = _arrays(a)
    for key in _per_row(reordered):
        reordered[key] = reordered[key][::-1]
    return {
        "a": a,
        "b": _write(tmp / "shifted_pertrack.npz", b),
        "halved": _write(tmp / "halved_pertrack.npz", halved),
        "reordered": _write(tmp / "reordered_pertrack.npz", reordered),
        "store": small_build[0],
    }


def _abs_stat(grid: np.ndarray, stat: str) -> float:
    a = np.abs(grid.astype(np.float64))
    return float(a.max()) if stat == "max" else float(np.quantile(a, int(stat[1:]) / 100))


def test_ratios_and_ks_on_a_known_shift(files: dict[str, Path]) -> None:
    a_arrays = _arrays(files["a"])
    ids = [str(t) for t in a_arrays["track_ids"]]
    r = compare(files["a"], files["b"])
    assert r.tracks_only_in_a == (ids[DROPPED],) and r.tracks_only_in_b == ()
    assert not r.track_order_changed and r.layers_only_in_a == r.layers_only_in_b == ()
    effect = r.layers["effect"]
    assert effect.track_ids == tuple(ids[:DROPPED])
    for i, track in enumerate(effect.track_ids):
        shifted = i in SHIFTED
        grid = a_arrays["effect_cdfs"][i]
        for stat in ("p50", "p90", "p99", "max"):
            want = (FACTOR if shifted else 1.0) if _abs_stat(grid, stat) > 0 else np.nan
            assert effect.ratios[stat][i] == pytest.approx(want, nan_ok=True), (track, stat)
        if shifted:
            assert effect.ks[i] > 0, track
        else:
            assert effect.ks[i] == 0, track
    # the median of per-track ratios, as chorus's scripts take it: FACTOR (most shifted)
    assert effect.median_ratio["p50"] == pytest.approx(FACTOR)
    assert effect.higher_ceiling_fraction == pytest.approx(len(SHIFTED) / DROPPED)
    # no other layer moved
    for layer in ("summary", "perbin"):
        lc = r.layers[layer]
        assert np.all(lc.ks == 0) and lc.median_ratio["max"] == pytest.approx(1.0)
    # the tracks that moved most are shifted ones, in descending KS
    top = effect.top_moved(5)
    assert all(i in SHIFTED for i in top)
    assert list(effect.ks[top]) == sorted(effect.ks[top], reverse=True)


def test_zero_counts_are_left_out_and_listed(files: dict[str, Path]) -> None:
    r = compare(files["a"], files["b"])
    summary = r.layers["summary"]
    missing = str(_arrays(files["a"])["track_ids"][NO_SUMMARY])
    assert summary.excluded_zero_counts == (missing,)
    assert missing not in summary.track_ids and len(summary.track_ids) == DROPPED - 1
    assert r.layers["effect"].excluded_zero_counts == ()


def test_tracks_are_matched_by_id_not_row(files: dict[str, Path]) -> None:
    r = compare(files["a"], files["reordered"])
    assert r.track_order_changed and r.tracks_only_in_a == r.tracks_only_in_b == ()
    for lc in r.layers.values():
        assert np.all(lc.ks == 0)
        assert lc.median_ratio["p99"] == pytest.approx(1.0)


def test_a_store_compares_equal_to_its_export(files: dict[str, Path]) -> None:
    """A store is read through its reductions: the same nulls as the NPZ it exported."""
    store, npz = load_nulls(files["store"]), load_nulls(files["a"])
    assert store.track_ids == npz.track_ids and store.strata == npz.strata
    r = compare(files["store"], files["a"])
    assert all(np.all(lc.ks == 0) for lc in r.layers.values())
    assert set(r.layers) == {"effect", "summary", "perbin"}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's p-value, not the statistic
@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=60),
    st.lists(st.integers(-5, 5), min_size=1, max_size=60),
)
def test_ks_distance_is_scipys_ks_2samp(a: list[int], b: list[int]) -> None:
    """Ties, unequal and equal widths: the same statistic as scipy."""
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    assert ks_distance(x, y) == pytest.approx(ks_2samp(x, y, method="asymp").statistic, abs=1e-12)


def test_ks_distance_on_real_grids_is_scipys(files: dict[str, Path]) -> None:
    a, b = load_nulls(files["a"]), load_nulls(files["b"])
    for i in (0, 8, 20, 31):  # shifted (one with a tie run: the RNA tracks), unshifted
        x, y = a.cdfs["effect"][i], b.cdfs["effect"][i]
        assert ks_distance(x, y) == pytest.approx(
            ks_2samp(x, y, method="asymp").statistic, abs=1e-12
        )
    with pytest.raises(UsageError, match="non-empty"):
        ks_distance(np.array([]), np.array([1.0]))


def test_gates_exit_codes(files: dict[str, Path]) -> None:
    a, b, halved = str(files["a"]), str(files["b"]), str(files["halved"])
    res = runner.invoke(app, ["compare", a, b, "--fail-if", "body-moves"])
    assert res.exit_code == 1, res.output
    assert "effect" in res.stderr and "2.000" in res.stderr and "[0.800, 1.250]" in res.stderr
    assert "summary" not in res.stderr  # only the layer that moved
    # the threshold is an option
    res = runner.invoke(app, ["compare", a, b, "--fail-if", "body-moves", "--body-ratio", "2.5"])
    assert res.exit_code == 0, res.output
    # effects doubled: the ceiling rose, it did not fall
    res = runner.invoke(app, ["compare", a, b, "--fail-if", "ceiling-falls"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", a, halved, "--fail-if", "ceiling-falls"])
    assert res.exit_code == 1
    assert "perbin" in res.stderr and "0.500" in res.stderr and "effect" not in res.stderr
    res = runner.invoke(
        app, ["compare", a, halved, "--fail-if", "ceiling-falls", "--ceiling-ratio", "2.5"]
    )
    assert res.exit_code == 0, res.output
    # no gate: never exit 1
    assert runner.invoke(app, ["compare", a, halved]).exit_code == 0
    # an unknown gate is a usage error (click's choice), exit 2
    res = runner.invoke(app, ["compare", a, b, "--fail-if", "tails-wag"])
    assert res.exit_code == 2 and "tails-wag" in res.output


def test_a_fallen_max_on_few_tracks_only_advises(files: dict[str, Path]) -> None:
    """chorus's rule: under ``ceiling_min_tracks`` tracks the max gate only advises; the
    p99 still gates."""
    few = compare(files["a"], files["halved"], fail_if=["ceiling-falls"], ceiling_min_tracks=100)
    perbin = {(g.layer, g.message.split("per-track ")[1].split()[0]): g for g in few.gates}
    assert perbin[("perbin", "max")].outcome == "advisory"
    assert perbin[("perbin", "p99")].outcome == "fail"
    assert [g.layer for g in few.failures] == ["perbin"]
    many = compare(files["a"], files["halved"], fail_if=["ceiling-falls"])
    assert {g.outcome for g in many.gates if g.layer == "perbin"} == {"fail"}
    assert CEILING_MIN_TRACKS == 25  # chorus's MIN_TRACKS_FOR_CEILING_GATE


def test_gate_arguments_are_checked(files: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="unknown gate"):
        compare(files["a"], files["a"], fail_if=["body-moved"])
    with pytest.raises(UsageError, match="body_ratio must be >= 1"):
        compare(files["a"], files["a"], fail_if=["body-moves"], body_ratio=0.8)
    assert {g.value for g in Gate} == set(GATES)  # the CLI's choices are the API's gates


def _no_nan(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_schema(files: dict[str, Path]) -> None:
    res = runner.invoke(
        app,
        [
            "compare",
            str(files["a"]),
            str(files["b"]),
            "--json",
            "--top",
            "3",
            "--fail-if",
            "body-moves",
        ],
    )
    assert res.exit_code == 1
    doc = _no_nan(res.stdout)
    assert set(doc) == {
        "schema_version",
        "a",
        "b",
        "stats",
        "tracks_only_in_a",
        "tracks_only_in_b",
        "layers_only_in_a",
        "layers_only_in_b",
        "track_order_changed",
        "layers",
        "gates",
    }
    assert doc["schema_version"] == 1 and doc["stats"] == ["p50", "p90", "p99", "max"]
    assert doc["tracks_only_in_a"] == [str(_arrays(files["a"])["track_ids"][DROPPED])]
    assert set(doc["layers"]) == {"effect", "summary", "perbin"}
    effect = doc["layers"]["effect"]
    assert set(effect) == {
        "tracks_compared",
        "median_ratio",
        "higher_ceiling_fraction",
        "ks",
        "excluded_zero_counts",
        "top_moved",
        "tracks",
    }
    assert effect["tracks_compared"] == DROPPED == len(effect["tracks"])
    assert effect["median_ratio"]["p50"] == pytest.approx(FACTOR)
    assert len(effect["top_moved"]) == 3
    row = effect["tracks"][8]  # an RNA track: p50 of |grid| is 0 in A, so no p50 ratio
    assert set(row) == {"track_id", "ks", "ratio", "higher_ceiling"}
    assert row["ratio"]["p50"] is None and row["ratio"]["max"] == pytest.approx(FACTOR)
    assert doc["layers"]["summary"]["excluded_zero_counts"] == [
        str(_arrays(files["a"])["track_ids"][NO_SUMMARY])
    ]
    outcomes = {(g["gate"], g["layer"]): g["outcome"] for g in doc["gates"]}
    assert outcomes == {
        ("body-moves", "effect"): "fail",
        ("body-moves", "summary"): "pass",
        ("body-moves", "perbin"): "pass",
    }
    assert all(set(g) == {"gate", "layer", "outcome", "message"} for g in doc["gates"])


def test_terminal_table(files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["compare", str(files["a"]), str(files["b"]), "--top", "2"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "medians of per-track ratios" in out and "2.000" in out
    assert "effect: moved most (by KS)" in out and "summary: no track moved" in out
    assert "tracks only in A (1)" in out and "left out (count 0 in A or B)" in out


def test_inputs_that_are_not_backgrounds(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        load_nulls(tmp_path / "absent_pertrack.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(InputFileError, match="not a readable background"):
        load_nulls(bad)
    empty = _write(tmp_path / "empty.npz", {"track_ids": np.array(["x"])})
    with pytest.raises(InputFileError, match="no effect/summary/perbin grids"):
        load_nulls(empty)
    res = runner.invoke(app, ["compare", str(bad), str(files["a"])])
    assert res.exit_code == 2 and "InputFileError" in res.stderr
    res = runner.invoke(app, ["compare", str(tmp_path / "nothing.zarr"), str(files["a"])])
    assert res.exit_code == 2 and "SchemaError" in res.stderr
