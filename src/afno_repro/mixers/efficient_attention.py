"""Efficient self-attention with spatial reduction (SegFormer, Xie et al. 2021; PVT)."""

from __future__ import annotations

import torch
from timm.models.pvt_v2 import Attention

from afno_repro.mixers.registry import check_channel_split, register_mixer
from afno_repro.mixers.weight_init import init_mit_weights

__all__ = ["EfficientSelfAttention"]


@register_mixer("efficient_attention")
class EfficientSelfAttention(Attention):
    r"""Multi-head attention whose keys/values come from a spatially reduced token grid: timm's PVT-v2
    / SegFormer attention (``timm.models.pvt_v2.Attention``) on the flattened grid.

    The "Efficient SA" row of the paper's Cityscapes comparison (Section 5.3, Table 4; SegFormer
    Xie et al. 2021). Queries are taken from all ``N = H * W`` tokens. Keys and values are taken
    from ``Conv2d(C, C, kernel_size=sr_ratio, stride=sr_ratio)`` followed by LayerNorm, i.e. from
    ``floor(H / sr) * floor(W / sr)`` tokens, so Eq. 1 of the paper costs ``O(N^2 d / sr^2)``.
    With ``sr_ratio=1`` there is no reduction (no conv, no norm) and the mixer is exactly
    multi-head self-attention with separate query and key/value projections.

    When ``H`` or ``W`` is not a multiple of ``sr_ratio`` the strided conv floors, as in SegFormer:
    the last ``H mod sr`` rows (``W mod sr`` columns) are not seen as keys/values, although they
    still produce queries and outputs. A grid smaller than ``sr_ratio`` raises ``ValueError``.

    Shape contract: ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W >= sr_ratio``.

    Init as SegFormer (:func:`~afno_repro.mixers.weight_init.init_mit_weights`): linear weights
    truncated normal with std 0.02, the reduction conv normal with std ``sqrt(2 / fan_out)``
    (``fan_out = sr_ratio^2 * C``), biases zero, LayerNorm weight one and bias zero.

    Parameters
    ----------
    dim: channel width ``C``.
    num_heads: number of heads; must divide ``dim``. MiT-B3 uses ``[1, 2, 5, 8]`` over its stages.
    sr_ratio: spatial reduction ratio (kernel and stride of the reduction conv); MiT-B3 uses
        ``[8, 4, 2, 1]`` over its stages.
    qkv_bias: whether the query and key/value projections have a bias (SegFormer: yes).
    attn_drop: dropout probability on the attention weights (training only).
    proj_drop: dropout probability after the output projection.

    Examples
    --------
    >>> import torch
    >>> mixer = EfficientSelfAttention(64, num_heads=2, sr_ratio=4)
    >>> mixer(torch.randn(2, 9, 13, 64)).shape
    torch.Size([2, 9, 13, 64])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 1,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        check_channel_split(dim, num_heads, "num_heads", "efficient_attention")
        if not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(
                f"mixer 'efficient_attention': sr_ratio={sr_ratio!r} is not a positive integer. It is the "
                "kernel size and stride of the key/value reduction conv: use 1 for no reduction or an "
                "integer > 1 (SegFormer MiT uses 8, 4, 2, 1 over its four stages)."
            )
        super().__init__(dim, num_heads=num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop)
        self.sr_ratio = sr_ratio
        self.apply(init_mit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        if min(height, width) < self.sr_ratio:
            raise ValueError(
                f"mixer 'efficient_attention': the token grid {height}x{width} is smaller than "
                f"sr_ratio={self.sr_ratio}, so the reduction conv leaves no key/value token. Use a "
                f"grid of at least {self.sr_ratio}x{self.sr_ratio} tokens or a smaller sr_ratio."
            )
        out = super().forward(x.reshape(batch, height * width, channels), [height, width])
        return out.reshape(batch, height, width, channels)
