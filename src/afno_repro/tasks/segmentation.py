"""Few-shot semantic segmentation (paper Section 5.2, appendix A.4) as a Lightning task.

A ViT pretrained by inpainting gets a per-pixel classification head (a linear map from each token
to its ``p x p`` patch of class logits) and is finetuned with per-pixel cross-entropy on a few
labelled images (DatasetGAN's splits: 16 faces, 16 cars, 30 cats).

mIoU follows DatasetGAN's evaluation: intersections and unions are summed over the whole
evaluation set (a confusion matrix, ``torchmetrics``' ``MulticlassConfusionMatrix``, reduced over
DDP ranks) and every class id ``0 .. C-1`` is counted, background included; a class that occurs
neither in the truth nor in the prediction scores 0 (DatasetGAN divides by ``union + 1e-8``).
``absent_classes="skip"`` leaves such classes out of the mean instead (torchmetrics' macro
average).

Selection protocols (``selection``; the validation loop always scores every test image and keeps
one confusion matrix per fold of the sorted test images, so all three are computed in every run and
recorded in ``metrics.json``; ``selection`` picks the headline number and the checkpoint):

- ``"max_over_run"`` (default, the paper's A.4: "evaluate every 100 epochs and report the
  maximum"): the best evaluation's mIoU on all test images. Selected on the reported images.
- ``"heldout"``: fold 0 selects the evaluation; folds 1..F-1 are reported.
- ``"fivefold"`` (DatasetGAN's protocol): each fold selects an evaluation, the other folds score
  it; mean and (population) standard deviation over the folds.

Batches are dicts ``{"image": (B, 3, H, W) in [0, 1], "mask": (B, H, W) long class ids or
ignore_index, "index": (B,), "fold": (B,)}``.
"""

from __future__ import annotations

import colorsys
from typing import Any, Callable, Iterable, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, Metric, SumMetric
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from afno_repro.tasks.base import PaperTask, Reported, check_choice

__all__ = ["SegmentationTask", "PixelPrior", "iou_from_confusion", "protocol_results", "palette",
           "make_segmentation_grid", "SELECTIONS", "ABSENT_CLASSES"]

SELECTIONS = ("max_over_run", "heldout", "fivefold")
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


def protocol_results(history: list[dict[str, Any]], absent_classes: str = "zero") -> dict[str, Any]:
    """The three selection protocols from the per-fold confusion matrices of each evaluation.

    Parameters
    ----------
    history
        One entry per evaluation: ``{"epoch": int, "confusion": (F, C, C) tensor, "images": (F,)}``.

    Returns
    -------
    dict
        ``max_over_run``: best mIoU on all folds together and its epoch; ``heldout``: the mIoU on
        folds 1..F-1 at the evaluation where fold 0 is best; ``fivefold``: per fold, the evaluation
        it selects and the mIoU of the other folds there, with their mean and population std.
        Empty when there was no evaluation.

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
    num_folds = confusions.shape[1]
    on_all = [miou(c.sum(0)) for c in confusions]
    best = max(range(len(history)), key=lambda e: on_all[e])
    results: dict[str, Any] = {
        "max_over_run": {"miou": on_all[best], "epoch": epochs[best], "num_images": int(images[best].sum()),
                         "evaluations": [{"epoch": e, "miou": m} for e, m in zip(epochs, on_all)]},
    }

    def select_on(fold: int) -> dict[str, Any]:
        chosen = max(range(len(history)), key=lambda e: miou(confusions[e, fold]))
        others = [k for k in range(num_folds) if k != fold]
        return {"epoch": epochs[chosen], "selection_miou": miou(confusions[chosen, fold]),
                "miou": miou(confusions[chosen, others].sum(0)), "num_images": int(images[chosen, others].sum()),
                "selection_images": int(images[chosen, fold])}

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
    """

    full_state_update = False

    def __init__(self, num_classes: int, image_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, image_size, image_size, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, mask: Tensor) -> None:
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


def palette(num_classes: int) -> Tensor:
    """``(num_classes, 3)`` colours in ``[0, 1]``: black for class 0, then evenly spaced hues.

    Example
    -------
    >>> palette(3).shape, palette(3)[0].tolist()
    (torch.Size([3, 3]), [0.0, 0.0, 0.0])
    """
    colours = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb((0.618034 * k) % 1.0, 0.75, 0.95) for k in range(1, num_classes)]
    return torch.tensor(colours[:num_classes], dtype=torch.float32)


def make_segmentation_grid(image: Tensor, truth: Tensor, prediction: Tensor, num_classes: int,
                           ignore_index: int = 255, padding: int = 2) -> Tensor:
    """Rows image / truth / prediction (classes coloured by :func:`palette`, ignored pixels white).

    Example
    -------
    >>> make_segmentation_grid(torch.rand(2, 3, 8, 6), torch.zeros(2, 8, 6).long(), torch.ones(2, 8, 6).long(), 3).shape
    torch.Size([3, 32, 18])
    """
    colours = torch.cat([palette(num_classes), torch.ones(1, 3)])

    def colour(labels: Tensor) -> Tensor:
        labels = torch.where(labels == ignore_index, num_classes, labels.clamp(0, num_classes)).cpu()
        return colours[labels].permute(0, 3, 1, 2)

    cells = torch.cat([image.detach().float().cpu().clamp(0, 1), colour(truth), colour(prediction)])
    return make_grid(cells, nrow=image.shape[0], padding=padding, pad_value=1.0)


class SegmentationTask(PaperTask):
    """Per-pixel classification (paper A.4): cross-entropy, mIoU over the evaluation set, protocols.

    Parameters
    ----------
    backbone
        Maps ``(B, 3, H, W)`` images in ``[0, 1]`` to ``(B, C, H, W)`` logits
        (``afno_repro.models.ViT(head="segmentation", num_classes=C)``).
    optimizer, scheduler, scheduler_interval, compile
        As :class:`~afno_repro.tasks.base.PaperTask`. A.4: Adam, lr 1e-4 (self-attention) or 1e-3,
        no weight decay, no gradient clipping.
    num_classes
        ``C``; ``None`` takes ``backbone.num_classes``.
    ignore_index
        Label of pixels that are not scored (the data modules use 255).
    selection
        ``"max_over_run"`` (paper), ``"heldout"`` or ``"fivefold"`` (DatasetGAN); see the module
        docstring. Set from ``data.selection``, which also decides what the test loop scores.
    num_folds
        Folds of the sorted test images (DatasetGAN: 5).
    absent_classes
        ``"zero"`` (DatasetGAN: a class absent from truth and prediction scores 0 and counts) or
        ``"skip"``.
    image_size
        Side of the square training masks (the pixel-prior baseline's grid).
    num_grid_images
        Validation images shown in the image / truth / prediction grid written after each
        evaluation (``images/val_latest.png``); 0 disables it.
    run_baselines
        Score the pixel-prior baseline (each pixel's most frequent training class) in the test loop.

    Notes
    -----
    Logged: ``train/loss`` per step; per evaluation ``val/loss``, ``val/miou`` (all test images),
    ``val/miou_selection`` (fold 0), ``val/miou_best``, ``val/num_images``; in the test loop
    ``test/loss``, ``test/miou``, ``test/pixel_accuracy``, ``test/num_images`` and
    ``test/baseline/pixel_prior/miou``. mIoU is in percent, as the paper prints it. The per-fold
    confusion matrices of every evaluation are kept in checkpoints, so a resumed run reports what
    an uninterrupted one would.

    Example
    -------
    >>> from functools import partial
    >>> net = torch.nn.Conv2d(3, 4, 1)
    >>> task = SegmentationTask(net, partial(torch.optim.Adam, lr=1e-3), num_classes=4, image_size=8)
    >>> logits = task(torch.rand(2, 3, 8, 8))
    >>> task.loss(logits, torch.randint(0, 4, (2, 8, 8))).shape
    torch.Size([])
    """

    task_name = "segmentation"
    reported = (Reported("miou", "mIoU (%)", 2),)

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: Callable[[Optimizer], Any] | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        num_classes: int | None = None,
        ignore_index: int = 255,
        selection: str = "max_over_run",
        num_folds: int = 5,
        absent_classes: str = "zero",
        image_size: int = 224,
        num_grid_images: int = 4,
        compile: bool = False,
        run_baselines: bool = True,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, scheduler_interval, compile)
        check_choice("selection", selection, SELECTIONS, "SegmentationTask")
        check_choice("absent_classes", absent_classes, ABSENT_CLASSES, "SegmentationTask")
        num_classes = num_classes if num_classes is not None else getattr(backbone, "num_classes", None)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"SegmentationTask needs num_classes, an integer >= 2 (background included), but got {num_classes!r}; "
                "give the backbone a segmentation head (backbone.head=segmentation backbone.num_classes=<C>) or pass "
                "num_classes."
            )
        if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2:
            raise ValueError(f"num_folds={num_folds!r} is not an integer >= 2; DatasetGAN's protocol uses 5.")
        if not isinstance(run_baselines, bool):
            raise ValueError(f"run_baselines={run_baselines!r} is not true or false.")
        self.save_hyperparameters(logger=False, ignore=["backbone", "optimizer", "scheduler"])
        self.hparams.num_classes = num_classes
        confusion = dict(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
        # One confusion matrix per fold of the sorted test images: every protocol is a sum of them.
        self.val_confusion = nn.ModuleList(MulticlassConfusionMatrix(**confusion) for _ in range(num_folds))
        self.val_images = nn.ModuleList(SumMetric() for _ in range(num_folds))
        self.val_loss = MeanMetric()
        self.val_miou_best = MaxMetric()
        self.val_miou_best.persistent(True)
        self.test_confusion = MulticlassConfusionMatrix(**confusion)
        self.test_loss = MeanMetric()
        self.test_images = SumMetric()
        self.pixel_prior = PixelPrior(num_classes, image_size)
        self.pixel_prior.persistent(True)
        self.prior_confusion = MulticlassConfusionMatrix(**confusion)
        self.history: list[dict[str, Any]] = []
        self.test_iou: Tensor | None = None
        self._grid_batch: tuple[Tensor, Tensor, Tensor] | None = None
        self._prior_map: Tensor | None = None

    # --- the harness contract -------------------------------------------------------------
    @property
    def selection_metric(self) -> tuple[str, str]:  # type: ignore[override]
        return ("val/miou_selection" if self.hparams.selection == "heldout" else "val/miou", "max")

    def reading(self) -> dict[str, Any]:
        return {"absent_classes": self.hparams.absent_classes, "loss": "per-pixel cross-entropy",
                "ignore_index": self.hparams.ignore_index}

    def protocol(self, selection: str) -> str:
        every = self.trainer.check_val_every_n_epoch if self._trainer is not None else None
        cadence = "after every epoch" if every == 1 else f"every {every} epochs" if every else "at each evaluation"
        return {
            "max_over_run": f"maximum over the run of the mIoU on all test images, evaluated {cadence} (the paper's "
                            "protocol, A.4: selected on the reported images)",
            "heldout": "fold 0 of the sorted test images selects the checkpoint; the other folds are reported",
            "fivefold": "DatasetGAN's protocol: each of the folds of the sorted test images selects an evaluation, "
                        "the other folds score it; mean (std) over the folds",
        }[selection]

    def evaluation_record(self, values: dict[str, float | None], selection: str) -> dict[str, Any]:
        record = super().evaluation_record(values, selection)
        names = getattr(self.trainer.datamodule, "class_names", None) if self._trainer is not None else None
        if self.test_iou is not None:
            names = names or [str(k) for k in range(len(self.test_iou))]
            record["test"]["per_class_iou"] = {name: round(float(v), 6) for name, v in zip(names, self.test_iou)}
        record["protocols"] = protocol_results(self.history, self.hparams.absent_classes)
        if selection == "fivefold" and record["protocols"]:
            fivefold = record["protocols"]["fivefold"]
            record["result"].update(miou=fivefold["miou"], miou_std=fivefold["miou_std"],
                                    num_images=record["protocols"]["max_over_run"]["num_images"])
        return record

    # --- model ----------------------------------------------------------------------------
    def forward(self, image: Tensor) -> Tensor:
        return self.backbone(image)

    def loss(self, logits: Tensor, mask: Tensor) -> Tensor:
        """Per-pixel cross-entropy over the scored pixels, in float32 whatever the autocast dtype."""
        return F.cross_entropy(logits.float(), mask, ignore_index=self.hparams.ignore_index)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch["image"].shape[0])
        if self.hparams.run_baselines:
            self.pixel_prior.update(batch["mask"])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        prediction = logits.argmax(1)
        self.val_loss.update(self.loss(logits, batch["mask"]), weight=batch["image"].shape[0])
        for fold, (confusion, count) in enumerate(zip(self.val_confusion, self.val_images)):
            chosen = batch["fold"] == fold
            if chosen.any():
                confusion.update(prediction[chosen], batch["mask"][chosen])
                count.update(chosen.sum().float())
        if batch_idx == 0 and self.hparams.num_grid_images > 0:
            n = self.hparams.num_grid_images
            self._grid_batch = (batch["image"][:n].cpu(), batch["mask"][:n].cpu(), prediction[:n].cpu())

    def on_validation_epoch_end(self) -> None:
        confusion = torch.stack([metric.compute() for metric in self.val_confusion]).cpu()
        images = torch.stack([metric.compute() for metric in self.val_images]).round().long().cpu()
        loss = self.val_loss.compute()
        for metric in (*self.val_confusion, *self.val_images, self.val_loss):
            metric.reset()
        absent = self.hparams.absent_classes
        miou = iou_from_confusion(confusion.sum(0), absent)[1]
        selection = iou_from_confusion(confusion[0], absent)[1]
        # Values already reduced over ranks: every rank logs the same number.
        self.log_dict({"val/loss": loss, "val/miou": miou, "val/miou_selection": selection,
                       "val/num_images": images.sum().float()}, sync_dist=True, prog_bar=False)
        # The sanity check runs untrained weights on a few batches: no best score, no history, no grid.
        if self.trainer.sanity_checking:
            return
        self.val_miou_best(miou.to(self.device))
        self.log("val/miou_best", self.val_miou_best.compute(), sync_dist=True, prog_bar=True)
        self.history.append({"epoch": self.current_epoch, "global_step": self.global_step,
                             "confusion": confusion, "images": images})
        if self._grid_batch is not None:
            self.write_grid(make_segmentation_grid(*self._grid_batch, self.hparams.num_classes, self.hparams.ignore_index),
                            "val/segmentations", "image / truth / prediction")

    def on_test_epoch_start(self) -> None:
        # Computed once here: computing a metric synchronises the ranks, which a test step, on
        # uneven shards, must not do. Without training masks seen (a test-only call) there is no prior.
        seen = self.hparams.run_baselines and bool(self.pixel_prior.counts.any())
        self._prior_map = self.pixel_prior.compute() if seen else None

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        self.test_loss.update(self.loss(logits, batch["mask"]), weight=batch["image"].shape[0])
        self.test_confusion.update(logits.argmax(1), batch["mask"])
        self.test_images.update(torch.tensor(float(batch["image"].shape[0]), device=self.device))
        if self._prior_map is not None:
            self.prior_confusion.update(self._prior_map.to(batch["mask"].device).expand_as(batch["mask"]), batch["mask"])

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute()
        iou, miou = iou_from_confusion(confusion, self.hparams.absent_classes)
        self.test_iou = iou.cpu()
        scored = confusion.sum().clamp_min(1)
        values = {"test/miou": miou, "test/pixel_accuracy": 100 * confusion.diagonal().sum() / scored,
                  "test/loss": self.test_loss.compute(), "test/num_images": self.test_images.compute()}
        if self._prior_map is not None:
            values["test/baseline/pixel_prior/miou"] = iou_from_confusion(self.prior_confusion.compute(),
                                                                          self.hparams.absent_classes)[1]
        self.log_dict({k: v.float().to(self.device) for k, v in values.items()}, sync_dist=True)
        for metric in (self.test_confusion, self.test_loss, self.test_images, self.prior_confusion):
            metric.reset()

    # --- the evaluation history is training state ------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["segmentation_history"] = [dict(entry) for entry in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming training restores the evaluations made so far. Testing a selected checkpoint does
        # not: the run's full history stays, not the one saved at the selected epoch.
        if self._trainer is not None and self.trainer.state.fn != "fit":
            return
        self.history = [dict(entry) for entry in checkpoint.get("segmentation_history", [])]
