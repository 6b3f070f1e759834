"""The weight init of the attention-family mixers, as their authors' code does it.

A backbone leaves each mixer the init its module chose (``afno_repro.models.vit.init_outside``),
so a mixer that should start like timm's ViT or SegFormer's MiT applies one of these to itself:
``self.apply(init_vit_weights)``. Built alone with ``build_mixer`` or inside a backbone, its
weights are then the same.
"""

from __future__ import annotations

import math

from timm.layers import trunc_normal_
from torch import nn

__all__ = ["init_mit_weights", "init_vit_weights"]


def init_vit_weights(module: nn.Module) -> None:
    """timm's ViT init of one module: ``Linear`` weights truncated normal, std 0.02, biases zero;
    ``LayerNorm`` weight one, bias zero. Other modules are left as they are.

    Not ``timm.models.vision_transformer.init_weights_vit_timm`` itself: in timm 1.0.31 that function
    also calls ``reset_parameters()`` on every other module that has one (convolutions, norms), drawing
    from the random stream between the ``Linear`` layers (its ``needs_reset`` flag); the rule here leaves
    those modules and the stream alone, as the mixers' own code does.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_mit_weights(module: nn.Module) -> None:
    """SegFormer's MiT init of one module: :func:`init_vit_weights`, and ``Conv2d`` weights (the
    spatial-reduction conv) normal with std ``sqrt(2 / fan_out)``, ``fan_out = k_h * k_w *
    out_channels / groups``, biases zero (SegFormer's ``_init_weights``)."""
    init_vit_weights(module)
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
