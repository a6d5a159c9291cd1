"""A plain Python function as an oracle: for models with their own runtime, and tests."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.oracles.base import Columns, Oracle, OutputHead
from chorus_store.oracles.common import import_object

if TYPE_CHECKING:
    from chorus_store.recipes import Recipe

__all__ = ["CallableOracle", "load"]


class CallableOracle(Oracle):
    """Wrap ``fn(onehot (batch, L, 4)) -> {head name: array}`` (or one array).

    ``identity`` names what determines the function's numerics (a version string, a
    weights hash); by default the hash of the function's name and source code is used.
    With ``per_model=True`` the function is called as ``fn(onehot, columns)`` and returns
    only the requested columns of each head (one model per track).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        input_length: int,
        heads: tuple[OutputHead, ...],
        batch_size: int = 8,
        identity: str | None = None,
        per_model: bool = False,
    ) -> None:
        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        self.fn = fn
        self.per_model = per_model
        if identity is None:
            try:
                src = inspect.getsource(fn)
            except (OSError, TypeError):
                src = repr(fn)
            name_and_source = f"{getattr(fn, '__qualname__', '')}\n{src}"
            identity = hashlib.sha256(name_and_source.encode()).hexdigest()
        self.identity = identity

    def describe(self) -> dict[str, Any]:
        return {"adapter": "callable", "identity": self.identity}

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        out = self.fn(onehot, columns) if self.per_model else self.fn(onehot)
        if not isinstance(out, dict):
            out = {self.heads[0].name: out}
        return out


def load(recipe: Recipe, *, weights: str | None = None, device: str = "auto") -> CallableOracle:
    """The function ``[oracle] callable`` (``"package.module:name"``) of ``recipe`` as an
    oracle; ``identity`` and ``per_model`` as the recipe says. ``weights`` and ``device``
    are the function's own business and are not used."""
    return CallableOracle(
        import_object(str(recipe.oracle["callable"])),
        name=recipe.name,
        input_length=recipe.input_length,
        heads=recipe.heads,
        batch_size=recipe.batch_size,
        identity=recipe.oracle.get("identity"),
        per_model=bool(recipe.oracle.get("per_model", False)),
    )
