"""Every command README prints is run by a test exactly as printed.

A test may only change the data path (`/data/imagenet` and `/data/datasetgan` become tiny datasets
written in the real layouts) or run from a temporary working directory. Commands that train at the
paper's scale (ViT-B/4 on ImageNet, 100 epochs) cannot finish on a CPU: they are run as printed until
training has started, then stopped with Ctrl-C, which must leave a `metrics.json` that records the
interruption. Paper-scale finetuning commands need their pretraining runs, which a CPU cannot make:
run as printed on a fresh machine they must stop before building anything, naming the command that
makes the pretraining run.
Long benchmarks are run as printed until they print their first measurement. Commands that another
test already runs exactly as printed are listed in ``COVERED`` with the test that runs them, and this
file checks that test still contains them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Commands that other tests run exactly as printed: command -> the test file that runs it.
COVERED = {
    "make test": None,  # the suite itself: CI and ../shared/tools/fresh-clone-check run it
    "python train.py": "the `make demo` test below (make demo runs exactly this)",
    "python train.py -m experiment=table2_inpainting debug=smoke": "tests/harness/test_experiments.py",
    "scripts/slurm_local.sh start": "tests/harness/test_slurm.py",
    "python train.py -m experiment=table2_inpainting debug=smoke hydra/launcher=slurm_local": "tests/harness/test_slurm.py",
    "python train.py -m debug=smoke trainer=ddp trainer.accelerator=cpu trainer.devices=2 hydra/launcher=slurm_local "
    "hydra.launcher.tasks_per_node=2": "tests/harness/test_slurm.py",
    "python scripts/readings_check.py": "tests/analysis/test_readings.py",
    "python train.py -m experiment=table3_fewshot debug=smoke": "tests/harness/test_experiments.py",
    "python train.py -m experiment=table5_classification debug=smoke": "tests/harness/test_experiments.py",
    "python train.py -m experiment=table4_pretrain debug=smoke": "tests/harness/test_experiments.py",
    "python train.py -m experiment=table4_cityscapes debug=smoke": "tests/harness/test_experiments.py",
    "make reproduce-all SCALE=smoke": "tests/harness/test_pipeline.py",
    "make reproduce-all SCALE=smoke ARGS=--dry-run": "tests/harness/test_pipeline.py",
    "python -m afno_repro.pipeline --scale smoke --only table3_fewshot --dry-run": "tests/harness/test_pipeline.py",
    "python -m afno_repro.pipeline --scale paper --imagenet /data/imagenet --datasetgan /data/datasetgan "
    "--cityscapes /data/cityscapes": "tests/harness/test_pipeline.py",
}
# Long benchmarks: run as printed until this pattern appears in their output (their first result).
FIRST_RESULT = {
    "python scripts/model_table.py --scaling": r"^\s*(afno|gfn|fno|attention)\b.*\d",
    "python scripts/benchmark_mixers.py": r"^k=\d+\s+\d",
    # Its first row's memory prediction (a meta-device trace) comes before any row is run.
    "python scripts/benchmark_segformer.py": r"^attention: predicted [\d.]+ GB",
}


def readme_commands() -> list[str]:
    """The commands README prints: lines of its shell code blocks and `python ...` / `make ...` code spans."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(line)
    for span in re.findall(r"`((?:python|make) [^`]+)`", README):
        if "<" not in span:  # `wandb sync <run dir>/...`-style templates are prose, not commands
            commands.append(span.strip())
    return list(dict.fromkeys(commands))


# The data folders README's paper-scale commands name, and the fixture each becomes.
DATA_ROOTS = ("/data/imagenet", "/data/datasetgan", "/data/cityscapes")


def _argv(command: str, data_root: Path | None = None) -> list[str]:
    words = command.split()
    if data_root:
        words = [word.replace(f"data.root={_root_of(command)}", f"data.root={data_root}") for word in words]
    if words[0] == "python":
        words = [sys.executable, str(ROOT / words[1]), *words[2:]]
    return words


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "HYDRA_FULL_ERROR")}


def test_the_commands_are_found():
    commands = readme_commands()
    assert "make demo" in commands and "python train.py -m experiment=table2_inpainting debug=smoke" in commands
    assert any("data.root=/data/imagenet" in c for c in commands)


@pytest.mark.parametrize("command", [c for c in readme_commands() if c in COVERED and COVERED[c] and COVERED[c].startswith("tests/")])
def test_covered_commands_are_run_by_their_tests(command):
    source = (ROOT / COVERED[command]).read_text()
    words = command.split()[1:] if command.startswith("python ") else command.split()
    script = words[0] if words and words[0].endswith(".py") else None
    if script:
        words = words[1:]
    for word in words:
        if word == "-m" and script == "train.py":  # the tests' train fixture spells it multirun=True
            assert "multirun=True" in source, (command, COVERED[command])
            continue
        assert f'"{word}"' in source or f"'{word}'" in source or word in source, (command, word, COVERED[command])


@pytest.mark.slow
def test_make_demo(tmp_path):
    """`make demo`, as printed: installs nothing new (the environment exists) and trains the demo."""
    result = subprocess.run(["make", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=900, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "masked input" in result.stdout and "biharmonic" in result.stdout and "afno" in result.stdout
    run_dir = Path(re.search(r"run directory: (\S+)", result.stdout).group(1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["result"]["num_images"] > 0


@pytest.mark.slow
def test_make_fewshot_demo():
    """`make fewshot-demo`, as printed (it runs `python train.py experiment=fewshot_demo`): in the
    repository root, where `make demo` has left the inpainting run it finetunes (made first if not),
    two runs, pretrained and from scratch, side by side in the summary."""
    result = subprocess.run(["make", "fewshot-demo"], cwd=ROOT, capture_output=True, text=True, timeout=1200, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = {Path(found) for found in re.findall(r"Sweep summary \(2 runs, (\S+)\):", result.stdout)}
    rows = json.loads((sweep_dir / "summary.json").read_text())
    by_init = {bool(r["init"]["checkpoint"]): r for r in rows}
    assert set(by_init) == {True, False} and all(r["status"] == "completed" for r in rows)
    assert by_init[True]["init"]["experiment"] is None and Path(by_init[True]["init"]["checkpoint"]).is_file()
    assert "pretrained (demo)" in result.stdout and "scratch" in result.stdout


def test_make_help():
    result = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "make demo" in result.stdout and "make test" in result.stdout
    # Every target README says `make help` lists is listed, with its one-line description.
    line = next(line for line in README.splitlines() if line.startswith("`make help` lists"))
    for target in re.findall(r"`([a-z-]+)`", line):
        assert re.search(rf"make {target} +\S", result.stdout), (target, result.stdout)


def _root_of(command: str) -> str | None:
    return next((root for root in DATA_ROOTS if f"data.root={root}" in command), None)


def _write_data(command: str, folder: Path, imagenet_writer) -> Path:
    if _root_of(command) == "/data/imagenet":
        # 3 classes x 44 = 132 training images: one full batch of the classification recipe's 128.
        return imagenet_writer(folder / "imagenet", train_per_class=44)
    if _root_of(command) == "/data/cityscapes":
        from layouts import write_cityscapes

        return write_cityscapes(folder / "cityscapes")
    from layouts import write_datasetgan

    for category in ("face", "car", "cat"):
        write_datasetgan(folder / "datasetgan", category=category)
    return folder / "datasetgan"


def _needs_pretraining(command: str) -> bool:
    return any(f"experiment={e}" in command.split() for e in NEEDS) and "pretrained=" not in command


# Finetuning experiments, and the pretraining experiment each needs.
NEEDS = {"table3_fewshot": "table2_inpainting", "table6_finetune": "table6_pretrain",
         "table4_cityscapes": "table4_pretrain", "fig1_trunks": "fig1_pretrain",
         "fig4_sparsity_finetune": "fig4_sparsity"}


PAPER_SCALE = [c for c in readme_commands() if _root_of(c) and not _needs_pretraining(c)]
FINETUNING = [c for c in readme_commands() if _root_of(c) and _needs_pretraining(c)]


@pytest.mark.parametrize("command", FINETUNING)
def test_paper_scale_finetuning_names_the_pretraining_it_needs(command, tmp_path, imagenet_writer):
    """Run as printed on a machine without the pretraining runs (data path: a tiny release in its layout): every
    row stops before building anything, with the command that makes its pretraining run."""
    data_root = _write_data(command, tmp_path, imagenet_writer)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(_argv(command, data_root), cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == (1 if " -m " in command else 2), result.stderr[-3000:]
    needed = next(pretraining for experiment, pretraining in NEEDS.items() if f"experiment={experiment}" in command.split())
    assert f"Make it first:\n  python train.py experiment={needed} paper_model=" in result.stderr
    assert "data.root=/path/to/imagenet" in result.stderr and "Traceback" not in result.stderr
    records = [json.loads(path.read_text()) for path in work.rglob("metrics.json")]
    assert records and all(r["status"] == "failed" and "pretraining run" in r["error"] for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("command", PAPER_SCALE)
def test_paper_scale_commands_start_training_and_stop_cleanly_on_ctrl_c(command, tmp_path, imagenet_writer,
                                                                        terminal_sigint):
    """Run as printed (data path: a tiny dataset in the real layout) until training starts, then Ctrl-C."""
    data_root = _write_data(command, tmp_path, imagenet_writer)
    work = tmp_path / "work"
    work.mkdir()
    process = subprocess.Popen(_argv(command, data_root), cwd=work, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               preexec_fn=terminal_sigint)
    lines, started, deadline = [], False, time.time() + 600
    try:
        for line in process.stdout:
            lines.append(line)
            # Lightning prints its layer table as fit starts.
            if "Trainable params" in line:
                started = True
                time.sleep(1.0)
                process.send_signal(signal.SIGINT)
                break
            if time.time() > deadline:
                break
        rest, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = "".join(lines) + rest
    assert started, output[-3000:]
    assert process.returncode == 130, output[-3000:]
    (metrics_file,) = list(work.rglob("metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "interrupted", metrics
    assert metrics["data"] in ("imagenet", "datasetgan/face") and metrics["image_size"] == 224 and metrics["paper_row"]
    assert "Traceback" not in output


SCRIPTS = [c for c in readme_commands() if c.startswith("python scripts/") and c not in COVERED]


@pytest.mark.slow
@pytest.mark.parametrize("command", SCRIPTS)
def test_script_commands(command):
    """Scripts run as printed: to the end, or for long benchmarks until their first measurement."""
    pattern = FIRST_RESULT.get(command)
    if pattern is None:
        result = subprocess.run(_argv(command), cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env())
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip()
        return
    # Its own process group: a benchmark's measuring child (benchmark_segformer forks one per row) goes too.
    process = subprocess.Popen(_argv(command), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if re.search(pattern, line):
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert re.search(pattern, seen[-1] if seen else ""), "".join(seen)[-3000:]


def test_every_command_has_a_test():
    tested = set(COVERED) | {"make demo", "make fewshot-demo", "make help"} | set(PAPER_SCALE) | set(FINETUNING) | set(SCRIPTS)
    assert set(readme_commands()) <= tested, sorted(set(readme_commands()) - tested)
