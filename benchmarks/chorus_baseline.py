"""chorus's in-RAM collection path, restated from the spec (§4, §5.1), as the baseline.

This is how chorus builds a null today: per position, a Python loop over tracks that
sums each track's window and offers its 32 sampled bins to a per-track reservoir
(Algorithm R, Python lists, ``random.Random(12345)``), then ``to_cdf_matrix``.
"""

from __future__ import annotations

import random

import numpy as np


class ReservoirSampler:
    """Algorithm R per track over Python lists (spec §5.1); ``capacity=None`` keeps all."""

    def __init__(self, n_tracks: int, capacity: int | None = 50_000, seed: int = 12345) -> None:
        self.capacity = capacity
        self.body: list[list[float]] = [[] for _ in range(n_tracks)]
        self.counts = np.zeros(n_tracks, dtype=np.int64)
        self.rng = random.Random(seed)

    def add(self, t: int, value: float) -> None:
        n = int(self.counts[t])
        if self.capacity is None or n < self.capacity:
            self.body[t].append(value)
        else:
            j = self.rng.randint(0, n)
            if j < self.capacity:
                self.body[t][j] = value
        self.counts[t] = n + 1

    def add_batch(self, t: int, values: np.ndarray) -> None:
        for v in values.tolist():
            self.add(t, v)

    def to_cdf_matrix(self, n_points: int = 10_000) -> np.ndarray:
        out = np.zeros((len(self.body), n_points))
        for i, body in enumerate(self.body):
            arr = np.sort(np.asarray(body, dtype=np.float64))
            n = len(arr)
            if n == 0:
                continue
            if n >= n_points:
                out[i] = arr[np.linspace(0, n - 1, n_points, dtype=int)]
            else:
                out[i] = np.interp(np.linspace(0, 1, n_points), np.arange(n) / n, arr)
        return out


def baseline_position(
    pred: np.ndarray,
    spans: list[tuple[int, int]],
    bins: np.ndarray,
    summary: ReservoirSampler,
    perbin: ReservoirSampler,
) -> None:
    """chorus's per-position baseline loop over tracks (spec §4.6, builder code shape)."""
    for t, (ws, we) in enumerate(spans):
        summary.add(t, float(np.sum(pred[ws:we, t])))
        perbin.add_batch(t, pred[bins, t].astype(np.float64))
