"""Adaptive Frequency Filtering token mixer (AFFNet, Huang et al. 2023, arXiv:2307.14008)."""

from __future__ import annotations

import torch

from afno_repro.mixers.afno import AFNO2D, real_imag
from afno_repro.mixers.registry import register_mixer

__all__ = ["AFF"]


@register_mixer("aff", spectral=True)
class AFF(AFNO2D):
    """Adaptive frequency filter: an input-dependent complex mask on the spectrum of the token grid.

    AFFNet's AFF token mixer filters the ``rfft2`` of the tokens by element-wise multiplication with
    a mask that is itself computed from the spectrum, which equals a token-mixing convolution with a
    dynamic kernel as large as the grid (AFFNet abstract). The mask is the AFNO block MLP of this
    paper's Eq. 6 followed by soft-thresholding (Eq. 8), as in AFFNet's implementation:
    ``out = irfft2(z * S_lambda(MLP(z))) + x`` with ``z = rfft2(x)`` and ``*`` the complex product.
    The identity skip is part of the mixer; AFFNet's MBConv before the filter belongs to its block,
    not to the mixer, and is not included. Shapes: ``(B, H, W, C)`` in and out, any grid; FFTs and
    the filter run in float32 under autocast. Parameters: ``w1, b1, w2, b2`` as in :class:`AFNO2D`.
    Not shift-equivariant (the mask depends on the phases), so registered with ``shift_equivariant=False``.

    Parameters
    ----------
    dim : int
        Channels ``C``.
    num_blocks : int, default 8
        Diagonal blocks ``k`` of the mask MLP; must divide ``dim``.
    sparsity_threshold : float, default 0.01
        ``lambda`` of the soft-thresholding of the mask; 0 disables it.
    hidden_size_factor : int, default 1
        Width of the mask MLP's hidden layer relative to the block size.

    Examples
    --------
    >>> mixer = AFF(32, num_blocks=4)
    >>> mixer(torch.randn(2, 9, 12, 32)).shape
    torch.Size([2, 9, 12, 32])
    """

    def __init__(self, dim: int, *, num_blocks: int = 8, sparsity_threshold: float = 0.01, hidden_size_factor: int = 1):
        super().__init__(
            dim, num_blocks=num_blocks, sparsity_threshold=sparsity_threshold, hidden_size_factor=hidden_size_factor
        )

    def spectral_op(self, z: torch.Tensor) -> torch.Tensor:
        (zr, zi), (mr, mi) = real_imag(z), real_imag(self.block_mlp(z))
        re, im = zr * mr - zi * mi, zr * mi + zi * mr
        return torch.stack((re, im)) if z.ndim == 4 else torch.cat((re, im), dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_blocks={self.num_blocks}, sparsity_threshold={self.sparsity_threshold}, hidden_size_factor={self.hidden_size_factor}"
