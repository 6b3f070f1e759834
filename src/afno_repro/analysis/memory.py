"""What autograd keeps for backward: the activation memory of a training step, counted on any device.

A GPU's peak memory needs a GPU to measure; the bytes autograd saves for backward do not. They are the
part of a training step's memory that grows with the batch (weights, gradients and optimizer state do
not), so two mixers compared on these bytes on a CPU compare as their activations will on a GPU at the
same dtype. Storages are counted once however many tensors view them (a reshape or a transpose saved
by two operations costs its bytes once); tensors saved by a checkpointed region are its inputs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch

__all__ = ["SavedForBackward", "saved_for_backward"]


class SavedForBackward:
    """The distinct storages saved for backward while :func:`saved_for_backward` was open."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._storages: dict[tuple[str, int, int], int] = {}
        self._excluded = {self._key(tensor) for tensor in exclude}

    @staticmethod
    def _key(tensor: torch.Tensor) -> tuple[str, int, int]:
        storage = tensor.untyped_storage()
        return tensor.device.type, storage.data_ptr(), storage.nbytes()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = self._key(tensor)
        if key not in self._excluded:
            self._storages[key] = key[2]
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self._storages.values())

    @property
    def gib(self) -> float:
        return self.bytes / 2**30


@contextmanager
def saved_for_backward(exclude: Iterable[torch.Tensor] = ()) -> Iterator[SavedForBackward]:
    """Count what the forward passes run inside the block save for backward, leaving out the storages of
    ``exclude`` (a model's parameters: resident anyway, and no activation).

    >>> layer = torch.nn.Linear(4, 8)
    >>> x = torch.randn(2, 4, requires_grad=True)
    >>> with saved_for_backward() as saved:
    ...     y = layer(x)
    >>> saved.bytes  # the input (2 x 4) for the weight's gradient, the weight (8 x 4) for the input's; float32
    160
    >>> with saved_for_backward(exclude=layer.parameters()) as saved:
    ...     y = layer(x)
    >>> saved.bytes
    32
    """
    saved = SavedForBackward(exclude)
    with torch.autograd.graph.saved_tensors_hooks(saved._pack, lambda tensor: tensor):
        yield saved
