"""Every experiment config runs end to end under `debug=smoke` (same code path, CPU-minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afno_repro.config import CONFIG_DIR, compose, sweep_points

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_experiments_are_the_papers():
    assert {"table2_inpainting", "table6_pretrain", "fig4_sparsity", "fig4_blocks"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_point_composes_and_builds(experiment):
    """Each experiment's declared sweep, point by point, composes and instantiates its model."""
    import hydra.utils
    import torch

    points = sweep_points(experiment)
    assert 4 <= len(points) <= 7, f"{experiment} sweeps {len(points)} points: {points}"
    for point in points:
        cfg = compose([f"experiment={experiment}", *point])
        with torch.device("meta"):
            model = hydra.utils.instantiate(cfg.backbone)
        assert sum(p.numel() for p in model.parameters()) > 0
        assert cfg.trainer.max_epochs == 100 and cfg.data.name == "imagenet"


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


@pytest.mark.parametrize("experiment,sweep", [
    ("table6_pretrain", None),
    ("fig4_sparsity", "mixer.sparsity_threshold=0,10"),
    ("fig4_blocks", "mixer.num_blocks=1,64"),
])
def test_ablation_smoke_sweeps(train, tmp_path, experiment, sweep):
    extra = [sweep] if sweep else []
    result = train(f"experiment={experiment}", "debug=smoke", "run_baselines=false", *extra, multirun=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((_only_sweep(tmp_path) / "summary.json").read_text())
    assert len(rows) == (4 if sweep is None else 2)
    assert all(r["status"] == "completed" and r["result"]["psnr"] is not None for r in rows)
    if sweep is None:
        assert sorted(r["paper_row"] for r in rows) == sorted(f"table6/{row}" for row in
                                                              ("fno", "afno_static", "afno_hard35", "afno"))


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
