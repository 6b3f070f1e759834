"""The demo's code path through the command line at smoke size (the fast tier's end-to-end run: W&B offline by
default with a CSV copy); DDP on CPU (gloo, 2 processes); the SLURM launcher config; bf16."""

from __future__ import annotations

import csv
import json
import logging

import pytest


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(train, tmp_path, metrics_of):
    """DDP on 2 CPU processes (gloo) with the defaults, baselines included: with the same weights (lr 0) and 5
    evaluation images (an uneven split over 2 ranks) every image is counted once, so the 2-process numbers
    are the 1-process numbers."""
    frozen = ("debug=smoke", "optimizer.lr=0", "scheduler=none", "trainer.max_epochs=1", "data.val_samples=5")
    runs = {}
    for devices in (1, 2):
        run_dir = tmp_path / f"devices{devices}"
        result = train(*frozen, "trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}",
                       f"hydra.run.dir={run_dir}", timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "sync_dist" not in result.stderr, "an epoch-level metric is logged without reduction over ranks"
        runs[devices] = metrics_of(run_dir)
    one, two = runs[1], runs[2]
    assert one["status"] == two["status"] == "completed"
    assert one["test"]["num_images"] == two["test"]["num_images"] == 5
    for key in ("psnr", "ssim", "masked_fraction"):
        assert abs(one["test"][key] - two["test"][key]) < 1e-5, key
    for name in ("masked_input", "biharmonic"):
        assert abs(one["baselines"][name]["psnr"] - two["baselines"][name]["psnr"]) < 1e-5, name
    assert one["selection"]["num_images"] == two["selection"]["num_images"]
    # The AFNO activity counts are summed over the processes: the same shares from the same 5 images.
    assert one["mixer_activity"]["num_images"] == two["mixer_activity"]["num_images"] == 5
    assert two["mixer_activity"]["spectrum_zeroed"] == pytest.approx(one["mixer_activity"]["spectrum_zeroed"], abs=1e-6)
    assert abs(one["selection"]["final"]["psnr"] - two["selection"]["final"]["psnr"]) < 1e-5


def test_the_demo_at_smoke_size_through_the_cli(train, tmp_path, metrics_of):
    """The fast tier's one end-to-end run: `python train.py` as the demo runs it (W&B logger, offline with no
    credentials, baselines on), shrunk by debug=smoke (which would switch to CSV logging: logger=wandb
    keeps the demo's). It prints the baselines table and its run folder, and leaves metrics.json, the
    checkpoints, the CSV log, the image grid and an offline W&B run there."""
    run_dir = tmp_path / "wandb_run"
    result = train("debug=smoke", "logger=wandb", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "masked input" in result.stdout and "biharmonic" in result.stdout and "afno" in result.stdout
    assert f"run directory: {run_dir}" in result.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run was written"
    with open(run_dir / "csv" / "metrics.csv") as handle:
        columns = next(csv.reader(handle))
    assert "val/psnr" in columns and "train/loss" in columns and "test/psnr" in columns
    metrics = metrics_of(run_dir)
    for key in ("params_m", "gflops", "seed", "git_commit", "experiment", "mixer", "selection", "test", "result",
                "versions", "reading"):
        assert key in metrics
    assert metrics["status"] == "completed" and metrics["result"]["num_images"] == metrics["test"]["num_images"] > 0
    assert {"masked_input", "biharmonic"} <= set(metrics["baselines"])
    for library in ("torch", "pytorch-lightning", "timm", "hydra-core", "torchmetrics"):
        assert metrics["versions"][library][0].isdigit()
    assert (run_dir / "images" / "val_latest.png").is_file()
    assert "Total FLOPs" not in result.stdout + result.stderr and "Total Flops" not in result.stdout + result.stderr


@pytest.mark.slow
def test_slurm_launcher_config(train):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = train("hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout and "tasks_per_node" in result.stdout


@pytest.mark.slow
def test_bf16_mixed_precision_run(tmp_path):
    """bf16 autocast trains and scores like fp32 (SSIM's Gaussian window once ran in bf16, 0.18 low); in process,
    as train.py's entry point calls it."""
    from afno_repro.config import compose
    from afno_repro.train import main

    results = {}
    for precision in ("32-true", "bf16-mixed"):
        record = main(compose(["debug=smoke", "run_baselines=false", f"trainer.precision={precision}"],
                              output_dir=str(tmp_path / precision)))
        assert record["status"] == "completed"
        assert record["precision"]["trainer"] == precision and "as given" in record["precision"]["rule"]
        results[precision] = record["test"]
    assert results["bf16-mixed"]["psnr"] is not None
    assert abs(results["bf16-mixed"]["ssim"] - results["32-true"]["ssim"]) < 0.03
    assert abs(results["bf16-mixed"]["psnr"] - results["32-true"]["psnr"]) < 1.0


@pytest.mark.slow
def test_a_compiled_run_records_its_compile_time_and_compiles_once_per_loop(tmp_path, caplog, monkeypatch):
    """task.compile=true through train.py's entry point, in process, on the demo's AFNO ViT at smoke size (2
    epochs of 2 steps, validation after each, the test loop on the selected checkpoint): metrics.json's
    `compile` holds the first training step's time, the next steps' median and the compilation between
    them, the log says it, and the whole run compiles one graph for each of training, validation and
    test. Dynamo's tracing alone (tests/graphs.py) stands in for Inductor, whose C++ code generation takes
    ~100 s for this model on 2 cores (README, "Measured here"); tests/mixers/test_compile.py checks
    Inductor's numbers."""
    from functools import partialmethod

    import torch
    from graphs import GraphCounter

    from afno_repro.config import compose
    from afno_repro.train import main

    counter = GraphCounter()
    monkeypatch.setattr(torch.nn.Module, "compile", partialmethod(torch.nn.Module.compile, backend=counter))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compiler"))  # not /tmp/torchinductor_<user>
    torch.compiler.reset()
    with caplog.at_level(logging.INFO, logger="afno_repro.tasks.base"):
        record = main(compose(["debug=smoke", "run_baselines=false", "count_flops=false", "task.compile=true"],
                              output_dir=str(tmp_path / "run")))
    torch.compiler.reset()
    assert record["status"] == "completed" and record["global_step"] == 4 and record["epochs"] == 2
    # Training; validation (no-grad mode inside fit); the test loop, whose inputs are inference tensors
    # (Lightning's standalone loops run in inference mode), which guard apart. 4 steps, 2 validations: none per step.
    assert len(counter.graphs) == 3, f"{len(counter.graphs)} graphs where training, validation and test take one each"
    timing = json.loads((tmp_path / "run" / "metrics.json").read_text())["compile"]
    assert timing == record["compile"] and timing["steps_timed"] == 4
    assert timing["compile_s"] > timing["step_s"] > 0
    messages = [r.getMessage() for r in caplog.records if "compiled the backbone" in r.getMessage()]
    assert messages == [f"compiled the backbone in {timing['compile_s']:.1f} s (first training step "
                        f"{timing['first_step_s']:.1f} s, median of the next 3 {timing['step_s']:.3f} s)"]


def test_the_slurm_launcher_without_slurm_commands_is_refused_before_any_job(monkeypatch, tmp_path, capsys):
    """Without sbatch/srun on PATH, submitit's answer was a traceback per sweep, and the pipeline then said to run
    the same command again."""
    import shutil

    from omegaconf import OmegaConf

    from afno_repro.pipeline import main as pipeline_main
    from afno_repro.slurm import SlurmJobStates

    monkeypatch.setattr(shutil, "which", lambda command: None)
    monkeypatch.chdir(tmp_path)
    launcher = {"hydra": {"launcher": {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}}}
    with pytest.raises(SystemExit) as exit_info:
        SlurmJobStates().on_multirun_start(OmegaConf.create(launcher))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "error: hydra/launcher=slurm submits each run with sbatch, but sbatch and srun" in err
    assert pipeline_main(["--scale", "smoke", "--only", "table2_inpainting", "--launcher", "slurm"]) == 2
    assert "sbatch and srun are not on PATH here" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_a_run_of_a_new_untracked_mixer_is_recorded_dirty(tmp_path):
    """A new mixer's module and YAML are untracked until committed: a run of it is not the commit alone."""
    import subprocess

    from afno_repro.runs.record import _git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "a")
    clean = _git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "run.log").write_text("")  # run artefacts are not code
    assert _git_commit(tmp_path) == clean
    (tmp_path / "configs" / "mixer").mkdir(parents=True)
    (tmp_path / "configs" / "mixer" / "pool.yaml").write_text("name: pool\n")
    assert _git_commit(tmp_path) == f"{clean}-dirty"
    assert _git_commit(tmp_path / "outputs" / "nowhere") == "unknown"
