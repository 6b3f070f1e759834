"""Adaptive Fourier Neural Operator mixers (paper Section 4, Figure 3, Eqs. 5-8).

``afno`` is the paper's mixer: a block-diagonal complex two-layer MLP shared by all frequencies of
the ``rfft2`` of the token grid, followed by soft-thresholding. ``afno_static`` is Table 6's
"non-adaptive weights" ablation: the same machinery with a single block-diagonal complex linear map.

Both keep every complex tensor as a real tensor with a leading axis of size 2 (real, imaginary), the
layout of the public AFNO checkpoints (FourCastNet, physicsnemo), so those weights load unchanged.
Where the speed over the reference formulation (four real einsums per complex layer, into zeroed
buffers) comes from, measured by ``scripts/benchmark_mixers.py``:

- the complex block products use Gauss' three-multiplication trick in a custom autograd function,
  three real matrix products per complex product instead of four, forward and backward, on
  contiguous ``(k, tokens, block)`` batches with no zero buffers;
- the 2-D FFT into the block layout and the one back out are two linear autograd functions
  (:class:`_GridToModes`, :class:`_ModesToGrid`) whose backwards are each other's transforms: one
  inverse FFT per FFT (torch's backward of ``rfft`` runs a complex FFT of twice the size), the adjoint's
  factors on the mirrored half-spectrum columns applied in the transposing copies, nothing saved for
  backward; with a low-pass only the kept modes are transformed along H, stored and fed to the MLP, and
  the dropped ones are never concatenated in or out;
- on a GPU the FFTs run unnormalised and the orthonormal scaling rides on the copies into and out of
  the block layout (:func:`_folds_scaling`): cuFFT's normalisation is a separate pass over the spectrum
  after every transform, eight per forward and backward, ~19% of the layer's GPU time in the profile
  of ``scripts/gpu_check.py`` (2026-12-04, before this change); a CPU's FFT scales inside the transform.

Two block layouts of the kept modes, chosen per call by :func:`stacked_layout`:

- **split** ``(2, k, T, n)`` (real, imaginary first), on a CPU in float32/float64: Gauss' trick above,
  the fastest there (three products of ``n x n`` instead of four);
- **stacked** ``(k, T, 2n)`` (``[real | imaginary]`` along the channels), on a GPU and under autocast:
  each complex product is ONE real matrix product ``[xr | xi] @ [[wr, wi], [-wi, wr]]``, a wider GEMM
  that tensor cores run well, accumulated in float32 by the GEMM itself. Under autocast the block MLP
  runs in the autocast dtype (bf16), and its activations are saved for backward in bf16; Gauss'
  subtraction of two rounded products would lose bits there, the stacked product does not. The FFTs and
  the spectra between them and the MLP stay float32.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from afno_repro.mixers.activity import MeteredSoftshrink
from afno_repro.mixers.precision import autocast_off
from afno_repro.mixers.registry import check_channel_split, register_mixer

__all__ = ["AFNO2D", "AFNOStatic", "SpectralBlockMixer", "complex_block_linear", "low_pass_cutoff", "real_imag",
           "split_layout", "stacked_layout"]

_SKIPS = ("identity", "conv1d")


def low_pass_cutoff(size: int, hard_thresholding_fraction: float) -> int | None:
    """Cut-off ``m`` of the low-pass along a spatial axis of ``size`` tokens, ``None`` to keep all.

    The paper keeps "the bottom 35% frequencies", which "in practice means we keep 32/56 frequencies
    of the tokens along each spatial dimension" (A.6). Read per dimension, 35% of 56 would be 19.6;
    the two statements agree only if the fraction is the share of the 2-D spectrum that is kept, so
    each axis keeps ``sqrt(fraction)`` of its frequencies: ``m = floor(sqrt(fraction) * size / 2)``
    and the kept frequencies are ``k in [-m, m)`` along the full FFT axis (the first ``m`` and the
    last ``m`` entries, ``2 m`` in all) and ``k < m`` along the half-spectrum ``rfft`` axis. At 56
    tokens and 35% that is ``m = 16``: 32 of the 56 frequencies, as A.6 states; 25% keeps half of
    each axis. A fraction of 1 keeps every mode (also on odd grids, where ``2 m < size``); at least
    the zero frequency is always kept. The output being real, the one kept mode whose conjugate is
    not kept, ``(k_h, k_w) = (-m, 0)``, also shows up mirrored at ``(m, 0)`` in the output spectrum.

    Parameters
    ----------
    size : int
        Number of tokens along the axis.
    hard_thresholding_fraction : float
        Share of the 2-D spectrum to keep, in ``(0, 1]``.

    Returns
    -------
    int or None
        ``m``, or ``None`` when the fraction is 1.

    Examples
    --------
    >>> low_pass_cutoff(56, 0.35)
    16
    >>> low_pass_cutoff(56, 1.0) is None
    True
    """
    if hard_thresholding_fraction >= 1.0:
        return None
    return max(1, math.floor(math.sqrt(hard_thresholding_fraction) * size / 2))


class _ComplexBlockMatmul(torch.autograd.Function):
    """``x @ weight + bias`` on complex block tensors stored as (real, imaginary) pairs.

    Each complex product ``(a + ib)(c + id)`` costs three real matrix products (Gauss):
    ``t1 = (a + b) c``, ``re = t1 - b (c + d)``, ``im = t1 + a (d - c)``; the backward products
    ``dx = dy w^H`` and ``dw = x^H dy`` are done the same way, so forward and backward use 9 real
    products per layer where the reference formulation uses 12.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        xr, xi = x[0], x[1]
        wr, wi = weight[0], weight[1]
        x_sum, w_sum, w_diff = xr + xi, wr + wi, wi - wr
        y = x.new_empty(2, x.shape[1], x.shape[2], weight.shape[-1])
        # t1 is written where the imaginary part goes, so only the real part needs a copy of it.
        t1 = torch.bmm(x_sum, wr, out=y[1])
        torch.baddbmm(t1, xi, w_sum, alpha=-1, out=y[0])
        torch.baddbmm(t1, xr, w_diff, out=t1)
        y += bias.unsqueeze(2)
        ctx.save_for_backward(x, x_sum, wr, w_sum, w_diff)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, x_sum, wr, w_sum, w_diff = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        gr, gi = grad_y[0], grad_y[1]
        grad_sum = gr + gi
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # dx = dy w^H: Gauss with a1 = gr, a2 = gi, b1 = wr^T, b2 = -wi^T.
            grad_x = torch.empty_like(x)
            t1 = torch.bmm(grad_sum, wr.mT, out=grad_x[1])
            torch.baddbmm(t1, gi, w_diff.mT, out=grad_x[0])
            torch.baddbmm(t1, gr, w_sum.mT, alpha=-1, out=t1)
        if ctx.needs_input_grad[1]:
            # dw = conj(x^T conj(dy)): written this way the Gauss sum is xr + xi, kept from the forward.
            grad_weight = x.new_empty(2, *wr.shape)
            t1 = torch.bmm(x_sum.mT, gr, out=grad_weight[0])
            torch.baddbmm(t1, x[0].mT, grad_sum, beta=-1, out=grad_weight[1])
            torch.baddbmm(t1, x[1].mT, gi - gr, out=t1)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_y.sum(dim=2)
        return grad_x, grad_weight, grad_bias


def _written(src: torch.Tensor, dst: torch.Tensor, scale: torch.Tensor | float | None) -> None:
    """``dst[...] = src * scale`` in one pass over memory (a copy when ``scale`` is None), casting to
    ``dst``'s dtype; ``dst`` may be a strided view of a larger buffer."""
    if scale is None:
        dst.copy_(src)
    elif torch.compiler.is_compiling():
        # out= into a strided view breaks a dynamo graph; Inductor fuses this into one loop anyway.
        dst.copy_(src * scale)
    else:
        torch.mul(src, scale, out=dst)


def _folds_scaling(x: torch.Tensor) -> bool:
    """Whether the FFTs run unnormalised, their scaling riding on the layout copies.

    On a GPU an FFT's normalisation is a kernel of its own after the transform (a full pass over the
    spectrum each time), while a copy that also multiplies is as memory-bound as the copy. On a CPU the
    FFT library scales inside the transform at no cost, and a multiplying copy is up to 1.3x a plain one
    (ViT-B/4 shapes, one thread: 11.1 against 8.4 ms out of the block layout, 11.3 against 10.4 ms into
    it), so there the FFTs are orthonormal and the copies plain.
    """
    return x.device.type not in ("cpu", "meta")


def _mirrored_columns(w: int, cols: int) -> int:
    """How many of the first ``cols`` half-spectrum columns of a length-``w`` real FFT stand for two
    frequencies (all but the zero and, for even ``w``, the Nyquist one), from column 1 on."""
    return max(0, min((w + 1) // 2, cols) - 1)


def _swap_last(z: torch.Tensor, width: int | None = None, *, w: int | None = None, factor: float | None = None,
               column_dim: int = 3, fold: bool = False) -> torch.Tensor:
    """``z.transpose(2, 3)`` written contiguous (the next FFT's axis innermost) and zero-padded to ``width``
    along the last axis; with ``factor``, the mirrored columns of a length-``w`` real FFT (along the
    result's ``column_dim``) multiplied by it, folded into the copy where ``fold``."""
    b, c, p, q = z.shape
    width = width or p
    out = z.new_empty(b, c, q, width)
    if width > p:
        out[..., p:].zero_()
    target = out[..., :p]
    count = 0 if factor is None else _mirrored_columns(w, target.shape[column_dim])
    if count and fold:
        shape = [1] * 4
        shape[column_dim] = target.shape[column_dim]
        weights = torch.ones(shape, dtype=z.real.dtype if z.is_complex() else z.dtype, device=z.device)
        weights.narrow(column_dim, 1, count).fill_(factor)
        _written(z.transpose(2, 3), target, weights)
    else:
        target.copy_(z.transpose(2, 3))
        if count:
            target.narrow(column_dim, 1, count).mul_(factor)
    return out


class _Layout:
    """The kept modes of a ``(b, C, cols, h)`` complex spectrum (W frequency ``cols``, H frequency last)
    as the block layout, and back: split ``(2, k, T, n)`` or stacked ``(k, T, 2n)``, tokens ordered
    (batch, W frequency, H frequency), ``rows`` of the ``h`` H frequencies kept (the first and last
    ``rows / 2`` under a low-pass)."""

    def __init__(self, b: int, channels: int, cols: int, h: int, m_h: int | None, k: int, stacked: bool):
        self.b, self.channels, self.cols, self.h, self.m_h, self.k, self.stacked = b, channels, cols, h, m_h, k, stacked
        self.n = channels // k
        self.rows = h if m_h is None else 2 * m_h

    def _blocks_view(self, spectrum: torch.Tensor) -> torch.Tensor:
        """``(b, C, cols, h)`` complex -> a real view ordered as the block layout's buffer."""
        z = torch.view_as_real(spectrum).view(self.b, self.k, self.n, self.cols, self.h, 2)
        return z.permute(1, 0, 3, 4, 5, 2) if self.stacked else z.permute(5, 1, 0, 3, 4, 2)

    def _buffer_shape(self) -> tuple[int, ...]:
        if self.stacked:
            return self.k, self.b, self.cols, self.rows, 2, self.n
        return 2, self.k, self.b, self.cols, self.rows, self.n

    def _row_dim(self) -> int:
        return 3 if self.stacked else 4

    def _pairs(self, spectrum_view: torch.Tensor, buffer: torch.Tensor):
        """(spectrum part, buffer part) pairs of the kept H rows."""
        if self.m_h is None:
            return [(spectrum_view, buffer)]
        d, m = self._row_dim(), self.m_h
        return [(spectrum_view.narrow(d, 0, m), buffer.narrow(d, 0, m)),
                (spectrum_view.narrow(d, self.h - m, m), buffer.narrow(d, m, m))]

    def to_blocks(self, spectrum: torch.Tensor, dtype: torch.dtype, scale: float | None) -> torch.Tensor:
        """Kept modes of ``spectrum`` (times ``scale``) in the block layout, in ``dtype``: one pass."""
        buffer = spectrum.new_empty(self._buffer_shape(), dtype=dtype)
        for part, out in self._pairs(self._blocks_view(spectrum), buffer):
            _written(part, out, scale)
        if self.stacked:
            return buffer.view(self.k, self.b * self.cols * self.rows, 2 * self.n)
        return buffer.view(2, self.k, self.b * self.cols * self.rows, self.n)

    def from_blocks(self, modes: torch.Tensor, scale: float | None) -> torch.Tensor:
        """The ``(b, C, cols, h)`` complex spectrum (float32 or wider) whose kept modes are ``modes`` (times
        ``scale``) and whose other H rows are zero: one pass."""
        real = torch.promote_types(modes.dtype, torch.float32)
        spectrum = torch.view_as_complex(modes.new_empty(self.b, self.channels, self.cols, self.h, 2, dtype=real))
        view = self._blocks_view(spectrum)
        if self.m_h is not None:
            view.narrow(self._row_dim(), self.m_h, self.h - self.rows).zero_()
        modes = modes.reshape(self._buffer_shape())
        for part, source in self._pairs(view, modes):
            _written(source, part, scale)
        return spectrum


# The 2-D FFT is done as two 1-D FFTs, each over the innermost axis of a contiguous tensor (torch's CPU
# FFT copies strided input into that layout anyway): the real FFT along W on the channels-first view,
# the complex one along H after a transposing copy. On a GPU the FFTs are unnormalised and the
# orthonormal scaling 1/sqrt(H W) rides on the copy into the block layout and on the copy out of it, so
# no FFT is followed by a kernel of its own that scales it; on a CPU the FFTs are orthonormal
# (:func:`_folds_scaling`). Each direction is a linear map with a hand-written backward that is the other
# direction's transforms:
# one inverse transform per FFT (torch differentiates ``rfft`` by a complex FFT of twice the size), the
# adjoint's factors of 2 and 1/2 on the mirrored half-spectrum columns folded into the transposing
# copies, and dropped modes neither transformed nor stored.
class _GridToModes(torch.autograd.Function):
    """``(B, H, W, C)`` real grid -> the low-passed ``rfft2(x, norm="ortho")`` in a block layout."""

    @staticmethod
    def forward(ctx, x, m_h, m_w, k, stacked, dtype):
        b, h, w, c = x.shape
        cols = w // 2 + 1 if m_w is None else m_w
        ctx.layout, ctx.w, ctx.fold = _Layout(b, c, cols, h, m_h, k, stacked), w, _folds_scaling(x)
        ctx.scale = 1.0 / math.sqrt(h * w) if ctx.fold else None
        norm = "backward" if ctx.fold else "ortho"
        z = torch.fft.rfft(x.permute(0, 3, 1, 2), dim=3, norm=norm)
        z = torch.fft.fft(_swap_last(z[..., :cols]), dim=3, norm=norm)
        return ctx.layout.to_blocks(z, dtype, ctx.scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        layout, w, fold = ctx.layout, ctx.w, ctx.fold
        norm = "forward" if fold else "ortho"
        z = torch.fft.ifft(layout.from_blocks(grad, ctx.scale), dim=3, norm=norm)
        z = _swap_last(z, w // 2 + 1, w=w, factor=0.5, column_dim=3, fold=fold)
        return torch.fft.irfft(z, n=w, dim=3, norm=norm).permute(0, 2, 3, 1), None, None, None, None, None


class _ModesToGrid(torch.autograd.Function):
    """Kept modes in a block layout -> ``irfft2(., s=(H, W), norm="ortho")`` as a ``(B, H, W, C)`` real
    grid, every dropped mode being zero."""

    @staticmethod
    def forward(ctx, modes, b, h, w, m_h, m_w, k):
        stacked = modes.ndim == 3
        cols = w // 2 + 1 if m_w is None else m_w
        channels = k * (modes.shape[-1] // 2 if stacked else modes.shape[-1])
        ctx.layout, ctx.w, ctx.dtype = _Layout(b, channels, cols, h, m_h, k, stacked), w, modes.dtype
        ctx.fold = _folds_scaling(modes)
        ctx.scale = 1.0 / math.sqrt(h * w) if ctx.fold else None
        norm = "forward" if ctx.fold else "ortho"
        z = torch.fft.ifft(ctx.layout.from_blocks(modes, ctx.scale), dim=3, norm=norm)
        return torch.fft.irfft(_swap_last(z, w // 2 + 1), n=w, dim=3, norm=norm).permute(0, 2, 3, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        layout, w, fold = ctx.layout, ctx.w, ctx.fold
        norm = "backward" if fold else "ortho"
        z = torch.fft.rfft(grad.permute(0, 3, 1, 2), dim=3, norm=norm)[..., :layout.cols]
        z = torch.fft.fft(_swap_last(z, w=w, factor=2.0, column_dim=2, fold=fold), dim=3, norm=norm)
        return layout.to_blocks(z, ctx.dtype, ctx.scale), None, None, None, None, None, None


def _stacked_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(2, k, n, h)`` complex weight -> ``(k, 2n, 2h)`` real ``[[wr, wi], [-wi, wr]]``."""
    wr, wi = weight[0], weight[1]
    return torch.cat((torch.cat((wr, wi), dim=-1), torch.cat((-wi, wr), dim=-1)), dim=-2)


def complex_block_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Block-diagonal complex linear map ``x W + b`` (paper Eq. 5) shared by all frequencies.

    Parameters
    ----------
    x : torch.Tensor
        Modes in either block layout: split ``(2, k, T, n)`` (real and imaginary parts of ``T``
        frequencies, ``k`` channel blocks of ``n``), or stacked ``(k, T, 2n)`` (``[real | imaginary]``).
    weight : torch.Tensor
        ``(2, k, n, h)`` in the public checkpoint layout (real, imaginary).
    bias : torch.Tensor
        ``(2, k, h)``.

    Returns
    -------
    torch.Tensor
        ``(2, k, T, h)`` for split input, computed with three real matrix products per complex product
        (Gauss); ``(k, T, 2h)`` for stacked input, one real matrix product in ``x``'s dtype.

    Examples
    --------
    >>> x, w, b = torch.randn(2, 4, 10, 3), torch.randn(2, 4, 3, 5), torch.randn(2, 4, 5)
    >>> y = complex_block_linear(x, w, b)
    >>> z = torch.complex(x[0], x[1]) @ torch.complex(w[0], w[1]) + torch.complex(b[0], b[1])[:, None]
    >>> torch.allclose(torch.complex(y[0], y[1]), z, atol=1e-5)
    True
    >>> ys = complex_block_linear(torch.cat((x[0], x[1]), dim=-1), w, b)
    >>> torch.allclose(split_layout(ys), y, atol=1e-5)
    True
    """
    if x.ndim == 3:
        dtype = x.dtype
        stacked_bias = torch.cat((bias[0], bias[1]), dim=-1).to(dtype).unsqueeze(1)
        return torch.baddbmm(stacked_bias, x, _stacked_weight(weight).to(dtype))
    return _ComplexBlockMatmul.apply(x.contiguous(), weight.to(x.dtype), bias.to(x.dtype))


def real_imag(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts ``(k, T, n)`` of modes in either block layout (views, no copy).

    Examples
    --------
    >>> z = torch.randn(2, 3, 5, 4)
    >>> all(torch.equal(a, b) for a, b in zip(real_imag(z), real_imag(torch.cat((z[0], z[1]), dim=-1))))
    True
    """
    if z.ndim == 4:
        return z[0], z[1]
    n = z.shape[-1] // 2
    return z[..., :n], z[..., n:]


def split_layout(z: torch.Tensor) -> torch.Tensor:
    """Modes in the split layout ``(2, k, T, n)``, whichever layout ``z`` is in (a view when split)."""
    return z if z.ndim == 4 else torch.stack(real_imag(z))


def stacked_layout(x: torch.Tensor, compute_dtype: torch.dtype) -> bool:
    """Whether the block MLP runs on the stacked layout: on every GPU, and in reduced precision anywhere.

    A CPU in float32 or float64 keeps the split layout and Gauss' three products, measured faster there
    (``scripts/benchmark_mixers.py``); a GPU's tensor cores favour one wide GEMM.
    """
    return x.device.type not in ("cpu", "meta") or compute_dtype in (torch.bfloat16, torch.float16)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The block MLP's dtype: autocast's where autocast is on for ``x``'s device, else float32 or wider."""
    device_type = "cpu" if x.device.type == "meta" else x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(x.dtype, torch.float32)


class SpectralBlockMixer(nn.Module, abc.ABC):
    """Shared machinery of the AFNO family: skip, float32 ``rfft2``, low-pass, blocks, ``irfft2``.

    A subclass implements :meth:`spectral_op`, a map on the kept frequencies in either block layout:
    split ``(2, k, T, n)`` (real/imaginary, block, frequency token, channel within the block) or
    stacked ``(k, T, 2n)`` (``[real | imaginary]`` along the channels); :func:`complex_block_linear`
    and :func:`real_imag` take both. The mixer computes, for input ``x`` of shape ``(B, H, W, C)``::

        irfft2(lowpass(spectral_op(lowpass(rfft2(x))))) + skip(x)

    with both FFTs ``norm="ortho"`` over ``(H, W)`` in float32 even under autocast (half-precision FFTs
    lose too much); the spectral op runs in autocast's dtype where autocast is on (bf16 matrix products
    accumulated in float32), in float32 otherwise, and the result is cast back to the input dtype.

    Parameters
    ----------
    dim : int
        Channels ``C``.
    num_blocks : int
        Number ``k`` of diagonal channel blocks (Eq. 5); must divide ``dim``.
    hard_thresholding_fraction : float
        Share of the spectrum kept by a true low-pass, in ``(0, 1]``; see :func:`low_pass_cutoff`.
        Modes outside it are neither computed nor passed on (their output spectrum is zero).
    skip : {"identity", "conv1d"}
        The residual the paper calls "bias" in Figure 3: the input itself (released code, and what the
        paper's parameter and FLOP counts fit), or "a 1D convolution layer as the bias" (A.2, A.5):
        ``Conv1d(C, C, 1)``, a per-token linear map with bias.
    """

    def __init__(self, dim: int, *, num_blocks: int, hard_thresholding_fraction: float, skip: str):
        super().__init__()
        check_channel_split(dim, num_blocks, "num_blocks", type(self).__name__)  # paper Eq. 5's blocks
        if not 0.0 < hard_thresholding_fraction <= 1.0:
            raise ValueError(
                f"hard_thresholding_fraction={hard_thresholding_fraction} is outside (0, 1]: it is the "
                "share of the spectrum the low-pass keeps (1.0 keeps every mode, 0.35 is paper A.6's "
                "'AFNO-35%'). Pass a value in (0, 1]."
            )
        if skip not in _SKIPS:
            raise ValueError(
                f"skip={skip!r} is not a known residual; valid choices are {_SKIPS}: 'identity' adds the "
                "input (released code, default), 'conv1d' adds Conv1d(C, C, 1) of the input (paper A.2's "
                "'1D convolution layer as the bias'). Pass one of these."
            )
        self.dim = dim
        self.num_blocks = num_blocks
        self.block_size = dim // num_blocks
        self.hard_thresholding_fraction = hard_thresholding_fraction
        self.skip = nn.Conv1d(dim, dim, kernel_size=1) if skip == "conv1d" else None

    @abc.abstractmethod
    def spectral_op(self, z: torch.Tensor) -> torch.Tensor:
        """Map the kept modes (split ``(2, k, T, n)`` or stacked ``(k, T, 2n)``) to new ones of the same shape."""

    @abc.abstractmethod
    def complex_weights(self) -> list[torch.Tensor]:
        """The ``(2, k, n, h)`` block weights applied to every kept mode, for :meth:`reference_macs`."""

    def cutoffs(self, h: int, w: int) -> tuple[int | None, int | None]:
        """Low-pass cut-offs ``(m_h, m_w)`` on an ``h x w`` grid; ``None`` keeps the whole axis."""
        m_h = low_pass_cutoff(h, self.hard_thresholding_fraction)
        # A one-token axis holds only the zero frequency; [-m, m) would list it twice.
        if m_h is not None and 2 * m_h >= h:
            m_h = None
        return m_h, low_pass_cutoff(w, self.hard_thresholding_fraction)

    def kept_modes(self, h: int, w: int) -> int:
        """Number of ``rfft2`` modes the low-pass keeps on an ``h x w`` grid."""
        m_h, m_w = self.cutoffs(h, w)
        rows = h if m_h is None else 2 * m_h
        cols = w // 2 + 1 if m_w is None else m_w
        return rows * cols

    def reference_macs(self, h: int, w: int) -> int:
        """Multiply-accumulates of this mixer in the reference formulation, for one sample.

        The reference does four real einsums per complex block product, over the kept modes only:
        ``4 * kept_modes * k * n * h`` per layer. This mixer's kernel does three (Gauss), so a shape
        counter such as ``torch.utils.flop_counter`` sees exactly 3/4 of that; the accounting
        (``afno_repro.analysis``) replaces what it traced inside this module by this number. The
        ``conv1d`` skip, a per-token ``C x C`` linear map, is included (``h * w * C^2``); FFTs and
        element-wise operations are not, as in the paper's convention.
        """
        spectral = 4 * self.kept_modes(h, w) * sum(weight[0].numel() for weight in self.complex_weights())
        skip = 0 if self.skip is None else h * w * self.skip.weight.shape[0] * self.skip.weight.shape[1]
        return spectral + skip

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip is None:
            return x
        # A kernel-1 Conv1d over the tokens is a per-token linear map; applied as one it stays
        # channels-last, while the Conv1d keeps the parameter layout of checkpoints that have it.
        return F.linear(x, self.skip.weight.squeeze(-1), self.skip.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects tokens of shape (B, H, W, {self.dim}), got {tuple(x.shape)}; "
                "reshape the sequence to its (H, W) grid with channels last."
            )
        b, h, w, _ = x.shape
        m_h, m_w = self.cutoffs(h, w)
        compute_dtype = _compute_dtype(x)
        stacked = stacked_layout(x, compute_dtype)
        with autocast_off(x):
            grid = x.to(torch.promote_types(x.dtype, torch.float32))
            z = _GridToModes.apply(grid, m_h, m_w, self.num_blocks, stacked, compute_dtype)
            y = _ModesToGrid.apply(self.spectral_op(z), b, h, w, m_h, m_w, self.num_blocks)
        # The skip goes first so that the sum takes its channels-last memory layout.
        return self._skip(x) + y.to(x.dtype)


@register_mixer("afno", spectral=True)
class AFNO2D(SpectralBlockMixer):
    """Adaptive Fourier Neural Operator token mixer (paper Section 4, Figure 3, Eqs. 5-8).

    For tokens ``x`` of shape ``(B, H, W, C)``: ``z = rfft2(x)`` over the grid, split into ``k``
    channel blocks, a complex two-layer block MLP shared by all frequencies (Eq. 6)
    ``o = W2 ReLU(W1 z + b1) + b2`` with ReLU on real and imaginary parts separately, soft-thresholding
    ``S_lambda`` on real and imaginary parts separately (Eq. 8), ``irfft2`` back, plus the skip. The
    output has the input's shape and dtype, for any grid (odd and non-square included): nothing
    depends on the grid the model was built for.

    Parameters are stored in the public checkpoint layout (leading axis = real, imaginary):
    ``w1 (2, k, C/k, C/k*f)``, ``b1 (2, k, C/k*f)``, ``w2 (2, k, C/k*f, C/k)``, ``b2 (2, k, C/k)``,
    initialised ``0.02 * randn``.

    Parameters
    ----------
    dim : int
        Channels ``C``.
    num_blocks : int, default 8
        Diagonal blocks ``k`` (Eq. 5); must divide ``dim``.
    sparsity_threshold : float, default 0.01
        ``lambda`` of the soft-thresholding (paper text, A.6 and released code; A.2 and A.5 say 0.1).
        0 disables it (paper A.6's "AFNO-35%", "no sparsity threshold").
    hidden_size_factor : int, default 1
        Width of the MLP hidden layer relative to the block size.
    hard_thresholding_fraction : float, default 1.0
        Share of the spectrum kept by a true low-pass (:func:`low_pass_cutoff`); 0.35 keeps 32 of 56
        frequencies per axis (A.6). Dropped modes are not computed.
    skip : {"identity", "conv1d"}, default "identity"
        Residual: the input, or ``Conv1d(C, C, 1)`` of it (the paper's "1D convolution as the bias").

    Notes
    -----
    The mixer is not shift-equivariant over the grid: a circular shift multiplies each frequency by a
    phase, which does not commute with the biases, ReLU and soft-thresholding acting on real and
    imaginary parts separately. It is therefore registered with ``shift_equivariant=False`` (the registry's
    flag marks the mixers tested for circular shift-equivariance), as are ``afno_static`` (its
    bias breaks equivariance) and ``aff``.

    Examples
    --------
    >>> mixer = AFNO2D(64, num_blocks=8)
    >>> mixer(torch.randn(2, 7, 5, 64)).shape
    torch.Size([2, 7, 5, 64])
    >>> mixer.w1.shape
    torch.Size([2, 8, 8, 8])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_blocks: int = 8,
        sparsity_threshold: float = 0.01,
        hidden_size_factor: int = 1,
        hard_thresholding_fraction: float = 1.0,
        skip: str = "identity",
    ):
        super().__init__(dim, num_blocks=num_blocks, hard_thresholding_fraction=hard_thresholding_fraction, skip=skip)
        if isinstance(sparsity_threshold, bool) or not isinstance(sparsity_threshold, (int, float)) or sparsity_threshold < 0:
            raise ValueError(
                f"sparsity_threshold={sparsity_threshold!r} is not a number >= 0: it is the lambda of the "
                "soft-thresholding S_lambda (paper Eq. 8). Use 0.01 (paper text), 0.1 (paper A.2) or 0 "
                "to switch soft-thresholding off."
            )
        if not isinstance(hidden_size_factor, int) or hidden_size_factor < 1:
            raise ValueError(
                f"hidden_size_factor={hidden_size_factor!r} must be a positive integer: the MLP hidden "
                "layer has block_size * hidden_size_factor channels per block. Use 1 (paper default)."
            )
        self.sparsity_threshold = sparsity_threshold
        # A module rather than a call inside block_mlp so that the test pass can count what it zeroes
        # (afno_repro.mixers.activity, metrics.json's mixer_activity) and analysis can hook the spectrum
        # just before and after it (Figure 6: afno_repro.report.trained_figures).
        self.shrink = MeteredSoftshrink(sparsity_threshold) if sparsity_threshold > 0 else nn.Identity()
        self.hidden_size_factor = hidden_size_factor
        k, n = num_blocks, self.block_size
        hidden = n * hidden_size_factor
        self.w1 = nn.Parameter(0.02 * torch.randn(2, k, n, hidden))
        self.b1 = nn.Parameter(0.02 * torch.randn(2, k, hidden))
        self.w2 = nn.Parameter(0.02 * torch.randn(2, k, hidden, n))
        self.b2 = nn.Parameter(0.02 * torch.randn(2, k, n))

    def complex_weights(self) -> list[torch.Tensor]:
        return [self.w1, self.w2]

    def block_mlp(self, z: torch.Tensor) -> torch.Tensor:
        """Complex block MLP and soft-thresholding on modes in either block layout (Eqs. 6 and 8)."""
        z = F.relu(complex_block_linear(z, self.w1, self.b1))
        z = complex_block_linear(z, self.w2, self.b2)
        return self.shrink(z)

    def spectral_op(self, z: torch.Tensor) -> torch.Tensor:
        return self.block_mlp(z)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_blocks={self.num_blocks}, sparsity_threshold={self.sparsity_threshold}, "
            f"hidden_size_factor={self.hidden_size_factor}, "
            f"hard_thresholding_fraction={self.hard_thresholding_fraction}"
        )


@register_mixer("afno_static", spectral=True)
class AFNOStatic(SpectralBlockMixer):
    """AFNO with non-adaptive weights (paper Table 6, "AFNO [Non-Adaptive Weights]").

    Per the authors' answer upstream, the ablation replaces the block MLP by a block-diagonal complex
    LINEAR map shared by all frequencies: ``o = W z + b`` on each of the ``k`` blocks (Eq. 5 with
    shared weights). No hidden layer, no ReLU and no soft-thresholding. Everything else (float32
    ``rfft2``/``irfft2``, low-pass, skip) is :class:`SpectralBlockMixer`. Shapes: ``(B, H, W, C)`` in
    and out, any grid. Parameters ``w (2, k, C/k, C/k)`` and ``b (2, k, C/k)``, ``0.02 * randn``.

    Parameters
    ----------
    dim : int
        Channels ``C``.
    num_blocks : int, default 8
        Diagonal blocks ``k``; must divide ``dim`` (A.6 uses 4).
    hard_thresholding_fraction : float, default 1.0
        Share of the spectrum kept by the low-pass (:func:`low_pass_cutoff`).
    skip : {"identity", "conv1d"}, default "identity"
        Residual, as for :class:`AFNO2D`.

    Examples
    --------
    >>> mixer = AFNOStatic(64, num_blocks=4)
    >>> mixer(torch.randn(2, 9, 12, 64)).shape
    torch.Size([2, 9, 12, 64])
    """

    def __init__(
        self, dim: int, *, num_blocks: int = 8, hard_thresholding_fraction: float = 1.0, skip: str = "identity"
    ):
        super().__init__(dim, num_blocks=num_blocks, hard_thresholding_fraction=hard_thresholding_fraction, skip=skip)
        k, n = num_blocks, self.block_size
        self.w = nn.Parameter(0.02 * torch.randn(2, k, n, n))
        self.b = nn.Parameter(0.02 * torch.randn(2, k, n))

    def complex_weights(self) -> list[torch.Tensor]:
        return [self.w]

    def spectral_op(self, z: torch.Tensor) -> torch.Tensor:
        return complex_block_linear(z, self.w, self.b)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_blocks={self.num_blocks}, hard_thresholding_fraction={self.hard_thresholding_fraction}"
