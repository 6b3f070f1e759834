"""The one registry of dataset sources: every source any DataModule reads, by kind and name.

A kind is the DataModule that serves it and the option that names it: ``"images"``
(:class:`~afno_repro.data.inpainting.InpaintingDataModule`, ``data.name``),
``"classification"`` (:class:`~afno_repro.data.classification.ClassificationDataModule`,
``data.source``), ``"segmentation"`` (the few-shot
:class:`~afno_repro.data.segmentation.FewShotSegmentationDataModule`, ``data.source``) and
``"cityscapes"`` (:class:`~afno_repro.data.cityscapes.CityscapesDataModule`, ``data.source``).
A source registers its class with :func:`register_dataset`; the DataModule looks its option up
here, so adding a source touches no DataModule.

Example
-------
>>> import afno_repro.data
>>> from afno_repro.data.registry import list_datasets
>>> list_datasets(), list_datasets("segmentation")
(['imagenet', 'skimage'], ['datasetgan', 'ddpm', 'embedded'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DATASETS", "KINDS", "build_dataset", "get_dataset_class", "list_datasets", "register_dataset"]

KINDS: dict[str, str] = {
    "images": "data.name of the inpainting DataModule",
    "classification": "data.source of the classification DataModule",
    "segmentation": "data.source of the few-shot segmentation DataModule",
    "cityscapes": "data.source of the Cityscapes DataModule",
}

DATASETS: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
"""``DATASETS[kind][name]``: the class of source ``name`` of ``kind``."""


def register_dataset(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: register the class as source ``name`` of ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}.")

    def register(cls: type) -> type:
        if name in DATASETS[kind] and DATASETS[kind][name] is not cls:
            raise ValueError(f"dataset {name!r} of kind {kind!r} is registered twice ({DATASETS[kind][name].__name__}, {cls.__name__}); rename one.")
        DATASETS[kind][name] = cls
        return cls

    return register


def list_datasets(kind: str = "images") -> list[str]:
    """Names of the sources of ``kind``, sorted (default: those ``data.name`` of inpainting accepts)."""
    return sorted(DATASETS[kind])


def get_dataset_class(name: str, kind: str = "images") -> type:
    """The class registered as ``name`` of ``kind``; ``ValueError`` naming the valid names otherwise."""
    try:
        return DATASETS[kind][name]
    except KeyError:
        if kind == "images":
            raise ValueError(
                f"unknown dataset {name!r}; valid datasets are: {', '.join(list_datasets())}. "
                "Set data.name to one of these ('skimage' needs no download)."
            ) from None
        raise ValueError(f"unknown {kind} dataset {name!r}; valid ones are: {', '.join(list_datasets(kind))} ({KINDS[kind]}).") from None


def build_dataset(name: str, split: str, **options: Any) -> Any:
    """Build split ``split`` of the image dataset registered as ``name`` with its own ``options``."""
    return get_dataset_class(name)(split=split, **options)
