"""The embedded few-shot segmentation set: textured shapes on photographs, no download needed.

A stand-in for DatasetGAN's and DDPM-segmentation's few-shot sets (paper appendix A.4) so the
whole segmentation chain (data, finetuning, mIoU) runs anywhere, tests and CPU demos included.
Every image is a crop of one background photograph with 2 to 4 shapes composited on it, each
shape class filled with a crop of its own photograph (all bundled with scikit-image, see
:func:`~afno_repro.data.embedded.load_photo`), later shapes occluding earlier ones:

====  ==========  =========================================
id    class       texture
====  ==========  =========================================
0     background  rocket, motorcycle_left, hubble_deep_field
1     disk        chelsea (cat fur)
2     square      immunohistochemistry (tissue stain)
3     triangle    coffee
4     ring        astronaut
====  ==========  =========================================

Shape and texture alone each leave ambiguities (a ring is a disk with a hole that shows what is
behind it; textures vary from crop to crop), so the task is learnable but not trivial at 32-64
pixels. Masks are exact: each shape is drawn analytically at the pixel centres of the requested
size, and the same boolean mask composites the texture and writes the label.

Layouts (centres, sizes, rotations, classes, texture crops) are drawn in units of the image side
from a generator seeded by ``(seed, split)``, so a split is the same scene at every
``image_size`` and train and test never share a layout. 16 training and 16 test images.

Example
-------
>>> from afno_repro.data.shapes import SHAPE_CLASSES, make_shapes
>>> images, masks = make_shapes("train", image_size=32)
>>> images.shape, images.dtype, masks.shape, masks.dtype
(torch.Size([16, 3, 32, 32]), torch.float32, torch.Size([16, 32, 32]), torch.int64)
>>> sorted(masks.unique().tolist()) == list(range(len(SHAPE_CLASSES)))
True
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torchvision.transforms.v2 import functional as TF

from afno_repro.data.embedded import load_photo
from afno_repro.data.masks import derive_seed

__all__ = ["SHAPE_CLASSES", "SHAPE_SPLIT_SIZES", "make_shapes"]

SHAPE_CLASSES: tuple[str, ...] = ("background", "disk", "square", "triangle", "ring")
SHAPE_SPLIT_SIZES: dict[str, int] = {"train": 16, "test": 16}

_BACKGROUND_PHOTOS = ("rocket", "motorcycle_left", "hubble_deep_field")
_SHAPE_PHOTOS = ("chelsea", "immunohistochemistry", "coffee", "astronaut")
_SPLIT_STREAMS = {"train": 0, "test": 1}
# Photographs are shrunk once to this short side: texture crops are then cheap to resize, and
# at 32-64 px output nothing finer than it would survive the resize anyway.
_TEXTURE_SOURCE_SIDE = 192


@cache
def _texture_source(name: str) -> torch.Tensor:
    photo = load_photo(name)
    height, width = photo.shape[-2:]
    scale = _TEXTURE_SOURCE_SIDE / min(height, width)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    return TF.resize(photo, size, antialias=True).float().div_(255)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _texture(name: str, image_size: int, generator: torch.Generator, min_scale: float, max_scale: float) -> torch.Tensor:
    """A square crop of photograph ``name`` (side a fraction of its short side) at ``image_size``."""
    source = _texture_source(name)
    height, width = source.shape[-2:]
    # Position and side as fractions, so the crop is the same region at every image_size.
    fraction = _uniform(generator, min_scale, max_scale)
    top_fraction, left_fraction = _uniform(generator, 0, 1), _uniform(generator, 0, 1)
    side = max(1, round(fraction * min(height, width)))
    top, left = round(top_fraction * (height - side)), round(left_fraction * (width - side))
    return TF.resized_crop(source, top, left, side, side, [image_size, image_size], antialias=True)


def _shape_mask(shape: int, x: torch.Tensor, y: torch.Tensor, radius: float, angle: float) -> torch.Tensor:
    """Pixels of shape class ``shape`` (1-4) centred at the origin of the centred coordinates ``x``, ``y``."""
    distance2 = x.square() + y.square()
    if shape == 1:
        return distance2 <= radius**2
    if shape == 4:
        return (distance2 <= radius**2) & (distance2 >= (0.5 * radius) ** 2)
    if shape == 2:
        # Half-side 0.8 r: about the disk's area, so size does not give the class away.
        u = x * math.cos(angle) + y * math.sin(angle)
        v = -x * math.sin(angle) + y * math.cos(angle)
        return (u.abs() <= 0.8 * radius) & (v.abs() <= 0.8 * radius)
    # Equilateral triangle of circumradius 1.3 r: inside all three half-planes whose outward
    # normals are 120 degrees apart, at the inradius (half the circumradius).
    inside = torch.ones_like(x, dtype=torch.bool)
    for k in range(3):
        normal = angle + 2 * math.pi * k / 3
        inside &= x * math.cos(normal) + y * math.sin(normal) <= 0.65 * radius
    return inside


def make_shapes(split: str, image_size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``split`` images and masks of the embedded shapes set (see the module docstring).

    Parameters
    ----------
    split: ``"train"`` or ``"test"`` (16 images each, :data:`SHAPE_SPLIT_SIZES`).
    image_size: side ``S`` of the square images, drawn directly at that size.
    seed: seeds the layouts; train and test use different streams of it.

    Returns
    -------
    ``(images, masks)``: float32 ``(N, 3, S, S)`` in ``[0, 1]`` and int64 ``(N, S, S)`` with
    class ids ``0 ... 4`` (:data:`SHAPE_CLASSES`). The same ``split``, ``image_size`` and
    ``seed`` always give the same tensors.
    """
    if split not in SHAPE_SPLIT_SIZES:
        raise ValueError(f"make_shapes got split={split!r}; use 'train' or 'test'.")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"make_shapes got image_size={image_size!r}; it must be a positive int (the image side in pixels), e.g. 64.")
    generator = torch.Generator().manual_seed(derive_seed(seed, _SPLIT_STREAMS[split]))
    centres = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    images, masks = [], []
    for _ in range(SHAPE_SPLIT_SIZES[split]):
        background = _BACKGROUND_PHOTOS[int(torch.randint(len(_BACKGROUND_PHOTOS), (), generator=generator))]
        image = _texture(background, image_size, generator, 0.3, 1.0)
        mask = torch.zeros(image_size, image_size, dtype=torch.long)
        count = int(torch.randint(2, 5, (), generator=generator))
        # Distinct classes per image: every class gets its share of training pixels.
        for shape in (torch.randperm(len(_SHAPE_PHOTOS), generator=generator)[:count] + 1).tolist():
            radius = _uniform(generator, 0.13, 0.24)
            cx, cy = _uniform(generator, 0.12, 0.88), _uniform(generator, 0.12, 0.88)
            angle = _uniform(generator, 0, 2 * math.pi)
            pixels = _shape_mask(shape, x - cx, y - cy, radius, angle)
            texture = _texture(_SHAPE_PHOTOS[shape - 1], image_size, generator, 0.15, 0.5)
            image = torch.where(pixels, texture, image)
            mask[pixels] = shape
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)
