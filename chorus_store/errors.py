"""Every error chorus-store raises on purpose.

All derive from :class:`ChorusStoreError`, so ``except ChorusStoreError`` catches the
ones that describe bad input or a refused operation, and lets programming errors
through. Each message names what is wrong and the command (or argument) that fixes it.
"""

from __future__ import annotations

__all__ = [
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
    "ClusterError",
    "LocationError",
    "OracleError",
    "UsageError",
    "MissingDependencyError",
]


class ChorusStoreError(Exception):
    """Base class of every deliberate chorus-store error."""


class InputFileError(ChorusStoreError, ValueError):
    """A FASTA, BED, GTF, TSV or NPZ input is missing or malformed."""


class GenomeMismatchError(ChorusStoreError, ValueError):
    """The FASTA is not the assembly the plan or store was made from."""


class PlanHashMismatchError(ChorusStoreError, ValueError):
    """A position/variant set does not hash to what its provenance records."""


class StoreMismatchError(ChorusStoreError, ValueError):
    """A resume or append would mix inputs that differ from the store's."""


class PlanMismatchError(StoreMismatchError):
    """The plan (positions, variants, seeds, counts) differs from the store's."""


class OracleMismatchError(StoreMismatchError):
    """The oracle (weights, architecture, numerics) differs from the store's."""


class TrackTableMismatchError(StoreMismatchError):
    """The track table differs from the store's in a way that is not an append."""


class SchemaError(ChorusStoreError, ValueError):
    """A store does not match the schema it claims, or claims an unknown one."""


class StoreLockedError(ChorusStoreError, RuntimeError):
    """Another live process holds the part of the store this one wants to write."""


class PredictionError(ChorusStoreError, ValueError):
    """An oracle returned NaN/inf or wrongly shaped predictions; nothing was written."""


class CorruptChunkError(ChorusStoreError, OSError):
    """A stored chunk fails its checksum or cannot be decoded."""


class IncompleteStageError(ChorusStoreError, RuntimeError):
    """A stage was asked to run before the stage it depends on finished."""


class ExportValidationError(ChorusStoreError, ValueError):
    """The NPZ about to be written would break chorus's loader contract."""


class RecipeError(ChorusStoreError, ValueError):
    """A build recipe is missing, malformed or refers to something that does not exist."""


class WriteError(ChorusStoreError, OSError):
    """Writing failed (full disk, permissions); nothing half-written was kept."""


class ClusterError(ChorusStoreError, RuntimeError):
    """A cluster build lost a task for good (its workers kept dying); finished work is kept."""


class LocationError(ChorusStoreError, ValueError):
    """A store or output path cannot be used: an unknown URL scheme, a file where a
    directory is needed."""


class OracleError(ChorusStoreError, RuntimeError):
    """The oracle raised while predicting; the shard it was on was not written."""


class UsageError(ChorusStoreError, ValueError):
    """An argument names something that does not exist (``--part foo``) or conflicts with
    another."""


class MissingDependencyError(ChorusStoreError, ImportError):
    """An optional package the command needs is not installed; the message names the
    extra that installs it (``pip install "chorus-store[enformer]"``)."""

    @classmethod
    def of(cls, what: str, exc: ModuleNotFoundError, extra: str) -> MissingDependencyError:
        """``what`` (e.g. "the enformer adapter") needs the module ``exc`` did not find."""
        module = (exc.name or "a module").split(".")[0]
        return cls(
            f"{what} needs {module}, which is not installed: "
            f'pip install "chorus-store[{extra}]"'
        )


def require_module(module: str, what: str, extra: str) -> None:
    """Import ``module`` now, or raise the one-line :class:`MissingDependencyError` that
    names ``extra`` (before a command has done any work it would then stop in)."""
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.of(what, exc, extra) from exc


def os_reason(exc: OSError) -> str:
    """A short reason for a failed write, for messages that then say how to fix it."""
    import errno

    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the filesystem is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }
    where = f" ({exc.filename})" if exc.filename else ""
    return reasons.get(exc.errno or 0, exc.strerror or str(exc)) + where
