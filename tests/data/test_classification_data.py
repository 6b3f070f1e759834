"""The classification DataModule: batch contract, the eval crop, seeded order, the held-out slice,
clear errors for a bad ImageNet folder, and the embedded LFW source."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from afno_repro.data import ClassificationDataModule, DataError
from afno_repro.data.classification import _RepeatedAugmentationSampler

SIZE = 16


@pytest.fixture
def tiny_imagenet(tmp_path, imagenet_writer):
    """3 classes x 4 training and 2 validation JPEGs (20-23 x 28 pixels)."""
    return imagenet_writer(tmp_path / "imagenet", train_per_class=4, val_per_class=2)


def _module(root, **options) -> ClassificationDataModule:
    return ClassificationDataModule(source="imagenet", root=root, image_size=SIZE, batch_size=4, **options)


def test_batches_have_the_contract_shapes_and_imagenet_normalisation(tiny_imagenet, imagenet_classes):
    dm = _module(tiny_imagenet, val_batch_size=6)
    assert dm.num_classes == 3 and dm.class_names == list(imagenet_classes)
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (4, 3, SIZE, SIZE) and train["image"].dtype == torch.float32
    assert train["label"].dtype == torch.int64 and train["index"].dtype == torch.int64
    val = next(iter(dm.val_dataloader()))
    assert val["label"].tolist() == [0, 0, 1, 1, 2, 2] and val["index"].tolist() == list(range(6))
    # Evaluation: resize the short side to floor(16 / 0.875) = 18 (bicubic), centre-crop 16, normalise.
    path = tiny_imagenet / "val" / imagenet_classes[0] / f"{imagenet_classes[0]}_1.JPEG"
    expected = TF.center_crop(TF.resize(Image.open(path).convert("RGB"), 18, InterpolationMode.BICUBIC), SIZE)
    expected = TF.normalize(TF.to_tensor(expected), IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    torch.testing.assert_close(val["image"][1], expected)
    assert dm.num_images("train") == 12 and dm.num_images("val") == dm.num_images("test") == 6
    assert dm.validation_split == "val" and dm.reported_split == "val" and dm.selection_files is None


def test_training_batches_depend_on_the_seed_only(tiny_imagenet):
    first = next(iter(_module(tiny_imagenet, seed=3).train_dataloader()))
    with_worker = next(iter(_module(tiny_imagenet, seed=3, num_workers=1).train_dataloader()))
    other_seed = next(iter(_module(tiny_imagenet, seed=4).train_dataloader()))
    torch.testing.assert_close(first["image"], with_worker["image"], rtol=0, atol=0)
    assert first["index"].tolist() == with_worker["index"].tolist()
    assert not torch.equal(first["image"], other_seed["image"])


def test_heldout_selection_is_class_balanced_and_out_of_training(tiny_imagenet):
    dm = _module(tiny_imagenet, selection="heldout", selection_fraction=0.25, val_samples=3)
    dm.setup()
    assert dm.validation_split == "heldout"
    assert len(dm.selection_files) == 3 and len({path.split("/")[1] for path in dm.selection_files}) == 3
    assert dm.num_images("train") == 9 and dm.num_images("val") == 3 and dm.num_images("test") == 3
    training = {str(path) for path in dm.train_set.images}
    assert not any(str(tiny_imagenet / path) in training for path in dm.selection_files)
    assert next(iter(dm.val_dataloader()))["label"].tolist() == [0, 1, 2]
    assert dm.reading()["selection"] == "heldout"


def test_missing_root_and_wrong_class_count_are_named(tmp_path, tiny_imagenet):
    with pytest.raises(DataError, match=f"'{tmp_path / 'nowhere'}' does not exist"):
        _module(tmp_path / "nowhere").setup()
    with pytest.raises(DataError, match="data.num_classes=5 but .* has 3 class folders"):
        _module(tiny_imagenet, num_classes=5).setup()
    with pytest.raises(ValueError, match="needs data.root"):
        ClassificationDataModule(source="imagenet")


def test_class_folder_without_images_is_named(tiny_imagenet, imagenet_classes):
    folder = tiny_imagenet / "train" / imagenet_classes[1]
    for file in folder.iterdir():
        file.unlink()
    with pytest.raises(DataError, match=f"class folder '{folder}' has no usable images"):
        _module(tiny_imagenet).setup()


def test_corrupt_image_in_a_batch_is_named(tiny_imagenet, imagenet_classes):
    corrupt = tiny_imagenet / "val" / imagenet_classes[2] / f"{imagenet_classes[2]}_0.JPEG"
    corrupt.write_bytes(b"not a JPEG")
    with pytest.raises(DataError, match=f"image file '{corrupt}' cannot be decoded"):
        list(_module(tiny_imagenet).val_dataloader())


def test_lfw_source_is_embedded_and_balanced():
    dm = ClassificationDataModule(source="lfw", image_size=32, batch_size=4, val_batch_size=50)
    assert (dm.num_classes, dm.class_names) == (2, ["non_face", "face"])
    assert (dm.num_images("train"), dm.num_images("val"), dm.num_images("test")) == (150, 50, 50)
    val = next(iter(dm.test_dataloader()))
    assert val["image"].shape == (50, 3, 32, 32) and val["label"].sum() == 25
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, 32, 32)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source": "cifar"}, "source='cifar'"),
        ({"source": "lfw", "root": "/data"}, "root applies to data.source='imagenet' only"),
        ({"source": "lfw", "num_classes": 3}, "lfw subset has 2 classes"),
        ({"source": "lfw", "selection": "test"}, "selection='test'"),
        ({"source": "lfw", "batch_size": 0}, "batch_size=0"),
        ({"source": "lfw", "repeated_augmentation": True, "train_samples_per_epoch": 8}, "repeated_augmentation"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        ClassificationDataModule(**options)


def test_batch_larger_than_the_epoch_with_drop_last_is_refused():
    dm = ClassificationDataModule(source="lfw", image_size=32, batch_size=4, train_samples_per_epoch=2)
    with pytest.raises(ValueError, match="fewer than data.batch_size=4"):
        dm.train_dataloader()


def test_repeated_augmentation_sends_copies_to_different_ranks_with_their_own_seeds():
    samplers = [_RepeatedAugmentationSampler(12, seed=0, num_repeats=3, num_replicas=3, rank=r) for r in range(3)]
    per_rank = [list(sampler) for sampler in samplers]
    assert all(len(items) == 4 for items in per_rank)
    # Position j of every rank is the same image (its 3 copies), augmented with different seeds.
    for j in range(4):
        assert len({items[j][0] for items in per_rank}) == 1 and len({items[j][1] for items in per_rank}) == 3
    again = _RepeatedAugmentationSampler(12, seed=0, num_repeats=3, num_replicas=3, rank=0)
    assert list(again) == per_rank[0]


def test_randaugment_posterize_to_zero_bits_gives_black_not_an_error():
    """`rand-m9-mstd0.5-inc1` can draw PosterizeIncreasing at 0 bits; Pillow 12+ raises on it, so the
    training transform uses a posterize that returns the black image, as Pillow <= 11 did."""
    import numpy as np
    from PIL import Image

    from afno_repro.data.classification import ClassificationDataModule, posterize_keeping_zero_bits

    image = Image.fromarray((np.random.default_rng(0).random((8, 8, 3)) * 255).astype("uint8"))
    assert np.asarray(posterize_keeping_zero_bits(image, 0)).max() == 0
    assert (np.asarray(posterize_keeping_zero_bits(image, 1)) % 128 == 0).all()
    transform = ClassificationDataModule(source="lfw", image_size=32, batch_size=4).train_transform()
    ops = [op for step in transform.transforms for op in getattr(step, "ops", []) if "Posterize" in op.name]
    assert ops and all(op.aug_fn is posterize_keeping_zero_bits for op in ops)


@pytest.mark.parametrize("policy", ["nope", "rand-zz9", 3])
def test_an_unknown_auto_augment_policy_is_named_with_the_forms_timm_reads(policy):
    with pytest.raises(ValueError) as refused:
        ClassificationDataModule(source="lfw", image_size=32, batch_size=4, auto_augment=policy)
    assert f"auto_augment={policy!r}" in str(refused.value) and "rand-m9-mstd0.5-inc1" in str(refused.value)
    # The forms the message names are ones timm builds.
    for named in ("rand-m9-mstd0.5-inc1", "original", "v0", "augmix-m5-w4-d2"):
        ClassificationDataModule(source="lfw", image_size=32, batch_size=4, auto_augment=named)


def test_the_recorded_evaluation_resize_is_the_one_applied(imagenet_root):
    """interpolation=random is a training choice (timm draws per image); evaluation resizes bicubic, and says so."""
    dm = _module(imagenet_root, interpolation="random")
    assert "(bicubic)" in dm.reading()["eval_transform"] and dm.reading()["interpolation"] == "random"
    resize = next(step for step in dm.eval_transform().transforms if type(step).__name__ == "Resize")
    assert resize.interpolation.value == "bicubic"
