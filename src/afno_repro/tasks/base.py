"""What every task gives the harness, and the training plumbing the tasks share.

:mod:`afno_repro.train` knows no task. A task (a :class:`PaperTask`) declares:

- :attr:`PaperTask.task_name`: recorded as ``task`` in ``metrics.json`` (with the paper table it
  decides where the paper's number is looked up);
- :attr:`PaperTask.selection_metric`: the validation number the checkpoint is selected on and
  whether higher is better (the ``ModelCheckpoint`` of ``configs/callbacks`` monitors it);
- :attr:`PaperTask.reported`: the numbers a summary row shows, in order, each a :class:`Reported`
  (its key under ``test/``, its column label and digits);
- :meth:`PaperTask.evaluation_record`: turns the test loop's logged numbers into the ``test``,
  ``baselines`` and ``result`` entries of ``metrics.json``, the same shape for every task:
  ``result = {<reported key>: value, ..., "num_images": n, "protocol": "<how it was selected>"}``;
  ``baselines = {<name>: {<reported key>: value, ..., "num_images": n}}``;
- :meth:`PaperTask.reading`: the task's readings of the paper's open choices;
- :attr:`PaperTask.finetunes`: whether its runs may start from a pretrained trunk.

Every task also records whether its AFNO mixer is active: during the test pass the share of the
spectrum AFNO's soft-thresholding zeroes is counted per layer on the test images
(:mod:`afno_repro.mixers.activity`), and :meth:`PaperTask.evaluation_record` adds it as
``mixer_activity`` (null when the backbone has no AFNO mixer with soft-thresholding).

Baselines are methods the task scores in its own test loop on the same images as the model.

The shared plumbing: optimizer and scheduler factories (torch and timm schedulers), the stop on a
non-finite training loss, image grids written beside the run's checkpoints, and ``compile=True``:
the backbone compiled in place with ``torch.compile``, and the time its compilation took logged and
kept in :attr:`PaperTask.compile_timing` (``metrics.json`` records it under ``compile``).
"""

from __future__ import annotations

import logging
import math
import statistics
import time

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from timm.scheduler import PlateauLRScheduler
from timm.scheduler.scheduler import Scheduler as TimmScheduler
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torchvision.utils import save_image

from afno_repro.mixers.activity import SpectrumActivity, activity_record
from afno_repro.runs import logged_count

__all__ = ["NonFiniteLossError", "PaperTask", "Reported", "check_choice", "resolve_num_classes"]

log = logging.getLogger(__name__)

SCHEDULER_INTERVALS = ("epoch", "step")
# A compiled backbone's first training step holds its compilation (forward graph at the forward,
# backward graph at the backward); the median of the next steps is the step without it.
COMPILE_TIMED_STEPS = 4


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stops instead of continuing on NaN."""


@dataclass(frozen=True)
class Reported:
    """One number a task reports: logged as ``test/<key>``, shown under ``label`` with ``digits``; ``per_image``: a
    share of the images in percent (an accuracy), shown with no more decimals than its step of ``100 / images``.

    Example
    -------
    >>> Reported("miou", "mIoU (%)", 2).as_dict()
    {'key': 'miou', 'label': 'mIoU (%)', 'digits': 2, 'per_image': False}
    """

    key: str
    label: str
    digits: int
    per_image: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_grid_images(value: Any, shows: str) -> None:
    """``ValueError`` unless ``num_grid_images`` is a whole number >= 0 (``shows``: what its grid shows)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"num_grid_images={value!r} is not a non-negative integer. It is how many validation images "
                         f"{shows}; use 0 to switch the grid off or a small count such as 4.")


def check_choice(name: str, value: Any, choices: tuple[Any, ...], owner: str) -> None:
    """``ValueError`` naming ``name``, the bad ``value`` and the valid ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{name}={value!r} is not one of {', '.join(map(repr, choices))}. See the {owner} docstring for "
            f"what each {name} means and pick one of these."
        )


def resolve_num_classes(num_classes: Any, backbone: nn.Module, need: str, fix: str) -> int:
    """``num_classes``, or the backbone's ``num_classes`` when it is None; ``ValueError`` ("``need``, but got
    ..., ``fix``") unless that is an integer >= 2.

    Example
    -------
    >>> backbone = nn.Linear(2, 3)
    >>> backbone.num_classes = 3
    >>> resolve_num_classes(None, backbone, "needs num_classes", "pass num_classes.")
    3
    """
    num_classes = num_classes if num_classes is not None else getattr(backbone, "num_classes", None)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{need}, but got {num_classes!r}; {fix}")
    return num_classes


class PaperTask(pl.LightningModule):
    """Base of the tasks: the harness contract (see the module docstring) and shared training code.

    Parameters
    ----------
    backbone
        The network; saved with the weights, not in the hyperparameters.
    optimizer
        ``optimizer(params) -> Optimizer``, e.g. a Hydra ``_partial_: true`` config.
    scheduler
        ``scheduler(optimizer) -> scheduler`` or None. Torch ``LRScheduler`` s (incl.
        ``ReduceLROnPlateau``) and timm schedulers both work: a timm scheduler is stepped with
        ``step(epoch=...)`` at the end of each epoch when ``scheduler_interval="epoch"`` and with
        ``step_update(num_updates=...)`` after each optimizer step when ``"step"``, and its
        ``t_in_epochs`` must agree. Metric-driven schedulers read ``val/loss``.
    scheduler_interval
        ``"epoch"`` or ``"step"``: how often Lightning steps the scheduler.
    compile
        ``torch.compile`` the backbone in place at ``setup("fit")`` (default backend, Inductor). The
        first :data:`COMPILE_TIMED_STEPS` training steps are timed and the compilation is logged
        (``compiled the backbone in X s``) and kept in :attr:`compile_timing`.
    head_lr_multiplier
        The learning rate of the head's parameters (names starting with one of
        :attr:`head_prefixes`: ``backbone.head.``, every backbone's head, SegFormer's all-MLP decoder
        included) is the optimizer's times this. 1 (default) = one learning rate; SegFormer's
        Cityscapes recipe uses 10.
    no_weight_decay
        Exempt 1-D parameters (norm weights, biases) and position embeddings (names containing
        ``pos_embed`` or ``position``) from weight decay, as mmseg's and timm's recipes do. False
        (default) = the optimizer's weight decay on every parameter.

    With both options at their defaults the optimizer gets ``self.parameters()`` as before;
    otherwise it gets parameter groups (each with a ``"name"``: ``decay``, ``no_decay``,
    ``head_decay``, ``head_no_decay``; empty ones left out), and the head groups' ``lr`` is
    multiplied after the optimizer is built, so ``initial_lr`` of torch and timm schedulers (read
    when the scheduler is built, next) already carries the multiplier.

    Attributes
    ----------
    compile_timing
        ``None`` without ``compile``; after the first compiled training steps ``{"first_step_s",
        "step_s", "compile_s", "steps_timed"}``: the first training batch's wall time (forward,
        backward and the optimizer step where there is one), the median of the next ones (``None``
        when the run had only one), and their difference, the compilation (with whatever else the
        first step warms up). The evaluation graphs, compiled at the first validation and the first
        test batch, are not included.
    """

    task_name: str = "task"
    selection_metric: tuple[str, Literal["max", "min"]] = ("val/loss", "min")
    reported: tuple[Reported, ...] = ()
    # Whether a run of this task may start from a pretrained trunk (its end-of-run summary then says
    # "pretrained" or "from scratch"); inpainting, the paper's pretraining task, always starts from scratch.
    finetunes: bool = True
    head_prefixes: tuple[str, ...] = ("backbone.head.",)

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: Callable[[Optimizer], LRScheduler | TimmScheduler] | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        compile: bool = False,
        head_lr_multiplier: float = 1.0,
        no_weight_decay: bool = False,
    ) -> None:
        super().__init__()
        check_choice("scheduler_interval", scheduler_interval, SCHEDULER_INTERVALS, type(self).__name__)
        if isinstance(head_lr_multiplier, bool) or not isinstance(head_lr_multiplier, (int, float)) or not head_lr_multiplier > 0:
            raise ValueError(f"head_lr_multiplier={head_lr_multiplier!r} is not a positive number; 1 keeps one learning "
                             "rate, SegFormer's recipe uses 10 for its decode head.")
        if not isinstance(no_weight_decay, bool):
            raise ValueError(f"no_weight_decay={no_weight_decay!r} is not true or false.")
        # Subclasses also record both in their hyperparameters (save_hyperparameters); these copies
        # make the base class work on its own.
        self.head_lr_multiplier = float(head_lr_multiplier)
        self.no_weight_decay = no_weight_decay
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_timing: dict[str, Any] | None = None
        self._step_times: list[float] = []
        self._step_started: float | None = None
        self._activity: SpectrumActivity | None = None
        self._activity_counts: Tensor | None = None
        self._activity_split: str | None = None
        # Where the weights started, as metrics.json records it under "init" (set by afno_repro.train.build).
        self.init_record: dict[str, Any] | None = None

    # --- the harness contract -------------------------------------------------------------
    def reading(self) -> dict[str, Any]:
        """The task's readings of the paper's open choices (recorded in ``metrics.json``)."""
        return {}

    def protocol(self, selection: str) -> str:
        """How the reported number was selected, in words, for the data's ``selection`` option."""
        return f"checkpoint selected with data.selection={selection}"

    def evaluated_during_training(self) -> bool:
        """Whether an evaluation ran during training, so that a checkpoint was selected: the run's checkpoint
        callback picked one (True without a trainer or a checkpoint callback, where nothing says otherwise)."""
        callback = getattr(self._trainer, "checkpoint_callback", None) if self._trainer is not None else None
        return callback is None or bool(callback.best_model_path)

    def _unselected_protocol(self) -> str:
        """The protocol of a run whose training ended before its first evaluation (max_epochs below
        check_val_every_n_epoch): nothing was selected; the test loop scored the weights training ended with."""
        split = getattr(getattr(self.trainer, "datamodule", None), "reported_split", "test")
        return (f"no evaluation during training ({self.trainer.max_epochs} epoch(s), evaluated every "
                f"{self.trainer.check_val_every_n_epoch}): the weights at the end of training, scored on the {split} "
                "images, nothing selected")

    def evaluation_record(self, values: dict[str, float | None], selection: str) -> dict[str, Any]:
        """``test``, ``baselines`` and ``result`` for ``metrics.json`` from the test loop's numbers.

        ``values`` are the logged ``test/*`` numbers without the prefix; baselines are logged as
        ``test/baseline/<name>/<key>``. ``selection`` is the data's selection option (which split
        picked the checkpoint); :meth:`protocol` puts it in words. ``mixer_activity`` is what the
        last test pass measured of the AFNO mixer (:mod:`afno_repro.mixers.activity`), None when the
        backbone has no AFNO mixer with soft-thresholding.
        """
        protocol = self.protocol(selection) if selection == "last" or self.evaluated_during_training() else (
            self._unselected_protocol())
        count = logged_count(values.get("num_images"))
        test = {"num_images": count, **{k: v for k, v in values.items() if "/" not in k and k != "num_images"}}
        baselines: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if key.startswith("baseline/"):
                _, name, metric = key.split("/")
                baselines.setdefault(name, {"num_images": count})[metric] = value
        result = {item.key: test.get(item.key) for item in self.reported}
        activity = None
        if self._activity_counts is not None:
            activity = activity_record(self._activity_counts, split=self._activity_split, num_images=count)
        return {"test": test, "baselines": baselines, "result": {**result, "num_images": count, "protocol": protocol},
                "mixer_activity": activity}

    def on_test_start(self) -> None:
        # Meters only for the test pass: training and validation steps run the plain soft-thresholding.
        self._activity_counts = None
        self._activity = SpectrumActivity.attach(self.backbone, self.device)

    def on_test_end(self) -> None:
        activity, self._activity = self._activity, None
        if activity is None:
            return
        activity.detach()
        # Every process runs this hook: the sum over processes is a collective they all reach.
        self._activity_counts = self.trainer.strategy.reduce(activity.counts(), reduce_op="sum")
        self._activity_split = getattr(self.trainer.datamodule, "reported_split", "val")

    # --- shared training code -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed run continues from these weights, so it records where they started from this entry,
        # not from its own pretrained= option, which a resume does not load.
        checkpoint["init"] = self.init_record

    def setup(self, stage: str) -> None:
        # In-place compilation keeps the state-dict keys (`backbone.*`) those of the eager module,
        # so checkpoints load into compiled and eager models alike.
        if self._compiles() and stage == "fit":
            self.backbone.compile()
            self.compile_timing, self._step_times = None, []

    def _compiles(self) -> bool:
        return bool(getattr(self.hparams, "compile", False))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._compiles() and self.compile_timing is None:
            self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_started is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the step's kernels, not only their launch
        self._step_times.append(time.perf_counter() - self._step_started)
        self._step_started = None
        if len(self._step_times) == COMPILE_TIMED_STEPS:
            self._record_compile_timing()

    def on_train_end(self) -> None:
        if self._step_times and self.compile_timing is None:
            self._record_compile_timing()  # a run shorter than COMPILE_TIMED_STEPS steps

    def _record_compile_timing(self) -> None:
        """:attr:`compile_timing` from the timed steps, and the log line that says it."""
        first, rest = self._step_times[0], self._step_times[1:]
        step = statistics.median(rest) if rest else None
        timing = self.compile_timing = {
            "first_step_s": round(first, 3),
            "step_s": None if step is None else round(step, 4),
            "compile_s": None if step is None else round(first - step, 3),
            "steps_timed": len(self._step_times),
        }
        if not self.trainer.is_global_zero:
            return
        if step is None:
            log.info("compiled the backbone: the first training step, compilation included, took %.1f s (no later "
                     "step to subtract)", timing["first_step_s"])
        else:
            log.info("compiled the backbone in %.1f s (first training step %.1f s, median of the next %d %.3f s)",
                     timing["compile_s"], timing["first_step_s"], len(rest), timing["step_s"])

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor:
        """The model's output on an evaluation batch, without any scoring: what ``trainer.predict`` returns, and
        the pass :meth:`evaluation_forwards` makes unless a task evaluates in more ways."""
        return self(batch["image"])

    def evaluation_forwards(self, batch: dict[str, Tensor]) -> None:
        """Every pass of the model the test step makes on ``batch``, without scoring: the preflight sets the cost of
        evaluating a batch against these. One :meth:`predict_step`, unless a task evaluates in more ways."""
        self.predict_step(batch)

    def check_finite(self, loss: Tensor) -> None:
        """Stop at the first training step whose loss is NaN or infinite on any process.

        One scalar sync per training step buys stopping at the first bad step; agreeing across
        ranks makes every DDP process raise together instead of the others waiting in an
        all-reduce. Evaluation shards are uneven (no image is counted twice), so a collective there
        would wait for a rank that has no batch left: only training steps are checked.
        """
        if self.trainer.strategy.reduce_boolean_decision(not torch.isfinite(loss).item(), all=False):
            raise NonFiniteLossError(
                f"the train loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}) on at least one process; the run stops here so that "
                "the last good checkpoint is kept. Try a lower learning rate, fp32 instead of "
                "bf16/fp16 precision, or gradient clipping (trainer.gradient_clip_val=1.0, as in "
                "paper A.2)."
            )

    def write_grid(self, grid: Tensor, key: str, caption: str) -> None:
        """Save ``grid`` as ``<run dir>/images/val_epoch<NNN>.png`` and ``val_latest.png``, and log it
        to W&B under ``key`` when a ``WandbLogger`` is attached (rank 0 only)."""
        if not self.trainer.is_global_zero:
            return
        image_dir = Path(self.trainer.default_root_dir) / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        save_image(grid, image_dir / f"val_epoch{self.current_epoch:03d}.png")
        save_image(grid, image_dir / "val_latest.png")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[grid], step=self.global_step,
                                 caption=[f"epoch {self.current_epoch}: {caption}"])

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups under ``head_lr_multiplier`` and ``no_weight_decay``.

        Each group is ``{"name", "params", "lr_multiplier"}`` plus ``"weight_decay": 0.0`` for the
        exempt ones; groups without parameters are left out. Frozen parameters are left out too.

        Example
        -------
        >>> from functools import partial
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body, self.head = nn.Linear(2, 2), nn.Linear(2, 1)
        >>> task = PaperTask(Net(), partial(torch.optim.AdamW, lr=1e-3), head_lr_multiplier=10, no_weight_decay=True)
        >>> [(g["name"], len(g["params"]), g["lr_multiplier"]) for g in task.parameter_groups()]
        [('decay', 1, 1.0), ('no_decay', 1, 1.0), ('head_decay', 1, 10.0), ('head_no_decay', 1, 10.0)]
        """
        multiplier, exempt_allowed = self.head_lr_multiplier, self.no_weight_decay
        groups: dict[str, dict[str, Any]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            head = name.startswith(self.head_prefixes)
            exempt = exempt_allowed and (parameter.ndim <= 1 or "pos_embed" in name or "position" in name)
            key = ("head_" if head else "") + ("no_decay" if exempt else "decay")
            group = groups.setdefault(key, {"name": key, "params": [], "lr_multiplier": multiplier if head else 1.0})
            if exempt:
                group["weight_decay"] = 0.0
            group["params"].append(parameter)
        order = ("decay", "no_decay", "head_decay", "head_no_decay")
        return [groups[key] for key in order if key in groups]

    def _run_length(self, interval: str) -> dict[str, int]:
        """``t_initial="auto"`` in a scheduler config: the run's length in the scheduler's unit, optimizer
        steps (Lightning's ``estimated_stepping_batches``: epochs x batches / accumulation, or
        ``max_steps``) with ``scheduler_interval="step"``, epochs otherwise. A.3's "450 epochs" becomes
        the step count of a poly schedule without knowing the dataset's size in the config."""
        keywords = getattr(self.scheduler_factory, "keywords", {}) or {}
        if keywords.get("t_initial") != "auto":
            return {}
        if interval == "step":
            steps = self.trainer.estimated_stepping_batches
            if not math.isfinite(steps):
                raise ValueError("scheduler.t_initial=auto needs a finite run: set trainer.max_epochs or trainer.max_steps.")
            return {"t_initial": int(steps)}
        return {"t_initial": int(self.trainer.max_epochs)}

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        if self.head_lr_multiplier == 1.0 and not self.no_weight_decay:
            optimizer = self.optimizer_factory(params=self.parameters())
        else:
            optimizer = self.optimizer_factory(params=self.parameter_groups())
            for group in optimizer.param_groups:
                group["lr"] *= group["lr_multiplier"]
        if self.scheduler_factory is None:
            return optimizer
        interval = self.hparams.scheduler_interval
        scheduler = self.scheduler_factory(optimizer=optimizer, **self._run_length(interval))
        if isinstance(scheduler, TimmScheduler) and scheduler.t_in_epochs != (interval == "epoch"):
            raise ValueError(
                f"the timm scheduler {type(scheduler).__name__} has t_in_epochs={scheduler.t_in_epochs} "
                f"but scheduler_interval={interval!r}: timm ignores step_update() calls when its "
                "times are in epochs and step() calls when they are in updates, so the learning rate "
                "would never change. Set t_in_epochs=True with scheduler_interval='epoch', or "
                "t_in_epochs=False (and t_initial/warmup_t in optimizer steps) with "
                "scheduler_interval='step'."
            )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": interval,
                "frequency": 1,
                "monitor": "val/loss",
                "reduce_on_plateau": isinstance(scheduler, (ReduceLROnPlateau, PlateauLRScheduler)),
            },
        }

    def lr_scheduler_step(self, scheduler: LRScheduler | TimmScheduler, metric: Any | None) -> None:
        if not isinstance(scheduler, TimmScheduler):
            super().lr_scheduler_step(scheduler, metric)
        elif self.hparams.scheduler_interval == "step":
            # timm expects the number of optimizer updates done so far, which `global_step` is
            # once Lightning has stepped the optimizer.
            scheduler.step_update(num_updates=self.global_step, metric=metric)
        else:
            # timm expects the index of the epoch about to start.
            scheduler.step(epoch=self.current_epoch + 1, metric=metric)
