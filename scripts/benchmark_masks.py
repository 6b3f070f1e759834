"""Throughput of the random-walk inpainting masks (paper A.2), one line per mask option.

Prints masks per second (wall clock and process CPU time; on a shared machine the CPU-time rate
is the one that says what one core can do) and the measured masked fraction. The target is at
least 5,000 masks/s at 224x224 on one thread for every border and grid.

Usage::

    python scripts/benchmark_masks.py                 # 1 thread, 2048 masks of 224x224
    python scripts/benchmark_masks.py --n 8192 --threads 2 --size 224
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from afno_repro.cli import UsageError, available_ram_bytes, nonnegative_int, positive_int, user_errors
from afno_repro.data.masks import BORDERS, GRIDS, RandomWalkMask, derive_seed, masked_fraction


def _rate(draw, n: int, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best-of-``repeats`` wall and CPU rates (masks/s) of ``draw()``, and its last masks."""
    masks = draw()  # warm-up: allocator and first-touch pages
    best_wall, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        masks = draw()
        best_wall = max(best_wall, n / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, n / max(time.process_time() - cpu, 1e-9))
    return best_wall, best_cpu, masks


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=positive_int, default=2048, help="masks per timed call")
    parser.add_argument("--size", type=positive_int, default=224, help="image side in pixels")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads value")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed calls per option (best is kept)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    args = parser.parse_args(argv)
    cases = [(f"grid={grid} border={border}", RandomWalkMask(grid=grid, border=border)) for grid in GRIDS for border in BORDERS]
    cases.append(("grid=pixel border=clip brush_size=3", RandomWalkMask(brush_size=3)))
    patch = max(masker.patch_size for _, masker in cases if masker.grid == "token")
    if args.size % patch:
        parser.error(f"argument --size: {args.size} is not a multiple of {patch}, the token side of the token-grid "
                     f"masks timed here; give one, e.g. {max(patch, args.size // patch * patch)}.")
    # Two batches of masks are alive at once (the last and the next), with the walks that paint them:
    # ~6 bytes per pixel of each mask (measured: 1.5 GB of RSS at 2048 masks of 224x224, 3.1 GB at 8192).
    need, available = 6 * args.n * args.size**2, available_ram_bytes()
    if available is not None and need > 0.8 * available:
        most = max(1, int(0.8 * available / (6 * args.size**2)))
        raise UsageError(f"--n {args.n} masks of {args.size}x{args.size} need about {need / 1e9:,.1f} GB at once, and "
                         f"{available / 1e9:.1f} GB of memory is available; give --n {min(most, args.n - 1)} or fewer "
                         "(the rates are per mask: a larger --n measures nothing more).")
    torch.set_num_threads(args.threads)
    print(f"{args.n} masks of {args.size}x{args.size}, {torch.get_num_threads()} thread(s), best of {args.repeats}")
    print(f"{'option':<40} {'masks/s (wall)':>15} {'masks/s (cpu)':>14} {'masked fraction':>16}")
    for name, masker in cases:
        generator = torch.Generator().manual_seed(args.seed)
        wall, cpu, masks = _rate(lambda: masker(args.n, args.size, generator), args.n, args.repeats)
        print(f"{name:<40} {wall:>15,.0f} {cpu:>14,.0f} {float(masked_fraction(masks).mean()):>16.4f}")

    masker = RandomWalkMask()
    seeds = [derive_seed(args.seed, i) for i in range(args.n)]
    wall, cpu, masks = _rate(lambda: masker.from_seeds(seeds, args.size), args.n, args.repeats)
    name = "validation path (one generator per mask)"
    print(f"{name:<40} {wall:>15,.0f} {cpu:>14,.0f} {float(masked_fraction(masks).mean()):>16.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
