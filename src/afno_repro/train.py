"""One training run: composed config in, checkpoints, ``metrics.json`` and a printed summary out.

``train.py`` at the repository root is a thin ``@hydra.main`` around :func:`main`. The flow is::

    cfg --> the values it leaves to code filled in (afno_repro.config.fill_computed)
        --> pretrained=auto|<file>|null resolved (afno_repro.pretrained; a missing run is named first)
        --instantiate--> DataModule, backbone(mixer) [+ pretrained trunk], task(backbone, optimizer, scheduler)
        --> pl.Trainer(loggers, callbacks).fit --> test of the selected checkpoint (model and the
        task's baselines on the same images) --> <run dir>/metrics.json (+ checkpoints/, csv/, wandb/, images/)

This module is the run itself: :func:`check_options`, :func:`build` and :func:`run`. It knows no task
and no dataset: the task declares its selection metric, reported numbers, baselines and readings
(:mod:`afno_repro.tasks.base`) and the data module its label and what it keeps beside the run, so
``metrics.json`` (:mod:`afno_repro.runs.record`) has one shape for every task. How a run fails (one
paragraph and exit status 2 for an error a user can fix, a ``failed`` record for every failure) is
:mod:`afno_repro.failures`; :func:`main` is :func:`run` wrapped by it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from afno_repro.batch import batch_plan, world_size
from afno_repro.checkpoints import check_resume_checkpoint, read_resume_checkpoint
from afno_repro.config import PAPER_COLUMNS, fill_computed
from afno_repro.failures import RunFolderInUse, RunInterrupted, UserFacingError, finish_wandb, run_guarded
from afno_repro.precision import apply_precision, resolve_precision
from afno_repro.pretrained import load_pretrained_backbone, resolve_pretrained
from afno_repro.runs import auto_resume, refuse_reuse_message, resume_command, unwritable_message
from afno_repro.runs.record import identity, model_info, number, progress, reading, summary_text, write_metrics

log = logging.getLogger(__name__)

__all__ = ["Built", "UserFacingError", "build", "check_options", "check_values", "main", "run"]


def main(cfg: DictConfig) -> dict[str, Any] | None:
    """:func:`run` with its failures handled (:func:`afno_repro.failures.run_guarded`): an error a user can
    fix is one paragraph and exit status 2; in a sweep a failing run does not stop the sweep."""
    return run_guarded(run, cfg)


def check_options(cfg: DictConfig, run_dir: Path) -> None:
    """Check the run-level options a user types before anything is built or trained.

    Everything that would otherwise fail after training (or train on nonsense) fails here, with the
    option named: the values of :func:`check_values`, and the run folder (writable, not another run's).
    """
    check_values(cfg)
    message = refuse_reuse_message(run_dir, cfg.get("ckpt_path"))
    if message is not None:
        raise RunFolderInUse(message)
    # Lightning only warns when it cannot write a checkpoint, after the epoch it trained for.
    message = unwritable_message(run_dir / "checkpoints", "checkpoint folder")
    if message is not None:
        raise UserFacingError(message)


def check_values(cfg: DictConfig, on_this_machine: bool = True) -> None:
    """The option values of a composed run, checked without a run folder (``make reproduce-all --dry-run`` checks
    every run of its plan with it): ``seed``, ``trainer.max_epochs``, ``backbone.depth``, the numeric options of
    :data:`_CHECKED_OPTIONS` (learning rate, batch sizes, image size, validation interval, clip value, ...), the
    on/off switches, a ``data.root`` the data would ignore, ``trainer.precision``, ``matmul_precision`` and the
    batch plan; with ``on_this_machine``, also that a GPU asked for is here (a plan for a Slurm cluster is
    checked on a login node without one).

    Raises
    ------
    UserFacingError
        The first option that is wrong, named with what it must be.
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
    for option, kind, bound, example in _CHECKED_OPTIONS:
        _check_number(cfg, option, kind, bound, example)
    accelerator, devices = cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("devices", "auto")
    if on_this_machine and str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserFacingError(f"trainer.accelerator={accelerator} but torch finds no CUDA GPU here "
                              f"(torch {torch.__version__}): use trainer.accelerator=cpu, or auto to take a GPU when there is one.")
    if isinstance(devices, bool) or (isinstance(devices, int) and devices < 1 and devices != -1):
        raise UserFacingError(f"trainer.devices={devices!r} is no number of devices: give e.g. trainer.devices=1, "
                              "-1 (every device) or auto.")
    _check_data_root(cfg)
    _check_schedule(cfg)
    column = (cfg.get("paper") or {}).get("column")
    if column not in (None, "") and column not in PAPER_COLUMNS:
        # Checked where the DatasetGAN category is read from it; on the embedded shapes (debug=smoke) it was not.
        raise UserFacingError(f"paper.column={column!r} is not a column of the paper; use one of {', '.join(PAPER_COLUMNS)} "
                              "(the few-shot datasets of Tables 3 and 6), or leave it out.")
    for option in _SWITCHES:
        value = OmegaConf.select(cfg, option, default=None)
        if value is not None and not isinstance(value, bool):
            # A string such as 'no' or 'off' is truthy in Python: task.compile=no compiled the model.
            raise UserFacingError(f"{option}={value!r} is not true or false; write {option}=true or {option}=false.")
    try:
        resolve_precision(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("precision", "auto"),
                          cfg.get("matmul_precision", "auto"))
        _batch_plan(cfg)
    except ValueError as error:
        raise UserFacingError(str(error)) from None


# Numeric options a user types whose wrong type or value would otherwise fail deep inside a library
# (a comparison's TypeError, Lightning's ZeroDivisionError, a conv's RuntimeError) or mean nothing
# (a negative clip value): (option, "int" or "number", bound ">0", ">=0" or "[0,1)", an example).
# An option a config leaves out or sets to null (where null is allowed: clip values, a second
# batch size) is not checked.
_CHECKED_OPTIONS = (
    ("optimizer.lr", "number", ">=0", "optimizer.lr=5e-4"),  # 0: a frozen model (tests use it to compare evaluations)
    ("optimizer.weight_decay", "number", ">=0", "optimizer.weight_decay=0.05"),
    ("data.batch_size", "int", ">0", "data.batch_size=64"),
    ("data.val_batch_size", "int", ">0", "data.val_batch_size=64"),
    ("data.image_size", "int", ">0", "data.image_size=224"),
    ("data.num_workers", "int", ">=0", "data.num_workers=4"),
    ("trainer.check_val_every_n_epoch", "int", ">0", "trainer.check_val_every_n_epoch=1"),
    ("trainer.accumulate_grad_batches", "int", ">0", "trainer.accumulate_grad_batches=1"),
    ("trainer.gradient_clip_val", "number", ">=0", "trainer.gradient_clip_val=1.0 (or null: no clipping)"),
    ("global_batch", "int", ">0", "global_batch=1024 (or null: data.batch_size x processes x accumulation)"),
    # The backbone's sizes and rates: a negative width failed in torch.empty, a drop rate of 1.5 in timm's DropPath
    # (both with a traceback), a zero MLP ratio built blocks without an MLP.
    ("backbone.embed_dim", "int", ">0", "backbone.embed_dim=768"),
    ("backbone.mlp_ratio", "number", ">0", "backbone.mlp_ratio=4"),
    ("backbone.drop_path_rate", "number", "[0,1)", "backbone.drop_path_rate=0.1"),
    ("backbone.drop_rate", "number", "[0,1)", "backbone.drop_rate=0.0"),
    # 0 or -1 wrote no last.ckpt at all (Lightning reads every_n_epochs=0 as never): a killed run restarted from scratch.
    ("last_checkpoint_every_n_epochs", "int", ">0", "last_checkpoint_every_n_epochs=1"),
    # timm's asserts and Lightning's ZeroDivisionError, with tracebacks; a negative warmup silently meant none.
    ("scheduler.lr_min", "number", ">=0", "scheduler.lr_min=1e-5"),
    ("scheduler.warmup_t", "number", ">=0", "scheduler.warmup_t=5"),
    ("scheduler.warmup_lr_init", "number", ">=0", "scheduler.warmup_lr_init=1e-6"),
    ("trainer.val_check_interval", "number", ">0", "trainer.val_check_interval=1.0 (every epoch)"),
    # 0 trained nothing and recorded the untrained model as a completed run.
    ("trainer.limit_train_batches", "number", ">0", "trainer.limit_train_batches=1.0 (every batch)"),
)


# On/off options a user types; Hydra passes `no`, `off` or `1` through as a string or number.
_SWITCHES = ("task.compile", "run_baselines", "count_flops", "mixer.recompute", "task.no_weight_decay",
             "data.pin_memory", "data.repeated_augmentation", "data.photometric_distortion")


# What data.root holds, per data source (configs/data/*.yaml; README, "Data").
_DATA_LAYOUTS = {
    "imagenet": "ImageNet's train/<wnid>/*.JPEG and val/<wnid>/*.JPEG",
    "cityscapes": "Cityscapes' leftImg8bit/ and gtFine/",
    "datasetgan": "DatasetGAN's training_data/ and testing_data/",
    "ddpm": "the DDPM-segmentation release's datasets/ folder",
}


def _check_data_root(cfg: DictConfig) -> None:
    """``data.root`` given to a run whose data is embedded (the scikit-image photographs, shapes, street scenes or
    faces, which ``debug=smoke`` selects for every task) would be ignored: the run would train and pass on data the
    user did not mean. Refuse it, naming the data config that reads the folder."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or data.get("root") is None:
        return
    root, target = data.root, str(data.get("_target_") or "")
    if data.get("name") == "skimage":
        which, folder_data, shorter = "the embedded photographs", "imagenet", "data.train_samples_per_epoch=8 data.val_samples=4"
    elif data.get("source") == "lfw":
        which, folder_data, shorter = "the embedded faces (lfw_subset)", "imagenet_classification", "data.train_samples_per_epoch=8 data.val_samples=4"
    elif data.get("source") == "embedded" and "FewShot" in target:
        which, folder_data, shorter = "the embedded shapes", "datasetgan", None
    elif data.get("source") == "embedded":
        which, folder_data, shorter = "the embedded street scenes", "cityscapes", "data.train_samples_per_epoch=8 data.val_samples=4"
    else:
        # A folder this run reads: a missing one is said before the model is built, W&B started or FLOPs counted
        # (the data module names what is wrong inside an existing folder when it reads it).
        folder = Path(str(root)).expanduser()
        if str(root) not in ("???", "") and not folder.is_dir():
            layout = _DATA_LAYOUTS.get(str(data.get("source") or data.get("name")), "the dataset in its standard layout")
            state = "is not a folder" if folder.exists() else "does not exist"
            raise UserFacingError(f"data.root={root} {state}. Set data.root to the folder holding {layout}.")
        return
    smoke = "smoke" in (cfg.get("tags") or [])
    raise UserFacingError(
        f"data.root={root} would not be read: this run's data is {which}"
        + (", which debug=smoke selects for every experiment" if smoke else "")
        + f". To train on that folder, name the data config that reads it as well, e.g. data={folder_data} data.root={root}"
        + (f" (with debug=smoke, add {shorter} to keep the run short)" if smoke and shorter else "")
        + "; or leave data.root out."
    )


def _check_schedule(cfg: DictConfig) -> None:
    """The options of the schedule and the optimizer whose wrong values fail inside timm, torch or Lightning:
    ``scheduler.t_initial`` (a positive length, or ``auto``), ``trainer.max_steps`` (-1 = no limit, else positive:
    0 trained nothing and reported the untrained model) and ``optimizer.betas`` (two numbers in [0, 1))."""
    t_initial = OmegaConf.select(cfg, "scheduler.t_initial", default=None)
    if t_initial is not None and t_initial != "auto" and (isinstance(t_initial, bool) or not isinstance(t_initial, int)
                                                          or t_initial < 1):
        raise UserFacingError(f"scheduler.t_initial={t_initial!r} is not a schedule length: give a whole number of epochs "
                              "(or optimizer steps where scheduler.t_in_epochs=false) greater than 0, or auto (the whole run).")
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or (max_steps < 1 and max_steps != -1)):
        raise UserFacingError(f"trainer.max_steps={max_steps!r} is not a step limit: give a whole number greater than 0, or "
                              "-1 for no limit (trainer.max_epochs then ends the run).")
    betas = OmegaConf.select(cfg, "optimizer.betas", default=None)
    if betas is not None:
        values = list(betas) if OmegaConf.is_list(betas) or isinstance(betas, (list, tuple)) else None
        if (values is None or len(values) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1 for v in values)):
            raise UserFacingError(f"optimizer.betas={betas!r} is not a pair of Adam betas: give two numbers from 0 up to "
                                  "(not including) 1, e.g. optimizer.betas=[0.9,0.999].")


def _check_number(cfg: DictConfig, option: str, kind: str, bound: str, example: str) -> None:
    """``UserFacingError`` naming ``option``, what it must be and ``example`` unless its value is of
    ``kind`` and within ``bound`` (or absent, or null)."""
    value = OmegaConf.select(cfg, option, default=None)
    if value is None:
        return
    wanted = int if kind == "int" else (int, float)
    within = {">0": lambda v: v > 0, ">=0": lambda v: v >= 0, "[0,1)": lambda v: 0 <= v < 1}[bound]
    ok = not isinstance(value, bool) and isinstance(value, wanted) and within(value)
    if not ok:
        what = "a whole number" if kind == "int" else "a number"
        limit = {">0": "greater than 0", ">=0": "0 or more", "[0,1)": "from 0 up to (not including) 1"}[bound]
        raise UserFacingError(f"{option}={value!r} is not valid: it must be {what} {limit}, e.g. {example}.")


def _batch_plan(cfg: DictConfig) -> dict[str, Any] | None:
    """The run's per-process batch, accumulation and global batch (:mod:`afno_repro.batch`)."""
    if not cfg.get("data") or cfg.data.get("batch_size") is None:
        return None
    trainer = cfg.trainer
    world = world_size(trainer.get("accelerator", "auto"), trainer.get("devices", "auto"), trainer.get("num_nodes", 1))
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
    init: dict[str, Any]


def _resumed_init(cfg: DictConfig, resumed: Any) -> dict[str, Any] | None:
    """Where the weights of the checkpoint a run resumes from started (its ``init`` entry), or None
    when the run does not resume or its checkpoint predates that entry. A ``pretrained=<file>`` that
    names another trunk is not loaded, and the user is told so: the resumed weights replace it."""
    if not isinstance(resumed, dict) or not isinstance(resumed.get("init"), dict):
        return None
    init = dict(resumed["init"])
    given = cfg.get("pretrained")
    if given not in (None, "none", "null", "scratch", "auto") and str(given) != str(init.get("checkpoint")):
        started = init.get("checkpoint") or "scratch"
        log.warning("pretrained=%s is not loaded: this run resumes from ckpt_path=%s, whose weights started from %s "
                    "and are recorded so.", given, cfg.ckpt_path, started)
    return init


def build(cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> Built:
    """Build the run of ``cfg``: its pretrained trunk resolved, data module, backbone, task, loggers,
    callbacks (plus ``extra_callbacks``) and trainer, in the precision and batch plan the config says.

    :func:`run` trains and evaluates what this builds; the paper-scale preflight
    (:mod:`afno_repro.preflight`) times a few steps of it, so both go through the same path.
    """
    # A resumed run's checkpoint is read once, here: a bad one gets its paragraph before anything is
    # built, and it says where the weights it continues started.
    resumed = read_resume_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    init = _resumed_init(cfg, resumed)
    # A finetuning run starts from its pretraining run's trunk (pretrained=auto|<file>|null); a
    # missing one is reported before anything is built. A resumed run has its weights already.
    load_init = init is None
    if load_init:
        init = resolve_pretrained(cfg, list(HydraConfig.get().overrides.task))
    plan = _batch_plan(cfg)
    if plan is not None:
        cfg.data.batch_size = plan["per_device"]  # the declared global batch's share of one process
    # Plain containers, not DictConfigs: the DataModule's hyperparameters go into checkpoints,
    # which must load with torch.load(weights_only=True).
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.check_files()  # a wrong data.root, named before the model is built (seconds at paper size)
    backbone = instantiate(cfg.backbone)
    if load_init and init is not None:
        init["head_initialised"] = load_pretrained_backbone(backbone, init["checkpoint"])
    elif load_init and cfg.backbone.get("checkpoint"):
        # A trunk built from someone else's classification weights (Figure 1's Swin), not from a run of ours.
        init = {"checkpoint": str(cfg.backbone.checkpoint), "how": "backbone.checkpoint (classification weights)"}
    init = init or {"checkpoint": None, "how": "from scratch"}
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    task = instantiate(cfg.task, backbone=backbone, optimizer=instantiate(cfg.optimizer), scheduler=scheduler)
    task.init_record = init
    if cfg.get("ckpt_path"):
        stored = check_resume_checkpoint(cfg.ckpt_path, task, resumed)
        done, epochs = (stored or {}).get("epoch"), cfg.trainer.get("max_epochs")
        if isinstance(done, int) and isinstance(epochs, int) and done + 1 > epochs:
            raise UserFacingError(
                f"ckpt_path={cfg.ckpt_path} holds {done + 1} trained epochs, more than trainer.max_epochs={epochs}: a "
                f"resumed run trains on up to trainer.max_epochs, so give at least {done + 1} (the run's own count, "
                "unless you mean to extend it), or start afresh without ckpt_path.")

    loggers = [instantiate(c) for c in _entries(cfg, "logger")]
    callbacks = [_instantiate_callback(c, task) for c in _entries(cfg, "callbacks")]
    callbacks += list(extra_callbacks)
    progress_bar = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()
    if progress_bar:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    numerics = resolve_precision(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("precision", "auto"),
                                 cfg.get("matmul_precision", "auto"))
    apply_precision(numerics)
    batching = {"accumulate_grad_batches": plan["accumulation"]} if plan is not None else {}
    trainer: pl.Trainer = instantiate(cfg.trainer, precision=numerics["trainer"], logger=loggers, callbacks=callbacks,
                                      enable_progress_bar=progress_bar, **batching)
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

    info = model_info(cfg) if cfg.get("count_flops", True) else {}
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
        log.info("precision: %s", numerics["rule"])
        if plan is not None:
            log.info("batch: %s = %d images per optimizer step, lr %s", plan["rule"], plan["effective_global"],
                     cfg.optimizer.get("lr"))
        if info:
            log.info("model: %.3fM parameters, %.3f GFLOPs at %dx%d (paper convention)", info["params_m"],
                     info["gflops"], info["gflops_image_size"], info["gflops_image_size"])
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "model": info})

    lr = cfg.optimizer.get("lr") if cfg.get("optimizer") else None
    batch = {**plan, "lr": None if lr is None else number(lr)} if plan is not None else None
    summary = {**identity(cfg, run_dir), **info, "precision": numerics, "batch": batch,
               "reported": [item.as_dict() for item in task.reported],
               "init": init, "reading": reading(datamodule, task)}
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except FloatingPointError as error:
        summary.update(status="failed: non-finite loss", error=str(error), **progress(trainer))
        write_metrics(trainer, run_dir, summary, started)
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = (f"the checkpoints written before it are kept in {run_dir / 'checkpoints'} (last.ckpt is the last "
                f"epoch that completed) and " if last.is_file() else
                "no epoch had completed, so no checkpoint was written; ")
        raise UserFacingError(f"{error} Training stopped; {kept}{run_dir / 'metrics.json'} records the failure.") from error
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful stop and then sys.exit(1), and SIGTERM into a
        # SIGTERMException (a SystemExit) at the next batch boundary.
        if not trainer.interrupted:
            raise
        _record_interruption(trainer, run_dir, summary, started)

    summary.update(status="completed", **progress(trainer))
    if trainer.is_global_zero and hasattr(datamodule, "save_beside_run"):
        # What the data needs kept beside the run's results to be repeated exactly (held-out files).
        for key, entries in datamodule.save_beside_run(run_dir).items():
            summary[key].update(entries)
    try:
        summary.update(_evaluate(cfg, trainer, task, datamodule))
    except Exception as error:
        # Training is done and its checkpoints stay; the record says the evaluation failed.
        summary.update(status="failed: evaluation", error=f"{type(error).__name__}: {error}")
        write_metrics(trainer, run_dir, summary, started)
        raise
    finish_wandb()
    write_metrics(trainer, run_dir, summary, started)
    if trainer.is_global_zero:
        print(summary_text(summary, show_init=task.finetunes), flush=True)
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
    summary.update(status="interrupted", resume_command=command, **progress(trainer))
    write_metrics(trainer, run_dir, summary, started)
    resume = f"resume with:\n  {command}" if command else "no checkpoint had been written yet; start the run again."
    raise RunInterrupted(f"training stopped at epoch {trainer.current_epoch}; {run_dir / 'metrics.json'} records it; {resume}")


def _evaluate(cfg: DictConfig, trainer: pl.Trainer, task: pl.LightningModule, datamodule: Any) -> dict[str, Any]:
    """Score the selected checkpoint on the reported split (model and the task's baselines on the
    same images); the task turns the numbers into ``test``, ``baselines`` and ``result``."""
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    (results,) = trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    values = {key.removeprefix("test/"): number(value) for key, value in results.items()}
    record = task.evaluation_record(values, datamodule.selection)
    record["test"] = {"split": getattr(datamodule, "reported_split", "val"),
                      "checkpoint": best or ("last weights (no checkpoint callback)" if checkpoint is None
                                             else "last weights (no evaluation ran, so none was selected)"), **record["test"]}
    return record


def _entries(cfg: DictConfig, group: str) -> list[DictConfig]:
    """The configs under ``cfg.<group>`` (loggers, callbacks), one per name; ``<group>.<name>=null`` switches that one
    off, as ``~<group>.<name>`` does. Anything else that is not a class to instantiate is refused by name."""
    entries = []
    for name, config in (cfg.get(group) or {}).items():
        if config is None:
            continue
        if not isinstance(config, DictConfig) or "_target_" not in config:
            raise UserFacingError(
                f"{group}.{name}={OmegaConf.to_yaml(config).strip() if isinstance(config, DictConfig) else config!r} is "
                f"not a {group} config: each entry under {group} is a class to instantiate, with its _target_ (as in "
                f"configs/{group}/); {group}.{name}=null or ~{group}.{name} switches one off.")
        entries.append(config)
    return entries


def _instantiate_callback(config: DictConfig, task: Any) -> Any:
    """A callback from its config; a ``ModelCheckpoint`` with ``monitor: auto`` monitors the task's
    selection metric (``val/psnr`` for inpainting, ``val/miou`` for segmentation, ...)."""
    if config.get("monitor") == "auto":
        metric, mode = task.selection_metric
        return instantiate(config, monitor=metric, mode=mode)
    return instantiate(config)
