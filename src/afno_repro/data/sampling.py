"""Samplers and per-item seeding shared by every DataModule: the one seeding mechanism.

Training: :class:`SeededSampler` runs in the main process and hands every item of an epoch a key
``(index, image_seed, mask_seed)``, both seeds drawn from a generator seeded by ``(seed, epoch)``.
A dataset draws item ``index``'s random augmentation from ``item_generator(image_seed)``, a
``torch.Generator`` of its own, so the global random state (CPU or CUDA) is neither read nor
reseeded and the batches of an epoch are the same for any ``num_workers`` and across runs with the
same ``seed``. A third-party transform that can only draw from the global generators (timm's, from
Python's, NumPy's and torch's) runs inside :func:`global_random_state` of that same seed instead,
which restores the global state afterwards.

Evaluation: :class:`EvaluationSampler` shards the items without padding under DDP, so every image
is counted once. Both samplers are ``DistributedSampler`` subclasses, so Lightning keeps them as
they are whether ``trainer.use_distributed_sampler`` is true or false.

Example
-------
>>> [list(EvaluationSampler(5, num_replicas=2, rank=r)) for r in range(2)]
[[0, 2, 4], [1, 3]]
>>> keys = list(SeededSampler(dataset_size=3, num_samples=4, seed=0))
>>> sorted(index for index, _, _ in keys[:3]), len(keys)
([0, 1, 2], 4)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from afno_repro.data.masks import derive_seed

__all__ = ["MAX_SEED", "EvaluationSampler", "SeededSampler", "coin", "global_random_state", "item_generator", "process_group", "uniform"]

MAX_SEED = 2**63 - 1


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` group; ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def item_generator(seed: int) -> torch.Generator:
    """The generator an item draws its augmentation from: a fresh ``torch.Generator`` seeded by ``seed``."""
    return torch.Generator().manual_seed(int(seed))


@contextmanager
def global_random_state(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's (CPU) random state from ``seed`` for the block, then
    restore them: for transforms that draw from the global generators only (timm's). The GPUs'
    generators are not touched (``torch.manual_seed`` would reseed them too, and ``fork_rng`` here
    restores the CPU one only): a loader in the main process must not reset drop-path's draws."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class EvaluationSampler(DistributedSampler):
    """Rank ``rank``'s share of ``num_items`` evaluation items: indices ``rank, rank + W, ...``.

    Unlike torch's ``DistributedSampler`` (which Lightning injects by default), the shards are not
    padded to equal length with repeated items, which an evaluation would count twice; metrics
    that synchronise their state across processes (torchmetrics) handle uneven shards. It
    subclasses ``DistributedSampler`` because Lightning replaces only samplers that are not one.

    Parameters
    ----------
    num_items: length of the evaluation split.
    num_replicas: world size ``W``.
    rank: this process's rank, ``0 <= rank < W``.

    Example
    -------
    >>> [list(EvaluationSampler(5, num_replicas=2, rank=r)) for r in range(2)]
    [[0, 2, 4], [1, 3]]
    """

    def __init__(self, num_items: int, num_replicas: int, rank: int) -> None:
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = range(rank, num_items, num_replicas)
        self.num_samples = self.total_size = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededSampler(DistributedSampler):
    """Yields ``(index, image_seed, mask_seed)`` for this rank's share of a shuffled epoch.

    The epoch is ``num_samples`` items: a random permutation of the dataset (repeated when
    ``num_samples`` exceeds its length, truncated when it is smaller), everything drawn from a
    generator seeded by ``(seed, epoch)``. Rank ``r`` of ``W`` takes positions ``r, r + W, ...``
    of it, wrapped around to a multiple of ``W`` so all ranks get the same count. ``epoch``
    advances after each pass unless ``set_epoch`` sets it. A ``DistributedSampler`` so that
    Lightning does not wrap it in one that would shard (and reshuffle) it again.
    """

    def __init__(self, dataset_size: int, num_samples: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(dataset_size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.dataset_size = dataset_size
        self.epoch_size = num_samples
        self.num_samples = -(-num_samples // num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        self.epoch += 1
        rounds = -(-self.epoch_size // self.dataset_size)
        order = torch.cat([torch.randperm(self.dataset_size, generator=generator) for _ in range(rounds)])[: self.epoch_size]
        seeds = torch.randint(0, MAX_SEED, (self.epoch_size, 2), generator=generator)
        items = list(zip(order.tolist(), *seeds.T.tolist()))
        items += items[: self.total_size - self.epoch_size]
        return iter(items[self.rank : self.total_size : self.num_replicas])


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """A draw of ``U(low, high)`` from ``generator``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def coin(generator: torch.Generator) -> bool:
    """A fair coin flip drawn from ``generator``."""
    return bool(torch.randint(2, (), generator=generator))
