"""Tiny Borzois: the package's own class with narrow layers and random weights,
saved as a Hugging Face directory like johahi/borzoi-replicate-N."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import torch  # noqa: E402
from borzoi_pytorch import Borzoi  # noqa: E402
from borzoi_pytorch.config_borzoi import BorzoiConfig  # noqa: E402
from borzoi_pytorch.pytorch_borzoi_model import ConvBlock  # noqa: E402

from chorus_store import Recipe  # noqa: E402
from chorus_store.genome.track_tables import borzoi_tracks  # noqa: E402
from chorus_store.resources import data_dir  # noqa: E402

__all__ = [
    "randomise",
    "BORZOI_DIR",
    "BORZOI_TOML",
    "TARGETS",
    "INPUT_BP",
    "NARROW",
    "SHALLOW",
    "NarrowBorzoi",
    "SUBSET",
    "save_narrow",
    "borzoi_recipe",
    "SAMPLING",
]


BORZOI_DIR = data_dir("builders") / "borzoi"


BORZOI_TOML = tomllib.loads((BORZOI_DIR / "recipe.toml").read_text())


TARGETS = BORZOI_DIR / "borzoi_human_targets.txt"


INPUT_BP = 524_288


#: the package's hard-coded widths (conv_dna 512, res tower 608 ... 1,280, joined 1,920)
#: divided by 32; one single-head transformer layer
NARROW = {
    "dim": 16,
    "depth": 1,
    "heads": 1,
    "attn_dim_key": 8,
    "attn_dim_value": 8,
    "conv_widths": [16, 19, 23, 28, 33, 40],
    "final_width": 60,
}


#: for the end-to-end build: no transformer layer (BorzoiConfig.depth = 0), 8 channels;
#: the attention over 4,096 positions is half of NARROW's CPU time whatever its width
SHALLOW = {**NARROW, "depth": 0, "dim": 8, "conv_widths": [8] * 6, "final_width": 8}


class NarrowBorzoi(Borzoi):  # type: ignore[misc]  # untyped package
    """``borzoi_pytorch.Borzoi`` with its fixed convolution widths and human-head size read
    from the config (``conv_widths``, ``final_width``, ``n_human_tracks``).

    Every module keeps its name and kind, and ``forward`` (U-net, transformer, crop,
    softplus) is the package's, so loading and calling it exercises the package's code.
    """

    def __init__(self, config: BorzoiConfig) -> None:
        super().__init__(config)
        w = list(config.conv_widths)
        self.conv_dna.conv_layer = torch.nn.Conv1d(4, w[0], kernel_size=15, padding="same")
        tower: list[torch.nn.Module] = []
        for c_in, c_out in zip(w[:-1], w[1:], strict=True):
            tower += [ConvBlock(c_in, c_out, kernel_size=5), self._max_pool]
        self.res_tower = torch.nn.Sequential(*tower[:-1])
        self.unet1 = torch.nn.Sequential(self._max_pool, ConvBlock(w[-1], config.dim, 5))
        self.horizontal_conv0 = ConvBlock(w[-1], config.dim, kernel_size=1)
        self.final_joined_convs = torch.nn.Sequential(
            ConvBlock(config.dim, config.final_width, kernel_size=1),
            torch.nn.Dropout(0.1),
            torch.nn.GELU(approximate="tanh"),
        )
        self.human_head = torch.nn.Conv1d(config.final_width, config.n_human_tracks, 1)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random values where the package initialises constants (the attention output is
    zero-initialised, BatchNorm statistics are 0/1), so that a tensor lost on loading, or a
    wrong relative-position table, changes the predictions."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _subset_rows() -> list[int]:
    """Rows of the real table: two tracks of each layer, four RNA (8 + 4 = 12 tracks)."""
    frame = borzoi_tracks(TARGETS).frame
    per_layer = {"gene_expression": 4}
    rows: list[int] = []
    for layer in ("tss_activity", "chromatin_accessibility", "tf_binding", "histone_marks",
                  "gene_expression"):  # fmt: skip
        rows += frame.index[frame["layer"] == layer][: per_layer.get(layer, 2)].tolist()
    return sorted(int(frame["column"].iat[r]) for r in rows)


SUBSET = _subset_rows()


def save_narrow(
    directory: Path, n_tracks: int, seed: int = 0, config: dict[str, Any] = NARROW
) -> NarrowBorzoi:
    torch.manual_seed(seed)
    model = NarrowBorzoi(BorzoiConfig(**config, n_human_tracks=n_tracks)).eval()
    randomise(model, seed)
    model.save_pretrained(directory)  # config.json + model.safetensors, the hub's layout
    return model  # type: ignore[no-any-return]


def borzoi_recipe(
    weights: Path | None,
    tracks: Path,
    n_columns: int,
    *,
    plan: dict[str, Any] | None = None,
    **oracle: Any,
) -> Recipe:
    """The real recipe with the narrow architecture, a track table and a plan swapped in."""
    data = copy.deepcopy(BORZOI_TOML)
    data["oracle"].update(
        {"architecture": f"{NarrowBorzoi.__module__}:NarrowBorzoi", "batch_size": 2, **oracle}
    )
    if weights is not None:
        data["oracle"]["weights"] = str(weights)
    data["oracle"]["heads"][0]["n_columns"] = n_columns
    data["tracks"]["path"] = str(tracks)
    if plan is not None:
        data["plan"] = plan
    data["layout"] = {"position_shard_rows": 8, "variant_shard_rows": 8, "tracks_per_shard": 4,
                      "tracks_per_chunk": 4}  # fmt: skip
    return Recipe.from_dict(data, base=BORZOI_DIR)


#: a tiny plan on chr1/chr2 with margins beyond half the 524,288 bp window
SAMPLING = {
    "n_random": 4, "n_ccre": 4, "n_tss": 4, "n_gene_body": 2,
    "chromosomes": ["chr1", "chr2"], "ccre_chromosomes": ["chr1", "chr2"],
    "random_margin_bp": 270_000, "random_fallback_margin_bp": 270_000,
    "effect_family": "gene_anchored", "n_effect_positions": 10,
    "anchored_margin_bp": 270_000,
}  # fmt: skip
