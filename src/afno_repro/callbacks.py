"""Lightning callbacks of our own (everything else comes from Lightning)."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = ["RNGStateCheckpoint"]


class RNGStateCheckpoint(pl.Callback):
    """Save the Python, NumPy and torch random states in every checkpoint and restore them on resume.

    Lightning restores weights, optimizer, scheduler and loop counters but not the global random
    streams, so a resumed run would draw different crops, masks and drop-path samples than a run
    that was never interrupted. With this callback both runs draw the same ones.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["rng_states"] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states is None:
            return
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
