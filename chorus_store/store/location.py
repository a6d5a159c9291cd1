"""Where a store (or an export) lives: a local directory, or a prefix of an object store.

A :class:`Location` gives the rest of the package two things:

* a Zarr store object for the arrays (``zarr.storage.LocalStore`` for a directory,
  ``zarr.storage.ObjectStore`` over `obstore <https://developmentseed.org/obstore>`_ for
  ``s3://``, ``gs://``, ``az://`` and ``http(s)://`` URLs), and
* a handful of small-object operations for claims, markers and exported files, among them
  the two atomic primitives that make claims safe with many writers:
  :meth:`Location.create` (create-if-absent) and :meth:`Location.swap`
  (replace-if-unchanged).

On a directory those are a hard link (fails if the name exists) and a rename-aside
compare. On an object store they are conditional PUTs, ``If-None-Match: *`` and
``If-Match: <etag>``, which S3 (since 2024), GCS and Azure Blob honour; a backend that
does not is refused with :class:`~chorus_store.errors.StoreLockedError` rather than
silently running unprotected.

Credentials are never passed here: obstore reads them from the environment of the
process (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``, ...), so nothing
secret reaches the command line, the store's attributes or a task graph.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chorus_store.errors import LocationError, StoreLockedError

__all__ = ["Location", "LocalLocation", "ObjectLocation", "is_remote", "wrapping_zarr_stores"]

_OBJECT_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "azure", "http", "https")


def is_remote(url: str | Path) -> bool:
    """True for an object-store URL (``s3://``, ``gs://``, ...), False for a local path."""
    text = str(url)
    return "://" in text and text.split("://", 1)[0].lower() in _OBJECT_SCHEMES


# The one seam for wrapping the Zarr stores the package opens (fault injection in
# chorus_store.testing.faults, tracing): every Location.zarr_store passes through these.
_ZARR_STORE_WRAPPERS: list[Callable[[Location, Any], Any]] = []


@contextlib.contextmanager
def wrapping_zarr_stores(wrap: Callable[[Location, Any], Any]) -> Iterator[None]:
    """Within the block, every Zarr store a :class:`Location` opens is ``wrap(location, store)``.

    ``wrap`` returns a ``zarr.abc.store.Store`` (typically a ``zarr.storage.WrapperStore``
    around ``store``). It reaches every store the stages open in this process, re-opens
    included, but not those of other processes (cluster workers, CLI subprocesses).

    Examples
    --------
    >>> from zarr.storage import LoggingStore
    >>> with wrapping_zarr_stores(lambda loc, store: LoggingStore(store)):  # doctest: +SKIP
    ...     build("demo.zarr")
    """
    _ZARR_STORE_WRAPPERS.append(wrap)
    try:
        yield
    finally:
        _ZARR_STORE_WRAPPERS.remove(wrap)


def _wrapped(loc: Location, store: Any) -> Any:
    for wrap in _ZARR_STORE_WRAPPERS:
        store = wrap(loc, store)
    return store


class Location:
    """A directory-like place holding keys (``"a/b/zarr.json"``) with byte values."""

    url: str

    @staticmethod
    def of(url: str | Path) -> Location:
        """The location of ``url``: a local path, ``file://path`` or an object-store URL."""
        text = str(url)
        if is_remote(text):
            return ObjectLocation(text)
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif "://" in text:
            scheme = text.split("://", 1)[0]
            raise LocationError(
                f"{text}: unsupported URL scheme {scheme!r}; use a local path, file://, "
                f"s3://, gs:// or az://"
            )
        return LocalLocation(Path(text).expanduser().resolve())

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def is_remote(self) -> bool:
        return isinstance(self, ObjectLocation)

    @property
    def local_path(self) -> Path | None:
        return None

    def zarr_store(self, *, read_only: bool) -> Any:
        """A Zarr v3 store object rooted here."""
        raise NotImplementedError

    # small objects --------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None when absent."""
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` whole; a reader sees the old or the new bytes, never a mix."""
        raise NotImplementedError

    def write_file(self, key: str, fill: Callable[[Path], None], *, tag: str = "") -> None:
        """Write ``key`` whole from a local file that ``fill(tmp)`` writes (and may check).

        Readers see the old object or the new one, never a part: here, the temporary is
        ``.{name}.{tag}.partial`` beside ``key`` (``tag`` lets a later writer prove a
        leftover's writer gone; a random one by default), fsynced, renamed over ``key``
        and the directory fsynced; on an object store, a local temporary sent in one PUT
        (multipart for large files). A failure or interruption removes the temporary and
        leaves ``key`` as it was.
        """
        raise NotImplementedError

    def create(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` if it does not exist; False if it does (atomic)."""
        raise NotImplementedError

    def swap(self, key: str, data: bytes, *, expect: bytes) -> bool:
        """Replace ``key`` by ``data`` only if it still holds ``expect`` (atomic)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; absent is fine."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every key under ``prefix``."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.get(key) is not None

    def get_tail(self, key: str, size: int, n: int) -> bytes | None:
        """The last ``n`` bytes of ``key``, whose length is ``size`` (one ranged read)."""
        raise NotImplementedError

    def age(self, key: str) -> float | None:
        """Seconds since ``key`` was last written (by its storage's clock), or None."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        return next(iter(self.list()), None) is None


class LocalLocation(Location):
    """A local directory (or a network filesystem mounted as one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = str(path)

    @property
    def local_path(self) -> Path:
        return self.path

    def zarr_store(self, *, read_only: bool) -> Any:
        from zarr.storage import LocalStore

        return _wrapped(self, LocalStore(self.path, read_only=read_only))

    def _file(self, key: str) -> Path:
        return self.path / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def get_tail(self, key: str, size: int, n: int) -> bytes | None:
        try:
            with self._file(key).open("rb") as f:
                f.seek(max(0, size - n))
                return f.read(n)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _private(self, key: str, data: bytes) -> Path:
        path = self._file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        tmp.write_bytes(data)
        return tmp

    def put(self, key: str, data: bytes) -> None:
        tmp = self._private(key, data)
        try:
            os.replace(tmp, self._file(key))
        finally:
            tmp.unlink(missing_ok=True)

    def write_file(self, key: str, fill: Callable[[Path], None], *, tag: str = "") -> None:
        path = self._file(key)
        tmp = path.with_name(f".{path.name}.{tag or uuid.uuid4().hex}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fill(tmp)
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            # on a read-only or vanished directory the unlink fails too: not to hide why
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def create(self, key: str, data: bytes) -> bool:
        # write to a private file, then hard-link it into place: the link either creates
        # the name with its content whole, or fails because the name exists
        tmp = self._private(key, data)
        try:
            os.link(tmp, self._file(key))
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    def swap(self, key: str, data: bytes, *, expect: bytes) -> bool:
        path = self._file(key)
        grave = path.with_name(f".{path.name}.swap.{uuid.uuid4().hex}")
        try:
            os.rename(path, grave)  # only one process can move a given file aside
        except FileNotFoundError:
            return False
        try:
            if grave.read_bytes() != expect:
                # another process replaced it meanwhile: put theirs back (if a third
                # process already took the name, theirs stands and this one is dropped)
                with contextlib.suppress(FileExistsError):
                    os.link(grave, path)
                return False
            return self.create(key, data)
        finally:
            grave.unlink()

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def age(self, key: str) -> float | None:
        try:
            return time.time() - self._file(key).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        base = self.path / prefix if prefix else self.path
        if not base.is_dir():
            return
        for root, _, names in os.walk(base):
            for name in names:
                p = Path(root) / name
                try:
                    size = p.stat().st_size
                except OSError:
                    continue
                yield p.relative_to(self.path).as_posix(), size


class ObjectLocation(Location):
    """A prefix of an object store (S3, GCS, Azure, HTTP/WebDAV), through obstore."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._store: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url}  # the client is rebuilt (from the environment) on unpickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url = state["url"]
        self._store = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from obstore.store import from_url

            self._store = from_url(self.url)
        return self._store

    def zarr_store(self, *, read_only: bool) -> Any:
        from zarr.storage import ObjectStore

        return _wrapped(self, ObjectStore(self.store, read_only=read_only))

    def get(self, key: str) -> bytes | None:
        return self._get(key)[0]

    def _get(self, key: str) -> tuple[bytes | None, str | None]:
        import obstore

        try:
            result = obstore.get(self.store, key)
        except FileNotFoundError:
            return None, None
        return bytes(result.bytes()), result.meta.get("e_tag")

    def get_tail(self, key: str, size: int, n: int) -> bytes | None:
        import obstore

        try:
            return bytes(obstore.get_range(self.store, key, start=max(0, size - n), end=size))
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store, key, data)  # one PUT: atomic for readers

    def write_file(self, key: str, fill: Callable[[Path], None], *, tag: str = "") -> None:
        import obstore

        with tempfile.TemporaryDirectory(prefix="chorus-store-") as tmpdir:
            tmp = Path(tmpdir) / f"{tag or uuid.uuid4().hex}.partial"
            fill(tmp)
            obstore.put(self.store, key, tmp)  # multipart for large files; lands whole

    def create(self, key: str, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotSupportedError

        try:
            obstore.put(self.store, key, data, mode="create")
        except AlreadyExistsError:
            return False
        except NotSupportedError as exc:
            raise _no_conditional_writes(self.url, exc) from exc
        return True

    def swap(self, key: str, data: bytes, *, expect: bytes) -> bool:
        import obstore
        from obstore.exceptions import NotSupportedError, PreconditionError

        current, etag = self._get(key)
        if current != expect or etag is None:
            return False
        try:
            obstore.put(self.store, key, data, mode={"e_tag": etag})
        except (PreconditionError, FileNotFoundError):
            return False
        except NotSupportedError as exc:
            raise _no_conditional_writes(self.url, exc) from exc
        return True

    def delete(self, key: str) -> None:
        import obstore

        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self.store, key)

    def age(self, key: str) -> float | None:
        import obstore

        try:
            meta = obstore.head(self.store, key)
        except FileNotFoundError:
            return None
        return time.time() - meta["last_modified"].timestamp()

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        import obstore

        for batch in obstore.list(self.store, prefix or None):
            for meta in batch:
                yield str(meta["path"]), int(meta["size"])


def _no_conditional_writes(url: str, exc: BaseException) -> StoreLockedError:
    return StoreLockedError(
        f"{url}: this object store does not support conditional writes ({exc}), so two "
        f"writers could not be kept off one shard. Use a backend that does (AWS S3, GCS, "
        f"Azure Blob), or keep the store on a shared filesystem."
    )
