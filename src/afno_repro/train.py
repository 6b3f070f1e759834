"""One training run: composed config in, checkpoints, ``metrics.json`` and a printed summary out.

``train.py`` at the repository root is a thin ``@hydra.main`` around :func:`main`. The flow is::

    cfg --instantiate--> DataModule, backbone(mixer), task(backbone, optimizer, scheduler)
        --> pl.Trainer(loggers, callbacks).fit --> baselines on the same validation masks
        --> <run dir>/metrics.json (+ checkpoints/, csv/, wandb/, images/)

Errors a user can fix (unknown names, bad paths, shapes that do not divide, a NaN loss) are printed
as one paragraph without a traceback (set ``HYDRA_FULL_ERROR=1`` for it) and exit with status 2;
checkpoints and results already written stay where they are.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

log = logging.getLogger(__name__)


def _quiet_third_party_noise() -> None:
    """Drop two messages that every run would print and that say nothing about the run: Lightning's
    advertisement for its cloud logger and a deprecation inside Lightning's own pytree helper."""
    import warnings

    class _DropAdvert(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for name in ("pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropAdvert())
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_DropAdvert())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


_quiet_third_party_noise()

__all__ = ["main", "run", "UserFacingError"]

# Exceptions that carry a message written for the user (our ValueErrors name the fix).
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError, MissingMandatoryValue)


class UserFacingError(RuntimeError):
    """An error whose message is meant for the person running the command."""


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run :func:`run` and turn user errors into one clear paragraph and exit status 2."""
    try:
        return run(cfg)
    except Exception as error:  # noqa: BLE001 - classified below, re-raised when not ours
        cause = _user_cause(error)
        if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"\nerror: {_describe(cause)}\n", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        _finish_wandb()


def _user_cause(error: BaseException) -> BaseException | None:
    """The user-facing exception in ``error``'s chain (Hydra wraps what targets raise), if any."""
    seen = error
    while seen is not None:
        if isinstance(seen, (UserFacingError, *_USER_ERRORS)) and not isinstance(seen, InstantiationException):
            return seen
        seen = seen.__cause__ or (seen.__context__ if isinstance(seen, InstantiationException) else None)
    return None


def _describe(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue):
        key = error.full_key or "a required value"
        return (f"`{key}` is required and has no value (it is `???` in the config): pass it on the command "
                f"line, e.g. `python train.py ... {key}=/path/to/data`.")
    return str(error)


def _finish_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns what it writes to ``metrics.json``."""
    started = time.time()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    # Plain containers, not DictConfigs: the DataModule's hyperparameters go into checkpoints,
    # which must load with torch.load(weights_only=True).
    datamodule = instantiate(cfg.data, _convert_="all")
    backbone = instantiate(cfg.backbone)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    task = instantiate(cfg.task, backbone=backbone, optimizer=instantiate(cfg.optimizer), scheduler=scheduler)

    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    progress = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()
    if progress:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, enable_progress_bar=progress)

    model_info = _model_info(cfg) if cfg.get("count_flops", True) else {}
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
        if model_info:
            log.info("model: %.3fM parameters, %.3f GFLOPs (paper convention)", model_info["params_m"], model_info["gflops"])
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "model": model_info})

    summary = _base_summary(cfg, run_dir, model_info)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except FloatingPointError as error:
        summary.update(status="failed: non-finite loss", error=str(error), **_progress(trainer, task))
        if trainer.is_global_zero:
            _write_metrics(run_dir, summary, started)
        raise UserFacingError(
            f"{error} Training stopped; the checkpoints written before it are kept in "
            f"{run_dir / 'checkpoints'} (last.ckpt is the last good epoch) and {run_dir / 'metrics.json'} "
            "records the failure."
        ) from error

    summary.update(status="interrupted" if trainer.interrupted else "completed", **_progress(trainer, task))
    if cfg.get("test_after_fit"):
        (results,) = trainer.test(task, datamodule=datamodule, ckpt_path="best")
        summary["test"] = {key.removeprefix("test/"): _number(value) for key, value in results.items()}
    if trainer.is_global_zero and cfg.get("run_baselines", True):
        from afno_repro.tasks.baselines import evaluate_baselines

        summary["baselines"] = evaluate_baselines(datamodule.val_dataloader(), max_batches=cfg.get("baseline_batches"))
    _finish_wandb()
    if trainer.is_global_zero:
        _write_metrics(run_dir, summary, started)
        print(_format_summary(summary), flush=True)
    return summary


def _model_info(cfg: DictConfig) -> dict[str, Any]:
    """Parameters and GFLOPs of the configured backbone, counted on the meta device."""
    from afno_repro.analysis.complexity import count_flops, count_params

    with torch.device("meta"):
        model = instantiate(cfg.backbone)
    size = int(cfg.backbone.img_size)
    # Every matmul counted (both attention products): the run's real cost. scripts/model_table.py
    # shows each paper row under the convention that row's published number implies.
    report = count_flops(model, (1, int(cfg.backbone.get("in_chans", 3)), size, size), attention_matmuls="both")
    return {
        "params_m": count_params(model) / 1e6,
        "gflops": report.gflops,
        "attention_qk_gflops": report.attention_qk_gflops,
        "mixer_gflops": report.mixer_gflops,
        "fft_gflops": report.fft_gflops,
        "flop_convention": report.convention,
    }


def _base_summary(cfg: DictConfig, run_dir: Path, model_info: dict[str, Any]) -> dict[str, Any]:
    choices = HydraConfig.get().runtime.choices
    paper_model = choices.get("paper_model")
    return {
        "experiment": None if choices.get("experiment") in (None, "null") else choices.get("experiment"),
        "paper_model": None if paper_model in (None, "null") else paper_model,
        "mixer": cfg.mixer.name,
        "mixer_options": {k: v for k, v in OmegaConf.to_container(cfg.mixer, resolve=True).items() if k != "name"},
        "backbone": choices.get("backbone"),
        "data": cfg.data.name,
        "image_size": int(cfg.data.image_size),
        "seed": int(cfg.seed),
        "git_commit": _git_commit(),
        "run_dir": str(run_dir),
        **model_info,
    }


def _progress(trainer: pl.Trainer, task: pl.LightningModule) -> dict[str, Any]:
    metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()}
    result = {
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "final": {"psnr": metrics.get("val/psnr"), "ssim": metrics.get("val/ssim"), "loss": metrics.get("val/loss")},
        "best": {"psnr": metrics.get("val/psnr_best"), "ssim": metrics.get("val/ssim_best")},
        "masked_fraction": metrics.get("val/masked_fraction"),
    }
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    if checkpoint is not None and checkpoint.best_model_path:
        result["best_checkpoint"] = checkpoint.best_model_path
        result["last_checkpoint"] = checkpoint.last_model_path
    return result


def _number(value: Any) -> float | None:
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _write_metrics(run_dir: Path, summary: dict[str, Any], started: float) -> None:
    summary["wall_time_s"] = round(time.time() - started, 1)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def _format_summary(summary: dict[str, Any]) -> str:
    fraction = summary.get("masked_fraction")
    lines = [
        "",
        f"Validation: {summary['data']} at {summary['image_size']}x{summary['image_size']}"
        + (f", {100 * fraction:.1f}% of pixels masked" if fraction is not None else ""),
        f"{'method':<34}{'PSNR (dB)':>10}{'SSIM':>9}",
    ]
    for name, values in (summary.get("baselines") or {}).items():
        lines.append(f"{name.replace('_', ' '):<34}{_fmt(values.get('psnr'), 2):>10}{_fmt(values.get('ssim'), 4):>9}")
    params = f" ({summary['params_m']:.2f}M params)" if "params_m" in summary else ""
    model = f"{summary['mixer']}{params}, final"
    lines.append(f"{model:<34}{_fmt(summary['final']['psnr'], 2):>10}{_fmt(summary['final']['ssim'], 4):>9}")
    lines.append(f"{summary['mixer'] + ', best epoch':<34}{_fmt(summary['best']['psnr'], 2):>10}{_fmt(summary['best']['ssim'], 4):>9}")
    lines.append(f"run directory: {summary['run_dir']}  (metrics.json, checkpoints/, images/val_latest.png)")
    offline = sorted(Path(summary["run_dir"]).glob("wandb/offline-run-*"))
    if offline:
        lines.append(f"W&B offline run: wandb sync {offline[-1]}")
    return "\n".join(lines + [""])


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
