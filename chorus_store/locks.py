"""Claims on parts of a store, so that two writers never touch one shard.

A claim is a small JSON file created with ``O_CREAT | O_EXCL`` under
``<store>/.chorus-locks/``: creating it either succeeds (the claim is ours) or fails
because someone holds it. The file names its holder (host, boot id, pid, command, time).

A claim left behind by a killed process is *stale*. On the same machine that is
detected (the pid is gone, or the machine rebooted since) and the claim is taken over;
a claim held by another machine cannot be checked from here, so it is reported with the
command that clears it (``chorus-store unlock STORE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StoreLockedError

__all__ = ["Holder", "LockSet", "LOCK_DIR", "acquire", "list_claims", "clear_claims"]

LOCK_DIR = ".chorus-locks"
STRUCTURE = "store"  # the claim taken by operations that change the store's shape


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim."""

    host: str
    boot_id: str
    pid: int
    command: str
    started_at: float
    run_id: str

    @classmethod
    def me(cls, command: str | None = None) -> Holder:
        return cls(
            host=socket.gethostname(),
            boot_id=_boot_id(),
            pid=os.getpid(),
            command=command or " ".join(sys.argv[:4]),
            started_at=time.time(),
            run_id=uuid.uuid4().hex,
        )

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"pid {self.pid} on {self.host} ({self.command!r}, since {when})"

    def is_alive(self) -> bool | None:
        """True/False when checkable from this machine, None when it is another host."""
        if self.host != socket.gethostname():
            return None
        if self.boot_id and self.boot_id != _boot_id():
            return False  # the machine rebooted since the claim was taken
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _read_holder(path: Path) -> Holder | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return Holder(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        # a claim file torn by a crash mid-write: nobody can be holding it
        return Holder("?", "", -1, "unreadable claim", path.stat().st_mtime, "")


def _take_over(path: Path, stale: Holder) -> None:
    """Remove a stale claim without ever removing a fresh one taken meanwhile."""
    grave = path.with_name(f".{path.name}.stale.{uuid.uuid4().hex}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    moved = _read_holder(grave)
    if moved is not None and moved.run_id != stale.run_id:
        # another process replaced the stale claim with its own before we moved it: put
        # it back (if a third process already took the name, the link fails and that
        # process holds the claim; either way the one we moved is not ours to remove)
        with contextlib.suppress(FileExistsError):
            os.link(grave, path)
    grave.unlink()


class LockSet:
    """Claims held by this process; release them with :meth:`release` or ``with``."""

    def __init__(self, root: Path, holder: Holder) -> None:
        self.root = root
        self.holder = holder
        self.names: list[str] = []

    def _path(self, name: str) -> Path:
        return self.root / LOCK_DIR / f"{name}.json"

    def _try(self, name: str) -> Holder | None:
        """Take ``name``; return None on success or the live (or unknown) holder."""
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(self.holder.__dict__).encode()
        for _ in range(3):
            # write the holder to a private file, then hard-link it into place: the link
            # either creates the claim with its content whole, or fails because it exists
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            tmp.write_bytes(payload)
            try:
                os.link(tmp, path)
            except FileExistsError:
                other = _read_holder(path)
                if other is None:
                    continue  # released between our attempt and the read
                if other.run_id == self.holder.run_id:
                    return None
                alive = other.is_alive() if other.pid >= 0 else False
                if alive is False:
                    _take_over(path, other)  # stale: its holder is gone
                    continue
                return other
            finally:
                tmp.unlink()
            self.names.append(name)
            return None
        return _read_holder(path)

    def acquire(self, names: Iterable[str], *, store: str) -> None:
        """Take every claim in ``names`` or none of them."""
        taken: list[str] = []
        for name in names:
            before = len(self.names)
            other = self._try(name)
            if other is not None:
                for n in taken:
                    self._release_one(n)
                raise StoreLockedError(
                    f"{store}: {name!r} is being written by {other.describe()}. Wait for it "
                    f"to finish, or build a disjoint part (--part/--shard). If that process "
                    f"is gone (killed on another machine), clear its claims with "
                    f"`chorus-store unlock {store}`."
                )
            if len(self.names) > before:
                taken.append(name)

    def _release_one(self, name: str) -> None:
        path = self._path(name)
        other = _read_holder(path)
        if other is not None and other.run_id == self.holder.run_id:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if name in self.names:
            self.names.remove(name)

    def release(self, names: Iterable[str] | None = None) -> None:
        for name in list(self.names if names is None else names):
            self._release_one(name)

    def __enter__(self) -> LockSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(root: Path, names: Iterable[str], *, store: str, command: str | None = None) -> LockSet:
    locks = LockSet(root, Holder.me(command))
    locks.acquire(names, store=store)
    return locks


def list_claims(root: Path) -> Iterator[tuple[str, Holder, bool | None]]:
    """Every claim under ``root``: (name, holder, alive?)."""
    base = root / LOCK_DIR
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*.json")):
        holder = _read_holder(path)
        if holder is None:
            continue
        name = str(path.relative_to(base).with_suffix(""))
        yield name, holder, (holder.is_alive() if holder.pid >= 0 else False)


def live_claims(root: Path, *, exclude_run: str | None = None, prefix: str = "") -> list[str]:
    """Names of claims whose holder is (or may be) alive, other than ``exclude_run``'s."""
    return [
        f"{name} ({holder.describe()})"
        for name, holder, alive in list_claims(root)
        if alive is not False and holder.run_id != exclude_run and name.startswith(prefix)
    ]


def clear_claims(root: Path, *, force: bool = False) -> list[str]:
    """Remove stale claims (and, with ``force``, claims held by other hosts)."""
    cleared = []
    for name, holder, alive in list_claims(root):
        if alive is False or (alive is None and force):
            with contextlib.suppress(FileNotFoundError):
                (root / LOCK_DIR / f"{name}.json").unlink()
            cleared.append(f"{name} ({holder.describe()})")
    return cleared
