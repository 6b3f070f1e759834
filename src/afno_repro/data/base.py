"""What every DataModule shares: options kept as attributes, splits, loaders, and what a run records.

A DataModule subclasses :class:`DataModuleBase`, checks its options in ``__init__`` and calls
:meth:`~DataModuleBase.keep_options` (Lightning's ``save_hyperparameters`` plus one attribute per
option), builds its datasets in :meth:`~DataModuleBase.build` (called once, by ``setup``), names
them per split in :meth:`~DataModuleBase.split_dataset` and serves them through
:meth:`~DataModuleBase.training_loader` and :meth:`~DataModuleBase.evaluation_loader`, which
bring the seeded training order and the unpadded evaluation shards of
:mod:`afno_repro.data.sampling`. It describes itself to the harness with :meth:`run_label` (the
dataset in one word, for the run record) and :meth:`save_beside_run` (files a run keeps so that
it can be repeated exactly).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from afno_repro.data.imagenet import save_subset
from afno_repro.data.sampling import EvaluationSampler, SeededSampler, process_group

__all__ = ["IGNORE_INDEX", "DataModuleBase", "evenly_spaced"]

IGNORE_INDEX = 255
"""The label of pixels that are not scored, in every segmentation batch."""


def evenly_spaced(dataset: Dataset, count: int | None, option: str = "data.val_samples") -> Dataset:
    """``count`` evenly spaced items of ``dataset`` (all of it for ``None``): on a split sorted by
    class, every class stays represented. A ``count`` beyond the split keeps all of it, with a
    warning naming ``option`` and the number used."""
    if count is not None and count > len(dataset):
        warnings.warn(f"{option}={count} is more than the split's {len(dataset)} images: all {len(dataset)} are used "
                      "(the run's result.num_images records it).", stacklevel=2)
    if count is None or count >= len(dataset):
        return dataset
    return Subset(dataset, torch.linspace(0, len(dataset) - 1, count).round().long().tolist())


class DataModuleBase(pl.LightningDataModule):
    """The skeleton every DataModule of this package shares (module docstring).

    Attributes every subclass has: one per constructor option (after :meth:`keep_options`),
    ``val_batch_size`` (``batch_size`` when not given), ``train_set`` (``None`` until
    :meth:`setup`) and ``selection_files`` (files held out of training to select the checkpoint
    on, or ``None``).
    """

    splits: tuple[str, ...] = ("train", "val", "test")
    """The names :meth:`num_images` accepts."""

    selection_files: list[str] | None = None
    train_set: Dataset | None = None

    def keep_options(self, **derived: Any) -> None:
        """Save the calling ``__init__``'s arguments as hyperparameters (into checkpoints) and keep
        each as an attribute of the same name, then set ``derived`` (values computed from them).

        Properties of the class keep their own meaning and are not overwritten.
        ``val_batch_size`` defaults to ``batch_size``.
        """
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        options = dict(self.hparams)
        for name, value in options.items():
            # Every seed option (seed, val_mask_seed, subset_seed, ...): a text one failed at its first use, after
            # training, with int()'s message and no option named.
            if (name == "seed" or name.endswith("_seed")) and (
                    isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32):
                raise ValueError(f"{type(self).__name__} got {name}={value!r}; a seed is a whole number from 0 to "
                                 f"2**32 - 1, e.g. data.{name}=0.")
        if "val_batch_size" in options:
            options["val_batch_size"] = options["val_batch_size"] or options["batch_size"]
        for name, value in {**options, **derived}.items():
            if not isinstance(inspect.getattr_static(type(self), name, None), property):
                setattr(self, name, value)

    # --- what the harness reads -------------------------------------------------------------
    @classmethod
    def run_label(cls, options: Mapping[str, Any]) -> str | None:
        """The dataset a run with these options uses, in one word, for the run record
        (``options`` as in the config; nothing is read from disk)."""
        return options.get("source")

    def save_beside_run(self, run_dir: str | os.PathLike) -> dict[str, dict[str, str]]:
        """Write into ``run_dir`` what a run keeps to be repeated exactly: the files held out of
        training for checkpoint selection (``imagenet_selection.txt``), if any. Returns the
        entries to add to the run record, ``{"selection": {"files": <path>}}``, or ``{}``."""
        if not self.selection_files:
            return {}
        return {"selection": {"files": str(save_subset(self.selection_files, Path(run_dir) / "imagenet_selection.txt"))}}

    # --- datasets -------------------------------------------------------------------------------
    def build(self) -> None:
        """Build the datasets (``train_set`` and the evaluation ones); called once, by :meth:`setup`."""
        raise NotImplementedError(f"{type(self).__name__} must define build()")

    def check_files(self) -> None:
        """Check that ``data.root`` holds this module's layout, listing folders but reading no image: the run
        calls it before the model is built, so a wrong folder is named in a second, not after the model is built,
        its FLOPs counted and W&B started. Raises :class:`~afno_repro.data.errors.DataError` naming the folder;
        data that is not on disk (the embedded sources) has nothing to check."""

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.build()

    def split_dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (one of :attr:`splits`), after :meth:`setup`."""
        raise NotImplementedError(f"{type(self).__name__} must define split_dataset()")

    def num_images(self, split: str) -> int:
        """Items in ``split`` (one of :attr:`splits`); ``"train"`` counts the training set, not
        ``train_samples_per_epoch``."""
        if split not in self.splits:
            names = ", ".join(map(repr, self.splits[:-1])) + f" or {self.splits[-1]!r}"
            raise ValueError(f"unknown split {split!r}; use {names}.")
        self.setup()
        return len(self.split_dataset(split))

    # --- loaders --------------------------------------------------------------------------------
    def loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None, collate_fn: Callable | None = None,
               drop_last: bool = False) -> DataLoader:
        """A ``DataLoader`` with this module's ``num_workers`` and ``pin_memory``."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last,
        )

    def seeded_sampler(self, dataset: Dataset) -> SeededSampler:
        """This process's share of a seeded epoch of ``train_samples_per_epoch`` items (one pass by default)."""
        rank, world_size = process_group()
        num_samples = self.train_samples_per_epoch or len(dataset)
        return SeededSampler(len(dataset), num_samples, self.seed, num_replicas=world_size, rank=rank)

    def training_loader(self, dataset: Dataset, collate_fn: Callable | None = None, sampler: Sampler | None = None,
                        drop_last: bool = False) -> DataLoader:
        """``dataset`` in batches of ``batch_size`` keyed by ``sampler`` (default :meth:`seeded_sampler`)."""
        sampler = self.seeded_sampler(dataset) if sampler is None else sampler
        return self.loader(dataset, self.batch_size, sampler, collate_fn, drop_last)

    def evaluation_loader(self, dataset: Dataset, collate_fn: Callable | None = None) -> DataLoader:
        """``dataset`` in order, in batches of ``val_batch_size``; each process its unpadded share under DDP."""
        rank, world_size = process_group()
        sampler = EvaluationSampler(len(dataset), world_size, rank) if world_size > 1 else None
        return self.loader(dataset, self.val_batch_size, sampler, collate_fn)
