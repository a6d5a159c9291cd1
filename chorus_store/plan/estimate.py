"""What a build of a recipe will cost, before any store exists: rows, tasks, bytes, time.

The rows are the plan's (computed in memory, exactly as ``plan`` would, when its inputs are
given), the store's arrays are sized by the schema, and the time comes from a timed forward
pass of the loaded model or a rate the user gives: never from a guess.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus_store.arrays import namespace
from chorus_store.errors import ChorusStoreError, UsageError
from chorus_store.genome.tracks import TrackTable
from chorus_store.plan.sampling import SamplingConfig
from chorus_store.plan.stage import (
    ComputedPlan,
    binned_resolutions,
    compute_plan,
    load_reference_set,
)
from chorus_store.recipes import Recipe, load_recipe
from chorus_store.reports import ArrayEstimate, BuildTimeEstimate, EstimateReport
from chorus_store.store.base import PRIMARY_DIMS, dim_sizes
from chorus_store.store.core import DATA_GROUPS
from chorus_store.store.layout import Layout
from chorus_store.store.schema import schema

__all__ = ["estimate", "measure_rate", "COMPRESSION", "COMPRESSION_CODEC", "NAN_RATIO"]

#: bytes on disk ÷ raw bytes of each record array, measured on the demo build (`chorus-store
#: demo`: 40 tracks, 2,500 positions, 977 SNPs; x86_64, 2 cores, 2026-12-02) in its codec,
#: :data:`COMPRESSION_CODEC`. The demo model's records are the closest to real predictions
#: this project has (docs/design-notes.md, "Store codec": a random-weight Enformer's perbin
#: compressed to 0.28). Gene records take their per-row twin's ratio for the gene_expression
#: tracks' share of them (NaN elsewhere, :data:`NAN_RATIO`).
COMPRESSION: dict[str, float] = {
    "baselines/summary": 0.974,
    "baselines/perbin": 0.950,
    "variants/ref_summary": 0.963,
    "variants/alt_summary": 0.965,
    "variants/effect": 1.096,
    "reductions/effect/grid": 0.571,
    "reductions/summary/grid": 0.540,
    "reductions/perbin/grid": 0.570,
}
#: bytes on disk ÷ raw bytes of an all-NaN shard in that codec (measured the same day on
#: 256 × 32 × 1,024 and 128 × 32 × 32 float32 shards: 0.0049 and 0.0050)
NAN_RATIO = 0.005
#: the first compressor of the schema those ratios hold for
COMPRESSION_CODEC: dict[str, Any] = {
    "name": "blosc",
    "configuration": {"cname": "lz4", "clevel": 1, "shuffle": "shuffle"},
}
#: per layer, an NPZ holds a float32 grid and two int64 counts per track
_NPZ_COUNT_BYTES = 2 * 8


@dataclass(frozen=True)
class _Rows:
    """Rows per stratum of each data group, and what they rest on."""

    basis: str
    positions: dict[str, dict[str, int]]
    variants: dict[str, dict[str, int]]
    plan: ComputedPlan | None = None
    notes: list[str] = field(default_factory=list)

    def total(self, kind: str) -> int:
        strata: dict[str, dict[str, int]] = getattr(self, kind)
        return sum(r["rows"] for r in strata.values())

    def usable(self, kind: str) -> int:
        """Usable rows (all rows where usability is not known: an upper bound)."""
        strata: dict[str, dict[str, int]] = getattr(self, kind)
        return sum(r.get("usable", r["rows"]) for r in strata.values())


def _strata(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts = table.groupby("stratum", sort=True).size()
    out = {str(s): {"rows": int(n)} for s, n in counts.items()}
    if "usable" in table:
        for s, n in table.groupby("stratum", sort=True)["usable"].sum().items():
            out[str(s)]["usable"] = int(n)
    return out


def _reference_rows(
    recipe: Recipe, path: str | Path, positions_set: str | None, variants_set: str | None
) -> _Rows:
    """The reference set's rows, the recipe's derivation of the population applied by count
    (usability needs the FASTA)."""
    cfg = recipe.plan
    ref = load_reference_set(
        path,
        positions=positions_set or cfg.get("positions_set", "regions_genome_dominated"),
        variants=variants_set or cfg.get("variants_set", "snps_gene_anchored"),
    )
    assert ref.positions is not None and ref.variants is not None
    drop = [str(x) for x in cfg.get("drop_strata", [])]
    positions = _strata(ref.positions[~ref.positions["stratum"].isin(drop)])
    notes = ["usable rows unknown without --fasta: the time assumes every row is usable"]
    add = cfg.get("add_dhs")
    if add:
        positions["dhs"] = {"rows": int(add.get("n", 5000))}
        notes.append("dhs positions: the recipe's add_dhs count (the index may hold fewer)")
    return _Rows(f"reference set {ref.path.name}", positions, _strata(ref.variants), notes=notes)


def _target_rows(recipe: Recipe) -> _Rows:
    """A generated plan's targets from ``[plan.sampling]``: a stratum with fewer candidates
    in the annotations comes out smaller (chorus takes them all)."""
    cfg = SamplingConfig.from_dict(dict(recipe.plan.get("sampling", {})))
    positions = {"random": cfg.n_random, "ccre": cfg.n_ccre, "tss": cfg.n_tss}
    if cfg.population == "genome_dominated":
        positions["gene_body"] = cfg.n_gene_body
    if cfg.population.endswith("plus_dhs"):
        positions["dhs"] = cfg.n_dhs_positions
    n = cfg.n_effect_positions
    variants = {
        "uniform": {"random": cfg.n_snps},
        "gene_anchored": {s: round(n * f) for s, f in cfg.anchored_strata},
        "promoter": {s: round(n * f) for s, f in cfg.promoter_strata},
        "accessibility": {"random": cfg.n_snps, "dhs": cfg.n_dhs_snps},
    }[cfg.effect_family]
    return _Rows(
        "[plan.sampling] targets (at most: pass --fasta, --ccre and --gtf for the exact plan)",
        {s: {"rows": v} for s, v in sorted(positions.items())},
        {s: {"rows": v} for s, v in sorted(variants.items())},
        notes=["usable rows unknown without --fasta: the time assumes every row is usable"],
    )


def _rows(recipe: Recipe, fasta: str | Path | None, **inputs: Any) -> _Rows:
    """The plan's rows: exact when the FASTA is given (the plan itself, computed in memory),
    else the reference set's rows or the sampling targets."""
    if fasta is not None:
        plan = compute_plan(recipe, fasta=fasta, **inputs)
        return _Rows("plan", _strata(plan.positions), _strata(plan.variants), plan)
    reference = inputs.get("reference_set") or (
        recipe.plan.get("reference_set") if recipe.plan.get("source") == "reference" else None
    )
    if reference is not None:
        return _reference_rows(
            recipe, reference, inputs.get("positions_set"), inputs.get("variants_set")
        )
    return _target_rows(recipe)


def _tracks(recipe: Recipe) -> tuple[TrackTable | None, int, str]:
    """The track table (None when its files are not here), the track count and its basis."""
    try:
        table = recipe.track_table()
    except ChorusStoreError as exc:
        n = sum(h.n_columns for h in recipe.heads)
        return None, n, f"the heads' n_columns (the track table is not readable here: {exc})"
    return table, len(table), "the track table"


def _genes(
    rows: _Rows, table: TrackTable | None, layout: Layout
) -> tuple[Layout, dict[str, int], str]:
    """The layout with the plan's (row, gene) slots per shard, the exon ranges per data
    group's gene dim, and a note when the store has gene records whose count needs the
    plan's GTF (then both are 0 and the gene arrays are left unsized)."""
    per_shard = {g.gene_rows_key: 0 for g in DATA_GROUPS}
    ranges = {g.gene_range_dim: 0 for g in DATA_GROUPS}
    note = ""
    if rows.plan is not None:
        for group, genes in zip(DATA_GROUPS, rows.plan.genes(layout), strict=True):
            per_shard[group.gene_rows_key] = genes.rows_per_shard
            ranges[group.gene_range_dim] = len(genes.ranges)
    elif table is None or len(table.gene_tracks):
        note = (
            "gene-record arrays (one row per (row, gene) slot) are not sized: they need the "
            "plan's GTF (pass --fasta and --gtf)"
        )
    return Layout.from_dict({**layout.as_dict(), **per_shard}), ranges, note


@dataclass(frozen=True)
class _Filled:
    """Which share of the tracks hold values in each kind of record array: the per-bin
    record only the tracks of binned heads (the rest stays NaN, written as NaN chunks),
    gene records only the gene_expression tracks."""

    binned: float
    genes: float

    @classmethod
    def of(cls, recipe: Recipe, table: TrackTable | None) -> _Filled:
        if table is not None and len(table):
            frame = table.frame
            return cls(
                float((frame["resolution_bp"] > 0).mean()),
                len(table.gene_tracks) / len(table),
            )
        columns = sum(h.n_columns for h in recipe.heads) or 1
        binned = sum(h.n_columns for h in recipe.heads if not h.is_scalar)
        return cls(binned / columns, 0.0)

    def share(self, key: str, role: str, layers: tuple[str, ...]) -> float:
        """The share of ``key``'s cells that hold values once built."""
        if role == "gene_data":
            return self.genes
        if key.endswith("/perbin"):
            return self.binned
        if role == "reduction" and key.split("/")[1] not in layers:
            return 0.0  # a layer this oracle has not: never reduced, never written
        return 1.0


def _expected(raw: int, key: str, share: float, role: str) -> int | None:
    """Bytes on disk: the values at the demo's ratio, the NaN rest at :data:`NAN_RATIO`
    (gene records at their per-row twin's ratio); unwritten reductions take nothing."""
    twin = key.replace("/gene_", "/") if role == "gene_data" else key
    ratio = COMPRESSION.get(twin)
    if ratio is None:
        return None
    if role == "reduction":
        return round(raw * ratio * share)
    return round(raw * (share * ratio + (1 - share) * NAN_RATIO))


def _arrays(
    sizes: dict[str, int], genes_known: bool, filled: _Filled, layers: tuple[str, ...], ratios: bool
) -> list[ArrayEstimate]:
    """Every numeric array of the schema at ``sizes``; strings (ids, names) are left out."""
    out = []
    for spec in schema().arrays():
        if spec.is_str or spec.source is not None:
            continue
        shape = tuple(sizes[d] for d in spec.dims)
        unknown = not genes_known and any(d.endswith(("_gene", "_gene_range")) for d in spec.dims)
        raw = None if unknown else math.prod(shape) * np.dtype(spec.dtype).itemsize
        share = filled.share(spec.key, spec.role, layers) if spec.dtype == "float32" else 1.0
        expected = None if raw is None or not ratios else _expected(raw, spec.key, share, spec.role)
        out.append(ArrayEstimate(spec.key, spec.role, shape, spec.dtype, raw, expected, share))
    return out


def _npz(table: TrackTable | None, n_tracks: int, layers: tuple[str, ...], n_points: int) -> int:
    """The NPZ's bytes: per layer a float32 grid (stored as is) and two counts per track,
    plus the track ids and layers as NumPy unicode (4 bytes a character) when the table is
    known, and the signed flags; its ~16 kB ``build_config`` and zip headers are left out."""
    total = len(layers) * n_tracks * (n_points * 4 + _NPZ_COUNT_BYTES) + n_tracks
    if table is not None and n_tracks:
        widest = max(len(t) for t in table.track_ids) + max(len(x) for x in table.layers)
        total += 4 * n_tracks * widest
    return total


def _random_onehot(batch: int, length: int, seed: int = 0) -> np.ndarray:
    bases = np.random.default_rng(seed).integers(0, 4, (batch, length))
    onehot: np.ndarray = np.eye(4, dtype=np.float32)[bases]
    return onehot


def _forward(oracle: Any, onehot: np.ndarray) -> None:
    """One model batch, waited for: each head is summed where it is (a device array's sum
    comes back as one number, so its computation must have finished, without copying the
    head to the host as a build never does)."""
    for _, heads in oracle.predict_blocks(onehot):
        for _, arr in heads:
            float(namespace(arr).sum(arr))


def measure_rate(
    recipe: Recipe,
    *,
    tracks: TrackTable | None = None,
    weights: str | None = None,
    device: str = "auto",
    batches: int = 2,
) -> tuple[float, str, float]:
    """Sequences per second of the recipe's model: loaded as the build loads it, one
    untimed batch (lazy initialisation, kernel autotuning), then ``batches`` timed batches
    of random one-hot at the recipe's input length and batch shape.

    Returns
    -------
    (sequences per second, the device it ran on, seconds the model took to load)
    """
    if batches < 1:
        raise UsageError(f"batches must be at least 1, not {batches}")
    t0 = time.perf_counter()
    oracle = recipe.load_oracle(weights=weights, device=device, tracks=tracks)
    loaded = time.perf_counter() - t0
    try:
        onehot = _random_onehot(oracle.batch_size, oracle.input_length)
        _forward(oracle, onehot)
        t0 = time.perf_counter()
        for _ in range(batches):
            _forward(oracle, onehot)
        seconds = time.perf_counter() - t0
        where = str(getattr(oracle, "device", "") or oracle.facts()["description"].get("device"))
    finally:
        oracle.close()
    return batches * oracle.batch_size / seconds, where or device, loaded


def _build_time(
    recipe: Recipe,
    rows: _Rows,
    task_rows: int,
    table: TrackTable | None,
    *,
    rate: float | None,
    measure: bool,
    weights: str | None,
    device: str,
    batches: int,
) -> BuildTimeEstimate:
    """The forward passes' time: from ``rate`` (rows/s, as the build's progress bar counts
    rows) when given, else measured, else unknown with the reason."""
    sequences = rows.usable("positions") + 2 * rows.usable("variants")  # SNPs: ref and alt
    if rate is not None:
        if not rate > 0:
            raise UsageError(f"--rate must be a positive number of rows per second, not {rate}")
        seconds = task_rows / rate
        return BuildTimeEstimate(
            "given", task_rows, sequences, rate, sequences / seconds if seconds else None, seconds
        )
    if not measure:
        note = "not measured (--no-measure); pass --rate ROWS_PER_S for a time"
        return BuildTimeEstimate("unknown", task_rows, sequences, note=note)
    try:
        per_s, where, loaded = measure_rate(
            recipe, tracks=table, weights=weights, device=device, batches=batches
        )
    except (ChorusStoreError, OSError) as exc:
        note = (
            f"not measured: the model could not be loaded here ({' '.join(str(exc).split())}); "
            f"pass --weights DIR, or --rate ROWS_PER_S from an earlier build"
        )
        return BuildTimeEstimate("unknown", task_rows, sequences, note=note)
    seconds = sequences / per_s
    return BuildTimeEstimate(
        "measured",
        task_rows,
        sequences,
        task_rows / seconds if seconds else None,
        per_s,
        seconds,
        device=where,
        batch_size=recipe.batch_size,
        batches_timed=batches,
        load_seconds=loaded,
        note="forward passes only; the build's own work adds to it (README, Benchmarks)",
    )


def estimate(
    recipe: Recipe | str | Path,
    *,
    fasta: str | Path | None = None,
    reference_set: str | Path | None = None,
    positions_set: str | None = None,
    variants_set: str | None = None,
    ccre: str | Path | None = None,
    gtf: str | Path | None = None,
    dhs: str | Path | None = None,
    assembly: str | None = None,
    rate: float | None = None,
    measure: bool = True,
    weights: str | None = None,
    device: str = "auto",
    batches: int = 2,
) -> EstimateReport:
    """What building ``recipe`` will take: rows, tasks, store and NPZ sizes, time.

    Nothing is written. With ``fasta`` (and the plan's other inputs, as ``plan_store``
    takes them) the plan is computed in memory and every number is exact; without it the
    rows are the reference set's (usability unknown) or the ``[plan.sampling]`` targets.
    The time is ``rate`` (rows per second, as the build's progress bar counts them) when
    given, else a timed forward pass of the model loaded as the build loads it
    (``measure``, on ``device`` with ``weights``), else reported as unknown with the reason.

    Examples
    --------
    >>> report = estimate("enformer", measure=False)  # doctest: +SKIP
    >>> report.array("baselines/perbin").raw_bytes    # 31,500 x 1 x 32 x 5,313 x 4
    21419827200
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    rows = _rows(
        recipe,
        fasta,
        reference_set=reference_set,
        positions_set=positions_set,
        variants_set=variants_set,
        ccre=ccre,
        gtf=gtf,
        dhs=dhs,
        assembly=assembly,
    )
    table, n_tracks, tracks_basis = (
        (rows.plan.tracks, len(rows.plan.tracks), "the track table")
        if rows.plan is not None
        else _tracks(recipe)
    )
    layout, ranges, genes_note = _genes(rows, table, recipe.layout)
    primary = {
        "track": n_tracks,
        "resolution": len(binned_resolutions(recipe)),
        "strand": len(recipe.strands),
        **{g.row_dim: rows.total(g.plan_name) for g in DATA_GROUPS},
        **ranges,
    }
    assert set(primary) == set(PRIMARY_DIMS)
    sizes = dim_sizes(layout, primary)
    track_shards = math.ceil(n_tracks / layout.tracks_per_shard)
    per_model = bool(recipe.oracle.get("per_model", False))
    tasks = {g.name: sizes[g.shard_dim] * (track_shards if per_model else 1) for g in DATA_GROUPS}
    task_rows = sum(
        rows.total(g.plan_name) * (track_shards if per_model else 1) for g in DATA_GROUPS
    )
    layers = ("effect", "summary") + (("perbin",) if primary["resolution"] else ())
    ratios = schema().compressors[0] == COMPRESSION_CODEC
    return EstimateReport(
        recipe=recipe.name,
        rows_basis=rows.basis,
        positions=rows.positions,
        variants=rows.variants,
        tracks=n_tracks,
        tracks_basis=tracks_basis,
        layers=dict(sorted(Counter(table.layers).items())) if table is not None else {},
        npz_layers=layers,
        tasks=tasks,
        shards={g.name: sizes[g.shard_dim] * track_shards for g in DATA_GROUPS},
        arrays=_arrays(sizes, not genes_note, _Filled.of(recipe, table), layers, ratios),
        npz_bytes=_npz(table, n_tracks, layers, layout.n_points),
        npz_grid_bytes=len(layers) * n_tracks * layout.n_points * 4,
        build=_build_time(
            recipe,
            rows,
            task_rows,
            table,
            rate=rate,
            measure=measure,
            weights=weights,
            device=device,
            batches=batches,
        ),
        compression_basis=(
            "bytes on disk / raw of the same array in the demo build (blosc lz4 + shuffle); "
            "a trained model's records may compress differently"
            if ratios
            else "none: the schema's codec is not the one the ratios were measured with"
        ),
        notes=[*rows.notes, *([genes_note] if genes_note else [])],
    )

