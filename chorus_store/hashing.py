"""Content hashes of files: the one streaming reader every fingerprint uses (the FASTA
index and prefix, the plan's annotations and reference set, an oracle's weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["sha256_file", "sha256_paths", "update_from_file"]

_BLOCK = 1 << 20


def update_from_file(h: Any, path: str | Path, limit: int | None = None) -> None:
    """Feed the bytes of ``path`` (its first ``limit`` bytes when given) into the hash
    ``h``, one MiB at a time."""
    remaining = limit
    with Path(path).open("rb") as fh:
        while remaining is None or remaining > 0:
            block = fh.read(_BLOCK if remaining is None else min(_BLOCK, remaining))
            if not block:
                break
            h.update(block)
            if remaining is not None:
                remaining -= len(block)


def sha256_file(path: str | Path, limit: int | None = None) -> str:
    """sha256 of the bytes of ``path`` (of its first ``limit`` bytes when given)."""
    h = hashlib.sha256()
    update_from_file(h, path, limit)
    return h.hexdigest()


def sha256_paths(*paths: str | Path) -> str:
    """sha256 over the bytes of every file given (directories: every file inside, sorted),
    each preceded by its name."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(f.name.encode() + b"\0")
            update_from_file(h, f)
    return h.hexdigest()
