"""Tiny LegNet models with random weights, saved as chorus's download (Lightning
checkpoints with optimiser and scheduler state) and a recipe over them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from chorus_store import (
    Recipe,
)
from chorus_store.genome.track_tables import legnet_tracks
from chorus_store.oracles.models.legnet import LegNet, LegNetConfig
from chorus_store.testing.models.demo import DEMO_TOML, SMALL_SAMPLING

__all__ = [
    "CELLS",
    "TINY_CONFIG",
    "FULL_CONFIG",
    "random_model",
    "lightning_checkpoint",
    "make_weights",
    "e2e_recipe",
]


CELLS = ("K562", "HepG2", "WTC11")


#: a real training config.json (TrainingConfig fields) with tiny widths
TINY_CONFIG: dict[str, Any] = {
    "stem_ch": 8, "stem_ks": 5, "ef_ks": 3, "ef_block_sizes": [8, 12], "resize_factor": 2,
    "pool_sizes": [2, 2], "reverse_augment": True, "use_reverse_channel": False,
    "use_shift": True, "max_shift": None, "max_lr": 0.01, "weight_decay": 0.1,
    "model_dir": "/models/LentiMPRA", "data_path": "data.tsv", "epoch_num": 25, "device": 0,
    "seed": 777, "train_batch_size": 1024, "valid_batch_size": 1024, "num_workers": 8,
}  # fmt: skip


#: the architecture of the real checkpoints (autosome-ru/human_legnet models/example.cfg)
FULL_CONFIG = {
    **TINY_CONFIG, "stem_ch": 64, "ef_block_sizes": [80, 96, 112, 128], "resize_factor": 4,
    "pool_sizes": [2, 2, 2, 2],
}  # fmt: skip


class _OneCycleLike:
    """torch 2.0's OneCycleLR pickled ``anneal_func`` (a bound method) into its state."""

    def _annealing_cos(self) -> None:
        pass


def random_model(config: dict[str, Any], seed: int) -> LegNet:
    torch.manual_seed(seed)
    model = LegNetConfig.from_dict(config).build()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):  # non-trivial running statistics
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def lightning_checkpoint(model: LegNet, *, scheduler: bool = True) -> dict[str, Any]:
    """What MPRA-LegNet's Lightning 2.0 trainer saves (LitModel holds the net as .model)."""
    ckpt: dict[str, Any] = {
        "epoch": 24, "global_step": 1000, "pytorch-lightning_version": "2.0.3",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"ready": 25}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_pearson'}": {
            "best_model_score": torch.tensor(0.81), "best_model_path": "/m/model.ckpt"}},
        "optimizer_states": [torch.optim.AdamW(model.parameters()).state_dict()],
        "lr_schedulers": [],
    }  # fmt: skip
    if scheduler:
        ckpt["lr_schedulers"] = [{"anneal_func": _OneCycleLike()._annealing_cos, "last_epoch": 1}]
    return ckpt


def make_weights(
    root: Path,
    cells: tuple[str, ...] = CELLS,
    config: dict[str, Any] = TINY_CONFIG,
    *,
    scheduler: bool = True,
) -> Path:
    """chorus's LegNet download layout with a random tiny model per cell type."""
    for i, cell in enumerate(cells):
        d = root / f"LentiMPRA_{cell}"
        (d / "example").mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({**config, "model_dir": str(d)}, indent=4))
        model = random_model(config, seed=100 + i)
        torch.save(lightning_checkpoint(model, scheduler=scheduler), d / "example/weights.ckpt")
    return root


def e2e_recipe(tmp: Path, weights: Path, n_cells: int = 3) -> Recipe:
    if n_cells == 3:
        tracks: dict[str, Any] = {"format": "legnet"}
    else:  # a prefix of the legnet table, as a TSV (add-tracks appends the rest)
        raw = legnet_tracks().frame[
            ["track_id", "assay_type", "description", "head", "resolution_bp", "column"]
        ]
        raw.iloc[:n_cells].to_csv(tmp / "tracks.tsv", sep="\t", index=False)
        tracks = {"table": str(tmp / "tracks.tsv")}
    data = {
        "name": "legnet",
        "oracle": {
            "adapter": "legnet", "weights": str(weights), "input_length": 200,
            "batch_size": 16, "max_n_fraction": 0.3, "per_model": True,
            "cell_types": list(CELLS),
            # n_columns declared: the model has three columns whatever the table holds
            "heads": [{"name": "activity", "resolution_bp": 0, "n_columns": 3}],
        },
        "tracks": tracks,
        "plan": {"source": "generated", "assembly": "chorus-store-demo-v1",
                 "sampling": {**DEMO_TOML["plan"]["sampling"], **SMALL_SAMPLING}},
        "layout": {"position_shard_rows": 32, "variant_shard_rows": 32, "tracks_per_shard": 1,
                   "tracks_per_chunk": 1},
    }  # fmt: skip
    return Recipe.from_dict(data, base=tmp)
