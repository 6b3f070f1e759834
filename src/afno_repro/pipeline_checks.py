"""What ``python -m afno_repro.pipeline`` checks before it runs anything: the folders on its command line,
the datasets a paper-scale plan needs, and every override composed into a run of every experiment (a typo
fails the dry run with exit status 2 instead of every real run), then the values each run would refuse
(``trainer.max_epochs=abc``, ``seed=-1``). Each check returns the paragraph to print, or None.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from afno_repro.pipeline import Step

# The Swin authors' ImageNet-1K checkpoints Figure 1's Swin rows start from (configs/paper_model/fig1/swin_*.yaml).
SWIN_CHECKPOINTS = tuple(f"swin_{size}_patch4_window7_224.pth" for size in ("tiny", "small", "base"))

__all__ = ["SWIN_CHECKPOINTS", "folder_problem", "missing_data", "override_problem", "scale_problem", "value_problem"]


def missing_data(steps: list[Step], scale: str, data_roots: dict[str, str]) -> str | None:
    """At paper scale, the dataset folders the plan's unfinished steps need and the command line does not give."""
    if scale != "paper":
        return None
    missing = sorted({step.data for step in steps if step.data and not step.complete and not data_roots.get(step.data)})
    if any(step.experiment == "fig1_trunks" and not step.complete for step in steps) and not data_roots.get("swin"):
        missing.append("swin")  # Figure 1's Swin rows start from the Swin authors' ImageNet checkpoints
    if not missing:
        return None
    return (f"--scale paper trains on the paper's datasets; give their folders: "
            f"{' '.join(f'--{name} /path/to/{name}' for name in missing)} (README, 'Reproducing everything'; --swin: "
            "the folder of swin_{tiny,small,base}_patch4_window7_224.pth). "
            "To run the same graph on the embedded data in CPU minutes: --scale smoke (make reproduce-all SCALE=smoke).")


def scale_problem(steps: list[Step], scale: str, root: Path) -> str | None:
    """Runs of the other scale below the plan's folders (``--root`` given to both scales): a paper-scale plan counted
    the smoke runs as its own, trained nothing and said it had finished."""
    from afno_repro.runs import find_runs

    for step in steps:
        for record in find_runs(step.sweep_dir, status=None):
            if not isinstance(record.get("overrides"), list):
                continue  # a record without its overrides (cut short, edited) says no scale: its run is done again
            smoke = "debug=smoke" in record["overrides"]
            if smoke != (scale == "smoke"):
                found = "smoke-scale (debug=smoke)" if smoke else "paper-scale"
                return (f"--root {root} already holds {found} runs ({Path(record['metrics_file']).parent}), and this plan is "
                        f"--scale {scale}: its runs would be mixed with them, or taken for them. Give each scale its own "
                        f"--root (the defaults are outputs/reproduce/smoke and outputs/reproduce/paper).")
    return None


def _unreadable_checkpoint(folder: Path) -> str | None:
    """The first Swin checkpoint in ``folder`` that does not load as a PyTorch file (memory-mapped: no weights are
    read), named; None when each loads. Whether its weights fit the trunk is checked where Figure 1's rows load it."""
    from afno_repro.checkpoints import load_checkpoint

    for file in SWIN_CHECKPOINTS:
        try:
            load_checkpoint(folder / file, option="--swin")
        except ValueError as error:
            said = str(error)
            why = ("not a file torch.save writes" if "is not a PyTorch checkpoint" in said else
                   "it holds Python objects, not plain tensors" if " holds " in said else "truncated or corrupt")
            return (f"--swin {folder}: {file} does not load as a PyTorch checkpoint ({why}). Download it again from the "
                    "Swin authors' release (github.com/microsoft/Swin-Transformer), under that name.")
    return None


def folder_problem(data_roots: dict[str, str], root: Path, report_dir: Path) -> str | None:
    """What is wrong with the folders given on the command line, before anything reads or writes them."""
    for name, folder in data_roots.items():
        path = Path(folder).expanduser()
        if not path.is_dir():
            state = "is a file, not a folder" if path.exists() else "does not exist"
            return (f"--{name} {folder} {state}. Give the folder that holds the dataset (README, 'Reproducing "
                    "everything', shows each one's layout).")
        missing = [file for file in SWIN_CHECKPOINTS
                   if not (path / file).is_file() or (path / file).stat().st_size == 0] if name == "swin" else []
        if missing:
            # Figure 1's Swin rows would otherwise stop only after its pretraining, hours into the plan.
            return (f"--swin {folder} lacks {', '.join(missing)}: Figure 1's Swin rows start from the Swin authors' "
                    "ImageNet-1K checkpoints, each under its release name in that folder "
                    f"({', '.join(SWIN_CHECKPOINTS)}).")
        if name == "swin" and (unreadable := _unreadable_checkpoint(path)):
            return unreadable
    for option, path in (("--root", root), ("--report", report_dir)):
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            return (f"{option} {path}: {blocking} is a file, so no folder can be made there. Give a folder path "
                    f"(it is created if it does not exist), or move the file away.")
        # Made and removed at once (a dry run leaves nothing): found at the end of the plan, this was a traceback.
        existing = next(p for p in (path, *path.parents) if p.exists())
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".afno-write-test-", dir=existing))
        except OSError as error:
            return (f"{option} {path}: no folder can be made in {existing} ({error.strerror or error}). Give a folder "
                    "you can write (it is created if it does not exist).")
    return None


def _hydra_detail(error: Exception) -> str:
    """Hydra's message on one line: its option lists joined with commas, a caret under an override
    said as the character it points at, the search-path listing dropped."""
    lines = str(error).split("Config search path:")[0].strip().splitlines()
    words = []
    for number, line in enumerate(lines):
        if line.strip() == "^" and number:
            column = len(line) - len(line.lstrip())
            above = lines[number - 1]
            if column < len(above):
                words.append(f"(the syntax breaks at {above[column]!r})")
            continue
        words.append(line.strip() + ("," if line.startswith("\t") and number + 1 < len(lines)
                                     and lines[number + 1].startswith("\t") else ""))
    return " ".join(word for word in words if word).rstrip(".")


def _distinct_points(step: Step) -> list[list[str]]:
    """The step's sweep points, one per distinct choice of config groups: value overrides add no key, so the points
    that differ only in values compose alike."""
    seen: set[tuple[str, ...]] = set()
    points = []
    for point in step.points:
        groups = tuple(item for item in point if "." not in item.split("=", 1)[0])
        if groups not in seen:
            seen.add(groups)
            points.append(point)
    return points


def override_problem(steps: list[Step]) -> str | None:
    """The first override of the plan's commands that Hydra cannot compose into a run of its experiment.

    Each experiment is composed, in process, with its command's overrides and those of a sweep point,
    once per distinct choice of config groups in its sweep (value overrides add no key, so the points
    that differ only in values compose alike). When a command fails, each of its overrides is tried
    alone to name the one at fault.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from afno_repro.config import _config_dir

    def failure(overrides: list[str]) -> HydraException | None:
        try:
            compose(config_name="train", overrides=overrides, return_hydra_config=True)
        except HydraException as error:
            return error
        return None

    from afno_repro.config import override_syntax_message

    with initialize_config_dir(config_dir=str(_config_dir()), version_base="1.3"):
        for step in steps:
            if not step.command:  # a noise step: its sweep's own command and points again, checked with the sweep
                continue
            given = step.command[3:]  # after `python train.py -m`
            # Hydra's grammar first, told as train.py tells it (the quoted or closed form).
            if (message := override_syntax_message(given[1:], "python -m afno_repro.pipeline ...")) is not None:
                return message
            for point in _distinct_points(step):
                error = failure([*given, *point])
                if error is None:
                    continue
                culprit = next((item for item in given[1:] if failure([given[0], *point, item]) is not None), None)
                what = f"the override `{culprit}`" if culprit else f"the overrides `{' '.join(given[1:])}`"
                row = f" ({' '.join(point)})" if point else ""
                return (f"{what} does not compose with experiment={step.experiment}{row}: {_hydra_detail(error)}. "
                        f"Fix or remove it: `python train.py experiment={step.experiment} --cfg job` prints the keys "
                        "that exist, a new key needs a leading + (+key=value), and a value with spaces or non-ASCII "
                        "characters needs quotes (key='value').")
    return None


def value_problem(steps: list[Step]) -> str | None:
    """The first run of the plan whose composed options :func:`afno_repro.train.check_values` refuses (a value
    of the wrong type or out of range, a switch that is not true or false): the dry run says it once, where
    every run would otherwise fail with it. Composed as :func:`override_problem` composes them (once per
    distinct choice of config groups), after that check has passed; a GPU asked for need not be on this
    machine (a Slurm plan is made on a login node)."""
    from afno_repro.config import compose
    from afno_repro.failures import UserFacingError
    from afno_repro.train import check_values

    for step in steps:
        if not step.command:  # a noise step (above)
            continue
        given = [word for word in step.command[3:] if not word.startswith(("hydra.", "hydra/"))]
        for point in _distinct_points(step):
            try:
                check_values(compose([*given, *point]), on_this_machine=False)
            except UserFacingError as error:
                row = f" ({' '.join(point)})" if point else ""
                return f"the run of experiment={step.experiment}{row} would refuse its options (so would the others): {error}"
    return None
