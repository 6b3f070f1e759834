"""Datasets: the embedded scikit-image photographs, the ImageNet folder loader and its subset."""

from collections import Counter
from pathlib import Path

import pytest
import torch

from afno_repro.data import build_dataset, list_datasets
from afno_repro.data.embedded import PHOTO_SPLITS, SkimagePhotos
from afno_repro.data.imagenet import ImageNetFolder, load_subset, make_selection, make_subset, random_resized_crop_params, save_subset


def test_registry_names_and_unknown_name():
    assert list_datasets() == ["imagenet", "skimage"]
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*imagenet, skimage"):
        build_dataset("cifar", "train")


def test_skimage_photos_load_offline_in_unit_range():
    train = SkimagePhotos("train", image_size=24, samples_per_epoch=12)
    val = SkimagePhotos("val", image_size=24, samples_per_epoch=4)
    assert len(train) == 12 and len(val) == 4
    for dataset in (train, val):
        image = dataset[len(dataset) - 1]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01
    assert set(PHOTO_SPLITS["train"]).isdisjoint(PHOTO_SPLITS["val"])


def test_skimage_val_crops_are_fixed_and_train_crops_random():
    first, second = SkimagePhotos("val", image_size=16, samples_per_epoch=3), SkimagePhotos("val", image_size=16, samples_per_epoch=3)
    assert all(torch.equal(first[i], second[i]) for i in range(3))
    assert not torch.equal(first[0], SkimagePhotos("val", image_size=16, samples_per_epoch=3, seed=1)[0])
    train = SkimagePhotos("train", image_size=16)
    assert not torch.equal(train[0], train[0])
    torch.manual_seed(4)
    again = train[0]
    torch.manual_seed(4)
    assert torch.equal(again, train[0])


@pytest.mark.parametrize("options, message", [({"split": "test"}, "split='test'"), ({"image_size": 0}, "image_size=0"), ({"samples_per_epoch": 0}, "samples_per_epoch=0")])
def test_skimage_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        SkimagePhotos(**options)


def test_imagenet_folder_reads_the_standard_layout(imagenet_root, imagenet_classes):
    train = ImageNetFolder(imagenet_root, "train", image_size=16)
    val = ImageNetFolder(imagenet_root, "val", image_size=16)
    assert train.classes == list(imagenet_classes) and len(train) == 30 and len(val) == 6
    image, target = train[13]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and target == 1
    assert 0 <= image.min() and image.max() <= 1
    assert torch.equal(val[5][0], val[5][0]) and val[5][1] == 2


def test_subset_is_class_balanced_seeded_and_round_trips(imagenet_root, tmp_path, imagenet_classes):
    subset = make_subset(imagenet_root, fraction=0.3, seed=0)
    assert Counter(path.split("/")[1] for path in subset) == {wnid: 3 for wnid in imagenet_classes}
    assert all(path.startswith("train/") for path in subset) and subset == sorted(subset)
    assert make_subset(imagenet_root, fraction=0.3, seed=0) == subset
    assert make_subset(imagenet_root, fraction=0.3, seed=1) != subset
    file = save_subset(subset, tmp_path / "run" / "imagenet_subset.txt")
    assert load_subset(file) == subset
    dataset = ImageNetFolder(imagenet_root, "train", image_size=16, subset_file=file)
    assert len(dataset) == 9 and Counter(dataset.targets) == {0: 3, 1: 3, 2: 3}
    assert sorted(Path(path).relative_to(imagenet_root).as_posix() for path, _ in dataset.samples) == subset


def test_subset_fraction_keeps_at_least_one_file_per_class(imagenet_root, imagenet_classes):
    assert len(make_subset(imagenet_root, fraction=0.01, seed=0)) == len(imagenet_classes)
    with pytest.raises(ValueError, match="fraction 0"):
        make_subset(imagenet_root, fraction=0)


def test_subset_listing_files_that_do_not_exist(imagenet_root, tmp_path):
    file = save_subset(["train/n01440764/n01440764_0.JPEG", "train/n01440764/gone.JPEG"], tmp_path / "subset.txt")
    with pytest.raises(ValueError, match="gone.JPEG"):
        ImageNetFolder(imagenet_root, "train", subset_file=file)


def test_missing_root(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*data.root"):
        ImageNetFolder(tmp_path / "nowhere")


def test_root_without_split_folders(tmp_path):
    with pytest.raises(ValueError, match="has no 'train' folder"):
        ImageNetFolder(tmp_path)


def test_split_without_images(tmp_path):
    (tmp_path / "train" / "n01440764").mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable images"):
        ImageNetFolder(tmp_path, "train")
    (tmp_path / "val").mkdir()
    with pytest.raises(ValueError, match="no usable images"):
        ImageNetFolder(tmp_path, "val")


def test_corrupt_image_names_the_file_at_load_time(imagenet_root, imagenet_classes):
    corrupt = imagenet_root / "train" / imagenet_classes[0] / f"{imagenet_classes[0]}_0.JPEG"
    corrupt.write_bytes(b"this is not a JPEG")
    dataset = ImageNetFolder(imagenet_root, "train", image_size=16)
    assert dataset[1][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match=f"{imagenet_classes[0]}_0.JPEG.*cannot be decoded as an image.*corrupt"):
        dataset[0]


def test_item_draws_the_augmentation_from_the_generator(imagenet_root):
    for dataset in (SkimagePhotos("train", image_size=16), ImageNetFolder(imagenet_root, "train", image_size=16)):
        first, again, other = (dataset.item(3, torch.Generator().manual_seed(seed)) for seed in (5, 5, 6))
        if isinstance(first, tuple):
            first, again, other = first[0], again[0], other[0]
        assert torch.equal(first, again) and not torch.equal(first, other)


def test_random_resized_crop_stays_inside_and_falls_back_to_the_centre():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, height, width = random_resized_crop_params(20, 28, (0.35, 1.0), (3 / 4, 4 / 3), generator)
        assert 0 <= top <= top + height <= 20 and 0 <= left <= left + width <= 28
        assert 0.3 * 560 <= height * width and 3 / 4 - 0.1 <= width / height <= 4 / 3 + 0.1
    # No crop of a 1x100 strip has an aspect ratio in 3/4 ... 4/3 and a third of its area.
    assert random_resized_crop_params(1, 100, (0.35, 1.0), (3 / 4, 4 / 3), generator) == (0, 49, 1, 1)


def test_selection_takes_a_share_of_each_class_but_never_its_last_file():
    files = [f"train/n{c}/{i}.JPEG" for c, size in enumerate((1, 2, 10)) for i in range(size)]
    selection = make_selection(files, fraction=0.5, seed=0)
    assert Counter(path.split("/")[1] for path in selection) == {"n1": 1, "n2": 5}
    assert selection == sorted(selection) and make_selection(files, 0.5, 0) == selection != make_selection(files, 0.5, 1)
    with pytest.raises(ValueError, match="selection fraction 1"):
        make_selection(files, fraction=1)
