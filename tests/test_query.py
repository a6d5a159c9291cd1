"""Queries: percentile lookups by chorus's rules (against chorus's own code), and the store
as a native xarray DataTree (indexed rows, the track table on every track dim, gene joins,
attributes), and the README's examples."""

from __future__ import annotations

import doctest
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chorus_store.inspect.query as query
from chorus_store import Backgrounds, open_store
from chorus_store.errors import SchemaError, UsageError
from chorus_store.inspect.query import gene_records, row_labels, searchsorted_rows
from chorus_store.store.schema import schema

README = Path(__file__).resolve().parents[1] / "README.md"
LAYERS = ("effect", "summary", "perbin")

# --------------------------------------------------------------------------------------
# chorus's lookup rules, restated line by line (independent of chorus_store's code)
# --------------------------------------------------------------------------------------


class ChorusRules:
    """chorus/analysis/normalization.py, PerTrackNormalizer (pinellolab/chorus cc8aabe9):
    the entry ``_ensure_loaded`` builds, ``_match_track_id`` / ``_resolve_row``,
    ``_has_samples``, ``_get_denominator``, ``_rank_with_tie_breaking``, ``_lookup`` and
    ``_lookup_batch``, restated statement by statement. Callers pass ``|raw|`` for
    unsigned effects, as chorus's scorers do (variant_report.py, discovery.py)."""

    def __init__(self, path: Path) -> None:
        data = np.load(str(path), allow_pickle=False)
        self.track_ids = [str(x) for x in data["track_ids"]]
        self.track_index: dict[str, int] = {}
        for i, tid in enumerate(self.track_ids):
            self.track_index[tid] = i
        self.entry: dict[str, Any] = {}
        for key in ("effect_cdfs", "summary_cdfs", "perbin_cdfs"):
            self.entry[key] = data[key] if key in data else None  # noqa: SIM401 (as chorus)
        for key in ("effect_counts", "summary_counts", "perbin_counts"):
            self.entry[key] = data[key].astype(np.int64) if key in data else None

    def _match_track_id(self, track_id: str) -> str | None:
        if track_id in self.track_index:
            return track_id
        parts = track_id.split(":")
        candidates = [track_id.replace(":", "_"), track_id.replace("_", ":")]
        if track_id.endswith((":+", ":-")):
            candidates.append(track_id.rsplit(":", 1)[0])
        if len(parts) >= 2:
            candidates.append(parts[-1])
        for candidate in candidates:
            if candidate in self.track_index:
                return candidate
        return None

    def _resolve_row(self, track_id: str) -> int | None:
        matched = self._match_track_id(track_id)
        if matched is None:
            return None
        return self.track_index.get(matched)

    def _has_samples(self, cdf_key: str, idx: int) -> bool:
        counts = self.entry.get(cdf_key.replace("_cdfs", "_counts"))
        if counts is None:
            return True
        return bool(int(counts[idx]) > 0)

    @staticmethod
    def _rank_with_tie_breaking(row: np.ndarray, raw_value: float, track_id: str) -> int:
        arr = np.asarray(row)
        lo = int(np.searchsorted(arr, raw_value, side="left"))
        hi = int(np.searchsorted(arr, raw_value, side="right"))
        if hi - lo <= 1:
            return hi
        digest = hashlib.blake2b(f"{track_id}\x00{raw_value!r}".encode(), digest_size=8).digest()
        return lo + int.from_bytes(digest, "big") % (hi - lo + 1)

    def _lookup(
        self, _oracle: str, track_id: str, cdf_key: str, raw_value: float, signed: bool = False
    ) -> float | None:
        cdf_matrix = self.entry.get(cdf_key)
        if cdf_matrix is None:
            return None
        idx = self._resolve_row(track_id)
        if idx is None:
            return None
        if not self._has_samples(cdf_key, idx):
            return None
        rank = self._rank_with_tie_breaking(cdf_matrix[idx], raw_value, track_id)
        denom = int(cdf_matrix.shape[1])
        quantile = min(rank / denom, 1.0)
        if signed:
            return float(2.0 * quantile - 1.0)
        return float(quantile)

    def _lookup_batch(
        self,
        _oracle: str,
        track_id: str,
        cdf_key: str,
        raw_values: np.ndarray,
        signed: bool = False,
    ) -> np.ndarray | None:
        cdf_matrix = self.entry.get(cdf_key)
        if cdf_matrix is None:
            return None
        idx = self._resolve_row(track_id)
        if idx is None:
            return None
        if not self._has_samples(cdf_key, idx):
            return None
        arr = np.asarray(cdf_matrix[idx])
        values = np.asarray(raw_values)
        lo = np.searchsorted(arr, values, side="left")
        hi = np.searchsorted(arr, values, side="right")
        ranks = hi.astype(np.int64)
        for j in np.nonzero(hi - lo > 1)[0]:
            ranks[j] = self._rank_with_tie_breaking(arr, float(values[j]), track_id)
        denom = int(cdf_matrix.shape[1])
        quantiles: np.ndarray = np.minimum(ranks.astype(np.float64) / denom, 1.0)
        if signed:
            return 2.0 * quantiles - 1.0
        return quantiles


# --------------------------------------------------------------------------------------
# chorus's own code, where its source is here (an installed chorus, or a git dir of it)
# --------------------------------------------------------------------------------------

CHORUS_GIT_DIR = os.environ.get("CHORUS_GIT_DIR", "/work/.mirror/pinellolab+chorus/repo")


def _chorus_source() -> str | None:
    spec = importlib.util.find_spec("chorus")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "analysis/normalization.py"
        if path.is_file():
            return path.read_text()
    if not Path(CHORUS_GIT_DIR).is_dir():
        return None
    done = subprocess.run(
        ["git", "-C", CHORUS_GIT_DIR, "show", "HEAD:chorus/analysis/normalization.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def _load_chorus_normalization(source: str, where: Path) -> types.ModuleType:
    """chorus's normalization module from its exact source. Its two chorus imports (the
    background samplers' validators and the data dir) are not used by the lookups, so
    they are stubbed for the import and removed again."""
    stubs = {
        "chorus": types.ModuleType("chorus"),
        "chorus.analysis": types.ModuleType("chorus.analysis"),
        "chorus.analysis.background_sampling": types.ModuleType("bs"),
        "chorus.core": types.ModuleType("chorus.core"),
        "chorus.core.globals": types.ModuleType("globals"),
    }
    for name in ("cdf_grid_violations", "thinning_violations", "yield_violations"):
        setattr(stubs["chorus.analysis.background_sampling"], name, lambda *a, **k: [])
    stubs["chorus.core.globals"].CHORUS_BACKGROUNDS_DIR = where  # type: ignore[attr-defined]
    file = where / "chorus_normalization.py"
    file.write_text(source)
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location("chorus_normalization_under_test", file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


@pytest.fixture(scope="module")
def chorus_module(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    source = _chorus_source()
    if source is None:
        pytest.skip("chorus's source is not here (install chorus or set CHORUS_GIT_DIR)")
    return _load_chorus_normalization(source, tmp_path_factory.mktemp("chorus"))


class RealChorus:
    """chorus's PerTrackNormalizer reading an NPZ from its cache dir (as ``test``)."""

    def __init__(self, module: types.ModuleType, path: Path) -> None:
        self.normalizer = module.PerTrackNormalizer(cache_dir=str(path.parent))

    def _lookup(self, *args: Any, **kwargs: Any) -> float | None:
        out: float | None = self.normalizer._lookup(*args, **kwargs)
        return out

    def _lookup_batch(self, *args: Any, **kwargs: Any) -> np.ndarray | None:
        out: np.ndarray | None = self.normalizer._lookup_batch(*args, **kwargs)
        return out


# --------------------------------------------------------------------------------------
# random exports with long tie runs, fuzzy and unknown track ids, zero-count tracks
# --------------------------------------------------------------------------------------

TABLE_IDS = ["CHIP:HepG2:CEBPA", "DNASE_liver", "HepG2", "T3"]
#: ids chorus resolves by its fallbacks (strand, ':'/'_', last part) and ids it does not
ASKED_IDS = [*TABLE_IDS, "CHIP:HepG2:CEBPA:+", "DNASE:liver", "LentiMPRA:HepG2", "T3:-", "nope"]
TIE_VALUES = [-2.0, -0.5, 0.0, 0.0, 0.0, 0.25, 1.0, 1.0, 1.0, 1.0, 3.0]


@st.composite
def exports(draw: st.DrawFn) -> dict[str, Any]:
    n_tracks = draw(st.integers(1, len(TABLE_IDS)))
    width = draw(st.integers(1, 40))
    element = st.one_of(
        st.sampled_from(TIE_VALUES), st.floats(-4, 4, width=32, allow_subnormal=False)
    )
    cdfs = {}
    for layer in draw(st.lists(st.sampled_from(LAYERS), min_size=1, max_size=3, unique=True)):
        rows = draw(
            st.lists(
                st.lists(element, min_size=width, max_size=width),
                min_size=n_tracks,
                max_size=n_tracks,
            )
        )
        cdfs[layer] = np.sort(np.array(rows, np.float32), axis=1)
    counts = {
        x: np.array(
            draw(st.lists(st.sampled_from([0, 3, 5000]), min_size=n_tracks, max_size=n_tracks)),
            np.int64,
        )
        for x in cdfs
    }
    signed = np.array(draw(st.lists(st.booleans(), min_size=n_tracks, max_size=n_tracks)))
    grid_values = sorted({float(v) for c in cdfs.values() for v in c.ravel()})
    value = st.one_of(
        st.sampled_from(grid_values),  # exactly on grid points, and inside tie runs
        st.sampled_from([min(grid_values) - 1.0, max(grid_values) + 1.0, -0.0]),
        st.floats(-5, 5),
        st.sampled_from([np.inf, -np.inf, np.nan]),
    )
    values = draw(st.lists(value, min_size=0, max_size=30))
    ids = draw(st.lists(st.sampled_from(ASKED_IDS), min_size=len(values), max_size=len(values)))
    return {
        "track_ids": TABLE_IDS[:n_tracks],
        "cdfs": cdfs,
        "counts": counts,
        "signed": signed,
        "values": values,
        "ids": ids,
    }


def write_export(path: Path, e: dict[str, Any]) -> Path:
    arrays: dict[str, np.ndarray] = {
        "track_ids": np.array(e["track_ids"]),
        "signed_flags": e["signed"],
        "build_config": np.array([json.dumps({"schema_version": 4, "genome": "hg38"})]),
    }
    for layer, grid in e["cdfs"].items():
        arrays |= {f"{layer}_cdfs": grid, f"{layer}_counts": e["counts"][layer]}
        arrays[f"{layer}_retained"] = e["counts"][layer]
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def chorus_call(
    rules: ChorusRules | RealChorus, layer: str, tid: str, value: float, signed: bool
) -> float | None:
    """What chorus's scorers ask for: |raw| for unsigned effects."""
    raw = abs(value) if layer == "effect" and not signed else value
    return rules._lookup("test", tid, f"{layer}_cdfs", raw, signed=signed)


def chorus_batch(
    rules: ChorusRules | RealChorus, layer: str, tid: str, values: np.ndarray, signed: bool
) -> np.ndarray | None:
    raw = np.abs(values) if layer == "effect" and not signed else values
    return rules._lookup_batch("test", tid, f"{layer}_cdfs", raw, signed=signed)


def flag(bg: Backgrounds, layer: str, tid: str) -> bool:
    """The sign :meth:`Backgrounds.percentile` defaults to: the track's flag, effects only."""
    i = bg.resolve(tid)
    return layer == "effect" and i is not None and bool(bg.signed[i])


def check_against(rules: ChorusRules | RealChorus, bg: Backgrounds, e: dict[str, Any]) -> None:
    values = np.array(e["values"], np.float64)
    for layer in LAYERS:
        for tid in ASKED_IDS:
            for signed in (False, True):
                for v in e["values"]:  # one value: chorus's _lookup
                    assert _same(
                        bg.percentile(layer, tid, v, signed=signed),
                        chorus_call(rules, layer, tid, v, signed),
                    ), (layer, tid, v, signed)
                # one track, many values: chorus's _lookup_batch, None for the whole batch
                ours = bg.percentile(layer, tid, values, signed=signed)
                theirs = chorus_batch(rules, layer, tid, values, signed)
                assert (ours is None) == (theirs is None), (layer, tid)
                if ours is not None and theirs is not None:
                    np.testing.assert_array_equal(ours, theirs)
            # the default sign is the track's flag for effects
            default = bg.percentile(layer, tid, values)
            expected = chorus_batch(rules, layer, tid, values, flag(bg, layer, tid))
            if default is not None and expected is not None:
                np.testing.assert_array_equal(default, expected)
        # many tracks at once: each entry as chorus's batch for its track; NaN for None
        many = bg.percentile(layer, e["ids"], values)
        assert many.shape == values.shape and many.dtype == np.float64
        for k, (tid, v) in enumerate(zip(e["ids"], values, strict=True)):
            one = chorus_batch(rules, layer, tid, np.array([v]), flag(bg, layer, tid))
            assert _same_entry(many[k], None if one is None else float(one[0])), (layer, tid, v)


def _same(a: float | None, b: float | None) -> bool:
    """One value's answer: both None, or the same Python float."""
    if a is None or b is None:
        return a is None and b is None
    return type(a) is float and a == b


def _same_entry(a: np.float64, b: float | None) -> bool:
    """An entry of a many-track answer: NaN exactly where chorus gives None."""
    return bool(np.isnan(a)) if b is None else bool(a == b)


@settings(max_examples=150, deadline=None)
@given(exports())
def test_percentiles_follow_chorus_rules_restated(e: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_export(Path(tmp) / "test_pertrack.npz", e)
        check_against(ChorusRules(path), Backgrounds.load(path), e)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(e=exports())
def test_percentiles_equal_chorus_own_code(
    chorus_module: types.ModuleType, e: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_export(Path(tmp) / "test_pertrack.npz", e)
        check_against(RealChorus(chorus_module, path), Backgrounds.load(path), e)


def test_the_restated_rules_are_chorus_own_on_the_demo_export(
    chorus_module: types.ModuleType, small_build: tuple[Path, Path], tmp_path: Path
) -> None:
    """On real grids (ties in the RNA and MPRA tracks), chorus's own normalizer and the
    restatement agree with Backgrounds, as far as its loader reads this file."""
    npz = tmp_path / "test_pertrack.npz"
    with np.load(small_build[1], allow_pickle=False) as z:  # chorus ranks only hg38 files
        arrays = {k: z[k] for k in z.files}
    config = json.loads(str(arrays["build_config"][0])) | {"genome": "hg38"}
    arrays["build_config"] = np.array([json.dumps(config)])
    np.savez(npz, **arrays)
    bg, real = Backgrounds.load(npz), RealChorus(chorus_module, npz)
    rng = np.random.default_rng(7)
    for layer in LAYERS:
        grid = bg.cdfs[layer]
        for t, tid in enumerate(bg.track_ids):
            values = np.concatenate(
                [
                    grid[t, rng.integers(0, grid.shape[1], 50)],
                    rng.normal(grid[t].mean(), grid[t].std() + 1, 50),
                ]
            )
            sign = flag(bg, layer, tid)
            expected = chorus_batch(real, layer, tid, values, sign)
            assert expected is not None
            np.testing.assert_array_equal(bg.percentile(layer, tid, values), expected)
            for v in values[::10].tolist():
                assert bg.percentile(layer, tid, v) == chorus_call(real, layer, tid, v, sign)
        many = bg.percentile(layer, np.repeat(bg.track_ids, 3), np.zeros(3 * len(bg.track_ids)))
        for k, tid in enumerate(np.repeat(bg.track_ids, 3)):
            assert many[k] == chorus_call(real, layer, str(tid), 0.0, flag(bg, layer, str(tid)))


def test_a_numpy_scalar_is_hashed_as_chorus_hashes_what_it_is_given(
    chorus_module: types.ModuleType, tmp_path: Path
) -> None:
    """chorus's scalar _lookup hashes ``repr`` of the value it receives, so a NumPy scalar
    (``np.float64(1.0)``) can break a tie differently than the float 1.0; so do we."""
    e = {
        "track_ids": ["T"],
        "cdfs": {"summary": np.array([[0.0] + [1.0] * 30 + [2.0]], np.float32)},
        "counts": {"summary": np.array([9])},
        "signed": np.array([False]),
    }
    path = write_export(tmp_path / "test_pertrack.npz", e)
    bg, real = Backgrounds.load(path), RealChorus(chorus_module, path)
    for v in (1.0, np.float64(1.0), np.float32(1.0), 1):
        assert bg.percentile("summary", "T", v) == real._lookup("test", "T", "summary_cdfs", v)


# --------------------------------------------------------------------------------------
# the vectorised search, and Backgrounds' own rules and errors
# --------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_searchsorted_rows_is_numpy_searchsorted_of_each_row(data: st.DataObject) -> None:
    n_tracks, width = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 33))
    element = st.one_of(
        st.sampled_from([0.0, 1.0, 1.0, 2.0, np.inf, -np.inf, np.nan]), st.floats(-3, 3, width=32)
    )
    cdfs = np.sort(
        np.array(
            data.draw(
                st.lists(
                    st.lists(element, min_size=width, max_size=width),
                    min_size=n_tracks,
                    max_size=n_tracks,
                )
            ),
            np.float32,
        ),
        axis=1,
    )
    n = data.draw(st.integers(0, 40))
    rows = np.array(data.draw(st.lists(st.integers(0, n_tracks - 1), min_size=n, max_size=n)))
    values = np.array(data.draw(st.lists(element | st.floats(-4, 4), min_size=n, max_size=n)))
    for side in ("left", "right"):
        got = searchsorted_rows(cdfs, rows.astype(np.int64), values.astype(np.float64), side)
        want = [np.searchsorted(cdfs[r], v, side=side) for r, v in zip(rows, values, strict=True)]
        assert got.tolist() == [int(w) for w in want], side


def make(**over: Any) -> Backgrounds:
    grid = np.array([[0.0, 1.0, 2.0, 3.0], [-1.0, 0.0, 0.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    fields: dict[str, Any] = {
        "track_ids": ["A", "S", "Z"],
        "cdfs": {x: grid.astype(np.float32) for x in LAYERS},
        "counts": {x: np.array([10, 10, 0]) for x in LAYERS},
        "signed": np.array([False, True, False]),
        "build_config": {},
    }
    return Backgrounds(**(fields | over))


def test_backgrounds_rules_by_hand() -> None:
    bg = make()
    assert bg.percentile("summary", "A", 1.5) == 0.5  # rank 2 of W = 4
    assert bg.percentile("summary", "A", 99.0) == 1.0 and bg.percentile("summary", "A", -9) == 0.0
    assert bg.percentile("effect", "A", -1.5) == 0.5  # unsigned effect: ranked as |value|
    assert bg.percentile("effect", "S", 0.5) == pytest.approx(2 * 3 / 4 - 1)  # signed: 2q - 1
    assert bg.percentile("effect", "S", 0.5, signed=False) == 0.75  # the flag overridden
    assert bg.percentile("summary", "Z", 5.0) is None  # zero count
    assert bg.percentile("summary", "nope", 1.0) is None  # unknown, as chorus: no error
    assert bg.percentile("summary", "Z", np.array([1.0])) is None  # batch: None, as chorus
    assert type(bg.percentile("summary", "A", 1.5)) is float
    out = bg.percentile("summary", "A", np.array([[0.5, 1.5], [2.5, 9.0]]))
    assert out is not None and out.tolist() == [[0.25, 0.5], [0.75, 1.0]]  # any shape
    many = bg.percentile("summary", np.array(["A", "Z", "nope", "A"]), 1.5)  # one value, broadcast
    assert np.isnan(many[1:3]).all() and many[0] == many[3] == 0.5
    assert bg.percentile("summary", [], []).shape == (0,)
    no_effect = make(cdfs={"summary": make().cdfs["summary"]})
    assert no_effect.percentile("effect", "A", 1.0) is None  # a layer the export lacks
    assert np.isnan(no_effect.percentile("effect", ["A"], [1.0])).all()


def test_tracks_are_found_by_one_dict_and_chorus_fallbacks() -> None:
    bg = make(track_ids=["CHIP:HepG2:CEBPA", "DNASE_liver", "HepG2"])
    assert bg.index == {"CHIP:HepG2:CEBPA": 0, "DNASE_liver": 1, "HepG2": 2}
    assert bg.resolve("CHIP:HepG2:CEBPA:+") == 0 and bg.resolve("DNASE:liver") == 1
    assert bg.resolve("LentiMPRA:HepG2") == 2 and bg.resolve("liver") is None
    assert bg.row("DNASE_liver") == 1


def test_backgrounds_errors_name_the_fix() -> None:
    bg = make()
    with pytest.raises(UsageError, match="no CDF layer 'efect'; use one of effect, summary"):
        bg.percentile("efect", "A", 1.0)
    with pytest.raises(UsageError, match="track 'nope' is not in this export .3 tracks"):
        bg.row("nope")
    with pytest.raises(UsageError, match="do not broadcast together"):
        bg.percentile("summary", ["A", "S"], [1.0, 2.0, 3.0])
    with pytest.raises(UsageError, match="must be numbers"):
        bg.percentile("summary", "A", ["x", "y"])  # type: ignore[list-item]


def test_the_module_doctests_run() -> None:
    result = doctest.testmod(query, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_percentile_of_a_rows_median_is_one_half(small_build: tuple[Path, Path]) -> None:
    bg = Backgrounds.load(small_build[1])
    for layer in ("effect", "summary", "perbin"):
        for t, track in enumerate(bg.track_ids):
            row = bg.cdfs[layer][t]
            if row[4999] == row[4998] or row[4999] == row[5000]:
                continue  # a tie: chorus spreads the rank by hash, not checked here
            q = bg.percentile(layer, track, float(row[4999]))
            signed = layer == "effect" and bool(bg.signed[t])
            assert q == pytest.approx(0.0 if signed else 0.5), (layer, track)  # 2q - 1 when signed
    top = bg.cdfs["summary"][0][-1]
    assert bg.percentile("summary", bg.track_ids[0], float(top) * 2) == 1.0
    untied = [
        t
        for i, t in enumerate(bg.track_ids)
        if bg.signed[i] and len(set(bg.cdfs["effect"][i][4998:5001].tolist())) == 3
    ]
    i = bg.row(untied[0])
    median = float(bg.cdfs["effect"][i][4999])
    assert bg.percentile("effect", untied[0], median) == pytest.approx(0.0)  # signed: 2q - 1


# --------------------------------------------------------------------------------------
# the store as a native DataTree
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(small_build: tuple[Path, Path]) -> xr.DataTree:
    return open_store(small_build[0])


def _node(tree: xr.DataTree, path: str) -> xr.Dataset:
    return tree[path].to_dataset()


def test_open_store_gives_named_dims_and_coords(tree: xr.DataTree) -> None:
    ds = tree
    assert isinstance(ds, xr.DataTree)  # one tree: its nodes are the store's groups
    assert set(schema().groups) <= {n.path.lstrip("/") for n in ds.subtree}
    assert ds.attrs["chorus_store"]["oracle"]["name"] == "demo"
    base = _node(ds, "baselines")
    assert base.summary.dims == ("position", "strand", "track")
    assert base.perbin.dims == ("position", "strand", "bin_sample", "track")
    assert base.gene_summary.dims == ("position_gene", "track")
    assert {"chrom", "pos", "stratum", "track", "position"} <= set(base.coords)
    liver = base.summary.sel(track="DEMO-DNASE-liver", strand=".")
    assert liver.dims == ("position",) and np.isfinite(liver.values).sum() > 100
    cage = base.summary.sel(track="CNhsDEMO01", strand=".")
    cage_at_ccre = cage.where(base.stratum == "ccre", drop=True)
    assert np.isnan(cage_at_ccre.values).all()  # CAGE routing (spec 4.4)
    var = _node(ds, "variants")
    assert {"chrom", "pos", "ref", "alt", "stratum", "variant"} <= set(var.coords)
    assert _node(ds, "reductions/effect").grid.dims == ("track", "quantile")
    assert _node(ds, "plan/positions").bin_index.dims == ("position", "resolution", "bin_sample")
    rna = base.gene_summary.sel(track="DEMO-RNA-liver")
    assert {"gene_name", "gene_row", "gene_id"} <= set(rna.coords)
    assert np.isfinite(rna.values).sum() > 50


def test_rows_are_selected_by_genomic_label(tree: xr.DataTree) -> None:
    base, var, plan = (_node(tree, p) for p in ("baselines", "variants", "plan/positions"))
    assert base.indexes["position"].is_unique and var.indexes["variant"].is_unique
    i = 17
    label = f"{base.chrom.values[i]}:{base.pos.values[i]}"
    one = base.summary.sel(position=label)
    assert one.dims == ("strand", "track") and str(one.stratum.values) == base.stratum.values[i]
    np.testing.assert_array_equal(one.values, base.summary.values[i])
    assert str(plan.sel(position=label).chrom.values) == base.chrom.values[i]  # plan rows too
    j = [3, 9, 40]
    labels = [
        f"{var.chrom.values[k]}:{var.pos.values[k]}:{var.ref.values[k]}>{var.alt.values[k]}"
        for k in j
    ]
    np.testing.assert_array_equal(var.effect.sel(variant=labels).values, var.effect.values[j])
    with pytest.raises(KeyError):
        base.summary.sel(position="chr1:0")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["chr1", "chr2", "chrX"]), st.integers(1, 4)),
        min_size=0,
        max_size=30,
    )
)
def test_row_labels_are_unique_and_name_the_site(rows: list[tuple[str, int]]) -> None:
    plan = xr.Dataset(
        {
            "chrom": ("position", [c for c, _ in rows]),
            "pos": ("position", np.array([p for _, p in rows], np.int64)),
        }
    )
    labels = row_labels(plan, schema().data_group("baselines")).tolist()
    assert len(set(labels)) == len(labels)
    seen: dict[str, int] = {}
    for (chrom, pos), label in zip(rows, labels, strict=True):
        site = f"{chrom}:{pos}"
        seen[site] = seen.get(site, 0) + 1
        assert label == (site if seen[site] == 1 else f"{site}#{seen[site]}")


def test_variant_labels_name_the_alleles() -> None:
    plan = xr.Dataset(
        {
            k: ("variant", v)
            for k, v in {
                "chrom": ["chr1", "chr1"],
                "pos": [5, 5],
                "ref": ["A", "A"],
                "alt": ["C", "C"],
            }.items()
        }
    )
    labels = row_labels(plan, schema().data_group("variants")).tolist()
    assert labels == ["chr1:5:A>C", "chr1:5:A>C#2"]


def test_the_track_table_is_in_memory_on_every_track_dim(
    tree: xr.DataTree, small_build: tuple[Path, Path]
) -> None:
    columns = [c for c in schema().columns("tracks") if c != "track"]
    assert {"layer", "assay_type", "signed", "window_bp", "formula"} <= set(columns)
    table = _node(tree, "tracks")
    with_track = [n.path for n in tree.subtree if "track" in n.dims]
    assert len(with_track) == 6  # tracks, baselines, variants, reductions/{3}
    for path in with_track:
        ds = _node(tree, path.lstrip("/"))
        for c in columns:
            coord = ds.coords[c]
            assert coord.dims == ("track",) and coord.chunks is None, (path, c)
            assert coord.variable._in_memory, (path, c)  # numpy, not a lazy backend array
            np.testing.assert_array_equal(coord.values, table[c].values)
    fresh = open_store(small_build[0])  # the module's tree has had values read by now
    assert not _node(fresh, "baselines").summary.variable._in_memory  # the data stay lazy
    assert _node(fresh, "baselines").layer.variable._in_memory


def test_groupby_layer_needs_no_load(tree: xr.DataTree, small_build: tuple[Path, Path]) -> None:
    summary = tree["baselines"].summary.sel(strand=".")  # straight off the tree
    medians = summary.groupby("layer").median(skipna=True)
    raw = xr.open_zarr(small_build[0], group="baselines").summary.values[:, 0]
    layers = _node(tree, "tracks").layer.values
    for layer in np.unique(layers):
        cols = raw[:, layers == layer]
        with warnings.catch_warnings():  # RNA tracks: no per-position summary, all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(cols, axis=1)
        np.testing.assert_allclose(medians.sel(layer=str(layer)).values, expected, rtol=1e-6)
    by_signed = tree["variants"].effect.groupby("signed").count()
    assert by_signed.sizes["signed"] == 2
    picked = tree["baselines"].summary.sel(track="DEMO-DNASE-liver")
    assert str(picked.layer.values) == "chromatin_accessibility" and int(picked.window_bp) == 501


def test_gene_records_join_their_rows_without_padding(tree: xr.DataTree) -> None:
    base = _node(tree, "baselines")
    slots = base.gene_row.values
    rna = gene_records(tree)
    assert rna.sizes["position_gene"] == int((slots >= 0).sum()) > 0
    assert (rna.row.values >= 0).all()
    assert set(rna.layer.values.tolist()) == {"gene_expression"}
    for c in ("chrom", "pos", "stratum", "position"):
        np.testing.assert_array_equal(rna[c].values, base[c].values[rna.row.values])
    raw = base.gene_summary.sel(track=rna.track).values[slots >= 0]
    np.testing.assert_array_equal(rna.gene_summary.values, raw)
    np.testing.assert_array_equal(rna.gene_name.values, base.gene_name.values[slots >= 0])
    assert rna.gene_summary.attrs["long_name"] == "per-gene exon activity"
    # the join is a .sel either way: a position's genes, a gene's positions
    label = str(rna.position.values[0])
    at = rna.gene_summary.sel(position=label)
    assert set(at.gene_id.values.tolist()) == set(rna.gene_id.values[rna.position == label])
    gene = str(rna.gene_id.values[0])
    assert set(rna.sel(gene_id=gene).position.values.tolist()) == set(
        rna.position.values[rna.gene_id == gene].tolist()
    )
    back = base.summary.sel(position=rna.position.values)  # each record's own row
    assert back.sizes["position"] == rna.sizes["position_gene"]
    by_stratum = rna.gene_summary.groupby("stratum").median()
    assert set(by_stratum.stratum.values.tolist()) <= set(base.stratum.values.tolist())
    assert gene_records(tree, gene_tracks_only=False).sizes["track"] == base.sizes["track"]


def test_variant_gene_records_carry_alleles_and_signed_effects(tree: xr.DataTree) -> None:
    var = _node(tree, "variants")
    recs = gene_records(tree, "variants")
    keep = var.gene_row.values >= 0
    assert recs.sizes["variant_gene"] == int(keep.sum()) > 0
    assert set(recs.data_vars) == {"gene_ref_summary", "gene_alt_summary", "gene_effect"}
    for c in ("ref", "alt", "variant"):
        np.testing.assert_array_equal(recs[c].values, var[c].values[recs.row.values])
    effect = var.gene_effect.sel(track=recs.track).values[keep]
    np.testing.assert_array_equal(recs.gene_effect.values, effect)
    assert (effect[np.isfinite(effect)] < 0).any()  # signed, not |effect|
    with pytest.raises(SchemaError, match="no data group 'genes'"):
        gene_records(tree, "genes")


def test_data_variables_say_what_they_hold(tree: xr.DataTree) -> None:
    for path in ("baselines", "variants", "reductions/effect", "reductions/summary"):
        ds = _node(tree, path)
        for name, var in ds.data_vars.items():
            if name == "fingerprint":
                continue
            assert var.attrs.get("long_name") and var.attrs.get("units"), (path, name)
    assert "signed" in tree["variants"].effect.attrs["sign"]
    assert "|value|" in tree["reductions/effect"].grid.attrs["sign"]
    assert "|effect|" in tree["variants"].effect.attrs["sign"]
    assert "formula" in tree["variants"].effect.attrs["units"]
    # the attributes come from the schema, one place, not from the stored zarr.json
    assert (
        tree["baselines"].summary.attrs["long_name"]
        == schema().array("baselines/summary").long_name
    )


# --------------------------------------------------------------------------------------
# the README's examples run
# --------------------------------------------------------------------------------------


def readme_examples() -> str:
    text = README.read_text()
    section = text.split("### Looking at the raw values", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_readme_examples_run(small_build: tuple[Path, Path]) -> None:
    code = readme_examples()
    assert "open_store" in code and "Backgrounds" in code and "gene_records" in code
    store, npz = small_build
    code = code.replace("demo-out/demo.zarr", str(store))
    code = code.replace("demo-out/demo_pertrack.npz", str(npz))
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})  # noqa: S102
