"""Every folder scanner of the datasets against links, and a corrupt file's message naming its dataset.

Duplicates through links: a directory link back to a folder that holds it (``train/<class>/loop -> ..``)
is refused naming the link, and one file reached through two paths (a file link, a second link to a
folder, a link from one split into another) is refused naming both; a link to a folder elsewhere is
followed. Each scanner: the ImageNet one (inpainting and classification), DatasetGAN's train and test
listings, DDPM-segmentation's, Cityscapes'.
"""

import os
from pathlib import Path

import pytest
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from afno_repro.data import ClassificationDataModule, DataError, InpaintingDataModule
from afno_repro.data.cityscapes import cityscapes_files, load_cityscapes_pair
from afno_repro.data.files import load_image, walk_files
from afno_repro.data.imagenet import ImageNetFolder, scan
from afno_repro.data.segmentation import DDPMSegmentation, DatasetGAN, datasetgan_files, ddpm_files
from layouts import write_cityscapes, write_datasetgan, write_ddpm


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


# --- ImageNet layout: loops ----------------------------------------------------------------------

@pytest.mark.parametrize("target", ["..", ".", "../..", "../../.."])
def test_a_directory_link_to_a_folder_holding_it_is_refused_naming_the_link(imagenet_root, imagenet_classes, target):
    link = imagenet_root / "train" / imagenet_classes[0] / "loop"
    os.symlink(target, link)
    with pytest.raises(DataError, match="a folder that contains it") as error:
        scan(imagenet_root, "train", "val")
    assert f"rm {str(link)!r}" in str(error.value)
    with pytest.raises(DataError, match="a folder that contains it"):
        ImageNetFolder(imagenet_root, "train")


def test_a_loop_through_two_links_is_refused(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.JPEG").write_bytes(b"")
    os.symlink(tmp_path / "a", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", tmp_path / "a" / "b" / "back")
    with pytest.raises(DataError, match="back"):
        walk_files(tmp_path / "a", "ImageNet")


def test_the_loop_no_longer_multiplies_training_steps(imagenet_root, imagenet_classes):
    """The issue's case through the data module: the run is refused instead of training ~41 times on each image."""
    os.symlink("..", imagenet_root / "train" / imagenet_classes[0] / "loop")
    dm = InpaintingDataModule(name="imagenet", root=imagenet_root, image_size=16, batch_size=2, selection="heldout")
    with pytest.raises(DataError, match="loop"):
        dm.setup("fit")


def test_a_link_to_a_folder_elsewhere_is_followed_in_torchvision_order(imagenet_root, imagenet_classes, tmp_path):
    extra = tmp_path / "more_images"
    extra.mkdir()
    source = imagenet_root / "train" / imagenet_classes[0] / f"{imagenet_classes[0]}_0.JPEG"
    (extra / "extra.JPEG").write_bytes(source.read_bytes())
    os.symlink(extra, imagenet_root / "train" / imagenet_classes[0] / "more")
    classes, samples = scan(imagenet_root, "train", "val")
    assert (str(imagenet_root / "train" / imagenet_classes[0] / "more" / "extra.JPEG"), 0) in samples["train"]
    # Without loops or duplicates the samples are torchvision's own, in its order.
    expected = make_dataset(str(imagenet_root / "train"), {name: i for i, name in enumerate(classes)}, extensions=IMG_EXTENSIONS)
    assert samples["train"] == expected and len(expected) == 3 * 10 + 1


# --- ImageNet layout: one file twice -------------------------------------------------------------

def test_a_file_linked_into_another_class_is_refused_naming_both(imagenet_root, imagenet_classes):
    first = imagenet_root / "train" / imagenet_classes[1] / f"{imagenet_classes[1]}_0.JPEG"
    link = imagenet_root / "train" / imagenet_classes[0] / "copy.JPEG"
    os.symlink(first, link)
    with pytest.raises(DataError, match="lists one file twice") as error:
        ImageNetFolder(imagenet_root, "train")
    assert str(link) in str(error.value) and str(first) in str(error.value)


def test_a_second_link_to_a_class_folder_is_refused(imagenet_root, imagenet_classes):
    os.symlink(imagenet_root / "train" / imagenet_classes[1], imagenet_root / "train" / imagenet_classes[0] / "again")
    with pytest.raises(DataError, match="lists one file twice"):
        scan(imagenet_root, "train")


def test_a_training_file_linked_into_val_is_refused_as_a_leak(imagenet_root, imagenet_classes):
    trained = imagenet_root / "train" / imagenet_classes[0] / f"{imagenet_classes[0]}_3.JPEG"
    os.symlink(trained, imagenet_root / "val" / imagenet_classes[0] / "leak.JPEG")
    with pytest.raises(DataError, match=r"\(train and val\) lists one file twice.*trained on and scored on"):
        scan(imagenet_root, "train", "val")
    dm = ClassificationDataModule(source="imagenet", root=str(imagenet_root), image_size=16, batch_size=2)
    with pytest.raises(DataError, match="lists one file twice"):
        dm.setup("fit")


# --- the other datasets' listings ----------------------------------------------------------------

def test_datasetgan_train_and_test_refuse_a_file_reached_twice(tmp_path):
    root = write_datasetgan(tmp_path / "dg", num_train=17)
    train = root / "training_data" / "face_processed"
    (train / "image_3.jpg").unlink()
    os.symlink(train / "image_1.jpg", train / "image_3.jpg")
    with pytest.raises(DataError, match="DatasetGAN training folder .* lists one file twice"):
        datasetgan_files(root, "face", "train")
    test = root / "testing_data" / "face_34_class"
    os.symlink(test / "photo_00.png", test / "photo_99.png")
    os.symlink(test / "label_00.npy", test / "label_99.npy")
    with pytest.raises(DataError, match="DatasetGAN test folder .* lists one file twice"):
        datasetgan_files(root, "face", "test")


def test_ddpm_refuses_a_pair_reached_twice(tmp_path):
    root = write_ddpm(tmp_path / "ddpm")
    folder = root / "cat_15" / "real" / "train"
    os.symlink(folder / "000.png", folder / "010.png")
    os.symlink(folder / "000.npy", folder / "010.npy")
    with pytest.raises(DataError, match="DDPM-segmentation train folder .* lists one file twice"):
        ddpm_files(root, "cat_15", "train")


def test_cityscapes_refuses_a_city_linked_in_twice(tmp_path):
    root = write_cityscapes(tmp_path / "cs")
    for top in ("leftImg8bit", "gtFine"):
        os.symlink(root / top / "train" / "aachen", root / top / "train" / "zachen")
    with pytest.raises(DataError, match="Cityscapes train folder .* lists one file twice"):
        cityscapes_files(root, "train")
    assert len(cityscapes_files(root, "val")) == 4  # the other split is untouched


# --- a corrupt file names the dataset it came from -----------------------------------------------

def test_a_truncated_file_names_its_own_dataset(tmp_path, imagenet_root, imagenet_classes):
    datasetgan = write_datasetgan(tmp_path / "dg")
    _truncate(datasetgan / "training_data" / "face_processed" / "image_0.jpg")
    with pytest.raises(DataError, match="re-extract it from DatasetGAN's release \\(its training_data/") as error:
        DatasetGAN(str(datasetgan), "face").load("train", 16, 0)
    assert "ImageNet" not in str(error.value)

    ddpm = write_ddpm(tmp_path / "ddpm")
    _truncate(ddpm / "cat_15" / "real" / "test" / "001.png")
    with pytest.raises(DataError, match="DDPM-segmentation's release \\(its datasets/cat_15/real/test/") as error:
        DDPMSegmentation(str(ddpm), name="cat_15").load("test", 16, 0)
    assert "ImageNet" not in str(error.value)

    cityscapes = write_cityscapes(tmp_path / "cs")
    image, label = cityscapes_files(cityscapes, "val")[0]
    _truncate(image)
    with pytest.raises(DataError, match="leftImg8bit_trainvaltest.zip") as error:
        load_cityscapes_pair(image, label)
    assert "ImageNet" not in str(error.value)

    corrupt = imagenet_root / "train" / imagenet_classes[0] / f"{imagenet_classes[0]}_0.JPEG"
    _truncate(corrupt)
    with pytest.raises(DataError, match="ILSVRC2012_img_train.tar"):
        ImageNetFolder(imagenet_root, "train")[0]
    with pytest.raises(DataError, match="corrupt") as error:
        load_image(str(corrupt))  # no dataset given: no archive is named
    assert "ImageNet" not in str(error.value)


# --- the data, not the task, when there is one class ----------------------------------------------

def test_one_class_folder_is_named_as_the_data_problem(tmp_path, imagenet_writer, imagenet_classes):
    root = imagenet_writer(tmp_path / "imagenet", train_per_class=2, val_per_class=1)
    for wnid in imagenet_classes[1:]:
        for split in ("train", "val"):
            for file in (root / split / wnid).iterdir():
                file.unlink()
            (root / split / wnid).rmdir()
    for num_classes in (None, 2):
        with pytest.raises(DataError, match="holds 1 class folder.*needs at least two") as error:
            ClassificationDataModule(source="imagenet", root=str(root), num_classes=num_classes, image_size=16, batch_size=2)
        assert imagenet_classes[0] in str(error.value) and "num_classes >= 2" not in str(error.value)
