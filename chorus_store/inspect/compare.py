"""Compare two backgrounds (NPZ exports or reduced stores) track by track.

The quantities, and their names, are those chorus's maintainers compute by hand before
swapping a rebuilt background in (its ``scripts/verify_rebuilt_backgrounds.py`` and
``scripts/rebuild_before_after_table.py``); the KS distance per track is added.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from chorus_store.errors import InputFileError, UsageError
from chorus_store.reduce import active_layers, require_reduced
from chorus_store.reports import CompareReport, GateFinding, LayerComparison
from chorus_store.store.core import LAYERS, ChorusStore
from chorus_store.store.progress import require_complete
from chorus_store.store.schema import schema

__all__ = [
    "GATES",
    "STATS",
    "Nulls",
    "load_nulls",
    "track_stats",
    "ks_distance",
    "compare",
    "compare_nulls",
    "check_gates",
]

#: The per-track statistics of ``|grid|`` compared, as chorus's scripts name them.
STATS = ("p50", "p90", "p99", "max")
#: The gates ``compare`` can apply (``--fail-if``).
GATES = ("body-moves", "ceiling-falls")
#: A ceiling "rose" when B's max exceeds A's by more than this factor (chorus's 1.001).
_HIGHER_CEILING = 1.001
#: Below this many compared tracks a median of per-track maxima is one or two draws of an
#: extreme order statistic: the max part of ``ceiling-falls`` only advises (chorus's
#: ``MIN_TRACKS_FOR_CEILING_GATE``).
CEILING_MIN_TRACKS = 25
#: rows of grids whose quantiles are taken at once (bounds the float64 copy)
_BLOCK_ROWS = 1024
#: where each plan set's strata are, in a store's plan (first) or an NPZ's build_config
_STRATA_KEYS = {
    "positions": ("position_strata", "activity_strata"),
    "variants": ("variant_strata", "effect_strata"),
}


@dataclass(frozen=True)
class Nulls:
    """One background's per-track nulls, as an NPZ holds them, from an NPZ or a store.

    ``cdfs[layer]`` is ``(tracks, grid width)``, ``counts[layer]`` the offered counts;
    ``strata[layer]`` maps each stratum of the layer's plan set (variants for effect,
    positions for summary and perbin) to its counts (``planned``, and ``usable`` and
    ``rejected_<reason>`` where recorded); empty when the file does not record them.
    """

    source: str
    oracle: str
    track_ids: tuple[str, ...]
    track_layers: tuple[str, ...]
    signed: np.ndarray
    cdfs: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    strata: dict[str, dict[str, dict[str, int]]]

    @property
    def layers(self) -> tuple[str, ...]:
        """The null layers present, in chorus's order."""
        return tuple(x for x in LAYERS if x in self.cdfs)


def load_nulls(source: str | Path) -> Nulls:
    """The nulls of ``source``: an ``{oracle}_pertrack.npz`` (a path ending ``.npz``), or a
    store (a directory or URL) whose reductions are read as ``chorus-store export`` reads
    them, without writing a file.

    Raises
    ------
    InputFileError
        The NPZ is missing or is not a background.
    IncompleteStageError
        The store is not fully built and reduced.
    """
    if str(source).endswith(".npz"):
        return _from_npz(Path(source))
    return _from_store(source)


def _strata(found: dict[str, Any], layer: str) -> dict[str, dict[str, int]]:
    """The layer's strata from a plan or a build_config block (planned-only or full)."""
    for key in _STRATA_KEYS[schema().layer_group(layer).plan_name]:
        block = found.get(key)
        if isinstance(block, dict):
            full = {s: c if isinstance(c, dict) else {"planned": c} for s, c in block.items()}
            return {str(s): {k: int(v) for k, v in c.items()} for s, c in full.items()}
    return {}


def _from_npz(path: Path) -> Nulls:
    what = "pass an {oracle}_pertrack.npz (chorus-store export writes one) or a reduced store"
    if not path.is_file():
        raise InputFileError(f"{path}: no such file; {what}")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            layers = [x for x in LAYERS if f"{x}_cdfs" in files]
            ids = tuple(str(t) for t in z["track_ids"])
            cdfs = {x: np.asarray(z[f"{x}_cdfs"]) for x in layers}
            counts = {x: np.asarray(z[f"{x}_counts"]).astype(np.int64) for x in layers}
            signed = z["signed_flags"].astype(bool) if "signed_flags" in files else None
            per_row = z["layers_per_row"] if "layers_per_row" in files else None
            cfg = json.loads(str(z["build_config"][0])) if "build_config" in files else {}
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"{path} is not a readable background ({exc}); {what}") from None
    if not layers:
        raise InputFileError(f"{path} holds no effect/summary/perbin grids; {what}")
    found = {**cfg.get("reference_sets", {}), **cfg.get("chorus_store", {})}
    return Nulls(
        source=str(path),
        oracle=str(cfg.get("oracle", path.name.removesuffix("_pertrack.npz"))),
        track_ids=ids,
        track_layers=tuple(str(x) for x in per_row) if per_row is not None else ("",) * len(ids),
        signed=signed if signed is not None else np.zeros(len(ids), dtype=bool),
        cdfs=cdfs,
        counts=counts,
        strata={x: _strata(found, x) for x in layers},
    )


def _from_store(source: str | Path) -> Nulls:
    store = ChorusStore.open(source)
    store.validate()
    require_complete(store)
    require_reduced(store)
    layers = active_layers(store)
    tracks = store.tracks
    plan = store.attrs["plan"]
    return Nulls(
        source=store.url,
        oracle=str(store.attrs["oracle"]["name"]),
        track_ids=tuple(str(t) for t in tracks.track_ids),
        track_layers=tuple(str(x) for x in tracks.layers),
        signed=np.asarray(tracks.signed, dtype=bool),
        cdfs={x: store.read(f"reductions/{x}/grid").astype(np.float32) for x in layers},
        counts={x: store.read(f"reductions/{x}/offered").astype(np.int64) for x in layers},
        strata={x: _strata(plan, x) for x in layers},
    )


def track_stats(cdfs: np.ndarray) -> dict[str, np.ndarray]:
    """Per track (row), p50, p90, p99 (``np.quantile``, linear) and max of ``|grid|``:
    chorus's ``_stats``, vectorised."""
    out = {k: np.empty(len(cdfs)) for k in STATS}
    for start in range(0, len(cdfs), _BLOCK_ROWS):
        block = np.abs(np.asarray(cdfs[start : start + _BLOCK_ROWS], dtype=np.float64))
        if not len(block):
            continue
        q = np.quantile(block, [0.5, 0.9, 0.99], axis=1)
        rows = slice(start, start + len(block))
        out["p50"][rows], out["p90"][rows], out["p99"][rows] = q
        out["max"][rows] = block.max(axis=1)
    return out


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov distance ``sup_x |F_a(x) - F_b(x)|`` between the
    empirical CDFs of two grids (each a sample of its null's quantiles).

    Both step functions are right-continuous and jump only at their own values, so the
    supremum is attained at one of the values of either grid: both CDFs are evaluated on
    the union (``scipy.stats.ks_2samp(a, b).statistic`` on the grids is the same number).

    >>> ks_distance(np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0, 5.0]))
    0.5
    """
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if not len(a) or not len(b):
        raise UsageError("a KS distance needs two non-empty grids")
    union = np.concatenate([a, b])
    fa = np.searchsorted(a, union, side="right") / len(a)
    fb = np.searchsorted(b, union, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _compare_layer(layer: str, a: Nulls, b: Nulls, ids: Sequence[str]) -> LayerComparison:
    """Tracks ``ids`` (in both) of ``layer``: ratios B/A and KS, zero-count tracks aside."""
    rows_a = {t: i for i, t in enumerate(a.track_ids)}
    rows_b = {t: i for i, t in enumerate(b.track_ids)}
    ia = np.array([rows_a[t] for t in ids], dtype=np.int64)
    ib = np.array([rows_b[t] for t in ids], dtype=np.int64)
    live = (a.counts[layer][ia] > 0) & (b.counts[layer][ib] > 0)
    kept = tuple(t for t, ok in zip(ids, live, strict=True) if ok)
    grids_a, grids_b = a.cdfs[layer][ia[live]], b.cdfs[layer][ib[live]]
    stats_a, stats_b = track_stats(grids_a), track_stats(grids_b)
    ratios = {}
    for k in STATS:
        ratio = np.full(len(kept), np.nan)
        # a track whose A statistic is 0 has no ratio (chorus's scripts skip it too)
        np.divide(stats_b[k], stats_a[k], out=ratio, where=stats_a[k] > 0)
        ratios[k] = ratio
    ks = np.array([ks_distance(x, y) for x, y in zip(grids_a, grids_b, strict=True)])
    return LayerComparison(
        layer=layer,
        track_ids=kept,
        ratios=ratios,
        ks=ks.reshape(len(kept)),
        higher_ceiling=stats_b["max"] > stats_a["max"] * _HIGHER_CEILING,
        excluded_zero_counts=tuple(t for t, ok in zip(ids, live, strict=True) if not ok),
    )


def compare_nulls(
    a: Nulls,
    b: Nulls,
    *,
    fail_if: Iterable[str] = (),
    body_ratio: float = 1.25,
    ceiling_ratio: float = 1.25,
    ceiling_min_tracks: int = CEILING_MIN_TRACKS,
) -> CompareReport:
    """:func:`compare` of two loaded backgrounds."""
    in_b = set(b.track_ids)
    in_a = set(a.track_ids)
    common = [t for t in a.track_ids if t in in_b]
    layers = {layer: _compare_layer(layer, a, b, common) for layer in a.layers if layer in b.cdfs}
    report = CompareReport(
        a=a.source,
        b=b.source,
        layers=layers,
        tracks_only_in_a=tuple(t for t in a.track_ids if t not in in_b),
        tracks_only_in_b=tuple(t for t in b.track_ids if t not in in_a),
        layers_only_in_a=tuple(x for x in a.layers if x not in b.cdfs),
        layers_only_in_b=tuple(x for x in b.layers if x not in a.cdfs),
        track_order_changed=[t for t in b.track_ids if t in in_a] != common,
    )
    gates = check_gates(
        report,
        fail_if,
        body_ratio=body_ratio,
        ceiling_ratio=ceiling_ratio,
        ceiling_min_tracks=ceiling_min_tracks,
    )
    return dataclasses.replace(report, gates=gates)


def compare(
    a: str | Path,
    b: str | Path,
    *,
    fail_if: Iterable[str] = (),
    body_ratio: float = 1.25,
    ceiling_ratio: float = 1.25,
    ceiling_min_tracks: int = CEILING_MIN_TRACKS,
) -> CompareReport:
    """Compare background ``b`` against ``a`` (each an NPZ or a reduced store), by track id.

    Per layer and per track present in both with samples in both: the ratios B/A of p50,
    p90, p99 and max of ``|grid|`` (:func:`track_stats`), and the KS distance between
    the two grids (:func:`ks_distance`). Each layer is summarised by the **median of the
    per-track ratios** (never the ratio of the medians, which flatters: chorus measured
    1.37 against a true 1.174), the share of tracks whose ceiling rose, and the tracks
    that moved most by KS. Tracks with a zero count in either file have no ratios and are
    listed apart; a track whose A statistic is 0 has no ratio for that statistic.

    Parameters
    ----------
    fail_if
        Gates to apply (:data:`GATES`); their outcomes are ``report.gates`` and
        ``report.failures``, and ``chorus-store compare --fail-if`` exits 1 on a failure.
        ``body-moves``: a layer's median p50 ratio outside ``[1/body_ratio, body_ratio]``.
        ``ceiling-falls``: a layer's median p99 or max ratio below ``1/ceiling_ratio``;
        with fewer than ``ceiling_min_tracks`` compared tracks the max only advises
        (chorus's rule: a median of a few maxima cannot carry a gate).

    Examples
    --------
    >>> r = compare("old/enformer_pertrack.npz", "new/enformer_pertrack.npz")  # doctest: +SKIP
    >>> r.layers["effect"].median_ratio["p50"]  # doctest: +SKIP
    1.002
    """
    return compare_nulls(
        load_nulls(a),
        load_nulls(b),
        fail_if=fail_if,
        body_ratio=body_ratio,
        ceiling_ratio=ceiling_ratio,
        ceiling_min_tracks=ceiling_min_tracks,
    )


def check_gates(
    report: CompareReport,
    fail_if: Iterable[str],
    *,
    body_ratio: float = 1.25,
    ceiling_ratio: float = 1.25,
    ceiling_min_tracks: int = CEILING_MIN_TRACKS,
) -> tuple[GateFinding, ...]:
    """The outcome of each gate in ``fail_if`` on each layer of ``report`` (see
    :func:`compare`). A layer of A missing from B fails every gate; a layer with no
    comparable track fails (nothing can be judged)."""
    gates = tuple(dict.fromkeys(fail_if))
    unknown = [g for g in gates if g not in GATES]
    if unknown:
        raise UsageError(f"unknown gate(s) {unknown}; use one of {list(GATES)}")
    for name, value in (("body_ratio", body_ratio), ("ceiling_ratio", ceiling_ratio)):
        if not value >= 1:
            raise UsageError(f"{name} must be >= 1 (a factor either way), got {value}")
    findings: list[GateFinding] = []
    for gate in gates:
        for layer in report.layers_only_in_a:
            findings.append(GateFinding(gate, layer, "fail", f"{layer}: in A, absent from B"))
        for lc in report.layers.values():
            if gate == "body-moves":
                findings.append(_body_gate(lc, body_ratio))
            else:
                findings += _ceiling_gate(lc, ceiling_ratio, ceiling_min_tracks)
    return tuple(findings)


def _body_gate(lc: LayerComparison, tolerance: float) -> GateFinding:
    r = lc.median_ratio["p50"]
    lo, hi = 1 / tolerance, tolerance
    n = len(lc.track_ids)
    if np.isnan(r):
        return GateFinding("body-moves", lc.layer, "fail", f"{lc.layer}: no track to compare")
    moved = not lo <= r <= hi
    verb = "moved" if moved else "held"
    return GateFinding(
        "body-moves",
        lc.layer,
        "fail" if moved else "pass",
        f"{lc.layer}: the body {verb}: median per-track p50 ratio B/A {r:.3f} over {n} "
        f"tracks, {'outside' if moved else 'within'} [{lo:.3f}, {hi:.3f}]",
    )


def _ceiling_gate(lc: LayerComparison, tolerance: float, min_tracks: int) -> list[GateFinding]:
    floor = 1 / tolerance
    n = len(lc.track_ids)
    if not n:
        return [GateFinding("ceiling-falls", lc.layer, "fail", f"{lc.layer}: no track to compare")]
    out = []
    for stat in ("p99", "max"):
        r = lc.median_ratio[stat]
        fell = bool(r < floor)  # NaN (every A statistic 0): nothing fell
        outcome: Literal["pass", "fail", "advisory"] = "fail" if fell else "pass"
        note = ""
        if fell and stat == "max" and n < min_tracks:
            outcome, note = "advisory", f" (only {n} tracks, < {min_tracks}: advisory)"
        out.append(
            GateFinding(
                "ceiling-falls",
                lc.layer,
                outcome,
                f"{lc.layer}: the ceiling {'fell' if fell else 'held'}: median per-track "
                f"{stat} ratio B/A {r:.3f} over {n} tracks, "
                f"{'below' if fell else 'at or above'} {floor:.3f}{note}",
            )
        )
    return out
