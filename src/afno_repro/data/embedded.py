"""The embedded default dataset: colour photographs bundled inside scikit-image.

They need no download and no network, so every pipeline (inpainting demos, smoke runs, tests)
has real natural-image statistics to work on out of the box. Only the RGB photographs that
``skimage.data`` ships in its wheel are used; grayscale images, synthetic images (``logo``,
``colorwheel``) and the images that need the optional ``pooch`` download are left out, and so is
``retina`` (mostly a black border around the fundus disc).

The split is fixed by photograph, so no scene of one split is seen in another:

- train: astronaut, motorcycle_left, motorcycle_right (the stereo pair of one scene, so both
  sides stay in train), hubble_deep_field, immunohistochemistry;
- selection: rocket, held out of training to pick checkpoints on (the inpainting DataModule's
  ``selection="heldout"``; with ``selection="val"`` it trains on it, pass ``photos``);
- val: chelsea (the cat), coffee.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from skimage import data as skimage_data
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from afno_repro.data.masks import derive_seed
from afno_repro.data.registry import register_dataset

__all__ = ["SkimagePhotos", "PHOTO_SPLITS", "load_photo"]

PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "immunohistochemistry"),
    "selection": ("rocket",),
    "val": ("chelsea", "coffee"),
}


@cache
def load_photo(name: str) -> torch.Tensor:
    """The bundled photograph ``name`` as a ``(3, H, W)`` uint8 tensor (read once, then cached)."""
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage_data.stereo_motorcycle()
        image = left if name == "motorcycle_left" else right
    else:
        image = getattr(skimage_data, name)()
    return torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).contiguous()


@register_dataset("images", "skimage")
class SkimagePhotos(Dataset):
    """Square crops of the photographs bundled in scikit-image (see the module docstring).

    Training items are random crops: a square whose side is a uniform fraction
    ``min_scale ... 1`` of the photograph's short side, at a uniform position, flipped
    horizontally with probability 1/2, resized (antialiased) to ``image_size``.
    ``dataset.item(i, generator)`` draws them from ``generator`` (the inpainting DataModule gives
    each sample its own), ``dataset[i]`` from torch's global generator. Evaluation items
    (``"selection"`` and ``"val"``) are a fixed set of such crops: item ``k`` comes from
    photograph ``k % n_photos`` with a generator seeded by ``(seed, k)``, so the same ``seed``
    always gives the same images.

    Parameters
    ----------
    split: ``"train"``, ``"selection"`` or ``"val"`` (:data:`PHOTO_SPLITS`).
    image_size: side ``S`` of the square output crops in pixels.
    samples_per_epoch: dataset length (crops per epoch for train, fixed crops otherwise); the
        photographs are cycled through in turn, so each gets the same share.
    seed: seeds the fixed evaluation crops; unused for training crops.
    min_scale: smallest crop side as a fraction of the photograph's short side.
    photos: names of the photographs to use instead of the split's own (e.g. train plus
        selection, to train on every non-validation photograph).

    Shape contract
    --------------
    ``dataset[i]`` and ``dataset.item(i, generator)`` are float32 ``(3, S, S)`` tensors in ``[0, 1]``.

    Example
    -------
    >>> from afno_repro.data.embedded import SkimagePhotos
    >>> val = SkimagePhotos("val", image_size=32, samples_per_epoch=4)
    >>> image = val[0]
    >>> image.shape, bool(image.min() >= 0) and bool(image.max() <= 1)
    (torch.Size([3, 32, 32]), True)
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        min_scale: float = 0.35,
        photos: Sequence[str] | None = None,
    ) -> None:
        if split not in PHOTO_SPLITS:
            raise ValueError(f"SkimagePhotos got split={split!r}; valid splits are {', '.join(map(repr, PHOTO_SPLITS))}. Pass one of those.")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"SkimagePhotos got image_size={image_size!r}; it must be a positive int (the crop side in pixels), e.g. 64.")
        if not 0 < min_scale <= 1:
            raise ValueError(f"SkimagePhotos got min_scale={min_scale!r}; it must be in (0, 1], the smallest crop side as a fraction of a photograph's short side.")
        if samples_per_epoch is None:
            samples_per_epoch = 1024 if split == "train" else 64
        if samples_per_epoch < 1:
            raise ValueError(f"SkimagePhotos got samples_per_epoch={samples_per_epoch!r}; it must be >= 1. Raise it (train default 1024, otherwise 64).")
        known = {name for names in PHOTO_SPLITS.values() for name in names}
        if photos is not None and (not photos or not set(photos) <= known):
            raise ValueError(f"SkimagePhotos got photos={photos!r}; give one or more of {', '.join(sorted(known))}.")
        self.split = split
        self.image_size = image_size
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = seed
        self.min_scale = min_scale
        self.photo_names = tuple(photos) if photos is not None else PHOTO_SPLITS[split]
        self.photos = [load_photo(name) for name in self.photo_names]

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _crop(self, photo: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        height, width = photo.shape[-2:]
        short = min(height, width)
        scale = self.min_scale + (1 - self.min_scale) * float(torch.rand((), generator=generator))
        side = max(1, round(scale * short))
        top = int(torch.randint(0, height - side + 1, (), generator=generator))
        left = int(torch.randint(0, width - side + 1, (), generator=generator))
        crop = TF.resized_crop(photo, top, left, side, side, [self.image_size, self.image_size], antialias=True)
        if float(torch.rand((), generator=generator)) < 0.5:
            crop = TF.horizontal_flip(crop)
        return crop.float().div_(255)

    def item(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Item ``index``; a training crop is drawn from ``generator`` (``None``: the global one)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        photo = self.photos[index % len(self.photos)]
        if self.split == "train":
            return self._crop(photo, generator)
        return self._crop(photo, torch.Generator().manual_seed(derive_seed(self.seed, index)))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.item(index)
