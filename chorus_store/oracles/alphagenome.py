"""AlphaGenome through its PyTorch port, finished per head to what the JAX model chorus
builds its nulls with returns (its activation and experimental scale; chorus #240), from
the port's converted weights plus each track's ``nonzero_mean`` (docs/oracles.md,
"alphagenome")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from chorus_store.errors import InputFileError, PredictionError, RecipeError
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths
from chorus_store.oracles.common import (
    model_input,
    package_version,
    read_config,
    read_state_dict,
    select_device,
    torch_numerics,
)

if TYPE_CHECKING:
    import torch

    from chorus_store.recipes import Recipe

__all__ = ["AlphaGenomeOracle", "OUTPUT_TYPES", "load"]

#: the organism chorus predicts for; index 0 of the port's organism embeddings
ORGANISM, ORGANISM_INDEX = "human", 0
#: the converter's default output name, looked for in a weights folder
STATE_DICT_NAME = "alphagenome_pytorch.pt"
TRACK_MEANS_NAME = "track_means.tsv"
#: JAX ``heads._SOFT_CLIP_VALUE`` and the RNA-seq squashing exponent
_SOFT_CLIP = 10.0
_SQUASH = 0.75


@dataclass(frozen=True)
class _OutputType:
    """How one AlphaGenome OutputType is read from the port and finished."""

    port_head: str  # key of the head in ``model.heads["human"]``
    resolution_bp: int
    kind: str  # "tracks" (genome tracks), "softmax" (splice sites), "usage"
    squashed: bool = False  # RNA-seq: predictions were trained on counts ** 0.75

    @property
    def port_key(self) -> str | None:
        return f"scaled_predictions_{self.resolution_bp}bp" if self.kind == "tracks" else None


#: the OutputTypes chorus scores (spec §3; CONTACT_MAPS and SPLICE_JUNCTIONS are not used)
OUTPUT_TYPES: dict[str, _OutputType] = {
    "ATAC": _OutputType("atac", 1, "tracks"),
    "CAGE": _OutputType("cage", 1, "tracks"),
    "DNASE": _OutputType("dnase", 1, "tracks"),
    "RNA_SEQ": _OutputType("rna_seq", 1, "tracks", squashed=True),
    "PROCAP": _OutputType("procap", 1, "tracks"),
    "CHIP_HISTONE": _OutputType("chip_histone", 128, "tracks"),
    "CHIP_TF": _OutputType("chip_tf", 128, "tracks"),
    "SPLICE_SITES": _OutputType("splice_sites_classification", 1, "softmax"),
    "SPLICE_SITE_USAGE": _OutputType("splice_sites_usage", 1, "usage"),
}

_EXPECTED_WEIGHTS = (
    "AlphaGenome needs the PyTorch port's converted weights: run `python -m "
    "alphagenome_pytorch.convert.convert_checkpoint -o DIR/alphagenome_pytorch.pt` (needs "
    "alphagenome_research and access to google/alphagenome-all-folds), write the JAX "
    "metadata's nonzero_mean per track to DIR/track_means.tsv (see "
    "docs/oracles.md), and pass --weights DIR"
)


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------


def _weights_files(path: str | Path, track_means: str | Path | None) -> tuple[Path, Path]:
    """(state dict, track means) for a weights folder or a state-dict file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RecipeError(f"AlphaGenome weights {p} do not exist. {_EXPECTED_WEIGHTS}")
    if p.is_dir():
        state = p / STATE_DICT_NAME
        if not state.is_file():
            found = sorted(f for ext in ("*.pt", "*.pth", "*.safetensors") for f in p.glob(ext))
            if len(found) != 1:
                raise RecipeError(
                    f"AlphaGenome weights folder {p} holds {len(found)} state dicts "
                    f"({[f.name for f in found]}); expected {STATE_DICT_NAME}. "
                    f"{_EXPECTED_WEIGHTS}"
                )
            state = found[0]
        folder = p
    else:
        state, folder = p, p.parent
    means = Path(track_means).expanduser() if track_means is not None else folder / TRACK_MEANS_NAME
    return state, means


def _read_state_dict(path: Path) -> dict[str, Any]:
    state = read_state_dict(path, what="AlphaGenome weights")
    # the converter writes the heads of every organism; only human's are built here
    return {
        k: v
        for k, v in state.items()
        if not (k.startswith("heads.") and k.split(".", 2)[1] != ORGANISM)
    }


def _read_track_means(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise RecipeError(
            f"AlphaGenome track means {path} do not exist: the genome-track heads are "
            f"returned on the model scale and need each track's nonzero_mean to be put on "
            f"the scale chorus's null was built on. {_EXPECTED_WEIGHTS}"
        )
    try:
        frame = pd.read_csv(path, sep="\t")
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputFileError(
            f"AlphaGenome track means {path} is not a readable TSV: {exc}"
        ) from exc
    missing = {"output_type", "local_index", "nonzero_mean"} - set(frame.columns)
    if missing:
        raise InputFileError(
            f"AlphaGenome track means {path} lacks the column(s) {sorted(missing)}; it needs "
            f"output_type, local_index, nonzero_mean"
        )
    return frame


def _means_vector(
    frame: pd.DataFrame, output_type: str, n_columns: int, real_columns: np.ndarray, source: Path
) -> np.ndarray:
    """nonzero_mean per column of a head; padding columns (no track) may be absent or NaN."""
    if len(real_columns) and real_columns.max() >= n_columns:
        raise RecipeError(
            f"the track table reads {output_type} column {int(real_columns.max())}, but the "
            f"head has {n_columns} columns"
        )
    rows = frame[frame["output_type"] == output_type]
    means = np.zeros(n_columns, np.float32)  # padding columns: 0, never read by a track
    idx = rows["local_index"].to_numpy(np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= n_columns):
        raise InputFileError(
            f"{source}: {output_type} local_index outside the head's {n_columns} columns"
        )
    values = rows["nonzero_mean"].to_numpy(np.float64)
    usable = np.isfinite(values) & (values > 0)
    means[idx[usable]] = values[usable]
    known = np.zeros(n_columns, bool)
    known[idx[usable]] = True
    lacking = real_columns[~known[real_columns]]
    if len(lacking):
        raise RecipeError(
            f"{source} gives no positive nonzero_mean for {len(lacking)} {output_type} "
            f"track column(s) of the track table (first: {lacking[:5].tolist()}); those "
            f"tracks cannot be put on the experimental scale"
        )
    return means


# --------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------


class AlphaGenomeOracle(Oracle):
    """AlphaGenome's human heads, post-activation, one array per OutputType.

    Parameters
    ----------
    name, input_length, heads, batch_size
        As the recipe declares them; every head is an OutputType name of
        :data:`OUTPUT_TYPES`, full length (bin 0 at the first input base).
    config
        ``{"model": AlphaGenome kwargs, "reference_heads": add_reference_heads kwargs}``.
    state_dict, track_means
        Paths of the converted weights and of the per-column ``nonzero_mean`` table.
    real_columns
        Per head, the columns the track table reads; each needs a track mean.
    """

    def __init__(
        self,
        *,
        name: str,
        input_length: int,
        heads: tuple[OutputHead, ...],
        batch_size: int,
        config: Mapping[str, Any],
        state_dict: Path,
        track_means: Path,
        real_columns: Mapping[str, np.ndarray],
        device: str = "auto",
        tf32: bool = False,
        bf16: bool = False,
    ) -> None:
        import torch
        from alphagenome_pytorch import alphagenome as port
        from alphagenome_pytorch.alphagenome import AlphaGenome, set_update_running_var

        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        unknown = set(config) - {"model", "reference_heads"}
        if unknown:
            raise RecipeError(
                f"AlphaGenome config takes 'model' and 'reference_heads', not {sorted(unknown)}"
            )
        self.config = {
            "model": dict(config.get("model") or {}),
            "reference_heads": dict(config.get("reference_heads") or {}),
        }
        self._check_heads()
        try:
            model = AlphaGenome(**self.config["model"])
            model.add_reference_heads(ORGANISM, **self.config["reference_heads"])
        except (TypeError, ValueError, AssertionError) as exc:
            raise RecipeError(f"AlphaGenome config {self.config} is invalid: {exc}") from exc
        self._head_columns = self._model_columns(model)
        self._check_columns()
        try:
            model.load_state_dict(_read_state_dict(state_dict), strict=True)
        except RuntimeError as exc:
            raise RecipeError(
                f"weights {state_dict} do not fit the AlphaGenome port with config "
                f"{self.config}: {str(exc)[:400]}"
            ) from exc
        # BatchRMSNorm updates its running variance on every call unless told not to,
        # even in eval mode: a prediction would depend on the sequences run before it
        set_update_running_var(model, False)
        # the port switches TF32 and bf16 attention on at import; here both are opt-in
        # (the recipe's tf32 / bf16), and both are in the fingerprint (describe)
        self.device = select_device(device, tf32=tf32)
        port._ALLOW_NATIVE_BF16 = bool(bf16)
        self.model = model.to(self.device).eval()

        needs_means = [h.name for h in self.heads if OUTPUT_TYPES[h.name].kind == "tracks"]
        self._means: dict[str, torch.Tensor] = {}
        if needs_means:
            frame = _read_track_means(track_means)
            for name in needs_means:
                vec = _means_vector(
                    frame,
                    name,
                    self._head_columns[name],
                    np.asarray(real_columns.get(name, []), np.int64),
                    track_means,
                )
                self._means[name] = torch.from_numpy(vec).to(self.device)
        self._files = (state_dict, track_means) if needs_means else (state_dict,)
        self._weights_sha256 = sha256_paths(*self._files)

    # ------------------------------------------------------------------ checks
    def _check_heads(self) -> None:
        for h in self.heads:
            spec = OUTPUT_TYPES.get(h.name)
            if spec is None:
                raise RecipeError(
                    f"AlphaGenome has no output head {h.name!r}; heads are OutputType names: "
                    f"{sorted(OUTPUT_TYPES)}"
                )
            bins = self.input_length // spec.resolution_bp
            if (
                h.resolution_bp != spec.resolution_bp
                or h.n_bins != bins
                or h.start_bp(self.input_length) != 0
                or h.n_strands != 1
            ):
                raise RecipeError(
                    f"AlphaGenome's {h.name} head covers the whole input: resolution_bp = "
                    f"{spec.resolution_bp}, n_bins = {bins}, offset_bp = 0, one strand; the "
                    f"recipe declares {h.as_dict()}"
                )
        if self.input_length % 2048:
            # 128 bp after the U-Net's 7 poolings, then 16 bins per pairwise cell
            raise RecipeError(
                f"AlphaGenome input_length must be a multiple of 2,048 bp, not {self.input_length}"
            )

    @staticmethod
    def _model_columns(model: Any) -> dict[str, int]:
        heads = model.heads[ORGANISM]
        columns: dict[str, int] = {}
        for name, spec in OUTPUT_TYPES.items():
            head = heads[spec.port_head]
            if spec.kind == "tracks":
                key = f"resolution_{spec.resolution_bp}"
                columns[name] = int(head.resolutions[key].to_pred.out_features)
            else:
                columns[name] = int(head.linear.out_features)
        return columns

    def _check_columns(self) -> None:
        wrong = {
            h.name: (h.n_columns, self._head_columns[h.name])
            for h in self.heads
            if h.n_columns != self._head_columns[h.name]
        }
        if wrong:
            detail = ", ".join(f"{k}: recipe {a} vs model {b}" for k, (a, b) in wrong.items())
            raise RecipeError(
                f"the recipe's AlphaGenome heads do not match the model's columns ({detail}); "
                f"n_columns counts padding columns too (alphagenome_head_sizes)"
            )

    # ------------------------------------------------------------------ identity
    def describe(self) -> dict[str, Any]:
        from alphagenome_pytorch import alphagenome as port

        on_cuda = self.device.type == "cuda"
        # the port switches TF32 and bf16 attention on at import on CUDA
        # (ALPHAGENOME_ALLOW_TF32, ALPHAGENOME_TORCH_BF16); select_device sets TF32 back
        # to the recipe's choice and torch_numerics records it
        version = package_version("alphagenome-pytorch")
        return {
            "adapter": "alphagenome_pytorch",
            "architecture": f"alphagenome_pytorch.AlphaGenome {version}",
            "config": self.config,
            "organism": [ORGANISM, ORGANISM_INDEX],
            "activations": (
                "genome tracks: JAX predictions_scaling with nonzero_mean; SPLICE_SITES: "
                "softmax over 5 logits; SPLICE_SITE_USAGE: sigmoid rounded to float16"
            ),
            "weights_sha256": self._weights_sha256,
            "weights_files": [f.name for f in self._files],
            **torch_numerics(self.device),
            "bf16_attention": bool(on_cuda and port._ALLOW_NATIVE_BF16),
        }

    # ------------------------------------------------------------------ predict
    def _tokens(self, onehot: np.ndarray) -> torch.Tensor:
        """(B, L, 4) one-hot → the port's tokens: 0..3 for A, C, G, T; -1 for an all-zero row."""
        total = onehot.sum(-1)
        top, idx = onehot.max(-1), onehot.argmax(-1)
        if not bool(((total == 0) | ((total == 1) & (top == 1))).all()):
            raise PredictionError(
                f"{self.name} takes one-hot rows (or all-zero rows for N); the port embeds "
                f"base tokens, so a fractional row cannot be passed on"
            )
        # made on the host, sent once: the tokens are the only input that crosses
        tokens: torch.Tensor = model_input(
            np.where(total == 0, -1, idx).astype(np.int64), self.device
        )
        return tokens

    def _finish(self, name: str, out: Any, cols: torch.Tensor) -> torch.Tensor:
        """The port's output of one head → the JAX model's, for the columns ``cols``."""
        import torch

        spec = OUTPUT_TYPES[name]
        if spec.kind == "tracks":
            x: torch.Tensor = out[spec.port_key].float().index_select(-1, cols)
            # JAX heads.predictions_scaling: invert the soft clip, undo the squashing,
            # multiply by the track's nonzero_mean and the bin width
            x = torch.where(x > _SOFT_CLIP, (x + _SOFT_CLIP) ** 2 / (4 * _SOFT_CLIP), x)
            if spec.squashed:
                x = x.pow(1.0 / _SQUASH)
            means = self._means[name].index_select(0, cols)
            return x * (means * spec.resolution_bp)
        if spec.kind == "softmax":
            # the softmax runs over all 5 classes (the 5th, "no splice site", is padding)
            return torch.softmax(out.float(), dim=-1).index_select(-1, cols)
        # the port applies the sigmoid; JAX returns it cast to float16
        usage: torch.Tensor = out.float().index_select(-1, cols)
        return usage.half().float()

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, Any]:
        return dict(self._predict_heads(onehot, columns))

    def _predict_heads(self, onehot: np.ndarray, columns: Columns) -> Iterator[tuple[str, Any]]:
        """The trunk once, then each requested head on its own, on the device.

        A head is computed only when the caller asks for it, and only its requested
        columns are kept: the build reduces it to records and drops it before the next,
        so device memory holds the embeddings and one head (a 1 bp head of all its
        columns is 1,048,576 x 768 floats per sequence), and no head reaches the host.
        """
        import torch

        with torch.inference_mode():
            tokens = self._tokens(onehot)
            organism = torch.full((tokens.shape[0],), ORGANISM_INDEX, device=self.device)
            embeds = self.model.get_embeds(tokens, organism)
        for name, want in columns.items():
            with torch.inference_mode():
                head = OUTPUT_TYPES[name].port_head
                out = self.model.inference(tokens, organism, requested_heads={head}, embeds=embeds)[
                    ORGANISM
                ][head]
                cols = torch.as_tensor(np.asarray(want, np.int64), device=self.device)
                finished = self._finish(name, out, cols)
                del out
            yield name, finished
            del finished

    def close(self) -> None:
        del self.model


# --------------------------------------------------------------------------------------
# the recipe entry point
# --------------------------------------------------------------------------------------


def _config(recipe: Recipe) -> dict[str, Any]:
    return read_config(recipe.oracle.get("config", {}), what="AlphaGenome [oracle] config")


def load(recipe: Recipe, *, weights: str | None = None, device: str = "auto") -> AlphaGenomeOracle:
    """Load AlphaGenome's PyTorch port as ``recipe`` declares it.

    ``weights`` (the CLI's ``--weights``) wins over the recipe's ``weights``: a folder
    holding ``alphagenome_pytorch.pt`` and ``track_means.tsv``, or the state-dict file with
    ``track_means.tsv`` beside it. The recipe's optional ``track_means`` names that table
    elsewhere (relative paths: from the recipe's folder).
    """
    path = weights or recipe.oracle.get("weights")
    if not path:
        raise RecipeError(f"recipe {recipe.name!r} names no weights. {_EXPECTED_WEIGHTS}")
    means = recipe.oracle.get("track_means")
    if means is not None and not Path(str(means)).is_absolute() and recipe.source:
        means = Path(recipe.source).parent / str(means)
    state_dict, track_means = _weights_files(str(path), means)
    frame = recipe.track_table().frame
    real_columns = {
        str(h): g["column"].to_numpy(np.int64) for h, g in frame.groupby("head", sort=False)
    }
    return AlphaGenomeOracle(
        name=recipe.name,
        input_length=recipe.input_length,
        heads=recipe.heads,
        batch_size=recipe.batch_size,
        config=_config(recipe),
        state_dict=state_dict,
        track_means=track_means,
        real_columns=real_columns,
        device=device,
        tf32=bool(recipe.oracle.get("tf32", False)),
        bf16=bool(recipe.oracle.get("bf16", False)),
    )
