"""``chorus-store report``: one self-contained HTML page showing a background's nulls.

Plots are inline base64 PNGs drawn by matplotlib's Agg canvas and the CSS is inline, so
the file opens anywhere with no server and no network; :func:`qc_flags` states the rules.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chorus_store._version import __version__
from chorus_store.errors import MissingDependencyError, UsageError, WriteError, os_reason
from chorus_store.inspect.compare import Nulls, compare_nulls, load_nulls, track_stats
from chorus_store.reports import CompareReport, HtmlReport, LayerComparison

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FLAG_REASONS", "QcRules", "TrackFlag", "qc_flags", "report"]

#: Why a track is flagged, in the order the rules are tried.
FLAG_REASONS = ("empty", "zero", "degenerate", "ties", "outlier")
#: A robust z's scale never below this many decades (identical tracks do not make every
#: small difference infinitely far).
_MAD_FLOOR_DECADES = 0.01
_MISSING_MATPLOTLIB = 'the report needs matplotlib: pip install "chorus-store[report]"'


@dataclass(frozen=True)
class QcRules:
    """The thresholds of :func:`qc_flags`."""

    tiny: float = 1e-12
    tie_fraction: float = 0.05
    min_distinct: int = 3
    outlier_z: float = 5.0
    min_fold: float = 2.0
    min_group: int = 5


@dataclass(frozen=True)
class TrackFlag:
    """One flagged track of one layer: why (a :data:`FLAG_REASONS` entry) and the numbers."""

    layer: str
    track_id: str
    track_layer: str
    reason: str
    detail: str


def _longest_run(row: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of equal values in a sorted row."""
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    lengths = np.diff(np.r_[starts, len(row)])
    k = int(np.argmax(lengths))
    return int(starts[k]), int(lengths[k])


def _tie_detail(row: np.ndarray, start: int, length: int, signed: bool) -> str:
    """How much of the grid one value holds, and the percentiles a value there can get."""
    width = len(row)
    value = float(row[start])
    lo = int(np.searchsorted(row, value, side="left"))
    hi = int(np.searchsorted(row, value, side="right"))
    q_lo, q_hi = lo / width, min(hi / width, 1.0)
    if signed:
        q_lo, q_hi = 2 * q_lo - 1, 2 * q_hi - 1
    return (
        f"{length / width:.1%} of the grid equals {value:.6g}: a value there ranks "
        f"anywhere in [{q_lo:.2f}, {q_hi:.2f}]"
    )


def _row_flag(row: np.ndarray, count: int, signed: bool, rules: QcRules) -> tuple[str, str] | None:
    """The first of empty / zero / degenerate / ties that ``row`` meets, with its detail."""
    if count <= 0:
        return "empty", "no samples (count 0)"
    peak = float(np.max(np.abs(row)))
    if peak < rules.tiny:
        return "zero", f"every grid value is 0 (|value| <= {peak:.3g}) over {count:,} samples"
    distinct = int(np.unique(row).size)
    if distinct < rules.min_distinct:
        what = f"constant at {float(row[0]):.6g}" if distinct == 1 else f"{distinct} values"
        return "degenerate", f"{what} over {count:,} samples"
    start, length = _longest_run(row)
    if length / len(row) >= rules.tie_fraction:
        return "ties", _tie_detail(row, start, length, signed)
    return None


def _robust_z(x: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD), the MAD floored at :data:`_MAD_FLOOR_DECADES`."""
    med = np.median(x)
    mad = max(1.4826 * float(np.median(np.abs(x - med))), _MAD_FLOOR_DECADES)
    z: np.ndarray = (x - med) / mad
    return z


def _outliers(
    nulls: Nulls, layer: str, rows: np.ndarray, rules: QcRules
) -> dict[int, tuple[str, str]]:
    """Rows (of ``rows``) whose log10 median or p99 of ``|grid|`` is far from their track
    layer's others: ``{row: ("outlier", detail)}``."""
    stats = track_stats(nulls.cdfs[layer][rows])
    groups: dict[str, list[int]] = {}
    for j, i in enumerate(rows):
        groups.setdefault(nulls.track_layers[i], []).append(j)
    found: dict[int, tuple[str, str]] = {}
    for group, members in groups.items():
        for stat in ("p50", "p99"):
            values = stats[stat][members]
            scored = [m for m, v in zip(members, values, strict=True) if v > 0]
            if len(scored) < rules.min_group:
                continue
            logs = np.log10(stats[stat][scored])
            z, fold = _robust_z(logs), 10 ** (logs - np.median(logs))
            far = (np.abs(z) > rules.outlier_z) & (np.maximum(fold, 1 / fold) >= rules.min_fold)
            for m, zm, times in zip(np.array(scored)[far], z[far], fold[far], strict=True):
                if int(rows[m]) not in found:
                    found[int(rows[m])] = (
                        "outlier",
                        f"{stat} of |grid| {stats[stat][m]:.4g} is {times:.3g}x the median "
                        f"of its {len(scored)} {group or 'unlabelled'} tracks "
                        f"(robust z {zm:+.1f} on log10)",
                    )
    return found


def qc_flags(nulls: Nulls, rules: QcRules | None = None) -> list[TrackFlag]:
    """The tracks of each layer worth a look, with the reason.

    Tried in order, the first rule met flags the track:

    * ``empty``: count 0 (no samples);
    * ``zero``: every grid value has ``|value| < tiny``;
    * ``degenerate``: fewer than ``min_distinct`` distinct grid values (constant);
    * ``ties``: one value fills at least ``tie_fraction`` of the grid. chorus spreads a
      value equal to it over the whole run (a hashed rank, :func:`~chorus_store.inspect.
      query.tie_rank`), so the detail gives the percentile interval it can rank to
      (``2q - 1`` on signed tracks).

    Then, among the tracks not flagged empty, zero or degenerate, ``outlier``: the log10 of
    the track's median or p99 of ``|grid|`` is more than ``outlier_z`` robust z away from
    those of the other tracks of the same track layer (``layers_per_row``) in that null,
    ``z = (x - median) / (1.4826 MAD)``, the MAD floored at 0.01 decades, and at least
    ``min_fold`` times (or 1/``min_fold`` of) their median; a track layer with fewer than
    ``min_group`` positive values is not scored on that statistic.
    """
    rules = rules or QcRules()
    flags: list[TrackFlag] = []
    for layer in nulls.layers:
        found: dict[int, tuple[str, str]] = {}
        grids, counts = nulls.cdfs[layer], nulls.counts[layer]
        signed = nulls.signed & (layer == "effect")
        for i in range(len(nulls.track_ids)):
            flag = _row_flag(grids[i], int(counts[i]), bool(signed[i]), rules)
            if flag is not None:
                found[i] = flag
        live = np.array(
            [i for i in range(len(nulls.track_ids)) if found.get(i, ("ties",))[0] == "ties"],
            dtype=np.int64,
        )
        for i, flag in _outliers(nulls, layer, live, rules).items():
            if i not in found:
                found[i] = flag
        flags += [
            TrackFlag(layer, nulls.track_ids[i], nulls.track_layers[i], *found[i])
            for i in sorted(found)
        ]
    return flags


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------


def _require_matplotlib() -> None:
    """Refuse, in one line naming the extra, where matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(_MISSING_MATPLOTLIB) from exc


def _figure(width: float, height: float) -> Figure:
    """A matplotlib figure on the Agg canvas (no pyplot, no display)."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, alt: str) -> str:
    """The figure as an inline ``<img>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _sample_rows(nulls: Nulls, layer: str, n: int, seed: int) -> np.ndarray:
    """``n`` rows with samples, drawn with ``seed`` (the same tracks for the same seed)."""
    live = np.flatnonzero(nulls.counts[layer] > 0)
    if len(live) <= n:
        return live
    picked: np.ndarray = np.sort(np.random.default_rng(seed).choice(live, n, replace=False))
    return picked


def _curve(grid: np.ndarray, points: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """A grid as (value, quantile), thinned to ``points`` evenly spaced quantiles (first
    and last kept): a plot needs no more, and draws ten times faster."""
    idx = np.unique(np.linspace(0, len(grid) - 1, min(points, len(grid))).astype(int))
    return grid[idx], idx / max(len(grid) - 1, 1)


def _cdf_plot(nulls: Nulls, layer: str, rows: np.ndarray, other: Nulls | None = None) -> str:
    fig = _figure(9, 4.2)
    ax = fig.add_subplot()
    grids = nulls.cdfs[layer]
    other_rows = {t: i for i, t in enumerate(other.track_ids)} if other is not None else {}
    for i in rows:
        (line,) = ax.plot(*_curve(grids[i]), lw=1.2, label=nulls.track_ids[i])
        j = other_rows.get(nulls.track_ids[i])
        if other is not None and j is not None and other.counts[layer][j] > 0:
            ax.plot(*_curve(other.cdfs[layer][j]), lw=1.2, ls="--", color=line.get_color())
    ax.set_xlabel(f"{layer} value")
    ax.set_ylabel("quantile")
    if other is not None:
        ax.set_title("solid: A, dashed: B")
    if len(rows):
        ax.legend(fontsize=7, ncol=2 if len(rows) > 8 else 1, loc="lower right")
    return _png(fig, f"{layer}: CDFs of {len(rows)} tracks")


def _hist_panels(
    panels: Sequence[tuple[str, np.ndarray]], xlabel: str, alt: str, *, log: bool
) -> str:
    """One histogram per (title, values), side by side; positive values on log10 when
    ``log``."""
    fig = _figure(3.2 * max(len(panels), 1), 3.0)
    for k, (title, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        v = values[np.isfinite(values)]
        if log:
            v = np.log10(v[v > 0])
        if len(v):
            ax.hist(v, bins=min(40, max(5, len(v) // 2)), color="#4477aa")
        ax.set_title(title)
        ax.set_xlabel(f"log10 {xlabel}" if log else xlabel)
    ax_count = fig.axes[0] if fig.axes else None
    if ax_count is not None:
        ax_count.set_ylabel("tracks")
    return _png(fig, alt)


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #4477aa; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #eef2f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flag-empty td, tr.flag-zero td { background: #fde2e2; }
tr.flag-degenerate td, tr.flag-outlier td { background: #fff1d6; }
tr.flag-ties td { background: #eef6e8; }
.meta { color: #555; } img { max-width: 100%; display: block; margin: .5em 0; }
nav a { margin-right: 1em; } code { background: #f4f4f4; padding: 0 .2em; }
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if isinstance(c, int | float) else f"<td>{_e(c)}</td>"
            for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _strata_html(nulls: Nulls, layer: str) -> str:
    strata = nulls.strata.get(layer) or {}
    if not strata:
        return "<p>Counts per stratum: not recorded in this file.</p>"
    rows = []
    for name, c in strata.items():
        why = {k.removeprefix("rejected_"): v for k, v in c.items() if k.startswith("rejected_")}
        rejected = ", ".join(f"{k} {v:,}" for k, v in why.items())
        rows.append([name, c.get("planned", ""), c.get("usable", ""), rejected or "-"])
    return _table(["stratum", "planned", "usable", "rejected"], rows, "strata")


def _qc_html(flags: Sequence[TrackFlag]) -> str:
    if not flags:
        return "<p>No track flagged.</p>"
    head = "".join(f"<th>{h}</th>" for h in ("track", "track layer", "reason", "detail"))
    rows = "".join(
        f'<tr class="flag flag-{_e(f.reason)}"><td>{_e(f.track_id)}</td>'
        f"<td>{_e(f.track_layer)}</td><td>{_e(f.reason)}</td><td>{_e(f.detail)}</td></tr>"
        for f in flags
    )
    return f'<table class="qc"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _fmt(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.3f}"


def _compare_html(lc: LayerComparison, a: Nulls, b: Nulls, top: int) -> str:
    med = lc.median_ratio
    parts = [
        "<h3>Compared: B against A</h3>",
        _table(
            ["tracks", "p50", "p90", "p99", "max", "higher ceiling", "KS median", "KS max"],
            [
                [
                    len(lc.track_ids),
                    *(_fmt(med[k]) for k in ("p50", "p90", "p99", "max")),
                    _fmt(lc.higher_ceiling_fraction),
                    _fmt(lc.ks_median),
                    _fmt(lc.ks_max),
                ]
            ],
            "compare",
        ),
        "<p>Medians of per-track ratios B/A of |grid| statistics; KS: sup |F_A - F_B| "
        "between a track's two grids.</p>",
    ]
    if len(lc.track_ids):
        parts.append(
            _hist_panels(
                [(f"{k} B/A", lc.ratios[k]) for k in ("p50", "p99", "max")],
                "ratio",
                f"{lc.layer}: per-track ratios B/A",
                log=True,
            )
        )
        moved = lc.top_moved(top)
        parts.append(
            _table(
                ["track (moved most)", "KS", "p50 B/A", "p99 B/A", "max B/A"],
                [
                    [lc.track_ids[i], f"{lc.ks[i]:.4f}"]
                    + [_fmt(float(lc.ratios[k][i])) for k in ("p50", "p99", "max")]
                    for i in moved
                ],
                "moved",
            )
        )
        rows_a = {t: i for i, t in enumerate(a.track_ids)}
        overlay = np.array([rows_a[lc.track_ids[i]] for i in moved[:4]], dtype=np.int64)
        parts.append(_cdf_plot(a, lc.layer, overlay, other=b))
    if lc.excluded_zero_counts:
        parts.append(
            f"<p>Left out (count 0 in A or B): {_e(', '.join(lc.excluded_zero_counts))}</p>"
        )
    return "".join(parts)


def _layer_html(
    nulls: Nulls,
    layer: str,
    flags: Sequence[TrackFlag],
    rows: np.ndarray,
    compared: tuple[CompareReport, Nulls, int] | None,
) -> str:
    counts = nulls.counts[layer]
    live = counts > 0
    stats = track_stats(nulls.cdfs[layer][live])
    lo, med, hi = np.percentile(counts, [0, 50, 100]).astype(int) if len(counts) else (0, 0, 0)
    parts = [
        f'<section class="layer" id="layer-{_e(layer)}"><h2>{_e(layer)}</h2>',
        f"<p>{len(counts)} tracks, {int(live.sum())} with samples; samples per track "
        f"{lo:,} to {hi:,} (median {med:,}); grid width {nulls.cdfs[layer].shape[1]:,}.</p>",
        "<h3>Counts per stratum</h3>",
        _strata_html(nulls, layer),
        f"<h3>CDFs of {len(rows)} sampled tracks</h3>",
        _cdf_plot(nulls, layer, rows),
        "<h3>Per-track median, p99 and max of |grid|, over tracks</h3>",
        _hist_panels(
            [("median", stats["p50"]), ("p99", stats["p99"]), ("max", stats["max"])],
            "|value|",
            f"{layer}: per-track median, p99, max",
            log=True,
        ),
        f"<h3>Flagged tracks ({len(flags)})</h3>",
        _qc_html(flags),
    ]
    if compared is not None:
        report, other, top = compared
        lc = report.layers.get(layer)
        parts.append(
            _compare_html(lc, nulls, other, top)
            if lc is not None
            else "<h3>Compared: B against A</h3><p>B has no such layer.</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _summary_html(nulls: Nulls, flags: Sequence[TrackFlag]) -> str:
    rows = []
    for layer in nulls.layers:
        mine = [f for f in flags if f.layer == layer]
        rows.append(
            [layer, len(nulls.track_ids), int((nulls.counts[layer] > 0).sum())]
            + [sum(f.reason == r for f in mine) for r in FLAG_REASONS]
        )
    return _table(["layer", "tracks", "with samples", *FLAG_REASONS], rows, "summary")


def _rules_html(rules: QcRules) -> str:
    return (
        "<section id='rules'><h2>QC rules</h2><ul>"
        "<li><b>empty</b>: count 0.</li>"
        f"<li><b>zero</b>: every grid value |v| &lt; {rules.tiny:g}.</li>"
        f"<li><b>degenerate</b>: fewer than {rules.min_distinct} distinct grid values.</li>"
        f"<li><b>ties</b>: one value fills at least {rules.tie_fraction:.0%} of the grid "
        "(chorus ranks a value equal to it anywhere in the run: the interval is given).</li>"
        f"<li><b>outlier</b>: log10 median or p99 of |grid| more than {rules.outlier_z:g} "
        "robust z (1.4826 MAD, floored at 0.01 decades) from the other tracks of its track "
        f"layer in this null, and at least {rules.min_fold:g}x (or 1/{rules.min_fold:g}) "
        f"their median (groups of at least {rules.min_group}).</li></ul></section>"
    )


def _render(
    nulls: Nulls,
    flags: Sequence[TrackFlag],
    rules: QcRules,
    sample: Callable[[str], np.ndarray],
    compared: tuple[CompareReport, Nulls, int] | None,
) -> str:
    title = f"Background report: {nulls.oracle}"
    nav = "".join(f'<a href="#layer-{_e(x)}">{_e(x)}</a>' for x in nulls.layers)
    extra = ""
    if compared is not None:
        report = compared[0]
        extra = (
            f"<p class='meta'>B: {_e(report.b)}; tracks only in A: "
            f"{_e(', '.join(report.tracks_only_in_a) or 'none')}; only in B: "
            f"{_e(', '.join(report.tracks_only_in_b) or 'none')}"
            + ("; the common tracks are in another order" if report.track_order_changed else "")
            + "</p>"
        )
    body = "".join(
        _layer_html(nulls, x, [f for f in flags if f.layer == x], sample(x), compared)
        for x in nulls.layers
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class='meta'>{'A: ' if compared else ''}{_e(nulls.source)}; "
        f"{len(nulls.track_ids)} tracks; written by chorus-store {_e(__version__)}</p>{extra}"
        f"<nav>{nav}<a href='#rules'>QC rules</a></nav>"
        f"<section id='summary'><h2>Flags per layer</h2>{_summary_html(nulls, flags)}</section>"
        f"{body}{_rules_html(rules)}</body></html>\n"
    )


def report(
    source: str | Path,
    *,
    out: str | Path = "report.html",
    tracks_per_layer: int = 12,
    seed: int = 0,
    compare: str | Path | None = None,
    top: int = 10,
    rules: QcRules | None = None,
) -> HtmlReport:
    """Write one self-contained HTML report of the background ``source`` (an NPZ or a
    reduced store) to ``out``.

    Per layer: the CDFs of ``tracks_per_layer`` tracks drawn with ``seed``, the
    distribution over tracks of each track's median, p99 and max of ``|grid|``, the counts
    per stratum (where the file records them) and the flagged tracks (:func:`qc_flags`).
    With ``compare`` (a second background, B), each layer adds the comparison of B
    against ``source`` (:func:`~chorus_store.inspect.compare.compare`): the ratio
    histograms, the ``top`` tracks that moved most, and their CDFs overlaid.

    Raises
    ------
    MissingDependencyError
        matplotlib is not installed (the ``report`` extra).
    """
    _require_matplotlib()  # before any work
    if tracks_per_layer < 0 or top < 0:
        raise UsageError("--tracks-per-layer and --top must be >= 0")
    rules = rules or QcRules()
    nulls = load_nulls(source)
    compared = None
    if compare is not None:
        other = load_nulls(compare)
        compared = (compare_nulls(nulls, other), other, top)
    flags = qc_flags(nulls, rules)
    page = _render(
        nulls,
        flags,
        rules,
        lambda layer: _sample_rows(nulls, layer, tracks_per_layer, seed),
        compared,
    )
    path = Path(out).expanduser()
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise WriteError(
            f"could not write {path}: {os_reason(exc)}; pass another -o/--out"
        ) from exc
    counts: dict[str, dict[str, int]] = {
        x: {r: sum(f.layer == x and f.reason == r for f in flags) for r in FLAG_REASONS}
        for x in nulls.layers
    }
    return HtmlReport(
        path=path,
        source=nulls.source,
        tracks=len(nulls.track_ids),
        flags=counts,
        compared_with=compared[1].source if compared else None,
    )
