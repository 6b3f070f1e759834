"""What one training step of every row of Tables 2, 4 and 5 costs at the size the experiment trains.

For each row of ``-m experiment=<name>`` (the experiment's own sweep), the script composes the row's
config exactly as ``train.py`` would, builds its backbone, and times full training steps on random
input of the configured per-device batch and resolution: forward, a loss on the output, backward, and
one step of the row's configured optimizer (Adam or AdamW). It reports, per row:

- images/s eager, and compiled (``torch.compile`` of the backbone) with ``--compile``, whose first step
  (``first_step_s``) holds the compilation;
- peak GPU memory (on a GPU); a batch that runs out of memory is halved until one fits, and the row
  says how many accumulation steps (or devices) the configured batch needs;
- the activations autograd keeps for backward at that batch (``saved GiB``, eager; any device): the part
  of the memory that grows with the batch, which compares rows on a CPU as their memory will on a GPU;
- achieved FLOP/s: 6x the forward multiply-accumulates counted from the model (every matmul,
  attention's two included; a step is about three forwards of two FLOPs per MAC; FFTs not counted)
  times images/s, against the device's peak, measured here on an 8192^3 matrix product in
  the step's dtype (a 1024^3 float32 one on a CPU);
- GPU-hours at the configured epochs: epochs x training images / images/s (ImageNet-1k's 1,281,167
  training images, Cityscapes' 2,975 fine training images, or ``data.train_samples_per_epoch``).

What it leaves out, by design: data loading (a 2 ms wait per step, measured on an H200 in a run whose bf16 step
through ``train.py`` took 1.34 s; the default step there is now 0.74 s, README "Speed on a GPU"), the task's loss and metrics (elementwise on the
output), and validation. The loss here is the mean square of the output, the same backward work.

Usage::

    python scripts/benchmark_training.py --device cuda --precision bf16-mixed --json training.json
    python scripts/benchmark_training.py --device cuda --experiments table2_inpainting --compile
    python scripts/benchmark_training.py --smoke --steps 1       # every row, shrunk (debug=smoke), on a CPU
    python scripts/benchmark_training.py --device cpu --batch 1 --steps 1 --experiments table2_inpainting
    python scripts/benchmark_training.py --memory-only --experiments table2_inpainting table5_classification
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from afno_repro.cli import UsageError, available_device, device_name, output_file, positive_int, user_errors
from afno_repro.report.render import format_number

EXPERIMENTS = ("table2_inpainting", "table4_pretrain", "table4_cityscapes", "table5_classification")


def peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """The device's matrix-product rate in ``dtype``, measured: the ceiling the achieved rate is set against."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start, repeats = time.perf_counter(), 10 if device.type == "cuda" else 3
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_images(cfg: Any) -> int | None:
    """Training images per epoch of the row's data config, by the paper's datasets' published sizes (the preflight's
    count, :func:`afno_repro.preflight.paper_train_images`); ``None`` for data of unknown size."""
    from afno_repro.preflight import paper_train_images

    return paper_train_images(cfg)


def _optimizer(cfg: Any, params) -> torch.optim.Optimizer:
    from hydra.utils import instantiate

    return instantiate(cfg.optimizer)(params)


def _model_and_input(cfg: Any, device: torch.device, precision: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor, Any]:
    """The row's backbone in training mode, a random batch at its resolution, and the step's autocast context."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    model = instantiate(cfg.backbone).to(device).train()
    size = int(cfg.data.image_size)
    x = torch.randn(batch, int(cfg.backbone.get("in_chans", 3)), size, size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    return model, x, autocast


def time_steps(cfg: Any, batch: int, device: torch.device, precision: str, steps: int, compile_model: bool) -> dict[str, Any]:
    """Build the row's backbone and time ``steps`` training steps (after warm-up) at ``batch``."""
    from afno_repro.analysis.memory import saved_for_backward

    model, x, autocast = _model_and_input(cfg, device, precision, batch)
    optimizer = _optimizer(cfg, model.parameters())
    step_model = torch.compile(model) if compile_model else model

    def step() -> None:
        with autocast:
            out = step_model(x)
        loss = out.float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    # Warm-up: cuDNN/cuFFT plans, allocator, and the compilation when compiled; eager, it also counts the
    # activations autograd keeps for backward (any device: the part of the memory that grows with the batch).
    with nullcontext() if compile_model else saved_for_backward(exclude=model.parameters()) as saved:
        step()
    _sync(device)
    first = time.perf_counter() - start
    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    # Compiled, the first step holds the compilation: first_step_s - step_s is its cost.
    row = {"batch": batch, "step_s": seconds, "images_per_s": batch / seconds, "first_step_s": first}
    if saved is not None:
        row["saved_for_backward_gib"] = saved.gib
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, optimizer, step_model, x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def saved_memory(cfg: Any, device: torch.device, precision: str, batch: int) -> dict[str, Any]:
    """One forward pass of the row's backbone in training mode at ``batch``: the activations autograd keeps for
    its backward (parameters left out), without timing anything; seconds a row at the paper's size on a CPU."""
    from afno_repro.analysis.memory import saved_for_backward

    model, x, autocast = _model_and_input(cfg, device, precision, batch)
    with autocast, saved_for_backward(exclude=model.parameters()) as saved:
        model(x)
    return {"batch": batch, "saved_for_backward_gib": saved.gib}


def measure(cfg: Any, device: torch.device, precision: str, steps: int, compile_model: bool,
            batch: int | None = None) -> dict[str, Any]:
    """Time the configured batch (or ``batch``); on out-of-memory halve it until one fits and say what the batch
    needs."""
    configured = batch or int(cfg.data.batch_size)
    batch = configured
    while batch >= 1:
        try:
            row = time_steps(cfg, batch, device, precision, steps, compile_model)
            if batch != configured:
                row["out_of_memory_at"] = configured
                row["accumulation_needed"] = math.ceil(configured / batch)
            return row
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
    return {"batch": configured, "error": "out of memory even at batch 1"}


def rows_of(experiments: list[str], smoke: bool, only: list[str] | None) -> list[tuple[str, list[str]]]:
    from afno_repro.config import sweep_points

    extra = ["debug=smoke"] if smoke else []
    rows = []
    for experiment in experiments:
        for point in sweep_points(experiment, *extra):
            label = " ".join(point)
            if only and not any(name in label for name in only):
                continue
            rows.append((experiment, [f"experiment={experiment}", *point, *extra]))
    return rows


def row_label(overrides: list[str]) -> str:
    """The row as it trains: each key's last value (an --override after the swept row replaces it), without
    debug=smoke; never cut, so that a row another --override changed is named as it ran.

    >>> row_label(["paper_model=table2/afno", "debug=smoke", "paper_model=table2/pool", "mixer.num_blocks=2"])
    'paper_model=table2/pool mixer.num_blocks=2'
    """
    last = {}
    for override in overrides:
        key = override.split("=", 1)[0]
        last.pop(key, None)
        last[key] = override
    return " ".join(o for o in last.values() if o != "debug=smoke")


def _table_line(row: dict[str, Any]) -> str:
    """One printed row: what the JSON holds, '-' where a value was not measured."""
    eager, compiled = row["eager"], row.get("compiled") or {}
    fraction = row.get("fraction_of_peak")
    line = (f"{row['experiment']:<22}{row_label(row['overrides']):<39} {eager.get('batch', '-'):>6}"
            f"{format_number(eager.get('images_per_s'), '.4g', '-'):>9}{format_number(compiled.get('images_per_s'), '.4g', '-'):>9}"
            f"{format_number(eager.get('peak_memory_gib'), '.1f', '-'):>9}{format_number(eager.get('saved_for_backward_gib'), '.3g', '-'):>10}"
            f"{format_number(row.get('achieved_tflops'), '.3g', '-'):>8}"
            f"{'-' if fraction is None else format(100 * fraction, '.1f') + '%':>8}{format_number(row.get('gpu_hours'), '.0f', '-'):>9}")
    if "out_of_memory_at" in eager:
        line += f"  (out of memory at {eager['out_of_memory_at']}: {eager['accumulation_needed']} accumulation steps)"
    for label, result in (("eager", eager), ("compiled", compiled)):
        if "error" in result:
            line += f"  {label}: {result['error']}"
    return line


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", type=available_device, default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16-mixed", "32-true"),
                        help="auto: the training default (afno_repro.precision): bf16-mixed on a GPU, 32-true on a CPU")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--rows", nargs="+", help="only rows whose overrides contain one of these (e.g. afno attention)")
    parser.add_argument("--steps", type=positive_int, default=5, help="timed steps per row (after two warm-up steps)")
    parser.add_argument("--batch", type=positive_int, help="run this per-device batch instead of each row's configured "
                        "one (e.g. 1 on a CPU, where a paper batch takes many minutes a step)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd backbone")
    parser.add_argument("--memory-only", action="store_true",
                        help="time nothing: one forward pass per row (at --batch, default 1) counting the activations "
                             "kept for backward, the 'saved GiB' column; seconds a row on a CPU")
    parser.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides for every row, as train.py takes them (e.g. mixer.recompute=false)")
    parser.add_argument("--smoke", action="store_true", help="debug=smoke's shrunk models and batches (a CPU check of the script)")
    parser.add_argument("--json", type=output_file, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.compile and args.memory_only:
        parser.error("--compile times the compiled step, and --memory-only times nothing: give one of them.")
    rows = [(experiment, [*overrides, *args.override]) for experiment, overrides in rows_of(args.experiments, args.smoke, args.rows)]
    if not rows:
        parser.error(f"argument --rows: {' '.join(args.rows)} matches no row of {', '.join(args.experiments)}; a word "
                     "matches a row when it appears in the row's overrides (e.g. afno, attention, paper_model=table2/afno).")
    from afno_repro.analysis.complexity import count_flops
    from afno_repro.config import compose, overrides_message
    from afno_repro.precision import apply_precision, resolve_precision
    from afno_repro.train import check_values
    from hydra.utils import instantiate

    # A value every run would refuse (data.batch_size=-1 was measured and reported as out of memory): named
    # before anything is measured, as train.py names it.
    # Each row's own words with them: a key such as mixer.recompute exists for the row's mixer, not the default's.
    for _, overrides in rows:
        if message := overrides_message(overrides, command="python scripts/benchmark_training.py --override"):
            raise UsageError(f"--override: {message}")
    configs = [compose(overrides, output_dir="outputs/benchmark_training") for _, overrides in rows]
    for cfg in configs:
        check_values(cfg, on_this_machine=False)

    device = torch.device(args.device)
    numerics = resolve_precision("cuda" if device.type == "cuda" else "cpu", args.precision)
    apply_precision(numerics)
    precision = numerics["trainer"]
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    peak = None if args.memory_only else peak_tflops(device, dtype)
    name = device_name(str(device))
    rate = ("activations only, nothing timed" if peak is None else
            f"measured {'bf16' if dtype == torch.bfloat16 else 'float32'} matmul peak {peak:.3g} TFLOP/s")
    print(f"training step per row: {name}, {precision}, float32 matmul {numerics['float32_matmul']}, torch {torch.__version__}, "
          f"{rate}")
    print(f"{'experiment':<22}{'row':<40}{'batch':>6}{'img/s':>9}{'compiled':>9}{'peak GiB':>9}{'saved GiB':>10}{'TFLOP/s':>8}"
          f"{'of peak':>8}{'GPU-h':>9}")
    results = []
    for (experiment, overrides), cfg in zip(rows, configs):
        size = int(cfg.data.image_size)
        with torch.device("meta"):
            meta_model = instantiate(cfg.backbone)
        # The paper's GFLOPs are multiply-accumulates: a training step is ~3 forwards of 2 FLOPs each.
        report = count_flops(meta_model, (1, int(cfg.backbone.get("in_chans", 3)), size, size), attention_matmuls="both")
        gmacs = report.gflops
        row: dict[str, Any] = {"experiment": experiment, "overrides": overrides[1:], "image_size": size,
                               "configured_batch": int(cfg.data.batch_size), "epochs": int(cfg.trainer.max_epochs),
                               "forward_gmacs_per_image": gmacs, "train_images": train_images(cfg)}
        if args.memory_only:
            row["eager"] = saved_memory(cfg, device, precision, args.batch or 1)
            results.append(row)
            print(_table_line(row))
            continue
        row["eager"] = measure(cfg, device, precision, args.steps, False, args.batch)
        if args.compile:
            try:
                row["compiled"] = measure(cfg, device, precision, args.steps, True, args.batch)
            except Exception as error:  # a compiler failure is a result to report, not a crash of the benchmark
                row["compiled"] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        eager = row["eager"]
        best = max((r.get("images_per_s", 0) for r in (row["eager"], row.get("compiled") or {})), default=0)
        if "images_per_s" in eager:
            achieved = 6 * gmacs * 1e9 * eager["images_per_s"] / 1e12
            row["achieved_tflops"], row["fraction_of_peak"] = achieved, achieved / peak
            if row["train_images"] and best:
                row["gpu_hours"] = row["epochs"] * row["train_images"] / best / 3600
        results.append(row)
        print(_table_line(row))
    print("GPU-h: epochs x training images / the faster of eager and compiled images/s, on this one device; TFLOP/s: "
          "6 x forward MACs (every matmul, no FFTs) x eager images/s, against the measured matmul peak; saved GiB: the "
          "activations autograd keeps for backward at that batch (afno_repro.analysis.memory), on any device.")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": name, "precision": numerics, "peak_tflops": peak, "torch": torch.__version__,
                       "rows": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
