"""Backbones with a pluggable token mixer: the isotropic :class:`ViT` and the hierarchical
:class:`SegFormer` (MiT-B0..B3 + all-MLP head). Both build their mixers by name through
:func:`afno_repro.mixers.build_mixer`, so every registered mixer fits either backbone.
:class:`SwinSegFormer` (timm's Swin T/S/B + the all-MLP head) is Figure 1's Swin comparison.
"""

from afno_repro.models.heads import AllMLPDecodeHead, PatchPixelHead
from afno_repro.models.segformer import SegFormer
from afno_repro.models.swin import SwinSegFormer
from afno_repro.models.vit import ViT

__all__ = ["ViT", "SegFormer", "SwinSegFormer", "PatchPixelHead", "AllMLPDecodeHead"]
