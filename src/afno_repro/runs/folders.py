"""Run folders: finding runs by their records, resuming them, and keeping one run from overwriting another.

:func:`find_runs` is the one way the project finds runs (pretrain -> finetune chaining, the pipeline's
skip-if-done, the reports); :func:`auto_resume` is ``resume=auto``; :class:`RunFolderGuard` is a Hydra
callback that refuses to start a run in a folder that already holds one unless the run resumes that
folder's own checkpoint. What a run writes into its folder is :mod:`afno_repro.runs.record`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["RunFolderGuard", "auto_resume", "existing_run", "find_runs", "refuse_reuse_message", "refuse_sweep_reuse_message", "resume_command",
           "resume_mismatch_message",
           "unwritable_message"]

_ANY = object()


def find_runs(root: str | Path, *, status: Any = "completed", **fields: Any) -> list[dict[str, Any]]:
    """Every run below ``root`` whose ``metrics.json`` matches, newest first.

    The one way the project finds runs: pretrain -> finetune chaining (``pretrained=auto``), the
    pipeline's skip-if-done and the reports all use it.

    Parameters
    ----------
    root
        Folder searched recursively (e.g. ``outputs``).
    status
        Required ``status`` (``"completed"``); ``None`` accepts every run.
    **fields
        ``metrics.json`` entries that must be equal, e.g. ``experiment="table2_inpainting"``,
        ``paper_row="table2/afno"``, ``trunk_hash=...`` (a value of ``None`` must be null there).

    Returns
    -------
    list of dict
        The records, each with ``metrics_file`` added, newest (by file time) first. A file that
        cannot be read as JSON, or is not a run's record (not an object; ``overrides`` that are not a list
        of words), is skipped: it belongs to no finished run, and its run is done again.
    """
    found = []
    root = Path(root)
    if not root.is_dir():
        return []
    for path in root.rglob("metrics.json"):
        try:
            record = json.loads(path.read_text())
            modified = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or (status is not None and record.get("status") != status):
            continue
        overrides = record.get("overrides", [])
        if not isinstance(overrides, list) or not all(isinstance(word, str) for word in overrides):
            continue
        if all(record.get(key, _ANY) == value for key, value in fields.items()):
            found.append((modified, str(path), {**_relocated(record, path.parent), "metrics_file": str(path)}))
    return [record for _, _, record in sorted(found, key=lambda item: (item[0], item[1]), reverse=True)]


def _relocated(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``record`` with the paths inside its run's folder moved to ``folder``, where its ``metrics.json`` is now: a
    runs root moved or copied elsewhere keeps the absolute paths of where it was written (``run_dir``,
    ``best_checkpoint``, ...), so pretrained=auto found "no completed run" and the report loaded the old copy's
    models. ``moved_from`` says where it was."""
    old = record.get("run_dir")
    if not isinstance(old, str) or not old or Path(old).resolve() == folder.resolve():
        return record
    prefix = old.rstrip("/")

    def move(value: Any) -> Any:
        if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
            return str(folder) + value[len(prefix):]
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    return {**move(record), "moved_from": old}


def existing_run(run_dir: str | Path) -> list[str]:
    """What a previous run left in ``run_dir`` (results, checkpoints, CSV logs); empty if nothing.

    ``.hydra/`` alone does not count (Hydra writes it for every run before the task starts), nor
    does the ``metrics.json`` of a run that failed before it trained: retrying in its folder loses
    nothing.
    """
    run_dir = Path(run_dir)
    found = [name for name in ("csv/metrics.csv",) if (run_dir / name).is_file()]
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            record = json.loads(metrics.read_text())
        except (OSError, ValueError):
            record = {}
        record = record if isinstance(record, dict) else {}  # `null` or a list: no run's record
        if record.get("status") != "failed" or "epochs" in record:
            found.insert(0, "metrics.json")
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        found += sorted(str(path.relative_to(run_dir)) for path in checkpoints.glob("*.ckpt"))
    return found


def auto_resume(run_dir: str | Path) -> tuple[str, Any]:
    """What ``resume=auto`` does in ``run_dir`` (the pipeline's skip-if-done and resume).

    Returns
    -------
    ("completed", record)
        The folder holds a completed run: it is not run again (``record`` is its ``metrics.json``, which must
        have the run's ``overrides`` and ``result``; one without them is recorded again).
    ("resume", path)
        The folder holds the ``last.ckpt`` of a run that did not finish (killed, interrupted,
        failed): the run resumes from it.
    ("fresh", set_aside)
        Nothing to resume: the run starts afresh in its folder. What an earlier attempt left there
        (a failed or interrupted ``metrics.json``, the CSV log, a checkpoint that does not load) is
        renamed ``<name>.attempt-<k>`` rather than deleted; ``set_aside`` lists the new names.
    """
    from afno_repro.checkpoints import load_checkpoint

    run_dir = Path(run_dir)
    metrics, last = run_dir / "metrics.json", run_dir / "checkpoints" / "last.ckpt"
    try:
        record = json.loads(metrics.read_text()) if metrics.is_file() else {}
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}  # `null` or a list: set aside below, as a broken file
    # A completed record without its overrides or result (an older format, a hand edit) is what the pipeline cannot
    # match to a point: it relaunched the sweep, this skipped the run, and the pipeline said it did not complete,
    # forever. It is recorded again instead: from last.ckpt (straight to the evaluation) where there is one.
    if record.get("status") == "completed" and "overrides" in record and "result" in record:
        return "completed", record
    if last.is_file():
        try:
            load_checkpoint(last)
            return "resume", last
        except ValueError:
            pass  # written halfway when the run was killed: set aside below with the rest
    leftovers = [path for path in (metrics, run_dir / "csv", *sorted((run_dir / "checkpoints").glob("*.ckpt")))
                 if path.exists()]
    attempt = 1
    while any(path.with_name(f"{path.name}.attempt-{attempt}").exists() for path in leftovers):
        attempt += 1
    set_aside = []
    for path in leftovers:
        target = path.with_name(f"{path.name}.attempt-{attempt}")
        path.rename(target)
        set_aside.append(str(target))
    return "fresh", set_aside


def _resumes_inside(ckpt_path: Any, run_dir: Path) -> bool:
    if not ckpt_path:
        return False
    try:
        return Path(str(ckpt_path)).resolve().is_relative_to(run_dir.resolve())
    except OSError:
        return False


def refuse_reuse_message(run_dir: str | Path, ckpt_path: Any) -> str | None:
    """Why a run must not start in ``run_dir``, or None when it may.

    A folder that already holds a run's results may only be reused to resume that run from one of
    its own checkpoints: otherwise the new run would overwrite ``metrics.json``, the CSV log and the
    Hydra config of the first, and leave the first run's ``last.ckpt`` beside its own
    ``last-v1.ckpt``.
    """
    run_dir = Path(run_dir)
    found = existing_run(run_dir)
    if not found or _resumes_inside(ckpt_path, run_dir):
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = f"resume it with `ckpt_path={last}` (and the same overrides), or " if last.is_file() else ""
    return (
        f"the run folder {run_dir} already holds a run ({', '.join(found[:4])}); starting another one there "
        f"would overwrite its results. Either {resume}start a new run in a new folder (leave out "
        "`hydra.run.dir=`, or give a folder that does not exist yet)."
    )


def refuse_sweep_reuse_message(sweep_dir: str | Path, resume: Any) -> str | None:
    """Why a sweep must not start in ``sweep_dir``, or None when it may.

    Hydra writes each job's ``.hydra/config.yaml`` and ``overrides.yaml`` before the job runs, so a new sweep
    into a folder of finished runs would rewrite their configs with its own overrides, even though each job
    then refuses to overwrite the run's results. With ``resume=auto`` (what make reproduce-all passes) a
    sweep there completes or skips its runs by their own records, which is what it is for.
    """
    sweep_dir = Path(sweep_dir)
    if resume == "auto" or not sweep_dir.is_dir():
        return None
    runs = sorted(child.name for child in sweep_dir.iterdir() if child.is_dir() and existing_run(child))
    if not runs:
        return None
    shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    return (f"the sweep folder {sweep_dir} already holds {len(runs)} run(s) ({shown}); a new sweep there would rewrite "
            "their Hydra configs with its overrides. Add resume=auto to finish the runs that did not complete and skip "
            "the others (with the same overrides), or give a new folder with hydra.sweep.dir=... (or leave it out).")


# Overrides that say how or where a run is launched, not what it trains.
_LAUNCH_ONLY = ("resume=", "hydra.", "runs_root=", "trainer.devices=", "trainer.num_nodes=", "logger=")


def resume_mismatch_message(run_dir: str | Path, overrides: list[str]) -> str | None:
    """Why ``resume=auto`` must not continue the run in ``run_dir`` with ``overrides``, or None when it may: the
    folder's run (its ``.hydra/overrides.yaml``) was started with other overrides, so resuming or skipping it
    would record this command's config beside that run's results."""
    import yaml

    run_dir = Path(run_dir)
    recorded = run_dir / ".hydra" / "overrides.yaml"
    if not existing_run(run_dir) or not recorded.is_file():
        return None
    try:
        before = yaml.safe_load(recorded.read_text()) or []
    except (OSError, yaml.YAMLError):
        return None

    def trained(words: list[str]) -> list[str]:
        return sorted(str(word) for word in words if not str(word).startswith(_LAUNCH_ONLY))
    if trained(before) == trained(overrides):
        return None
    added = [word for word in trained(overrides) if word not in trained(before)]
    dropped = [word for word in trained(before) if word not in trained(overrides)]
    return (f"resume=auto continues the run in {run_dir} with the overrides it was started with, and this command's "
            f"differ ({'added: ' + ' '.join(added) if added else ''}{'; ' if added and dropped else ''}"
            f"{'left out: ' + ' '.join(dropped) if dropped else ''}). Run the same overrides again to resume it, or "
            "start the changed run in a new folder (leave out `hydra.run.dir=`, or give one that does not exist yet).")


def unwritable_message(folder: str | Path, what: str = "run folder", advice: str | None = None) -> str | None:
    """Why ``folder`` cannot be created or written to, or None when it can (``advice``: the fix to name, a run's
    folder options by default)."""
    folder = Path(folder)
    blocking = next((path for path in (folder, *folder.parents) if path.exists() and not path.is_dir()), None)
    if blocking is not None:
        # "Not a directory": no permission would help, unlike the advice below.
        return (f"cannot create the {what} {folder}: {blocking} is a file, so no folder can be made there. Give a "
                "folder path (runs_root=..., hydra.run.dir=... or hydra.sweep.dir=...), or move the file away.")
    probe = folder / ".write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return (
            f"cannot create or write the {what} {folder} ({error.strerror or error}): "
            + (advice or "the run could save no checkpoint or result. Make it writable (e.g. `chmod u+w`), or choose "
                         "another folder (`hydra.run.dir=...` for a run, `hydra.sweep.dir=...` for a sweep).")
        )
    return None


class RunFolderGuard(Callback):
    """Hydra callback: check the output folder before Hydra writes anything into it.

    A single run must get a writable folder that does not already hold another run (unless it
    resumes that run's own checkpoint); a sweep must get a writable sweep folder. It runs before
    Hydra writes ``.hydra/``, so a refused run changes nothing. (Sweep jobs are checked again by
    :func:`afno_repro.train.run`, in their own job folders.)
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") == "auto":
            # The run itself completes, resumes or restarts what the folder holds (afno_repro.train): only a
            # different command must not take the folder over, Hydra rewriting its config.
            _refuse(unwritable_message(config.hydra.run.dir)
                    or resume_mismatch_message(config.hydra.run.dir, list(config.hydra.overrides.task)))
            return
        _refuse(unwritable_message(config.hydra.run.dir)
                or refuse_reuse_message(config.hydra.run.dir, config.get("ckpt_path")))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse(unwritable_message(config.hydra.sweep.dir, "sweep folder")
                or refuse_sweep_reuse_message(config.hydra.sweep.dir, config.get("resume")))


def _refuse(message: str | None) -> None:
    if message is not None:
        print(f"\nerror: {message}\n", file=sys.stderr, flush=True)
        sys.exit(2)


def resume_command(overrides: list[str], last_checkpoint: str | Path, run_dir: str | Path) -> str:
    """The command that resumes a run in its own folder from ``last_checkpoint``: one run (``hydra.mode=RUN`` where
    its experiment is a sweep by itself, as ``fewshot_demo`` is, which would otherwise ignore ``hydra.run.dir``)."""
    from afno_repro.config import sweep_reason

    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra.run.dir=", "hydra.mode="))]
    one_run = ["hydra.mode=RUN"] if sweep_reason(kept) else []
    words = ["python", "train.py", *kept, f"ckpt_path={last_checkpoint}", f"hydra.run.dir={run_dir}", *one_run]
    return " ".join(shlex.quote(word) for word in words)
