"""Enformer (Avsec et al. 2021) in PyTorch (``enformer_pytorch``, the default) or as
DeepMind's TensorFlow SavedModel, picked by the recipe's ``framework``; both give the
same heads in the same track order (docs/oracles.md, "enformer")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths
from chorus_store.oracles.common import (
    from_pretrained,
    hf_weight_files,
    model_input,
    package_version,
    select_device,
    tf_device,
    torch_numerics,
)

if TYPE_CHECKING:
    from chorus_store.recipes import Recipe

__all__ = ["EnformerTorchOracle", "EnformerTFOracle", "load", "TRUNK_INPUT_BP"]

#: bp the network itself sees: the TF-Hub model crops its 393,216 bp input to the central
#: 196,608 bp (Avsec et al. 2021; deepmind-research enformer.py SEQUENCE_LENGTH)
TRUNK_INPUT_BP = 196_608

#: EnformerConfig fields that determine the numerics (dropouts are inactive in eval mode,
#: checkpointing changes memory, not values)
_ARCH_KEYS = (
    "dim",
    "depth",
    "heads",
    "output_heads",
    "target_length",
    "attn_dim_key",
    "num_downsamples",
    "dim_divisible_by",
    "use_tf_gamma",
)

_TORCH_HINT = (
    "download the Hugging Face model EleutherAI/enformer-official-rough (config.json + "
    "pytorch_model.bin), e.g. `huggingface-cli download EleutherAI/enformer-official-rough "
    "--local-dir DIR`, and pass --weights DIR (or set the recipe's [oracle] weights)"
)
_TF_HINT = (
    "download DeepMind's Enformer SavedModel (TF-Hub/Kaggle deepmind/enformer/1, or the "
    "Hugging Face mirror lucapinello/chorus-enformer), extract it so DIR holds "
    "saved_model.pb and variables/, and pass --weights DIR (or set the recipe's [oracle] "
    "weights)"
)


def _weights_dir(path: str | Path, *, required: str, hint: str) -> Path:
    """The weights directory, checked for the file its framework needs."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise RecipeError(f"Enformer weights {directory} {what}: {hint}")
    if not (directory / required).is_file():
        raise RecipeError(f"Enformer weights {directory} hold no {required}: {hint}")
    return directory


class _EnformerOracle(Oracle):
    """What both frameworks share: the recipe's shape, and the head checks."""

    framework: str

    def __init__(
        self, *, name: str, input_length: int, heads: tuple[OutputHead, ...], batch_size: int
    ) -> None:
        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        for head in self.heads:
            centred = (self.input_length - head.n_bins * head.resolution_bp) // 2
            if head.is_scalar or head.start_bp(self.input_length) != centred:
                raise RecipeError(
                    f"recipe {name!r}: Enformer's head {head.name!r} is binned and centred in "
                    f"the input (offset_bp {centred} for {head.n_bins} x "
                    f"{head.resolution_bp} bp in {self.input_length} bp), not offset_bp "
                    f"{head.offset_bp} / resolution_bp {head.resolution_bp}"
                )

    def _check_head(self, head: OutputHead, bins: int | None, columns: int | None) -> None:
        """Refuse a recipe head whose size is not what the model returns."""
        if (bins is not None and head.n_bins != bins) or (
            columns is not None and head.n_columns != columns
        ):
            raise RecipeError(
                f"the Enformer weights return {bins} bins x {columns} tracks for head "
                f"{head.name!r}, but recipe {self.name!r} declares {head.n_bins} x "
                f"{head.n_columns}: the weights are not the model the recipe describes "
                f"(fix [[oracle.heads]] or pass the right weights)"
            )


class EnformerTorchOracle(_EnformerOracle):
    """Enformer through ``enformer_pytorch``, from a Hugging Face model directory.

    Parameters
    ----------
    weights
        Directory written by ``Enformer.save_pretrained`` (``config.json`` and
        ``pytorch_model.bin``), e.g. a local copy of EleutherAI/enformer-official-rough.
    use_tf_gamma
        Use TensorFlow's precomputed gamma positional features (what
        ``enformer_pytorch.from_pretrained`` switches on for the official weights, whose
        ``config.json`` predates the option); ``None`` keeps the directory's config.
        Needs a trunk of 1,536 positions and 192 relative-position features per head.
    """

    framework = "pytorch"

    def __init__(
        self,
        *,
        name: str,
        weights: str | Path,
        input_length: int,
        heads: tuple[OutputHead, ...],
        batch_size: int,
        use_tf_gamma: bool | None = None,
        device: str = "auto",
        tf32: bool = False,
    ) -> None:
        from enformer_pytorch import Enformer

        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        if self.input_length < TRUNK_INPUT_BP or (self.input_length - TRUNK_INPUT_BP) % 2:
            raise RecipeError(
                f"recipe {name!r}: the PyTorch Enformer crops the central {TRUNK_INPUT_BP} bp "
                f"of its input; input_length {self.input_length} must be at least that and "
                f"differ from it by an even number of bp"
            )
        self.weights = _weights_dir(weights, required="config.json", hint=_TORCH_HINT)
        files = hf_weight_files(self.weights)
        if not files:
            raise RecipeError(
                f"Enformer weights {self.weights} hold no weights file: {_TORCH_HINT}"
            )
        # what from_pretrained reads: the config and the weights, not READMEs or caches
        self._weights_sha256 = sha256_paths(self.weights / "config.json", *files)
        overrides = {} if use_tf_gamma is None else {"use_tf_gamma": bool(use_tf_gamma)}
        model = from_pretrained(
            Enformer,
            self.weights,
            what="Enformer",
            into=f"enformer_pytorch {package_version('enformer-pytorch')}",
            **overrides,
        )
        cfg = model.config
        resolution = 2**cfg.num_downsamples
        positions, features = TRUNK_INPUT_BP // resolution, cfg.dim // cfg.heads
        if cfg.use_tf_gamma and (positions, features) != (1536, 192):
            # TF's gamma features are precomputed for the official trunk only
            raise RecipeError(
                f"use_tf_gamma needs the official trunk (1,536 positions, 192 relative-"
                f"position features per head); these weights have {positions} and "
                f"{features}: set use_tf_gamma = false in the recipe"
            )
        for head in self.heads:
            if head.name not in cfg.output_heads:
                raise RecipeError(
                    f"recipe {name!r} declares a head {head.name!r}; the Enformer weights "
                    f"{self.weights} have {sorted(cfg.output_heads)}"
                )
            if head.resolution_bp != resolution:
                raise RecipeError(
                    f"head {head.name!r}: the model's bins are {resolution} bp, the recipe "
                    f"says {head.resolution_bp}"
                )
            self._check_head(head, cfg.target_length, int(cfg.output_heads[head.name]))
        self.config: dict[str, Any] = {k: getattr(cfg, k, None) for k in _ARCH_KEYS}
        self.device = select_device(device, tf32=tf32)
        self.model = model.to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        import torch

        desc: dict[str, Any] = {
            "adapter": "enformer",
            "framework": "pytorch",
            "architecture": "enformer_pytorch:Enformer",
            "config": self.config,
            "trunk_input_bp": TRUNK_INPUT_BP,
            "weights_sha256": self._weights_sha256,
            "versions": {
                "torch": torch.__version__,
                "enformer_pytorch": package_version("enformer-pytorch"),
                "transformers": package_version("transformers"),
            },
            **torch_numerics(self.device),
        }
        return desc

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, Any]:
        import torch

        trim = (self.input_length - TRUNK_INPUT_BP) // 2
        x = model_input(onehot[:, trim : trim + TRUNK_INPUT_BP], self.device)  # (B, L, 4), NLC
        with torch.inference_mode():
            # the trunk once, then only the heads the recipe reads (the mouse head is
            # skipped); the heads stay on the device, where the build reduces them
            embedding = self.model(x, return_only_embeddings=True)
            return {
                head.name: self.model.heads[head.name](embedding).float() for head in self.heads
            }

    def close(self) -> None:
        del self.model


class EnformerTFOracle(_EnformerOracle):
    """Enformer's TensorFlow SavedModel, called like chorus: ``predict_on_batch(x)['human']``.

    Parameters
    ----------
    weights
        SavedModel directory (``saved_model.pb`` + ``variables/``): TF-Hub's
        ``deepmind/enformer/1`` (whose root object has a ``.model`` attribute) or a bare
        SavedModel with ``predict_on_batch`` at its root, as chorus accepts both.
    device
        ``"auto"`` (TensorFlow's placement: its first GPU when present), ``"cpu"``,
        ``"cuda"`` or ``"cuda:N"``.
    """

    framework = "tensorflow"

    def __init__(
        self,
        *,
        name: str,
        weights: str | Path,
        input_length: int,
        heads: tuple[OutputHead, ...],
        batch_size: int,
        device: str = "auto",
    ) -> None:
        import tensorflow as tf

        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        self.weights = _weights_dir(weights, required="saved_model.pb", hint=_TF_HINT)
        hashed = [self.weights / "saved_model.pb"]
        if (self.weights / "variables").is_dir():
            hashed.append(self.weights / "variables")
        self._weights_sha256 = sha256_paths(*hashed)
        self._tf_device = tf_device(device)
        try:
            with tf.device(self._tf_device):
                loaded = tf.saved_model.load(str(self.weights))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise RecipeError(
                f"Enformer SavedModel {self.weights} does not load: {str(exc)[:400]}"
            ) from exc
        model = loaded.model if hasattr(loaded, "model") else loaded  # TF-Hub wraps it
        if not hasattr(model, "predict_on_batch"):
            raise RecipeError(
                f"the SavedModel {self.weights} has no predict_on_batch (nor .model."
                f"predict_on_batch): it is not the Enformer TF-Hub model. {_TF_HINT}"
            )
        self._loaded, self._predict = loaded, model.predict_on_batch
        self._signature = self._check_signature()

    def _check_signature(self) -> dict[str, Any]:
        """Compare the saved input/output shapes with the recipe, without a forward pass."""
        concrete = list(getattr(self._predict, "concrete_functions", []) or [])
        if not concrete:
            return {}
        args, _ = concrete[0].structured_input_signature
        outputs = concrete[0].structured_outputs
        in_shape = list(args[0].shape) if args else []
        if len(in_shape) == 3 and in_shape[1:] != [self.input_length, 4]:
            raise RecipeError(
                f"the SavedModel {self.weights} takes (batch, {in_shape[1]}, {in_shape[2]}) "
                f"input; recipe {self.name!r} says input_length {self.input_length}"
            )
        out_shapes = {str(k): list(v.shape) for k, v in dict(outputs).items()}
        for head in self.heads:
            if head.name not in out_shapes:
                raise RecipeError(
                    f"recipe {self.name!r} declares a head {head.name!r}; the SavedModel "
                    f"{self.weights} returns {sorted(out_shapes)}"
                )
            shape = out_shapes[head.name]
            if len(shape) == 3:
                self._check_head(head, shape[1], shape[2])
        return {"input": in_shape, "outputs": out_shapes}

    def describe(self) -> dict[str, Any]:
        import tensorflow as tf

        gpu = self._tf_device != "/CPU:0" and bool(tf.config.list_logical_devices("GPU"))
        return {
            "adapter": "enformer",
            "framework": "tensorflow",
            "architecture": "SavedModel predict_on_batch",
            "signature": self._signature,
            "weights_sha256": self._weights_sha256,
            "versions": {"tensorflow": tf.__version__},
            "device_type": "cuda" if gpu else "cpu",
        }

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        import tensorflow as tf

        with tf.device(self._tf_device):
            out = self._predict(tf.constant(onehot, dtype=tf.float32))
        return {head.name: np.asarray(out[head.name].numpy()) for head in self.heads}

    def close(self) -> None:
        del self._predict, self._loaded


def load(recipe: Recipe, *, weights: str | None = None, device: str = "auto") -> Oracle:
    """The Enformer of ``recipe``: ``[oracle] framework`` = ``"pytorch"`` or ``"tensorflow"``.

    ``weights`` (the CLI's ``--weights``) wins over the recipe's ``weights`` key; with
    neither, :class:`RecipeError` says what to download. Recipe keys read here:
    ``framework``, ``weights``, ``use_tf_gamma`` (PyTorch only), and the shared
    ``input_length``, ``batch_size`` and ``[[oracle.heads]]``.
    """
    spec = recipe.oracle
    framework = str(spec.get("framework", "pytorch"))
    path = weights or spec.get("weights")
    common: dict[str, Any] = {
        "name": recipe.name,
        "input_length": recipe.input_length,
        "heads": recipe.heads,
        "batch_size": recipe.batch_size,
        "device": device,
    }
    if framework == "pytorch":
        if path is None:
            raise RecipeError(f"no Enformer weights given: {_TORCH_HINT}")
        gamma = spec.get("use_tf_gamma")
        return EnformerTorchOracle(
            weights=str(path),
            use_tf_gamma=None if gamma is None else bool(gamma),
            tf32=bool(spec.get("tf32", False)),
            **common,
        )
    if framework == "tensorflow":
        if path is None:
            raise RecipeError(f"no Enformer weights given: {_TF_HINT}")
        return EnformerTFOracle(weights=str(path), **common)
    raise RecipeError(
        f"recipe {recipe.name!r}: [oracle] framework must be 'pytorch' or 'tensorflow', "
        f"not {framework!r}"
    )
