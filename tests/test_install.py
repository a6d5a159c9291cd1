"""Each extra installs into a fresh venv, brings one TensorFlow at most and nothing built
from source it does not need, and runs its smoke check (benchmarks/install.py).

Minutes per extra and gigabytes of venvs: deselected by default; run with
``python -m pytest -m install -n 0``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.install


def _install_script() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "install.py"
    spec = importlib.util.spec_from_file_location("install_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


bench = _install_script()


@pytest.fixture(scope="module")
def core() -> set[str]:
    result, dists = bench.install("core", "", sys.executable, set())
    assert result.ok, result.problem
    return set(dists)


@pytest.mark.parametrize("extra", [e for e in bench.SMOKE if e != "core"])
def test_extra_installs_alone_and_runs(extra: str, core: set[str]) -> None:
    result, dists = bench.install(extra, "torch==2.13.0", sys.executable, core)
    assert result.ok, result.problem
    assert not {"tensorflow", "tensorflow-cpu"} <= dists
    assert "tf-keras" not in dists
    if extra != "chrombpnet-torch":
        assert "macs3" not in dists


def test_the_numpy_floor_runs_the_demo(core: set[str]) -> None:
    result, dists = bench.install("demo", "torch==2.13.0", sys.executable, core, ("numpy==1.26.4",))
    assert result.ok, result.problem
