"""Which inpainting reading can give Table 2's PSNR/SSIM: baseline floors per mask reading.

For every random-walk mask reading (grid, border, brush) prints the masked fraction and the
zero-fill ("masked input") and biharmonic PSNR/SSIM on the embedded photographs' validation
crops, scored as training scores them, beside the paper's Table 2 range, and says under which
readings and metric regions the paper's numbers are attainable
(:mod:`afno_repro.analysis.readings` states the rule).

Usage::

    python scripts/readings_check.py             # 16 crops of 224x224 per reading, about 30 s on 2 cores
    python scripts/readings_check.py --json      # the same, machine-readable
    python scripts/readings_check.py --images 64 --no-biharmonic
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from afno_repro.analysis.readings import measure_readings
from afno_repro.cli import positive_int, user_errors
from afno_repro.data.masks import RandomWalkMask
from afno_repro.tasks.inpainting import StructuralSimilarity

REGIONS_NOTE = (
    "Region: 'composite' scores the reconstruction pasted into the visible pixels, 'raw' the model output itself. "
    "Both baselines leave the visible pixels untouched, so their scores are the same under both (checked on every "
    "image: 'same' column). The difference is for models: under composite zero-fill is a floor (a trained model "
    "fills the hidden pixels better than zeros), under raw a model's visible pixels are scored too, so zero-fill "
    "is no floor."
)
RULE = (
    "Rule: under composite the paper's numbers are attainable only if the zero-fill floor is below the paper's "
    "lowest PSNR and its lowest SSIM; under raw no baseline bounds a model from below, so nothing is ruled out. "
    "Biharmonic is the classical reference."
)


def _reading(row: dict) -> str:
    return f"{row['grid']}/{row['border']}/brush {row['brush_size']}"


def _score(scores: dict | None, metric: str) -> str:
    if scores is None:
        return "-"
    digits = 2 if metric == "psnr" else 4
    return f"{scores[metric]:.{digits}f}±{scores['spread'][metric]['sem']:.{digits}f}"


def _table(rows: list[dict]) -> str:
    paper = rows[0]["paper"]
    verdicts = {}
    for row in rows:
        verdicts.setdefault(_reading(row), {})[row["region"]] = row
    header = f"{'reading (grid/border/brush)':<28} {'hidden':>7} {'zero-fill PSNR':>15} {'SSIM':>14} {'biharm. PSNR':>13} {'SSIM':>14} {'same':>5}  {'composite':<12} {'raw':<14}"
    lines = [
        f"{rows[0]['num_images']} validation crops of {rows[0]['image_size']}x{rows[0]['image_size']} (embedded photographs) per reading; "
        f"mean ± standard error over images.",
        f"Paper Table 2: PSNR {paper['psnr'][0]:g}-{paper['psnr'][1]:g} dB, SSIM {paper['ssim'][0]:g}-{paper['ssim'][1]:g}.",
        header,
        "-" * len(header),
    ]
    for name, regions in verdicts.items():
        row = regions["composite"]
        zero_fill, biharmonic = row["baselines"]["masked_input"], row["baselines"].get("biharmonic")
        same = all(scores["same_under_raw"] for scores in row["baselines"].values())
        lines.append(
            f"{name:<28} {row['masked_fraction']:>6.1%} {_score(zero_fill, 'psnr'):>15} {_score(zero_fill, 'ssim'):>14} "
            f"{_score(biharmonic, 'psnr'):>13} {_score(biharmonic, 'ssim'):>14} {'yes' if same else 'NO':>5}  "
            f"{'attainable' if row['attainable'] else 'unattainable':<12} {'not ruled out' if regions['raw']['attainable'] else 'unattainable':<14}"
        )
    return "\n".join(lines)


def _span(rows: list[dict], value, spec: str) -> str:
    values = [value(row) for row in rows]
    return f"{min(values):{spec}}-{max(values):{spec}}"


def _describe(rows: list[dict]) -> str:
    """Masked fraction and baseline scores of a group of readings, as ranges."""
    text = (
        f"they hide {_span(rows, lambda r: r['masked_fraction'], '.1%')} of the pixels; zero-fill scores PSNR "
        f"{_span(rows, lambda r: r['baselines']['masked_input']['psnr'], '.2f')} dB, SSIM "
        f"{_span(rows, lambda r: r['baselines']['masked_input']['ssim'], '.3f')}"
    )
    if "biharmonic" in rows[0]["baselines"]:
        text += (
            f", biharmonic PSNR {_span(rows, lambda r: r['baselines']['biharmonic']['psnr'], '.2f')} dB, SSIM "
            f"{_span(rows, lambda r: r['baselines']['biharmonic']['ssim'], '.3f')}"
        )
    return text


def _conclusion(rows: list[dict]) -> str:
    composite = [row for row in rows if row["region"] == "composite"]
    yes = [row for row in composite if row["attainable"]]
    no = [row for row in composite if not row["attainable"]]
    paper = rows[0]["paper"]
    parts = [
        f"Under metric_region=composite the paper's Table 2 (lowest PSNR {paper['psnr'][0]:g} dB, lowest SSIM "
        f"{paper['ssim'][0]:g}) is attainable under {len(yes)} of {len(composite)} readings"
        + (f" ({', '.join(map(_reading, yes))}): {_describe(yes)}." if yes else ".")
    ]
    if no:
        binding = sorted({metric.upper() for row in no for metric in ("psnr", "ssim")
                          if row["baselines"]["masked_input"][metric] >= paper[metric][0]})
        parts.append(
            f"It is unattainable under {', '.join(map(_reading, no))}: {_describe(no)}; zero-fill alone is at or above "
            f"the paper's lowest {' and '.join(binding)}, so any trained model would score above it."
        )
    parts.append("Under raw the baselines rule nothing out.")
    return " ".join(parts)


def _size_problem(size: int) -> str | None:
    """Why crops of ``size`` cannot be scored under every reading: SSIM's window must fit inside, and the
    token-grid readings need a multiple of the token side."""
    window = 2 * StructuralSimilarity().border + 1
    patch = RandomWalkMask(grid="token").patch_size
    smallest = -(-window // patch) * patch
    if size < window:
        return f"{size} leaves no pixel whose {window}x{window} SSIM window fits inside the crop; give at least {smallest}."
    if size % patch:
        return (f"{size} is not a multiple of {patch}, the token side of the token-grid mask readings; give one, "
                f"e.g. {size // patch * patch}.")
    return None


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=positive_int, default=16, help="validation crops per reading (16: verdicts and means as at 64, see the README)")
    parser.add_argument("--size", type=positive_int, default=224, help="crop side in pixels (224 as in the paper)")
    parser.add_argument("--no-biharmonic", action="store_true", help="score zero-fill only (the verdicts need only zero-fill)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads; one image at a time gains nothing from more on a shared machine")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    args = parser.parse_args(argv)
    if problem := _size_problem(args.size):
        parser.error(f"argument --size: {problem}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = measure_readings(num_images=args.images, image_size=args.size, biharmonic=not args.no_biharmonic)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(_table(rows))
        print()
        print(REGIONS_NOTE)
        print(RULE)
        print()
        print(_conclusion(rows))
    # on stderr: the timing varies from run to run, the results on stdout do not
    print(f"measured in {elapsed:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
