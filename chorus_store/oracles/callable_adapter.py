"""A plain Python function as an oracle: for models with their own runtime, and tests."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Oracle, OutputHead

__all__ = ["CallableOracle"]


class CallableOracle(Oracle):
    """Wrap ``fn(onehot (batch, L, 4)) -> {resolution_bp: array}`` (or one array).

    ``identity`` names what determines the function's numerics (a version string, a
    weights hash); by default the hash of the function's source code is used.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        *,
        name: str,
        input_length: int,
        heads: tuple[OutputHead, ...],
        batch_size: int = 8,
        identity: str | None = None,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.name = name
        self.input_length = int(input_length)
        self.heads = tuple(heads)
        self.batch_size = int(batch_size)
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

    def _predict_batch(self, onehot: np.ndarray) -> dict[int, np.ndarray]:
        out = self.fn(onehot)
        if not isinstance(out, dict):
            out = {self.heads[0].resolution_bp: out}
        return out
