"""Parameter and FLOP accounting under the paper's convention.

The paper's "GFLOPs" (Tables 2-5) are multiply-accumulates counted once over linear, conv,
matmul, bmm and einsum operations: LayerNorm, FFTs and element-wise operations count nothing
(fvcore's unit). :func:`count_flops` measures that by tracing the real model with
:class:`torch.utils.flop_counter.FlopCounterMode` (whose count is two FLOPs per
multiply-accumulate, so it is halved), on the meta device by default so that ViT-B/4 at 224 or
SegFormer-B3 at 1024x1024 is counted in seconds without allocating a weight.

Three things the tracer alone cannot decide, each explicit:

* ``attention_matmuls``: every ``scaled_dot_product_attention`` call is counted from its shapes
  as its two matmuls, ``Q K^T`` (``L * S * E`` per head) and ``A V`` (``L * S * Ev``), never by
  the kernel torch runs: below that function torch picks a math path (two ``bmm``, counted) or a
  fused kernel that ``FlopCounterMode`` counts or not depending on the kernel and the torch
  version (torch 2.14's ``_scaled_dot_product_flash_attention_for_cpu``, which fake and CPU
  tensors take, is not counted). Whatever was traced inside the call is taken out again. The
  paper's Table 2 self-attention row (357.2) counts only one of the two ``N^2 d`` matmuls, its
  Table 4 efficient-attention mixer (129.9) counts both: ``"one"`` leaves out ``Q K^T``.
* Reference formulations: a module may compute faster than the formulation the paper counted
  (AFNO's complex block MLP as complex-dtype matmuls, which the tracer counts as one real-sized
  matmul instead of four). Any module with a ``reference_macs(h, w)`` method (multiply-accumulates
  of the reference formulation for one sample on an ``h x w`` token grid) is counted by that
  method instead of by what was traced inside it.
* FFTs: not part of the paper's GFLOPs, reported in a separate column as
  ``N * C * ceil(log2 N)`` FLOPs per transform of ``N`` points over ``C`` independent signals
  (GFNet's convention; one ``rfft2``/``irfft2`` over an ``h x w`` grid has ``N = h*w``).

Example
-------
>>> import torch
>>> from afno_repro.analysis import count_flops, count_params
>>> layer = torch.nn.Linear(8, 16)
>>> count_params(layer)
144
>>> count_flops(layer, (1, 10, 8)).gflops * 1e9  # 10 tokens * 8 * 16 multiply-accumulates
1280.0
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch._subclasses.fake_tensor import DynamicOutputShapeException, FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from afno_repro.mixers import get_mixer_spec, list_mixers

__all__ = ["ATTENTION_MATMULS", "DataDependentShapeError", "FlopReport", "count_flops", "count_params", "counting_convention"]

ATTENTION_MATMULS = ("one", "both")

_FFT_OPS = (torch.ops.aten._fft_r2c, torch.ops.aten._fft_c2r, torch.ops.aten._fft_c2c)


class DataDependentShapeError(ValueError):
    """A model traced without data (``device="meta"``) computed a shape from tensor values."""


@dataclass(frozen=True)
class FlopReport:
    """What :func:`count_flops` measured for one input.

    Attributes
    ----------
    input_shape: the traced input's shape, batch included; every count is for this whole input.
    gflops: billions of multiply-accumulates of the whole model in the paper's convention (the
        paper's "GFLOPs").
    mixer_gflops: the part of ``gflops`` spent inside token mixers (modules whose class is in the
        mixer registry; a mixer nested in another counts once, with the outer one).
    fft_gflops: billions of FLOPs of all FFTs, ``N * C * ceil(log2 N)`` per transform; not
        included in ``gflops``.
    attention_matmuls: ``"one"`` or ``"both"``: how ``scaled_dot_product_attention`` was counted.
    attention_qk_gflops: billions of multiply-accumulates of the ``Q K^T`` products of all
        ``scaled_dot_product_attention`` calls: what separates the two conventions, so the other
        one's total is ``gflops`` plus (under ``"one"``) or minus (under ``"both"``) this.
    convention: a sentence stating the counting convention, for printing beside the numbers.
    mixer_gflops_by_module: ``mixer_gflops`` split by the mixer module's qualified name.
    """

    input_shape: tuple[int, ...]
    gflops: float
    mixer_gflops: float
    fft_gflops: float
    attention_matmuls: str
    attention_qk_gflops: float
    convention: str
    mixer_gflops_by_module: dict[str, float] = field(default_factory=dict)

    @property
    def gflops_with_fft(self) -> float:
        """``gflops + fft_gflops``: the total with FFTs counted, as GFNet reports it."""
        return self.gflops + self.fft_gflops


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``, each shared (tied) parameter counted once.

    Parameters on the meta device count too, so a model built under ``torch.device("meta")``
    is measured without allocating its weights.
    """
    return sum(p.numel() for p in model.parameters())


def counting_convention(attention_matmuls: str) -> str:
    """The counting convention of :func:`count_flops` as one printable sentence."""
    attention = {
        "one": "scaled_dot_product_attention as ONE N^2 d matmul (from its shapes)",
        "both": "scaled_dot_product_attention as BOTH N^2 d matmuls (from its shapes)",
    }[attention_matmuls]
    return (
        "GFLOPs = multiply-accumulates counted once (FlopCounterMode / 2) over linear, conv, "
        f"matmul, bmm, einsum; LayerNorm, FFT and element-wise ops not counted; {attention}; "
        "modules with reference_macs() counted by their reference formulation; "
        "FFT column = N*C*ceil(log2 N) per transform (GFNet)"
    )


class _AttentionCounter(TorchFunctionMode):
    """Counts every ``scaled_dot_product_attention`` call from its shapes, whatever kernel runs it.

    Seen at the function level, above torch's choice of kernel: what ``flop_counter`` recorded
    during the call (two ``bmm`` on the math path, a formula for some fused kernels, nothing for
    others) is kept in ``traced_flops`` so that it can be taken out of the total again, and the
    call's ``Q K^T`` and ``A V`` multiply-accumulates are added up from the shapes of query
    ``(..., L, E)``, key ``(..., S, E)`` and value ``(..., S, Ev)``.
    """

    def __init__(self, flop_counter: FlopCounterMode) -> None:
        super().__init__()
        self.flop_counter = flop_counter
        self.traced_flops = 0
        self.qk_macs = 0
        self.av_macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        named = dict(zip(("query", "key", "value"), args)) | kwargs
        query, key, value = named["query"], named["key"], named["value"]
        before = self.flop_counter.get_total_flops()
        out = func(*args, **kwargs)
        self.traced_flops += self.flop_counter.get_total_flops() - before
        # Query heads index the output; grouped-query keys/values are broadcast to them.
        scores = math.prod(query.shape[:-1]) * key.shape[-2]
        self.qk_macs += scores * query.shape[-1]
        self.av_macs += scores * value.shape[-1]
        return out


class _FFTCounter(TorchDispatchMode):
    """Adds up ``N * C * ceil(log2 N)`` for every FFT (``N`` points, ``C`` signals)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet in _FFT_OPS:
            # The real side of the transform holds N*C values: the input of r2c/c2c, the output
            # of c2r (whose complex input is only half the spectrum).
            signal = out if packet is torch.ops.aten._fft_c2r else args[0]
            points = math.prod(signal.shape[d] for d in args[1])
            self.flops += signal.numel() * math.ceil(math.log2(points))
        return out


def _not_negative(macs: int, name: str, module: nn.Module, what: str) -> int:
    """``macs``, or ``RuntimeError`` naming the module: a negative count is a bug, not a number."""
    if macs < 0:
        raise RuntimeError(
            f"count_flops: module {name or '<model>'!r} ({type(module).__name__}) has a negative count "
            f"({what}: {macs} multiply-accumulates), which no model can have. Either its reference_macs() "
            "returns a negative number, or the counting subtracted something it never counted (e.g. "
            "an attention matmul that the traced kernel did not record); no count is reported."
        )
    return macs


@dataclass
class _Call:
    """One call of a tracked module while tracing."""

    name: str
    is_mixer: bool
    reference_macs: int | None
    start: int
    adjustment: int = 0


class _Tracer:
    """Forward hooks that attribute multiply-accumulates to mixers and reference modules."""

    def __init__(self, model: nn.Module, flop_counter: FlopCounterMode, attention: _AttentionCounter, subtract_qk: bool):
        self.flop_counter = flop_counter
        self.attention = attention
        self.subtract_qk = subtract_qk
        self.stack: list[_Call] = []
        self.adjustment = 0
        self.mixer_macs: dict[str, int] = {}
        mixer_classes = tuple(get_mixer_spec(name).cls for name in list_mixers())
        self.handles = []
        for name, module in model.named_modules():
            is_mixer = isinstance(module, mixer_classes)
            if is_mixer or callable(getattr(module, "reference_macs", None)):
                self.handles.append(module.register_forward_pre_hook(self._enter(name, is_mixer), with_kwargs=True))
                self.handles.append(module.register_forward_hook(self._exit(), always_call=True))

    def macs(self) -> int:
        """Multiply-accumulates traced so far, attention counted by shape in its convention, no substitution."""
        traced = (self.flop_counter.get_total_flops() - self.attention.traced_flops) // 2
        return traced + self.attention.av_macs + (0 if self.subtract_qk else self.attention.qk_macs)

    def _enter(self, name: str, is_mixer: bool):
        def hook(module, args, kwargs):
            reference = None
            if callable(getattr(module, "reference_macs", None)):
                x = next(t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))
                batch, h, w = x.shape[0], x.shape[1], x.shape[2]
                reference = batch * int(module.reference_macs(h, w))
            self.stack.append(_Call(name, is_mixer, reference, self.macs()))
            # Raised after the push: the exit hook, called even when this one raises, pops the call.
            if reference is not None:
                _not_negative(reference, name, module, "reference_macs()")

        return hook

    def _exit(self):
        def hook(module, args, output):
            call = self.stack.pop()
            traced = _not_negative(self.macs() - call.start, call.name, module, "traced")
            # An outer reference formulation replaces whatever was substituted inside it.
            adjustment = call.adjustment if call.reference_macs is None else call.reference_macs - traced
            if self.stack:
                self.stack[-1].adjustment += adjustment
            else:
                self.adjustment += adjustment
            if call.is_mixer and not any(outer.is_mixer for outer in self.stack):
                own = _not_negative(traced + adjustment, call.name, module, "counted")
                self.mixer_macs[call.name] = self.mixer_macs.get(call.name, 0) + own

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def count_flops(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    attention_matmuls: Literal["one", "both"] = "one",
    device: str | torch.device = "meta",
) -> FlopReport:
    """Count ``model``'s forward multiply-accumulates on one input, in the paper's convention.

    Parameters
    ----------
    model: any ``nn.Module`` taking one tensor, on any device (the meta device included). It is
        not modified: its parameters and buffers are swapped for the trace only
        (``torch.func.functional_call``), and it is traced in eval mode, its modes restored after.
    input_shape: shape of the input tensor, batch included (e.g. ``(1, 3, 224, 224)``).
    attention_matmuls: ``"one"`` counts ``scaled_dot_product_attention`` as one ``N^2 d`` matmul
        (the paper's Table 2), ``"both"`` as its two (Table 4). Either way counted from the
        query/key/value shapes, so the count is the same whichever kernel torch runs.
    device: where to trace. ``"meta"`` (default) computes and allocates nothing, so any size takes
        seconds: parameters and input become storage-less fake tensors (torch's ``FakeTensorMode``)
        that present as CPU tensors, so device-dependent code in the model takes its CPU path and
        the count is the CPU model's. A real device runs the model (needed only by a model with
        data-dependent shapes, for which ``"meta"`` raises :class:`DataDependentShapeError`); a
        model built on the meta device gets uninitialised weights there.

    Returns
    -------
    FlopReport
        Total, mixer-only and FFT counts for the whole input, and the convention string.
    """
    if attention_matmuls not in ATTENTION_MATMULS:
        raise ValueError(
            f"attention_matmuls={attention_matmuls!r} is not a counting convention; valid choices are "
            "'one' (the paper's Table 2: Q K^T and A V counted as one N^2 d matmul) and 'both' (its "
            "Table 4: both counted). Pass one of these."
        )
    device = torch.device(device)
    storageless = device.type == "meta"
    target = torch.device("cpu") if storageless else device
    training = {module: module.training for module in model.modules()}
    flop_counter = FlopCounterMode(display=False)
    attention = _AttentionCounter(flop_counter)
    tracer = _Tracer(model, flop_counter, attention, subtract_qk=attention_matmuls == "one")
    ffts = _FFTCounter()
    model.eval()
    try:
        with FakeTensorMode() if storageless else contextlib.nullcontext():
            tensors = (*model.named_parameters(), *model.named_buffers())
            # Values matter to no count, so meta parameters get uninitialised storage on a real device.
            state = {
                name: torch.empty(t.shape, dtype=t.dtype, device=target) if storageless or t.is_meta else t.to(target)
                for name, t in tensors
            }
            x = torch.zeros(tuple(input_shape), device=target)
            with torch.no_grad(), flop_counter, ffts, attention:
                functional_call(model, state, (x,), tie_weights=True, strict=False)
    except DynamicOutputShapeException as error:
        raise DataDependentShapeError(
            f"{type(model).__name__} computes a tensor shape from tensor values ({error.func}), which "
            "cannot be traced on the meta device, where tensors hold no values. Count it on a real "
            "device instead: count_flops(model, input_shape, device='cpu') (a model built on the meta "
            "device is given uninitialised weights for that run), or build the shape from Python ints."
        ) from error
    finally:
        tracer.remove()
        for module, mode in training.items():
            module.training = mode
    total = _not_negative(tracer.macs() + tracer.adjustment, "", model, "total")
    return FlopReport(
        input_shape=tuple(input_shape),
        gflops=total / 1e9,
        mixer_gflops=sum(tracer.mixer_macs.values()) / 1e9,
        fft_gflops=ffts.flops / 1e9,
        attention_matmuls=attention_matmuls,
        attention_qk_gflops=attention.qk_macs / 1e9,
        convention=counting_convention(attention_matmuls),
        mixer_gflops_by_module={name: macs / 1e9 for name, macs in tracer.mixer_macs.items()},
    )
