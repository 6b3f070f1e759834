"""The global batch as a declared quantity of an experiment, reached on whatever hardware runs it.

An experiment that fixes its batch (A.3's 1024 for the SegFormer pretraining, SegFormer's 8 crops per
iteration for Cityscapes, our 64 for Table 2) sets ``global_batch``; ``data.batch_size`` is then the
most a device holds. On ``world`` processes (devices x nodes) the plan is:

- ``data.batch_size x world >= global_batch``: each process takes ``global_batch / world`` images
  (the global batch must divide evenly), no accumulation;
- otherwise gradients are accumulated over the fewest micro-batches, at least
  ``ceil(global_batch / (data.batch_size x world))``, whose size ``global_batch / (world x accumulation)``
  is a whole number (1024 images at 96 a process: 16 steps of 64, since 11 steps would not divide).

Either way the effective global batch equals the declared one or the run is refused with the numbers
that would make it so; ``metrics.json`` records the plan under ``batch``. The learning rate is the
experiment's (the paper's, for its global batch); the warmup and schedule count optimizer steps where
the paper does (A.3's 6250 iterations).

Without ``global_batch`` the run trains as configured: ``data.batch_size`` per process, times
``trainer.accumulate_grad_batches``; the record still says what the global batch was.
"""

from __future__ import annotations

import math
from typing import Any

from afno_repro.precision import on_cuda

__all__ = ["world_size", "batch_plan"]


def world_size(accelerator: Any, devices: Any, num_nodes: Any = 1) -> int:
    """Processes a Lightning trainer with these settings runs: devices per node x nodes.

    >>> world_size("cpu", 1), world_size("gpu", "4", 2), world_size("gpu", [0, 2])
    (1, 8, 2)
    """
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    elif isinstance(devices, str) and devices.isdigit() and int(devices) > 0:
        count = int(devices)
    else:  # "auto" or -1: every visible GPU, one process on a CPU
        import torch

        count = torch.cuda.device_count() if on_cuda(accelerator) else 1
    return count * int(num_nodes or 1)


def batch_plan(per_device: int, world: int, global_batch: int | None = None, accumulation: int | None = None) -> dict[str, Any]:
    """Per-process batch, accumulation and effective global batch for a run.

    Parameters
    ----------
    per_device : int
        ``data.batch_size``: with ``global_batch``, the most one process holds.
    world : int
        Processes (devices x nodes).
    global_batch : int, optional
        The experiment's declared global batch.
    accumulation : int, optional
        ``trainer.accumulate_grad_batches`` as configured (``None`` or 1: not set).

    Returns
    -------
    dict
        ``per_device``, ``world``, ``accumulation``, ``effective_global``, ``declared_global`` and
        ``rule`` (one sentence).

    Examples
    --------
    >>> plan = batch_plan(128, 1, 1024)
    >>> plan["per_device"], plan["accumulation"], plan["effective_global"]
    (128, 8, 1024)
    >>> batch_plan(8, 4, 8)["per_device"]
    2
    >>> batch_plan(64, 2)["effective_global"]
    128
    """
    if per_device < 1 or world < 1:
        raise ValueError(f"data.batch_size={per_device} on {world} processes: both must be positive.")
    accumulation = int(accumulation or 1)
    if global_batch is None:
        return {"per_device": per_device, "world": world, "accumulation": accumulation,
                "effective_global": per_device * world * accumulation, "declared_global": None,
                "rule": f"as configured: {per_device} per process x {world} process(es) x {accumulation} accumulation"}
    global_batch = int(global_batch)
    if accumulation != 1:
        raise ValueError(
            f"global_batch={global_batch} and trainer.accumulate_grad_batches={accumulation} both set the batch: "
            "the accumulation is computed from global_batch. Drop the accumulation override, or set "
            "global_batch=null to choose it yourself."
        )
    if global_batch % world:
        raise ValueError(
            f"global_batch={global_batch} does not divide over {world} process(es): every process takes the same "
            f"share of each step. Run on a number of devices that divides {global_batch}."
        )
    # The fewest accumulation steps whose micro-batch divides the global batch and fits data.batch_size
    # (1024 at 96 a process: 16 steps of 64, where 11 steps would not divide); one image a step always does.
    steps = max(1, math.ceil(global_batch / (per_device * world)))
    while global_batch % (world * steps):
        steps += 1
    micro = global_batch // (world * steps)
    return {"per_device": micro, "world": world, "accumulation": steps, "effective_global": global_batch,
            "declared_global": global_batch,
            "rule": f"global_batch={global_batch}: {micro} per process x {world} process(es) x {steps} accumulation"}
