"""Swin T/S/B trunks with SegFormer's all-MLP head: the Swin points of Figure 1 (paper Section 5.6).

"For training Swin, we use pretrained classification checkpoints available from the original
authors and then combine Swin with the Segformer head" (Section 5.6). The trunk is timm's Swin
(``timm.create_model(<name>, features_only=True)``, which returns the four stages' outputs), each
output gets its own LayerNorm as in the Swin authors' segmentation backbone (mmseg's ``norm0..3``),
and the maps go to :class:`afno_repro.models.heads.AllMLPDecodeHead` with SegFormer's decoder width
768. The classification checkpoint (the authors' ``.pth`` or timm's state dict) is read from a
local file (``checkpoint=``); nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import to_2tuple
from timm.models.swin_transformer import checkpoint_filter_fn
from torch import nn

from afno_repro.models.heads import StageHeads, check_head

__all__ = ["SwinSegFormer", "SWIN_VARIANTS"]

SWIN_VARIANTS = {
    "t": "swin_tiny_patch4_window7_224",
    "s": "swin_small_patch4_window7_224",
    "b": "swin_base_patch4_window7_224",
}
"""timm model names of the Swin trunks of Figure 1 (Liu et al. 2021, ImageNet-1K, window 7, 224)."""

_PATCH = 4  # Swin's patch size: the input must tile into 4x4 patches
_STAGE_KEY = re.compile(r"^layers\.(\d+)\.")


class SwinSegFormer(StageHeads, nn.Module):
    """timm's Swin trunk + per-stage LayerNorms + SegFormer's all-MLP head (Figure 1, Section 5.6).

    Sizes (timm / Liu et al. 2021): T ``embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12,
    24]`` (~27.5M trunk parameters), S ``depths=[2, 2, 18, 2]`` (~48.8M), B ``embed_dim=128,
    depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]`` (~86.7M); window 7; stage widths ``C, 2C,
    4C, 8C``. Any input whose sides are multiples of 4 works, whatever ``img_size``: timm pads
    each stage's token grid to whole windows (``strict_img_size=False``), so 1024x1024 (token
    grids 256, 128, 64, 32, none a multiple of 7) runs with window 7.

    State: ``trunk.*`` (timm's feature extractor: ``patch_embed``, ``layers_0..3``), ``norms.0..3``
    (the output LayerNorms; ``norms.3`` is the classifier's final ``norm`` of the checkpoint,
    ``norms.0..2`` are new, as in the Swin authors' segmentation models) and ``head.*`` (the only
    part :func:`afno_repro.pretrained.load_pretrained_backbone` leaves out).

    Heads as :class:`afno_repro.models.SegFormer`: ``"segmentation"`` (all-MLP decoder),
    ``"classification"`` (``norms.3``'d last stage, global average pooled, linear: exactly timm's
    Swin classifier, so a loaded ImageNet checkpoint gives timm's logits) or ``None``. With the
    classification head ``norms.0..2`` are unused (no gradient): train it without DDP's
    unused-parameter check, or not at all (the paper starts from the authors' checkpoints).

    Shape contract: ``(B, in_chans, H, W)``, ``H, W`` multiples of 4 -> ``"segmentation"``:
    ``(B, num_classes, H/4, W/4)``; ``"classification"``: ``(B, num_classes)``; ``None``: the
    four normed stage maps ``(B, C_i, ~H/2^(i+2), ~W/2^(i+2))`` (NCHW, timm's NHWC converted).

    Parameters
    ----------
    variant: ``"t"``, ``"s"`` or ``"b"`` (:data:`SWIN_VARIANTS`).
    img_size: image side (or ``(H, W)``) the model is built for; sets the windows of stages whose
        grid is smaller than a window (none at 1024). Other sizes run too (see above).
    in_chans: channels of the input image.
    num_classes: classes of the head (19 for Cityscapes, 1000 for the ImageNet classifier).
    head: ``"segmentation"`` (default), ``"classification"`` or ``None``.
    decoder_dim: width of the all-MLP head (768, SegFormer-B2..B5's).
    decoder_dropout: channel dropout before the head's classifier (0.1).
    drop_path_rate: stochastic depth of the trunk (timm's per-block schedule).
    checkpoint: a local file of the Swin authors' (``swin_tiny_patch4_window7_224.pth``, ``{"model":
        ...}``) or timm's (``pytorch_model.bin``, ``model.safetensors``) ImageNet classification
        weights for this variant, or ``None`` for random init. The classifier's weights are loaded
        into a ``"classification"`` head of the same class count and dropped otherwise.
    embed_dim, depths, num_heads, window_size: override the variant's sizes (smoke-sized models).

    Examples
    --------
    >>> import torch
    >>> model = SwinSegFormer(variant="t", img_size=32, num_classes=5, decoder_dim=16, embed_dim=8,
    ...                       depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2)
    >>> model(torch.randn(2, 3, 32, 48)).shape
    torch.Size([2, 5, 8, 12])
    >>> model.reset_head("classification", num_classes=10)
    >>> model(torch.randn(2, 3, 36, 44)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        variant: str = "t",
        img_size: int | Sequence[int] = 1024,
        in_chans: int = 3,
        num_classes: int | None = 19,
        head: str | None = "segmentation",
        decoder_dim: int = 768,
        decoder_dropout: float = 0.1,
        drop_path_rate: float = 0.1,
        checkpoint: str | os.PathLike | None = None,
        require_checkpoint: bool = False,
        embed_dim: int | None = None,
        depths: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        window_size: int | None = None,
    ) -> None:
        super().__init__()
        if variant not in SWIN_VARIANTS:
            raise ValueError(
                f"variant={variant!r} is not a Swin variant; valid variants are "
                f"{', '.join(map(repr, SWIN_VARIANTS))} (Swin-T, -S, -B of Figure 1). Override sizes with "
                "embed_dim/depths/num_heads/window_size."
            )
        check_head("SwinSegFormer", head, num_classes)
        self.variant = variant
        self.timm_name = SWIN_VARIANTS[variant]
        self.img_size = tuple(int(side) for side in to_2tuple(img_size))
        for side in self.img_size:
            if side % _PATCH:
                raise ValueError(_not_patch_multiple(f"img_size={list(self.img_size)}", side))
        self.in_chans = in_chans
        self.decoder_dim = decoder_dim
        self.decoder_dropout = decoder_dropout
        overrides: dict[str, Any] = {
            key: tuple(int(v) for v in value) if isinstance(value, Sequence) else value
            for key, value in (("embed_dim", embed_dim), ("depths", depths), ("num_heads", num_heads),
                               ("window_size", window_size))
            if value is not None
        }
        if len(overrides.get("depths", (0,) * 4)) != 4 or len(overrides.get("num_heads", (0,) * 4)) != 4:
            raise ValueError(
                f"depths={depths} and num_heads={num_heads} need one value per Swin stage (4 each), e.g. depths="
                "[2, 2, 6, 2] and num_heads=[3, 6, 12, 24] (Swin-T); leave them None for the variant's."
            )
        self._timm_kwargs = dict(img_size=self.img_size, in_chans=in_chans, strict_img_size=False, **overrides)
        self.trunk = timm.create_model(
            self.timm_name, pretrained=False, features_only=True, drop_path_rate=drop_path_rate, **self._timm_kwargs
        )
        self.embed_dims = tuple(int(c) for c in self.trunk.feature_info.channels())
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for dim in self.embed_dims)
        self.reset_head(head, num_classes)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        if self.checkpoint is None and require_checkpoint:
            raise ValueError(
                f"this Swin trunk starts from the Swin authors' ImageNet-1K checkpoint (Figure 1, Section 5.6) and none "
                f"was given: put {self.timm_name}.pth in a folder and pass swin_checkpoints=<folder> (make "
                f"reproduce-all: ARGS=\"--swin <folder>\"); backbone.require_checkpoint=false trains it from random "
                f"init instead, which is not the paper's. {_WHERE}"
            )
        if self.checkpoint is not None:
            self.load_classification_checkpoint(self.checkpoint)

    def load_classification_checkpoint(self, path: str | os.PathLike) -> list[str]:
        """Load an ImageNet classification checkpoint of this Swin into the trunk (and ``norms.3``).

        The file is the authors' release (``{"model": state_dict}``, downsampling at the end of a
        stage, ``head.weight``) or timm's (``.bin``/``.pth`` or ``.safetensors``); timm's
        ``checkpoint_filter_fn`` converts the former and resizes relative-position tables to this
        model's windows. Returns the parameters left as initialised (``norms.0..2`` and, unless
        the checkpoint's classifier fits the head, the head's).

        Raises
        ------
        ValueError
            The file is missing or unreadable, or its weights do not fit this trunk (the
            parameters missing, extra or of another shape are named).
        """
        from afno_repro.checkpoints import load_checkpoint, state_dict_differences

        path = Path(path).expanduser()
        if not path.is_file():
            raise ValueError(f"checkpoint={path} {'is a directory' if path.is_dir() else 'does not exist'}. {_WHERE}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            stored: Any = load_file(str(path))
        else:
            stored = load_checkpoint(path, option="checkpoint")
        if isinstance(stored, dict):
            stored = stored.get("model", stored.get("state_dict", stored))
        if not isinstance(stored, dict) or not all(isinstance(v, torch.Tensor) for v in stored.values()):
            raise ValueError(
                f"checkpoint={path} holds no Swin state dict (expected the tensors of a Swin classifier, bare or "
                f"under 'model' as in the authors' release). {_WHERE}"
            )
        try:
            with torch.device("meta"):
                reference = timm.create_model(self.timm_name, pretrained=False, **self._timm_kwargs)
            converted = checkpoint_filter_fn(stored, reference)
        except Exception as error:  # noqa: BLE001 - timm's filter fails with KeyError, AttributeError, RuntimeError...
            raise ValueError(
                f"checkpoint={path} does not fit Swin-{self.variant.upper()} ({self.timm_name}): timm could not "
                f"convert it ({type(error).__name__}: {error}). {_WHERE}"
            ) from None
        mapped: dict[str, torch.Tensor] = {}
        classifier: dict[str, torch.Tensor] = {}
        for key, value in converted.items():
            if key.startswith("head.fc."):
                classifier[key] = value
            elif key.startswith("norm."):
                mapped["norms.3." + key.removeprefix("norm.")] = value
            else:
                mapped["trunk." + _STAGE_KEY.sub(lambda m: f"layers_{m.group(1)}.", key)] = value
        own = self.state_dict()
        new = [key for key in own if key.startswith(("norms.0.", "norms.1.", "norms.2.", "head."))]
        expected = {key: value for key, value in own.items() if key not in new}
        problems = state_dict_differences(mapped, expected)
        if problems:
            raise ValueError(
                f"checkpoint={path} does not fit Swin-{self.variant.upper()} ({self.timm_name}"
                f"{', with size overrides' if len(self._timm_kwargs) > 3 else ''}): {'; '.join(problems)}. {_WHERE}"
            )
        head_fits = (
            self.head_name == "classification"
            and {f"head.{k.removeprefix('head.')}" for k in classifier} == {k for k in own if k.startswith("head.")}
            and all(own[k].shape == v.shape for k, v in classifier.items())
        )
        if head_fits:
            mapped.update(classifier)
        self.load_state_dict(mapped, strict=False)
        return [key for key in new if key not in mapped]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"SwinSegFormer expects images of shape (B, {self.in_chans}, H, W) but got {tuple(x.shape)}. "
                f"Feed {self.in_chans}-channel NCHW images or build the model with a matching in_chans."
            )
        for side in x.shape[-2:]:
            if side % _PATCH:
                raise ValueError(_not_patch_multiple(f"image size {tuple(x.shape[-2:])}", side))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Trunk only: the four normed stage outputs, ``(B, C_i, h_i, w_i)`` each, shallowest first."""
        self._check_input(x)
        return [norm(f).permute(0, 3, 1, 2) for norm, f in zip(self.norms, self.trunk(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.head_name == "classification":
            self._check_input(x)
            return self.head(self.norms[-1](self.trunk(x)[-1]).permute(0, 3, 1, 2))
        return self.head(self.forward_features(x))


_WHERE = (
    "Give the ImageNet-1K classification weights of the same variant: the Swin authors' release "
    "(github.com/microsoft/Swin-Transformer: swin_tiny/small/base_patch4_window7_224.pth) or timm's "
    "(hf.co/timm/swin_*_patch4_window7_224.ms_in1k: pytorch_model.bin or model.safetensors), downloaded by hand, "
    "or checkpoint=null to start from random weights."
)


def _not_patch_multiple(what: str, side: int) -> str:
    below = side // _PATCH * _PATCH
    return (
        f"{what}: {side} is not a multiple of Swin's patch size {_PATCH}. Resize, crop or pad to "
        f"{f'{below} or ' if below else ''}{below + _PATCH} (multiples of {_PATCH}); the window size need not divide "
        "the token grid (timm pads to whole windows)."
    )
