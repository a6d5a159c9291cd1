"""The public API: what ``chorus_store`` exports is exactly ``__all__``, and documented."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

import chorus_store
from chorus_store.errors import ChorusStoreError, ClusterError, UsageError


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

    assert callable(Backgrounds.load) and issubclass(ClusterError, ChorusStoreError)
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


def test_build_and_reduce_take_one_scheduler_argument(tmp_path: Path) -> None:
    """``scheduler=`` (a name, an address or a Client) for both; ``client=`` is gone."""
    from chorus_store import build, reduce

    for stage in (build, reduce):
        params = inspect.signature(stage).parameters
        assert "scheduler" in params and "workers" in params
        assert "client" not in params and "num_workers" not in params
    with pytest.raises(UsageError, match="not on dask's 'threads' scheduler"):
        build(tmp_path / "none.zarr", scheduler="threads")  # refused before the store is read
    with pytest.raises(UsageError, match="not int"):
        reduce(tmp_path / "none.zarr", scheduler=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build(tmp_path / "none.zarr", client=object())  # type: ignore[call-arg]


def test_a_scheduler_address_is_connected_and_an_unreachable_one_is_a_cluster_error() -> None:
    from chorus_store.scheduler import local_or_client

    with local_or_client(None) as target:
        assert target == "threads"
    with local_or_client("sync") as target:
        assert target == "sync"
    given: Any = object.__new__(type("Client", (), {"submit": lambda self: None}))
    with local_or_client(given) as target:
        assert target is given
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(ClusterError, match="tcp://127.0.0.1:9.*--scheduler"),
        local_or_client("tcp://127.0.0.1:9"),
    ):
        pass


def test_repair_and_unlock_are_upkeep_not_status() -> None:
    from chorus_store.inspect import status as status_module
    from chorus_store.store import upkeep

    assert chorus_store.unlock is upkeep.unlock
    assert not hasattr(status_module, "unlock") and not hasattr(status_module, "_repair_claims")
    assert hasattr(upkeep, "repair") and hasattr(upkeep, "repair_claims")
