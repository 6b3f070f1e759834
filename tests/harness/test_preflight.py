"""`python -m afno_repro.pipeline --scale paper --preflight`: every paper row measured through the training path.

The whole preflight at the paper's sizes is a benchmark (hours on 2 CPU cores); here one row per task runs at a
size that takes seconds (shrunk by overrides given to every row, as a user would pass them), on data in the real
layouts: the synthetic datasets the preflight writes itself, and the tests' DatasetGAN release.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from afno_repro import pipeline
from afno_repro.preflight import _COLUMNS, ASSUMED_GPU, PAPER_TRAIN_IMAGES, _cells, _predict, preflight_section

ROOT = Path(__file__).resolve().parents[2]

VIT_TINY = ["backbone.depth=1", "backbone.embed_dim=64", "backbone.img_size=32", "data.image_size=32",
            "data.num_workers=0"]
SEGFORMER_TINY = ["backbone.embed_dims=[8,16,40,64]", "+backbone.depths=[1,1,1,1]", "+backbone.decoder_dim=32",
                  "data.crop_size=64", "task.stride=48", "data.num_workers=0"]


def _preflight(tmp_path: Path, *args: str) -> tuple[int, dict | None]:
    root = tmp_path / "root"
    status = pipeline.main(["--scale", "paper", "--preflight", "--device", "cpu", "--root", str(root), *args])
    record = root / "preflight.json"
    return status, json.loads(record.read_text()) if record.is_file() else None


def _params(overrides: list[str]) -> int:
    from hydra.utils import instantiate

    from afno_repro.config import compose

    with torch.device("meta"):
        model = instantiate(compose(overrides).backbone)
    return sum(p.numel() for p in model.parameters())


def test_table2_row_is_timed_and_its_recipe_costed(tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # 96x96: the experiment's masks (walks sized for 224) hide some pixels there, and hide all of a 32x32 image.
    tiny = [*VIT_TINY[:2], "backbone.img_size=96", "data.image_size=96", "data.num_workers=0"]
    status, result = _preflight(tmp_path, "--only", "table2_inpainting", "--rows", "afno", *tiny)
    assert status == 0, capsys.readouterr().err
    # The biharmonic fills were solved, as by the first row on a set of images: no fill cache read or written
    # (the task's default keeps one below runs_root, here the working directory's outputs/).
    assert not list(cwd.iterdir())
    (row,) = result["rows"]
    assert row["row"] == "paper_model=table2/afno" and "error" not in row
    assert row["params_m"] * 1e6 == pytest.approx(_params(["experiment=table2_inpainting", "paper_model=table2/afno", *tiny]))
    assert row["train"]["batch"] == row["run_batch"] == 1 and row["train"]["steps_timed"] == 1
    assert row["train"]["step_s"] > 0 and row["evaluation"]["forward_s"] > 0 and row["evaluation"]["step_s"] > 0
    assert row["evaluation"]["image_shape"] == [96, 96]
    # The paper's per-device batch (A.2: 64 on one GPU) and its recipe: 100 epochs of ImageNet-1k at 64.
    assert row["paper_batch"]["per_device"] == 64 and row["paper_batch"]["effective_global"] == 64
    assert row["paper_per_device"]["step_s"] == pytest.approx(64 * row["train"]["step_s"])
    assert row["train_images"] == PAPER_TRAIN_IMAGES["imagenet"] == 1_281_167
    assert row["optimizer_steps"] == 100 * 20_019
    assert row["train_pflops"] == pytest.approx(6 * row["gflops"] * 1e9 * 1_281_167 * 100 / 1e15)
    rate = ASSUMED_GPU["bf16_dense_tflops"] * 1e12 * ASSUMED_GPU["utilisation"]
    assert row["gpu_hours"] == pytest.approx(row["train_pflops"] * 1e15 / rate / 3600)
    assert row["gpu_hours_how"].startswith("assumed")
    # The data came from the real ImageNet layout, written by the preflight at ImageNet's sizes.
    assert result["data"] == "synthetic imagenet in the real layouts"
    assert sorted(p.name for p in (Path(result["data_roots"]["imagenet"]) / "train").iterdir())
    table = (tmp_path / "root" / "preflight.md").read_text()
    assert "| table2_inpainting | paper_model=table2/afno |" in table and "ASSUMED, not measured" in table
    section = preflight_section(result)
    assert section.key == "preflight" and section.tables["preflight"][0]["row"] == "paper_model=table2/afno"


def test_fewshot_row_reads_a_given_datasetgan_release(tmp_path, capsys):
    from layouts import write_datasetgan

    release = tmp_path / "datasetgan"
    for category in ("face", "car", "cat"):
        write_datasetgan(release, category=category)
    status, result = _preflight(tmp_path, "--only", "table3_fewshot", "--rows", "afno", "--datasetgan", str(release),
                                *VIT_TINY)
    assert status == 0, capsys.readouterr().err
    assert result["data"] == "the given dataset folders"
    faces = [row for row in result["rows"] if "face" in row["row"]]
    assert faces and all("error" not in row for row in result["rows"])
    # The real release's training images are counted (16 face images in the tests' release).
    assert faces[0]["train_images"] == 16 and faces[0]["evaluation"]["over_forward"] > 0


@pytest.mark.slow  # four 2048x1024 frames written and decoded, ~40 s on 2 cores
def test_cityscapes_row_evaluates_a_full_size_image_by_sliding_windows(tmp_path, capsys):
    status, result = _preflight(tmp_path, "--only", "table4_cityscapes", "--rows", "table4/afno_25pct", *SEGFORMER_TINY)
    assert status == 0, capsys.readouterr().err
    (row,) = result["rows"]
    assert "error" not in row, row
    # One 2048x1024 validation image, scored at its full size: Cityscapes' real resolution.
    assert row["evaluation"]["image_shape"] == [1024, 2048] and row["evaluation"]["batch"] == 1
    assert row["train_images"] == 2_975 and row["paper_batch"]["effective_global"] == 8
    assert row["optimizer_steps"] == 450 * math.ceil(2_975 / 8)


@pytest.mark.slow  # Cityscapes frames written at 2048x1024, as above
def test_a_swin_row_is_measured_without_the_swin_authors_checkpoint(tmp_path, capsys):
    """Figure 1's Swin rows start from the Swin authors' checkpoint, which a run without it refuses; the preflight
    counts and steps the trunk without it (the weights' values do not change a step's cost). It used to count the
    parameters on the row's own config and stopped the whole preflight with a traceback at the first Swin row."""
    # Crops of 256 without overlap: 32 windows score a 2048x1024 frame (at 64 with stride 48, ~900 Swin-T passes).
    tiny = ["data.crop_size=256", "task.stride=256", "data.num_workers=0", "backbone.img_size=256", "backbone.decoder_dim=32"]
    status, result = _preflight(tmp_path, "--only", "fig1_trunks", "--rows", "swin_t", *tiny)
    assert status == 0, capsys.readouterr().err
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["params_m"] == pytest.approx(27.5, abs=0.5) and row["train"]["step_s"] > 0


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the CPU meter reads Linux's /proc")
def test_a_rows_cpu_memory_is_its_own_not_what_earlier_rows_left():
    """glibc serves a row's tensors from heap pages earlier rows freed, without the resident set growing: a
    SegFormer-B3 row read 0.65 GB after other rows and 1.30 GB first. The preflight makes freed memory go back."""
    from afno_repro.preflight import _ResidentPeak, resident_tracks_live_memory

    assert "freed memory handed back" in resident_tracks_live_memory()
    size = 96 * 2**20  # bytes
    for _ in range(3):  # what earlier rows leave: freed tensors of this size
        block = torch.ones(size // 4)
        del block
    meter = _ResidentPeak()
    try:
        meter.reset()
        block = torch.ones(size // 4)
        assert meter.peak_gb() > 0.9 * size / 1e9
        del block
    finally:
        meter.close()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the CPU meter reads Linux's /proc")
def test_a_cpu_rows_training_peak_includes_the_weights_and_optimizer_state():
    """The prediction at the paper's batch takes 16 bytes a parameter of weights, gradients and AdamW moments out
    of the training peak and scales the rest, so the peak must hold them, as CUDA's allocator peak does. The
    resident set's growth from the start of training held neither the weights (live before) nor, reliably, the
    moments: Table 2's AFNO row read 1.88 GB at batch 1, 0.54 GB of it left as activations, and was predicted at
    36 GB for batch 64, where its saved activations alone are 1.83 GB an image (~117 GB at 64)."""
    import time
    from types import SimpleNamespace

    from afno_repro.preflight import _Meter, _Timer

    module = torch.nn.Linear(4000, 4000)  # 64 MB of weights: 256 MB with gradients and AdamW's two moments
    optimizer = torch.optim.AdamW(module.parameters())
    trainer = SimpleNamespace(optimizers=[optimizer])
    meter = _Meter(torch.device("cpu"))
    timer = _Timer(meter, warmup=1)
    activation_bytes = 300 * 2**20  # more than AdamW's temporaries in its step, as a real step's activations are
    try:
        for index in range(2):  # the warm-up creates the gradients and the moments; the second step is timed
            timer.on_train_batch_start(trainer, module, None, index)
            activations = torch.ones(activation_bytes // 4)
            optimizer.zero_grad()  # as Lightning does before backward: gradients are made anew, not accumulated
            module(torch.randn(4, 4000)).sum().backward()
            time.sleep(0.05)  # the meter samples every 5 ms
            del activations
            optimizer.step()
            timer.on_train_batch_end(trainer, module, None, None, index)
        timer.on_train_end(trainer, module)
    finally:
        meter.close()
    state = 16 * sum(p.numel() for p in module.parameters()) / 1e9
    assert timer.live_at_reset_gb == pytest.approx(state, rel=1e-3)
    assert 0.9 * (state + activation_bytes / 1e9) < timer.train_peak_gb < state + 1.2 * activation_bytes / 1e9


def test_only_rows_measured_the_same_way_are_resumed(tmp_path):
    from afno_repro.preflight import _COMPARABLE, _resumable

    run = {"device": "cpu (1 threads)", "torch": "2.14.1", "warmup": 1, "steps": 1, "batch": None, "overrides": [],
           "data_roots": {"imagenet": "/data/imagenet"}, "memory_measure": "resident set over the timed steps, freed memory handed back"}
    rows = [{"cost_id": "a", "train": {}}, {"cost_id": "b", "error": "out of memory at batch 1"},
            {"cost_id": "c", "same_cost_as": "x y"}]
    path = tmp_path / "preflight.json"
    path.write_text(json.dumps({**run, "complete": False, "rows": rows}))
    assert list(_resumable(path, run)) == ["a"]  # failed and shared rows are measured again
    for key in _COMPARABLE:
        assert _resumable(path, {**run, key: "other"}) == {}, key
    path.write_text(json.dumps({**run, "complete": True, "rows": rows}))
    assert _resumable(path, run) == {}


def test_a_row_that_mixes_image_pairs_runs_the_smallest_even_batch(tmp_path, capsys):
    """Table 5 trains with Mixup/CutMix, which pairs each image with another: a CPU preflight runs batch 2 there,
    not the 1 that stops the task (and, before, the whole preflight)."""
    status, result = _preflight(tmp_path, "--only", "table5_classification", "--rows", "table5/afno", *VIT_TINY)
    assert status == 0, capsys.readouterr().err
    (row,) = result["rows"]
    assert "error" not in row and row["run_batch"] == 2 and row["train"]["steps_timed"] == 1


def test_rows_that_cannot_cost_differently_are_measured_once(tmp_path, capsys):
    status, result = _preflight(tmp_path, "--only", "fig4_sparsity", "--rows", "sparsity_threshold=0.01",
                                "--rows", "sparsity_threshold=0.1", *VIT_TINY)
    assert status == 0, capsys.readouterr().err
    first, second = result["rows"]
    assert "same_cost_as" not in first and second["same_cost_as"] == f"fig4_sparsity {first['row']}"
    assert second["train"] == first["train"] and second["row"] != first["row"]


def test_an_interrupted_preflight_keeps_its_rows_and_resumes_with_the_rest(tmp_path, capsys, monkeypatch):
    from afno_repro import preflight as module

    measure = module.preflight_row
    measured: list[str] = []

    def interrupted(experiment, point, **kwargs):
        if measured:  # the second row: the user presses Ctrl-C
            raise KeyboardInterrupt
        measured.append(" ".join(point))
        return measure(experiment, point, **kwargs)

    args = ("--only", "table2_inpainting", "--rows", "gfn", "--rows", "table2/afno", *VIT_TINY)
    monkeypatch.setattr(module, "preflight_row", interrupted)
    assert _preflight(tmp_path, *args)[0] == 130
    assert "the same command again measures only the rest" in capsys.readouterr().err
    partial = json.loads((tmp_path / "root" / "preflight.json").read_text())
    assert partial["complete"] is False and partial["rows_planned"] == 2
    assert [r["row"] for r in partial["rows"]] == ["paper_model=table2/gfn"]
    assert "INCOMPLETE: 1 of 2 rows measured" in preflight_section(partial).notes[0]

    def counted(experiment, point, **kwargs):
        measured.append(" ".join(point))
        return measure(experiment, point, **kwargs)

    # Measured at another commit: still resumed, and named.
    record_path = tmp_path / "root" / "preflight.json"
    earlier = json.loads(record_path.read_text())
    earlier["rows"][0]["code"] = "feedc0ffee0123456789"
    record_path.write_text(json.dumps(earlier))
    monkeypatch.setattr(module, "preflight_row", counted)
    status, result = _preflight(tmp_path, *args)
    assert status == 0, capsys.readouterr().err
    assert "resuming an interrupted preflight: 1 measured row cost(s) kept" in capsys.readouterr().out
    # Only the missing row was measured again; the kept one is the interrupted run's measurement.
    assert measured == ["paper_model=table2/gfn", "paper_model=table2/afno"]
    assert result["complete"] is True and result["rows"][0]["train"] == partial["rows"][0]["train"]
    assert result["total_s"] == pytest.approx(sum(r["row_s"] for r in result["rows"]))
    # Every row names its commit, and the legend the commits the table comes from.
    kept_row, new_row = result["rows"]
    assert kept_row["code"] == "feedc0ffee0123456789" and new_row["code"] != kept_row["code"]
    assert (f"rows measured at commits feedc0ffee01 (1 rows), {new_row['code'][:12]} (1 rows)"
            in preflight_section(result).notes[0])
    # A preflight run again after a complete one measures every row afresh.
    measured.clear()
    assert _preflight(tmp_path, *args)[0] == 0 and len(measured) == 2


def test_ctrl_c_during_a_rows_training_stops_the_preflight_with_its_rows_kept(tmp_path, capsys, monkeypatch):
    """Ctrl-C lands in a row's fit (where a preflight spends its time), which Lightning turns into an exit of status 1."""
    import signal

    from afno_repro import preflight as module

    started, timed = module._Timer.on_train_start, module._Timer.on_train_batch_end
    fits: list[int] = []

    def counted(self, *args, **kwargs):
        fits.append(1)
        started(self, *args, **kwargs)

    def pressed(self, *args, **kwargs):
        timed(self, *args, **kwargs)
        if len(fits) == 2:  # the second row's first step
            raise KeyboardInterrupt

    monkeypatch.setattr(module._Timer, "on_train_start", counted)
    monkeypatch.setattr(module._Timer, "on_train_batch_end", pressed)
    handler = signal.getsignal(signal.SIGINT)
    try:
        status, record = _preflight(tmp_path, "--only", "table2_inpainting", "--rows", "gfn", "--rows", "table2/afno",
                                    *VIT_TINY)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again afterwards
    finally:
        signal.signal(signal.SIGINT, handler)
    assert status == 130
    assert "preflight interrupted: the rows measured so far are in" in capsys.readouterr().err
    assert [r["row"] for r in record["rows"]] == ["paper_model=table2/gfn"] and record["complete"] is False


def test_dry_run_lists_the_rows_and_measures_nothing(tmp_path, capsys):
    """``--dry-run`` prints the plan and runs nothing, with ``--preflight`` too (it used to start measuring)."""
    status, record = _preflight(tmp_path, "--dry-run", "--only", "table2_inpainting")
    out = capsys.readouterr().out
    assert status == 0 and record is None and not (tmp_path / "root" / "preflight").exists()
    assert "preflight plan: 4 paper-scale rows on cpu, nothing measured (--dry-run)" in out
    assert all(f"paper_model=table2/{row}" in out for row in ("attention", "long_short", "gfn", "afno"))
    assert "(none yet)" in out
    record_path = tmp_path / "root" / "preflight.json"
    record_path.parent.mkdir()
    record_path.write_text(json.dumps({"complete": False, "rows": [{"cost_id": "a"}]}))
    assert _preflight(tmp_path, "--dry-run", "--only", "table2_inpainting", "--rows", "afno")[0] == 0
    out = capsys.readouterr().out
    assert "1 paper-scale row on cpu" in out and "1 row measured, incomplete: the same command resumes it" in out


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    assert _preflight(tmp_path, "--only", "table2_inpainting", "--rows", "no_such_mixer")[0] == 2
    assert "matches no row" in capsys.readouterr().err
    status, _ = _preflight(tmp_path, "--only", "table2_inpainting", "--rows", "afno", "--imagenet",
                           str(tmp_path / "missing"), *VIT_TINY)
    err = capsys.readouterr().err
    assert status == 2 and "missing" in err and "Traceback" not in err
    assert pipeline.main(["--scale", "smoke", "--preflight", "--root", str(tmp_path)]) == 2
    assert "--scale paper" in capsys.readouterr().err
    # Two experiments after one --only: the second is read as an override (Hydra: "missing EQUAL", a traceback).
    assert _preflight(tmp_path, "--only", "table4_pretrain", "table2_inpainting")[0] == 2
    err = capsys.readouterr().err
    assert "`table2_inpainting` is not an override (key=value)" in err and "repeat --only" in err
    assert "Traceback" not in err
    # An override Hydra cannot parse, named with the fix.
    assert _preflight(tmp_path, "--only", "table2_inpainting", "--rows", "afno", "data.image_size=[1,2")[0] == 2
    err = capsys.readouterr().err
    assert "`data.image_size=[1,2` is not valid Hydra override syntax" in err and "Traceback" not in err


def test_flags_name_memory_past_80_gb_and_evaluation_past_one_and_a_half_forwards():
    record = {"run_batch": 1, "params_m": 1000.0, "gflops": 1.0, "epochs": 1, "train_images": None,
              "paper_batch": None, "train": {"step_s": 1.0, "peak_gb": 20.0},
              "evaluation": {"over_forward": 2.0}}
    _predict(record, 64, "cpu")
    # 16 GB of weights, gradients and AdamW moments + the other 4 GB per image x 64.
    assert record["paper_per_device"]["peak_gb"] == pytest.approx(16 + 4 * 64)
    assert [flag.split(":")[0] for flag in record["flags"]] == ["memory", "evaluation"]
    # What fits: (80 - 16) / 4 = 16 images, a divisor of 64: 4 micro-batches of 16, or 4 devices.
    assert record["fits"]["batch"] == 16 and record["fits"]["accumulation"] == 4
    assert "data.batch_size=16 trainer.accumulate_grad_batches=4" in record["flags"][0]
    record["paper_batch"] = {"declared_global": 64, "effective_global": 64}
    _predict(record, 64, "cpu")
    assert "data.batch_size=16 (4 accumulation steps keep the global batch of 64), or 4 devices" in record["flags"][0]
    # 3 GB per image and 16 GB of state: 21 images fit, and 16 is the largest divisor of 64 among them.
    record.update(train={"step_s": 1.0, "peak_gb": 19.0})
    _predict(record, 64, "cpu")
    assert record["fits"]["batch"] == 16
    record.update(params_m=5000.0, train={"step_s": 1.0, "peak_gb": 81.0})
    _predict(record, 64, "cpu")
    assert record["fits"]["batch"] is None and "sharding" in record["flags"][0]
    # Small amounts keep three significant digits: a few-shot row's 0.242 GPU-hours is not printed as 0.
    record.update(params_m=1000.0, paper_batch=None, experiment="x", row="y", gpu_hours=0.2421, train_pflops=86.14)
    cells = dict(zip(_COLUMNS, _cells(record)))
    assert (cells["GPU-h"], cells["PFLOPs"]) == ("0.242", "86.1")
    record.update(train={"step_s": 1.0, "peak_gb": 16.5}, evaluation={"over_forward": 1.2})
    _predict(record, 64, "cpu")
    assert record["flags"] == []


README_PREFLIGHT = ("python -m afno_repro.pipeline --scale paper --preflight --imagenet /data/imagenet "
                    "--datasetgan /data/datasetgan --cityscapes /data/cityscapes")


@pytest.mark.slow
def test_readme_preflight_command_measures_its_first_row_at_the_paper_size(paper_data, tmp_path):
    """README's command as printed (data paths: tiny datasets in the real layouts) until its first row, Table 2's
    self-attention ViT-B/4 at 224, is measured (a whole CPU preflight is hours: a benchmark, not a test)."""
    import os
    import re
    import signal
    import subprocess

    from readme import argv, user_env

    process = subprocess.Popen(argv(README_PREFLIGHT, paper_data), cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    first_row = re.compile(r"^table2_inpainting  paper_model=table2/attention  8\d\.\d  \d+\.\d  1  \d+\.\d\d  \d+\.\d\d  \d+\.\d\d  64  ")
    try:
        for line in process.stdout:
            seen.append(line)
            if first_row.search(line) or "Traceback" in line:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert seen and first_row.search(seen[-1]), "".join(seen)[-3000:]
    assert f"preflight of " in "".join(seen) and "writing synthetic" not in "".join(seen)


def test_a_failure_is_recorded_with_its_innermost_cause():
    from hydra.errors import InstantiationException

    from afno_repro.preflight import _error_text

    try:
        try:
            raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")
        except RuntimeError as inner:
            raise InstantiationException("Error in call to target 'x.Task':") from inner
    except InstantiationException as error:
        assert _error_text(error) == "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_assumed_gpu_rate_is_the_measured_rate_times_the_measured_share():
    """The assumed rate multiplies a share with the rate it is a share of: the H200 record's measured bf16
    matmul rate and the median share of it the Table 2, 4 and 5 steps reached (not a spec sheet's peak)."""
    record = json.loads((ROOT / "docs" / "measurements" / "gpu_check_2026-12-04_h200.json").read_text())
    rows = [row for row in record["training"]["rows"] if row.get("fraction_of_peak")]
    assert len(rows) == 13
    assert ASSUMED_GPU["bf16_dense_tflops"] == pytest.approx(record["training"]["peak_tflops"], rel=0.01)
    assert ASSUMED_GPU["utilisation"] == pytest.approx(statistics.median(r["fraction_of_peak"] for r in rows), abs=0.005)
