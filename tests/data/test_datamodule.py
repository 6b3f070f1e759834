"""The inpainting DataModule: batch format, reproducibility, fixed validation masks, subsets."""

import pytest
import torch

from afno_repro.data import InpaintingDataModule, RandomWalkMask, load_subset

MASK = {"steps_scaling": "area"}


def _datamodule(**options):
    defaults = dict(image_size=32, batch_size=4, mask=MASK, train_samples_per_epoch=8, val_samples=6)
    return InpaintingDataModule(**{**defaults, **options})


def _batches(loader):
    return [batch for batch in loader]


def _same(first, second):
    return len(first) == len(second) and all(torch.equal(a[key], b[key]) for a, b in zip(first, second) for key in a)


def test_batch_format():
    dm = _datamodule()
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"image", "mask", "index"}
        assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert 0 <= batch["image"].min() and batch["image"].max() <= 1
        assert batch["mask"].shape == (4, 1, 32, 32) and batch["mask"].dtype == torch.float32
        assert set(batch["mask"].unique().tolist()) == {0.0, 1.0}
        assert batch["index"].dtype == torch.long and batch["index"].shape == (4,)


def test_training_batches_reproduce_with_the_seed_and_change_with_it():
    first, again, other = (_batches(_datamodule(seed=s).train_dataloader()) for s in (0, 0, 1))
    assert _same(first, again)
    assert not _same(first, other)


def test_epochs_differ_and_set_epoch_replays_one():
    loader = _datamodule().train_dataloader()
    epoch_0, epoch_1 = _batches(loader), _batches(loader)
    assert not _same(epoch_0, epoch_1)
    loader.sampler.set_epoch(1)
    assert _same(_batches(loader), epoch_1)


def test_training_batches_do_not_depend_on_the_number_of_workers():
    in_process = _batches(_datamodule().train_dataloader())
    with_workers = _batches(_datamodule(num_workers=2).train_dataloader())
    assert _same(in_process, with_workers)


def test_validation_masks_are_fixed_per_image():
    dm = _datamodule(val_mask_seed=7, val_batch_size=4)
    masker = RandomWalkMask(**MASK)
    batches = _batches(dm.val_dataloader())
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(6))
    for batch in batches:
        expected = masker.masks_for_indices(batch["index"].tolist(), seed=7, size=32)
        assert torch.equal(batch["mask"][:, 0].bool(), expected)
    regrouped = _batches(_datamodule(val_mask_seed=7, val_batch_size=5).val_dataloader())
    assert torch.equal(torch.cat([b["mask"] for b in regrouped]), torch.cat([b["mask"] for b in batches]))
    assert _same(batches, _batches(_datamodule(val_mask_seed=7, val_batch_size=4, seed=3).val_dataloader()))


def test_masked_fraction_is_measured_on_the_validation_masks():
    dm = _datamodule(val_samples=8, val_batch_size=8)
    batch = next(iter(dm.val_dataloader()))
    assert dm.masked_fraction(num_images=8) == pytest.approx(float(batch["mask"].mean()))
    assert _datamodule(mask=None).masked_fraction(32) > 3 * dm.masked_fraction(32)


def test_imagenet_subset_is_made_saved_and_reused(tmp_path, imagenet_root):
    root = imagenet_root
    subset_file = tmp_path / "run" / "imagenet_subset.txt"
    dm = _datamodule(name="imagenet", root=root, subset_fraction=0.2, subset_seed=3, subset_file=subset_file, train_samples_per_epoch=None, val_samples=None)
    dm.setup("fit")
    assert len(dm.train_set) == 6 and len(dm.val_set) == 6
    assert load_subset(subset_file) == dm.subset
    reused = _datamodule(name="imagenet", root=root, subset_file=subset_file)
    reused.setup("fit")
    assert reused.subset == dm.subset
    batch = next(iter(reused.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="does not exist and data.subset_fraction is not set"):
        _datamodule(name="imagenet", root=root, subset_file=tmp_path / "missing.txt").setup("fit")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "cifar"}, "unknown dataset 'cifar'"),
        ({"name": "imagenet"}, "needs data.root"),
        ({"subset_fraction": 0.1}, "apply to ImageNet only"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"mask": {"border": "mirror"}}, "border='mirror'"),
    ],
)
def test_bad_configuration_raises_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        _datamodule(**options)
