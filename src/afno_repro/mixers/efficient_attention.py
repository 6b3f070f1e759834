"""Efficient self-attention with spatial reduction (SegFormer, Xie et al. 2021; PVT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from afno_repro.mixers.registry import check_channel_split, register_mixer
from afno_repro.mixers.weight_init import init_mit_weights

__all__ = ["EfficientSelfAttention"]


@register_mixer("efficient_attention")
class EfficientSelfAttention(nn.Module):
    r"""Multi-head attention whose keys/values come from a spatially reduced token grid.

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

    timm's ``timm.models.pvt_v2.Attention`` computes the same (the same parameter names; outputs agree to
    1e-8, tested), but it copies the tokens into ``(B, C, H, W)`` before the reduction conv, where this
    module hands the conv a view of its ``(B, H, W, C)`` input: timm's was 10% slower forward+backward at
    Table 4's first stage on a CPU (1.10 against 1.01 s; 256x256 tokens, width 64, ``sr_ratio=8``, one
    thread, 2026-12-05), so this one is kept.

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
        super().__init__()
        self.head_dim = check_channel_split(dim, num_heads, "num_heads", "efficient_attention")
        if not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(
                f"mixer 'efficient_attention': sr_ratio={sr_ratio!r} is not a positive integer. It is the "
                "kernel size and stride of the key/value reduction conv: use 1 for no reduction or an "
                "integer > 1 (SegFormer MiT uses 8, 4, 2, 1 over its four stages)."
            )
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.apply(init_mit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        if min(height, width) < self.sr_ratio:
            raise ValueError(
                f"mixer 'efficient_attention': the token grid {height}x{width} is smaller than "
                f"sr_ratio={self.sr_ratio}, so the reduction conv leaves no key/value token. Use a "
                f"grid of at least {self.sr_ratio}x{self.sr_ratio} tokens or a smaller sr_ratio."
            )
        q = self.q(x).reshape(batch, height * width, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = self.sr(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
            kv_tokens = self.norm(reduced)
        else:
            kv_tokens = x.reshape(batch, height * width, channels)
        kv = self.kv(kv_tokens).reshape(batch, -1, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, height, width, channels)
        return self.proj_drop(self.proj(out))
