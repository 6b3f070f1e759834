"""``make reproduce-all``: every table and figure of the paper, in the order their runs need, resumable.

The plan is read from the experiments themselves (``configs/experiment/*.yaml``): an experiment
joins by setting ``reproduce: true``, and one that finetunes declares the experiment it needs
first under ``needs.pretrained.experiment`` (the declaration ``pretrained=auto`` reads too, so the
chaining and the pipeline cannot drift apart). A figure that draws some of its points from another
experiment's runs instead of training them again (Figure 1's B3 points are Table 4's runs: the report's
:class:`~afno_repro.report.declared.Borrowed`) runs after that experiment, and ``--only`` brings it
along; its failure does not stop the figure's own runs, and the report names the points it lacks.
Each experiment runs as its own Hydra multirun::

    python train.py -m experiment=<name> [debug=smoke] resume=auto runs_root=<root> hydra.sweep.dir=<root>/<name>

through the configured launcher (``--launcher slurm`` submits every sweep to Slurm), pretraining
before finetuning. Then the scaling study of Table 1 (``scripts/model_table.py --scaling``) and the
report (``outputs/report/<scale>/index.html``).

Run-to-run noise: a sweep whose report names a best point (Figure 4's) declares ``noise`` in its
experiment file, e.g. ``noise: {rerun_best: 2, seed: 1, metric: psnr, mode: max}``. Once every run
of the sweep is complete, the step ``<experiment>_noise`` takes its ``rerun_best`` best points by
``result.<metric>`` (the best and the runner-up) and trains each again with ``seed=<seed>``, one
multirun of one job per point in a fixed folder, ``<root>/<experiment>_seed<seed>/<point>``. The
reruns record the same ``experiment`` and ``mixer_options`` as the runs they repeat and another
``seed``: the report reads the spread from those pairs. A finetuning rerun starts from the very
trunk its point's run started from (``pretrained=<that checkpoint>``, read from the run's
``metrics.json`` ``init``), so the spread is finetuning's own seed noise.

Resuming: every run has a fixed folder, so a second invocation finds what the first left.
``resume=auto`` (:func:`afno_repro.runs.auto_resume`) makes a completed run return its recorded
result without training, resumes a killed one from its ``last.ckpt`` and restarts one that had
not saved a checkpoint; an experiment whose runs are all complete is not launched at all, and the
report is rebuilt only when a result changed. A sweep killed with SIGKILL and restarted loses at
most the epoch in flight.

Usage::

    python -m afno_repro.pipeline --scale smoke                 # the whole graph on embedded data (CPU minutes)
    python -m afno_repro.pipeline --scale paper --imagenet /data/imagenet --datasetgan /data/datasetgan \\
        --cityscapes /data/cityscapes --launcher slurm
    python -m afno_repro.pipeline --scale smoke --dry-run       # the plan: experiments, runs done, folders
    python -m afno_repro.pipeline --scale smoke --only table3_fewshot   # one experiment and what it needs
    python -m afno_repro.pipeline --scale paper --preflight     # every paper row's cost, measured before running it
    python -m afno_repro.pipeline --scale paper --preflight --only table2_inpainting --rows afno

Before anything runs (``--dry-run`` included), the data, ``--root`` and ``--report`` folders are checked,
and when overrides or data folders are given every experiment is composed with them in process, once
per distinct choice of config groups in its sweep (about half a second each): an override that does not
compose (a typo in a key, an unknown group option, broken syntax) is named with its experiment and row,
exit status 2.

``--preflight`` (:mod:`afno_repro.preflight`) builds every row at its paper size through the training path,
times a few optimizer steps and the second of two evaluation batches, and writes ``<root>/preflight.json`` and
``preflight.md``; the report shows it as its first section.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from afno_repro.cli import positive_int, user_errors
from afno_repro.config import sweep_points
from afno_repro.pipeline_checks import folder_problem, missing_data, override_problem, scale_problem, value_problem
from afno_repro.report.declared import borrowed_by
from afno_repro.runs import find_runs, write_json

__all__ = ["NoiseStep", "Step", "build_plan", "choose_reruns", "main", "noise_declaration", "order", "run_plan"]

SCALES = ("smoke", "paper")
REPO = Path(__file__).resolve().parents[2]
# The data option of each dataset the experiments train on (their `data` group choice).
_DATA_OPTIONS = {"imagenet": "imagenet", "imagenet_10pct": "imagenet", "imagenet_classification": "imagenet",
                 "datasetgan": "datasetgan", "cityscapes": "cityscapes"}
# The scaling study of Table 1 per scale: smoke measures small grids in seconds.
_SCALING_ARGS = {"smoke": ["--grids", "4", "8", "16", "--repeats", "1", "--time-budget", "5"], "paper": []}


@dataclass
class Step:
    """One experiment of the plan (a Hydra multirun) and what the pipeline knows of its runs.

    ``needs``: the experiments whose runs this one starts from (it is skipped when one of them did not
    complete); ``shows``: the experiments whose runs its report section draws besides its own (it runs
    after them, but without them too).
    """

    experiment: str
    needs: list[str]
    points: list[list[str]]
    data: str | None
    sweep_dir: Path
    command: list[str] = field(default_factory=list)
    done: int = 0
    shows: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.done == len(self.points)

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "needs": self.needs, "shows": self.shows,
                "command": shlex.join(self.command), "sweep_dir": str(self.sweep_dir), "runs": len(self.points),
                "done": self.done, "data": self.data}

    def count_done(self) -> None:
        """Set :attr:`done` from the completed runs below the step's folder."""
        records = find_runs(self.sweep_dir, experiment=self.experiment)
        self.done = sum(_is_done(point, records) for point in self.points)


@dataclass
class NoiseStep(Step):
    """The reruns that measure a sweep's run-to-run spread (its experiment's ``noise``): its best
    ``rerun_best`` points, chosen once :attr:`sweep` is complete (:meth:`choose`), trained again with
    ``seed``. :attr:`experiment` is ``<sweep>_noise``; the runs record the sweep's experiment name.

    Each point is one multirun of one job in ``<sweep_dir>/<point folder>`` (``sweep_dir`` is
    ``<root>/<experiment>_seed<seed>``): a fixed folder, resumable, and launched through the same
    launcher as the sweep (a Slurm job with ``--launcher slurm``).
    """

    sweep: Step | None = None
    noise: dict[str, Any] = field(default_factory=dict)
    template: list[str] = field(default_factory=list)  # the sweep's command up to its folder overrides
    chosen: list[dict[str, Any]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    ready: bool = False

    @property
    def complete(self) -> bool:
        return self.ready and self.done == len(self.points)

    @property
    def of(self) -> str:
        return self.sweep.experiment

    def choose(self) -> None:
        """Pick the points to rerun from the sweep's completed runs and count those already rerun."""
        records = find_runs(self.sweep.sweep_dir, experiment=self.of)
        self.chosen = choose_reruns(self.sweep.points, records, self.noise)
        seed = f"seed={self.noise['seed']}"
        # A finetuning sweep's rerun starts from the trunk its point's run started from: the spread is then
        # finetuning's own seed noise (a lower bound of the whole chain's, which would need the trunk retrained).
        self.points = [[*choice["point"], seed, *_same_trunk(choice["run_dir"])] for choice in self.chosen]
        self.commands = [[*self.template, *point, "resume=auto", f"runs_root={self.sweep_dir.parent}",
                          f"hydra.sweep.dir={self.sweep_dir / _point_folder(choice['point'], self.sweep.points)}"]
                         for point, choice in zip(self.points, self.chosen)]
        self.ready = True
        records = find_runs(self.sweep_dir, experiment=self.of)
        self.done = sum(_is_done(point, records) for point in self.points)

    def count_done(self) -> None:
        self.choose()

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "kind": "noise", "of": self.of, "noise": self.noise,
                "chosen": self.chosen, "commands": [shlex.join(command) for command in self.commands],
                "runs": len(self.points) if self.ready else self.noise["rerun_best"]}


_MODES = ("max", "min")


def noise_declaration(name: str, cfg: Any) -> dict[str, Any] | None:
    """The experiment's ``noise`` declaration, checked: ``{"rerun_best", "seed", "metric", "mode"}`` or None.

    >>> noise_declaration("fig4_sparsity", {"noise": {"rerun_best": 2, "seed": 1, "metric": "psnr"}})
    {'rerun_best': 2, 'seed': 1, 'metric': 'psnr', 'mode': 'max'}
    """
    noise = cfg.get("noise")
    if not noise:
        return None
    noise = dict(noise)
    declared = {"rerun_best": noise.pop("rerun_best", 2), "seed": noise.pop("seed", None),
                "metric": noise.pop("metric", None), "mode": noise.pop("mode", "max")}
    problems = [f"unknown key(s) {', '.join(sorted(noise))}"] if noise else []
    if isinstance(declared["rerun_best"], bool) or not isinstance(declared["rerun_best"], int) or declared["rerun_best"] < 1:
        problems.append(f"rerun_best={declared['rerun_best']!r} is not a whole number >= 1")
    if isinstance(declared["seed"], bool) or not isinstance(declared["seed"], int):
        problems.append(f"seed={declared['seed']!r} is not a whole number (the seed of the reruns, not the sweep's)")
    if not isinstance(declared["metric"], str) or not declared["metric"]:
        problems.append(f"metric={declared['metric']!r} does not name a key of the runs' `result` (e.g. psnr, miou)")
    if declared["mode"] not in _MODES:
        problems.append(f"mode={declared['mode']!r} is not max or min")
    if problems:
        raise ValueError(f"configs/experiment/{name}.yaml declares `noise` with {'; '.join(problems)}. It reads "
                         "`noise: {rerun_best: 2, seed: 1, metric: psnr, mode: max}`: after the sweep, its rerun_best "
                         "best points by result.<metric> (higher is better with mode max) are trained again with "
                         "seed=<seed>.")
    return declared


def choose_reruns(points: list[list[str]], records: list[dict[str, Any]], noise: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``noise["rerun_best"]`` best points of a completed sweep by ``result[noise["metric"]]``.

    Each point is scored by the newest record whose overrides hold it (:func:`afno_repro.runs.find_runs`
    lists newest first); a point with no record or no finite number is left out; ties keep the sweep's
    order. Returns ``[{"point", "value", "run_dir"}, ...]``, best first.

    >>> records = [{"overrides": ["k=1"], "result": {"psnr": 12.0}}, {"overrides": ["k=2"], "result": {"psnr": 12.5}},
    ...            {"overrides": ["k=3"], "result": {"psnr": None}}]
    >>> [c["point"] for c in choose_reruns([["k=1"], ["k=2"], ["k=3"]], records, {"rerun_best": 2, "metric": "psnr",
    ...                                                                          "mode": "max"})]
    [['k=2'], ['k=1']]
    """
    scored = []
    for index, point in enumerate(points):
        record = next((r for r in records if set(point) <= set(r.get("overrides") or [])), None)
        value = ((record or {}).get("result") or {}).get(noise["metric"])
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf"):
            scored.append((value if noise["mode"] == "min" else -value, index, point, value, record.get("run_dir")))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [{"point": point, "value": value, "run_dir": run_dir}
            for _, _, point, value, run_dir in scored[:noise["rerun_best"]]]


def _same_trunk(run_dir: str | None) -> list[str]:
    """``["pretrained=<checkpoint>"]`` when the run in ``run_dir`` started from a pretraining run's trunk, else []."""
    try:
        init = json.loads((Path(run_dir) / "metrics.json").read_text()).get("init") or {}
    except (OSError, TypeError, ValueError, AttributeError):  # AttributeError: a record that is not an object
        return []
    if not isinstance(init, dict):
        return []
    return [f"pretrained={init['checkpoint']}"] if init.get("checkpoint") and "backbone.checkpoint" not in str(init.get("how")) else []


def _point_folder(point: list[str], points: list[list[str]]) -> str:
    """A folder name for ``point`` from the overrides that differ across the sweep (``sparsity_threshold-0.01``).

    >>> _point_folder(["paper_model=table6/afno", "mixer.num_blocks=8"], [["paper_model=table6/afno", "mixer.num_blocks=4"]])
    'num_blocks-8'
    """
    varying = [override for override in point if not all(override in other for other in points)] or point
    words = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, _, value in (o.partition("=") for o in varying)]
    return "_".join(words).replace("/", "-") or "run"


@lru_cache(maxsize=None)
def _experiment_config(name: str) -> Any:
    """The composed config of ``experiment=<name>`` with its Hydra part (sweep params, choices)."""
    from hydra import compose, initialize_config_dir

    from afno_repro.config import _config_dir

    with initialize_config_dir(config_dir=str(_config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=[f"experiment={name}"], return_hydra_config=True)


def declared_experiments() -> list[str]:
    """The experiments that set ``reproduce: true`` (a paper table or figure), by name."""
    from afno_repro.config import _config_dir

    return sorted(path.stem for path in (_config_dir() / "experiment").glob("*.yaml")
                  if _experiment_config(path.stem).get("reproduce"))


def _paper_order(name: str) -> tuple[bool, str]:
    return (not name.startswith("table"), name)


def order(needs: dict[str, list[str]]) -> list[str]:
    """The experiments in an order where each comes after what it needs (otherwise the paper's:
    tables, then figures, by name).

    >>> order({"table3_fewshot": ["table2_inpainting"], "table2_inpainting": [], "fig4_blocks": []})
    ['table2_inpainting', 'table3_fewshot', 'fig4_blocks']
    """
    ordered: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise ValueError(f"experiments need each other in a cycle: {' -> '.join(visiting + [name])}; "
                             "fix needs.pretrained.experiment in configs/experiment (or a figure's borrowed points "
                             "in afno_repro/report/declared.py).")
        if name not in needs:
            raise ValueError(f"an experiment needs `{name}`, which does not exist or does not set `reproduce: true` "
                             f"(configs/experiment/{name}.yaml).")
        visiting.append(name)
        for need in sorted(needs[name], key=_paper_order):
            visit(need)
        visiting.pop()
        ordered.append(name)

    for name in sorted(needs, key=_paper_order):
        visit(name)
    return ordered


def _is_done(point: list[str], records: list[dict[str, Any]]) -> bool:
    """Whether a record (from :func:`find_runs`, which skips one whose overrides are not a list of words) holds
    ``point``'s overrides."""
    return any(set(point) <= set(record.get("overrides") or []) for record in records)


def build_plan(root: Path, scale: str, *, only: Sequence[str] = (), data_roots: dict[str, str] | None = None,
               extra: Sequence[str] = ()) -> list[Step]:
    """The steps of the pipeline under ``root``, ordered, with the runs each has done already.

    ``only`` keeps those experiments and everything they need or show; ``data_roots`` maps a dataset
    (``imagenet``, ``datasetgan``, ``cityscapes``) to its folder (paper scale); ``extra`` are
    overrides given to every run (e.g. ``trainer=ddp``).
    """
    if scale not in SCALES:
        raise ValueError(f"--scale {scale!r}: choose one of {', '.join(SCALES)} (smoke: embedded data, CPU minutes).")
    configs = {name: _experiment_config(name) for name in declared_experiments()}
    needs = {name: [n for n in [((cfg.get("needs") or {}).get("pretrained") or {}).get("experiment")] if n]
             for name, cfg in configs.items()}
    shows = {name: list(dict.fromkeys(borrowed.experiment for borrowed in borrowed_by(name))) for name in configs}
    wanted = order({name: needs[name] + shows[name] for name in configs})
    if only:
        unknown = sorted(set(only) - set(configs))
        if unknown:
            raise ValueError(f"--only {', '.join(unknown)}: no such experiment in the pipeline; choose from "
                             f"{', '.join(sorted(configs))}.")
        keep: set[str] = set()
        stack = list(only)
        while stack:
            name = stack.pop()
            if name not in keep:
                keep.add(name)
                stack += needs[name] + shows[name]
        wanted = [name for name in wanted if name in keep]
    steps: list[Step] = []
    for name in wanted:
        cfg = configs[name]
        noise = noise_declaration(name, cfg)
        points = sweep_points(name, *(["debug=smoke"] if scale == "smoke" else []))
        data = _DATA_OPTIONS.get(cfg.hydra.runtime.choices.get("data"))
        sweep_dir = root / name
        template = ["python", "train.py", "-m", f"experiment={name}"]
        if scale == "smoke":
            template.append("debug=smoke")
        elif data and (data_roots or {}).get(data):
            template.append(f"data.root={data_roots[data]}")
        if name == "fig1_trunks" and scale == "paper" and (data_roots or {}).get("swin"):
            template.append(f"swin_checkpoints={data_roots['swin']}")
        template += extra
        command = [*template, "resume=auto", f"runs_root={root}", f"hydra.sweep.dir={sweep_dir}"]
        step = Step(name, needs[name], points, data, sweep_dir, command, shows=shows[name])
        step.count_done()
        steps.append(step)
        if noise:
            rerun = NoiseStep(f"{name}_noise", [name], [], data, root / f"{name}_seed{noise['seed']}", sweep=step,
                              noise=noise, template=template)
            if step.complete:
                rerun.choose()
            steps.append(rerun)
    return steps


def format_plan(steps: list[Step], root: Path, report_dir: Path) -> str:
    """The ``--dry-run`` text: each experiment, what it needs, its runs done, its folder and command."""
    runs = sum(len(s.points) if not isinstance(s, NoiseStep) or s.ready else s.noise["rerun_best"] for s in steps)
    experiments = sum(not isinstance(s, NoiseStep) for s in steps)
    reruns = len(steps) - experiments
    lines = [f"Plan under {root} ({runs} runs in {experiments} experiments"
             f"{f' and {reruns} noise steps' if reruns else ''}):"]
    for number, step in enumerate(steps, 1):
        needs = f", after {', '.join(step.needs)}" if step.needs else ""
        for borrowed in borrowed_by(step.experiment):
            needs += (f"; its figure also draws {borrowed.experiment}'s runs of {', '.join(borrowed.rows)} "
                      f"({borrowed.label}), not trained again")
        if isinstance(step, NoiseStep):
            noise = step.noise
            what = (f"the best {noise['rerun_best']} of {step.of} by result.{noise['metric']} ({noise['mode']}) trained "
                    f"again with seed={noise['seed']} (the run-to-run spread)")
            if not step.ready:
                lines.append(f"{number:>2}. {step.experiment}: {noise['rerun_best']} runs, chosen when {step.of} is "
                             f"complete{needs}: {what}")
                lines.append(f"    -> {step.sweep_dir}/<point>")
                continue
            state = "done" if step.complete else f"{step.done}/{len(step.points)} runs done"
            lines.append(f"{number:>2}. {step.experiment}: {len(step.points)} runs, {state}{needs}: {what}")
            for choice, command in zip(step.chosen, step.commands):
                lines.append(f"    {' '.join(choice['point'])} ({noise['metric']} {choice['value']:.6g})")
                lines.append(f"    {shlex.join(command)}")
            continue
        state = "done" if step.complete else f"{step.done}/{len(step.points)} runs done"
        lines.append(f"{number:>2}. {step.experiment}: {len(step.points)} runs, {state}{needs}")
        lines.append(f"    {shlex.join(step.command)}")
    lines.append(f"then: Table 1's scaling study -> {root / 'table1_scaling' / 'scaling.json'}")
    lines.append(f"then: the report -> {report_dir / 'index.html'}")
    return "\n".join(lines)


def _run_step(step: Step, log_dir: Path) -> int:
    """Launch one experiment's multirun (a noise step: one multirun per point not yet rerun); the output
    goes to the terminal and to ``log_dir``. The exit status: the first non-zero one, else 0."""
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"\n==> {step.experiment} ({len(step.points) - step.done} of {len(step.points)} runs to do)", flush=True)
    if not isinstance(step, NoiseStep):
        return _launch(step.command, log_dir / f"{step.experiment}.log")
    records = find_runs(step.sweep_dir, experiment=step.of)
    statuses = [_launch(command, log_dir / f"{step.experiment}.log")
                for point, command in zip(step.points, step.commands) if not _is_done(point, records)]
    return next((status for status in statuses if status), 0)


def _launch(command: list[str], log_path: Path) -> int:
    """Run ``python train.py ...`` (``command``) with its output on the terminal and appended to ``log_path``."""
    print(f"    {shlex.join(command)}", flush=True)
    with open(log_path, "ab") as log:
        # train.py of this checkout, run in the current folder: outputs/ and the sweep folders are the user's.
        process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *command[2:]], cwd=os.getcwd(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        try:
            for line in process.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                log.write(line)
        except KeyboardInterrupt:
            # Ctrl-C reached the sweep too (same process group): it records the run as interrupted
            # and writes its checkpoint; wait for that rather than leave it half-written.
            for line in process.stdout:
                sys.stdout.buffer.write(line)
                log.write(line)
            process.wait()
            raise
        return process.wait()


def _scaling(root: Path, scale: str) -> dict[str, Any]:
    """Table 1's scaling study (``scripts/model_table.py --scaling``), measured once per root."""
    target = root / "table1_scaling" / "scaling.json"
    if target.is_file():
        try:
            study = json.loads(target.read_text())
        except (OSError, ValueError) as error:
            study = error
        if isinstance(study, dict) and isinstance(study.get("cases"), list) and isinstance(study.get("exponents"), dict):
            return study
        # Measured in minutes and made only here: one cut short or edited is measured again, not shown as missing.
        print(f"\n{target} is not a scaling study ({study if isinstance(study, Exception) else 'not its shape'}); "
              "measuring it again.", flush=True)
    command = [sys.executable, str(REPO / "scripts" / "model_table.py"), "--scaling", "--json", *_SCALING_ARGS[scale]]
    print(f"\n==> Table 1 scaling study\n    {shlex.join(['python', *command[1:]])}", flush=True)
    made = subprocess.run(command, capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"the scaling study failed (exit {made.returncode}):\n{made.stderr[-2000:]}")
    study = json.loads(made.stdout)
    study["command"] = shlex.join(["python", "scripts/model_table.py", "--scaling", *_SCALING_ARGS[scale]])
    write_json(target, study)
    return study


def _fingerprint(root: Path) -> str:
    """Changes whenever a run's result or the scaling study changes (the report is rebuilt then)."""
    files = (sorted(root.rglob("metrics.json")) + sorted(root.glob("table1_scaling/scaling.json"))
             + sorted(root.glob("preflight.json")))
    digest = hashlib.sha1()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}\n".encode())
    return digest.hexdigest()


def build_report(root: Path, report_dir: Path, steps: list[Step], scaling: dict[str, Any] | None, *,
                 force: bool = False, wandb_mode: str = "offline") -> Path:
    """The report of everything under ``root`` (rebuilt only when a result changed, or ``force``)."""
    index = report_dir / "index.html"
    stamp = report_dir / ".fingerprint"
    fingerprint = _fingerprint(root)
    if not force and index.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        print(f"\nreport up to date: {index}", flush=True)
        return index
    from afno_repro.report.build import build_report as write_report
    from afno_repro.report.sweep import collect
    from afno_repro.report.trained_figures import figure5_section, figure6_section, resolution_section

    print(f"\n==> report -> {report_dir}", flush=True)
    runs = [run for run in collect(root) if run.get("status") == "completed"]
    figures = report_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    table2 = [run for run in runs if run.get("experiment") == "table2_inpainting"]
    # Figure 6: Table 2's AFNO and Figure 4's thresholds (how much softshrink zeroes as lambda grows).
    # The sweeps' own runs: a noise rerun (another seed, <root>/<experiment>_seed<n>) would show a second
    # model of the same label.
    afno = [run for run in runs if run.get("mixer") == "afno" and run.get("experiment") in ("table2_inpainting",
                                                                                          "fig4_sparsity")
            and Path(run.get("run_dir") or "").is_relative_to(root / run["experiment"])]
    extra = [figure5_section(table2, figures), figure6_section(afno, figures), resolution_section(table2, figures)]
    if (root / "preflight.json").is_file():
        from afno_repro.preflight import preflight_section, read_record
        from afno_repro.report.sections import Section

        record, problem = read_record(root / "preflight.json")
        extra.insert(0, preflight_section(record) if record is not None else Section(
            "preflight", "Preflight: the cost of every paper-scale row", missing=f"{problem}. `python -m "
            "afno_repro.pipeline --scale paper --preflight` measures it again and replaces it."))
    written = write_report(root, report_dir, scaling=scaling, extra=extra, plan=[s.as_dict() for s in steps],
                           wandb_mode=wandb_mode)
    stamp.write_text(fingerprint)
    return written


def run_plan(steps: list[Step], root: Path, scale: str, report_dir: Path, *, force_report: bool = False,
             wandb_mode: str = "offline") -> int:
    """Run every incomplete step in order, then the scaling study and the report; the exit status."""
    failed: list[str] = []
    for step in steps:
        blocked = [need for need in step.needs if need in failed]
        if isinstance(step, NoiseStep) and not blocked:
            step.choose()  # the sweep completed in this invocation or an earlier one
        if step.complete:
            print(f"{step.experiment}: all {len(step.points)} runs completed, not run again", flush=True)
            continue
        if blocked:
            print(f"{step.experiment}: skipped, it needs {', '.join(blocked)}, which did not complete", flush=True)
            failed.append(step.experiment)
            continue
        status = _run_step(step, root / "logs")
        step.count_done()
        if status != 0 or not step.complete:
            print(f"{step.experiment}: {step.done} of {len(step.points)} runs completed (exit {status}); "
                  f"see {step.sweep_dir}/summary.md and {root / 'logs' / (step.experiment + '.log')}", file=sys.stderr,
                  flush=True)
            failed.append(step.experiment)
    scaling = _scaling(root, scale)
    index = build_report(root, report_dir, steps, scaling, force=force_report, wandb_mode=wandb_mode)
    print(f"\nreport: {index}\n        {index.with_name('index.md')}", flush=True)
    if failed:
        print(f"error: {len(failed)} experiment(s) did not complete: {', '.join(failed)}. Run the same command again "
              "to retry them: completed runs are kept, killed ones resume.", file=sys.stderr, flush=True)
        return 1
    return 0


def format_preflight_plan(rows: list[tuple[str, list[str]]], device: str, record: Path) -> str:
    """``--preflight --dry-run``: the rows a preflight would measure, and what a record at ``record`` already holds."""
    def count(n: int, noun: str) -> str:
        return f"{n} {noun}" + ("" if n == 1 else "s")

    lines = [f"preflight plan: {count(len(rows), 'paper-scale row')} on {device}, nothing measured (--dry-run)"]
    lines += [f"  {experiment:<24}{' '.join(point)}" for experiment, point in rows]
    from afno_repro.preflight import read_record

    earlier, problem = read_record(record)
    if earlier is None:
        lines.append(f"record: {record} (none yet)" if not record.exists() else
                     f"record: {problem}; the preflight replaces it")
    else:
        state = "complete" if earlier.get("complete", True) else "incomplete: the same command resumes it"
        lines.append(f"record: {record} ({count(len(earlier.get('rows', [])), 'row')} measured, {state})")
    return "\n".join(lines)


def _preflight(args: argparse.Namespace, steps: list[Step], root: Path, data_roots: dict[str, str]) -> int:
    """``--preflight``: every row of the plan measured at its paper size (:mod:`afno_repro.preflight`)."""
    import torch

    from hydra.errors import HydraException

    from afno_repro.config import override_syntax_message
    from afno_repro.preflight import PreflightError, format_table, preflight

    if args.scale != "paper":
        print("error: --preflight measures the paper-scale rows; use it with --scale paper (the smoke scale's cost "
              "is the smoke run itself: make reproduce-all SCALE=smoke).", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU here; use --device cpu.", file=sys.stderr)
        return 2
    # Rows are measured without their pretraining runs: --only names exactly the experiments to measure.
    # A noise step's reruns cost what the rows they repeat cost.
    measured = [step for step in steps if not isinstance(step, NoiseStep) and (not args.only or step.experiment in args.only)]
    rows = [(step.experiment, point) for step in measured for point in step.points
            if not args.rows or any(word in " ".join(point) for word in args.rows)]
    if not rows:
        print(f"error: --rows {' '.join(args.rows or [])} matches no row of {', '.join(s.experiment for s in measured)}; "
              "a word matches a row when it appears in the row's overrides (python -m afno_repro.pipeline --scale "
              "paper --dry-run lists the experiments; each experiment's sweep names its rows).", file=sys.stderr)
        return 2
    if args.dry_run:
        print(format_preflight_plan(rows, device, root / "preflight.json"), flush=True)
        return 0
    print(f"preflight of {len(rows)} paper-scale rows on {device} -> {root / 'preflight.json'}", flush=True)
    try:
        result = preflight(rows, data_roots={k: v for k, v in data_roots.items() if k != "swin"},
                           work_dir=root / "preflight", device=device, batch=args.batch, steps=args.steps,
                           extra=args.overrides, printer=lambda line: print(line, flush=True),
                           record_path=root / "preflight.json")
    except (PreflightError, HydraException) as error:
        print(f"error: {override_syntax_message(args.overrides, 'python -m afno_repro.pipeline') or error}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\npreflight interrupted: the rows measured so far are in {root / 'preflight.json'}; the same command "
              "again measures only the rest.", file=sys.stderr)
        return 130
    table = format_table(result)
    (root / "preflight.md").write_text(table + "\n")
    print("\n" + table, flush=True)
    failed = [r for r in result["rows"] if "error" in r]
    if failed:
        print(f"error: {len(failed)} row(s) failed at full size (see the table's flags).", file=sys.stderr)
        return 1
    return 0


def _report_wandb_mode(given: str | None) -> str:
    """The report's W&B mode: ``--wandb`` as given, else ``WANDB_MODE`` where it names a mode, else offline."""
    environment = os.environ.get("WANDB_MODE")
    return given or (environment if environment in ("offline", "online", "disabled") else "offline")


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m afno_repro.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="paper", choices=SCALES,
                        help="paper: the paper's data and recipes (GPUs, Slurm); smoke: the same graph on the embedded data")
    parser.add_argument("--root", type=Path, help="where the runs go (default outputs/reproduce/<scale>)")
    parser.add_argument("--report", type=Path, help="where the report goes (default outputs/report/<scale>)")
    parser.add_argument("--only", action="append", default=[], metavar="EXPERIMENT",
                        help="run this experiment and what it needs (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and what is done; run nothing")
    parser.add_argument("--preflight", action="store_true",
                        help="measure every row at its paper size (a few steps and a warm evaluation batch each) and "
                             "write <root>/preflight.json; trains nothing to completion")
    parser.add_argument("--rows", action="append", metavar="WORD",
                        help="with --preflight: only rows whose overrides contain this word (repeatable: --rows afno "
                             "--rows gfn)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="with --preflight: where to measure "
                        "(default cuda when a GPU is visible)")
    parser.add_argument("--batch", type=positive_int, help="with --preflight: the per-device batch to run (default: the "
                        "configured one on a GPU, halved until it fits; 1 on a CPU, 2 where Mixup/CutMix pairs images)")
    parser.add_argument("--steps", type=positive_int, help="with --preflight: timed steps per row after one warm-up "
                        "(default 5 on a GPU, 1 on a CPU)")
    parser.add_argument("--launcher", help="Hydra launcher for every sweep, e.g. slurm (configs/hydra/launcher)")
    parser.add_argument("--imagenet", help="ImageNet folder (train/, val/) for --scale paper")
    parser.add_argument("--datasetgan", help="DatasetGAN folder for --scale paper")
    parser.add_argument("--cityscapes", help="Cityscapes folder (leftImg8bit/, gtFine/) for --scale paper")
    parser.add_argument("--swin", help="folder of the Swin ImageNet checkpoints for Figure 1 (swin_checkpoints=)")
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"),
                        help="W&B mode of the report's tables (default: WANDB_MODE where it names one, else offline; "
                        "runs follow their logger config)")
    parser.add_argument("--rebuild-report", action="store_true", help="rebuild the report even if no result changed")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer=ddp")
    args = parser.parse_args(argv)
    preflight_only = [flag for flag, value in (("--rows", args.rows), ("--device", args.device), ("--batch", args.batch),
                                               ("--steps", args.steps)) if value is not None]
    if preflight_only and not args.preflight:
        # Left unchecked, `--rows afno` ran (or planned) every row of every experiment.
        parser.error(f"{', '.join(preflight_only)} only applies with --preflight (it picks what the preflight measures); add "
                     "--preflight, or leave it out to run the whole plan (--only EXPERIMENT runs a part of it).")

    launchers = [args.launcher or ""] + [word.split("=", 1)[1] for word in args.overrides if word.startswith("hydra/launcher=")]
    if any(launcher.startswith("slurm") for launcher in launchers) and not args.dry_run and not args.preflight:
        from afno_repro.slurm import missing_slurm_message

        if (message := missing_slurm_message()) is not None:
            print(f"error: {message}", file=sys.stderr)
            return 2

    # The pipeline sets these for every run from --root (they come after the user's words, so they won silently).
    taken = [word for word in args.overrides if word.lstrip("+").startswith(("runs_root=", "hydra.sweep.dir=", "resume="))]
    if taken:
        print(f"error: `{taken[0]}`: the pipeline sets runs_root, hydra.sweep.dir and resume for every run itself, from "
              "--root (runs go to <root>/<experiment>/ and resume=auto finishes or skips them). Give --root <folder> "
              "instead.", file=sys.stderr)
        return 2
    # Given to every run, one checkpoint would start every finetuning run (and every pretraining run) of the plan.
    trunk = next((word for word in args.overrides if word.lstrip("+~").startswith("pretrained")), None)
    if trunk:
        print(f"error: `{trunk}`: the pipeline starts each finetuning run from its own row's pretraining run "
              "(pretrained=auto), and an override goes to every run of the plan, pretraining runs included. To finetune "
              "from one checkpoint, run that experiment yourself: python train.py -m experiment=<name> "
              "pretrained=<file.ckpt>.", file=sys.stderr)
        return 2

    bare = [word for word in args.overrides if "=" not in word and not word.startswith("~")]
    if bare:
        print(f"error: `{bare[0]}` is not an override (key=value): the words after the options are Hydra overrides for "
              "every run. To name several experiments, repeat --only (--only table2_inpainting --only table4_pretrain).",
              file=sys.stderr)
        return 2
    root = (args.root or Path("outputs") / "reproduce" / args.scale).absolute()
    report_dir = (args.report or Path("outputs") / "report" / args.scale).absolute()
    data_roots = {key: value for key in ("imagenet", "datasetgan", "cityscapes", "swin")
                  if (value := getattr(args, key))}
    extra = list(args.overrides) + ([f"hydra/launcher={args.launcher}"] if args.launcher else [])
    started = time.time()
    if problem := folder_problem(data_roots, root, report_dir):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        steps = build_plan(root, args.scale, only=args.only, data_roots=data_roots, extra=extra)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if problem := scale_problem(steps, args.scale, root):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.preflight:
        # The preflight composes each row it measures itself and names an override that row cannot take; the
        # steps it does not measure (an experiment's needs) are not held to the overrides.
        return _preflight(args, steps, root, data_roots)
    # A typo in an override would otherwise show in the plan and then fail every run of every experiment.
    if (extra or data_roots) and (problem := override_problem(steps) or value_problem(steps)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(format_plan(steps, root, report_dir), flush=True)
    if args.dry_run:
        return 0
    missing = missing_data(steps, args.scale, data_roots)
    if missing:
        print(f"\nerror: {missing}", file=sys.stderr)
        return 2
    try:
        status = run_plan(steps, root, args.scale, report_dir, force_report=args.rebuild_report, wandb_mode=_report_wandb_mode(args.wandb))
    except KeyboardInterrupt:
        print("\ninterrupted: the runs that completed are kept and the one in flight resumes from its last.ckpt. "
              "Run the same command again to go on.", file=sys.stderr, flush=True)
        return 130
    print(f"reproduce-all ({args.scale}) finished in {time.time() - started:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
