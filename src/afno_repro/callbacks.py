"""Lightning callbacks of our own (everything else comes from Lightning)."""

from __future__ import annotations

import random
import signal
import threading
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = ["CtrlCNeverLost", "RNGStateCheckpoint"]


class RNGStateCheckpoint(pl.Callback):
    """Save the Python, NumPy and torch random states in every checkpoint and restore them on resume.

    Lightning restores weights, optimizer, scheduler and loop counters but not the global random
    streams, so a resumed run would draw different crops, masks and drop-path samples than a run
    that was never interrupted. With this callback both runs draw the same ones.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Plain tuples, ints and tensors only, so the checkpoint loads with weights_only=True.
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states is None:
            return
        random.setstate(states["python"])
        kind, keys, position, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


# Where Python prints a KeyboardInterrupt as "Exception ignored" (with a traceback) and drops it:
# finalizers, and logging's fork hooks, which run while DataLoader workers are forked.
_DROPPING_FUNCTIONS = {"__del__", "_releaseLock", "_acquireLock", "_after_at_fork_child_reinit_locks"}


def _python_would_drop_it(frame: Any) -> bool:
    """Whether a ``KeyboardInterrupt`` raised in ``frame`` would be printed and dropped by Python."""
    while frame is not None:
        if frame.f_code.co_name in _DROPPING_FUNCTIONS:
            return True
        frame = frame.f_back
    return False


class CtrlCNeverLost(pl.Callback):
    """Make sure a Ctrl-C stops training, cleanly, wherever it lands.

    Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. Inside a finalizer
    (a DataLoader iterator's ``__del__`` joining its workers at the end of an epoch) or a fork hook
    (logging's lock release while DataLoader workers are forked) it is printed as "Exception
    ignored", with a traceback, and lost, and training goes on. There this callback raises nothing
    and only remembers the Ctrl-C; everywhere else it raises at once. A remembered Ctrl-C is raised
    at the next batch or epoch boundary, so Lightning's graceful stop (and the run's
    ``interrupted`` record) always follows.
    """

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.pressed = True
        if _python_would_drop_it(frame):
            return
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only the main thread may set handlers; an ignored SIGINT (a background job) stays ignored.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._handler:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)

    def _raise_if_pressed(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._raise_if_pressed()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._raise_if_pressed()

    def on_train_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        self._raise_if_pressed()

    def on_validation_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        self._raise_if_pressed()
