"""Which dask scheduler runs a stage's tasks: the one ``scheduler`` argument that
:func:`~chorus_store.build` and :func:`~chorus_store.reduce` share.

``None`` (this machine), the name of a local dask scheduler (``"threads"``,
``"processes"``, ``"sync"``: reduce only, the build's tasks hold a model), the address of
a dask.distributed scheduler (``"tcp://host:8786"``), or a ``distributed.Client``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from chorus_store.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "Scheduler",
    "LOCAL_SCHEDULERS",
    "check",
    "connect",
    "dashboard_link",
    "is_client",
    "local_or_client",
]

#: what the ``scheduler`` argument of build and reduce takes
Scheduler: TypeAlias = "str | Client | None"
#: dask's own single-machine schedulers (reduce only)
LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous", "single-threaded")


def is_client(scheduler: object) -> bool:
    """Whether ``scheduler`` is a ``distributed.Client`` (anything that submits tasks)."""
    return hasattr(scheduler, "submit")


def connect(scheduler: str) -> Any:
    """A ``distributed.Client`` of the scheduler at ``scheduler``; an unreachable one is a
    :class:`ClusterError` naming the address."""
    from distributed import Client

    try:
        return Client(scheduler)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the dask scheduler at {scheduler} ({type(exc).__name__}: {exc}); "
            f"start it (`dask scheduler`) or check the address and port given to --scheduler"
        ) from exc


def dashboard_link(client: Any) -> str | None:
    """The dask dashboard's address, or None where the cluster serves none."""
    try:
        info = client.scheduler_info(n_workers=0)
        link = client.dashboard_link if info.get("services", {}).get("dashboard") else None
    except Exception:  # noqa: BLE001 - an old scheduler, or none reachable
        return None
    return str(link) if link else None


def check(scheduler: object, *, stage: str, local_ok: bool) -> None:
    """Refuse a ``scheduler`` that is none of the kinds above (``local_ok``: whether the
    stage runs on dask's local schedulers)."""
    if scheduler is None or is_client(scheduler):
        return
    if not isinstance(scheduler, str):
        raise UsageError(
            f"scheduler= takes a dask scheduler's name or address or a distributed.Client, "
            f"not {type(scheduler).__name__}"
        )
    if scheduler in LOCAL_SCHEDULERS and not local_ok:
        raise UsageError(
            f"{stage} runs in this process, on a LocalCluster (workers=N) or on a "
            f"dask.distributed scheduler (scheduler='tcp://host:8786' or a Client), not on "
            f"dask's {scheduler!r} scheduler"
        )


@contextlib.contextmanager
def local_or_client(scheduler: Scheduler) -> Iterator[Any]:
    """A local dask scheduler's name (default ``"threads"``) as it is, or a client: the
    given one, or one connected here to an address (and closed after)."""
    if scheduler is None or isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
        yield scheduler or "threads"
    elif isinstance(scheduler, str):
        with connect(scheduler) as client:
            yield client
    else:
        yield scheduler
