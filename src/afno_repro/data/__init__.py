"""Data: random-walk inpainting masks, datasets by name, and the inpainting DataModule.

Datasets are built by name with :func:`build_dataset`; ``"skimage"`` is the embedded default
(photographs bundled in scikit-image, no download) and ``"imagenet"`` reads the standard
ImageNet folder layout. A dataset the DataModule trains on also provides
``item(index, generator)``, which draws the item's random augmentation from ``generator``.
Problems with the files on disk raise :class:`DataError`; :func:`user_message` gives the message
to show a user, also for errors re-raised from DataLoader worker processes. The few-shot
segmentation data (paper A.4) has its own DataModule, :class:`FewShotSegmentationDataModule`,
whose sources are not in this registry (DatasetGAN's and DDPM-segmentation's releases, and the
embedded shapes set of :func:`make_shapes`); so has Cityscapes (paper A.3),
:class:`CityscapesDataModule` (the release in torchvision's layout, or embedded street scenes).

Example
-------
>>> from afno_repro.data import build_dataset, list_datasets
>>> list_datasets()
['imagenet', 'skimage']
>>> build_dataset("skimage", "val", image_size=32, samples_per_epoch=2)[1].shape
torch.Size([3, 32, 32])
"""

from torch.utils.data import Dataset

from afno_repro.data.embedded import SkimagePhotos
from afno_repro.data.errors import DataError, user_message
from afno_repro.data.imagenet import ImageNetFolder, load_image, load_subset, make_selection, make_subset, save_subset
from afno_repro.data.masks import RandomWalkMask, derive_seed, masked_fraction

DATASETS: dict[str, type[Dataset]] = {"skimage": SkimagePhotos, "imagenet": ImageNetFolder}


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset` (and ``data.name``), sorted."""
    return sorted(DATASETS)


def get_dataset_class(name: str) -> type[Dataset]:
    """The dataset class registered as ``name``; ``ValueError`` naming the valid names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid datasets are: {', '.join(list_datasets())}. "
            "Set data.name to one of these ('skimage' needs no download)."
        ) from None


def build_dataset(name: str, split: str, **options) -> Dataset:
    """Build split ``split`` of the dataset registered as ``name`` with its own ``options``."""
    return get_dataset_class(name)(split=split, **options)


# Imported last: the DataModule builds its datasets through the registry defined above.
from afno_repro.data.datamodule import SELECTIONS, EvaluationSampler, InpaintingDataModule  # noqa: E402
from afno_repro.data.classification import ClassificationDataModule  # noqa: E402
from afno_repro.data.segmentation import FewShotSegmentationDataModule, SegmentationPairs  # noqa: E402
from afno_repro.data.shapes import SHAPE_CLASSES, make_shapes  # noqa: E402
from afno_repro.data.cityscapes import CityscapesDataModule  # noqa: E402

__all__ = [
    "CityscapesDataModule",
    "ClassificationDataModule",
    "DATASETS",
    "SELECTIONS",
    "DataError",
    "EvaluationSampler",
    "FewShotSegmentationDataModule",
    "ImageNetFolder",
    "InpaintingDataModule",
    "RandomWalkMask",
    "SHAPE_CLASSES",
    "SegmentationPairs",
    "SkimagePhotos",
    "build_dataset",
    "derive_seed",
    "get_dataset_class",
    "list_datasets",
    "load_image",
    "load_subset",
    "make_selection",
    "make_shapes",
    "make_subset",
    "masked_fraction",
    "save_subset",
    "user_message",
]
