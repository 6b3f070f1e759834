"""Fourier Neural Operator mixer (FNO; Li et al., 2020), the paper's starting point for AFNO.

Section 3.2 defines the Discrete FNO token mixer; Table 6 trains it as a ViT-XS/4 row
(hidden 64, five layers, ~16M parameters, almost all of them in the per-frequency weights).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from afno_repro.mixers.gfn import GlobalFilter, check_grid_size
from afno_repro.mixers.precision import autocast_off
from afno_repro.mixers.registry import check_channel_split, positive_pair, register_mixer

__all__ = ["FNO2D"]


@register_mixer("fno", spectral=True, shift_equivariant=True)
class FNO2D(nn.Module):
    """Discrete FNO: a separate complex channel-mixing matrix for every kept frequency.

    Implements Section 3.2, Definition 4 and "Discrete FNO" steps (1)-(3): ``z = DFT(x)``
    (``rfft2``, ``norm="ortho"``), ``z~_{m,n} = W_{m,n} z_{m,n}`` on the kept modes, frequencies
    not kept set to zero, ``y = IDFT(z~)``. With ``num_blocks = k`` each ``W_{m,n}`` is
    block-diagonal with ``k`` blocks of ``C/k`` channels (Section 4, Eq. 5); at block size one
    (``num_blocks = dim``) FNO coincides with GFN (Section 4), see :meth:`from_global_filter`.
    There is no skip inside the mixer; the transformer block adds the residual.

    Which modes are kept. ``modes=(m1, m2)`` keeps the lowest modes in the two corners of the
    ``rfft2`` plane, as the classic FNO does: rows ``[0, m1)`` and ``[H-m1, H)`` (frequencies
    ``-m1 .. m1-1`` along the full-FFT axis) and columns ``[0, m2)`` (frequencies ``0 .. m2-1``
    along the rfft axis). The weights are indexed by frequency, so the same weights run on any
    grid (Section 3.2, "Resolution Invariance"): on a grid with fewer modes (``2 * m1 > H`` or
    ``m2 > W//2+1``) the kept set is clipped to the frequencies the grid has, i.e. every row
    whose frequency lies in ``-m1 .. m1-1`` and columns ``[0, min(m2, W//2+1))``.
    ``modes=None`` keeps every mode of ``grid_size`` (weights for all ``h x (w//2+1)``
    frequencies, in FFT order); on another grid the frequencies common to both are used.

    Shape contract: ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W``. The FFTs and the mixing run
    in at least float32 even under autocast; the output is cast back to the input dtype.

    Parameters
    ----------
    dim : int
        Channel width ``C``.
    modes : tuple[int, int] or None, default (14, 14)
        Modes kept per corner ``(m1, m2)``; ``None`` keeps all modes of ``grid_size``. The default
        gives the paper's ViT-XS/4 FNO row ~16M parameters at hidden 64 with five layers.
    num_blocks : int, default 1
        Number ``k`` of diagonal blocks of ``W_{m,n}``; must divide ``dim``. ``1`` is the full
        ``d x d`` FNO, ``dim`` a per-channel (GFN-like) diagonal weight.
    grid_size : tuple[int, int] or None, default None
        Token grid ``(h, w)`` that sizes the weights when ``modes=None``; unused otherwise.

    Attributes
    ----------
    weight : nn.Parameter
        Shape ``(L, M, k, C/k, C/k, 2)`` (real, imaginary): ``L = 2 * m1`` kept rows stored in
        FFT order of length ``L`` (frequencies ``0 .. m1-1`` then ``-m1 .. -1``) and ``M = m2``
        kept columns; ``L = h`` and ``M = w//2+1`` when ``modes=None``. Entry ``[.., i, o, :]``
        maps input channel ``i`` to output channel ``o`` of a block. Initialised as in the
        classic FNO: real and imaginary parts ``scale * rand`` with ``scale = 1 / (C/k)^2``
        (input times output channels of a block).

    Examples
    --------
    >>> import torch
    >>> from afno_repro.mixers import build_mixer
    >>> mixer = build_mixer("fno", 16, modes=(3, 2), num_blocks=4)
    >>> mixer(torch.randn(2, 7, 5, 16)).shape
    torch.Size([2, 7, 5, 16])
    >>> full = build_mixer("fno", 16, modes=None, grid_size=(8, 8))
    >>> full.weight.shape
    torch.Size([8, 5, 1, 16, 16, 2])
    """

    def __init__(
        self,
        dim: int,
        *,
        modes: tuple[int, int] | None = (14, 14),
        num_blocks: int = 1,
        grid_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        check_channel_split(dim, num_blocks, "num_blocks", "fno")
        if modes is None:
            if grid_size is None:
                raise ValueError(
                    "FNO2D got modes=None (keep every mode) without grid_size; the weights need "
                    "the token grid to be sized. Pass grid_size=(H, W) (build_mixer does when the "
                    "backbone gives its grid) or give modes=(m1, m2)."
                )
            height, width = check_grid_size(grid_size, "FNO2D")
            stored_rows, stored_cols = height, width // 2 + 1
        else:
            pair = positive_pair(modes)
            if pair is None:
                raise ValueError(
                    f"FNO2D got modes={modes!r}; it takes two positive integers (m1, m2): m1 rows "
                    "kept in each corner of the full-FFT axis and m2 columns of the rfft axis, "
                    "e.g. modes=(14, 14), or modes=None to keep every mode of grid_size."
                )
            modes = pair
            stored_rows, stored_cols = 2 * pair[0], pair[1]
        self.dim = dim
        self.modes = modes
        self.num_blocks = num_blocks
        self.grid_size = None if grid_size is None else check_grid_size(grid_size, "FNO2D")
        if self.grid_size is not None and (stored_rows > self.grid_size[0] or stored_cols > self.grid_size[1] // 2 + 1):
            # Valid (the weights are indexed by frequency and serve a finer grid), but the weights of the
            # frequencies this grid lacks are never trained here and still count in the model's size.
            rows, cols = min(stored_rows, self.grid_size[0]), min(stored_cols, self.grid_size[1] // 2 + 1)
            warnings.warn(
                f"FNO2D keeps modes={modes} ({stored_rows}x{stored_cols} frequencies), but the {self.grid_size[0]}x"
                f"{self.grid_size[1]} token grid has {rows}x{cols} of them: the weights of {stored_rows * stored_cols - rows * cols:,} "
                f"of its {stored_rows * stored_cols:,} frequencies get no gradient at this resolution and still count in the "
                "parameter count. Give "
                f"modes=[{max(1, rows // 2)},{cols}] to fit this grid, or keep these to run the same weights on a finer one.",
                stacklevel=3)
        block_size = dim // num_blocks
        scale = 1.0 / (block_size * block_size)
        self.weight = nn.Parameter(
            scale * torch.rand(stored_rows, stored_cols, num_blocks, block_size, block_size, 2)
        )

    @classmethod
    def from_global_filter(cls, global_filter: GlobalFilter) -> FNO2D:
        """The FNO at block size one that computes exactly what ``global_filter`` computes.

        Section 4: "in the special case that the block size is one, FNO coincides with the GFN
        kernels". The GFN filter ``K[m, n, c]`` becomes the 1x1 block ``W_{m,n}^{(c)}`` of an
        FNO with ``num_blocks = dim`` that keeps every mode of the filter's grid. On that grid the
        two give the same output; on other grids they differ (GFN interpolates its filter, FNO
        keeps the frequencies both grids share).
        """
        fno = cls(global_filter.dim, modes=None, num_blocks=global_filter.dim, grid_size=global_filter.grid_size)
        with torch.no_grad():
            fno.weight.copy_(global_filter.complex_weight[:, :, :, None, None, :])
        return fno

    def _corner_rows(self, height: int) -> tuple[int, int]:
        """How many rows of frequency ``0, 1, ..`` and ``-1, -2, ..`` a ``height``-row spectrum
        shares with the stored weights (both are in FFT order, ``torch.fft.fftfreq``'s layout)."""
        stored_rows = self.weight.shape[0]
        return min((height + 1) // 2, (stored_rows + 1) // 2), min(height // 2, stored_rows // 2)

    def reference_macs(self, h: int, w: int) -> int:
        """Real multiply-accumulates of the channel mixing on an ``h x w`` grid, for one sample.

        Each kept mode multiplies a complex ``C/k x C/k`` block per channel block: four real
        products per complex one. A shape counter (``torch.utils.flop_counter``) sees the complex
        einsum as one real-sized product, so the accounting uses this number instead (the paper's
        convention counts real multiply-accumulates; FFTs are not counted).
        """
        top, bottom = self._corner_rows(h)
        cols = min(self.weight.shape[1], w // 2 + 1)
        block_size = self.dim // self.num_blocks
        return 4 * (top + bottom) * cols * self.num_blocks * block_size * block_size

    def _mix_channels(self, modes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Step (2), ``W_{m,n} z_{m,n}`` block by block: modes ``(B, h, w, C)``, weights
        ``(h, w, k, C/k, C/k)``."""
        # The block width spelled out: on a one-row grid the negative-frequency corner is empty, and an
        # empty tensor cannot infer a -1 dimension.
        blocks = modes.reshape(*modes.shape[:3], self.num_blocks, self.dim // self.num_blocks)
        return torch.einsum("bhwki,hwkio->bhwko", blocks, weight).flatten(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        top, bottom = self._corner_rows(height)
        stored_rows = self.weight.shape[0]
        with autocast_off(x):
            spectrum = torch.fft.rfft2(x.to(compute_dtype), dim=(1, 2), norm="ortho")
            cols = min(self.weight.shape[1], spectrum.shape[2])
            weight = torch.view_as_complex(self.weight.to(compute_dtype))[:, :cols]
            out = torch.zeros_like(spectrum)
            out[:, :top, :cols] = self._mix_channels(spectrum[:, :top, :cols], weight[:top])
            out[:, height - bottom :, :cols] = self._mix_channels(
                spectrum[:, height - bottom :, :cols], weight[stored_rows - bottom :]
            )
            out = torch.fft.irfft2(out, s=(height, width), dim=(1, 2), norm="ortho")
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, modes={self.modes}, num_blocks={self.num_blocks}, grid_size={self.grid_size}"
