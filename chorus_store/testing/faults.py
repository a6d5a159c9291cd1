"""Fault injection through the storage layer: a crash or a full disk at the N-th write of
chosen keys, for tests of resume and clean failure that patch no private function.

:class:`StoreFaults` wraps every Zarr store the package opens (through the seam
:func:`chorus_store.store.location.wrapping_zarr_stores`) in a :class:`FaultyStore`, which
records the keys written and fails the writes its :class:`Fault` rules name. It reaches the
stages of this process, not cluster workers or CLI subprocesses.
"""

from __future__ import annotations

import errno
import fnmatch
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from zarr.abc.store import Store
from zarr.core.buffer import Buffer
from zarr.storage import WrapperStore

from chorus_store.store.location import Location, wrapping_zarr_stores

__all__ = ["Fault", "FaultyStore", "SimulatedCrash", "StoreFaults"]


class SimulatedCrash(Exception):  # noqa: N818  # it stands for an event, not a mistake
    """Stands for the process dying at a write (raised by a ``"crash"`` fault)."""


@dataclass(frozen=True)
class Fault:
    """Fail writes of keys matching ``pattern`` once ``after`` of them have succeeded.

    Parameters
    ----------
    pattern
        An ``fnmatch`` pattern on the key relative to the store's root, e.g.
        ``"baselines/*/c/*"`` (record chunks) or ``"*/done_rows/c/*"`` (done marks).
    after
        How many matching writes succeed before the first failure.
    kind
        ``"crash"`` raises :class:`SimulatedCrash`, and from then on every write (of any
        key) fails the same way, as nothing lands after a process dies. ``"full_disk"``
        raises ``OSError(ENOSPC)`` for this and every later matching write.
    lands
        Whether the failing write's bytes land before the error (the process died after
        the write, before it returned) or not (it died, or the disk filled, before).
    """

    pattern: str
    after: int = 0
    kind: Literal["crash", "full_disk"] = "crash"
    lands: bool = False

    def error(self, key: str) -> BaseException:
        if self.kind == "full_disk":
            return OSError(errno.ENOSPC, "No space left on device", key)
        return SimulatedCrash(f"simulated crash at the write of {key}")


class StoreFaults:
    """While active (``with``), Zarr stores opened by a Location record and fail writes.

    Parameters
    ----------
    *faults
        The failure rules; none only records.
    url
        Only stores at this location (a path or URL) are wrapped; None wraps all.

    Attributes
    ----------
    written
        The keys written successfully, in order (all stores together).
    failed
        The keys whose write failed, in order.

    Examples
    --------
    >>> with StoreFaults(Fault("baselines/*/c/*", after=3, kind="full_disk")):  # doctest: +SKIP
    ...     build("demo.zarr")  # raises WriteError("... the disk is full ...")
    """

    def __init__(self, *faults: Fault, url: str | Path | None = None) -> None:
        self.faults = faults
        self.url = None if url is None else Location.of(url).url
        self.written: list[str] = []
        self.failed: list[str] = []
        self._seen = [0] * len(faults)
        self._crashed: Fault | None = None
        self._lock = threading.Lock()
        self._active: Any = None

    def wrap(self, location: Location, store: Store) -> Store:
        """The store of ``location``, wrapped if it is one this instance watches."""
        if self.url is not None and location.url != self.url:
            return store
        return FaultyStore(store, self)

    def check(self, key: str) -> Fault | None:
        """The fault that fails the write of ``key`` now, or None (counts the write)."""
        with self._lock:
            if self._crashed is not None:
                return self._crashed
            hit: Fault | None = None
            for i, fault in enumerate(self.faults):
                if fnmatch.fnmatchcase(key, fault.pattern):
                    self._seen[i] += 1
                    if self._seen[i] > fault.after and hit is None:
                        hit = fault
            if hit is not None and hit.kind == "crash":
                self._crashed = Fault("*", kind="crash", lands=False)  # nothing lands after
            return hit

    def record(self, key: str, ok: bool) -> None:
        with self._lock:
            (self.written if ok else self.failed).append(key)

    def __enter__(self) -> StoreFaults:
        self._active = wrapping_zarr_stores(self.wrap)
        self._active.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active.__exit__(exc_type, exc, tb)
        self._active = None


class FaultyStore(WrapperStore[Store]):
    """A Zarr store that passes every operation through, and writes through its
    :class:`StoreFaults`: recorded, or failed as its rules say."""

    def __init__(self, store: Store, faults: StoreFaults) -> None:
        super().__init__(store)
        self.faults = faults

    def _with_store(self, store: Store) -> FaultyStore:
        return type(self)(store, self.faults)

    async def set(self, key: str, value: Buffer) -> None:
        fault = self.faults.check(key)
        if fault is not None:
            if fault.lands:
                await self._store.set(key, value)
            self.faults.record(key, ok=False)
            raise fault.error(key)
        await self._store.set(key, value)
        self.faults.record(key, ok=True)
