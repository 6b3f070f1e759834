"""Multi-head self-attention, the quadratic baseline of the paper (Section 3.1, Eq. 1)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Attention

from afno_repro.mixers.registry import check_channel_split, register_mixer
from afno_repro.mixers.weight_init import init_vit_weights

__all__ = ["SelfAttention"]


@register_mixer("attention")
class SelfAttention(Attention):
    r"""Multi-head self-attention over all ``N = H * W`` tokens (paper Section 3.1, Eq. 1).

    Implements ``Att(X) = softmax(X W_q (X W_k)^T / sqrt(d_h)) X W_v`` per head (Vaswani et al.,
    2017) followed by the output projection of standard ViTs: timm's ViT attention
    (``timm.models.vision_transformer.Attention``, fused ``scaled_dot_product_attention``) on the
    flattened grid. Cost: ``O(N^2 d + N d^2)``.

    Parameter count: ``4 d^2`` weights (+ ``4 d`` biases): the fused query/key/value map
    ``Linear(d, 3d)`` and the output projection ``Linear(d, d)``. The paper's Table 1 lists
    ``3 d^2`` because Eq. 1 has no output projection; the ViT it trains (and ours) has one.

    Shape contract: ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W`` (odd and non-square
    included); the grid only fixes ``N``, attention itself is permutation-equivariant.

    Init as timm's ViT (:func:`~afno_repro.mixers.weight_init.init_vit_weights`): linear weights
    truncated normal with std 0.02, biases zero.

    Parameters
    ----------
    dim: channel width ``C``.
    num_heads: number of heads; must divide ``dim``. The paper uses 16 heads at width 768
        (ViT-B/4, A.2) and 12 at width 324 (ViT-S/4, A.5).
    qkv_bias: whether the query/key/value projection has a bias (as in timm's ViT).
    attn_drop: dropout probability on the attention weights (training only).
    proj_drop: dropout probability after the output projection.

    Examples
    --------
    >>> import torch
    >>> mixer = SelfAttention(64, num_heads=4)
    >>> mixer(torch.randn(2, 7, 5, 64)).shape
    torch.Size([2, 7, 5, 64])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        head_dim = check_channel_split(dim, num_heads, "num_heads", "attention")
        super().__init__(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.head_dim = head_dim
        self.apply(init_vit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        return super().forward(x.reshape(batch, height * width, channels)).reshape(batch, height, width, channels)
