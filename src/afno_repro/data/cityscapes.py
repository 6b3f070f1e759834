"""Cityscapes semantic segmentation (paper Section 5.3, Table 4, appendix A.3), SegFormer's recipe.

Two sources, both served by :class:`CityscapesDataModule`:

- ``"cityscapes"``: the official release in torchvision's ``Cityscapes`` layout under ``root``
  (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` extracted side by side)::

      leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png
      gtFine/{train,val,test}/<city>/<stem>_gtFine_labelIds.png

  2975 train / 500 val images of 2048x1024. The label maps hold Cityscapes' ``labelIds``
  (0-33); they are mapped to the 19 evaluated ``trainIds`` through torchvision's class table
  (``torchvision.datasets.Cityscapes.classes``, :data:`LABEL_TO_TRAIN_ID`): road 7 -> 0,
  sidewalk 8 -> 1, ..., every id whose train id is 255 or -1 (unlabeled, ego vehicle, parking,
  licence plate, ...) -> 255, not scored. An id outside the table is an error.
- ``"embedded"``: no download. Street-like scenes at 2:1 aspect built from the photographs that
  ship with scikit-image (:func:`afno_repro.data.shapes.make_street_scenes`): a photograph crop as background
  (class 0), 3 to 5 textured shapes composited on it (disk, square, triangle, ring: classes 1-4,
  each with its own photograph's texture), and a bottom band of every image (the bottom 1/8, like
  Cityscapes' ego vehicle) labelled 255. 16 training and 8 validation images drawn at
  ``base_size`` from fixed seeds, so the same at every run.

Training pipeline (mmseg's Cityscapes config for SegFormer, in its order;
:mod:`afno_repro.data.segformer_pipeline`), each random draw from a ``torch.Generator`` seeded per
item by the training sampler (:mod:`afno_repro.data.sampling`), so batches are the same for any
``num_workers`` and under resumption:

1. resize keeping aspect to fit ``base_size * r``, ``r ~ U(ratio_range)`` (mmcv ``imrescale``;
   uint8 images bilinear, labels nearest, as cv2 does it: no antialiasing);
2. random crop of ``crop_size`` (smaller when the image is), redrawn up to 10 times until no
   class covers ``cat_max_ratio`` or more of the crop's labelled pixels and at least two classes
   are present (mmseg's ``RandomCrop``; the last draw is kept);
3. horizontal flip with probability ``hflip``;
4. photometric distortion (mmseg's ``PhotoMetricDistortion``, each step applied with
   probability 1/2): brightness ``+U(-32, 32)``; contrast ``x U(0.5, 1.5)`` (before or after the
   next two, by a coin); saturation ``U(0.5, 1.5)`` (torchvision's ``adjust_saturation``, a
   blend with the grey image, where mmcv scales the HSV saturation); hue ``+randint(-18, 18)``
   of OpenCV's 180 hue steps (torchvision's ``adjust_hue``); clipped to 0-255 after each step;
5. ``(x / 255 - mean) / std`` with ImageNet's mean and std (``normalize="imagenet"``);
6. padding bottom and right to ``crop_size`` with image 0 (after normalising, as mmseg) and
   label 255.

Evaluation (``val`` split, what :meth:`val_dataloader` and :meth:`test_dataloader` serve): the
image resized keeping aspect to fit ``base_size`` (2048x1024, a no-op for Cityscapes) and
normalised; the label at its full resolution. The task resizes its logits to the label.

Batches are dicts: ``"image"`` float32 ``(B, 3, h, w)`` normalised; ``"mask"`` int64
``(B, H, W)`` train ids ``0 ... num_classes - 1`` or 255; ``"index"`` int64 ``(B,)``; ``"fold"``
int64 ``(B,)``: 0 for every evaluation image (one fold: the segmentation task's fold machinery
sees a single fold), -1 for training items.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import Cityscapes

from afno_repro.data.base import IGNORE_INDEX, DataModuleBase, evenly_spaced
from afno_repro.data.errors import DataError
from afno_repro.data.files import listing, load_image_uint8, require_distinct, require_root
from afno_repro.data.registry import get_dataset_class, list_datasets, register_dataset
from afno_repro.data.segformer_pipeline import CityscapesItems, evaluation_collate
from afno_repro.data.shapes import SHAPE_CLASSES, make_street_scenes

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_SELECTIONS",
    "CityscapesDataModule",
    "CityscapesItems",
    "CityscapesRelease",
    "EmbeddedStreets",
    "LABEL_TO_TRAIN_ID",
    "cityscapes_files",
    "load_cityscapes_pair",
    "to_train_ids",
]

CITYSCAPES_SELECTIONS = ("max_over_run", "last")
NORMALIZATIONS = ("imagenet", "none")
SPLITS = ("train", "val", "test")

_LAYOUT = ("leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png and "
           "gtFine/{train,val,test}/<city>/<stem>_gtFine_labelIds.png")
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


def _train_id_table() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    names: dict[int, str] = {}
    for entry in Cityscapes.classes:
        if not 0 <= entry.id < 256:  # licence plate has id -1: it never occurs in labelIds files
            continue
        train_id = IGNORE_INDEX if entry.train_id in (-1, 255) else entry.train_id
        lookup[entry.id] = train_id
        known[entry.id] = True
        if train_id != IGNORE_INDEX:
            names[train_id] = entry.name
    return lookup, known, tuple(names[k] for k in range(len(names)))


#: ``LABEL_TO_TRAIN_ID[label_id]``: the train id (0-18) or 255, a 256-entry uint8 lookup table.
LABEL_TO_TRAIN_ID, _KNOWN_LABEL_IDS, CITYSCAPES_CLASSES = _train_id_table()


def to_train_ids(labels: np.ndarray, file: str | os.PathLike | None = None) -> np.ndarray:
    """Cityscapes ``labelIds`` ``(H, W)`` -> train ids int64 (0-18, 255 not scored).

    Raises :class:`DataError` naming ``file`` and the id when a label id is not in
    torchvision's class table.

    Example
    -------
    >>> to_train_ids(np.array([[7, 8], [9, 0]])).tolist()
    [[0, 1], [255, 255]]
    >>> CITYSCAPES_CLASSES[:3], len(CITYSCAPES_CLASSES)
    (('road', 'sidewalk', 'building'), 19)
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255 or not _KNOWN_LABEL_IDS[labels.clip(0, 255)].all()):
        ids = np.unique(labels)
        bad = ids[(ids < 0) | (ids > 255) | ~_KNOWN_LABEL_IDS[ids.clip(0, 255)]]
        where = f"label map {str(file)!r}" if file is not None else "the label map"
        raise DataError(
            f"{where} has label id {int(bad[0])}, which is not a Cityscapes labelId (0-33, "
            "torchvision.datasets.Cityscapes.classes). Use the *_gtFine_labelIds.png files (not trainIds, "
            "instanceIds or color), or restore the file from gtFine_trainvaltest.zip."
        )
    return LABEL_TO_TRAIN_ID[labels].astype(np.int64)


def cityscapes_files(root: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """Sorted ``(image, labelIds)`` file pairs of Cityscapes' ``split`` (``train``, ``val``, ``test``).

    Pairs are sorted by city, then file name. Only the listing is checked here (folders, files
    without their label); sizes and label ids are checked when a pair is read
    (:func:`load_cityscapes_pair`).

    Raises :class:`DataError` naming the folder or file when ``root`` is missing or not the
    layout, the split folder is missing, a city folder has no images, an image has no label
    file, or one image or label file is listed twice through a link.
    """
    if split not in SPLITS:
        raise ValueError(f"cityscapes_files got split={split!r}; use one of {', '.join(SPLITS)}.")
    root = require_root(root, "Cityscapes", f"{_LAYOUT} (leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip extracted there)")
    images_root, labels_root = root / "leftImg8bit", root / "gtFine"
    if not images_root.is_dir() or not labels_root.is_dir():
        missing = " and ".join(name for name, folder in (("leftImg8bit/", images_root), ("gtFine/", labels_root))
                               if not folder.is_dir())
        raise DataError(f"{str(root)!r} is not a Cityscapes folder: {missing} missing; {listing(root)}. Expected {_LAYOUT}. "
                        "Set data.root to the folder where leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
                        "were extracted.")
    images_split, labels_split = images_root / split, labels_root / split
    for folder in (images_split, labels_split):
        if not folder.is_dir():
            raise DataError(f"the Cityscapes {split} folder {str(folder)!r} is missing; {listing(folder.parent)}. "
                            f"Re-extract the {folder.parent.name} archive under data.root (expected {_LAYOUT}).")
    cities = sorted(folder for folder in images_split.iterdir() if folder.is_dir())
    if not cities:
        raise DataError(f"the Cityscapes {split} folder {str(images_split)!r} has no city folders; "
                        f"{listing(images_split)}. Re-extract leftImg8bit_trainvaltest.zip (expected {_LAYOUT}).")
    pairs = []
    for city in cities:
        images = sorted(file for file in city.iterdir() if file.name.endswith(_IMAGE_SUFFIX))
        if not images:
            raise DataError(f"the city folder {str(city)!r} has no *{_IMAGE_SUFFIX} images; {listing(city)}. Restore it "
                            "from leftImg8bit_trainvaltest.zip or delete the folder.")
        for image in images:
            label = labels_split / city.name / (image.name[: -len(_IMAGE_SUFFIX)] + _LABEL_SUFFIX)
            if not label.is_file():
                raise DataError(f"image {str(image)!r} has no label map: {str(label)!r} is missing. Restore it from "
                                "gtFine_trainvaltest.zip, or delete the image.")
            pairs.append((image, label))
    # A city folder linked in twice (or a linked image) would be trained on twice as often.
    require_distinct((image for image, _ in pairs), f"the Cityscapes {split} folder {str(images_split)!r}")
    require_distinct((label for _, label in pairs), f"the Cityscapes {split} folder {str(labels_split)!r}")
    return pairs


def _load_label_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as label:
            label.load()
            array = np.asarray(label)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(f"label map {str(path)!r} cannot be read as a PNG image ({error}). It is corrupt or truncated; "
                        "restore it from gtFine_trainvaltest.zip.") from error
    if array.ndim != 2:
        raise DataError(f"label map {str(path)!r} has {array.shape[-1]} channels; a labelIds map is a single-channel "
                        "8-bit PNG. Use the *_gtFine_labelIds.png file, not *_gtFine_color.png.")
    return array


def load_cityscapes_pair(image_file: str | os.PathLike, label_file: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """One checked pair: the image as uint8 ``(3, H, W)`` and its train ids as int64 ``(H, W)``.

    Raises :class:`DataError` naming the file when the image or label map is unreadable, their
    sizes differ, or the label map holds an id outside Cityscapes' class table.
    """
    image = load_image_uint8(image_file, dataset="Cityscapes' leftImg8bit_trainvaltest.zip")
    labels = _load_label_png(Path(label_file))
    if tuple(image.shape[-2:]) != labels.shape:
        raise DataError(
            f"label map {str(label_file)!r} is {labels.shape[1]}x{labels.shape[0]} (width x height) but its image "
            f"{str(image_file)!r} is {image.shape[-1]}x{image.shape[-2]}; they must match pixel for pixel. Restore "
            "the pair from the release."
        )
    return image, torch.from_numpy(to_train_ids(labels, label_file))


@register_dataset("cityscapes", "cityscapes")
class CityscapesRelease:
    """The official release under ``root`` (module docstring): 19 classes, files read per item."""

    classes = CITYSCAPES_CLASSES
    labels = "labelIds -> 19 train ids by torchvision.datasets.Cityscapes.classes, other ids 255 (not scored)"
    label = "cityscapes"

    def __init__(self, root: str, base_size: tuple[int, int]) -> None:
        self.root = root

    def check(self) -> None:
        """The file pairs of both splits listed (a few thousand names, no image read)."""
        for split in ("train", "val"):
            cityscapes_files(self.root, split)

    def load(self, split: str) -> list[tuple[Path, Path]]:
        """The ``(image, labelIds)`` file pairs of ``split``, for :func:`load_cityscapes_pair`."""
        return cityscapes_files(self.root, split)


@register_dataset("cityscapes", "embedded")
class EmbeddedStreets:
    """Street-like scenes drawn at ``base_size`` (:func:`~afno_repro.data.shapes.make_street_scenes`): 5 classes."""

    classes = SHAPE_CLASSES
    labels = "embedded street scenes: 5 classes, bottom band 255"
    label = "embedded_streets"

    def __init__(self, root: None, base_size: tuple[int, int]) -> None:
        self.base_size = base_size

    def check(self) -> None:
        """Nothing on disk."""

    def load(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Uint8 images and int64 train ids of ``split``, held in memory."""
        return make_street_scenes(split, self.base_size)


class CityscapesDataModule(DataModuleBase):
    """Cityscapes (or its embedded stand-in) with SegFormer's pipeline (module docstring).

    Parameters
    ----------
    source: ``"cityscapes"`` (the release under ``root``) or ``"embedded"`` (no download).
    root: the folder holding ``leftImg8bit/`` and ``gtFine/``; cityscapes only.
    base_size: ``(W, H)`` images are resized to (keeping aspect) before the ratio jitter in
        training, and at evaluation (2048x1024).
    crop_size: side of the square training crops (1024; the paper "trains on random 1024x1024
        crops").
    image_size: the harness's name for the training size (FLOP count, smoke runs): ``None`` or
        equal to ``crop_size``.
    ratio_range: ``(low, high)`` of the resize ratio jitter (0.5-2.0).
    cat_max_ratio: crops are redrawn (up to 10 times) while one class covers this share or
        more of the labelled pixels; 1 turns it off.
    hflip: probability of a horizontal flip.
    photometric_distortion: mmseg's brightness / contrast / saturation / hue jitter.
    normalize: ``"imagenet"`` (mean/std, SegFormer) or ``"none"`` (images in ``[0, 1]``).
    num_classes: ``None`` or the source's count (19; embedded 5).
    batch_size, val_batch_size: training and evaluation batch sizes (``val_batch_size`` defaults
        to ``batch_size``).
    num_workers, pin_memory: data-loader options (batches do not depend on ``num_workers``).
    seed: seeds the training order and every augmentation draw.
    train_samples_per_epoch: training items per epoch; ``None`` = one pass over the split.
    val_samples: evaluate on this many evenly spaced val images; ``None`` = all.
    selection: ``"max_over_run"`` (the checkpoint of the best val mIoU, reported on val: the
        paper's few-shot reading, as the paper says nothing for Cityscapes) or ``"last"``
        (SegFormer: the final weights).
    num_folds: 1, the only value (the segmentation task's folds: one val split).

    Example
    -------
    >>> dm = CityscapesDataModule(source="embedded", base_size=(64, 32), crop_size=32, batch_size=2)
    >>> dm.num_classes, dm.class_names[1], dm.num_folds, dm.ignore_index
    (5, 'disk', 1, 255)
    >>> batch = next(iter(dm.train_dataloader()))
    >>> batch["image"].shape, batch["mask"].shape, batch["fold"].tolist()
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 32, 32]), [-1, -1])
    >>> batch = next(iter(dm.val_dataloader()))
    >>> batch["image"].shape, batch["mask"].shape, batch["fold"].tolist()
    (torch.Size([2, 3, 32, 64]), torch.Size([2, 32, 64]), [0, 0])
    """

    def __init__(
        self,
        source: str = "cityscapes",
        root: str | os.PathLike | None = None,
        base_size: Sequence[int] = (2048, 1024),
        crop_size: int = 1024,
        image_size: int | None = None,
        ratio_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        hflip: float = 0.5,
        photometric_distortion: bool = True,
        normalize: str = "imagenet",
        num_classes: int | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        train_samples_per_epoch: int | None = None,
        val_samples: int | None = None,
        selection: str = "max_over_run",
        num_folds: int = 1,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if num_folds != 1:
            raise ValueError(f"{name} got num_folds={num_folds!r}; Cityscapes selects and reports on its one val split, "
                             "so num_folds is 1 (the task reads it as ${{data.num_folds}}).")
        if source not in list_datasets("cityscapes"):
            raise ValueError(f"{name} got source={source!r}; use one of {', '.join(list_datasets('cityscapes'))} "
                             "('cityscapes': data.root = the release; 'embedded': no download).")
        if selection not in CITYSCAPES_SELECTIONS:
            raise ValueError(f"{name} got selection={selection!r}; use 'max_over_run' (the checkpoint of the best val mIoU) "
                             "or 'last' (SegFormer: the final weights).")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"{name} got normalize={normalize!r}; use 'imagenet' (SegFormer) or 'none'.")
        if source == "cityscapes" and root is None:
            raise ValueError(f"data.source='cityscapes' needs data.root, the folder holding {_LAYOUT}; set it, or use "
                             "data.source=embedded (no download).")
        if source == "embedded" and root is not None:
            raise ValueError("root applies to data.source='cityscapes' only, but data.source='embedded'; remove it.")
        base_size = tuple(int(side) for side in base_size)
        if len(base_size) != 2 or min(base_size) < 1:
            raise ValueError(f"{name} got base_size={list(base_size)}; it must be [W, H] in pixels, e.g. [2048, 1024].")
        for option, value in {"crop_size": crop_size, "batch_size": batch_size, "val_batch_size": val_batch_size,
                              "train_samples_per_epoch": train_samples_per_epoch, "val_samples": val_samples}.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} got {option}={value!r}; it must be an int >= 1 (or null for the default).")
        if image_size is not None and image_size != crop_size:
            raise ValueError(f"{name} got image_size={image_size} but crop_size={crop_size}: image_size names the training "
                             "crop side for the harness, so the two must agree. Set crop_size (the configs use "
                             "image_size: ${.crop_size}, or crop_size: ${.image_size} under debug=smoke).")
        ratio_range = tuple(float(r) for r in ratio_range)
        if len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"{name} got ratio_range={list(ratio_range)}; it must be [low, high] with 0 < low <= high, e.g. [0.5, 2.0].")
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"{name} got cat_max_ratio={cat_max_ratio!r}; it must be in (0, 1] (1 turns the check off; SegFormer 0.75).")
        if not 0 <= hflip <= 1:
            raise ValueError(f"{name} got hflip={hflip!r}; it is a probability in [0, 1] (SegFormer 0.5).")
        if num_workers < 0:
            raise ValueError(f"{name} got num_workers={num_workers!r}; it must be >= 0.")
        dataset = get_dataset_class(source, "cityscapes")(root=None if root is None else str(root), base_size=base_size)
        own = len(dataset.classes)
        if num_classes not in (None, own):
            raise ValueError(f"data.source={source!r} has {own} classes, but num_classes={num_classes!r}; remove num_classes or set it to {own}.")
        root = None if root is None else str(root)
        mean, std = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD) if normalize == "imagenet" else ((0.0,) * 3, (1.0,) * 3)
        self.keep_options(
            image_size=crop_size, cat_max_ratio=float(cat_max_ratio), hflip=float(hflip),
            photometric_distortion=bool(photometric_distortion), num_classes=own, class_names=list(dataset.classes),
            ignore_index=IGNORE_INDEX, num_folds=1, dataset=dataset,
            mean=torch.tensor(mean, dtype=torch.float32)[:, None, None], std=torch.tensor(std, dtype=torch.float32)[:, None, None],
        )
        self.val_set: Dataset | None = None

    # --- the DataModule contract -------------------------------------------------------------
    @property
    def validation_split(self) -> str:
        """The split :meth:`val_dataloader` serves: ``"val"``."""
        return "val"

    @property
    def reported_split(self) -> str:
        """What :meth:`test_dataloader` serves: ``"val"`` (Cityscapes' test labels are not public)."""
        used = self.val_samples if self.val_set is None else len(self.val_set)
        return "val" if self.val_samples is None or used != self.val_samples else f"val ({used} evenly spaced images)"

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised ``(..., 3, H, W)`` images back to ``[0, 1]`` (for image grids)."""
        return (image * self.std.to(image.device) + self.mean.to(image.device)).clamp(0, 1)

    def reading(self) -> dict[str, Any]:
        """The data choices a run records with its results (plain data)."""
        return {
            "source": self.source,
            "num_classes": self.num_classes,
            "labels": self.dataset.labels,
            "base_size": list(self.base_size),
            "crop_size": self.crop_size,
            "ratio_range": list(self.ratio_range),
            "cat_max_ratio": self.cat_max_ratio,
            "hflip": self.hflip,
            "photometric_distortion": ("mmseg PhotoMetricDistortion: brightness +-32, contrast 0.5-1.5, saturation "
                                       "0.5-1.5 (torchvision blend), hue +-18/180" if self.photometric_distortion else False),
            "normalize": {"name": self.normalize, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()},
            "padding": "bottom/right to the crop: image 0 (after normalising), label 255",
            "evaluation": "image resized keeping aspect to fit base_size (bilinear), label at full resolution",
            "train_samples_per_epoch": self.train_samples_per_epoch,
            "val_samples": self.val_samples,
            "selection": self.selection,
            "num_folds": self.num_folds,
        }

    @classmethod
    def run_label(cls, options: Mapping[str, Any]) -> str | None:
        return get_dataset_class(options.get("source", "cityscapes"), "cityscapes").label

    def check_files(self) -> None:
        self.dataset.check()

    def build(self) -> None:
        options = dict(base_size=self.base_size, crop_size=self.crop_size, ratio_range=self.ratio_range,
                       cat_max_ratio=self.cat_max_ratio, hflip=self.hflip,
                       photometric_distortion=self.photometric_distortion, mean=self.mean, std=self.std,
                       read_pair=load_cityscapes_pair)
        train, val = self.dataset.load("train"), self.dataset.load("val")
        self.train_set = CityscapesItems(train, **options)
        self.val_set = evenly_spaced(CityscapesItems(val, **options), self.val_samples)

    def split_dataset(self, split: str) -> Dataset:
        """``"train"``, ``"val"`` or ``"test"`` (the reported ones: val)."""
        return self.train_set if split == "train" else self.val_set

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self.training_loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        """The val images (all, or ``val_samples`` evenly spaced), fold 0 each."""
        self.setup("validate")
        return self.evaluation_loader(self.val_set, evaluation_collate)

    def test_dataloader(self) -> DataLoader:
        """The reported images: the same as :meth:`val_dataloader`."""
        self.setup("validate")
        return self.evaluation_loader(self.val_set, evaluation_collate)
