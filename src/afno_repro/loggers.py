"""Logger factories the configs instantiate."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Sequence

from pytorch_lightning.loggers import WandbLogger

__all__ = ["make_wandb_logger", "wandb_mode"]


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any(host.endswith("wandb.ai") for host in auth.hosts)


def wandb_mode(mode: str = "auto") -> str:
    """Resolve ``auto`` to ``online`` or ``offline``.

    ``auto`` is online only when credentials exist (``WANDB_API_KEY`` or a ``wandb login`` netrc
    entry) and ``WANDB_MODE`` does not say otherwise; with no credentials it is offline without
    touching the network, so a run never waits on W&B. Offline runs are synced later with
    ``wandb sync <run dir>/wandb/offline-run-*``.
    """
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of auto, online, offline, disabled.")
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    return "online" if _has_wandb_credentials() else "offline"


def make_wandb_logger(
    mode: str = "auto",
    project: str = "afno-repro",
    save_dir: str = ".",
    group: str | None = None,
    tags: Sequence[str] = (),
    name: str | None = None,
    log_model: bool = False,
    **kwargs,
) -> WandbLogger:
    """A :class:`~pytorch_lightning.loggers.WandbLogger` whose mode is chosen by :func:`wandb_mode`."""
    resolved = wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # The run's own summary (afno_repro.train) says where the W&B run is and how to sync it; W&B's
    # end-of-run banner would push that summary off the screen.
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        group=None if group in (None, "null") else group,
        tags=list(tags),
        name=name,
        log_model=log_model,
        offline=resolved == "offline",
        mode=resolved,
        **kwargs,
    )
