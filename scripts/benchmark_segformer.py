"""Peak memory and time of one SegFormer-B3 forward+backward per Table 4 row, at 1024x1024 by default.

Paper Section 5.3: at 1024x1024 (65,536 stage-1 tokens) full self-attention "does not fit", the
Fourier mixers do. Each row is built from the project's own config (``paper_model=table4/<row>``,
``backbone.img_size=--size``, as training composes it) and runs ONE forward+backward of batch 1
(after one warm-up pass unless ``--no-warmup``; the time is the timed pass's).

Before a row runs, its memory is PREDICTED from a trace of the same model on the meta device (no
weight or activation allocated): weights + gradients + every tensor autograd saves for the
backward (parameters excluded, each saved tensor once) + a working margin of twice the largest
saved tensor. ``scaled_dot_product_attention`` is accounted for by the kernel the device really
runs, found by a probe on a small input: a fused kernel (CPU flash, CUDA flash / memory-efficient)
saves ``O(N)`` (its output and log-sum-exp), the math path saves the ``heads x N x S`` softmax
probabilities of every block and holds one more such matrix while computing it: for full
attention at 1024 that is ``3 x 65,536^2 x 4 bytes = 52 GB`` in stage 1 alone. A row whose
prediction exceeds ``--memory-limit-gb`` (default: the device's free memory; on the CPU 80% of
the available RAM) prints "does not fit: needs ~X GB" instead of running; one whose predicted time
(counted multiply-accumulates x 3 for forward+backward, at the device's measured matmul rate)
exceeds ``--time-limit-s`` prints "too slow" instead.

Measured memory: CUDA ``torch.cuda.max_memory_allocated`` (weights included, in-process, the
peak reset before the row); CPU the peak resident set size of a forked child per row minus its
size before the model was built (weights included; ``resource.getrusage(RUSAGE_SELF).ru_maxrss``).
GFLOPs are :func:`afno_repro.analysis.count_flops`'s (the paper's convention: multiply-accumulates
of one forward, attention's two matmuls counted, FFTs not), parameters in millions.

Usage::

    python scripts/benchmark_segformer.py                         # all rows, 1024x1024, cuda if available
    python scripts/benchmark_segformer.py --size 512 --rows afno gfn --json out.json
    python scripts/benchmark_segformer.py --device cpu --memory-limit-gb 4 --no-warmup
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import resource
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from afno_repro.cli import (
    UsageError, available_device, available_ram_bytes, nonnegative_int, output_file, positive_float, resident_bytes,
    user_errors,
    whole_number_at_least,
)
from afno_repro.config import paper_rows
from afno_repro.paper import paper_results
from afno_repro.report.render import format_number

# Table 4's rows: the paper's in its order, then any a contributor added (configs/paper_model/table4/<row>.yaml).
ROWS = tuple(paper_rows("table4", order=list(paper_results()["table4_cityscapes"])))
# The smallest image every row builds at: stage 1 has size / 4 tokens a side, and efficient attention's
# reduction conv (sr_ratio 8) needs at least 8 of them.
MIN_SIZE = 32
_MIN_SIZE_WHY = "SegFormer's stage 1 has size/4 tokens a side and efficient attention reduces them 8-fold"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GB = 1e9


def build_config(row: str, size: int):
    """The row's composed config at ``size`` (as ``train.py paper_model=table4/<row>`` builds it)."""
    from afno_repro.config import compose

    return compose([f"paper_model=table4/{row}", f"backbone.img_size={size}"])


def build_model(cfg, device: str | torch.device) -> torch.nn.Module:
    from hydra.utils import instantiate

    with torch.device(device):
        return instantiate(cfg.backbone)


def sdpa_materializes(device: str, dtype: torch.dtype) -> bool:
    """Whether ``scaled_dot_product_attention`` saves the ``L x S`` probabilities on ``device``.

    Probed, not guessed: one small attention (head dim 64, as every MiT stage has) under
    ``saved_tensors_hooks``; the math path saves an ``L x S`` matrix, fused kernels do not.
    """
    length = 128
    q = torch.randn(1, 1, length, 64, device=device, requires_grad=True)
    shapes: list[tuple[int, ...]] = []
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast, torch.autograd.graph.saved_tensors_hooks(lambda t: (shapes.append(tuple(t.shape)), t)[1], lambda t: t):
        F.scaled_dot_product_attention(q, q, q)
    return any(shape[-2:] == (length, length) for shape in shapes)


class _SavedBytes(TorchFunctionMode):
    """During a forward: bytes autograd saves (parameters excluded, each tensor once), with
    ``scaled_dot_product_attention`` accounted for by the device's kernel, not the meta one."""

    def __init__(self, model: torch.nn.Module, materializes: bool, element_size: int) -> None:
        super().__init__()
        self.params = {id(p) for p in model.parameters()}
        self.materializes = materializes
        self.element_size = element_size
        self.seen: dict[int, torch.Tensor] = {}
        self.saved = 0
        self.largest = 0
        self.attention = 0  # bytes of saved L x S probabilities
        self.attention_transient = 0  # the largest probability matrix, held once more while computed
        self.paused = False

    def _add(self, nbytes: int) -> None:
        self.saved += nbytes
        self.largest = max(self.largest, nbytes)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = tensor
        while base._base is not None:
            base = base._base
        if not self.paused and id(base) not in self.params and id(tensor) not in self.seen:
            self.seen[id(tensor)] = tensor
            self._add(tensor.numel() * self.element_size)
        return tensor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or self.paused:
            return func(*args, **kwargs)
        named = dict(zip(("query", "key", "value"), args)) | kwargs
        query, key, value = named["query"], named["key"], named["value"]
        self.paused = True
        try:
            out = func(*args, **kwargs)
        finally:
            self.paused = False
        *batch, length, _ = query.shape
        source = key.shape[-2]
        for tensor in (query, key, value, out):
            self._add(tensor.numel() * self.element_size)
        rows = math.prod(batch) * length
        if self.materializes:
            probabilities = rows * source * self.element_size
            self._add(probabilities)
            self.attention += probabilities
            self.attention_transient = max(self.attention_transient, probabilities)
        else:
            self._add(rows * 4)  # log-sum-exp, float32
        return out


def predict_memory(cfg, size: int, dtype: torch.dtype, materializes: bool) -> dict[str, float]:
    """Predicted peak bytes of one batch-1 forward+backward, from a meta-device trace (see the module doc)."""
    model = build_model(cfg, "meta").train()
    element_size = torch.finfo(dtype).bits // 8
    meter = _SavedBytes(model, materializes, element_size)
    x = torch.empty(1, int(cfg.backbone.get("in_chans", 3)), size, size, device="meta")
    with meter, torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda t: t):
        model(x)
    weights = sum(p.numel() for p in model.parameters()) * 4  # float32 weights (autocast keeps them)
    total = 2 * weights + meter.saved + 2 * meter.largest + meter.attention_transient
    return {
        "predicted_gb": total / GB,
        "predicted_weights_and_grads_gb": 2 * weights / GB,
        "predicted_saved_gb": meter.saved / GB,
        "predicted_attention_gb": (meter.attention + meter.attention_transient) / GB,
    }


def count_gflops(cfg, size: int) -> float | None:
    """The paper-convention GFLOPs of one forward (both attention matmuls), or None if not countable."""
    from afno_repro.analysis import DataDependentShapeError, count_flops

    model = build_model(cfg, "meta")
    shape = (1, int(cfg.backbone.get("in_chans", 3)), size, size)
    try:
        return count_flops(model, shape, attention_matmuls="both").gflops
    except DataDependentShapeError:
        return None


def matmul_gmacs_per_s(device: str, dtype: torch.dtype) -> float:
    """The device's multiply-accumulate rate on a 1024^2 matmul: the scale of the time prediction."""
    a = torch.randn(1024, 1024, device=device, dtype=dtype)
    _sync(device)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(4):
            a @ a
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 4)
    return 1024**3 / best / 1e9


def _probes(device: str, dtype: torch.dtype) -> dict[str, Any]:
    return {"materializes": sdpa_materializes(device, dtype), "gmacs_per_s": matmul_gmacs_per_s(device, dtype)}


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def available_memory_gb(device: str) -> float:
    """Free device memory (CUDA) or 80% of the RAM available now (CPU), in GB."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0] / GB
    available = available_ram_bytes()
    if available is None:
        raise UsageError("this system does not say how much memory is free (no /proc/meminfo); give --memory-limit-gb.")
    return 0.8 * available / GB


def _step(model, x, device: str, dtype: torch.dtype) -> float:
    start = time.perf_counter()
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        out = model(x)
    out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start


def measure(cfg, size: int, device: str, dtype: torch.dtype, warmup: bool) -> dict[str, float]:
    """One row's forward+backward on ``device``: seconds of the timed pass and peak GB (weights included)."""
    torch.manual_seed(0)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    baseline = resident_bytes()
    model = build_model(cfg, device).train()
    x = torch.randn(1, int(cfg.backbone.get("in_chans", 3)), size, size, device=device)
    if warmup:
        _step(model, x, device, dtype)
    seconds = _step(model, x, device, dtype)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
    else:  # ru_maxrss: the process's high-water mark in KiB (a forked child starts at its RSS at fork)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    return {"seconds": seconds, "peak_gb": peak / GB}


def _child(function, args, threads, results) -> None:
    if threads:
        torch.set_num_threads(threads)
    try:
        results.put((True, function(*args)))
    except BaseException as error:  # noqa: BLE001 - reported by the parent
        results.put((False, f"{type(error).__name__}: {error}"))


def in_child(function, *args, threads: int = 0):
    """``function(*args)`` in a forked child: its own peak-RSS mark, and an out-of-memory kill of it
    does not end the benchmark. On the CPU the parent itself computes nothing (only meta-device
    traces), so no OpenMP thread pool exists at the fork that the child could deadlock on."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child, args=(function, args, threads, results))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"failed with exit code {child.exitcode} (out of memory?)")
    ok, value = results.get()
    if not ok:
        raise RuntimeError(value)
    return value


def run_row(row: str, args, limits: dict[str, Any]) -> dict[str, Any]:
    """Build, predict, then measure (or skip) one Table 4 row."""
    cfg = build_config(row, args.size)
    dtype = DTYPES[args.dtype]
    meta = build_model(cfg, "meta")
    entry: dict[str, Any] = {
        "row": row,
        "mixer": str(cfg.mixer.name),
        "size": args.size,
        "params_m": sum(p.numel() for p in meta.parameters()) / 1e6,
        "gflops": count_gflops(cfg, args.size),
    }
    entry.update(predict_memory(cfg, args.size, dtype, limits["materializes"]))
    entry["predicted_seconds"] = (
        None if entry["gflops"] is None else 3 * entry["gflops"] / limits["gmacs_per_s"]
    )
    entry["skipped"] = None
    if entry["predicted_gb"] > limits["memory_gb"]:
        entry["skipped"] = f"does not fit: needs ~{entry['predicted_gb']:.1f} GB > {limits['memory_gb']:.1f} GB"
    elif entry["predicted_seconds"] is not None and entry["predicted_seconds"] > args.time_limit_s:
        entry["skipped"] = f"too slow: needs ~{entry['predicted_seconds']:.0f} s > --time-limit-s {args.time_limit_s:g}"
    # The prediction first, before a row that may take minutes on a CPU is measured.
    plan = entry["skipped"] or "measuring one forward+backward ..."
    print(f"{row}: predicted {entry['predicted_gb']:.2f} GB; {plan}", file=sys.stderr, flush=True)
    if entry["skipped"] is None:
        if torch.device(args.device).type == "cuda":
            try:
                entry.update(measure(cfg, args.size, args.device, dtype, not args.no_warmup))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                entry["skipped"] = "ran out of device memory (prediction too low)"
        else:
            try:
                entry.update(in_child(measure, cfg, args.size, args.device, dtype, not args.no_warmup,
                                      threads=args.threads))
            except RuntimeError as error:
                entry["skipped"] = str(error)
    if entry.get("seconds") is not None or entry["skipped"] != plan:
        progress = entry["skipped"] or f"{entry['seconds']:.2f} s, {entry['peak_gb']:.2f} GB"
        print(f"{row}: measured: {progress}", file=sys.stderr, flush=True)
    return entry


def format_table(entries: list[dict[str, Any]], header: dict[str, Any]) -> str:
    memory = (
        "CUDA torch.cuda.max_memory_allocated, weights included"
        if header["device_type"] == "cuda"
        else "CPU peak RSS of a forked child minus its RSS before the model was built (resource.getrusage), weights included"
    )
    lines = [
        f"SegFormer-B3, Table 4 rows: one forward+backward, batch 1, {header['size']}x{header['size']}, "
        f"{header['device']} ({header['device_name']}), {header['dtype']}, "
        f"{'after one warm-up pass' if header['warmup'] else 'no warm-up'}, torch {torch.__version__}",
        "",
        "| row | mixer | params M | GFLOPs | predicted GB | peak GB | fwd+bwd s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        measured = (
            f"{e['peak_gb']:.2f} | {e['seconds']:.2f}" if e["skipped"] is None else f"{e['skipped']} | -"
        )
        lines.append(
            f"| {e['row']} | {e['mixer']} | {e['params_m']:.1f} | {format_number(e['gflops'], '.1f', '-')} | "
            f"{e['predicted_gb']:.2f} | {measured} |"
        )
    lines += [
        "",
        f"peak GB: {memory}. predicted GB: weights + gradients + autograd's saved tensors of a meta-device trace "
        f"+ twice the largest of them; scaled_dot_product_attention on this device "
        f"{'saves the N x S probabilities (math path)' if header['sdpa_materializes'] else 'runs a fused kernel (O(N) saved)'}. "
        f"Memory limit {header['memory_limit_gb']:.1f} GB; time limit {header['time_limit_s']:g} s predicted from "
        f"GFLOPs x 3 at {header['gmacs_per_s']:.0f} GMAC/s (1024^2 matmul). GFLOPs: multiply-accumulates of one "
        "forward, paper convention (both attention matmuls, FFTs not counted).",
    ]
    return "\n".join(lines)


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="Table 4 rows to run")
    parser.add_argument("--size", type=whole_number_at_least(MIN_SIZE, _MIN_SIZE_WHY), default=1024,
                        help=f"image side (1024: the paper's crops; at least {MIN_SIZE})")
    parser.add_argument("--device", type=available_device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="autocast dtype (float32: none)")
    parser.add_argument("--memory-limit-gb", type=positive_float, help="skip rows predicted above this (default: free memory)")
    parser.add_argument("--time-limit-s", type=positive_float, help="skip rows predicted slower than this per forward+backward "
                        "(default: 150 on the CPU, no limit on CUDA)")
    parser.add_argument("--no-warmup", action="store_true", help="time the first pass (no warm-up pass)")
    parser.add_argument("--threads", type=nonnegative_int, default=0, help="CPU intra-op threads (0: torch's default)")
    parser.add_argument("--json", metavar="PATH", type=output_file, help="also write the entries as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.time_limit_s is None:
        args.time_limit_s = math.inf if device.type == "cuda" else 150.0
    dtype = DTYPES[args.dtype]
    if device.type == "cuda":
        probe = {"materializes": sdpa_materializes(args.device, dtype),
                 "gmacs_per_s": matmul_gmacs_per_s(args.device, dtype)}
    else:
        probe = in_child(_probes, args.device, dtype, threads=args.threads)
    limits = {
        "memory_gb": args.memory_limit_gb if args.memory_limit_gb is not None else available_memory_gb(args.device),
        **probe,
    }
    header = {
        "size": args.size,
        "device": args.device,
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{args.threads or torch.get_num_threads()} threads",
        "dtype": args.dtype,
        "warmup": not args.no_warmup,
        "memory_limit_gb": limits["memory_gb"],
        "time_limit_s": args.time_limit_s,
        "sdpa_materializes": limits["materializes"],
        "gmacs_per_s": limits["gmacs_per_s"],
    }
    entries = [run_row(row, args, limits) for row in args.rows]
    print(format_table(entries, header))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": header, "rows": entries}, handle, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
