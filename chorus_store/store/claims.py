"""Claims on parts of a store, so that two writers never touch one shard.

A claim is a small JSON object created with create-if-absent under
``<store>/.chorus-locks/`` (a hard link on a filesystem, a conditional PUT on an object
store; see :mod:`chorus_store.store.location`): creating it either succeeds (the claim is ours)
or fails because someone holds it. The file names its holder (host, boot id, pid, command, time).

A claim left behind by a killed process is *stale*, and is taken over. On the same
machine that is seen directly (the pid is gone, or the machine rebooted since). From
another machine it is seen by the holder's *lease*: while a run holds claims it rewrites
a heartbeat object ``runs/<run_id>.json`` every quarter of its lease (default 10 min,
``CHORUS_STORE_LEASE_S``); a claim whose run has not beaten for a whole lease is stale
from anywhere. This compares the heartbeat's modification time (the filesystem's or the
object store's clock) with the reader's clock, so it assumes clocks agree to well within
a lease. ``chorus-store unlock STORE --force`` clears claims by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus_store.errors import ChorusStoreError, StoreLockedError, WriteError, os_reason
from chorus_store.store.location import Location

__all__ = [
    "Holder",
    "LockSet",
    "LOCK_DIR",
    "acquire",
    "command_line",
    "list_claims",
    "clear_claims",
    "clear_stale",
    "left_by_dead_writer",
    "pid_alive",
    "writer_tag",
]

LOCK_DIR = ".chorus-locks"
STRUCTURE = "store"  # the claim taken by operations that change the store's shape
RUNS = "runs"  # LOCK_DIR/runs/<run_id>.json: each run's heartbeat
log = logging.getLogger(__name__)


def lease_seconds() -> float:
    """How long a run's heartbeat may be silent before its claims count as abandoned by
    any machine (``CHORUS_STORE_LEASE_S``, default 600; it beats every quarter of that)."""
    return float(os.environ.get("CHORUS_STORE_LEASE_S", "600"))


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
    #: > 0: the holder's run beats ``runs/<run_id>.json`` every lease/4 while it holds
    #: claims; 0 (claims written before leases existed): no heartbeat to judge by
    lease_s: float = 0.0

    @classmethod
    def me(cls, command: str | None = None, lease_s: float | None = None) -> Holder:
        return cls(
            host=socket.gethostname(),
            boot_id=_boot_id(),
            pid=os.getpid(),
            command=command_line(command),
            started_at=time.time(),
            run_id=uuid.uuid4().hex,
            lease_s=lease_seconds() if lease_s is None else lease_s,
        )

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"pid {self.pid} on {self.host} ({self.command!r}, since {when})"

    def is_alive(self) -> bool | None:
        """True/False when checkable from this machine (its pid), None for another host
        (see :func:`holder_alive`, which reads the run's heartbeat then)."""
        if self.host != socket.gethostname():
            return None
        if self.boot_id and self.boot_id != _boot_id():
            return False  # the machine rebooted since the claim was taken
        return pid_alive(self.pid)


def command_line(label: str | None = None) -> str:
    """What a claim says its holder runs: the whole command line when this process is the
    ``chorus-store`` command (every option, so that two builds of one store, ``--part
    baselines`` and ``--part variants``, are told apart), else ``label`` (what a Python
    caller is doing, e.g. ``chorus-store build STORE``), else the process's first words."""
    argv = sys.argv
    program = Path(argv[0]) if argv else Path()
    if program.name == "chorus-store" or program.parts[-2:] == ("chorus_store", "cli.py"):
        return shlex.join(["chorus-store", *argv[1:]])
    return label or " ".join(argv[:4])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_tag(id_chars: int = 32) -> str:
    """``<host>.<pid>.<id>``: put in a temporary's name, it lets a later process of this
    machine prove the temporary's writer is gone (:func:`left_by_dead_writer`)."""
    return f"{_host_tag()}.{os.getpid()}.{uuid.uuid4().hex[:id_chars]}"


def left_by_dead_writer(tag: str) -> bool:
    """Whether ``tag`` (a :func:`writer_tag`) names a process of this machine that is gone.
    Another machine's tag, a live writer's, and a malformed one are never taken for dead."""
    parts = tag.split(".")
    if len(parts) != 3 or parts[0] != _host_tag() or not parts[1].isdigit():
        return False
    return not pid_alive(int(parts[1]))


def _host_tag() -> str:
    return socket.gethostname().replace(".", "_")  # no dots: the tag splits on them


def _parse(raw: bytes, where: str) -> Holder:
    try:
        data: dict[str, Any] = json.loads(raw)
        return Holder(**data)
    except (ValueError, TypeError):
        # a claim torn by a crash mid-write: nobody can be holding it
        return Holder("?", "", -1, f"unreadable claim {where}", 0.0, "")


def _read(loc: Location, key: str) -> tuple[Holder, bytes] | None:
    raw = loc.get(key)
    return None if raw is None else (_parse(raw, key), raw)


def _beat_key(run_id: str) -> str:
    return f"{LOCK_DIR}/{RUNS}/{run_id}.json"


def holder_alive(loc: Location, holder: Holder) -> bool | None:
    """Is the holder of a claim on ``loc`` alive? A holder on this machine is checked by
    its pid; one on another machine by its run's heartbeat: silent for longer than its
    lease means gone. None: another machine and no lease (cannot tell)."""
    if holder.pid < 0:
        return False  # an unreadable claim
    local = holder.is_alive()
    if local is not None:
        return local
    if holder.lease_s <= 0:
        return None
    age = loc.age(_beat_key(holder.run_id))
    # no heartbeat at all: the run released it (it does so after its claims) or was
    # cleared; either way nobody is holding this claim
    return age is not None and age <= holder.lease_s


class _Heartbeat:
    """Rewrites ``runs/<run_id>.json`` every lease/4 seconds while a LockSet holds claims."""

    def __init__(self, loc: Location, holder: Holder) -> None:
        self.loc, self.holder = loc, holder
        self.key = _beat_key(holder.run_id)
        self.payload = json.dumps(holder.__dict__).encode()
        self.stop = threading.Event()
        self.loc.put(self.key, self.payload)  # before the first claim is created
        self.thread = threading.Thread(target=self._run, name="chorus-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.holder.lease_s / 4):
            try:
                self.loc.put(self.key, self.payload)
            except Exception as exc:  # noqa: BLE001 - keep beating through a hiccup
                log.warning("heartbeat of %s failed: %s", self.loc.url, exc)

    def end(self) -> None:
        self.stop.set()
        self.thread.join()
        self.loc.delete(self.key)  # after the claims: a claim never outlives its beat


class LockSet:
    """Claims held by this process; release them with :meth:`release` or ``with``."""

    def __init__(self, loc: Location, holder: Holder) -> None:
        self.loc = loc
        self.holder = holder
        self.names: list[str] = []
        self._beat: _Heartbeat | None = None

    @staticmethod
    def _key(name: str) -> str:
        return f"{LOCK_DIR}/{name}.json"

    def _try(self, name: str) -> Holder | None:
        """Take ``name``; return None on success or the live (or unknown) holder."""
        key = self._key(name)
        payload = json.dumps(self.holder.__dict__).encode()
        if self._beat is None and self.holder.lease_s > 0:
            self._beat = _Heartbeat(self.loc, self.holder)
        for _ in range(3):
            if self.loc.create(key, payload):
                self.names.append(name)
                return None
            found = _read(self.loc, key)
            if found is None:
                continue  # released between our attempt and the read
            other, raw = found
            if other.run_id == self.holder.run_id:
                return None
            alive = holder_alive(self.loc, other)
            if alive is not False:
                return other
            # stale: its holder is gone. Replace it only if it is still that stale claim,
            # so a fresh claim another process took meanwhile is never overwritten
            if self.loc.swap(key, payload, expect=raw):
                self.names.append(name)
                return None
        found = _read(self.loc, key)
        return None if found is None else found[0]

    def acquire(self, names: Iterable[str], *, store: str) -> None:
        """Take every claim in ``names`` or none of them."""
        taken: list[str] = []
        for name in names:
            before = len(self.names)
            other = self._try(name)
            if other is not None:
                self.release(taken)  # (and stops the heartbeat if nothing else is held)
                # only a build can step aside to a disjoint part; anything else waits
                alternative = (
                    ", or build a disjoint part (--part/--shard)"
                    if name.startswith("build/")
                    else ""
                )
                raise StoreLockedError(
                    f"{store}: {name!r} is being written by {other.describe()}. Wait for it "
                    f"to finish{alternative}. If that process is gone (killed on another "
                    f"machine), clear its claims with `chorus-store unlock {store}`."
                )
            if len(self.names) > before:
                taken.append(name)

    def _release_one(self, name: str) -> None:
        found = _read(self.loc, self._key(name))
        if found is not None and found[0].run_id == self.holder.run_id:
            self.loc.delete(self._key(name))
        if name in self.names:
            self.names.remove(name)

    def release(self, names: Iterable[str] | None = None) -> None:
        for name in list(self.names if names is None else names):
            self._release_one(name)
        if not self.names and self._beat is not None:
            self._beat.end()
            self._beat = None

    def __enter__(self) -> LockSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(
    loc: Location, names: Iterable[str], *, store: str, command: str | None = None
) -> LockSet:
    locks = LockSet(loc, Holder.me(command))
    try:
        locks.acquire(names, store=store)
    except ChorusStoreError:
        raise
    except OSError as exc:
        # a claim is the first thing a writing command writes: a read-only store (or a
        # full disk) surfaces here
        with contextlib.suppress(OSError):
            locks.release()
        raise WriteError(
            f"{store}: cannot write the claims of {command or 'this command'!r}: "
            f"{os_reason(exc)}. Commands that only read (status, export) work on a "
            f"read-only store; to write, make it writable or copy it somewhere writable."
        ) from exc
    return locks


def list_claims(loc: Location) -> Iterator[tuple[str, Holder, bool | None]]:
    """Every claim of the store at ``loc``: (name, holder, alive?)."""
    keys = sorted(
        key
        for key, _ in loc.list(f"{LOCK_DIR}/")
        if key.endswith(".json")
        and not key.rsplit("/", 1)[-1].startswith(".")
        and not key.startswith(f"{LOCK_DIR}/{RUNS}/")
    )
    for key in keys:
        found = _read(loc, key)
        if found is None:
            continue
        holder = found[0]
        name = key[len(LOCK_DIR) + 1 : -len(".json")]
        yield name, holder, holder_alive(loc, holder)


def live_claims(loc: Location, *, exclude_run: str | None = None, prefix: str = "") -> list[str]:
    """Names of claims whose holder is (or may be) alive, other than ``exclude_run``'s."""
    return [
        f"{name} ({holder.describe()})"
        for name, holder, alive in list_claims(loc)
        if alive is not False and holder.run_id != exclude_run and name.startswith(prefix)
    ]


def clear_stale(loc: Location) -> list[str]:
    """:func:`clear_claims` of provably dead holders only, as every run does on its way in
    (a killed run's claims of finished shards would otherwise stay until ``unlock``).
    Best effort: a store this process cannot write (read-only) keeps them."""
    try:
        return clear_claims(loc)
    except Exception as exc:  # noqa: BLE001 - upkeep must not fail the command it serves
        log.info("stale claims of %s not cleared: %s", loc.url, exc)
        return []


def clear_claims(loc: Location, *, force: bool = False) -> list[str]:
    """Remove stale claims (and, with ``force``, claims held by other hosts)."""
    cleared = []
    for name, holder, alive in list_claims(loc):
        if alive is False or (alive is None and force):
            loc.delete(LockSet._key(name))
            loc.delete(_beat_key(holder.run_id))
            cleared.append(f"{name} ({holder.describe()})")
    return cleared
