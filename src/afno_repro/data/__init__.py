"""Data: every dataset source, the DataModules that serve them, and the random-walk masks.

Where things are (one job per module):

- :mod:`~afno_repro.data.registry`: the one registry of sources, by kind (the DataModule that
  serves it) and name (the config option that picks it); :func:`list_datasets`,
  :func:`get_dataset_class`, :func:`build_dataset`.
- :mod:`~afno_repro.data.base`: what every DataModule shares (options as attributes, splits,
  loaders, the run label and the files kept beside a run); :mod:`~afno_repro.data.sampling`: the
  one seeding mechanism (per-item seeds from the training sampler) and the samplers;
  :mod:`~afno_repro.data.files`: reading image files and wording errors about folders;
  :mod:`~afno_repro.data.errors`: :class:`DataError` and :func:`user_message`.
- One module per family of sources, each holding its layout, its classes and its DataModule:
  :mod:`~afno_repro.data.embedded` (scikit-image photographs) and
  :mod:`~afno_repro.data.imagenet` (the ImageNet folders, the one ImageNet scanner, subsets)
  served by :class:`InpaintingDataModule` (:mod:`~afno_repro.data.inpainting`, paper A.2);
  :mod:`~afno_repro.data.classification` (ImageNet, LFW; A.5);
  :mod:`~afno_repro.data.segmentation` (DatasetGAN, DDPM-segmentation and the embedded shapes of
  :mod:`~afno_repro.data.shapes`; A.4); :mod:`~afno_repro.data.cityscapes` (the release and the
  embedded street scenes of :mod:`~afno_repro.data.shapes`; A.3) with SegFormer's training
  pipeline in :mod:`~afno_repro.data.segformer_pipeline`.

Where a new dataset goes: one small class, registered with
``@register_dataset(kind, name)`` in the module of its family (or a file of its own imported
below), that knows only its layout on disk (``check()``: its folders listed, no image read, which the
DataModule's ``check_files()`` runs before the model is built), its class names and how to read a split (see
:class:`~afno_repro.data.segmentation.DDPMSegmentation` or
:class:`~afno_repro.data.classification.LFWFaces`), plus one YAML file in ``configs/data/``
naming the DataModule and ``source: <name>``. Augmentation, splits, seeding and loading are the
DataModule's and are set in that YAML, not in the dataset class.

Problems with the files on disk raise :class:`DataError`; :func:`user_message` gives the message
to show a user, also for errors re-raised from DataLoader worker processes.

Example
-------
>>> from afno_repro.data import build_dataset, list_datasets
>>> list_datasets(), list_datasets("cityscapes")
(['imagenet', 'skimage'], ['cityscapes', 'embedded'])
>>> build_dataset("skimage", "val", image_size=32, samples_per_epoch=2)[1].shape
torch.Size([3, 32, 32])
"""

from afno_repro.data.errors import DataError, user_message
from afno_repro.data.registry import DATASETS, build_dataset, get_dataset_class, list_datasets, register_dataset
from afno_repro.data.files import load_image
from afno_repro.data.masks import RandomWalkMask, derive_seed, masked_fraction
from afno_repro.data.sampling import EvaluationSampler
from afno_repro.data.embedded import SkimagePhotos
from afno_repro.data.imagenet import ImageNetFolder, load_subset, make_selection, make_subset, save_subset
from afno_repro.data.inpainting import SELECTIONS, InpaintingDataModule
from afno_repro.data.classification import ClassificationDataModule
from afno_repro.data.shapes import SHAPE_CLASSES, make_shapes
from afno_repro.data.segmentation import FewShotSegmentationDataModule, SegmentationPairs
from afno_repro.data.cityscapes import CityscapesDataModule

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
    "register_dataset",
    "save_subset",
    "user_message",
]
