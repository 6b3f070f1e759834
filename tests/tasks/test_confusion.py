"""The segmentation confusion matrix: the exact counts of torchmetrics' deterministic path, without its
(N, C^2) tensor, on every device's counting method."""

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from afno_repro.tasks.confusion import ConfusionMatrix, count_by_sorting, count_pairs


def _labels(shape, num_classes, ignore=255, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < 0.1] = ignore
    prediction = torch.randint(0, num_classes, shape, generator=generator)
    return prediction, target


@pytest.mark.parametrize("num_classes,shape", [(19, (2, 64, 128)), (34, (3, 56, 56)), (2, (1, 5, 7))])
def test_the_counts_are_those_of_torchmetrics_deterministic_path(num_classes, shape):
    """Several updates, ignored pixels included: the same int64 matrix as torchmetrics computes with
    deterministic algorithms on (its slow path, the trainer's default) and off."""
    fast = ConfusionMatrix(num_classes=num_classes, ignore_index=255, validate_args=False)
    slow = {mode: MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=255, validate_args=False)
            for mode in (True, False)}
    before = torch.are_deterministic_algorithms_enabled()
    try:
        for seed in range(3):
            prediction, target = _labels(shape, num_classes, seed=seed)
            fast.update(prediction, target)
            for mode, metric in slow.items():
                torch.use_deterministic_algorithms(mode, warn_only=True)
                metric.update(prediction, target)
    finally:
        torch.use_deterministic_algorithms(before)
    counts = fast.compute()
    assert counts.dtype == torch.long and int(counts.sum()) > 0
    for metric in slow.values():
        assert torch.equal(counts, metric.compute())


def test_sorting_counts_what_bincount_counts():
    """The counting used off the CPU gives bincount's counts (here on the CPU, where both run)."""
    index = torch.randint(0, 361, (100_000,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(count_by_sorting(index, 361), torch.bincount(index, minlength=361))
    assert count_by_sorting(torch.tensor([], dtype=torch.long), 4).tolist() == [0, 0, 0, 0]


def test_rows_are_truth_and_columns_prediction():
    counts = count_pairs(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 1]), 3)
    assert counts.tolist() == [[0, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_a_label_outside_the_classes_is_named():
    with pytest.raises(ValueError, match="outside 0..2"):
        count_pairs(torch.tensor([0, 7]), torch.tensor([0, 1]), 3, ignore_index=255)
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMatrix(num_classes=3).update(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long))
