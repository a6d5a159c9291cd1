"""What a store's build has done and what is pending, read from its ``done_rows`` marks."""

from __future__ import annotations

import numpy as np

from chorus_store.errors import IncompleteStageError
from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.store.schema import DataGroup

__all__ = ["pending_summary", "require_complete"]


def pending_summary(store: ChorusStore) -> dict[str, dict[str, int]]:
    """Per group: shards, shards complete, rows × tracks done (for ``status``)."""
    out = {}
    n_tracks = len(store.tracks)
    for group in DATA_GROUPS:
        done = store.read(group.done)[:, :n_tracks]
        lengths = np.asarray([stop - start for _, start, stop in store.iter_shards(group)])
        complete = (
            (done >= lengths[:, None]).all(axis=1) if n_tracks else np.ones(len(lengths), bool)
        )
        out[group.name] = {
            "shards": int(len(lengths)),
            "shards_done": int(complete.sum()),
            "cells": int(lengths.sum()) * n_tracks,
            "cells_done": int(np.minimum(done, lengths[:, None]).sum()),
        }
    return out


def require_complete(store: ChorusStore, groups: tuple[DataGroup, ...] = DATA_GROUPS) -> None:
    """Raise :class:`IncompleteStageError` unless every row of ``groups`` is built."""
    status = pending_summary(store)
    names = {g.name for g in groups}
    todo = {g: s for g, s in status.items() if g in names and s["cells_done"] < s["cells"]}
    if todo:
        what = ", ".join(
            f"{g} {s['shards'] - s['shards_done']} of {s['shards']} shards" for g, s in todo.items()
        )
        raise IncompleteStageError(
            f"{store.url}: the build is not finished ({what} pending). Run "
            f"`chorus-store build {store.url}` (it resumes where it stopped)."
        )
