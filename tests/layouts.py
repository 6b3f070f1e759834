"""Tiny datasets written in the real on-disk layouts of the few-shot segmentation releases
(DatasetGAN, DDPM-segmentation), shared by the data tests and README's command tests."""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 40
TEST_FOLDERS = {"face": "face_34_class", "car": "car_20_class", "cat": "cat_16_class"}
TRAIN_COUNTS = {"face": 16, "car": 16, "cat": 30}
CLASS_COUNTS = {"face": 34, "car": 20, "cat": 16}


def blocky_mask(rng, num_classes: int, size: int = SIZE, blocks: int = 4) -> np.ndarray:
    """Class ids constant on ``blocks x blocks`` squares: every class present covers >= 100 pixels
    at 40 px, so min_class_pixels leaves it alone."""
    ids = rng.integers(0, num_classes, (blocks, blocks))
    return np.kron(ids, np.ones((size // blocks, size // blocks), dtype=np.int64)).astype(np.uint8)


def write_image(path: Path, rng, height: int = SIZE, width: int = SIZE, value: int | None = None) -> None:
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if value is None else np.full((height, width, 3), value, np.uint8)
    Image.fromarray(pixels).save(path)


def write_datasetgan(root: Path, category: str = "face", num_train: int | None = None, num_test: int = 7) -> Path:
    """A tiny DatasetGAN release: ``training_data/<category>_processed/image_<i>.jpg`` with
    ``image_mask<i>.npy``, and ``testing_data/<test folder>/`` whose images (``photo_<k>.png``,
    grey level ``10 k``) and label maps (``label_<k>.npy``, constant class ``k``) pair only by
    sorted position."""
    rng = np.random.default_rng(0)
    train = root / "training_data" / f"{category}_processed"
    test = root / "testing_data" / TEST_FOLDERS[category]
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    for i in range(TRAIN_COUNTS[category] if num_train is None else num_train):
        write_image(train / f"image_{i}.jpg", rng)
        np.save(train / f"image_mask{i}.npy", blocky_mask(rng, CLASS_COUNTS[category]))
    for k in range(num_test):
        write_image(test / f"photo_{k:02d}.png", rng, value=10 * k)
        np.save(test / f"label_{k:02d}.npy", np.full((SIZE, SIZE), k % CLASS_COUNTS[category], np.uint8))
    return root


def write_ddpm(root: Path, name: str = "cat_15", num_train: int = 3, num_test: int = 6) -> Path:
    """A tiny DDPM-segmentation ``datasets/`` folder: ``<name>/real/{train,test}/<stem>.png`` with
    ``<stem>.npy`` masks holding a 255 (unscored) border."""
    rng = np.random.default_rng(1)
    num_classes = int(name.rsplit("_", 1)[1])
    for split, count in (("train", num_train), ("test", num_test)):
        folder = root / name / "real" / split
        folder.mkdir(parents=True)
        for k in range(count):
            write_image(folder / f"{k:03d}.png", rng)
            mask = blocky_mask(rng, num_classes)
            mask[:2] = 255
            np.save(folder / f"{k:03d}.npy", mask)
    return root
