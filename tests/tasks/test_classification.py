"""The classification task: top-1 / top-5 on known logits, the Mixup soft-target loss, the odd-batch
refusal, the majority baseline, the metrics.json record, and a 1-epoch fit on the embedded LFW."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from timm.data import Mixup
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from afno_repro.data import ClassificationDataModule
from afno_repro.models import ViT
from afno_repro.tasks import ClassificationTask

C = 6


class _LogitsInImage(nn.Module):
    """Returns row 0 of channel 0 of the image as the logits: images ``(B, 3, 1, C)``."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = C
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image[:, 0, 0] * self.scale


def _task(**options) -> ClassificationTask:
    return ClassificationTask(_LogitsInImage(), partial(torch.optim.SGD, lr=0.0), num_grid_images=0, **options)


def _trainer(tmp_path) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)


def _batch(logits: torch.Tensor, labels: list[int]) -> dict[str, torch.Tensor]:
    image = logits[:, None, None, :].expand(-1, 3, 1, -1).contiguous()
    return {"image": image, "label": torch.tensor(labels), "index": torch.arange(len(labels))}


# Logits ranking the classes 0 > 1 > ... > 5, rolled so that image i ranks class i first.
RANKED = torch.stack([torch.arange(C, 0, -1).float().roll(i) for i in range(4)])


def _rank_of(logits: torch.Tensor, label: int) -> int:
    return int((logits > logits[label]).sum())


def test_top1_and_top5_on_known_logits(tmp_path):
    labels = [0, 2, 0, 5]
    ranks = [_rank_of(row, label) for row, label in zip(RANKED, labels)]
    assert ranks == [0, 1, 4, 2]  # top-1: 1 of 4; top-5: all 4
    labels[2] = 1  # image 2 ranks class 1 last (6th): top-5 now 3 of 4
    assert _rank_of(RANKED[2], 1) == 5
    (results,) = _trainer(tmp_path).test(_task(), dataloaders=DataLoader([_batch(RANKED, labels)], batch_size=None), verbose=False)
    assert results["test/top1"] == pytest.approx(25.0)
    assert results["test/top5"] == pytest.approx(75.0)
    assert results["test/num_images"] == 4
    assert results["test/loss"] == pytest.approx(F.cross_entropy(RANKED, torch.tensor(labels)).item(), rel=1e-5)


def _step(task: ClassificationTask, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    task.check_finite = lambda loss: None  # no trainer attached
    task.log = lambda *args, **kwargs: None
    return task.training_step(batch, 0)


def test_mixup_trains_on_soft_targets():
    batch = _batch(torch.randn(4, C), [0, 1, 2, 3])
    image = batch["image"].clone()  # timm mixes in place
    task = _task()
    np.random.seed(0)
    loss = _step(task, batch)
    np.random.seed(0)
    mixed, target = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=C)(image, batch["label"])
    assert target.shape == (4, C) and (target > 0).all() and torch.allclose(target.sum(1), torch.ones(4))
    expected = -(target * F.log_softmax(mixed[:, 0, 0], dim=-1)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert task.prior.counts.tolist() == [1, 1, 1, 1, 0, 0]  # the original labels, before mixing


def test_odd_batch_with_mixing_is_refused_and_fine_without():
    odd = _batch(torch.randn(3, C), [0, 1, 2])
    with pytest.raises(ValueError, match="odd number.*even data.batch_size.*mixup_alpha=0 task.cutmix_alpha=0"):
        _step(_task(), odd)
    loss = _step(_task(mixup_alpha=0.0, cutmix_alpha=0.0), odd)
    assert loss.item() == pytest.approx(F.cross_entropy(odd["image"][:, 0, 0], odd["label"], label_smoothing=0.1).item(), rel=1e-5)


def test_majority_baseline_predicts_the_most_frequent_training_classes(tmp_path):
    task = _task()
    task.prior.update(torch.tensor([3, 3, 3, 1, 1, 0]))  # ranking 3, 1, 0, then the unseen 2, 4, 5 by index
    labels = [3, 1, 1, 5, 4, 2, 0, 3]
    (results,) = _trainer(tmp_path).test(task, dataloaders=DataLoader([_batch(torch.randn(8, C), labels)], batch_size=None),
                                         verbose=False)
    assert results["test/baseline/majority/top1"] == pytest.approx(100 * 2 / 8)
    assert results["test/baseline/majority/top5"] == pytest.approx(100 * 7 / 8)  # all but class 5


def test_evaluation_record_has_the_harness_shape():
    values = {"top1": 72.0, "top5": 100.0, "loss": 0.6, "num_images": 50.0,
              "baseline/majority/top1": 50.0, "baseline/majority/top5": 100.0}
    record = _task().evaluation_record(values, "val")
    assert record["result"]["top1"] == 72.0 and record["result"]["top5"] == 100.0 and record["result"]["num_images"] == 50
    assert "validation split" in record["result"]["protocol"]
    assert record["baselines"] == {"majority": {"num_images": 50, "top1": 50.0, "top5": 100.0}}
    assert record["test"] == {"num_images": 50, "top1": 72.0, "top5": 100.0, "loss": 0.6}
    assert ClassificationTask.selection_metric == ("val/top1", "max")
    assert [item.key for item in ClassificationTask.reported] == ["top1", "top5"]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="needs num_classes"):
        ClassificationTask(nn.Linear(2, 2), partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ValueError, match="mixup_mode"):
        _task(mixup_mode="cutmix")
    with pytest.raises(ValueError, match=r"\(B, 6\) logits"):
        _task()(torch.zeros(2, 3, 1, 4))


def test_one_epoch_on_lfw_with_a_tiny_vit(tmp_path):
    dm = ClassificationDataModule(source="lfw", image_size=32, batch_size=16, val_batch_size=50)
    backbone = ViT(img_size=32, patch_size=8, embed_dim=32, depth=1, head="classification", num_classes=2)
    task = ClassificationTask(backbone, partial(torch.optim.AdamW, lr=1e-3), num_grid_images=4)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 150 // 16  # drop_last: 9 even batches
    assert 0 <= trainer.callback_metrics["val/top1"] <= 100 and trainer.callback_metrics["val/num_images"] == 50
    (results,) = trainer.test(task, datamodule=dm, verbose=False)
    assert results["test/num_images"] == 50 and results["test/top5"] == 100.0
    assert results["test/baseline/majority/top1"] == 50.0  # balanced validation split
    assert (tmp_path / "images" / "val_latest.png").is_file()
