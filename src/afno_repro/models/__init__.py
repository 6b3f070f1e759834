"""Backbones with a pluggable token mixer: the isotropic :class:`ViT` and the hierarchical
:class:`SegFormer` (MiT-B0..B3 + all-MLP head). Both build their mixers by name through
:func:`afno_repro.mixers.build_mixer`, so every registered mixer fits either backbone.
"""

from afno_repro.models.heads import AllMLPDecodeHead, PatchPixelHead
from afno_repro.models.segformer import SegFormer
from afno_repro.models.vit import ViT

__all__ = ["ViT", "SegFormer", "PatchPixelHead", "AllMLPDecodeHead"]
