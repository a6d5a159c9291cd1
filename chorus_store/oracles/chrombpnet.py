"""ChromBPNet and BPNet: one model per track (chorus's 9 accessibility and 744 ChIP
models), read from the HDF5 files chorus downloads by one of two frameworks; their count
head is chorus's joint softmax (docs/oracles.md, "chrombpnet")."""

from __future__ import annotations

import contextlib
import os
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.genome.track_tables import chrombpnet_models
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths
from chorus_store.oracles.common import package_version, select_device, tf_device, torch_numerics
from chorus_store.oracles.models.chrombpnet import (
    BPNET_DIL_LAYERS,
    BPNET_FILTERS,
    INPUT_LENGTH,
    N_STRANDS,
    PROFILE_BINS,
    PROFILE_OFFSET,
    bpnet_architecture,
    expected_counts,
    fused_profile_bias,
    keras,
    load_weights_by_name,
)

if TYPE_CHECKING:
    from chorus_store.recipes import Recipe

__all__ = [
    "FRAMEWORKS",
    "ChromBPNetKeras",
    "ChromBPNetOracle",
    "ChromBPNetTorch",
    "ModelSpec",
    "load",
]

#: (logits, log counts) of one model for the block being predicted
Forward = Callable[[Any], tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------
# which model serves which column
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """The model behind one track: ``kind`` is ``chrombpnet`` or ``bpnet``."""

    track_id: str
    kind: str
    accession: str

    @property
    def filename(self) -> str:
        """The file name the weights directory must hold for this model."""
        if self.kind == "chrombpnet":
            return f"{self.accession}.h5"
        return f"{self.accession}_model.h5"

    @property
    def n_strands(self) -> int:
        return 1 if self.kind == "chrombpnet" else N_STRANDS


def _registry_path(recipe: Recipe) -> Path:
    raw = recipe.oracle.get("registry")
    if raw is None:
        if recipe.tracks.get("format") == "chrombpnet":
            return Path(str(recipe.tracks["path"]))
        raise RecipeError(
            f"recipe {recipe.name!r}: the chrombpnet adapter needs the model registry; set "
            f"[oracle] registry = the chrombpnet_JASPAR_metadata.tsv (or use [tracks] "
            f"format = 'chrombpnet')"
        )
    path = Path(os.path.expanduser(str(raw)))
    if not path.is_absolute() and recipe.source:
        path = Path(recipe.source).parent / path
    return path


def _column_models(recipe: Recipe, head: str, registry: list[ModelSpec]) -> dict[int, ModelSpec]:
    """Column of the head → its model, matched by track id against the registry."""
    by_id = {m.track_id: m for m in registry}
    frame = recipe.track_table().frame
    rows = frame[frame["head"] == head]
    unknown = sorted(set(rows["track_id"]) - set(by_id))
    if unknown:
        raise RecipeError(
            f"recipe {recipe.name!r}: {len(unknown)} track(s) have no model in the registry, "
            f"e.g. {unknown[:5]}; ChromBPNet track ids are 'ASSAY:cell' or 'CHIP:cell:TF'"
        )
    models: dict[int, ModelSpec] = {}
    for track_id, column, n_strands in zip(
        rows["track_id"], rows["column"], rows["n_strands"], strict=True
    ):
        spec = by_id[str(track_id)]
        if int(n_strands) != spec.n_strands:
            raise RecipeError(
                f"track {track_id} has n_strands = {n_strands} in the track table, but its "
                f"{spec.kind} model has {spec.n_strands}"
            )
        models[int(column)] = spec
    return models


# --------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------


class ChromBPNetOracle(Oracle):
    """ChromBPNet/BPNet models, one per column, loaded on first use and kept in an LRU.

    What both frameworks share: the head checks, the model cache, the count head and the
    fingerprint; a subclass per framework loads a model file, runs a block and picks the
    device (:class:`ChromBPNetKeras`, :class:`ChromBPNetTorch`).

    Parameters
    ----------
    models
        The model of every column the track table uses.
    registry
        Every model of the registry, in order; all must be on disk, and their bytes make
        up the fingerprint (so tracks appended later keep the store's fingerprint).
    weights_dir
        The directory holding the model files (docs/oracles.md).
    bpnet_filters, bpnet_dil_layers
        The BPNet (ChIP) architecture the files must match.
    cache_size
        Models kept loaded; at least the layout's track shard, since every batch of a
        build task runs every model of its track shard.
    """

    per_model = True
    #: the recipe's ``[oracle] framework`` this class runs
    framework: ClassVar[str]

    def __init__(
        self,
        *,
        name: str,
        head: OutputHead,
        models: Mapping[int, ModelSpec],
        registry: list[ModelSpec],
        weights_dir: Path,
        batch_size: int,
        input_length: int = INPUT_LENGTH,
        bpnet_filters: int = BPNET_FILTERS,
        bpnet_dil_layers: int = BPNET_DIL_LAYERS,
        cache_size: int = 16,
        device: str = "auto",
    ) -> None:
        super().__init__(name=name, input_length=input_length, heads=(head,), batch_size=batch_size)
        if (head.resolution_bp, head.n_bins, head.n_strands) != (1, PROFILE_BINS, N_STRANDS):
            raise RecipeError(
                f"the chrombpnet head must be resolution_bp = 1, n_bins = {PROFILE_BINS}, "
                f"n_strands = {N_STRANDS}; the recipe declares {head.as_dict()}"
            )
        if head.start_bp(self.input_length) != PROFILE_OFFSET or self.input_length != INPUT_LENGTH:
            raise RecipeError(
                f"ChromBPNet/BPNet read {INPUT_LENGTH} bp and predict the central "
                f"{PROFILE_BINS} (offset {PROFILE_OFFSET}); the recipe declares input_length "
                f"{self.input_length}, offset {head.start_bp(self.input_length)}"
            )
        self.models = dict(models)
        self.registry = list(registry)
        self.weights_dir = weights_dir
        self.bpnet_filters, self.bpnet_dil_layers = int(bpnet_filters), int(bpnet_dil_layers)
        self.cache_size = max(1, int(cache_size))
        self.models_loaded: list[str] = []  # track ids, in load order (tests, logs)
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._in_use = 0  # models the running call asks for
        self._weights_sha256: str | None = None
        missing = [m.filename for m in self.registry if not (weights_dir / m.filename).is_file()]
        if missing:
            raise RecipeError(
                f"{len(missing)} of the {len(self.registry)} ChromBPNet/BPNet model files are "
                f"missing from {weights_dir}: {', '.join(missing[:8])}"
                f"{', ...' if len(missing) > 8 else ''}. Expected <ENCFF accession>.h5 "
                f"(fold-0 chrombpnet_nobias) for ATAC/DNASE and <BP id>_model.h5 (the "
                f"JASPAR MODEL_URL file) for CHIP"
            )
        self._device = self._select_device(device)

    # ---------------------------------------------------------------- per framework
    @abstractmethod
    def _select_device(self, device: str) -> Any:
        """The framework's device for ``device`` (``auto``, ``cpu``, ``cuda[:N]``)."""

    @property
    @abstractmethod
    def device_type(self) -> str:
        """``cpu`` or ``cuda``: part of the fingerprint."""

    @abstractmethod
    def _load(self, spec: ModelSpec, path: Path) -> Any:
        """The model in ``path``, checked against ``spec``, ready to run."""

    @abstractmethod
    def _forward(self, onehot: np.ndarray) -> Forward:
        """A function running one loaded model on the block ``onehot``."""

    @abstractmethod
    def _numerics(self) -> dict[str, Any]:
        """The framework's versions and settings, for the fingerprint."""

    # ---------------------------------------------------------------- models
    def model(self, column: int) -> Any:
        """The loaded model of ``column`` (least recently used ones are dropped)."""
        if column in self._cache:
            self._cache.move_to_end(column)
            return self._cache[column]
        spec = self.models.get(column)
        if spec is None:
            raise RecipeError(f"column {column} of {self.name} has no track in the track table")
        loaded = self._load(spec, self.weights_dir / spec.filename)
        self.models_loaded.append(spec.track_id)
        self._cache[column] = loaded
        # never evict a model the current call still needs: a call asking for more
        # columns than the cache holds would otherwise reload every model every batch
        while len(self._cache) > max(self.cache_size, self._in_use):
            self._cache.popitem(last=False)
        return loaded

    def _bpnet_desc(self) -> str:
        return f"{self.bpnet_filters} filters × {self.bpnet_dil_layers} dilated layers"

    # ---------------------------------------------------------------- prediction
    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        head = self.heads[0]
        cols = [int(c) for c in columns[head.name]]
        self._in_use = len(cols)
        out = np.zeros((onehot.shape[0], PROFILE_BINS, len(cols), N_STRANDS), np.float32)
        forward = self._forward(onehot)
        for j, column in enumerate(cols):
            logits, log_counts = forward(self.model(column))
            profile = expected_counts(logits, log_counts)
            out[:, :, j, : profile.shape[2]] = profile
        return {head.name: out}

    # ---------------------------------------------------------------- identity
    def describe(self) -> dict[str, Any]:
        if self._weights_sha256 is None:
            self._weights_sha256 = sha256_paths(
                *(self.weights_dir / m.filename for m in self.registry)
            )
        return {
            "adapter": "chrombpnet",
            "architecture": {
                "chrombpnet": "chrombpnet_nobias fold 0, architecture from the .h5",
                "bpnet": {
                    "filters": self.bpnet_filters,
                    "n_dil_layers": self.bpnet_dil_layers,
                    "tasks": "1 task, 2 strands, 2 zero control tracks",
                },
            },
            "count_head": "joint softmax over positions x strands; expm1(C) or exp(C) - n",
            "models": len(self.registry),
            "weights_sha256": self._weights_sha256,
            **self._numerics(),
            "device_type": self.device_type,
        }

    def close(self) -> None:
        self._cache.clear()


@dataclass
class _KerasModel:
    model: Any
    zeros: list[np.ndarray]  # the control inputs, zero, one batch


class ChromBPNetKeras(ChromBPNetOracle):
    """The models through Keras on TensorFlow, as chorus runs them: ChromBPNet files loaded
    whole, BPNet files as weights into :func:`bpnet_architecture` (docs/oracles.md).

    The framework keeps its recipe name ``tf_keras`` (Keras on TensorFlow); since
    TensorFlow 2.16 that Keras is Keras 3, which reads chorus's Keras 2 ``.h5`` files, so
    no second TensorFlow (``tf-keras`` requires ``tensorflow`` beside ``tensorflow-cpu``)
    is needed."""

    framework = "tf_keras"

    def _select_device(self, device: str) -> Any:
        keras()
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            # share the GPU instead of reserving all of it at the first model; a GPU
            # initialised by an earlier oracle keeps its setting
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        name = tf_device(device)
        if name is None:  # auto: the first GPU when there is one
            name = "/GPU:0" if gpus else "/CPU:0"
        elif name != "/CPU:0" and int(name.rsplit(":", 1)[1]) >= len(gpus):
            raise RecipeError(f"device {device!r}: TensorFlow sees {len(gpus)} GPU(s)")
        self._device_type = "cpu" if name == "/CPU:0" else "cuda"
        if self._device_type == "cuda":
            # cuDNN picks nondeterministic convolution algorithms otherwise; a row's value
            # must not depend on the run that computed it
            tf.config.experimental.enable_op_determinism()
        return name

    @property
    def device_type(self) -> str:
        return self._device_type

    def _load(self, spec: ModelSpec, path: Path) -> Any:
        k = keras()
        import tensorflow as tf

        try:
            if spec.kind == "chrombpnet":
                # compile=False: the saved loss (multinomial_nll) is not needed to predict;
                # "tf" for the Lambda layers of chrombpnet's bias-aware models, which
                # Keras 3 deserialises only outside safe mode (the files are the user's own)
                model = k.models.load_model(
                    str(path), compile=False, custom_objects={"tf": tf}, safe_mode=False
                )
            else:
                model = bpnet_architecture(self.bpnet_filters, self.bpnet_dil_layers)
                load_weights_by_name(model, path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RecipeError(
                f"{path} ({spec.track_id}) is not a loadable {spec.kind} model"
                f"{'' if spec.kind == 'chrombpnet' else ' of ' + self._bpnet_desc()}: "
                f"{str(exc)[:400]}"
            ) from exc
        want_inputs = 1 if spec.kind == "chrombpnet" else 3
        profiles = ((PROFILE_BINS,), (PROFILE_BINS, 1)) if spec.n_strands == 1 else None
        shapes = [tuple(t.shape) for t in model.outputs]
        ok = (
            len(model.inputs) == want_inputs
            and tuple(model.inputs[0].shape[1:]) == (self.input_length, 4)
            and len(shapes) == 2
            and shapes[0][1:] in (profiles or ((PROFILE_BINS, spec.n_strands),))
            and len(shapes[1]) == 2
        )
        if not ok:
            raise RecipeError(
                f"{path} ({spec.track_id}) takes {[tuple(t.shape) for t in model.inputs]} and "
                f"returns {shapes}; a {spec.kind} model takes (None, {self.input_length}, 4)"
                f"{' and two control inputs' if want_inputs == 3 else ''} and returns profile "
                f"logits (None, {PROFILE_BINS}[, {spec.n_strands}]) and log counts (None, 1)"
            )
        zeros = [
            np.zeros([self.batch_size] + [d or 1 for d in t.shape[1:]], np.float32)
            for t in model.inputs[1:]
        ]  # chorus #120: control shapes from the model, None → 1
        return _KerasModel(model, zeros)

    def _forward(self, onehot: np.ndarray) -> Forward:
        import tensorflow as tf

        def run(model: _KerasModel) -> tuple[np.ndarray, np.ndarray]:
            # predict_on_batch runs a traced graph (one trace per model: the batch shape
            # is fixed), about twice as fast as an eager call
            with tf.device(self._device):
                profile, counts = model.model.predict_on_batch([onehot, *model.zeros])
            return np.asarray(profile), np.asarray(counts)

        return run

    def _numerics(self) -> dict[str, Any]:
        import tensorflow as tf

        # the module's version: tensorflow-cpu and tensorflow are one module, two names
        return {"framework": f"keras {keras().__version__}, tensorflow {tf.__version__}"}


class ChromBPNetTorch(ChromBPNetOracle):
    """The same files through bpnet-lite (PyTorch, no TensorFlow), for the 8-dilated-layer
    models every shipped one is, with BPNet's profile bias folded right (docs/oracles.md)."""

    framework = "bpnet-lite"

    def _select_device(self, device: str) -> Any:
        return select_device(device)

    @property
    def device_type(self) -> str:
        return str(self._device.type)

    def _load(self, spec: ModelSpec, path: Path) -> Any:
        import bpnetlite
        import torch
        from bpnetlite.bpnet import BasePairNet

        try:
            if spec.kind == "chrombpnet":
                model = bpnetlite.BPNet.from_chrombpnet(str(path))
            else:
                model = BasePairNet.from_bpnet(str(path))
                model.fconv.bias = torch.nn.Parameter(fused_profile_bias(path))
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise RecipeError(
                f"{path} ({spec.track_id}) is not a {spec.kind} model bpnet-lite can read: "
                f"{str(exc)[:400]}"
            ) from exc
        # bpnet-lite fixes the crop (557) and the count-pooling window to those of 8
        # dilated layers; other depths would silently pool over the wrong positions
        want = (
            (model.n_layers, model.n_filters)
            if spec.kind == "chrombpnet"
            else (self.bpnet_dil_layers, self.bpnet_filters)
        )
        if model.n_layers != BPNET_DIL_LAYERS or (model.n_layers, model.n_filters) != want:
            raise RecipeError(
                f"{path} ({spec.track_id}) has {model.n_layers} dilated layers and "
                f"{model.n_filters} filters; bpnet-lite reproduces {BPNET_DIL_LAYERS}-layer "
                f"models{'' if spec.kind == 'chrombpnet' else ' of ' + self._bpnet_desc()}"
            )
        return model.to(self._device).eval()

    def _forward(self, onehot: np.ndarray) -> Forward:
        import torch

        x = torch.from_numpy(onehot).transpose(1, 2).contiguous().to(self._device)
        controls = torch.zeros((x.shape[0], N_STRANDS, x.shape[2]), device=self._device)

        def run(model: Any) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                if model.n_control_tracks:
                    profile, counts = model(x, controls)
                else:
                    profile, counts = model(x)
            # (B, strands, 1000) → (B, 1000, strands), the Keras layout
            return profile.transpose(1, 2).float().cpu().numpy(), counts.float().cpu().numpy()

        return run

    def _numerics(self) -> dict[str, Any]:
        return {
            "framework": (
                f"bpnet-lite {package_version('bpnet-lite')}, torch {package_version('torch')}"
            ),
            **torch_numerics(self._device),
        }


#: the recipe's ``[oracle] framework`` → the class that runs it
FRAMEWORKS: dict[str, type[ChromBPNetOracle]] = {
    cls.framework: cls for cls in (ChromBPNetKeras, ChromBPNetTorch)
}


def load(recipe: Recipe, *, weights: str | None, device: str) -> ChromBPNetOracle:
    """Load the ChromBPNet/BPNet oracle a recipe describes (``[oracle] adapter = "chrombpnet"``).

    ``weights`` (``--weights``) overrides the recipe's ``weights``; one of them must name
    the directory of model files. Recipe keys: ``framework`` (``tf_keras`` or
    ``bpnet-lite``), ``registry`` (default: the ``[tracks]`` path), ``bpnet_filters``,
    ``bpnet_dil_layers``, ``model_cache`` (default: the layout's track shard).
    """
    raw = weights or recipe.oracle.get("weights")
    if not raw:
        raise RecipeError(
            f"recipe {recipe.name!r} needs the ChromBPNet/BPNet weights: download the fold-0 "
            f"chrombpnet_nobias .h5 of each ENCODE accession (as <ENCFF>.h5) and the JASPAR "
            f"BPNet models (MODEL_URL of chrombpnet_JASPAR_metadata.tsv, <BP id>_model.h5) "
            f"into one directory and pass --weights DIR"
        )
    weights_dir = Path(os.path.expanduser(str(raw)))
    if not weights_dir.is_dir():
        raise RecipeError(
            f"ChromBPNet weights {weights_dir} is not a directory; pass the directory holding "
            f"<ENCFF>.h5 and <BP id>_model.h5 files with --weights"
        )
    if len(recipe.heads) != 1:
        raise RecipeError(f"recipe {recipe.name!r}: the chrombpnet adapter has one head, 'profile'")
    if not recipe.oracle.get("per_model", False):
        raise RecipeError(
            f"recipe {recipe.name!r}: ChromBPNet is one model per track; set per_model = true"
        )
    framework = str(recipe.oracle.get("framework", "tf_keras"))
    cls = FRAMEWORKS.get(framework)
    if cls is None:
        raise RecipeError(
            f"recipe {recipe.name!r}: chrombpnet framework must be one of "
            f"{tuple(FRAMEWORKS)}, not {framework!r}"
        )
    head = recipe.heads[0]
    registry = [
        ModelSpec(m["track_id"], m["kind"], m["accession"])
        for m in chrombpnet_models(_registry_path(recipe))
    ]
    return cls(
        name=recipe.name,
        head=head,
        models=_column_models(recipe, head.name, registry),
        registry=registry,
        weights_dir=weights_dir,
        batch_size=recipe.batch_size,
        input_length=recipe.input_length,
        bpnet_filters=int(recipe.oracle.get("bpnet_filters", BPNET_FILTERS)),
        bpnet_dil_layers=int(recipe.oracle.get("bpnet_dil_layers", BPNET_DIL_LAYERS)),
        cache_size=int(recipe.oracle.get("model_cache", recipe.layout.tracks_per_shard)),
        device=device,
    )
