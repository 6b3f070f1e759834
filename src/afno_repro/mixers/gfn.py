"""Global Filter Network mixer (GFN; Rao et al., 2021), the depth-wise global convolution baseline.

The paper compares AFNO with GFN in Sections 2 and 3.2 (Table 1: a learned filter per frequency
and channel, ``N d`` parameters) and runs it at other resolutions by interpolating the filter
(Appendix A.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from afno_repro.mixers.precision import autocast_off
from afno_repro.mixers.registry import positive_pair, register_mixer

__all__ = ["GlobalFilter", "FILTER_INTERPOLATION_MODES", "check_grid_size"]

FILTER_INTERPOLATION_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")


def check_grid_size(grid_size, owner: str) -> tuple[int, int]:
    """``grid_size`` as a pair of positive ints, or ``ValueError`` saying what is expected."""
    pair = positive_pair(grid_size)
    if pair is None:
        raise ValueError(
            f"{owner} got grid_size={grid_size!r}; it needs the token grid (height, width) as two "
            "positive integers, e.g. grid_size=(14, 14) for a 224x224 image with 16x16 patches. "
            "Pass the grid the backbone feeds (build_mixer(..., grid_size=(H, W)) does this)."
        )
    return pair


@register_mixer("gfn", spectral=True, shift_equivariant=True)
class GlobalFilter(nn.Module):
    """Global filter: element-wise complex gain per frequency and channel (GFNet).

    Implements the GFN mixer the paper compares against (Sections 2 and 3.2, Table 1 "depthwise
    global convolution"): ``y = IDFT(K * DFT(x))`` where ``K`` is a learned complex filter of shape
    ``(h, w//2+1, C)`` on the ``rfft2`` half-plane, i.e. Discrete FNO (Section 3.2, steps 1-3) with
    a diagonal ``W_{m,n}``. There is no residual inside the mixer; the transformer block adds it.

    Shape contract: ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W``. The FFTs run in at least
    float32 even under autocast (half-precision FFTs are unsupported or inaccurate for
    non-power-of-two grids) and the output is cast back to the input dtype.

    Parameters
    ----------
    dim : int
        Channel width ``C``.
    grid_size : tuple[int, int], default (14, 14)
        Token grid ``(h, w)`` the filter is built for; backbones pass theirs through
        ``build_mixer(..., grid_size=...)``.
    filter_interpolation : str, default "bilinear"
        How the filter is resized when the mixer runs on another grid ``(H, W)``: the filter is
        resampled to ``(H, W//2+1)`` with ``torch.nn.functional.interpolate`` in this mode.
        Bilinear is the paper's reading (Appendix A.3); one of ``FILTER_INTERPOLATION_MODES``.

    Attributes
    ----------
    complex_weight : nn.Parameter
        The filter as a real tensor of shape ``(h, w//2+1, C, 2)`` (real, imaginary), GFNet's
        layout, so GFNet's per-block filters load unchanged. Initialised ``0.02 * randn``.

    Notes
    -----
    The filter's rows are in FFT order (frequencies ``0, 1, .., -1``), so resampling interpolates
    across the jump from positive to negative frequencies; that is how GFNet resizes its filters,
    and the paper gives no other recipe. :class:`~afno_repro.mixers.fno.FNO2D` instead indexes its
    weights by frequency and needs no resampling.

    Examples
    --------
    >>> import torch
    >>> from afno_repro.mixers import build_mixer
    >>> mixer = build_mixer("gfn", 16, grid_size=(8, 8))
    >>> mixer(torch.randn(2, 8, 8, 16)).shape
    torch.Size([2, 8, 8, 16])
    >>> mixer(torch.randn(2, 7, 5, 16)).shape  # filter interpolated to (7, 3)
    torch.Size([2, 7, 5, 16])
    """

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        filter_interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if filter_interpolation not in FILTER_INTERPOLATION_MODES:
            raise ValueError(
                f"GlobalFilter got filter_interpolation={filter_interpolation!r}; valid modes are "
                f"{', '.join(FILTER_INTERPOLATION_MODES)}. Use 'bilinear' for the paper's reading "
                "(Appendix A.3)."
            )
        self.dim = dim
        self.grid_size = check_grid_size(grid_size, "GlobalFilter")
        self.filter_interpolation = filter_interpolation
        height, width = self.grid_size
        self.complex_weight = nn.Parameter(0.02 * torch.randn(height, width // 2 + 1, dim, 2))

    def filter_for_grid(self, height: int, width: int) -> torch.Tensor:
        """The complex filter, shape ``(height, width//2+1, C)``, for a ``height x width`` grid.

        The stored filter when the grid is the one it was built for; otherwise the stored filter
        resampled with ``filter_interpolation``.
        """
        # Complex views need float32 or wider, also for a module cast to half precision.
        weight = self.complex_weight.to(torch.promote_types(self.complex_weight.dtype, torch.float32))
        target = (height, width // 2 + 1)
        if tuple(weight.shape[:2]) != target:
            planes = weight.permute(2, 3, 0, 1).reshape(1, -1, *weight.shape[:2])
            # align_corners keeps the DC gain (row 0, column 0) and the highest rfft column on the
            # corners of the resampled grid instead of shifting them by half a cell.
            align = {"align_corners": True} if self.filter_interpolation in ("bilinear", "bicubic") else {}
            planes = F.interpolate(planes, size=target, mode=self.filter_interpolation, **align)
            weight = planes.reshape(self.dim, 2, *target).permute(2, 3, 0, 1)
        return torch.view_as_complex(weight.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        with autocast_off(x):
            spectrum = torch.fft.rfft2(x.to(compute_dtype), dim=(1, 2), norm="ortho")
            spectrum = spectrum * self.filter_for_grid(height, width).to(spectrum.dtype)
            out = torch.fft.irfft2(spectrum, s=(height, width), dim=(1, 2), norm="ortho")
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, grid_size={self.grid_size}, filter_interpolation={self.filter_interpolation!r}"
