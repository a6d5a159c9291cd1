"""The package's architecture as tests: stages depend down the pipeline, no import cycle."""

from __future__ import annotations

import graphlib
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("chorus_store", exclude_type_checking_imports=True)


def test_the_layer_contract_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyproject's [tool.importlinter] contract: reduce, export and inspect never import
    build; nothing imports a stage above it."""
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    deps = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError as exc:  # pragma: no cover - the failure message
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check above can fail: a graph with one added back edge is refused."""
    graph = _graph()
    graph.add_import(
        importer="chorus_store.store.core",
        imported="chorus_store.build.stage",
        line_number=1,
        line_contents="from chorus_store.build.stage import build",
    )
    deps = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(deps).prepare()
