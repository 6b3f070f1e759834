"""Pretrain -> finetune chaining: which checkpoint a finetuning run starts from, and loading it.

An experiment declares what it builds on, in its own file (``configs/experiment/table3_fewshot.yaml``)::

    needs:
      pretrained:
        experiment: table2_inpainting   # the run that makes the weights
        paper_table: table2             # ... of the row of that table with this run's paper.row

``pretrained=auto`` (the default of the finetuning experiments) takes the newest completed run below
``runs_root`` with that experiment, that row and the same trunk (:func:`afno_repro.runs.trunk_hash`:
architecture, mixer, widths, image size; the head may differ), of the same ``seed`` where there is
one (``make reproduce-all``'s seed-1 noise reruns of a pretraining sweep sit beside its seed-0 runs:
each finetuning run keeps to its own seed, and a seed-1 rerun with no seed-1 trunk takes the seed-0
one), and starts from the checkpoint that run selected (its ``best_checkpoint``). ``pretrained=<file.ckpt>`` starts from that file;
``pretrained=null`` trains from scratch. When nothing is found, the error names the command that
makes the pretraining run; an experiment with ``make_if_missing: true`` (the CPU demo) runs that
command itself first. ``make reproduce-all`` reads the same declaration.

Every backbone weight but the head is loaded (heads are the only task-specific modules); any other
difference is an error naming the parameters.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf
from torch import nn

from afno_repro.runs import find_runs, trunk_hash

__all__ = ["TRAIN_SCRIPT", "find_pretraining_run", "load_pretrained_backbone", "pretraining_command",
           "resolve_pretrained"]

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"
# Overrides of a finetuning command that also shape the pretraining run it needs (its trunk, its size), or
# say where it is written and found (runs_root).
_PASSED_ON = ("debug=", "backbone.", "mixer.", "+backbone.", "+mixer.", "runs_root=")


def _needs(cfg: DictConfig) -> dict[str, Any] | None:
    needs = cfg.get("needs") or {}
    pretrained = needs.get("pretrained") if needs else None
    return OmegaConf.to_container(pretrained, resolve=True) if isinstance(pretrained, DictConfig) else pretrained


def _source(cfg: DictConfig) -> tuple[str | None, Any]:
    """The paper row whose pretraining run this run finetunes, and that run's backbone config: this run's
    own, unless the row declares ``pretrained_from`` (Table 4's AFNO-25% finetunes the plain AFNO trunk)."""
    row = (cfg.get("paper") or {}).get("row")
    source = cfg.get("pretrained_from") or {}
    if not source:
        return row, cfg.backbone
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    if source.get("mixer"):
        backbone["mixer"] = {**(backbone.get("mixer") or {}), **OmegaConf.to_container(source.mixer, resolve=True)}
    return source.get("row") or row, backbone


def _match(cfg: DictConfig, needs: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.json`` fields the pretraining run must have."""
    row, backbone = _source(cfg)
    fields: dict[str, Any] = {"experiment": needs.get("experiment"), "trunk_hash": trunk_hash(backbone)}
    if needs.get("paper_table"):
        if not row:
            raise ValueError(
                f"pretrained=auto looks for the {needs['paper_table']} row of this run, but the run has no paper row; "
                "name one with paper_model=<table>/<row>, or give pretrained=<checkpoint file>."
            )
        fields["paper_row"] = f"{needs['paper_table']}/{row}"
    for key in ("task", "data"):
        if needs.get(key) is not None:
            fields[key] = needs[key]
    return fields


def pretraining_command(cfg: DictConfig, needs: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """The ``python train.py ...`` words that make the pretraining run this run needs."""
    words = ["python", "train.py"]
    if needs.get("experiment"):
        words.append(f"experiment={needs['experiment']}")
    row = _source(cfg)[0]
    if needs.get("paper_table") and row:
        words.append(f"paper_model={needs['paper_table']}/{row}")
    passed = [o for o in overrides if o.startswith(_PASSED_ON)]
    if needs.get("data_root") and not any(o.startswith("debug=") for o in passed):
        words.append(f"data.root={needs['data_root']}")
    return words + passed


def find_pretraining_run(cfg: DictConfig, needs: dict[str, Any]) -> dict[str, Any] | None:
    """The newest completed run that :func:`resolve_pretrained` would start from, or None: of this run's
    seed where there is one, else of any seed."""
    runs = [run for run in find_runs(cfg.get("runs_root") or "outputs", **_match(cfg, needs))
            if run.get("best_checkpoint") and Path(run["best_checkpoint"]).is_file()]
    same_seed = [run for run in runs if run.get("seed") == cfg.get("seed")]
    return next(iter(same_seed or runs), None)


def resolve_pretrained(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The checkpoint this run starts from (``cfg.pretrained``), as recorded under ``init`` in
    ``metrics.json``; None for a run from scratch.

    Raises
    ------
    ValueError
        ``pretrained=auto`` without a ``needs.pretrained`` declaration, or with no matching run
        (the message names the command that makes one), or a checkpoint file that does not exist.
    """
    choice = cfg.get("pretrained")
    if choice in (None, "none", "null", "scratch"):
        return None
    if str(choice) != "auto":
        path = Path(str(choice)).expanduser()
        if not path.is_file():
            raise ValueError(f"pretrained={choice} is not a checkpoint file. Give the .ckpt of a pretraining run "
                             "(e.g. <run dir>/checkpoints/best-epoch099.ckpt), pretrained=auto, or pretrained=null.")
        record = _record_of(path)
        return {"checkpoint": str(path), "how": "given", "run_dir": record.get("run_dir"),
                "experiment": record.get("experiment"), "paper_row": record.get("paper_row")}
    needs = _needs(cfg)
    if not needs:
        raise ValueError("pretrained=auto finds the pretraining run an experiment declares under needs.pretrained, and "
                         "this run declares none. Give a checkpoint, pretrained=<file.ckpt>, or pretrained=null.")
    run = find_pretraining_run(cfg, needs)
    command = pretraining_command(cfg, needs, overrides)
    if run is None and needs.get("make_if_missing"):
        print(f"\nNo pretraining run found below {cfg.get('runs_root') or 'outputs'} (runs placed elsewhere with "
              "hydra.run.dir= are not searched: pretrained=<their .ckpt> names one): making it first with\n  "
              f"{shlex.join(command)}\n", flush=True)
        made = subprocess.run([sys.executable, str(TRAIN_SCRIPT), *command[2:]], cwd=os.getcwd())
        if made.returncode != 0:
            raise ValueError(f"the pretraining run `{shlex.join(command)}` failed (exit status {made.returncode}); "
                             "its output above says why. Fix that, then run this command again.")
        run = find_pretraining_run(cfg, needs)
    if run is None:
        wanted = ", ".join(f"{key}={value}" for key, value in _match(cfg, needs).items())
        root = cfg.get("runs_root") or "outputs"
        where = f"{root} (that folder does not exist: is runs_root= spelled right?)" if not Path(root).is_dir() else root
        raise ValueError(
            f"pretrained=auto found no completed pretraining run below {where} with {wanted} "
            f"(the same trunk as this run: mixer, widths, depth, image size). Make it first:\n  {shlex.join(command)}\n"
            "then run this command again; or give pretrained=<file.ckpt> (a run placed elsewhere with hydra.run.dir= is "
            "not searched), or pretrained=null to train from scratch."
        )
    return {"checkpoint": run["best_checkpoint"], "how": "auto", "run_dir": run.get("run_dir"),
            "experiment": run.get("experiment"), "paper_row": run.get("paper_row"),
            "pretraining_result": run.get("result")}


def _record_of(checkpoint: Path) -> dict[str, Any]:
    """The ``metrics.json`` of the run that wrote ``checkpoint``, or ``{}``."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "metrics.json").is_file():
            try:
                return json.loads((folder / "metrics.json").read_text())
            except (OSError, ValueError):
                return {}
    return {}


def load_pretrained_backbone(backbone: nn.Module, checkpoint: str | os.PathLike) -> list[str]:
    """Load every weight of ``backbone`` but its head from a training checkpoint's ``backbone.*``.

    Returns
    -------
    list of str
        The head's parameters, left as initialised.

    Raises
    ------
    ValueError
        The file is not a readable checkpoint of this project, or its trunk differs from
        ``backbone``'s (the parameters missing, extra or of another shape are named).
    """
    from afno_repro.checkpoints import load_checkpoint, state_dict_differences

    path = Path(checkpoint)
    stored = load_checkpoint(path, option="pretrained")
    if not isinstance(stored, dict) or "state_dict" not in stored:
        raise ValueError(f"pretrained={path} is not a training checkpoint of this project (no 'state_dict'); give the "
                         ".ckpt a pretraining run wrote in its checkpoints/ folder.")
    trunk = {key.removeprefix("backbone."): value for key, value in stored["state_dict"].items()
             if key.startswith("backbone.") and not key.startswith("backbone.head.")}
    expected = {key: value for key, value in backbone.state_dict().items() if not key.startswith("head.")}
    problems = state_dict_differences(trunk, expected)
    if problems:
        raise ValueError(
            f"pretrained={path} does not fit this run's backbone: {'; '.join(problems)}. The pretraining run used another "
            "trunk (mixer, width, depth, block count or image size); finetune with the same backbone and mixer options "
            "as the run that wrote it."
        )
    backbone.load_state_dict(trunk, strict=False)
    return [key for key in backbone.state_dict() if key.startswith("head.")]
