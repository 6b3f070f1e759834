"""Image classification (paper Table 5, appendix A.5) as a Lightning task.

A ViT/4 whose last tokens are average-pooled into ``num_classes`` logits (A.5: global average
pooling, no class token) is trained with the recipe of the authors' released code
(NVlabs/AFNO-transformer, which follows DeiT and GFNet; README "Classification and Cityscapes"):
Mixup 0.8 / CutMix 1.0 (timm ``Mixup``, switch probability 0.5, applied to every batch) with
label smoothing 0.1 folded into the mixed targets and timm's
``SoftTargetCrossEntropy``. With both alphas 0 the loss is the cross-entropy with
``label_smoothing``. Evaluation uses the plain cross-entropy.

Top-1 and top-5 accuracy are torchmetrics' ``MulticlassAccuracy`` (``average="micro"``: the
fraction of images whose label is among the ``k`` highest logits), in percent, summed over the
whole split and over DDP ranks. With fewer than 5 classes "top5" is top-``num_classes``
(100%), so the key stays the same for every dataset.

Mixup's batch mode pairs each image with the flipped batch and needs an even batch: the
classification data drops each epoch's incomplete last batch (``data.drop_last=true``, as DeiT),
so an even ``data.batch_size`` is all it takes; an odd training batch with mixing on is refused
with a message naming both fixes.

Baseline (scored in the test loop on the reported images): ``majority``, which ranks classes by
how often they occurred in the training batches (original labels, before mixing; ties go to the
lower class index) and predicts that ranking for every image: its top-1 is the share of the most
frequent training class, its top-5 that of the 5 most frequent.

Batches are dicts ``{"image": (B, 3, S, S) normalised, "label": (B,) int64, "index": (B,)}``
(:class:`~afno_repro.data.classification.ClassificationDataModule`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, Metric, SumMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.utils import make_grid

from afno_repro.tasks.base import PaperTask, Reported, check_choice, resolve_num_classes

__all__ = ["ClassificationTask", "ClassPrior", "MIXUP_MODES", "denormalize"]

MIXUP_MODES = ("batch", "pair", "elem")


class ClassPrior(Metric):
    """Class counts of the training labels; :meth:`compute` gives majority-baseline scores.

    Counts are summed over DDP ranks. The scores are ``(C,)``, strictly decreasing with the class's
    rank (most frequent first, ties to the lower index), so top-``k`` of them are the ``k`` most
    frequent classes whatever the tie-breaking of ``topk``.

    Example
    -------
    >>> prior = ClassPrior(num_classes=4)
    >>> prior.update(torch.tensor([2, 2, 1, 3, 1, 2]))
    >>> prior.counts.tolist(), prior.compute().tolist()
    ([0.0, 2.0, 3.0, 1.0], [1.0, 3.0, 4.0, 2.0])
    """

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, labels: Tensor) -> None:
        self.counts += torch.bincount(labels.flatten(), minlength=self.num_classes)[: self.num_classes].double()

    def compute(self) -> Tensor:
        # Stable sort on (-count): equal counts keep index order, so the lower index ranks first.
        order = torch.sort(-self.counts, stable=True).indices
        scores = torch.empty(self.num_classes, dtype=torch.float32, device=self.counts.device)
        scores[order] = torch.arange(self.num_classes, 0, -1, dtype=torch.float32, device=self.counts.device)
        return scores


def denormalize(image: Tensor, mean: Iterable[float] = IMAGENET_DEFAULT_MEAN, std: Iterable[float] = IMAGENET_DEFAULT_STD) -> Tensor:
    """``(B, 3, H, W)`` normalised images back to ``[0, 1]`` (clipped).

    Example
    -------
    >>> [round(v, 3) for v in denormalize(torch.zeros(1, 3, 1, 1)).flatten().tolist()]
    [0.485, 0.456, 0.406]
    """
    mean_t = torch.tensor(list(mean), dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    return (image * std_t + mean_t).clamp(0, 1)


def mixes_pairs(mixup_alpha: float, cutmix_alpha: float) -> bool:
    """Whether training mixes each image with another (Mixup or CutMix on): the batch must then be even.

    >>> mixes_pairs(0.8, 1.0), mixes_pairs(0.0, 0.0)
    (True, False)
    """
    return mixup_alpha > 0 or cutmix_alpha > 0


class ClassificationTask(PaperTask):
    """Image classification (paper A.5): Mixup/CutMix soft-target loss, top-1 / top-5 accuracy.

    Parameters
    ----------
    backbone
        Maps ``(B, 3, S, S)`` images to ``(B, num_classes)`` logits
        (``afno_repro.models.ViT(head="classification", num_classes=C)``).
    optimizer, scheduler, scheduler_interval, compile
        As :class:`~afno_repro.tasks.base.PaperTask`. A.5: Adam(W), lr 5e-4 x batch / 512, wd 0.05,
        5 warmup epochs, cosine to 1e-5, gradient clipping 1.0 (on the trainer).
    num_classes
        ``C``; ``None`` takes ``backbone.num_classes``.
    mixup_alpha, cutmix_alpha
        Beta-distribution parameters of Mixup (0.8) and CutMix (1.0), the authors' code and DeiT;
        both 0 turns mixing off (plain cross-entropy with ``label_smoothing``).
    mixup_prob
        Probability of mixing a batch (1.0).
    mixup_switch_prob
        Probability of CutMix instead of Mixup when both are on (0.5).
    mixup_mode
        ``"batch"`` (one mix for the batch, DeiT), ``"pair"`` or ``"elem"`` (timm).
    label_smoothing
        0.1 (the authors' code, DeiT). Folded into the mixed targets when mixing, else passed to
        the cross-entropy.
    num_grid_images
        Validation images in the grid written after each evaluation (``images/val_latest.png``,
        captioned predicted/true class); 0 disables it.
    run_baselines
        Score the majority-class baseline in the test loop.

    Notes
    -----
    Logged: ``train/loss`` per step; per evaluation ``val/loss``, ``val/top1``, ``val/top5``,
    ``val/top1_best``, ``val/num_images``; in the test loop ``test/loss``, ``test/top1``,
    ``test/top5``, ``test/num_images``, ``test/baseline/majority/top1`` and ``.../top5``. All
    accuracies in percent. Model EMA (DeiT; not the authors' code) is not implemented.

    Example
    -------
    >>> from functools import partial
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    >>> task = ClassificationTask(net, partial(torch.optim.AdamW, lr=1e-3), num_classes=10)
    >>> task.loss(task(torch.rand(2, 3, 4, 4)), torch.tensor([1, 2]), train=True).shape
    torch.Size([])
    """

    task_name = "classification"
    selection_metric = ("val/top1", "max")
    reported = (Reported("top1", "top-1 (%)", 2, per_image=True), Reported("top5", "top-5 (%)", 2, per_image=True))

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: Callable[[Optimizer], Any] | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        num_classes: int | None = None,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        label_smoothing: float = 0.1,
        num_grid_images: int = 8,
        compile: bool = False,
        run_baselines: bool = True,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, scheduler_interval, compile)
        name = type(self).__name__
        check_choice("mixup_mode", mixup_mode, MIXUP_MODES, name)
        num_classes = resolve_num_classes(
            num_classes, backbone, f"{name} needs num_classes, an integer >= 2",
            "give the backbone a classification head (backbone.head=classification backbone.num_classes=<C>, the configs "
            "use ${data.num_classes}) or pass num_classes.")
        for option, value in {"mixup_alpha": mixup_alpha, "cutmix_alpha": cutmix_alpha}.items():
            if value < 0:
                raise ValueError(f"{name} got {option}={value!r}; it must be >= 0 (0 turns it off).")
        for option, value in {"mixup_prob": mixup_prob, "mixup_switch_prob": mixup_switch_prob, "label_smoothing": label_smoothing}.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name} got {option}={value!r}; it must be in [0, 1].")
        if not isinstance(run_baselines, bool):
            raise ValueError(f"run_baselines={run_baselines!r} is not true or false.")
        if isinstance(num_grid_images, bool) or not isinstance(num_grid_images, int) or num_grid_images < 0:
            raise ValueError(f"num_grid_images={num_grid_images!r} must be an integer >= 0 (0 disables the grid).")
        self.save_hyperparameters(logger=False, ignore=["backbone", "optimizer", "scheduler"])
        self.hparams.num_classes = num_classes
        self.top_k = min(5, num_classes)
        self.mixup = (
            Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=mixup_prob, switch_prob=mixup_switch_prob,
                  mode=mixup_mode, label_smoothing=label_smoothing, num_classes=num_classes)
            if mixes_pairs(mixup_alpha, cutmix_alpha) else None
        )
        self.soft_target_loss = SoftTargetCrossEntropy()

        def accuracy(k: int) -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro", validate_args=False)

        self.val_top1, self.val_top5 = accuracy(1), accuracy(self.top_k)
        self.val_loss, self.val_images = MeanMetric(), SumMetric()
        self.val_top1_best = MaxMetric()
        self.val_top1_best.persistent(True)
        self.test_top1, self.test_top5 = accuracy(1), accuracy(self.top_k)
        self.test_loss, self.test_images = MeanMetric(), SumMetric()
        self.prior = ClassPrior(num_classes)
        self.prior.persistent(True)
        self.prior_top1, self.prior_top5 = accuracy(1), accuracy(self.top_k)
        self._prior_scores: Tensor | None = None
        self._grid_batch: tuple[Tensor, Tensor, Tensor] | None = None

    # --- the harness contract -------------------------------------------------------------
    def reading(self) -> dict[str, Any]:
        h = self.hparams
        if self.mixup is not None:
            loss = (f"soft-target cross-entropy on Mixup (alpha {h.mixup_alpha}) / CutMix (alpha {h.cutmix_alpha}) targets "
                    f"with label smoothing {h.label_smoothing} (timm Mixup, mode {h.mixup_mode}, prob {h.mixup_prob}, "
                    f"switch prob {h.mixup_switch_prob})")
        else:
            loss = f"cross-entropy with label smoothing {h.label_smoothing}"
        return {"loss": loss, "mixup_alpha": h.mixup_alpha, "cutmix_alpha": h.cutmix_alpha, "mixup_prob": h.mixup_prob,
                "mixup_switch_prob": h.mixup_switch_prob, "mixup_mode": h.mixup_mode, "label_smoothing": h.label_smoothing,
                "eval_loss": "cross-entropy without smoothing", "top5_k": self.top_k,
                "accuracy": "micro: share of images whose label is among the k highest logits", "model_ema": False,
                "pooling": "as the backbone's head (ViT: global average pooling, A.5)"}

    def protocol(self, selection: str) -> str:
        if selection == "heldout":
            return ("the checkpoint with the best top-1 on a class-balanced slice of the training files held out of "
                    "training; reported on the validation split")
        return ("the checkpoint with the best top-1 on the validation split, reported on the same split (A.5 / DeiT: the "
                "best epoch's validation accuracy; selected on the reported images)")

    # --- model ----------------------------------------------------------------------------
    def forward(self, image: Tensor) -> Tensor:
        logits = self.backbone(image)
        if logits.ndim != 2 or logits.shape[1] != self.hparams.num_classes:
            raise ValueError(
                f"the backbone gave outputs of shape {tuple(logits.shape)} for {image.shape[0]} images, but "
                f"classification needs (B, {self.hparams.num_classes}) logits: use a classification head "
                f"(backbone.head=classification backbone.num_classes={self.hparams.num_classes})."
            )
        return logits

    def loss(self, logits: Tensor, target: Tensor, train: bool = False) -> Tensor:
        """Cross-entropy in float32: with ``label_smoothing`` in training, plain in evaluation;
        ``target`` may be soft (``(B, C)``, from Mixup), then timm's soft-target cross-entropy."""
        if target.ndim == 2:
            return self.soft_target_loss(logits.float(), target.float())
        return F.cross_entropy(logits.float(), target, label_smoothing=self.hparams.label_smoothing if train else 0.0)

    def _check_batch_size(self, size: int, where: str) -> None:
        if self.mixup is not None and size % 2:
            raise ValueError(
                f"{where} has {size} images, an odd number, but Mixup/CutMix (timm, mode {self.hparams.mixup_mode!r}) mixes "
                "each image with the batch flipped and needs an even batch. Use an even data.batch_size (with "
                "data.drop_last=true, the default, the incomplete last batch of an epoch is dropped), or turn mixing off "
                "with task.mixup_alpha=0 task.cutmix_alpha=0."
            )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and isinstance(getattr(datamodule, "batch_size", None), int):
            self._check_batch_size(datamodule.batch_size, f"data.batch_size={datamodule.batch_size}: every training batch")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        image, label = batch["image"], batch["label"]
        if self.hparams.run_baselines:
            self.prior.update(label)
        target: Tensor = label
        if self.mixup is not None:
            self._check_batch_size(image.shape[0], f"training batch {batch_idx}")
            image, target = self.mixup(image, label)
        loss = self.loss(self(image), target, train=True)
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=image.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        label = batch["label"]
        self.val_loss.update(self.loss(logits, label), weight=label.shape[0])
        self.val_top1.update(logits, label)
        self.val_top5.update(logits, label)
        self.val_images.update(torch.tensor(float(label.shape[0]), device=self.device))
        if batch_idx == 0 and self.hparams.num_grid_images > 0:
            n = self.hparams.num_grid_images
            self._grid_batch = (batch["image"][:n].detach().cpu(), label[:n].cpu(), logits[:n].argmax(1).cpu())

    def on_validation_epoch_end(self) -> None:
        values = {"val/loss": self.val_loss.compute(), "val/top1": 100 * self.val_top1.compute(),
                  "val/top5": 100 * self.val_top5.compute(), "val/num_images": self.val_images.compute()}
        for metric in (self.val_loss, self.val_top1, self.val_top5, self.val_images):
            metric.reset()
        # Values already reduced over ranks: every rank logs the same number.
        self.log_dict({k: v.float().to(self.device) for k, v in values.items()}, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        self.val_top1_best(values["val/top1"].to(self.device))
        self.log("val/top1_best", self.val_top1_best.compute(), sync_dist=True, prog_bar=True)
        if self._grid_batch is not None:
            self.write_grid(*self._grid())

    def _grid(self) -> tuple[Tensor, str, str]:
        image, label, prediction = self._grid_batch
        datamodule = getattr(self.trainer, "datamodule", None)
        mean = getattr(datamodule, "mean", IMAGENET_DEFAULT_MEAN)
        std = getattr(datamodule, "std", IMAGENET_DEFAULT_STD)
        names = getattr(datamodule, "class_names", None) or [str(k) for k in range(self.hparams.num_classes)]
        grid = make_grid(denormalize(image.float(), mean, std), nrow=image.shape[0], padding=2, pad_value=1.0)
        pairs = ", ".join(f"{names[p]}/{names[t]}" for p, t in zip(prediction.tolist(), label.tolist()))
        return grid, "val/predictions", f"predicted/true, left to right: {pairs}"

    def on_test_epoch_start(self) -> None:
        # Computed once here: computing a metric synchronises the ranks, which a test step, on
        # uneven shards, must not do. Without training labels seen (a test-only call) there is no prior.
        seen = self.hparams.run_baselines and bool(self.prior.counts.any())
        self._prior_scores = self.prior.compute() if seen else None

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        label = batch["label"]
        self.test_loss.update(self.loss(logits, label), weight=label.shape[0])
        self.test_top1.update(logits, label)
        self.test_top5.update(logits, label)
        self.test_images.update(torch.tensor(float(label.shape[0]), device=self.device))
        if self._prior_scores is not None:
            scores = self._prior_scores.to(logits.device).expand(label.shape[0], -1)
            self.prior_top1.update(scores, label)
            self.prior_top5.update(scores, label)

    def on_test_epoch_end(self) -> None:
        values = {"test/loss": self.test_loss.compute(), "test/top1": 100 * self.test_top1.compute(),
                  "test/top5": 100 * self.test_top5.compute(), "test/num_images": self.test_images.compute()}
        if self._prior_scores is not None:
            values["test/baseline/majority/top1"] = 100 * self.prior_top1.compute()
            values["test/baseline/majority/top5"] = 100 * self.prior_top5.compute()
        self.log_dict({k: v.float().to(self.device) for k, v in values.items()}, sync_dist=True)
        for metric in (self.test_loss, self.test_top1, self.test_top5, self.test_images, self.prior_top1, self.prior_top5):
            metric.reset()
