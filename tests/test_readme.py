"""Every command README prints is run by a test exactly as printed (tests/readme.py says how).

Here: `make demo` and `make fewshot-demo` (from one temporary folder, the second finetuning the first's
run), the smoke sweeps of Tables 2-5, the paper-scale commands and the scripts. Commands that train at
the paper's scale (ViT-B/4 on ImageNet, 100 epochs) cannot finish on a CPU: they are run as printed on
tiny datasets in the real layouts until training has started, then stopped with Ctrl-C. Paper-scale
finetuning commands need their pretraining runs, which a CPU cannot make: run as printed on a fresh
machine they must stop before building anything, naming the command that makes the pretraining run.
Long benchmarks are run as printed until they print their first measurement. Other commands are run
by the test that needs their result (the pipeline's in tests/harness/test_pipeline.py, the Slurm
launcher's in tests/harness/test_slurm.py, the readings check in tests/analysis/test_readings.py).
The last test of the session checks that every README command was run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import background
from readme import (README, RAN, SKIPPED, argv, data_roots_of, readme_commands, record, run_until_training_starts,
                    user_env)

# The suite cannot run the commands that run it: CI runs `make test-all` (.ci/run), and `make test` runs
# a selection of the same tests.
RUN_OUTSIDE = {"make test", "make test-all"}

# Finetuning experiments, and the pretraining experiment each needs.
NEEDS = {"table3_fewshot": "table2_inpainting", "table6_finetune": "table6_pretrain",
         "table4_cityscapes": "table4_pretrain", "fig1_trunks": "fig1_pretrain",
         "fig4_sparsity_finetune": "fig4_sparsity"}

# The scripts README prints, and for a long benchmark the pattern of its first result (it is stopped there).
SCRIPTS = {
    "python scripts/model_table.py": None,
    "python scripts/model_table.py --scaling": r"^\s*(afno|gfn|fno|attention)\b.*\d",
    "python scripts/benchmark_mixers.py": r"^k=\d+\s+\d",
    "python scripts/benchmark_mixers.py --threads 1 --repeats 5": r"^k=\d+\s+\d",
    "python scripts/benchmark_masks.py": r"^\S.*\s[\d,]+\s+[\d,]+\s+0\.\d{4}$",  # its first row: masks/s, masked fraction
    # Its first row's memory prediction (a meta-device trace) comes before any row is run.
    "python scripts/benchmark_segformer.py": r"^attention: predicted [\d.]+ GB",
    # Its first row: SegFormer-B3's forward pass on one 1024 crop.
    "python scripts/benchmark_scoring.py": r"^cityscapes\s+forward: .*\d+\.\d{3}\s+\d+\.\d{2}\s+1\.000$",
    # Their first row's activations at the paper's size (one forward pass of ViT-B/4 at 224).
    "python scripts/benchmark_training.py --memory-only --experiments table2_inpainting table5_classification":
        r"^table2_inpainting\s+paper_model=table2/attention\s+1\s.*\s\d+\.\d+\s",
    "python scripts/benchmark_training.py --memory-only --experiments table2_inpainting table5_classification "
    "--rows long_short --override mixer.recompute=false":
        r"^table2_inpainting\s+paper_model=table2/long_short mixer\.rec\S*\s+1\s.*\s\d+\.\d+\s",
}


def test_the_commands_are_found():
    commands = readme_commands()
    assert "make demo" in commands and "python train.py -m experiment=table2_inpainting debug=smoke" in commands
    assert any("data.root=/data/imagenet" in c for c in commands)
    assert set(SCRIPTS) <= set(commands)


def test_the_mixers_readme_lists_are_the_registered_ones():
    from afno_repro.mixers import list_mixers

    listed = re.search(r"Each is one `mixer=<name>`: (.*?) \(`configs/mixer/`", README, re.DOTALL).group(1)
    assert sorted(re.findall(r"`(\w+)`", listed)) == list_mixers()

def test_make_help(tmp_path):
    result = subprocess.run(argv("make help"), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "make demo" in result.stdout and "make test" in result.stdout
    # Every target README says `make help` lists is listed, with its one-line description.
    line = next(line for line in README.splitlines() if line.startswith("`make help` lists"))
    for target in re.findall(r"`([a-z-]+)`", line):
        assert re.search(rf"make {target} +\S", result.stdout), (target, result.stdout)


# --- make demo, then make fewshot-demo on its run --------------------------------------------------

@background.job("demo")
def _demo(tmp_path_factory) -> dict:
    """`make demo`, as printed, from a fresh folder (the environment exists, so it installs nothing)."""
    cwd = tmp_path_factory.mktemp("demo")
    result = subprocess.run(argv("make demo"), cwd=cwd, capture_output=True, text=True, timeout=900, env=user_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return {"cwd": cwd, "result": result}


@background.job("fewshot_demo")
def _fewshot_demo(tmp_path_factory) -> subprocess.CompletedProcess:
    """`make fewshot-demo`, as printed, where `make demo` left its run."""
    demo = background.result("demo", tmp_path_factory)
    return subprocess.run(argv("make fewshot-demo"), cwd=demo["cwd"], capture_output=True, text=True, timeout=900,
                          env=user_env())


demo = background.fixture("demo")
fewshot_demo = background.fixture("fewshot_demo")


@pytest.mark.slow
def test_make_demo(demo):
    result = demo["result"]
    # make echoes what it runs: `python train.py` with no arguments, README's other name for the demo.
    assert re.search(r"^\S*/python \S*/train\.py$", result.stdout, re.MULTILINE), result.stdout[:2000]
    record("python train.py")
    assert "masked input" in result.stdout and "biharmonic" in result.stdout and "afno" in result.stdout
    run_dir = Path(re.search(r"run directory: (\S+)", result.stdout).group(1))
    assert run_dir.is_relative_to(demo["cwd"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["result"]["num_images"] > 0
    assert metrics["data"] == "skimage"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "images" / "val_latest.png").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*")), "the demo's W&B run (offline) is missing"


@pytest.mark.slow
def test_make_fewshot_demo_finetunes_the_demos_run(demo, fewshot_demo):
    """`make fewshot-demo`, as printed, where `make demo` left its run: it finetunes that run (it does not
    make another) and trains the same model from scratch; both side by side in the summary."""
    result = fewshot_demo
    assert result.returncode == 0, result.stderr[-3000:]
    demo_dir = Path(re.search(r"run directory: (\S+)", demo["result"].stdout).group(1))
    demo_best = json.loads((demo_dir / "metrics.json").read_text())["best_checkpoint"]
    assert "No pretraining run found" not in result.stdout
    (sweep_dir,) = {demo["cwd"] / found for found in re.findall(r"Sweep summary \(2 runs, (\S+)\):", result.stdout)}
    rows = json.loads((sweep_dir / "summary.json").read_text())
    by_init = {bool(r["init"]["checkpoint"]): r for r in rows}
    assert set(by_init) == {True, False} and all(r["status"] == "completed" for r in rows)
    assert by_init[True]["init"]["checkpoint"] == demo_best and by_init[False]["init"]["how"] == "from scratch"
    assert "pretrained (demo)" in result.stdout and "scratch" in result.stdout


# --- the smoke sweeps README prints -------------------------------------------------------------------

def _sweep(cwd: Path, experiment: str) -> tuple[Path, list[dict]]:
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob(f"*/*_{experiment}")
    return sweep_dir, json.loads((sweep_dir / "summary.json").read_text())


@pytest.mark.slow
def test_table2_smoke_sweep(table2_smoke):
    """`python train.py -m experiment=table2_inpainting debug=smoke` (the session's table2_smoke fixture
    runs it as printed): four rows, one metrics.json each, a summary naming the reading."""
    sweep_dir = table2_smoke["sweep_dir"]
    assert sweep_dir.name.endswith("_table2_inpainting")
    rows = table2_smoke["rows"]
    assert sorted(rows) == sorted(f"table2/{m}" for m in ("attention", "long_short", "gfn", "afno"))
    for row in rows.values():
        assert row["status"] == "completed" and row["experiment"] == "table2_inpainting"
        assert row["result"]["psnr"] is not None and 0 < row["result"]["psnr"] < 100
        assert 0 < row["result"]["ssim"] <= 1
        assert row["result"]["num_images"] == row["test"]["num_images"] > 0
        assert row["paper"]["psnr"] > 20  # the paper's number travels with the row
        assert {"masked_input", "biharmonic"} <= set(row["baselines"])
        assert row["baselines"]["biharmonic"]["num_images"] == row["test"]["num_images"]
        assert row["reading"]["mask"]["grid"] and row["reading"]["metric_region"]
    # Same images, same masks: the first row solved the biharmonic fills, the other three read them back.
    caches = [row["baselines"]["biharmonic"]["fill_cache"] for row in rows.values()]
    solved = sorted(cache["computed"] for cache in caches)
    assert solved[:3] == [0, 0, 0] and solved[3] > 0, caches
    assert all(cache["read"] + cache["computed"] == solved[3] for cache in caches), caches
    summary = (sweep_dir / "summary.md").read_text()
    assert "table2/afno" in summary and "grid" in summary


def _readme_sweep(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv(command), cwd=cwd, capture_output=True, text=True, timeout=900, env=user_env())


@background.job("table3_smoke")
def _table3_smoke(tmp_path_factory) -> subprocess.CompletedProcess:
    """`python train.py -m experiment=table3_fewshot debug=smoke`, as printed, where the Table 2 smoke sweep ran."""
    return _readme_sweep("python train.py -m experiment=table3_fewshot debug=smoke",
                         background.result("table2_smoke", tmp_path_factory)["cwd"])


@background.job("table5_smoke")
def _table5_smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`python train.py -m experiment=table5_classification debug=smoke`, as printed, from a fresh folder."""
    cwd = tmp_path_factory.mktemp("table5_smoke")
    return _readme_sweep("python train.py -m experiment=table5_classification debug=smoke", cwd), cwd


@background.job("table4_smoke")
def _table4_smoke(tmp_path_factory) -> tuple[list[subprocess.CompletedProcess], Path]:
    """Table 4's two smoke sweeps, as printed, one after the other from one fresh folder."""
    cwd = tmp_path_factory.mktemp("table4_smoke")
    results = []
    for command in ("python train.py -m experiment=table4_pretrain debug=smoke",
                    "python train.py -m experiment=table4_cityscapes debug=smoke"):
        results.append(_readme_sweep(command, cwd))
        if results[-1].returncode != 0:
            break
    return results, cwd


table3_smoke = background.fixture("table3_smoke")
table5_smoke = background.fixture("table5_smoke")
table4_smoke = background.fixture("table4_smoke")


@pytest.mark.slow
def test_table3_smoke_sweep_finetunes_each_row_from_its_own_run(table2_smoke, table3_smoke):
    """`python train.py -m experiment=table3_fewshot debug=smoke`, as printed, where the Table 2 smoke sweep
    ran: each row finetuned from that row's run (pretrained=auto). Under debug=smoke every paper column
    reads the same embedded shapes, so the smoke sweep trains one column (the paper-scale sweep, all three)."""
    cwd, result = table2_smoke["cwd"], table3_smoke
    assert result.returncode == 0, result.stderr[-3000:]
    fewshot_dir, rows = _sweep(cwd, "table3_fewshot")
    pretraining = table2_smoke["rows"]
    assert sorted((r["paper_row"], r["paper_column"]) for r in rows) == sorted(
        (f"table3/{m}", "celeba_faces") for m in ("attention", "long_short", "gfn", "afno"))
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
    assert "paper mIoU (%)" in summary and "table3/afno" in summary


@pytest.mark.slow
def test_table5_classification_smoke_sweep(table5_smoke):
    """`python train.py -m experiment=table5_classification debug=smoke`, as printed: the four ViT-S/4 rows
    trained on the embedded LFW faces, top-1/top-5 beside the paper's and the majority class."""
    result, cwd = table5_smoke
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir, rows = _sweep(cwd, "table5_classification")
    rows = {r["paper_row"]: r for r in rows}
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


@pytest.mark.slow
def test_table4_pretrain_then_cityscapes_smoke_sweeps(table4_smoke):
    """Table 4's two halves as README prints them: four SegFormer-B3 rows pretrained as classifiers
    (embedded LFW), then five finetuned on the embedded street scenes from their runs (pretrained=auto;
    AFNO-25% from the AFNO run),
    scored with SegFormer's sliding window and with the paper's resized 1024x1024 reading (here 32x32)."""
    results, cwd = table4_smoke
    assert len(results) == 2 and all(result.returncode == 0 for result in results), results[-1].stderr[-3000:]
    pretrained = {r["paper_row"]: r for r in _sweep(cwd, "table4_pretrain")[1]}
    finetune_dir, rows = _sweep(cwd, "table4_cityscapes")
    names = sorted(f"table4/{row}" for row in ("efficient_attention", "long_short", "gfn", "afno"))
    assert sorted(pretrained) == names and sorted(r["paper_row"] for r in rows) == sorted([*names, "table4/afno_25pct"])
    for row in rows:
        # Section 5.3 truncates during finetuning: AFNO-25% starts from the plain AFNO trunk.
        source = pretrained["table4/afno" if row["paper_row"] == "table4/afno_25pct" else row["paper_row"]]
        assert source["status"] == "completed" and source["task"] == "classification"
        assert row["status"] == "completed" and row["task"] == "cityscapes" and row["data"] == "embedded_streets"
        assert row["init"]["how"] == "auto" and row["init"]["checkpoint"] == source["best_checkpoint"]
        assert row["init"]["paper_row"] == source["paper_row"]
        assert (row["trunk_hash"] == source["trunk_hash"]) == (row["paper_row"] != "table4/afno_25pct")
        assert 0 <= row["result"]["miou"] <= 100 and row["result"]["num_images"] == row["test"]["num_images"] > 0
        assert "slid" in row["reading"]["inference"] and row["test"]["inference"] == "slide"
        assert 0 <= row["test"]["extra_inference"]["resize"]["miou"] <= 100
        assert row["paper"]["miou"] > 79 and row["comparable"].startswith("not comparable")
        assert "pixel_prior" in row["baselines"]
    summary = (finetune_dir / "summary.md").read_text()
    assert "paper mIoU (%)" in summary and "table4/afno_25pct" in summary


# --- the paper-scale commands, on tiny datasets in the real layouts ---------------------------------

def _finetunes(command: str) -> bool:
    return any(f"experiment={e}" in command.split() for e in NEEDS) and "pretrained=" not in command


TRAINING = [c for c in readme_commands() if c.startswith("python train.py") and data_roots_of(c)]
PAPER_SCALE = [c for c in TRAINING if not _finetunes(c)]
FINETUNING = [c for c in TRAINING if _finetunes(c)]


def _concurrently(commands: list[str], run_one) -> dict[str, Any]:
    """``run_one(command)`` for every command, two at a time: each run spends most of its seconds starting
    Python and importing on one core, so two side by side take about the time of one on this 2-core machine."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(commands, pool.map(run_one, commands)))


@pytest.fixture(scope="module")
def finetuning_runs(paper_data, tmp_path_factory) -> dict[str, Any]:
    def run_one(command: str) -> tuple[subprocess.CompletedProcess, Path]:
        work = tmp_path_factory.mktemp("finetune")
        result = subprocess.run(argv(command, paper_data), cwd=work, env=user_env(), capture_output=True, text=True,
                                timeout=600)
        return result, work

    return _concurrently(FINETUNING, run_one)


@pytest.mark.slow
@pytest.mark.parametrize("command", FINETUNING)
def test_paper_scale_finetuning_names_the_pretraining_it_needs(command, finetuning_runs):
    """Run as printed on a machine without the pretraining runs (data path: a tiny release in its layout): every
    row stops before building anything, with the command that makes its pretraining run."""
    result, work = finetuning_runs[command]
    assert result.returncode == (1 if " -m " in command else 2), result.stderr[-3000:]
    needed = next(pretraining for experiment, pretraining in NEEDS.items() if f"experiment={experiment}" in command.split())
    assert f"Make it first:\n  python train.py experiment={needed} paper_model=" in result.stderr
    assert "data.root=/path/to/imagenet" in result.stderr and "Traceback" not in result.stderr
    records = [json.loads(path.read_text()) for path in work.rglob("metrics.json")]
    assert records and all(r["status"] == "failed" and "pretraining run" in r["error"] for r in records)


@pytest.fixture(scope="module")
def paper_scale_runs(paper_data, tmp_path_factory, terminal_sigint) -> dict[str, Any]:
    """Each paper-scale command run as printed until Lightning prints its layer table (training starts), then
    stopped with Ctrl-C."""

    def run_one(command: str) -> tuple[bool, int, str, Path]:
        work = tmp_path_factory.mktemp("paper_scale")
        return (*run_until_training_starts(argv(command, paper_data), work, user_env(), terminal_sigint), work)

    return _concurrently(PAPER_SCALE, run_one)


@pytest.mark.slow
@pytest.mark.parametrize("command", PAPER_SCALE)
def test_paper_scale_commands_start_training(command, paper_scale_runs):
    """Run as printed (data path: a tiny dataset in the real layout) until training starts at the paper's
    size, then stopped with Ctrl-C, which leaves the run's record."""
    started, returncode, output, work = paper_scale_runs[command]
    assert started, output[-3000:]
    assert returncode == 130 and "Traceback" not in output, output[-3000:]
    (metrics_file,) = list(work.rglob("metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "interrupted", metrics
    assert metrics["data"] in ("imagenet", "datasetgan/face") and metrics["image_size"] == 224 and metrics["paper_row"]


@pytest.mark.slow
@pytest.mark.parametrize("command", SCRIPTS)
def test_script_commands(command, tmp_path):
    """Scripts run as printed, from a temporary folder: to the end, or for long benchmarks until their first
    measurement."""
    pattern = SCRIPTS[command]
    if pattern is None:
        result = subprocess.run(argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=600, env=user_env())
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip()
        return
    # Its own process group: a benchmark's measuring child (benchmark_segformer forks one per row) goes too.
    process = subprocess.Popen(argv(command), cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
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


FILL = "python scripts/fill_baselines.py experiment=table2_inpainting data.root=/data/imagenet"


@pytest.mark.slow
def test_fill_baselines_command_fills_the_test_images_once(paper_data, tmp_path):
    """As printed (data path: a tiny ImageNet in its layout), then again as a user resuming it: every fill of the
    Table 2 rows' test images is stored, and the second run finds them all and solves none."""
    first, second = (subprocess.run(argv(FILL, paper_data), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                                    env=user_env()) for _ in range(2))
    assert first.returncode == 0, first.stderr[-3000:]
    solved = int(re.search(r"done: (\d+) fills solved and 0 already stored in outputs/cache/biharmonic", first.stdout).group(1))
    assert solved > 0 and len(list((tmp_path / "outputs" / "cache" / "biharmonic").glob("*/*.npy"))) == solved
    assert second.returncode == 0 and f"done: 0 fills solved and {solved} already stored" in second.stdout, second.stderr


# --- the session's last test -----------------------------------------------------------------------

def test_every_readme_command_was_run(request):
    """Every command README prints was run by some test of this session (recorded by readme.argv). Only
    a whole `make test-all` runs them all; a selection (`make test`'s -m, -k, a file) cannot tell."""
    option = request.config.option
    if option.markexpr or option.keyword or option.file_or_dir:
        pytest.skip("a selection of the suite ran; `make test-all` checks every README command")
    missing = sorted(set(readme_commands()) - RAN - RUN_OUTSIDE)
    unexplained = [command for command in missing if command not in SKIPPED]
    assert not unexplained, f"README prints commands that no test ran: {unexplained}"
    if missing:
        pytest.skip("; ".join(f"{command}: {SKIPPED[command]}" for command in missing))
