"""Borzoi's human head through ``borzoi_pytorch`` (johahi's port of the four replicates),
as chorus scores it: after the softplus and the crop to the central bins, on the training
scale; the relative-position tables newer transformers leave empty are rebuilt
(docs/oracles.md, "borzoi")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths
from chorus_store.oracles.common import (
    from_pretrained,
    hf_weight_files,
    import_object,
    model_input,
    package_version,
    select_device,
    torch_numerics,
)

if TYPE_CHECKING:
    from chorus_store.recipes import Recipe

__all__ = ["BorzoiOracle", "load", "weights_dir", "REPLICATES", "RESOLUTION_BP"]

#: the four human replicates johahi ported (johahi/borzoi-replicate-{0..3})
REPLICATES = (0, 1, 2, 3)

#: bp per output bin: the U-net returns to 2**5 after downsampling by 2**7
RESOLUTION_BP = 32

#: bp per transformer position: conv_dna's pool, four res-tower pools, unet1's pool and the
#: pool before the transformer, 2**7
_TRANSFORMER_BP = 128

_DEFAULT_ARCHITECTURE = "borzoi_pytorch:Borzoi"

#: BorzoiConfig fields that determine the numerics (dropouts are inactive in eval mode)
_ARCH_KEYS = (
    "dim",
    "depth",
    "heads",
    "attn_dim_key",
    "attn_dim_value",
    "return_center_bins_only",
    "bins_to_return",
    "enable_human_head",
    "enable_mouse_head",
    "flashed",
)


def _hint(replicate: int) -> str:
    return (
        f"download the Hugging Face model johahi/borzoi-replicate-{replicate} (config.json + "
        f"weights), e.g. `huggingface-cli download johahi/borzoi-replicate-{replicate} "
        f"--local-dir DIR/borzoi-replicate-{replicate}`, and pass --weights "
        f"DIR/borzoi-replicate-{replicate} (or --weights DIR, a folder holding "
        f"borzoi-replicate-0 ... -3; the recipe's replicate picks one), or set the recipe's "
        f"[oracle] weights"
    )


def _hub_snapshot(cache_repo: Path) -> Path | None:
    """The snapshot a Hugging Face cache folder (``models--owner--name``) points ``main`` at."""
    ref = cache_repo / "refs" / "main"
    if ref.is_file():
        snapshot = cache_repo / "snapshots" / ref.read_text().strip()
        return snapshot if (snapshot / "config.json").is_file() else None
    snapshots = [s for s in (cache_repo / "snapshots").glob("*") if (s / "config.json").is_file()]
    return snapshots[0] if len(snapshots) == 1 else None


def weights_dir(path: str | Path | None, replicate: int = 0) -> Path:
    """The model directory of ``replicate`` that ``path`` names.

    ``path`` may be the model directory itself (``config.json`` + weights, as
    ``save_pretrained`` or ``huggingface-cli download`` writes it), a folder holding
    ``borzoi-replicate-{k}`` directories, or a Hugging Face cache folder holding
    ``models--johahi--borzoi-replicate-{k}``.

    Raises
    ------
    RecipeError
        No path, or nothing at it that is a Borzoi model directory; the message says
        what to download.
    """
    if replicate not in REPLICATES:
        raise RecipeError(f"Borzoi replicate must be one of {REPLICATES}, not {replicate!r}")
    if path is None:
        raise RecipeError(f"no Borzoi weights given: {_hint(replicate)}")
    given = Path(path).expanduser()
    if not given.is_dir():
        what = "is a file, not a directory" if given.exists() else "does not exist"
        raise RecipeError(f"Borzoi weights {given} {what}: {_hint(replicate)}")
    name = f"borzoi-replicate-{replicate}"
    candidates = [given, given / name]
    cache = given / f"models--johahi--{name}"
    if cache.is_dir():
        snapshot = _hub_snapshot(cache)
        if snapshot is not None:
            candidates.append(snapshot)
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise RecipeError(
        f"Borzoi weights {given} hold no config.json, no {name}/config.json and no Hugging "
        f"Face cache of johahi/{name}: {_hint(replicate)}"
    )


def _materialise_positions(model: Any) -> None:
    """Recompute the relative-position tables ``from_pretrained`` left on the meta device."""
    import torch
    from borzoi_pytorch.pytorch_borzoi_transformer import Attention, get_positional_embed

    for module in model.modules():
        if isinstance(module, Attention) and module.positions.is_meta:
            # the table spans 2 * positions - 1 relative distances
            positions = (module.positions.shape[0] + 1) // 2
            module.positions = get_positional_embed(
                positions, module.num_rel_pos_features, torch.device("cpu")
            )
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RecipeError(
            f"the Borzoi model still holds tensors without data after loading: {left[:5]}; "
            f"this transformers version ({package_version('transformers')}) builds models in a way "
            f"borzoi_pytorch {package_version('borzoi-pytorch')} does not expect"
        )


class BorzoiOracle(Oracle):
    """Borzoi's human head, from a Hugging Face model directory.

    Parameters
    ----------
    weights
        Directory written by ``Borzoi.save_pretrained`` (``config.json`` and
        ``model.safetensors`` or ``pytorch_model.bin``), e.g. a local copy of
        ``johahi/borzoi-replicate-0``; see :func:`weights_dir`.
    replicate
        Which of the four replicates the weights are (recorded in :meth:`describe`).
    architecture
        ``"package.module:Class"`` of a ``borzoi_pytorch.Borzoi`` subclass; the default,
        ``Borzoi`` itself, is what chorus runs.
    """

    def __init__(
        self,
        *,
        name: str,
        weights: str | Path,
        input_length: int,
        heads: tuple[OutputHead, ...],
        batch_size: int,
        replicate: int = 0,
        architecture: str = _DEFAULT_ARCHITECTURE,
        device: str = "auto",
        tf32: bool = False,
    ) -> None:
        from borzoi_pytorch import Borzoi

        super().__init__(name=name, input_length=input_length, heads=heads, batch_size=batch_size)
        self.replicate = int(replicate)
        if len(self.heads) != 1 or self.heads[0].name != "human":
            raise RecipeError(
                f"recipe {name!r}: the Borzoi adapter reads one head named 'human' (the "
                f"model's human_head), not {[h.name for h in self.heads]}"
            )
        found = import_object(architecture)
        if not (isinstance(found, type) and issubclass(found, Borzoi)):
            raise RecipeError(
                f"recipe {name!r}: architecture {architecture!r} is not a subclass of "
                f"borzoi_pytorch.Borzoi"
            )
        cls: Any = found  # borzoi_pytorch is untyped
        self.architecture = architecture
        self.weights = weights_dir(weights, self.replicate)
        files = hf_weight_files(self.weights)
        if not files:
            raise RecipeError(
                f"Borzoi weights {self.weights} hold config.json but no model.safetensors or "
                f"pytorch_model.bin: {_hint(self.replicate)}"
            )
        self._weights_sha256 = sha256_paths(self.weights / "config.json", *files)
        try:
            model = from_pretrained(
                cls,
                self.weights,
                what="Borzoi",
                into=f"{architecture} (borzoi_pytorch {package_version('borzoi-pytorch')})",
            )
        except ImportError as exc:  # Flashzoi weights (flashed = true) need flash-attn
            raise RecipeError(
                f"Borzoi weights {self.weights} need {exc.name or 'a package'} that is not "
                f"installed ({exc}); chorus's Borzoi is johahi/borzoi-replicate-N, which "
                f"does not"
            ) from exc
        _materialise_positions(model)
        self._check_shapes(model)
        cfg = model.config
        self.config: dict[str, Any] = {k: getattr(cfg, k, None) for k in _ARCH_KEYS}
        self._dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.device = select_device(device, tf32=tf32)
        self.model = model.to(self.device).eval()

    def _check_shapes(self, model: Any) -> None:
        """Refuse a recipe whose input or head is not what the weights compute."""
        head = self.heads[0]
        from borzoi_pytorch.pytorch_borzoi_transformer import Attention

        attention = next((m for m in model.modules() if isinstance(m, Attention)), None)
        positions = (attention.positions.shape[0] + 1) // 2 if attention is not None else None
        # the transformer's relative-position table is built for exactly this many positions
        if positions is not None and self.input_length != positions * _TRANSFORMER_BP:
            raise RecipeError(
                f"recipe {self.name!r}: Borzoi takes {positions * _TRANSFORMER_BP} bp "
                f"({positions} transformer positions x {_TRANSFORMER_BP} bp), not "
                f"input_length {self.input_length}"
            )
        if not getattr(model, "enable_human_head", True) or not hasattr(model, "human_head"):
            raise RecipeError(f"the Borzoi weights {self.weights} have no human head")
        n_tracks = int(model.human_head.out_channels)
        n_bins = int(model.crop.target_length)
        all_bins = self.input_length // RESOLUTION_BP
        # TargetLengthCrop keeps x[:, -trim:trim] with trim = (target - length) // 2
        start_bp = -((n_bins - all_bins) // 2) * RESOLUTION_BP
        recipe = (head.resolution_bp, head.n_bins, head.n_columns, head.start_bp(self.input_length))
        model_shape = (RESOLUTION_BP, n_bins, n_tracks, start_bp)
        if recipe != model_shape:
            raise RecipeError(
                f"the Borzoi weights {self.weights} return {n_bins} bins of {RESOLUTION_BP} bp "
                f"x {n_tracks} tracks, bin 0 at {start_bp} bp into the {self.input_length} bp "
                f"window; recipe {self.name!r} declares {head.n_bins} x {head.resolution_bp} "
                f"bp x {head.n_columns} tracks at offset_bp {recipe[3]}: the weights are not "
                f"the model the recipe describes (fix [[oracle.heads]] or pass the right weights)"
            )

    def describe(self) -> dict[str, Any]:
        import torch

        desc: dict[str, Any] = {
            "adapter": "borzoi",
            "architecture": self.architecture,
            "config": self.config,
            "replicate": self.replicate,
            "output": "Borzoi.forward: softplus(human_head), central bins_to_return bins",
            "dtype": self._dtype,
            "weights_sha256": self._weights_sha256,
            "versions": {
                "torch": torch.__version__,
                "borzoi_pytorch": package_version("borzoi-pytorch"),
                "transformers": package_version("transformers"),
            },
            **torch_numerics(self.device),
        }
        return desc

    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, Any]:
        import torch

        head = self.heads[0]
        x = model_input(onehot, self.device).transpose(1, 2)  # (B, L, 4) -> (B, 4, L)
        with torch.inference_mode():
            y = self.model(x.contiguous())  # (B, tracks, bins), softplus'd
        # every column, as a (B, bins, tracks) view: the build reads the columns it needs
        # on the device (a full sequence is 7,611 x 6,144 float32 = 187 MB)
        return {head.name: y.float().transpose(1, 2)}

    def close(self) -> None:
        del self.model


def load(recipe: Recipe, *, weights: str | None = None, device: str = "auto") -> Oracle:
    """The Borzoi of ``recipe``.

    ``weights`` (the CLI's ``--weights``) wins over the recipe's ``weights`` key; with
    neither, :class:`RecipeError` says what to download. Recipe keys read here:
    ``replicate`` (0-3, default 0), ``weights``, ``architecture`` (default
    ``borzoi_pytorch:Borzoi``), and the shared ``input_length``, ``batch_size`` and
    ``[[oracle.heads]]``.
    """
    spec = recipe.oracle
    try:
        replicate = int(spec.get("replicate", 0))
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"recipe {recipe.name!r}: replicate must be 0-3: {exc}") from exc
    directory = weights_dir(weights or spec.get("weights"), replicate)
    return BorzoiOracle(
        name=recipe.name,
        weights=directory,
        input_length=recipe.input_length,
        heads=recipe.heads,
        batch_size=recipe.batch_size,
        replicate=replicate,
        architecture=str(spec.get("architecture", _DEFAULT_ARCHITECTURE)),
        device=device,
        tf32=bool(recipe.oracle.get("tf32", False)),
    )
