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
