"""The LegNet architecture (MPRA-LegNet, Agarwal et al. 2025), as chorus ships it.

A PyTorch port written for chorus-store with the module tree of chorus's vendored
``chorus/oracles/legnet_source/model.py`` (itself ``autosome-ru/human_legnet``), so the
real checkpoints' state dicts load key for key: a stem convolution, four stages of
(EfficientNet-style block concatenated with its input → convolution → max-pool), a
pointwise mapper, global average pooling and a two-layer regression head returning one
scalar per sequence.

The model takes ``(batch, in_ch, length)`` with channels in LegNet's order A, G, C, T
(plus a reverse-strand flag channel when trained with ``use_reverse_channel``); N is
encoded as 0.25 in every channel. chorus feeds it ``left flank + 200 bp + right flank``
= 230 bp; the adapter (:mod:`chorus_store.oracles.legnet`) builds that input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["LegNet", "LegNetConfig"]


class _SqueezeExcite(nn.Module):
    """Channel gating by the sequence-mean of each channel (chorus ``SELayer``)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = int(channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.SiLU(),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=2)).unsqueeze(-1)
        out: torch.Tensor = x * gate
        return out


class _EffBlock(nn.Module):
    """Expand (1x1) → depthwise conv → squeeze-excite → project back (1x1); BN + SiLU each."""

    def __init__(self, channels: int, kernel_size: int, resize_factor: int) -> None:
        super().__init__()
        inner = channels * resize_factor
        self.block = nn.Sequential(
            nn.Conv1d(channels, inner, kernel_size=1, padding="same", bias=False),
            nn.BatchNorm1d(inner),
            nn.SiLU(),
            nn.Conv1d(
                inner, inner, kernel_size=kernel_size, groups=inner, padding="same", bias=False
            ),
            nn.BatchNorm1d(inner),
            nn.SiLU(),
            _SqueezeExcite(inner, reduction=resize_factor),
            nn.Conv1d(inner, channels, kernel_size=1, padding="same", bias=False),
            nn.BatchNorm1d(channels),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


class _LocalBlock(nn.Module):
    """Convolution (no bias) → BN → SiLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel_size=kernel_size, padding="same", bias=False),
            nn.BatchNorm1d(c_out),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


class _ResidualConcat(nn.Module):
    """``[fn(x), x]`` along channels: the stage sees both the block's output and its input."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.fn(x), x], dim=1)


class _Mapper(nn.Module):
    """BN → pointwise convolution doubling the channels (chorus ``MapperBlock``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.BatchNorm1d(c_in), nn.Conv1d(c_in, c_out, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


class LegNet(nn.Module):
    """LegNet: ``(batch, in_ch, length)`` → ``(batch,)`` predicted activity.

    Parameters
    ----------
    in_ch
        Input channels: 4 (A, G, C, T), or 5 with a reverse-strand flag channel.
    stem_ch, stem_ks
        Channels and kernel size of the stem convolution.
    ef_ks
        Kernel size of every stage's depthwise and local convolutions.
    ef_block_sizes
        Output channels of each stage.
    pool_sizes
        Max-pool size after each stage (1: none).
    resize_factor
        Channel expansion inside each EfficientNet block (also its squeeze-excite reduction).
    """

    def __init__(
        self,
        in_ch: int,
        stem_ch: int,
        stem_ks: int,
        ef_ks: int,
        ef_block_sizes: Sequence[int],
        pool_sizes: Sequence[int],
        resize_factor: int,
    ) -> None:
        super().__init__()
        if len(pool_sizes) != len(ef_block_sizes):
            raise ValueError(
                f"LegNet needs one pool size per stage: {len(pool_sizes)} pool sizes for "
                f"{len(ef_block_sizes)} stages"
            )
        self.in_ch = in_ch
        self.stem = _LocalBlock(in_ch, stem_ch, stem_ks)
        stages: list[nn.Module] = []
        channels = stem_ch
        for pool, out_ch in zip(pool_sizes, ef_block_sizes, strict=True):
            stages.append(
                nn.Sequential(
                    _ResidualConcat(_EffBlock(channels, ef_ks, resize_factor)),
                    _LocalBlock(channels * 2, out_ch, ef_ks),
                    nn.MaxPool1d(pool) if pool != 1 else nn.Identity(),
                )
            )
            channels = out_ch
        self.main = nn.Sequential(*stages)
        self.mapper = _Mapper(channels, channels * 2)
        self.head = nn.Sequential(
            nn.Linear(channels * 2, channels * 2),
            nn.BatchNorm1d(channels * 2),
            nn.SiLU(),
            nn.Linear(channels * 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mapper(self.main(self.stem(x)))
        x = nn.functional.adaptive_avg_pool1d(x, 1).squeeze(-1)
        out: torch.Tensor = self.head(x).squeeze(-1)
        return out


@dataclass(frozen=True)
class LegNetConfig:
    """The architecture fields of a LegNet training ``config.json`` (chorus ``TrainingConfig``).

    The training file also holds optimiser, data and augmentation settings; only these
    decide the network (``in_ch = 4 + use_reverse_channel``, as in chorus).
    """

    stem_ch: int
    stem_ks: int
    ef_ks: int
    ef_block_sizes: tuple[int, ...]
    pool_sizes: tuple[int, ...]
    resize_factor: int
    use_reverse_channel: bool = False

    @property
    def in_ch(self) -> int:
        return 4 + int(self.use_reverse_channel)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LegNetConfig:
        """The architecture fields of a training config; other keys are ignored.

        Raises ``KeyError`` naming a missing field, ``ValueError``/``TypeError`` on a bad one.
        """
        return cls(
            stem_ch=int(d["stem_ch"]),
            stem_ks=int(d["stem_ks"]),
            ef_ks=int(d["ef_ks"]),
            ef_block_sizes=tuple(int(v) for v in d["ef_block_sizes"]),
            pool_sizes=tuple(int(v) for v in d["pool_sizes"]),
            resize_factor=int(d["resize_factor"]),
            use_reverse_channel=bool(d.get("use_reverse_channel", False)),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> LegNetConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ef_block_sizes"] = list(self.ef_block_sizes)
        d["pool_sizes"] = list(self.pool_sizes)
        return d

    def build(self) -> LegNet:
        return LegNet(
            in_ch=self.in_ch,
            stem_ch=self.stem_ch,
            stem_ks=self.stem_ks,
            ef_ks=self.ef_ks,
            ef_block_sizes=self.ef_block_sizes,
            pool_sizes=self.pool_sizes,
            resize_factor=self.resize_factor,
        )
