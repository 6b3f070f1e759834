"""Checks on a checkpoint before a run resumes from it, so that a bad ``ckpt_path`` gets one
paragraph naming the file, the problem and the fix instead of a traceback from deep in
``torch.load`` or ``load_state_dict``.

Our checkpoints hold plain data only (tensors, numbers, strings, containers: see
:class:`afno_repro.callbacks.RNGStateCheckpoint` and the tasks' ``save_hyperparameters``), so a good
one always loads with ``torch.load(weights_only=True)``; a file that does not is damaged or is not
one of ours, and is never unpickled with arbitrary code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["check_resume_checkpoint", "load_checkpoint", "read_resume_checkpoint", "state_dict_differences"]

# ckpt_path values that Lightning resolves itself (trainer.fit(ckpt_path="last") etc.).
_LIGHTNING_SPECIAL_PATHS = ("last", "best", "hpc")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_PICKLE_MAGIC = b"\x80"  # torch.save(_use_new_zipfile_serialization=False): a bare pickle stream
_SHOWN = 5  # parameter names listed per kind of difference


def read_resume_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint a run resumes from, loaded on the CPU (memory-mapped), or None for Lightning's
    own names (``last``, ``best``, ``hpc``, ``registry:...``). A file that is not a Lightning
    checkpoint is returned as it loaded; :func:`check_resume_checkpoint` says what is wrong with it.

    Raises
    ------
    ValueError
        The file is missing, empty, truncated, corrupt or not a PyTorch file (:func:`load_checkpoint`).
    """
    if str(path) in _LIGHTNING_SPECIAL_PATHS or str(path).startswith("registry"):
        return None
    return load_checkpoint(Path(path).expanduser())


def check_resume_checkpoint(path: str | os.PathLike, module: torch.nn.Module,
                            checkpoint: Any = None) -> dict[str, Any] | None:
    """Check that ``path`` is a readable Lightning checkpoint whose weights fit ``module``.

    Parameters
    ----------
    path
        The ``ckpt_path`` a run resumes from. Lightning's own names (``last``, ``best``, ``hpc``,
        ``registry:...``) are left to Lightning and not checked.
    module
        The configured LightningModule, built but not yet fitted: its ``state_dict`` keys and
        shapes are what the checkpoint must provide.
    checkpoint
        ``path`` already read by :func:`read_resume_checkpoint`, or None to read it here.

    Returns
    -------
    dict or None
        The checkpoint, loaded on the CPU (memory-mapped, so even a multi-GB file is not read into
        memory just to be checked), or None for Lightning's special names.

    Raises
    ------
    ValueError
        With a paragraph that names the file and says what is wrong and what to do: the file is
        missing, empty, truncated or corrupt, not a PyTorch file, not a Lightning checkpoint, or
        its parameters differ from the configured model's (missing, unexpected and
        shape-mismatched names listed).

    Examples
    --------
    >>> check_resume_checkpoint("outputs/runs/.../checkpoints/last.ckpt", task)  # doctest: +SKIP
    """
    if str(path) in _LIGHTNING_SPECIAL_PATHS or str(path).startswith("registry"):
        return None
    path = Path(path).expanduser()
    if checkpoint is None:
        checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(_not_lightning(path, checkpoint))
    problems = state_dict_differences(checkpoint["state_dict"], module.state_dict())
    if problems:
        raise ValueError(
            f"ckpt_path={path} does not fit the configured model: {'; '.join(problems)}. The checkpoint was "
            "written by a model of another configuration (another mixer, width, depth, block count or "
            "image size) than this run's. Resume with the configuration of the run that wrote it"
            f"{_writer_overrides(path)}, or leave ckpt_path out to train from scratch."
        )
    return checkpoint


def load_checkpoint(path: Path, option: str = "ckpt_path") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a ValueError naming ``option=path``,
    what is wrong with the file and what to do (missing, a folder, empty, not a PyTorch file,
    truncated or corrupt, holding Python objects)."""
    if not path.exists():
        raise ValueError(f"{option}={path} does not exist. Resume from a run's checkpoint, e.g. "
                         "<run dir>/checkpoints/last.ckpt.")
    if not path.is_file():
        raise ValueError(f"{option}={path} is a directory, not a checkpoint file: use e.g. {path / 'last.ckpt'} "
                         "or another .ckpt file in it.")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{option}={path} is empty (0 bytes): the run that wrote it was probably stopped while "
                         f"saving. Resume from another checkpoint in {path.parent} (last.ckpt, best-*.ckpt).")
    with open(path, "rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise ValueError(f"{option}={path} is not a PyTorch checkpoint (it starts with {head!r}; a checkpoint "
                         "written by torch.save starts with a zip or pickle header). Pass the .ckpt file of a "
                         "run, e.g. <run dir>/checkpoints/last.ckpt.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=head.startswith(_ZIP_MAGIC))
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError...
        message = str(error)
        if "weights only" in message.lower():
            # torch's own message goes on to suggest weights_only=False: not advice to pass on.
            found = re.search(r"GLOBAL ([\w.]+)", message)
            holds = f"a {found.group(1)}" if found else "Python objects other than tensors and plain data"
            raise ValueError(
                f"{option}={path} holds {holds}, so afno-repro did not write it: its checkpoints hold plain data "
                "only and load with torch.load(weights_only=True). Unpickling it could run arbitrary code, so it "
                "is not loaded; resume from a checkpoint that a run of this project wrote."
            ) from None
        first_sentence = re.split(r"(?<=\.)\s", message.strip(), maxsplit=1)[0].rstrip(".") or type(error).__name__
        raise ValueError(
            f"{option}={path} is truncated or corrupt ({size} bytes; torch.load: {first_sentence}): the run that "
            "wrote it was probably stopped while saving, or the copy is incomplete. Resume from another "
            f"checkpoint in {path.parent} (last.ckpt, best-*.ckpt)."
        ) from None


def _not_lightning(path: Path, content: Any) -> str:
    what = f"a {type(content).__name__}"
    if isinstance(content, dict):
        keys = list(content)
        what = f"a dict with keys {', '.join(map(repr, keys[:_SHOWN]))}{', ...' if len(keys) > _SHOWN else ''}"
        if keys and all(isinstance(value, torch.Tensor) for value in content.values()):
            what = f"a bare model state_dict ({len(keys)} tensors) without the training state a resume needs"
    return (f"ckpt_path={path} is a PyTorch file but not a Lightning checkpoint: it is {what}, and has no "
            "'state_dict' entry. Resume from a checkpoint written by train.py, e.g. "
            "<run dir>/checkpoints/last.ckpt.")


def state_dict_differences(stored: dict[str, Any], expected: dict[str, torch.Tensor]) -> list[str]:
    """The parameters ``stored`` lacks, has extra or holds in another shape than ``expected``, in words."""
    missing = [name for name in expected if name not in stored]
    unexpected = [name for name in stored if name not in expected]
    mismatched = [
        f"{name}: checkpoint {_shape(stored[name])} vs model {tuple(expected[name].shape)}"
        for name in expected
        if name in stored and _shape(stored[name]) != tuple(expected[name].shape)
    ]
    problems = []
    for label, names in (("of another shape", mismatched), ("missing from the checkpoint", missing),
                         ("that the model does not have", unexpected)):
        if names:
            shown = ", ".join(names[:_SHOWN]) + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")
            problems.append(f"{len(names)} parameter{'s' if len(names) > 1 else ''} {label} ({shown})")
    return problems


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _writer_overrides(path: Path) -> str:
    """Where the configuration of the run that wrote ``path`` is, and its command-line overrides."""
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "config.yaml").is_file():
        return ""
    where = f" (its configuration is in {hydra_dir / 'config.yaml'}"
    try:
        from omegaconf import OmegaConf

        overrides = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")
                     if not str(o).startswith(("hydra.", "ckpt_path="))]
    except Exception:  # noqa: BLE001 - the overrides are a convenience; the config path is enough
        return where + ")"
    return where + (f"; it was run with `{' '.join(overrides)}`)" if overrides else "; it was run with no overrides)")
