"""chorus-store: exact, resumable per-track background nulls for genomic oracles.

The public API; everything else may change. Stages, in order::

    plan_store → build → reduce → export

each returning a report (:mod:`chorus_store.reports`); :func:`open_store` for an xarray
view of what a store holds, :class:`Backgrounds` for percentiles of an exported NPZ as
chorus computes them, and :func:`status`, :func:`verify`, :func:`unlock` for upkeep.
"""

from __future__ import annotations

from chorus_store import errors as _errors
from chorus_store._version import __version__
from chorus_store.build.stage import build
from chorus_store.errors import *  # noqa: F403 - every error class (errors.__all__)
from chorus_store.export import export
from chorus_store.inspect.query import Backgrounds, open_store
from chorus_store.inspect.status import status, verify
from chorus_store.oracles.base import Oracle, OutputHead
from chorus_store.oracles.callable import CallableOracle
from chorus_store.plan.estimate import estimate
from chorus_store.plan.stage import add_positions, add_tracks, add_variants, plan_store
from chorus_store.recipes import Recipe, load_recipe
from chorus_store.reduce import reduce
from chorus_store.reports import (
    BuildReport,
    EstimateReport,
    ExportReport,
    PlanReport,
    ReduceReport,
    StatusReport,
    VerifyReport,
)
from chorus_store.store.upkeep import unlock

__all__ = [
    "__version__",
    # the stages, in order (and what a build of a recipe will take, before any)
    "estimate",
    "plan_store",
    "add_tracks",
    "add_positions",
    "add_variants",
    "build",
    "reduce",
    "export",
    # reading and upkeep
    "open_store",
    "Backgrounds",
    "status",
    "verify",
    "unlock",
    # recipes and oracles
    "load_recipe",
    "Recipe",
    "Oracle",
    "OutputHead",
    "CallableOracle",
    # what the stages return
    "PlanReport",
    "BuildReport",
    "ReduceReport",
    "ExportReport",
    "StatusReport",
    "VerifyReport",
    "EstimateReport",
]
__all__ += _errors.__all__  # the error classes, listed once in errors.py
