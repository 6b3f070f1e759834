"""Fills the tests hand to BiharmonicPool's workers, which import this module by name: numpy only,
so that a worker starts in a second."""

import os

import numpy as np


def failing_fill(image: np.ndarray, hidden: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """A fill that raises in the worker."""
    raise ValueError(f"no fill for a {image.shape} image")


def dying_fill(image: np.ndarray, hidden: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """A worker that dies mid-fill, as one killed by the out-of-memory killer does."""
    os._exit(1)
