"""A hypothesis state machine: build, crash, fill the disk, resume, add tracks. After every
step the store is checked against a model of which (row shard, track) cells are done: a
done mark means that cell's records equal the one-shot build's, no mark means nothing was
written there unless a failed write may have left it; at the end the export equals the
one-shot build of the same final configuration (invariants 1, 2 and 6).

Faults are injected through the storage layer (:mod:`chorus_store.testing.faults`): a crash
or a full disk at the N-th write of record chunks or of done marks, the failing write's
bytes landing or not."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chorus_store import add_tracks, build, export, reduce
from chorus_store.demo import make_demo_inputs
from chorus_store.errors import WriteError
from chorus_store.store.core import ChorusStore
from chorus_store.testing.faults import Fault, SimulatedCrash, StoreFaults

from .helpers import composition_oracle, plan_small, small_recipe

GROUPS = ("baselines", "variants")
PARTS = {"all": GROUPS, "baselines": ("baselines",), "variants": ("variants",)}
TARGETS = {"records": "*/*summary/c/*", "done marks": "*/done_rows/c/*"}

_CACHE: dict[Any, Any] = {}


def _fixtures() -> dict[Any, Any]:
    """Demo inputs, one-shot reference stores and exports for 20 and 40 tracks (made once)."""
    if not _CACHE:
        root = Path(tempfile.mkdtemp(prefix="chorus-sm-"))
        _CACHE["root"] = root
        _CACHE["inputs"] = make_demo_inputs(root / "inputs")
        for n in (20, 40):
            recipe = small_recipe(root, n_tracks=n)
            store = root / f"ref{n}.zarr"
            plan_small(store, _CACHE["inputs"], recipe)
            build(store, oracle=composition_oracle(), progress=False)
            reduce(store, progress=False)
            _CACHE[n] = export(store, out=root / f"ref{n}.npz").path.read_bytes()
            _CACHE["records", n] = _records(store)
    return _CACHE


def _records(store: Path) -> dict[str, tuple[np.ndarray, int]]:
    """Every record array (float, tracks last) and done-marks array of a store, with the
    rows per shard along its first axis: ``{"group/name": (values, rows_per_shard)}``."""
    root = zarr.open_group(store, mode="r")
    out: dict[str, tuple[np.ndarray, int]] = {}
    for group in GROUPS:
        for name, arr in root[group].arrays():  # type: ignore[union-attr]  # a group here
            if arr.dtype.kind == "f" or name == "done_rows":
                shard = arr.shards or arr.chunks
                out[f"{group}/{name}"] = (np.asarray(arr[...]), shard[0])
    return out


def _cells(done: np.ndarray, rows: int, per_shard: int) -> np.ndarray:
    """(rows, tracks) booleans from (shards, tracks) ones: each row takes its shard's."""
    return np.repeat(done, per_shard, axis=0)[:rows]


class BuildMachine(RuleBasedStateMachine):
    @initialize()
    def make_store(self) -> None:
        fx = _fixtures()
        self.dir = Path(tempfile.mkdtemp(prefix="chorus-sm-run-"))
        self.store = self.dir / "demo.zarr"
        self.n_tracks = 20
        plan_small(self.store, fx["inputs"], small_recipe(self.dir, n_tracks=20))
        ref = fx["records", 20]
        # the model: per group, (shard, track) cells certainly done, and cells a failed
        # build may have written without marking them done
        self.done = {g: np.zeros(ref[f"{g}/done_rows"][0].shape, bool) for g in GROUPS}
        self.maybe = {g: np.zeros_like(d) for g, d in self.done.items()}

    def _build(self, part: str, *faults: Fault) -> None:
        with StoreFaults(*faults, url=self.store) as watch:
            try:
                report = build(self.store, oracle=composition_oracle(), part=part, progress=False)
            except SimulatedCrash:
                pass
            except WriteError as exc:
                assert "the disk is full" in str(exc) and any(f.kind == "full_disk" for f in faults)
            else:
                assert not watch.failed
                assert {g for g, n in report.rows_built.items() if n} <= set(PARTS[part])
        for g in PARTS[part]:
            if watch.failed:
                self.maybe[g] |= ~self.done[g]
            else:
                self.done[g][:] = True

    @rule(
        after=st.integers(0, 6),
        keys=st.sampled_from(sorted(TARGETS)),
        lands=st.booleans(),
        part=st.sampled_from(sorted(PARTS)),
    )
    def build_then_crash(self, after: int, keys: str, lands: bool, part: str) -> None:
        self._build(part, Fault(TARGETS[keys], after=after, kind="crash", lands=lands))

    @rule(after=st.integers(0, 12), part=st.sampled_from(sorted(PARTS)))
    def build_until_the_disk_is_full(self, after: int, part: str) -> None:
        self._build(part, Fault("*/c/*", after=after, kind="full_disk"))

    @rule(part=st.sampled_from(sorted(PARTS)))
    def build_part(self, part: str) -> None:
        self._build(part)

    @precondition(lambda self: self.n_tracks == 20)
    @rule()
    def add_the_other_tracks(self) -> None:
        assert add_tracks(self.store, small_recipe(self.dir)) == 20
        self.n_tracks = 40
        for model in (self.done, self.maybe):
            for g, cells in model.items():
                model[g] = np.concatenate([cells, np.zeros_like(cells)], axis=1)

    @rule()
    def rerun_after_completion_does_nothing(self) -> None:
        self._build("all")
        again = build(self.store, oracle=composition_oracle(), progress=False)
        assert again.oracle_calls == 0 and sum(again.rows_built.values()) == 0

    @invariant()
    def store_matches_the_model(self) -> None:
        if not hasattr(self, "store"):
            return
        ChorusStore.open(self.store).validate()
        ref = _fixtures()["records", self.n_tracks]
        got = _records(self.store)
        assert got.keys() == ref.keys()
        for g in GROUPS:
            marks, _ = got[f"{g}/done_rows"]
            done = marks > 0
            np.testing.assert_array_equal(marks[done], ref[f"{g}/done_rows"][0][done])
            assert (done >= self.done[g]).all(), f"{g}: a done mark was lost"
            assert (done <= self.done[g] | self.maybe[g]).all(), f"{g}: marked, never built"
            for name, (values, per_shard) in got.items():
                if not name.startswith(f"{g}/") or name.endswith("/done_rows"):
                    continue
                # (rows, tracks, ...): one entry per (row, track) cell
                cells = np.moveaxis(values, -1, 1)
                expected = np.moveaxis(ref[name][0], -1, 1)
                rows = _cells(done, len(values), per_shard)
                blank = _cells(~done & ~self.maybe[g], len(values), per_shard)
                # done ⇒ the one-shot build's records; never written ⇒ nothing (NaN); a
                # failed write may leave records in an unmarked cell, which a build redoes
                np.testing.assert_array_equal(cells[rows], expected[rows], err_msg=name)
                assert np.isnan(cells[blank]).all(), f"{name}: values in a cell never built"

    def teardown(self) -> None:
        if not hasattr(self, "store"):
            return
        try:
            self._build("all")
            reduce(self.store, progress=False)
            got = export(self.store, out=self.dir / "out.npz").path.read_bytes()
            assert got == _fixtures()[self.n_tracks], "export differs from the one-shot build"
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


BuildMachine.TestCase.settings = settings(
    max_examples=8,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_build_state_machine = BuildMachine.TestCase
