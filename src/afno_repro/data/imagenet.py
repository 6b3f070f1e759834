"""ImageNet-1K from the standard folder layout, and the seeded class-balanced subset of Table 6.

Layout (what ``torchvision.datasets.ImageFolder`` expects, one folder per WordNet id)::

    root/train/n01440764/n01440764_10026.JPEG
    root/val/n01440764/ILSVRC2012_val_00000293.JPEG

The paper does not state its augmentation for inpainting or for the Table 6 runs. Ours: training
images get ``RandomResizedCrop(image_size, scale=(0.35, 1))`` and a horizontal flip; validation
images are resized to ``image_size * 256 / 224`` on the short side and centre-cropped (the
common ImageNet evaluation crop).

Table 6 trains on a 10% subset: :func:`make_subset` draws a fixed, seeded, class-balanced list of
training files, :func:`save_subset` / :func:`load_subset` write and read it as text so each run
keeps the exact list it used and another run can reuse it via ``subset_file``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms import v2

from afno_repro.data.masks import derive_seed

__all__ = ["ImageNetFolder", "make_subset", "save_subset", "load_subset", "SPLITS", "imagenet_transform"]

SPLITS = ("train", "val")
_LAYOUT = "root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG"


def _split_dir(root: str | os.PathLike, split: str) -> Path:
    """``root/split`` after checking that the layout is there; ``ValueError`` naming the fix."""
    if split not in SPLITS:
        raise ValueError(f"ImageNet split {split!r} is not valid; use one of {', '.join(map(repr, SPLITS))}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"ImageNet root {str(root)!r} does not exist or is not a folder. Point data.root at the folder "
            f"that holds the ImageNet layout {_LAYOUT}, or use data=skimage for the embedded photographs."
        )
    split_dir = root / split
    if not split_dir.is_dir():
        raise ValueError(
            f"ImageNet root {str(root)!r} has no {split!r} folder. Expected the layout {_LAYOUT}; "
            "check that data.root is the folder above train/ and val/ (not train/ itself)."
        )
    return split_dir


@contextmanager
def _images_required(split_dir: str | os.PathLike):
    """Turn torchvision's "no class folder" / "no valid file" errors into a ``ValueError`` with the fix."""
    try:
        yield
    except FileNotFoundError as error:
        raise ValueError(
            f"ImageNet split folder {str(split_dir)!r} has no usable images: {str(error).rstrip('.')}. "
            f"Expected the layout {_LAYOUT} with at least one image in every class folder: remove empty "
            "class folders or finish extracting the archive (the official val archive is flat; sort its "
            "images into <wnid> folders first)."
        ) from None


def _scan(root: str | os.PathLike, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and ``(path, class index)`` samples of one split."""
    split_dir = _split_dir(root, split)
    with _images_required(split_dir):
        classes, class_to_idx = find_classes(split_dir)
        return classes, make_dataset(split_dir, class_to_idx, extensions=IMG_EXTENSIONS)


def _load_rgb(path: str) -> Image.Image:
    """Open ``path`` as RGB; a file PIL cannot read raises ``ValueError`` naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(
            f"image file {path!r} cannot be read as an image ({error}). The file is corrupt or not an "
            "image; re-extract it from the ImageNet archive or delete it (and any subset file listing it)."
        ) from error


def imagenet_transform(split: str, image_size: int = 224) -> v2.Compose:
    """Our ImageNet transform for ``split`` (the paper is silent; see the module docstring)."""
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if split == "train":
        return v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(), *to_tensor])
    return v2.Compose([v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size), *to_tensor])


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

    Shape contract
    --------------
    ``dataset[i]`` is ``(image, class_index)`` with a float32 ``(3, S, S)`` image in ``[0, 1]``.

    Example
    -------
    >>> from afno_repro.data.imagenet import ImageNetFolder
    >>> ImageNetFolder("/no/such/folder")
    Traceback (most recent call last):
        ...
    ValueError: ImageNet root '/no/such/folder' does not exist or is not a folder. ...
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_size: int = 224,
        subset_file: str | os.PathLike | None = None,
        subset: Sequence[str] | None = None,
    ) -> None:
        if subset_file is not None and subset is not None:
            raise ValueError("ImageNetFolder got both subset_file and subset; pass only one (the file is read into the list).")
        self.split = split
        self.image_root = Path(root).expanduser()
        self.image_size = image_size
        split_dir = _split_dir(root, split)
        super().__init__(split_dir, transform=imagenet_transform(split, image_size), loader=_load_rgb)
        if subset_file is not None:
            subset = load_subset(subset_file)
        if subset is not None:
            self._keep(subset, source=str(subset_file) if subset_file is not None else "the given subset")

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        with _images_required(directory):
            return find_classes(directory)

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        with _images_required(directory):
            return make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)

    def _keep(self, subset: Sequence[str], source: str) -> None:
        wanted = {path for path in subset if path.split("/", 1)[0] == self.split}
        if not wanted:
            raise ValueError(
                f"{source} lists no files of the {self.split!r} split (paths must look like "
                f"'{self.split}/<wnid>/<file>'). Make it with make_subset(root, fraction, seed, split={self.split!r})."
            )
        samples = [(path, target) for path, target in self.samples if self._relative(path) in wanted]
        if len(samples) != len(wanted):
            found = {self._relative(path) for path, _ in samples}
            missing = sorted(wanted - found)
            raise ValueError(
                f"{source} lists {len(missing)} file(s) that are not in {str(self.image_root)!r}, e.g. {missing[0]!r}. "
                "The subset was made for another copy of ImageNet; make a new one with make_subset or fix data.root."
            )
        self.samples = self.imgs = samples
        self.targets = [target for _, target in samples]

    def _relative(self, path: str) -> str:
        return Path(path).relative_to(self.image_root).as_posix()


def make_subset(root: str | os.PathLike, fraction: float = 0.1, seed: int = 0, split: str = "train") -> list[str]:
    """A seeded, class-balanced subset of ``split``: relative paths such as ``train/<wnid>/<file>``.

    Each class keeps ``max(1, round(fraction * n_class))`` of its files, drawn by a generator
    seeded with ``(seed, class index)``, so the list depends only on the files, ``fraction`` and
    ``seed``. The list is sorted.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction {fraction!r} is not valid; it must be in (0, 1], e.g. 0.1 for the Table 6 10% subset.")
    root = Path(root).expanduser()
    classes, samples = _scan(root, split)
    by_class: list[list[str]] = [[] for _ in classes]
    for path, target in samples:
        by_class[target].append(Path(path).relative_to(root).as_posix())
    chosen = []
    for target, files in enumerate(by_class):
        files.sort()
        keep = max(1, round(fraction * len(files)))
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(derive_seed(seed, target)))
        chosen.extend(files[i] for i in order[:keep].tolist())
    return sorted(chosen)


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
        raise ValueError(
            f"subset file {str(file)!r} does not exist. Pass the subset list a previous run saved "
            "(imagenet_subset.txt in its run directory), or set data.subset_fraction to make a new one."
        )
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]
