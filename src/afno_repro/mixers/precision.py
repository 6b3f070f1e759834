"""Full precision for the spectral mixers' FFTs, whatever autocast is doing around them."""

from __future__ import annotations

import torch

__all__ = ["autocast_off"]


def autocast_off(x: torch.Tensor) -> torch.autocast:
    """A context that disables autocast on ``x``'s device.

    The spectral mixers compute their FFTs and everything between them in float32 (half-precision
    FFTs are unsupported for most sizes and lose too much). Meta tensors, on which the FLOP
    accounting traces models, have no autocast of their own: CPU's stands in for them.
    """
    device_type = "cpu" if x.device.type == "meta" else x.device.type
    return torch.autocast(device_type=device_type, enabled=False)
