"""DDP on CPU (gloo, 2 processes), W&B offline by default with a CSV copy, the SLURM launcher config."""

from __future__ import annotations

import csv

import pytest


def test_two_process_ddp_on_cpu(train, tmp_path, metrics_of):
    run_dir = tmp_path / "ddp"
    result = train("debug=smoke", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   "run_baselines=false", f"hydra.run.dir={run_dir}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "completed" and metrics["final"]["psnr"] is not None


def test_wandb_offline_by_default_and_csv_always(train, tmp_path, metrics_of):
    run_dir = tmp_path / "wandb_run"
    result = train("debug=smoke", "logger=wandb", "run_baselines=false", "test_after_fit=true", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run was written"
    with open(run_dir / "csv" / "metrics.csv") as handle:
        columns = next(csv.reader(handle))
    assert "val/psnr" in columns and "train/loss" in columns
    metrics = metrics_of(run_dir)
    for key in ("params_m", "gflops", "seed", "git_commit", "experiment", "mixer", "final", "best"):
        assert key in metrics
    assert (run_dir / "images" / "val_latest.png").is_file()
    # test_after_fit evaluates the best checkpoint on the validation split with its fixed masks:
    # it must give back the best epoch's validation PSNR.
    assert abs(metrics["test"]["psnr"] - metrics["best"]["psnr"]) < 1e-4


def test_slurm_launcher_config(train):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = train("hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout and "tasks_per_node" in result.stdout


def test_bf16_mixed_precision_run(train, tmp_path, metrics_of):
    run_dir = tmp_path / "bf16"
    result = train("debug=smoke", "trainer.precision=bf16-mixed", "run_baselines=false", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    final = metrics_of(run_dir)["final"]
    assert final["psnr"] is not None and 0.5 < final["ssim"] <= 1
