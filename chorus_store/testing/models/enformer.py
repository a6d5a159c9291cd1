"""Tiny Enformers in the real on-disk formats: a Hugging Face directory of
``enformer_pytorch`` and a SavedModel with TF-Hub's interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chorus_store import Recipe, load_recipe
from chorus_store.genome.fasta import one_hot
from chorus_store.oracles.enformer import TRUNK_INPUT_BP
from chorus_store.resources import data_dir

__all__ = [
    "ENFORMER_DIR",
    "TARGETS",
    "L",
    "TRIM",
    "BINS",
    "TRACKS",
    "TINY",
    "random_onehot",
    "save_tiny_torch",
    "save_tiny_tf",
    "enformer_recipe",
    "E2E_SAMPLING",
    "subset_targets",
]


ENFORMER_DIR = data_dir("builders") / "enformer"


TARGETS = ENFORMER_DIR / "enformer_human_targets.txt"


L = 393_216


TRIM = (L - TRUNK_INPUT_BP) // 2  # 98,304 bp cut from each side before the trunk


BINS, TRACKS = 896, 5313


#: the real architecture, shrunk: 128 bp bins (7 downsamplings) and the real heads
TINY = {
    "dim": 24,
    "depth": 1,
    "heads": 1,
    "attn_dim_key": 8,
    "dim_divisible_by": 4,
    "target_length": BINS,
    "output_heads": {"human": TRACKS},
}


def random_onehot(n: int, seed: int = 0, length: int = L) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bases = np.frombuffer(b"ACGTN", np.uint8)
    seqs = [bases[rng.choice(5, length, p=[0.24] * 4 + [0.04])].tobytes() for _ in range(n)]
    return one_hot(seqs)  # N -> all-zero rows, as chorus encodes them


def save_tiny_torch(directory: Path, seed: int = 0, **overrides: Any) -> Path:
    """A randomly initialised tiny Enformer, every weight non-trivial, saved like the hub's."""
    from enformer_pytorch import Enformer

    torch.manual_seed(seed)
    model = Enformer.from_hparams(**{**TINY, **overrides})
    with torch.no_grad():  # upstream zero-initialises attention outputs; BN starts at identity
        for name, p in model.named_parameters():
            if "to_out" in name:
                p.normal_(0.0, 0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    # the official weights are a pytorch_model.bin (its shared trunk/stem aliases rule out
    # safetensors for this class)
    model.save_pretrained(directory, safe_serialization=False)
    return directory


def save_tiny_tf(directory: Path, *, wrapped: bool = True, seed: int = 0) -> Path:
    """A SavedModel with TF-Hub Enformer's interface and output layout."""
    import tensorflow as tf

    class Trunk(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(seed)
            self.w = tf.Variable(rng.normal(0, 0.05, (128 * 4, 8)).astype(np.float32))
            self.human = tf.Variable(rng.normal(0, 0.3, (8, TRACKS)).astype(np.float32))
            self.mouse = tf.Variable(rng.normal(0, 0.3, (8, 1643)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, L, 4], tf.float32)])  # type: ignore[untyped-decorator]
        def predict_on_batch(self, x: Any) -> dict[str, Any]:
            # like the hub model: central 196,608 bp, 128 bp bins, central 896 bins, softplus
            x = x[:, TRIM : TRIM + TRUNK_INPUT_BP]
            h = tf.nn.gelu(tf.reshape(x, [-1, TRUNK_INPUT_BP // 128, 128 * 4]) @ self.w)
            h = h[:, (1536 - BINS) // 2 : (1536 + BINS) // 2]
            return {
                "human": tf.nn.softplus(h @ self.human),
                "mouse": tf.nn.softplus(h @ self.mouse),
            }

    trunk = Trunk()
    root = tf.Module()
    root.model = trunk
    tf.saved_model.save(root if wrapped else trunk, str(directory))
    return directory


def enformer_recipe(
    weights: Path | None,
    *,
    framework: str = "pytorch",
    tracks: Path = TARGETS,
    batch_size: int = 2,
    oracle: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
) -> Recipe:
    """The shipped recipe with test weights, batch and (optionally) a generated demo plan."""
    import tomllib

    data = tomllib.loads((ENFORMER_DIR / "recipe.toml").read_text())
    data["oracle"].update(framework=framework, batch_size=batch_size, use_tf_gamma=False)
    if weights is not None:
        data["oracle"]["weights"] = str(weights)
    data["oracle"].update(oracle or {})
    data["tracks"]["path"] = str(tracks)
    if sampling is not None:  # 393 kb windows fit the demo genome's chr1/chr2 only
        data["plan"] = {
            "source": "generated",
            "assembly": "chorus-store-demo-v1",
            "sampling": sampling,
        }
        data["layout"] = {
            "position_shard_rows": 8,
            "variant_shard_rows": 8,
            "tracks_per_shard": 4,
            "tracks_per_chunk": 2,
        }
    return Recipe.from_dict(data, base=ENFORMER_DIR)


#: about 16 positions and 8 SNPs on chr1/chr2, margins wider than half a 393 kb window
E2E_SAMPLING = {
    "n_random": 5,
    "n_ccre": 5,
    "n_tss": 3,
    "n_gene_body": 3,
    "n_snps": 6,
    "chromosomes": ["chr1", "chr2"],
    "ccre_chromosomes": ["chr1", "chr2"],
    "random_margin_bp": 200_000,
    "random_fallback_margin_bp": 200_000,
    "snp_margin_bp": 200_000,
}


def subset_targets(path: Path) -> tuple[Path, list[int]]:
    """Two tracks of each layer from the real targets file, CAGE first (not column order)."""
    targets = pd.read_csv(TARGETS, sep="\t")
    table = load_recipe("enformer").track_table()
    layers = np.asarray(table.layers)
    order = ["tss_activity", "chromatin_accessibility", "histone_marks", "tf_binding"]
    rows = [int(i) for layer in order for i in np.flatnonzero(layers == layer)[[0, -1]]]
    targets.iloc[rows].to_csv(path, sep="\t", index=False)
    return path, rows
