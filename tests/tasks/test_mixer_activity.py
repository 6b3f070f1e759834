"""Every task records, from its test pass, whether its AFNO mixer is active (metrics.json's mixer_activity):
counted during the test loop only, on the test images, one share per AFNO layer; null without softshrink."""

from __future__ import annotations

import json
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from afno_repro.mixers.activity import SpectrumActivity
from afno_repro.models import ViT
from afno_repro.tasks import InpaintingTask
from test_inpainting import SmoothImages, loader, trainer


def _task(mixer) -> InpaintingTask:
    torch.manual_seed(0)
    backbone = ViT(img_size=(16, 14), patch_size=2, embed_dim=16, depth=2, mixer=mixer)
    return InpaintingTask(backbone, partial(torch.optim.Adam, lr=1e-3))


class _CountForwards(pl.Callback):
    """Whether any meter was attached while training or validating."""

    def __init__(self) -> None:
        self.metered = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.metered.append(any(block.mixer.shrink.meter is not None for block in pl_module.backbone.blocks))

    on_validation_batch_start = on_train_batch_start


def test_the_test_pass_records_one_share_per_afno_layer_and_training_runs_unmetered(tmp_path):
    task = _task({"name": "afno", "num_blocks": 2, "sparsity_threshold": 0.01})
    spy = _CountForwards()
    run = trainer(tmp_path, max_epochs=1, callbacks=[spy])
    data = SmoothImages(size=6)
    run.fit(task, loader(data), loader(data))
    assert spy.metered and not any(spy.metered)
    (results,) = run.test(task, loader(data), verbose=False)
    record = task.evaluation_record({k.removeprefix("test/"): v for k, v in results.items()}, "val")
    activity = record["mixer_activity"]
    assert len(activity["spectrum_zeroed"]) == len(activity["zero_before"]) == 2
    assert all(0.0 <= share <= 1.0 for share in activity["spectrum_zeroed"])
    assert activity["num_images"] == record["test"]["num_images"] == 6 and activity["split"] == "val"
    assert all(block.mixer.shrink.meter is None for block in task.backbone.blocks), "a meter stayed attached"
    # The counts are those of the 6 test images (each parts of 8x8 tokens' kept modes), not of the training steps.
    modes = 8 * (7 // 2 + 1)
    assert task._activity_counts[:, 2].tolist() == [2 * 6 * modes * 16] * 2


@pytest.mark.parametrize("mixer", [{"name": "afno", "sparsity_threshold": 0.0}, {"name": "gfn"}])
def test_without_softshrink_the_record_holds_null(tmp_path, mixer):
    task = _task(mixer)
    (results,) = trainer(tmp_path).test(task, loader(SmoothImages(size=2)), verbose=False)
    record = task.evaluation_record({k.removeprefix("test/"): v for k, v in results.items()}, "val")
    assert "mixer_activity" in record and record["mixer_activity"] is None


def test_a_smoke_inpainting_run_writes_it_to_metrics_json(tmp_path):
    """train.py's entry point, in process, at smoke size: metrics.json holds one share per block, measured
    on the reported split's images."""
    from afno_repro.config import compose
    from afno_repro.train import main

    cfg = compose(["debug=smoke", "run_baselines=false", "count_flops=false"], output_dir=str(tmp_path / "run"))
    record = main(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == written["status"] == "completed"
    activity = written["mixer_activity"]
    assert set(activity) == {"spectrum_zeroed", "zero_before", "mean_zeroed", "inactive", "inactive_above", "split",
                             "num_images"}
    assert len(activity["spectrum_zeroed"]) == len(activity["zero_before"]) == cfg.backbone.depth
    assert activity["split"] == written["test"]["split"] and activity["num_images"] == written["test"]["num_images"] > 0
    assert activity["mean_zeroed"] == pytest.approx(sum(activity["spectrum_zeroed"]) / cfg.backbone.depth)
    assert activity["inactive"] == (activity["mean_zeroed"] > 0.95)
