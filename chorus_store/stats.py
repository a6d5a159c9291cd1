"""From a batch of raw predictions to the records the nulls need.

For each track: the window statistic (sum or mean over :func:`centered_bin_span` of its
layer's window, or the whole output), the 32 sampled bins of the per-bin null, and the
effect of a SNP by the track's formula. Tracks are grouped by (head, span, aggregation)
and (formula, pseudocount) so every statistic is one vectorised numpy operation per
group, whatever the number of tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PredictionError
from .oracles.base import OutputHead
from .tracks import TrackTable, centered_bin_span, compute_effect

__all__ = ["TrackStats"]


@dataclass(frozen=True)
class _SpanGroup:
    resolution_bp: int
    start: int
    stop: int
    mean: bool
    positions: np.ndarray  # indices into the selected tracks
    columns: np.ndarray  # columns of the head's output


class TrackStats:
    """Statistics for a selection of tracks (``track_idx`` into ``table``)."""

    def __init__(self, table: TrackTable, track_idx: np.ndarray, heads: tuple[OutputHead, ...]):
        self.track_idx = np.asarray(track_idx, dtype=np.int64)
        frame = table.frame.iloc[self.track_idx].reset_index(drop=True)
        self.track_ids = frame["track_id"].tolist()
        self.heads = {h.resolution_bp: h for h in heads}
        self.head_order = [h.resolution_bp for h in heads]
        self.n = len(frame)
        res = frame["resolution_bp"].to_numpy()
        cols = frame["column"].to_numpy()
        unknown = sorted(set(res.tolist()) - set(self.heads))
        if unknown:
            raise PredictionError(f"tracks refer to output heads {unknown} the oracle lacks")
        groups: dict[tuple[int, int, int, bool], list[int]] = {}
        for i, (r, w, agg) in enumerate(
            zip(res, frame["window_bp"], frame["aggregation"], strict=True)
        ):
            head = self.heads[int(r)]
            if head.is_scalar:
                start, stop = 0, 1
            else:
                start, stop = centered_bin_span(head.n_bins, None if w < 0 else int(w), int(r))
            groups.setdefault((int(r), start, stop, agg == "mean"), []).append(i)
        self.span_groups = [
            _SpanGroup(r, s, e, m, np.asarray(p), cols[np.asarray(p)])
            for (r, s, e, m), p in groups.items()
        ]
        self.head_tracks = {
            r: (np.flatnonzero(res == r), cols[res == r]) for r in self.heads if (res == r).any()
        }
        formulas: dict[tuple[str, float], list[int]] = {}
        for i, (f, pc) in enumerate(zip(frame["formula"], frame["pseudocount"], strict=True)):
            formulas.setdefault((str(f), float(pc)), []).append(i)
        self.formula_groups = [(f, pc, np.asarray(p)) for (f, pc), p in formulas.items()]
        skip = frame["summary_skip_strata"].tolist()
        names = sorted({s for x in skip for s in x.split(",") if s})
        self.skip_strata = {s: np.asarray([s in x.split(",") for x in skip]) for s in names}
        self.has_bins = any(not self.heads[r].is_scalar for r in self.head_tracks)

    # ------------------------------------------------------------------------------
    def _refuse_non_finite(self, values: np.ndarray, labels: list[str], what: str) -> None:
        """Raise PredictionError naming the first non-finite record (batch, ..., track)."""
        finite = np.isfinite(values)
        if finite.all():
            return
        bad = np.argwhere(~finite)[0]
        raise PredictionError(
            f"the oracle returned {values[tuple(bad)]} in the {what} of track "
            f"{self.track_ids[int(bad[-1])]!r} at {labels[int(bad[0])]}; NaN/inf predictions are "
            f"refused and nothing was written for this chunk. Check the model and its inputs "
            f"(weights, dtype, device) and re-run `chorus-store build`."
        )

    def summaries(self, preds: dict[int, np.ndarray], labels: list[str]) -> np.ndarray:
        """Window statistic per sequence and selected track, ``(batch, n)`` float64.

        Every value that reaches the store is checked: a NaN/inf prediction inside any
        track's window raises :class:`PredictionError` naming the position and track.
        """
        batch = next(iter(preds.values())).shape[0]
        out = np.empty((batch, self.n), dtype=np.float64)
        for g in self.span_groups:
            pred = preds[g.resolution_bp]
            if self.heads[g.resolution_bp].is_scalar:
                out[:, g.positions] = pred[:, g.columns]
                continue
            window = pred[:, g.start : g.stop][:, :, g.columns].astype(np.float64)
            out[:, g.positions] = window.mean(axis=1) if g.mean else window.sum(axis=1)
        self._refuse_non_finite(out, labels, "window statistic")
        return out

    def perbin(
        self, preds: dict[int, np.ndarray], bin_index: np.ndarray, labels: list[str]
    ) -> np.ndarray:
        """Values at each sequence's sampled bins, ``(batch, bin_samples, n)`` float32.

        ``bin_index`` is ``(batch, heads, bin_samples)``; -1 entries (fewer bins than
        samples) give NaN. Scalar heads have no bins and give NaN.
        """
        batch, _, k = bin_index.shape
        out = np.full((batch, k, self.n), np.nan, dtype=np.float32)
        for h, r in enumerate(self.head_order):
            if r not in self.head_tracks or self.heads[r].is_scalar:
                continue
            pos, cols = self.head_tracks[r]
            idx = bin_index[:, h, :]
            valid = idx >= 0
            vals = np.take_along_axis(preds[r], np.where(valid, idx, 0)[:, :, None], axis=1)
            vals = vals[:, :, cols]
            self._refuse_non_finite(np.where(valid[:, :, None], vals, 0), labels, "sampled bins")
            vals[~valid] = np.nan
            out[:, :, pos] = vals
        return out

    def effects(self, ref: np.ndarray, alt: np.ndarray, labels: list[str]) -> np.ndarray:
        """Signed effect per SNP and selected track by each track's formula, float64."""
        out = np.empty_like(ref)
        for formula, pc, pos in self.formula_groups:
            out[:, pos] = compute_effect(ref[:, pos], alt[:, pos], formula, pc)
        bad = ~np.isfinite(out)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise PredictionError(
                f"effect of {labels[int(i)]} on track {self.track_ids[int(j)]!r} is not finite "
                f"(ref {ref[i, j]:.6g}, alt {alt[i, j]:.6g}): a log-ratio formula needs "
                f"predictions > -pseudocount. The model's output is not what the track's "
                f"layer expects (wrong output activation?). Nothing was written for this chunk."
            )
        return out

    def summary_mask(self, strata: list[str]) -> np.ndarray:
        """True where a track takes no summary sample at a row's stratum (CAGE at cCREs)."""
        mask = np.zeros((len(strata), self.n), dtype=bool)
        for stratum, tracks in self.skip_strata.items():
            rows = np.asarray([s == stratum for s in strata])
            mask[np.ix_(rows, tracks)] = True
        return mask
