"""Make the demo oracle's weights: DemoConvNet with seeded random weights.

The weights are random, not trained. Two adjustments make the outputs look like genome
tracks (mostly low, occasional peaks) instead of a constant: convolution weights are
scaled by 2, and BatchNorm statistics are calibrated on 64 windows of the synthetic demo
genome (a data-dependent initialisation); the head's bias is set to -2.

Run once; the outputs ``model/config.json`` and ``model/weights.pt`` are committed, so the
demo's model (and its fingerprint) does not change with the PyTorch version.

    python examples/demo/make_demo_model.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chorus_store.demo import make_demo_inputs
from chorus_store.genome.fasta import Genome, one_hot
from chorus_store.oracles.models.demo import DemoConvNet

HERE = Path(__file__).resolve().parent
N_TRACKS = len(pd.read_csv(HERE.parent.parent / "builders" / "demo" / "tracks.tsv", sep="\t"))
INPUT_LENGTH = 16_384


def calibration_batch() -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_demo_inputs(tmp)
        genome = Genome(inputs.fasta)
        rng = np.random.default_rng(7)
        centres = rng.integers(100_000, 900_000, 64)
        seqs = [genome.window("chr1", int(c), INPUT_LENGTH) for c in centres]
        genome.close()
    return torch.from_numpy(one_hot(seqs)).transpose(1, 2).contiguous()


def main() -> None:
    torch.manual_seed(20261124)
    config = DemoConvNet.default_config(N_TRACKS)
    model = DemoConvNet(**config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv1d):
                module.weight.mul_(2.0)
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = None  # cumulative average over the calibration batch
        model.train()
        model(calibration_batch())
        model.eval()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = 0.1
        model.head[2].bias.fill_(-2.0)
    out = HERE / "model"
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    torch.save(model.state_dict(), out / "weights.pt")
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
