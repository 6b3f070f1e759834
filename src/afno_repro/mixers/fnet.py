"""FNet's parameter-free Fourier token mixer (Lee-Thorp et al., 2021, "FNet: Mixing Tokens with
Fourier Transforms")."""

from __future__ import annotations

import torch
from torch import nn

from afno_repro.mixers.precision import autocast_off
from afno_repro.mixers.registry import register_mixer

__all__ = ["FNet"]

_NORMS = ("backward", "ortho", "forward")


@register_mixer("fnet", spectral=True)
class FNet(nn.Module):
    """Real part of the discrete Fourier transform of the tokens; no parameters.

    FNet mixes tokens with ``y = Re(F_seq(F_hidden(x)))``: a 1-D DFT along the hidden (channel)
    dimension, then a DFT along the sequence, here the 2-D DFT over the ``(H, W)`` token grid, and
    the real part. ``fft_over_channels=False`` drops the channel DFT (``Re(fft2(x))`` over the grid
    only). FFTs run in float32 even under autocast; the output has the input's shape
    ``(B, H, W, C)`` and dtype, for any grid. There is no residual inside: FNet's block adds it.

    FNet is not shift-equivariant over the grid: the DFT of a rolled input is the DFT times a phase
    ramp, and the real part of that is not a roll of the real part. It is therefore registered with
    ``shift_equivariant=False`` (the registry's flag marks mixers tested for circular shift-equivariance).

    Parameters
    ----------
    dim : int
        Channels ``C`` (only checked against the input; the mixer has no weights).
    fft_over_channels : bool, default True
        Also transform along the channels, as FNet does.
    norm : {"backward", "ortho", "forward"}, default "backward"
        ``torch.fft`` normalisation. FNet uses the unnormalised DFT ("backward") inside post-norm
        blocks; "ortho" keeps the output at the input's scale, which suits pre-norm backbones.

    Examples
    --------
    >>> mixer = FNet(16)
    >>> mixer(torch.randn(2, 7, 5, 16)).shape
    torch.Size([2, 7, 5, 16])
    """

    def __init__(self, dim: int, *, fft_over_channels: bool = True, norm: str = "backward"):
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(
                f"norm={norm!r} is not a torch.fft normalisation; valid choices are {_NORMS}: 'backward' "
                "(unnormalised forward DFT, FNet's), 'ortho' (unitary) or 'forward'. Pass one of these."
            )
        self.dim = dim
        self.fft_over_channels = fft_over_channels
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise ValueError(
                f"FNet expects tokens of shape (B, H, W, {self.dim}), got {tuple(x.shape)}; reshape the "
                "sequence to its (H, W) grid with channels last."
            )
        dims = (1, 2, 3) if self.fft_over_channels else (1, 2)
        with autocast_off(x):
            y = torch.fft.fftn(x.to(torch.promote_types(x.dtype, torch.float32)), dim=dims, norm=self.norm).real
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, fft_over_channels={self.fft_over_channels}, norm={self.norm!r}"
