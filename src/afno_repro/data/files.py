"""Reading files of any dataset: images as tensors, and folder listings for error messages.

:func:`load_image` reads any bit depth and colour mode PIL opens (8- and 16-bit, grayscale,
palette, RGBA, CMYK, ...) as RGB; a file that cannot be used raises
:class:`~afno_repro.data.errors.DataError` naming it: unreadable (permissions), corrupt, or larger
than the decompression-bomb limit. :func:`listing` and :func:`require_root` word the errors about
a dataset's folders.

Every folder scanner of the datasets lists files through :func:`walk_files` (a folder tree) or checks
its listing with :func:`require_distinct` (one folder): a link may bring a dataset's files in from
elsewhere, but a directory link back to a folder above it (a loop) is refused, naming the link, and
so is one file reached twice (two paths that resolve to the same file), which would be trained on
twice, or trained on and scored on.

Example
-------
>>> load_image("/no/such/file.png")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
afno_repro.data.errors.DataError: image file '/no/such/file.png' cannot be opened ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from afno_repro.data.errors import DataError

__all__ = ["listing", "load_image", "load_image_uint8", "require_distinct", "require_root", "walk_files"]

# PIL modes whose samples do not fit 8 bits, and the value that maps to 1.0. PIL's own
# convert("RGB") clips them at 255 (a 16-bit image comes out almost white).
_HIGH_BIT_DEPTH_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1}


@contextmanager
def _pil_pixel_limit_off():
    """Switch off PIL's global decompression-bomb check while :func:`load_image` applies its own.

    PIL's limit is a module global; the data loaders read images one at a time per process, so
    changing it for the duration of one read affects no other read.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _rgb(image: Image.Image, path: str) -> torch.Tensor:
    """``(3, H, W)`` RGB of an opened image: uint8 for 8-bit modes, float32 in [0, 1] otherwise."""
    full_scale = _HIGH_BIT_DEPTH_FULL_SCALE.get(image.mode)
    if full_scale is None:
        try:
            image = image.convert("RGB")
        except ValueError as error:
            raise DataError(
                f"image file {path!r} has colour mode {image.mode!r}, which PIL cannot convert to RGB ({error}). "
                "Re-save it as an 8- or 16-bit RGB or grayscale image (e.g. PNG or JPEG)."
            ) from error
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.size and (pixels.min() < 0 or pixels.max() > full_scale):
        raise DataError(
            f"image file {path!r} has {image.mode!r} pixels from {pixels.min():g} to {pixels.max():g}, outside "
            f"0 ... {full_scale}, so their scale is unknown. Re-save it as an 8- or 16-bit image."
        )
    return torch.from_numpy(pixels / full_scale).expand(3, -1, -1).contiguous()


def load_image(path: str, max_pixels: int | None = None, dataset: str = "the dataset") -> torch.Tensor:
    """Read an image file as a ``(3, H, W)`` RGB tensor.

    Parameters
    ----------
    path: the image file.
    max_pixels: refuse images with more pixels than this (a decompression-bomb guard);
        ``None`` = PIL's own limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (178,956,970 pixels).
    dataset: where a good copy of the file comes from, for the message about a corrupt one
        (e.g. ``"the ImageNet archive"``, ``"DatasetGAN's release"``).

    Returns
    -------
    uint8 for 8-bit files (grayscale, palette, RGB, RGBA with the alpha channel dropped, CMYK,
    ...); float32 in ``[0, 1]`` for higher bit depths (16-bit files scaled by 1/65535, float
    files taken as they are, which must lie in ``[0, 1]``). ``v2.ToDtype(float32, scale=True)``
    brings both to ``[0, 1]``.

    Raises
    ------
    DataError: naming the file, when it cannot be opened (permissions, missing), is corrupt or
        not an image, is over the pixel limit, or has pixels whose scale is unknown.
    """
    try:
        file = open(path, "rb")
    except PermissionError:
        raise DataError(
            f"image file {path!r} cannot be read: permission denied. Make it readable by this user "
            f"(chmod a+r {path!r}, or for the whole dataset chmod -R a+rX <data.root>) and run again."
        ) from None
    except OSError as error:
        raise DataError(
            f"image file {path!r} cannot be opened ({error.strerror or error}). It was listed when the dataset "
            "was scanned; if it was moved or deleted since, restore it (and any subset file listing it) and run again."
        ) from None
    limit = max_pixels if max_pixels is not None else (2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None)
    with file, _pil_pixel_limit_off():
        try:
            image = Image.open(file)
            # Only the header is read so far: a too-large image is refused before it is decoded.
            if limit is not None and image.width * image.height > limit:
                raise DataError(
                    f"image file {path!r} is {image.width}x{image.height} = {image.width * image.height:,} pixels, more "
                    f"than the limit of {limit:,} (PIL's decompression-bomb guard). If the file is genuine, shrink "
                    "it (e.g. `mogrify -resize '4096x4096>' FILE`) or raise the limit with "
                    "data.max_image_pixels=<pixels> (ImageNetFolder(max_image_pixels=...))."
                )
            image.load()
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            # PIL reports undecodable data with any of these, depending on the format and the damage.
            raise DataError(
                f"image file {path!r} cannot be decoded as an image ({error}). The file is corrupt (e.g. truncated) "
                f"or not an image; re-extract it from {dataset} or delete it (and any subset file listing it)."
            ) from error
        return _rgb(image, path)


def load_image_uint8(path: str | os.PathLike, max_pixels: int | None = None, dataset: str = "the dataset") -> torch.Tensor:
    """:func:`load_image` as uint8 ``(3, H, W)``: higher bit depths are rounded to 8 bits."""
    image = load_image(str(path), max_pixels, dataset)
    if image.dtype != torch.uint8:
        image = image.mul(255).round().clamp(0, 255).to(torch.uint8)
    return image


def listing(folder: Path) -> str:
    """What ``folder`` holds (at most 20 names), for an error message that must say where things are."""
    if not folder.is_dir():
        return f"{str(folder)!r} does not exist"
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} entries)" if len(names) > 20 else "")
    return f"{str(folder)!r} holds: {shown or 'nothing'}"


def require_root(root: str | os.PathLike, source: str, layout: str) -> Path:
    """``root`` as a ``Path`` if it is a folder; ``DataError`` naming the ``source`` and its ``layout`` otherwise."""
    root = Path(root)
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"the {source} root {str(root)!r} {state}. Set data.root to the folder holding {layout}.")
    return root


def walk_files(folder: str | os.PathLike, dataset: str) -> list[str]:
    """Every file under ``folder``, in the order of torchvision's ``make_dataset`` (folders sorted by
    path, the files of each by name), following directory links except those that loop.

    Parameters
    ----------
    folder: the folder to scan (a class folder, a split).
    dataset: the dataset's name, for the messages.

    Raises
    ------
    DataError: naming the link, when a directory link points at a folder that holds it or that the
        walk came through (``train/<class>/loop -> ..``: ``os.walk(followlinks=True)`` would list every
        image again under it, up to the path-length limit); ``PermissionError`` when a folder cannot be
        listed.
    """
    found: list[tuple[str, list[str]]] = []

    def visit(directory: str, ancestors: frozenset[Path]) -> None:
        files, folders = [], []
        here = Path(directory).resolve()
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.is_dir():  # files, links to files and broken links, as os.walk lists them
                    files.append(entry.name)
                    continue
                target = Path(entry.path).resolve()
                # A link to a folder that holds it (`loop -> ..`), or to one this walk came through.
                if entry.is_symlink() and (here.is_relative_to(target) or target in ancestors):
                    raise DataError(
                        f"{dataset} folder {entry.path!r} is a link to {str(target)!r}, a folder that contains it, so "
                        "every image under it would be listed again and again (trained on many times an epoch, and "
                        f"the held-out images trained on too). Remove the link (rm {entry.path!r}); a link to a folder "
                        "elsewhere is fine."
                    )
                folders.append((entry.path, target))
        found.append((directory, sorted(files)))
        for path, target in folders:
            visit(path, ancestors | {target})

    visit(os.fspath(folder), frozenset({Path(folder).resolve()}))
    return [os.path.join(directory, name) for directory, names in sorted(found) for name in names]


def require_distinct(paths: Iterable[str | os.PathLike], dataset: str) -> None:
    """``DataError`` naming the first two of ``paths`` that are the same file (resolved through links).

    A file listed twice would be trained on twice as often as the others, or, across splits, be
    scored on after being trained on.
    """
    seen: dict[Any, str] = {}
    for path in paths:
        # The file's identity (device, inode), one stat per file: resolving every path through its links
        # cost 20x torchvision's whole scan (5 s against 0.26 s for 100,000 files, ~1 min for ImageNet).
        try:
            status = os.stat(path)
            key: Any = (status.st_dev, status.st_ino)
        except OSError:  # a broken link: its target's path stands for it
            key = Path(path).resolve()
        first = seen.setdefault(key, os.fspath(path))
        if first != os.fspath(path):
            real = Path(path).resolve()
            raise DataError(
                f"{dataset} lists one file twice: {first!r} and {os.fspath(path)!r} are both {str(real)!r} (through a "
                "link), so it would be read as two images (trained on twice, or trained on and scored on). Remove "
                "the link, or replace it with a file of its own."
            )
