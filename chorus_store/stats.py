"""From a batch of raw predictions to the records the nulls need.

For each track: the window statistic (sum or mean over :func:`centered_bin_span` of its
layer's window, or the whole output), the 32 sampled bins of the per-bin null, and the
effect of a SNP by the track's formula. ``gene_expression`` tracks are scored per gene
instead: the mean over the gene's exon bins, one record per (row, gene), and their per-bin
samples come from the exon bins (spec §4.5). Tracks with several strands (BPNet CHIP)
give one record per strand. Tracks are grouped by (head, span, aggregation) and
(formula, pseudocount) so every statistic is one vectorised numpy operation per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PredictionError
from .oracles.base import OutputHead
from .tracks import GENE_LAYER, TrackTable, centered_bin_span, compute_effect

__all__ = ["TrackStats", "GeneSlot"]


@dataclass(frozen=True)
class _SpanGroup:
    head: str
    start: int
    stop: int
    mean: bool
    positions: np.ndarray  # indices into the selected tracks
    columns: np.ndarray  # indices into the requested columns of the head


@dataclass(frozen=True)
class GeneSlot:
    """One (row, gene) record: where it is stored and the exon bin ranges it averages."""

    slot: int  # index into the task's gene records
    batch_row: int  # the sequence of the batch it is read from
    #: the bins of the mask's ranges, concatenated: a bin in two ranges is here twice, so
    #: the mean is chorus's query value (sum per exon span / bins summed)
    bins: np.ndarray

    @classmethod
    def from_ranges(cls, slot: int, batch_row: int, ranges: np.ndarray) -> GeneSlot:
        """The slot of a mask given as bin ranges ``(k, 2)`` (see :mod:`chorus_store.genes`)."""
        bins = np.concatenate([np.arange(a, b) for a, b in np.asarray(ranges).reshape(-1, 2)])
        return cls(slot, batch_row, bins.astype(np.int64))


class TrackStats:
    """Statistics for a selection of tracks (``track_idx`` into ``table``).

    ``columns`` is what to ask the oracle for: per head, the sorted distinct columns the
    selected tracks read.
    """

    def __init__(
        self,
        table: TrackTable,
        track_idx: np.ndarray,
        heads: tuple[OutputHead, ...],
        n_strands: int = 1,
    ) -> None:
        self.track_idx = np.asarray(track_idx, dtype=np.int64)
        frame = table.frame.iloc[self.track_idx].reset_index(drop=True)
        self.track_ids = frame["track_id"].tolist()
        self.heads = {h.name: h for h in heads}
        self.n = len(frame)
        self.n_strands = n_strands
        head_of = frame["head"].to_numpy()
        unknown = sorted(set(head_of.tolist()) - set(self.heads))
        if unknown:
            raise PredictionError(f"tracks refer to output heads {unknown} the oracle lacks")
        cols = frame["column"].to_numpy()
        self.columns = {
            h: np.unique(cols[head_of == h]) for h in self.heads if (head_of == h).any()
        }
        local = np.asarray(
            [np.searchsorted(self.columns[h], c) for h, c in zip(head_of, cols, strict=True)]
        )
        self.track_strands = frame["n_strands"].to_numpy()
        is_gene = frame["layer"].to_numpy() == GENE_LAYER
        self.gene_positions = np.flatnonzero(is_gene)
        self.gene_head = str(head_of[is_gene][0]) if is_gene.any() else ""
        self.gene_columns = local[is_gene]
        groups: dict[tuple[str, int, int, bool], list[int]] = {}
        for i in np.flatnonzero(~is_gene):
            head = self.heads[str(head_of[i])]
            w = int(frame["window_bp"].iat[i])
            if head.is_scalar:
                start, stop = 0, 1
            else:
                start, stop = centered_bin_span(
                    head.n_bins, None if w < 0 else w, head.resolution_bp
                )
            key = (head.name, start, stop, frame["aggregation"].iat[i] == "mean")
            groups.setdefault(key, []).append(int(i))
        self.span_groups = [
            _SpanGroup(h, s, e, m, np.asarray(p), local[np.asarray(p)])
            for (h, s, e, m), p in groups.items()
        ]
        self.head_tracks = {
            h: (np.flatnonzero((head_of == h) & ~is_gene), local[(head_of == h) & ~is_gene])
            for h in self.columns
        }
        formulas: dict[tuple[str, float], list[int]] = {}
        for j, (f, pc) in enumerate(zip(frame["formula"], frame["pseudocount"], strict=True)):
            formulas.setdefault((str(f), float(pc)), []).append(j)
        self.formula_groups = [(f, pc, np.asarray(p)) for (f, pc), p in formulas.items()]
        # a log ratio of predictions needs them >= 0: a negative one gives NaN (chorus's
        # math.log raises), or, two of them, a finite ratio that means nothing
        self.formulas = frame["formula"].astype(str).tolist()
        self.log_ratio = frame["formula"].isin(["log2fc", "logfc"]).to_numpy()
        skip = frame["summary_skip_strata"].tolist()
        names = sorted({s for x in skip for s in x.split(",") if s})
        self.skip_strata = {s: np.asarray([s in x.split(",") for x in skip]) for s in names}
        self.has_bins = any(not self.heads[h].is_scalar for h in self.columns)

    # ------------------------------------------------------------------------------
    def _refuse(self, values: np.ndarray, valid: np.ndarray, labels: list[str], what: str) -> None:
        """Raise PredictionError naming the first non-finite record that would be stored,
        or the first negative one of a track whose effect is a log ratio."""
        bad = valid & ~np.isfinite(values)
        if bad.any():
            where = np.argwhere(bad)[0]
            raise PredictionError(
                f"the oracle returned {values[tuple(where)]} in the {what} of track "
                f"{self.track_ids[int(where[-1])]!r} at {labels[int(where[0])]}; NaN/inf "
                f"predictions are refused and nothing was written for this chunk. Check the "
                f"model and its inputs (weights, dtype, device) and re-run `chorus-store build`."
            )
        with np.errstate(invalid="ignore"):
            negative = valid & self.log_ratio & (values < 0)
        if negative.any():
            where = np.argwhere(negative)[0]
            j = int(where[-1])
            raise PredictionError(
                f"the oracle returned {values[tuple(where)]:.6g} in the {what} of track "
                f"{self.track_ids[j]!r} at {labels[int(where[0])]}; that track's effect is a "
                f"log ratio ({self.formulas[j]}), which needs predictions >= 0, so negative ones "
                f"are refused like NaN and nothing was written for this chunk. The model's "
                f"output is not what the track's layer expects (a missing output activation?), "
                f"or the track belongs to a layer scored by difference (set its formula to "
                f"'diff' in the track table)."
            )

    def _strand_mask(self) -> np.ndarray:
        """(strands, n): True where a track has that strand."""
        mask: np.ndarray = np.arange(self.n_strands)[:, None] < self.track_strands[None, :]
        return mask

    def summaries(self, preds: dict[str, np.ndarray], labels: list[str]) -> np.ndarray:
        """Window statistic per sequence, strand and selected track, ``(batch, S, n)`` f64.

        ``gene_expression`` tracks and strands a track lacks are NaN here.
        """
        batch = next(iter(preds.values())).shape[0]
        out = np.full((batch, self.n_strands, self.n), np.nan)
        for g in self.span_groups:
            pred = preds[g.head]
            if self.heads[g.head].is_scalar:
                out[:, 0, g.positions] = pred[:, g.columns]
                continue
            window = pred[:, g.start : g.stop][:, :, g.columns].astype(np.float64)
            stat = window.mean(axis=1) if g.mean else window.sum(axis=1)  # (B, cols[, S])
            if stat.ndim == 2:
                out[:, 0, g.positions] = stat
            else:
                out[:, : stat.shape[2], g.positions] = stat.transpose(0, 2, 1)
        valid = np.broadcast_to(self._strand_mask(), out.shape).copy()
        valid[:, :, self.gene_positions] = False
        out[~valid] = np.nan
        self._refuse(out, valid, labels, "window statistic")
        return out

    def perbin(
        self,
        preds: dict[str, np.ndarray],
        bin_index: np.ndarray,
        gene_bins: np.ndarray,
        resolutions: list[int],
        labels: list[str],
    ) -> np.ndarray:
        """Values at each sequence's sampled bins, ``(batch, S, bin_samples, n)`` float32.

        ``bin_index`` is ``(batch, resolutions, bin_samples)``; a track reads the draw of
        its head's resolution. ``gene_expression`` tracks read ``gene_bins`` ``(batch,
        bin_samples)``, drawn from the exon bins. -1 entries give NaN; scalar heads give NaN.
        """
        batch, _, k = bin_index.shape
        out = np.full((batch, self.n_strands, k, self.n), np.nan, dtype=np.float32)
        for h, (pos, cols) in self.head_tracks.items():
            head = self.heads[h]
            if head.is_scalar or len(pos) == 0:
                continue
            self._gather(
                out, preds[h], bin_index[:, resolutions.index(head.resolution_bp)], pos, cols
            )
        if len(self.gene_positions):
            self._gather(
                out, preds[self.gene_head], gene_bins, self.gene_positions, self.gene_columns
            )
        strands = self._strand_mask()[None, :, None, :]  # (1, S, 1, n)
        out[np.broadcast_to(~strands, out.shape)] = np.nan  # strands a track does not have
        valid = strands & self._sampled(bin_index, gene_bins, resolutions)
        self._refuse(out, valid, labels, "sampled bins")
        return out

    def _sampled(
        self, bin_index: np.ndarray, gene_bins: np.ndarray, resolutions: list[int]
    ) -> np.ndarray:
        """(batch, 1, bin_samples, n): True where a bin was drawn for the track."""
        batch, _, k = bin_index.shape
        drawn = np.zeros((batch, 1, k, self.n), dtype=bool)
        for h, (pos, _) in self.head_tracks.items():
            head = self.heads[h]
            if not head.is_scalar and len(pos):
                d = bin_index[:, resolutions.index(head.resolution_bp)] >= 0
                drawn[:, 0][:, :, pos] = d[:, :, None]
        if len(self.gene_positions):
            drawn[:, 0][:, :, self.gene_positions] = (gene_bins >= 0)[:, :, None]
        return drawn

    @staticmethod
    def _gather(
        out: np.ndarray, pred: np.ndarray, idx: np.ndarray, pos: np.ndarray, cols: np.ndarray
    ) -> None:
        valid = idx >= 0
        vals = np.take_along_axis(
            pred, np.where(valid, idx, 0).reshape(*idx.shape, *([1] * (pred.ndim - 2))), axis=1
        )
        vals = vals[:, :, cols]  # (B, k, cols[, S])
        if vals.ndim == 3:
            vals = vals[..., None]
        vals = vals.transpose(0, 3, 1, 2).astype(np.float32)  # (B, S, k, cols)
        vals[~np.broadcast_to(valid[:, None, :, None], vals.shape)] = np.nan
        for p_i, p in enumerate(pos):
            out[:, : vals.shape[1], :, p] = vals[..., p_i]

    def gene_means(
        self, preds: dict[str, np.ndarray], slots: list[GeneSlot], labels: list[str]
    ) -> np.ndarray:
        """Mean over each (row, gene)'s exon bins, ``(len(slots), n)`` f64 in ``slots`` order.

        A bin listed twice in a slot's ``bins`` counts twice, in the sum and the count.

        Tracks other than ``gene_expression`` are NaN.
        """
        out = np.full((len(slots), self.n), np.nan)
        if not len(self.gene_positions) or not slots:
            return out
        pred = preds[self.gene_head]
        for i, s in enumerate(slots):
            values = pred[s.batch_row, s.bins][:, self.gene_columns].astype(np.float64)
            out[i, self.gene_positions] = values.mean(axis=0)
        valid = np.zeros(out.shape, bool)
        valid[:, self.gene_positions] = True
        self._refuse(out, valid, [labels[s.batch_row] for s in slots], "exon mean")
        return out

    def effects(self, ref: np.ndarray, alt: np.ndarray, labels: list[str]) -> np.ndarray:
        """Signed effect by each track's formula along the last axis (float64).

        Records not sampled (NaN in both alleles) stay NaN; any other non-finite effect
        (a log-ratio of a negative prediction) is refused.
        """
        out = np.full(np.broadcast_shapes(ref.shape, alt.shape), np.nan)
        for formula, pc, pos in self.formula_groups:
            out[..., pos] = compute_effect(ref[..., pos], alt[..., pos], formula, pc)
        sampled = np.isfinite(ref) & np.isfinite(alt)
        bad = sampled & ~np.isfinite(out)
        if bad.any():
            where = np.argwhere(bad)[0]
            i, j = int(where[0]), int(where[-1])
            raise PredictionError(
                f"effect of {labels[i]} on track {self.track_ids[j]!r} is not finite "
                f"(ref {ref[tuple(where)]:.6g}, alt {alt[tuple(where)]:.6g}): a log-ratio formula "
                f"needs predictions > -pseudocount. The model's output is not what the track's "
                f"layer expects (wrong output activation?). Nothing was written for this chunk."
            )
        return out

    def summary_mask(self, strata: list[str]) -> np.ndarray:
        """(rows, n): True where a track takes no summary at a row's stratum (CAGE at cCREs)."""
        mask = np.zeros((len(strata), self.n), dtype=bool)
        for stratum, tracks in self.skip_strata.items():
            rows = np.asarray([s == stratum for s in strata])
            mask[np.ix_(rows, tracks)] = True
        return mask
