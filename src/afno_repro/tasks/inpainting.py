"""Image inpainting on ImageNet (paper appendix A.2) as a Lightning task.

A random-walk mask hides pixels, the hidden pixels are set to zero, and the backbone (a ViT-B/4
with a linear pixel head in the paper) reconstructs the image. The loss is the mean squared error
on the hidden pixels; PSNR and SSIM are reported "between the ground truth and the
reconstruction" on the full image.

Batches are dicts ``{"image": (B, 3, H, W) in [0, 1], "mask": (B, 1, H, W), "index": (B,)}``
where ``mask == 1`` marks a hidden pixel.

Example
-------
>>> import torch
>>> from functools import partial
>>> from afno_repro.tasks import InpaintingTask
>>> task = InpaintingTask(torch.nn.Conv2d(3, 3, 3, padding=1), partial(torch.optim.Adam, lr=1e-3))
>>> image, mask = torch.rand(2, 3, 16, 12), (torch.rand(2, 1, 16, 12) < 0.2).float()
>>> task(image, mask).shape
torch.Size([2, 3, 16, 12])
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

import pytorch_lightning as pl
import torch
from timm.scheduler.scheduler import Scheduler as TimmScheduler
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MaxMetric, MeanMetric, Metric, MetricCollection, SumMetric
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio
from torchvision.utils import make_grid

from afno_repro.cli import usable_cores
from afno_repro.runs import logged_count
from afno_repro.tasks.base import NonFiniteLossError, PaperTask, Reported, check_choice, check_grid_images

if TYPE_CHECKING:  # baselines.py scores with this module's metrics: imported where it is used
    from afno_repro.tasks.baselines import BiharmonicPool

__all__ = [
    "InpaintingTask",
    "NonFiniteLossError",
    "auto_baseline_workers",
    "StructuralSimilarity",
    "image_quality_metrics",
    "masked_mse",
    "composite",
    "make_inpainting_grid",
]

LOSS_REGIONS = ("masked", "full")
METRIC_REGIONS = ("composite", "raw")
# baseline_workers=auto never starts more worker processes than this per training process: each
# holds ~0.5 GB (scripts/benchmark_scoring.py) and more cores than this rarely sit idle beside one GPU.
MAX_AUTO_BASELINE_WORKERS = 16


def auto_baseline_workers(cuda: bool, cores: int, processes: int = 1, loader_workers: int = 0) -> int:
    """The biharmonic worker processes ``baseline_workers=auto`` starts in each training process.

    0 (fill in the main process) when the model runs on the CPU: the model's forward passes
    already use the cores. On a GPU, the cores this process's share leaves spare: ``cores //
    processes``, less one for the main process and one per data-loader worker, at most
    :data:`MAX_AUTO_BASELINE_WORKERS`.

    Parameters
    ----------
    cuda
        Whether the model runs on a CUDA GPU.
    cores
        CPU cores this process may run on (``os.sched_getaffinity``).
    processes
        Training processes on this machine (DDP ranks per node).
    loader_workers
        Data-loader worker processes of this training process's test loader.

    Example
    -------
    >>> auto_baseline_workers(cuda=False, cores=64), auto_baseline_workers(cuda=True, cores=16, loader_workers=8)
    (0, 7)
    >>> auto_baseline_workers(cuda=True, cores=128, processes=8, loader_workers=8)
    7
    """
    if not cuda:
        return 0
    spare = cores // max(processes, 1) - 1 - loader_workers
    return max(0, min(MAX_AUTO_BASELINE_WORKERS, spare))


class StructuralSimilarity(Metric):
    """SSIM of Wang et al. (2004) per image, borders excluded, averaged over images.

    The SSIM map is computed with an 11x11 Gaussian window (``sigma`` 1.5), K1 0.01 and K2 0.03,
    and averaged over the pixels whose window lies inside the image, as in Wang et al.'s
    reference MATLAB code and ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``. ``torchmetrics``' own
    ``StructuralSimilarityIndexMeasure`` also averages the window-radius border, computed on
    reflect-padded images (a choice made in torchmetrics issue #2718), which shifts SSIM the more
    the smaller the image; we reuse its SSIM map and only crop that border.

    Parameters
    ----------
    data_range
        Range of the pixel values (1.0 for images in ``[0, 1]``).
    sigma
        Standard deviation of the Gaussian window; its radius is ``int(3.5 * sigma + 0.5)``.

    Example
    -------
    >>> import torch
    >>> target = torch.rand(2, 3, 24, 20)
    >>> round(StructuralSimilarity()(target, target).item(), 4)
    1.0
    """

    is_differentiable = True
    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float = 1.0, sigma: float = 1.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_range = data_range
        self.sigma = sigma
        self.border = int(3.5 * sigma + 0.5)
        self.add_state("similarity_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the SSIMs of a batch of ``(B, C, H, W)`` images."""
        height, width = target.shape[-2:]
        if min(height, width) <= 2 * self.border:
            raise ValueError(
                f"images of {height}x{width} pixels leave no pixel whose {2 * self.border + 1}x"
                f"{2 * self.border + 1} SSIM window fits inside the image; use images larger than "
                f"{2 * self.border} pixels per side or a smaller sigma."
            )
        # The Gaussian window is a convolution: under bf16 autocast it would be computed in bf16
        # and SSIM would be off by ~0.2, so the metric always runs in float32.
        with torch.autocast(device_type=target.device.type, enabled=False):
            _, ssim_map = structural_similarity_index_measure(
                preds.float(), target.float(), sigma=self.sigma, data_range=self.data_range, reduction="none",
                return_full_image=True,
            )
        inside = ssim_map[..., self.border : height - self.border, self.border : width - self.border]
        self.similarity_sum += inside.flatten(1).mean(1).double().sum()
        self.num_images += target.shape[0]

    def compute(self) -> Tensor:
        """The mean SSIM over all images seen."""
        return (self.similarity_sum / self.num_images).float()


def image_quality_metrics() -> MetricCollection:
    """PSNR and SSIM for images in ``[0, 1]``, each computed per image and averaged over images.

    ``PeakSignalNoiseRatio`` pools the squared error over the whole batch by default, which is
    neither the per-image mean that image-restoration papers report nor independent of the batch
    size; ``dim=(1, 2, 3)`` makes it compute one PSNR per image and average those. SSIM is
    :class:`StructuralSimilarity` (Wang et al.'s, borders excluded). Both equal the mean over
    images of scikit-image's ``peak_signal_noise_ratio`` / ``structural_similarity`` (with the
    Gaussian-window options above), which the tests check.

    Returns
    -------
    MetricCollection
        ``{"psnr": ..., "ssim": ...}``; call with ``(prediction, target)``, both ``(B, 3, H, W)``.

    Example
    -------
    >>> import torch
    >>> metrics = image_quality_metrics()
    >>> target = torch.rand(2, 3, 32, 32)
    >>> sorted(metrics(target.clamp(0.1, 0.9), target))
    ['psnr', 'ssim']
    """
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)),
            "ssim": StructuralSimilarity(data_range=1.0),
        }
    )


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the hidden pixels only (paper A.2).

    Parameters
    ----------
    prediction, target
        ``(B, C, H, W)``.
    mask
        ``(B, 1, H, W)`` (or ``(B, C, H, W)``), 1 where a pixel is hidden.

    Returns
    -------
    Tensor
        Scalar: sum of squared errors over hidden pixels and channels divided by their count;
        0 (with a zero gradient) when nothing is hidden.

    Example
    -------
    >>> import torch
    >>> mask = torch.zeros(1, 1, 2, 2); mask[..., 0, 0] = 1
    >>> masked_mse(torch.full((1, 3, 2, 2), 2.0), torch.zeros(1, 3, 2, 2), mask)
    tensor(4.)
    """
    mask = mask.expand_as(prediction)
    squared_error = (prediction - target).square() * mask
    return squared_error.sum() / mask.sum().clamp_min(1.0)


def composite(prediction: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """The prediction on hidden pixels, the ground truth on visible ones, clamped to ``[0, 1]``.

    Example
    -------
    >>> import torch
    >>> composite(torch.full((1, 1, 1, 2), 2.0), torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]]))
    tensor([[[[1., 0.]]]])
    """
    return (mask * prediction + (1 - mask) * image).clamp(0, 1)


def make_inpainting_grid(image: Tensor, mask: Tensor, recon: Tensor, padding: int = 2) -> Tensor:
    """One image grid: rows masked input / mask / reconstruction / ground truth, one column per image.

    Parameters
    ----------
    image
        ``(N, 3, H, W)`` ground truth in ``[0, 1]``.
    mask
        ``(N, 1, H, W)``, 1 where a pixel is hidden; drawn white.
    recon
        ``(N, 3, H, W)`` reconstruction; clamped to ``[0, 1]`` for display.
    padding
        Pixels of white between cells.

    Returns
    -------
    Tensor
        ``(3, 4 * (H + padding) + padding, N * (W + padding) + padding)`` in ``[0, 1]``.

    Example
    -------
    >>> import torch
    >>> make_inpainting_grid(torch.rand(2, 3, 8, 6), torch.zeros(2, 1, 8, 6), torch.rand(2, 3, 8, 6)).shape
    torch.Size([3, 42, 18])
    """
    rows = [image * (1 - mask), mask.expand_as(image), recon.clamp(0, 1), image]
    cells = torch.cat([row.detach().float().cpu() for row in rows])
    return make_grid(cells, nrow=image.shape[0], padding=padding, pad_value=1.0)


class InpaintingTask(PaperTask):
    """Masked-image reconstruction (paper appendix A.2): loss, metrics, logging and image grids.

    The model sees ``image * (1 - mask)`` ("we randomly mask pixel intensities to zero") and
    predicts the whole image.

    Parameters
    ----------
    backbone
        Maps ``(B, 3, H, W)`` images in ``[0, 1]`` with hidden pixels zeroed to a reconstruction
        of the same shape (``afno_repro.models.ViT`` with its pixel head).
    optimizer
        ``optimizer(params) -> Optimizer``, e.g. a Hydra ``_partial_: true`` config.
    scheduler
        ``scheduler(optimizer) -> scheduler`` or None. Both torch ``LRScheduler`` s (incl.
        ``ReduceLROnPlateau``) and timm schedulers (``timm.scheduler.CosineLRScheduler`` ...)
        work: a timm scheduler is stepped with ``step(epoch=...)`` at the end of each epoch
        when ``scheduler_interval="epoch"`` and with ``step_update(num_updates=...)`` after each
        optimizer step when ``"step"``, and its ``t_in_epochs`` must agree with that interval.
        Metric-driven schedulers (``ReduceLROnPlateau``, timm's ``PlateauLRScheduler``) read
        ``val/loss``.
    scheduler_interval
        ``"epoch"`` or ``"step"``: how often Lightning steps the scheduler.
    loss_region
        ``"masked"`` (paper A.2: "the mean squared error between the ground truth and
        reconstruction of the masked pixels") or ``"full"`` (MSE over every pixel).
    metric_region
        What PSNR/SSIM compare with the ground truth, always on the full image in ``[0, 1]``.
        ``"composite"`` (default): the prediction on hidden pixels pasted into the visible
        ones, ``mask * pred + (1 - mask) * image``; our reading of "between the ground truth and
        the reconstruction", because the masked loss leaves the output on visible pixels
        unconstrained. ``"raw"``: the backbone output itself, clamped to ``[0, 1]``.
    num_grid_images
        How many validation images (the first ones of validation batch 0, so the same images
        every epoch) go into the image grid written at the end of each validation; 0 disables it.
    compile
        ``torch.compile`` the backbone in place at ``setup("fit")``.
    head_lr_multiplier, no_weight_decay
        As :class:`~afno_repro.tasks.base.PaperTask` (parameter groups); defaults: one group.
    run_baselines
        Score the learning-free baselines (masked input, biharmonic) in the test loop, on every
        test image with the model's masks.
    baseline_workers
        Where the biharmonic baseline fills its images (~0.1 s of one CPU core per 224x224
        image with the experiments' masks). ``0``: in the main process, one batch after the other
        between the model's test batches. ``k > 0``: in ``k`` worker processes
        (:class:`~afno_repro.tasks.baselines.BiharmonicPool`) started at the test epoch's start,
        filling while the model runs its forward passes; the test epoch's end waits for the last
        fills and stops the workers. ``"auto"`` (default): 0 on a CPU, where the model's forward
        passes already use the cores, and the spare cores on a GPU (:func:`auto_baseline_workers`).
        Either way the fills are scored in the main process by the same metric objects, batch by
        batch in the same order, so the numbers are bit for bit the same for every value.
    baseline_cache
        Folder where the biharmonic fills are kept (:class:`~afno_repro.tasks.fill_cache.FillCache`,
        keyed by each image's and mask's content), so a run tested on images another run already
        filled reads those fills back instead of solving them again: the rows of a table share them.
        ``None``: every fill is solved. The numbers are bit for bit the same either way; the test
        record says how many fills were read and how many solved (``baselines.biharmonic.fill_cache``).

    Notes
    -----
    Logged: ``train/loss``, ``train/psnr``, ``train/masked_fraction`` per step; per evaluation
    split (``val``: the split that selects the checkpoint, ``test``: the reported split)
    ``<split>/psnr``, ``<split>/ssim``, ``<split>/loss``, ``<split>/masked_fraction`` and
    ``<split>/num_images`` (how many images the numbers average); ``val/psnr_best``,
    ``val/ssim_best``; and in the test loop, when ``run_baselines``, ``test/baseline/<name>/psnr``
    and ``.../ssim`` for every baseline of :mod:`afno_repro.tasks.baselines`, scored on the same
    images and masks as the model. A fill that fails in a worker process raises
    :class:`~afno_repro.tasks.baselines.BaselineWorkerError` from the test loop, after training:
    the checkpoints stay. All evaluation numbers are metric objects, reduced over DDP
    ranks. ``*_masked_fraction`` is the fraction of pixels hidden, which decides how hard the
    task is and belongs next to every reported PSNR/SSIM. A NaN or infinite loss raises
    :class:`NonFiniteLossError` naming the global step.
    The image grid's reconstruction row shows the image the metrics score (per
    ``metric_region``). It is saved to ``<trainer.default_root_dir>/images/
    val_epoch{epoch:03d}.png`` and ``images/val_latest.png``, and logged to W&B as
    ``val/reconstructions`` when a ``WandbLogger`` is attached. The backbone is not stored in
    the hyperparameters (it is saved with the weights), so pass it to ``load_from_checkpoint``.

    Example
    -------
    >>> import torch
    >>> from functools import partial
    >>> task = InpaintingTask(torch.nn.Conv2d(3, 3, 3, padding=1), partial(torch.optim.Adam, lr=1e-3))
    >>> batch = {"image": torch.rand(2, 3, 16, 16), "mask": torch.ones(2, 1, 16, 16), "index": torch.arange(2)}
    >>> loss = task.loss(task(batch["image"], batch["mask"]), batch["image"], batch["mask"])
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """

    task_name = "inpainting"
    selection_metric = ("val/psnr", "max")
    reported = (Reported("psnr", "PSNR (dB)", 2), Reported("ssim", "SSIM", 4))
    finetunes = False

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: Callable[[Optimizer], LRScheduler | TimmScheduler] | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        loss_region: Literal["masked", "full"] = "masked",
        metric_region: Literal["composite", "raw"] = "composite",
        num_grid_images: int = 4,
        compile: bool = False,
        run_baselines: bool = True,
        head_lr_multiplier: float = 1.0,
        no_weight_decay: bool = False,
        baseline_workers: int | Literal["auto"] = "auto",
        baseline_cache: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, scheduler_interval, compile, head_lr_multiplier, no_weight_decay)
        check_choice("loss_region", loss_region, LOSS_REGIONS, "InpaintingTask")
        check_choice("metric_region", metric_region, METRIC_REGIONS, "InpaintingTask")
        if not isinstance(run_baselines, bool):
            raise ValueError(
                f"run_baselines={run_baselines!r} is not true or false. It says whether the masked-input and "
                "biharmonic baselines are scored beside the model; use run_baselines=true or run_baselines=false."
            )
        if baseline_workers != "auto" and (
            isinstance(baseline_workers, bool) or not isinstance(baseline_workers, int) or baseline_workers < 0
        ):
            raise ValueError(
                f"baseline_workers={baseline_workers!r} is not auto or a non-negative integer. It is how many "
                "worker processes fill the biharmonic baseline's images beside the test loop; use 0 to fill "
                "them in the main process, auto for the spare cores on a GPU (0 on a CPU), or a count such as 8."
            )
        if baseline_cache is not None and not isinstance(baseline_cache, (str, os.PathLike)):
            raise ValueError(
                f"baseline_cache={baseline_cache!r} is not a folder or null. It is where the biharmonic baseline's "
                "fills are kept so that other rows on the same images read them instead of solving again; use a "
                "path such as outputs/cache/biharmonic, or null to solve every fill."
            )
        check_grid_images(num_grid_images, "the reconstruction grid shows")
        # The backbone and the optimizer/scheduler factories are objects, not hyperparameters: kept
        # out so checkpoints hold plain data and load with torch.load(weights_only=True). The full
        # config is saved by Hydra in the run directory (.hydra/config.yaml).
        self.save_hyperparameters(logger=False, ignore=["backbone", "optimizer", "scheduler"])

        self.train_psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
        # Every evaluation number is a metric object, so under DDP its state is summed over the
        # ranks: a 2-process evaluation gives the numbers of a 1-process one on the same images.
        self.val_metrics = self._evaluation_metrics()
        self.test_metrics = self._evaluation_metrics()
        # The learning-free baselines are scored in the test loop on the same images and masks as
        # the model (each rank its shard, synced like the model's metrics).
        from afno_repro.tasks.baselines import BASELINES, FillCache

        self.baseline_fills = dict(BASELINES) if run_baselines else {}
        # Every row tested on the same images and masks needs the same fills: a cache solves each once.
        self.fill_cache = FillCache(baseline_cache) if run_baselines and baseline_cache is not None else None
        if self.fill_cache is not None:
            self.baseline_fills["biharmonic"] = partial(self.baseline_fills["biharmonic"], cache=self.fill_cache)
        self.baseline_metrics = nn.ModuleDict({name: image_quality_metrics() for name in self.baseline_fills})
        self._baseline_pool: BiharmonicPool | None = None
        self.val_psnr_best = MaxMetric()
        self.val_ssim_best = MaxMetric()
        # The best-so-far values are part of the training state: saved in checkpoints so a resumed
        # run reports the same best epoch as an uninterrupted one.
        self.val_psnr_best.persistent(True)
        self.val_ssim_best.persistent(True)
        self._grid_batch: tuple[Tensor, Tensor, Tensor] | None = None

    @staticmethod
    def _evaluation_metrics() -> MetricCollection:
        """PSNR, SSIM, loss, masked fraction and image count of one evaluation split."""
        metrics = image_quality_metrics()
        metrics.add_metrics({"loss": MeanMetric(), "masked_fraction": MeanMetric(), "num_images": SumMetric(),
                             "fully_masked_images": SumMetric()})
        return metrics

    def reading(self) -> dict[str, Any]:
        return {"metric_region": self.hparams.metric_region, "loss_region": self.hparams.loss_region}

    def protocol(self, selection: str) -> str:
        if selection == "heldout":
            return "validation split, checkpoint chosen on a held-out selection split"
        return "best epoch on the validation split (the paper's protocol: the checkpoint is chosen on the reported split)"

    def evaluation_record(self, values: dict[str, float | None], selection: str) -> dict[str, Any]:
        record = super().evaluation_record(values, selection)
        # Every baseline is scored on the model's masks: the masked fraction belongs beside each.
        for baseline in record["baselines"].values():
            baseline["masked_fraction"] = record["test"].get("masked_fraction")
        fully_masked = logged_count(record["test"].get("fully_masked_images"))
        record["test"]["fully_masked_images"] = fully_masked
        if fully_masked and "biharmonic" in record["baselines"]:
            # No boundary to extend: scikit-image cannot solve these, and they are filled with zeros.
            record["baselines"]["biharmonic"]["zero_filled_images"] = fully_masked
        if self.fill_cache is not None and "biharmonic" in record["baselines"]:
            # This process's fills (under DDP, rank 0's shard): how many were read back, how many solved.
            record["baselines"]["biharmonic"]["fill_cache"] = {"folder": str(self.fill_cache.directory),
                                                               **self.fill_cache.counts()}
        return record

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """Reconstruct ``image`` from its visible pixels; returns the raw backbone output."""
        return self.backbone(image * (1 - mask))

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor:
        """The reconstruction of a batch from its visible pixels (the raw backbone output)."""
        return self(batch["image"], batch["mask"])

    def loss(self, prediction: Tensor, image: Tensor, mask: Tensor) -> Tensor:
        """The training objective for ``loss_region``, in float32 whatever the autocast dtype."""
        prediction, image = prediction.float(), image.float()
        if self.hparams.loss_region == "masked":
            return masked_mse(prediction, image, mask.float())
        return nn.functional.mse_loss(prediction, image)

    def evaluated_image(self, prediction: Tensor, image: Tensor, mask: Tensor) -> Tensor:
        """The image PSNR/SSIM compare with the ground truth, per ``metric_region``."""
        prediction = prediction.float()
        if self.hparams.metric_region == "composite":
            return composite(prediction, image.float(), mask.float())
        return prediction.clamp(0, 1)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor, Tensor]:
        image, mask = batch["image"], batch["mask"]
        prediction = self(image, mask)
        loss = self.loss(prediction, image, mask)
        if stage == "train":
            self.check_finite(loss)
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=image.shape[0])
            self.log("train/masked_fraction", mask.float().mean(), on_step=True, on_epoch=False, batch_size=image.shape[0])
        return loss, self.evaluated_image(prediction, image, mask), image.float()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, evaluated, target = self._shared_step(batch, "train")
        self.train_psnr(evaluated.detach(), target)
        self.log("train/psnr", self.train_psnr, on_step=True, on_epoch=False, batch_size=target.shape[0])
        return loss

    def _evaluation_step(self, batch: dict[str, Tensor], stage: str, metrics: MetricCollection) -> tuple[Tensor, Tensor]:
        """Loss, PSNR and SSIM of a validation or test batch, logged per epoch as metric objects."""
        loss, evaluated, target = self._shared_step(batch, stage)
        batch_size = target.shape[0]
        metrics["psnr"].update(evaluated, target)
        metrics["ssim"].update(evaluated, target)
        metrics["loss"].update(loss.detach(), weight=batch_size)
        metrics["masked_fraction"].update(batch["mask"].float().flatten(1).mean(1))
        metrics["num_images"].update(torch.tensor(float(batch_size), device=target.device))
        # Images with no visible pixel: nothing to inpaint from, and the biharmonic fill of one is zeros.
        metrics["fully_masked_images"].update((batch["mask"].flatten(1) > 0.5).all(1).sum().float())
        self.log_dict(
            {f"{stage}/{name}": metric for name, metric in metrics.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=False,
            batch_size=batch_size,
        )
        return evaluated, target

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        evaluated, target = self._evaluation_step(batch, "val", self.val_metrics)
        if batch_idx == 0 and self.hparams.num_grid_images > 0:
            n = self.hparams.num_grid_images
            self._grid_batch = (target[:n].cpu(), batch["mask"][:n].float().cpu(), evaluated[:n].cpu())

    def on_validation_epoch_end(self) -> None:
        # The sanity check runs untrained weights on a few batches: it must set no best score and
        # write no grid.
        if self.trainer.sanity_checking:
            return
        metrics = self.val_metrics.compute()
        self.val_psnr_best(metrics["psnr"])
        self.val_ssim_best(metrics["ssim"])
        # The metric objects already hold the value reduced over ranks, so every rank logs the same
        # number and sync_dist only averages identical values.
        self.log("val/psnr_best", self.val_psnr_best.compute(), sync_dist=True, prog_bar=True)
        self.log("val/ssim_best", self.val_ssim_best.compute(), sync_dist=True)
        if self._grid_batch is not None:
            self.write_grid(make_inpainting_grid(*self._grid_batch), "val/reconstructions",
                            "masked input / mask / reconstruction / ground truth")

    def baseline_worker_count(self) -> int:
        """The worker processes the biharmonic baseline fills in this test epoch (``baseline_workers``)."""
        option = self.hparams.baseline_workers
        if option != "auto":
            return option
        cores = usable_cores()
        loaders = self.trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        loader_workers = sum(getattr(loader, "num_workers", 0) for loader in loaders)
        return auto_baseline_workers(self.device.type == "cuda", cores, self.trainer.num_devices, loader_workers)

    def configure_callbacks(self) -> list[pl.Callback]:
        # Once attached (by fit), the trainer keeps it for test: returning it again would replace it
        # with a notice in the log.
        if any(isinstance(callback, _StopBaselinePool) for callback in self.trainer.callbacks):
            return []
        return [_StopBaselinePool()]

    def on_test_epoch_start(self) -> None:
        from afno_repro.tasks.baselines import BiharmonicPool

        workers = self.baseline_worker_count() if "biharmonic" in self.baseline_fills else 0
        if workers > 0:
            self._baseline_pool = BiharmonicPool(workers, cache=self.fill_cache)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        _, target = self._evaluation_step(batch, "test", self.test_metrics)
        mask = batch["mask"].float()
        for name, fill in self.baseline_fills.items():
            metrics = self.baseline_metrics[name]
            if name == "biharmonic" and self._baseline_pool is not None:
                self._baseline_pool.submit(target, mask, target)
                continue
            metrics.update(fill(target, mask).to(target.device), target)
            self.log_dict({f"test/baseline/{name}/{key}": metric for key, metric in metrics.items()},
                          on_step=False, on_epoch=True, batch_size=target.shape[0])
        self._score_pooled_fills(wait=False)

    def on_test_epoch_end(self) -> None:
        if self._baseline_pool is None:
            return
        try:
            self._score_pooled_fills(wait=True)
        finally:
            self.stop_baseline_pool()
        # Lightning computes what the steps logged before this hook, when the loader is exhausted: the
        # pooled baseline's metric objects are logged here, once every fill is scored.
        metrics = self.baseline_metrics["biharmonic"]
        self.log_dict({f"test/baseline/biharmonic/{key}": metric for key, metric in metrics.items()},
                      on_step=False, on_epoch=True)

    def _score_pooled_fills(self, wait: bool) -> None:
        """Score the biharmonic fills the workers finished, batch by batch in test-loop order."""
        if self._baseline_pool is None:
            return
        for filled, target in self._baseline_pool.finished(wait=wait):
            self.baseline_metrics["biharmonic"].update(filled, target)

    def stop_baseline_pool(self, cancel: bool = False) -> None:
        """Stop the biharmonic worker processes, if any (``cancel``: drop the fills not yet started)."""
        pool, self._baseline_pool = self._baseline_pool, None
        if pool is not None:
            pool.close(cancel=cancel)


class _StopBaselinePool(pl.Callback):
    """Stops the task's biharmonic workers when a run fails: a LightningModule has no ``on_exception``."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(pl_module, InpaintingTask):
            pl_module.stop_baseline_pool(cancel=True)
