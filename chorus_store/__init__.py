"""chorus-store: exact, resumable per-track background nulls for genomic oracles.

The public API; everything else may change. Stages, in order::

    plan_store → build → reduce → export

and :func:`open_store` for xarray views of what a store holds.
"""

from __future__ import annotations

from chorus_store._version import __version__
from chorus_store.build.stage import BuildReport, build
from chorus_store.errors import (
    ChorusStoreError,
    CorruptChunkError,
    ExportValidationError,
    GenomeMismatchError,
    IncompleteStageError,
    InputFileError,
    LocationError,
    OracleError,
    OracleMismatchError,
    PlanHashMismatchError,
    PlanMismatchError,
    PredictionError,
    RecipeError,
    SchemaError,
    StoreLockedError,
    StoreMismatchError,
    TrackTableMismatchError,
    UsageError,
    WriteError,
)
from chorus_store.export import default_backgrounds_dir, export
from chorus_store.genome.fasta import Genome
from chorus_store.genome.tracks import (
    LAYER_CONFIGS,
    TrackTable,
    centered_bin_span,
    classify_track_layer,
)
from chorus_store.inspect.status import status, unlock, verify
from chorus_store.oracles.base import Oracle, OutputHead
from chorus_store.oracles.callable import CallableOracle
from chorus_store.plan.sampling import SamplingConfig
from chorus_store.plan.stage import (
    add_positions,
    add_tracks,
    add_variants,
    load_reference_set,
    plan_store,
)
from chorus_store.recipes import Recipe, load_recipe
from chorus_store.reduce import ReduceReport, reduce
from chorus_store.store.core import ChorusStore, Layout, open_store

__all__ = [
    "__version__",
    "plan_store",
    "build",
    "reduce",
    "export",
    "open_store",
    "status",
    "verify",
    "unlock",
    "add_tracks",
    "add_positions",
    "add_variants",
    "load_reference_set",
    "load_recipe",
    "default_backgrounds_dir",
    "ChorusStore",
    "Layout",
    "Recipe",
    "SamplingConfig",
    "Genome",
    "TrackTable",
    "Oracle",
    "OutputHead",
    "CallableOracle",
    "BuildReport",
    "ReduceReport",
    "LAYER_CONFIGS",
    "centered_bin_span",
    "classify_track_layer",
    "ChorusStoreError",
    "InputFileError",
    "GenomeMismatchError",
    "PlanHashMismatchError",
    "StoreMismatchError",
    "PlanMismatchError",
    "OracleMismatchError",
    "TrackTableMismatchError",
    "SchemaError",
    "StoreLockedError",
    "PredictionError",
    "CorruptChunkError",
    "IncompleteStageError",
    "ExportValidationError",
    "RecipeError",
    "WriteError",
    "LocationError",
    "OracleError",
    "UsageError",
]
