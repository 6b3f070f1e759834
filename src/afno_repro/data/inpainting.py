"""The inpainting DataModule: images from a named dataset plus random-walk masks (paper A.2).

Three splits. ``train``; ``selection``, held out of training (one scikit-image photograph, or a
seeded class-balanced slice of the ImageNet training files in use) to pick the best checkpoint
on; ``val``, the official validation split, on which results are reported. With
``selection="heldout"`` (default) Lightning's validation loop runs on ``selection`` and its
test loop on ``val``, so the reported number is not selected on the data it is measured on. With
``selection="val"`` (the paper's protocol: the best over the run on the validation split) both
loops run on ``val`` and nothing is held out of training.

Reproducibility and sharding are the shared ones of :mod:`afno_repro.data.sampling`: every
training item gets its own two seeds (one for the image augmentation, one for the mask), so the
batches of epoch ``e`` are the same for ``num_workers=0`` or ``8`` and across runs with the same
``seed``; ``set_epoch`` (called by Lightning each epoch) makes resumed runs continue the same
sequence. Evaluation masks are fixed per image: image ``i`` of ``val`` always gets
``RandomWalkMask.mask_for_index(i, val_mask_seed, size)`` (``selection_mask_seed`` for the
selection split), whatever the batch or the process it lands in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from afno_repro.data.base import DataModuleBase, evenly_spaced
from afno_repro.data.embedded import PHOTO_SPLITS, SkimagePhotos
from afno_repro.data.errors import DataError
from afno_repro.data.imagenet import ImageNetFolder, check_layout, load_subset, make_selection, make_subset, save_subset
from afno_repro.data.masks import RandomWalkMask, derive_seed, masked_fraction
from afno_repro.data.registry import get_dataset_class
from afno_repro.data.sampling import item_generator

__all__ = ["InpaintingDataModule", "SELECTIONS"]

SELECTIONS = ("heldout", "val")


class _MaskedImages(Dataset):
    """Adapts an image dataset to the batch items the mask collation needs.

    Training keys are ``(index, image_seed, mask_seed)`` from the seeded sampler: the image is
    ``images.item(index, item_generator(image_seed))``, so the global random state is left alone. Evaluation keys are plain indices, and the mask seed is
    derived from ``(fixed_mask_seed, index)``.
    """

    def __init__(self, images: Dataset, fixed_mask_seed: int | None = None) -> None:
        self.images = images
        self.fixed_mask_seed = fixed_mask_seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, image_seed, mask_seed = key
            image = self.images.item(index, item_generator(image_seed))
        else:
            index, image = key, self.images[key]
            mask_seed = derive_seed(self.fixed_mask_seed, index)
        if isinstance(image, tuple):
            image = image[0]
        return {"image": image, "index": index, "mask_seed": mask_seed}


class _MaskCollate:
    """Stacks items and draws the batch's masks in one vectorised call (a class, so it pickles)."""

    def __init__(self, masker: RandomWalkMask) -> None:
        self.masker = masker

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = torch.stack([item["image"] for item in items])
        masks = self.masker.from_seeds([item["mask_seed"] for item in items], images.shape[-2:])
        return {
            "image": images,
            "mask": masks[:, None].to(images.dtype),
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        }


class InpaintingDataModule(DataModuleBase):
    """Images with random-walk masks for the inpainting task (paper A.2).

    Batches are dicts: ``"image"`` float ``(B, 3, S, S)`` in ``[0, 1]``; ``"mask"`` float
    ``(B, 1, S, S)``, 1 = hidden pixel (the model sees ``image * (1 - mask)``, the loss is the MSE
    on the hidden pixels); ``"index"`` long ``(B,)``, the item's index in its split. Report
    :meth:`masked_fraction` with the results: it depends strongly on the mask options.

    :meth:`val_dataloader` serves the split named by :attr:`validation_split` (``"selection"``
    or ``"val"``, see ``selection``); :meth:`test_dataloader` always serves ``"val"``.

    Parameters
    ----------
    name: dataset name, ``"skimage"`` (embedded photographs, default) or ``"imagenet"``.
    root: ImageNet folder (``root/train``, ``root/val``); required for ``"imagenet"`` only.
    image_size: side ``S`` of the square images (224 in the paper; 64 for CPU demos).
    mask: keyword options of :class:`~afno_repro.data.masks.RandomWalkMask` (``steps``, ``grid``,
        ``brush_size``, ``border``, ``steps_scaling``, ``reference_size``, ``patch_size``);
        ``None`` = the paper's reading (3136-step pixel walk, clipped at the border).
    batch_size: training batch size; ``val_batch_size`` (both evaluation splits) defaults to it.
    num_workers: data-loader worker processes (batches do not depend on it).
    train_samples_per_epoch: items per training epoch; ``None`` = one pass over the split
        (1024 random crops for ``"skimage"``).
    val_samples: validation images; ``None`` = the whole split (64 fixed crops for
        ``"skimage"``). For ImageNet, a smaller value keeps evenly spaced images of the sorted
        split, so every class stays represented.
    selection: which split picks the best checkpoint (Lightning's validation loop):
        ``"heldout"`` = the selection split, held out of training, with the official validation
        split left for :meth:`test_dataloader`; ``"val"`` = the official validation split for
        both (the paper's protocol), and nothing held out of training.
    selection_fraction: ImageNet, ``selection="heldout"``: the fraction of each class's
        training files (in use: after ``subset_fraction``) held out, at least one per class
        (:func:`~afno_repro.data.imagenet.make_selection`). ``"skimage"`` holds out one
        photograph instead (:data:`~afno_repro.data.embedded.PHOTO_SPLITS`).
    selection_seed: seeds which ImageNet training files are held out.
    selection_samples: selection images; ``None`` = all held-out files (ImageNet) or 64 fixed
        crops of the held-out photograph (``"skimage"``); a smaller ImageNet value keeps evenly
        spaced ones.
    subset_fraction: ImageNet only: train on a seeded class-balanced fraction of the training
        split (0.1 for Table 6), drawn with ``subset_seed``. Validation always uses the full split.
    subset_file: ImageNet only: if the file exists, train on the files it lists (reusing a
        previous run's subset); otherwise, with ``subset_fraction`` set, the new subset is written
        there (point it into the run directory).
    val_mask_seed: seeds the fixed masks of the validation split.
    selection_mask_seed: seeds the fixed masks of the selection split.
    seed: seeds the training order, augmentations and masks.
    max_image_pixels: ImageNet only: images with more pixels are refused with an error naming
        the file; ``None`` = PIL's decompression-bomb limit (178,956,970 pixels).
    pin_memory: passed to the data loaders.

    Example
    -------
    >>> from afno_repro.data import InpaintingDataModule
    >>> dm = InpaintingDataModule(image_size=32, batch_size=4, mask={"steps_scaling": "area"})
    >>> dm.setup("fit")
    >>> batch = next(iter(dm.val_dataloader()))
    >>> batch["image"].shape, batch["mask"].shape, batch["index"].tolist()
    (torch.Size([4, 3, 32, 32]), torch.Size([4, 1, 32, 32]), [0, 1, 2, 3])
    >>> dm.validation_split, dm.num_images("selection"), dm.num_images("val")
    ('selection', 64, 64)
    """

    def __init__(
        self,
        name: str = "skimage",
        root: str | os.PathLike | None = None,
        image_size: int = 64,
        mask: Mapping[str, Any] | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        train_samples_per_epoch: int | None = None,
        val_samples: int | None = None,
        selection: str = "heldout",
        selection_fraction: float = 0.01,
        selection_seed: int = 0,
        selection_samples: int | None = None,
        subset_fraction: float | None = None,
        subset_seed: int = 0,
        subset_file: str | os.PathLike | None = None,
        val_mask_seed: int = 1234,
        selection_mask_seed: int = 5678,
        seed: int = 0,
        max_image_pixels: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        get_dataset_class(name, "images")
        if name == "imagenet" and root is None:
            raise ValueError("data.name='imagenet' needs data.root, the folder holding train/ and val/; set it, or use data.name='skimage' for the embedded photographs.")
        imagenet_only = {"subset_fraction": subset_fraction, "subset_file": subset_file, "max_image_pixels": max_image_pixels}
        for option, value in imagenet_only.items():
            if name != "imagenet" and value is not None:
                raise ValueError(f"{option} applies to ImageNet only, but data.name={name!r}; remove it or use data.name='imagenet'.")
        if selection not in SELECTIONS:
            raise ValueError(
                f"InpaintingDataModule got selection={selection!r}; use 'heldout' (pick checkpoints on a split held out of "
                "training, report on val) or 'val' (the paper's protocol: pick and report on val)."
            )
        if not 0 < selection_fraction < 1:
            raise ValueError(f"InpaintingDataModule got selection_fraction={selection_fraction!r}; it must be in (0, 1), e.g. 0.01.")
        sizes = {
            "batch_size": batch_size,
            "val_batch_size": val_batch_size,
            "train_samples_per_epoch": train_samples_per_epoch,
            "val_samples": val_samples,
            "selection_samples": selection_samples,
            "max_image_pixels": max_image_pixels,
        }
        for option, value in sizes.items():
            if value is not None and value < 1:
                raise ValueError(f"InpaintingDataModule got {option}={value!r}; it must be >= 1 (or null for the default).")
        self.keep_options(masker=RandomWalkMask(**dict(mask or {})))
        self.subset: list[str] | None = None
        self.selection_set: Dataset | None = None
        self.val_set: Dataset | None = None

    splits = ("train", "selection", "val")

    reported_split = "val"
    """The split :meth:`test_dataloader` serves, on which results are reported."""

    def reading(self) -> dict[str, Any]:
        """The data's readings of the paper's open choices, recorded in ``metrics.json``: the mask
        options and which split selects the checkpoint."""
        # Every mask option as the walk uses it (defaults included), and the steps it takes at this image size
        # (steps_scaling=area scales the configured 3136 by area).
        options = ("steps", "grid", "brush_size", "border", "steps_scaling", "reference_size", "patch_size")
        mask = {name: getattr(self.masker, name) for name in options}
        return {"mask": {**mask, "steps_used": self.masker.num_steps(self.image_size)}, "selection": self.selection}

    @property
    def validation_split(self) -> str:
        """The split :meth:`val_dataloader` serves: ``"selection"`` or ``"val"``."""
        return "selection" if self.selection == "heldout" else "val"

    def _imagenet_subset(self) -> list[str] | None:
        if self.subset_file is not None and Path(self.subset_file).is_file():
            return load_subset(self.subset_file)
        if self.subset_fraction is None:
            if self.subset_file is not None:
                raise ValueError(
                    f"subset file {str(self.subset_file)!r} does not exist and data.subset_fraction is not set, so "
                    "there is no subset to reuse or to make. Point subset_file at a list a previous run saved, or "
                    "set subset_fraction (0.1 for Table 6) to make one there."
                )
            return None
        subset = make_subset(self.root, self.subset_fraction, self.subset_seed)
        if self.subset_file is not None:
            save_subset(subset, self.subset_file)
        return subset

    @classmethod
    def run_label(cls, options: Mapping[str, Any]) -> str | None:
        return options.get("name")

    def check_files(self) -> None:
        if self.name != "skimage":
            check_layout(self.root, "train", "val")

    def build(self) -> None:
        heldout = self.selection == "heldout"
        if self.name == "skimage":
            photos = PHOTO_SPLITS["train"] + (() if heldout else PHOTO_SPLITS["selection"])
            self.train_set = SkimagePhotos("train", image_size=self.image_size, samples_per_epoch=self.train_samples_per_epoch, photos=photos)
            if heldout:
                self.selection_set = SkimagePhotos("selection", image_size=self.image_size, samples_per_epoch=self.selection_samples)
            self.val_set = SkimagePhotos("val", image_size=self.image_size, samples_per_epoch=self.val_samples)
            return
        self.subset = self._imagenet_subset()
        images = {"root": self.root, "image_size": self.image_size, "max_image_pixels": self.max_image_pixels}
        train_set = ImageNetFolder(split="train", subset=self.subset, **images)
        if heldout:
            self.selection_files = make_selection(train_set.files(), self.selection_fraction, self.selection_seed)
            if not self.selection_files:
                raise DataError(
                    f"no training file of {str(self.root)!r} can be held out for checkpoint selection: every class has a "
                    "single training file in use, and it must stay in training. Use data.selection=val, or train on "
                    "more files per class (a larger data.subset_fraction)."
                )
            selection_set = train_set.only(self.selection_files, augment=False, source="the selection split")
            self.selection_set = evenly_spaced(selection_set, self.selection_samples)
            train_set = train_set.without(self.selection_files)
        self.train_set = train_set
        self.val_set = evenly_spaced(ImageNetFolder(split="val", **images), self.val_samples)

    def split_dataset(self, split: str) -> Dataset:
        dataset = {"train": self.train_set, "selection": self.selection_set, "val": self.val_set}[split]
        if dataset is None:
            raise ValueError("there is no selection split with data.selection='val' (nothing is held out); use data.selection=heldout.")
        return dataset

    def train_dataloader(self):
        self.setup("fit")
        return self.training_loader(_MaskedImages(self.train_set), _MaskCollate(self.masker))

    def val_dataloader(self):
        """The split that picks the best checkpoint (:attr:`validation_split`), with its fixed masks."""
        self.setup("validate")
        if self.selection == "heldout":
            return self.evaluation_loader(_MaskedImages(self.selection_set, self.selection_mask_seed), _MaskCollate(self.masker))
        return self.evaluation_loader(_MaskedImages(self.val_set, self.val_mask_seed), _MaskCollate(self.masker))

    def test_dataloader(self):
        """The official validation split with its fixed masks (the paper reports ImageNet validation)."""
        self.setup("test")
        return self.evaluation_loader(_MaskedImages(self.val_set, self.val_mask_seed), _MaskCollate(self.masker))

    def masked_fraction(self, num_images: int = 256, split: str = "val") -> float:
        """Mean masked fraction of the fixed masks of the first ``num_images`` images of ``split``.

        ``split`` is ``"val"`` or ``"selection"`` (their masks have different seeds). Measured on
        the masks themselves, at this DataModule's image size and mask options, and independent
        of the dataset, so it can be reported before or after training.
        """
        seeds = {"val": self.val_mask_seed, "selection": self.selection_mask_seed}
        if split not in seeds:
            raise ValueError(f"masked_fraction got split={split!r}; use 'val' or 'selection'.")
        masks = self.masker.masks_for_indices(range(num_images), seeds[split], self.image_size)
        return float(masked_fraction(masks).mean())
