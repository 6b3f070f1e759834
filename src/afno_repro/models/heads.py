"""Output heads of the backbones: a per-token linear "pixel" head and SegFormer's all-MLP decoder.

The ViT classification head is timm's ``ClassifierHead`` (global average pooling + linear) and
is built in :mod:`afno_repro.models.vit`; only the heads timm does not provide live here, and
:func:`build_stage_head`, the head of the four-stage trunks (SegFormer, Swin).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import ClassifierHead, ConvNormAct
from torch import nn

from afno_repro.mixers.weight_init import init_mit_weights

__all__ = ["PatchPixelHead", "AllMLPDecodeHead", "HEADS", "StageHeads", "build_stage_head", "check_head"]

#: The heads of the four-stage trunks (SegFormer, Swin); ``None`` returns the stage feature maps.
HEADS = ("segmentation", "classification", None)


class PatchPixelHead(nn.Module):
    """Linear map from each token to its ``patch_size x patch_size`` patch of output pixels.

    Paper A.2: "a linear projection layer at the end to convert tokens into a reconstructed
    image". With ``out_chans = in_chans`` it is the inpainting head; with ``out_chans =
    num_classes`` it gives per-pixel segmentation logits (few-shot segmentation, A.4). The linear
    output of a token is read as ``(patch row, patch column, channel)``, the layout MAE uses.

    Shape contract: ``(B, h, w, C) -> (B, out_chans, h * patch_size, w * patch_size)``.

    Parameters
    ----------
    embed_dim: token width ``C``.
    patch_size: side of the square patch each token stands for.
    out_chans: channels of the output image (3 for RGB pixels, the class count for logits).

    Examples
    --------
    >>> import torch
    >>> head = PatchPixelHead(embed_dim=32, patch_size=4, out_chans=3)
    >>> head(torch.randn(2, 5, 7, 32)).shape
    torch.Size([2, 3, 20, 28])
    """

    def __init__(self, embed_dim: int, patch_size: int, out_chans: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.out_chans = out_chans
        self.proj = nn.Linear(embed_dim, patch_size * patch_size * out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        p = self.patch_size
        x = self.proj(x).reshape(batch, height, width, p, p, self.out_chans)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, self.out_chans, height * p, width * p)


class AllMLPDecodeHead(nn.Module):
    """SegFormer's all-MLP decoder (Xie et al. 2021, Section 3.2), used by paper Section 5.3 / A.3.

    Each stage's features go through a linear layer to ``decoder_dim`` channels and are upsampled
    (bilinear) to the grid of the first stage (1/4 of the image); the four maps are concatenated
    (deepest stage first, SegFormer's order, so its checkpoints map one to one), fused by a
    ``1x1 conv + BatchNorm + ReLU``, dropped out channel-wise and classified by a ``1x1`` conv.

    Shape contract: a sequence of ``(B, C_i, h_i, w_i)`` maps, ``h_0 x w_0`` the largest ->
    ``(B, num_classes, h_0, w_0)`` logits.

    Parameters
    ----------
    in_dims: channel width ``C_i`` of each stage's features, shallowest first.
    decoder_dim: the common width the stages are projected to (SegFormer: 256 for B0/B1, 768
        for B2-B5).
    num_classes: number of output classes (19 for Cityscapes).
    dropout: probability of zeroing a whole fused channel before the classifier (SegFormer: 0.1).

    Examples
    --------
    >>> import torch
    >>> head = AllMLPDecodeHead([8, 16], decoder_dim=32, num_classes=5)
    >>> head([torch.randn(2, 8, 12, 10), torch.randn(2, 16, 6, 5)]).shape
    torch.Size([2, 5, 12, 10])
    """

    def __init__(self, in_dims: Sequence[int], decoder_dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linear = nn.ModuleList(nn.Linear(dim, decoder_dim) for dim in in_dims)
        self.fuse = ConvNormAct(len(in_dims) * decoder_dim, decoder_dim, kernel_size=1, bias=False)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(decoder_dim, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        projected = []
        for feature, linear in zip(features, self.linear):
            x = linear(feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            projected.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        x = self.fuse(torch.cat(projected[::-1], dim=1))
        return self.classifier(self.dropout(x))


def build_stage_head(head: str | None, embed_dims: Sequence[int], decoder_dim: int, num_classes: int | None,
                     dropout: float = 0.0) -> nn.Module:
    """The head of a four-stage trunk, freshly initialised (MiT's init): ``"segmentation"``, the
    all-MLP decoder over every stage; ``"classification"``, average pooling and a linear layer on
    the last stage; ``None``, no head (the stage outputs themselves).

    Examples
    --------
    >>> type(build_stage_head("classification", [8, 16, 32, 64], 32, 10)).__name__
    'ClassifierHead'
    >>> type(build_stage_head(None, [8, 16, 32, 64], 32, None)).__name__
    'Identity'
    """
    if head == "segmentation":
        module = AllMLPDecodeHead(embed_dims, decoder_dim, num_classes, dropout=dropout)
    elif head == "classification":
        module = ClassifierHead(embed_dims[-1], num_classes, pool_type="avg", input_fmt="NCHW")
    else:
        module = nn.Identity()
    module.apply(init_mit_weights)
    return module


def check_head(model: str, head: str | None, num_classes: int | None) -> None:
    """ValueError unless ``head`` is one of :data:`HEADS` and a head with classes gets a class count."""
    if head not in HEADS:
        raise ValueError(
            f"head={head!r} is not a {model} head; valid heads are 'segmentation' (all-MLP decoder, per-pixel "
            "logits at 1/4 of the image), 'classification' (pooled last stage + linear, ImageNet pretraining) "
            "and None (the four stage feature maps)."
        )
    if head is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(
            f"head={head!r} needs num_classes, a positive integer, but got num_classes={num_classes!r}. Set "
            "num_classes to the dataset's class count (19 for Cityscapes, 1000 for ImageNet)."
        )


class StageHeads:
    """:meth:`reset_head` of the four-stage trunks (SegFormer, Swin), which set ``embed_dims``,
    ``decoder_dim`` and ``decoder_dropout``."""

    embed_dims: Sequence[int]
    decoder_dim: int
    decoder_dropout: float

    def reset_head(self, head: str | None, num_classes: int | None = None) -> None:
        """Replace the head (freshly initialised, :func:`build_stage_head`), keeping every trunk weight.

        Used to finetune an ImageNet-pretrained trunk (``"classification"``) on Cityscapes
        (``"segmentation"``, paper A.3). Arguments as in the constructor.
        """
        check_head(type(self).__name__, head, num_classes)
        self.head = build_stage_head(head, self.embed_dims, self.decoder_dim, num_classes, self.decoder_dropout)
        self.head_name = head
        self.num_classes = num_classes if head is not None else None
