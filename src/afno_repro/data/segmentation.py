"""Few-shot semantic segmentation data (paper appendix A.4, Table 3 and Table 6's finetune).

Three sources, all served by :class:`FewShotSegmentationDataModule`:

- ``"datasetgan"``: DatasetGAN's release (Zhang et al., CVPR 2021; data licence CC BY-NC 4.0,
  non-commercial use only). Layout under ``root``::

      training_data/{face,car,cat}_processed/image_{i}.jpg     + image_mask{i}.npy
      testing_data/{face_34_class,car_20_class,cat_16_class}/   images (jpg/png) + .npy label maps

  Training uses the first 16 / 16 / 30 images by numeric index ``i`` (face / car / cat), as
  DatasetGAN does; the test images and ``.npy`` files are each sorted by name and paired by
  position (DatasetGAN's evaluation does the same). Classes: face 34, car 20, cat 16. Car
  training images are 512 wide and 384 high (rows 64:448 of the generator's 512x512 output, the
  frame DatasetGAN annotates); like every image here they are resized whole, as DatasetGAN resizes
  its stored files (it crops only the generator's own output). ``num_classes=12`` for car applies DatasetGAN's 20 -> 12
  ADE-Car mapping (:data:`CAR_12_CLASSES`) to train and test masks. The ADE-Car 12-class test
  set itself was never released, so this scores the released car_20 test images under that
  mapping, which is not the paper's car test set.
- ``"ddpm"``: DDPM-segmentation's release (Baranchuk et al., ICLR 2022), ``root`` being its
  ``datasets/`` folder: ``root/<name>/real/{train,test}/<stem>.{png,jpg,jpeg}`` with a
  same-stem ``<stem>.npy`` mask, paired by stem, sorted by file name. ``name`` is one of the
  release's ``ffhq_34``, ``cat_15``, ``horse_21``, ``celeba_19``, ``bedroom_28``, ``ade_bedroom_30``
  (or another folder in that layout); its integer suffix is the class count. As the release's
  interpreter does (:data:`afno_repro.releases.DDPM_SEGMENTATION`), the first ``training_number``
  / ``testing_number`` pairs in that order are used, pixels with the unscored label (255; 0 in
  ``bedroom_28``, whose classes are ids 1 ... 28, shifted to 0 ... 27) are mapped to
  :data:`IGNORE_INDEX`, and a training class under ``min_class_pixels`` (20) pixels, counted at
  256 x 256, becomes unscored rather than background (in ``ade_bedroom_30`` id 0 is "wall").
- ``"embedded"``: textured shapes on scikit-image photographs (:mod:`afno_repro.data.shapes`),
  no download; 5 classes, 16 training and 16 test images.

Preprocessing, in this order, at the original resolution: on TRAINING masks only, every class covering fewer than ``min_class_pixels`` pixels becomes
background (id 0), as DatasetGAN does to clean annotation slips (DDPM-segmentation: the unscored
label, as its interpreter does); the unscored label -> 255; the car 20 -> 12 mapping or
``bedroom_28``'s shift. A label map is read as the releases' loaders read it (:func:`load_mask`), and
one of another size than its image (the same frame) is resized like it. Then images are resized to ``S x S`` bilinearly with antialiasing and masks by
nearest neighbour at pixel centres (torch's ``nearest-exact``: output pixel ``i`` reads source pixel
``floor((i + 0.5) * H / S)``), so the two stay aligned and no new label id appears. PIL's NEAREST
rounds the source coordinate otherwise: at 512 -> 224 it reads another source row or column at
positions covering 20% of the output, so labels differ wherever those neighbours differ. The few-shot sets are tiny, so :meth:`setup` reads and
checks every file once and keeps the resized tensors in memory: a bad file fails before
training, with a :class:`~afno_repro.data.errors.DataError` naming it.

The test split is the only evaluation data these releases have. Every test item carries a fold
id over the sorted test files, cut as DatasetGAN's cross-validation cuts them (:func:`fold_ids`:
``num_folds`` blocks of ``n_test // num_folds`` images, the remainder in fold ``num_folds``, which
never selects and is always scored), for the three ways of picking the reported number
(``selection``): ``"max_over_run"`` (the best over the run on all test images, as the paper
reports), ``"heldout"`` (pick the checkpoint on fold 0, report on the other folds) and
``"fivefold"`` (the task picks on each fold in turn and reports on the rest).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from afno_repro.data.base import IGNORE_INDEX, DataModuleBase
from afno_repro.data.errors import DataError
from afno_repro.data.files import listing, load_image, require_distinct, require_root
from afno_repro.data.registry import get_dataset_class, list_datasets, register_dataset
from afno_repro.data.sampling import item_generator
from afno_repro.data.shapes import SHAPE_CLASSES, make_shapes
from afno_repro.releases import DATASETGAN, DATASETGAN_CLASSES, DDPM_COUNT_SIZE, DDPM_SEGMENTATION

__all__ = [
    "CAR_12_CLASSES",
    "DATASETGAN_CLASSES",
    "DDPMSegmentation",
    "DatasetGAN",
    "EmbeddedShapes",
    "FewShotSegmentationDataModule",
    "IGNORE_INDEX",
    "SEGMENTATION_SELECTIONS",
    "SegmentationPairs",
    "datasetgan_files",
    "ddpm_files",
    "load_mask",
    "centre_indices",
    "fold_ids",
    "resize_mask",
]

SEGMENTATION_SELECTIONS = ("max_over_run", "heldout", "fivefold")

_DATASETGAN_TRAIN_IMAGES = {category: images for category, (_, _, images) in DATASETGAN.items()}
_DATASETGAN_TEST_FOLDERS = {category: folder for category, (folder, _, _) in DATASETGAN.items()}

CAR_12_CLASSES = (
    "background", "body", "headlight", "licence plate", "mirror", "tail light",
    "tire", "window", "windshield", "door", "handle", "wheelhub",
)  # fmt: skip
# DatasetGAN's ADE-Car reduction: every non-zero car_20 part is "body" except these.
_CAR_20_TO_12 = np.ones(20, dtype=np.int64)
_CAR_20_TO_12[0] = 0
for _old, _new in {4: 2, 10: 3, 11: 4, 14: 5, 15: 6, 18: 7, 19: 8, 5: 9, 8: 10, 17: 11}.items():
    _CAR_20_TO_12[_old] = _new

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DATASETGAN_LAYOUT = (
    "training_data/{face,car,cat}_processed/image_<i>.jpg with image_mask<i>.npy, and "
    "testing_data/{face_34_class,car_20_class,cat_16_class}/ with images and .npy label maps"
)
_DDPM_LAYOUT = "<name>/real/{train,test}/<stem>.png (or .jpg) each with <stem>.npy"
_RESIZE = "image bilinear (antialiased), mask nearest"


def datasetgan_files(root: str | os.PathLike, category: str, split: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` file pairs of DatasetGAN's ``category`` (``face``, ``car``, ``cat``), ``split``.

    ``"train"``: the first 16 / 16 / 30 indices ``i`` of ``image_{i}.jpg`` / ``image_mask{i}.npy``
    (``.jpeg`` and ``.png`` images are accepted too); ``"test"``: the sorted images paired by
    position with the sorted ``.npy`` files. Raises :class:`DataError` naming the folder or file
    when the layout is wrong, a split is empty, a file lacks its partner, or one file is listed
    twice through a link.
    """
    if category not in DATASETGAN_CLASSES:
        raise ValueError(f"unknown DatasetGAN category {category!r}; use one of {', '.join(DATASETGAN_CLASSES)}.")
    root = require_root(root, "DatasetGAN", _DATASETGAN_LAYOUT)
    if split == "train":
        folder = root / "training_data" / f"{category}_processed"
    elif split == "test":
        folder = root / "testing_data" / _DATASETGAN_TEST_FOLDERS[category]
    else:
        raise ValueError(f"datasetgan_files got split={split!r}; use 'train' or 'test'.")
    if not folder.is_dir():
        inside = root / "annotation" / folder.relative_to(root)
        if inside.is_dir():  # the release's top folder: its annotation/ holds training_data/ and testing_data/
            raise DataError(
                f"DatasetGAN {category} {split} folder {str(folder)!r} is missing, but {str(root / 'annotation')!r} "
                f"holds the release's training_data/ and testing_data/: set data.root={root / 'annotation'}."
            )
        raise DataError(
            f"DatasetGAN {category} {split} folder {str(folder)!r} is missing; {listing(folder.parent)}. data.root must "
            f"be the folder of DatasetGAN's release holding {_DATASETGAN_LAYOUT}."
        )
    if split == "test":
        return _datasetgan_test_files(folder)
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for file in folder.iterdir():
        if match := re.fullmatch(r"image_(\d+)(\.jpe?g|\.png)", file.name, flags=re.IGNORECASE):
            index = int(match[1])
            if index in images:
                raise DataError(f"{str(images[index])!r} and {str(file)!r} are both training image {index}; delete one.")
            images[index] = file
        elif match := re.fullmatch(r"image_mask(\d+)\.npy", file.name):
            masks[int(match[1])] = file
    wanted = _DATASETGAN_TRAIN_IMAGES[category]
    indices = sorted(images.keys() | masks.keys())[:wanted]
    if not indices:
        raise DataError(f"DatasetGAN training folder {str(folder)!r} has no image_<i>.jpg / image_mask<i>.npy files; {listing(folder)}. Re-extract training_data from the release.")
    for index in indices:
        if index not in masks:
            raise DataError(f"training image {str(images[index])!r} has no mask: {str(folder / f'image_mask{index}.npy')!r} is missing. Restore it from the release.")
        if index not in images:
            raise DataError(f"training mask {str(masks[index])!r} has no image: {str(folder / f'image_{index}.jpg')!r} is missing. Restore it from the release.")
    if len(indices) < wanted:
        raise DataError(
            f"DatasetGAN trains {category} on {wanted} annotated images, but {str(folder)!r} holds only {len(indices)} "
            f"image/mask pairs. Restore the missing ones from the release."
        )
    return _distinct([(images[index], masks[index]) for index in indices], f"DatasetGAN training folder {str(folder)!r}")


def _datasetgan_test_files(folder: Path) -> list[tuple[Path, Path]]:
    images = sorted((file for file in folder.iterdir() if file.suffix.lower() in _IMAGE_SUFFIXES), key=lambda file: file.name)
    masks = sorted((file for file in folder.iterdir() if file.suffix == ".npy"), key=lambda file: file.name)
    if not images and not masks:
        raise DataError(f"DatasetGAN test folder {str(folder)!r} has no images and no .npy label maps; {listing(folder)}. Re-extract testing_data from the release.")
    if len(images) != len(masks):
        # Pairing is by sorted position, so which file lacks its partner cannot be known; name the surplus.
        surplus = images[len(masks) :] if len(images) > len(masks) else masks[len(images) :]
        raise DataError(
            f"DatasetGAN test folder {str(folder)!r} has {len(images)} images but {len(masks)} .npy label maps; they are "
            f"paired in sorted order, so the counts must match (unpaired after sorting: "
            f"{', '.join(file.name for file in surplus[:5])}). Restore the missing files or remove the extra ones."
        )
    return _distinct(list(zip(images, masks)), f"DatasetGAN test folder {str(folder)!r}")


def ddpm_files(root: str | os.PathLike, name: str, split: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` file pairs of DDPM-segmentation's dataset ``name``, ``split`` (``"train"``
    or ``"test"``), paired by stem and sorted by image file name. Raises :class:`DataError` naming
    the folder or file when the layout is wrong, the split is empty, a file lacks its partner, or
    one file is listed twice through a link.
    """
    if split not in ("train", "test"):
        raise ValueError(f"ddpm_files got split={split!r}; use 'train' or 'test'.")
    root = require_root(root, "DDPM-segmentation", f"{_DDPM_LAYOUT} (the release's datasets/ folder)")
    if not (root / name).is_dir():
        raise DataError(f"there is no DDPM-segmentation dataset {name!r} in data.root: {listing(root)}. Set data.name to one of those, or data.root to the release's datasets/ folder.")
    folder = root / name / "real" / split
    if not folder.is_dir():
        raise DataError(f"DDPM-segmentation {split} folder {str(folder)!r} is missing; {listing(folder.parent)}. The layout is {_DDPM_LAYOUT}.")
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for file in folder.iterdir():
        if file.suffix.lower() in _IMAGE_SUFFIXES:
            if file.stem in images:
                raise DataError(f"{str(images[file.stem])!r} and {str(file)!r} share the stem of one mask; delete one of them.")
            images[file.stem] = file
        elif file.suffix == ".npy":
            masks[file.stem] = file
    if not images and not masks:
        raise DataError(f"DDPM-segmentation {split} folder {str(folder)!r} has no images; {listing(folder)}. Re-extract {name} from the release.")
    if without_mask := sorted(images.keys() - masks.keys()):
        stem = without_mask[0]
        raise DataError(f"image {str(images[stem])!r} has no mask: {str(folder / (stem + '.npy'))!r} is missing. Restore it from the release or delete the image.")
    if without_image := sorted(masks.keys() - images.keys()):
        stem = without_image[0]
        raise DataError(f"mask {str(masks[stem])!r} has no image ({stem}.png or .jpg) in {str(folder)!r}. Restore it from the release or delete the mask.")
    pairs = [(images[stem], masks[stem]) for stem in sorted(images, key=lambda stem: images[stem].name)]
    return _distinct(pairs, f"DDPM-segmentation {split} folder {str(folder)!r}")


def _distinct(pairs: list[tuple[Path, Path]], dataset: str) -> list[tuple[Path, Path]]:
    """``pairs``, after checking that no image and no mask is one file reached through two paths (a link)."""
    require_distinct((image for image, _ in pairs), dataset)
    require_distinct((mask for _, mask in pairs), dataset)
    return pairs


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A label map ``.npy`` file as an int64 ``(H, W)`` array.

    Read as the releases' own loaders read them: an ``(H, W, 1)`` or ``(1, H, W)`` array is squeezed, an ``(H, W, C)``
    array whose channels are equal is its first channel (DatasetGAN's test loader keeps channel 0), and
    a float array holding whole numbers is cast. Raises :class:`DataError` naming the file when it
    cannot be read as a NumPy array, or is anything else (channels that differ are a colour-coded map,
    not class ids; fractions are not class ids).
    """
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"mask file {str(path)!r} cannot be read as a NumPy .npy array ({error}). It is corrupt or not a label map; restore it from the release.") from error
    if isinstance(mask, np.ndarray) and mask.ndim > 2 and np.squeeze(mask).ndim == 2:
        mask = np.squeeze(mask)  # (1, H, W) or (H, W, 1)
    if isinstance(mask, np.ndarray) and mask.ndim == 3 and (mask == mask[:, :, :1]).all():
        mask = mask[:, :, 0]
    numeric = isinstance(mask, np.ndarray) and (np.issubdtype(mask.dtype, np.integer)
                                                or (np.issubdtype(mask.dtype, np.floating) and np.isfinite(mask).all()
                                                    and (mask == np.round(mask)).all()))
    if not numeric or mask.ndim != 2:
        shape = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        dtype = mask.dtype if isinstance(mask, np.ndarray) else "-"
        what = (" whose channels differ (a colour-coded map?)" if isinstance(mask, np.ndarray) and mask.ndim == 3
                else " with values that are not whole numbers" if isinstance(mask, np.ndarray) and mask.ndim == 2 else "")
        raise DataError(f"mask file {str(path)!r} holds a {dtype} array of shape {shape}{what}; a label map must be a 2-D array (H, W) of integer class ids. Restore it from the release.")
    return mask.astype(np.int64)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W)`` label map to ``(size, size)`` at pixel centres.

    Every output pixel takes the label of the input pixel under its centre (torch's ``nearest-exact``,
    not PIL's NEAREST, which rounds differently; :func:`centre_indices`), so no new label id appears and the map stays aligned
    with an image resized bilinearly.

    Example
    -------
    >>> resize_mask(np.array([[0, 1], [2, 3]]), 4).tolist()
    [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    """
    height, width = mask.shape
    return mask[np.ix_(centre_indices(height, size), centre_indices(width, size))]


def centre_indices(source: int, target: int) -> np.ndarray:
    """For each of ``target`` pixels along an axis, the index of the ``source`` pixel under its centre:
    ``floor((i + 1/2) * source / target)``, computed in integers so that it is exact at every size (torch's
    ``nearest-exact`` computes it in float32 and takes the pixel before at some exact boundaries, e.g. 2 -> 41).

    Example
    -------
    >>> centre_indices(2, 5).tolist()
    [0, 0, 1, 1, 1]
    """
    return np.minimum((2 * np.arange(target, dtype=np.int64) + 1) * source // (2 * target), source - 1)


def fold_ids(count: int, num_folds: int) -> list[int]:
    """The fold of each of ``count`` sorted test images, as DatasetGAN's cross-validation cuts them: ``num_folds``
    contiguous blocks of ``count // num_folds`` images, each selecting once, and the remainder in fold
    ``num_folds``, which never selects and is always scored. With fewer images than folds (only
    ``selection=max_over_run`` allows it), ``floor(num_folds * i / count)``.

    >>> fold_ids(7, 5), fold_ids(10, 5), fold_ids(3, 5)
    ([0, 1, 2, 3, 4, 5, 5], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], [0, 1, 3])
    """
    block = count // num_folds
    if block == 0:
        return [num_folds * index // count for index in range(count)]
    return [min(index // block, num_folds) for index in range(count)]


def _drop_small_classes(mask: np.ndarray, min_pixels: int, ignore_label: int | None, *, to: int = 0,
                        counted_at: int | None = None) -> np.ndarray:
    """Classes of ``mask`` covering fewer than ``min_pixels`` pixels become ``to`` (DatasetGAN: background 0;
    DDPM-segmentation: its unscored label), counted on the mask as it is or, with ``counted_at``, resized
    to ``counted_at`` x ``counted_at`` (a class that vanishes there counts 0). ``ignore_label`` stays, and
    so does class 0 when it is what small classes become (DatasetGAN); DDPM-segmentation's rule takes every
    class but its unscored one, class 0 included.

    >>> _drop_small_classes(np.array([[1, 1, 2], [1, 1, 1]]), 2, None).tolist()
    [[1, 1, 0], [1, 1, 1]]
    >>> _drop_small_classes(np.array([[1, 1, 2], [1, 1, 1]]), 2, 255, to=255).tolist()
    [[1, 1, 255], [1, 1, 1]]
    >>> _drop_small_classes(np.array([[1, 1, 0], [1, 1, 1]]), 2, 255, to=255).tolist()
    [[1, 1, 255], [1, 1, 1]]
    """
    ids = np.unique(mask)
    counted = resize_mask(mask, counted_at) if counted_at else mask
    found, found_counts = np.unique(counted, return_counts=True)  # a subset of ids: resizing adds no id
    counts = np.zeros(len(ids), dtype=np.int64)
    counts[np.searchsorted(ids, found)] = found_counts
    small = ids[(counts < min_pixels) & (ids != to) & (ids != ignore_label)]
    return np.where(np.isin(mask, small), to, mask) if small.size else mask


def _load_pair(
    image_file: Path,
    mask_file: Path,
    *,
    image_size: int,
    label_count: int,
    ignore_label: int | None,
    min_class_pixels: int,
    label_map: np.ndarray | None,
    release: str,
    small_to: int = 0,
    small_counted_at: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, check and preprocess one pair (see the module docstring for the order); ``release``
    says where a good copy of a corrupt file comes from."""
    image = load_image(str(image_file), dataset=release)
    mask = load_mask(mask_file)
    height, width = image.shape[-2:]
    if (height, width) != mask.shape and height * mask.shape[1] != width * mask.shape[0]:
        # Another size of the same frame is resized to S x S like the image, as the releases' loaders do.
        raise DataError(
            f"image {str(image_file)!r} is {width}x{height} (width x height) but its mask "
            f"{str(mask_file)!r} is {mask.shape[1]}x{mask.shape[0]}, another shape of frame, so they cannot be "
            "aligned. Check that the two files belong together, or restore the pair from the release."
        )
    ids = np.unique(mask)
    bad = ids[((ids < 0) | (ids >= label_count)) & (ids != ignore_label)]
    if bad.size:
        unscored = f" or the unscored label {ignore_label}" if ignore_label is not None else ""
        raise DataError(
            f"mask {str(mask_file)!r} has label id {bad[0]}, outside the valid ids 0 ... {label_count - 1}{unscored}. "
            + ("Check that data.num_classes and data.ignore_label match the dataset" if release.lower().startswith("ddpm")
               # data.ignore_label is DDPM-segmentation's option only: naming it here sent users round in circles.
               else "DatasetGAN's masks have no unscored label. Check that data.num_classes matches the dataset"
               if release.lower().startswith("datasetgan") else "Check that data.num_classes matches the dataset")
            + ", or restore the file from the release."
        )
    if min_class_pixels > 0:
        mask = _drop_small_classes(mask, min_class_pixels, ignore_label, to=small_to, counted_at=small_counted_at)
    if ignore_label is not None and ignore_label != IGNORE_INDEX:
        mask = np.where(mask == ignore_label, IGNORE_INDEX, mask)
    if label_map is not None:
        mask = np.where(mask == IGNORE_INDEX, IGNORE_INDEX, label_map[np.minimum(mask, len(label_map) - 1)])
    if tuple(image.shape[-2:]) != (image_size, image_size):
        image = TF.resize(image, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return image, torch.from_numpy(np.ascontiguousarray(resize_mask(mask, image_size)))


class SegmentationPairs(Dataset):
    """Images and label maps held in memory, served as items of the segmentation batch contract.

    An item is a dict: ``"image"`` float32 ``(3, S, S)`` in ``[0, 1]``, ``"mask"`` int64
    ``(S, S)``, ``"index"`` (its position here) and ``"fold"`` (its fold id, ``-1`` without
    folds). Keys are indices, or the ``(index, image_seed, mask_seed)`` tuples of the training
    sampler: with ``hflip`` the pair is then flipped horizontally with probability 1/2, drawn
    from a generator seeded by ``image_seed`` (the global random state is left alone).

    Parameters
    ----------
    images: ``N`` tensors ``(3, S, S)``, uint8 or float in ``[0, 1]`` (or one stacked tensor).
    masks: ``N`` int64 tensors ``(S, S)``.
    folds: ``N`` fold ids; ``None`` = ``-1`` for every item (training data).
    hflip: random horizontal flips for tuple keys.

    Example
    -------
    >>> pairs = SegmentationPairs(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.ones(2, 4, 4, dtype=torch.long), folds=[0, 1])
    >>> item = pairs[1]
    >>> item["image"].dtype, item["mask"].shape, item["index"], item["fold"]
    (torch.float32, torch.Size([4, 4]), 1, 1)
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        masks: Sequence[torch.Tensor] | torch.Tensor,
        folds: Sequence[int] | None = None,
        hflip: bool = False,
    ) -> None:
        if len(images) != len(masks) or (folds is not None and len(folds) != len(images)):
            raise ValueError(f"SegmentationPairs got {len(images)} images, {len(masks)} masks and {len(folds) if folds is not None else 'no'} folds; give one mask (and fold) per image.")
        self.images = images
        self.masks = masks
        self.folds = list(folds) if folds is not None else [-1] * len(images)
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, image_seed, _ = key
            flip = self.hflip and float(torch.rand((), generator=item_generator(image_seed))) < 0.5
        else:
            index, flip = key, False
        image, mask = self.images[index], self.masks[index]
        image = image.float().div(255) if image.dtype == torch.uint8 else image.float()
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        return {"image": image, "mask": mask, "index": index, "fold": self.folds[index]}


@register_dataset("segmentation", "embedded")
class EmbeddedShapes:
    """The embedded shapes set (:func:`~afno_repro.data.shapes.make_shapes`): 5 classes, no download."""

    def __init__(self, root: None = None, category: str = "face", name: None = None, num_classes: int | None = None,
                 ignore_label: None = None) -> None:
        if num_classes not in (None, len(SHAPE_CLASSES)):
            raise ValueError(f"the embedded shapes set has {len(SHAPE_CLASSES)} classes, but num_classes={num_classes!r}; remove num_classes or set it to {len(SHAPE_CLASSES)}.")
        self.num_classes = len(SHAPE_CLASSES)
        self.class_names: list[str] | None = list(SHAPE_CLASSES)
        self.ignore_label = None
        self.label = "embedded_shapes"
        self.described: dict[str, Any] = {}
        self.preprocessing: dict[str, Any] = {}

    def check(self) -> None:
        """Nothing on disk."""

    def load(self, split: str, image_size: int, min_class_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and masks of ``split``, drawn at ``image_size`` (exact masks: nothing to clean)."""
        return make_shapes(split, image_size)


@register_dataset("segmentation", "datasetgan")
class DatasetGAN:
    """DatasetGAN's release (module docstring): ``category`` face / car / cat; car also 12 classes."""

    def __init__(self, root: str, category: str = "face", name: None = None, num_classes: int | None = None,
                 ignore_label: None = None) -> None:
        if category not in DATASETGAN_CLASSES:
            raise ValueError(f"unknown DatasetGAN category {category!r}; use one of {', '.join(DATASETGAN_CLASSES)}.")
        valid = (DATASETGAN_CLASSES[category], 12) if category == "car" else (DATASETGAN_CLASSES[category],)
        if num_classes not in (None, *valid):
            raise ValueError(f"DatasetGAN {category} has num_classes {' or '.join(map(str, valid))} (12: the ADE-Car mapping), not {num_classes!r}; remove num_classes or set it to one of those.")
        self.root, self.category = root, category
        self.num_classes = num_classes or valid[0]
        self.class_names = list(CAR_12_CLASSES) if self.num_classes == 12 else None
        self.ignore_label = None
        self.label = f"datasetgan/{category}"
        self.described = {"category": category}
        self.preprocessing = {}

    def load(self, split: str, image_size: int, min_class_pixels: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Checked, preprocessed and resized images and masks of ``split`` (module docstring)."""
        options = {
            "label_count": DATASETGAN_CLASSES[self.category],
            "ignore_label": None,
            "label_map": _CAR_20_TO_12 if self.num_classes == 12 and self.category == "car" else None,
            "release": f"DatasetGAN's release (its {'training_data' if split == 'train' else 'testing_data'}/ folder)",
        }
        return _load_pairs(datasetgan_files(self.root, self.category, split), image_size, min_class_pixels, options)

    def check(self) -> None:
        """Both splits' file pairs listed, none read."""
        for split in ("train", "test"):
            datasetgan_files(self.root, self.category, split)


@register_dataset("segmentation", "ddpm")
class DDPMSegmentation:
    """A DDPM-segmentation dataset ``name`` (module docstring). The six the release names take their facts
    from :data:`afno_repro.releases.DDPM_SEGMENTATION`; another folder in its layout takes its class count
    from its ``_<count>`` suffix and uses every file."""

    def __init__(self, root: str, category: str = "face", name: str | None = None, num_classes: int | None = None,
                 ignore_label: int | None = None) -> None:
        if name is None:
            raise ValueError("data.source='ddpm' needs data.name, the dataset folder under data.root, e.g. ffhq_34, cat_15, horse_21, celeba_19, bedroom_28 or ade_bedroom_30.")
        known = DDPM_SEGMENTATION.get(name)
        if num_classes is None:
            suffix = re.fullmatch(r".*_(\d+)", name)
            if suffix is None or int(suffix[1]) < 1:
                raise ValueError(f"the class count of DDPM dataset {name!r} cannot be read from its name (no _<count> suffix, as in ffhq_34); set data.num_classes.")
            num_classes = int(suffix[1])
        self.root, self.name, self.num_classes = root, name, num_classes
        self.class_names = None
        self.ignore_label = ignore_label if ignore_label is not None else known[1] if known else IGNORE_INDEX
        # bedroom_28: ids 0 ... 28 with 0 unscored; its classes 1 ... 28 become 0 ... 27.
        shifted = self.ignore_label == 0 and (known is None or known[0] == num_classes + 1)
        self.label_ids = num_classes + 1 if shifted else num_classes
        self.label_map = np.arange(-1, num_classes, dtype=np.int64) if shifted else None
        self.images = {"train": known[2], "test": known[3]} if known else None
        self.label = f"ddpm/{name}"
        self.described = {"name": name, "ignore_label": self.ignore_label}
        self.preprocessing = {"small_classes": f"to the unscored label, counted at {DDPM_COUNT_SIZE}x{DDPM_COUNT_SIZE}"}
        if shifted:
            self.preprocessing["label_ids"] = f"1 ... {num_classes} -> 0 ... {num_classes - 1} (0 is unscored)"
        if self.images:
            self.preprocessing["first_images"] = dict(self.images)  # at most: the release's counts

    def load(self, split: str, image_size: int, min_class_pixels: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Checked, preprocessed and resized images and masks of ``split`` (module docstring)."""
        options = {"label_count": self.label_ids, "ignore_label": self.ignore_label,
                   "label_map": self.label_map, "small_to": self.ignore_label, "small_counted_at": DDPM_COUNT_SIZE,
                   "release": f"DDPM-segmentation's release (its datasets/{self.name}/real/{split}/ folder)"}
        files = ddpm_files(self.root, self.name, split)
        if self.images:  # the release's interpreter takes the first N in sorted order
            files = files[: self.images[split]]
        return _load_pairs(files, image_size, min_class_pixels, options)

    def check(self) -> None:
        """Both splits' file pairs listed, none read."""
        for split in ("train", "test"):
            ddpm_files(self.root, self.name, split)


def _load_pairs(files: list[tuple[Path, Path]], image_size: int, min_class_pixels: int, options: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    pairs = [_load_pair(image, mask, image_size=image_size, min_class_pixels=min_class_pixels, **options) for image, mask in files]
    return [image for image, _ in pairs], [mask for _, mask in pairs]


class FewShotSegmentationDataModule(DataModuleBase):
    """Few-shot segmentation data (paper A.4): DatasetGAN's or DDPM-segmentation's release, or the
    embedded shapes set (see the module docstring for layouts and preprocessing).

    Batches are dicts: ``"image"`` float32 ``(B, 3, S, S)`` in ``[0, 1]``; ``"mask"`` int64
    ``(B, S, S)``, class ids in ``[0, num_classes)`` or :attr:`ignore_index` (255) for pixels not
    scored; ``"index"`` int64 ``(B,)``, the item's position in its split (sorted file order for
    test); ``"fold"`` int64 ``(B,)``, the test item's fold (:func:`fold_ids`; ``num_folds`` for the
    remainder that never selects) and ``-1`` for training items.

    :meth:`val_dataloader` serves all test images (:attr:`validation_split` is ``"test"``);
    :meth:`test_dataloader` serves the reported ones: all of them, except with
    ``selection="heldout"``, where fold 0 picks the checkpoint and folds 1 ... are reported
    (their ``index`` and ``fold`` stay those of the full test split).

    Training order and flips are seeded as in the inpainting DataModule: the same ``seed`` gives
    the same batches for any ``num_workers``; under DDP each rank trains on its share of the
    epoch's order and evaluates its unpadded share of the test images.

    Parameters
    ----------
    source: ``"datasetgan"``, ``"ddpm"`` or ``"embedded"`` (no download).
    root: datasetgan: the folder holding ``training_data/`` and ``testing_data/``; ddpm: the
        release's ``datasets/`` folder holding ``<name>/real/...``; not used by ``"embedded"``.
    category: datasetgan only: ``"face"``, ``"car"`` or ``"cat"`` (ignored by other sources).
    name: ddpm only: the dataset folder, e.g. ``"ffhq_34"``, ``"bedroom_28"``.
    num_classes: ``None`` = the dataset's own count (datasetgan 34 / 20 / 16, ddpm the suffix of
        ``name``, embedded 5); datasetgan car also takes 12 (the ADE-Car mapping).
    image_size: side ``S`` of the square images (224 in the paper).
    batch_size: training batch size; ``val_batch_size`` (evaluation) defaults to it.
    num_workers: data-loader worker processes (batches do not depend on it).
    train_samples_per_epoch: training items per epoch; ``None`` = one pass over the training
        images, a larger value repeats them in a fresh shuffled order.
    min_class_pixels: on training masks, classes covering fewer pixels become background (0;
        ddpm: unscored, counted at 256 x 256); 0 turns it off.
    hflip: random horizontal flips of training pairs (the paper is silent; off by default).
    selection: ``"max_over_run"``, ``"heldout"`` or ``"fivefold"`` (module docstring).
    num_folds: folds the sorted test split is cut into (>= 2).
    ignore_label: ddpm only: the id in the release's masks for unscored pixels; ``None`` = 255,
        0 for ``bedroom_28``. It becomes 255 in the batches.
    seed: seeds the training order and flips.
    pin_memory: passed to the data loaders.

    Example
    -------
    >>> dm = FewShotSegmentationDataModule(image_size=32, batch_size=4)
    >>> dm.num_classes, dm.class_names[1]
    (5, 'disk')
    >>> batch = next(iter(dm.val_dataloader()))
    >>> batch["image"].shape, batch["mask"].dtype, batch["index"].tolist(), batch["fold"].tolist()
    (torch.Size([4, 3, 32, 32]), torch.int64, [0, 1, 2, 3], [0, 0, 0, 1])
    >>> dm.num_images("train"), dm.num_images("val"), dm.num_images("test")
    (16, 16, 16)
    """

    def __init__(
        self,
        source: str = "embedded",
        root: str | os.PathLike | None = None,
        category: str = "face",
        name: str | None = None,
        num_classes: int | None = None,
        image_size: int = 224,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        train_samples_per_epoch: int | None = None,
        min_class_pixels: int = 30,
        hflip: bool = False,
        selection: str = "max_over_run",
        num_folds: int = 5,
        ignore_label: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if source not in list_datasets("segmentation"):
            raise ValueError(f"FewShotSegmentationDataModule got source={source!r}; use one of {', '.join(list_datasets('segmentation'))} ('embedded' needs no download).")
        if selection not in SEGMENTATION_SELECTIONS:
            raise ValueError(
                f"FewShotSegmentationDataModule got selection={selection!r}; use 'max_over_run' (best over the run on all "
                "test images, the paper's reading), 'heldout' (pick on fold 0, report on the others) or 'fivefold'."
            )
        if source != "embedded" and root is None:
            layout = _DATASETGAN_LAYOUT if source == "datasetgan" else f"{_DDPM_LAYOUT} (the release's datasets/ folder)"
            raise ValueError(f"data.source={source!r} needs data.root, the folder holding {layout}; set it, or use data.source=embedded (no download).")
        not_applicable = {"root": (root, ("datasetgan", "ddpm")), "name": (name, ("ddpm",)), "ignore_label": (ignore_label, ("ddpm",))}
        for option, (value, sources) in not_applicable.items():
            if value is not None and source not in sources:
                raise ValueError(f"{option} applies to data.source={' or '.join(map(repr, sources))} only, but data.source={source!r}; remove it.")
        sizes = {"image_size": image_size, "batch_size": batch_size, "val_batch_size": val_batch_size, "train_samples_per_epoch": train_samples_per_epoch}
        for option, value in sizes.items():
            if value is not None and value < 1:
                raise ValueError(f"FewShotSegmentationDataModule got {option}={value!r}; it must be >= 1 (or null for the default).")
        for option, value in {"num_workers": num_workers, "min_class_pixels": min_class_pixels, "ignore_label": ignore_label}.items():
            if value is not None and value < 0:
                raise ValueError(f"FewShotSegmentationDataModule got {option}={value!r}; it must be >= 0.")
        if num_folds < 2:
            raise ValueError(f"FewShotSegmentationDataModule got num_folds={num_folds!r}; it must be >= 2 (DatasetGAN cross-validates on 5).")
        if not isinstance(hflip, bool):
            # Read as a switch: 2 (or 0.5, a probability elsewhere) meant "on" without a word.
            raise ValueError(f"FewShotSegmentationDataModule got hflip={hflip!r}; it is a switch: true (flip each training "
                             "pair with probability 1/2) or false (the default).")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"FewShotSegmentationDataModule got num_classes={num_classes!r}; it must be >= 1 (or null for the dataset's own count).")
        root = None if root is None else str(root)  # plain data for the saved hyperparameters
        dataset = get_dataset_class(source, "segmentation")(root=root, category=category, name=name, num_classes=num_classes, ignore_label=ignore_label)
        ignore_label = dataset.ignore_label
        self.keep_options(
            num_classes=dataset.num_classes, class_names=dataset.class_names, ignore_index=IGNORE_INDEX,
            category=category if source == "datasetgan" else None, dataset=dataset,
        )
        self.val_set: SegmentationPairs | None = None
        self.test_set: Dataset | None = None

    @property
    def validation_split(self) -> str:
        """The split :meth:`val_dataloader` serves: always ``"test"`` (these releases have no other)."""
        return "test"

    @property
    def reported_split(self) -> str:
        """What :meth:`test_dataloader` serves: the test images, without fold 0 under ``heldout``."""
        return "test (folds 1-{})".format(self.num_folds - 1) if self.selection == "heldout" else "test"

    @classmethod
    def run_label(cls, options: Mapping[str, Any]) -> str | None:
        source = options.get("source", "embedded")
        if source == "embedded":
            return "embedded_shapes"
        return f"{source}/{options.get('category') if source == 'datasetgan' else options.get('name')}"

    def reading(self) -> dict[str, Any]:
        """The data choices a run must record with its results (plain data)."""
        return {
            "source": self.source,
            **self.dataset.described,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "resize": _RESIZE,
            "min_class_pixels": self.min_class_pixels,
            "hflip": self.hflip,
            "selection": self.selection,
            "num_folds": self.num_folds,
            **self.dataset.preprocessing,
        }

    def check_files(self) -> None:
        self.dataset.check()

    def build(self) -> None:
        train = self.dataset.load("train", self.image_size, self.min_class_pixels)
        test = self.dataset.load("test", self.image_size, 0)
        n_test = len(test[0])
        if self.selection != "max_over_run" and n_test < self.num_folds:
            raise DataError(
                f"the test split has {n_test} images, fewer than data.num_folds={self.num_folds}, so some folds would be "
                "empty; lower num_folds or use data.selection=max_over_run."
            )
        folds = fold_ids(n_test, self.num_folds)
        self.train_set = SegmentationPairs(*train, hflip=self.hflip)
        self.val_set = SegmentationPairs(*test, folds=folds)
        if self.selection == "heldout":
            self.test_set = Subset(self.val_set, [index for index, fold in enumerate(folds) if fold != 0])
        else:
            self.test_set = self.val_set

    def split_dataset(self, split: str) -> Dataset:
        """``"train"``, ``"val"`` (all test images) or ``"test"`` (the reported ones)."""
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self.training_loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        """All test images, each with its fold id."""
        self.setup("validate")
        return self.evaluation_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        """The reported test images: all of them, or folds 1 ... with ``selection="heldout"``."""
        self.setup("test")
        return self.evaluation_loader(self.test_set)
