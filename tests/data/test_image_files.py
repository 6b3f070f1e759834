"""Reading image files: every bit depth and colour mode to RGB in [0, 1], and a clear error, naming the
file and the fix, for a file that is unreadable, corrupt or too large."""

import builtins
import errno
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from afno_repro.data import DataError, ImageNetFolder, InpaintingDataModule, load_image


def _unit_rgb(path: Path) -> torch.Tensor:
    return F.to_dtype(load_image(str(path)), torch.float32, scale=True)


def _write_rgb16_png(path: Path, pixels: np.ndarray) -> Path:
    """A 48-bit (16 bits per channel) RGB PNG written byte by byte: PIL cannot write one."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_16_bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    image = load_image(str(path))
    assert image.dtype == torch.float32 and image.shape == (3, 1, 4)
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    assert all(torch.allclose(channel, expected) for channel in image)


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    pixels = np.array([[[65535, 0, 32768], [1000, 50000, 65535]]], dtype=np.uint16)
    image = _unit_rgb(_write_rgb16_png(tmp_path / "rgb16.png", pixels))
    assert torch.allclose(image, torch.from_numpy(pixels.astype(np.float32) / 65535).permute(2, 0, 1), atol=1 / 255)


def _palette_red() -> Image.Image:
    image = Image.new("P", (4, 3), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return image


@pytest.mark.parametrize(
    "image, suffix, expected",
    [
        (Image.new("L", (4, 3), 128), "png", (128, 128, 128)),
        (Image.new("1", (4, 3), 1), "png", (255, 255, 255)),
        (_palette_red(), "png", (255, 0, 0)),
        (Image.new("LA", (4, 3), (100, 50)), "png", (100, 100, 100)),
        (Image.new("RGBA", (4, 3), (10, 20, 30, 0)), "png", (10, 20, 30)),
        (Image.new("CMYK", (4, 3), (0, 255, 255, 0)), "tif", (255, 0, 0)),
        (Image.new("I", (4, 3), 32768), "tif", (255 * 32768 / 65535,) * 3),
        (Image.new("F", (4, 3), 0.25), "tif", (255 * 0.25,) * 3),
    ],
    ids=["L", "1", "P", "LA", "RGBA", "CMYK", "I", "F"],
)
def test_every_colour_mode_becomes_rgb_in_unit_range(tmp_path, image, suffix, expected):
    path = tmp_path / f"image.{suffix}"
    image.save(path)
    assert Image.open(path).mode == image.mode
    loaded = _unit_rgb(path)
    assert loaded.shape == (3, 3, 4)
    assert torch.allclose(loaded, torch.tensor(expected).div(255).view(3, 1, 1).expand(3, 3, 4), atol=1e-6)


def test_float_image_outside_unit_range_is_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.new("F", (4, 3), 300.0).save(path)
    with pytest.raises(DataError, match=f"{path.name}.*'F' pixels from 300 to 300.*scale is unknown"):
        load_image(str(path))


@pytest.fixture
def image_file(imagenet_root, imagenet_classes) -> Path:
    """The first training image of the tiny ImageNet: 28x20 = 560 pixels."""
    return imagenet_root / "train" / imagenet_classes[0] / f"{imagenet_classes[0]}_0.JPEG"


def test_image_over_the_pixel_limit_names_the_file_and_the_fix(image_file):
    with pytest.raises(DataError, match=rf"{image_file.name}' is 28x20 = 560 pixels, more than the limit of 100 .*data.max_image_pixels"):
        load_image(str(image_file), max_pixels=100)


def test_pil_limit_is_the_default_and_max_pixels_raises_it(image_file, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="more than the limit of 200 "):
        load_image(str(image_file))
    assert load_image(str(image_file), max_pixels=560).shape == (3, 20, 28)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_datamodule_passes_the_pixel_limit_to_every_split(imagenet_root):
    dm = InpaintingDataModule(name="imagenet", root=imagenet_root, image_size=16, batch_size=2, max_image_pixels=100)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        with pytest.raises(DataError, match="data.max_image_pixels"):
            next(iter(loader))


def test_unreadable_image_is_a_permission_problem_not_corruption(image_file, monkeypatch):
    # The tests run as root, whom chmod 000 does not stop: refuse the read the way the OS would.
    real_open = builtins.open

    def open_refusing_the_image(file, *args, **kwargs):
        if os.fspath(file) == str(image_file):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_refusing_the_image)
    with pytest.raises(DataError, match=rf"{image_file.name}' cannot be read: permission denied.*chmod a\+r") as error:
        ImageNetFolder(image_file.parents[2], "train", image_size=16)[0]
    assert "corrupt" not in str(error.value)


def test_missing_image_says_it_was_moved_or_deleted(image_file):
    dataset = ImageNetFolder(image_file.parents[2], "train", image_size=16)
    image_file.unlink()
    with pytest.raises(DataError, match=f"{image_file.name}' cannot be opened.*moved or deleted"):
        dataset[0]


def _refuse_listing(monkeypatch, folder: Path) -> None:
    real_scandir = os.scandir

    def scandir_refusing_the_folder(path="."):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_refusing_the_folder)


def test_unreadable_class_folder_is_a_permission_problem_not_an_empty_one(imagenet_root, imagenet_classes, monkeypatch):
    folder = imagenet_root / "train" / imagenet_classes[1]
    _refuse_listing(monkeypatch, folder)
    with pytest.raises(DataError, match=rf"folder '{folder}' cannot be read: permission denied.*chmod -R a\+rX") as error:
        ImageNetFolder(imagenet_root, "train")
    assert "no usable images" not in str(error.value)


def test_unreadable_split_folder_is_a_permission_problem(imagenet_root, monkeypatch):
    folder = imagenet_root / "val"
    _refuse_listing(monkeypatch, folder)
    with pytest.raises(DataError, match=f"folder '{folder}' cannot be read: permission denied"):
        ImageNetFolder(imagenet_root, "val")
