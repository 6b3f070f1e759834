"""Few-shot semantic segmentation (paper Section 5.2, appendix A.4) and Cityscapes (A.3) as a Lightning task.

A ViT pretrained by inpainting gets a per-pixel classification head (a linear map from each token
to its ``p x p`` patch of class logits) and is finetuned with per-pixel cross-entropy on a few
labelled images (DatasetGAN's splits: 16 faces, 16 cars, 30 cats); a SegFormer trunk pretrained
on ImageNet is finetuned on Cityscapes the same way.

The task puts together what lives beside it:

- :mod:`afno_repro.tasks.segmentation_inference`: how evaluation images are run through the model
  (``inference``: ``"whole"``, ``"slide"``, ``"resize"``) and logits resized to the label's size;
- :mod:`afno_repro.tasks.segmentation_metrics`: mIoU as DatasetGAN counts it (``absent_classes``),
  the fold-selection protocols and the pixel-prior baseline;
- :mod:`afno_repro.tasks.grids`: the image / truth / prediction grid written after each evaluation.

Selection (``selection``; the validation loop always scores every test image and keeps one
confusion matrix per fold of the sorted test images, so every protocol is computed in every run
and recorded in ``metrics.json``; ``selection`` picks the headline number and the checkpoint):
``"max_over_run"`` (default, the paper's A.4), ``"heldout"``, ``"fivefold"`` (DatasetGAN's; see
:func:`~afno_repro.tasks.segmentation_metrics.protocol_results`), or ``"last"`` (SegFormer's
Cityscapes recipe): the weights at the end of training, whatever the validation numbers; the
checkpoint callback then monitors nothing and keeps the latest.

Batches are dicts ``{"image": (B, 3, H, W) in [0, 1] (or normalised: the data module says),
"mask": (B, H', W') long class ids or ignore_index, "index": (B,), "fold": (B,)}``.

``extra_inference`` lists further modes the test loop scores beside the headline ``inference``
(logged as ``test/<mode>/miou`` and ``test/<mode>/pixel_accuracy``; ``metrics.json``:
``test.extra_inference``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, SumMetric

from afno_repro.data.base import IGNORE_INDEX
from afno_repro.tasks.base import PaperTask, Reported, check_choice, check_grid_images, resolve_num_classes
from afno_repro.tasks.confusion import ConfusionMatrix
from afno_repro.tasks.grids import make_segmentation_grid, segmentation_cells
from afno_repro.tasks.segmentation_inference import INFERENCES, describe_inference, infer_logits, resize_labels, resize_logits
from afno_repro.tasks.segmentation_metrics import ABSENT_CLASSES, PixelPrior, iou_from_confusion, protocol_results

__all__ = ["SegmentationTask", "SELECTIONS"]

SELECTIONS = ("max_over_run", "heldout", "fivefold", "last")


def _positive_sides(value: Any) -> bool:
    values = [value] if not isinstance(value, (list, tuple)) else list(value)
    return len(values) in (1, 2) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


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
        ``"max_over_run"`` (paper), ``"heldout"`` or ``"fivefold"`` (DatasetGAN), ``"last"``
        (SegFormer: the final weights); see the module docstring and
        :mod:`~afno_repro.tasks.segmentation_metrics`. Set from ``data.selection``,
        which also decides what the test loop scores.
    num_folds
        Folds of the sorted test images (DatasetGAN: 5); 1 (Cityscapes' val split) allows only
        ``"max_over_run"`` and ``"last"``.
    absent_classes
        ``"zero"`` (DatasetGAN: a class absent from truth and prediction scores 0 and counts) or
        ``"skip"``.
    image_size
        Side of the square training masks (the pixel-prior baseline's grid).
    prior_size
        ``None`` (default): the prior's grid is ``image_size`` and training masks must be that
        size. A side: the prior is kept on a ``prior_size`` square grid, training masks (crops)
        are resized to it (nearest) and the prior map is resized (nearest) to each evaluation
        label's size: Cityscapes' reading (non-square 2048x1024 labels, 1024 crops).
    inference
        ``"whole"`` (default), ``"slide"`` or ``"resize"``: how validation and test images are
        run through the model (:mod:`~afno_repro.tasks.segmentation_inference`). The headline
        ``val/miou`` and ``test/miou``.
    crop_size
        Window side (or ``[h, w]``) of ``"slide"`` and target side of ``"resize"`` (the training
        crop, ``${data.crop_size}``); not used by ``"whole"``.
    stride
        Step of the ``"slide"`` windows (SegFormer: 768 at crop 1024).
    extra_inference
        Further modes scored in the test loop only, as ``test/<mode>/miou``; e.g. ``["resize"]``
        beside ``inference="slide"``.
    head_lr_multiplier, no_weight_decay
        As :class:`~afno_repro.tasks.base.PaperTask`: SegFormer's recipe uses 10 and true.
    num_grid_images
        Validation images shown in the image / truth / prediction grid written after each
        evaluation (``images/val_latest.png``); 0 disables it.
    run_baselines
        Score the pixel-prior baseline (each pixel's most frequent training class) in the test loop.

    Notes
    -----
    Logged: ``train/loss`` per step; per evaluation ``val/loss``, ``val/miou`` (all test images),
    ``val/miou_selection`` (fold 0), ``val/miou_best``, ``val/num_images``; in the test loop
    ``test/loss``, ``test/miou``, ``test/pixel_accuracy``, ``test/num_images``,
    ``test/<mode>/miou`` and ``test/<mode>/pixel_accuracy`` per ``extra_inference`` mode, and
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
        prior_size: int | None = None,
        inference: str = "whole",
        crop_size: int | list[int] | None = None,
        stride: int | list[int] | None = None,
        extra_inference: Iterable[str] = (),
        head_lr_multiplier: float = 1.0,
        no_weight_decay: bool = False,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, scheduler_interval, compile, head_lr_multiplier, no_weight_decay)
        check_choice("selection", selection, SELECTIONS, "SegmentationTask")
        check_choice("absent_classes", absent_classes, ABSENT_CLASSES, "SegmentationTask")
        extra_inference = [str(mode) for mode in (extra_inference or ())]
        for mode in (inference, *extra_inference):
            check_choice("inference", mode, INFERENCES, "SegmentationTask")
        if inference in extra_inference or len(set(extra_inference)) != len(extra_inference):
            raise ValueError(f"extra_inference={extra_inference} repeats a mode (inference={inference!r} is the headline "
                             "one); list each other mode once.")
        modes = {inference, *extra_inference}
        if modes & {"slide", "resize"} and not _positive_sides(crop_size):
            raise ValueError(f"inference {' and '.join(sorted(modes - {'whole'}))} needs crop_size, the window / resize "
                             f"side (a positive int or [h, w]), but crop_size={crop_size!r}; set task.crop_size "
                             "(the configs use ${data.crop_size}).")
        if "slide" in modes and not _positive_sides(stride):
            raise ValueError(f"inference=slide needs stride, the step between windows (a positive int or [h, w]), but "
                             f"stride={stride!r}; SegFormer uses 768 with 1024 crops.")
        if prior_size is not None and (isinstance(prior_size, bool) or not isinstance(prior_size, int) or prior_size < 1):
            raise ValueError(f"prior_size={prior_size!r} is not a positive int (or null: the prior's grid is image_size).")
        num_classes = resolve_num_classes(
            num_classes, backbone, "SegmentationTask needs num_classes, an integer >= 2 (background included)",
            "give the backbone a segmentation head (backbone.head=segmentation backbone.num_classes=<C>) or pass num_classes.")
        if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 1:
            raise ValueError(f"num_folds={num_folds!r} is not a positive integer; DatasetGAN's protocol uses 5, "
                             "Cityscapes (one val split) 1.")
        if num_folds < 2 and selection in ("heldout", "fivefold"):
            raise ValueError(f"selection={selection!r} needs num_folds >= 2 (one fold selects, others report), but "
                             f"num_folds={num_folds}; use selection=max_over_run or last, or more folds.")
        if not isinstance(run_baselines, bool):
            raise ValueError(f"run_baselines={run_baselines!r} is not true or false.")
        check_grid_images(num_grid_images, "the image / truth / prediction grid shows")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or ignore_index != IGNORE_INDEX:
            # 3 left a class out of the loss and the scores; -5 scored the unscored pixels; 'abc' failed at the loss.
            raise ValueError(f"ignore_index={ignore_index!r}: the data modules mark unscored pixels {IGNORE_INDEX} (each "
                             f"release's own unscored label is mapped to it), so the loss and the scores ignore "
                             f"{IGNORE_INDEX}; leave task.ignore_index out or set it to {IGNORE_INDEX}.")
        self.save_hyperparameters(logger=False, ignore=["backbone", "optimizer", "scheduler"])
        self.hparams.num_classes = num_classes
        self.hparams.extra_inference = extra_inference
        confusion = dict(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
        # One confusion matrix per fold of the sorted test images, and one for the remainder that never
        # selects (fold num_folds, DatasetGAN's cut): every protocol is a sum of them.
        self.val_confusion = nn.ModuleList(ConfusionMatrix(**confusion) for _ in range(num_folds + 1))
        self.val_images = nn.ModuleList(SumMetric() for _ in range(num_folds + 1))
        self.val_loss = MeanMetric()
        self.val_miou_best = MaxMetric()
        self.val_miou_best.persistent(True)
        self.test_confusion = ConfusionMatrix(**confusion)
        self.test_loss = MeanMetric()
        self.test_images = SumMetric()
        self.pixel_prior = PixelPrior(num_classes, prior_size or image_size, resize=prior_size is not None)
        self.pixel_prior.persistent(True)
        self.prior_confusion = ConfusionMatrix(**confusion)
        self.extra_confusion = nn.ModuleDict({mode: ConfusionMatrix(**confusion) for mode in extra_inference})
        self.history: list[dict[str, Any]] = []
        self.test_iou: Tensor | None = None
        self._grid_batch: tuple[Tensor, Tensor, Tensor] | None = None
        self._prior_map: Tensor | None = None

    # --- the harness contract -------------------------------------------------------------
    @property
    def selection_metric(self) -> tuple[str | None, str]:  # type: ignore[override]
        """``val/miou`` (``val/miou_selection`` under ``heldout``), higher is better; ``None`` under
        ``"last"``: the checkpoint callback then monitors nothing and keeps the latest weights."""
        if self.hparams.selection == "last":
            return (None, "max")
        return ("val/miou_selection" if self.hparams.selection == "heldout" else "val/miou", "max")

    def reading(self) -> dict[str, Any]:
        reading = {"absent_classes": self.hparams.absent_classes, "loss": "per-pixel cross-entropy",
                   "ignore_index": self.hparams.ignore_index}
        inference = self.hparams.get("inference", "whole")
        extra = self.hparams.get("extra_inference", [])
        crop, stride = self.hparams.crop_size, self.hparams.stride
        if inference != "whole" or extra:
            reading["inference"] = f"test/miou and val/miou: {describe_inference(inference, crop, stride)}"
            reading["extra_inference"] = {mode: f"test/{mode}/miou: {describe_inference(mode, crop, stride)}"
                                          for mode in extra}
            reading["logits"] = "resized bilinearly (align_corners=False) to the label size before loss and argmax"
        if self.hparams.get("prior_size") is not None:
            reading["pixel_prior"] = (f"most frequent training class per cell of a {self.hparams.prior_size}-square grid "
                                      "over the training crops, resized (nearest) to each evaluation label")
        return reading

    def evaluated_during_training(self) -> bool:
        return bool(self.history)  # every evaluation of the run, restored with a resumed checkpoint

    def protocol(self, selection: str) -> str:
        every = self.trainer.check_val_every_n_epoch if self._trainer is not None else None
        cadence = "after every epoch" if every == 1 else f"every {every} epochs" if every else "at each evaluation"
        split = getattr(getattr(self._trainer, "datamodule", None), "validation_split", "test") if self._trainer else "test"
        best = (f"maximum over the run of the mIoU on all test images, evaluated {cadence} (the paper's protocol, A.4: "
                "selected on the reported images)") if split == "test" else (
                f"the checkpoint of the best {split} mIoU, evaluated {cadence}, reported on the same {split} images")
        return {
            "max_over_run": best,
            "heldout": "fold 0 of the sorted test images selects the checkpoint; the other images are reported",
            "fivefold": "DatasetGAN's protocol: each of the folds of the sorted test images selects an evaluation, "
                        "the other images score it; mean (std) over the folds",
            "last": "the weights at the end of training (SegFormer's recipe), no selection",
        }[selection]

    def evaluation_record(self, values: dict[str, float | None], selection: str) -> dict[str, Any]:
        record = super().evaluation_record(values, selection)
        names = getattr(self.trainer.datamodule, "class_names", None) if self._trainer is not None else None
        if self.test_iou is not None:
            names = names or [str(k) for k in range(len(self.test_iou))]
            # A class absent from truth and prediction has no IoU under absent_classes=skip: null (strict JSON
            # has no NaN), and the record says why.
            record["test"]["per_class_iou"] = {name: None if v != v else round(float(v), 6)
                                               for name, v in zip(names, self.test_iou.tolist())}
            if any(value is None for value in record["test"]["per_class_iou"].values()):
                record["test"]["per_class_iou_null"] = ("absent from the truth and the prediction of every scored "
                                                        "image: no IoU, left out of the mean (absent_classes=skip)")
        extra = {mode: {key.split("/", 1)[1]: value for key, value in values.items() if key.startswith(f"{mode}/")}
                 for mode in self.hparams.get("extra_inference", [])}
        if extra:
            record["test"]["inference"] = self.hparams.inference
            record["test"]["extra_inference"] = extra
        record["protocols"] = protocol_results(self.history, self.hparams.absent_classes, self.hparams.num_folds)
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

    def infer(self, image: Tensor, size: tuple[int, int] | torch.Size, mode: str | None = None) -> Tensor:
        """``(B, C, H', W')`` logits of ``image`` at the label size ``size`` by ``mode`` (default
        ``inference``): ``"whole"``, ``"slide"`` or ``"resize"``
        (:func:`~afno_repro.tasks.segmentation_inference.infer_logits`) with this task's crop and stride."""
        mode = mode or self.hparams.get("inference", "whole")
        return infer_logits(self, image, size, mode, self.hparams.crop_size, self.hparams.stride)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor:
        """The headline inference's logits of a batch at its label size (``inference``: whole, slide or resize)."""
        return self.infer(batch["image"], batch["mask"].shape[-2:])

    def evaluation_forwards(self, batch: dict[str, Tensor]) -> None:
        """The headline inference and each ``extra_inference`` mode (Table 4 scores sliding windows and resized
        frames: two passes of the model per image)."""
        self.predict_step(batch)
        for mode in self.extra_confusion:
            self.infer(batch["image"], batch["mask"].shape[-2:], mode)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(resize_logits(self(batch["image"]), batch["mask"].shape[-2:]), batch["mask"])
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch["image"].shape[0])
        if self.hparams.run_baselines:
            self.pixel_prior.update(batch["mask"])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self.infer(batch["image"], batch["mask"].shape[-2:])
        prediction = logits.argmax(1)
        self.val_loss.update(self.loss(logits, batch["mask"]), weight=batch["image"].shape[0])
        for fold, (confusion, count) in enumerate(zip(self.val_confusion, self.val_images)):
            chosen = batch["fold"] == fold  # every bucket is updated, an empty one too: computed, never "before update"
            confusion.update(prediction[chosen], batch["mask"][chosen])
            count.update(chosen.sum().float())
        if batch_idx == 0 and self.hparams.num_grid_images > 0:
            n = self.hparams.num_grid_images
            self._grid_batch = self._grid_cells(batch["image"][:n], batch["mask"][:n], prediction[:n])

    def _grid_cells(self, image: Tensor, mask: Tensor, prediction: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Grid cells on the CPU, images un-normalised when the data module normalises (its ``denormalize``):
        :func:`~afno_repro.tasks.grids.segmentation_cells`."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return segmentation_cells(image, mask, prediction, getattr(datamodule, "denormalize", None))

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
        mask = batch["mask"]
        logits = self.infer(batch["image"], mask.shape[-2:])
        self.test_loss.update(self.loss(logits, mask), weight=batch["image"].shape[0])
        self.test_confusion.update(logits.argmax(1), mask)
        self.test_images.update(torch.tensor(float(batch["image"].shape[0]), device=self.device))
        for mode, confusion in self.extra_confusion.items():
            confusion.update(self.infer(batch["image"], mask.shape[-2:], mode).argmax(1), mask)
        if self._prior_map is not None:
            prior = resize_labels(self._prior_map.to(mask.device), tuple(mask.shape[-2:]))
            self.prior_confusion.update(prior.expand_as(mask), mask)

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute()
        iou, miou = iou_from_confusion(confusion, self.hparams.absent_classes)
        self.test_iou = iou.cpu()
        scored = confusion.sum().clamp_min(1)
        values = {"test/miou": miou, "test/pixel_accuracy": 100 * confusion.diagonal().sum() / scored,
                  "test/loss": self.test_loss.compute(), "test/num_images": self.test_images.compute()}
        for mode, metric in self.extra_confusion.items():
            extra = metric.compute()
            values[f"test/{mode}/miou"] = iou_from_confusion(extra, self.hparams.absent_classes)[1]
            values[f"test/{mode}/pixel_accuracy"] = 100 * extra.diagonal().sum() / extra.sum().clamp_min(1)
            metric.reset()
        if self._prior_map is not None:
            values["test/baseline/pixel_prior/miou"] = iou_from_confusion(self.prior_confusion.compute(),
                                                                          self.hparams.absent_classes)[1]
        self.log_dict({k: v.float().to(self.device) for k, v in values.items()}, sync_dist=True)
        for metric in (self.test_confusion, self.test_loss, self.test_images, self.prior_confusion):
            metric.reset()

    # --- the evaluation history is training state ------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["segmentation_history"] = [dict(entry) for entry in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming training restores the evaluations made so far. Testing a selected checkpoint does
        # not: the run's full history stays, not the one saved at the selected epoch.
        if self._trainer is not None and self.trainer.state.fn != "fit":
            return
        self.history = [_with_remainder(dict(entry), self.hparams.num_folds)
                        for entry in checkpoint.get("segmentation_history", [])]


def _with_remainder(entry: dict[str, Any], num_folds: int) -> dict[str, Any]:
    """An evaluation of a checkpoint written before the folds were cut as DatasetGAN cuts them (no remainder
    bucket): its folds held other images, so it is kept whole in the remainder bucket. The maximum over the run
    (all images) still counts it; heldout and fivefold select only among evaluations under today's cut."""
    confusion, images = torch.as_tensor(entry["confusion"]), torch.as_tensor(entry["images"])
    if confusion.shape[0] == num_folds:
        entry["confusion"] = torch.cat([torch.zeros_like(confusion), confusion.sum(0, keepdim=True)])
        entry["images"] = torch.cat([torch.zeros_like(images), images.sum(0, keepdim=True)])
    return entry
