"""How a run fails: the errors a user can fix, told as one paragraph, and a record of every failure.

:func:`run_guarded` wraps a run (:func:`afno_repro.train.main` is ``run_guarded(run, cfg)``):

- an error a user can fix (unknown names, bad paths, shapes that do not divide, a NaN loss: a
  :class:`UserFacingError` or one of our ``ValueError`` s, also when Hydra wrapped it while
  instantiating) is printed as one paragraph without a traceback (``HYDRA_FULL_ERROR=1`` shows it)
  and the process exits with status 2;
- any failure writes ``metrics.json`` with status ``failed`` and the message, unless the run already
  recorded its own end; checkpoints and results already written stay where they are;
- in a sweep (``-m``) a failing run does not stop the sweep: the next run starts, and the sweep
  summary lists it and ends with a non-zero status;
- Ctrl-C (or SIGTERM) after :class:`RunInterrupted`: the record says how to resume; exit status 130.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from afno_repro.runs import write_json
from afno_repro.runs.record import identity

__all__ = ["RunFolderInUse", "RunInterrupted", "UserFacingError", "describe", "finish_wandb", "run_guarded",
           "unknown_option", "user_cause"]

# Exceptions that carry a message written for the user (our ValueErrors name the fix).
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError, MissingMandatoryValue)


class UserFacingError(RuntimeError):
    """An error whose message is meant for the person running the command."""


class RunFolderInUse(UserFacingError):
    """The run folder already holds another run's results."""


class RunInterrupted(RuntimeError):
    """Training was stopped by Ctrl-C (or SIGTERM); ``metrics.json`` says how to resume."""


def run_guarded(run: Callable[[DictConfig], dict[str, Any] | None], cfg: DictConfig) -> dict[str, Any] | None:
    """``run(cfg)``, its failures handled as the module docstring says."""
    try:
        return run(cfg)
    except RunInterrupted as error:
        print(f"\ninterrupted: {error}\n", file=sys.stderr, flush=True)
        finish_wandb()
        sys.stdout.flush()
        # metrics.json and the checkpoints are written; exit now rather than wait at interpreter
        # shutdown on DataLoader workers a Ctrl-C left mid-epoch (seen hanging there). That skips the
        # exit handlers, so the temporary folders wandb makes when imported are removed here.
        _remove_wandb_temp_dirs()
        os._exit(130)
    except Exception as error:  # noqa: BLE001 - classified below, re-raised when not ours
        cause = user_cause(error)
        in_sweep = _in_sweep()
        _record_failure(cfg, error, cause)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or (cause is None and not in_sweep):
            raise
        if cause is None:
            # A bug rather than bad input: keep the traceback for the report, go on with the sweep.
            traceback.print_exception(error, file=sys.stderr)
        else:
            print(f"\nerror: {describe(cause)}{_going_on(cause)}\n", file=sys.stderr, flush=True)
        if in_sweep:
            return None
        sys.exit(2)
    finally:
        finish_wandb()


def _going_on(error: BaseException) -> str:
    """For a failure after training wrote checkpoints (a corrupt validation image met in the final evaluation, a
    full disk): that they are kept, and the command that goes on from the last one once the cause is fixed."""
    said = describe(error)
    if isinstance(error, RunFolderInUse) or not HydraConfig.initialized() or "ckpt_path=" in said or "are kept in" in said:
        return ""  # another run's folder, or a message that already says what is kept (a NaN loss)
    from afno_repro.runs import resume_command

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return ""
    command = resume_command(list(HydraConfig.get().overrides.task), last, run_dir)
    return (f" The checkpoints written so far are kept in {last.parent}; once that is fixed, `{command}` goes on from the "
            "last one (a run whose training had finished goes straight to its evaluation).")


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def user_cause(error: BaseException) -> BaseException | None:
    """The user-facing exception in ``error``'s chain (Hydra wraps what targets raise), if any: also an option a
    class does not take (``+trainer.max_epoch=5``, ``+optimizer.momentum=0.9``), told as :func:`unknown_option`."""
    seen = error
    while seen is not None:
        if isinstance(seen, (UserFacingError, *_USER_ERRORS)) and not isinstance(seen, InstantiationException):
            return seen
        if isinstance(seen, TypeError) and (message := unknown_option(seen)) is not None:
            return UserFacingError(message)
        seen = seen.__cause__ or (seen.__context__ if isinstance(seen, InstantiationException) else None)
    return None


# Where the classes a config group instantiates live, and the group: a TypeError names only the class.
_OPTION_HOMES = (("torch.optim", "optimizer"), ("timm.scheduler", "scheduler"), ("pytorch_lightning", "trainer"),
                 ("afno_repro.data", "data"), ("afno_repro.models", "backbone"), ("afno_repro.tasks", "task"))


def unknown_option(error: TypeError) -> str | None:
    """The paragraph for ``<Class>.__init__() got an unexpected keyword argument '<key>'`` raised by a class a config
    group builds (an optimizer, a scheduler, Lightning's Trainer), naming the closest option it takes; else None."""
    import difflib
    import importlib
    import inspect
    import re

    found = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(error))
    if found is None:
        return None
    name, key = found.groups()
    for module, group in _OPTION_HOMES:
        cls = getattr(importlib.import_module(module), name, None)
        if inspect.isclass(cls):
            break
    else:
        return None
    # What the project passes (the parameters, the optimizer; a task's backbone and scheduler) is not the config's.
    passed = ("self", "args", "kwargs", "params", "optimizer") + (("backbone", "scheduler") if group == "task" else ())
    options = [option for option in inspect.signature(cls.__init__).parameters if option not in passed]
    close = difflib.get_close_matches(key, options, n=1)
    guess = f"Did you mean {group}.{close[0]}? " if close else ""
    return (f"{group}.{key} is not an option of {cls.__name__}: remove it. {guess}"
            f"Its options: {', '.join(options)}.")


def describe(error: BaseException) -> str:
    """The paragraph a user reads for ``error`` (a user-facing error, see :func:`user_cause`)."""
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
    if metrics.is_file() or not _is_rank_zero() or isinstance(cause, RunFolderInUse):
        return
    message = describe(cause) if cause is not None else f"{type(error).__name__}: {error}"
    try:
        record = identity(cfg, run_dir)
    except Exception:  # noqa: BLE001 - the config itself may be what failed; record the error alone
        record = {"run_dir": str(run_dir), "overrides": list(HydraConfig.get().overrides.task)}
    try:
        write_json(metrics, {**record, "status": "failed", "error": message})
    except OSError:
        pass  # an unwritable run folder is itself the error being reported


def _is_rank_zero() -> bool:
    """Whether this is the process of global rank 0: torch.distributed's rank once its group is up, else
    the launchers' variables (RANK from torchrun, SLURM_PROCID from srun; LOCAL_RANK alone only on node 0,
    since every node's first process has LOCAL_RANK 0 and all of them would write the run's one record)."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    for key in ("RANK", "SLURM_PROCID"):
        if str(os.environ.get(key, "")).isdigit():
            return int(os.environ[key]) == 0
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0"))
    return str(os.environ.get("LOCAL_RANK", "0")) in ("", "0") and str(node) in ("", "0")


def _remove_wandb_temp_dirs() -> None:
    """Remove the temporary folders wandb creates at import (for media and artifacts; ``tempfile.TemporaryDirectory``
    objects held by its modules and classes, whose cleanup normally runs at interpreter exit)."""
    import tempfile

    for name, module in list(sys.modules.items()):
        if not (name == "wandb" or name.startswith("wandb.")) or module is None:
            continue
        for value in list(vars(module).values()):
            for held in (value, *(vars(value).values() if isinstance(value, type) else ())):
                if isinstance(held, tempfile.TemporaryDirectory):
                    held.cleanup()


def finish_wandb() -> None:
    """Close the W&B run if one is open (its files are complete before the process ends)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
