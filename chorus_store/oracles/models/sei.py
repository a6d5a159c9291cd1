"""Sei (Chen et al. 2022) in PyTorch, with the numerics around it: strand averaging,
projection to sequence classes, and the histone (nucleosome-occupancy) equalisation.

The network follows the released architecture (FunctionLab/sei-framework ``model/sei.py``,
vendored by chorus as ``chorus/oracles/sei_source/sei.py``) module for module, so the
released ``sei.pth`` loads without renaming: ``lconv1.0.weight`` ... ``classifier.2.bias``.
Dropout, ReLU and pooling layers keep their places in each ``nn.Sequential`` because the
parameter names are their indices. The channel counts and the number of profiles are
arguments only so that tests can build a tiny instance of the same layer structure.

The released checkpoint was trained and saved by selene as
``DataParallel(NonStrandSpecific(Sei))``, hence its keys ``module.model.<name>``; and
sei-framework predicts with ``non_strand_specific: mean`` (the mean of the forward and
the reverse-complement predictions). :class:`NonStrandSpecific` reproduces that wrapper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "Sei",
    "NonStrandSpecific",
    "BSplineTransformation",
    "bspline_basis",
    "project_classes",
    "equalize_histones",
    "SEI_WINDOW",
    "SEI_PROFILES",
    "SEI_CLASSES",
]

#: bp of sequence Sei reads (chorus ``SEI_WINDOW``)
SEI_WINDOW = 4096
#: chromatin profiles Sei predicts (chorus ``SEI_TARGETS``; lines of ``target.names``)
SEI_PROFILES = 21907
#: sequence classes kept from the projection (chorus ``SEI_CLASSES``; sei-framework ``[:, :40]``)
SEI_CLASSES = 40


def bspline_basis(n: int, df: int) -> np.ndarray:
    """Cubic B-spline basis over positions ``0 .. n-1`` with ``df`` functions, ``(n, df)``.

    Sei smooths its last feature map along the sequence with this fixed basis (no
    parameters). The knots are those of patsy/R ``bs(x, df, intercept=True)`` on
    ``x = arange(n)``: the boundary knots ``min(x)``, ``max(x)`` repeated four times and
    ``df - 4`` interior knots at equally spaced quantiles of ``x``. Each column is one
    basis function, evaluated with scipy's ``splev`` (as upstream does) so the values
    agree with the released model's to the last bit.
    """
    from scipy.interpolate import splev

    degree = 3
    order = degree + 1
    x = np.arange(n)
    n_inner = df - order
    quantiles = np.linspace(0, 1, n_inner + 2)[1:-1] if n_inner > 0 else np.zeros(0)
    inner = np.percentile(x, 100 * quantiles)
    knots = np.sort(np.concatenate([[np.min(x), np.max(x)] * order, inner]))
    n_basis = len(knots) - order
    basis = np.empty((n, n_basis), dtype=float)
    for i in range(n_basis):
        coefs = np.zeros(n_basis)
        coefs[i] = 1.0
        basis[:, i] = splev(x, (knots, coefs, degree))
    return basis


class BSplineTransformation(nn.Module):
    """Project the length axis onto ``df`` B-spline functions: ``(B, C, L) → (B, C, df)``.

    Upstream builds the matrix lazily from the first input's length; Sei's input length
    is fixed, so it is built here once, as a buffer kept out of the state dict (the
    released checkpoint has no entry for it).
    """

    basis: torch.Tensor

    def __init__(self, degrees_of_freedom: int, length: int) -> None:
        super().__init__()
        self.degrees_of_freedom = degrees_of_freedom
        basis = torch.from_numpy(bspline_basis(length, degrees_of_freedom)).float()
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.basis.shape[0]:
            raise ValueError(
                f"Sei's spline layer was built for {self.basis.shape[0]} positions, "
                f"got {x.shape[-1]} (the input length must be the model's)"
            )
        return torch.matmul(x, self.basis)


def _conv(c_in: int, c_out: int, width: int = 9, dilation: int = 1) -> nn.Conv1d:
    """A 'same'-length convolution, as every Sei convolution is."""
    return nn.Conv1d(c_in, c_out, kernel_size=width, dilation=dilation,
                     padding=dilation * (width - 1) // 2)  # fmt: skip


class Sei(nn.Module):
    """The Sei network: one-hot ``(B, 4, L)`` → profile probabilities ``(B, n_genomic_features)``.

    Parameters
    ----------
    sequence_length
        Input length in bp; must be a multiple of 16 (two 4x max-pools, then the spline
        layer over ``sequence_length / 16`` positions). The released model: 4,096.
    n_genomic_features
        Chromatin profiles predicted. The released model: 21,907.
    channels
        Channels of the three residual stages. The released model: (480, 640, 960).
    spline_df
        B-spline functions of the length smoothing. The released model: 16 (``128 / 8``).

    Examples
    --------
    >>> tiny = Sei(n_genomic_features=12, channels=(8, 8, 12))
    >>> tiny.eval()(torch.zeros(2, 4, 4096)).shape
    torch.Size([2, 12])
    """

    def __init__(
        self,
        sequence_length: int = SEI_WINDOW,
        n_genomic_features: int = SEI_PROFILES,
        channels: Sequence[int] = (480, 640, 960),
        spline_df: int = 16,
    ) -> None:
        super().__init__()
        if sequence_length % 16:
            raise ValueError(
                f"Sei's sequence_length must be a multiple of 16, not {sequence_length}"
            )
        c1, c2, c3 = (int(c) for c in channels)
        self.config = {
            "sequence_length": int(sequence_length),
            "n_genomic_features": int(n_genomic_features),
            "channels": [c1, c2, c3],
            "spline_df": int(spline_df),
        }
        self._c3, self._spline_df = c3, int(spline_df)
        relu = nn.ReLU  # Sei uses in-place ReLUs; they hold no parameters
        self.lconv1 = nn.Sequential(_conv(4, c1), _conv(c1, c1))
        self.conv1 = nn.Sequential(
            _conv(c1, c1), relu(inplace=True), _conv(c1, c1), relu(inplace=True)
        )
        self.lconv2 = nn.Sequential(
            nn.MaxPool1d(kernel_size=4, stride=4), nn.Dropout(p=0.2), _conv(c1, c2), _conv(c2, c2)
        )
        self.conv2 = nn.Sequential(
            nn.Dropout(p=0.2), _conv(c2, c2), relu(inplace=True), _conv(c2, c2), relu(inplace=True)
        )
        self.lconv3 = nn.Sequential(
            nn.MaxPool1d(kernel_size=4, stride=4), nn.Dropout(p=0.2), _conv(c2, c3), _conv(c3, c3)
        )
        self.conv3 = nn.Sequential(
            nn.Dropout(p=0.2), _conv(c3, c3), relu(inplace=True), _conv(c3, c3), relu(inplace=True)
        )
        # dilated residual stack: width 5, dilations 2, 4, 8, 16, 25 (padding = 2 x dilation)
        self.dconv1, self.dconv2, self.dconv3, self.dconv4, self.dconv5 = (
            nn.Sequential(nn.Dropout(p=0.10), _conv(c3, c3, 5, d), relu(inplace=True))
            for d in (2, 4, 8, 16, 25)
        )
        self.spline_tr = nn.Sequential(
            nn.Dropout(p=0.5), BSplineTransformation(spline_df, sequence_length // 16)
        )
        self.classifier = nn.Sequential(
            nn.Linear(c3 * spline_df, n_genomic_features),
            relu(inplace=True),
            nn.Linear(n_genomic_features, n_genomic_features),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lout1 = self.lconv1(x)
        out1 = self.conv1(lout1)
        lout2 = self.lconv2(out1 + lout1)
        out2 = self.conv2(lout2)
        lout3 = self.lconv3(out2 + lout2)
        out3 = self.conv3(lout3)
        cat = out3 + self.dconv1(out3 + lout3)
        for block in (self.dconv2, self.dconv3, self.dconv4, self.dconv5):
            cat = cat + block(cat)
        spline_out = self.spline_tr(cat)
        flat = spline_out.reshape(spline_out.size(0), self._c3 * self._spline_df)
        out: torch.Tensor = self.classifier(flat)
        return out


class NonStrandSpecific(nn.Module):
    """selene's wrapper: the mean of the model on a sequence and on its reverse complement.

    For ``(B, 4, L)`` one-hot in A, C, G, T order, flipping the channel axis complements
    and flipping the length axis reverses. Wrapping names the inner network ``model``, as
    in the released checkpoint's keys (``module.model.lconv1.0.weight``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward_strand = self.model(x)
        reverse_strand = self.model(torch.flip(x, dims=(1, 2)))
        out: torch.Tensor = (forward_strand + reverse_strand) / 2
        return out


def project_classes(
    profiles: np.ndarray, projection: np.ndarray, n_classes: int, norm: np.ndarray | None = None
) -> np.ndarray:
    """Sequence-class scores of profile vectors ``(n, F)`` → ``(n, n_classes)``.

    The score of class ``k`` is the profile vector's dot product with projection row
    ``k`` divided by that row's norm (sei-framework ``sc_projection``); the rows beyond
    ``n_classes`` are not sequence classes and are dropped after projecting, as upstream
    does. The arithmetic is chorus's ``SeiProjector`` in the projection's own dtype, one
    vector at a time, so a class score does not depend on which other sequences were
    projected with it. ``norm`` (``np.linalg.norm(projection, axis=1)``) may be passed to
    save recomputing it.
    """
    if norm is None:
        norm = np.linalg.norm(projection, axis=1)
    rows = [(np.dot(p[None, :], projection.T) / norm)[:, :n_classes] for p in profiles]
    if not rows:
        return np.zeros((0, n_classes), dtype=np.result_type(profiles, projection))
    return np.concatenate(rows)


def equalize_histones(alleles: Sequence[np.ndarray], histone_inds: np.ndarray) -> list[np.ndarray]:
    """Scale each allele's histone profiles so all alleles share one histone total.

    ``alleles`` are profile arrays ``(n, F)`` of the same sequences with different
    alleles; each row's histone profiles (columns ``histone_inds``) are multiplied by
    ``mean_total / own_total``. For a ref and one alt this is sei-framework's
    ``sc_hnorm_varianteffect`` (each allele scaled to the pair's mean total) and chorus's
    ``SeiNormalizer.equalize`` operation for operation, so the results agree bit for bit.
    Other columns are returned unchanged.
    """
    adjusted = [np.asarray(p).copy() for p in alleles]
    sums = [np.sum(p[:, histone_inds], axis=1) for p in adjusted]
    target = np.mean(np.stack(sums), axis=0)
    for p, s in zip(adjusted, sums, strict=True):
        p[:, histone_inds] = p[:, histone_inds] * (target / s)[:, None]
    return adjusted
