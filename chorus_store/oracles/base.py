"""The one interface every oracle adapter implements.

An adapter turns a batch of one-hot sequences into predictions:
``predict(onehot) -> {resolution_bp: array}`` where a binned head gives
``(batch, n_bins, n_columns)`` and a scalar head (``resolution_bp == 0``) gives
``(batch, n_columns)``. Everything else — which columns are which track, how a window is
summed — lives in the track table, so a new model needs an adapter only when it brings a
new framework or architecture.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PredictionError
from ..tracks import SCALAR_RESOLUTION

__all__ = ["OutputHead", "Oracle", "sha256_paths"]


@dataclass(frozen=True)
class OutputHead:
    """One output array of an oracle: its bin size and number of bins and columns."""

    resolution_bp: int  # 0 for a scalar head
    n_bins: int  # 1 for a scalar head
    n_columns: int

    @property
    def is_scalar(self) -> bool:
        return self.resolution_bp == SCALAR_RESOLUTION

    def as_dict(self) -> dict[str, int]:
        return {
            "resolution_bp": self.resolution_bp,
            "n_bins": self.n_bins,
            "n_columns": self.n_columns,
        }


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

    def __init__(self) -> None:
        self.calls = 0  # forward passes run; a finished build re-run must leave it at 0

    @abstractmethod
    def _predict_batch(self, onehot: np.ndarray) -> dict[int, np.ndarray]:
        """Predictions for exactly ``batch_size`` sequences ``(batch_size, L, 4)``."""

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

    def head(self, resolution_bp: int) -> OutputHead:
        for h in self.heads:
            if h.resolution_bp == resolution_bp:
                return h
        raise KeyError(f"{self.name} has no {resolution_bp} bp output head")

    def predict(self, onehot: np.ndarray) -> dict[int, np.ndarray]:
        """Predict any number of sequences ``(n, L, 4)``; float32 arrays per head.

        The model is called on consecutive blocks of exactly ``batch_size`` sequences, the
        last one zero-padded, so a sequence's prediction never depends on how many were
        passed at once. Raises :class:`PredictionError` when the model returns a head of
        the wrong shape; non-finite values are left for the caller to locate by position.
        """
        if onehot.ndim != 3 or onehot.shape[1:] != (self.input_length, 4):
            raise ValueError(
                f"{self.name} takes (batch, {self.input_length}, 4) one-hot input, "
                f"got {onehot.shape}"
            )
        n = onehot.shape[0]
        parts: dict[int, list[np.ndarray]] = {h.resolution_bp: [] for h in self.heads}
        for start in range(0, n, self.batch_size):
            block = onehot[start : start + self.batch_size]
            m = block.shape[0]
            if m < self.batch_size:
                pad = np.zeros((self.batch_size - m, *block.shape[1:]), dtype=block.dtype)
                block = np.concatenate([block, pad])
            for r, arr in self._checked(np.ascontiguousarray(block, dtype=np.float32)).items():
                parts[r].append(arr[:m])
        if n == 0:
            return {
                h.resolution_bp: np.zeros((0, *self._shape(h)[1:]), np.float32) for h in self.heads
            }
        return {r: p[0] if len(p) == 1 else np.concatenate(p) for r, p in parts.items()}

    def _shape(self, head: OutputHead) -> tuple[int, ...]:
        if head.is_scalar:
            return (self.batch_size, head.n_columns)
        return (self.batch_size, head.n_bins, head.n_columns)

    def _checked(self, block: np.ndarray) -> dict[int, np.ndarray]:
        self.calls += 1
        raw = self._predict_batch(block)
        out: dict[int, np.ndarray] = {}
        for head in self.heads:
            if head.resolution_bp not in raw:
                raise PredictionError(
                    f"{self.name} returned heads {sorted(raw)} but its recipe declares a "
                    f"{head.resolution_bp} bp head; fix the recipe's [[oracle.heads]]"
                )
            arr = np.asarray(raw[head.resolution_bp], dtype=np.float32)
            want = self._shape(head)
            if arr.shape != want:
                raise PredictionError(
                    f"{self.name} returned shape {arr.shape} for its {head.resolution_bp} bp "
                    f"head, expected {want} (batch, bins, columns); the recipe's "
                    f"n_bins/n_columns or the model's output layout is wrong. Nothing was "
                    f"written for this chunk."
                )
            out[head.resolution_bp] = arr
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices/files; default: nothing."""
