"""LegNet: one PyTorch model per MPRA cell type, one scalar activity per 200 bp window,
computed as chorus's ``predict_bigseq`` does (MPRA flanks, LegNet's channel order, N as
0.25); column ``c`` is the recipe's ``cell_types[c]`` (docs/oracles.md, "legnet")."""

from __future__ import annotations

import io
import logging
import pickle
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.genome.track_tables import LEGNET_CELL_TYPES
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths
from chorus_store.oracles.common import select_device, torch_numerics

if TYPE_CHECKING:
    import torch

    from chorus_store.oracles.models.legnet import LegNet, LegNetConfig
    from chorus_store.recipes import Recipe

__all__ = [
    "LEFT_MPRA_FLANK",
    "RIGHT_MPRA_FLANK",
    "LEGNET_WINDOW",
    "LegNetOracle",
    "encode",
    "load",
    "read_checkpoint",
]

log = logging.getLogger(__name__)

#: MPRA adapter sequences chorus adds around every window (legnet_source/agarwal_meta.py)
LEFT_MPRA_FLANK = "CATTGCGTGAACCGA"
RIGHT_MPRA_FLANK = "AGGACCGGATCAACT"
#: chorus's LEGNET_WINDOW: the genomic bp per prediction; PadNs pads shorter inputs to it
LEGNET_WINDOW = 200
#: LegNet's channels are A, G, C, T (transforms.CODES); chorus-store one-hot is A, C, G, T
_ACGT_TO_LEGNET = np.array([0, 2, 1, 3])
#: what Seq2Tensor writes in every channel for N
N_VALUE = 0.25
DOWNLOAD_HINT = (
    "download chorus's LegNet models (https://zenodo.org/records/17863550/files/"
    "chorus_small_legnet.zip, mirrored as lucapinello/chorus-legnet on Hugging Face), unzip "
    "it and pass --weights DIR (or set [oracle] weights = DIR), DIR holding "
    "LentiMPRA_<cell>/config.json and LentiMPRA_<cell>/example/weights.ckpt for each cell "
    "type (chorus keeps them in ~/.chorus/downloads/legnet)"
)


# --------------------------------------------------------------------------------------
# input encoding
# --------------------------------------------------------------------------------------


def _encode_string(seq: str) -> np.ndarray:
    """``(len, 4)`` LegNet one-hot (A, G, C, T; anything else 0.25) of a flank."""
    index = {"A": 0, "G": 1, "C": 2, "T": 3}
    out = np.full((len(seq), 4), N_VALUE, dtype=np.float32)
    for i, base in enumerate(seq.upper()):
        if base in index:
            out[i] = 0.0
            out[i, index[base]] = 1.0
    return out


def encode(
    onehot: np.ndarray,
    *,
    left_flank: str = LEFT_MPRA_FLANK,
    right_flank: str = RIGHT_MPRA_FLANK,
    window: int = LEGNET_WINDOW,
) -> np.ndarray:
    """chorus-store one-hot ``(batch, L, 4)`` A,C,G,T → LegNet input ``(batch, 4, L')``.

    Adds the flanks, then pads with N (0.25) to ``window`` as chorus's ``PadNs`` does
    when the flanked sequence is shorter (the extra base on the left); an all-zero
    position (N in chorus-store's encoding) becomes 0.25 in every channel.

    >>> from chorus_store.genome.fasta import one_hot
    >>> x = encode(one_hot(b"ACGN" * 50))
    >>> x.shape, x[0, :, 15].tolist(), x[0, :, 18].tolist()
    ((1, 4, 230), [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25])
    """
    batch, length, _ = onehot.shape
    x = np.ascontiguousarray(onehot[:, :, _ACGT_TO_LEGNET], dtype=np.float32)
    x[x.sum(axis=2) == 0] = N_VALUE
    total = len(left_flank) + length + len(right_flank)
    pad = max(window - total, 0)
    pad_left, pad_right = pad - pad // 2, pad // 2
    left = _encode_string("N" * pad_left + left_flank)
    right = _encode_string(right_flank + "N" * pad_right)
    full = np.concatenate(
        [
            np.broadcast_to(left, (batch, *left.shape)),
            x,
            np.broadcast_to(right, (batch, *right.shape)),
        ],
        axis=1,
    )
    return np.ascontiguousarray(full.transpose(0, 2, 1))


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------


class _Inert:
    """Stands in for an object of a class a checkpoint names but LegNet never needs.

    Lightning checkpoints pickle the optimiser and LR-scheduler state next to the
    weights; torch 2.0's ``OneCycleLR`` (what MPRA-LegNet trained with) stores a bound
    method there, which ``weights_only=True`` refuses. Loading such a file with these
    stand-ins reads the tensors without importing or calling anything the file names.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


def _tensor_globals() -> dict[tuple[str, str], Any]:
    import collections

    import torch
    import torch._utils

    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Size"): torch.Size,
    }
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    return allowed


def _inert_pickle_module() -> tuple[types.ModuleType, set[str]]:
    """A ``pickle_module`` for ``torch.load`` that builds tensors and stubs everything else,
    with the set of names it stubbed (filled while loading)."""
    allowed = _tensor_globals()
    replaced: set[str] = set()

    class InertUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in allowed:
                return allowed[(module, name)]
            replaced.add(f"{module}.{name}")
            return type(name, (_Inert,), {"__module__": f"{__name__}.inert"})

    def load(file: io.IOBase, **kwargs: Any) -> Any:
        return InertUnpickler(file, **kwargs).load()

    module = types.ModuleType(f"{__name__}.inert_pickle")
    module.Unpickler = InertUnpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    return module, replaced


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's state dict from a LegNet checkpoint, keys without the ``model.`` prefix.

    The file is what MPRA-LegNet's Lightning trainer saves (a dict whose ``state_dict``
    holds ``model.<key>`` tensors); a bare state dict is accepted too. It is read with
    ``weights_only=True``; a Lightning checkpoint that also pickles optimiser or scheduler
    objects is read again with every non-tensor class replaced by an inert stand-in, so
    no code named by the file runs either way.

    Raises
    ------
    RecipeError
        The file is not a PyTorch checkpoint or holds no state dict of tensors.
    """
    import torch

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        inert, replaced = _inert_pickle_module()
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=inert)
        except Exception as exc:  # any failure to parse is the file's, not ours
            raise RecipeError(f"LegNet checkpoint {path} is not readable: {exc}") from exc
        log.info(
            "%s: read with inert stand-ins for %s (optimiser/scheduler state, not used)",
            path,
            ", ".join(sorted(replaced)),
        )
    except Exception as exc:
        raise RecipeError(f"LegNet checkpoint {path} is not readable: {exc}") from exc
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise RecipeError(
            f"LegNet checkpoint {path} holds no 'state_dict' (expected a PyTorch Lightning "
            f"checkpoint as MPRA-LegNet's trainer saves it, or a bare state dict)"
        )
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise RecipeError(f"LegNet checkpoint {path}: state_dict entries {bad[:5]} are not tensors")
    # chorus: {key.replace('model.', ''): value} (the LightningModule holds the net as .model)
    return {str(k).replace("model.", ""): v for k, v in state.items()}


def model_paths(
    weights_dir: Path, cell_type: str, *, assay: str, model_id: str
) -> tuple[Path, Path]:
    """(training config, checkpoint) of one cell type in chorus's download layout."""
    base = weights_dir / f"{assay}_{cell_type}"
    return base / "config.json", base / model_id / "weights.ckpt"


def load_model(config_path: Path, weights_path: Path) -> tuple[LegNet, LegNetConfig]:
    """Build the network from its training config and load its checkpoint (CPU, eval).

    Raises :class:`RecipeError` when the config is unreadable, describes a model chorus
    cannot run, or the weights do not fit it.
    """
    import json

    from chorus_store.oracles.models.legnet import LegNetConfig

    try:
        config = LegNetConfig.from_json(config_path)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RecipeError(f"LegNet config {config_path} is not usable: {exc!r}") from exc
    if config.use_reverse_channel:
        # chorus's predict_bigseq feeds 4 channels; such a model fails on every window there
        raise RecipeError(
            f"LegNet config {config_path} has use_reverse_channel = true: chorus feeds this "
            f"model 4 channels, so it cannot reproduce chorus's predictions"
        )
    model = config.build()
    state = read_checkpoint(weights_path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RecipeError(
            f"LegNet weights {weights_path} do not fit the architecture of {config_path} "
            f"({config.as_dict()}): {str(exc)[:400]}"
        ) from exc
    return model.eval(), config


# --------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------


class LegNetOracle(Oracle):
    """LegNet cell-type models behind one scalar head, one column per cell type.

    Parameters
    ----------
    weights_dir
        chorus's LegNet download directory (``LentiMPRA_<cell>/...`` inside).
    cell_types
        The cell type of each column of ``head``.
    """

    per_model = True

    def __init__(
        self,
        *,
        name: str,
        weights_dir: str | Path,
        head: OutputHead,
        cell_types: Sequence[str] = LEGNET_CELL_TYPES,
        input_length: int = LEGNET_WINDOW,
        batch_size: int = 256,
        assay: str = "LentiMPRA",
        model_id: str = "example",
        left_flank: str = LEFT_MPRA_FLANK,
        right_flank: str = RIGHT_MPRA_FLANK,
        device: str = "auto",
    ) -> None:

        super().__init__()
        self.name = name
        self.input_length = int(input_length)
        self.batch_size = int(batch_size)
        self.heads = (head,)
        self.cell_types = tuple(cell_types)
        self.left_flank, self.right_flank = left_flank, right_flank
        if not head.is_scalar or head.n_columns != len(self.cell_types):
            raise RecipeError(
                f"{name}: LegNet has one scalar head (resolution_bp = 0) with one column per "
                f"cell type {list(self.cell_types)}; the recipe declares {head.as_dict()}"
            )
        if self.input_length > LEGNET_WINDOW:
            raise RecipeError(
                f"{name}: input_length {self.input_length} > {LEGNET_WINDOW}: chorus scores "
                f"one {LEGNET_WINDOW} bp window per position (LEGNET_WINDOW)"
            )
        weights_dir = Path(weights_dir).expanduser()
        if not weights_dir.is_dir():
            raise RecipeError(
                f"LegNet weights directory {weights_dir} does not exist; {DOWNLOAD_HINT}"
            )
        paths = {
            c: model_paths(weights_dir, c, assay=assay, model_id=model_id) for c in self.cell_types
        }
        missing = [str(p) for pair in paths.values() for p in pair if not p.is_file()]
        if missing:
            raise RecipeError(
                f"LegNet files missing under {weights_dir}: {', '.join(missing)}; {DOWNLOAD_HINT}"
            )
        self.weights_dir = weights_dir
        self.device = select_device(device)
        self.models: list[LegNet] = []
        self._described: list[dict[str, Any]] = []
        for cell in self.cell_types:
            config_path, weights_path = paths[cell]
            model, config = load_model(config_path, weights_path)
            self.models.append(model.to(self.device))
            self._described.append({
                "cell_type": cell,
                "config": config.as_dict(),
                "weights_sha256": sha256_paths(weights_path),
            })  # fmt: skip
        #: forward passes run per cell type (a build of new tracks runs only their models)
        self.model_calls = dict.fromkeys(self.cell_types, 0)

    def encode(self, onehot: np.ndarray) -> np.ndarray:
        """The network's input for ``onehot``: flanked, LegNet channels, N as 0.25."""
        return encode(onehot, left_flank=self.left_flank, right_flank=self.right_flank)

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        import torch

        head = self.heads[0]
        wanted = [int(c) for c in columns[head.name]]
        x = torch.from_numpy(self.encode(onehot)).to(self.device)
        out = np.empty((onehot.shape[0], len(wanted)), dtype=np.float32)
        with torch.inference_mode():
            for j, col in enumerate(wanted):
                self.model_calls[self.cell_types[col]] += 1
                out[:, j] = self.models[col](x).float().cpu().numpy()
        return {head.name: out}

    def describe(self) -> dict[str, Any]:

        return {
            "adapter": "legnet",
            "architecture": "chorus_store.oracles.models.legnet:LegNet",
            "models": self._described,
            "input": {
                "flanks": [self.left_flank, self.right_flank],
                "channels": "AGCT",
                "n_value": N_VALUE,
                "pad_to": LEGNET_WINDOW,
            },
            **torch_numerics(self.device),
        }

    def close(self) -> None:
        self.models.clear()


def _check_track_table(recipe: Recipe, head: OutputHead, cell_types: Sequence[str]) -> None:
    """Every track of ``head`` must name the cell type of its column (``LentiMPRA:HepG2``
    or ``HepG2``), so a table reordered by hand cannot read another cell type's model."""
    frame = recipe.track_table().frame
    for rec in frame[frame["head"] == head.name].itertuples(index=False):
        col, cell = int(rec.column), str(rec.track_id).rsplit(":", 1)[-1]
        if not 0 <= col < len(cell_types) or cell_types[col] != cell:
            raise RecipeError(
                f"recipe {recipe.name!r}: track {rec.track_id!r} reads column {col} of "
                f"{head.name!r}, which is LegNet's "
                f"{cell_types[col] if 0 <= col < len(cell_types) else 'nothing'} model; "
                f"columns are {dict(enumerate(cell_types))}"
            )


def load(recipe: Recipe, *, weights: str | None = None, device: str = "auto") -> LegNetOracle:
    """The adapter entry point: ``[oracle] adapter = "legnet"``.

    ``weights`` (CLI ``--weights``) or the recipe's ``weights`` is chorus's LegNet download
    directory; optional ``[oracle]`` keys ``cell_types`` (column order, default K562,
    HepG2, WTC11), ``assay`` ("LentiMPRA") and ``model_id`` ("example") select the files.
    """
    source = weights or recipe.oracle.get("weights")
    if not source:
        raise RecipeError(f"recipe {recipe.name!r}: LegNet needs its weights: {DOWNLOAD_HINT}")
    if len(recipe.heads) != 1:
        raise RecipeError(
            f"recipe {recipe.name!r}: LegNet has one output head, the recipe declares "
            f"{[h.name for h in recipe.heads]}"
        )
    head = recipe.heads[0]
    cell_types = tuple(str(c) for c in recipe.oracle.get("cell_types", LEGNET_CELL_TYPES))
    _check_track_table(recipe, head, cell_types)
    return LegNetOracle(
        name=recipe.name,
        weights_dir=str(source),
        head=head,
        cell_types=cell_types,
        input_length=recipe.input_length,
        batch_size=recipe.batch_size,
        assay=str(recipe.oracle.get("assay", "LentiMPRA")),
        model_id=str(recipe.oracle.get("model_id", "example")),
        device=device,
    )
