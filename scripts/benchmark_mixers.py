"""Speed and agreement of our ``afno`` mixer against the reference formulation, on the same weights.

The reference (:class:`ReferenceAFNO2D`, below) is the straightforward formulation of the public AFNO
code (the authors' release, FourCastNet, NVIDIA physicsnemo's ``AFNO2DLayer``): for each of the two
complex layers, four real einsums ``re = xr@Wr - xi@Wi + br``, ``im = xi@Wr + xr@Wi + bi`` over the
channel blocks, written into zero-initialised float32 buffers, then soft-thresholding. As in
physicsnemo, its einsums follow the ambient autocast (bf16 under ``bf16 autocast``) while its FFTs run
in float32. It lives here, not in the package, because it is only a yardstick. With
``--physicsnemo`` (needs the package's ``physicsnemo`` extra, ``pip install -e ".[physicsnemo]"`` or
``pip install nvidia-physicsnemo``, never part of ``make install``) the peer's own layer is timed too, on
the same weights, and must agree with ours as the reference does (cases without a low-pass: its cut-off
reads differently).

Both modules get the same ``state_dict``; each case times forward + backward (median over
``--repeats``, the implementations interleaved so that load from other processes hits both alike;
CUDA is synchronised around each timing), and checks that they agree: float32 outputs within 1e-4
(1e-3 on a GPU, where float32 products may use TF32), and outputs and all gradients within 1e-4 in a
float64 run on the same weights. Float32 gradients are reported, not gated: ReLU and soft-thresholding
make the gradient jump at 0 and at lambda, and with a few thousand entries sitting within rounding error
of those kinks, a last-bit difference in the forward flips some of them, which shows up as an O(1)
difference in the parameter gradients (sums over all tokens) without either side being wrong. The bf16
autocast cases check dtype, finiteness and agreement with float32. The script exits with status 1 if
any case disagrees.

Usage::

    python scripts/benchmark_mixers.py                  # ViT-B/4 shapes: 56x56 tokens, d=768, CPU
    python scripts/benchmark_mixers.py --quick          # small shapes, a smoke run of a few seconds
    python scripts/benchmark_mixers.py --batch 4 --threads 2 --repeats 7
    python scripts/benchmark_mixers.py --device cuda --batch 16 --json mixers.json   # on a GPU
    python scripts/benchmark_mixers.py --quick --physicsnemo   # also physicsnemo's layer (its extra installed)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from afno_repro.cli import available_device, device_name, output_file, positive_int, user_errors
from afno_repro.mixers import build_mixer
from afno_repro.mixers.afno import AFNO2D

TOLERANCE = 1e-4


class ReferenceAFNO2D(nn.Module):
    """The reference AFNO formulation: eight real einsums into zero-initialised float32 buffers.

    Same parameters, names and shapes as :class:`afno_repro.mixers.afno.AFNO2D` (public checkpoint
    layout), so ``load_state_dict`` of one into the other works. Modes outside the low-pass of
    ``hard_thresholding_fraction`` (the same cut-offs as ``AFNO2D``) are left at zero. The FFTs run in
    float32 with autocast off; the einsums follow the ambient autocast, as physicsnemo's layer does.
    """

    def __init__(self, mixer: AFNO2D):
        super().__init__()
        self.num_blocks = mixer.num_blocks
        self.block_size = mixer.block_size
        self.sparsity_threshold = mixer.sparsity_threshold
        self.cutoffs = mixer.cutoffs
        for name, param in mixer.named_parameters():
            self.register_parameter(name, nn.Parameter(torch.empty_like(param)))
        self.load_state_dict(mixer.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip, dtype = x, x.dtype
        b, h, w, c = x.shape
        m_h, m_w = self.cutoffs(h, w)
        rows = slice(None) if m_h is None else torch.cat((torch.arange(m_h), torch.arange(h - m_h, h))).to(x.device)
        cols = slice(None) if m_w is None else slice(0, m_w)
        real_dtype = torch.promote_types(dtype, torch.float32)
        like = {"dtype": real_dtype, "device": x.device}
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = torch.fft.rfft2(x.to(real_dtype), dim=(1, 2), norm="ortho")
        z = z.reshape(b, h, w // 2 + 1, self.num_blocks, self.block_size)
        hidden = (b, h, w // 2 + 1, self.num_blocks, self.w1.shape[-1])
        o1_real, o1_imag = torch.zeros(hidden, **like), torch.zeros(hidden, **like)
        o2_real, o2_imag = torch.zeros(z.shape, **like), torch.zeros(z.shape, **like)
        zr, zi = z[:, rows, cols].real, z[:, rows, cols].imag
        o1_real[:, rows, cols] = F.relu(
            torch.einsum("...bi,bio->...bo", zr, self.w1[0]) - torch.einsum("...bi,bio->...bo", zi, self.w1[1]) + self.b1[0]
        )
        o1_imag[:, rows, cols] = F.relu(
            torch.einsum("...bi,bio->...bo", zi, self.w1[0]) + torch.einsum("...bi,bio->...bo", zr, self.w1[1]) + self.b1[1]
        )
        hr, hi = o1_real[:, rows, cols], o1_imag[:, rows, cols]
        o2_real[:, rows, cols] = (
            torch.einsum("...bi,bio->...bo", hr, self.w2[0]) - torch.einsum("...bi,bio->...bo", hi, self.w2[1]) + self.b2[0]
        )
        o2_imag[:, rows, cols] = (
            torch.einsum("...bi,bio->...bo", hi, self.w2[0]) + torch.einsum("...bi,bio->...bo", hr, self.w2[1]) + self.b2[1]
        )
        z = torch.stack((o2_real, o2_imag), dim=-1)
        if self.sparsity_threshold > 0:
            z = F.softshrink(z, self.sparsity_threshold)
        z = torch.view_as_complex(z).reshape(b, h, w // 2 + 1, c)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = torch.fft.irfft2(z, s=(h, w), dim=(1, 2), norm="ortho")
        return z.to(dtype) + skip


def physicsnemo_version() -> str | None:
    """The installed nvidia-physicsnemo's version, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version("nvidia-physicsnemo")
    except importlib.metadata.PackageNotFoundError:
        return None


def physicsnemo_layer(mixer: AFNO2D) -> nn.Module | None:
    """physicsnemo's ``AFNO2DLayer`` with our mixer's weights, or ``None`` for a case it does not cover in
    the same way (a low-pass: its cut-off reads differently)."""
    from physicsnemo.nn import AFNO2DLayer

    if mixer.hard_thresholding_fraction != 1.0:
        return None
    layer = AFNO2DLayer(mixer.dim, num_blocks=mixer.num_blocks, sparsity_threshold=mixer.sparsity_threshold,
                        hidden_size_factor=mixer.hidden_size_factor)
    layer.load_state_dict(mixer.state_dict())
    return layer


def forward_backward(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, autocast: bool):
    """One training step's worth of work; returns output, input gradient and parameter gradients."""
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=autocast):
        y = module(x)
    y.backward(grad_out.to(y.dtype))
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_diff(a: torch.Tensor | dict, b: torch.Tensor | dict) -> float:
    """Largest absolute difference between two tensors, or over the matching entries of two dicts."""
    if isinstance(a, dict):
        return max(max_diff(a[k], b[k]) for k in a)
    return (a.double() - b.double()).abs().max().item()


def run_case(name, options, batch, grid, dim, repeats, autocast=False, device="cpu", peer=False):
    """Time ours and the reference (and physicsnemo's layer with ``peer``) on the same weights and
    inputs; a table row with the checks."""
    device = torch.device(device)
    torch.manual_seed(0)
    ours = build_mixer("afno", dim, **options).to(device)
    modules = {"ref": ReferenceAFNO2D(ours), "ours": ours}
    nemo = physicsnemo_layer(ours) if peer else None
    if nemo is not None:
        modules["physicsnemo"] = nemo.to(device)
    dtype = torch.bfloat16 if autocast else torch.float32
    x = torch.randn(batch, *grid, dim, device=device).to(dtype)
    grad_out = torch.randn(batch, *grid, dim, device=device)
    results = {}
    times = {label: [] for label in modules}
    peak = {}
    for i in range(repeats + 1):
        for label, module in modules.items():
            if device.type == "cuda" and i == 1:
                torch.cuda.reset_peak_memory_stats(device)
            _synchronize(device)
            start = time.perf_counter()
            results[label] = forward_backward(module, x, grad_out, autocast)
            _synchronize(device)
            if i:
                times[label].append(time.perf_counter() - start)
            if device.type == "cuda" and i == 1:
                peak[label] = torch.cuda.max_memory_allocated(device) / 2**30
    (y_ref, gx_ref, gp_ref), (y, gx, gp) = results["ref"], results["ours"]
    grads_finite = all(bool(torch.isfinite(g).all()) for g in [gx, *gp.values()])
    row = {
        "case": name,
        "device": str(device),
        "ref_ms": 1e3 * statistics.median(times["ref"]),
        "ours_ms": 1e3 * statistics.median(times["ours"]),
        "diff_out": max_diff(y, y_ref),
        "diff_grad32": max_diff(gp, gp_ref) / max(g.abs().max().item() for g in gp_ref.values()),
        "ok": y.dtype == dtype and bool(torch.isfinite(y.float()).all()) and grads_finite,
    }
    if nemo is not None:
        row["physicsnemo_ms"] = 1e3 * statistics.median(times["physicsnemo"])
        row["diff_physicsnemo"] = max_diff(y, results["physicsnemo"][0])
    if peak:
        row["peak_gib"] = peak
    if autocast:
        y32 = forward_backward(ours, x.float(), grad_out, autocast=False)[0]
        row["diff_fp32"] = max_diff(y, y32)
        row["ok"] &= row["diff_fp32"] < 1e-2 * y32.abs().max().item()
        if nemo is not None:  # two bf16 computations of the same layer: within bf16's rounding of each other
            row["ok"] &= row["diff_physicsnemo"] < 2e-2 * y32.abs().max().item()
        return row
    # A GPU's float32 products may run in TF32 (matmul precision "high"): a looser float32 gate there.
    tolerance = TOLERANCE if torch.get_float32_matmul_precision() == "highest" or device.type == "cpu" else 1e-3
    ours64, ref64 = ours.double(), modules["ref"].double()
    y64, gx64, gp64 = forward_backward(ours64, x[:1].double(), grad_out[:1].double(), False)
    y64_ref, gx64_ref, gp64_ref = forward_backward(ref64, x[:1].double(), grad_out[:1].double(), False)
    row["diff64"] = max(max_diff(y64, y64_ref), max_diff(gx64, gx64_ref), max_diff(gp64, gp64_ref))
    row["ok"] &= row["diff_out"] < tolerance and row["diff64"] < TOLERANCE
    if nemo is not None:
        row["ok"] &= row["diff_physicsnemo"] < tolerance
    return row


@user_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repetitions per case (median reported)")
    parser.add_argument("--batch", type=positive_int, default=2, help="batch size")
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="small shapes (14x14 tokens, d=64) for a smoke run")
    parser.add_argument("--device", type=available_device, default="cpu", help="cpu or cuda")
    parser.add_argument("--matmul-precision", default="highest", choices=("highest", "high"),
                        help="torch.set_float32_matmul_precision for the float32 cases (high: TF32 on a GPU)")
    parser.add_argument("--physicsnemo", action="store_true", help="also time physicsnemo's AFNO2DLayer (pip install nvidia-physicsnemo)")
    parser.add_argument("--json", type=output_file, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    peer_version = physicsnemo_version() if args.physicsnemo else None
    if args.physicsnemo and peer_version is None:
        parser.error("argument --physicsnemo: nvidia-physicsnemo is not installed in this environment; install the "
                     "optional extra with `.venv/bin/pip install -e \".[physicsnemo]\"` (or `pip install "
                     "nvidia-physicsnemo`), or leave --physicsnemo out to compare with the reference formulation only.")
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    grid, dim = ((14, 14), 64) if args.quick else ((56, 56), 768)
    cases = [
        ("k=8", {"num_blocks": 8}, False),
        ("k=1", {"num_blocks": 1}, False),
        ("k=8 35%", {"num_blocks": 8, "hard_thresholding_fraction": 0.35}, False),
        ("k=8 bf16 autocast", {"num_blocks": 8}, True),
        ("k=1 bf16 autocast", {"num_blocks": 1}, True),
    ]
    where = device_name(args.device, args.threads)
    print(f"AFNO forward+backward, batch {args.batch}, grid {grid[0]}x{grid[1]}, d={dim}, {where}, "
          f"median of {args.repeats}, torch {torch.__version__}, float32 matmul {args.matmul_precision}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
          + (f", nvidia-physicsnemo {peer_version}" if peer_version else ""))
    print(f"{'case':<20}{'ref ms':>9}{'ours ms':>9}{'ratio':>7}{'diff out':>10}{'diff f64':>10}{'grad32 rel':>11}  ok")
    all_ok, rows = True, []
    for name, options, autocast in cases:
        row = run_case(name, options, args.batch, grid, dim, args.repeats, autocast, args.device, args.physicsnemo)
        rows.append(row)
        all_ok &= row["ok"]
        check = f"{row['diff_fp32']:>10.1e}" if autocast else f"{row['diff64']:>10.1e}"
        peer = (f"  physicsnemo {row['physicsnemo_ms']:.1f} ms, ratio {row['physicsnemo_ms'] / row['ours_ms']:.2f}, "
                f"diff {row['diff_physicsnemo']:.1e}" if "physicsnemo_ms" in row else "")
        print(f"{row['case']:<20}{row['ref_ms']:>9.1f}{row['ours_ms']:>9.1f}{row['ref_ms'] / row['ours_ms']:>7.2f}"
              f"{row['diff_out']:>10.1e}{check}{row['diff_grad32']:>11.1e}  {'yes' if row['ok'] else 'NO'}{peer}")
    print("diff out: max |ours - ref| (float32, or bf16 output for the autocast cases); diff f64: max |ours - ref| over\n"
          "output and all gradients in float64 (autocast rows: max |bf16 - float32| of our output); grad32 rel:\n"
          "float32 parameter-gradient difference relative to the largest gradient (not gated, see the docstring).")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": args.device, "device_name": where, "batch": args.batch, "grid": list(grid), "dim": dim,
                       "torch": torch.__version__, "matmul_precision": args.matmul_precision,
                       "physicsnemo": peer_version, "rows": rows}, handle, indent=2)
    if not all_ok:
        print("FAILED: our afno disagrees with the reference formulation"
              + (" or physicsnemo's layer" if peer_version else ""), file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
