"""ChromBPNet and BPNet: the two Keras architectures chorus runs, their count head, and
the HDF5 weight readers the adapter (:mod:`chorus_store.oracles.chrombpnet`) uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from chorus_store.errors import MissingDependencyError, RecipeError

__all__ = [
    "BPNET_DIL_LAYERS",
    "BPNET_FILTERS",
    "INPUT_LENGTH",
    "N_STRANDS",
    "PROFILE_BINS",
    "PROFILE_OFFSET",
    "bpnet_architecture",
    "chrombpnet_architecture",
    "expected_counts",
    "fused_profile_bias",
    "keras",
    "load_weights_by_name",
]

INPUT_LENGTH = 2114  # bp, every ChromBPNet/BPNet model's input
PROFILE_BINS = 1000  # 1 bp bins, the central 1,000 bp of the input
PROFILE_OFFSET = (INPUT_LENGTH - PROFILE_BINS) // 2  # 557, spec §1.5
N_STRANDS = 2  # the head's strands: BPNet ChIP has two, ChromBPNet fills the first
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


def keras() -> Any:
    """Keras 3 on its TensorFlow backend (what ``tensorflow`` >= 2.16 installs as
    ``tf.keras``), imported quietly; it reads the Keras 2 ``.h5`` files chorus downloads.

    Raises
    ------
    MissingDependencyError
        TensorFlow is not installed (the message names the extra).
    RecipeError
        ``KERAS_BACKEND`` selects another backend than TensorFlow.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras as keras3
        import tensorflow  # noqa: F401  (Keras alone runs another backend, or none)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.of("the chrombpnet adapter", exc, "chrombpnet") from exc
    if keras3.backend.backend() != "tensorflow":
        raise RecipeError(
            f"the chrombpnet adapter runs Keras on TensorFlow, but KERAS_BACKEND is "
            f"{keras3.backend.backend()!r}; unset it or set KERAS_BACKEND=tensorflow"
        )
    return keras3


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
    k = keras()
    layers = k.layers
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
    return k.Model(inputs=[sequence], outputs=[profile, counts], name="model_wo_bias")


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
    k = keras()
    layers = k.layers
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
    return k.Model(
        inputs=[sequence, profile_bias, counts_bias], outputs=[profile, counts], name="bpnet"
    )


def load_weights_by_name(model: Any, path: Path) -> None:
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


def fused_profile_bias(path: Path) -> Any:
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
