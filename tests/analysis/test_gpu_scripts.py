"""The GPU check and the GPU benchmarks, run as README prints them.

On a machine without a GPU (CI, this project's developers' machines) the GPU commands must stop at once
with a message that says so; the CPU rehearsal of the GPU check runs the same code path at toy size and
must write one JSON holding every section it ran. On a machine with a GPU the GPU commands run for real.
"""

import json
import subprocess

import pytest
import torch
from readme import argv, user_env

GPU = torch.cuda.is_available()
GPU_COMMANDS = (
    "python scripts/gpu_check.py --out gpu_check.json",
    "make gpu-check",
    "python scripts/benchmark_mixers.py --device cuda --batch 16",
    "python scripts/benchmark_training.py --device cuda",
)


@pytest.mark.slow
@pytest.mark.parametrize("command", GPU_COMMANDS)
def test_gpu_commands(command, tmp_path):
    result = subprocess.run(argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=900, env=user_env())
    if GPU:
        assert result.returncode == 0, result.stderr[-3000:]
        return
    assert result.returncode != 0
    assert "no CUDA GPU" in result.stderr and "--device cpu" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.json")), "nothing is measured, so nothing is written"


@pytest.mark.slow
def test_gpu_check_rehearsal_on_a_cpu_writes_every_section(tmp_path):
    command = "python scripts/gpu_check.py --device cpu --smoke --skip sweep compiled --out gpu_check.json"
    result = subprocess.run(argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=900, env=user_env())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(report["seconds"]) == {"mixers", "profile", "training", "train_py", "widths"}
    assert "sweep" not in report and "compiled" not in report
    # The mixer benchmark in both float32 matmul precisions, every case checked against the reference.
    for precision in ("highest", "high"):
        mixers = report["mixers"][precision]
        assert mixers["exit_status"] == 0 and mixers["matmul_precision"] == precision
        cases = {row["case"] for row in mixers["rows"]}
        assert {"k=8", "k=1", "k=8 bf16 autocast", "k=1 bf16 autocast"} <= cases
        assert all(row["ok"] and row["ours_ms"] > 0 and row["ref_ms"] > 0 for row in mixers["rows"])
        # physicsnemo's layer joins exactly where its extra is installed, and the JSON says which.
        assert mixers["physicsnemo"] == report["physicsnemo"]
        assert any("physicsnemo_ms" in row for row in mixers["rows"]) == (report["physicsnemo"] is not None)
    assert {"bf16 autocast", "float32"} == set(report["profile"]["tables"])
    # The FFT scaling's two places, each timed in both precisions.
    for timings in report["profile"]["fft_scaling_ms"].values():
        assert set(timings) == {"folded into the layout copies", "in the FFTs"} and min(timings.values()) > 0
    # One training step per AFNO row of Tables 2, 4 and 5 (debug=smoke), with its FLOPs and rate.
    training = report["training"]
    assert training["exit_status"] == 0 and training["precision"]["trainer"] == "32-true"
    experiments = {row["experiment"] for row in training["rows"]}
    assert experiments == {"table2_inpainting", "table5_classification", "table4_cityscapes"}
    for row in training["rows"]:
        assert "afno" in " ".join(row["overrides"]) and "debug=smoke" in row["overrides"]
        assert row["eager"]["images_per_s"] > 0 and row["forward_gmacs_per_image"] > 0
        assert row["eager"]["saved_for_backward_gib"] > 0
        assert row["eager"]["batch"] == row["configured_batch"]
    # Table 2's AFNO width: the MLP at three widths, the k=1 mixer at two, the row's step at its width and the other.
    widths = report["widths"]
    assert set(widths["mlp_tflops"]) == {"62", "64", "66"} and min(widths["mlp_tflops"].values()) > 0
    assert set(widths["mixer_k1_ms"]) == {"62", "64"} and min(widths["mixer_k1_ms"].values()) > 0
    steps = widths["training"]
    assert set(steps) == {"configured", "backbone.embed_dim=66"}
    for run in steps.values():
        assert run["exit_status"] == 0 and len(run["rows"]) == 1
        assert run["rows"][0]["eager"]["images_per_s"] > 0
    assert steps["backbone.embed_dim=66"]["rows"][0]["overrides"][-1] == "backbone.embed_dim=66"
    wider, configured = (steps[label]["rows"][0]["forward_gmacs_per_image"] for label in ("backbone.embed_dim=66", "configured"))
    assert wider > configured
    # train.py itself, twice: the step time comes from the steps each run recorded.
    train_py = report["train_py"]
    assert [(run["status"], run["global_step"]) for run in train_py["runs"]] == [("completed", 2), ("completed", 4)]
    # At toy size the step is shorter than start-up noise: a number only where the difference is positive.
    if train_py["step_s"] is None:
        assert "not measured" in train_py["note"]
    else:
        assert train_py["step_s"] > 0 and train_py["images_per_s"] == pytest.approx(train_py["batch"] / train_py["step_s"])
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())
