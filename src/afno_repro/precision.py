"""The run's numeric precision: one rule, printed at the start of every run and kept in ``metrics.json``.

``trainer.precision: auto`` (the default) trains in ``bf16-mixed`` on a CUDA GPU that has bfloat16
(Ampere and newer) and in ``32-true`` everywhere else; ``matmul_precision: auto`` lets float32 matrix
products use TF32 on such a GPU (``torch.set_float32_matmul_precision("high")``) and keeps them exact
on a CPU (``"highest"``). Any explicit value (``trainer.precision=32-true``, ``matmul_precision=highest``)
is used as given.

Why these defaults: the anchors' own training loops run under autocast (GFNet's and DeiT's
``torch.cuda.amp.autocast()``), and on one H200 a Table 2 AFNO step through ``train.py`` took 0.74 s
with them against 2.37 s in float32 without TF32 (README, "Speed on a GPU"). On a CPU bf16 autocast makes these models slower
(the demo's ViT training step: 0.2-0.3 s float32, 3.3-3.4 s bf16 on 2 cores; README, the "Precision" note under
"Running the paper's experiments"), so float32 stays. Whatever the precision, the spectral mixers keep their
FFTs in float32 (:mod:`afno_repro.mixers.precision`).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["on_cuda", "resolve_precision", "apply_precision", "PRECISION_CHOICES", "MATMUL_CHOICES"]

PRECISION_CHOICES = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")
MATMUL_CHOICES = ("auto", "highest", "high", "medium")


def on_cuda(accelerator: Any) -> bool:
    """Whether a trainer with ``trainer.accelerator=accelerator`` runs on a CUDA GPU here."""
    return str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(accelerator: str, precision: Any = "auto", matmul_precision: str = "auto") -> dict[str, Any]:
    """The precision a run trains in, from the trainer's accelerator and the two settings.

    Parameters
    ----------
    accelerator : str
        ``trainer.accelerator`` (``auto``, ``gpu``, ``cuda`` or ``cpu``).
    precision : str
        ``trainer.precision``: ``auto`` or any Lightning precision.
    matmul_precision : str
        ``auto``, ``highest``, ``high`` or ``medium`` (``torch.set_float32_matmul_precision``).

    Returns
    -------
    dict
        ``trainer`` (what Lightning gets), ``float32_matmul``, ``device`` and ``rule`` (one sentence
        saying why), the block ``metrics.json`` records as ``precision``.

    Examples
    --------
    >>> resolve_precision("cpu")["trainer"], resolve_precision("cpu")["float32_matmul"]
    ('32-true', 'highest')
    >>> resolve_precision("cpu", "bf16-mixed", "high")["trainer"]
    'bf16-mixed'
    """
    precision = str(precision)
    if precision not in PRECISION_CHOICES:
        raise ValueError(
            f"trainer.precision={precision!r} is not a precision; valid choices are {PRECISION_CHOICES} "
            "('auto': bf16-mixed on a CUDA GPU with bfloat16, 32-true elsewhere)."
        )
    if matmul_precision not in MATMUL_CHOICES:
        raise ValueError(
            f"matmul_precision={matmul_precision!r} is not a float32 matmul precision; valid choices are "
            f"{MATMUL_CHOICES} ('auto': high, i.e. TF32, on a CUDA GPU; highest on a CPU)."
        )
    cuda = on_cuda(accelerator)
    bf16 = cuda and torch.cuda.is_bf16_supported()
    device = f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"
    if precision == "auto":
        precision = "bf16-mixed" if bf16 else "32-true"
        why = ("a CUDA GPU with bfloat16" if bf16 else
               "a CUDA GPU without bfloat16" if cuda else "no GPU: bf16 autocast is slower than float32 on a CPU")
        rule = f"trainer.precision=auto -> {precision} ({why})"
    else:
        rule = f"trainer.precision={precision} (as given)"
    if matmul_precision == "auto":
        matmul_precision = "high" if cuda else "highest"
        rule += f"; matmul_precision=auto -> {matmul_precision} ({'TF32 float32 products on a GPU' if cuda else 'exact float32 on a CPU'})"
    else:
        rule += f"; matmul_precision={matmul_precision} (as given)"
    return {"trainer": precision, "float32_matmul": matmul_precision, "device": device, "rule": rule}


def apply_precision(resolved: dict[str, Any]) -> None:
    """Set torch's float32 matmul precision to what :func:`resolve_precision` decided."""
    torch.set_float32_matmul_precision(resolved["float32_matmul"])
