"""A hypothesis state machine: build, crash, resume, add tracks — the export always equals
the one-shot build of the same final configuration (invariants 1, 2 and 6)."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chorus_store import ChorusStore, add_tracks, build, export, reduce
from chorus_store.demo import make_demo_inputs

from .helpers import composition_oracle, plan_small, small_recipe

build_module = importlib.import_module("chorus_store.build.tasks")


class SimulatedCrash(Exception):
    """Stands for the process dying at a write."""


_CACHE: dict[str, Any] = {}


def _fixtures() -> dict[str, Any]:
    """Demo inputs and one-shot reference exports for 20 and 40 tracks (made once)."""
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
            _CACHE[n] = export(store, out=root / f"ref{n}.npz").read_bytes()
    return _CACHE


class BuildMachine(RuleBasedStateMachine):
    @initialize()
    def make_store(self) -> None:
        fx = _fixtures()
        self.dir = Path(tempfile.mkdtemp(prefix="chorus-sm-run-"))
        self.store = self.dir / "demo.zarr"
        self.n_tracks = 20
        plan_small(self.store, fx["inputs"], small_recipe(self.dir, n_tracks=20))
        self.last_rows_built: dict[str, int] | None = None

    def _build(self, crash_after: int | None, mid_write: bool, part: str) -> None:
        real = build_module._write_task
        state = {"writes": 0}

        def crashing(store, task, arrays):  # type: ignore[no-untyped-def]
            if crash_after is not None and state["writes"] >= crash_after:
                if mid_write:  # torn: garbage lands in the shard, the done mark does not
                    name, values = next(iter(arrays.items()))
                    t = task.tracks[0]
                    garbage = np.full_like(values[..., :1], 123.0)
                    target = store.array(f"{task.group.name}/{name}")
                    target[task.start : task.stop, ..., t : t + 1] = garbage
                raise SimulatedCrash
            real(store, task, arrays)
            state["writes"] += 1

        build_module._write_task = crashing
        try:
            report = build(self.store, oracle=composition_oracle(), part=part, progress=False)
            self.last_rows_built = report.rows_built
        except SimulatedCrash:
            self.last_rows_built = None
        finally:
            build_module._write_task = real

    @rule(
        crash_after=st.integers(0, 6),
        mid_write=st.booleans(),
        part=st.sampled_from(["all", "baselines", "variants"]),
    )
    def build_then_crash(self, crash_after: int, mid_write: bool, part: str) -> None:
        self._build(crash_after, mid_write, part)

    @rule(part=st.sampled_from(["all", "baselines", "variants"]))
    def build_part(self, part: str) -> None:
        self._build(None, False, part)

    @precondition(lambda self: self.n_tracks == 20)
    @rule()
    def add_the_other_tracks(self) -> None:
        assert add_tracks(self.store, small_recipe(self.dir)) == 20
        self.n_tracks = 40

    @rule()
    def rerun_after_completion_does_nothing(self) -> None:
        self._build(None, False, "all")
        again = build(self.store, oracle=composition_oracle(), progress=False)
        assert again.oracle_calls == 0 and sum(again.rows_built.values()) == 0

    @invariant()
    def store_stays_valid(self) -> None:
        ChorusStore.open(self.store).validate()

    def teardown(self) -> None:
        if not hasattr(self, "store"):
            return
        try:
            self._build(None, False, "all")
            reduce(self.store, progress=False)
            got = export(self.store, out=self.dir / "out.npz").read_bytes()
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
