"""Cityscapes evaluation in the segmentation task (sliding window, resize, extra modes, selection=last)
and PaperTask's parameter groups (head learning-rate multiplier, no weight decay on norms and biases)."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from timm.scheduler import PolyLRScheduler
from torch import nn

from afno_repro.data import CityscapesDataModule
from afno_repro.models import SegFormer
from afno_repro.tasks.segmentation import SegmentationTask
from afno_repro.tasks.segmentation_inference import slide_logits


def test_slide_equals_whole_for_a_per_pixel_model_and_covers_every_pixel():
    conv = nn.Conv2d(3, 5, 1)
    image = torch.rand(2, 3, 20, 45)
    with torch.no_grad():
        # Overlapping windows, a last window moved back inside, and an image smaller than the crop (padded).
        assert torch.allclose(slide_logits(conv, image, 16, 12), conv(image), atol=1e-5)
        assert torch.allclose(slide_logits(conv, image, (24, 64), 8), conv(image), atol=1e-5)
    calls = []
    slide_logits(lambda x: calls.append(tuple(x.shape[-2:])) or x[:, :1], image, 16, 12)
    assert calls == [(16, 16)] * 8  # 2 rows x 4 columns of windows, each the crop's size


def test_inference_modes_return_logits_at_the_label_size():
    net = SegFormer(variant="b0", embed_dims=[8, 16, 40, 64], depths=[1, 1, 1, 1], img_size=32, num_classes=4, decoder_dim=16)
    task = SegmentationTask(net, partial(torch.optim.AdamW, lr=1e-3), num_folds=1, image_size=32, inference="slide",
                            crop_size=32, stride=24, extra_inference=["resize", "whole"])
    image = torch.rand(1, 3, 32, 64)
    for mode in ("slide", "resize", "whole"):
        assert task.infer(image, (64, 128), mode).shape == (1, 4, 64, 128)
    reading = task.reading()
    assert reading["inference"].startswith("test/miou and val/miou: sliding window") and "crop 32, stride 24" in reading["inference"]
    assert set(reading["extra_inference"]) == {"resize", "whole"}
    # What evaluating a batch is set against (the preflight): every mode the test step infers, not the headline alone.
    modes = []
    task.infer = lambda image, size, mode=None: modes.append(mode or "slide")
    task.evaluation_forwards({"image": image, "mask": torch.zeros(1, 64, 128, dtype=torch.long)})
    assert modes == ["slide", "resize", "whole"]
    with pytest.raises(ValueError, match="needs stride"):
        SegmentationTask(net, partial(torch.optim.AdamW, lr=1e-3), num_folds=1, inference="slide", crop_size=32)
    with pytest.raises(ValueError, match="needs num_folds >= 2"):
        SegmentationTask(net, partial(torch.optim.AdamW, lr=1e-3), num_folds=1, selection="heldout")


def test_fit_and_test_on_the_embedded_scenes_score_both_inference_modes(tmp_path):
    dm = CityscapesDataModule(source="embedded", base_size=(64, 32), crop_size=32, batch_size=4, val_batch_size=4,
                              train_samples_per_epoch=8, val_samples=4, selection="last")
    net = SegFormer(variant="b0", embed_dims=[8, 16, 40, 64], depths=[1, 1, 1, 1], img_size=32,
                    num_classes=dm.num_classes, decoder_dim=16)
    task = SegmentationTask(net, partial(torch.optim.AdamW, lr=1e-3), num_classes=dm.num_classes, selection="last",
                            num_folds=1, image_size=32, prior_size=8, inference="slide", crop_size=32, stride=24,
                            extra_inference=["resize"], num_grid_images=2, head_lr_multiplier=10, no_weight_decay=True)
    assert task.selection_metric == (None, "max")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    (results,) = trainer.test(task, datamodule=dm, verbose=False)
    assert results["test/num_images"] == 4
    for key in ("test/miou", "test/resize/miou", "test/resize/pixel_accuracy", "test/baseline/pixel_prior/miou"):
        assert 0 <= results[key] <= 100
    record = task.evaluation_record({k.removeprefix("test/"): v for k, v in results.items()}, "last")
    assert record["test"]["inference"] == "slide" and set(record["test"]["extra_inference"]["resize"]) == {"miou", "pixel_accuracy"}
    assert list(record["protocols"]) == ["max_over_run"] and "end of training" in record["result"]["protocol"]
    assert (tmp_path / "images" / "val_latest.png").is_file()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 2))
        self.body = nn.Linear(2, 2)
        self.norm = nn.LayerNorm(2)
        self.head = nn.Linear(2, 1)
        self.num_classes = 2


def _optimizer(task: SegmentationTask) -> torch.optim.Optimizer:
    configured = task.configure_optimizers()
    return configured["optimizer"] if isinstance(configured, dict) else configured


def test_defaults_keep_one_parameter_group():
    task = SegmentationTask(_Net(), partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01), image_size=2)
    (group,) = _optimizer(task).param_groups
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.01 and len(group["params"]) == 7


def test_head_lr_multiplier_and_no_weight_decay_build_groups_that_timm_schedules():
    scheduler = partial(PolyLRScheduler, t_initial=10, power=1.0, lr_min=0.0, warmup_t=2, warmup_lr_init=1e-6, t_in_epochs=False)
    task = SegmentationTask(_Net(), partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01), scheduler=scheduler,
                            scheduler_interval="step", image_size=2, head_lr_multiplier=10, no_weight_decay=True)
    assert task.hparams.head_lr_multiplier == 10 and task.hparams.no_weight_decay is True
    configured = task.configure_optimizers()
    groups = {group["name"]: group for group in configured["optimizer"].param_groups}
    names = {name: parameter for name, parameter in task.named_parameters()}
    assert [p is names["backbone.body.weight"] for p in groups["decay"]["params"]] == [True]
    assert {id(p) for p in groups["no_decay"]["params"]} == {id(names[k]) for k in (
        "backbone.pos_embed", "backbone.body.bias", "backbone.norm.weight", "backbone.norm.bias")}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.01
    assert groups["head_decay"]["initial_lr"] == pytest.approx(1e-2) and groups["head_no_decay"]["weight_decay"] == 0.0
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert groups["decay"]["lr"] == groups["head_decay"]["lr"] == 1e-6  # warmup starts every group at warmup_lr_init
    scheduler.step_update(num_updates=2)  # warmup over: the poly decay (warmup inside t_initial, as mmseg), per group
    assert groups["decay"]["lr"] == pytest.approx(8e-4) and groups["head_decay"]["lr"] == pytest.approx(8e-3)
    scheduler.step_update(num_updates=6)  # linear decay to 0 at step 10
    assert groups["decay"]["lr"] == pytest.approx(4e-4) and groups["head_no_decay"]["lr"] == pytest.approx(4e-3)
    with pytest.raises(ValueError, match="head_lr_multiplier=0"):
        SegmentationTask(_Net(), partial(torch.optim.AdamW, lr=1e-3), image_size=2, head_lr_multiplier=0)
