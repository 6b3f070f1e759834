"""Image grids a task draws from one validation batch after each evaluation.

:meth:`afno_repro.tasks.base.PaperTask.write_grid` saves a grid beside the run's checkpoints
(``images/val_latest.png``) and logs it to W&B; this module draws the segmentation grid: image /
truth / prediction rows, classes coloured by :func:`palette`.
"""

from __future__ import annotations

import colorsys
from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.utils import make_grid

from afno_repro.tasks.segmentation_inference import resize_labels

__all__ = ["make_segmentation_grid", "palette", "segmentation_cells"]

# Grids of larger evaluation images (Cityscapes' 2048x1024) are shrunk to this width per image.
GRID_MAX_WIDTH = 512


def palette(num_classes: int) -> Tensor:
    """``(num_classes, 3)`` colours in ``[0, 1]``: black for class 0, then evenly spaced hues.

    Example
    -------
    >>> palette(3).shape, palette(3)[0].tolist()
    (torch.Size([3, 3]), [0.0, 0.0, 0.0])
    """
    colours = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb((0.618034 * k) % 1.0, 0.75, 0.95) for k in range(1, num_classes)]
    return torch.tensor(colours[:num_classes], dtype=torch.float32)


def make_segmentation_grid(image: Tensor, truth: Tensor, prediction: Tensor, num_classes: int,
                           ignore_index: int = 255, padding: int = 2) -> Tensor:
    """Rows image / truth / prediction (classes coloured by :func:`palette`, ignored pixels white).

    Example
    -------
    >>> make_segmentation_grid(torch.rand(2, 3, 8, 6), torch.zeros(2, 8, 6).long(), torch.ones(2, 8, 6).long(), 3).shape
    torch.Size([3, 32, 18])
    """
    colours = torch.cat([palette(num_classes), torch.ones(1, 3)])

    def colour(labels: Tensor) -> Tensor:
        labels = torch.where(labels == ignore_index, num_classes, labels.clamp(0, num_classes)).cpu()
        return colours[labels].permute(0, 3, 1, 2)

    cells = torch.cat([image.detach().float().cpu().clamp(0, 1), colour(truth), colour(prediction)])
    return make_grid(cells, nrow=image.shape[0], padding=padding, pad_value=1.0)


def segmentation_cells(image: Tensor, mask: Tensor, prediction: Tensor,
                       denormalize: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The cells of :func:`make_segmentation_grid`, on the CPU: images un-normalised by ``denormalize``
    (the data module's, when it normalises) and resized to the label size; cells wider than
    :data:`GRID_MAX_WIDTH` pixels shrunk to it.

    Example
    -------
    >>> image, mask, prediction = segmentation_cells(torch.rand(1, 3, 8, 8), torch.zeros(1, 512, 1024).long(),
    ...                                              torch.zeros(1, 512, 1024).long())
    >>> tuple(image.shape), tuple(mask.shape), tuple(prediction.shape)
    ((1, 3, 256, 512), (1, 256, 512), (1, 256, 512))
    """
    image = image.detach().float().cpu()
    if denormalize is not None:
        image = denormalize(image)
    size = tuple(mask.shape[-2:])
    if size[1] > GRID_MAX_WIDTH:
        size = (max(1, round(size[0] * GRID_MAX_WIDTH / size[1])), GRID_MAX_WIDTH)
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    return image, resize_labels(mask.cpu(), size), resize_labels(prediction.cpu(), size)
