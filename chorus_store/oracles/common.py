"""What every adapter shares: package versions, object imports, torch numerics, Hugging
Face loading, state-dict and config readers, TensorFlow device names.

One module, so a fact about a framework (which flags change its numbers, how a partial
checkpoint shows) is written once; adapters import it, never each other.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from chorus_store.errors import RecipeError, UsageError

__all__ = [
    "from_pretrained",
    "hf_weight_files",
    "import_object",
    "model_input",
    "package_version",
    "read_config",
    "read_state_dict",
    "select_device",
    "tf_device",
    "torch_numerics",
]


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``; ``"unknown"`` without metadata (an
    editable checkout), so a fingerprint never fails for it."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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


# --------------------------------------------------------------------------------------
# torch numerics
# --------------------------------------------------------------------------------------


def select_device(device: str, *, tf32: bool = False) -> Any:
    """``auto`` → CUDA when present, else CPU; anything else as torch names it, with the
    process's torch numerics fixed for reproducible bytes.

    Every torch adapter calls this once before it moves its model, and records
    :func:`torch_numerics` of the result in its fingerprint. It:

    * switches deterministic algorithms on (``torch.use_deterministic_algorithms``; on
      CUDA with the cuBLAS workspace setting it needs), so a model that would use a
      non-deterministic kernel fails loudly instead of giving bytes that change from run
      to run;
    * switches cuDNN's autotuner off: the kernels it picks differ from run to run;
    * on CUDA, keeps TF32 convolutions and matmuls off unless ``tf32`` (the recipe's
      ``[oracle] tf32 = true``) opts in;
    * on CPU, turns oneDNN (``torch.backends.mkldnn``) off: oneDNN's convolutions give
      results that depend in the last bits on the number of intra-op threads (measured
      on the demo CNN: up to 4e-6 between 1 and 2 threads), which would make a background
      depend on how many workers shared the machine. PyTorch's native kernels give the
      same bytes for any thread count (a test checks it), and were not slower on the demo
      model.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = _torch_device(torch, device)
    if resolved.type == "cpu":
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    if resolved.type == "cuda":
        # must be set before cuBLAS makes its first handle; deterministic GEMMs need it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False  # autotuned kernels differ run to run
    torch.use_deterministic_algorithms(True)
    return resolved


def _torch_device(torch: Any, device: str) -> Any:
    """``torch.device(device)``, refused in one line when this torch cannot run on it (a
    CPU build asked for CUDA, a GPU index past the last) instead of torch's assertion."""
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(
            f"--device {device!r} is not a torch device ({exc}); use cpu or cuda:N"
        ) from exc
    if resolved.type == "cuda":
        if torch.version.cuda is None:
            raise UsageError(
                f"--device {device}: this torch ({torch.__version__}) is a CPU build; install "
                f"a CUDA build of torch (https://pytorch.org/get-started/locally/) or use "
                f"--device cpu"
            )
        n = torch.cuda.device_count()
        if n == 0 or (resolved.index or 0) >= n:
            raise UsageError(f"--device {device}: torch sees {n} GPU(s); use --device cpu or auto")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu")
    return resolved


def torch_numerics(device: Any) -> dict[str, Any]:
    """What of a torch runtime changes a model's numbers: version, device, deterministic
    algorithms, TF32 on CUDA, oneDNN on CPU (see :func:`select_device`)."""
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


def model_input(onehot: np.ndarray, device: Any) -> Any:
    """A host one-hot block as a tensor on ``device``; on CUDA through pinned memory with a
    non-blocking copy, so the host does not wait for the model's previous block to finish
    (a copy from pageable memory would)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(onehot))
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# --------------------------------------------------------------------------------------
# weights and configs
# --------------------------------------------------------------------------------------


def hf_weight_files(directory: Path) -> list[Path]:
    """The files ``from_pretrained`` reads weights from (not READMEs or download caches)."""
    return sorted(
        f
        for f in directory.iterdir()
        if f.is_file() and f.name.endswith((".safetensors", ".bin", ".index.json"))
    )


def from_pretrained(cls: Any, directory: Path, *, what: str, into: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` from the local ``directory`` only, refusing partial weights.

    ``from_pretrained`` only warns on missing, unexpected or mismatched tensors and
    initialises the missing ones at random; a model left partly random is worse than an
    error. ``what`` names the model and ``into`` the architecture in the messages.
    """
    try:
        model, info = cls.from_pretrained(
            str(directory), local_files_only=True, output_loading_info=True, **kwargs
        )
    except (RuntimeError, OSError, ValueError) as exc:
        raise RecipeError(
            f"{what} weights {directory} do not load into {into} with their config.json: "
            f"{str(exc)[:400]}"
        ) from exc
    incomplete = {k: list(v) for k, v in info.items() if v}  # missing/unexpected/mismatched
    if incomplete:
        listed = "; ".join(f"{k}: {v[:5]}" for k, v in incomplete.items())
        raise RecipeError(
            f"{what} weights {directory} do not fit the architecture of their config.json "
            f"({listed})"
        )
    return model


def read_state_dict(path: Path, *, what: str) -> dict[str, Any]:
    """A state dict (name → tensor) from a ``.safetensors`` file or a ``torch.save`` file,
    read with ``weights_only=True`` so no code the file names runs; a training
    checkpoint's ``state_dict`` / ``model_state_dict`` is unwrapped."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors share no base class
        raise RecipeError(f"{what} {path} are not a readable state dict: {str(exc)[:300]}") from exc
    for key in ("state_dict", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise RecipeError(
            f"{what} {path} hold a {type(state).__name__}, not a state dict (name → tensor)"
        )
    return dict(state)


def read_config(value: Mapping[str, Any] | str | Path | None, *, what: str) -> dict[str, Any]:
    """A model config given as a table (a mapping) or the path of a JSON file."""
    if value is None:
        return {}
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise RecipeError(f"{what} {path} does not exist")
        try:
            value = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise RecipeError(f"{what} must be a JSON file or a table")
    return dict(value)


# --------------------------------------------------------------------------------------
# TensorFlow
# --------------------------------------------------------------------------------------


def tf_device(device: str) -> str | None:
    """A device name as TensorFlow spells it: ``None`` for ``auto`` (TensorFlow's own
    placement), ``/CPU:0``, or ``/GPU:N`` for ``cuda``/``gpu``[``:N``]."""
    if device == "auto":
        return None
    if device == "cpu":
        return "/CPU:0"
    if device in ("cuda", "gpu") or device.startswith(("cuda:", "gpu:")):
        return f"/GPU:{device.partition(':')[2] or 0}"
    raise RecipeError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
