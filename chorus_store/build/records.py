"""From a block of raw predictions to the records the nulls need, where the predictions are.

For each track: the window statistic (sum or mean over :func:`centered_bin_span` of its
layer's window, or the whole output), the 32 sampled bins of the per-bin null, and the
effect of a SNP by the track's formula. ``gene_expression`` tracks are scored per gene
instead: the mean over the gene's exon bins, one record per (row, gene), and their per-bin
samples come from the exon bins (spec §4.5). Tracks with several strands (BPNet CHIP)
give one record per strand.

The work is split in two halves:

* :meth:`TrackStats.block_records` runs on the predictions as the oracle returned them
  (numpy arrays, torch tensors on CPU or CUDA), written once against the array API: per
  head, one slice-and-sum per (span, aggregation) group, one gather of the sampled bins,
  one gather of the exon bins and a float64 sum per gene. Only these records (rows ×
  tracks × a few values) are brought to the host; a 1 bp head of AlphaGenome never is.
* :meth:`TrackStats.place` runs on the host: it puts the records in track order, blanks
  what was not sampled, and refuses non-finite ones, naming the position and track.

Sums accumulate in float64, as chorus's ``np.mean`` does; the records are stored as
float32. Effects (:meth:`TrackStats.effects`) are a formula of two stored records and run
on the host, after both alleles of a variant are reduced (see docs/design-notes.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from array_api_compat import is_numpy_array

from chorus_store.arrays import asarray_like, is_accelerated, namespace
from chorus_store.errors import PredictionError
from chorus_store.genome.tracks import GENE_LAYER, TrackTable, centered_bin_span, compute_effect
from chorus_store.oracles.base import OutputHead

__all__ = ["TrackStats", "GeneSlot", "BlockIndex", "Records"]


@dataclass(frozen=True)
class _SpanGroup:
    start: int
    stop: int
    mean: bool
    positions: np.ndarray  # indices into the selected tracks
    columns: np.ndarray  # indices into the requested columns of the head


@dataclass(frozen=True)
class _HeadPlan:
    """What one head contributes: its span groups, its sampled-bin tracks, its genes."""

    head: OutputHead
    spans: tuple[_SpanGroup, ...]
    bin_positions: np.ndarray  # tracks (not gene_expression) read at the sampled bins
    bin_columns: np.ndarray
    genes: bool  # the gene_expression tracks read this head


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
        """The slot of a mask given as bin ranges ``(k, 2)``.

        See :mod:`chorus_store.genome.genes`."""
        bins = np.concatenate([np.arange(a, b) for a, b in np.asarray(ranges).reshape(-1, 2)])
        return cls(slot, batch_row, bins.astype(np.int64))


@dataclass
class BlockIndex:
    """Host-side description of one block of sequences: what to read of its predictions.

    ``bins`` ``(rows, resolutions, bin_samples)`` and ``gene_bins`` ``(rows,
    bin_samples)`` are the sampled bins (``-1``: none), ``None`` where no per-bin record is
    taken (variants); ``slots`` the (row, gene) records read from this block.
    """

    rows: int
    resolutions: list[int]
    bins: np.ndarray | None = None
    gene_bins: np.ndarray | None = None
    slots: list[GeneSlot] = field(default_factory=list)


class Records(NamedTuple):
    """One block's records, in the order of :class:`TrackStats`' plan (not track order).

    ``summary`` ``(rows, S, n_summary)`` float64, ``perbin`` ``(rows, S, k, n_perbin)``
    float32 or ``None``, ``genes`` ``(slots, n_gene)`` float64 or ``None``.
    """

    summary: Any
    perbin: Any
    genes: Any


class TrackStats:
    """Statistics for a selection of tracks (``track_idx`` into ``table``).

    ``columns`` is what to ask the oracle for: per head, the sorted distinct columns the
    selected tracks read. The oracle may return exactly those or every column of the head;
    the statistics index whichever it returned, so no head is copied to select columns.
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
        local = np.zeros(len(frame), np.int64)
        for h, wanted in self.columns.items():
            on = head_of == h
            local[on] = np.searchsorted(wanted, cols[on])
        self.track_strands = frame["n_strands"].to_numpy()
        is_gene = frame["layer"].to_numpy() == GENE_LAYER
        self.gene_positions = np.flatnonzero(is_gene)
        self.gene_head = str(head_of[is_gene][0]) if is_gene.any() else ""
        self.gene_columns = local[is_gene]
        spans: dict[str, dict[tuple[int, int, bool], list[int]]] = {h: {} for h in self.columns}
        windows = frame["window_bp"].to_numpy()
        means = (frame["aggregation"] == "mean").to_numpy()
        kinds = pd.DataFrame({"head": head_of, "w": windows, "mean": means})[~is_gene]
        for (h, w, m), rows in kinds.groupby(["head", "w", "mean"], sort=False).groups.items():
            head = self.heads[str(h)]
            if head.is_scalar:
                start, stop = 0, 1
            else:
                start, stop = centered_bin_span(
                    head.n_bins, None if w < 0 else int(w), head.resolution_bp
                )
            spans[head.name].setdefault((start, stop, bool(m)), []).extend(rows.tolist())
        for groups in spans.values():  # track order within each group, as before
            for key in groups:
                groups[key].sort()
        self.plans: list[_HeadPlan] = []
        for h in self.columns:
            head = self.heads[h]
            on_head = np.flatnonzero((head_of == h) & ~is_gene)
            self.plans.append(
                _HeadPlan(
                    head=head,
                    spans=tuple(
                        _SpanGroup(s, e, m, np.asarray(p), local[np.asarray(p)])
                        for (s, e, m), p in spans[h].items()
                    ),
                    bin_positions=on_head if not head.is_scalar else on_head[:0],
                    bin_columns=local[on_head] if not head.is_scalar else local[on_head[:0]],
                    genes=h == self.gene_head,
                )
            )
        #: where each record of :class:`Records` goes among the selected tracks
        self.summary_order = np.concatenate(
            [g.positions for p in self.plans for g in p.spans] or [np.zeros(0, np.int64)]
        ).astype(np.int64)
        self.perbin_order = np.concatenate(
            [p.bin_positions for p in self.plans]
            + [self.gene_positions if p.genes else p.bin_positions[:0] for p in self.plans]
            + [np.zeros(0, np.int64)]
        ).astype(np.int64)
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
        self._device_indices: dict[tuple[Any, ...], Any] = {}
        #: how per-gene exon sums are taken: "auto", "gather" or "ranges" (_gene_sums)
        self.exon_sums = "auto"

    # ------------------------------------------------------------------------------
    # where the predictions are
    # ------------------------------------------------------------------------------
    def block_records(self, heads: Iterable[tuple[str, Any]], index: BlockIndex) -> Records:
        """The records of one block, computed on the arrays' own device.

        ``heads`` yields ``(head name, prediction)`` pairs, one per head of
        :attr:`columns`, in any order; each may be dropped as soon as the next is asked
        for (an adapter can compute its heads one at a time, so device memory holds one
        head). Per-bin records are taken when ``index.bins`` is given.
        """
        parts: dict[str, tuple[Any, Any, Any]] = {}
        for name, pred in heads:
            if name in self.columns and name not in parts:
                parts[name] = self._head_records(name, pred, index)
        missing = [h for h in self.columns if h not in parts]
        if missing:
            raise PredictionError(f"the oracle returned no prediction for the head(s) {missing}")
        ordered = [parts[p.head.name] for p in self.plans]
        summary = _concat([s for s, _, _ in ordered], axis=2)
        perbin = None
        if index.bins is not None:
            perbin = _concat(
                [b for _, b, _ in ordered if b is not None]
                + [g[0] for _, _, g in ordered if g is not None and g[0] is not None],
                axis=3,
            )
        genes = next((g[1] for _, _, g in ordered if g is not None), None)
        return Records(summary, perbin, genes)

    def _head_records(self, name: str, pred: Any, index: BlockIndex) -> tuple[Any, Any, Any]:
        """(summary parts, per-bin part, (gene per-bin, gene sums)) of one head."""
        plan = next(p for p in self.plans if p.head.name == name)
        head = plan.head
        xp = namespace(pred)
        axis = 1 if head.is_scalar else 2
        held_all = pred.shape[axis] == head.n_columns != len(self.columns[name])
        rows = pred.shape[0]

        def cols(key: str, local: np.ndarray) -> Any:
            wanted = np.asarray(self.columns[name][local] if held_all else local, np.int64)
            if len(wanted) and (np.diff(wanted) == 1).all():
                # one run of columns (a head's tracks often are): a view, not a gather
                return slice(int(wanted[0]), int(wanted[-1]) + 1)
            return self._on_device((name, key, held_all), wanted, pred)

        summaries = []
        for i, g in enumerate(plan.spans):
            c = cols(f"span{i}", g.columns)
            if head.is_scalar:
                stat = xp.astype(_select(xp, pred, c, axis=1), xp.float64)
            else:
                window = _select(xp, pred[:, g.start : g.stop, ...], c, axis=2)
                stat = xp.sum(window, axis=1, dtype=xp.float64)
                if g.mean:
                    stat = stat / (g.stop - g.start)
            summaries.append(self._by_strand(stat, xp, rows, len(g.positions)))
        summary = (
            _concat(summaries, axis=2)
            if summaries
            else xp.zeros((rows, self.n_strands, 0), dtype=xp.float64, device=_device(pred))
        )
        perbin = None
        if index.bins is not None and len(plan.bin_positions):
            drawn = index.bins[:, index.resolutions.index(head.resolution_bp)]
            perbin = self._gather(pred, drawn, cols("bins", plan.bin_columns), xp)
        genes = None
        if plan.genes:
            gcols = cols("genes", self.gene_columns)
            gene_bins = None
            if index.bins is not None:
                assert index.gene_bins is not None
                gene_bins = self._gather(pred, index.gene_bins, gcols, xp)
            genes = (gene_bins, self._gene_sums(pred, index.slots, gcols, xp))
        return summary, perbin, genes

    def _on_device(self, key: tuple[Any, ...], values: np.ndarray, like: Any) -> Any:
        """An index array on ``like``'s device, copied there once per statistics object."""
        full = (*key, str(getattr(like, "device", "cpu")), type(like).__name__)
        if full not in self._device_indices:
            self._device_indices[full] = asarray_like(np.asarray(values, np.int64), like)
        return self._device_indices[full]

    def _by_strand(self, stat: Any, xp: Any, rows: int, n: int) -> Any:
        """``(rows, cols)`` or ``(rows, cols, strands)`` → ``(rows, S, cols)``, NaN-padded."""
        stat = stat[:, None, :] if stat.ndim == 2 else xp.permute_dims(stat, (0, 2, 1))
        return _pad_strands(stat, self.n_strands, xp)

    def _gather(self, pred: Any, drawn: np.ndarray, columns: Any, xp: Any) -> Any:
        """Values at the drawn bins ``(rows, k)`` → ``(rows, S, k, cols)`` float32.

        A bin not drawn (-1) reads bin 0 here; :meth:`place` blanks it on the host.
        """
        rows, k = drawn.shape
        safe = np.where(drawn >= 0, drawn, 0).astype(np.int64)
        row_idx = np.broadcast_to(np.arange(rows, dtype=np.int64)[:, None], (rows, k))
        if isinstance(columns, slice):  # select the columns first: a view
            pred, columns = pred[:, :, columns, ...], None
        vals = pred[asarray_like(np.ascontiguousarray(row_idx), pred), asarray_like(safe, pred)]
        if columns is not None:
            vals = xp.take(vals, columns, axis=2)  # (rows, k, cols[, S])
        vals = vals[:, None, ...] if vals.ndim == 3 else xp.permute_dims(vals, (0, 3, 1, 2))
        return xp.astype(_pad_strands(vals, self.n_strands, xp), xp.float32)

    def _gene_sums(self, pred: Any, slots: list[GeneSlot], columns: Any, xp: Any) -> Any:
        """Mean over each slot's exon bins, ``(slots, gene tracks)`` float64.

        Two ways to the same sums, each used on the device it suits (``exon_sums``):
        ``"gather"`` (accelerators) copies every slot's exon rows in one gather and sums
        each slot's rows in one float64 reduction, a few kernels a block;
        ``"ranges"`` (host memory) sums each run of consecutive bins of a slot on a view
        of the head and adds the runs in order: no copy, which matters when the exons of
        a 1 Mb window are most of it. The grouping of the float64 sum differs, so the two
        agree within float32 rounding of the record (the stated 1-ulp tolerance), and
        each is deterministic: a slot's value depends on its bins alone.
        """
        n_cols = (
            columns.stop - columns.start if isinstance(columns, slice) else int(columns.shape[0])
        )
        if not slots:
            return xp.zeros((0, n_cols), dtype=xp.float64, device=_device(pred))
        way = self.exon_sums
        if way == "auto":
            way = "gather" if is_accelerated(pred) else "ranges"
        if way == "ranges":
            head = pred[:, :, columns] if isinstance(columns, slice) else pred

            def mean(s: GeneSlot) -> Any:
                total: Any = None
                for a, b in _bin_runs(s.bins):
                    run = head[s.batch_row, a:b]
                    if not isinstance(columns, slice):
                        run = xp.take(run, columns, axis=1)
                    part = xp.sum(run, axis=0, dtype=xp.float64)
                    total = part if total is None else total + part
                return total / len(s.bins)

            work = sum(len(s.bins) for s in slots) * n_cols
            if work < _PARALLEL_EXON_VALUES or not is_numpy_array(pred):
                return xp.stack([mean(s) for s in slots])
            # a 1 Mb window's exons: the sums release the GIL, so the host's cores share
            # the slots (each slot's value is its own: the split changes no bit)
            return xp.stack(list(_host_pool().map(mean, slots)))
        rows = np.concatenate([np.full(len(s.bins), s.batch_row, np.int64) for s in slots])
        bins = np.concatenate([s.bins for s in slots]).astype(np.int64)
        if isinstance(columns, slice):  # a view of the columns, then only the exon rows
            exons = pred[:, :, columns][asarray_like(rows, pred), asarray_like(bins, pred)]
        else:
            exons = xp.take(
                pred[asarray_like(rows, pred), asarray_like(bins, pred)], columns, axis=1
            )
        bounds = np.cumsum([0] + [len(s.bins) for s in slots])
        means = [
            xp.sum(exons[int(a) : int(b)], axis=0, dtype=xp.float64) / int(b - a)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        return xp.stack(means)

    # ------------------------------------------------------------------------------
    # on the host
    # ------------------------------------------------------------------------------
    def place(
        self, records: Records, index: BlockIndex, labels: list[str]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Host records → ``(summary (rows, S, n) f64, perbin (rows, S, k, n) f32 | None,
        gene means (slots, n) f64)`` in track order, NaN where nothing was taken.

        Raises :class:`PredictionError` naming the first non-finite (or, for a log-ratio
        track, negative) record of the block.
        """
        rows = index.rows
        summary = np.full((rows, self.n_strands, self.n), np.nan)
        summary[:, :, self.summary_order] = records.summary[:rows]
        valid = np.broadcast_to(self._strand_mask(), summary.shape).copy()
        valid[:, :, self.gene_positions] = False
        summary[~valid] = np.nan
        self._refuse(summary, valid, labels, "window statistic")
        perbin = None
        if index.bins is not None:
            assert index.gene_bins is not None
            k = index.bins.shape[2]
            perbin = np.full((rows, self.n_strands, k, self.n), np.nan, dtype=np.float32)
            if records.perbin is not None:
                perbin[..., self.perbin_order] = records.perbin[:rows]
            strands = self._strand_mask()[None, :, None, :]
            drawn = self._sampled(index.bins[:rows], index.gene_bins[:rows], index.resolutions)
            keep = strands & drawn
            perbin[~np.broadcast_to(keep, perbin.shape)] = np.nan
            self._refuse(perbin, keep, labels, "sampled bins")
        genes = np.full((len(index.slots), self.n), np.nan)
        if len(self.gene_positions) and index.slots:
            genes[:, self.gene_positions] = records.genes
            gvalid = np.zeros(genes.shape, bool)
            gvalid[:, self.gene_positions] = True
            self._refuse(genes, gvalid, [labels[s.batch_row] for s in index.slots], "exon mean")
        return summary, perbin, genes

    def records_of(
        self, preds: Mapping[str, Any], index: BlockIndex, labels: list[str]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:meth:`block_records` then :meth:`place`, for predictions already on the host."""
        rec = self.block_records(preds.items(), index)
        host = Records(*(None if a is None else np.asarray(a) for a in rec))
        return self.place(host, index, labels)

    def gene_means(
        self, preds: Mapping[str, Any], slots: list[GeneSlot], labels: list[str]
    ) -> np.ndarray:
        """Mean over each (row, gene)'s exon bins, ``(len(slots), n)`` f64 in ``slots`` order.

        A bin listed twice in a slot's ``bins`` counts twice, in the sum and the count.
        Tracks other than ``gene_expression`` are NaN.
        """
        rows = next(iter(preds.values())).shape[0]
        res = sorted({h.resolution_bp for h in self.heads.values()})
        return self.records_of(preds, BlockIndex(rows, res, slots=slots), labels)[2]

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

    def _sampled(
        self, bin_index: np.ndarray, gene_bins: np.ndarray, resolutions: list[int]
    ) -> np.ndarray:
        """(batch, 1, bin_samples, n): True where a bin was drawn for the track."""
        batch, _, k = bin_index.shape
        drawn = np.zeros((batch, 1, k, self.n), dtype=bool)
        for p in self.plans:
            if len(p.bin_positions):
                d = bin_index[:, resolutions.index(p.head.resolution_bp)] >= 0
                drawn[:, 0][:, :, p.bin_positions] = d[:, :, None]
        if len(self.gene_positions):
            drawn[:, 0][:, :, self.gene_positions] = (gene_bins >= 0)[:, :, None]
        return drawn

    def effects(
        self,
        ref: np.ndarray,
        alt: np.ndarray,
        labels: list[str],
        tracks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Signed effect by each track's formula along the last axis (float64).

        Records not sampled (NaN in both alleles) stay NaN; any other non-finite effect
        (a log-ratio of a negative prediction) is refused. ``tracks`` (positions among the
        selected tracks) limits the work to the tracks that can have records there (the
        per-gene records of ``gene_expression`` tracks, the others'); the rest are NaN.
        """
        out = np.full(np.broadcast_shapes(ref.shape, alt.shape), np.nan)
        for formula, pc, pos in self.formula_groups:
            if tracks is not None:
                pos = np.intersect1d(pos, tracks)
            if len(pos):
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


def _device(x: Any) -> Any:
    return getattr(x, "device", None)


#: exon values (bins x gene tracks) of a block above which host sums use every core
_PARALLEL_EXON_VALUES = 20_000_000
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _host_pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            workers = max(1, min(8, os.cpu_count() or 1))
            _POOL.append(ThreadPoolExecutor(workers, thread_name_prefix="chorus-store-exons"))
        return _POOL[0]


def _bin_runs(bins: np.ndarray) -> list[tuple[int, int]]:
    """``bins`` as runs of consecutive bins ``[(start, stop), ...]``, in order."""
    cuts = np.flatnonzero(np.diff(bins) != 1) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(bins)]])
    return [(int(bins[a]), int(bins[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def _select(xp: Any, x: Any, columns: Any, axis: int) -> Any:
    """``x``'s ``columns`` (a slice: a view; an index array: a gather) along ``axis``."""
    if isinstance(columns, slice):
        return x[(slice(None),) * axis + (columns,)]
    return xp.take(x, columns, axis=axis)


def _concat(parts: list[Any], axis: int) -> Any:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return namespace(parts[0]).concat(parts, axis=axis)


def _pad_strands(x: Any, n_strands: int, xp: Any) -> Any:
    """Pad axis 1 (strands) of ``x`` with NaN up to ``n_strands``."""
    have = x.shape[1]
    if have >= n_strands:
        return x
    pad = xp.full(
        (x.shape[0], n_strands - have, *x.shape[2:]), float("nan"), dtype=x.dtype, device=_device(x)
    )
    return xp.concat([x, pad], axis=1)
