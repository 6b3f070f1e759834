"""The reproduction report: every table and figure of the paper, ours beside the paper's.

:func:`build_report` reads every run below a root (their ``metrics.json``, through
:func:`afno_repro.report.sweep.collect`, which attaches the paper's numbers and the one-line reason a
row cannot be compared), makes one :class:`~afno_repro.report.sections.Section` per table and figure
in the paper's order, adds the sections computed from trained models (Figures 5 and 6, resolution
transfer: :mod:`afno_repro.report.trained_figures`), and writes ``index.md``, ``index.html`` (one
self-contained page with the figures), ``report.json`` and ``figures/*.png``. The tables are also
logged as W&B tables (one run, group ``reproduce-all``, job type ``report``; offline by default).

Every row carries our number, the paper's, the difference, the reading it ran, the image count
behind it, and the command that made it; a row that cannot match says why.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from afno_repro.paper import paper_results
from afno_repro.report.render import format_number, pyplot, save_figure
from afno_repro.report.sections import Section
from afno_repro.report.sweep import collect, describe_reading

log = logging.getLogger(__name__)

__all__ = ["build_report", "run_command", "table_sections", "write_html", "write_markdown"]

ORDER = ("preflight", "table1", "figure1", "table2", "table3", "table4", "table5", "table6", "figure4", "figure5", "figure6",
         "resolution")
# Tokens of the smallest grid the paper's models see (ViT-B/4 at 224: 56 x 56).
_SMALLEST_PAPER_GRID = 56 * 56
# Overrides the pipeline adds to every run that do not change what is trained.
_PIPELINE_ONLY = ("resume=", "runs_root=", "hydra.")


def run_command(run: dict[str, Any]) -> str:
    """The single-run command that makes ``run`` again: its recorded overrides, the pipeline's own left
    out, the experiment first as users type it (a multirun records the swept row before it).

    >>> run_command({"overrides": ["paper_model=table2/gfn", "experiment=table2_inpainting", "debug=smoke", "resume=auto"]})
    'python train.py experiment=table2_inpainting paper_model=table2/gfn debug=smoke'
    """
    kept = [o for o in run.get("overrides") or [] if not o.startswith(_PIPELINE_ONLY)]
    kept.sort(key=lambda override: not override.startswith("experiment="))  # stable: the rest keep their order
    return shlex.join(["python", "train.py", *kept])


def _delta(ours: float | None, paper: float | None, digits: int) -> str:
    if ours is None or paper is None:
        return ""
    return f"{ours - paper:+.{digits}f}"


def _row_name(run: dict[str, Any]) -> str:
    return (run.get("paper_row") or run.get("mixer") or "?").split("/", 1)[-1]


def _status(run: dict[str, Any]) -> str:
    status = run.get("status") or ""
    if status != "completed" and run.get("error"):
        return f"{status}: {run['error'].splitlines()[0][:160]}"
    return status


def _metric_rows(runs: list[dict[str, Any]], metrics: Sequence[tuple[str, str, int]],
                 extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 paper_params: Callable[[dict[str, Any]], Any] | None = None,
                 after: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per run: ``extra``'s columns, each metric (ours, paper, delta), ``after``'s columns, size,
    images, reading, comparability, command."""
    rows = []
    for run in runs:
        result, paper = run.get("result") or {}, run.get("paper") or {}
        row: dict[str, Any] = {"row": _row_name(run)}
        row.update(extra(run) if extra else {})
        for key, label, digits in metrics:
            ours = result.get(key)
            row[label] = format_number(ours, f".{digits}f")
            row[f"paper {label}"] = format_number(paper.get(key), f".{digits}f")
            row[f"delta {label}"] = _delta(ours, paper.get(key), digits)
        row.update(after(run) if after else {})
        row["params (M)"] = format_number(run.get("params_m"))
        if paper_params is not None:
            row["paper params (M)"] = format_number(paper_params(run), ".0f")
        row["GFLOPs"] = format_number(run.get("gflops"))
        row["images"] = format_number(result.get("num_images"))
        row["reading"] = describe_reading(run.get("reading"))
        row["comparable"] = run.get("comparable") or "no paper number for this row"
        row["status"] = _status(run)
        row["command"] = run_command(run)
        rows.append(row)
    return rows


def _of(runs: list[dict[str, Any]], experiment: str) -> list[dict[str, Any]]:
    return [run for run in runs if run.get("experiment") == experiment]


def _sweep_command(plan: list[dict[str, Any]] | None, experiment: str) -> str:
    entry = next((step for step in plan or [] if step.get("experiment") == experiment), None)
    return entry["command"] if entry else f"python train.py -m experiment={experiment}"


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


def _paper_entry(section: str, run: dict[str, Any], key: str) -> Any:
    return (paper_results().get(section, {}).get(_row_name(run)) or {}).get(key)


def _unprinted(run: dict[str, Any]) -> str:
    """The comparability of a point of a figure whose values the paper does not print."""
    return run.get("comparable") or f"the paper prints no value; trained on {run.get('data')}"


def _comparable_note(runs: list[dict[str, Any]]) -> list[str]:
    reasons = sorted({run["comparable"] for run in runs if run.get("comparable") and run["comparable"] != "yes"})
    return [f"Not comparable with the paper: {reason.removeprefix('not comparable: ')}." for reason in reasons]


def _table_section(key: str, title: str, experiment: str, runs: list[dict[str, Any]], plan: list[dict] | None,
                   metrics: Sequence[tuple[str, str, int]], intro: str, paper_section: str,
                   extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                   after: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Section:
    mine = _of(runs, experiment)
    if not mine:
        return Section(key, title, intro, missing=_missing(experiment, plan))
    rows = _metric_rows(mine, metrics, extra, lambda run: _paper_entry(paper_section, run, "params"), after)
    return Section(key, title, f"{intro} {_plan_command(plan, experiment)}", tables={key: rows},
                   notes=_comparable_note(mine))


def _table1(scaling: dict[str, Any] | None, figures: Path) -> Section:
    title = "Table 1: complexity of the token mixers, measured"
    formulas = paper_results()["table1_complexity"]
    intro = ("The paper's Table 1 gives each mixer's cost as a formula in the number of tokens N. Here one mixer "
             "at a fixed width runs forward and backward on growing token grids; the growth exponent p in "
             "cost ~ N^p is fitted by least squares on the log-log points (self-attention: 2; the Fourier mixers: "
             "about 1, N log N).")
    if not scaling:
        return Section("table1", title, intro, missing="no scaling study yet: `python scripts/model_table.py --scaling` "
                                                       "(make reproduce-all runs it).")
    if scaling.get("command"):
        intro += f" Made by `{scaling['command']}`."
    paper_name = {"attention": "self_attention"}
    exponents = [{"mixer": name, "time exponent": format_number(p.get("time")), "memory exponent": format_number(p.get("memory")),
                  "paper FLOPs": (formulas.get(paper_name.get(name, name)) or {}).get("flops", ""),
                  "paper params": (formulas.get(paper_name.get(name, name)) or {}).get("params", "")}
                 for name, p in scaling["exponents"].items()]
    cases = [{"mixer": c["mixer"], "tokens": c["tokens"], "width": c["dim"],
              "fwd+bwd (ms)": "" if c.get("does_not_fit") else f"{1e3 * c['seconds']:.2f}",
              "peak (MiB)": "" if c.get("does_not_fit") else f"{c['peak_mib']:.1f}",
              "note": c.get("does_not_fit") or ""} for c in scaling["cases"]]
    figure = _plot_scaling(scaling, figures / "table1_scaling.png")
    notes = []
    largest = max((c["tokens"] for c in scaling["cases"]), default=0)
    if largest < _SMALLEST_PAPER_GRID:
        notes.append(f"The largest grid here has {largest} tokens, below the {_SMALLEST_PAPER_GRID} of the paper's "
                     "smallest (ViT-B/4 at 224): at this size each call's fixed cost dominates, so these exponents "
                     "test the measuring, not Table 1's formulas. `python scripts/model_table.py --scaling` (its "
                     "default grids, what SCALE=paper runs) measures them.")
    return Section("table1", title, intro, tables={"table1_exponents": exponents, "table1_cases": cases},
                   figures=[figure], notes=notes)


def _table3_extra(run: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": run.get("paper_column") or ""}


def _table4_extra(run: dict[str, Any]) -> dict[str, Any]:
    resize = (((run.get("test") or {}).get("extra_inference") or {}).get("resize") or {}).get("miou")
    return {"mIoU, resized to the paper's size (%)": format_number(resize)}


def _table6(runs: list[dict[str, Any]], plan: list[dict] | None) -> Section:
    title = "Table 6: ablations (ViT-XS/4, inpainting on 10% of ImageNet, then few-shot CelebA-Faces)"
    intro = ("Each ablation row is pretrained by inpainting (`table6_pretrain`: PSNR) and finetuned few-shot from "
             "its own run (`table6_finetune`: mIoU), each beside the paper's.")
    pretrain, finetune = _of(runs, "table6_pretrain"), _of(runs, "table6_finetune")
    if not pretrain and not finetune:
        return Section("table6", title, intro, missing=_missing("table6_pretrain", plan))
    params = lambda run: _paper_entry("table6_ablations", run, "params")  # noqa: E731
    tables = {}
    if pretrain:
        tables["table6_pretrain"] = _metric_rows(pretrain, [("psnr", "PSNR (dB)", 2)], paper_params=params)
    if finetune:
        tables["table6_finetune"] = _metric_rows(finetune, [("miou", "mIoU (%)", 2)], paper_params=params)
    intro += " " + _plan_command(plan, *(e for e in ("table6_pretrain", "table6_finetune") if _of(runs, e)))
    return Section("table6", title, intro, tables=tables, notes=_comparable_note(pretrain + finetune))


def _figure1(runs: list[dict[str, Any]], plan: list[dict] | None, figures: Path) -> Section:
    title = "Figure 1: Cityscapes mIoU against parameters, per trunk and mixer"
    intro = ("SegFormer B0-B3 with efficient attention, GFN or AFNO (each pretrained by `fig1_pretrain`) and Swin "
             "T/S/B, finetuned on Cityscapes. The paper plots these points but prints no values, so there is no "
             "number to set ours beside; the shape to compare is AFNO's curve above the others at equal size.")
    mine = sorted((run for run in _of(runs, "fig1_trunks") if run.get("status") == "completed"),
                  key=lambda run: (str(run.get("backbone")), str(run.get("mixer"))))
    if not mine:
        return Section("figure1", title, intro, missing=_missing("fig1_trunks", plan))
    rows = [{"trunk": run.get("backbone"), "mixer": run.get("mixer") or "(Swin's own)",
             "params (M)": format_number(run.get("params_m"), ".3f"), "mIoU (%)": format_number((run.get("result") or {}).get("miou")),
             "images": format_number((run.get("result") or {}).get("num_images")), "init": (run.get("init") or {}).get("how", ""),
             "comparable": _unprinted(run),
             "command": run_command(run)} for run in mine]
    figure = _plot_figure1(mine, figures / "figure1_miou_vs_params.png")
    return Section("figure1", title, f"{intro} {_plan_command(plan, 'fig1_trunks')}", tables={"figure1": rows},
                   figures=[figure])


def _option(run: dict[str, Any], option: str) -> float:
    return float((run.get("mixer_options") or {}).get(option, 0))


def _best_note(points: list[dict[str, Any]], option: str, metric: str, label: str, paper: float) -> str:
    """Our best point beside the paper's, with the spread of the sweep so a reader can tell an optimum
    from noise; a spread that rounds to zero names no best at all."""
    scored = [(r, (r.get("result") or {}).get(metric)) for r in points]
    scored = [(r, value) for r, value in scored if value is not None]
    if not scored:
        return f"{option} by {label}: no run recorded it."
    best, top = max(scored, key=lambda pair: pair[1])
    spread = top - min(value for _, value in scored)
    if round(spread, 2) == 0:
        return (f"{option} by {label}: all {len(scored)} points within {spread:.2g} of each other ({format_number(top)}), "
                f"so this sweep names no best; the paper's is {paper}.")
    ours = (best.get("mixer_options") or {}).get(option)
    agree = "agrees with" if float(ours) == float(paper) else "differs from"
    return (f"Best {option} by {label} here: {ours} ({format_number(top)}; the {len(scored)} points span {format_number(spread)}), "
            f"which {agree} the paper's {paper}.")


def _figure4(runs: list[dict[str, Any]], plan: list[dict] | None, figures: Path) -> Section:
    title = "Figure 4: AFNO's sparsity threshold and number of blocks"
    claims = paper_results()["figure4_ablations"]
    best_threshold, best_blocks = claims["sparsity_threshold"]["best"], claims["num_blocks"]["best"]
    intro = (f"The Table 6 AFNO model (ViT-XS/4) against the softshrink threshold lambda (inpainting PSNR of "
             f"`fig4_sparsity`, and few-shot CelebA-Faces mIoU of `fig4_sparsity_finetune`, each finetuned from the "
             f"run with its own lambda, as section 5.5 does) and against the number of blocks k at equal parameters "
             f"(PSNR). The paper prints no values; its text says both PSNR and mIoU peak at lambda = {best_threshold} "
             f"and the best block count is {best_blocks}.")
    experiments = {"sparsity_threshold": "fig4_sparsity", "num_blocks": "fig4_blocks", "finetune": "fig4_sparsity_finetune"}
    sweeps = {key: [r for r in _of(runs, e) if r.get("status") == "completed"] for key, e in experiments.items()}
    if not sweeps["sparsity_threshold"] and not sweeps["num_blocks"]:
        return Section("figure4", title, intro, missing=_missing("fig4_sparsity", plan))
    miou = {_option(r, "sparsity_threshold"): (r.get("result") or {}).get("miou") for r in sweeps["finetune"]}
    tables, notes = {}, []
    for option in ("sparsity_threshold", "num_blocks"):
        found = sweeps[option]
        if not found:
            notes.append(f"{option}: no completed run yet.")
            continue
        points = sorted(found, key=lambda r: _option(r, option))
        rows = []
        for r in points:
            row = {option: (r.get("mixer_options") or {}).get(option),
                   "PSNR (dB)": format_number((r.get("result") or {}).get("psnr"))}
            if option == "sparsity_threshold":
                row["few-shot mIoU (%)"] = format_number(miou.get(_option(r, option)))
            row.update({"params (M)": format_number(r.get("params_m"), ".3f"), "images": format_number((r.get("result") or {}).get("num_images")),
                        "comparable": _unprinted(r),
                        "command": run_command(r)})
            rows.append(row)
        tables[f"figure4_{option}"] = rows
        paper = best_threshold if option == "sparsity_threshold" else best_blocks
        notes.append(_best_note(points, option, "psnr", "PSNR (dB)", paper))
    if sweeps["finetune"]:
        notes.append(_best_note(sweeps["finetune"], "sparsity_threshold", "miou", "few-shot mIoU (%)", best_threshold))
    elif sweeps["sparsity_threshold"]:
        notes.append(f"Few-shot mIoU: {_missing('fig4_sparsity_finetune', plan)}")
    notes += _comparable_note([r for found in sweeps.values() for r in found])
    figure = _plot_figure4(sweeps, best_threshold, best_blocks, figures / "figure4_ablations.png")
    commands = _plan_command(plan, *(e for e in experiments.values() if _of(runs, e)))
    return Section("figure4", title, f"{intro} {commands}", tables=tables, figures=[figure], notes=notes)


def table_sections(runs: list[dict[str, Any]], *, scaling: dict[str, Any] | None, out_dir: Path,
                   plan: list[dict[str, Any]] | None = None) -> list[Section]:
    """The sections made from run records and the scaling study, in the paper's order (figures under
    ``out_dir/figures``)."""
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    return [
        _table1(scaling, figures),
        _figure1(runs, plan, figures),
        _table_section("table2", "Table 2: inpainting on ImageNet (ViT-B/4, 224x224)", "table2_inpainting", runs, plan,
                       [("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4)],
                       "PSNR and SSIM of the selected checkpoint on the evaluation images, random-walk masks.",
                       "table2_inpainting"),
        _table_section("table3", "Table 3: few-shot segmentation (ViT-B/4 pretrained by inpainting), mIoU",
                       "table3_fewshot", runs, plan, [("miou", "mIoU (%)", 2)],
                       "Each Table 2 row finetuned on DatasetGAN's few-shot splits from its own inpainting run.",
                       "table3_fewshot_miou", _table3_extra),
        _table_section("table4", "Table 4: Cityscapes (SegFormer-B3/4, 1024x1024), mIoU", "table4_cityscapes", runs,
                       plan, [("miou", "mIoU (%)", 2)],
                       "Each SegFormer-B3 mixer pretrained as an ImageNet classifier (`table4_pretrain`) and "
                       "finetuned on Cityscapes; the headline is SegFormer's sliding window, beside it the paper's "
                       "literal reading (the image resized).", "table4_cityscapes", after=_table4_extra),
        _table_section("table5", "Table 5: ImageNet-1k classification (ViT-S/4, 224x224)", "table5_classification",
                       runs, plan, [("top1", "top-1 (%)", 2), ("top5", "top-5 (%)", 2)],
                       "Top-1 and top-5 accuracy with A.5's recipe (DeiT augmentation, Mixup/CutMix).",
                       "table5_classification"),
        _table6(runs, plan),
        _figure4(runs, plan, figures),
    ]


# ----------------------------------------------------------------------------------------------- figures
def _plot_scaling(scaling: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, exponents in scaling["exponents"].items():
        cases = [c for c in scaling["cases"] if c["mixer"] == name and not c.get("does_not_fit")]
        if not cases:
            continue
        tokens = [c["tokens"] for c in cases]
        axes[0].loglog(tokens, [1e3 * c["seconds"] for c in cases], "o-", label=f"{name} (p={format_number(exponents['time'])})")
        axes[1].loglog(tokens, [max(c["peak_mib"], 1e-2) for c in cases], "o-",
                       label=f"{name} (p={format_number(exponents['memory'])})")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

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
    fig.suptitle(f"Table 1 measured: one mixer, width {width}, batch 1 (fitted cost ~ N^p)")
    return save_figure(fig, path)


def _plot_figure1(runs: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        family = "Swin" if (run.get("backbone") or "").startswith("swin") else f"SegFormer {run.get('mixer')}"
        miou = (run.get("result") or {}).get("miou")
        if miou is not None and run.get("params_m") is not None:
            groups.setdefault(family, []).append((run["params_m"], miou))
    for family, points in sorted(groups.items()):
        points.sort()
        axis.plot([p for p, _ in points], [m for _, m in points], "o-", label=family)
    axis.set_xlabel("parameters (M)")
    axis.set_ylabel("mIoU (%)")
    axis.set_title("Figure 1: mIoU against parameters")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_figure4(sweeps: dict[str, list[dict[str, Any]]], best_threshold: float, best_blocks: int, path: Path) -> Path:
    """Three panels: PSNR and few-shot mIoU against lambda, PSNR against k; the paper's stated best dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = (("sparsity_threshold", "sparsity_threshold", "psnr", best_threshold, "sparsity threshold lambda",
               "inpainting PSNR (dB)"),
              ("finetune", "sparsity_threshold", "miou", best_threshold, "sparsity threshold lambda",
               "few-shot CelebA-Faces mIoU (%)"),
              ("num_blocks", "num_blocks", "psnr", best_blocks, "number of blocks k", "inpainting PSNR (dB)"))
    for axis, (sweep, option, metric, paper_best, xlabel, ylabel) in zip(axes, panels):
        points = sorted((_option(r, option), (r.get("result") or {}).get(metric))
                        for r in sweeps.get(sweep, []) if (r.get("result") or {}).get(metric) is not None)
        if points:
            axis.plot([x for x, _ in points], [y for _, y in points], "o-", label="ours")
        else:
            axis.text(0.5, 0.5, "no completed runs yet", transform=axis.transAxes, ha="center", va="center")
        if option == "sparsity_threshold":
            axis.set_xscale("symlog", linthresh=1e-3)
        else:
            axis.set_xscale("log", base=2)
        axis.axvline(paper_best, color="grey", linestyle="--", label=f"paper's best ({paper_best})")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.ticklabel_format(axis="y", useOffset=False)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("Figure 4: AFNO ablations (ViT-XS/4)")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- writing
def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


# Descriptive columns that, when every row of a table says the same, are said once above it.
_SHARED = ("reading", "comparable", "status", "init")


def _shared(rows: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """The descriptive columns every row of ``rows`` shares (said once above the table) and the columns
    left for the table itself. ``report.json`` and W&B keep every column of every row.

    >>> _shared([{"row": "a", "reading": "r", "status": "completed"}, {"row": "b", "reading": "r", "status": "failed"}])
    ({'reading': 'r'}, ['row', 'status'])
    """
    columns = _columns(rows)
    shared = {}
    if len(rows) > 1:
        for column in _SHARED:
            values = {str(row.get(column) or "") for row in rows}
            if column in columns and len(values) == 1 and values != {""}:
                shared[column] = values.pop()
    return shared, [c for c in columns if c not in shared]


def _shared_line(shared: dict[str, str]) -> str:
    """``Every row: reading: ...; not comparable: ...`` (a reason not to compare already says what it is)."""
    said = [value if column == "comparable" and value != "yes" else f"{column}: {value}"
            for column, value in shared.items()]
    return "Every row: " + "; ".join(said) + "."


def _markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cell = lambda value: str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(sections: Sequence[Section], path: Path, header: str) -> Path:
    """``index.md``: a contents list, then each section's intro, tables, figures and notes."""
    lines = [header, "", "Contents: " + ", ".join(f"[{s.title.split(':')[0]}](#{s.key})" for s in sections), ""]
    for section in sections:
        lines += [f'<a id="{section.key}"></a>', f"## {section.title}", "", section.intro, ""]
        if section.missing:
            lines += [f"**Missing:** {section.missing}", ""]
        for name, rows in section.tables.items():
            if rows:
                # A section's only table is named after the section: its heading says it already.
                shared, columns = _shared(rows)
                lines += [] if name == section.key else [f"*{name}*", ""]
                lines += ([_shared_line(shared), ""] if shared else []) + [_markdown_table(rows, columns), ""]
        for figure in section.figures:
            relative = Path(figure).relative_to(path.parent)
            lines += [f"![{section.title}]({relative.as_posix()})", ""]
        lines += [f"- {note}" for note in section.notes] + ([""] if section.notes else [])
    path.write_text("\n".join(lines))
    return path


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f3f3f3}.caption{font-style:italic;margin:1em 0 0}.shared{font-size:13px;color:#444;margin:.3em 0 0}
code{background:#f6f6f6;padding:0 3px;font-size:12px}img{max-width:100%;border:1px solid #eee}
.missing{color:#a33}.notes li{margin:2px 0}nav a{margin-right:1em}h2{border-bottom:1px solid #ddd;padding-top:1em}"""


def write_html(sections: Sequence[Section], path: Path, header: str) -> Path:
    """``index.html``: one self-contained page (figures referenced next to it), every text escaped."""
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>afno-repro report</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>afno-repro: the paper's tables and figures, reproduced</h1>",
           f"<p>{_inline(header)}</p>",
           "<nav>" + "".join(f'<a href="#{s.key}">{html.escape(s.title.split(":")[0])}</a>' for s in sections) + "</nav>"]
    for section in sections:
        out += [f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>', f"<p>{_inline(section.intro)}</p>"]
        if section.missing:
            out.append(f'<p class="missing"><b>Missing:</b> {_inline(section.missing)}</p>')
        for name, rows in section.tables.items():
            if not rows:
                continue
            shared, columns = _shared(rows)
            if name != section.key:  # a section's only table is named after the section: its heading says it
                out.append(f'<p class="caption">{html.escape(name)}</p>')
            if shared:
                out.append(f'<p class="shared">{_inline(_shared_line(shared))}</p>')
            out.append("<table><tr>"
                       + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td>{_inline(str(row.get(c) if row.get(c) is not None else ''))}</td>"
                                            for c in columns) + "</tr>")
            out.append("</table>")
        for figure in section.figures:
            relative = Path(figure).relative_to(path.parent).as_posix()
            out.append(f'<p><img src="{html.escape(relative)}" alt="{html.escape(section.title)}"></p>')
        if section.notes:
            out.append('<ul class="notes">' + "".join(f"<li>{_inline(n)}</li>" for n in section.notes) + "</ul>")
        out.append("</section>")
    out.append("</body></html>")
    path.write_text("\n".join(out))
    return path


def _log_to_wandb(sections: Sequence[Section], out_dir: Path, mode: str) -> None:
    """Every section's tables (``wandb.Table``) and figures (``wandb.Image``) in one W&B run; a W&B
    failure is a warning, never a failed report."""
    mode = os.environ.get("WANDB_MODE", mode)
    if mode == "disabled":
        return
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project="afno-repro", group="reproduce-all", job_type="report", dir=str(out_dir), mode=mode,
                         name="report")
        for section in sections:
            for name, rows in section.tables.items():
                if rows:
                    columns = _columns(rows)
                    run.log({name: wandb.Table(columns=columns, data=[[str(r.get(c, "")) for c in columns] for r in rows])})
            for figure in section.figures:
                run.log({f"{section.key}/{Path(figure).stem}": wandb.Image(str(figure))})
        run.finish()
        offline = sorted((out_dir / "wandb").glob("offline-run-*"))
        if offline:
            print(f"report tables logged to W&B offline: wandb sync {offline[-1]}", flush=True)
    except Exception as error:  # noqa: BLE001 - W&B is a copy of the report, never a reason to lose it
        log.warning("the report was written, but logging it to W&B failed: %s: %s", type(error).__name__, error)


def build_report(root: Path, out_dir: Path, *, scaling: dict[str, Any] | None = None, extra: Sequence[Section] = (),
                 plan: list[dict[str, Any]] | None = None, wandb_mode: str = "offline") -> Path:
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
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect(root)
    sections = table_sections(runs, scaling=scaling, out_dir=out_dir, plan=plan) + list(extra)
    sections.sort(key=lambda s: ORDER.index(s.key) if s.key in ORDER else len(ORDER))
    completed = sum(run.get("status") == "completed" for run in runs)
    header = (f"{completed} completed runs of {len(runs)} below {root}. Every number of ours sits beside the paper's "
              "with the difference, the reading it ran, the images behind it and the command that made it; rows "
              "trained on other data than the paper's say so.")
    write_markdown(sections, out_dir / "index.md", f"# afno-repro report\n\n{header}")
    index = write_html(sections, out_dir / "index.html", header)
    (out_dir / "report.json").write_text(json.dumps(
        {"root": str(root), "runs": len(runs), "completed": completed,
         "sections": [{"key": s.key, "title": s.title, "intro": s.intro, "tables": s.tables,
                       "figures": [str(Path(f).relative_to(out_dir)) for f in s.figures], "notes": s.notes,
                       "missing": s.missing} for s in sections]}, indent=1, default=str) + "\n")
    _log_to_wandb(sections, out_dir, wandb_mode)
    return index
