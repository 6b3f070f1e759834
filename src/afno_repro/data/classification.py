"""Image classification data (paper Table 5, appendix A.5: ImageNet-1K at 224x224).

Two sources, both served by :class:`ClassificationDataModule`:

- ``"imagenet"``: the standard folder layout (:mod:`afno_repro.data.imagenet`),
  ``root/{train,val}/<wnid>/*.JPEG``; the classes are the sorted class folders of ``train/`` and
  ``val/`` must have the same ones. Files are scanned and read with the ImageNet loader's checks,
  so a missing root, an empty class folder, an unreadable, corrupt or too large image each raise
  a :class:`~afno_repro.data.errors.DataError` naming the folder or file.
- ``"lfw"``: scikit-image's embedded ``lfw_subset()`` (no download): 200 grayscale 25x25 images,
  the first 100 faces (class 1, ``"face"``), the last 100 not (class 0, ``"non_face"``). The split
  is fixed: within each class, every 4th image (positions 3, 7, 11, ...) is validation, the rest
  training (75 / 25 per class). Images are turned into RGB. A CPU-seconds stand-in for the
  smoke runs and tests.

Augmentation is timm's ``create_transform``, the recipe of DeiT and of the authors' released AFNO
classification code (see :class:`ClassificationDataModule` for each option and where the two
differ). Training: random resized crop (scale 0.08-1, bicubic), horizontal flip, RandAugment
``rand-m9-mstd0.5-inc1``, optional random erasing; evaluation: resize the short side to
``image_size / crop_pct`` (256 for 224) and centre-crop ``image_size`` (A.5 / DeiT). Images come
out normalised with the ImageNet mean and std. Note that timm leaves colour jitter out whenever
RandAugment is on (``color_jitter`` then has no effect; :meth:`ClassificationDataModule.reading`
records whether it was applied).

Reproducibility: the training sampler (:mod:`afno_repro.data.sampling`) hands every item a seed
drawn from ``(seed, epoch)``; timm's transforms draw from the global generators only, so the
item's augmentation runs inside ``global_random_state(seed)`` (Python's, NumPy's and torch's
random state seeded from it and restored afterwards): the batches of an epoch are the same for
any ``num_workers`` and the process's random state is left as it was. Under DDP each rank trains
on its share of the epoch and evaluates its unpadded share (:class:`EvaluationSampler`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import posterize as timm_posterize
from timm.data import (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD,
                       create_transform)
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from afno_repro.data.base import DataModuleBase, evenly_spaced
from afno_repro.data.errors import DataError
from afno_repro.data.files import load_image_uint8
from afno_repro.data.imagenet import IMAGENET_ARCHIVE, check_layout, class_folders, make_selection, scan
from afno_repro.data.masks import derive_seed
from afno_repro.data.registry import get_dataset_class, list_datasets, register_dataset
from afno_repro.data.sampling import MAX_SEED, global_random_state, process_group

__all__ = [
    "CLASSIFICATION_SELECTIONS",
    "ClassificationDataModule",
    "ClassificationImages",
    "ImageNetClasses",
    "LFWFaces",
    "LFW_CLASSES",
    "NORMALIZATIONS",
    "lfw_images",
]

CLASSIFICATION_SELECTIONS = ("val", "heldout")
LFW_CLASSES = ("non_face", "face")
NORMALIZATIONS = {
    "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "inception": (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD),
}
_ERASE_MODES = ("pixel", "rand", "const")  # timm.data.random_erasing.RandomErasing's modes
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")
_LFW_VAL_EVERY = 4


def lfw_images() -> tuple[dict[str, list[Image.Image]], dict[str, list[int]]]:
    """scikit-image's ``lfw_subset`` as RGB PIL images and labels, split train / val.

    Returns ``(images, labels)``, each a dict with keys ``"train"`` (150 items) and ``"val"``
    (50); label 1 = face (the first 100 images of the subset), 0 = non-face. Within each class,
    positions 3, 7, 11, ... go to ``"val"``.

    Example
    -------
    >>> images, labels = lfw_images()
    >>> len(images["train"]), len(images["val"]), sum(labels["val"]), images["val"][0].size, images["val"][0].mode
    (150, 50, 25, (25, 25), 'RGB')
    """
    from skimage.data import lfw_subset

    pixels = (np.asarray(lfw_subset(), dtype=np.float64) * 255).round().clip(0, 255).astype(np.uint8)
    images: dict[str, list[Image.Image]] = {"train": [], "val": []}
    labels: dict[str, list[int]] = {"train": [], "val": []}
    half = len(pixels) // 2
    for position, array in enumerate(pixels):
        label = 1 if position < half else 0
        split = "val" if (position % half) % _LFW_VAL_EVERY == _LFW_VAL_EVERY - 1 else "train"
        images[split].append(Image.fromarray(array).convert("RGB"))
        labels[split].append(label)
    return images, labels


def _load_pil(path: str, max_pixels: int | None = None, dataset: str = IMAGENET_ARCHIVE) -> Image.Image:
    """An image file as an RGB PIL image, through :func:`~afno_repro.data.files.load_image` (its
    checks and its ``DataError`` naming the file and ``dataset``, where a good copy comes from);
    higher bit depths are rounded to 8 bits."""
    return Image.fromarray(load_image_uint8(path, max_pixels, dataset).permute(1, 2, 0).numpy())


class ClassificationImages(Dataset):
    """Labelled images with a transform, served as items of the classification batch contract.

    An item is a dict: ``"image"`` (what ``transform`` makes of the RGB PIL image, a float32
    ``(3, S, S)`` tensor with timm's transforms), ``"label"`` (int) and ``"index"`` (its position
    here). Keys are indices, or the ``(index, image_seed, _)`` tuples of the training samplers:
    the transform then runs with the global random state seeded from ``image_seed`` (and
    restored afterwards), so the item does not depend on the process or worker that loads it.

    Parameters
    ----------
    images: ``N`` file paths (read with ``loader``) or ``N`` PIL images held in memory.
    labels: ``N`` class indices.
    transform: maps an RGB PIL image to the item's image.
    loader: ``path -> PIL image``, for paths; raises ``DataError`` naming a bad file.

    Example
    -------
    >>> from torchvision.transforms.functional import pil_to_tensor
    >>> data = ClassificationImages([Image.new("RGB", (4, 4))], [3], transform=pil_to_tensor)
    >>> item = data[0]
    >>> item["image"].shape, item["label"], item["index"]
    (torch.Size([3, 4, 4]), 3, 0)
    """

    def __init__(
        self,
        images: Sequence[str | Image.Image],
        labels: Sequence[int],
        transform: Callable[[Image.Image], Any],
        loader: Callable[[str], Image.Image] = _load_pil,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"ClassificationImages got {len(images)} images but {len(labels)} labels; give one label per image.")
        self.images = list(images)
        self.labels = [int(label) for label in labels]
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        index, seed = (key[0], key[1]) if isinstance(key, tuple) else (key, None)
        image = self.images[index]
        image = self.loader(image) if isinstance(image, (str, os.PathLike)) else image
        if seed is None:
            transformed = self.transform(image)
        else:
            with global_random_state(seed):
                transformed = self.transform(image)
        return {"image": transformed, "label": self.labels[index], "index": index}


class _RepeatedAugmentationSampler(DistributedSampler):
    """timm's ``RepeatAugSampler`` (DeiT's repeated augmentation) with per-item seeds.

    The order is timm's for epoch ``derive_seed(seed, epoch)`` (each image ``num_repeats`` times in
    a row, the copies going to different ranks; an epoch keeps about ``N / W`` items per rank, so
    in one process it sees about a third of the images, three times each). Each item gets an
    augmentation seed from ``(seed, epoch, rank)``, so the copies on different ranks differ. A
    ``DistributedSampler`` so that Lightning keeps it as it is.
    """

    def __init__(self, dataset_size: int, seed: int, num_repeats: int = 3, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(dataset_size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.sampler = RepeatAugSampler(range(dataset_size), num_replicas=num_replicas, rank=rank, num_repeats=num_repeats)
        self.num_samples = len(self.sampler)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        self.sampler.set_epoch(derive_seed(self.seed, self.epoch))
        generator = torch.Generator().manual_seed(derive_seed(derive_seed(self.seed, self.epoch), self.rank))
        self.epoch += 1
        indices = list(self.sampler)
        seeds = torch.randint(0, MAX_SEED, (len(indices),), generator=generator).tolist()
        return iter([(index, seed, 0) for index, seed in zip(indices, seeds)])


@register_dataset("classification", "lfw")
class LFWFaces:
    """scikit-image's embedded ``lfw_subset`` (:func:`lfw_images`): 2 classes, no download."""

    files_on_disk = False

    def __init__(self, root: str | None = None, max_image_pixels: int | None = None) -> None:
        self.classes = list(LFW_CLASSES)
        self.loader = _load_pil

    def check(self) -> None:
        """Nothing on disk."""

    def load(self) -> tuple[list, list, list[str]]:
        """``(train, val, names)``: ``(image, label)`` pairs, and a pseudo path
        ``train/<class>/<position>`` per training image (the held-out slice is drawn per class)."""
        images, labels = lfw_images()
        train = list(zip(images["train"], labels["train"]))
        val = list(zip(images["val"], labels["val"]))
        names = [f"train/{LFW_CLASSES[label]}/{position:03d}" for position, (_, label) in enumerate(train)]
        return train, val, names


@register_dataset("classification", "imagenet")
class ImageNetClasses:
    """ImageNet's ``root/{train,val}/<wnid>/*.JPEG`` through the ImageNet scanner
    (:func:`~afno_repro.data.imagenet.scan`): the classes are the sorted wnids of ``train/``."""

    files_on_disk = True

    def __init__(self, root: str, max_image_pixels: int | None = None) -> None:
        self.root = root
        self.classes: list[str] | None = None
        self.loader = partial(_load_pil, max_pixels=max_image_pixels)

    def check(self) -> None:
        """The layout's folders, no file listed (:meth:`ClassificationDataModule.check_files`)."""
        check_layout(self.root, "train", "val")

    def load(self) -> tuple[list, list, list[str]]:
        """``(train, val, names)``: ``(path, class index)`` samples, and the training files
        relative to the root (``train/<wnid>/<file>``)."""
        self.classes, samples = scan(self.root, "train", "val")
        root = Path(self.root).expanduser()
        names = [Path(path).relative_to(root).as_posix() for path, _ in samples["train"]]
        return samples["train"], samples["val"], names


def posterize_keeping_zero_bits(image: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """RandAugment's posterize as timm's recipes were tuned with it: keeping 0 bits gives a black image.

    ``rand-m9-mstd0.5-inc1`` draws magnitudes up to 10, where "PosterizeIncreasing" keeps 0 bits;
    Pillow up to 11 returned the black image, Pillow 12+ raises ``ValueError: bits must be between
    or equal to 1 and 8`` and the training batch fails. timm's own ``posterize`` is kept for 1-8 bits.
    """
    if bits_to_keep <= 0:
        return image.point(lambda _value: 0)
    return timm_posterize(image, bits_to_keep)


def _require_two_classes(root: str, found: int) -> None:
    """``DataError`` when the ImageNet-layout ``root`` has fewer than two class folders in ``train/``."""
    if found < 2:
        train = Path(root).expanduser() / "train"
        raise DataError(
            f"{str(train)!r} holds {found} class folder(s) ({', '.join(class_folders(root)) or 'none'}), and classification "
            "needs at least two: one folder per class (root/train/<wnid>/*.JPEG, the same wnids under val/). Point "
            "data.root at the folder holding all the classes, or add the missing class folders."
        )


def _check_auto_augment(owner: str, policy: Any) -> None:
    """``ValueError`` naming ``policy`` and the forms timm reads unless timm builds its transform (timm's
    own error for an unknown policy is a bare ``AssertionError``)."""
    from timm.data import create_transform

    try:
        if not isinstance(policy, str):
            raise TypeError(policy)
        create_transform(32, is_training=True, auto_augment=policy)
    except Exception:  # noqa: BLE001 - timm raises AssertionError, KeyError, ValueError or IndexError by case
        raise ValueError(
            f"{owner} got auto_augment={policy!r}, which is not a timm augmentation policy. Use RandAugment "
            "'rand-m9-mstd0.5-inc1' (A.5, DeiT), AutoAugment 'original' or 'v0', AugMix 'augmix-m5-w4-d2', or null for "
            "none; timm.data.auto_augment documents every form."
        ) from None


class ClassificationDataModule(DataModuleBase):
    """Classification data (paper A.5): ImageNet from its folders, or the embedded LFW subset.

    Batches are dicts: ``"image"`` float32 ``(B, 3, S, S)``, normalised with ``normalize``'s mean
    and std; ``"label"`` int64 ``(B,)`` in ``[0, num_classes)``; ``"index"`` int64 ``(B,)``, the
    item's position in its split (sorted file order for ImageNet).

    :meth:`val_dataloader` serves the split that selects the checkpoint (:attr:`validation_split`):
    the official validation split with ``selection="val"``, the held-out slice of the training
    files with ``"heldout"``. :meth:`test_dataloader` always serves the official validation split
    (:attr:`reported_split`), with the evaluation transform.

    Parameters
    ----------
    source: ``"imagenet"`` (``root/{train,val}/<wnid>/*.JPEG``) or ``"lfw"`` (embedded, no download).
    root: the ImageNet folder holding ``train/`` and ``val/``; ``"imagenet"`` only.
    num_classes: the class count the configs pass to the task and the backbone head; checked
        against the class folders at :meth:`setup`. ``None`` = the number of class folders of
        ``train/`` (``"imagenet"``) or 2 (``"lfw"``).
    image_size: side ``S`` of the square images (224 in A.5).
    batch_size: training batch size per process (the paper's lr rule is global batch / 512 x 5e-4);
        even when the task mixes images (timm's Mixup pairs them).
    val_batch_size: evaluation batch size; ``None`` = ``batch_size``.
    num_workers: data-loader worker processes (batches do not depend on it).
    pin_memory: passed to the data loaders.
    seed: seeds the training order and augmentations.
    train_samples_per_epoch: training items per epoch; ``None`` = one pass over the training split.
    val_samples: keep this many evenly spaced images of the official validation split (every class
        stays represented); ``None`` = all of it (50,000 for ImageNet).
    drop_last: drop each epoch's last incomplete training batch (DeiT and the authors' code do);
        keeps training batches even for Mixup when ``batch_size`` is even.
    selection: ``"val"`` (A.5 / DeiT: the checkpoint with the best validation top-1, reported on
        the same validation split) or ``"heldout"`` (a class-balanced ``selection_fraction`` of
        the training files, drawn with ``selection_seed``, is held out of training to select the
        checkpoint; the validation split is reported).
    selection_fraction, selection_seed: see ``selection`` (at least one file per class is held
        out, none from a class with a single file; :func:`~afno_repro.data.imagenet.make_selection`).
    auto_augment: timm's policy string; ``"rand-m9-mstd0.5-inc1"`` (RandAugment, DeiT and the
        authors' code); ``None`` turns it off.
    color_jitter: colour-jitter strength; 0.4 (the authors' code; DeiT 0.3). timm ignores it
        whenever ``auto_augment`` is set (both recipes therefore train without it).
    re_prob: random-erasing probability; 0.0 (the authors' code; DeiT 0.25), mode ``re_mode``
        (``"pixel"``, DeiT's: per-pixel normal noise).
    interpolation: resize interpolation of both transforms, ``"bicubic"`` (DeiT, A.5's resize).
    crop_pct: evaluation: resize the short side to ``image_size / crop_pct``, centre-crop
        ``image_size``; 0.875 = 256 -> 224 (A.5 / DeiT).
    repeated_augmentation: DeiT's repeated augmentation (timm ``RepeatAugSampler``: each image
        3 times per epoch, on different ranks); off (the authors' code). Not with
        ``train_samples_per_epoch``.
    normalize: ``"imagenet"`` (timm's ``IMAGENET_DEFAULT_MEAN/STD``) or ``"inception"`` (0.5 / 0.5).
    max_image_pixels: ImageNet only: refuse images with more pixels, naming the file; ``None`` =
        PIL's decompression-bomb limit.

    Example
    -------
    >>> dm = ClassificationDataModule(source="lfw", image_size=32, batch_size=4)
    >>> dm.num_classes, dm.class_names
    (2, ['non_face', 'face'])
    >>> batch = next(iter(dm.train_dataloader()))
    >>> batch["image"].shape, batch["label"].dtype, batch["index"].shape
    (torch.Size([4, 3, 32, 32]), torch.int64, torch.Size([4]))
    >>> dm.num_images("train"), dm.num_images("val"), dm.num_images("test"), dm.validation_split
    (150, 50, 50, 'val')
    """

    reported_split = "val"
    """The split :meth:`test_dataloader` serves, on which results are reported."""

    def __init__(
        self,
        source: str = "lfw",
        root: str | os.PathLike | None = None,
        num_classes: int | None = None,
        image_size: int = 224,
        batch_size: int = 128,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        train_samples_per_epoch: int | None = None,
        val_samples: int | None = None,
        drop_last: bool = True,
        selection: str = "val",
        selection_fraction: float = 0.01,
        selection_seed: int = 0,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        color_jitter: float | None = 0.4,
        re_prob: float = 0.0,
        re_mode: str = "pixel",
        interpolation: str = "bicubic",
        crop_pct: float = 0.875,
        repeated_augmentation: bool = False,
        normalize: str = "imagenet",
        max_image_pixels: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if source not in list_datasets("classification"):
            raise ValueError(f"{name} got source={source!r}; use one of {', '.join(list_datasets('classification'))} "
                             "('imagenet': data.root with train/ and val/; 'lfw': embedded, no download).")
        if selection not in CLASSIFICATION_SELECTIONS:
            raise ValueError(
                f"{name} got selection={selection!r}; use 'val' (pick the checkpoint on the validation split and report it "
                "there, the paper's and DeiT's protocol) or 'heldout' (pick on a slice held out of training, report on val)."
            )
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"{name} got normalize={normalize!r}; use one of {', '.join(map(repr, NORMALIZATIONS))}.")
        if auto_augment:
            _check_auto_augment(name, auto_augment)
        if re_mode not in _ERASE_MODES:
            # timm asserts on it only where random erasing is on (re_prob > 0): a traceback, or a value kept unchecked.
            raise ValueError(f"{name} got re_mode={re_mode!r}; use one of {', '.join(map(repr, _ERASE_MODES))} (timm's "
                             "random-erasing fill; 'pixel' is DeiT's).")
        if color_jitter is not None and (isinstance(color_jitter, bool) or not isinstance(color_jitter, (int, float))
                                         or color_jitter < 0):
            raise ValueError(f"{name} got color_jitter={color_jitter!r}; it is a colour-jitter strength >= 0 (0.4 in the "
                             "authors' code, 0.3 in DeiT's), or null (0) for none.")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"{name} got interpolation={interpolation!r}; use one of {', '.join(map(repr, _INTERPOLATIONS))} (A.5: 'bicubic').")
        if source == "imagenet" and root is None:
            raise ValueError("data.source='imagenet' needs data.root, the folder holding train/ and val/; set it, or use data=lfw (embedded, no download).")
        if source != "imagenet":
            for option, value in {"root": root, "max_image_pixels": max_image_pixels}.items():
                if value is not None:
                    raise ValueError(f"{option} applies to data.source='imagenet' only, but data.source={source!r}; remove it.")
        sizes = {"image_size": image_size, "batch_size": batch_size, "val_batch_size": val_batch_size, "num_classes": num_classes,
                 "train_samples_per_epoch": train_samples_per_epoch, "val_samples": val_samples, "max_image_pixels": max_image_pixels}
        for option, value in sizes.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} got {option}={value!r}; it must be an integer >= 1 (or null for the default).")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"{name} got num_workers={num_workers!r}; it must be an integer >= 0.")
        if not 0 < selection_fraction < 1:
            raise ValueError(f"{name} got selection_fraction={selection_fraction!r}; it must be in (0, 1), e.g. 0.01.")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"{name} got crop_pct={crop_pct!r}; it must be in (0, 1], e.g. 0.875 (resize 256, crop 224).")
        if not 0 <= re_prob <= 1:
            raise ValueError(f"{name} got re_prob={re_prob!r}; it is a probability in [0, 1] (0 = no random erasing).")
        if repeated_augmentation and train_samples_per_epoch is not None:
            raise ValueError("repeated_augmentation sets the epoch itself (timm's RepeatAugSampler); remove train_samples_per_epoch or turn it off.")
        if source == "lfw" and num_classes not in (None, len(LFW_CLASSES)):
            raise ValueError(f"the lfw subset has {len(LFW_CLASSES)} classes (non_face, face), but num_classes={num_classes!r}; set it to 2 or remove it.")
        root = None if root is None else str(root)  # plain data for the saved hyperparameters
        if source == "imagenet":
            # Before the task and its head are built from data.num_classes (the class folders): with one
            # folder their error would be about num_classes, and the problem is the data.
            try:
                found = len(class_folders(root))
            except DataError:
                found = None  # no layout yet: the scan at setup names what is missing
            if found == 1:
                _require_two_classes(root, found)
        self.keep_options(
            mean=tuple(float(v) for v in NORMALIZATIONS[normalize][0]),
            std=tuple(float(v) for v in NORMALIZATIONS[normalize][1]),
            _num_classes=num_classes,
            dataset=get_dataset_class(source, "classification")(root=root, max_image_pixels=max_image_pixels),
        )
        self.val_set: Dataset | None = None
        self.selection_set: Dataset | None = None

    # --- transforms ---------------------------------------------------------------------
    def train_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """timm's training transform for the options (random resized crop, flip, RandAugment, ...)."""
        h = self.hparams
        transform = create_transform(self.image_size, is_training=True, auto_augment=h.auto_augment,
                                     color_jitter=h.color_jitter, re_prob=h.re_prob, re_mode=h.re_mode,
                                     interpolation=h.interpolation, mean=self.mean, std=self.std)
        for step in getattr(transform, "transforms", []):
            for op in getattr(step, "ops", []):
                if getattr(op, "aug_fn", None) is timm_posterize:
                    op.aug_fn = posterize_keeping_zero_bits
        return transform

    def eval_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """timm's evaluation transform: resize to ``image_size / crop_pct``, centre crop, normalise."""
        h = self.hparams
        return create_transform(self.image_size, is_training=False, crop_pct=h.crop_pct,
                                interpolation=self._eval_interpolation(), mean=self.mean, std=self.std)

    def _eval_interpolation(self) -> str:
        """The evaluation resize's interpolation: ``interpolation``, with ``random`` (a training choice) as bicubic."""
        return "bicubic" if self.hparams.interpolation == "random" else self.hparams.interpolation

    # --- the harness contract ------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes: the given ``num_classes``, else the class folders of ``train/`` (2 for lfw)."""
        if self._num_classes is None:
            self._num_classes = len(self.class_names)
        return self._num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names in label order: the sorted wnids of ``train/``, or ``["non_face", "face"]``."""
        if self.dataset.classes is None:
            self.dataset.classes = class_folders(self.root)
        return self.dataset.classes

    @property
    def validation_split(self) -> str:
        """The split :meth:`val_dataloader` serves: ``"val"`` or ``"heldout"``."""
        return "heldout" if self.selection == "heldout" else "val"

    def reading(self) -> dict[str, Any]:
        """The data choices a run records with its results (plain data)."""
        h = self.hparams
        jitter_applied = bool(h.color_jitter) and not h.auto_augment
        return {
            "source": self.source,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "train_transform": "timm create_transform: random resized crop (0.08-1), hflip 0.5, auto_augment, colour jitter, random erasing",
            "auto_augment": h.auto_augment,
            "color_jitter": h.color_jitter,
            "color_jitter_applied": jitter_applied,
            "re_prob": h.re_prob,
            "re_mode": h.re_mode,
            "interpolation": h.interpolation,
            "eval_transform": (f"resize the short side to {math.floor(self.image_size / h.crop_pct)} ({self._eval_interpolation()}), "
                               f"centre crop {self.image_size}"),
            "crop_pct": h.crop_pct,
            "repeated_augmentation": self.repeated_augmentation,
            "normalize": {"name": h.normalize, "mean": list(self.mean), "std": list(self.std)},
            "drop_last": self.drop_last,
            "selection": self.selection,
            **({"selection_fraction": self.selection_fraction, "selection_seed": self.selection_seed} if self.selection == "heldout" else {}),
            "val_samples": self.val_samples,
        }

    @classmethod
    def run_label(cls, options: Mapping[str, Any]) -> str | None:
        return options.get("source", "lfw")

    # --- datasets ------------------------------------------------------------------------
    def check_files(self) -> None:
        self.dataset.check()

    def build(self) -> None:
        train, val, names = self.dataset.load()
        if self.dataset.files_on_disk:
            self._check_num_classes(len(self.dataset.classes))
        held_out: set[int] = set()
        if self.selection == "heldout":
            chosen = set(make_selection(names, self.selection_fraction, self.selection_seed))
            if not chosen:
                raise DataError(
                    f"no training file can be held out for checkpoint selection: every class of {self.source} has a single "
                    "training file, and it must stay in training. Use data.selection=val or a dataset with more files per class."
                )
            held_out = {position for position, name in enumerate(names) if name in chosen}
            if self.dataset.files_on_disk:
                self.selection_files = sorted(chosen)

        def images_of(pairs: list, transform: Callable) -> ClassificationImages:
            return ClassificationImages([image for image, _ in pairs], [label for _, label in pairs], transform, self.dataset.loader)

        self.train_set = images_of([pair for position, pair in enumerate(train) if position not in held_out], self.train_transform())
        self.val_set = evenly_spaced(images_of(val, self.eval_transform()), self.val_samples)
        if held_out:
            self.selection_set = images_of([train[position] for position in sorted(held_out)], self.eval_transform())

    def _check_num_classes(self, found: int) -> None:
        _require_two_classes(self.root, found)
        if self._num_classes is not None and self._num_classes != found:
            raise DataError(
                f"data.num_classes={self._num_classes} but {str(Path(self.root) / 'train')!r} has {found} class folders; "
                f"set data.num_classes={found} (the task and the backbone head take it from there) or point data.root at "
                "the full dataset."
            )
        self._num_classes = found

    def split_dataset(self, split: str) -> Dataset:
        """``"train"`` (without a held-out slice), ``"val"`` (what :meth:`val_dataloader` serves:
        the held-out slice with ``selection="heldout"``, else the validation split) or ``"test"``
        (the validation split, reported)."""
        return {"train": self.train_set, "val": self._selection_split(), "test": self.val_set}[split]

    def _selection_split(self) -> Dataset:
        return self.selection_set if self.selection == "heldout" else self.val_set

    # --- loaders -------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        if self.repeated_augmentation:
            rank, world_size = process_group()
            sampler: Sampler = _RepeatedAugmentationSampler(len(self.train_set), self.seed, num_replicas=world_size, rank=rank)
        else:
            sampler = self.seeded_sampler(self.train_set)
        if self.drop_last and len(sampler) < self.batch_size:
            raise ValueError(
                f"each training process gets {len(sampler)} images per epoch, fewer than data.batch_size={self.batch_size}, "
                "and data.drop_last=true drops that incomplete batch: no training step would run. Lower data.batch_size, "
                "raise data.train_samples_per_epoch, or set data.drop_last=false."
            )
        return self.training_loader(self.train_set, sampler=sampler, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        """The split that selects the checkpoint (:attr:`validation_split`), evaluation transform."""
        self.setup("validate")
        return self.evaluation_loader(self._selection_split())

    def test_dataloader(self) -> DataLoader:
        """The validation split, on which results are reported (evaluation transform)."""
        self.setup("test")
        return self.evaluation_loader(self.val_set)
