"""Which reading of Table 2's inpainting setup can give the paper's PSNR/SSIM at all.

Appendix A.2 leaves open the grid the random-walk mask lives on, its border rule and its brush
(see :mod:`afno_repro.data.masks`), and whether PSNR/SSIM score the raw reconstruction or the
reconstruction pasted into the visible pixels (``InpaintingTask(metric_region=...)``). The
readings hide very different amounts of the image, so they put very different floors under the
scores. This module measures, per mask reading, the masked fraction and the scores of the two
learning-free baselines of :mod:`afno_repro.tasks.baselines` on the embedded photographs'
validation crops, scored exactly as training scores its models, and says under which readings
the paper's Table 2 range is attainable.

The rule (:func:`attainable`):

- ``composite``: a model's output is pasted into the visible pixels, so filling the hidden ones
  with anything better than zero beats the zero-fill baseline ("masked input"), which is thus a
  floor for any trained model. The paper's numbers are attainable only when that floor lies
  below the paper's lowest PSNR *and* its lowest SSIM.
- ``raw``: the model's visible pixels are scored too; a model that copies them imperfectly can
  score below zero-fill, so no baseline bounds it from below and the measurements rule nothing
  out.

Both baselines leave the visible pixels as they are, so their scores are the same under both
regions (:func:`measure_readings` checks it on every image); the biharmonic fill is shown as the
classical reference a trained model should approach or beat.

Example
-------
>>> from afno_repro.analysis.readings import attainable, paper_table2_range
>>> floor = {"psnr": 12.1, "ssim": 0.67}
>>> attainable("composite", floor, paper_table2_range())[0]
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from afno_repro.data import InpaintingDataModule
from afno_repro.data.masks import BORDERS, GRIDS
from afno_repro.paper import paper_results
from afno_repro.tasks.baselines import BASELINES
from afno_repro.tasks.inpainting import METRIC_REGIONS, composite, image_quality_metrics

__all__ = ["METRICS", "attainable", "mask_readings", "measure_readings", "paper_table2_range"]

METRICS = ("psnr", "ssim")


def paper_table2_range() -> dict[str, tuple[float, float]]:
    """``{"psnr": (lowest, highest), "ssim": (lowest, highest)}`` over Table 2's rows."""
    rows = paper_results()["table2_inpainting"].values()
    return {metric: (min(row[metric] for row in rows), max(row[metric] for row in rows)) for metric in METRICS}


def attainable(region: str, zero_fill: Mapping[str, float], paper_range: Mapping[str, Sequence[float]]) -> tuple[bool, str]:
    """Whether the paper's scores are attainable under ``region`` given the zero-fill scores.

    Parameters
    ----------
    region
        ``"composite"`` or ``"raw"`` (``InpaintingTask``'s ``metric_region``).
    zero_fill
        ``{"psnr": dB, "ssim": ..}`` of the masked input (hidden pixels 0) under one mask reading.
    paper_range
        ``{"psnr": (lowest, highest), "ssim": (lowest, highest)}``, e.g. :func:`paper_table2_range`.

    Returns
    -------
    tuple
        ``(attainable, reason)``; the reason names the numbers that decide it.
    """
    if region not in METRIC_REGIONS:
        raise ValueError(f"region={region!r} is not one of {', '.join(map(repr, METRIC_REGIONS))} (InpaintingTask's metric_region).")
    if region == "raw":
        return True, "not ruled out: raw scores a model's visible pixels too, so zero-fill is no floor"
    above = [
        f"zero-fill {metric.upper()} {zero_fill[metric]:.{4 if metric == 'ssim' else 2}f} >= paper's lowest {paper_range[metric][0]:g}"
        for metric in METRICS
        if zero_fill[metric] >= paper_range[metric][0]
    ]
    if above:
        return False, "unattainable: " + "; ".join(above) + " (any trained model scores above zero-fill)"
    return True, "attainable: zero-fill floor below the paper's lowest PSNR and SSIM"


def mask_readings(brush_sizes: Iterable[int] = (1, 2)) -> list[dict[str, Any]]:
    """Every ``{"grid", "border", "brush_size"}`` combination of ``RandomWalkMask``'s options.

    The paper's plain reading (pixel grid, clip, brush 1) comes first.
    """
    return [
        {"grid": grid, "border": border, "brush_size": int(brush)}
        for grid, border, brush in itertools.product(GRIDS, BORDERS, brush_sizes)
    ]


def _summary(values: list[float]) -> dict[str, float]:
    count = len(values)
    mean = sum(values) / count
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (count - 1)) if count > 1 else 0.0
    return {"std": std, "sem": std / math.sqrt(count), "min": min(values), "max": max(values)}


@torch.no_grad()
def _score_reading(mask: Mapping[str, Any], baselines: Sequence[str], num_images: int, image_size: int, val_mask_seed: int) -> dict[str, Any]:
    """Masked fraction and per-baseline scores (means over images, as training reports them)."""
    # steps_scaling="area" is the identity at the paper's 224 and keeps other --size values
    # masked as much as a 224 image is (3136 token steps = every token of a 56x56 grid).
    datamodule = InpaintingDataModule(
        name="skimage",
        image_size=image_size,
        mask={**mask, "steps_scaling": "area"},
        val_samples=num_images,
        val_batch_size=1,
        val_mask_seed=val_mask_seed,
        selection="val",  # only the validation crops are read; nothing is held out of a training set
    )
    metrics = {name: image_quality_metrics() for name in baselines}
    per_image = {name: {metric: [] for metric in METRICS} for name in baselines}
    same_under_raw = {name: True for name in baselines}
    hidden = []
    for batch in datamodule.val_dataloader():
        image, hidden_mask = batch["image"], batch["mask"]
        hidden.append(float(hidden_mask.mean()))
        for name in baselines:
            fill = BASELINES[name](image, hidden_mask)
            evaluated = composite(fill, image, hidden_mask)
            same_under_raw[name] &= torch.equal(evaluated, fill.clamp(0, 1))
            # batches of one image: forward returns that image's score and accumulates the mean
            for metric, value in metrics[name](evaluated, image).items():
                per_image[name][metric].append(float(value))
    scores = {}
    for name in baselines:
        means = {metric: float(value) for metric, value in metrics[name].compute().items()}
        scores[name] = {
            **means,
            "spread": {metric: _summary(per_image[name][metric]) for metric in METRICS},
            "same_under_raw": same_under_raw[name],
        }
    return {"masked_fraction": sum(hidden) / len(hidden), "num_images": len(hidden), "baselines": scores}


def measure_readings(
    num_images: int = 32,
    image_size: int = 224,
    readings: Sequence[Mapping[str, Any]] | None = None,
    biharmonic: bool = True,
    val_mask_seed: int = 1234,
) -> list[dict[str, Any]]:
    """Baseline scores and the attainability verdict of every mask reading and metric region.

    Parameters
    ----------
    num_images
        Validation crops of the embedded photographs (``InpaintingDataModule(name="skimage")``)
        scored per reading; the same crops and, per reading, the same seeded masks every run.
    image_size
        Crop side (224 in the paper).
    readings
        ``RandomWalkMask`` options per reading; default :func:`mask_readings`.
    biharmonic
        Also score the biharmonic fill (slower: a sparse solve per image).
    val_mask_seed
        Seeds the validation masks (the DataModule's and the configs' default).

    Returns
    -------
    list of dict
        One dict per (reading, region), readings in order, ``composite`` before ``raw``:
        ``grid``, ``border``, ``brush_size``, ``region``, ``masked_fraction``, ``num_images``,
        ``image_size``, ``baselines`` (``{name: {"psnr", "ssim", "spread": {metric: {"std",
        "sem", "min", "max"}}, "same_under_raw"}}``), ``paper`` (:func:`paper_table2_range`),
        ``attainable`` and ``reason`` (:func:`attainable`).
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images={num_images!r} must be a positive integer (validation crops scored per reading).")
    baselines = ("masked_input", "biharmonic") if biharmonic else ("masked_input",)
    paper = paper_table2_range()
    rows = []
    for reading in readings if readings is not None else mask_readings():
        measured = _score_reading(reading, baselines, num_images, image_size, val_mask_seed)
        for region in METRIC_REGIONS:
            verdict, reason = attainable(region, measured["baselines"]["masked_input"], paper)
            rows.append({**reading, "region": region, "image_size": image_size, **measured, "paper": paper,
                         "attainable": verdict, "reason": reason})
    return rows
