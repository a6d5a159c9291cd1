"""What each stage returns: one dataclass per stage, all in one place.

``plan_store`` → :class:`PlanReport`, ``build`` → :class:`BuildReport`, ``reduce`` →
:class:`ReduceReport`, ``export`` → :class:`ExportReport`, ``status`` →
:class:`StatusReport`, ``verify`` → :class:`VerifyReport`. The CLI prints them;
``to_dict()`` gives plain JSON-able data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
