"""A tiny Sei with random weights, written as the Zenodo download's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from chorus_store import Recipe
from chorus_store.oracles.models.sei import SEI_CLASSES, Sei
from chorus_store.resources import data_dir
from chorus_store.testing.models.demo import DEMO_TOML, SMALL_LAYOUT, SMALL_SAMPLING

__all__ = [
    "SEI_DIR",
    "SEQCLASS",
    "TINY",
    "TINY_NAMES",
    "N_PROFILES",
    "HISTONE",
    "N_PROJ_ROWS",
    "SEI_SAMPLING",
    "tiny_network",
    "write_weights",
    "tiny_recipe",
]


SEI_DIR = data_dir("builders") / "sei"


SEQCLASS = SEI_DIR / "seqclass_info.txt"


TINY: dict[str, Any] = {"channels": [8, 8, 12]}


#: 12 profiles in target.names's real format; histone marks at 2-6 and 10-11
TINY_NAMES = [
    "HepG2_Liver | DNase | ID:40919",
    "K562_Blood | ATAC-seq | ID:61705",
    "H9_Embryonic_Stem_Cell_Embryo | H3K27ac | ID:1025",
    "K562_Blood | H3K4me3 | ID:1100",
    "KARPAS-422_B_cell_lymphoma | H3K9me3 | ID:71977",
    "Neurosphere_Cultured_Cells_Cortex_Derived | H3K36me3 | Roadmap",
    "GM12878 | H3K27me3 | ID:5012",
    "A549 | CTCF | ENCODE | 1",
    "A549 | CTCF | ENCODE | 2",
    "HeLa_Epithelium_Cervix | BTAF1 | ID:1",
    "HepG2_Liver | H2A.Z | ID:2200",
    "CD14_Primary_Cells | H3K4me1 | Roadmap",
]


N_PROFILES = len(TINY_NAMES)


HISTONE = np.asarray([2, 3, 4, 5, 6, 10, 11])


N_PROJ_ROWS = 61  # the file has more rows than classes; only the first 40 are kept


#: a smaller plan than SMALL_SAMPLING (~110 positions, ~40 SNPs): two builds run here
SEI_SAMPLING = SMALL_SAMPLING | {"n_random": 48, "n_ccre": 32, "n_tss": 16, "n_gene_body": 12,
                                 "n_snps": 40}  # fmt: skip


def tiny_network(seed: int = 0, n_profiles: int = N_PROFILES) -> Sei:
    torch.manual_seed(seed)
    return Sei(n_genomic_features=n_profiles, **TINY).eval()


def write_weights(
    folder: Path,
    *,
    net: Sei | None = None,
    projection: np.ndarray | None = None,
    histone: np.ndarray = HISTONE,
) -> Path:
    """The released layout: model/{sei.pth, projvec_targets.npy, histone_inds.npy, target.names}."""
    model = folder / "model"
    model.mkdir(parents=True)
    net = net or tiny_network()
    state = {f"module.model.{k}": v for k, v in net.state_dict().items()}
    torch.save(state, model / "sei.pth")
    rng = np.random.default_rng(7)
    if projection is None:
        projection = rng.normal(size=(N_PROJ_ROWS, N_PROFILES))
    np.save(model / "projvec_targets.npy", projection)
    np.save(model / "histone_inds.npy", histone)
    (model / "target.names").write_text("\n".join(TINY_NAMES) + "\n")
    return folder


def tiny_recipe(
    folder: Path, *, effects: str = "query", weights_in_recipe: bool = False, **oracle: Any
) -> Recipe:
    data: dict[str, Any] = {
        "name": "sei_tiny",
        "oracle": {
            "adapter": "sei", "input_length": 4096, "batch_size": 4, "max_n_fraction": 0.5,
            "joint_tracks": True, "config": dict(TINY),
            "heads": [{"name": "profiles", "resolution_bp": 0, "n_columns": N_PROFILES},
                      {"name": "classes", "resolution_bp": 0, "n_columns": SEI_CLASSES}],
            **oracle,
        },
        "tracks": {"format": "sei", "target_names": str(folder / "model" / "target.names"),
                   "seqclass_info": str(SEQCLASS)},
        "plan": {"source": "generated", "assembly": "chorus-store-demo-v1",
                 "sampling": {**DEMO_TOML["plan"]["sampling"], **SEI_SAMPLING}},
        "layout": SMALL_LAYOUT,
    }  # fmt: skip
    if weights_in_recipe:
        data["oracle"]["weights"] = str(folder)
    data["tracks"]["effects"] = effects
    return Recipe.from_dict(data, base=folder)
