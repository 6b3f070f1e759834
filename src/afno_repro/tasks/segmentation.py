"""Few-shot semantic segmentation (paper Section 5.2, appendix A.4) as a Lightning task.

A ViT pretrained by inpainting gets a per-pixel classification head (a linear map from each token
to its ``p x p`` patch of class logits) and is finetuned with per-pixel cross-entropy on a few
labelled images (DatasetGAN's splits: 16 faces, 16 cars, 30 cats).

mIoU follows DatasetGAN's evaluation: intersections and unions are summed over the whole
evaluation set (a confusion matrix, :class:`afno_repro.tasks.confusion.ConfusionMatrix`, reduced over
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

- ``"last"`` (SegFormer's Cityscapes recipe): the weights at the end of training, whatever the
  validation numbers; the checkpoint callback then monitors nothing and keeps the latest.

Batches are dicts ``{"image": (B, 3, H, W) in [0, 1] (or normalised: the data module says),
"mask": (B, H', W') long class ids or ignore_index, "index": (B,), "fold": (B,)}``.

Inference (``inference``; Cityscapes, paper A.3 / SegFormer): the model's logits, at its own
output resolution (1/4 of the input for SegFormer, the input's for the ViT head), are resized
bilinearly (``align_corners=False``, as mmseg) to the label's size ``H' x W'`` before the loss and
the argmax, in training too. Evaluation images may be larger than the training crops:

- ``"whole"`` (default, the few-shot protocol): one forward pass of the whole image;
- ``"slide"`` (mmseg's ``slide_inference``, SegFormer's Cityscapes test): windows of
  ``crop_size`` every ``stride`` pixels, the last row and column of windows moved back inside the
  image; the logits of each window (resized to the window) are summed and divided by the number
  of windows covering each pixel. An image smaller than the crop (or a window cut by it) is
  padded with 0 at the bottom and right to the crop size, the value padding takes in training,
  so the model always sees crops of the trained size; the padded logits are dropped;
- ``"resize"`` (the paper's "evaluate at 1024x1024" read literally): the image resized
  bilinearly to ``crop_size x crop_size``, one forward pass, logits resized to the label's size.

``extra_inference`` lists further modes the test loop scores beside the headline ``inference``
(logged as ``test/<mode>/miou`` and ``test/<mode>/pixel_accuracy``; ``metrics.json``:
``test.extra_inference``).
"""

from __future__ import annotations

import colorsys
from typing import Any, Callable, Iterable, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, Metric, SumMetric
from torchvision.utils import make_grid

from afno_repro.tasks.base import PaperTask, Reported, check_choice
from afno_repro.tasks.confusion import ConfusionMatrix

__all__ = ["SegmentationTask", "PixelPrior", "iou_from_confusion", "protocol_results", "palette",
           "make_segmentation_grid", "resize_logits", "slide_logits", "SELECTIONS", "ABSENT_CLASSES", "INFERENCES"]

SELECTIONS = ("max_over_run", "heldout", "fivefold", "last")
ABSENT_CLASSES = ("zero", "skip")
INFERENCES = ("whole", "slide", "resize")
# Grids of larger evaluation images (Cityscapes' 2048x1024) are shrunk to this width per image.
_GRID_MAX_WIDTH = 512


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _positive_sides(value: Any) -> bool:
    values = [value] if not isinstance(value, (list, tuple)) else list(value)
    return len(values) in (1, 2) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def resize_logits(logits: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """``(B, C, h, w)`` logits resized bilinearly (``align_corners=False``) to ``size = (H, W)``;
    returned as they are when already that size.

    Example
    -------
    >>> resize_logits(torch.zeros(2, 3, 4, 8), (16, 32)).shape
    torch.Size([2, 3, 16, 32])
    """
    size = tuple(int(side) for side in size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def slide_logits(model: Callable[[Tensor], Tensor], image: Tensor, crop_size: int | tuple[int, int],
                 stride: int | tuple[int, int]) -> Tensor:
    """mmseg's sliding-window inference: ``(B, 3, H, W)`` images -> ``(B, C, H, W)`` averaged logits.

    Windows of ``crop_size`` (``(h, w)`` or a side) start every ``stride`` pixels; windows reaching
    past the border are moved back inside it (mmseg: ``y1 = max(y2 - crop, 0)``), so the windows
    are ``max(H - crop + stride - 1, 0) // stride + 1`` per column and likewise per row. A window
    smaller than the crop (image smaller than it) is padded with 0 bottom and right to the crop,
    and its padded logits are dropped. Each window's logits are resized to the window
    (:func:`resize_logits`); each pixel gets the mean over the windows covering it.

    Example
    -------
    >>> conv = torch.nn.Conv2d(3, 4, 1)
    >>> image = torch.rand(1, 3, 10, 20)
    >>> torch.allclose(slide_logits(conv, image, 8, 6), conv(image), atol=1e-6)
    True
    """
    (crop_h, crop_w), (stride_h, stride_w) = _pair(crop_size), _pair(stride)
    height, width = image.shape[-2:]
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    total: Tensor | None = None
    count = image.new_zeros(1, 1, height, width, dtype=torch.float32)
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride_h + crop_h, height), min(col * stride_w + crop_w, width)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            window = image[:, :, y1:y2, x1:x2]
            h, w = window.shape[-2:]
            if (h, w) != (crop_h, crop_w):
                window = F.pad(window, (0, crop_w - w, 0, crop_h - h))
            logits = resize_logits(model(window).float(), (crop_h, crop_w))[:, :, :h, :w]
            if total is None:
                total = logits.new_zeros(image.shape[0], logits.shape[1], height, width)
            total[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


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


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """``(..., H, W)`` integer labels resized to ``size`` by nearest neighbour at pixel centres.

    Example
    -------
    >>> resize_labels(torch.tensor([[0, 1], [2, 3]]), (2, 4)).tolist()
    [[0, 0, 1, 1], [2, 2, 3, 3]]
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    shape = labels.shape
    flat = labels.reshape(-1, 1, *shape[-2:]).float()
    resized = F.interpolate(flat, size=tuple(size), mode="nearest-exact")
    return resized.reshape(*shape[:-2], *size).to(labels.dtype)


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
        ``"max_over_run"`` (paper), ``"heldout"`` or ``"fivefold"`` (DatasetGAN), ``"last"``
        (SegFormer: the final weights); see the module docstring. Set from ``data.selection``,
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
        run through the model (module docstring). The headline ``val/miou`` and ``test/miou``.
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
        num_classes = num_classes if num_classes is not None else getattr(backbone, "num_classes", None)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"SegmentationTask needs num_classes, an integer >= 2 (background included), but got {num_classes!r}; "
                "give the backbone a segmentation head (backbone.head=segmentation backbone.num_classes=<C>) or pass "
                "num_classes."
            )
        if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 1:
            raise ValueError(f"num_folds={num_folds!r} is not a positive integer; DatasetGAN's protocol uses 5, "
                             "Cityscapes (one val split) 1.")
        if num_folds < 2 and selection in ("heldout", "fivefold"):
            raise ValueError(f"selection={selection!r} needs num_folds >= 2 (one fold selects, others report), but "
                             f"num_folds={num_folds}; use selection=max_over_run or last, or more folds.")
        if not isinstance(run_baselines, bool):
            raise ValueError(f"run_baselines={run_baselines!r} is not true or false.")
        self.save_hyperparameters(logger=False, ignore=["backbone", "optimizer", "scheduler"])
        self.hparams.num_classes = num_classes
        self.hparams.extra_inference = extra_inference
        confusion = dict(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
        # One confusion matrix per fold of the sorted test images: every protocol is a sum of them.
        self.val_confusion = nn.ModuleList(ConfusionMatrix(**confusion) for _ in range(num_folds))
        self.val_images = nn.ModuleList(SumMetric() for _ in range(num_folds))
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

    def describe_inference(self, mode: str) -> str:
        """``mode`` in words with this task's crop and stride."""
        crop, stride = self.hparams.crop_size, self.hparams.stride
        return {
            "whole": "whole image, one forward pass",
            "slide": f"sliding window (mmseg slide_inference): crop {crop}, stride {stride}, overlapping logits averaged",
            "resize": f"image resized to {crop}x{crop}, one forward pass, logits resized to the label",
        }[mode]

    def reading(self) -> dict[str, Any]:
        reading = {"absent_classes": self.hparams.absent_classes, "loss": "per-pixel cross-entropy",
                   "ignore_index": self.hparams.ignore_index}
        inference = self.hparams.get("inference", "whole")
        extra = self.hparams.get("extra_inference", [])
        if inference != "whole" or extra:
            reading["inference"] = f"test/miou and val/miou: {self.describe_inference(inference)}"
            reading["extra_inference"] = {mode: f"test/{mode}/miou: {self.describe_inference(mode)}" for mode in extra}
            reading["logits"] = "resized bilinearly (align_corners=False) to the label size before loss and argmax"
        if self.hparams.get("prior_size") is not None:
            reading["pixel_prior"] = (f"most frequent training class per cell of a {self.hparams.prior_size}-square grid "
                                      "over the training crops, resized (nearest) to each evaluation label")
        return reading

    def protocol(self, selection: str) -> str:
        every = self.trainer.check_val_every_n_epoch if self._trainer is not None else None
        cadence = "after every epoch" if every == 1 else f"every {every} epochs" if every else "at each evaluation"
        split = getattr(getattr(self._trainer, "datamodule", None), "validation_split", "test") if self._trainer else "test"
        best = (f"maximum over the run of the mIoU on all test images, evaluated {cadence} (the paper's protocol, A.4: "
                "selected on the reported images)") if split == "test" else (
                f"the checkpoint of the best {split} mIoU, evaluated {cadence}, reported on the same {split} images")
        if self._trainer is not None and not self.history and selection != "last":
            # Training ended before its first evaluation (max_epochs below check_val_every_n_epoch): nothing
            # was selected; the test loop scored the weights training ended with.
            epochs = self.trainer.max_epochs
            return (f"no evaluation during training ({epochs} epoch(s), evaluated every {every}): the weights at the end "
                    "of training, scored on the test images, nothing selected")
        return {
            "max_over_run": best,
            "heldout": "fold 0 of the sorted test images selects the checkpoint; the other folds are reported",
            "fivefold": "DatasetGAN's protocol: each of the folds of the sorted test images selects an evaluation, "
                        "the other folds score it; mean (std) over the folds",
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

    def infer(self, image: Tensor, size: tuple[int, int] | torch.Size, mode: str | None = None) -> Tensor:
        """``(B, C, H', W')`` logits of ``image`` at the label size ``size`` by ``mode`` (default
        ``inference``): ``"whole"``, ``"slide"`` or ``"resize"`` (module docstring)."""
        mode = mode or self.hparams.get("inference", "whole")
        if mode == "slide":
            logits = slide_logits(self, image, self.hparams.crop_size, self.hparams.stride)
        elif mode == "resize":
            crop = _pair(self.hparams.crop_size)
            logits = self(F.interpolate(image, size=crop, mode="bilinear", align_corners=False))
        else:
            logits = self(image)
        return resize_logits(logits, size)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor:
        """The headline inference's logits of a batch at its label size (``inference``: whole, slide or resize)."""
        return self.infer(batch["image"], batch["mask"].shape[-2:])

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
            chosen = batch["fold"] == fold
            if chosen.any():
                confusion.update(prediction[chosen], batch["mask"][chosen])
                count.update(chosen.sum().float())
        if batch_idx == 0 and self.hparams.num_grid_images > 0:
            n = self.hparams.num_grid_images
            self._grid_batch = self._grid_cells(batch["image"][:n], batch["mask"][:n], prediction[:n])

    def _grid_cells(self, image: Tensor, mask: Tensor, prediction: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Grid cells on the CPU: images un-normalised when the data module normalises
        (its ``denormalize``) and resized to the label size; cells wider than 512 pixels shrunk."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        denormalize = getattr(datamodule, "denormalize", None)
        image = image.detach().float().cpu()
        if denormalize is not None:
            image = denormalize(image)
        size = tuple(mask.shape[-2:])
        if size[1] > _GRID_MAX_WIDTH:
            size = (max(1, round(size[0] * _GRID_MAX_WIDTH / size[1])), _GRID_MAX_WIDTH)
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        return image, resize_labels(mask.cpu(), size), resize_labels(prediction.cpu(), size)

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
        checkpoint["segmentation_history"] = [dict(entry) for entry in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming training restores the evaluations made so far. Testing a selected checkpoint does
        # not: the run's full history stays, not the one saved at the selected epoch.
        if self._trainer is not None and self.trainer.state.fn != "fit":
            return
        self.history = [dict(entry) for entry in checkpoint.get("segmentation_history", [])]
