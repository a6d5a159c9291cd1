"""Creating a store whole or not at all: a hidden sibling renamed into place on a
filesystem, a ``create`` claim and root attributes written last on an object store."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path
from typing import Literal

import zarr

from chorus_store.errors import LocationError, StoreMismatchError
from chorus_store.store import claims as locks
from chorus_store.store.location import Location
from chorus_store.store.schema import schema

__all__ = [
    "CREATING",
    "CREATING_MARK",
    "open_group",
    "require_directory",
    "begin_create",
    "abort_create",
    "finish_create",
    "is_chorus_store",
    "remove_stale_creating",
]

CREATING = "create"  # the claim held while a store is being created on an object store
CREATING_MARK = f"{locks.LOCK_DIR}/{CREATING}.json"


def open_group(loc: Location, mode: Literal["r", "r+", "a"]) -> zarr.Group:
    return zarr.open_group(loc.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3)


def require_directory(loc: Location) -> None:
    """Refuse a local store path that is an existing file (a store is a directory)."""
    path = loc.local_path
    if path is not None and path.exists() and not path.is_dir():
        raise LocationError(
            f"{path} is a file, not a store directory; give a new path (e.g. one ending "
            f"in .zarr) for `chorus-store plan`, or the directory of an existing store"
        )


def begin_create(final: Location) -> tuple[Location, locks.LockSet | None]:
    """Where to write a new store that must appear at ``final`` whole or not at all.

    On a filesystem: a hidden sibling directory, renamed into place by
    :func:`finish_create`, so a killed ``plan`` leaves no half-made store. An object
    store has no rename: the store is written in place under a ``create`` claim, and
    its root attributes (what makes it a chorus-store) are written last; a half-made
    store left by a killed ``plan`` is recognised by its claim and replaced by the next.
    """
    exists_msg = (
        f"{final.url} already exists and is not empty; choose a new store path, or "
        f"resume the existing store with `chorus-store build {final.url}`"
    )
    path = final.local_path
    if path is not None:
        require_directory(final)
        if path.exists() and any(path.iterdir()):
            raise StoreMismatchError(exists_msg)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_creating(path)
        # the creator's host and pid in the name: a later plan can prove a leftover stale
        tmp = path.with_name(f".{path.name}.creating-{locks.writer_tag(12)}")
        return Location.of(tmp), None
    half_made = final.exists(CREATING_MARK) and not is_chorus_store(final)
    if not final.is_empty() and not half_made:
        raise StoreMismatchError(exists_msg)
    # refused while another `plan` is creating here (its claim is alive)
    claim = locks.acquire(final, [CREATING], store=final.url, command="chorus-store plan")
    for key, _ in list(final.list()):
        if not key.startswith(f"{locks.LOCK_DIR}/"):
            final.delete(key)  # a half-made store whose creator is gone
    return final, claim


def remove_stale_creating(path: Path) -> list[Path]:
    """Delete the ``.{name}.creating-<host>.<pid>.<id>`` directories a killed ``plan`` of
    ``path`` left, when their creator (a pid on this machine) is gone. A running plan's
    directory, another machine's, and older unnamed ones are kept. Returns those removed."""
    removed = []
    prefix = f".{path.name}.creating-"
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*"):
        if not locks.left_by_dead_writer(tmp.name[len(prefix) :]):
            continue  # still creating, another machine's, or not one of ours
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def abort_create(creating: Location, claim: locks.LockSet | None) -> None:
    """A create that failed in this process: remove what it wrote, then its claim."""
    if claim is None:
        path = creating.local_path
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        return
    for key, _ in list(creating.list()):
        if not key.startswith(f"{locks.LOCK_DIR}/"):
            creating.delete(key)
    claim.release()


def is_chorus_store(loc: Location) -> bool:
    """True when ``loc`` holds a finished chorus-store (its root attributes are written)."""
    raw = loc.get("zarr.json")
    return raw is not None and schema().root_key in json.loads(raw).get("attributes", {})


def finish_create(creating: Location, final: Location, claim: locks.LockSet | None) -> None:
    if claim is not None:
        claim.release()  # the store is whole (its root attributes are written)
        return
    src, dst = creating.local_path, final.local_path
    assert src is not None and dst is not None
    try:
        os.rename(src, dst)  # replaces an empty directory; fails on a non-empty one
    except OSError as exc:
        shutil.rmtree(src, ignore_errors=True)
        raise StoreMismatchError(f"{dst} was created by another process meanwhile") from exc
