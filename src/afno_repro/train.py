"""One training run: composed config in, checkpoints, ``metrics.json`` and a printed summary out.

``train.py`` at the repository root is a thin ``@hydra.main`` around :func:`main`. The flow is::

    cfg --> the values it leaves to code filled in (afno_repro.config.fill_computed)
        --> pretrained=auto|<file>|null resolved (afno_repro.pretrained; a missing run is named first)
        --instantiate--> DataModule, backbone(mixer) [+ pretrained trunk], task(backbone, optimizer, scheduler)
        --> pl.Trainer(loggers, callbacks).fit --> test of the selected checkpoint (model and the
        task's baselines on the same images) --> <run dir>/metrics.json (+ checkpoints/, csv/, wandb/, images/)

The harness knows no task: the task declares its selection metric, reported numbers, baselines
and readings (:mod:`afno_repro.tasks.base`), so ``metrics.json`` has one shape for every task.

Errors a user can fix (unknown names, bad paths, shapes that do not divide, a NaN loss) are printed
as one paragraph without a traceback (set ``HYDRA_FULL_ERROR=1`` for it) and exit with status 2;
checkpoints and results already written stay where they are.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from afno_repro.batch import batch_plan, world_size
from afno_repro.config import fill_computed
from afno_repro.precision import apply_precision, resolve_precision
from afno_repro.pretrained import load_pretrained_backbone, resolve_pretrained
from afno_repro.report.render import format_number
from afno_repro.runs import (auto_resume, library_versions, logged_count, refuse_reuse_message, resume_command, trunk_hash,
                             unwritable_message, write_json)

log = logging.getLogger(__name__)


def _quiet_third_party_noise() -> None:
    """Drop what every run would print and that says nothing about the run, or says it wrong:
    Lightning's advertisement for its cloud logger, a deprecation inside Lightning's own pytree
    helper, and the "Total Flops" line of Lightning's layer table, which counts only modules that
    set ``example_input_array`` and so printed 0 right under the run's own GFLOPs line."""
    import warnings

    class _DropAdvert(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            # The second: Lightning announcing that it keeps the layer table configured in callbacks/.
            return "litlogger" not in message and "Skipping setting a default `ModelSummary`" not in message

    class _DropZeroFlops(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            if "Total Flops" in message:
                record.msg, record.args = _without_flops(message), ()
            return True

    for name in ("pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropAdvert())
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_DropAdvert())
        logging.getLogger(f"{name}.callbacks.model_summary").addFilter(_DropZeroFlops())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Printed by every run on a machine that has Slurm installed, also when the run is not meant for it.
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")


def _without_flops(table: str) -> str:
    """Lightning's layer table without its FLOPs column and "Total Flops" line."""
    lines = [line for line in table.splitlines() if not line.rstrip().endswith("Total Flops")]
    header = next((line for line in lines if " | " in line), None)
    if header is None or "FLOPs" not in [cell.strip() for cell in header.split(" | ")]:
        return "\n".join(lines)
    column = [cell.strip() for cell in header.split(" | ")].index("FLOPs")
    kept = []
    for line in lines:
        if " | " in line:
            cells = line.split(" | ")
            line = " | ".join(cells[:column] + cells[column + 1:]).rstrip()
        kept.append(line)
    width = max((len(line) for line in kept if " | " in line), default=0)
    return "\n".join("-" * width if line and set(line) == {"-"} else line for line in kept)


_quiet_third_party_noise()

__all__ = ["main", "run", "UserFacingError"]

# Exceptions that carry a message written for the user (our ValueErrors name the fix).
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError, MissingMandatoryValue)


class UserFacingError(RuntimeError):
    """An error whose message is meant for the person running the command."""


class RunFolderInUse(UserFacingError):
    """The run folder already holds another run's results."""


class RunInterrupted(RuntimeError):
    """Training was stopped by Ctrl-C (or SIGTERM); ``metrics.json`` says how to resume."""


def main(cfg: DictConfig) -> dict[str, Any] | None:
    """Run :func:`run`; turn user errors into one clear paragraph and exit status 2.

    In a sweep (``-m``) a failing run does not stop the sweep: its ``metrics.json`` records the
    failure, the next run starts, and the sweep summary lists it and ends with a non-zero status.
    """
    try:
        return run(cfg)
    except RunInterrupted as error:
        print(f"\ninterrupted: {error}\n", file=sys.stderr, flush=True)
        _finish_wandb()
        sys.stdout.flush()
        # metrics.json and the checkpoints are written; exit now rather than wait at interpreter
        # shutdown on DataLoader workers a Ctrl-C left mid-epoch (seen hanging there).
        os._exit(130)
    except Exception as error:  # noqa: BLE001 - classified below, re-raised when not ours
        cause = _user_cause(error)
        in_sweep = _in_sweep()
        _record_failure(cfg, error, cause)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or (cause is None and not in_sweep):
            raise
        if cause is None:
            # A bug rather than bad input: keep the traceback for the report, go on with the sweep.
            traceback.print_exception(error, file=sys.stderr)
        else:
            print(f"\nerror: {_describe(cause)}\n", file=sys.stderr, flush=True)
        if in_sweep:
            return None
        sys.exit(2)
    finally:
        _finish_wandb()


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _user_cause(error: BaseException) -> BaseException | None:
    """The user-facing exception in ``error``'s chain (Hydra wraps what targets raise), if any."""
    seen = error
    while seen is not None:
        if isinstance(seen, (UserFacingError, *_USER_ERRORS)) and not isinstance(seen, InstantiationException):
            return seen
        seen = seen.__cause__ or (seen.__context__ if isinstance(seen, InstantiationException) else None)
    return None


def _describe(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue):
        key = error.full_key or "a required value"
        return (f"`{key}` is required and has no value (it is `???` in the config): pass it on the command "
                f"line, e.g. `python train.py ... {key}=/path/to/data`.")
    from afno_repro.data.errors import user_message

    return user_message(error)


def _record_failure(cfg: DictConfig, error: BaseException, cause: BaseException | None) -> None:
    """Write ``metrics.json`` with status ``failed`` unless the run already recorded its own end."""
    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = run_dir / "metrics.json"
    # Another run's folder is left exactly as it was.
    if metrics.is_file() or _rank() != 0 or isinstance(cause, RunFolderInUse):
        return
    message = _describe(cause) if cause is not None else f"{type(error).__name__}: {error}"
    try:
        identity = _identity(cfg, run_dir)
    except Exception:  # noqa: BLE001 - the config itself may be what failed; record the error alone
        identity = {"run_dir": str(run_dir), "overrides": list(HydraConfig.get().overrides.task)}
    try:
        write_json(metrics, {**identity, "status": "failed", "error": message})
    except OSError:
        pass  # an unwritable run folder is itself the error being reported


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", 0))))


def _finish_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def check_options(cfg: DictConfig, run_dir: Path) -> None:
    """Check the run-level options a user types before anything is built or trained.

    Everything that would otherwise fail after training (or train on nonsense) fails here, with the
    option named: ``seed``, ``trainer.max_epochs``, ``trainer.precision``, ``matmul_precision``, the run folder (writable, not another run's).
    """
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise UserFacingError(f"seed={seed!r} is not a valid seed: it must be an integer from 0 to 2**32 - 1, e.g. seed=0.")
    epochs = cfg.trainer.get("max_epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserFacingError(
            f"trainer.max_epochs={epochs!r} is not a positive whole number of epochs; give e.g. trainer.max_epochs=30 "
            "(the experiments set the paper's count)."
        )
    # A ViT of depth 0 is a valid module (the tests use one to look at the position embedding
    # alone), but trained it has no token mixer: nothing of what the run would measure.
    depth = cfg.backbone.get("depth") if cfg.get("backbone") else None
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise UserFacingError(
            f"backbone.depth={depth!r} is not a positive number of transformer blocks; a model without blocks has "
            "no token mixer to train. Use e.g. backbone.depth=12 (ViT-B/4, ViT-S/4) or 5 (ViT-XS/4)."
        )
    try:
        resolve_precision(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("precision", "auto"),
                          cfg.get("matmul_precision", "auto"))
        _batch_plan(cfg)
    except ValueError as error:
        raise UserFacingError(str(error)) from None
    message = refuse_reuse_message(run_dir, cfg.get("ckpt_path"))
    if message is not None:
        raise RunFolderInUse(message)
    # Lightning only warns when it cannot write a checkpoint, after the epoch it trained for.
    message = unwritable_message(run_dir / "checkpoints", "checkpoint folder")
    if message is not None:
        raise UserFacingError(message)


def _batch_plan(cfg: DictConfig) -> dict[str, Any] | None:
    """The run's per-process batch, accumulation and global batch (:mod:`afno_repro.batch`)."""
    if not cfg.get("data") or cfg.data.get("batch_size") is None:
        return None
    trainer = cfg.trainer
    world = world_size(trainer.get("accelerator", "auto"), trainer.get("devices", 1), trainer.get("num_nodes", 1))
    return batch_plan(int(cfg.data.batch_size), world, cfg.get("global_batch"), trainer.get("accumulate_grad_batches"))


@dataclass
class Built:
    """What :func:`build` makes of a config: the objects a run trains and evaluates, and how it batches."""

    datamodule: Any
    task: pl.LightningModule
    trainer: pl.Trainer
    loggers: list[Any]
    plan: dict[str, Any] | None
    numerics: dict[str, Any]
    init: dict[str, Any] | None


def build(cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> Built:
    """Build the run of ``cfg``: its pretrained trunk resolved, data module, backbone, task, loggers,
    callbacks (plus ``extra_callbacks``) and trainer, in the precision and batch plan the config says.

    :func:`run` trains and evaluates what this builds; the paper-scale preflight
    (:mod:`afno_repro.preflight`) times a few steps of it, so both go through the same path.
    """
    # Plain containers, not DictConfigs: the DataModule's hyperparameters go into checkpoints,
    # which must load with torch.load(weights_only=True).
    # A finetuning run starts from its pretraining run's trunk (pretrained=auto|<file>|null); a
    # missing one is reported before anything is built.
    init = resolve_pretrained(cfg, list(HydraConfig.get().overrides.task))
    plan = _batch_plan(cfg)
    if plan is not None:
        cfg.data.batch_size = plan["per_device"]  # the declared global batch's share of one process
    datamodule = instantiate(cfg.data, _convert_="all")
    backbone = instantiate(cfg.backbone)
    if init is not None:
        init["head_initialised"] = load_pretrained_backbone(backbone, init["checkpoint"])
    elif cfg.backbone.get("checkpoint"):
        # A trunk built from someone else's classification weights (Figure 1's Swin), not from a run of ours.
        init = {"checkpoint": str(cfg.backbone.checkpoint), "how": "backbone.checkpoint (classification weights)"}
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    task = instantiate(cfg.task, backbone=backbone, optimizer=instantiate(cfg.optimizer), scheduler=scheduler)
    if cfg.get("ckpt_path"):
        # A bad checkpoint gets its paragraph before any logger or W&B run starts.
        from afno_repro.checkpoints import check_resume_checkpoint

        check_resume_checkpoint(cfg.ckpt_path, task)

    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [_instantiate_callback(c, task) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += list(extra_callbacks)
    progress = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()
    if progress:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    numerics = resolve_precision(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("precision", "auto"),
                                 cfg.get("matmul_precision", "auto"))
    apply_precision(numerics)
    batching = {"accumulate_grad_batches": plan["accumulation"]} if plan is not None else {}
    trainer: pl.Trainer = instantiate(cfg.trainer, precision=numerics["trainer"], logger=loggers, callbacks=callbacks,
                                      enable_progress_bar=progress, **batching)
    return Built(datamodule, task, trainer, loggers, plan, numerics, init)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, pick the checkpoint, evaluate it on the reported split; returns ``metrics.json``'s content."""
    started = time.time()
    fill_computed(cfg)  # the values the config leaves to code (class folders, Figure 4's equal-parameter width)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    done = _apply_resume(cfg, run_dir)
    if done is not None:
        return done
    check_options(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    built = build(cfg)
    datamodule, task, trainer, loggers = built.datamodule, built.task, built.trainer, built.loggers
    plan, numerics, init = built.plan, built.numerics, built.init

    model_info = _model_info(cfg) if cfg.get("count_flops", True) else {}
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
        log.info("precision: %s", numerics["rule"])
        if plan is not None:
            log.info("batch: %s = %d images per optimizer step, lr %s", plan["rule"], plan["effective_global"],
                     cfg.optimizer.get("lr"))
        if model_info:
            log.info("model: %.3fM parameters, %.3f GFLOPs at %dx%d (paper convention)", model_info["params_m"],
                     model_info["gflops"], model_info["gflops_image_size"], model_info["gflops_image_size"])
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "model": model_info})

    lr = cfg.optimizer.get("lr") if cfg.get("optimizer") else None
    batch = {**plan, "lr": None if lr is None else _number(lr)} if plan is not None else None
    summary = {**_identity(cfg, run_dir), **model_info, "precision": numerics, "batch": batch,
               "reported": [item.as_dict() for item in task.reported],
               "init": init or {"checkpoint": None, "how": "from scratch"}, "reading": _reading(datamodule, task)}
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except FloatingPointError as error:
        summary.update(status="failed: non-finite loss", error=str(error), **_progress(trainer))
        _write_metrics(trainer, run_dir, summary, started)
        raise UserFacingError(
            f"{error} Training stopped; the checkpoints written before it are kept in "
            f"{run_dir / 'checkpoints'} (last.ckpt is the last good epoch) and {run_dir / 'metrics.json'} "
            "records the failure."
        ) from error
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful stop and then sys.exit(1), and SIGTERM into a
        # SIGTERMException (a SystemExit) at the next batch boundary.
        if not trainer.interrupted:
            raise
        _record_interruption(trainer, run_dir, summary, started)

    summary.update(status="completed", **_progress(trainer))
    if trainer.is_global_zero and hasattr(datamodule, "save_beside_run"):
        # What the data needs kept beside the run's results to be repeated exactly (held-out files).
        for key, entries in datamodule.save_beside_run(run_dir).items():
            summary[key].update(entries)
    try:
        summary.update(_evaluate(cfg, trainer, task, datamodule))
    except Exception as error:
        # Training is done and its checkpoints stay; the record says the evaluation failed.
        summary.update(status="failed: evaluation", error=f"{type(error).__name__}: {error}")
        _write_metrics(trainer, run_dir, summary, started)
        raise
    _finish_wandb()
    _write_metrics(trainer, run_dir, summary, started)
    if trainer.is_global_zero:
        print(_format_summary(summary), flush=True)
    return summary


def _apply_resume(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """``resume=auto`` (set by ``make reproduce-all``): the recorded result of a run that already
    completed in ``run_dir`` (returned, nothing is run), else resume from its ``last.ckpt`` (set as
    ``ckpt_path``), else start afresh with an earlier attempt's leftovers set aside."""
    resume = cfg.get("resume")
    if resume in (None, False):
        return None
    if resume != "auto":
        raise UserFacingError(f"resume={resume!r} is not an option: use resume=auto (skip a completed run, resume a "
                              "killed one from its last.ckpt) or leave it out (resume=false).")
    if cfg.get("ckpt_path"):
        raise UserFacingError(f"resume=auto and ckpt_path={cfg.ckpt_path} both say where to resume from: keep one.")
    action, detail = auto_resume(run_dir)
    if action == "completed":
        print(f"already completed, not run again (resume=auto): {run_dir}", flush=True)
        return detail
    if action == "resume":
        log.info("resume=auto: resuming from %s", detail)
        cfg.ckpt_path = str(detail)
    elif detail:
        log.info("resume=auto: starting afresh; an earlier attempt's files set aside: %s", ", ".join(detail))
    return None


def _record_interruption(trainer: pl.Trainer, run_dir: Path, summary: dict[str, Any], started: float) -> None:
    last = run_dir / "checkpoints" / "last.ckpt"
    overrides = list(HydraConfig.get().overrides.task)
    command = resume_command(overrides, last, run_dir) if last.is_file() else None
    summary.update(status="interrupted", resume_command=command, **_progress(trainer))
    _write_metrics(trainer, run_dir, summary, started)
    resume = f"resume with:\n  {command}" if command else "no checkpoint had been written yet; start the run again."
    raise RunInterrupted(f"training stopped at epoch {trainer.current_epoch}; {run_dir / 'metrics.json'} records it; {resume}")


def _evaluate(cfg: DictConfig, trainer: pl.Trainer, task: pl.LightningModule, datamodule: Any) -> dict[str, Any]:
    """Score the selected checkpoint on the reported split (model and the task's baselines on the
    same images); the task turns the numbers into ``test``, ``baselines`` and ``result``."""
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    (results,) = trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    values = {key.removeprefix("test/"): _number(value) for key, value in results.items()}
    record = task.evaluation_record(values, datamodule.selection)
    record["test"] = {"split": getattr(datamodule, "reported_split", "val"),
                      "checkpoint": best or "last weights (no checkpoint callback)", **record["test"]}
    return record


def _instantiate_callback(config: DictConfig, task: Any) -> Any:
    """A callback from its config; a ``ModelCheckpoint`` with ``monitor: auto`` monitors the task's
    selection metric (``val/psnr`` for inpainting, ``val/miou`` for segmentation, ...)."""
    if config.get("monitor") == "auto":
        metric, mode = task.selection_metric
        return instantiate(config, monitor=metric, mode=mode)
    return instantiate(config)


def _model_info(cfg: DictConfig) -> dict[str, Any]:
    """Parameters and GFLOPs of the configured backbone at the training resolution, on the meta device."""
    from afno_repro.analysis.complexity import count_flops, count_params

    with torch.device("meta"):
        model = instantiate(cfg.backbone)
    # The data's size, not backbone.img_size: the cost of what is trained (the ViT resizes its
    # position embedding when the two differ).
    size = int(cfg.data.image_size)
    # Every matmul counted (both attention products): the run's real cost. scripts/model_table.py
    # shows each paper row under the convention that row's published number implies.
    report = count_flops(model, (1, int(cfg.backbone.get("in_chans", 3)), size, size), attention_matmuls="both")
    return {
        "params_m": count_params(model) / 1e6,
        "gflops": report.gflops,
        "gflops_image_size": size,
        "attention_qk_gflops": report.attention_qk_gflops,
        "mixer_gflops": report.mixer_gflops,
        "fft_gflops": report.fft_gflops,
        "flop_convention": report.convention,
    }


def _identity(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """What the run is: experiment, paper row, mixer, data, seed, code and library versions."""
    choices = HydraConfig.get().runtime.choices
    paper = cfg.get("paper") or {}
    row = f"{paper.get('table')}/{paper.get('row')}" if paper.get("table") and paper.get("row") else None
    # A backbone without a pluggable mixer (timm's Swin) ignores the mixer group: none is recorded.
    mixer = (cfg.get("mixer") or {}) if "mixer" in (cfg.get("backbone") or {}) else {}
    return {
        "experiment": None if choices.get("experiment") in (None, "null") else choices.get("experiment"),
        "task": choices.get("task"),
        "paper_row": row,
        "paper_column": paper.get("column"),
        "mixer": mixer.get("name"),
        "mixer_options": {k: v for k, v in (OmegaConf.to_container(mixer, resolve=True) if mixer else {}).items() if k != "name"},
        "backbone": choices.get("backbone"),
        "trunk_hash": trunk_hash(cfg.backbone) if cfg.get("backbone") else None,
        "data": _data_label(cfg.data) if cfg.get("data") else None,
        "image_size": cfg.data.get("image_size") if cfg.get("data") else None,
        "seed": cfg.get("seed"),
        "overrides": list(HydraConfig.get().overrides.task),
        "git_commit": _git_commit(),
        "versions": library_versions(),
        "run_dir": str(run_dir),
    }


def _data_label(data: DictConfig) -> str | None:
    """The dataset a run used, in one word, as its DataModule class names it (``run_label``): e.g.
    ``imagenet``, ``skimage``, ``datasetgan/face``, ``ddpm/ffhq_34``, ``embedded_streets``."""
    data_class = get_class(data._target_)
    return data_class.run_label(data) if hasattr(data_class, "run_label") else data.get("source", data.get("name"))


def _reading(datamodule: Any, task: pl.LightningModule) -> dict[str, Any]:
    """The readings of the paper's open choices this run uses: the data's (masks, splits, selection)
    and the task's (metric and loss regions, class counting)."""
    data = datamodule.reading() if hasattr(datamodule, "reading") else {}
    return {**data, **task.reading()}


def _progress(trainer: pl.Trainer) -> dict[str, Any]:
    """Training progress and the selection split's numbers (the split that picks the checkpoint)."""
    metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()}
    datamodule = trainer.datamodule
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    best_score = getattr(checkpoint, "best_model_score", None)
    result: dict[str, Any] = {
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "selection": {
            "split": getattr(datamodule, "validation_split", None),
            "num_images": logged_count(metrics.get("val/num_images")),
            "metric": getattr(checkpoint, "monitor", None),
            "best": None if best_score is None else _number(best_score),
            "final": {key.removeprefix("val/"): value for key, value in metrics.items()
                      if key.startswith("val/") and key != "val/num_images"},
        },
    }
    if checkpoint is not None and checkpoint.best_model_path:
        result["best_checkpoint"] = checkpoint.best_model_path
        result["last_checkpoint"] = checkpoint.last_model_path
    # task.compile=true: the first training step's time, the next steps' and the compilation between them.
    timing = getattr(trainer.lightning_module, "compile_timing", None)
    if timing is not None:
        result["compile"] = timing
    return result


def _number(value: Any) -> float | None:
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _write_metrics(trainer: pl.Trainer, run_dir: Path, summary: dict[str, Any], started: float) -> None:
    if not trainer.is_global_zero:
        return
    summary["wall_time_s"] = round(time.time() - started, 1)
    write_json(run_dir / "metrics.json", summary)


def _format_summary(summary: dict[str, Any]) -> str:
    """The lines a run prints at its end: its test numbers beside the task's baselines."""
    test = summary.get("test") or {}
    reported = summary.get("reported") or []
    fraction = test.get("masked_fraction")
    size = summary.get("image_size")
    lines = [
        "",
        f"Test: {summary['data']}" + (f" at {size}x{size}" if size else "") + f", {test.get('num_images')} images"
        + (f", {100 * fraction:.1f}% of pixels masked" if fraction is not None else ""),
        f"{'method':<40}" + "".join(f"{item['label']:>12}" for item in reported),
    ]

    def row(name: str, values: dict[str, Any]) -> str:
        cells = (format_number(values.get(item["key"]), f".{item['digits']}f", "n/a") for item in reported)
        return f"{name:<40}" + "".join(f"{cell:>12}" for cell in cells)

    for name, values in (summary.get("baselines") or {}).items():
        lines.append(row(name.replace("_", " "), values))
    params = f" ({summary['params_m']:.2f}M params)" if "params_m" in summary else ""
    init = summary.get("init") or {}
    start = ", pretrained" if init.get("checkpoint") else ", from scratch" if summary.get("task") != "inpainting" else ""
    lines.append(row(f"{summary['mixer'] or summary.get('backbone')}{params}{start}", summary.get("result") or {}))
    result = summary.get("result") or {}
    if result.get("miou_std") is not None:
        lines.append(f"(mean over folds; std {result['miou_std']:.2f})")
    lines.append(f"({result.get('protocol')})")
    if init.get("checkpoint"):
        lines.append(f"started from: {init['checkpoint']}")
    kept = [name for name in ("metrics.json", "checkpoints/", "images/val_latest.png")
            if (Path(summary["run_dir"]) / name).exists()]
    lines.append(f"run directory: {summary['run_dir']}  ({', '.join(kept)})")
    offline = sorted(Path(summary["run_dir"]).glob("wandb/offline-run-*"))
    if offline:
        lines.append(f"W&B offline run: wandb sync {offline[-1]}")
    return "\n".join(lines + [""])
