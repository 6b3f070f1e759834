"""The embedded segmentation sets: textured shapes on photographs, no download needed.

Two sets share the drawing: the few-shot set below (:func:`make_shapes`) and the Cityscapes
stand-in, street-like scenes at 2:1 aspect with an unlabelled bottom band
(:func:`make_street_scenes`, see :mod:`afno_repro.data.cityscapes`).

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
from collections.abc import Sequence
from functools import cache

import torch
from torchvision.transforms.v2 import functional as TF

from afno_repro.data.base import IGNORE_INDEX
from afno_repro.data.embedded import load_photo
from afno_repro.data.masks import derive_seed
from afno_repro.data.sampling import uniform

__all__ = ["EMBEDDED_STREET_SIZES", "SHAPE_CLASSES", "SHAPE_SPLIT_SIZES", "make_shapes", "make_street_scenes"]

SHAPE_CLASSES: tuple[str, ...] = ("background", "disk", "square", "triangle", "ring")
SHAPE_SPLIT_SIZES: dict[str, int] = {"train": 16, "test": 16}
EMBEDDED_STREET_SIZES: dict[str, int] = {"train": 16, "val": 8}

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


def _texture(name: str, image_size: int, generator: torch.Generator, min_scale: float, max_scale: float) -> torch.Tensor:
    """A square crop of photograph ``name`` (side a fraction of its short side) at ``image_size``."""
    source = _texture_source(name)
    height, width = source.shape[-2:]
    # Position and side as fractions, so the crop is the same region at every image_size.
    fraction = uniform(generator, min_scale, max_scale)
    top_fraction, left_fraction = uniform(generator, 0, 1), uniform(generator, 0, 1)
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
            radius = uniform(generator, 0.13, 0.24)
            cx, cy = uniform(generator, 0.12, 0.88), uniform(generator, 0.12, 0.88)
            angle = uniform(generator, 0, 2 * math.pi)
            pixels = _shape_mask(shape, x - cx, y - cy, radius, angle)
            texture = _texture(_SHAPE_PHOTOS[shape - 1], image_size, generator, 0.15, 0.5)
            image = torch.where(pixels, texture, image)
            mask[pixels] = shape
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)


# --- the embedded street-like scenes (the Cityscapes stand-in) -------------------------------------
_BAND_PHOTO = "hubble_deep_field"
_BAND_START = 0.875  # the bottom 1/8 of every image: unlabelled, like Cityscapes' ego vehicle
_STREAMS = {"train": 10, "val": 11}


def _rect_texture(name: str, height: int, width: int, generator: torch.Generator, min_scale: float,
                  max_scale: float) -> torch.Tensor:
    """A crop of photograph ``name`` with the aspect of ``height x width``, at that size, in ``[0, 1]``."""
    source = _texture_source(name)
    source_h, source_w = source.shape[-2:]
    aspect = width / height
    fraction = uniform(generator, min_scale, max_scale)
    crop_h = max(1, round(fraction * min(source_h, source_w / aspect)))
    crop_w = max(1, min(source_w, round(crop_h * aspect)))
    top = round(float(torch.rand((), generator=generator)) * (source_h - crop_h))
    left = round(float(torch.rand((), generator=generator)) * (source_w - crop_w))
    return TF.resized_crop(source, top, left, crop_h, crop_w, [height, width], antialias=True)


def make_street_scenes(split: str, size: Sequence[int] = (2048, 1024), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded Cityscapes stand-in (module docstring): ``(images, labels)`` of ``split``.

    Parameters
    ----------
    split: ``"train"`` (16 images) or ``"val"`` (8).
    size: ``(W, H)`` of the images, drawn directly at that size (layouts in units of the
        height, so a split is the same scene at every size).
    seed: seeds the layouts; train and val use different streams of it.

    Returns
    -------
    uint8 ``(N, 3, H, W)`` and int64 ``(N, H, W)`` with ids 0-4 (:data:`SHAPE_CLASSES`) and 255.

    Example
    -------
    >>> from afno_repro.data.shapes import make_street_scenes
    >>> images, labels = make_street_scenes("val", (64, 32))
    >>> images.shape, images.dtype, labels.shape, sorted(labels.unique().tolist())
    (torch.Size([8, 3, 32, 64]), torch.uint8, torch.Size([8, 32, 64]), [0, 1, 2, 3, 4, 255])
    """
    if split not in EMBEDDED_STREET_SIZES:
        raise ValueError(f"make_street_scenes got split={split!r}; use 'train' or 'val'.")
    width, height = int(size[0]), int(size[1])
    generator = torch.Generator().manual_seed(derive_seed(seed, _STREAMS[split]))
    y = ((torch.arange(height, dtype=torch.float32) + 0.5) / height)[:, None].expand(height, width)
    x = ((torch.arange(width, dtype=torch.float32) + 0.5) / height)[None, :].expand(height, width)
    aspect = width / height
    images, labels = [], []
    for _ in range(EMBEDDED_STREET_SIZES[split]):
        background = _BACKGROUND_PHOTOS[int(torch.randint(len(_BACKGROUND_PHOTOS), (), generator=generator))]
        image = _rect_texture(background, height, width, generator, 0.4, 1.0)
        label = torch.zeros(height, width, dtype=torch.long)
        for _ in range(int(torch.randint(3, 6, (), generator=generator))):
            shape = int(torch.randint(1, len(SHAPE_CLASSES), (), generator=generator))
            radius = 0.13 + 0.11 * float(torch.rand((), generator=generator))
            cx = 0.12 + (aspect - 0.24) * float(torch.rand((), generator=generator))
            cy = 0.12 + 0.63 * float(torch.rand((), generator=generator))
            angle = 2 * math.pi * float(torch.rand((), generator=generator))
            pixels = _shape_mask(shape, x - cx, y - cy, radius, angle)
            texture = _rect_texture(_SHAPE_PHOTOS[shape - 1], height, width, generator, 0.15, 0.5)
            image = torch.where(pixels, texture, image)
            label[pixels] = shape
        band = y >= _BAND_START
        image = torch.where(band, 0.5 * _rect_texture(_BAND_PHOTO, height, width, generator, 0.2, 0.4), image)
        label[band] = IGNORE_INDEX
        images.append(image.mul(255).round().clamp(0, 255).to(torch.uint8))
        labels.append(label)
    return torch.stack(images), torch.stack(labels)
