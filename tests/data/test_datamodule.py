"""The inpainting DataModule: batch format, reproducibility, fixed evaluation masks, subsets, the
held-out selection split and sharding across processes."""

from collections import Counter

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from afno_repro.data import DataError, EvaluationSampler, ImageNetFolder, InpaintingDataModule, RandomWalkMask, load_subset
from afno_repro.data import base as datamodule_module
from afno_repro.data.embedded import PHOTO_SPLITS, SkimagePhotos

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


@pytest.mark.parametrize("name", ["skimage", "imagenet"])
def test_training_batches_do_not_depend_on_the_number_of_workers(name, imagenet_root):
    options = {"name": name, "root": imagenet_root} if name == "imagenet" else {}
    in_process = _batches(_datamodule(**options).train_dataloader())
    with_workers = _batches(_datamodule(num_workers=2, **options).train_dataloader())
    assert _same(in_process, with_workers)


@pytest.mark.parametrize("name", ["skimage", "imagenet"])
def test_training_items_leave_the_global_random_state_alone(name, imagenet_root, monkeypatch):
    seeded = []
    for module, function in ((torch, "manual_seed"), (torch.random, "manual_seed"), (torch.cuda, "manual_seed"), (torch.cuda, "manual_seed_all")):
        monkeypatch.setattr(module, function, lambda *args, _name=f"{module.__name__}.{function}": seeded.append(_name))
    options = {"name": name, "root": imagenet_root} if name == "imagenet" else {}
    loader = _datamodule(**options).train_dataloader()
    state = torch.get_rng_state()
    items = [loader.dataset[key]["image"] for key in loader.sampler]
    assert torch.equal(torch.get_rng_state(), state) and seeded == []
    loader.sampler.set_epoch(0)
    assert all(torch.equal(item, loader.dataset[key]["image"]) for item, key in zip(items, loader.sampler))


@pytest.mark.parametrize("loader, seed_option", [("test_dataloader", "val_mask_seed"), ("val_dataloader", "selection_mask_seed")])
def test_evaluation_masks_are_fixed_per_image(loader, seed_option):
    dm = _datamodule(val_batch_size=4, selection_samples=6, **{seed_option: 7})
    masker = RandomWalkMask(**MASK)
    batches = _batches(getattr(dm, loader)())
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(6))
    for batch in batches:
        expected = masker.masks_for_indices(batch["index"].tolist(), seed=7, size=32)
        assert torch.equal(batch["mask"][:, 0].bool(), expected)
    regrouped = _batches(getattr(_datamodule(val_batch_size=5, selection_samples=6, **{seed_option: 7}), loader)())
    assert torch.equal(torch.cat([b["mask"] for b in regrouped]), torch.cat([b["mask"] for b in batches]))
    assert _same(batches, _batches(getattr(_datamodule(val_batch_size=4, selection_samples=6, seed=3, **{seed_option: 7}), loader)()))


def test_masked_fraction_is_measured_on_the_evaluation_masks():
    dm = _datamodule(val_samples=8, selection_samples=8, val_batch_size=8)
    for split, loader in (("val", dm.test_dataloader()), ("selection", dm.val_dataloader())):
        batch = next(iter(loader))
        assert dm.masked_fraction(num_images=8, split=split) == pytest.approx(float(batch["mask"].mean()))
    assert dm.masked_fraction(8, "val") != dm.masked_fraction(8, "selection")
    assert _datamodule(mask=None).masked_fraction(32) > 3 * dm.masked_fraction(32)
    with pytest.raises(ValueError, match="split='train'"):
        dm.masked_fraction(8, "train")


def test_imagenet_subset_is_made_saved_and_reused(tmp_path, imagenet_root):
    root = imagenet_root
    subset_file = tmp_path / "run" / "imagenet_subset.txt"
    dm = _datamodule(name="imagenet", root=root, subset_fraction=0.2, subset_seed=3, subset_file=subset_file, train_samples_per_epoch=None, val_samples=None, selection="val")
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
        ({"subset_fraction": 0.1}, "subset_fraction applies to ImageNet only"),
        ({"max_image_pixels": 10**9}, "max_image_pixels applies to ImageNet only"),
        ({"selection": "best"}, "selection='best'.*'heldout'.*'val'"),
        ({"selection_fraction": 1.0}, "selection_fraction=1.0"),
        ({"selection_samples": 0}, "selection_samples=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"mask": {"border": "mirror"}}, "border='mirror'"),
    ],
)
def test_bad_configuration_raises_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        _datamodule(**options)


def _images(loader):
    return torch.cat([batch["image"] for batch in loader])


def test_skimage_selection_photo_is_held_out_of_training_and_served_for_validation():
    heldout = _datamodule(selection_samples=4)
    heldout.setup()
    assert heldout.validation_split == "selection"
    assert heldout.selection_set.photo_names == PHOTO_SPLITS["selection"]
    assert set(heldout.train_set.photo_names).isdisjoint(PHOTO_SPLITS["selection"] + PHOTO_SPLITS["val"])
    assert torch.equal(_images(heldout.val_dataloader()), torch.stack([SkimagePhotos("selection", 32, 4)[i] for i in range(4)]))
    assert torch.equal(_images(heldout.test_dataloader()), torch.stack([SkimagePhotos("val", 32, 6)[i] for i in range(6)]))
    assert (heldout.num_images("selection"), heldout.num_images("val")) == (4, 6)


def test_skimage_val_selection_is_the_papers_protocol():
    dm = _datamodule(selection="val")
    dm.setup()
    assert dm.validation_split == "val" and dm.selection_set is None
    assert set(dm.train_set.photo_names) == set(PHOTO_SPLITS["train"] + PHOTO_SPLITS["selection"])
    assert _same(_batches(dm.val_dataloader()), _batches(dm.test_dataloader()))
    with pytest.raises(ValueError, match="no selection split with data.selection='val'"):
        dm.num_images("selection")


def _imagenet(root, **options):
    return _datamodule(name="imagenet", root=root, selection_fraction=0.2, train_samples_per_epoch=None, val_samples=None, **options)


def test_imagenet_selection_files_are_held_out_of_training(imagenet_root, imagenet_classes):
    dm = _imagenet(imagenet_root)
    dm.setup()
    train_files, selection = set(dm.train_set.files()), set(dm.selection_files)
    assert train_files.isdisjoint(selection)
    assert train_files | selection == set(ImageNetFolder(imagenet_root, "train").files())
    assert Counter(path.split("/")[1] for path in selection) == {wnid: 2 for wnid in imagenet_classes}
    assert (dm.num_images("train"), dm.num_images("selection"), dm.num_images("val")) == (24, 6, 6)
    assert dm.val_dataloader().dataset.images.files() == sorted(selection)
    assert dm.test_dataloader().dataset.images.split == "val"
    assert torch.equal(_images(dm.val_dataloader()), _images(dm.val_dataloader()))


def test_imagenet_selection_is_seeded_and_drawn_from_the_subset_in_use(imagenet_root):
    first, again, other = (_imagenet(imagenet_root, selection_seed=seed) for seed in (0, 0, 1))
    for dm in (first, again, other):
        dm.setup()
    assert first.selection_files == again.selection_files != other.selection_files
    table6 = _imagenet(imagenet_root, subset_fraction=0.5)
    table6.setup()
    assert set(table6.selection_files) < set(table6.subset)
    assert sorted(table6.train_set.files() + table6.selection_files) == table6.subset


def test_imagenet_val_selection_trains_on_everything_and_validates_on_val(imagenet_root):
    dm = _imagenet(imagenet_root, selection="val")
    dm.setup()
    assert dm.selection_files is None and dm.num_images("train") == 30
    assert _same(_batches(dm.val_dataloader()), _batches(dm.test_dataloader()))


def test_imagenet_selection_needs_a_second_file_per_class(imagenet_root):
    with pytest.raises(DataError, match="single training file.*data.selection=val"):
        _imagenet(imagenet_root, subset_fraction=0.1).setup()


def test_evaluation_sampler_shards_without_padding():
    shards = [EvaluationSampler(5, num_replicas=2, rank=rank) for rank in range(2)]
    assert [list(shard) for shard in shards] == [[0, 2, 4], [1, 3]]
    assert [len(shard) for shard in shards] == [3, 2]


def test_loaders_shard_across_processes(monkeypatch):
    dm = _datamodule(val_samples=5, selection_samples=5, val_batch_size=2, train_samples_per_epoch=7, batch_size=2)
    epoch = [key for key in dm.train_dataloader().sampler]
    shards = []
    for rank in range(2):
        monkeypatch.setattr(datamodule_module, "process_group", lambda rank=rank: (rank, 2))
        for loader in (dm.val_dataloader(), dm.test_dataloader()):
            assert torch.cat([batch["index"] for batch in loader]).tolist() == list(range(rank, 5, 2))
        shards.append(list(dm.train_dataloader().sampler))
    assert len(shards[0]) == len(shards[1]) == 4
    assert shards[0] == epoch[0::2] and shards[1] == epoch[1::2] + epoch[:1]


@pytest.mark.filterwarnings("ignore:The `srun` command is available")
def test_lightning_keeps_our_samplers_under_ddp(monkeypatch):
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=True, logger=False, enable_progress_bar=False)
    monkeypatch.setattr(datamodule_module, "process_group", lambda: (0, 2))
    dm = _datamodule()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        assert isinstance(loader.sampler, DistributedSampler)
        assert not trainer._data_connector._requires_distributed_sampler(loader)
    assert trainer._data_connector._requires_distributed_sampler(DataLoader(range(4)))


def test_seeding_the_global_state_for_a_transform_leaves_the_gpu_generators_alone(monkeypatch):
    """timm's classification transforms draw from the global generators, seeded per item by
    global_random_state; torch.manual_seed would also reseed every GPU's generator (drop-path's draws on a
    GPU would then depend on num_workers), and fork_rng(devices=[]) restores the CPU's only."""
    from afno_repro.data.sampling import global_random_state

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    state = torch.get_rng_state()
    with global_random_state(7):
        first = torch.rand(3)
    with global_random_state(7):
        assert torch.equal(torch.rand(3), first)
    assert reseeded == [] and torch.equal(torch.get_rng_state(), state)
