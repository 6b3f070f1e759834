"""The global batch as a declared quantity: the plan on any hardware, what a run records, and Table 4's
AFNO-25% finetuning the plain AFNO pretraining run (Section 5.3 truncates during finetuning)."""

import json

import pytest

from afno_repro.batch import batch_plan, world_size
from afno_repro.config import compose


@pytest.mark.parametrize("per_device, world, expected", [
    (128, 1, (128, 8)),    # A.3's 1024 on one device: 8 micro-batches of 128
    (128, 8, (128, 1)),    # on 8 devices: the paper's own 8 x 128
    (128, 16, (64, 1)),    # more devices than needed: each takes its share
    (96, 1, (64, 16)),     # 11 steps of 96 would not divide 1024: the fewest steps that do, of what fits
    (100, 2, (64, 8)),
    (100, 3, None),        # 1024 does not divide over 3 processes
])
def test_a_declared_global_batch_is_reached_or_refused(per_device, world, expected):
    if expected is None:
        with pytest.raises(ValueError, match="does not divide over 3 process"):
            batch_plan(per_device, world, 1024)
        return
    plan = batch_plan(per_device, world, 1024)
    assert (plan["per_device"], plan["accumulation"]) == expected
    assert plan["per_device"] * plan["world"] * plan["accumulation"] == plan["effective_global"] == 1024


def test_segformers_eight_crops_stay_eight_on_four_gpus():
    plan = batch_plan(8, 4, 8)
    assert (plan["per_device"], plan["accumulation"], plan["effective_global"]) == (2, 1, 8)


def test_without_a_declaration_the_run_is_as_configured_and_says_so():
    plan = batch_plan(64, 2, None, 3)
    assert plan["effective_global"] == 384 and plan["declared_global"] is None and "as configured" in plan["rule"]


def test_a_declaration_and_an_accumulation_override_conflict():
    with pytest.raises(ValueError, match="global_batch=1024 and trainer.accumulate_grad_batches=4"):
        batch_plan(128, 1, 1024, 4)


def test_world_size_counts_devices_and_nodes():
    assert world_size("cpu", 1) == 1 and world_size("gpu", 4, 2) == 8 and world_size("cpu", "auto") == 1


def test_the_pretraining_recipes_declare_a3s_batch():
    from afno_repro.train import _batch_plan

    for overrides in (["experiment=table4_pretrain", "paper_model=table4/afno"], ["experiment=fig1_pretrain"]):
        plan = _batch_plan(compose(overrides))
        assert (plan["per_device"], plan["accumulation"], plan["declared_global"]) == (128, 8, 1024)
        plan = _batch_plan(compose([*overrides, "trainer.accelerator=cpu", "trainer.devices=8"]))
        assert (plan["per_device"], plan["accumulation"]) == (128, 1)


def test_a_run_trains_and_records_the_declared_global_batch(tmp_path):
    """In process, as train.py calls it: 8 images per step from micro-batches of 4."""
    from afno_repro.train import main

    record = main(compose(["debug=smoke", "global_batch=8", "run_baselines=false", "count_flops=false",
                           "data.train_samples_per_epoch=16"], output_dir=str(tmp_path / "run")))
    assert record["status"] == "completed"
    assert {k: record["batch"][k] for k in ("per_device", "accumulation", "effective_global", "declared_global")} == {
        "per_device": 4, "accumulation": 2, "effective_global": 8, "declared_global": 8}
    assert record["global_step"] == record["epochs"] * 16 // 8  # optimizer steps, not micro-batches
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["batch"]["lr"] == record["batch"]["lr"] > 0


def test_afno_25pct_finetunes_the_plain_afno_pretraining_run():
    from afno_repro.pretrained import _match, pretraining_command
    from afno_repro.runs import trunk_hash

    finetune = compose(["experiment=table4_cityscapes", "paper_model=table4/afno_25pct"])
    assert finetune.mixer.hard_thresholding_fraction == 0.25
    plain = compose(["experiment=table4_pretrain", "paper_model=table4/afno"])
    match = _match(finetune, dict(finetune.needs.pretrained))
    assert match["paper_row"] == "table4/afno" and match["trunk_hash"] == trunk_hash(plain.backbone)
    assert match["trunk_hash"] != trunk_hash(finetune.backbone)  # the 25% trunk itself is never pretrained
    assert "paper_model=table4/afno" in pretraining_command(finetune, dict(finetune.needs.pretrained), [])
