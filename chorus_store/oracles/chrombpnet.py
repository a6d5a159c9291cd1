"""ChromBPNet and BPNet: one Keras model per track (spec §3, ChromBPNet).

chorus's ChromBPNet oracle is 753 separate models, one per track: 9 ATAC/DNase
ChromBPNet models (the bias-corrected ``chrombpnet_nobias`` model of fold 0) and 744
BPNet ChIP-seq models from JASPAR's deep-learning collection. Every model reads a
2,114 bp one-hot window and has two heads:

* profile logits over the central 1,000 bp, ``(B, 1000)`` for the unstranded
  accessibility models or ``(B, 1000, 2)`` for the two-strand ChIP models;
* a log total count ``(B, 1)``.

The adapter turns the two heads into expected counts per base and strand exactly as
chorus's ``chorus/core/count_head.py`` does (chorus #113, #120): ONE softmax taken
jointly over every position and strand, times the total count, which is ``expm1(C)``
for a one-track model and ``exp(C) - n_tracks`` for an ``n_tracks``-track model (the
count loss pooled the tracks' ``log1p`` targets with logsumexp). It returns the head
``profile`` as ``(B, 1000, columns, 2)``; the accessibility models fill strand 0 and
leave strand 1 at zero, which the track table's ``n_strands = 1`` tells the build to
ignore.

Weights on disk (``weights`` in the recipe, or ``--weights``) are one directory::

    <dir>/<ENCFF accession>.h5     ChromBPNet: the fold-0 chrombpnet_nobias model,
                                   a whole Keras 2 model (``Model.save``, HDF5)
    <dir>/<BP id>_model.h5         BPNet: the JASPAR file, as named by MODEL_URL

The ENCFF accessions are chorus's ``CHROMBPNET_MODELS_DICT``, the ENCODE model tarballs.
chorus's Hugging Face slim mirror (``lucapinello/chorus-chrombpnet-slim``) ships each
fold-0 nobias model as ``<assay>/<cell>/fold_0/model.chrombpnet_nobias.fold_0.<ENCSR>.h5``
(its ``manifest.json`` maps ENCFF → file): copy or link it as ``<ENCFF>.h5``. The
tarballs' own ``model.chrombpnet_nobias.fold_0.*.tar`` hold a TensorFlow SavedModel
directory, which this adapter does not read; ``tf_keras.models.load_model(dir)`` then
``model.save("<ENCFF>.h5")`` converts one. Which model serves which track comes from the
registry: chorus's ``chrombpnet_JASPAR_metadata.tsv``, read by
:func:`chorus_store.genome.track_tables.chrombpnet_models`.

Two frameworks load the same files:

``framework = "tf_keras"`` (default, what chorus runs)
    ChromBPNet files with ``tf_keras.models.load_model(compile=False)``; BPNet files
    by rebuilding bpnet-refactor's architecture (:func:`bpnet_architecture`, one task,
    two strands, two control tracks, layer prefix ``main``) and loading the weights by
    layer name, as chorus does (their configs hold a ``CustomModel`` class and Python
    lambdas that cannot be deserialised portably). The control inputs are zeros whose
    shapes are read from ``model.inputs`` (chorus #120: the count control is
    ``(None, 2)``, and a ``(N, 1)`` zero shifts every log count by ``w * log 2``).
``framework = "bpnet-lite"``
    PyTorch: ``bpnetlite.BPNet.from_chrombpnet`` and ``bpnetlite.BasePairNet.from_bpnet``
    read the same HDF5 files with h5py (no TensorFlow). They reproduce the 8-dilation-layer
    models only (their crop and count-pooling window are fixed for 2,114 → 1,000 bp),
    which every shipped model is. ``from_bpnet`` folds the profile head's bias into its
    control-mixing convolution wrongly; the adapter sets the right bias
    (:func:`_fused_profile_bias`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.genome.track_tables import chrombpnet_models
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths

if TYPE_CHECKING:
    from chorus_store.recipes import Recipe

__all__ = [
    "ChromBPNetOracle",
    "ModelSpec",
    "bpnet_architecture",
    "chrombpnet_architecture",
    "expected_counts",
    "load",
]

INPUT_LENGTH = 2114  # bp, every ChromBPNet/BPNet model's input
PROFILE_BINS = 1000  # 1 bp bins, the central 1,000 bp of the input
PROFILE_OFFSET = (INPUT_LENGTH - PROFILE_BINS) // 2  # 557, spec §1.5
N_STRANDS = 2  # the head's strands: BPNet ChIP has two, ChromBPNet fills the first
FRAMEWORKS = ("tf_keras", "bpnet-lite")
#: bpnet-refactor's defaults (chorus templates/BPNet/bpnetdefaults.py): every JASPAR model
BPNET_FILTERS = 64
BPNET_DIL_LAYERS = 8
#: chrombpnet's published models: 512 filters, 8 dilated layers (ENCODE ChromBPNet)
CHROMBPNET_FILTERS = 512
CHROMBPNET_DIL_LAYERS = 8


# --------------------------------------------------------------------------------------
# the count head (chorus/core/count_head.py, #113/#120)
# --------------------------------------------------------------------------------------


def expected_counts(logits: np.ndarray, log_counts: np.ndarray) -> np.ndarray:
    """Expected counts per position and strand from a profile head and a count head.

    Parameters
    ----------
    logits
        ``(batch, positions)`` (one track) or ``(batch, positions, tracks)``.
    log_counts
        ``(batch,)`` or ``(batch, k)``; ``k > 1`` columns are summed first, as chorus's
        builder does (``predict_profiles_batch``).

    Returns
    -------
    numpy.ndarray
        ``(batch, positions, tracks)`` float64: one softmax over all positions × tracks
        jointly (so the tracks together sum to the total), times the total count
        ``expm1(C)`` for one track and ``exp(C) - tracks`` otherwise.

    Examples
    --------
    >>> p = expected_counts(np.zeros((1, 4, 2)), np.log([[2.0 + 8.0]]))
    >>> float(p.sum()), float(p[0, 0, 0])
    (8.0, 1.0)
    """
    values = np.asarray(logits, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3:
        raise ValueError(f"profile logits must be (batch, positions[, tracks]), got {values.shape}")
    counts = np.asarray(log_counts, dtype=np.float64)
    if counts.ndim == 2:
        counts = counts.sum(axis=1)
    if counts.shape != (values.shape[0],):
        raise ValueError(f"log counts {np.shape(log_counts)} do not match logits {values.shape}")
    n_tracks = values.shape[2]
    flat = values.reshape(values.shape[0], -1)
    # max-shifted: the same softmax as chorus's mean-centred one, without its overflow
    # risk; float64 because a 2,000-way normalisation accumulates
    weights = np.exp(flat - flat.max(axis=1, keepdims=True))
    probs = weights / weights.sum(axis=1, keepdims=True)
    total = np.expm1(counts) if n_tracks == 1 else np.exp(counts) - n_tracks
    expected: np.ndarray = (probs * total[:, None]).reshape(values.shape)
    return expected


# --------------------------------------------------------------------------------------
# the two Keras architectures
# --------------------------------------------------------------------------------------


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter
    try:
        import tf_keras
    except ImportError as exc:  # pragma: no cover - an extra of the package
        raise RecipeError(
            "the chrombpnet adapter's tf_keras framework needs tensorflow and tf-keras; "
            "install chorus-store with its oracle extras (pip install -e '.[oracles]') or "
            "set framework = 'bpnet-lite'"
        ) from exc
    return tf_keras


def chrombpnet_architecture(
    filters: int = CHROMBPNET_FILTERS,
    n_dil_layers: int = CHROMBPNET_DIL_LAYERS,
    input_length: int = INPUT_LENGTH,
    output_length: int = PROFILE_BINS,
) -> Any:
    """ChromBPNet's bias-free BPNet (``model_wo_bias``), the model ``*_nobias.h5`` holds.

    chrombpnet's ``bpnet_model``: a 21 bp valid convolution with ReLU, ``n_dil_layers``
    dilated (2**i) width-3 convolutions with ReLU, each added to the centre-cropped
    previous layer, then a 75 bp profile convolution cropped to ``output_length`` and
    flattened, and a dense count head on the global average. Layer names are upstream's
    (``wo_bias_bpnet_*``), which bpnet-lite's loader reads.
    """
    keras = _keras()
    layers = keras.layers
    sequence = layers.Input(shape=(input_length, 4), name="sequence")
    x = layers.Conv1D(
        filters, 21, padding="valid", activation="relu", name="wo_bias_bpnet_1st_conv"
    )(sequence)
    for i in range(1, n_dil_layers + 1):
        conv = layers.Conv1D(
            filters,
            3,
            padding="valid",
            activation="relu",
            dilation_rate=2**i,
            name=f"wo_bias_bpnet_{i}conv",
        )(x)
        crop = (x.shape[1] - conv.shape[1]) // 2
        x = layers.Cropping1D(crop, name=f"wo_bias_bpnet_{i}crop")(x)
        # upstream leaves these unnamed: a fresh Keras session calls them add, add_1, ...
        # (bpnet-lite counts dilated layers by the largest trailing number of any layer)
        x = layers.add([conv, x], name="add" if i == 1 else f"add_{i - 1}")
    profile = layers.Conv1D(1, 75, padding="valid", name="wo_bias_bpnet_prof_out_precrop")(x)
    crop = profile.shape[1] // 2 - output_length // 2
    profile = layers.Cropping1D(crop, name="wo_bias_bpnet_logitt_before_flatten")(profile)
    profile = layers.Flatten(name="wo_bias_bpnet_logits_profile_predictions")(profile)
    pooled = layers.GlobalAveragePooling1D(name="gap")(x)
    counts = layers.Dense(1, name="wo_bias_bpnet_logcount_predictions")(pooled)
    return keras.Model(inputs=[sequence], outputs=[profile, counts], name="model_wo_bias")


def _logsumexp_strands(t: Any) -> Any:
    """The count control pooled over strands (a function, not a closure, so it saves)."""
    import tensorflow as tf

    return tf.math.reduce_logsumexp(t, axis=-1, keepdims=True)


def bpnet_architecture(
    filters: int = BPNET_FILTERS,
    n_dil_layers: int = BPNET_DIL_LAYERS,
    input_length: int = INPUT_LENGTH,
    output_length: int = PROFILE_BINS,
) -> Any:
    """bpnet-refactor's BPNet as chorus instantiates it for the JASPAR ChIP models.

    One task with two signal strands and two control (bias) tracks, layer prefix
    ``main`` (chorus ``templates/BPNet/arch.py`` with ``input_data.json``): a 21 bp
    convolution; dilated residual units with the ReLU before each convolution
    (pre-activation) and one after the stack; a 75 bp two-filter profile head cropped to
    ``output_length``, concatenated with the profile control and mixed by a 1×1
    convolution; a one-unit dense count head on the global average, concatenated with
    the logsumexp of the count control and mixed by a dense layer. Inputs:
    ``[sequence (L, 4), profile control (output_length, 2), count control (2,)]``.
    """
    keras = _keras()
    layers = keras.layers
    sequence = layers.Input(shape=(input_length, 4), name="sequence")
    x = layers.Conv1D(filters, 21, padding="valid", name="main_conv_0")(sequence)
    for i in range(1, n_dil_layers + 1):
        activated = layers.ReLU(name=f"main_relu_{i}")(x)
        conv = layers.Conv1D(
            filters, 3, padding="valid", dilation_rate=2**i, name=f"main_dil_conv_{i}"
        )(activated)
        x = layers.Cropping1D((x.shape[1] - conv.shape[1]) // 2, name=f"main_crop_{i}")(x)
        x = layers.add([conv, x], name=f"main_add_{i}")
    x = layers.ReLU(name="main_relu_out")(x)

    profile = layers.Conv1D(N_STRANDS, 75, padding="valid", name="main_profile_head")(x)
    crop = profile.shape[1] // 2 - output_length // 2
    profile = layers.Cropping1D(crop, name="main_profile_head_cropped")(profile)
    pooled = layers.GlobalAveragePooling1D(name="main_global_avg_pooling")(x)
    counts = layers.Dense(1, name="main_counts_head")(pooled)

    profile_bias = layers.Input(shape=(output_length, N_STRANDS), name="profile_bias_input_0")
    counts_bias = layers.Input(shape=(N_STRANDS,), name="counts_bias_input_0")
    profile = layers.concatenate(
        [profile, profile_bias], axis=-1, name="main_concat_with_prof_bias_0"
    )
    profile = layers.Conv1D(N_STRANDS, 1, name="profile_predictions")(profile)
    pooled_bias = layers.Lambda(_logsumexp_strands, name="main_logsumexp_counts_bias_0")(
        counts_bias
    )
    counts = layers.concatenate(
        [counts, pooled_bias], axis=-1, name="main_concat_with_counts_bias_0"
    )
    counts = layers.Dense(1, name="logcounts_predictions")(counts)
    return keras.Model(
        inputs=[sequence, profile_bias, counts_bias], outputs=[profile, counts], name="bpnet"
    )


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

    Parameters
    ----------
    models
        The model of every column the track table uses.
    registry
        Every model of the registry, in order; all must be on disk, and their bytes make
        up the fingerprint (so tracks appended later keep the store's fingerprint).
    weights_dir
        The directory holding the model files (see the module docstring).
    framework
        ``"tf_keras"`` or ``"bpnet-lite"``.
    bpnet_filters, bpnet_dil_layers
        The BPNet (ChIP) architecture the files must match.
    cache_size
        Models kept loaded; at least the layout's track shard, since every batch of a
        build task runs every model of its track shard.
    """

    per_model = True

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
        framework: str = "tf_keras",
        bpnet_filters: int = BPNET_FILTERS,
        bpnet_dil_layers: int = BPNET_DIL_LAYERS,
        cache_size: int = 16,
        device: str = "auto",
    ) -> None:
        super().__init__(name=name, input_length=input_length, heads=(head,), batch_size=batch_size)
        if framework not in FRAMEWORKS:
            raise RecipeError(
                f"chrombpnet framework must be one of {FRAMEWORKS}, not {framework!r}"
            )
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
        self.framework = framework
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
        self._device = self.select_device(device)

    # ---------------------------------------------------------------- devices
    def select_device(self, device: str) -> Any:
        if self.framework == "bpnet-lite":
            from chorus_store.oracles.pytorch import select_device

            return select_device(device)
        _keras()
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            # share the GPU instead of reserving all of it at the first model; a GPU
            # initialised by an earlier oracle keeps its setting
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        if device == "auto":
            self._device_type = "cuda" if gpus else "cpu"
            name = "/GPU:0" if gpus else "/CPU:0"
        elif device == "cpu":
            self._device_type, name = "cpu", "/CPU:0"
        elif device in ("cuda", "gpu") or device.startswith("cuda:"):
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= len(gpus):
                raise RecipeError(f"device {device!r}: TensorFlow sees {len(gpus)} GPU(s)")
            self._device_type, name = "cuda", f"/GPU:{index}"
        else:
            raise RecipeError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
        if self._device_type == "cuda":
            # cuDNN picks nondeterministic convolution algorithms otherwise; a row's value
            # must not depend on the run that computed it
            tf.config.experimental.enable_op_determinism()
        return name

    @property
    def device_type(self) -> str:
        if self.framework == "bpnet-lite":
            return str(self._device.type)
        return self._device_type

    # ---------------------------------------------------------------- models
    def model(self, column: int) -> Any:
        """The loaded model of ``column`` (least recently used ones are dropped)."""
        if column in self._cache:
            self._cache.move_to_end(column)
            return self._cache[column]
        spec = self.models.get(column)
        if spec is None:
            raise RecipeError(f"column {column} of {self.name} has no track in the track table")
        path = self.weights_dir / spec.filename
        if self.framework == "bpnet-lite":
            loaded = self._load_torch(spec, path)
        else:
            loaded = self._load_keras(spec, path)
        self.models_loaded.append(spec.track_id)
        self._cache[column] = loaded
        # never evict a model the current call still needs: a call asking for more
        # columns than the cache holds would otherwise reload every model every batch
        while len(self._cache) > max(self.cache_size, self._in_use):
            self._cache.popitem(last=False)
        return loaded

    def _load_keras(self, spec: ModelSpec, path: Path) -> Any:
        keras = _keras()
        import tensorflow as tf

        try:
            if spec.kind == "chrombpnet":
                # compile=False: the saved loss (multinomial_nll) is not needed to predict;
                # "tf" for the Lambda layers of chrombpnet's bias-aware models
                model = keras.models.load_model(str(path), compile=False, custom_objects={"tf": tf})
            else:
                model = bpnet_architecture(self.bpnet_filters, self.bpnet_dil_layers)
                _load_weights_by_name(model, path)
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

    def _load_torch(self, spec: ModelSpec, path: Path) -> Any:
        import bpnetlite
        import torch
        from bpnetlite.bpnet import BasePairNet

        try:
            if spec.kind == "chrombpnet":
                model = bpnetlite.BPNet.from_chrombpnet(str(path))
            else:
                model = BasePairNet.from_bpnet(str(path))
                model.fconv.bias = torch.nn.Parameter(_fused_profile_bias(path))
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
        torch.backends.cudnn.benchmark = False
        return model.to(self._device).eval()

    def _bpnet_desc(self) -> str:
        return f"{self.bpnet_filters} filters × {self.bpnet_dil_layers} dilated layers"

    # ---------------------------------------------------------------- prediction
    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        head = self.heads[0]
        cols = [int(c) for c in columns[head.name]]
        self._in_use = len(cols)
        out = np.zeros((onehot.shape[0], PROFILE_BINS, len(cols), N_STRANDS), np.float32)
        if self.framework == "bpnet-lite":
            forward = self._torch_forward(onehot)
        else:
            forward = self._keras_forward(onehot)
        for j, column in enumerate(cols):
            logits, log_counts = forward(self.model(column))
            profile = expected_counts(logits, log_counts)
            out[:, :, j, : profile.shape[2]] = profile
        return {head.name: out}

    def _keras_forward(self, onehot: np.ndarray) -> Any:
        import tensorflow as tf

        def run(model: _KerasModel) -> tuple[np.ndarray, np.ndarray]:
            # predict_on_batch runs a traced graph (one trace per model: the batch shape
            # is fixed), about twice as fast as an eager call
            with tf.device(self._device):
                profile, counts = model.model.predict_on_batch([onehot, *model.zeros])
            return np.asarray(profile), np.asarray(counts)

        return run

    def _torch_forward(self, onehot: np.ndarray) -> Any:
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

    # ---------------------------------------------------------------- identity
    def describe(self) -> dict[str, Any]:
        if self._weights_sha256 is None:
            self._weights_sha256 = sha256_paths(
                *(self.weights_dir / m.filename for m in self.registry)
            )
        if self.framework == "bpnet-lite":
            framework = (
                f"bpnet-lite {importlib.metadata.version('bpnet-lite')}, "
                f"torch {importlib.metadata.version('torch')}"
            )
        else:
            framework = (
                f"tf_keras {importlib.metadata.version('tf_keras')}, "
                f"tensorflow {importlib.metadata.version('tensorflow')}"
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
            "framework": framework,
            "device_type": self.device_type,
        }

    def close(self) -> None:
        self._cache.clear()


@dataclass
class _KerasModel:
    model: Any
    zeros: list[np.ndarray]  # the control inputs, zero, one batch


def _load_weights_by_name(model: Any, path: Path) -> None:
    """Load an HDF5 weights/model file into ``model`` by layer name, refusing gaps.

    Keras's ``by_name`` loading skips model layers the file lacks; a model left partly
    random is worse than an error, so the weighted layers must be the same sets.
    """
    import h5py

    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
        in_file = {n for n in names if len(group[n].attrs.get("weight_names", [])) > 0}
    in_model = {layer.name for layer in model.layers if layer.weights}
    if in_file != in_model:
        raise ValueError(
            f"weighted layers differ: only in the file {sorted(in_file - in_model)[:6]}, "
            f"only in the architecture {sorted(in_model - in_file)[:6]}"
        )
    model.load_weights(str(path), by_name=True)


def _fused_profile_bias(path: Path) -> Any:
    """The bias of BPNet's profile head folded through its 1×1 control-mixing convolution.

    The Keras model computes ``W_mix[:2]ᵀ (W_head * x + b_head) + W_mix[2:]ᵀ control +
    b_mix``, so the single convolution bpnet-lite folds it into has the bias
    ``W_mix[:2]ᵀ b_head + b_mix``. bpnet-lite 1.1.0's ``BasePairNet.from_bpnet`` sets
    ``b_head + b_mix``: a different constant per strand, which a per-strand softmax would
    hide but the joint softmax turns into a wrong split between the strands (0.24 in
    the logits of a tiny random model).
    """
    import h5py
    import torch

    with h5py.File(path, "r") as f:
        w = f["model_weights"]
        head_bias = np.asarray(w["main_profile_head/main_profile_head/bias:0"])
        mix = np.asarray(w["profile_predictions/profile_predictions/kernel:0"])
        mix_bias = np.asarray(w["profile_predictions/profile_predictions/bias:0"])
    n = head_bias.shape[0]
    return torch.tensor(head_bias @ mix[0, :n] + mix_bias)


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
    head = recipe.heads[0]
    registry = [
        ModelSpec(m["track_id"], m["kind"], m["accession"])
        for m in chrombpnet_models(_registry_path(recipe))
    ]
    return ChromBPNetOracle(
        name=recipe.name,
        head=head,
        models=_column_models(recipe, head.name, registry),
        registry=registry,
        weights_dir=weights_dir,
        batch_size=recipe.batch_size,
        input_length=recipe.input_length,
        framework=str(recipe.oracle.get("framework", "tf_keras")),
        bpnet_filters=int(recipe.oracle.get("bpnet_filters", BPNET_FILTERS)),
        bpnet_dil_layers=int(recipe.oracle.get("bpnet_dil_layers", BPNET_DIL_LAYERS)),
        cache_size=int(recipe.oracle.get("model_cache", recipe.layout.tracks_per_shard)),
        device=device,
    )
