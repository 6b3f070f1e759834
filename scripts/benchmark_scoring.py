"""What scoring a batch costs beside the model's own forward pass on it, per task, at the paper's size.

A metric or a baseline that costs more than the model is a bug: at the paper's scale it is paid on
every evaluation batch. For each task this measures, on the same batch, each in a forked child (its
own peak resident memory, weights included):

- ``forward``: the paper row's model (its experiment config at the paper's size), one forward pass
  without gradients;
- ``scoring``: what the task does with that batch's predictions and labels: every metric update and
  compute, and the baselines scored beside the model.

  cityscapes  Table 4's AFNO row, SegFormer-B3. Forward: one 1024x1024 crop (sliding-window
              inference runs three per 2048x1024 image). Scoring: one 2048x1024 label, 19 classes,
              in the headline, the resized reading and the pixel prior's confusion matrices, plus
              the pixel prior's update on a training batch of 1024 crops.
  fewshot     Table 3's AFNO row, ViT-B/4 with a segmentation head, a batch of 224x224 images, 34
              classes (CelebA-Faces). Scoring: the per-fold confusion matrices, their mIoU, and the
              pixel prior's update.
  inpainting  Table 2's AFNO row, ViT-B/4, a batch of 224x224 images with token-grid masks. Scoring:
              PSNR and SSIM of the reconstruction, and both baselines (masked input, biharmonic).
              ``scoring, k workers``: the same with the biharmonic fills in k worker processes
              (``BiharmonicPool``, the task's ``baseline_workers=k``), batch after batch as in the test
              loop: seconds per batch in steady state (after the workers started, reported apart),
              the main process's CPU time in them (what competes with the model), and the
              workers' memory (Linux: proportional set size, shared pages split between sharers).
              ``scoring, fills read back``: the same for a row whose biharmonic fills an earlier row
              on the same images stored (``task.baseline_cache``): each fill's key and read, and
              the disk it takes.

``--slow-path`` also scores the Cityscapes label with torchmetrics' MulticlassConfusionMatrix under
``torch.use_deterministic_algorithms`` (the trainer's ``deterministic: warn``), the path the task used
before (it builds an (N, C^2) tensor). Usage::

    python scripts/benchmark_scoring.py                     # every task, CPU, float32
    python scripts/benchmark_scoring.py --tasks fewshot --batch 2
    python scripts/benchmark_scoring.py --tasks cityscapes --slow-path
    python scripts/benchmark_scoring.py --tasks inpainting --batch 64 --workers 7 15
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
import warnings
from typing import Any, Callable

import torch

from afno_repro.cli import nonnegative_int, output_file, positive_int, user_errors
from benchmark_segformer import in_child  # this folder: scripts/

TASKS = ("cityscapes", "fewshot", "inpainting")
# The paper row each task's forward pass is measured on, and its evaluation batch (per process).
ROWS = {"cityscapes": ["experiment=table4_cityscapes", "mixer=afno"],
        "fewshot": ["experiment=table3_fewshot", "mixer=afno"],
        "inpainting": ["experiment=table2_inpainting", "mixer=afno"]}


def _measured(function: Callable[[], Any]) -> dict[str, float]:
    """Seconds and peak resident-memory growth (GB) of ``function()`` in this (forked) process."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    function()
    seconds = time.perf_counter() - started
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / 1e9
    return {"seconds": seconds, "peak_gb": max(peak, 0.0)}


def forward(task: str, batch: int) -> dict[str, float]:
    import hydra.utils

    from afno_repro.config import compose

    cfg = compose(ROWS[task])
    model = hydra.utils.instantiate(cfg.backbone).eval()
    size = 1024 if task == "cityscapes" else cfg.data.image_size
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        result = _measured(lambda: model(x))
    return {**result, "what": f"{cfg.paper.table}/{cfg.paper.row} forward, {batch}x3x{size}x{size}",
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _labels(batch: int, height: int, width: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch, height, width), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < 0.05] = 255
    return labels


def scoring(task: str, batch: int, slow_path: bool = False) -> dict[str, float]:
    from afno_repro.tasks.confusion import ConfusionMatrix
    from afno_repro.tasks.segmentation_inference import resize_labels
    from afno_repro.tasks.segmentation_metrics import PixelPrior, iou_from_confusion

    torch.use_deterministic_algorithms(True, warn_only=True)  # the trainer's default, deterministic: warn
    # A fold no image of the batch falls in is computed empty, as the task computes it.
    warnings.filterwarnings("ignore", message=".*was called before the ``update`` method")
    if task == "cityscapes":
        label = _labels(1, 1024, 2048, 19)
        prediction = _labels(1, 1024, 2048, 19, seed=1).clamp_max(18)
        train_masks = _labels(batch, 1024, 1024, 19, seed=2)
        if slow_path:
            from torchmetrics.classification import MulticlassConfusionMatrix

            metric = MulticlassConfusionMatrix(num_classes=19, ignore_index=255, validate_args=False)
            result = _measured(lambda: (metric.update(prediction, label), metric.compute()))
            return {**result, "what": "one 2048x1024 label, torchmetrics MulticlassConfusionMatrix (deterministic)"}

        def score() -> None:
            matrices = [ConfusionMatrix(num_classes=19, ignore_index=255, validate_args=False) for _ in range(3)]
            prior = PixelPrior(19, 128, resize=True)
            prior.update(train_masks)
            prior_map = resize_labels(prior.compute(), (1024, 2048))
            for metric, guess in zip(matrices, (prediction, prediction, prior_map.expand_as(label))):
                metric.update(guess, label)
                iou_from_confusion(metric.compute())

        result = _measured(score)
        return {**result, "what": f"3 confusion matrices of a 2048x1024 label + pixel prior of {batch} 1024 crops"}
    if task == "fewshot":
        labels = _labels(batch, 224, 224, 34)
        prediction = _labels(batch, 224, 224, 34, seed=1).clamp_max(33)
        folds = torch.arange(batch) % 5

        def score() -> None:
            matrices = [ConfusionMatrix(num_classes=34, ignore_index=255, validate_args=False) for _ in range(5)]
            for fold, metric in enumerate(matrices):
                chosen = folds == fold
                if chosen.any():
                    metric.update(prediction[chosen], labels[chosen])
            iou_from_confusion(torch.stack([m.compute() for m in matrices]).sum(0))
            prior = PixelPrior(34, 224)
            prior.update(labels)
            prior.compute()

        result = _measured(score)
        return {**result, "what": f"5 per-fold confusion matrices of {batch} 224x224 labels + pixel prior"}
    from afno_repro.tasks.baselines import BASELINES
    from afno_repro.tasks.inpainting import composite

    image, mask, reconstruction = _inpainting_batch(batch)
    result = _measured(lambda: _score_images(image, composite(reconstruction, image, mask),
                                             *(fn(image, mask) for fn in BASELINES.values())))
    cpu = time.process_time()
    BASELINES["biharmonic"](image, mask)
    fill = (time.process_time() - cpu) / batch
    return {**result, "fill_cpu_seconds_per_image": fill,
            "what": f"PSNR + SSIM of the model and of {', '.join(BASELINES)} on {batch} 224x224 images"}


def cached_scoring(batch: int) -> dict[str, Any]:
    """Inpainting's scoring for a row whose biharmonic fills an earlier row stored (``task.baseline_cache``)."""
    import tempfile
    from pathlib import Path

    from afno_repro.tasks.baselines import biharmonic, masked_input
    from afno_repro.tasks.fill_cache import FillCache
    from afno_repro.tasks.inpainting import composite

    image, mask, reconstruction = _inpainting_batch(batch)
    with tempfile.TemporaryDirectory() as folder:
        solved = biharmonic(image, mask, cache=FillCache(folder))  # the earlier row: solves and stores
        stored = sum(path.stat().st_size for path in Path(folder).glob("*/*.npy"))
        cache = FillCache(folder)
        result = _measured(lambda: _score_images(image, composite(reconstruction, image, mask), masked_input(image, mask),
                                                 biharmonic(image, mask, cache=cache)))
        started = time.perf_counter()
        read = biharmonic(image, mask, cache=FillCache(folder))
        lookup = (time.perf_counter() - started) / batch
    if not torch.equal(read, solved):
        raise RuntimeError("fills read back from the cache differ from the fills solved: a bug in FillCache")
    return {**result, "read_seconds_per_image": lookup, "stored_mb_per_image": stored / batch / 1e6,
            "what": f"as above, biharmonic fills read back (stored by an earlier row) on {batch} 224x224 images"}


def _score_images(image: torch.Tensor, *guesses: torch.Tensor) -> None:
    """PSNR and SSIM of each guess of ``image``, updated and computed as the test loop does."""
    from afno_repro.tasks.inpainting import image_quality_metrics

    for guess in guesses:
        metrics = image_quality_metrics()
        metrics["psnr"].update(guess, image)
        metrics["ssim"].update(guess, image)
        metrics.compute()


def _inpainting_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, token-grid masks (Table 2's reading) and reconstructions of one 224x224 batch."""
    from afno_repro.data.masks import RandomWalkMask

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, 224, 224, generator=generator)
    mask = RandomWalkMask(grid="token")(batch, 224, generator).float().reshape(batch, 1, 224, 224)
    reconstruction = torch.rand(batch, 3, 224, 224, generator=generator)
    return image, mask, reconstruction


def _proportional_gb(pid: int) -> float | None:
    """A process's proportional resident memory (Linux: Pss), each page shared by n processes counted 1/n:
    a worker forked from the forkserver shares its libraries and the imported main script."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        return None
    return None


def pooled_scoring(batch: int, workers: int, batches: int = 4) -> dict[str, Any]:
    """Inpainting's scoring with the biharmonic fills in ``workers`` processes, as the test loop does it."""
    from afno_repro.tasks.baselines import BiharmonicPool, masked_input
    from afno_repro.tasks.inpainting import composite, image_quality_metrics

    image, mask, reconstruction = _inpainting_batch(batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    pool = BiharmonicPool(workers)
    pool.submit(image[:workers], mask[:workers])
    list(pool.finished(wait=True))
    startup = time.perf_counter() - started
    metrics = {name: image_quality_metrics() for name in ("model", "masked_input", "biharmonic")}
    # The main process's CPU time (its threads included: the pool's, which unpickle the fills), not
    # the time it waits for the workers: what competes with the model's forward passes.
    cpu_started, started = time.process_time(), time.perf_counter()
    for _ in range(batches):
        metrics["model"].update(composite(reconstruction, image, mask), image)
        metrics["masked_input"].update(masked_input(image, mask), image)
        pool.submit(image, mask, image)
        for filled, target in pool.finished():
            metrics["biharmonic"].update(filled, target)
    for filled, target in pool.finished(wait=True):
        metrics["biharmonic"].update(filled, target)
    for metric in metrics.values():
        metric.compute()
    seconds, main_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    worker_gb = [_proportional_gb(child.pid) for child in multiprocessing.active_children()]
    pool.close()
    return {"seconds": seconds / batches, "main_seconds": main_seconds / batches,
            "startup_seconds": startup,
            "workers_pss_gb": sum(worker_gb) if worker_gb and None not in worker_gb else None,
            "peak_gb": max((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / 1e9, 0.0),
            "what": f"as above, biharmonic in {workers} worker processes, per batch of {batch}, {batches} batches"}


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="images per batch (default: the task's evaluation batch: 1 Cityscapes crop, 8 otherwise)")
    parser.add_argument("--threads", type=nonnegative_int, default=0, help="torch threads in each measuring child (0: torch's)")
    parser.add_argument("--slow-path", action="store_true", help="also score one Cityscapes label the old way")
    parser.add_argument("--workers", type=positive_int, nargs="*",
                        help="inpainting: also score with the biharmonic fills in this many worker processes (each "
                             "count; default 1 2)")
    parser.add_argument("--json", type=output_file, help="write the results to this file too")
    args = parser.parse_args(argv)
    # An option for a task not measured was ignored without a word.
    for flag, given, task in (("--slow-path", args.slow_path, "cityscapes"), ("--workers", args.workers is not None, "inpainting")):
        if given and task not in args.tasks:
            parser.error(f"{flag} applies to the {task} task, which --tasks {' '.join(args.tasks)} leaves out; add {task} "
                         f"to --tasks, or leave {flag} out.")
    args.workers = [1, 2] if args.workers is None else args.workers

    rows = []
    print(f"{'task':<11} {'what':<86} {'seconds':>8} {'peak GB':>8} {'x forward':>10}", flush=True)
    for task in args.tasks:
        batch = args.batch or (1 if task == "cityscapes" else 8)
        measured = {"forward": in_child(forward, task, batch, threads=args.threads),
                    "scoring": in_child(scoring, task, 8 if task == "cityscapes" else batch, threads=args.threads)}
        if args.slow_path and task == "cityscapes":
            measured["scoring (old path)"] = in_child(scoring, task, batch, True, threads=args.threads)
        if task == "inpainting":
            measured["scoring, fills read back"] = in_child(cached_scoring, batch, threads=args.threads)
            for workers in args.workers:
                measured[f"scoring, {workers} workers"] = in_child(pooled_scoring, batch, workers, threads=args.threads)
        for part, result in measured.items():
            ratio = result["seconds"] / measured["forward"]["seconds"]
            print(f"{task:<11} {part + ': ' + result['what']:<86.86} {result['seconds']:>8.3f} {result['peak_gb']:>8.2f} "
                  f"{ratio:>10.3f}", flush=True)
            if "fill_cpu_seconds_per_image" in result:
                print(f"{'':<11} biharmonic fill: {result['fill_cpu_seconds_per_image']:.3f} s of CPU per image "
                      "(one core)", flush=True)
            if "read_seconds_per_image" in result:
                print(f"{'':<11} fill read back: {1000 * result['read_seconds_per_image']:.1f} ms per image (key and "
                      f"read), {result['stored_mb_per_image']:.3f} MB stored per image", flush=True)
            if "main_seconds" in result:
                workers_gb = "n/a" if result["workers_pss_gb"] is None else f"{result['workers_pss_gb']:.2f} GB"
                print(f"{'':<11} main process {result['main_seconds']:.3f} s of CPU per batch "
                      f"({result['main_seconds'] / measured['forward']['seconds']:.3f}x forward); workers started in "
                      f"{result['startup_seconds']:.1f} s and hold {workers_gb} (Pss)", flush=True)
            rows.append({"task": task, "part": part, **result, "time_vs_forward": ratio})
    over = [r for r in rows if r["part"].startswith("scoring") and r["time_vs_forward"] > 1.0]
    for row in over:
        print(f"note: scoring {row['task']} costs {row['time_vs_forward']:.1f}x the model's forward pass", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"threads": torch.get_num_threads() if not args.threads else args.threads, "rows": rows},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
