"""Summarise a sweep: every run's ``metrics.json`` in one table beside the paper's numbers.

:class:`SweepSummary` is a Hydra callback (declared in ``configs/train.yaml``): when a multirun
ends it writes ``summary.json`` and ``summary.md`` into the sweep directory, prints the table, and
ends the sweep with exit status 1 when a run failed (the other runs still ran).
:func:`collect` and :func:`format_table` do the same for any folder of runs.

Each row names the reading it ran (mask grid, steps, border, brush; metric region; the split that
chose the checkpoint) and the image count behind its numbers. A row whose own zero-fill baseline
(hidden pixels left at zero, scored on the same images and masks) already reaches the paper's
PSNR or SSIM is flagged *not comparable*: under that reading the paper's numbers would be worse
than doing nothing, so they cannot have been measured that way.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from afno_repro.paper import paper_results

log = logging.getLogger(__name__)

__all__ = ["SweepSummary", "collect", "comparability", "format_table", "paper_numbers"]

# Paper table (as configs/paper_row names it) -> its section of paper_results.yaml and the metrics
# an inpainting run reports there.
_PAPER_TABLES = {
    "table2": ("table2_inpainting", ("psnr", "ssim")),
    "table6": ("table6_ablations", ("psnr",)),
}


def paper_numbers(paper_row: str | None) -> dict[str, float]:
    """The paper's PSNR/SSIM for a run's paper row (``"table2/afno"``), or ``{}`` where it prints none."""
    if not paper_row or "/" not in paper_row:
        return {}
    table, row = paper_row.split("/", 1)
    if table not in _PAPER_TABLES:
        return {}
    section, metrics = _PAPER_TABLES[table]
    values = paper_results()[section].get(row, {})
    return {metric: values[metric] for metric in metrics if values.get(metric) is not None}


def comparability(run: dict[str, Any]) -> str | None:
    """Why the paper's numbers cannot be compared with this run's, or None when they can.

    With ``metric_region=composite`` a model's visible pixels are the ground truth, so filling the
    hidden ones with zeros is a floor no trained model falls under. If that floor, measured on this
    run's own images and masks, already reaches a number the paper reports, the paper cannot have
    used this reading.
    """
    paper = run.get("paper") or {}
    floor = (run.get("baselines") or {}).get("masked_input") or {}
    region = (run.get("reading") or {}).get("metric_region")
    if not paper or not floor or region != "composite":
        return None
    above = [f"{metric.upper()} {floor[metric]:.3g} >= paper {paper[metric]:.3g}"
             for metric in paper if floor.get(metric) is not None and floor[metric] >= paper[metric]]
    if not above:
        return None
    return f"not comparable: zero-fill already scores {', '.join(above)} under this reading"


def describe_reading(reading: dict[str, Any] | None) -> str:
    """One line naming a run's reading, e.g. ``token grid, 3136 steps, clip, brush 1; composite; heldout``."""
    if not reading:
        return ""
    mask = reading.get("mask") or {}
    parts = [f"{mask.get('grid', '?')} grid, {mask.get('steps', '?')} steps, {mask.get('border', '?')}, "
             f"brush {mask.get('brush_size', '?')}"]
    parts += [str(reading[key]) for key in ("metric_region", "selection") if reading.get(key)]
    return "; ".join(parts)


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Every ``metrics.json`` below ``folder`` (sorted by path), each with its paper numbers."""
    rows = []
    for path in sorted(Path(folder).rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        metrics["paper"] = paper_numbers(metrics.get("paper_row"))
        metrics["comparable"] = comparability(metrics) or "yes" if metrics["paper"] else None
        rows.append(metrics)
    return rows


def _swept(rows: list[dict[str, Any]]) -> list[str]:
    """Labels that tell the runs apart: the paper row (else the mixer), plus the mixer options that
    vary between runs of the same row (e.g. Figure 4's sparsity threshold)."""
    bases = [r.get("paper_row") or r.get("mixer") or Path(r.get("run_dir", "?")).name for r in rows]
    labels = []
    for base, row in zip(bases, rows):
        siblings = [r.get("mixer_options") or {} for b, r in zip(bases, rows) if b == base]
        options = row.get("mixer_options") or {}
        varying = sorted(k for k in options if len({str(o.get(k)) for o in siblings}) > 1)
        labels.append(" ".join([base, *(f"{k}={options[k]}" for k in varying)]))
    return labels


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: run, size, reported PSNR/SSIM and the paper's, zero-fill, images, reading, status."""
    def fmt(value: Any, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    head = ("| run | params (M) | GFLOPs | PSNR | SSIM | paper PSNR | paper SSIM | zero-fill PSNR / SSIM | images "
            "| masked % | reading | status | comparable with the paper |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, r in zip(_swept(rows), rows):
        result, paper = r.get("result") or {}, r.get("paper") or {}
        test = r.get("test") or {}
        floor = (r.get("baselines") or {}).get("masked_input") or {}
        fraction = test.get("masked_fraction")
        zero_fill = f"{fmt(floor.get('psnr'), 2)} / {fmt(floor.get('ssim'), 3)}" if floor else ""
        status = r.get("status", "")
        if status == "failed" and r.get("error"):
            status = f"failed: {r['error'].splitlines()[0][:120]}"
        lines.append(
            f"| {label} | {fmt(r.get('params_m'), 2)} | {fmt(r.get('gflops'), 2)} | {fmt(result.get('psnr'), 2)} "
            f"| {fmt(result.get('ssim'), 4)} | {fmt(paper.get('psnr'), 2)} | {fmt(paper.get('ssim'), 3)} | {zero_fill} "
            f"| {result.get('num_images') or ''} | {fmt(None if fraction is None else 100 * fraction, 1)} "
            f"| {describe_reading(r.get('reading'))} | {status} | {r.get('comparable') or ''} |"
        )
    protocols = sorted({(r.get("result") or {}).get("protocol") for r in rows} - {None})
    notes = [f"PSNR/SSIM: {protocol}." for protocol in protocols]
    return "\n".join(lines + ([""] + notes if notes else []))


class SweepSummary(Callback):
    """Hydra callback: after a multirun, tabulate its runs (``summary.md`` / ``summary.json``).

    Exits with status 1 when any run of the sweep failed, after writing the summary.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        if not rows:
            log.warning("no metrics.json found under %s: no run of this sweep finished", sweep_dir)
            return
        table = format_table(rows)
        (sweep_dir / "summary.md").write_text(table + "\n")
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
        print(f"\nSweep summary ({len(rows)} runs, {sweep_dir}):\n{table}\n", flush=True)
        failed = [r.get("run_dir", "?") for r in rows if r.get("status") != "completed"]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} runs did not complete (see their metrics.json): "
                  + ", ".join(failed), file=sys.stderr, flush=True)
            sys.exit(1)
