"""The demo oracle's architecture: a small Enformer-shaped convolutional network.

Like Enformer it takes a one-hot sequence, pools it down to 128 bp bins through a
convolutional tower, crops the central bins and maps every bin to non-negative track
values through a pointwise head (softplus), returning ``(batch, bins, tracks)``. It has
no attention trunk; it is small enough to run the whole demo on two CPU cores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["DemoConvNet"]


class _ConvBlock(nn.Module):
    """BatchNorm → GELU → Conv1d, Enformer's ``conv_block``."""

    def __init__(self, c_in: int, c_out: int, width: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(c_in)
        self.conv = nn.Conv1d(c_in, c_out, width, padding=width // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(nn.functional.gelu(self.norm(x)))
        return out


class _Stage(nn.Module):
    """A width-5 conv block and a residual pointwise block (Enformer's conv tower stage)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = _ConvBlock(c_in, c_out, 5)
        self.residual = _ConvBlock(c_out, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        out: torch.Tensor = x + self.residual(x)
        return out


class DemoConvNet(nn.Module):
    """Conv stem, pooled residual tower, central crop, softplus track head.

    Parameters
    ----------
    n_tracks
        Output columns.
    channels
        Channels of the stem and of each tower stage; each stage halves the length.
    stem_pool
        Pooling after the stem; total downsampling is ``stem_pool * 2**(len(channels)-1)``.
    target_bins
        Central bins kept (Enformer keeps 896 of 1,536).
    """

    def __init__(
        self,
        n_tracks: int,
        channels: list[int] | tuple[int, ...] = (16, 24, 32, 32, 40, 48, 64),
        stem_pool: int = 2,
        target_bins: int = 64,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        c = list(channels)
        self.stem = nn.Conv1d(4, c[0], 15, padding=7)
        self.stem_pool = nn.MaxPool1d(stem_pool)
        self.tower = nn.ModuleList(_Stage(c[i], c[i + 1]) for i in range(len(c) - 1))
        self.pool = nn.MaxPool1d(2)
        self.target_bins = target_bins
        self.head = nn.Sequential(
            nn.Conv1d(c[-1], head_channels, 1),
            nn.GELU(),
            nn.Conv1d(head_channels, n_tracks, 1),
            nn.Softplus(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 4, length)`` one-hot → ``(batch, target_bins, n_tracks)``."""
        x = self.stem_pool(self.stem(x))
        for stage in self.tower:
            x = self.pool(stage(x))
        start = (x.shape[-1] - self.target_bins) // 2
        x = x[..., start : start + self.target_bins]
        out: torch.Tensor = self.head(x).transpose(1, 2)
        return out

    @staticmethod
    def default_config(n_tracks: int) -> dict[str, Any]:
        return {
            "n_tracks": n_tracks,
            "channels": [16, 24, 32, 32, 40, 48, 64],
            "stem_pool": 2,
            "target_bins": 64,
            "head_channels": 64,
        }
