"""Where the data shipped beside the package lives: ``schemas/``, ``builders/``, ``examples/``.

In a source checkout (or an editable install) they are the top-level directories of the
repository; a wheel carries copies under ``chorus_store/_data/``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir"]

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Path of the shipped ``name`` directory (``schemas``, ``builders`` or ``examples``)."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"chorus-store's {name}/ directory is missing from this install")
