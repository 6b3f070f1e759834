"""How a segmentation model is run over an evaluation image: logits and labels at the label's size.

The model's logits, at its own output resolution (1/4 of the input for SegFormer, the input's for
the ViT head), are resized bilinearly (``align_corners=False``, as mmseg) to the label's size
``H' x W'`` (:func:`resize_logits`) before the loss and the argmax, in training too. Evaluation
images may be larger than the training crops; :func:`infer_logits` runs one of three modes
(mmseg keeps these in its segmentor, ``whole_inference`` / ``slide_inference``):

- ``"whole"`` (the few-shot protocol): one forward pass of the whole image;
- ``"slide"`` (mmseg's ``slide_inference``, SegFormer's Cityscapes test; :func:`slide_logits`):
  windows of ``crop_size`` every ``stride`` pixels, the last row and column of windows moved back
  inside the image; the logits of each window (resized to the window) are summed and divided by
  the number of windows covering each pixel. An image smaller than the crop (or a window cut by it)
  is padded with 0 at the bottom and right to the crop size, the value padding takes in training,
  so the model always sees crops of the trained size; the padded logits are dropped;
- ``"resize"`` (the paper's "evaluate at 1024x1024" read literally): the image resized bilinearly
  to ``crop_size x crop_size``, one forward pass, logits resized to the label's size.

Labels are resized by nearest neighbour (:func:`resize_labels`): the pixel prior's map to each
evaluation label, and the cells of the image grids.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from afno_repro.data.segmentation import centre_indices
from afno_repro.tasks.base import check_choice

__all__ = ["INFERENCES", "describe_inference", "infer_logits", "resize_labels", "resize_logits", "slide_logits"]

INFERENCES = ("whole", "slide", "resize")


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def resize_logits(logits: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """``(B, C, h, w)`` logits resized bilinearly (``align_corners=False``) to ``size = (H, W)``;
    returned as they are when already that size.

    Example
    -------
    >>> resize_logits(torch.zeros(2, 3, 4, 8), (16, 32)).shape
    torch.Size([2, 3, 16, 32])
    """
    size = tuple(int(side) for side in size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """``(..., H, W)`` integer labels resized to ``size`` by nearest neighbour at pixel centres, the same
    pixels as the data loaders' :func:`afno_repro.data.segmentation.resize_mask` (no float round trip, any
    integer dtype, on the labels' device).

    Example
    -------
    >>> resize_labels(torch.tensor([[0, 1], [2, 3]]), (2, 4)).tolist()
    [[0, 0, 1, 1], [2, 2, 3, 3]]
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    rows, cols = (torch.from_numpy(centre_indices(int(source), int(target))).to(labels.device)
                  for source, target in zip(labels.shape[-2:], size))
    return labels[..., rows[:, None], cols]


def slide_logits(model: Callable[[Tensor], Tensor], image: Tensor, crop_size: int | tuple[int, int],
                 stride: int | tuple[int, int]) -> Tensor:
    """mmseg's sliding-window inference: ``(B, 3, H, W)`` images -> ``(B, C, H, W)`` averaged logits.

    Windows of ``crop_size`` (``(h, w)`` or a side) start every ``stride`` pixels; windows reaching
    past the border are moved back inside it (mmseg: ``y1 = max(y2 - crop, 0)``), so the windows
    are ``max(H - crop + stride - 1, 0) // stride + 1`` per column and likewise per row. A window
    smaller than the crop (image smaller than it) is padded with 0 bottom and right to the crop,
    and its padded logits are dropped. Each window's logits are resized to the window
    (:func:`resize_logits`); each pixel gets the mean over the windows covering it.

    Example
    -------
    >>> conv = torch.nn.Conv2d(3, 4, 1)
    >>> image = torch.rand(1, 3, 10, 20)
    >>> torch.allclose(slide_logits(conv, image, 8, 6), conv(image), atol=1e-6)
    True
    """
    (crop_h, crop_w), (stride_h, stride_w) = _pair(crop_size), _pair(stride)
    height, width = image.shape[-2:]
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    total: Tensor | None = None
    count = image.new_zeros(1, 1, height, width, dtype=torch.float32)
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride_h + crop_h, height), min(col * stride_w + crop_w, width)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            window = image[:, :, y1:y2, x1:x2]
            h, w = window.shape[-2:]
            if (h, w) != (crop_h, crop_w):
                window = F.pad(window, (0, crop_w - w, 0, crop_h - h))
            logits = resize_logits(model(window).float(), (crop_h, crop_w))[:, :, :h, :w]
            if total is None:
                total = logits.new_zeros(image.shape[0], logits.shape[1], height, width)
            total[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def infer_logits(model: Callable[[Tensor], Tensor], image: Tensor, size: tuple[int, int] | torch.Size,
                 mode: str = "whole", crop_size: int | tuple[int, int] | None = None,
                 stride: int | tuple[int, int] | None = None) -> Tensor:
    """``(B, C, H', W')`` logits of ``image`` at the label size ``size = (H', W')`` by ``mode``:
    ``"whole"``, ``"slide"`` (windows of ``crop_size`` every ``stride``) or ``"resize"`` (the image
    resized to ``crop_size``); see the module docstring.

    Example
    -------
    >>> conv = torch.nn.Conv2d(3, 4, 1)
    >>> infer_logits(conv, torch.rand(1, 3, 16, 32), (32, 64), "resize", crop_size=8).shape
    torch.Size([1, 4, 32, 64])
    """
    check_choice("mode", mode, INFERENCES, "infer_logits")
    if mode == "slide":
        logits = slide_logits(model, image, crop_size, stride)
    elif mode == "resize":
        logits = model(F.interpolate(image, size=_pair(crop_size), mode="bilinear", align_corners=False))
    else:
        logits = model(image)
    return resize_logits(logits, size)


def describe_inference(mode: str, crop_size: int | list[int] | None, stride: int | list[int] | None) -> str:
    """``mode`` in words with its crop and stride, as a run's ``metrics.json`` records its reading.

    Example
    -------
    >>> describe_inference("resize", 1024, None)
    'image resized to 1024x1024, one forward pass, logits resized to the label'
    """
    return {
        "whole": "whole image, one forward pass",
        "slide": f"sliding window (mmseg slide_inference): crop {crop_size}, stride {stride}, overlapping logits averaged",
        "resize": f"image resized to {crop_size}x{crop_size}, one forward pass, logits resized to the label",
    }[mode]
