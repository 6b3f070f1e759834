"""Long-Short attention (Transformer-LS, Zhu et al. 2021) on a 2D token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from afno_repro.mixers.registry import check_channel_split, register_mixer
from afno_repro.mixers.weight_init import init_vit_weights

__all__ = ["LongShortAttention"]


@register_mixer("long_short")
class LongShortAttention(nn.Module):
    r"""Short-range windowed attention and long-range dynamic-projection attention, in one softmax.

    The "LS" mixer of the paper's comparisons (Section 2, Tables 2-5; Zhu et al. 2021), an
    efficient approximation of Eq. 1. Per head, with queries ``Q``, keys ``K`` and values ``V``
    (``Linear(C, C)`` and ``Linear(C, 2C)`` of the tokens):

    * short range: the queries of each non-overlapping ``w x w`` window attend to the keys of the
      ``(w + 2 * (w // 2))^2`` neighbourhood centred on that window (the window plus a halo of
      ``w // 2`` tokens on every side);
    * long range: ``P = softmax_N(X W_p)`` with ``W_p = Linear(C, rank * num_heads)`` is a
      data-dependent projection; head ``h`` gets ``rank`` landmark keys ``P_h^T K_h`` and values
      ``P_h^T V_h``, weighted sums over all ``N`` tokens;
    * every query attends to ``[its window's neighbourhood keys ; the rank landmark keys]``
      under ONE softmax, then the output projection ``Linear(C, C)`` is applied.

    DualLN: the neighbourhood keys/values and the landmark keys/values each get their own
    ``LayerNorm(C)`` (shared by keys and values of that set) before attention, because the
    landmarks are sums over ``N`` tokens and live at a different scale than single tokens.

    Borders: the halo outside the grid is zero-padded and those keys are masked out (they get no
    attention weight). When ``H`` or ``W`` is not a multiple of ``window_size`` the grid is padded
    at the bottom/right to the next multiple and the output is cropped back; the padded
    positions are masked out as keys and never enter the landmarks, so the output on the real
    grid does not depend on the padding. Cost: ``O(N d (w + 2 (w // 2))^2 + N d rank)``.

    Shape contract: ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W``. Vectorised over the windows of
    a chunk (a Python loop only over chunks of ``chunk_rows`` rows of windows) and free of
    data-dependent control flow, so it runs on the meta device for FLOP counting.

    Init as the Transformer-LS vision code and timm's ViT
    (:func:`~afno_repro.mixers.weight_init.init_vit_weights`): linear weights truncated normal
    with std 0.02, biases zero, LayerNorms weight one and bias zero.

    Parameters
    ----------
    dim: channel width ``C``.
    num_heads: number of heads; must divide ``dim``. The paper does not state it for LS.
    window_size: side ``w`` of the square query windows. The paper uses 4 (A.2, A.5); the
        Transformer-LS vision code defaults to 2.
    rank: number ``r`` of dynamic-projection landmarks per head. The paper uses 8 (A.2, A.5);
        the Transformer-LS vision code defaults to 2. ``rank=0`` removes the long-range branch
        (windowed attention only).
    qkv_bias: whether the query and key/value projections have a bias.
    attn_drop: dropout probability on the attention weights (training only).
    proj_drop: dropout probability after the output projection.
    recompute: in training, keep only the tokens, queries and raw keys/values for backward and
        recompute the rest there (the norms, the landmarks and the windowed attention), instead of
        storing the copies made from them: each key and value is cut into ``(span / w)^2``
        overlapping neighbourhoods (4x at the paper's ``w = 4``), which made this mixer hold about
        twice the activation memory of full (flash) attention; with it, about the same. Same
        numbers either way; costs one more pass of that part (not of the four projections) in
        backward. ``False`` stores them.
    chunk_rows: the windows are attended ``chunk_rows`` rows of windows at a time (each chunk
        recomputed on its own in backward), so backward holds one chunk's neighbourhoods and their
        gradients at a time, not the whole grid's: at Table 2's size that transient was ~4x the
        memory full attention's backward needs. Smaller chunks hold less and run more, smaller
        products. Outputs are identical for every value; gradients agree to float rounding (the
        overlapping halos of neighbouring chunks are summed in another order). ``None``: the whole
        grid at once.

    Examples
    --------
    >>> import torch
    >>> mixer = LongShortAttention(64, num_heads=4, window_size=4, rank=8)
    >>> mixer(torch.randn(2, 7, 5, 64)).shape
    torch.Size([2, 7, 5, 64])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        window_size: int = 4,
        rank: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        recompute: bool = True,
        chunk_rows: int | None = 2,
    ) -> None:
        super().__init__()
        self.head_dim = check_channel_split(dim, num_heads, "num_heads", "long_short")
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(
                f"mixer 'long_short': window_size={window_size!r} is not a positive integer. It is the "
                "side of the square query windows of the short-range branch: use an integer >= 1 "
                "(the paper uses 4, the Transformer-LS code 2)."
            )
        if not isinstance(rank, int) or rank < 0:
            raise ValueError(
                f"mixer 'long_short': rank={rank!r} is not a non-negative integer. It is the number of "
                "dynamic-projection landmarks per head of the long-range branch: use an integer >= 1 "
                "(the paper uses 8, the Transformer-LS code 2), or 0 for windowed attention only."
            )
        if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
            raise ValueError(
                f"mixer 'long_short': chunk_rows={chunk_rows!r} is not a positive integer or null. It is how many rows "
                "of windows are attended at a time (backward holds one such chunk's neighbourhoods): use 2 (default), "
                "any integer >= 1, or null for the whole grid at once."
            )
        self.chunk_rows = chunk_rows
        self.num_heads = num_heads
        self.window_size = window_size
        self.halo = window_size // 2
        self.rank = rank
        self.attn_drop = attn_drop
        self.recompute = bool(recompute)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.norm_short = nn.LayerNorm(dim)
        if rank > 0:
            self.dynamic_projection = nn.Linear(dim, rank * num_heads)
            self.norm_long = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.apply(init_vit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, kv = self.q(x), self.kv(x).reshape(*x.shape[:3], 2, x.shape[-1])
        height, width = x.shape[1:3]
        rows = -(-height // self.window_size)
        step = self.chunk_rows or rows
        # Keep x, q and kv for backward (x and q are kept anyway), not the copies made from them: the landmarks
        # and each chunk of windows are recomputed there, one chunk at a time.
        recompute = self.recompute and torch.is_grad_enabled() and self.training
        landmarks = None
        if self.rank > 0:
            landmarks = checkpoint(self._uncached, self._landmarks, x, kv, use_reentrant=False) if recompute \
                else self._landmarks(x, kv)
        chunks = [checkpoint(self._uncached, self._attend_rows, q, kv, landmarks, start, min(rows, start + step),
                             use_reentrant=False) if recompute
                  else self._attend_rows(q, kv, landmarks, start, min(rows, start + step))
                  for start in range(0, rows, step)]
        out = (chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1))[:, :height, :width]
        return self.proj_drop(self.proj(out))

    @staticmethod
    def _uncached(function, *args):
        """``function(*args)`` without autocast's cache of cast weights, so the recomputation in backward casts the
        weights exactly as the forward did (with the cache the two passes need not make the same casts, and a
        compiled checkpoint refuses to replay them)."""
        device = args[0].device.type
        if not (torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)):
            return function(*args)
        with torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False):
            return function(*args)

    def _attend_rows(self, q: torch.Tensor, kv: torch.Tensor, landmarks: torch.Tensor | None, first: int,
                     last: int) -> torch.Tensor:
        """Queries ``(B, H, W, C)``, raw keys/values ``(B, H, W, 2, C)`` and landmarks ``(B, 2, rank, C)`` -> the
        attended values of the windows in rows ``first`` to ``last - 1`` of the windows, ``(B, rows * w, cols * w, C)``
        on the grid rounded up to whole windows (cropped by the caller), before the output projection."""
        batch, height, width, _, channels = kv.shape
        heads, head_dim, w, halo = self.num_heads, self.head_dim, self.window_size, self.halo
        rows, cols = -(-height // w), -(-width // w)
        count = last - first
        span = w + 2 * halo

        # Round the grid up to whole windows; the extra queries are cropped after attention.
        q = q[:, first * w:last * w]
        q = F.pad(q, (0, 0, 0, cols * w - width, 0, count * w - q.shape[1]))
        q = q.reshape(batch, count, w, cols, w, heads, head_dim).permute(0, 1, 3, 5, 2, 4, 6)
        q = q.reshape(batch * count * cols, heads, w * w, head_dim)

        # These windows' keys: their rows with the halo above and below, normed; the halo outside the grid and the
        # round-up keys are zeros after the norm, and the mask, not their value, keeps them out of the softmax.
        top, bottom = first * w - halo, last * w + halo
        inside = kv[:, max(top, 0):min(bottom, height)]
        pad = (0, 0, 0, 0, halo, halo + cols * w - width, max(top, 0) - top, bottom - min(bottom, height))
        k, v = self._neighbourhoods(F.pad(self.norm_short(inside), pad), span).unbind(1)
        mask = self._key_mask(height, width, rows, cols, span, kv.device)[first * cols:last * cols].repeat(batch, 1, 1, 1)

        if landmarks is not None:
            # The same landmarks serve every window.
            landmarks = landmarks.reshape(batch, 1, 2, self.rank, heads, head_dim)
            landmarks = landmarks.expand(-1, count * cols, -1, -1, -1, -1).permute(2, 0, 1, 4, 3, 5)
            k_long, v_long = landmarks.reshape(2, batch * count * cols, heads, self.rank, head_dim)
            k = torch.cat([k, k_long], dim=2)
            v = torch.cat([v, v_long], dim=2)
            mask = F.pad(mask, (0, self.rank), value=True)

        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        out = out.reshape(batch, count, cols, heads, w, w, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(batch, count * w, cols * w, channels)

    def _neighbourhoods(self, kv: torch.Tensor, span: int) -> torch.Tensor:
        """Halo-padded ``(B, H', W', 2, C)`` -> ``(B * windows, 2, heads, span^2, C / heads)``.

        Strided views (``unfold`` with step ``window_size``) cut one overlapping ``span x span``
        neighbourhood per window without a Python loop.
        """
        w = self.window_size
        patches = kv.unfold(1, span, w).unfold(2, span, w)
        batch, rows, cols = patches.shape[:3]
        patches = patches.reshape(batch * rows * cols, 2, self.num_heads, self.head_dim, span * span)
        return patches.transpose(3, 4)

    def _key_mask(self, height: int, width: int, rows: int, cols: int, span: int, device: torch.device) -> torch.Tensor:
        """Boolean ``(windows, 1, 1, span^2)``: True where a neighbourhood key lies on the real grid.

        Built from shapes only (no data-dependent control flow), so it works on the meta device.
        """
        w, halo = self.window_size, self.halo
        row = torch.arange(rows * w + 2 * halo, device=device) - halo
        col = torch.arange(cols * w + 2 * halo, device=device) - halo
        inside = ((row >= 0) & (row < height))[:, None] & ((col >= 0) & (col < width))[None, :]
        return inside.unfold(0, span, w).unfold(1, span, w).reshape(rows * cols, 1, 1, span * span)

    def _landmarks(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Long-range keys and values, ``(B, 2, rank, C)`` (heads side by side in ``C``).

        ``P = softmax over the N tokens of Linear(C, rank * heads)(x)``; head ``h`` gets the
        ``rank`` weighted sums ``P_h^T K_h`` and ``P_h^T V_h`` of its raw keys/values, then the
        long-range LayerNorm of DualLN.
        """
        batch, height, width, two, channels = kv.shape
        tokens = height * width
        scores = self.dynamic_projection(x).reshape(batch, tokens, self.num_heads, self.rank).softmax(dim=1)
        per_head = kv.reshape(batch, tokens, two, self.num_heads, self.head_dim)
        landmarks = torch.einsum("bnhr,bnshd->bsrhd", scores, per_head)
        return self.norm_long(landmarks.reshape(batch, two, self.rank, channels))
