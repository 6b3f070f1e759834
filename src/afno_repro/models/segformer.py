"""SegFormer (Xie et al. 2021): the hierarchical MiT encoder with a pluggable mixer + all-MLP head.

The paper's Cityscapes backbone (Section 5.3, Table 4, A.3) and its trunk-scaling study (Section
5.6, Figure 1, MiT-B0..B3). The encoder is four stages of overlapping patch embedding, blocks
``x + drop_path(mixer(norm1(x)))``, ``x + drop_path(MixFFN(norm2(x)))`` and a LayerNorm; only the
mixer changes between the rows of Table 4. The head is replaceable (``head=``, :meth:`SegFormer.reset_head`):
the all-MLP decoder for segmentation, a pooled linear classifier for the ImageNet pretraining of
A.3, or none. The overlapping patch embedding and the Mix-FFN are
timm's (MiT is PVTv2's encoder with a different MLP ratio), the block is
:class:`afno_repro.models.vit.Block`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.layers import calculate_drop_path_rates, to_2tuple
from timm.models.pvt_v2 import MlpWithDepthwiseConv, OverlapPatchEmbed
from torch import nn

from afno_repro.mixers import build_mixer, get_mixer_spec
from afno_repro.mixers.weight_init import init_mit_weights
from afno_repro.models.heads import HEADS, StageHeads, check_head
from afno_repro.models.vit import Block, init_outside, mixer_name_and_options

__all__ = ["SegFormer", "MixFFN", "MiTStage", "VARIANTS", "NUM_STAGES", "HEADS", "check_head"]

NUM_STAGES = 4

VARIANTS: dict[str, dict[str, tuple[int, ...] | int]] = {
    "b0": {"embed_dims": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "decoder_dim": 256},
    "b1": {"embed_dims": (64, 128, 320, 512), "depths": (2, 2, 2, 2), "decoder_dim": 256},
    "b2": {"embed_dims": (64, 128, 320, 512), "depths": (3, 4, 6, 3), "decoder_dim": 768},
    "b3": {"embed_dims": (64, 128, 320, 512), "depths": (3, 4, 18, 3), "decoder_dim": 768},
}
"""MiT sizes (Xie et al. 2021, Table 6); all variants use heads (1, 2, 5, 8) and sr (8, 4, 2, 1)."""

_MIT_NUM_HEADS = (1, 2, 5, 8)
_MIT_SR_RATIOS = (8, 4, 2, 1)
# (kernel, stride) of the overlapping patch embedding that opens each stage; padding is kernel // 2.
_PATCH_EMBED = ((7, 4), (3, 2), (3, 2), (3, 2))


class MixFFN(MlpWithDepthwiseConv):
    """SegFormer's Mix-FFN on ``(B, h, w, C)`` tokens: fc1, 3x3 depth-wise conv, GELU, fc2.

    The depth-wise conv leaks enough position information that MiT needs no position embedding
    (Xie et al. 2021, Eq. 3). Arguments as timm's ``MlpWithDepthwiseConv``.

    Shape contract: ``(B, h, w, C) -> (B, h, w, C)``.

    Examples
    --------
    >>> import torch
    >>> MixFFN(16, hidden_features=64)(torch.randn(2, 5, 7, 16)).shape
    torch.Size([2, 5, 7, 16])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        x = super().forward(x.reshape(batch, height * width, channels), [height, width])
        return x.reshape(batch, height, width, -1)


class MiTStage(nn.Module):
    """One MiT stage: overlapping patch embedding, blocks, LayerNorm.

    Shape contract: ``(B, C_in, H, W) -> (B, C, ceil(H / stride), ceil(W / stride))``.

    Parameters
    ----------
    in_chans, dim: input channels and stage width.
    patch_size, stride: kernel and stride of the patch-embedding conv (padded by ``patch_size // 2``).
    mixers: one token mixer per block.
    mlp_ratio, drop, drop_paths, norm_eps: as for :class:`afno_repro.models.vit.Block`,
        ``drop_paths`` holding one rate per block.
    """

    def __init__(
        self,
        in_chans: int,
        dim: int,
        *,
        patch_size: int,
        stride: int,
        mixers: Sequence[nn.Module],
        mlp_ratio: float,
        drop: float,
        drop_paths: Sequence[float],
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(patch_size=patch_size, stride=stride, in_chans=in_chans, embed_dim=dim)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                mixer,
                mlp_ratio=mlp_ratio,
                drop=drop,
                drop_path=rate,
                norm_eps=norm_eps,
                mlp_layer=MixFFN,
            )
            for mixer, rate in zip(mixers, drop_paths)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).permute(0, 3, 1, 2)


def _four(value: Sequence[int] | None, default: Sequence[int], what: str) -> tuple[int, ...]:
    values = tuple(default if value is None else value)
    if len(values) != NUM_STAGES:
        raise ValueError(
            f"{what}={list(values)} has {len(values)} entries, but MiT has {NUM_STAGES} stages. "
            f"Give one value per stage, e.g. {what}={list(default)}, or leave it None for the variant's."
        )
    return tuple(int(v) for v in values)


def _per_stage_options(name: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """One option dict per stage: list/tuple values are spread over the stages, scalars copied."""
    stages: list[dict[str, Any]] = [{} for _ in range(NUM_STAGES)]
    for key, value in options.items():
        if isinstance(value, (list, tuple)):
            if len(value) != NUM_STAGES:
                raise ValueError(
                    f"mixer {name!r} option {key}={list(value)} has {len(value)} entries, but a list option "
                    f"gives one value per SegFormer stage and there are {NUM_STAGES}. Give {NUM_STAGES} values "
                    f"(e.g. {key}=[1, 2, 5, 8]) or a single scalar for all stages."
                )
            for stage, item in zip(stages, value):
                stage[key] = item
        else:
            for stage in stages:
                stage[key] = value
    return stages


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class SegFormer(StageHeads, nn.Module):
    """SegFormer: MiT encoder (B0-B3) with a per-stage pluggable token mixer and all-MLP head.

    Paper Section 5.3 / A.3 (Cityscapes, Table 4, MiT-B3) and Section 5.6 (Figure 1, B0-B3).
    Variants (Xie et al. 2021): depths b0/b1 ``[2, 2, 2, 2]``, b2 ``[3, 4, 6, 3]``, b3
    ``[3, 4, 18, 3]``; widths b0 ``[32, 64, 160, 256]``, b1-b3 ``[64, 128, 320, 512]``; heads
    ``[1, 2, 5, 8]``; spatial reduction ``[8, 4, 2, 1]``; decoder width 256 (b0, b1) or 768 (b2,
    b3). MiT-B3 with efficient attention has ~44.1M encoder and ~3.2M head parameters. The paper
    changes only the widths per mixer (A.3): GFN ``[128, 256, 440, 512]``, LS
    ``[128, 256, 360, 512]``, AFNO ``[208, 288, 440, 512]`` with ``num_blocks=[1, 2, 5, 8]``.

    Mixer options per stage: in ``mixer``, a list (or tuple) value gives one value per stage and
    must have 4 entries; a scalar applies to all stages. If the mixer takes ``num_heads`` or
    ``sr_ratio`` and ``mixer`` does not set it, the stage's value from ``num_heads`` /
    ``sr_ratios`` is used, so ``SegFormer(variant="b3")`` is MiT-B3 as published. Each stage's
    mixers get that stage's token grid as ``grid_size``.

    Heads (attribute ``head``, the only part :func:`afno_repro.pretrained.load_pretrained_backbone`
    does not load, so an ImageNet-pretrained trunk is finetuned with a fresh decoder):
    ``"segmentation"`` is the all-MLP decoder, ``"classification"`` the ImageNet pretraining head
    of A.3 (the last stage's LayerNorm'd tokens, global average pooled, then a linear layer,
    timm's ``ClassifierHead``), ``None`` no head. :meth:`reset_head` swaps it, keeping the trunk.

    Shape contract: ``(B, in_chans, H, W)`` -> ``"segmentation"``: ``(B, num_classes, ceil(H/4),
    ceil(W/4))`` logits; ``"classification"``: ``(B, num_classes)`` logits; ``None``: the list of
    :meth:`forward_features`, the four stage maps ``(B, C_i, ~H/2^(i+2), ~W/2^(i+2))``.

    Parameters
    ----------
    variant: ``"b0"``, ``"b1"``, ``"b2"`` or ``"b3"``; supplies every size left ``None``.
    embed_dims, depths, num_heads, sr_ratios: per-stage widths, block counts, attention heads and
        key/value reduction ratios (4 values each); override the variant.
    mixer: ``{"name": <registry name>, **options}``; ``None`` means efficient attention.
    mlp_ratio: Mix-FFN hidden width as a multiple of the stage width (4).
    img_size: image side (or ``(H, W)``) the model is built for; fixes the mixers' ``grid_size``.
    mixer_img_size: image side the mixers' ``grid_size`` is computed for instead, when it differs
        from ``img_size``: GFN filters are sized for the ImageNet pretraining resolution (224) and
        bilinearly resized to the 1024x1024 token grids at run time (paper A.3). ``None``: img_size.
    in_chans: channels of the input image.
    num_classes: classes of the head (19 for Cityscapes, 1000 for ImageNet pretraining); ignored
        (and ``None`` afterwards) when ``head=None``.
    head: ``"segmentation"`` (default), ``"classification"`` or ``None``, see above.
    decoder_dim: width of the all-MLP head; ``None`` for the variant's.
    drop_path_rate: stochastic depth, rising linearly from 0 to this value over all blocks.
    drop_rate: dropout inside the Mix-FFNs.
    decoder_dropout: channel dropout before the classifier (0.1).
    norm_eps: epsilon of the blocks' and stages' LayerNorms (1e-6; the patch embeddings keep
        PyTorch's 1e-5, as in SegFormer).

    Examples
    --------
    >>> import torch
    >>> model = SegFormer(variant="b0", embed_dims=[16, 16, 40, 40], depths=[1, 1, 1, 1],
    ...                   img_size=64, num_classes=5, decoder_dim=32)
    >>> model(torch.randn(2, 3, 64, 96)).shape
    torch.Size([2, 5, 16, 24])
    >>> [f.shape[1:] for f in model.forward_features(torch.randn(1, 3, 64, 64))]
    [torch.Size([16, 16, 16]), torch.Size([16, 8, 8]), torch.Size([40, 4, 4]), torch.Size([40, 2, 2])]
    >>> model.reset_head("classification", num_classes=10)
    >>> model(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        variant: str = "b3",
        embed_dims: Sequence[int] | None = None,
        depths: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        sr_ratios: Sequence[int] | None = None,
        mixer: Mapping[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        img_size: int | Sequence[int] = 1024,
        mixer_img_size: int | Sequence[int] | None = None,
        in_chans: int = 3,
        num_classes: int | None = 19,
        head: str | None = "segmentation",
        decoder_dim: int | None = None,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
        decoder_dropout: float = 0.1,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(
                f"variant={variant!r} is not a MiT variant; valid variants are {', '.join(map(repr, VARIANTS))}. "
                "Pick one (the paper's Cityscapes model is 'b3') and override sizes with embed_dims/depths."
            )
        sizes = VARIANTS[variant]
        self.embed_dims = _four(embed_dims, sizes["embed_dims"], "embed_dims")
        self.depths = _four(depths, sizes["depths"], "depths")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.depths):
            raise ValueError(
                f"depths={list(self.depths)} must be four positive block counts, one per stage (every stage needs a "
                "block to mix its tokens); MiT-B3 uses [3, 4, 18, 3]."
            )
        self.num_heads = _four(num_heads, _MIT_NUM_HEADS, "num_heads")
        self.sr_ratios = _four(sr_ratios, _MIT_SR_RATIOS, "sr_ratios")
        self.in_chans = in_chans
        self.decoder_dim = sizes["decoder_dim"] if decoder_dim is None else decoder_dim
        self.decoder_dropout = decoder_dropout
        check_head("SegFormer", head, num_classes)

        mixer_name, options = mixer_name_and_options({"name": "efficient_attention"} if mixer is None else mixer)
        accepted = get_mixer_spec(mixer_name).options
        for key, values in (("num_heads", self.num_heads), ("sr_ratio", self.sr_ratios)):
            if key in accepted and key not in options:
                options[key] = list(values)
        stage_options = _per_stage_options(mixer_name, options)

        grid = tuple(int(side) for side in to_2tuple(img_size if mixer_img_size is None else mixer_img_size))
        self.grid_sizes: list[tuple[int, int]] = []
        for conv in _PATCH_EMBED:
            grid = (_conv_out(grid[0], *conv), _conv_out(grid[1], *conv))
            self.grid_sizes.append(grid)

        drop_paths = calculate_drop_path_rates(drop_path_rate, sum(self.depths))
        self.stages = nn.ModuleList()
        for index, (dim, depth) in enumerate(zip(self.embed_dims, self.depths)):
            first = sum(self.depths[:index])
            self.stages.append(
                MiTStage(
                    in_chans if index == 0 else self.embed_dims[index - 1],
                    dim,
                    patch_size=_PATCH_EMBED[index][0],
                    stride=_PATCH_EMBED[index][1],
                    mixers=[
                        build_mixer(mixer_name, dim, grid_size=self.grid_sizes[index], **stage_options[index])
                        for _ in range(depth)
                    ],
                    mlp_ratio=mlp_ratio,
                    drop=drop_rate,
                    drop_paths=drop_paths[first : first + depth],
                    norm_eps=norm_eps,
                )
            )
        mixers = [block.mixer for stage in self.stages for block in stage.blocks]
        init_outside(self, mixers, init_mit_weights)
        self.reset_head(head, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder only: the four stage outputs, ``(B, C_i, h_i, w_i)`` each, shallowest first."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"SegFormer expects images of shape (B, {self.in_chans}, H, W) but got {tuple(x.shape)}. "
                f"Feed {self.in_chans}-channel NCHW images or build the model with a matching in_chans."
            )
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features = self.forward_features(x)
        if self.head_name == "classification":
            return self.head(features[-1])
        return self.head(features)
