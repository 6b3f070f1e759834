"""Small synthetic datasets written in the real on-disk layouts of the paper's datasets, at their real image sizes.

The paper-scale preflight (:mod:`afno_repro.preflight`) runs every row through the real loaders when the
real datasets are not at hand: these writers give those loaders files in the layouts they read (the
releases' own folder names and file suffixes) with random content, so the cost of decoding, cropping and
training at the paper's resolution is real and only the pixels are not. The layouts:

- ImageNet-1k (``torchvision.datasets.ImageFolder``'s): ``train/<wnid>/<wnid>_<i>.JPEG`` and
  ``val/<wnid>/ILSVRC2012_val_<i>.JPEG``, 500x375 JPEGs (ImageNet's most common size);
- DatasetGAN's release: ``training_data/<category>_processed/image_<i>.jpg`` with ``image_mask<i>.npy``
  label maps, and ``testing_data/<category>_<classes>_class/`` holding images and ``.npy`` label maps
  that pair by sorted position; 512x512;
- Cityscapes (torchvision's / the Cityscapes scripts'): ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``
  with ``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``; 2048x1024.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from afno_repro.releases import DATASETGAN, DATASETGAN_IMAGE_SIZE

__all__ = ["DATASETGAN_CATEGORIES", "write_cityscapes", "write_datasetgan", "write_imagenet"]

# DatasetGAN's categories: test folder, class count and the number of annotated training images of its release.
DATASETGAN_CATEGORIES = DATASETGAN
_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
# Cityscapes labelIds drawn for the synthetic label maps: road, sidewalk, building, vegetation, sky, car, and
# unlabeled 0 (ignored in training and scoring).
_CITYSCAPES_IDS = np.array([7, 8, 11, 21, 23, 26, 0], np.uint8)


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _blocks(rng: np.random.Generator, values: np.ndarray, height: int, width: int, block: int) -> np.ndarray:
    """A label map constant on ``block x block`` squares, each drawn from ``values``."""
    ids = rng.choice(values, (-(-height // block), -(-width // block)))
    return np.kron(ids, np.ones((block, block), ids.dtype))[:height, :width]


def write_imagenet(root: Path, classes: int = 2, train_per_class: int = 20, val_per_class: int = 4,
                   size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """``classes`` WordNet-id folders under ``train/`` and ``val/`` of ``size`` (W, H) random-colour JPEGs (20 training
    images per class: Table 6's 10% subset keeps 2, one to train on and one held out for selection)."""
    if not 1 <= classes <= len(_WNIDS):
        raise ValueError(f"classes={classes}: write 1 to {len(_WNIDS)} class folders")
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for wnid in _WNIDS[:classes]:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{wnid[1:]}{i:03d}.JPEG"
                Image.fromarray(_noise(rng, size[1], size[0])).save(folder / name, quality=90)
    return root


def write_datasetgan(root: Path, categories: tuple[str, ...] = ("face", "car", "cat"), num_test: int = 10,
                     size: int | None = None, seed: int = 0) -> Path:
    """DatasetGAN's release for ``categories``: its number of training images each, ``num_test`` test images,
    ``size`` x ``size`` (``None``: each category's own size, :data:`afno_repro.releases.DATASETGAN_IMAGE_SIZE`)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for category in categories:
        test_folder, classes, num_train = DATASETGAN_CATEGORIES[category]
        width, height = (size, size) if size else DATASETGAN_IMAGE_SIZE[category]
        train = root / "training_data" / f"{category}_processed"
        test = root / "testing_data" / test_folder
        train.mkdir(parents=True, exist_ok=True)
        test.mkdir(parents=True, exist_ok=True)
        values = np.arange(classes, dtype=np.uint8)
        for i in range(num_train):
            Image.fromarray(_noise(rng, height, width)).save(train / f"image_{i}.jpg", quality=90)
            np.save(train / f"image_mask{i}.npy", _blocks(rng, values, height, width, height // 8))
        for k in range(num_test):
            Image.fromarray(_noise(rng, height, width)).save(test / f"image_{k:03d}.png")
            np.save(test / f"image_{k:03d}.npy", _blocks(rng, values, height, width, height // 8))
    return root


def write_cityscapes(root: Path, per_city: int = 1, size: tuple[int, int] = (2048, 1024), seed: int = 0) -> Path:
    """Two cities per split (train, val), ``per_city`` image/label pairs each, ``size`` (W, H)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    width, height = size
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt", "lindau"))):
        for city in cities:
            images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            for k in range(per_city):
                stem = f"{city}_{k:06d}_000019"
                Image.fromarray(_noise(rng, height, width)).save(images / f"{stem}_leftImg8bit.png", compress_level=1)
                label = _blocks(rng, _CITYSCAPES_IDS, height, width, 64)
                Image.fromarray(label).save(labels / f"{stem}_gtFine_labelIds.png")
    return root
