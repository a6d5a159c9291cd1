"""Any PyTorch model given as an ``nn.Module`` class, its config and a state dict on disk:
the recipe names all three, so a plain PyTorch model needs no adapter of its own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths
from chorus_store.oracles.common import (
    import_object,
    model_input,
    read_config,
    read_state_dict,
    select_device,
    torch_numerics,
)

if TYPE_CHECKING:
    from chorus_store.recipes import Recipe

__all__ = ["TorchOracle", "load"]


class TorchOracle(Oracle):
    """A PyTorch model loaded from ``architecture`` + ``config`` + ``weights``.

    Parameters
    ----------
    architecture
        ``"package.module:ClassName"`` of the ``nn.Module``.
    config
        Keyword arguments of the class, or the path of a JSON file holding them.
    weights
        A state dict saved with ``torch.save(model.state_dict(), path)``.
    heads
        The model's outputs. ``output_keys`` maps a head's name to the key of a
        dict-returning model (default: the model returns one tensor, or a dict keyed by
        the head names).
    input_layout
        ``"NLC"`` (batch, length, 4) or ``"NCL"`` (batch, 4, length), what the model takes.
    output_layout
        ``"NLT"`` (batch, bins, tracks) or ``"NTL"`` (batch, tracks, bins), what it returns.
    """

    def __init__(
        self,
        *,
        name: str,
        architecture: str,
        config: Mapping[str, Any] | str | Path,
        weights: str | Path,
        input_length: int,
        heads: tuple[OutputHead, ...],
        batch_size: int,
        input_layout: str = "NCL",
        output_layout: str = "NLT",
        output_keys: Mapping[str, str | None] | None = None,
        device: str = "auto",
        tf32: bool = False,
    ) -> None:
        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        if input_layout not in ("NLC", "NCL") or output_layout not in ("NLT", "NTL"):
            raise RecipeError(
                f"input_layout must be NLC or NCL and output_layout NLT or NTL, got "
                f"{input_layout!r}/{output_layout!r}"
            )
        self.input_layout, self.output_layout = input_layout, output_layout
        self.output_keys = dict(output_keys or {})
        self.architecture = architecture
        self.config = read_config(config, what="model config")
        self.weights = Path(weights).expanduser()
        if not self.weights.exists():
            raise RecipeError(
                f"weights {self.weights} do not exist; download them or point the recipe's "
                f"'weights' (or --weights) at them"
            )
        self._weights_sha256 = sha256_paths(self.weights)
        self.device = select_device(device, tf32=tf32)
        cls = import_object(architecture)
        model = cls(**self.config)
        state = read_state_dict(self.weights, what="weights")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RecipeError(
                f"weights {self.weights} do not fit {architecture} with config "
                f"{self.config}: {str(exc)[:400]}"
            ) from exc
        self.model = model.to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        return {
            "adapter": "pytorch",
            "architecture": self.architecture,
            "config": self.config,
            "weights_sha256": self._weights_sha256,
            "layouts": [self.input_layout, self.output_layout],
            **torch_numerics(self.device),
        }

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, Any]:
        import torch

        x = model_input(onehot, self.device)
        if self.input_layout == "NCL":
            x = x.transpose(1, 2)
        with torch.inference_mode():
            y = self.model(x.contiguous())
        out: dict[str, Any] = {}
        for head in self.heads:
            key = self.output_keys.get(head.name, head.name if isinstance(y, dict) else None)
            t = y[key] if key is not None else y
            if not head.is_scalar and self.output_layout == "NTL":
                t = t.transpose(1, 2)
            out[head.name] = t.float()  # stays on the device: the build reduces it there
        return out

    def close(self) -> None:
        del self.model


def load(recipe: Recipe, *, weights: str | None = None, device: str = "auto") -> TorchOracle:
    """The PyTorch model of ``recipe`` (``[oracle] adapter = "pytorch"``): keys
    ``architecture``, ``config``, ``weights`` (``--weights`` wins), ``input_layout``,
    ``output_layout``, ``tf32``."""
    return TorchOracle(
        name=recipe.name,
        architecture=str(recipe.oracle["architecture"]),
        config=recipe.oracle.get("config", {}),
        weights=weights or str(recipe.oracle["weights"]),
        input_length=recipe.input_length,
        heads=recipe.heads,
        batch_size=recipe.batch_size,
        input_layout=str(recipe.oracle.get("input_layout", "NCL")),
        output_layout=str(recipe.oracle.get("output_layout", "NLT")),
        device=device,
        tf32=bool(recipe.oracle.get("tf32", False)),
    )
