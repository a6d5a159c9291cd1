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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import is_numpy_array

from chorus_store.arrays import as_host_view, is_accelerated, namespace
from chorus_store.errors import PredictionError
from chorus_store.genome.tracks import SCALAR_RESOLUTION
from chorus_store.hashing import sha256_paths  # re-exported: the adapters hash weights

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
        return self._fingerprint_of(self.describe())

    def _fingerprint_of(self, description: dict[str, Any]) -> str:
        desc = {
            **description,
            "batch_size": self.batch_size,
            "input_length": self.input_length,
            "heads": [h.as_dict() for h in self.heads],
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()

    def facts(self) -> dict[str, Any]:
        """What a build checks of this loaded oracle against the recipe and the store
        (plain data: a cluster worker returns it to the coordinator); :meth:`describe`
        runs once for both the fingerprint and the description."""
        description = self.describe()
        return {
            "name": self.name,
            "fingerprint": self._fingerprint_of(description),
            "description": description,
            "per_model": bool(self.per_model),
            "joint_tracks": bool(self.joint_tracks),
        }

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

    def _columns(self, columns: Columns | None) -> dict[str, np.ndarray]:
        return {
            h.name: np.arange(h.n_columns) if columns is None else np.asarray(columns[h.name])
            for h in self.heads
            if columns is None or h.name in columns
        }

    def predict_blocks(
        self, onehot: np.ndarray, columns: Columns | None = None
    ) -> Iterator[tuple[int, Iterator[tuple[str, Any]]]]:
        """The model's predictions where it computed them, one model block at a time.

        Yields ``(m, heads)`` per block of exactly ``batch_size`` sequences (the last one
        zero-padded; its first ``m`` rows are real), where ``heads`` yields ``(name,
        array)`` for each head of ``columns``. The arrays are what the adapter returned
        (numpy, or a torch tensor on the model's device), float32, of the head's shape
        with either the requested columns or every column of the head; nothing is copied
        to the host or to select columns. Take each block's heads before asking for the
        next block: an adapter may compute them lazily.
        """
        if onehot.ndim != 3 or onehot.shape[1:] != (self.input_length, 4):
            raise ValueError(
                f"{self.name} takes (batch, {self.input_length}, 4) one-hot input, "
                f"got {onehot.shape}"
            )
        cols = self._columns(columns)
        for start in range(0, onehot.shape[0], self.batch_size):
            block = onehot[start : start + self.batch_size]
            m = block.shape[0]
            if m < self.batch_size:
                pad = np.zeros((self.batch_size - m, *block.shape[1:]), dtype=block.dtype)
                block = np.concatenate([block, pad])
            self.calls += 1
            yield m, self._checked(np.ascontiguousarray(block, dtype=np.float32), cols)

    def predict(self, onehot: np.ndarray, columns: Columns | None = None) -> dict[str, np.ndarray]:
        """Predict any number of sequences ``(n, L, 4)``; float32 numpy arrays per head.

        ``columns`` selects, per head, which columns to return (default: all). The model is
        called on consecutive blocks of exactly ``batch_size`` sequences, the last one
        zero-padded. Raises :class:`PredictionError` when the model returns a head of the
        wrong shape; non-finite values are left for the caller to locate by position.
        """
        cols = self._columns(columns)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in cols}
        for m, heads in self.predict_blocks(onehot, columns):
            for name, arr in heads:
                host = np.asarray(as_host_view(arr) if not is_accelerated(arr) else _to_numpy(arr))
                head = self.head(name)
                if host.shape[1 if head.is_scalar else 2] != len(cols[name]):
                    host = np.take(host, cols[name], axis=1 if head.is_scalar else 2)
                parts[name].append(host[:m])
        if onehot.shape[0] == 0:
            return {
                name: np.zeros(self.head(name).shape(0, len(c)), np.float32)
                for name, c in cols.items()
            }
        return {name: p[0] if len(p) == 1 else np.concatenate(p) for name, p in parts.items()}

    def _predict_heads(self, onehot: np.ndarray, columns: Columns) -> Iterator[tuple[str, Any]]:
        """``(head name, prediction)`` for each head of ``columns``; default: the heads of
        :meth:`_predict_batch`. Adapters with heads too large to hold at once override
        this to compute one head at a time."""
        raw = self._predict_batch(onehot, columns)
        for name in columns:
            if name not in raw:
                raise PredictionError(
                    f"{self.name} returned heads {sorted(raw)} but its recipe declares a "
                    f"head {name!r}; fix the recipe's [[oracle.heads]]"
                )
            yield name, raw[name]

    def _checked(self, block: np.ndarray, cols: dict[str, np.ndarray]) -> Iterator[tuple[str, Any]]:
        for name, arr in self._predict_heads(block, cols):
            want_cols = cols[name]
            head = self.head(name)
            if is_numpy_array(arr) or not hasattr(arr, "shape"):
                arr = np.asarray(arr, dtype=np.float32)
            elif str(arr.dtype).split(".")[-1] != "float32":
                xp = namespace(arr)
                arr = xp.astype(arr, xp.float32)
            selected = head.shape(self.batch_size, len(want_cols))
            full = head.shape(self.batch_size)
            shape = tuple(int(d) for d in arr.shape)
            if not (shape == selected or (shape == full and not self.per_model)):
                raise PredictionError(
                    f"{self.name} returned shape {shape} for its head {name!r}, expected "
                    f"{full if not self.per_model else selected} (batch, bins, columns"
                    f"{', strands' if head.n_strands > 1 else ''}); the recipe's "
                    f"n_bins/n_columns or the model's output layout is wrong. Nothing was "
                    f"written for this chunk."
                )
            yield name, arr

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices/files; default: nothing."""


def _to_numpy(x: Any) -> np.ndarray:
    """A device array as numpy (a copy to the host; the build never does this to a head)."""
    if hasattr(x, "detach"):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)
