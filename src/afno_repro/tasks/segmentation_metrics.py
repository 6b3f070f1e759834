"""Segmentation metrics: mIoU as DatasetGAN counts it, the fold-selection protocols, the pixel prior.

mIoU follows DatasetGAN's evaluation: intersections and unions are summed over the whole
evaluation set (a confusion matrix, :class:`afno_repro.tasks.confusion.ConfusionMatrix`, reduced over
DDP ranks) and every class id ``0 .. C-1`` is counted, background included; a class that occurs
neither in the truth nor in the prediction scores 0 (DatasetGAN divides by ``union + 1e-8``).
``absent_classes="skip"`` leaves such classes out of the mean instead (torchmetrics' macro
average): :func:`iou_from_confusion`.

Selection protocols (:func:`protocol_results`; the segmentation task's validation loop scores
every test image and keeps one confusion matrix per fold of the sorted test images, so all of them
are computed in every run and recorded in ``metrics.json``; the task's ``selection`` picks the
headline number and the checkpoint):

- ``"max_over_run"`` (the paper's A.4: "evaluate every 100 epochs and report the maximum"): the
  best evaluation's mIoU on all test images. Selected on the reported images.
- ``"heldout"``: fold 0 selects the evaluation; folds 1..F-1 (and the remainder) are reported.
- ``"fivefold"`` (DatasetGAN's protocol): each fold selects an evaluation, the other folds score
  it; mean and (population) standard deviation over the folds. As DatasetGAN cuts them, a fold is
  ``n // F`` images and the remainder is always among the scored ones, never selecting.

:class:`PixelPrior` is the learning-free baseline: each pixel's most frequent training class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import Metric

from afno_repro.tasks.segmentation_inference import resize_labels

__all__ = ["ABSENT_CLASSES", "PixelPrior", "iou_from_confusion", "protocol_results"]

ABSENT_CLASSES = ("zero", "skip")


def iou_from_confusion(confusion: Tensor, absent_classes: str = "zero") -> tuple[Tensor, Tensor]:
    """Per-class IoU and mIoU (in %) from a ``(C, C)`` confusion matrix (rows truth, columns prediction).

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` with counts summed over the whole set. A class with an
    empty union scores 0 and counts in the mean (``absent_classes="zero"``, DatasetGAN) or is left
    out of it (``"skip"``; its IoU is then NaN).

    Example
    -------
    >>> confusion = torch.tensor([[3, 1, 0], [1, 1, 0], [0, 0, 0]])
    >>> iou, miou = iou_from_confusion(confusion)
    >>> [round(v, 4) for v in iou.tolist()], round(miou.item(), 4)
    ([0.6, 0.3333, 0.0], 31.1111)
    >>> round(iou_from_confusion(confusion, "skip")[1].item(), 4)
    46.6667
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    iou = torch.where(present, true_positive / union.clamp_min(1), torch.zeros_like(union))
    if absent_classes == "skip":
        iou = torch.where(present, iou, torch.full_like(iou, float("nan")))
        miou = iou[present].mean() if present.any() else torch.tensor(float("nan"), dtype=iou.dtype)
    else:
        miou = iou.mean()
    return iou.float(), (100 * miou).float()


def protocol_results(history: list[dict[str, Any]], absent_classes: str = "zero",
                     num_folds: int | None = None) -> dict[str, Any]:
    """The three selection protocols from the per-fold confusion matrices of each evaluation.

    Parameters
    ----------
    history
        One entry per evaluation: ``{"epoch": int, "confusion": (F, C, C) tensor, "images": (F,)}``.
    num_folds
        How many of the ``F`` buckets are folds that select; those after them (DatasetGAN's remainder)
        are always scored and never select. ``None``: all ``F``.

    Returns
    -------
    dict
        ``max_over_run``: best mIoU on all folds together and its epoch; ``heldout``: the mIoU on
        the other buckets (folds 1..F-1 and the remainder) at the evaluation where fold 0 is best;
        ``fivefold``: per fold, the evaluation it selects and the mIoU of the other buckets there,
        with their mean and population std.
        Empty when there was no evaluation; only ``max_over_run`` with a single fold.

    Example
    -------
    >>> good, bad = torch.eye(2).long() * 5, torch.ones(2, 2).long()
    >>> history = [{"epoch": 0, "confusion": torch.stack([bad, bad]), "images": torch.tensor([2, 2])},
    ...            {"epoch": 1, "confusion": torch.stack([good, bad]), "images": torch.tensor([2, 2])}]
    >>> results = protocol_results(history)
    >>> results["max_over_run"]["epoch"], results["heldout"]["epoch"], results["fivefold"]["folds"][1]["epoch"]
    (1, 1, 0)
    """
    if not history:
        return {}

    def miou(confusion: Tensor) -> float:
        return float(iou_from_confusion(confusion, absent_classes)[1])

    epochs = [entry["epoch"] for entry in history]
    confusions = torch.stack([torch.as_tensor(entry["confusion"]) for entry in history])  # (E, F, C, C)
    images = torch.stack([torch.as_tensor(entry["images"]) for entry in history])  # (E, F)
    buckets = confusions.shape[1]
    num_folds = buckets if num_folds is None else num_folds
    on_all = [miou(c.sum(0)) for c in confusions]
    best = max(range(len(history)), key=lambda e: on_all[e])
    results: dict[str, Any] = {
        "max_over_run": {"miou": on_all[best], "epoch": epochs[best], "num_images": int(images[best].sum()),
                         "evaluations": [{"epoch": e, "miou": m} for e, m in zip(epochs, on_all)]},
    }

    def select_on(fold: int) -> dict[str, Any]:
        chosen = max(range(len(history)), key=lambda e: miou(confusions[e, fold]))
        others = [k for k in range(buckets) if k != fold]
        return {"epoch": epochs[chosen], "selection_miou": miou(confusions[chosen, fold]),
                "miou": miou(confusions[chosen, others].sum(0)), "num_images": int(images[chosen, others].sum()),
                "selection_images": int(images[chosen, fold])}

    if num_folds < 2:  # one fold (Cityscapes' val split): nothing to hold out
        return results
    results["heldout"] = {"selection_fold": 0, **select_on(0)}
    folds = [select_on(k) for k in range(num_folds)]
    scores = torch.tensor([fold["miou"] for fold in folds], dtype=torch.float64)
    results["fivefold"] = {"miou": float(scores.mean()), "miou_std": float(scores.std(unbiased=False)),
                           "num_folds": num_folds, "folds": folds}
    return results


class PixelPrior(Metric):
    """Per-pixel class counts of the training masks; its baseline predicts each pixel's most frequent class.

    A learning-free floor for few-shot segmentation of aligned images (faces, cars): what the label
    layout alone gives, without looking at the image. Counts are summed over DDP ranks.

    Example
    -------
    >>> prior = PixelPrior(num_classes=3, image_size=2)
    >>> prior.update(torch.tensor([[[0, 1], [2, 2]], [[0, 1], [1, 255]]]))
    >>> prior.compute().tolist()
    [[0, 1], [1, 2]]

    With ``resize=True`` masks of any size are first resized (nearest) to the ``image_size``
    grid: the Cityscapes reading, whose prior is kept on a coarse grid of the training crops and
    stretched (nearest) to each evaluation label's size.

    >>> prior = PixelPrior(num_classes=3, image_size=2, resize=True)
    >>> prior.update(torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 2]]]))
    >>> prior.compute().tolist()
    [[0, 1], [2, 2]]
    """

    full_state_update = False

    def __init__(self, num_classes: int, image_size: int, resize: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.resize = resize
        self.add_state("counts", default=torch.zeros(num_classes, image_size, image_size, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, mask: Tensor) -> None:
        if self.resize and tuple(mask.shape[-2:]) != tuple(self.counts.shape[-2:]):
            mask = resize_labels(mask, tuple(self.counts.shape[-2:]))
        if tuple(mask.shape[-2:]) != tuple(self.counts.shape[-2:]):
            raise ValueError(
                f"training masks of {tuple(mask.shape[-2:])} pixels do not match the task's image_size "
                f"{self.counts.shape[-1]}: set task.image_size to the data's image size (the configs use "
                "${data.image_size})."
            )
        valid = mask < self.num_classes
        one_hot = F.one_hot(mask.clamp_max(self.num_classes - 1), self.num_classes) * valid[..., None]
        self.counts += one_hot.sum(0).permute(2, 0, 1).double()

    def compute(self) -> Tensor:
        return self.counts.argmax(0)
