"""The run record: what a run writes into ``<run dir>/metrics.json`` and prints at its end.

One shape for every task (:mod:`afno_repro.tasks.base` says what the task adds)::

    identity   experiment, task, paper row and column, mixer and its options, backbone, trunk hash, data,
               image size, seed, overrides, git commit, library versions, run folder   (:func:`identity`)
    model      parameters and GFLOPs at the training resolution                          (:func:`model_info`)
    setup      precision, batch plan, reported numbers, init, the readings of the paper's open choices
    progress   status, epochs, steps, the selection split's numbers, checkpoints          (:func:`progress`)
    evaluation test split, baselines, result (the task's :meth:`evaluation_record`), wall time

:func:`afno_repro.train.run` assembles it; :func:`write_metrics` writes it (atomically, strict JSON) and
:func:`summary_text` is the table a run prints at its end. :func:`trunk_hash` and :func:`library_versions`
are the pieces other modules read back (pretrain -> finetune chaining, the model table).
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from afno_repro.report.render import format_number, share_digits

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["data_label", "identity", "library_versions", "logged_count", "model_info", "number", "progress", "reading",
           "summary_text", "trunk_hash", "write_json", "write_metrics"]

# The libraries whose versions decide a run's numbers (and the model table's counts).
_LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "timm", "hydra-core", "torchmetrics", "omegaconf", "wandb",
              "scikit-image", "numpy")


def library_versions() -> dict[str, str]:
    """Python's and the key libraries' versions, as recorded in every ``metrics.json``.

    Example
    -------
    >>> versions = library_versions()
    >>> {"python", "torch", "pytorch-lightning"} <= set(versions)
    True
    """
    versions = {"python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# Backbone options that do not change which trunk weights a run has: its head (and the head's sizes),
# training-only noise, and a local file of classification weights to start from.
_NOT_TRUNK = ("head", "num_classes", "drop_path_rate", "drop_rate", "decoder_dim", "decoder_dropout", "checkpoint")


def trunk_hash(backbone: Any) -> str:
    """A short hash of a backbone config without its head: equal for two runs whose trunks are
    interchangeable (same architecture, mixer, widths and image size), whatever their heads.

    Example
    -------
    >>> a = {"_target_": "afno_repro.models.ViT", "embed_dim": 64, "head": "pixel", "num_classes": None}
    >>> trunk_hash(a) == trunk_hash({**a, "head": "segmentation", "num_classes": 5}), len(trunk_hash(a))
    (True, 12)

    A SegFormer's weights depend on the image size only through the token grids its mixers are
    built for (GFN's filters): ``mixer_img_size``, where set, stands for ``img_size``. So the
    1024x1024 Cityscapes model with filters sized for 224 (paper A.3) has the trunk of the 224x224
    ImageNet model it is finetuned from.

    >>> s = {"_target_": "afno_repro.models.SegFormer", "img_size": 224, "mixer_img_size": None}
    >>> trunk_hash(s) == trunk_hash({**s, "img_size": 1024, "mixer_img_size": 224})
    True
    """
    from omegaconf import OmegaConf

    if not isinstance(backbone, dict):
        backbone = OmegaConf.to_container(backbone, resolve=True)
    trunk = {key: value for key, value in backbone.items() if key not in _NOT_TRUNK}
    if "mixer_img_size" in trunk:
        grid_size = trunk.pop("mixer_img_size")
        if grid_size is not None:
            trunk["img_size"] = grid_size
    return hashlib.sha1(json.dumps(trunk, sort_keys=True, default=str).encode()).hexdigest()[:12]


def logged_count(value: float | None) -> int | None:
    """A count Lightning logged as a float (``val/num_images``, ``test/num_images``) as the integer
    ``metrics.json`` records; None (never logged) stays None.

    >>> logged_count(31.999), logged_count(None)
    (32, None)
    """
    return None if value is None else int(round(value))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float in it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_json(path: str | Path, data: dict[str, Any] | list[Any]) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file), as strict JSON: a
    non-finite float (NaN, infinity) is written as ``null``, which every JSON parser reads.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "record.json"
    >>> write_json(path, {"iou": [float("nan"), 0.5], "loss": float("inf")})
    >>> json.loads(path.read_text())
    {'iou': [None, 0.5], 'loss': None}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")
    partial.replace(path)


def model_info(cfg: DictConfig) -> dict[str, Any]:
    """Parameters and GFLOPs of the configured backbone at the training resolution, on the meta device."""
    from afno_repro.analysis.complexity import count_flops, count_params

    with torch.device("meta"):
        model = instantiate(cfg.backbone)
    # The data's size, not backbone.img_size: the cost of what is trained (the ViT resizes its
    # position embedding when the two differ).
    size = int(cfg.data.image_size)
    # Every matmul counted (both attention products): the run's real cost. scripts/model_table.py
    # shows each paper row under the convention that row's published number implies.
    report = count_flops(model, (1, int(cfg.backbone.get("in_chans", 3)), size, size), attention_matmuls="both")
    return {
        "params_m": count_params(model) / 1e6,
        "gflops": report.gflops,
        "gflops_image_size": size,
        "attention_qk_gflops": report.attention_qk_gflops,
        "mixer_gflops": report.mixer_gflops,
        "fft_gflops": report.fft_gflops,
        "flop_convention": report.convention,
    }

def identity(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """What the run is: experiment, paper row, mixer, data, seed, code and library versions."""
    choices = HydraConfig.get().runtime.choices
    paper = cfg.get("paper") or {}
    row = f"{paper.get('table')}/{paper.get('row')}" if paper.get("table") and paper.get("row") else None
    # A backbone without a pluggable mixer (timm's Swin) ignores the mixer group: none is recorded.
    mixer = (cfg.get("mixer") or {}) if "mixer" in (cfg.get("backbone") or {}) else {}
    return {
        "experiment": None if choices.get("experiment") in (None, "null") else choices.get("experiment"),
        "task": choices.get("task"),
        "paper_row": row,
        "paper_column": paper.get("column"),
        "paper_printed": bool(paper.get("printed", True)),
        "mixer": mixer.get("name"),
        "mixer_options": {k: v for k, v in (OmegaConf.to_container(mixer, resolve=True) if mixer else {}).items() if k != "name"},
        "backbone": choices.get("backbone"),
        "trunk_hash": trunk_hash(cfg.backbone) if cfg.get("backbone") else None,
        "data": data_label(cfg.data) if cfg.get("data") else None,
        "image_size": cfg.data.get("image_size") if cfg.get("data") else None,
        "seed": cfg.get("seed"),
        "overrides": list(HydraConfig.get().overrides.task),
        "git_commit": _git_commit(),
        "versions": library_versions(),
        "run_dir": str(run_dir),
    }

def data_label(data: DictConfig) -> str | None:
    """The dataset a run used, in one word, as its DataModule class names it (``run_label``): e.g.
    ``imagenet``, ``skimage``, ``datasetgan/face``, ``ddpm/ffhq_34``, ``embedded_streets``."""
    data_class = get_class(data._target_)
    return data_class.run_label(data) if hasattr(data_class, "run_label") else data.get("source", data.get("name"))

def reading(datamodule: Any, task: pl.LightningModule) -> dict[str, Any]:
    """The readings of the paper's open choices this run uses: the data's (masks, splits, selection)
    and the task's (metric and loss regions, class counting)."""
    data = datamodule.reading() if hasattr(datamodule, "reading") else {}
    return {**data, **task.reading()}

def progress(trainer: pl.Trainer) -> dict[str, Any]:
    """Training progress and the selection split's numbers (the split that picks the checkpoint)."""
    metrics = {k: number(v) for k, v in trainer.callback_metrics.items()}
    datamodule = trainer.datamodule
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    best_score = getattr(checkpoint, "best_model_score", None)
    result: dict[str, Any] = {
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "selection": {
            "split": getattr(datamodule, "validation_split", None),
            "num_images": logged_count(metrics.get("val/num_images")),
            "metric": getattr(checkpoint, "monitor", None),
            "best": None if best_score is None else number(best_score),
            "final": {key.removeprefix("val/"): value for key, value in metrics.items()
                      if key.startswith("val/") and key != "val/num_images"},
        },
    }
    if checkpoint is not None and checkpoint.best_model_path:
        result["best_checkpoint"] = checkpoint.best_model_path
    if checkpoint is not None and checkpoint.dirpath and (Path(checkpoint.dirpath) / "last.ckpt").is_file():
        result["last_checkpoint"] = str(Path(checkpoint.dirpath) / "last.ckpt")  # configs/callbacks: every epoch
    # task.compile=true: the first training step's time, the next steps' and the compilation between them.
    timing = getattr(trainer.lightning_module, "compile_timing", None)
    if timing is not None:
        result["compile"] = timing
    return result

def number(value: Any) -> float | None:
    """A logged value (tensor or float) as a float, None when it is not finite (written as ``null``)."""
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None

def _git_commit(root: Path | None = None) -> str:
    """The checkout's commit, ``-dirty`` when what runs is not all in it; ``unknown`` outside git."""
    root = root or Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        # Changed tracked files anywhere, and new files where code and configs live (a new mixer's module and
        # YAML are untracked until committed): the commit alone would not hold what trained.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        new = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "src", "configs", "train.py"],
                             cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() or new.stdout.strip() else "")

def write_metrics(trainer: pl.Trainer, run_dir: Path, summary: dict[str, Any], started: float) -> None:
    """Write the record to ``<run_dir>/metrics.json`` with its wall time so far (process of rank 0 only)."""
    if not trainer.is_global_zero:
        return
    summary["wall_time_s"] = round(time.time() - started, 1)
    write_json(run_dir / "metrics.json", summary)

def summary_text(summary: dict[str, Any], *, show_init: bool = True) -> str:
    """The lines a run prints at its end: its test numbers beside the task's baselines.

    ``show_init``: name how the model started (pretrained, or from scratch); a task that never starts
    from a pretrained trunk (inpainting, :attr:`afno_repro.tasks.base.PaperTask.finetunes`) leaves it out.
    """
    test = summary.get("test") or {}
    reported = summary.get("reported") or []
    fraction = test.get("masked_fraction")
    size = summary.get("image_size")
    lines = [
        "",
        f"Test: {summary['data']}" + (f" at {size}x{size}" if size else "") + f", {test.get('num_images')} images"
        + (f", {100 * fraction:.1f}% of pixels masked" if fraction is not None else ""),
        f"{'method':<40}" + "".join(f"{item['label']:>12}" for item in reported),
    ]

    def digits(item: dict[str, Any], values: dict[str, Any]) -> int:
        # An accuracy on n images moves in steps of 100/n points: no more decimals than that (50 images: none).
        images = values.get("num_images", test.get("num_images"))
        return share_digits(item["digits"], images) if item.get("per_image") else item["digits"]

    def row(name: str, values: dict[str, Any]) -> str:
        cells = (format_number(values.get(item["key"]), f".{digits(item, values)}f", "n/a") for item in reported)
        return f"{name:<40}" + "".join(f"{cell:>12}" for cell in cells)

    cached = []
    for name, values in (summary.get("baselines") or {}).items():
        lines.append(row(name.replace("_", " "), values))
        if (cache := values.get("fill_cache")) is not None:
            cached.append(f"({name.replace('_', ' ')}: {cache['read']} fills read back from {cache['folder']}, "
                          f"{cache['computed']} solved)")
    params = f" ({summary['params_m']:.2f}M params)" if "params_m" in summary else ""
    init = summary.get("init") or {}
    start = ", pretrained" if init.get("checkpoint") else ", from scratch" if show_init else ""
    lines.append(row(f"{summary['mixer'] or summary.get('backbone')}{params}{start}", summary.get("result") or {}))
    result = summary.get("result") or {}
    if result.get("miou_std") is not None:
        lines.append(f"(mean over folds; std {result['miou_std']:.2f})")
    lines.append(f"({result.get('protocol')})")
    if fully_masked := test.get("fully_masked_images"):
        zero = ", and the biharmonic baseline fills them with zeros (as the masked input)" if any(
            values.get("zero_filled_images") for values in (summary.get("baselines") or {}).values()) else ""
        lines.append(f"warning: {fully_masked} of the {test.get('num_images')} test images have every pixel masked (the "
                     f"walk of data.mask covers them at this size: its steps and brush_size set how far): no method sees "
                     f"anything of them{zero}.")
    lines += cached
    if init.get("checkpoint"):
        lines.append(f"started from: {init['checkpoint']}")
    from afno_repro.mixers.activity import activity_note

    if (note := activity_note(summary)) is not None:
        lines.append(f"warning: {note}")
    kept = [name for name in ("metrics.json", "checkpoints/", "images/val_latest.png")
            if (Path(summary["run_dir"]) / name).exists()]
    lines.append(f"run directory: {summary['run_dir']}  ({', '.join(kept)})")
    offline = sorted(Path(summary["run_dir"]).glob("wandb/offline-run-*"))
    if offline:
        lines.append(f"W&B offline run: wandb sync {offline[-1]}")
    return "\n".join(lines + [""])
