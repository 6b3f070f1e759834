"""The inpainting DataModule: images from a named dataset plus random-walk masks (paper A.2).

Reproducibility without depending on the number of workers: the training sampler runs in the
main process and hands every item its own two seeds (one for the image augmentation, one for the
mask), drawn from a generator seeded by ``(seed, epoch)``. Workers only apply them, so the
batches of epoch ``e`` are the same for ``num_workers=0`` or ``8`` and across runs with the same
``seed``; ``set_epoch`` (called by Lightning each epoch) makes resumed runs continue the same
sequence. Validation masks are fixed per image: image ``i`` always gets
``RandomWalkMask.mask_for_index(i, val_mask_seed, size)``, whatever the batch it lands in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from afno_repro.data import build_dataset, get_dataset_class
from afno_repro.data.imagenet import load_subset, make_subset, save_subset
from afno_repro.data.masks import RandomWalkMask, derive_seed, masked_fraction

__all__ = ["InpaintingDataModule"]

_MAX_SEED = 2**63 - 1


class _SeededSampler(Sampler):
    """Yields ``(index, image_seed, mask_seed)`` for a shuffled epoch of ``num_samples`` items.

    Indices are a random permutation of the dataset (repeated when ``num_samples`` exceeds its
    length, truncated when it is smaller); everything is drawn from a generator seeded by
    ``(seed, epoch)``. ``epoch`` advances after each pass unless ``set_epoch`` sets it.
    """

    def __init__(self, dataset_size: int, num_samples: int, seed: int) -> None:
        self.dataset_size = dataset_size
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        self.epoch += 1
        rounds = -(-self.num_samples // self.dataset_size)
        order = torch.cat([torch.randperm(self.dataset_size, generator=generator) for _ in range(rounds)])[: self.num_samples]
        seeds = torch.randint(0, _MAX_SEED, (self.num_samples, 2), generator=generator)
        return iter(zip(order.tolist(), *seeds.T.tolist()))


class _MaskedImages(Dataset):
    """Adapts an image dataset to the batch items the mask collation needs.

    Training keys are ``(index, image_seed, mask_seed)`` from :class:`_SeededSampler`: the image
    is drawn with torch's generator seeded by ``image_seed`` (in a forked RNG state, so the
    worker's global stream is untouched). Validation keys are plain indices, and the mask seed is
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
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(image_seed)
                image = self.images[index]
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


class InpaintingDataModule(pl.LightningDataModule):
    """Images with random-walk masks for the inpainting task (paper A.2).

    Batches are dicts: ``"image"`` float ``(B, 3, S, S)`` in ``[0, 1]``; ``"mask"`` float
    ``(B, 1, S, S)``, 1 = hidden pixel (the model sees ``image * (1 - mask)``, the loss is the MSE
    on the hidden pixels); ``"index"`` long ``(B,)``, the item's index in its split. Report
    :meth:`masked_fraction` with the results: it depends strongly on the mask options.

    Parameters
    ----------
    name: dataset name, ``"skimage"`` (embedded photographs, default) or ``"imagenet"``.
    root: ImageNet folder (``root/train``, ``root/val``); required for ``"imagenet"`` only.
    image_size: side ``S`` of the square images (224 in the paper; 64 for CPU demos).
    mask: keyword options of :class:`~afno_repro.data.masks.RandomWalkMask` (``steps``, ``grid``,
        ``brush_size``, ``border``, ``steps_scaling``, ``reference_size``, ``patch_size``);
        ``None`` = the paper's reading (3136-step pixel walk, clipped at the border).
    batch_size: training batch size; ``val_batch_size`` defaults to it.
    num_workers: data-loader worker processes (batches do not depend on it).
    train_samples_per_epoch: items per training epoch; ``None`` = one pass over the split
        (1024 random crops for ``"skimage"``).
    val_samples: validation images; ``None`` = the whole split (64 fixed crops for
        ``"skimage"``). For ImageNet, a smaller value keeps evenly spaced images of the sorted
        split, so every class stays represented.
    subset_fraction: ImageNet only: train on a seeded class-balanced fraction of the training
        split (0.1 for Table 6), drawn with ``subset_seed``. Validation always uses the full split.
    subset_file: ImageNet only: if the file exists, train on the files it lists (reusing a
        previous run's subset); otherwise, with ``subset_fraction`` set, the new subset is written
        there (point it into the run directory).
    val_mask_seed: seeds the fixed validation masks.
    seed: seeds the training order, augmentations and masks.
    pin_memory: passed to the data loaders.

    Example
    -------
    >>> from afno_repro.data import InpaintingDataModule
    >>> dm = InpaintingDataModule(image_size=32, batch_size=4, mask={"steps_scaling": "area"})
    >>> dm.setup("fit")
    >>> batch = next(iter(dm.val_dataloader()))
    >>> batch["image"].shape, batch["mask"].shape, batch["index"].tolist()
    (torch.Size([4, 3, 32, 32]), torch.Size([4, 1, 32, 32]), [0, 1, 2, 3])
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
        subset_fraction: float | None = None,
        subset_seed: int = 0,
        subset_file: str | os.PathLike | None = None,
        val_mask_seed: int = 1234,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        get_dataset_class(name)
        if name == "imagenet" and root is None:
            raise ValueError("data.name='imagenet' needs data.root, the folder holding train/ and val/; set it, or use data.name='skimage' for the embedded photographs.")
        if name != "imagenet" and (subset_fraction is not None or subset_file is not None):
            raise ValueError(f"subset_fraction/subset_file apply to ImageNet only, but data.name={name!r}; remove them or use data.name='imagenet'.")
        for option, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size), ("train_samples_per_epoch", train_samples_per_epoch), ("val_samples", val_samples)):
            if value is not None and value < 1:
                raise ValueError(f"InpaintingDataModule got {option}={value!r}; it must be >= 1 (or null for the default).")
        self.save_hyperparameters()
        self.name = name
        self.root = root
        self.image_size = image_size
        self.masker = RandomWalkMask(**dict(mask or {}))
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.train_samples_per_epoch = train_samples_per_epoch
        self.val_samples = val_samples
        self.subset_fraction = subset_fraction
        self.subset_seed = subset_seed
        self.subset_file = subset_file
        self.val_mask_seed = val_mask_seed
        self.seed = seed
        self.pin_memory = pin_memory
        self.subset: list[str] | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

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

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.name == "skimage":
            self.train_set = build_dataset("skimage", "train", image_size=self.image_size, samples_per_epoch=self.train_samples_per_epoch)
            self.val_set = build_dataset("skimage", "val", image_size=self.image_size, samples_per_epoch=self.val_samples)
            return
        self.subset = self._imagenet_subset()
        self.train_set = build_dataset("imagenet", "train", root=self.root, image_size=self.image_size, subset=self.subset)
        val_set = build_dataset("imagenet", "val", root=self.root, image_size=self.image_size)
        if self.val_samples is not None and self.val_samples < len(val_set):
            val_set = Subset(val_set, torch.linspace(0, len(val_set) - 1, self.val_samples).round().long().tolist())
        self.val_set = val_set

    def save_subset(self, file: str | os.PathLike) -> Path:
        """Write the ImageNet training subset in use (after :meth:`setup`) to ``file``."""
        if self.subset is None:
            raise ValueError("there is no training subset to save: set data.subset_fraction (ImageNet only) and call setup() first.")
        return save_subset(self.subset, file)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_MaskCollate(self.masker),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        num_samples = self.train_samples_per_epoch or len(self.train_set)
        sampler = _SeededSampler(len(self.train_set), num_samples, self.seed)
        return self._loader(_MaskedImages(self.train_set), self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(_MaskedImages(self.val_set, self.val_mask_seed), self.val_batch_size, None)

    def test_dataloader(self) -> DataLoader:
        """The validation split with its fixed masks (the paper reports ImageNet validation)."""
        return self.val_dataloader()

    def masked_fraction(self, num_images: int = 256) -> float:
        """Mean masked fraction of the fixed validation masks of the first ``num_images`` images.

        Measured on the masks themselves, at this DataModule's image size and mask options, and
        independent of the dataset, so it can be reported before or after training.
        """
        masks = self.masker.masks_for_indices(range(num_images), self.val_mask_seed, self.image_size)
        return float(masked_fraction(masks).mean())
