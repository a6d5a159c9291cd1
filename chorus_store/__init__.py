"""chorus-store: exact, resumable per-track background nulls for genomic oracles.

The public API; everything else may change. Stages, in order::

    plan_store → build → reduce → export

and :func:`open_store` for xarray views of what a store holds.
"""

from __future__ import annotations

from ._version import __version__
from .build import BuildReport, build
from .errors import (
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
from .export import default_backgrounds_dir, export
from .genome import Genome
from .oracles.base import Oracle, OutputHead
from .oracles.callable_adapter import CallableOracle
from .plan import add_rows, add_tracks, load_reference_set, plan_store
from .recipes import Recipe, load_recipe
from .reduce import ReduceReport, reduce
from .sampling import SamplingConfig
from .status import status, unlock, verify
from .store import ChorusStore, Layout, open_store
from .tracks import LAYER_CONFIGS, TrackTable, centered_bin_span, classify_track_layer

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
    "add_rows",
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
