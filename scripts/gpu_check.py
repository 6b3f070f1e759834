"""The GPU check: one short script that measures what README's GPU speed numbers say, and writes one JSON.

Sections, in order (each adds its part to the JSON as soon as it ends, so a run stopped at its time
limit keeps what it measured):

1. ``mixers``: ``scripts/benchmark_mixers.py`` on the device at ViT-B/4 token shapes (56x56, d=768,
   batch 16), float32 without TF32 (the float32 reference point) and with TF32, plus bf16 autocast:
   our AFNO against the reference formulation on the same weights, with its agreement checks, and against
   NVIDIA physicsnemo's ``AFNO2DLayer`` where the ``physicsnemo`` extra is installed (the JSON's ``physicsnemo``
   names its version, or is null);
2. ``profile``: ``torch.profiler``'s kernel table of our AFNO's forward+backward (k=8, batch 16), bf16
   autocast and float32: where the time goes, for the next optimisation; and the same step timed with
   the FFTs' orthonormal scaling folded into the layout copies (the GPU default) and left to the FFTs
   (the CPU's way), which measures that choice (``afno._folds_scaling``);
3. ``widths``: whether Table 2's AFNO width (750, not a multiple of 8) costs the GEMMs their tensor-core speed:
   the row's MLP and our k=1 mixer at 750, 752 and 768 channels, and its training step at 750 and 752;
4. ``training``: ``scripts/benchmark_training.py``: one training step of every row of Tables 2, 4 and 5
   at the size the experiment trains, in the training default precision (bf16-mixed on a GPU);
5. ``sweep``: ``python train.py -m experiment=table2_inpainting debug=smoke trainer.accelerator=gpu``,
   the Table 2 sweep at smoke size through the real entry point, in the default precision (bf16-mixed
   on the GPU; debug=smoke pins the CPU otherwise): each run's status, precision and seconds;
6. ``train_py``: seconds per step of ``python train.py experiment=table2_inpainting paper_model=table2/afno`` at the
   true size on a synthetic ImageNet written in the real layout, default precision (two runs of different
   lengths, so that start-up and evaluation cancel; ``logger=csv``: the device machine has no network);
7. ``compiled``: Table 2's AFNO and attention rows, eager against ``torch.compile``, with the compile time.

Usage::

    python scripts/gpu_check.py --out gpu_check.json            # on a GPU: under 10 minutes
    python scripts/gpu_check.py --device cpu --smoke --out x.json   # the same path on a CPU, shrunk (tested)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import benchmark_mixers  # noqa: E402
import benchmark_training  # noqa: E402
from afno_repro.cli import available_device, device_name, output_file, user_errors  # noqa: E402


SECTIONS = ("mixers", "profile", "widths", "training", "sweep", "train_py", "compiled")


def _write(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2, default=str))


def _section(report: dict, path: Path, name: str, func) -> None:
    """Run one section; its result (or its error) and its seconds go into the JSON at once."""
    start = time.perf_counter()
    try:
        report[name] = func()
    except Exception as error:  # one section failing must not lose the others' measurements
        report[name] = {"error": f"{type(error).__name__}: {error}"}
    report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
    print(f"[gpu_check] {name}: {report['seconds'][name]} s", flush=True)
    _write(path, report)


def _json_of(script, argv: list[str], path: Path) -> dict:
    status = script.main([*argv, "--json", str(path)])
    result = json.loads(path.read_text())
    result["exit_status"] = status
    return result


def _sweep(work: Path, device: str) -> dict:
    """Table 2's smoke sweep through train.py as a user types it; on a GPU with trainer.accelerator=gpu
    (debug=smoke pins the CPU), so it trains in the default precision there: bf16-mixed."""
    sweep_dir = work / "sweep"
    command = [sys.executable, str(ROOT / "train.py"), "-m", "experiment=table2_inpainting", "debug=smoke",
               *(["trainer.accelerator=gpu"] if device.startswith("cuda") else []), f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    runs = []
    for metrics in sorted(sweep_dir.glob("*/metrics.json")):
        record = json.loads(metrics.read_text())
        runs.append({"mixer": record.get("mixer"), "status": record.get("status"), "precision": record.get("precision"),
                     "wall_time_s": record.get("wall_time_s"), "test": record.get("test")})
    return {"command": " ".join(command[1:]), "exit_status": done.returncode, "seconds": time.perf_counter() - start,
            "runs": runs, "stderr_tail": done.stderr[-2000:] if done.returncode else ""}


def _train_py_step(work: Path, smoke: bool) -> dict:
    """Seconds per training step of ``python train.py experiment=table2_inpainting`` (AFNO, its true size, the
    default precision) on a synthetic ImageNet: two runs that differ only in steps per epoch, so that start-up,
    validation and the test pass cancel in the difference."""
    from afno_repro.data.layouts import write_imagenet

    per_class, side = (8, 32) if smoke else (600, 256)  # a synthetic ImageNet in the real layout
    root = write_imagenet(work / "imagenet", classes=4, train_per_class=per_class, val_per_class=max(2, per_class // 10),
                          size=(side, side))
    batch = 4 if smoke else 64
    steps = (2, 4) if smoke else (10, 30)
    runs = []
    for count in steps:
        run_dir = work / f"train_py_{count}"
        command = [sys.executable, str(ROOT / "train.py"), "experiment=table2_inpainting", "paper_model=table2/afno", f"data.root={root}",
                   "trainer.max_epochs=1", f"data.train_samples_per_epoch={count * batch}", f"data.val_samples={batch}",
                   "logger=csv", f"hydra.run.dir={run_dir}", *(["debug=smoke", "data=imagenet"] if smoke else [])]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        record = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
        runs.append({"steps": count, "exit_status": done.returncode, "seconds": time.perf_counter() - start,
                     "status": record.get("status"), "precision": record.get("precision"),
                     "global_step": record.get("global_step"), "stderr_tail": done.stderr[-1500:] if done.returncode else ""})
    # The optimizer steps each run recorded, not the ones asked for: an epoch can hold fewer.
    taken = [run["global_step"] if run["global_step"] is not None else count for run, count in zip(runs, steps)]
    step_s = (runs[1]["seconds"] - runs[0]["seconds"]) / max(1, taken[1] - taken[0])
    # At toy size the steps are shorter than the two runs' start-up noise: no number rather than a wrong one.
    measured = step_s > 0 and all(run["status"] == "completed" for run in runs)
    return {"command": "python train.py experiment=table2_inpainting paper_model=table2/afno data.root=<synthetic ImageNet> "
                       "trainer.max_epochs=1 data.train_samples_per_epoch=<steps x 64> data.val_samples=64 logger=csv",
            "batch": batch, "step_s": step_s if measured else None, "images_per_s": batch / step_s if measured else None,
            "note": None if measured else "not measured: the longer run was not slower (steps shorter than start-up noise)",
            "runs": runs}


def _profile(device: str, smoke: bool) -> dict:
    """Where our AFNO's forward+backward spends its time, kernel by kernel (k=8, bf16 autocast and float32)."""
    from afno_repro.mixers import afno, build_mixer

    batch, grid, dim = (2, 14, 64) if smoke else (16, 56, 768)
    mixer = build_mixer("afno", dim, num_blocks=8).to(device)
    x = torch.randn(batch, grid, grid, dim, device=device, requires_grad=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    tables, scaling = {}, {}
    for label, autocast in (("bf16 autocast", True), ("float32", False)):
        def step():
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
                y = mixer(x)
            y.float().square().mean().backward()
        for _ in range(2):
            step()
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(3):
                step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        sort = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
        tables[label] = prof.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=60)
        print(f"[gpu_check] profile, {label}, 3 steps:\n{tables[label]}", flush=True)
        # The two places of the FFTs' scaling, interleaved (as benchmark_mixers times its cases) after a warm-up round.
        places = {"folded into the layout copies": True, "in the FFTs": False}
        times: dict[str, list[float]] = {where: [] for where in places}
        for repeat in range(1 + (3 if smoke else 10)):
            for where, fold in places.items():
                with mock.patch.object(afno, "_folds_scaling", lambda _, fold=fold: fold):
                    benchmark_mixers._synchronize(x.device)
                    start = time.perf_counter()
                    step()
                    benchmark_mixers._synchronize(x.device)
                if repeat:
                    times[where].append(1e3 * (time.perf_counter() - start))
        scaling[label] = {where: statistics.median(values) for where, values in times.items()}
        print(f"[gpu_check] FFT scaling, {label}, ms per forward+backward: {scaling[label]}", flush=True)
    return {"batch": batch, "grid": grid, "dim": dim, "tables": tables, "fft_scaling_ms": scaling}


def _widths(work: Path, device: str, smoke: bool, training_args: list[str]) -> dict:
    """Whether Table 2's AFNO width costs GEMM speed. The paper's row is 750 channels wide: in bf16 a row of 750
    is 1500 bytes, not a multiple of 16, so cuBLAS may not use its 16-byte-aligned tensor-core kernels for any
    product over those channels (the MLPs' and, at k=1, the mixer's own 1500-wide stacked product), where the
    other Table 2 rows are 768 wide. Measured, bf16 autocast, forward+backward: (1) the row's MLP (d -> 4d -> d
    Linear layers, GELU) at d = 750, 752 and 768, in TFLOP/s; (2) our AFNO mixer at k=1, d = 750 and 752; (3) one
    training step of the row as configured and with ``backbone.embed_dim=752`` (0.3% more parameters), which
    says what padding the width to a multiple of 8 would buy."""
    from torch import nn
    from torch.utils.benchmark import Timer

    from afno_repro.mixers import build_mixer

    def median_ms(step) -> float:  # torch's Timer: warm-up, blocks of runs, the accelerator synchronised
        return 1e3 * Timer("step()", globals={"step": step}).blocked_autorange(min_run_time=0.1 if smoke else 1.0).median

    dims, tokens, grid, batch = ((62, 64, 66), 2 * 14 * 14, 14, 2) if smoke else ((750, 752, 768), 16 * 56 * 56, 56, 16)
    result: dict = {"tokens": tokens, "mlp_tflops": {}, "mixer_k1_ms": {}}
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    for d in dims:
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)).to(device)
        x = torch.randn(tokens, d, device=device, requires_grad=True)

        def mlp_step():
            with autocast:
                y = mlp(x)
            y.float().square().mean().backward()

        # Two products of tokens x d x 4d, each forward plus two in backward: 3 x 2 x 2 FLOPs a multiply-add.
        result["mlp_tflops"][str(d)] = 12 * tokens * d * 4 * d / (median_ms(mlp_step) * 1e-3) / 1e12
        if d != dims[-1]:  # the mixer at the row's width and at the next multiple of 8
            mixer = build_mixer("afno", d, num_blocks=1, sparsity_threshold=0.1).to(device)
            grid_x = torch.randn(batch, grid, grid, d, device=device, requires_grad=True)

            def mixer_step():
                with autocast:
                    y = mixer(grid_x)
                y.float().square().mean().backward()

            result["mixer_k1_ms"][str(d)] = median_ms(mixer_step)
    print(f"[gpu_check] widths: MLP TFLOP/s {result['mlp_tflops']}, AFNO k=1 ms {result['mixer_k1_ms']}", flush=True)
    aligned = 66 if smoke else 752  # smoke's shrunk row is 64 wide, so 66 stands in for the other width there
    rows = ["--experiments", "table2_inpainting", "--rows", "paper_model=table2/afno"]
    result["training"] = {
        "configured": _json_of(benchmark_training, [*training_args, *rows], work / "widths_configured.json"),
        f"backbone.embed_dim={aligned}": _json_of(
            benchmark_training, [*training_args, *rows, "--override", f"backbone.embed_dim={aligned}"],
            work / "widths_aligned.json"),
    }
    return result


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=output_file, default="gpu_check.json", help="the JSON to write")
    parser.add_argument("--device", type=available_device, default="cuda", help="cuda (the check) or cpu (a shrunk run of the same path)")
    parser.add_argument("--smoke", action="store_true", help="small shapes and debug=smoke rows (for a CPU)")
    parser.add_argument("--work", help="folder for the runs and partial JSONs (default: beside --out)")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out.parent / (out.stem + "_work")
    if blocking := next((p for p in (work, *work.parents) if p.exists() and not p.is_dir()), None):
        parser.error(f"argument --work: {blocking} is a file, so the folder {work} cannot be made there; give a "
                     "folder path (it is created if it does not exist).")
    work.mkdir(parents=True, exist_ok=True)
    if out.is_file() and out.stat().st_size > 0:
        # The JSON is rewritten as each section ends: an earlier check's results would be gone at the first write.
        kept = out.with_name(f"{out.stem}.{time.strftime('%Y%m%d-%H%M%S', time.localtime(out.stat().st_mtime))}{out.suffix}")
        out.rename(kept)
        print(f"[gpu_check] the earlier check in {out} is kept as {kept}", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device": args.device,
              "device_name": device_name(args.device),
              "cuda": torch.version.cuda, "smoke": args.smoke}
    _write(out, report)
    # physicsnemo's AFNO2DLayer joins the comparison where its optional extra is installed (never by make install).
    report["physicsnemo"] = benchmark_mixers.physicsnemo_version()
    mixer_args = ["--device", args.device, *(["--quick", "--batch", "2", "--repeats", "2"] if args.smoke else
                                             ["--batch", "16", "--repeats", "10"]),
                  *(["--physicsnemo"] if report["physicsnemo"] else [])]
    training_args = ["--device", args.device, *(["--smoke", "--steps", "1"] if args.smoke else ["--steps", "3"])]
    if "mixers" not in args.skip:
        _section(report, out, "mixers", lambda: {
            precision: _json_of(benchmark_mixers, [*mixer_args, "--matmul-precision", precision], work / f"mixers_{precision}.json")
            for precision in ("highest", "high")})
    if "profile" not in args.skip:
        _section(report, out, "profile", lambda: _profile(args.device, args.smoke))
    if "widths" not in args.skip:
        _section(report, out, "widths", lambda: _widths(work, args.device, args.smoke, training_args))
    if "training" not in args.skip:
        experiments = ["table2_inpainting", "table5_classification", "table4_cityscapes"]
        _section(report, out, "training", lambda: _json_of(
            benchmark_training, [*training_args, "--experiments", *experiments, *(["--rows", "afno"] if args.smoke else [])],
            work / "training.json"))
    if "sweep" not in args.skip:
        _section(report, out, "sweep", lambda: _sweep(work, args.device))
    if "train_py" not in args.skip:
        _section(report, out, "train_py", lambda: _train_py_step(work, args.smoke))
    if "compiled" not in args.skip:
        _section(report, out, "compiled", lambda: _json_of(
            benchmark_training, [*training_args, "--experiments", "table2_inpainting", "--rows", "paper_model=table2/afno",
                                 *([] if args.smoke else ["paper_model=table2/attention"]), "--compile"], work / "compiled.json"))
    failed = [name for name in SECTIONS
              if isinstance(report.get(name), dict) and "error" in report[name]]
    print(f"[gpu_check] wrote {out}" + (f"; sections that failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
