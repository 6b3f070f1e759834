"""Paper-scale preflight: what every row of ``make reproduce-all SCALE=paper`` costs, measured before it is run.

``python -m afno_repro.pipeline --scale paper --preflight`` (with ``--only EXPERIMENT`` and ``--rows WORD``)
takes every row of every paper experiment at its true size (the model, resolution, data layout and recipe of
the paper-scale run) and, for each, through the same code as a training run (:func:`afno_repro.train.build`:
the real data module, task, precision and trainer):

1. trains ``warmup + steps`` real optimizer steps on data in the dataset's real on-disk layout (the folders
   given with ``--imagenet``/``--datasetgan``/``--cityscapes``, else small synthetic ones written in those
   layouts at the datasets' image sizes, :mod:`afno_repro.data.layouts`), timing the steps after the warm-up;
2. runs two evaluation batches through the real test loop (the model's inference, every metric and the task's
   baselines, the biharmonic fills solved as the first row on a set of images solves them, with no fill cache) and
   times the second (the first warms the path up), and, on that batch, the model's passes alone
   (the task's ``evaluation_forwards``: one ``predict_step``, or every inference mode a task scores, as Table 4's
   sliding windows and resized frames);
3. records parameters, forward GMACs per image (the paper's GFLOPs convention) at the training resolution, peak
   memory of training over the timed steps (CUDA's allocator on a GPU; on a CPU the process's resident-memory
   growth, sampled every 5 ms, plus the weights, gradients and optimizer state already live, counted from their
   tensors: both the memory in use at the peak) and of evaluation (the allocator's peak; the resident set's
   growth), and from these the full recipe's cost:

   - optimizer steps = epochs x ceil(training images / effective global batch);
   - training PFLOPs = 6 x forward MACs x training images x epochs (a step is ~3 forward passes of 2 FLOPs per
     multiply-accumulate; FFTs are not counted);
   - GPU-hours on one GPU: measured on a GPU (epochs x images / measured images per second), otherwise the
     training FLOPs at an *assumed* sustained rate (a named GPU's bf16 peak at a stated utilisation; printed
     as an assumption, never as a measurement).

The batch run is the configured per-device batch on a GPU (halved until it fits), and ``--batch`` (default 1, or 2 where Mixup/CutMix pairs images)
on a CPU. The paper's per-device batch is predicted from it linearly: step time x (paper batch / run batch),
and memory = the optimizer state counted from the parameters (weights, gradients and AdamW's two moments in
float32: 16 bytes per parameter) + the rest of the measured peak x (paper batch / run batch).

Flags, per row: ``memory``: the paper's per-device batch does not fit in 80 GB (measured on a GPU at that
batch, predicted otherwise), with the largest per-device batch that fits and the accumulation steps or devices
that keep the paper's global batch; ``evaluation``: evaluating a batch costs more than 1.5x the model's own passes on
it; ``failed``: a step failed at full size (the error is recorded). Rows whose cost cannot differ (Figure 4's
thresholds, the same trunk in two experiments) are measured once and say which row they share.

Runs that finetune are built without their pretraining run (``pretrained=null``) and Figure 1's Swin trunks
without the authors' checkpoints (random weights): neither changes what a step costs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from afno_repro.cli import device_name
from afno_repro.releases import PAPER_TRAIN_IMAGES

__all__ = ["ASSUMED_GPU", "PAPER_TRAIN_IMAGES", "PreflightError", "format_table", "paper_train_images", "preflight",
           "preflight_row", "preflight_section",
           "write_layouts"]

# The sustained rate GPU-hours are computed at when no GPU measured them: an assumption, printed as one.
# Both numbers come from one H200 (2026-12-04, scripts/benchmark_training.py, README "Speed on a GPU"): the
# bf16 matrix-product rate it measured (798 TFLOP/s; the spec sheet's 989 is not reached) and the median share
# of that rate one training step of the Table 2, 4 and 5 rows reached (9.8%, 3.6% to 34%). The share is of the
# measured rate, so the two must be multiplied together, not the share with the spec sheet's peak.
ASSUMED_GPU = {"name": "NVIDIA H200", "bf16_dense_tflops": 798.0, "utilisation": 0.10,
               "peak_how": "the bf16 matrix-product rate measured on one, 2026-12-04",
               "why": "the median share of that measured rate the Table 2, 4 and 5 rows reached in one training "
                      "step on it (3.6% to 34%, README 'Speed on a GPU')"}
MEMORY_LIMIT_GB = 80.0
EVALUATION_LIMIT = 1.5
# Keys that do not change what a step computes: two rows differing only in these cost the same.
_COST_NEUTRAL = {"sparsity_threshold", "checkpoint", "require_checkpoint", "drop_path_rate", "lr", "weight_decay",
                 "seed", "image_seed", "subset_seed", "subset_file", "root", "num_grid_images",
                 "baseline_cache"}  # always null in a preflight (_overrides): it measures the fills solved


class PreflightError(ValueError):
    """A row could not be built from what the user gave (a data folder, an override): nothing to measure."""


# ------------------------------------------------------------------------------------------------ data
def _data_key(cfg: DictConfig) -> str:
    """The dataset of a row's data config as its data module names it (``imagenet``, ``cityscapes``,
    ``datasetgan``; :func:`afno_repro.runs.record.data_label` without the category)."""
    from afno_repro.runs.record import data_label

    return str(data_label(cfg.data)).split("/")[0]


def write_layouts(root: Path, needed: Sequence[str]) -> dict[str, str]:
    """Synthetic datasets in the real layouts for ``needed`` (imagenet, datasetgan, cityscapes) under ``root``."""
    from afno_repro.data.layouts import write_cityscapes, write_datasetgan, write_imagenet

    writers = {"imagenet": write_imagenet, "datasetgan": write_datasetgan, "cityscapes": write_cityscapes}
    roots = {}
    for name in needed:
        folder = Path(root) / name
        if not (folder / ".complete").is_file():
            writers[name](folder)
            (folder / ".complete").touch()
        roots[name] = str(folder)
    return roots


def paper_train_images(cfg: DictConfig) -> int | None:
    """Training images per epoch by the paper's datasets' published sizes: ``data.train_samples_per_epoch`` when set,
    else the dataset's split size (times ``data.subset_fraction``); ``None`` for data of unknown size."""
    data = cfg.data
    if data.get("train_samples_per_epoch"):
        return int(data.train_samples_per_epoch)
    from afno_repro.runs.record import data_label

    images = PAPER_TRAIN_IMAGES.get(str(data_label(data)))  # e.g. imagenet, datasetgan/face
    if images is not None and data.get("subset_fraction"):
        images = round(images * float(data.subset_fraction))
    return images


def _train_images(cfg: DictConfig, datamodule: Any, synthetic: bool) -> int | None:
    """Training images per epoch: the real data's count when the row read real folders, else the paper's."""
    if not synthetic and not cfg.data.get("train_samples_per_epoch"):
        try:
            return len(datamodule.train_dataloader().dataset)
        except TypeError:  # a dataset without a length (an iterable one): the paper's count
            pass
    return paper_train_images(cfg)


# ------------------------------------------------------------------------------------------------ memory
def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _trim_heap() -> None:
    """``malloc_trim(0)`` where the C library has it (glibc); elsewhere nothing."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


# How a CPU preflight measured memory until 2026-12-05: the resident set's growth from the start of training, which
# left out the weights (live before) and counted the optimizer state only where its peak caught it, while the
# prediction subtracted all of it (a record without ``memory_measure`` is one of these).
_RESIDENT_GROWTH = ("resident-set growth from the start of training, without the weights (the C library keeps freed "
                    "memory: a row after others may read low)")
# Since: growth over the timed steps + the training state live when they start, counted from its tensors.
_TIMED_GROWTH = "resident set over the timed steps{how}, + the weights, gradients and optimizer state live before them"

# glibc's mallopt parameters: allocations from 64 KiB up get pages of their own, handed back when freed.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def resident_tracks_live_memory() -> str:
    """Make the resident set follow the bytes in use, so a row's peak is its own; returns how memory is measured.

    glibc keeps freed heap pages resident and serves later allocations from them, so the resident set's growth
    during a row under-counts a row that reuses what earlier rows freed (a SegFormer-B3 row measured 0.65 GB after
    other rows, 1.30 GB first) and over-counts fragmentation. With every allocation of 64 KiB or more (every
    tensor that matters) in pages of its own that are unmapped when freed, the resident set is the memory in use.
    """
    try:
        libc = _libc()
        if libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024) and libc.mallopt(_M_TRIM_THRESHOLD, 0):
            return _TIMED_GROWTH.format(how=", freed memory handed back (glibc mallopt)")
    except (OSError, AttributeError):
        pass
    return _TIMED_GROWTH.format(how=" (the C library keeps freed memory: a row after others may read low)")


class _ResidentPeak:
    """The process's resident memory, sampled every 5 ms in a thread: the peak since :meth:`reset`, in GB."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._base = self._peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _now(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._now())

    def reset(self) -> None:
        # Hand memory that earlier rows freed back to the system first: glibc keeps freed heap pages resident and
        # reuses them without the resident set growing, which would make every row after the first look small.
        _trim_heap()
        self._base = self._peak = self._now()

    def peak_gb(self) -> float:
        self._peak = max(self._peak, self._now())
        return (self._peak - self._base) / 1e9

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _training_state_gb(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> float:
    """GB held by the module's parameters and their gradients and by the optimizers' state tensors (each storage once)."""
    storages: dict[tuple[str, int], int] = {}
    tensors = [*module.parameters(), *(p.grad for p in module.parameters() if p.grad is not None),
               *(value for optimizer in optimizers for state in optimizer.state.values() for value in state.values()
                 if isinstance(value, torch.Tensor))]
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values()) / 1e9


class _Meter:
    """Peak memory of a phase: CUDA's allocator on a GPU, the resident set on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._resident = None if device.type == "cuda" else _ResidentPeak()
        # CUDA's allocator peak is every tensor in use; the resident set's peak is counted from the reset.
        self.counts_growth = self._resident is not None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        self.sync()
        if self._resident is None:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._resident.reset()

    def peak_gb(self) -> float:
        self.sync()
        if self._resident is None:
            return torch.cuda.max_memory_allocated(self.device) / 1e9
        return self._resident.peak_gb()

    def close(self) -> None:
        if self._resident is not None:
            self._resident.close()


class _Timer(pl.Callback):
    """Times training steps (after ``warmup``) and the last evaluation batch, with the model's own passes on it."""

    def __init__(self, meter: _Meter, warmup: int) -> None:
        self.meter, self.warmup = meter, warmup
        self.steps: list[float] = []
        self.data_wait: list[float] = []
        self.train_peak_gb = 0.0
        self.live_at_reset_gb = 0.0
        self.evaluation: dict[str, Any] = {}
        self._last_end: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            # The peak is the timed steps', after the warm-up has created the gradients and the optimizer's state
            # (AdamW allocates its moments in its first step). A meter that counts growth (the resident set on a
            # CPU) does not see what is live at its reset, so that is counted from the tensors themselves.
            self.meter.reset()
            if self.meter.counts_growth:
                self.live_at_reset_gb = _training_state_gb(pl_module, trainer.optimizers)
        self.meter.sync()
        self._start = time.perf_counter()
        if self._last_end is not None:
            self.data_wait.append(self._start - self._last_end)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.meter.sync()
        self._last_end = time.perf_counter()
        if batch_idx >= self.warmup:
            self.steps.append(self._last_end - self._start)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Both devices' figure is then the memory in use at the peak, weights and optimizer state included.
        self.train_peak_gb = self.meter.peak_gb() + self.live_at_reset_gb

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        # Batch 0 warms the evaluation path up (plans, allocator); the next one is timed, and the model alone on
        # it, in the trainer's precision, is what its scoring is compared with.
        self._timed = batch_idx == trainer.num_test_batches[dataloader_idx] - 1
        if not self._timed:
            return
        self.evaluation["warm"] = batch_idx > 0
        self.meter.reset()
        start = time.perf_counter()
        # Inference mode, as Lightning's test loop runs the step this is compared with.
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            pl_module.evaluation_forwards(batch)
        self.meter.sync()
        self.evaluation["forward_s"] = time.perf_counter() - start
        self.evaluation["forward_peak_gb"] = self.meter.peak_gb()
        self.evaluation["batch"] = int(batch["image"].shape[0])
        self.evaluation["image_shape"] = list(batch["image"].shape[-2:])
        self.meter.reset()
        self._start = time.perf_counter()

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._timed:
            return
        self.meter.sync()
        self.evaluation["step_s"] = time.perf_counter() - self._start
        self._start = time.perf_counter()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The epoch-end computation (metric compute, the baselines' reductions) belongs to the batch's cost.
        self.meter.sync()
        self.evaluation["compute_s"] = time.perf_counter() - self._start
        self.evaluation["peak_gb"] = self.meter.peak_gb()


# ------------------------------------------------------------------------------------------------ one row
def _overrides(experiment: str, point: Sequence[str], data_root: str | None, device: str, batch: int,
               steps: int, cfg: DictConfig, extra: Sequence[str]) -> list[str]:
    overrides = [f"experiment={experiment}", *point, *extra, "pretrained=null", "~logger", "~callbacks",
                 "global_batch=null", f"data.batch_size={batch}", f"++trainer.max_steps={steps}",
                 "++trainer.limit_val_batches=0", "++trainer.limit_test_batches=2", "++trainer.enable_checkpointing=false",
                 "++trainer.enable_progress_bar=false", f"++trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
                 "++trainer.devices=1", "++trainer.num_nodes=1", "++trainer.enable_model_summary=false"]
    if data_root is not None:
        overrides.append(f"data.root={data_root}")
    if cfg.data.get("val_batch_size") is not None:
        overrides.append(f"data.val_batch_size={batch}")
    if cfg.backbone.get("require_checkpoint"):
        overrides.append("backbone.require_checkpoint=false")
    if cfg.task.get("baseline_cache") is not None:
        # What a row pays when it is the first on its test images: every biharmonic fill solved, none read back
        # (and nothing written below the user's runs_root).
        overrides.append("task.baseline_cache=null")
    return overrides


def smallest_batch(cfg: DictConfig) -> int:
    """The smallest per-device batch a row trains on, what a CPU preflight runs: 2 where Mixup/CutMix pairs each
    image with another (ImageNet pretraining), 1 otherwise."""
    from afno_repro.tasks.classification import mixes_pairs

    task = cfg.get("task") or {}
    return 2 if mixes_pairs(float(task.get("mixup_alpha") or 0), float(task.get("cutmix_alpha") or 0)) else 1


def _cost_key(cfg: DictConfig) -> str:
    """What decides a step's cost: the model, the task, the data's sizes and the batch, without cost-neutral keys."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in sorted(value.items()) if k not in _COST_NEUTRAL}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    container = OmegaConf.to_container(cfg, resolve=True)
    return json.dumps(strip({key: container.get(key) for key in ("backbone", "task", "data")}), sort_keys=True,
                      default=str)


def preflight_row(experiment: str, point: Sequence[str], *, data_roots: dict[str, str], synthetic: bool,
                  device: str, batch: int | None, warmup: int, steps: int, work_dir: Path,
                  extra: Sequence[str] = ()) -> dict[str, Any]:
    """Measure one row (module docstring); the row's record, with ``error`` set if it failed at full size."""
    from afno_repro.config import compose
    from afno_repro.failures import describe, user_cause
    from afno_repro.runs.record import model_info
    from afno_repro.train import _batch_plan, build

    label = " ".join(point) or "(single run)"
    paper = compose([f"experiment={experiment}", *point, *extra, "pretrained=null"], output_dir=str(work_dir))
    record: dict[str, Any] = {"experiment": experiment, "row": label, "overrides": list(point),
                              "epochs": int(paper.trainer.max_epochs), "image_size": int(paper.data.image_size)}
    plan = _batch_plan(paper)
    record["paper_batch"] = {key: plan[key] for key in ("per_device", "world", "accumulation", "effective_global",
                                                         "declared_global")} if plan else None
    paper_per_device = plan["per_device"] if plan else int(paper.data.batch_size)
    # Parameters and FLOPs of the row's model as it trains (a shape on the meta device): a trunk that starts from a
    # checkpoint (Figure 1's Swin rows) is counted without reading it, as it is measured without it.
    shapes = OmegaConf.merge(paper, {"backbone": {"require_checkpoint": False}}) \
        if paper.backbone.get("require_checkpoint") else paper
    try:
        record.update(model_info(shapes))
    except Exception as error:  # noqa: BLE001 - a model that cannot be built at full size is this row's finding
        if user_cause(error) is not None:
            raise PreflightError(f"{experiment} {label}: {describe(user_cause(error))}") from error
        record["error"] = _error_text(error)
        return record
    run_batch = batch or (paper_per_device if device == "cuda" else smallest_batch(paper))
    torch_device = torch.device(device)
    while True:
        meter = _Meter(torch_device)
        timer = _Timer(meter, warmup)
        cfg = compose(_overrides(experiment, point, data_roots.get(_data_key(paper)), device, run_batch, warmup + steps,
                                 paper, extra), output_dir=str(work_dir))
        built = None
        try:
            pl.seed_everything(0, verbose=False)
            built = build(cfg, extra_callbacks=[timer])
            started = time.perf_counter()
            built.trainer.fit(built.task, datamodule=built.datamodule)
            built.trainer.test(built.task, datamodule=built.datamodule, verbose=False)
            record["wall_s"] = time.perf_counter() - started
            record["precision"] = built.numerics["trainer"]
            record["train_images"] = _train_images(paper, built.datamodule, synthetic)
            break
        except SystemExit as stop:
            # Ctrl-C during a fit or test reaches Lightning first, which stops the trainer, ignores any further
            # SIGINT and exits with status 1: turned back into the interruption it is, which the pipeline reports
            # (where the rows measured so far are, how to resume) with status 130.
            if built is not None and built.trainer.interrupted:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt from stop
            raise
        except torch.OutOfMemoryError:
            if torch_device.type != "cuda" or run_batch == 1:
                record["error"] = f"out of memory at batch {run_batch}"
                return record
            run_batch //= 2
            torch.cuda.empty_cache()
        except Exception as error:  # noqa: BLE001 - a step that fails at full size is this row's finding
            if user_cause(error) is not None:  # bad input (a data folder, an option): the user's to fix, not a finding
                raise PreflightError(f"{experiment} {label}: {describe(user_cause(error))}") from error
            record["error"] = _error_text(error)
            return record
        finally:
            meter.close()
            if torch_device.type == "cuda":
                torch.cuda.empty_cache()
    if not timer.steps:
        record["error"] = f"no training step was timed (the training split gave fewer than {warmup + steps} batches)"
        return record
    record["run_batch"] = run_batch
    record["train"] = {"batch": run_batch, "steps_timed": len(timer.steps), "step_s": sum(timer.steps) / len(timer.steps),
                       "peak_gb": timer.train_peak_gb,
                       "data_wait_s": (sum(timer.data_wait) / len(timer.data_wait)) if timer.data_wait else None}
    evaluation = timer.evaluation
    if evaluation.get("step_s") is not None:
        evaluation["total_s"] = evaluation["step_s"] + evaluation.get("compute_s", 0.0)
        evaluation["over_forward"] = evaluation["total_s"] / max(evaluation["forward_s"], 1e-9)
    record["evaluation"] = evaluation
    _predict(record, paper_per_device, device)
    return record


def _error_text(error: BaseException) -> str:
    """The innermost cause of ``error`` in one line (Hydra wraps what a target raises in InstantiationException)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def _predict(record: dict[str, Any], paper_per_device: int, device: str) -> None:
    """The paper's per-device batch and the full recipe, from what was measured (module docstring)."""
    train, run_batch = record["train"], record["run_batch"]
    scale = paper_per_device / run_batch
    params = record["params_m"] * 1e6
    state_gb = 16 * params / 1e9  # float32 weights, gradients and AdamW's two moments
    measured_at_paper_batch = device == "cuda" and run_batch == paper_per_device
    step_s = train["step_s"] * scale
    peak = train["peak_gb"] if measured_at_paper_batch else state_gb + max(train["peak_gb"] - state_gb, 0.0) * scale
    record["paper_per_device"] = {"batch": paper_per_device, "step_s": step_s, "peak_gb": peak,
                                  "how": "measured" if measured_at_paper_batch else
                                  f"predicted from batch {run_batch}: time x {scale:g}; memory = {state_gb:.2f} GB of "
                                  f"optimizer state + the rest x {scale:g}"}
    images = record.get("train_images")
    batch = record["paper_batch"]["effective_global"] if record.get("paper_batch") else paper_per_device
    flops_per_image = 6 * record["gflops"] * 1e9
    if images:
        record["optimizer_steps"] = record["epochs"] * math.ceil(images / batch)
        record["train_pflops"] = flops_per_image * images * record["epochs"] / 1e15
        if device == "cuda":
            record["gpu_hours"] = record["epochs"] * images * train["step_s"] / run_batch / 3600
            record["gpu_hours_how"] = "measured images/s on this GPU"
        else:
            rate = ASSUMED_GPU["bf16_dense_tflops"] * ASSUMED_GPU["utilisation"] * 1e12
            record["gpu_hours"] = record["train_pflops"] * 1e15 / rate / 3600
            record["gpu_hours_how"] = (f"assumed: {ASSUMED_GPU['name']} at {100 * ASSUMED_GPU['utilisation']:.0f}% of "
                                       f"{_peak(ASSUMED_GPU)}")
    flags = []
    if peak > MEMORY_LIMIT_GB:
        basis = "measured" if measured_at_paper_batch else (
            "predicted, float32 on a CPU: bf16-mixed on a GPU needs less" if device != "cuda" else "predicted")
        record["fits"] = _fitting_batch(peak, state_gb, paper_per_device, record.get("paper_batch"))
        flags.append(f"memory: {peak:.0f} GB at the paper's per-device batch {paper_per_device} (> {MEMORY_LIMIT_GB:g} GB; "
                     f"{basis}); {record['fits']['advice']}")
    ratio = record["evaluation"].get("over_forward")
    if ratio is not None and ratio > EVALUATION_LIMIT:
        flags.append(f"evaluation: {ratio:.2f}x the model's own passes on the same batch (> {EVALUATION_LIMIT:g}x)")
    record["flags"] = flags


def _fitting_batch(peak_gb: float, state_gb: float, per_device: int, paper_batch: dict[str, Any] | None) -> dict[str, Any]:
    """The largest divisor of the per-device batch whose predicted memory fits :data:`MEMORY_LIMIT_GB`, and what
    to run: with a declared global batch, ``data.batch_size`` alone (the batch plan accumulates the rest,
    :mod:`afno_repro.batch`); without one, ``trainer.accumulate_grad_batches`` as well. Or as many devices.

    >>> _fitting_batch(133.0, 1.4, 64, {"declared_global": 64})["advice"]
    'fits at 32 per device: data.batch_size=32 (2 accumulation steps keep the global batch of 64), or 2 devices'
    >>> _fitting_batch(133.0, 1.4, 64, None)["advice"]
    'fits at 32 per device: data.batch_size=32 trainer.accumulate_grad_batches=2, or data.batch_size=32 on 2 devices'
    """
    per_image = max(peak_gb - state_gb, 1e-9) / per_device
    most = math.floor((MEMORY_LIMIT_GB - state_gb) / per_image)
    if most < 1:
        return {"batch": None, "accumulation": None,
                "advice": f"not even one image fits in {MEMORY_LIMIT_GB:g} GB: the model needs sharding"}
    batch = max(d for d in range(1, min(most, per_device) + 1) if per_device % d == 0)
    steps = per_device // batch
    declared = (paper_batch or {}).get("declared_global")
    how = (f"data.batch_size={batch} ({steps} accumulation steps keep the global batch of {declared}), or {steps} "
           "devices" if declared else
           f"data.batch_size={batch} trainer.accumulate_grad_batches={steps}, or data.batch_size={batch} on {steps} devices")
    return {"batch": batch, "accumulation": steps, "advice": f"fits at {batch} per device: {how}"}


# ------------------------------------------------------------------------------------------------ all rows
@contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's per-fit banners and warnings, muted for the many short fits of a preflight."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


# What makes two preflights' measurements comparable: rows measured under other values are not reused.
_COMPARABLE = ("device", "torch", "warmup", "steps", "batch", "overrides", "data_roots", "memory_measure")


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A preflight record (``<root>/preflight.json``) and None, or None and why it is not one (missing, unreadable,
    cut short, or not the shape :func:`preflight` writes: an object whose ``rows`` is a list of objects)."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, ValueError) as error:
        return None, f"{path} cannot be read as JSON ({error}): it was cut short or is not a preflight record"
    if not isinstance(record, dict) or not isinstance(record.get("rows"), list) \
            or not all(isinstance(row, dict) for row in record["rows"]):
        return None, (f"{path} is not a preflight record (an object whose rows are a list of objects, as "
                      "`python -m afno_repro.pipeline --preflight` writes)")
    return record, None


def _resumable(record_path: Path | None, result: dict[str, Any]) -> dict[str, Any]:
    """Rows of an interrupted preflight at ``record_path`` measured as ``result`` will be (:data:`_COMPARABLE`), by
    cost id; failed rows are measured again (a failure may have been this machine's, not the row's). A kept row
    keeps the commit it was measured at (``code``), and the table's legend names every commit its rows come from."""
    if record_path is None or not record_path.is_file():
        return {}
    earlier, _ = read_record(record_path)  # a record that is not one has nothing to resume; the new one replaces it
    if earlier is None or earlier.get("complete", True) or any(earlier.get(key) != result[key] for key in _COMPARABLE):
        return {}
    return {r["cost_id"]: r for r in earlier.get("rows", []) if r.get("cost_id") and "error" not in r
            and not r.get("same_cost_as")}


def preflight(rows: Sequence[tuple[str, list[str]]], *, data_roots: dict[str, str] | None, work_dir: Path,
              device: str = "cpu", batch: int | None = None, warmup: int = 1, steps: int | None = None,
              extra: Sequence[str] = (), printer=print, record_path: Path | None = None) -> dict[str, Any]:
    """Measure ``rows`` ((experiment, sweep point) pairs) with ``extra`` overrides on every row; the record
    :func:`format_table` and the report show.

    With ``record_path`` the record is written there after every row (``complete: false`` until the last), so
    an interrupted preflight keeps what it measured, and a preflight started again with the same settings on an
    incomplete record measures only the rows that record lacks."""
    from afno_repro.config import compose
    from afno_repro.console import quiet_third_party_noise
    from afno_repro.runs import write_json
    from afno_repro.runs.record import _git_commit

    quiet_third_party_noise()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    steps = steps or (5 if device == "cuda" else 1)
    needed = sorted({_data_key(compose([f"experiment={e}", *p, *extra, "pretrained=null"], output_dir=str(work_dir)))
                     for e, p in rows})
    given = dict(data_roots or {})
    missing = [name for name in needed if name not in given]
    if missing:
        printer(f"preflight: writing synthetic {', '.join(missing)} in the real layouts under {work_dir / 'data'} "
                "(pass the dataset folders to measure on the real files)")
        given.update(write_layouts(work_dir / "data", missing))
    measured_on = device_name(device)
    commit = _git_commit()
    started = time.time()
    records, seen = [], {}
    memory = "CUDA allocator peak" if device == "cuda" else resident_tracks_live_memory()
    result = {"device": measured_on, "torch": torch.__version__, "warmup": warmup, "steps": steps, "batch": batch,
              "memory_measure": memory,
              "overrides": list(extra),
              "data": (f"synthetic {', '.join(missing)} in the real layouts" if missing else "the given dataset folders")
                      + (f"; {', '.join(sorted(data_roots))} from the given folders" if missing and data_roots else ""),
              "data_roots": given, "assumed_gpu": ASSUMED_GPU, "memory_limit_gb": MEMORY_LIMIT_GB,
              "evaluation_limit": EVALUATION_LIMIT, "rows_planned": len(rows), "complete": False, "total_s": 0.0,
              "rows": records}
    kept = _resumable(record_path, result)
    if kept:
        printer(f"preflight: resuming an interrupted preflight: {len(kept)} measured row cost(s) kept from {record_path}")
    for experiment, point in rows:
        paper = compose([f"experiment={experiment}", *point, *extra, "pretrained=null"], output_dir=str(work_dir))
        key = _cost_key(paper)
        cost_id = hashlib.sha1(key.encode()).hexdigest()[:16]
        if key in seen:
            record = {**seen[key], "experiment": experiment, "row": " ".join(point) or "(single run)",
                      "overrides": list(point), "same_cost_as": f"{seen[key]['experiment']} {seen[key]['row']}"}
            record.pop("row_s", None)
            record.pop("wall_s", None)
        elif cost_id in kept:
            record = {**kept[cost_id], "experiment": experiment, "row": " ".join(point) or "(single run)",
                      "overrides": list(point)}
            # The measurements are kept; what is worked out from them is worked out again by this version.
            record.pop("fits", None)
            _predict(record, record["paper_per_device"]["batch"], device)
            seen[key] = record
        else:
            row_started = time.time()
            with _quiet():
                # A row on a given folder counts that folder's images; one on synthetic data, the paper's.
                record = preflight_row(experiment, point, data_roots=given, synthetic=_data_key(paper) in missing,
                                       device=device,
                                       batch=batch, warmup=warmup, steps=steps, work_dir=work_dir / "run",
                                       extra=extra)
            record["row_s"] = time.time() - row_started
            record["cost_id"] = cost_id
            record["code"] = commit
            seen[key] = record
        records.append(record)
        printer(format_line(record))
        # The measuring time of every row, this session's and an interrupted one's: what the whole preflight took.
        result["total_s"] = sum(r.get("row_s", 0.0) for r in records)
        if record_path is not None:
            write_json(record_path, result)
    result["complete"] = True
    result["this_run_s"] = time.time() - started
    if record_path is not None:
        write_json(record_path, result)
    return result


# ------------------------------------------------------------------------------------------------ output
_COLUMNS = ("experiment", "row", "params M", "GMACs/img", "run batch", "step s", "train GB", "eval / fwd",
            "paper batch", "paper step s", "paper GB", "opt. steps", "PFLOPs", "GPU-h", "flags")


def _cells(record: dict[str, Any]) -> list[str]:
    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    def amount(value: Any) -> str:
        # Three significant digits below 100 (a few-shot row's 0.24 GPU-hours is not 0), whole numbers above.
        return "-" if value is None else format(value, ".3g" if abs(value) < 100 else ",.0f")

    if "error" in record:
        return [record["experiment"], record["row"], number(record.get("params_m"), ".1f"),
                number(record.get("gflops"), ".1f"), "-", "-", "-", "-", "-", "-", "-", "-", "-", "-",
                f"failed: {record['error']}"]
    paper = record["paper_per_device"]
    flags = list(record.get("flags") or [])
    if record.get("same_cost_as"):
        flags.append(f"same cost as {record['same_cost_as']}")
    return [record["experiment"], record["row"], number(record["params_m"], ".1f"), number(record["gflops"], ".1f"),
            str(record["run_batch"]), number(record["train"]["step_s"], ".2f"), number(record["train"]["peak_gb"], ".2f"),
            number(record["evaluation"].get("over_forward"), ".2f"), str(paper["batch"]), number(paper["step_s"], ".1f"),
            number(paper["peak_gb"], ".1f"), number(record.get("optimizer_steps"), ",d"),
            amount(record.get("train_pflops")), amount(record.get("gpu_hours")),
            "; ".join(flags) or "-"]


def format_line(record: dict[str, Any]) -> str:
    return "  ".join(_cells(record))


def format_table(result: dict[str, Any]) -> str:
    """The preflight as a Markdown table, with what was measured and what was assumed."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_cells(record)) + " |" for record in result["rows"]]
    return "\n".join([*lines, "", _legend(result)])


def _peak(gpu: dict[str, Any]) -> str:
    """The assumed GPU's bf16 rate and where it comes from (records before 2026-12-05 name none: a spec sheet's)."""
    return (f"its {gpu['bf16_dense_tflops']:g} TFLOP/s bf16 dense peak" if "peak_how" not in gpu else
            f"{gpu['bf16_dense_tflops']:g} TFLOP/s ({gpu['peak_how']})")


def _legend(result: dict[str, Any]) -> str:
    gpu = result["assumed_gpu"]
    hours = sum(r.get("gpu_hours") or 0 for r in result["rows"])
    measured_on_gpu = not result["device"].startswith("cpu")
    rate = ("measured on this GPU" if measured_on_gpu else
            f"ASSUMED, not measured: {gpu['name']} at {100 * gpu['utilisation']:.0f}% of {_peak(gpu)}, {gpu['why']}")
    planned = result.get("rows_planned", len(result["rows"]))
    incomplete = ("" if result.get("complete", True) else
                  f"INCOMPLETE: {len(result['rows'])} of {planned} rows measured (the preflight was interrupted; run it "
                  "again with the same options to measure the rest). ")
    took = "the whole preflight took" if result.get("complete", True) else "the rows so far took"
    commits: dict[str, int] = {}
    for row in result["rows"]:
        if row.get("code") and not row.get("same_cost_as"):
            commits[row["code"][:12]] = commits.get(row["code"][:12], 0) + 1
    code = ("" if not commits else f"Code: commit {next(iter(commits))}. " if len(commits) == 1 else
            "Code: rows measured at commits " + ", ".join(f"{c} ({n} rows)" for c, n in commits.items()) +
            " (an interrupted preflight resumed after the code changed). ")
    return (f"{incomplete}{code}Measured on {result['device']} (torch {result['torch']}), data: {result['data']}; {result['steps']} timed "
            f"step(s) after {result['warmup']} warm-up per row; {took} {result['total_s']:.0f} s. "
            f"`step s` and `train GB` are at the run batch; `paper step s` and `paper GB` at the paper's per-device "
            f"batch ({'measured' if measured_on_gpu else 'predicted linearly from the run batch'}; on a CPU the memory "
            f"is float32 resident memory: {result.get('memory_measure') or _RESIDENT_GROWTH}). `eval / fwd`: the second of two evaluation batches through the test loop (inference, "
            f"metrics, baselines) over the model's own passes on it (every inference mode the test step runs). GPU-h: one GPU, training only, {rate}; "
            f"{hours:,.0f} GPU-hours for every row. PFLOPs: 6 x forward MACs x images x epochs (no FFTs).")


def preflight_section(result: dict[str, Any]):
    """The report's section: the table of :func:`format_table`, one row per run of the paper-scale pipeline."""
    from afno_repro.report.build import Section

    rows = [dict(zip(_COLUMNS, _cells(record))) for record in result["rows"]]
    intro = ("What `make reproduce-all SCALE=paper` will cost, measured per row before it runs "
             "(`python -m afno_repro.pipeline --scale paper --preflight`).")
    return Section("preflight", "Preflight: the cost of every paper-scale row", intro, tables={"preflight": rows},
                   notes=[_legend(result)])
