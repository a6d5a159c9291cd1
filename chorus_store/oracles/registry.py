"""Which adapter loads a recipe's model: ``[oracle] adapter`` looked up among the built-in
adapters and the ``chorus_store.oracles`` entry points, so an adapter can live in another
package."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import TYPE_CHECKING

from chorus_store.errors import MissingDependencyError, RecipeError

if TYPE_CHECKING:
    from chorus_store.oracles.base import Oracle
    from chorus_store.recipes import Recipe

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILT_IN",
    "AdapterLoad",
    "adapters",
    "extra_for",
    "find_adapter",
    "load_oracle",
]

#: the entry-point group a package declares its adapters under (pyproject.toml:
#: ``[project.entry-points."chorus_store.oracles"] name = "package.module:load"``)
ENTRY_POINT_GROUP = "chorus_store.oracles"

#: ``load(recipe, *, weights, device) -> Oracle``
AdapterLoad = Callable[..., "Oracle"]

#: the adapters shipped here, each a module of chorus_store/oracles/ named as the recipe
#: names it. pyproject.toml declares the same table as entry points; it is kept here too
#: because an editable install made before an entry point was added lacks it, and a
#: build must not depend on when ``pip install -e`` last ran (a test checks both agree).
BUILT_IN: dict[str, str] = {
    name: f"chorus_store.oracles.{name}:load"
    for name in (
        "alphagenome",
        "borzoi",
        "callable",
        "chrombpnet",
        "enformer",
        "legnet",
        "pytorch",
        "sei",
    )
}


def _entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """Every entry point of the group, by name: one name may be declared by several
    distributions (this package's own metadata, and a third party's)."""
    out: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if all(ep.value != seen.value for seen in out.get(ep.name, [])):
            out.setdefault(ep.name, []).append(ep)
    return out


def adapters() -> dict[str, str]:
    """Every adapter name a recipe may give, with the ``module:attribute`` that loads it."""
    found = {name: eps[0].value for name, eps in _entry_points().items()}
    return dict(sorted({**found, **BUILT_IN}.items()))


def find_adapter(name: str, *, recipe: str = "") -> AdapterLoad:
    """The ``load`` callable of adapter ``name``.

    A built-in name wins; an entry point that claims one for other code is refused, so an
    installed package cannot silently replace the code of a shipped adapter (its stores'
    fingerprints would change with it).

    Raises
    ------
    RecipeError
        No adapter of that name (the message lists the registered ones), an entry point
        clashing with a built-in adapter, or an adapter whose framework is not installed.
    """
    where = f"recipe {recipe!r}: " if recipe else ""
    points = _entry_points().get(name, [])
    value = BUILT_IN.get(name)
    others = [p for p in points if p.value != value]
    if value is not None and others:
        raise RecipeError(
            f"the entry point {name!r} = {others[0].value!r} (group {ENTRY_POINT_GROUP}) "
            f"claims the name of the built-in adapter {value!r}; rename the third-party adapter"
        )
    if value is None and len(points) > 1:
        raise RecipeError(
            f"{where}adapter {name!r} is declared by several entry points "
            f"({', '.join(p.value for p in points)}); uninstall all but one"
        )
    if value is None and not points:
        raise RecipeError(
            f"{where}unknown adapter {name!r}; registered: {', '.join(adapters())} (a package adds "
            f"one as an entry point of the group {ENTRY_POINT_GROUP})"
        )
    point = (
        points[0]
        if value is None
        else importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
    )
    try:
        loaded = point.load()
    except ModuleNotFoundError as exc:
        raise missing_dependency(name, exc, point.value) from exc
    if not callable(loaded):
        raise RecipeError(f"the adapter {name!r} ({point.value}) is not callable")
    load: AdapterLoad = loaded
    return load


def extra_for(adapter: str, module: str) -> str:
    """The package extra that installs ``module`` for built-in ``adapter``: one per
    oracle, and per framework where an adapter has two (pyproject.toml)."""
    if adapter == "enformer" and module in ("tensorflow", "keras"):
        return "enformer-tf"
    if adapter == "chrombpnet":
        return "chrombpnet" if module in ("tensorflow", "keras", "h5py") else "chrombpnet-torch"
    return {"pytorch": "torch", "callable": "torch"}.get(adapter, adapter)


def missing_dependency(
    name: str, exc: ModuleNotFoundError, value: str
) -> MissingDependencyError | RecipeError:
    """The error for adapter ``name`` (``value``, its ``module:load``) needing a module
    that is not installed: a built-in one's framework is one of the package's extras."""
    if BUILT_IN.get(name) == value:
        module = (exc.name or "").split(".")[0]
        return MissingDependencyError.of(f"the {name} adapter", exc, extra_for(name, module))
    return RecipeError(
        f"the {name} adapter needs {exc.name!r}, which is not installed; install it, or the "
        f"package that provides the adapter {value!r}"
    )


def load_oracle(recipe: Recipe, *, weights: str | None, device: str) -> Oracle:
    """Load ``recipe``'s model through the adapter its ``[oracle] adapter`` names."""
    name = str(recipe.oracle["adapter"])
    load = find_adapter(name, recipe=recipe.name)
    try:
        oracle = load(recipe, weights=weights, device=device)
    except ModuleNotFoundError as exc:  # a framework imported when the model is built
        value = adapters().get(name, name)
        raise missing_dependency(name, exc, value) from exc
    return oracle
