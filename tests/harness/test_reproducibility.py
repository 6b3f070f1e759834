"""Same seed, same machine: the same metrics bit for bit; a SIGKILLed run resumed from its last
checkpoint ends where an uninterrupted run ends."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

SMOKE = ("debug=smoke", "run_baselines=false", "trainer.max_epochs=3", "data.train_samples_per_epoch=16")


def _final(metrics: dict) -> tuple:
    selection = metrics["selection"]
    return (selection["final"]["psnr"], selection["final"]["ssim"], selection["final"]["loss"], selection["best"],
            metrics["test"]["psnr"], metrics["global_step"])


def test_same_seed_same_metrics_and_resume_after_sigkill(train, train_cmd, clean_env, metrics_of, tmp_path):
    first, second, killed = tmp_path / "a", tmp_path / "b", tmp_path / "killed"
    for run_dir in (first, second):
        result = train(*SMOKE, f"hydra.run.dir={run_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
    reference = metrics_of(first)
    assert reference["status"] == "completed" and reference["epochs"] == 3
    assert _final(metrics_of(second)) == _final(reference)

    # Slow the run down (more crops per epoch) so that it is still training when killed right
    # after the first epoch's checkpoint lands; the uninterrupted reference uses the same settings.
    slow = (*SMOKE[:-1], "data.train_samples_per_epoch=96")
    reference_dir = tmp_path / "uninterrupted"
    assert train(*slow, f"hydra.run.dir={reference_dir}").returncode == 0
    process = subprocess.Popen(train_cmd(*slow, f"hydra.run.dir={killed}"), cwd=ROOT, env=clean_env(None),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    sizes = [-1, -2]
    # Kill right after the first epoch's checkpoint is completely on disk (its size stopped
    # changing), so the run dies early in the second of its three epochs.
    while (sizes[-1] != sizes[-2] or sizes[-1] <= 0) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        sizes.append(last.stat().st_size if last.exists() else -1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert last.exists() and not (killed / "metrics.json").exists()
    # The checkpoint holds plain data only (loads with weights_only=True) and is an early epoch's.
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] < 2

    resumed = tmp_path / "resumed"
    result = train(*slow, f"ckpt_path={last}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _final(metrics_of(resumed)) == _final(metrics_of(reference_dir))
