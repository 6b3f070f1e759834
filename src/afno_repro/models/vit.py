"""Isotropic vision transformer with a pluggable token mixer (the paper's ViT-B/4, ViT-S/4, ViT-XS/4).

Tokens stay ``(B, h, w, C)`` from the patch embedding to the head, which is the mixer contract
(:mod:`afno_repro.mixers`): a Fourier mixer sees the token grid, not a flattened sequence.
Layers come from timm (``PatchEmbed``, ``Mlp``, ``DropPath``, ``ClassifierHead``); the design
follows ``timm.models.metaformer``: a block is "norm, mixer, residual; norm, MLP, residual" and
only the mixer changes between the rows of the paper's tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from timm.layers import ClassifierHead, DropPath, Mlp, PatchEmbed, calculate_drop_path_rates, to_2tuple, trunc_normal_
from timm.layers.pos_embed import resample_abs_pos_embed_nhwc
from torch import nn

from afno_repro.mixers import build_mixer
from afno_repro.mixers.weight_init import init_vit_weights
from afno_repro.models.heads import PatchPixelHead

__all__ = ["ViT", "Block", "HEADS", "mixer_name_and_options", "init_outside"]

HEADS = ("pixel", "segmentation", "classification", None)
"""Valid values of ``ViT(head=...)``; ``None`` returns the token features."""


def _to_plain(value: Any) -> Any:
    """Turn omegaconf containers (or any mapping / sequence) into dicts and lists, recursively."""
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_to_plain(item) for item in value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_to_plain(item) for item in value]
    return value


def mixer_name_and_options(mixer: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a mixer config ``{"name": ..., **options}`` into the name and plain-Python options.

    Accepts a ``dict`` or an omegaconf ``DictConfig`` (as Hydra passes it); list values come
    back as ``list``.
    """
    if not isinstance(mixer, Mapping) or "name" not in mixer:
        raise ValueError(
            f"mixer={mixer!r} is not a mixer config. Give a mapping with the registry name under "
            "'name' and the mixer's options beside it, e.g. {'name': 'afno', 'num_blocks': 8}; "
            "afno_repro.mixers.list_mixers() lists the names."
        )
    options = _to_plain(mixer)
    return options.pop("name"), options


def init_outside(root: nn.Module, excluded: Iterable[nn.Module], init_fn: Callable[[nn.Module], None]) -> None:
    """Apply ``init_fn`` to every submodule of ``root`` except those inside ``excluded``.

    Backbones use it so that their own layers get the transformer init while each mixer keeps
    the init its module chose (e.g. AFNO's ``0.02 * randn`` complex weights).
    """
    skipped = {id(module) for subtree in excluded for module in subtree.modules()}
    for module in root.modules():
        if id(module) not in skipped:
            init_fn(module)


def _nearest_multiples(size: int, multiple: int) -> str:
    below = size // multiple * multiple
    above = below + multiple
    return f"{below} or {above}" if below > 0 else f"{above}"


class Block(nn.Module):
    """Pre-norm transformer block around an injected token mixer (paper Section 3, Eq. 1-2).

    ``x = x + drop_path(mixer(norm1(x)))``, then ``x = x + drop_path(mlp(norm2(x)))``.

    ``double_skip=True`` runs the block exactly as FourCastNet (Pathak et al. 2022) and the
    released AFNO code do with their ``double_skip=True``: the same two residuals, but stochastic
    depth drops only the MLP branch, never the mixer branch. (Their ``double_skip=False`` keeps a
    single residual around the whole block; no paper experiment uses it, so it is not offered.)

    Shape contract: ``(B, h, w, C) -> (B, h, w, C)``.

    Parameters
    ----------
    dim: token width ``C``.
    mixer: the token mixer, an ``nn.Module`` mapping ``(B, h, w, C)`` to itself.
    mlp_ratio: MLP hidden width as a multiple of ``dim``.
    drop: dropout probability inside the MLP.
    mlp_layer: the channel MLP, built as ``mlp_layer(dim, hidden_features=..., act_layer=nn.GELU,
        drop=...)`` and applied to ``(B, h, w, C)`` tokens; timm's ``Mlp`` here, SegFormer's
        Mix-FFN in :mod:`afno_repro.models.segformer`.
    drop_path: stochastic-depth probability of this block's residual branches.
    double_skip: FourCastNet's variant, stochastic depth on the MLP branch only (see above).
    norm_eps: LayerNorm epsilon.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> block = Block(16, mixer=nn.Identity())
    >>> block(torch.randn(2, 3, 5, 16)).shape
    torch.Size([2, 3, 5, 16])
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        *,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        double_skip: bool = False,
        norm_eps: float = 1e-6,
        mlp_layer: Callable[..., nn.Module] = Mlp,
    ) -> None:
        super().__init__()
        self.double_skip = double_skip
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = mlp_layer(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.mixer(self.norm1(x))
        x = x + (mixed if self.double_skip else self.drop_path(mixed))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Vision transformer on a grid of ``patch_size x patch_size`` patches with a pluggable mixer.

    The backbone of the paper's ViT experiments (Section 5, A.2, A.5, A.6): patch embedding,
    optional learned position embedding, ``depth`` :class:`Block` s each with its own mixer
    built by ``build_mixer(name, embed_dim, grid_size=(h, w), **options)``, a final LayerNorm
    and one of four heads. Named sizes (set by the configs):

    - ViT-B/4 (Tables 2, 3): ``patch_size=4, embed_dim=768, depth=12`` (AFNO: ``embed_dim=750``,
      one block); with the GFN mixer on 224x224 and the pixel head it has ~87M parameters.
    - ViT-S/4 (Table 5): ``depth=12``, width per mixer to reach ~16M parameters (SA 324, LS 312,
      GFN 245, AFNO 384), ``head="classification", num_classes=1000``.
    - ViT-XS/4 (Table 6): ``depth=5``, ~16M parameters (FNO 64, AFNO 584 with 4 blocks).

    Shape contract: ``(B, in_chans, H, W)`` with ``H`` and ``W`` multiples of ``patch_size``
    (any such size, not only ``img_size``: the position embedding is resized bicubically) ->
    ``"pixel"``: ``(B, in_chans, H, W)``; ``"segmentation"``: ``(B, num_classes, H, W)``
    logits; ``"classification"``: ``(B, num_classes)`` logits; ``None``: the ``(B, h, w, C)``
    features of :meth:`forward_features`.

    Parameters
    ----------
    img_size: image side (or ``(H, W)``) the model is built for; fixes the position-embedding
        grid and the ``grid_size`` given to the mixers (GFN sizes its filter with it).
    patch_size: side of the square, non-overlapping patches (4 in all the paper's ViTs).
    in_chans: channels of the input image.
    embed_dim: token width ``C`` (the paper's "hidden size").
    depth: number of blocks.
    mixer: ``{"name": <registry name>, **options}``; the options go to every block's mixer.
        ``None`` means ``{"name": "afno"}`` with the mixer's defaults.
    mlp_ratio: MLP hidden width as a multiple of ``embed_dim`` (4).
    drop_rate: dropout after the position embedding and inside the MLPs.
    drop_path_rate: stochastic depth, rising linearly from 0 at the first block to this value at
        the last.
    pos_embed: learn a ``(1, h, w, C)`` position embedding added after the patch embedding.
        The paper does not say; its Table 6 AFNO parameter count fits a model without one, and
        Fourier mixers see positions through the grid anyway.
    double_skip: FourCastNet's block, where stochastic depth never drops the mixer branch (see
        :class:`Block`); off by default.
    norm_eps: LayerNorm epsilon.
    head: ``"pixel"`` (inpainting, A.2: linear map from a token to its ``p x p x in_chans``
        pixels), ``"segmentation"`` (the same map to ``p x p x num_classes`` logits, few-shot
        segmentation A.4), ``"classification"`` (global average pooling + linear, A.5) or
        ``None`` (no head). :meth:`reset_head` swaps it later.
    num_classes: classes of the ``"segmentation"`` and ``"classification"`` heads; ignored by
        the others.

    Examples
    --------
    >>> import torch
    >>> model = ViT(img_size=32, patch_size=4, embed_dim=32, depth=2,
    ...             mixer={"name": "attention", "num_heads": 4})
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    >>> model.reset_head("segmentation", num_classes=5)
    >>> model(torch.randn(2, 3, 24, 40)).shape
    torch.Size([2, 5, 24, 40])
    """

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        mixer: Mapping[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        pos_embed: bool = True,
        double_skip: bool = False,
        norm_eps: float = 1e-6,
        head: str | None = "pixel",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        mixer_name, mixer_options = mixer_name_and_options({"name": "afno"} if mixer is None else mixer)
        img_size = tuple(int(side) for side in to_2tuple(img_size))
        for side in img_size:
            if side % patch_size != 0:
                raise ValueError(
                    f"img_size {side} is not divisible by patch_size {patch_size}, so the image does not "
                    f"tile into whole patches. Use img_size {_nearest_multiples(side, patch_size)} "
                    f"(multiples of {patch_size}), or a patch_size that divides {side}."
                )
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)

        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            output_fmt="NHWC",
            strict_img_size=False,
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid_size, embed_dim)) if pos_embed else None
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                build_mixer(mixer_name, embed_dim, grid_size=self.grid_size, **mixer_options),
                mlp_ratio=mlp_ratio,
                drop=drop_rate,
                drop_path=rate,
                double_skip=double_skip,
                norm_eps=norm_eps,
            )
            for rate in calculate_drop_path_rates(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

        init_outside(self, [block.mixer for block in self.blocks], init_vit_weights)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        self.reset_head(head, num_classes)

    def reset_head(self, head: str | None, num_classes: int | None = None) -> None:
        """Replace the head (freshly initialised), keeping every trunk weight.

        Used to fine-tune an inpainting-pretrained model (``"pixel"``) for few-shot segmentation
        (``"segmentation"``, paper Table 3). Arguments as in the constructor.
        """
        if head not in HEADS:
            raise ValueError(
                f"head={head!r} is not a ViT head; valid heads are 'pixel' (inpainting), 'segmentation' "
                "(per-pixel logits), 'classification' (pooled logits) and None (token features)."
            )
        if head in ("segmentation", "classification") and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(
                f"head={head!r} needs num_classes, a positive integer, but got num_classes={num_classes!r}. "
                "Set num_classes to the dataset's class count (e.g. 1000 for ImageNet, 34 for face_34)."
            )
        if head == "pixel":
            self.head = PatchPixelHead(self.embed_dim, self.patch_size, self.in_chans)
        elif head == "segmentation":
            self.head = PatchPixelHead(self.embed_dim, self.patch_size, num_classes)
        elif head == "classification":
            self.head = ClassifierHead(self.embed_dim, num_classes, pool_type="avg", input_fmt="NHWC")
        else:
            self.head = nn.Identity()
        self.head.apply(init_vit_weights)
        self.head_name = head
        self.num_classes = num_classes if head in ("segmentation", "classification") else None

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"ViT expects images of shape (B, {self.in_chans}, H, W) but got {tuple(x.shape)}. "
                f"Feed {self.in_chans}-channel NCHW images, or build the model with the in_chans of your data."
            )
        for side in x.shape[-2:]:
            if side % self.patch_size != 0:
                raise ValueError(
                    f"image size {tuple(x.shape[-2:])}: {side} is not divisible by patch_size {self.patch_size}. "
                    f"Resize or crop to {_nearest_multiples(side, self.patch_size)} (multiples of {self.patch_size})."
                )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk only: ``(B, in_chans, H, W)`` -> final-normed tokens ``(B, H/p, W/p, C)``."""
        self._check_input(x)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + resample_abs_pos_embed_nhwc(self.pos_embed, list(x.shape[1:3]))
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
