"""The public API: what ``chorus_store`` exports is exactly ``__all__``, and documented."""

from __future__ import annotations

import inspect

import chorus_store
from chorus_store.errors import ChorusStoreError


def _public_names() -> set[str]:
    return {
        name
        for name, value in vars(chorus_store).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }


def test_all_lists_exactly_the_public_names() -> None:
    assert len(chorus_store.__all__) == len(set(chorus_store.__all__))
    assert set(chorus_store.__all__) - {"__version__"} == _public_names()


def test_every_export_is_documented() -> None:
    for name in set(chorus_store.__all__) - {"__version__"}:
        doc = inspect.getdoc(getattr(chorus_store, name))
        assert doc and doc.strip(), f"chorus_store.{name} has no docstring"
        if inspect.isclass(getattr(chorus_store, name)):
            # a class's own docstring, not one inherited from Exception or object
            assert getattr(chorus_store, name).__doc__, name


def test_users_import_backgrounds_and_every_error_from_the_package() -> None:
    from chorus_store import Backgrounds, ClusterError

    assert Backgrounds.load and issubclass(ClusterError, ChorusStoreError)
    errors = {n for n in chorus_store.__all__ if n.endswith("Error")}
    import chorus_store.errors as module

    assert errors == set(module.__all__)


def test_internals_are_not_exported() -> None:
    for name in (
        "ChorusStore",
        "Layout",
        "TrackTable",
        "Genome",
        "LAYER_CONFIGS",
        "SamplingConfig",
        "centered_bin_span",
        "classify_track_layer",
    ):
        assert not hasattr(chorus_store, name), name
