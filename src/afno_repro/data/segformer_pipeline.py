"""SegFormer's Cityscapes data pipeline (mmseg's ``cityscapes_1024x1024`` config), as a dataset.

:class:`CityscapesItems` serves ``(image, train ids)`` pairs through the training pipeline
(ratio-jittered resize, ``cat_max_ratio`` crop, flip, photometric distortion, normalisation,
padding; every draw from the item's generator, :mod:`afno_repro.data.sampling`) or the
evaluation one (resize to fit ``base_size``, normalise, the label at full resolution). The steps
and where they follow mmseg are listed in :mod:`afno_repro.data.cityscapes`.

Example
-------
>>> rescale_size(1024, 2048, (1024, 512))
(512, 1024)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from afno_repro.data.errors import DataError
from afno_repro.data.sampling import coin, item_generator, uniform
from afno_repro.data.base import IGNORE_INDEX

__all__ = ["CityscapesItems", "evaluation_collate", "photometric_distortion", "rescale_size"]


def rescale_size(height: int, width: int, scale: tuple[float, float]) -> tuple[int, int]:
    """mmcv ``imrescale``: the largest size keeping aspect inside ``scale = (long, short)`` edges."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def photometric_distortion(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """mmseg's ``PhotoMetricDistortion`` on a float ``(3, H, W)`` image in ``[0, 255]`` (module docstring)."""
    if coin(generator):
        image = (image + uniform(generator, -32, 32)).clamp(0, 255)

    def contrast(image: torch.Tensor) -> torch.Tensor:
        return (image * uniform(generator, 0.5, 1.5)).clamp(0, 255) if coin(generator) else image

    contrast_first = coin(generator)
    if contrast_first:
        image = contrast(image)
    if coin(generator):
        image = TF.adjust_saturation(image * (1 / 255), uniform(generator, 0.5, 1.5)).mul(255).clamp(0, 255)
    if coin(generator):
        shift = int(torch.randint(-18, 18, (), generator=generator))
        image = TF.adjust_hue(image * (1 / 255), shift / 180).mul(255).clamp(0, 255)
    if not contrast_first:
        image = contrast(image)
    return image


class CityscapesItems(Dataset):
    """Cityscapes-layout pairs served with SegFormer's training or evaluation pipeline (module docstring).

    Keys are indices (evaluation pipeline: resize to fit ``base_size``, normalise; the label at
    full resolution; ``fold`` 0) or the ``(index, image_seed, mask_seed)`` tuples of the training
    sampler (training pipeline drawn from a generator seeded by ``image_seed``; ``fold`` -1).

    Parameters
    ----------
    pairs: ``(images uint8 (N, 3, H, W), train ids (N, H, W))`` held in memory (the embedded
        set), or a list of items for ``read_pair`` (the release's ``(image file, label file)``).
    read_pair: reads one listed item as uint8 ``(3, H, W)`` and int64 ``(H, W)``.
    options: the data module's pipeline options (``base_size``, ``crop_size``, ...).
    """

    def __init__(self, pairs: list | tuple[torch.Tensor, torch.Tensor], *, base_size: tuple[int, int],
                 crop_size: int, ratio_range: tuple[float, float], cat_max_ratio: float, hflip: float,
                 photometric_distortion: bool, mean: torch.Tensor, std: torch.Tensor,
                 read_pair: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.pairs = pairs
        self.read_pair = read_pair
        self.base_size = base_size
        self.crop_size = crop_size
        self.ratio_range = ratio_range
        self.cat_max_ratio = cat_max_ratio
        self.hflip = hflip
        self.photometric_distortion = photometric_distortion
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.pairs) if isinstance(self.pairs, list) else len(self.pairs[0])

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` as read: uint8 ``(3, H, W)`` and int64 train ids ``(H, W)``."""
        if isinstance(self.pairs, list):
            return self.read_pair(*self.pairs[index])
        return self.pairs[0][index], self.pairs[1][index]

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        # Multiplications only: torch may divide by a scalar through its reciprocal in vectorised
        # code and exactly in the scalar tail, so a division would depend on the thread count
        # (workers run single-threaded) and break "same batches for any num_workers".
        return image * (1 / (255 * self.std)) - self.mean * (1 / self.std)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, image_seed, _ = key
            image, label = self.train_pair(index, item_generator(image_seed))
            return {"image": image, "mask": label, "index": index, "fold": -1}
        image, label = self.load(key)
        size = rescale_size(*image.shape[-2:], self.base_size)
        if tuple(image.shape[-2:]) != size:
            image = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=False)
        return {"image": self._normalize(image.float()), "mask": label, "index": key, "fold": 0}

    def crop_box(self, label: torch.Tensor, generator: torch.Generator) -> tuple[int, int, int, int]:
        """mmseg's ``RandomCrop`` box ``(top, left, height, width)`` with its ``cat_max_ratio`` retries."""
        height, width = label.shape
        crop_h, crop_w = min(self.crop_size, height), min(self.crop_size, width)

        def draw() -> tuple[int, int, int, int]:
            top = int(torch.randint(height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(width - crop_w + 1, (), generator=generator))
            return top, left, crop_h, crop_w

        box = draw()
        if self.cat_max_ratio < 1:
            for _ in range(10):
                top, left, h, w = box
                crop = label[top : top + h, left : left + w]
                counts = torch.bincount(crop[crop != IGNORE_INDEX].flatten())
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = draw()
        return box

    def train_pair(self, index: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Training item ``index`` through the training pipeline, every draw from ``generator``:
        float32 ``(3, crop, crop)`` normalised and int64 ``(crop, crop)``."""
        image, label = self.load(index)
        ratio = uniform(generator, *self.ratio_range)
        size = rescale_size(*image.shape[-2:], (self.base_size[0] * ratio, self.base_size[1] * ratio))
        # On uint8, as cv2 resizes mmseg's uint8 images: torch's float bilinear kernel rounds
        # differently with the thread count (workers run single-threaded), its uint8 kernel does not.
        image = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=False).float()
        label = TF.resize(label[None], list(size), interpolation=InterpolationMode.NEAREST)[0]
        top, left, h, w = self.crop_box(label, generator)
        image, label = image[:, top : top + h, left : left + w], label[top : top + h, left : left + w]
        if float(torch.rand((), generator=generator)) < self.hflip:
            image, label = image.flip(-1), label.flip(-1)
        if self.photometric_distortion:
            image = photometric_distortion(image, generator)
        image = self._normalize(image)
        pad = (0, self.crop_size - w, 0, self.crop_size - h)
        if pad[1] or pad[3]:
            image = torch.nn.functional.pad(image, pad, value=0.0)
            label = torch.nn.functional.pad(label, pad, value=IGNORE_INDEX)
        return image.contiguous(), label.contiguous()


def evaluation_collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    sizes = {(tuple(item["image"].shape), tuple(item["mask"].shape)) for item in items}
    if len(sizes) > 1:
        raise DataError(
            f"an evaluation batch mixes image/label sizes {sorted(sizes)} (indices {[item['index'] for item in items]}); "
            "evaluation keeps each label at full resolution, so one batch needs one size. Set data.val_batch_size=1 "
            "for a dataset whose images differ in size (Cityscapes' are all 2048x1024)."
        )
    return default_collate(items)
