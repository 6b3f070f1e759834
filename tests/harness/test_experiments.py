"""Every experiment config runs end to end under `debug=smoke` (same code path, CPU-minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afno_repro.config import CONFIG_DIR, compose, sweep_points
from afno_repro.runs import find_runs

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


# Each experiment's runs, and what its recipe must say (the paper's epochs, data and evaluation).
SWEEPS = {
    "table2_inpainting": 4, "table6_pretrain": 4, "fig4_sparsity": 6, "fig4_blocks": 7, "fig4_sparsity_finetune": 6,
    "table3_fewshot": 12, "table6_finetune": 4, "fewshot_demo": 2,
    "table5_classification": 4, "table4_pretrain": 5, "table4_cityscapes": 5, "fig1_pretrain": 12, "fig1_trunks": 15,
}


def test_experiments_are_the_papers():
    assert set(SWEEPS) == set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_point_composes_and_builds(experiment):
    """Each experiment's declared sweep, point by point, composes and instantiates its model."""
    import hydra.utils
    import torch

    points = sweep_points(experiment)
    assert len(points) == SWEEPS[experiment], f"{experiment} sweeps {len(points)} points: {points}"
    for point in points:
        cfg = compose([f"experiment={experiment}", *point])
        with torch.device("meta"):
            model = hydra.utils.instantiate(cfg.backbone)
        assert sum(p.numel() for p in model.parameters()) > 0
        if cfg.task._target_.endswith("InpaintingTask"):
            assert cfg.trainer.max_epochs == 100 and cfg.data.name == "imagenet"
        elif cfg.task._target_.endswith("ClassificationTask"):
            # A.5 (Table 5) and A.3 (the SegFormer pretraining): 300 epochs on ImageNet at 224, weight decay
            # 0.05, clipping 1.0, five epochs of warmup then cosine to 1e-5.
            assert cfg.trainer.max_epochs == 300 and cfg.data.source == "imagenet" and cfg.data.image_size == 224
            assert cfg.optimizer.weight_decay == 0.05 and cfg.trainer.gradient_clip_val == 1.0
            assert cfg.scheduler.warmup_t == 5 and cfg.scheduler.lr_min == 1e-5
            assert model.num_classes == 1000 and cfg.pretrained is None
            if experiment == "table5_classification":
                assert cfg.optimizer.lr == pytest.approx(5e-4 * cfg.data.batch_size / 512)  # one process here
            else:
                assert cfg.optimizer.lr == 1e-3 and cfg.backbone.mixer_img_size is None
        elif cfg.task._target_.endswith("SegmentationTask") and cfg.data.source == "cityscapes":
            # A.3: 450 epochs at lr 1.2e-4 on 1024x1024 crops of Cityscapes' 19 classes, from the ImageNet run.
            assert cfg.trainer.max_epochs == 450 and cfg.optimizer.lr == 1.2e-4
            assert cfg.data.image_size == 1024 and model.num_classes == 19
            swin = cfg.paper.row.startswith("swin")
            assert cfg.pretrained == (None if swin else "auto")
            if not swin:
                assert cfg.backbone.mixer_img_size == 224 and cfg.needs.pretrained.experiment.endswith("_pretrain")
        elif experiment != "fewshot_demo":
            # A.4: 2000 epochs, evaluated every 100, no weight decay, no clipping; the row's learning rate.
            assert cfg.trainer.max_epochs == 2000 and cfg.trainer.check_val_every_n_epoch == 100
            assert cfg.optimizer.weight_decay == 0 and cfg.trainer.gradient_clip_val is None
            assert cfg.optimizer.lr == (1e-4 if cfg.mixer.name == "attention" else 1e-3)
            assert cfg.data.source == "datasetgan" and cfg.data.image_size == 224
            assert model.num_classes == {"celeba_faces": 34, "ade_cars": 20, "lsun_cats": 16}[cfg.paper.column]
            assert cfg.pretrained == "auto" and cfg.task.selection == "max_over_run"


def test_smoke_figure1_trunks_keep_their_order_of_size():
    """debug=smoke shrinks every trunk, but each stays larger than the one below it (as README says), so the
    smoke Figure 1 plots curves rather than points on top of each other."""
    import hydra.utils
    import torch

    def params(point: str) -> int:
        cfg = compose(["experiment=fig1_trunks", f"paper_model=fig1/{point}", "debug=smoke"])
        with torch.device("meta"):
            return sum(p.numel() for p in hydra.utils.instantiate(cfg.backbone).parameters())

    for family in (["b0_afno", "b1_afno", "b2_afno", "b3_afno"], ["b0_gfn", "b1_gfn", "b2_gfn", "b3_gfn"],
                   ["swin_t", "swin_s", "swin_b"]):
        sizes = [params(point) for point in family]
        assert sizes == sorted(set(sizes)), dict(zip(family, sizes))


def test_fig4_blocks_holds_parameters_equal():
    """Figure 4's block sweep picks, for each k, the multiple of k whose model is closest in
    parameters to the k=4 width-584 model; up to 16 blocks that is within 1%. (From 32 blocks on, the
    width moves in steps of k channels, so the closest width can be a few percent off.)"""
    import hydra.utils
    import torch

    def count(k: int, width: int | None = None) -> int:
        extra = [f"backbone.embed_dim={width}"] if width else []
        cfg = compose(["experiment=fig4_blocks", f"mixer.num_blocks={k}", *extra])
        with torch.device("meta"):
            model = hydra.utils.instantiate(cfg.backbone)
        return sum(p.numel() for p in model.parameters())

    target = count(4, 584)
    for k in (1, 2, 4, 8, 16, 32, 64):
        width = compose(["experiment=fig4_blocks", f"mixer.num_blocks={k}"]).backbone.embed_dim
        assert width % k == 0
        gap = abs(count(k) - target)
        assert gap <= min(abs(count(k, width + k) - target), abs(count(k, width - k) - target))
        if k <= 16:
            assert gap / target < 0.01, (k, width, gap / target)


def _only_sweep(cwd: Path) -> Path:
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep_dir


def test_table2_smoke_sweep_as_readme_prints_it(train, tmp_path):
    """`python train.py -m experiment=table2_inpainting debug=smoke`, exactly as README prints it (from a
    temporary working directory): four rows, one metrics.json each, a summary naming the reading."""
    result = train("experiment=table2_inpainting", "debug=smoke", multirun=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = _only_sweep(tmp_path)
    assert sweep_dir.name.endswith("_table2_inpainting")
    rows = json.loads((sweep_dir / "summary.json").read_text())
    assert sorted(r["paper_row"] for r in rows) == sorted(f"table2/{m}" for m in ("attention", "long_short", "gfn", "afno"))
    for row in rows:
        assert row["status"] == "completed"
        assert row["experiment"] == "table2_inpainting"
        assert row["result"]["psnr"] is not None and 0 < row["result"]["psnr"] < 100
        assert 0 < row["result"]["ssim"] <= 1
        assert row["result"]["num_images"] == row["test"]["num_images"] > 0
        assert row["paper"]["psnr"] > 20  # the paper's number travels with the row
        assert {"masked_input", "biharmonic"} <= set(row["baselines"])
        assert row["baselines"]["biharmonic"]["num_images"] == row["test"]["num_images"]
        assert row["reading"]["mask"]["grid"] and row["reading"]["metric_region"]
    summary = (sweep_dir / "summary.md").read_text()
    assert "table2/afno" in summary and "grid" in summary

    # Table 3 builds on it: `python train.py -m experiment=table3_fewshot debug=smoke`, as README prints
    # it, finetunes each row from that row's run (pretrained=auto), on every paper column.
    result = train("experiment=table3_fewshot", "debug=smoke", multirun=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (fewshot_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*_table3_fewshot")
    rows = json.loads((fewshot_dir / "summary.json").read_text())
    pretraining = {r["paper_row"]: r for r in json.loads((sweep_dir / "summary.json").read_text())}
    assert len(rows) == 12
    assert {(r["paper_row"], r["paper_column"]) for r in rows} == {
        (f"table3/{m}", c) for m in ("attention", "long_short", "gfn", "afno")
        for c in ("celeba_faces", "ade_cars", "lsun_cats")}
    for row in rows:
        assert row["status"] == "completed" and row["task"] == "segmentation"
        source = pretraining[row["paper_row"].replace("table3", "table2")]
        assert row["init"]["how"] == "auto" and row["init"]["checkpoint"] == source["best_checkpoint"]
        assert row["trunk_hash"] == source["trunk_hash"]
        assert 0 <= row["result"]["miou"] <= 100 and row["result"]["num_images"] == row["test"]["num_images"] == 16
        # The paper's protocol: the test loop scores the checkpoint of the best evaluation.
        assert row["result"]["miou"] == pytest.approx(row["protocols"]["max_over_run"]["miou"], abs=1e-3)
        assert row["paper"]["miou"] > 20 and row["paper_keys"]["miou"].startswith("table3_fewshot_miou.")
        assert "pixel_prior" in row["baselines"] and len(row["test"]["per_class_iou"]) == 5
    summary = (fewshot_dir / "summary.md").read_text()
    assert "paper mIoU (%)" in summary and "table3/afno celeba_faces" in summary


# Table 6's pretrain -> finetune chain and Figure 4's full sweeps run in make reproduce-all SCALE=smoke
# (tests/harness/test_pipeline.py), which checks them.


def test_a_failed_row_is_recorded_and_the_sweep_goes_on(train, tmp_path):
    """`-m debug=smoke optimizer.lr=1e6,1e-3`: the first row's loss blows up; it is recorded as failed,
    the second row still runs, the summary lists both, and the sweep's exit status says a row failed."""
    result = train("debug=smoke", "optimizer.lr=1e6,1e-3", multirun=True, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    rows = json.loads((_only_sweep(tmp_path) / "summary.json").read_text())
    assert len(rows) == 2
    by_lr = {float(r["overrides"][-1].removeprefix("optimizer.lr=")): r for r in rows}
    assert by_lr[1e6]["status"].startswith("failed") and "non-finite" in by_lr[1e6]["status"]
    assert by_lr[1e-3]["status"] == "completed"
    assert "did not complete" in result.stderr
    assert "failed" in (_only_sweep(tmp_path) / "summary.md").read_text()


def test_table5_classification_smoke_sweep_as_readme_prints_it(train, tmp_path):
    """`python train.py -m experiment=table5_classification debug=smoke`, as README prints it: the four
    ViT-S/4 rows trained on the embedded LFW faces, top-1/top-5 beside the paper's and the majority class."""
    result = train("experiment=table5_classification", "debug=smoke", multirun=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = _only_sweep(tmp_path)
    rows = {r["paper_row"]: r for r in json.loads((sweep_dir / "summary.json").read_text())}
    assert sorted(rows) == sorted(f"table5/{m}" for m in ("attention", "long_short", "gfn", "afno"))
    for name, row in rows.items():
        assert row["status"] == "completed" and row["task"] == "classification" and row["data"] == "lfw"
        assert 0 <= row["result"]["top1"] <= row["result"]["top5"] <= 100
        assert row["result"]["num_images"] == row["test"]["num_images"] == 50
        assert row["baselines"]["majority"]["top1"] == 50.0  # LFW's validation images: 25 faces, 25 others
        # The paper prints LS, GFN and AFNO (not SA); no LFW run is comparable with ImageNet numbers.
        assert bool(row["paper"]) == (name != "table5/attention")
        assert row["comparable"].startswith("not comparable") if row["paper"] else True
    assert rows["table5/afno"]["paper"] == {"top1": 80.89, "top5": 95.39}
    summary = (sweep_dir / "summary.md").read_text()
    assert "top-1 (%)" in summary and "paper top-1 (%)" in summary and "majority" in summary


def test_table4_pretrain_then_cityscapes_smoke_sweeps(train, tmp_path):
    """Table 4's two halves as README prints them: the five SegFormer-B3 rows pretrained as classifiers
    (embedded LFW), then each finetuned on the embedded street scenes from its own run (pretrained=auto),
    scored with SegFormer's sliding window and with the paper's resized 1024x1024 reading (here 32x32)."""
    result = train("experiment=table4_pretrain", "debug=smoke", multirun=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    result = train("experiment=table4_cityscapes", "debug=smoke", multirun=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (pretrain_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*_table4_pretrain")
    (finetune_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*_table4_cityscapes")
    pretrained = {r["paper_row"]: r for r in json.loads((pretrain_dir / "summary.json").read_text())}
    rows = json.loads((finetune_dir / "summary.json").read_text())
    names = sorted(f"table4/{row}" for row in ("efficient_attention", "long_short", "gfn", "afno", "afno_25pct"))
    assert sorted(pretrained) == sorted(r["paper_row"] for r in rows) == names
    for row in rows:
        source = pretrained[row["paper_row"]]
        assert source["status"] == "completed" and source["task"] == "classification"
        assert row["status"] == "completed" and row["task"] == "cityscapes" and row["data"] == "embedded_streets"
        assert row["init"]["how"] == "auto" and row["init"]["checkpoint"] == source["best_checkpoint"]
        assert row["trunk_hash"] == source["trunk_hash"]
        assert 0 <= row["result"]["miou"] <= 100 and row["result"]["num_images"] == row["test"]["num_images"] > 0
        assert "slid" in row["reading"]["inference"] and row["test"]["inference"] == "slide"
        assert 0 <= row["test"]["extra_inference"]["resize"]["miou"] <= 100
        assert row["paper"]["miou"] > 79 and row["comparable"].startswith("not comparable")
        assert "pixel_prior" in row["baselines"]
    summary = (finetune_dir / "summary.md").read_text()
    assert "paper mIoU (%)" in summary and "table4/afno_25pct" in summary


def test_fig1_trunks_smoke_chain(train, tmp_path):
    """Figure 1's chain on one SegFormer trunk and one Swin trunk (each of its 27 points composes and
    builds above; the full smoke sweeps take minutes, README's "Measured here" has them): the B0 AFNO
    trunk pretrained, then finetuned from it; Swin-T from a classification checkpoint in the folder
    swin_checkpoints names, written here in timm's layout at the smoke size."""
    import timm
    import torch

    result = train("experiment=fig1_pretrain", "paper_model=fig1/b0_afno", "debug=smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    result = train("experiment=fig1_trunks", "paper_model=fig1/b0_afno", "debug=smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "swin"
    folder.mkdir()
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, embed_dim=16,
                             depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2)
    torch.save(swin.state_dict(), folder / "swin_tiny_patch4_window7_224.pth")
    result = train("experiment=fig1_trunks", "paper_model=fig1/swin_t", "debug=smoke", f"swin_checkpoints={folder}",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {r["paper_row"] + "/" + (r["task"] or ""): r for r in find_runs(tmp_path / "outputs")}
    pretrain, segformer, swin_run = runs["fig1/b0_afno/classification"], runs["fig1/b0_afno/cityscapes"], runs["fig1/swin_t/cityscapes"]
    assert segformer["init"]["checkpoint"] == pretrain["best_checkpoint"] and segformer["mixer"] == "afno"
    assert swin_run["init"]["checkpoint"] == str(folder / "swin_tiny_patch4_window7_224.pth")
    assert swin_run["mixer"] is None and swin_run["backbone"] == "swin_t" and swin_run["params_m"] > 0
    for run in (segformer, swin_run):
        assert run["status"] == "completed" and 0 <= run["result"]["miou"] <= 100
