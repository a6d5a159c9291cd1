"""PyTorch models: an ``nn.Module`` class, its config, and a state dict on disk.

This is the loading path of every PyTorch oracle (the demo model, and the ports of
Enformer, Borzoi, Sei, LegNet, ...): import the architecture, build it from its config,
load the state dict with ``weights_only=True``, switch to eval mode, and run batches under
``torch.inference_mode`` on CUDA when present.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths

__all__ = ["TorchOracle", "import_object", "select_device", "torch_numerics", "model_input"]


def import_object(spec: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise RecipeError(f"{spec!r} is not of the form 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"cannot import {module_name!r} for {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise RecipeError(f"{module_name!r} has no attribute {attr!r}") from exc


def torch_numerics(device: Any) -> dict[str, Any]:
    """What of a torch runtime changes a model's numbers: version, device, TF32 on CUDA,
    oneDNN on CPU."""
    import torch

    out: dict[str, Any] = {
        "runtime": f"torch {torch.__version__}",
        "device_type": device.type,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    if device.type == "cuda":  # TF32 changes the last bits of every conv/matmul
        out["tf32"] = [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]
    else:  # oneDNN's convolutions split their sums by thread count (see select_device)
        out["onednn"] = bool(torch.backends.mkldnn.enabled)
    return out


def select_device(device: str, *, tf32: bool = False) -> Any:
    """``auto`` → CUDA when present, else CPU; anything else as torch names it.

    Deterministic algorithms are switched on for the process
    (``torch.use_deterministic_algorithms``; on CUDA with the cuBLAS workspace setting it
    needs), so a model that would use a non-deterministic kernel fails loudly instead of
    giving bytes that change from run to run. On CUDA, TF32 convolutions and matmuls are
    off unless ``tf32`` (the recipe's ``[oracle] tf32 = true``) opts in; both settings are
    in the oracle's fingerprint (:func:`torch_numerics`).

    On CPU this turns oneDNN (``torch.backends.mkldnn``) off for the process: oneDNN's
    convolutions give results that depend in the last bits on the number of intra-op
    threads (measured on the demo CNN: up to 4e-6 between 1 and 2 threads), which would
    make a background depend on how many workers shared the machine. PyTorch's native
    kernels give the same bytes for any thread count (a test checks it), and were not
    slower on the demo model.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cpu":
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    if resolved.type == "cuda":
        # must be set before cuBLAS makes its first handle; deterministic GEMMs need it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.use_deterministic_algorithms(True)
    return resolved


def model_input(onehot: np.ndarray, device: Any) -> Any:
    """A host one-hot block as a tensor on ``device``; on CUDA through pinned memory with a
    non-blocking copy, so the host does not wait for the model's previous block to finish
    (a copy from pageable memory would)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(onehot))
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


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
        import torch

        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        if input_layout not in ("NLC", "NCL") or output_layout not in ("NLT", "NTL"):
            raise RecipeError(
                f"input_layout must be NLC or NCL and output_layout NLT or NTL, got "
                f"{input_layout!r}/{output_layout!r}"
            )
        self.input_layout, self.output_layout = input_layout, output_layout
        self.output_keys = dict(output_keys or {})
        self.architecture = architecture
        if isinstance(config, (str, Path)):
            config_path = Path(config)
            if not config_path.is_file():
                raise RecipeError(f"model config {config_path} does not exist")
            config = json.loads(config_path.read_text())
        self.config: dict[str, Any] = dict(config)  # type: ignore[arg-type]
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
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RecipeError(
                f"weights {self.weights} do not fit {architecture} with config "
                f"{self.config}: {str(exc)[:400]}"
            ) from exc
        self.model = model.to(self.device).eval()
        torch.backends.cudnn.benchmark = False

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
