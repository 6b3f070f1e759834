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

import logging
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from afno_repro.paper import paper_results
from afno_repro.report.flags import is_smoke
from afno_repro.report.render import format_number, format_printed, share_digits
from afno_repro.runs import find_runs
from afno_repro.runs.record import write_json

log = logging.getLogger(__name__)

__all__ = ["SweepSummary", "borrowed_note", "collect", "comparability", "describe_reading", "format_table", "paper_keys",
           "paper_numbers", "provenance"]

# (paper table as configs/paper_model names it, task) -> the section of paper_results.yaml and, per
# reported metric, its key in the row ("{column}" is the run's paper column, e.g. celeba_faces).
_PAPER_TABLES = {
    ("table2", "inpainting"): ("table2_inpainting", {"psnr": "psnr", "ssim": "ssim"}),
    ("table6", "inpainting"): ("table6_ablations", {"psnr": "psnr"}),
    ("table3", "segmentation"): ("table3_fewshot_miou", {"miou": "{column}"}),
    ("table6", "segmentation"): ("table6_ablations", {"miou": "{column}_miou"}),
    ("table5", "classification"): ("table5_classification", {"top1": "top1", "top5": "top5"}),
    ("table4", "cityscapes"): ("table4_cityscapes", {"miou": "miou"}),
}
# The paper's data and resolution per task (what a comparable run trained and was scored on).
_PAPER_SETTING = {"inpainting": ("imagenet", 224), "classification": ("imagenet", 224), "cityscapes": ("cityscapes", 1024)}


def paper_keys(paper_row: str | None, task: str = "inpainting", column: str | None = None) -> dict[str, str]:
    """Where each of a run's numbers is in ``paper_results.yaml``, e.g. ``{"miou":
    "table3_fewshot_miou.afno.celeba_faces"}``; ``{}`` where the paper prints none for the run."""
    if not paper_row or "/" not in paper_row:
        return {}
    table, row = paper_row.split("/", 1)
    if (table, task) not in _PAPER_TABLES:
        return {}
    section, metrics = _PAPER_TABLES[table, task]
    keys = {}
    for metric, key in metrics.items():
        if "{column}" in key and not column:
            continue
        keys[metric] = f"{section}.{row}.{key.format(column=column)}"
    return keys


def paper_numbers(paper_row: str | None, task: str = "inpainting", column: str | None = None) -> dict[str, float]:
    """The paper's numbers for a run's paper row (``"table2/afno"``), task and paper column, or ``{}``.

    Example
    -------
    >>> paper_numbers("table3/afno", "segmentation", "celeba_faces")
    {'miou': 55.75}
    >>> paper_numbers("table2/afno")
    {'psnr': 27.05, 'ssim': 0.931}
    """
    numbers = {}
    for metric, key in paper_keys(paper_row, task, column).items():
        section, row, name = key.split(".")
        value = paper_results()[section].get(row, {}).get(name)
        if value is not None:
            numbers[metric] = value
    return numbers


def _paper_data(run: dict[str, Any]) -> str | None:
    """The data the paper measured a run's row on, as ``metrics.json`` names data."""
    from afno_repro.config import PAPER_COLUMNS

    task = run.get("task") or "inpainting"
    if task in _PAPER_SETTING:
        return _PAPER_SETTING[task][0]
    if task == "segmentation" and run.get("paper_column") in PAPER_COLUMNS:
        return f"datasetgan/{PAPER_COLUMNS[run['paper_column']]}"
    return None


def comparability(run: dict[str, Any]) -> str | None:
    """Why the paper's numbers cannot be compared with this run's, or None when they can.

    A run on other data than the paper's (e.g. a ``debug=smoke`` run on the embedded data) or at
    another resolution than the paper's 224x224 is not comparable. With ``metric_region=composite``
    a model's visible pixels are the ground truth, so filling the hidden ones with zeros is a floor
    no trained model falls under. If that floor, measured on this run's own images and masks,
    already reaches a number the paper reports, the paper cannot have used this reading.
    """
    paper = run.get("paper") or {}
    if not paper:
        return None
    expected = _paper_data(run)
    if run.get("data") and expected and run["data"] != expected:
        return f"not comparable: trained on {run['data']}, the paper on {expected}"
    size = run.get("image_size")
    paper_size = _PAPER_SETTING.get(run.get("task") or "inpainting", (None, 224))[1]
    if size and size != paper_size:
        return f"not comparable: {size}x{size} images, the paper's are {paper_size}x{paper_size}"
    floor = (run.get("baselines") or {}).get("masked_input") or {}
    region = (run.get("reading") or {}).get("metric_region")
    if not floor or region != "composite":
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
    if mask:
        steps, used = mask.get("steps", "?"), mask.get("steps_used")
        walked = f"{used} steps ({steps} at {mask.get('reference_size', 224)}, by area)" if used not in (None, steps) \
            else f"{steps} steps"
        parts = [f"{mask.get('grid', '?')} grid, {walked}, {mask.get('border', '?')}, brush {mask.get('brush_size', '?')}"]
        parts += [str(reading[key]) for key in ("metric_region", "selection") if reading.get(key)]
        return "; ".join(parts)
    shown = ("source", "category", "name", "num_classes", "image_size", "selection", "absent_classes")
    return "; ".join(f"{key} {reading[key]}" for key in shown if reading.get(key) is not None)


def _natural(path: str) -> list[Any]:
    """Sort key that orders a sweep's job folders by job number (``2_...`` before ``10_...``), which is
    the order the sweep lists its points in (the paper's row order)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(path))]


def comparison_note(run: dict[str, Any]) -> str:
    """What the paper's numbers are to this run: ``yes``, why not comparable, or, where the paper prints no
    value (a point of Figure 4, a run outside the paper's rows), that, with the data it trained on."""
    return run.get("comparable") or f"the paper prints no value; trained on {run.get('data')}"


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Every run below ``folder`` (sorted by path), each with the paper's numbers beside its own."""
    rows = sorted(find_runs(folder, status=None), key=lambda r: _natural(r["metrics_file"]))
    for metrics in rows:
        task, column = metrics.get("task") or "inpainting", metrics.get("paper_column")
        # A point of a sweep over its row (Figure 4's lambda and k) is not the row as printed: no paper number beside it.
        row = metrics.get("paper_row") if metrics.get("paper_printed", True) else None
        metrics["paper"] = paper_numbers(row, task, column)
        metrics["paper_keys"] = paper_keys(row, task, column)
        metrics["comparable"] = comparability(metrics) or "yes" if metrics["paper"] else None
    return rows


def _init_label(run: dict[str, Any]) -> str:
    init = run.get("init") or {}
    if not init.get("checkpoint"):
        return "scratch"
    return f"pretrained ({init.get('experiment') or 'demo'})"


def _swept(rows: list[dict[str, Any]]) -> list[str]:
    """Labels that tell the runs apart: the paper row (else the mixer), plus what varies between runs
    of the same row: the paper column (dataset), the initialisation, the mixer options (e.g. Figure
    4's sparsity threshold)."""
    bases = [r.get("paper_row") or r.get("mixer") or Path(r.get("run_dir", "?")).name for r in rows]
    labels = []
    for base, row in zip(bases, rows):
        siblings = [r for b, r in zip(bases, rows) if b == base]
        parts = [base]
        if len({str(r.get("paper_column")) for r in siblings}) > 1 and row.get("paper_column"):
            parts.append(str(row["paper_column"]))
        if len({_init_label(r) for r in siblings}) > 1:
            parts.append(_init_label(row))
        options = row.get("mixer_options") or {}
        varying = sorted(k for k in options if len({str((r.get("mixer_options") or {}).get(k)) for r in siblings}) > 1)
        parts += [f"{k}={options[k]}" for k in varying]
        labels.append(" ".join(parts))
    return labels


def _reported(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reported metrics of the runs (``metrics.json``'s ``reported``), in order, each once."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        for item in row.get("reported") or [{"key": "psnr", "label": "PSNR (dB)", "digits": 2},
                                            {"key": "ssim", "label": "SSIM", "digits": 4}]:
            seen.setdefault(item["key"], item)
    return list(seen.values())


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: run, size, each reported number beside the paper's, images, reading, status;
    then the task's baselines as rows (zero-fill and biharmonic inpainting, the pixel prior, the majority
    class), and a warning under the table for a run whose AFNO mixer was effectively off."""
    from afno_repro.mixers.activity import activity_note

    reported = _reported(rows)
    with_masks = any((r.get("test") or {}).get("masked_fraction") is not None for r in rows)
    with_init = any(r.get("task") not in (None, "inpainting") for r in rows)
    head = ["run", "params (M)", "GFLOPs"]
    for item in reported:
        head += [item["label"], f"paper {item['label']}"]
    head += ["images"] + (["masked %"] if with_masks else []) + (["init"] if with_init else [])
    head += ["reading", "status", "comparable with the paper"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels = _swept(rows)
    for label, r in zip(labels, rows):
        result, paper, test = r.get("result") or {}, r.get("paper") or {}, r.get("test") or {}
        # Significant digits: a smoke model's 0.0046 GFLOPs is not 0.00.
        cells = [label, format_number(r.get("params_m"), ".3g"), format_number(r.get("gflops"), ".3g")]
        for item in reported:
            digits = share_digits(item["digits"], result.get("num_images")) if item.get("per_image") else item["digits"]
            value = format_number(result.get(item["key"]), f".{digits}f")
            if result.get(f"{item['key']}_std") is not None:
                value += f" ± {result[item['key'] + '_std']:.{digits}f}"
            cells += [value, format_printed(paper.get(item["key"]), item["digits"])]
        cells.append(str(result.get("num_images") or ""))
        if with_masks:
            fraction = test.get("masked_fraction")
            cells.append(format_number(None if fraction is None else 100 * fraction, ".1f"))
        if with_init:
            cells.append(_init_label(r))
        status = r.get("status", "")
        if status == "failed" and r.get("error"):
            status = f"failed: {r['error'].splitlines()[0][:120]}"
        cells += [describe_reading(r.get("reading")), status, comparison_note(r)]
        lines.append("| " + " | ".join(cells) + " |")
    # The report's baseline rows (one per baseline, per dataset where the runs' data differ), as its tables show them.
    from afno_repro.report.build import baseline_rows
    from afno_repro.report.declared import Metric

    metrics = [Metric(item["key"], item["label"], item["digits"]) for item in reported]
    recorded = list(dict.fromkeys(name for r in rows for name in (r.get("baselines") or {})))
    for baseline in baseline_rows(recorded, rows, metrics, "paper_column")[0]:
        cells = [baseline["row"], "", ""]
        for metric in metrics:
            cells += [baseline[metric.label], ""]
        cells.append(baseline["images"])
        cells += [""] * (len(head) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    protocols = sorted({(r.get("result") or {}).get("protocol") for r in rows} - {None})
    notes = [f"Selection: {protocol}." for protocol in protocols]
    if any((r.get("baselines") or {}) for r in rows):
        notes.append("Baselines: no training; each run scores them on its own evaluation images, as its model.")
    notes += [f"warning: {label}: {note}" for label, r in zip(labels, rows) if (note := activity_note(r)) is not None]
    return "\n".join(lines + ([""] + notes if notes else []))


def borrowed_note(experiment: str | None) -> str | None:
    """The sentence a sweep's summary ends with when its figure draws some points from another experiment's
    runs (:class:`afno_repro.report.declared.Borrowed`), so that a reader does not take them for missing.

    >>> print(borrowed_note("fig1_trunks"))  # doctest: +NORMALIZE_WHITESPACE
    Not in this sweep: the figure's points of table4/efficient_attention, table4/gfn, table4/afno are
    table4_cityscapes's runs (from Table 4: the same models and recipe); the report (make reproduce-all) draws them
    beside these.
    >>> borrowed_note("table2_inpainting") is None
    True
    """
    from afno_repro.report.declared import borrowed_by

    sentences = [f"the figure's points of {', '.join(b.rows)} are {b.experiment}'s runs ({b.label}: the same models and "
                 "recipe)" for b in borrowed_by(experiment or "")]
    if not sentences:
        return None
    return f"Not in this sweep: {'; '.join(sentences)}; the report (make reproduce-all) draws them beside these."


def provenance(runs: Sequence[dict[str, Any]], built: str | None = None) -> dict[str, Any]:
    """What the report's numbers were made with, from the runs' own records: commits, devices and torch versions,
    each with its count of runs (several commits are said to be mixed), and when the report was built.

    >>> made = provenance([{"git_commit": "a954512f2d", "precision": {"device": "cpu"}, "versions": {"torch": "2.14.1"}},
    ...                    {"git_commit": "b8a6757aa1", "precision": {"device": "cpu"}, "versions": {"torch": "2.14.1"}}],
    ...                   built="2026-12-06 05:00 UTC")
    >>> print(made["sentence"])
    Made at mixed commits (a954512: 1 run, b8a6757: 1 run: compare their numbers with care), on cpu (2 runs), with torch 2.14.1 (2 runs); report built 2026-12-06 05:00 UTC.
    """
    import datetime
    from collections import Counter

    def counted(values: Counter) -> str:
        return ", ".join(f"{value}: {count} run{'s' * (count != 1)}" if len(values) > 1 else f"{value} ({count} run{'s' * (count != 1)})"
                         for value, count in values.most_common())

    commits = Counter(str(run.get("git_commit") or "unknown")[:7] + ("-dirty" if str(run.get("git_commit", "")).endswith("-dirty") else "")
                      for run in runs)
    devices = Counter(str((run.get("precision") or {}).get("device") or "unknown") for run in runs)
    torches = Counter(str((run.get("versions") or {}).get("torch") or "unknown") for run in runs)
    built = built or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    at = (f"mixed commits ({counted(commits)}: compare their numbers with care)" if len(commits) > 1
          else f"commit {counted(commits)}")
    sentence = (f"Made at {at}, on {counted(devices)}, with torch {counted(torches)}; report built {built}." if runs
                else f"Report built {built}.")
    return {"commits": dict(commits), "devices": dict(devices), "torch": dict(torches), "built": built, "sentence": sentence}


class SweepSummary(Callback):
    """Hydra callback: after a multirun, tabulate its runs (``summary.md`` / ``summary.json``).

    Exits with status 1 when any run of the sweep failed, after writing the summary.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        if not rows:
            # Every job stopped before it could write a record (the sweep exited 0 here): a failed sweep.
            print(f"error: no run of this sweep wrote a metrics.json under {sweep_dir}: none finished; the output above "
                  "says why.", file=sys.stderr, flush=True)
            sys.exit(1)
        table = format_table(rows)
        experiment = OmegaConf.select(config, "hydra.runtime.choices.experiment", default=None)
        note = borrowed_note(experiment)
        if note:
            table += f"\n\n{note}"
        # The file is read apart from this run's output: it says what it is, and what made its numbers.
        smoke = "Smoke scale (debug=smoke): a pipeline check, numbers not comparable with the paper. " if is_smoke(rows) else ""
        head = f"# Sweep {experiment or 'without an experiment'}: {len(rows)} run{'s' * (len(rows) != 1)} in {sweep_dir}"
        (sweep_dir / "summary.md").write_text(f"{head}\n\n{smoke}{provenance(rows)['sentence']}\n\n{table}\n")
        write_json(sweep_dir / "summary.json", rows)  # strict JSON (a NaN metric as null), never half written
        print(f"\nSweep summary ({len(rows)} run{'s' * (len(rows) != 1)}, {sweep_dir}):\n{table}\n", flush=True)
        failed = [r.get("run_dir", "?") for r in rows if r.get("status") != "completed"]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} runs did not complete (see their metrics.json): "
                  + ", ".join(failed), file=sys.stderr, flush=True)
            sys.exit(1)
