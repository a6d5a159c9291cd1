"""The package's architecture as tests: stages depend down the pipeline, no import cycle."""

from __future__ import annotations

import graphlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("chorus_store", exclude_type_checking_imports=True)


def test_the_layer_contract_holds() -> None:
    """pyproject's [tool.importlinter] contract: reduce, export and inspect never import
    build; nothing imports a stage above it. Run in its own process: import-linter
    configures logging (it disables every existing logger, the package's included)."""
    check = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"
    )
    run = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


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


def _readme_tree() -> set[str]:
    """The paths of the README's "Layout" tree (two spaces of indent per level)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout\n", 1)[1].split("```\n", 2)[1]
    paths: set[str] = set()
    stack: list[str] = []
    for line in block.splitlines():
        name = line.strip().split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        stack[depth:] = [name.rstrip("/")]
        paths.add("/".join(stack) + ("/" if name.endswith("/") else ""))
    return paths


def test_the_readme_tree_is_the_folder_tree() -> None:
    listed = _readme_tree()
    modules = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "chorus_store").rglob("*.py")
        if p.name != "__init__.py" or p.parent.name == "chorus_store"
    }
    packages = {
        f"{p.parent.relative_to(ROOT)}/" for p in (ROOT / "chorus_store").rglob("__init__.py")
    }
    listed_modules = {p for p in listed if p.endswith(".py")}
    assert modules - listed_modules == set(), "modules missing from the README's Layout tree"
    assert listed_modules - modules == set(), "the README's Layout tree lists missing modules"
    assert packages <= listed, "packages missing from the README's Layout tree"
    for top in (p for p in listed if p.count("/") == 1 and p.endswith("/")):
        assert (ROOT / top).is_dir(), f"{top} is in the README's tree but not in the repository"
