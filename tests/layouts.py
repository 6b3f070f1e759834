"""Tiny datasets written in the real on-disk layouts of the few-shot segmentation releases
(DatasetGAN, DDPM-segmentation, Cityscapes), shared by the data tests and README's command tests."""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 40
# DatasetGAN's release, written out here rather than read from afno_repro.releases: the fixtures are the
# tests' independent record of the real layout, against which the loaders (which read releases.py) are checked.
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


CITYSCAPES_SIZE = (64, 32)  # (W, H): Cityscapes' 2:1 aspect, tiny
CITYSCAPES_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}


def cityscapes_label(rng, width: int = CITYSCAPES_SIZE[0], height: int = CITYSCAPES_SIZE[1]) -> np.ndarray:
    """labelIds in 8x8 blocks drawn from road 7, sidewalk 8, building 11, car 26, with parking 9
    (-> 255) and unlabeled 0 (-> 255) in the bottom row of blocks."""
    blocks = rng.choice(np.array([7, 8, 11, 26], np.uint8), (height // 8, width // 8))
    blocks[-1, : width // 16] = 9
    blocks[-1, width // 16 :] = 0
    return np.kron(blocks, np.ones((8, 8), np.uint8))


def write_cityscapes(root: Path, per_city: int = 2, broken: str | None = None) -> Path:
    """A tiny Cityscapes release in torchvision's layout: ``leftImg8bit/<split>/<city>/
    <city>_00000<k>_000019_leftImg8bit.png`` (64x32 random colour) with ``gtFine/<split>/<city>/
    <stem>_gtFine_labelIds.png`` (:func:`cityscapes_label`), 2 cities per split.

    ``broken`` writes one broken case into the train split: ``"no_label"`` (first image's label
    file missing), ``"empty_city"`` (a city folder without images), ``"size"`` (first label map
    32x16), ``"unknown_id"`` (first label map holds id 77), ``"corrupt"`` (first image is not a
    PNG), ``"no_split"`` (no ``leftImg8bit/train``).
    """
    rng = np.random.default_rng(2)
    width, height = CITYSCAPES_SIZE
    first: tuple[Path, Path] | None = None
    for split, cities in CITYSCAPES_CITIES.items():
        for city in cities:
            images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            images.mkdir(parents=True)
            labels.mkdir(parents=True)
            for k in range(per_city):
                stem = f"{city}_{k:06d}_000019"
                write_image(images / f"{stem}_leftImg8bit.png", rng, height, width)
                Image.fromarray(cityscapes_label(rng)).save(labels / f"{stem}_gtFine_labelIds.png")
                if first is None:
                    first = (images / f"{stem}_leftImg8bit.png", labels / f"{stem}_gtFine_labelIds.png")
    image, label = first
    if broken == "no_label":
        label.unlink()
    elif broken == "empty_city":
        (root / "leftImg8bit" / "train" / "zzz_empty").mkdir()
    elif broken == "size":
        Image.fromarray(cityscapes_label(rng, width // 2, height // 2)).save(label)
    elif broken == "unknown_id":
        ids = cityscapes_label(rng)
        ids[0, 0] = 77
        Image.fromarray(ids).save(label)
    elif broken == "corrupt":
        image.write_bytes(b"not a png")
    elif broken == "no_split":
        import shutil

        shutil.rmtree(root / "leftImg8bit" / "train")
    elif broken is not None:
        raise ValueError(f"unknown broken case {broken!r}")
    return root
