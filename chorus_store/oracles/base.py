"""The one interface every oracle adapter implements.

An adapter turns a batch of one-hot sequences ``(batch, input_length, 4)`` (A, C, G, T)
into predictions, one array per named output head:

* a binned head gives ``(batch, n_bins, n_columns)``, or ``(batch, n_bins, n_columns,
  n_strands)`` when it has strands (BPNet's two-strand profiles);
* a scalar head (``resolution_bp == 0``) gives ``(batch, n_columns)``.

Everything else — which column is which track, how a window is summed, which formula an
effect uses — lives in the track table, so a new model needs an adapter only when it
brings a new framework or architecture. Adapters of one-model-per-track oracles
(ChromBPNet, LegNet) set ``per_model = True`` and receive the columns to compute, so a
build of some tracks loads and runs only their models.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PredictionError
from ..tracks import SCALAR_RESOLUTION

__all__ = ["OutputHead", "Oracle", "Columns", "sha256_paths"]

#: columns requested per head name
Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class OutputHead:
    """One output array of an oracle.

    ``offset_bp`` is where bin 0 starts, in bp from the start of the input window; by
    default the bins are centred in the input (Enformer: (393,216 - 896 x 128) / 2).
    """

    name: str
    resolution_bp: int  # 0 for a scalar head
    n_bins: int = 1  # 1 for a scalar head
    n_columns: int = 0
    n_strands: int = 1
    offset_bp: int | None = None

    @property
    def is_scalar(self) -> bool:
        return self.resolution_bp == SCALAR_RESOLUTION

    def start_bp(self, input_length: int) -> int:
        """Offset of bin 0 from the input window's start."""
        if self.offset_bp is not None:
            return self.offset_bp
        return (input_length - self.n_bins * self.resolution_bp) // 2 if not self.is_scalar else 0

    def shape(self, batch: int, n_columns: int | None = None) -> tuple[int, ...]:
        cols = self.n_columns if n_columns is None else n_columns
        if self.is_scalar:
            return (batch, cols)
        if self.n_strands > 1:
            return (batch, self.n_bins, cols, self.n_strands)
        return (batch, self.n_bins, cols)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resolution_bp": self.resolution_bp,
            "n_bins": self.n_bins,
            "n_columns": self.n_columns,
            "n_strands": self.n_strands,
            "offset_bp": self.offset_bp,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputHead:
        res = int(d["resolution_bp"])
        return cls(
            name=str(d.get("name") or (f"{res}bp" if res else "scalar")),
            resolution_bp=res,
            n_bins=int(d.get("n_bins", 1)),
            n_columns=int(d.get("n_columns", 0)),
            n_strands=int(d.get("n_strands", 1)),
            offset_bp=None if d.get("offset_bp") is None else int(d["offset_bp"]),
        )


def sha256_paths(*paths: str | Path) -> str:
    """sha256 over the bytes of every file given (directories: every file inside, sorted)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(f.name.encode() + b"\0")
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


class Oracle(ABC):
    """A sequence-to-function model, loaded and ready to predict.

    Subclasses set :attr:`name`, :attr:`input_length`, :attr:`heads` and
    :attr:`batch_size`, and implement :meth:`_predict_batch`. :meth:`predict` calls the
    model on blocks of exactly ``batch_size`` sequences (zero-padding the last), because
    most frameworks' numerics depend in the last bit on the batch shape: with a fixed
    shape, a sequence's prediction does not depend on how many sequences the build passed
    at once, how it chunked the plan, how many workers ran, or its neighbours. The model
    batch size is therefore part of the oracle's fingerprint.
    """

    name: str
    input_length: int
    heads: tuple[OutputHead, ...]
    batch_size: int
    #: one model per column: ``_predict_batch`` receives the columns to compute
    per_model: bool = False
    #: effects need every track of a row together (``effect_inputs`` reads them all)
    joint_tracks: bool = False

    def __init__(
        self,
        *,
        name: str | None = None,
        input_length: int | None = None,
        heads: tuple[OutputHead, ...] | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Set whichever of the oracle's identity attributes are given."""
        self.calls = 0  # forward passes run; a finished build re-run must leave it at 0
        if name is not None:
            self.name = name
        if input_length is not None:
            self.input_length = int(input_length)
        if heads is not None:
            self.heads = tuple(heads)
        if batch_size is not None:
            self.batch_size = int(batch_size)

    @abstractmethod
    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        """Predictions for exactly ``batch_size`` sequences ``(batch_size, L, 4)``.

        Per-model adapters return only ``columns`` (in that order); others may return
        every column of each head, and :meth:`predict` selects.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What identifies this model's numerics: adapter, architecture, config, weights hash."""

    @property
    def fingerprint(self) -> str:
        """sha256 of :meth:`describe` plus the batch shape; recorded in the store."""
        desc = {
            **self.describe(),
            "batch_size": self.batch_size,
            "input_length": self.input_length,
            "heads": [h.as_dict() for h in self.heads],
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()

    def head(self, name: str) -> OutputHead:
        for h in self.heads:
            if h.name == name:
                return h
        raise KeyError(f"{self.name} has no output head {name!r}")

    def effect_inputs(
        self, ref: np.ndarray, alt: np.ndarray, track_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (ref, alt) window statistics an effect is computed from; default: as is.

        ``ref``/``alt`` are ``(variants, strands, tracks)`` for the tracks ``track_idx`` of
        the track table. Sei overrides this to apply its histone equalisation to both
        alleles before differencing.
        """
        return ref, alt

    def predict(self, onehot: np.ndarray, columns: Columns | None = None) -> dict[str, np.ndarray]:
        """Predict any number of sequences ``(n, L, 4)``; float32 arrays per head.

        ``columns`` selects, per head, which columns to return (default: all). The model is
        called on consecutive blocks of exactly ``batch_size`` sequences, the last one
        zero-padded. Raises :class:`PredictionError` when the model returns a head of the
        wrong shape; non-finite values are left for the caller to locate by position.
        """
        if onehot.ndim != 3 or onehot.shape[1:] != (self.input_length, 4):
            raise ValueError(
                f"{self.name} takes (batch, {self.input_length}, 4) one-hot input, "
                f"got {onehot.shape}"
            )
        cols = {
            h.name: np.arange(h.n_columns) if columns is None else np.asarray(columns[h.name])
            for h in self.heads
            if columns is None or h.name in columns
        }
        n = onehot.shape[0]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in cols}
        for start in range(0, n, self.batch_size):
            block = onehot[start : start + self.batch_size]
            m = block.shape[0]
            if m < self.batch_size:
                pad = np.zeros((self.batch_size - m, *block.shape[1:]), dtype=block.dtype)
                block = np.concatenate([block, pad])
            out = self._checked(np.ascontiguousarray(block, dtype=np.float32), cols)
            for name, arr in out.items():
                parts[name].append(arr[:m])
        if n == 0:
            return {
                name: np.zeros(self.head(name).shape(0, len(c)), np.float32)
                for name, c in cols.items()
            }
        return {name: p[0] if len(p) == 1 else np.concatenate(p) for name, p in parts.items()}

    def _checked(self, block: np.ndarray, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        raw = self._predict_batch(block, cols)
        out: dict[str, np.ndarray] = {}
        for name, want_cols in cols.items():
            head = self.head(name)
            if name not in raw:
                raise PredictionError(
                    f"{self.name} returned heads {sorted(raw)} but its recipe declares a "
                    f"head {name!r}; fix the recipe's [[oracle.heads]]"
                )
            arr = np.asarray(raw[name], dtype=np.float32)
            selected = head.shape(self.batch_size, len(want_cols))
            full = head.shape(self.batch_size)
            if arr.shape == full and not self.per_model:
                everything = (
                    len(want_cols) == head.n_columns
                    and (want_cols == np.arange(head.n_columns)).all()
                )
                if not everything:  # select, without copying a full head for nothing
                    arr = np.take(arr, want_cols, axis=1 if head.is_scalar else 2)
            elif arr.shape != selected:
                raise PredictionError(
                    f"{self.name} returned shape {arr.shape} for its head {name!r}, expected "
                    f"{full if not self.per_model else selected} (batch, bins, columns"
                    f"{', strands' if head.n_strands > 1 else ''}); the recipe's "
                    f"n_bins/n_columns or the model's output layout is wrong. Nothing was "
                    f"written for this chunk."
                )
            out[name] = arr
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices/files; default: nothing."""
