"""A segmentation confusion matrix that costs what counting costs, with ``deterministic`` on.

torchmetrics' :class:`~torchmetrics.classification.MulticlassConfusionMatrix` counts pixels with
``torch.bincount``, except when ``torch.are_deterministic_algorithms_enabled()`` (the trainer's
``deterministic: warn``, our default): then it compares every pixel with every one of the ``C^2``
cells, an ``(N, C^2)`` tensor. One 2048x1024 Cityscapes label (19 classes) took 61 s and 13.5 GB that
way, against 0.5 s and 0.94 GB without; at the paper's scale one evaluation of the 500 validation
images would take hours and run out of memory on many machines.

Counting integers has no rounding, so the order in which counts are added cannot change them: any
counting method gives the same matrix on every device. :class:`ConfusionMatrix` counts with
``torch.bincount`` on the CPU (deterministic there) and with a sort (``torch.unique``, whose CUDA
kernel torch does not flag as nondeterministic) elsewhere, in ``O(N)`` memory either way. Its state,
arguments and result are those of the torchmetrics class it replaces (rows truth, columns prediction,
``ignore_index`` pixels dropped), so checkpoints and DDP reduction are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["ConfusionMatrix", "count_by_sorting", "count_pairs"]


def count_pairs(target: Tensor, prediction: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """The ``(C, C)`` int64 matrix of how many pixels of each true class (row) got each predicted class
    (column); pixels whose truth is ``ignore_index`` are not counted.

    Example
    -------
    >>> count_pairs(torch.tensor([0, 0, 1, 2, 255]), torch.tensor([0, 1, 1, 0, 2]), 3, ignore_index=255).tolist()
    [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    """
    target, prediction = target.reshape(-1), prediction.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        target, prediction = target[keep], prediction[keep]
    index = target.long() * num_classes + prediction.long()
    cells = num_classes * num_classes
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= cells):
        raise ValueError(f"a label or prediction is outside 0..{num_classes - 1} (and not ignore_index={ignore_index}): "
                         "check the dataset's label mapping and the model's number of classes.")
    counts = torch.bincount(index, minlength=cells) if index.device.type == "cpu" else count_by_sorting(index, cells)
    return counts.reshape(num_classes, num_classes)


def count_by_sorting(index: Tensor, cells: int) -> Tensor:
    """How often each of ``0 .. cells-1`` occurs in ``index``, by sorting (``torch.unique``): deterministic on
    every device, where torch flags CUDA's ``bincount`` under ``deterministic``.

    >>> count_by_sorting(torch.tensor([3, 0, 3, 1]), 5).tolist()
    [1, 1, 0, 2, 0]
    """
    values, found = torch.unique(index, return_counts=True)
    counts = torch.zeros(cells, dtype=torch.long, device=index.device)
    counts[values] = found
    return counts


class ConfusionMatrix(MulticlassConfusionMatrix):
    """:class:`~torchmetrics.classification.MulticlassConfusionMatrix` for label maps, counted by
    :func:`count_pairs` (same state ``confmat``, same result, no ``(N, C^2)`` tensor).

    ``update`` takes predicted class indices (``argmax`` of the logits) and labels of the same shape.

    Example
    -------
    >>> metric = ConfusionMatrix(num_classes=2, ignore_index=255)
    >>> metric.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 255]]))
    >>> metric.compute().tolist()
    [[1, 1], [0, 1]]
    """

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} and labels {tuple(target.shape)} differ in shape: "
                             "pass class indices (logits.argmax(1)), one per labelled pixel.")
        self.confmat += count_pairs(target, preds, self.num_classes, self.ignore_index)
