"""The reproduction report: every table and figure of the paper, ours beside the paper's.

:func:`build_report` reads every run below a root (their ``metrics.json``, through
:func:`afno_repro.report.sweep.collect`, which attaches the paper's numbers and the one-line reason a
row cannot be compared), renders one :class:`~afno_repro.report.sections.Section` per declaration of
:mod:`afno_repro.report.declared` (the one renderer, :func:`render`), adds the sections computed from
trained models (Figures 5 and 6, resolution transfer: :mod:`afno_repro.report.trained_figures`), and
writes ``index.md`` and ``index.html`` (Jinja2 templates in ``templates/``), ``report.json`` and
``figures/*.png``. The tables are also logged as W&B tables (one run, group ``reproduce-all``, job type
``report``; offline by default).

What the renderer refuses to let a reader misread:

- every table of runs ends with its task's baselines (zero-fill and biharmonic inpainting, the pixel
  prior, the majority class), scored by each run on its own evaluation images;
- a difference from the paper is printed only for a row the paper's number can be compared with;
- a sweep names a best point only when its lead over the runner-up exceeds the run-to-run spread
  measured on points rerun with another seed, and its figure never zooms below that spread;
- an AFNO run whose softshrink zeroes nearly all of its spectrum is flagged on every row and point;
- a figure's point drawn from another experiment's run (Figure 1's B3 points are Table 4's runs) is marked
  so, and one that has no completed run yet is named in the section and on the figure, never left out;
- a table that lacks some points of its experiment's paper sweep (rows; Table 3's dataset columns)
  names them under it, and at smoke scale says which the smoke sweep leaves out on purpose;
- a metric that cannot tell models apart (top-5 of 5 or fewer classes) is not shown, columns that
  trained on identical data are flagged, and at smoke scale every section and figure says so.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from afno_repro.paper import paper_results
from afno_repro.report.declared import BASELINES, DECLARED, Borrowed, Declaration, Metric, Scatter, Sweep, Table
from afno_repro.report.flags import SMOKE_LABEL, figure_title, is_smoke, mixer_off
from afno_repro.report.render import format_number, format_printed, pyplot, save_figure
from afno_repro.report.sections import Section
from afno_repro.report.sweep import collect, comparison_note, describe_reading, provenance
from afno_repro.report.write import BASELINE_PREFIX, log_to_wandb, write_html, write_markdown


__all__ = ["ORDER", "build_report", "render", "run_command", "table_sections", "write_html", "write_markdown"]

# The declared sections in the paper's order; the preflight first, the trained-model studies last.
ORDER = ("preflight", *(declaration.key for declaration in DECLARED), "figure5", "figure6", "resolution")
# Tokens of the smallest grid the paper's models see (ViT-B/4 at 224: 56 x 56).
_SMALLEST_PAPER_GRID = 56 * 56
# Overrides the pipeline adds to every run that do not change what is trained.
_PIPELINE_ONLY = ("resume=", "runs_root=", "hydra.")


def run_command(run: dict[str, Any]) -> str:
    """The single-run command that makes ``run`` again: its recorded overrides, the pipeline's own left
    out, the experiment first as users type it (a multirun records the swept row before it). A run that
    started from a pretraining run it found (``pretrained=auto``) names that checkpoint: run elsewhere,
    ``auto`` would look below another runs root and could start from another trunk.

    >>> run_command({"overrides": ["paper_model=table2/gfn", "experiment=table2_inpainting", "debug=smoke", "resume=auto"]})
    'python train.py experiment=table2_inpainting paper_model=table2/gfn debug=smoke'
    >>> run_command({"overrides": ["experiment=table3_fewshot", "runs_root=/r"], "init": {"how": "auto", "checkpoint": "/r/b.ckpt"}})
    'python train.py experiment=table3_fewshot pretrained=/r/b.ckpt'
    >>> run_command({"overrides": ["paper_model=table2/afno", "experiment=table2_inpainting", "mixer=gfn", "~paper_model=null"]})
    "python train.py experiment=table2_inpainting mixer=gfn '~paper_model'"
    """
    kept = [o for o in run.get("overrides") or [] if not o.startswith(_PIPELINE_ONLY)]
    if any(o.split("=", 1)[0] == "~paper_model" for o in kept):
        # No paper row (Hydra records it as ~paper_model=null): a row a sweep set before it is not the run's.
        kept = [o for o in kept if not o.startswith("paper_model=")]
        kept = ["~paper_model" if o.split("=", 1)[0] == "~paper_model" else o for o in kept]
    kept.sort(key=lambda override: not override.startswith("experiment="))  # stable: the rest keep their order
    init = run.get("init") or {}
    if init.get("how") == "auto" and init.get("checkpoint") and not any(o.startswith("pretrained=") for o in kept):
        kept.append(f"pretrained={init['checkpoint']}")
    return shlex.join(["python", "train.py", *kept])


def _small(value: float, digits: int) -> str:
    """A difference at the table's digits, or at two significant digits when it would round to zero.

    Written out, never in exponent notation (a reader of a table row does not parse ``3.3e-05``).

    >>> _small(0.00093, 2), _small(0.5, 2), _small(0.0, 2), _small(-3.3e-05, 2)
    ('0.00093', '0.50', '0 (equal)', '-0.000033')
    """
    if value == 0:
        return "0 (equal)"
    if abs(value) < 0.5 * 10 ** -digits:
        rounded = float(f"{value:.2g}")  # two significant digits
        return f"{rounded:.{1 - math.floor(math.log10(abs(rounded)))}f}"
    return f"{value:.{digits}f}"


def _row_name(run: dict[str, Any]) -> str:
    return (run.get("paper_row") or run.get("mixer") or "?").split("/", 1)[-1]


def _status(run: dict[str, Any]) -> str:
    status = run.get("status") or ""
    if status != "completed" and run.get("error"):
        return f"{status}: {run['error'].splitlines()[0][:160]}"
    return status


def _of(runs: list[dict[str, Any]], experiment: str) -> list[dict[str, Any]]:
    return [run for run in runs if run.get("experiment") == experiment]


def _sweep_command(plan: list[dict[str, Any]] | None, experiment: str, *, smoke: bool = False) -> str:
    entry = next((step for step in plan or [] if step.get("experiment") == experiment), None)
    return entry["command"] if entry else f"python train.py -m experiment={experiment}{' debug=smoke' if smoke else ''}"


def _plan_command(plan: list[dict[str, Any]] | None, *experiments: str) -> str:
    """One sentence naming the sweep command of each experiment.

    >>> _plan_command(None, "table6_pretrain", "table6_finetune")
    'Made by `python train.py -m experiment=table6_pretrain` and `python train.py -m experiment=table6_finetune`.'
    """
    commands = [f"`{_sweep_command(plan, e)}`" for e in experiments]
    listed = commands[0] if len(commands) == 1 else ", ".join(commands[:-1]) + " and " + commands[-1]
    return f"Made by {listed}."


def _missing(experiment: str, plan: list[dict[str, Any]] | None) -> str:
    return (f"no completed run of {experiment} yet: `{_sweep_command(plan, experiment)}` (or `make reproduce-all`) "
            "makes them.")


def _comparable_note(runs: list[dict[str, Any]]) -> list[str]:
    reasons = sorted({run["comparable"] for run in runs if run.get("comparable") and run["comparable"] != "yes"})
    return [f"Not comparable with the paper: {reason.removeprefix('not comparable: ')}." for reason in reasons]


# ----------------------------------------------------------------------------------------------- rendering
@dataclass
class _Context:
    runs: list[dict[str, Any]]
    plan: list[dict[str, Any]] | None
    figures: Path
    smoke: bool
    scaling: dict[str, Any] | None = None


@dataclass
class _Parts:
    """What the pieces of one section add up to."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)


def _dataset(run: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": run.get("paper_column") or ""}


def _resize_miou(run: dict[str, Any]) -> dict[str, Any]:
    resize = (((run.get("test") or {}).get("extra_inference") or {}).get("resize") or {}).get("miou")
    return {"mIoU, resized to the paper's size (%)": format_number(resize)}


# The extra columns a Table may declare, by name.
COLUMNS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"dataset": _dataset, "resize_miou": _resize_miou}


def _shown_metrics(metrics: Sequence[Metric], runs: list[dict[str, Any]]) -> tuple[list[Metric], list[str]]:
    """The metrics that can tell these runs apart, and a note for each left out (top-5 of 2 classes)."""
    shown, notes = [], []
    classes = {(run.get("reading") or {}).get("num_classes") for run in runs} - {None}
    for metric in metrics:
        if metric.min_classes and classes and min(classes) < metric.min_classes:
            fewest = min(classes)
            notes.append(f"{metric.label} is not shown: these runs tell {fewest} classes apart, fewer than "
                         f"{metric.min_classes}, so the true class is always among the top {min(5, fewest)} and every "
                         "model (and the majority class) scores 100%.")
        else:
            shown.append(metric)
    return shown, notes


def _identical_data(field_name: str | None, runs: list[dict[str, Any]]) -> tuple[dict[Any, str], list[str]]:
    """Values of ``field_name`` (Table 3's dataset column) whose runs trained on identical data: same
    ``data``, image size and data options (the reading, less which checkpoint is reported)."""
    if not field_name:
        return {}, []
    signatures: dict[Any, set[str]] = {}
    for run in runs:
        options = {k: v for k, v in (run.get("reading") or {}).items() if k != "selection"}
        signature = json.dumps([run.get("data"), run.get("image_size"), options], sort_keys=True, default=str)
        signatures.setdefault(run.get(field_name), set()).add(signature)
    groups: dict[str, list[Any]] = {}
    for value, found in signatures.items():
        if value is not None and len(found) == 1:
            groups.setdefault(next(iter(found)), []).append(value)
    flagged, notes = {}, []
    for signature, values in groups.items():
        if len(values) < 2:
            continue
        data = json.loads(signature)[0]
        for value in values:
            flagged[value] = "identical data to " + ", ".join(str(v) for v in values if v != value)
        notes.append(f"Columns {', '.join(map(str, values))} trained and were scored on identical data ({data}, same "
                     "data options): here they repeat one experiment, so their differences are run-to-run noise, "
                     "not differences between datasets.")
    return flagged, notes


def baseline_rows(names: Sequence[str], runs: list[dict[str, Any]], metrics: Sequence[Metric],
                   where: str | None, key: str = "row") -> tuple[list[dict[str, Any]], list[str]]:
    """One row per baseline (per dataset where ``where`` names the column that tells datasets apart),
    labelled in column ``key`` (the table's first), and the note that says on which images they were scored."""
    recorded = list(names) + sorted({n for run in runs for n in (run.get("baselines") or {})} - set(names))
    rows, absent, images = [], [], set()
    for name in recorded:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for run in runs:
            scores = (run.get("baselines") or {}).get(name)
            if not scores:
                continue
            values = tuple(format_number(scores.get(m.key), f".{m.shown_digits(scores.get('num_images'))}f") for m in metrics)
            groups.setdefault((run.get(where) if where else None, values, scores.get("num_images")), []).append(run)
        if not groups:
            absent.append(name)
            continue
        places = [key[0] for key in groups]
        for (place, values, count), members in groups.items():
            label = BASELINE_PREFIX + BASELINES.get(name, name.replace("_", " "))
            if place is not None and len(set(places)) > 1:
                label += f" ({place})"
            if places.count(place) > 1:  # the same data scored differently by different runs: say which
                label += " (runs: " + ", ".join(_row_name(r) for r in members) + ")"
            row = {key: label, **{m.label: v for m, v in zip(metrics, values)}, "images": format_number(count)}
            rows.append(row)
            images.add((count, tuple(r.get("result", {}).get("num_images") for r in members)))
    notes = []
    if rows:
        same = all(all(n == count for n in counts) for count, counts in images)
        notes.append("Baseline rows: no training; each run scores them on its own evaluation images and masks, "
                     + ("the same images as the models' numbers above." if same else
                        "image counts as listed (they differ from some model rows')."))
    if absent and runs:
        notes.append("Not recorded by these runs (made before the task scored it): "
                     + ", ".join(BASELINES.get(n, n) for n in absent) + ".")
    return rows, notes


def _mixer_warning(runs: list[dict[str, Any]], label: Callable[[dict[str, Any]], str] = _row_name) -> list[str]:
    off = [run for run in runs if mixer_off(run)]
    if not off:
        return []
    activity = off[0].get("mixer_activity") or {}
    above = activity.get("inactive_above", 0.95)
    measured = ""
    if activity.get("num_images"):
        measured = f", measured on {activity['num_images']} {activity.get('split', '')} images at the end of training"
    names = list(dict.fromkeys(label(run) for run in off))  # in table order, each once
    counted = (f"{len(off)} run{'s' * (len(off) != 1)}" if len(names) == len(off)
               else f"{len(off)} runs of {len(names)} point{'s' * (len(names) != 1)}")  # seeds repeat a point
    return [f"AFNO mixer effectively off in {counted} ({', '.join(names)}): softshrink zeroes over {above:.0%} of the "
            f"spectrum{measured}. Their numbers measure the network around the mixer, not AFNO."]


def _run_table(table: Table, ctx: _Context) -> _Parts:
    runs = _of(ctx.runs, table.experiment)
    metrics, notes = _shown_metrics(table.metrics, runs)
    identical, identical_notes = _identical_data(table.distinct_data, runs)
    comparable = any(run.get("comparable") == "yes" and run.get("status") == "completed" for run in runs)
    seeds = len({run.get("seed") for run in runs}) > 1
    flagged = any(mixer_off(run) for run in runs)
    paper_params = paper_results().get(table.paper or "", {})
    rows = []
    for run in runs:
        result, paper = run.get("result") or {}, run.get("paper") or {}
        row: dict[str, Any] = {"row": _row_name(run)}
        for column in table.columns:
            row.update(COLUMNS[column](run))
        after = {k: v for column in table.after for k, v in COLUMNS[column](run).items()}
        if identical:
            row["data"] = identical.get(run.get(table.distinct_data), "")
        if seeds:
            row["seed"] = run.get("seed")
        for metric in metrics:
            ours, digits = result.get(metric.key), metric.shown_digits(result.get("num_images"))
            row[metric.label] = format_number(ours, f".{digits}f")
            row[f"paper {metric.label}"] = format_printed(paper.get(metric.key), metric.digits)
            if comparable:  # a difference only where the paper's number can be compared with ours
                delta = run.get("comparable") == "yes" and ours is not None and paper.get(metric.key) is not None
                row[f"delta {metric.label}"] = f"{ours - paper[metric.key]:+.{digits}f}" if delta else ""
        row.update(after)
        if flagged:
            row["flag"] = mixer_off(run) or ""
        row["params (M)"] = format_number(run.get("params_m"), ".3g")
        if table.paper:
            row["paper params (M)"] = format_number((paper_params.get(_row_name(run)) or {}).get("params"), ".0f")
        row["GFLOPs"] = format_number(run.get("gflops"), ".3g")
        row["images"] = format_number(result.get("num_images"))
        row["reading"] = describe_reading(run.get("reading"))
        row["comparable"] = run.get("comparable") or "no paper number for this row"
        row["status"] = _status(run)
        row["command"] = run_command(run)
        rows.append(row)
    baselines, baseline_notes = baseline_rows(table.baselines, runs, metrics, table.distinct_data)
    captions = {table.name: f"`{table.experiment}`: {', '.join(metric.label for metric in metrics)}"} if table.name else {}
    return _Parts(tables={table.name or "": rows + baselines}, captions=captions,
                  warnings=_mixer_warning(runs) + identical_notes,
                  notes=_not_run(table.experiment, runs, ctx) + notes + baseline_notes + _comparable_note(runs))


# The sweep overrides a run's record answers: which paper row and which dataset column it trained.
_RECORDED = {"paper_model": "paper_row", "paper.column": "paper_column"}


def _not_run(experiment: str, runs: list[dict[str, Any]], ctx: _Context) -> list[str]:
    """The points of the experiment's paper sweep (rows, and Table 3's dataset columns) that no run here
    trained, named so that a partial table is not read as the whole one; at smoke scale, which of them the
    smoke sweep leaves out on purpose (``configs/shrink_sweep/smoke/``)."""
    from afno_repro.config import sweep_points

    def key(point: list[str]) -> tuple[str, ...] | None:
        pairs = [override.split("=", 1) for override in point]
        if not pairs or any(name not in _RECORDED for name, _ in pairs):
            return None  # a sweep over other options: its points are not told apart by the record
        # A row is recorded under the experiment's own table (Table 3 trains `table2/gfn` as `table3/gfn`).
        return tuple(value.split("/")[-1] for _, value in sorted(pairs))

    def made(run: dict[str, Any], names: list[str]) -> tuple[str, ...]:
        return tuple(str(run.get(_RECORDED[name])).split("/")[-1] for name in sorted(names))

    points = sweep_points(experiment)
    if not points or key(points[0]) is None:
        return []
    names = [override.split("=", 1)[0] for override in points[0]]
    done = {made(run, names) for run in runs}
    missing = [point for point in points if key(point) not in done]
    if not missing:
        return []
    shown = ", ".join(" on ".join(value.split("/")[-1] for _, value in (o.split("=", 1) for o in point))
                      for point in missing)
    note = (f"Not run here ({len(missing)} of the paper sweep's {len(points)} points; their rows are absent, not "
            f"zero): {shown}.")
    if ctx.smoke:
        smoke = {key(point) for point in sweep_points(experiment, "debug=smoke")}
        if not any(key(point) in smoke for point in missing):
            return [f"{note} The smoke sweep leaves them out on purpose "
                    f"(configs/shrink_sweep/smoke/{experiment}.yaml says why); at paper scale "
                    f"`python train.py -m experiment={experiment}` runs all {len(points)}."]
    command = _sweep_command(ctx.plan, experiment, smoke=ctx.smoke)
    return [f"{note} `{command}` runs them (or `make reproduce-all`)."]


# --------------------------------------------------------------------------------------------- sweeps
@dataclass
class _Point:
    """One point of a sweep: every run of it (a rerun with another seed is a second run)."""

    x: float
    shown: Any
    runs: list[dict[str, Any]]
    values: list[float]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def _option(run: dict[str, Any], option: str) -> float:
    return float((run.get("mixer_options") or {}).get(option, 0))


def _points(sweep: Sweep, runs: list[dict[str, Any]]) -> list[_Point]:
    """The sweep's completed runs grouped into points: equal mixer options, trunk (depth and width:
    Figure 4's block count changes the width), row and dataset; what differs within one is the seed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in _of(runs, sweep.experiment):
        if run.get("status") != "completed" or (run.get("result") or {}).get(sweep.metric.key) is None:
            continue
        key = json.dumps([run.get("mixer_options"), run.get("trunk_hash"), run.get("paper_row"), run.get("paper_column")],
                         sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
    points = [_Point(_option(found[0], sweep.option), (found[0].get("mixer_options") or {}).get(sweep.option), found,
                     [float(run["result"][sweep.metric.key]) for run in found]) for found in groups.values()]
    return sorted(points, key=lambda point: point.x)


def _spread(points: list[_Point]) -> float | None:
    """The run-to-run spread of a sweep: the largest difference between runs of one point; None when
    no point was run twice."""
    spreads = [max(p.values) - min(p.values) for p in points if len(p.values) > 1]
    return max(spreads) if spreads else None


def _verdict(sweep: Sweep, points: list[_Point], smoke: bool) -> tuple[str, _Point | None]:
    """The sentence on a sweep's best point, and that point when it is named (its lead over the
    runner-up exceeds the run-to-run spread)."""
    option, metric = sweep.option, sweep.metric
    paper = paper_results()["figure4_ablations"][sweep.paper_best]["best"]
    head = f"{option} by {metric.label} ({sweep.experiment})"
    papers = f"the paper's best is {paper}"
    if len(points) < 2:
        return f"{head}: {len(points)} point(s) recorded, nothing to compare; {papers}.", None
    ranked = sorted(points, key=lambda point: point.mean, reverse=True)
    spread, margin = _spread(points), ranked[0].mean - ranked[1].mean
    values = [v for p in points for v in p.values]
    if spread is None:
        return (f"{head}: run-to-run noise not measured (no point was rerun with another seed), so this sweep names no "
                f"best; its {len(points)} points span {_small(max(values) - min(values), metric.digits)}; {papers}."), None
    if margin <= spread:
        return (f"{head}: within noise: the top two of {len(points)} points differ by {_small(margin, metric.digits)}, "
                f"not more than the run-to-run spread of {_small(spread, metric.digits)} (the largest difference between "
                f"two seeds of one point), so this sweep names no best; {papers}."), None
    best = ranked[0]
    if smoke:
        against = f"{papers}; at smoke scale this is no evidence for or against it"
    else:
        against = f"which {'agrees with' if float(best.x) == float(paper) else 'differs from'} the paper's {paper}"
    return (f"Best {head}: {best.shown} ({format_number(best.mean, f'.{metric.digits}f')}), ahead of the runner-up by "
            f"{_small(margin, metric.digits)}, more than the run-to-run spread of {_small(spread, metric.digits)} "
            f"(the largest difference between two seeds of one point), {against}."), best


def _sweep_table(sweep: Sweep, points: list[_Point], best: _Point | None) -> list[dict[str, Any]]:
    rows = []
    reruns = any(len(point.runs) > 1 for point in points)
    flagged = any(mixer_off(run) for point in points for run in point.runs)
    for point in points:
        for run in point.runs:
            row: dict[str, Any] = {sweep.option: point.shown}
            if reruns:
                row["seed"] = run.get("seed")
            row[sweep.metric.label] = format_number(run["result"][sweep.metric.key], f".{sweep.metric.digits}f")
            if reruns:
                row["point mean"] = format_number(point.mean, f".{sweep.metric.digits}f") if len(point.runs) > 1 else ""
            if best is not None:
                row["best"] = "best" if point is best else ""
            if flagged:
                row["flag"] = mixer_off(run) or ""
            row.update({"params (M)": format_number(run.get("params_m"), ".3g"),
                        "GFLOPs": format_number(run.get("gflops"), ".3g"),
                        "images": format_number((run.get("result") or {}).get("num_images")),
                        "comparable": comparison_note(run), "command": run_command(run)})
            rows.append(row)
    return rows


def _sweeps(declaration: Declaration, ctx: _Context) -> _Parts:
    parts = _Parts()
    drawn = []
    for sweep in declaration.sweeps:
        points = _points(sweep, ctx.runs)
        name = sweep.experiment
        if not points:
            parts.notes.append(f"{sweep.experiment}: {_missing(sweep.experiment, ctx.plan)}")
            drawn.append((sweep, points, None, None))
            continue
        verdict, best = _verdict(sweep, points, ctx.smoke)
        runs = [run for point in points for run in point.runs]
        metrics = [sweep.metric]
        baselines, baseline_notes = baseline_rows(sweep.baselines, runs, metrics, None, key=sweep.option)
        parts.tables[name] = _sweep_table(sweep, points, best) + baselines
        parts.captions[name] = f"`{sweep.experiment}`: {sweep.metric.label} against the {sweep.xlabel}"
        parts.warnings += [w for w in _mixer_warning(runs, lambda run: f"{sweep.experiment} {sweep.option}="
                                                     f"{(run.get('mixer_options') or {}).get(sweep.option)}")
                           if w not in parts.warnings]
        parts.notes += [verdict] + [note for note in baseline_notes if note not in parts.notes]
        if any(len(point.runs) > 1 for point in points):
            parts.notes.append(f"{sweep.experiment}: points run more than once are drawn with every run and the range "
                               "between them; the table lists each run and the point's mean.")
        drawn.append((sweep, points, best, _spread(points)))
    parts.notes += _comparable_note([r for d in declaration.sweeps for r in _of(ctx.runs, d.experiment)])
    if any(points for _, points, _, _ in drawn):
        parts.figures.append(_plot_sweeps(drawn, ctx, ctx.figures / f"{declaration.key}_ablations.png"))
    return parts


def _plot_sweeps(drawn: list[tuple[Sweep, list[_Point], _Point | None, float | None]], ctx: _Context, path: Path) -> Path:
    """One panel per sweep: every run as a dot, each point's mean joined, a rerun's range as a bar, the
    best point (if one is named) circled, flagged runs as red crosses, the paper's best dashed. The
    metric axis spans at least the run-to-run spread and the metric's ``min_span``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(drawn), figsize=(4.8 * len(drawn), 4.4), squeeze=False)
    for axis, (sweep, points, best, spread) in zip(axes[0], drawn):
        paper = paper_results()["figure4_ablations"][sweep.paper_best]["best"]
        if points:
            axis.plot([p.x for p in points], [p.mean for p in points], "-", color="C0", alpha=0.5, label="mean of a point")
            xs = [p.x for p in points for _ in p.values]
            ys = [v for p in points for v in p.values]
            off = [bool(mixer_off(run)) for p in points for run in p.runs]
            axis.plot([x for x, o in zip(xs, off) if not o], [y for y, o in zip(ys, off) if not o], "o", color="C0",
                      label="one run")
            if any(off):
                axis.plot([x for x, o in zip(xs, off) if o], [y for y, o in zip(ys, off) if o], "x", color="C3",
                          markersize=8, label="mixer off (softshrink zeroes >95%)")
            for point in points:
                if len(point.values) > 1:
                    axis.vlines(point.x, min(point.values), max(point.values), color="C1", linewidth=3, alpha=0.6)
            if any(len(p.values) > 1 for p in points):
                axis.plot([], [], color="C1", linewidth=3, alpha=0.6, label="range over seeds")
            if best is not None:
                axis.plot([best.x], [best.mean], "o", markersize=14, markerfacecolor="none", color="C2", label="best (beyond noise)")
            low, high = min(ys), max(ys)
            span = max(high - low, spread or 0.0, sweep.metric.min_span)
            middle = (low + high) / 2
            axis.set_ylim(middle - 0.6 * span, middle + 0.6 * span)
            noise = (f"run-to-run spread {_small(spread, sweep.metric.digits)}" if spread is not None
                     else "noise not measured (no rerun)")
            axis.set_title(f"{sweep.experiment}: {noise}", fontsize=9)
        else:
            axis.text(0.5, 0.5, "no completed runs yet", transform=axis.transAxes, ha="center", va="center")
            axis.set_title(sweep.experiment, fontsize=9)
        if sweep.xscale == "symlog":
            axis.set_xscale("symlog", linthresh=1e-3)
            axis.set_xlim(-5e-4, 2 * max([p.x for p in points] + [paper]))  # thresholds are never negative
        else:
            axis.set_xscale("log", base=2)
        axis.axvline(paper, color="grey", linestyle="--", label=f"paper's best ({paper})")
        axis.set_xlabel(sweep.xlabel)
        axis.set_ylabel(sweep.metric.label)
        axis.ticklabel_format(axis="y", useOffset=False)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle(figure_title("Figure 4: AFNO ablations (ViT-XS/4)", ctx.smoke), fontsize=10)
    return save_figure(fig, path)


# -------------------------------------------------------------------------------------------- Figure 1
_TRUNK_NAMES = {"segformer_b0": "B0", "segformer_b1": "B1", "segformer_b2": "B2", "segformer_b3": "B3",
                "swin_t": "Swin-T", "swin_s": "Swin-S", "swin_b": "Swin-B"}


def _point_name(run: dict[str, Any]) -> str:
    backbone = str(run.get("backbone") or "?")
    return _TRUNK_NAMES.get(backbone, backbone)


def _family(run: dict[str, Any]) -> str:
    return "Swin" if str(run.get("backbone") or "").startswith("swin") else f"SegFormer + {run.get('mixer')}"


def _init(run: dict[str, Any]) -> tuple[str, bool]:
    """How a run was initialised and whether that is pretrained (as the paper's Figure 1 points are)."""
    init = run.get("init") or {}
    if init.get("checkpoint"):
        return f"pretrained ({init.get('experiment') or 'a checkpoint'})", True
    return init.get("how") or "from scratch", False


def _borrowed(scatter: Scatter, ctx: _Context) -> tuple[dict[int, Borrowed], list[tuple[Borrowed, dict[str, list[str]]]]]:
    """The completed runs ``scatter`` takes from other experiments (by ``id`` of the run, with what they are
    borrowed as), and each :class:`Borrowed` with its rows that have none: row -> the statuses of its runs
    that did not complete (``["failed: ..."]``; empty where the row has no run at all)."""
    found: dict[int, Borrowed] = {}
    absent = []
    for borrowed in scatter.borrowed:
        lacking: dict[str, list[str]] = {}
        for row in borrowed.rows:
            records = [run for run in _of(ctx.runs, borrowed.experiment) if run.get("paper_row") == row]
            done = [run for run in records if run.get("status") == "completed"]
            found.update((id(run), borrowed) for run in done)
            if not done:
                lacking[row] = sorted({_status(run) for run in records})
        if lacking:
            absent.append((borrowed, lacking))
    return found, absent


def _scatter(scatter: Scatter, ctx: _Context) -> _Parts:
    borrowed, absent = _borrowed(scatter, ctx)
    own = [run for run in _of(ctx.runs, scatter.experiment) if run.get("status") == "completed"]
    runs = sorted(own + [run for run in ctx.runs if id(run) in borrowed],
                  key=lambda run: (_family(run), _point_name(run)))

    def source(run: dict[str, Any]) -> str:
        return f" ({borrowed[id(run)].label})" if id(run) in borrowed else ""

    def label(run: dict[str, Any]) -> str:
        return _point_name(run) + source(run)

    rows, differs = [], []
    for run in runs:
        how, pretrained = _init(run)
        if not pretrained:
            differs.append(run)
        rows.append({"point": _point_name(run), "trunk": run.get("backbone"), "mixer": run.get("mixer") or "(Swin's own)",
                     "run of": f"{run.get('experiment')}{source(run)}",
                     "params (M)": format_number(run.get(scatter.x), ".3g"),
                     scatter.metric.label: format_number((run.get("result") or {}).get(scatter.metric.key)),
                     "init": how + ("" if pretrained else f": differs from the paper's ({scatter.paper_init})"),
                     "flag": mixer_off(run) or "",
                     "images": format_number((run.get("result") or {}).get("num_images")),
                     "comparable": comparison_note(run), "command": run_command(run)})
    if not any(row["flag"] for row in rows):
        for row in rows:
            del row["flag"]
    baselines, baseline_notes = baseline_rows(scatter.baselines, runs, [scatter.metric], None, key="point")
    notes = baseline_notes[:1]
    for lender in dict.fromkeys(borrowed.values()):
        shown = sorted({run.get("paper_row") for run in runs if borrowed.get(id(run)) == lender})
        notes.append(f"Points marked \"{lender.label}\": {lender.experiment}'s runs of {', '.join(shown)}, the same "
                     "models and recipe as this figure's, drawn here rather than trained again.")
    if differs:
        notes.append(f"Hollow markers: {', '.join(label(r) for r in differs)} trained from scratch; every point of "
                     f"the paper's figure is {scatter.paper_init}.")
    # A point is never left out silently: the section and the figure name it, and the command that makes it.
    missing = [f"Missing points ({lender.label}): {lender.experiment} has no completed run of "
               + ", ".join(f"{row} ({'; '.join(states)})" if states else row for row, states in lacking.items())
               + f" yet, so the figure lacks them; `{_sweep_command(ctx.plan, lender.experiment)}` (or `make "
               "reproduce-all`) makes them." for lender, lacking in absent]
    figure = _plot_scatter(scatter, runs, baselines, ctx, ctx.figures / "figure1_miou_vs_params.png", label,
                           [f"missing ({lender.label}): no completed {lender.experiment} run of {', '.join(lacking)}"
                            for lender, lacking in absent])
    return _Parts(tables={"": rows + baselines}, figures=[figure], notes=notes,
                  warnings=missing + _mixer_warning(runs, lambda run: f"{label(run)} {run.get('mixer')}"))


def _plot_scatter(scatter: Scatter, runs: list[dict[str, Any]], baselines: list[dict[str, Any]], ctx: _Context,
                  path: Path, label: Callable[[dict[str, Any]], str], missing: Sequence[str]) -> Path:
    """Every point labelled by ``label`` (B0..B3, Swin-T/S/B; a borrowed point says where from), one marker
    and colour per family, no line between points; hollow where the init differs from the paper's, a red
    cross on a flagged mixer, the baselines as horizontal lines; the ``missing`` points named above the axes."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(9, 5))
    families = sorted({_family(run) for run in runs})
    markers = ("o", "s", "^", "D", "v", "P")
    for index, family in enumerate(families):
        colour, marker = f"C{index}", markers[index % len(markers)]
        axis.plot([], [], marker, color=colour, label=family, linestyle="none")
        for run in (r for r in runs if _family(r) == family):
            value = (run.get("result") or {}).get(scatter.metric.key)
            if value is None or run.get(scatter.x) is None:
                continue
            pretrained = _init(run)[1]
            axis.plot([run[scatter.x]], [value], marker, color=colour, markersize=8, linestyle="none",
                      markerfacecolor=colour if pretrained else "none")
            if mixer_off(run):
                axis.plot([run[scatter.x]], [value], "x", color="C3", markersize=12)
            axis.annotate(label(run), (run[scatter.x], value), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if any(not _init(run)[1] for run in runs):
        axis.plot([], [], "o", color="grey", markerfacecolor="none", linestyle="none",
                  label=f"hollow: init differs from the paper's ({scatter.paper_init})")
    if any(mixer_off(run) for run in runs):
        axis.plot([], [], "x", color="C3", linestyle="none", label="mixer off (softshrink zeroes >95%)")
    for index, row in enumerate(baselines):
        value = row.get(scatter.metric.label)
        if value:
            axis.axhline(float(value), color="grey", linestyle=(":", "-.")[index % 2], linewidth=1,
                         label=row["point"].removeprefix(BASELINE_PREFIX))
    values = [v for run in runs if (v := (run.get("result") or {}).get(scatter.metric.key)) is not None]
    values += [float(row[scatter.metric.label]) for row in baselines if row.get(scatter.metric.label)]
    if values:
        span = max(max(values) - min(values), scatter.metric.min_span)
        middle = (max(values) + min(values)) / 2
        axis.set_ylim(middle - 0.6 * span, middle + 0.6 * span)
    axis.margins(x=0.1)  # room for the labels of the outermost points
    axis.set_xlabel(scatter.xlabel)
    axis.set_ylabel(scatter.metric.label)
    fig.suptitle(figure_title("Figure 1: mIoU against parameters", ctx.smoke), fontsize=10)
    if missing:
        axis.set_title("\n".join(missing), fontsize=8, color="C3")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------- Table 1
def _table1(ctx: _Context) -> _Parts | str:
    """The scaling study's exponents and cases (or the reason it is missing)."""
    scaling = ctx.scaling
    if not scaling:
        return "no scaling study yet: `python scripts/model_table.py --scaling` (make reproduce-all runs it)."
    formulas = paper_results()["table1_complexity"]
    paper_name = {"attention": "self_attention"}
    exponents = [{"mixer": name, "time exponent": format_number(p.get("time")), "memory exponent": format_number(p.get("memory")),
                  "paper FLOPs": (formulas.get(paper_name.get(name, name)) or {}).get("flops", ""),
                  "paper params": (formulas.get(paper_name.get(name, name)) or {}).get("params", "")}
                 for name, p in scaling["exponents"].items()]
    cases = [{"mixer": c["mixer"], "tokens": c["tokens"], "width": c["dim"],
              "fwd+bwd (ms)": "" if c.get("does_not_fit") else f"{1e3 * c['seconds']:.3g}",
              "peak (MiB)": "" if c.get("does_not_fit") else f"{c['peak_mib']:.3g}",
              "note": c.get("does_not_fit") or ""} for c in scaling["cases"]]
    notes = [f"Made by `{scaling['command']}`."] if scaling.get("command") else []
    largest = max((c["tokens"] for c in scaling["cases"]), default=0)
    if largest < _SMALLEST_PAPER_GRID:
        notes.append(f"The largest grid here has {largest} tokens, below the {_SMALLEST_PAPER_GRID} of the paper's "
                     "smallest (ViT-B/4 at 224): at this size each call's fixed cost dominates, so these exponents "
                     "test the measuring, not Table 1's formulas. `python scripts/model_table.py --scaling` (its "
                     "default grids, what SCALE=paper runs) measures them.")
    figure = _plot_scaling(scaling, ctx, ctx.figures / "table1_scaling.png")
    width = scaling["cases"][0]["dim"] if scaling["cases"] else "?"
    # A study written before the device was recorded says so rather than leave its timings without one.
    where = (f"on {scaling['device']}, torch {scaling.get('torch', '?')}" if scaling.get("device") else
             "on a device the study did not record (rerun it to have it named)")
    captions = {"table1_exponents": "Growth exponent p of each mixer's cost ~ tokens^p, fitted to the cases below, "
                                    "beside Table 1's formulas",
                "table1_cases": f"Each case: one mixer's forward+backward at batch 1, width {width}, {where}"}
    return _Parts(tables={"table1_exponents": exponents, "table1_cases": cases}, figures=[figure], notes=notes,
                  captions=captions)


def _plot_scaling(scaling: dict[str, Any], ctx: _Context, path: Path) -> Path:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    for name, exponents in scaling["exponents"].items():
        cases = [c for c in scaling["cases"] if c["mixer"] == name and not c.get("does_not_fit")]
        if not cases:
            continue
        tokens = [c["tokens"] for c in cases]
        axes[0].loglog(tokens, [1e3 * c["seconds"] for c in cases], "o-", label=f"{name} (p={format_number(exponents['time'])})")
        axes[1].loglog(tokens, [max(c["peak_mib"], 1e-2) for c in cases], "o-",
                       label=f"{name} (p={format_number(exponents['memory'])})")
    measured = sorted({c["tokens"] for c in scaling["cases"]})
    for axis, label in zip(axes, ("forward+backward time (ms)", "peak memory (MiB)")):
        axis.set_xticks(measured)
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("tokens N")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    width = scaling["cases"][0]["dim"] if scaling["cases"] else "?"
    fig.suptitle(figure_title(f"Table 1 measured: one mixer, width {width}, batch 1 (fitted cost ~ N^p)", ctx.smoke),
                 fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- render
def _experiments(declaration: Declaration) -> list[str]:
    found = [t.experiment for t in declaration.tables] + [s.experiment for s in declaration.sweeps]
    return found + ([declaration.scatter.experiment] if declaration.scatter else [])


def _title(declaration: Declaration, runs: list[dict[str, Any]], smoke: bool) -> str:
    """The paper's title and setting; at smoke scale, what the runs here trained on beside it."""
    if not smoke:
        return f"{declaration.title} ({declaration.setting})"
    data = sorted({str(run.get("data")) for run in runs if run.get("data")})
    sizes = sorted({int(run["image_size"]) for run in runs if run.get("image_size")})
    here = ", ".join(data) + (f" at {'/'.join(map(str, sizes))} px" if sizes else "") if data else "tiny models"
    return f"{declaration.title} (paper: {declaration.setting}; here, smoke: {here})"


def render(declaration: Declaration, runs: list[dict[str, Any]], *, figures: Path, smoke: bool,
           plan: list[dict[str, Any]] | None = None, scaling: dict[str, Any] | None = None) -> Section:
    """The section a declaration describes, from the runs (figures written under ``figures``)."""
    ctx = _Context(runs, plan, figures, smoke, scaling)
    experiments = _experiments(declaration)
    mine = [run for run in runs if run.get("experiment") in experiments]
    title = _title(declaration, mine, smoke)
    banner = SMOKE_LABEL if smoke else None
    if declaration.scaling:
        title = f"{declaration.title} (paper: {declaration.setting})"
        parts = _table1(ctx)
        if isinstance(parts, str):
            return Section(declaration.key, title, declaration.intro, missing=parts, banner=banner)
        return Section(declaration.key, title, declaration.intro, tables=parts.tables, figures=parts.figures,
                       notes=parts.notes, banner=banner, captions=parts.captions)
    if not mine:
        return Section(declaration.key, title, declaration.intro, missing=_missing(experiments[0], ctx.plan), banner=banner)
    parts = _Parts()
    pieces = [_run_table(table, ctx) for table in declaration.tables if _of(runs, table.experiment)]
    pieces += [_sweeps(declaration, ctx)] if declaration.sweeps else []
    pieces += [_scatter(declaration.scatter, ctx)] if declaration.scatter else []
    for piece in pieces:
        for name, rows in piece.tables.items():
            parts.tables[name or declaration.key] = rows
        parts.captions.update(piece.captions)
        parts.figures += piece.figures
        parts.warnings += [w for w in piece.warnings if w not in parts.warnings]
        parts.notes += [n for n in piece.notes if n not in parts.notes]
    for table in declaration.tables:
        if not _of(runs, table.experiment):
            parts.notes.append(f"{table.experiment}: {_missing(table.experiment, ctx.plan)}")
    borrowed = [b.experiment for b in declaration.scatter.borrowed] if declaration.scatter else []
    made = [e for e in dict.fromkeys(experiments + borrowed) if _of(runs, e)]
    intro = f"{declaration.intro} {_plan_command(plan, *made)}"
    return Section(declaration.key, title, intro, tables=parts.tables, figures=parts.figures, notes=parts.notes,
                   warnings=parts.warnings, banner=banner, captions=parts.captions)


def table_sections(runs: list[dict[str, Any]], *, scaling: dict[str, Any] | None, out_dir: Path,
                   plan: list[dict[str, Any]] | None = None, smoke: bool | None = None) -> list[Section]:
    """The declared sections (:data:`afno_repro.report.declared.DECLARED`), in the paper's order
    (figures under ``out_dir/figures``). ``smoke``: label every section as a pipeline check; None
    decides from the runs (any made with ``debug=smoke``)."""
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    smoke = is_smoke(runs) if smoke is None else smoke
    return [render(declaration, runs, figures=figures, smoke=smoke, plan=plan, scaling=scaling)
            for declaration in DECLARED]


# ----------------------------------------------------------------------------------------------- writing
def build_report(root: Path, out_dir: Path, *, scaling: dict[str, Any] | None = None, extra: Sequence[Section] = (),
                 plan: list[dict[str, Any]] | None = None, wandb_mode: str = "offline",
                 smoke: bool | None = None) -> Path:
    """Write the report of every run below ``root`` into ``out_dir``; returns ``index.html``'s path.

    Parameters
    ----------
    root
        Folder of the runs (e.g. ``outputs/reproduce/paper``); every ``metrics.json`` below it is read.
    out_dir
        Where ``index.md``, ``index.html``, ``report.json`` and ``figures/`` go.
    scaling
        Table 1's scaling study (``scripts/model_table.py --scaling --json``), or None.
    extra
        Sections computed elsewhere (Figures 5 and 6, resolution transfer), placed by key in :data:`ORDER`.
    plan
        The pipeline's plan (each experiment's sweep command), to name the command of each table.
    wandb_mode
        ``offline`` (default), ``online`` or ``disabled`` (``WANDB_MODE`` wins when set).
    smoke
        Label the report, every section and every figure as a pipeline check on embedded data; None
        (default) decides from the runs: any run made with ``debug=smoke``.
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect(root)
    smoke = is_smoke(runs) if smoke is None else smoke
    sections = table_sections(runs, scaling=scaling, out_dir=out_dir, plan=plan, smoke=smoke) + list(extra)
    sections.sort(key=lambda s: ORDER.index(s.key) if s.key in ORDER else len(ORDER))
    if smoke:
        for section in sections:
            section.banner = SMOKE_LABEL
    completed = sum(run.get("status") == "completed" for run in runs)
    header = (f"{completed} completed runs of {len(runs)} below {root}. Every number of ours sits beside the paper's "
              "with the reading it ran, the images behind it and the command that made it, and every table ends with "
              "its task's baselines scored on the same images; a difference from the paper is printed only where the "
              "two can be compared.")
    made = provenance(runs)
    header = f"{header} {made['sentence']}"
    if smoke:
        header = f"{SMOKE_LABEL} {header}"
    title = "afno-repro report" + (" (smoke: pipeline check on embedded data)" if smoke else "")
    write_markdown(sections, out_dir / "index.md", f"# {title}\n\n{header}")
    index = write_html(sections, out_dir / "index.html", header, title=title)
    (out_dir / "report.json").write_text(json.dumps(
        {"root": str(root), "runs": len(runs), "completed": completed, "smoke": smoke, "provenance": made,
         "sections": [{"key": s.key, "title": s.title, "banner": s.banner, "intro": s.intro, "warnings": s.warnings,
                       "tables": s.tables, "captions": s.captions, "figures": [str(Path(f).relative_to(out_dir)) for f in s.figures],
                       "notes": s.notes, "missing": s.missing} for s in sections]}, indent=1, default=str) + "\n")
    log_to_wandb(sections, out_dir, wandb_mode)
    return index
