"""The segmentation task: mIoU as DatasetGAN counts it, the selection protocols, the pixel-prior
baseline, and the evaluation history surviving a checkpoint."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from afno_repro.tasks.segmentation import SegmentationTask
from afno_repro.tasks.segmentation_metrics import PixelPrior, iou_from_confusion, protocol_results

C = 4  # classes 0..3; class 3 occurs in neither truth nor prediction


class _PredictFromImage(nn.Module):
    """Logits that predict the class written into channel 0 of the image (as class / 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = C
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        labels = (image[:, 0] * 10).round().long()
        return nn.functional.one_hot(labels, C).permute(0, 3, 1, 2).float() * 10 + self.unused


def _batches() -> list[dict[str, torch.Tensor]]:
    truth = torch.tensor([[[0, 0], [1, 2]], [[1, 1], [255, 2]]])
    prediction = torch.tensor([[[0, 1], [1, 2]], [[1, 0], [0, 0]]])
    image = torch.zeros(2, 3, 2, 2)
    image[:, 0] = prediction / 10
    return [{"image": image, "mask": truth, "index": torch.arange(2), "fold": torch.tensor([0, 1])}]


def _hand_computed() -> tuple[list[float], float]:
    # Scored pixels (truth, prediction): (0,0) (0,1) (1,1) (2,2) | (1,1) (1,0) (2,0); the 255 pixel is not scored.
    # class 0: TP 1, FP 2 (predicted 0 on truth 1 and 2), FN 1 -> 1/4
    # class 1: TP 2, FP 1, FN 1 -> 2/4;  class 2: TP 1, FN 1 -> 1/2;  class 3: empty union -> 0, counted.
    per_class = [0.25, 0.5, 0.5, 0.0]
    return per_class, 100 * sum(per_class) / C


def test_miou_matches_a_hand_computed_confusion_matrix():
    confusion = torch.tensor([[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    iou, miou = iou_from_confusion(confusion)
    per_class, expected = _hand_computed()
    assert iou.tolist() == pytest.approx(per_class)
    assert miou.item() == pytest.approx(expected)
    # "skip" leaves the absent class out of the mean.
    assert iou_from_confusion(confusion, "skip")[1].item() == pytest.approx(100 * (0.25 + 0.5 + 0.5) / 3)


def test_test_loop_scores_the_set_with_ignored_pixels_and_every_class(tmp_path):
    task = SegmentationTask(_PredictFromImage(), partial(torch.optim.SGD, lr=0.0), image_size=2, num_grid_images=0)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    (results,) = trainer.test(task, dataloaders=DataLoader(_batches(), batch_size=None), verbose=False)
    per_class, expected = _hand_computed()
    assert results["test/miou"] == pytest.approx(expected, abs=1e-4)
    assert results["test/num_images"] == 2
    assert results["test/pixel_accuracy"] == pytest.approx(100 * 4 / 7, abs=1e-4)
    assert task.test_iou.tolist() == pytest.approx(per_class, abs=1e-6)


def test_protocols_select_as_described():
    def confusion(correct: int) -> torch.Tensor:  # 2 classes, `correct` of 4 pixels right
        return torch.tensor([[correct // 2, 2 - correct // 2], [2 - (correct - correct // 2), correct - correct // 2]])

    # Evaluation 0 is best on fold 0, evaluation 1 on folds 1 and 2 and on all folds together.
    history = [
        {"epoch": 9, "confusion": torch.stack([confusion(4), confusion(1), confusion(1)]), "images": torch.tensor([1, 1, 1])},
        {"epoch": 19, "confusion": torch.stack([confusion(2), confusion(4), confusion(4)]), "images": torch.tensor([1, 1, 1])},
    ]
    results = protocol_results(history)
    miou = lambda *c: iou_from_confusion(sum(confusion(k) for k in c))[1].item()  # noqa: E731
    assert results["max_over_run"]["epoch"] == 19
    assert results["max_over_run"]["miou"] == pytest.approx(miou(2, 4, 4))
    assert results["heldout"]["epoch"] == 9 and results["heldout"]["miou"] == pytest.approx(miou(1, 1))
    assert results["heldout"]["num_images"] == 2
    folds = results["fivefold"]["folds"]
    assert [fold["epoch"] for fold in folds] == [9, 19, 19]
    scores = torch.tensor([miou(1, 1), miou(2, 4), miou(2, 4)], dtype=torch.float64)
    assert results["fivefold"]["miou"] == pytest.approx(scores.mean().item())
    assert results["fivefold"]["miou_std"] == pytest.approx(scores.std(unbiased=False).item())


def test_the_remainder_of_datasetgans_cut_is_always_scored_and_never_selects():
    """DatasetGAN cuts n test images into folds of n // 5 and scores each fold's pick on all other images,
    the left-over ones included: they are bucket F here, never a selecting fold. A checkpoint written before
    that cut resumes with its evaluations whole in that bucket (their folds held other images)."""
    def confusion(correct: int) -> torch.Tensor:
        return torch.tensor([[correct // 2, 2 - correct // 2], [2 - (correct - correct // 2), correct - correct // 2]])

    # Two folds and the remainder; the remainder would pick evaluation 0 if it selected.
    history = [
        {"epoch": 9, "confusion": torch.stack([confusion(1), confusion(1), confusion(4)]), "images": torch.tensor([1, 1, 2])},
        {"epoch": 19, "confusion": torch.stack([confusion(4), confusion(4), confusion(0)]), "images": torch.tensor([1, 1, 2])},
    ]
    results = protocol_results(history, num_folds=2)
    miou = lambda *c: iou_from_confusion(sum(confusion(k) for k in c))[1].item()  # noqa: E731
    assert results["fivefold"]["num_folds"] == 2 and [f["epoch"] for f in results["fivefold"]["folds"]] == [19, 19]
    assert results["fivefold"]["folds"][0]["miou"] == pytest.approx(miou(4, 0))  # fold 1 and the remainder
    assert results["heldout"]["num_images"] == 3
    task = SegmentationTask(_PredictFromImage(), partial(torch.optim.SGD, lr=0.0), image_size=2, num_folds=2)
    assert len(task.val_confusion) == 3
    old = {"segmentation_history": [{"epoch": 0, "confusion": torch.stack([confusion(4), confusion(2)]),
                                     "images": torch.tensor([1, 1])}]}
    task.on_load_checkpoint(old)  # its folds were cut otherwise: kept whole, in the bucket that never selects
    assert task.history[0]["images"].tolist() == [0, 0, 2]
    assert torch.equal(task.history[0]["confusion"][2], confusion(4) + confusion(2))
    assert protocol_results(task.history, num_folds=2)["max_over_run"]["miou"] == pytest.approx(miou(4, 2))

def test_pixel_prior_predicts_each_pixels_most_frequent_training_class():
    prior = PixelPrior(num_classes=3, image_size=2)
    prior.update(torch.tensor([[[0, 2], [1, 255]], [[0, 2], [2, 255]], [[1, 2], [2, 1]]]))
    assert prior.compute().tolist() == [[0, 2], [2, 1]]
    with pytest.raises(ValueError, match="image_size"):
        prior.update(torch.zeros(1, 3, 3, dtype=torch.long))


def test_history_is_kept_by_a_resumed_run_not_replaced_when_testing():
    task = SegmentationTask(_PredictFromImage(), partial(torch.optim.SGD, lr=0.0), image_size=2)
    task.history = [{"epoch": 0, "confusion": torch.eye(C).long()[None], "images": torch.tensor([1])}]
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    resumed = SegmentationTask(_PredictFromImage(), partial(torch.optim.SGD, lr=0.0), image_size=2)
    resumed.on_load_checkpoint(checkpoint)
    assert len(resumed.history) == 1 and torch.equal(resumed.history[0]["confusion"], torch.eye(C).long()[None])


@pytest.mark.parametrize(("option", "value", "message"), [
    ("selection", "best", "selection='best' is not one of"),
    ("absent_classes", "nan", "absent_classes='nan'"),
    ("num_folds", 0, "num_folds=0"),
    ("inference", "tiles", "inference=.tiles."),
])
def test_bad_options_are_named(option, value, message):
    with pytest.raises(ValueError, match=message):
        SegmentationTask(_PredictFromImage(), partial(torch.optim.SGD, lr=0.0), image_size=2, **{option: value})


def test_a_backbone_without_classes_is_refused():
    with pytest.raises(ValueError, match="segmentation head"):
        SegmentationTask(nn.Conv2d(3, 3, 1), partial(torch.optim.SGD, lr=0.0), image_size=2)
