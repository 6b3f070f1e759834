"""ImageNet-1K from the standard folder layout, the seeded class-balanced subset of Table 6, and
the held-out selection slice of the training split.

Layout (what ``torchvision.datasets.ImageFolder`` expects, one folder per WordNet id)::

    root/train/n01440764/n01440764_10026.JPEG
    root/val/n01440764/ILSVRC2012_val_00000293.JPEG

The paper does not state its augmentation for inpainting or for the Table 6 runs. Ours: training
images get a random resized crop (scale 0.35 ... 1 of the area, aspect ratio 3/4 ... 4/3, as
torchvision's ``RandomResizedCrop``) and a horizontal flip, both drawn from a
``torch.Generator`` passed in (:class:`ImageNetTransform`), so per-item seeding leaves torch's
global random state alone; evaluation images are resized to ``image_size * 256 / 224`` on the
short side and centre-cropped (the common ImageNet evaluation crop).

Folders are scanned by :func:`scan` (also for classification, :mod:`afno_repro.data.classification`)
and files read by :func:`~afno_repro.data.files.load_image`: any bit depth and colour mode PIL
opens becomes RGB scaled to ``[0, 1]``; a file that cannot be used raises
:class:`~afno_repro.data.errors.DataError` naming it (``max_image_pixels`` sets the size limit).

Table 6 trains on a 10% subset: :func:`make_subset` draws a fixed, seeded, class-balanced list of
training files, :func:`save_subset` / :func:`load_subset` write and read it as text so each run
keeps the exact list it used and another run can reuse it via ``subset_file``.
:func:`make_selection` draws, from the training files in use, the class-balanced slice that is
held out of training to select checkpoints on.
"""

from __future__ import annotations

import copy
import math
import os
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension
from torchvision.transforms.v2 import functional as F

from afno_repro.data.errors import DataError
from afno_repro.data.files import load_image, require_distinct, walk_files
from afno_repro.data.masks import derive_seed
from afno_repro.data.registry import register_dataset

__all__ = [
    "ImageNetFolder",
    "IMAGENET_ARCHIVE",
    "ImageNetTransform",
    "SPLITS",
    "check_layout",
    "class_folders",
    "load_subset",
    "make_selection",
    "make_subset",
    "random_resized_crop_params",
    "save_subset",
    "scan",
]

SPLITS = ("train", "val")
_LAYOUT = "root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG"
# Where a good copy of a corrupt image comes from, for load_image's message.
IMAGENET_ARCHIVE = "the ImageNet archive (ILSVRC2012_img_train.tar / ILSVRC2012_img_val.tar)"

def _split_dir(root: str | os.PathLike, split: str) -> Path:
    """``root/split`` after checking that the layout is there; ``DataError`` naming the fix."""
    if split not in SPLITS:
        raise ValueError(f"ImageNet split {split!r} is not valid; use one of {', '.join(map(repr, SPLITS))}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"ImageNet root {str(root)!r} does not exist or is not a folder. Point data.root at the folder "
            f"that holds the ImageNet layout {_LAYOUT}, or use data=skimage for the embedded photographs."
        )
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(
            f"ImageNet root {str(root)!r} has no {split!r} folder. Expected the layout {_LAYOUT}; "
            "check that data.root is the folder above train/ and val/ (not train/ itself)."
        )
    return split_dir


def _unreadable_folder(folder: str | os.PathLike) -> DataError:
    return DataError(
        f"ImageNet folder {str(folder)!r} cannot be read: permission denied. Make the dataset readable by "
        f"this user (chmod -R a+rX {str(folder)!r}, or for the whole dataset chmod -R a+rX <data.root>) "
        "and run again."
    )


@contextmanager
def _images_required(split_dir: str | os.PathLike):
    """Turn torchvision's "no class folder" / "no valid file" errors into a ``DataError`` with the fix."""
    try:
        yield
    except PermissionError as error:
        raise _unreadable_folder(error.filename or split_dir) from None
    except FileNotFoundError as error:
        raise DataError(
            f"ImageNet split folder {str(split_dir)!r} has no usable images: {str(error).rstrip('.')}. "
            f"Expected the layout {_LAYOUT} with at least one image in every class folder: remove empty "
            "class folders or finish extracting the archive (the official val archive is flat; sort its "
            "images into <wnid> folders first)."
        ) from None


def _make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False) -> list[tuple[str, int]]:
    """torchvision's ``make_dataset`` (same samples, same order) without its two blind spots.

    ``os.walk(followlinks=True)`` (inside ``make_dataset``) follows a directory link back to a folder
    above it, listing every image again under it, and lists a file reached through two paths twice;
    :func:`~afno_repro.data.files.walk_files` refuses the loop and :func:`require_distinct` the
    second path, each naming the link. ``os.walk`` also skips a folder it may not list, which would
    report an unreadable class folder as an empty one: here it is a permission error naming it.
    """
    if (extensions is None) == (is_valid_file is None):
        raise ValueError("_make_dataset takes exactly one of extensions and is_valid_file.")
    if is_valid_file is None:
        is_valid_file = partial(has_file_allowed_extension, extensions=extensions)
    samples = []
    with _images_required(directory):
        for name in sorted(class_to_idx):
            folder = Path(directory) / name
            try:
                files = walk_files(folder, "ImageNet") if folder.is_dir() else []
            except PermissionError as error:
                raise _unreadable_folder(error.filename or folder) from None
            samples += [(path, class_to_idx[name]) for path in files if is_valid_file(path)]
    require_distinct((path for path, _ in samples), f"ImageNet folder {str(directory)!r}")
    if not allow_empty:
        _require_every_class(directory, class_to_idx, samples, extensions)
    return samples


def _require_every_class(directory, class_to_idx, samples, extensions) -> None:
    """``DataError`` naming the class folders of ``directory`` that hold no image file.

    torchvision names only the class (``"Found no valid file for the classes n01..."``); the
    folder's path is what a user needs to find it.
    """
    found = {target for _, target in samples}
    empty = [Path(directory) / name for name, index in sorted(class_to_idx.items(), key=lambda item: item[1]) if index not in found]
    if not empty:
        return
    suffixes = ", ".join(extensions) if isinstance(extensions, (tuple, list)) else str(extensions or "any accepted file")
    others = f" (and {len(empty) - 1} more empty class folder(s), e.g. {str(empty[1])!r})" if len(empty) > 1 else ""
    raise DataError(
        f"ImageNet class folder {str(empty[0])!r} has no usable images: no file ending in {suffixes}{others}. "
        f"Expected the layout {_LAYOUT} with at least one image in every class folder: remove empty class "
        "folders or finish extracting the archive (the official val archive is flat; sort its images into "
        "<wnid> folders first)."
    )


def check_layout(root: str | os.PathLike, *splits: str) -> tuple[dict[str, Path], list[str], dict[str, int]]:
    """The folders of ``splits`` and their class folders, checked without listing a file: the split folders
    exist and every split has the first split's class folders. Returns the split folders, the sorted
    classes and their indices. Raises :class:`DataError` naming the folder (as :func:`scan`, which calls it).
    """
    folders = {split: _split_dir(root, split) for split in splits}
    found = {}
    for split, folder in folders.items():
        with _images_required(folder):
            found[split] = find_classes(folder)
    first = splits[0]
    classes, class_to_idx = found[first]
    for split in splits[1:]:
        other = found[split][0]
        if other != classes:
            extra = sorted(set(other) - set(classes))
            folder = folders[split] / (extra[0] if extra else sorted(set(classes) - set(other))[0])
            state = f"has no {first}/ folder of that class" if extra else f"is missing, but {first}/ has that class"
            raise DataError(
                f"ImageNet class folder {str(folder)!r} {state}: {first}/ has {len(classes)} class folders and {split}/ has "
                f"{len(other)}, and they must be the same wnids (the class index is the position in the sorted list). "
                f"Expected the layout {_LAYOUT}; restore or remove the folder."
            )
    return folders, classes, class_to_idx


def scan(root: str | os.PathLike, *splits: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """The ImageNet folder scanner: class folders and ``(path, class index)`` samples of ``splits``.

    The classes are the sorted class folders of the first split; every other split must have the
    same ones (the class index is the position in that list). Raises :class:`DataError` naming the
    folder when the root or a split folder is missing or unreadable, the splits' class folders
    differ (:func:`check_layout`), or a class folder holds no image; naming the link when a directory
    link loops or one file is reached through two paths (within a split or across them).
    """
    folders, classes, class_to_idx = check_layout(root, *splits)
    samples = {split: _make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS) for split, folder in folders.items()}
    # A file of one split linked into another would be scored on after being trained on.
    require_distinct((path for split in splits for path, _ in samples[split]), f"ImageNet root {str(root)!r} ({' and '.join(splits)})")
    return classes, samples


def class_folders(root: str | os.PathLike, split: str = "train") -> list[str]:
    """The sorted class folders (wnids) of ``root/split``, without scanning their files."""
    split_dir = _split_dir(root, split)
    with _images_required(split_dir):
        return find_classes(split_dir)[0]


def random_resized_crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of a random resized crop, drawn from ``generator``.

    The sampling of torchvision's ``RandomResizedCrop`` (area a uniform fraction ``scale`` of
    the image, aspect ratio log-uniform in ``ratio``, ten tries, then the central crop of the
    nearest ratio). torchvision draws it from the global generator only; this takes one, so a
    per-item generator reproduces the crop without touching (or reseeding) the global state.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        crop_width = round(math.sqrt(target_area * aspect_ratio))
        crop_height = round(math.sqrt(target_area / aspect_ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
            return top, left, crop_height, crop_width
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_width, crop_height = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        crop_width, crop_height = round(height * max(ratio)), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


class ImageNetTransform:
    """Our ImageNet transform (the paper is silent; see the module docstring).

    Parameters
    ----------
    image_size: output side ``S``.
    augment: ``True``: random resized crop (scale ``scale``, aspect ratio 3/4 ... 4/3) and a
        horizontal flip with probability 1/2, drawn from the generator given to each call;
        ``False``: resize the short side to ``S * 256 / 224`` and take the centre crop.
    scale: area range of the random crop, as a fraction of the image.

    Calling it maps a ``(3, H, W)`` uint8 or float image (:func:`load_image`) and an optional
    ``torch.Generator`` (``None`` = torch's global one) to a float32 ``(3, S, S)`` image in [0, 1].
    """

    def __init__(self, image_size: int = 224, augment: bool = True, scale: tuple[float, float] = (0.35, 1.0)) -> None:
        self.image_size = image_size
        self.augment = augment
        self.scale = scale

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = [self.image_size, self.image_size]
        if self.augment:
            top, left, height, width = random_resized_crop_params(*image.shape[-2:], self.scale, (3 / 4, 4 / 3), generator)
            image = F.resized_crop(image, top, left, height, width, size, antialias=True)
            if float(torch.rand((), generator=generator)) < 0.5:
                image = F.horizontal_flip(image)
        else:
            image = F.center_crop(F.resize(image, round(self.image_size * 256 / 224), antialias=True), size)
        return F.to_dtype(image, torch.float32, scale=True)


@register_dataset("images", "imagenet")
class ImageNetFolder(ImageFolder):
    """ImageNet-1K split from the standard folder layout (module docstring), optionally a subset.

    Parameters
    ----------
    root: folder holding ``train/`` and ``val/``, each with one sub-folder per class.
    split: ``"train"`` or ``"val"``.
    image_size: output side ``S`` (224 in the paper).
    subset_file: a text file from :func:`save_subset`; only the listed files of this split are
        kept (Table 6's 10% subset). Class indices still come from all class folders.
    subset: the same as a list of relative paths (e.g. straight from :func:`make_subset`);
        give at most one of ``subset_file`` and ``subset``.
    augment: random crops and flips (:class:`ImageNetTransform`); ``None`` = for the train split
        only. ``False`` on the train split gives the fixed evaluation crop (the held-out slice).
    max_image_pixels: refuse images with more pixels (see :func:`load_image`); ``None`` = PIL's limit.

    Shape contract
    --------------
    ``dataset[i]`` and ``dataset.item(i, generator)`` are ``(image, class_index)`` with a float32
    ``(3, S, S)`` image in ``[0, 1]``; ``item`` draws the augmentation from ``generator``,
    indexing from torch's global generator.

    Example
    -------
    >>> from afno_repro.data.imagenet import ImageNetFolder
    >>> ImageNetFolder("/no/such/folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    afno_repro.data.errors.DataError: ImageNet root '/no/such/folder' does not exist or is not a folder. ...
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_size: int = 224,
        subset_file: str | os.PathLike | None = None,
        subset: Sequence[str] | None = None,
        augment: bool | None = None,
        max_image_pixels: int | None = None,
    ) -> None:
        if subset_file is not None and subset is not None:
            raise ValueError("ImageNetFolder got both subset_file and subset; pass only one (the file is read into the list).")
        if max_image_pixels is not None and max_image_pixels < 1:
            raise ValueError(f"ImageNetFolder got max_image_pixels={max_image_pixels!r}; it must be >= 1, or None for PIL's limit.")
        self.split = split
        self.image_root = Path(root).expanduser()
        self.image_size = image_size
        split_dir = _split_dir(root, split)
        transform = ImageNetTransform(image_size, augment=split == "train" if augment is None else augment)
        super().__init__(split_dir, transform=transform,
                         loader=partial(load_image, max_pixels=max_image_pixels, dataset=IMAGENET_ARCHIVE))
        if subset_file is not None:
            subset = load_subset(subset_file)
        if subset is not None:
            self._set_samples(self._listed(subset, source=str(subset_file) if subset_file is not None else "the given subset"))

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        with _images_required(directory):
            return find_classes(directory)

    make_dataset = staticmethod(_make_dataset)

    def item(self, index: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Item ``index`` with its augmentation (if any) drawn from ``generator``."""
        path, target = self.samples[index]
        return self.transform(self.loader(path), generator), target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.item(index)

    def files(self) -> list[str]:
        """The files of this dataset as paths relative to the root, ``<split>/<wnid>/<file>``."""
        return [self._relative(path) for path, _ in self.samples]

    def only(self, paths: Collection[str], augment: bool | None = None, source: str = "the given file list") -> ImageNetFolder:
        """A copy holding only ``paths`` (every one must be in this dataset), optionally with other augmentation."""
        dataset = copy.copy(self)
        dataset._set_samples(self._listed(paths, source))
        if augment is not None:
            dataset.transform = ImageNetTransform(self.image_size, augment=augment)
        return dataset

    def without(self, paths: Collection[str]) -> ImageNetFolder:
        """A copy without the files ``paths``."""
        dropped = set(paths)
        dataset = copy.copy(self)
        dataset._set_samples([(path, target) for path, target in self.samples if self._relative(path) not in dropped])
        return dataset

    def _listed(self, subset: Collection[str], source: str) -> list[tuple[str, int]]:
        wanted = {path for path in subset if path.split("/", 1)[0] == self.split}
        if not wanted:
            raise DataError(
                f"{source} lists no files of the {self.split!r} split (paths must look like "
                f"'{self.split}/<wnid>/<file>'). Make it with make_subset(root, fraction, seed, split={self.split!r})."
            )
        samples = [(path, target) for path, target in self.samples if self._relative(path) in wanted]
        if len(samples) != len(wanted):
            found = {self._relative(path) for path, _ in samples}
            missing = sorted(wanted - found)
            raise DataError(
                f"{source} lists {len(missing)} file(s) that are not in {str(self.image_root)!r}, e.g. {missing[0]!r}. "
                "The subset was made for another copy of ImageNet; make a new one with make_subset or fix data.root."
            )
        return samples

    def _set_samples(self, samples: list[tuple[str, int]]) -> None:
        self.samples = self.imgs = samples
        self.targets = [target for _, target in samples]

    def _relative(self, path: str) -> str:
        return Path(path).relative_to(self.image_root).as_posix()


def _class_balanced(paths: Iterable[str], count: Callable[[int], int], seed: int) -> list[str]:
    """From each class (the ``<wnid>`` of ``<split>/<wnid>/...``), ``count(n_class)`` files, sorted.

    Class ``c`` (in sorted order) draws with a generator seeded by ``(seed, c)``, so the choice
    depends only on the files, ``count`` and ``seed``.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_class[path.split("/")[1]].append(path)
    chosen = []
    for position, wnid in enumerate(sorted(by_class)):
        files = sorted(by_class[wnid])
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(derive_seed(seed, position)))
        chosen.extend(files[i] for i in order[: count(len(files))].tolist())
    return sorted(chosen)


def make_subset(root: str | os.PathLike, fraction: float = 0.1, seed: int = 0, split: str = "train") -> list[str]:
    """A seeded, class-balanced subset of ``split``: relative paths such as ``train/<wnid>/<file>``.

    Each class keeps ``max(1, round(fraction * n_class))`` of its files, drawn by a generator
    seeded with ``(seed, class index)``, so the list depends only on the files, ``fraction`` and
    ``seed``. The list is sorted.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction {fraction!r} is not valid; it must be in (0, 1], e.g. 0.1 for the Table 6 10% subset.")
    root = Path(root).expanduser()
    _, samples = scan(root, split)
    return _class_balanced((Path(path).relative_to(root).as_posix() for path, _ in samples[split]), lambda n: max(1, round(fraction * n)), seed)


def make_selection(paths: Iterable[str], fraction: float = 0.01, seed: int = 0) -> list[str]:
    """The held-out selection slice of the training files ``paths`` (``train/<wnid>/<file>``).

    Each class gives ``round(fraction * n_class)`` of its files, at least 1 and at most
    ``n_class - 1`` (every class keeps a training file; a class with one file gives none), drawn
    as in :func:`make_subset` with ``seed``. Pass the training files in use (the Table 6 subset
    when there is one) and train on the rest. The list is sorted.

    Example
    -------
    >>> files = [f"train/n0{c}/{i}.JPEG" for c in range(2) for i in range(10)]
    >>> make_selection(files, fraction=0.2, seed=0) == make_selection(files, fraction=0.2, seed=0)
    True
    >>> sorted({path.split("/")[1] for path in make_selection(files, fraction=0.2, seed=0)})
    ['n00', 'n01']
    >>> len(make_selection(files, fraction=0.2, seed=0))
    4
    """
    if not 0 < fraction < 1:
        raise ValueError(f"selection fraction {fraction!r} is not valid; it must be in (0, 1), e.g. 0.01 (1% of each class held out).")
    return _class_balanced(paths, lambda n: min(max(1, round(fraction * n)), n - 1), seed)


def save_subset(paths: Sequence[str], file: str | os.PathLike) -> Path:
    """Write ``paths`` one per line to ``file`` (parent folders are created); returns the path."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("".join(f"{path}\n" for path in paths))
    return file


def load_subset(file: str | os.PathLike) -> list[str]:
    """Read a subset list written by :func:`save_subset` (blank lines are skipped)."""
    file = Path(file)
    if not file.is_file():
        raise DataError(
            f"subset file {str(file)!r} does not exist. Pass the subset list a previous run saved "
            "(imagenet_subset.txt in its run directory), or set data.subset_fraction to make a new one."
        )
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]
