"""Summarise a sweep: every run's ``metrics.json`` in one table beside the paper's numbers.

:class:`SweepSummary` is a Hydra callback (declared in ``configs/train.yaml``): when a multirun
ends it writes ``summary.json`` and ``summary.md`` into the sweep directory and prints the table.
:func:`collect` and :func:`format_table` do the same for any folder of runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from afno_repro.paper import paper_results

log = logging.getLogger(__name__)

__all__ = ["SweepSummary", "collect", "format_table", "paper_numbers"]

# Which paper table an experiment reproduces, and the metric names it prints there.
_PAPER_TABLES = {
    "table2_inpainting": ("table2_inpainting", {"psnr": "psnr", "ssim": "ssim"}),
    "table6_pretrain": ("table6_ablations", {"psnr": "psnr"}),
}


def paper_numbers(experiment: str | None, paper_model: str | None) -> dict[str, float]:
    """The paper's PSNR/SSIM for a run's (experiment, paper row), or ``{}`` where it prints none."""
    if experiment not in _PAPER_TABLES or not paper_model:
        return {}
    table, metrics = _PAPER_TABLES[experiment]
    row = paper_results()[table].get(paper_model.rsplit("/", 1)[-1], {})
    return {ours: row[theirs] for ours, theirs in metrics.items() if row.get(theirs) is not None}


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Every ``metrics.json`` below ``folder`` (sorted by path), each with its paper numbers."""
    rows = []
    for path in sorted(Path(folder).rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        metrics["paper"] = paper_numbers(metrics.get("experiment"), metrics.get("paper_model"))
        rows.append(metrics)
    return rows


def _swept(rows: list[dict[str, Any]]) -> list[str]:
    """Labels that tell the runs apart: the paper row (else the mixer), plus the mixer options that
    vary between runs of the same row (e.g. Figure 4's sparsity threshold)."""
    bases = [r.get("paper_model") or r["mixer"] for r in rows]
    labels = []
    for base, row in zip(bases, rows):
        siblings = [r.get("mixer_options", {}) for b, r in zip(bases, rows) if b == base]
        options = row.get("mixer_options", {})
        varying = sorted(k for k in options if len({str(o.get(k)) for o in siblings}) > 1)
        labels.append(" ".join([base, *(f"{k}={options[k]}" for k in varying)]))
    return labels


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: run, params, GFLOPs, final/best PSNR and SSIM, the paper's, status."""
    def fmt(value: Any, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    head = "| run | params (M) | GFLOPs | PSNR | best PSNR | SSIM | best SSIM | paper PSNR | paper SSIM | masked % | status |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, r in zip(_swept(rows), rows):
        final, best, paper = r.get("final") or {}, r.get("best") or {}, r.get("paper") or {}
        fraction = r.get("masked_fraction")
        lines.append(
            f"| {label} | {fmt(r.get('params_m'), 2)} | {fmt(r.get('gflops'), 2)} | {fmt(final.get('psnr'), 2)} "
            f"| {fmt(best.get('psnr'), 2)} | {fmt(final.get('ssim'), 4)} | {fmt(best.get('ssim'), 4)} "
            f"| {fmt(paper.get('psnr'), 2)} | {fmt(paper.get('ssim'), 3)} "
            f"| {fmt(None if fraction is None else 100 * fraction, 1)} | {r.get('status', '')} |"
        )
    return "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: after a multirun, tabulate its runs (``summary.md`` / ``summary.json``)."""

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
