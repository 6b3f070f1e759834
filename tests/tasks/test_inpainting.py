"""InpaintingTask under a real Lightning Trainer, its image grid, schedulers and the baselines."""

from __future__ import annotations

import logging
from functools import partial
from unittest import mock

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from skimage.metrics import peak_signal_noise_ratio
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.io import decode_png, read_file

from afno_repro.models import ViT
from afno_repro.tasks import (
    InpaintingTask,
    NonFiniteLossError,
    composite,
    evaluate_baselines,
    make_inpainting_grid,
)

HEIGHT, WIDTH = 16, 14


class SmoothImages(Dataset):
    """Smooth random images with sparse random masks, in the DataModule's batch format."""

    def __init__(self, size: int = 6, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.rand(size, 3, 4, 4, generator=gen)
        self.images = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
        self.masks = (torch.rand(size, 1, height, width, generator=gen) < 0.2).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "mask": self.masks[index], "index": torch.tensor(index)}


def loader(dataset: Dataset, batch_size: int = 4) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def conv_task(**options) -> InpaintingTask:
    torch.manual_seed(0)
    options.setdefault("optimizer", partial(torch.optim.Adam, lr=1e-2))
    return InpaintingTask(nn.Conv2d(3, 3, 3, padding=1), **options)


def trainer(tmp_path, **options) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**defaults, **options})


class Recorder(nn.Module):
    """Identity backbone that keeps what it was given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return x


def test_backbone_sees_the_image_with_hidden_pixels_zeroed():
    task = InpaintingTask(Recorder(), partial(torch.optim.Adam, lr=1e-3))
    batch = next(iter(loader(SmoothImages())))
    task(batch["image"], batch["mask"])
    hidden = batch["mask"].expand_as(batch["image"]) > 0
    assert torch.all(task.backbone.seen[hidden] == 0)
    assert torch.equal(task.backbone.seen[~hidden], batch["image"][~hidden])


def test_full_loss_region_is_the_plain_mse():
    task = conv_task(loss_region="full")
    batch = next(iter(loader(SmoothImages())))
    prediction = torch.rand_like(batch["image"])
    expected = F.mse_loss(prediction, batch["image"])
    assert task.loss(prediction, batch["image"], batch["mask"]).item() == pytest.approx(expected.item(), rel=1e-6)
    assert conv_task().loss(prediction, batch["image"], batch["mask"]).item() != pytest.approx(expected.item())


@pytest.mark.parametrize(
    "options",
    [{"loss_region": "hidden"}, {"metric_region": "visible"}, {"scheduler_interval": "batch"}, {"num_grid_images": -1},
     {"baseline_workers": -1}, {"baseline_workers": "all"}, {"baseline_workers": True}],
)
def test_invalid_options_raise_value_error(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        conv_task(**options)


class NaNAfter(nn.Module):
    """A backbone whose output turns NaN from its `steps`-th call on."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.calls, self.steps = 0, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.conv(x)
        return out * float("nan") if self.calls > self.steps else out


def test_non_finite_loss_stops_training_naming_the_step(tmp_path):
    task = InpaintingTask(NaNAfter(steps=2), partial(torch.optim.SGD, lr=1e-2))
    with pytest.raises(NonFiniteLossError, match=r"global step 2\b.*lower learning rate") as error:
        trainer(tmp_path, max_steps=5, limit_val_batches=0).fit(task, loader(SmoothImages(), batch_size=1))
    assert isinstance(error.value, FloatingPointError)


@pytest.mark.parametrize("metric_region", ["composite", "raw"])
def test_validation_metrics_are_per_image_means_of_the_evaluated_image(tmp_path, metric_region):
    dataset = SmoothImages(size=7)
    task = conv_task(metric_region=metric_region)
    [results] = trainer(tmp_path).validate(task, loader(dataset, batch_size=3), verbose=False)
    with torch.no_grad():
        prediction = task(dataset.images, dataset.masks)
    if metric_region == "composite":
        evaluated = composite(prediction, dataset.images, dataset.masks)
    else:
        evaluated = prediction.clamp(0, 1)
    expected_psnr = np.mean([
        peak_signal_noise_ratio(gt.numpy(), ev.numpy(), data_range=1) for gt, ev in zip(dataset.images, evaluated)
    ])
    assert results["val/psnr"] == pytest.approx(expected_psnr, abs=1e-3)
    assert results["val/masked_fraction"] == pytest.approx(dataset.masks.mean().item(), abs=1e-6)
    hidden = dataset.masks.expand_as(prediction)
    expected_loss = ((prediction - dataset.images) ** 2 * hidden).sum() / hidden.sum()
    assert results["val/loss"] == pytest.approx(expected_loss.item(), rel=0.05)


class ValPSNRHistory(pl.Callback):
    def __init__(self) -> None:
        self.history: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.history.append(trainer.callback_metrics["val/psnr"].item())


class WorseEachStep(nn.Module):
    """Identity minus an offset that grows with every training call.

    Validation scores then fall epoch after epoch, and the untrained weights of the sanity
    check score best of all, so a best score that counted the sanity check would show.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.train_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.train_calls += self.training
        return self.scale * x - 0.05 * self.train_calls


def test_fit_logs_every_metric_tracks_the_best_and_writes_the_grid(tmp_path):
    dataset, num_grid_images = SmoothImages(size=6), 3
    history = ValPSNRHistory()
    task = InpaintingTask(WorseEachStep(), partial(torch.optim.SGD, lr=1e-6), metric_region="raw",
                          num_grid_images=num_grid_images)
    fit = trainer(tmp_path, max_epochs=3, callbacks=[history], num_sanity_val_steps=1)
    fit.fit(task, loader(dataset), loader(dataset))

    logged = fit.callback_metrics
    for name in ("train/loss", "train/psnr", "train/masked_fraction", "val/loss", "val/psnr", "val/ssim",
                 "val/psnr_best", "val/ssim_best", "val/masked_fraction"):
        assert torch.isfinite(logged[name]), name
    assert history.history == sorted(history.history, reverse=True) and len(set(history.history)) == 3
    assert logged["val/psnr_best"].item() == pytest.approx(history.history[0], abs=1e-5)

    image_dir = tmp_path / "images"
    assert sorted(p.name for p in image_dir.iterdir()) == [
        "val_epoch000.png", "val_epoch001.png", "val_epoch002.png", "val_latest.png"]
    grid = decode_png(read_file(str(image_dir / "val_latest.png"))).float() / 255
    pad = 2
    assert grid.shape == (3, 4 * (HEIGHT + pad) + pad, num_grid_images * (WIDTH + pad) + pad)
    for row, expected in ((1, dataset.masks.expand(-1, 3, -1, -1)), (3, dataset.images)):
        for column in range(num_grid_images):
            top, left = pad + row * (HEIGHT + pad), pad + column * (WIDTH + pad)
            cell = grid[:, top : top + HEIGHT, left : left + WIDTH]
            assert torch.allclose(cell, expected[column], atol=1 / 255 + 1e-6)


def test_fast_dev_run_trains_the_real_vit_and_writes_the_grid(tmp_path):
    torch.manual_seed(0)
    backbone = ViT(img_size=(HEIGHT, 12), patch_size=4, embed_dim=16, depth=1, mixer={"name": "afno", "num_blocks": 2})
    before = [p.detach().clone() for p in backbone.parameters()]
    dataset = SmoothImages(size=4, width=12)
    task = InpaintingTask(backbone, partial(torch.optim.Adam, lr=1e-3))
    fit = trainer(tmp_path, fast_dev_run=2)
    fit.fit(task, loader(dataset, batch_size=2), loader(dataset, batch_size=2))
    assert torch.isfinite(fit.callback_metrics["val/psnr"])
    assert any(not torch.equal(b, a) for b, a in zip(before, backbone.parameters()))
    assert (tmp_path / "images" / "val_latest.png").exists()


def test_grid_rows_are_masked_input_mask_reconstruction_ground_truth():
    dataset = SmoothImages(size=2)
    recon = torch.rand_like(dataset.images) * 2 - 0.5
    grid = make_inpainting_grid(dataset.images, dataset.masks, recon, padding=1)
    masked_input = dataset.images * (1 - dataset.masks)
    rows = [masked_input, dataset.masks.expand(-1, 3, -1, -1), recon.clamp(0, 1), dataset.images]
    for r, row in enumerate(rows):
        for c in range(2):
            top, left = 1 + r * (HEIGHT + 1), 1 + c * (WIDTH + 1)
            assert torch.equal(grid[:, top : top + HEIGHT, left : left + WIDTH], row[c])


def test_grid_is_logged_to_wandb(tmp_path):
    logger = mock.create_autospec(WandbLogger, instance=True)
    logger.save_dir = str(tmp_path)
    dataset = SmoothImages(size=4)
    fit = trainer(tmp_path, logger=logger, max_epochs=1, limit_train_batches=1)
    fit.fit(conv_task(num_grid_images=2), loader(dataset), loader(dataset))
    logger.log_image.assert_called_once()
    kwargs = logger.log_image.call_args.kwargs
    assert kwargs["key"] == "val/reconstructions"
    assert kwargs["images"][0].shape == (3, 4 * (HEIGHT + 2) + 2, 2 * (WIDTH + 2) + 2)
    assert (tmp_path / "images" / "val_latest.png").exists()


class LearningRates(pl.Callback):
    def __init__(self) -> None:
        self.per_step: list[float] = []
        self.per_epoch: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.per_step.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.per_epoch.append(trainer.optimizers[0].param_groups[0]["lr"])


def timm_cosine(optimizer: torch.optim.Optimizer, t_in_epochs: bool) -> CosineLRScheduler:
    return CosineLRScheduler(optimizer, t_initial=4, lr_min=1e-4, warmup_t=1, warmup_lr_init=1e-3,
                             t_in_epochs=t_in_epochs)


def reference_lrs(count: int, t_in_epochs: bool) -> list[float]:
    scheduler = timm_cosine(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-2), t_in_epochs)
    return [scheduler._get_lr(t)[0] for t in range(count)]


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_timm_cosine_scheduler_follows_its_schedule(tmp_path, interval):
    lrs = LearningRates()
    scheduler = partial(timm_cosine, t_in_epochs=interval == "epoch")
    task = conv_task(optimizer=partial(torch.optim.SGD, lr=1e-2), scheduler=scheduler, scheduler_interval=interval)
    # Two batches an epoch and four scheduler periods in all, whatever the interval.
    max_epochs = 2 if interval == "step" else 4
    trainer(tmp_path, max_epochs=max_epochs, limit_val_batches=0, callbacks=[lrs]).fit(
        task, loader(SmoothImages(size=4), batch_size=2))
    recorded = lrs.per_step if interval == "step" else lrs.per_epoch
    assert len(set(recorded)) == len(recorded) == 4
    assert recorded == pytest.approx(reference_lrs(4, t_in_epochs=interval == "epoch"), rel=1e-9)
    if interval == "epoch":
        assert lrs.per_step == pytest.approx([lr for lr in recorded for _ in range(2)], rel=1e-9)


def test_timm_scheduler_in_the_wrong_unit_is_refused(tmp_path):
    task = conv_task(scheduler=partial(timm_cosine, t_in_epochs=True), scheduler_interval="step")
    with pytest.raises(ValueError, match="t_in_epochs"):
        trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(task, loader(SmoothImages()))


def test_torch_scheduler_steps_per_epoch(tmp_path):
    lrs = LearningRates()
    task = conv_task(optimizer=partial(torch.optim.SGD, lr=1e-2),
                     scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    trainer(tmp_path, max_epochs=3, limit_val_batches=0, callbacks=[lrs]).fit(task, loader(SmoothImages()))
    assert lrs.per_epoch == pytest.approx([1e-2, 5e-3, 2.5e-3])


def test_compile_compiles_the_backbone_in_place_keeping_checkpoint_keys():
    task = conv_task(compile=True)
    keys = list(task.state_dict())
    task.setup("validate")
    assert task.backbone._compiled_call_impl is None
    task.setup("fit")
    assert task.backbone._compiled_call_impl is not None
    assert list(task.state_dict()) == keys


@pytest.mark.parametrize("steps", [5, 1])
def test_compiled_training_logs_and_records_the_compile_time(tmp_path, caplog, monkeypatch, steps):
    """The task times its first compiled training steps: the first holds the compilation, the median of
    the next three is the step without it. AOT-eager (dynamo and AOT autograd, no code generation)
    stands in for Inductor, seconds of C++ compilation; the full tier runs Inductor through train.py
    (tests/harness/test_launchers_and_logging.py)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compiler"))  # not /tmp/torchinductor_<user>
    torch.compiler.reset()
    task = conv_task(compile=True)
    monkeypatch.setattr(task.backbone, "compile", partial(task.backbone.compile, backend="aot_eager"))
    # Batches of one size: an uneven last batch would recompile inside a timed step.
    with caplog.at_level(logging.INFO, logger="afno_repro.tasks.base"):
        trainer(tmp_path, max_steps=steps, limit_val_batches=0).fit(task, loader(SmoothImages(size=8), batch_size=2))
    torch.compiler.reset()
    timing = task.compile_timing
    messages = [r.getMessage() for r in caplog.records if "compiled the backbone" in r.getMessage()]
    assert len(messages) == 1, messages
    if steps == 1:
        assert timing["steps_timed"] == 1 and timing["step_s"] is None and timing["compile_s"] is None
        assert timing["first_step_s"] > 0 and "no later step" in messages[0]
        return
    assert timing["steps_timed"] == 4
    # Tracing the forward and the backward graphs takes far longer than a 3x3 convolution of 2 small images.
    assert timing["first_step_s"] > 10 * timing["step_s"] > 0
    assert timing["compile_s"] == pytest.approx(timing["first_step_s"] - timing["step_s"], abs=2e-3)
    assert f"compiled the backbone in {timing['compile_s']:.1f} s" in messages[0]


def test_an_eager_run_times_nothing(tmp_path):
    task = conv_task()
    trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(task, loader(SmoothImages(size=4), batch_size=2))
    assert task.compile_timing is None and task.backbone._compiled_call_impl is None


def test_baselines_are_finite_and_biharmonic_beats_the_masked_input():
    dataset = SmoothImages(size=5, height=24, width=20)
    scores = evaluate_baselines(loader(dataset, batch_size=2), max_batches=2)
    for method in ("masked_input", "biharmonic"):
        assert scores[method]["num_images"] == 4
        assert np.isfinite(scores[method]["psnr"]) and np.isfinite(scores[method]["ssim"])
        assert scores[method]["masked_fraction"] == pytest.approx(dataset.masks[:4].mean().item())
    assert scores["biharmonic"]["psnr"] > scores["masked_input"]["psnr"] + 10
    assert scores["biharmonic"]["ssim"] > scores["masked_input"]["ssim"]


class Zeros(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_masked_input_baseline_scores_like_a_task_predicting_zeros(tmp_path):
    # A zero prediction composited into the visible pixels is the masked input, so the baseline
    # and the task must agree exactly if they use the same metrics on the same images.
    dataset = SmoothImages(size=5, height=24, width=20)
    scores = evaluate_baselines(loader(dataset, batch_size=2))
    task = InpaintingTask(Zeros(), partial(torch.optim.Adam, lr=1e-3), num_grid_images=0)
    [results] = trainer(tmp_path).validate(task, loader(dataset, batch_size=3), verbose=False)
    assert results["val/psnr"] == pytest.approx(scores["masked_input"]["psnr"], abs=1e-4)
    assert results["val/ssim"] == pytest.approx(scores["masked_input"]["ssim"], abs=1e-5)


def test_evaluate_baselines_rejects_a_bad_max_batches():
    with pytest.raises(ValueError, match="max_batches"):
        evaluate_baselines(loader(SmoothImages()), max_batches=0)


def test_biharmonic_fills_an_image_with_nothing_visible_with_zeros_and_leaves_an_unmasked_one():
    """A small image can be hidden whole by the paper's walk (ViT at 32x32: 64 tokens): nothing to extend."""
    from afno_repro.tasks.baselines import biharmonic

    image = torch.rand(3, 3, 12, 12) * 0.5 + 0.25
    mask = torch.zeros(3, 1, 12, 12)
    mask[0] = 1  # all hidden
    mask[2, :, 4:8, 4:8] = 1
    filled = biharmonic(image, mask)
    assert torch.equal(filled[0], torch.zeros(3, 12, 12))
    assert torch.allclose(filled[1], image[1])
    assert torch.allclose(filled[2][:, :4], image[2][:, :4]) and filled[2][:, 4:8, 4:8].abs().sum() > 0


def test_a_mask_that_hides_whole_images_is_counted_and_said_beside_the_baselines(tmp_path, capsys):
    """`data.mask.brush_size=1000` hides every pixel of the 32x32 smoke images: the biharmonic row then
    equals the masked input's (zeros), and the run says so rather than showing it as a biharmonic fill."""
    import json

    from afno_repro.config import compose
    from afno_repro.train import main

    main(compose(["debug=smoke", "data.mask.brush_size=1000", "logger=csv", "count_flops=false",
                  f"runs_root={tmp_path}"], output_dir=str(tmp_path / "run")))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["fully_masked_images"] == metrics["test"]["num_images"] == 4
    assert metrics["baselines"]["biharmonic"]["zero_filled_images"] == 4
    assert metrics["baselines"]["biharmonic"]["psnr"] == metrics["baselines"]["masked_input"]["psnr"]
    out = capsys.readouterr().out
    assert "warning: 4 of the 4 test images have every pixel masked" in out and "fills them with zeros" in out
