"""What each stage returns: one dataclass per stage, all in one place.

``plan_store`` → :class:`PlanReport`, ``build`` → :class:`BuildReport`, ``reduce`` →
:class:`ReduceReport`, ``export`` → :class:`ExportReport`, ``status`` →
:class:`StatusReport`, ``verify`` → :class:`VerifyReport`, ``compare`` →
:class:`CompareReport`, ``report`` → :class:`HtmlReport`. The CLI prints them;
``to_dict()`` gives plain JSON-able data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from chorus_store.errors import UsageError
from chorus_store.store.core import DATA_GROUPS

__all__ = [
    "PlanReport",
    "BuildReport",
    "ReduceReport",
    "ExportReport",
    "StatusReport",
    "VerifyReport",
    "ArrayEstimate",
    "BuildTimeEstimate",
    "EstimateReport",
    "LayerComparison",
    "GateFinding",
    "CompareReport",
    "HtmlReport",
]


@dataclass(frozen=True)
class PlanReport:
    """What :func:`~chorus_store.plan_store` did: the store (``url``), whether it was
    written now (``created``) or an identical plan was found there, and the rows per
    stratum of ``positions`` and ``variants`` (``planned``, ``usable``, and one
    ``rejected_<reason>`` count per reason a window was refused)."""

    url: str
    created: bool
    positions: dict[str, dict[str, int]]
    variants: dict[str, dict[str, int]]

    @classmethod
    def from_plan(cls, url: str, plan: dict[str, Any], *, created: bool) -> PlanReport:
        """The report of a store's ``plan`` attribute."""
        return cls(url, created, plan["position_strata"], plan["variant_strata"])

    def rows(self) -> list[tuple[str, str, int, int, dict[str, int]]]:
        """One ``(set, stratum, planned, usable, {reason: rejected})`` per stratum."""
        return [
            (
                kind,
                stratum,
                r["planned"],
                r["usable"],
                {k.removeprefix("rejected_"): v for k, v in r.items() if k.startswith("rejected_")},
            )
            for kind, strata in (("positions", self.positions), ("variants", self.variants))
            for stratum, r in strata.items()
        ]


@dataclass
class BuildReport:
    """What one :func:`~chorus_store.build` call did."""

    rows_built: dict[str, int] = field(default_factory=lambda: {g.name: 0 for g in DATA_GROUPS})
    tasks: int = 0
    oracle_calls: int = 0
    seconds: float = 0.0
    oracle_seconds: float = 0.0
    sequences: int = 0

    def merge(self, other: BuildReport) -> None:
        """Add ``other``'s counts (one task's, one worker's) to these."""
        for g, n in other.rows_built.items():
            self.rows_built[g] += n
        self.tasks += other.tasks
        self.oracle_calls += other.oracle_calls
        self.oracle_seconds += other.oracle_seconds
        self.sequences += other.sequences


@dataclass
class ReduceReport:
    """What one :func:`~chorus_store.reduce` call did: blocks recomputed per layer (of
    ``blocks_total`` over all layers) and the number of stored values they read."""

    blocks_total: int = 0
    blocks_computed: dict[str, int] = field(default_factory=dict)
    values_reduced: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ExportReport:
    """What :func:`~chorus_store.export` wrote: the file (``url``: a local path or an
    object-store URL), and where a previous file in chorus's backgrounds directory went."""

    url: str
    moved_aside: Path | None = None

    @property
    def path(self) -> Path:
        """The local file written (an export to an object store has none: use ``url``)."""
        if "://" in self.url:
            raise UsageError(f"the export went to an object store ({self.url}); read .url")
        return Path(self.url)

    @property
    def messages(self) -> list[str]:
        """Lines for the user (the CLI prints them)."""
        out = [f"wrote {self.url}"]
        if self.moved_aside is not None:
            out.append(f"the previous {Path(self.url).name} was kept as {self.moved_aside}")
        return out


@dataclass(frozen=True)
class StatusReport:
    """Where a store stands (:func:`~chorus_store.status`).

    ``layers`` counts tracks per layer; ``plan`` holds ``positions``/``variants`` (per
    stratum: planned, usable) and ``additions``; ``build`` per data group: shards, done
    shards, cells, done cells; ``reductions`` per layer: blocks, stale blocks; ``disk``:
    bytes, files, leftover ``*.partial`` files; ``claims``: name, holder, alive (one per
    claimed shard); ``runs``: the claims summarised per run holding them (pid, host,
    command, since, alive, build shards per data group, other claims).
    """

    store: str
    schema_version: int
    software_version: str
    oracle: str
    oracle_pinned: bool
    genome: str
    tracks: int
    layers: dict[str, int]
    plan: dict[str, Any]
    build: dict[str, dict[str, int]]
    reductions: dict[str, dict[str, int]]
    disk: dict[str, int]
    claims: list[dict[str, Any]]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``chorus-store status --json`` prints it)."""
        return dataclasses.asdict(self)


@dataclass
class VerifyReport:
    """What :func:`~chorus_store.verify` found (one line per damaged thing, by kind),
    what cannot be rebuilt from the store (``lost``, with how to recover), and whether a
    repair changed anything."""

    damaged_shards: list[str] = field(default_factory=list)
    damaged_marks: list[str] = field(default_factory=list)
    damaged_reductions: list[str] = field(default_factory=list)
    damaged_metadata: list[str] = field(default_factory=list)
    damaged_plan: list[str] = field(default_factory=list)
    damaged_derived: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """Nothing damaged and nothing lost."""
        return not (self.damaged() or self.lost)

    def damaged(self) -> list[str]:
        """Every damaged thing, labelled by kind (the lines ``chorus-store verify`` prints)."""
        labels = {
            "damaged_metadata": "metadata",
            "damaged_shards": "data",
            "damaged_marks": "done mark",
            "damaged_reductions": "reduction",
            "damaged_derived": "derived array",
            "damaged_plan": "plan",
        }
        return [
            f"damaged {label}: {line}"
            for key, label in labels.items()
            for line in getattr(self, key)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data."""
        return dataclasses.asdict(self)


def _number(x: float) -> float | None:
    """A float for JSON: NaN (no value) is null."""
    return None if np.isnan(x) else float(x)


@dataclass(frozen=True)
class LayerComparison:
    """One layer of a :class:`CompareReport`: per compared track (``track_ids``, the tracks
    of both files with samples in both, in A's order) the ratios B/A of p50, p90, p99
    and max of ``|grid|`` (``ratios[stat]``, NaN where A's statistic is 0), the KS
    distance between the two grids (``ks``) and whether the ceiling rose by more than
    0.1 % (``higher_ceiling``); the tracks left out for a zero count in either file."""

    layer: str
    track_ids: tuple[str, ...]
    ratios: dict[str, np.ndarray]
    ks: np.ndarray
    higher_ceiling: np.ndarray
    excluded_zero_counts: tuple[str, ...]

    @property
    def median_ratio(self) -> dict[str, float]:
        """Per statistic, the median of the per-track ratios (NaN: no ratio)."""
        return {
            k: float(np.nanmedian(r)) if np.isfinite(r).any() else float("nan")
            for k, r in self.ratios.items()
        }

    @property
    def higher_ceiling_fraction(self) -> float:
        """The share of compared tracks whose max rose (chorus's "% with a higher ceiling")."""
        return float(self.higher_ceiling.mean()) if len(self.track_ids) else float("nan")

    @property
    def ks_median(self) -> float:
        """The median KS distance over the compared tracks (NaN: none)."""
        return float(np.median(self.ks)) if len(self.ks) else float("nan")

    @property
    def ks_max(self) -> float:
        """The largest KS distance (NaN: no track compared)."""
        return float(self.ks.max()) if len(self.ks) else float("nan")

    def top_moved(self, n: int) -> list[int]:
        """Indices of the ``n`` tracks with the largest KS distance (ties: by track id)."""
        order = sorted(range(len(self.track_ids)), key=lambda i: (-self.ks[i], self.track_ids[i]))
        return order[: max(n, 0)]

    def track_row(self, i: int) -> dict[str, Any]:
        """Track ``i`` as plain data: id, KS, ratios."""
        return {
            "track_id": self.track_ids[i],
            "ks": float(self.ks[i]),
            "ratio": {k: _number(r[i]) for k, r in self.ratios.items()},
            "higher_ceiling": bool(self.higher_ceiling[i]),
        }

    def to_dict(self, *, top: int = 10) -> dict[str, Any]:
        """The layer as plain data (see :meth:`CompareReport.to_dict`)."""
        return {
            "tracks_compared": len(self.track_ids),
            "median_ratio": {k: _number(v) for k, v in self.median_ratio.items()},
            "higher_ceiling_fraction": _number(self.higher_ceiling_fraction),
            "ks": {"median": _number(self.ks_median), "max": _number(self.ks_max)},
            "excluded_zero_counts": list(self.excluded_zero_counts),
            "top_moved": [self.track_row(i) for i in self.top_moved(top)],
            "tracks": [self.track_row(i) for i in range(len(self.track_ids))],
        }


@dataclass(frozen=True)
class GateFinding:
    """One gate (``body-moves``, ``ceiling-falls``) on one layer: ``pass``, ``fail``, or
    ``advisory`` (it would fail, but too few tracks carry it), and the line saying why."""

    gate: str
    layer: str
    outcome: Literal["pass", "fail", "advisory"]
    message: str


@dataclass(frozen=True)
class CompareReport:
    """What :func:`~chorus_store.inspect.compare.compare` found between background ``a``
    and background ``b`` (B is compared against A): per layer present in both a
    :class:`LayerComparison`; the tracks and layers in one only; whether the common
    tracks are in another order (harmless for queries, which look tracks up by id, fatal
    to any splice of rows between the files); the gates' findings."""

    a: str
    b: str
    layers: dict[str, LayerComparison]
    tracks_only_in_a: tuple[str, ...]
    tracks_only_in_b: tuple[str, ...]
    layers_only_in_a: tuple[str, ...]
    layers_only_in_b: tuple[str, ...]
    track_order_changed: bool
    gates: tuple[GateFinding, ...] = ()

    #: ``schema_version`` of :meth:`to_dict` (``chorus-store compare --json``)
    SCHEMA_VERSION = 1

    @property
    def failures(self) -> list[GateFinding]:
        """The gates that failed (``chorus-store compare`` exits 1 when there are any)."""
        return [g for g in self.gates if g.outcome == "fail"]

    def to_dict(self, *, top: int = 10) -> dict[str, Any]:
        """The report as plain JSON-able data (``chorus-store compare --json``); NaN is null.

        Schema (``schema_version`` 1; keys are only ever added)::

            {"schema_version": 1, "a": str, "b": str, "stats": ["p50", "p90", "p99", "max"],
             "tracks_only_in_a": [id], "tracks_only_in_b": [id],
             "layers_only_in_a": [layer], "layers_only_in_b": [layer],
             "track_order_changed": bool,
             "layers": {layer: {
                 "tracks_compared": int,
                 "median_ratio": {stat: float | null},   # median of per-track B/A
                 "higher_ceiling_fraction": float | null,
                 "ks": {"median": float | null, "max": float | null},
                 "excluded_zero_counts": [id],
                 "top_moved": [track], "tracks": [track]}},   # top: by KS, descending
             "gates": [{"gate": str, "layer": str,
                        "outcome": "pass" | "fail" | "advisory", "message": str}]}

        where each ``track`` is ``{"track_id": str, "ks": float, "ratio": {stat: float |
        null}, "higher_ceiling": bool}`` and ``tracks`` lists every compared track in A's
        order.
        """
        return {
            "schema_version": self.SCHEMA_VERSION,
            "a": self.a,
            "b": self.b,
            "stats": ["p50", "p90", "p99", "max"],
            "tracks_only_in_a": list(self.tracks_only_in_a),
            "tracks_only_in_b": list(self.tracks_only_in_b),
            "layers_only_in_a": list(self.layers_only_in_a),
            "layers_only_in_b": list(self.layers_only_in_b),
            "track_order_changed": self.track_order_changed,
            "layers": {k: v.to_dict(top=top) for k, v in self.layers.items()},
            "gates": [dataclasses.asdict(g) for g in self.gates],
        }


@dataclass(frozen=True)
class HtmlReport:
    """What :func:`~chorus_store.inspect.report.report` wrote: the HTML file (``path``),
    the background it describes (``source``, and ``compared_with`` when a second one was
    given), and the flagged tracks per layer by reason (``flags[layer][reason]``)."""

    path: Path
    source: str
    tracks: int
    flags: dict[str, dict[str, int]]
    compared_with: str | None = None

    @property
    def flagged(self) -> int:
        """Flags over all layers (a track flagged in two layers counts twice)."""
        return sum(sum(by.values()) for by in self.flags.values())

    @property
    def messages(self) -> list[str]:
        """Lines for the user (the CLI prints them)."""
        lines = [f"{self.source}: {self.tracks} tracks, {self.flagged} flag(s)"]
        for layer, by in self.flags.items():
            found = ", ".join(f"{reason} {n}" for reason, n in by.items() if n)
            lines.append(f"  {layer}: {found or 'nothing flagged'}")
        lines.append(f"wrote {self.path}")
        return lines


@dataclass(frozen=True)
class ArrayEstimate:
    """One array of the store an :class:`EstimateReport` sizes: its shape by the schema for
    the recipe's plan, its raw bytes (shape × item size; ``None``: its size needs an input
    not given), where a codec ratio is known for it its expected bytes on disk, and the
    share of its cells that will hold values (``filled``; the rest stays NaN: e.g. the
    per-bin record of an oracle without binned heads, written as NaN chunks)."""

    key: str
    role: str
    shape: tuple[int, ...]
    dtype: str
    raw_bytes: int | None
    expected_bytes: int | None = None
    filled: float = 1.0


@dataclass(frozen=True)
class BuildTimeEstimate:
    """How long a build's forward passes take. ``source``: ``"measured"`` (a timed forward
    pass of the loaded model on ``device``), ``"given"`` (the user's rows per second) or
    ``"unknown"`` (``note`` says why). ``rows`` are the rows the build's progress bar
    counts (each row once per task it is in); ``sequences`` the model's inputs (a usable
    position one, a usable SNP two: ref and alt)."""

    source: str
    rows: int
    sequences: int
    rows_per_s: float | None = None
    sequences_per_s: float | None = None
    seconds: float | None = None
    device: str = ""
    batch_size: int = 0
    batches_timed: int = 0
    load_seconds: float | None = None
    note: str = ""


@dataclass(frozen=True)
class EstimateReport:
    """What building a recipe will take (:func:`chorus_store.estimate`), before a store
    exists: rows per stratum (``positions``/``variants``: ``rows``, and ``usable`` when
    the plan was computed), what they rest on (``rows_basis``), tracks, build tasks and
    claimed shards per data group, every numeric array of the store (:class:`ArrayEstimate`),
    the NPZ's bytes and the build time (:class:`BuildTimeEstimate`)."""

    recipe: str
    rows_basis: str
    positions: dict[str, dict[str, int]]
    variants: dict[str, dict[str, int]]
    tracks: int
    tracks_basis: str
    layers: dict[str, int]
    npz_layers: tuple[str, ...]
    tasks: dict[str, int]
    shards: dict[str, int]
    arrays: list[ArrayEstimate]
    npz_bytes: int
    npz_grid_bytes: int
    build: BuildTimeEstimate
    compression_basis: str
    notes: list[str] = field(default_factory=list)

    def array(self, key: str) -> ArrayEstimate:
        """The estimate of array ``group/name``."""
        for a in self.arrays:
            if a.key == key:
                return a
        raise UsageError(f"the store has no numeric array {key!r}")

    @property
    def raw_bytes(self) -> int:
        """Raw bytes of every sized array."""
        return sum(a.raw_bytes or 0 for a in self.arrays)

    @property
    def expected_bytes(self) -> int:
        """Expected bytes on disk: the compressed estimate where a ratio is known, raw
        bytes elsewhere."""
        return sum(a.expected_bytes or a.raw_bytes or 0 for a in self.arrays)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``chorus-store estimate --json`` prints it), with the
        totals."""
        return {
            **dataclasses.asdict(self),
            "raw_bytes": self.raw_bytes,
            "expected_bytes": self.expected_bytes,
        }
