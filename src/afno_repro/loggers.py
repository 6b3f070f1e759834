"""Logger factories the configs instantiate.

W&B must never block a run for more than a few seconds nor fail it: :func:`make_wandb_logger`
falls back to an offline run (synced later with ``wandb sync``) when there are no credentials,
when the W&B server does not answer, or when ``wandb.init`` fails for any other reason, and says
so in one log line.
"""

from __future__ import annotations

import logging
import netrc
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

__all__ = ["make_wandb_logger", "wandb_mode", "wandb_base_url"]

log = logging.getLogger(__name__)

_DEFAULT_BASE_URL = "https://api.wandb.ai"


def wandb_base_url() -> str:
    """The W&B server runs talk to: ``WANDB_BASE_URL``, else the public cloud."""
    return (os.environ.get("WANDB_BASE_URL") or _DEFAULT_BASE_URL).rstrip("/")


def _has_wandb_credentials() -> bool:
    """Whether W&B would find credentials for :func:`wandb_base_url`, where wandb itself looks:
    ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, or a ``wandb login`` netrc entry for the host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        auth = netrc.netrc(os.environ.get("NETRC") or Path.home() / ".netrc")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = urlsplit(wandb_base_url()).netloc
    return any(machine == host for machine in auth.hosts)


def _unreachable_reason(url: str, timeout: float) -> str | None:
    """Why ``url`` cannot be reached within ``timeout`` seconds, or None when it answers.

    Any HTTP answer, an error status included, means the server is there. The request runs in a
    daemon thread so that a slow DNS lookup (which socket timeouts do not cover) cannot block either.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except Exception as error:  # noqa: BLE001 - every failure to connect means the same here
            reason = getattr(error, "reason", error)
            outcome.append(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__)

    thread = threading.Thread(target=probe, name="wandb-reachability", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def wandb_mode(mode: str = "auto") -> str:
    """Resolve ``auto`` to ``online`` or ``offline``.

    ``auto`` is online only when credentials exist (``WANDB_API_KEY`` or a ``wandb login`` netrc
    entry) and ``WANDB_MODE`` does not say otherwise; with no credentials it is offline without
    touching the network, so a run never waits on W&B. Offline runs are synced later with
    ``wandb sync <run dir>/wandb/offline-run-*``. :func:`make_wandb_logger` further checks that an
    online run can actually start.
    """
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of auto, online, offline, disabled.")
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    return "online" if _has_wandb_credentials() else "offline"


def online_problem(probe_timeout: float = 3.0) -> str | None:
    """Why an online W&B run would not start from here (no credentials, the server does not answer
    within ``probe_timeout`` seconds), or None; checked without starting one."""
    if not _has_wandb_credentials():
        return (f"mode is online but there are no W&B credentials for {wandb_base_url()} "
                "(no WANDB_API_KEY, no `wandb login` entry in ~/.netrc)")
    if (unreachable := _unreachable_reason(wandb_base_url(), probe_timeout)) is not None:
        return f"the W&B server {wandb_base_url()} is not reachable ({unreachable})"
    return None


def make_wandb_logger(
    mode: str = "auto",
    project: str = "afno-repro",
    save_dir: str = ".",
    group: str | None = None,
    tags: Sequence[str] = (),
    name: str | None = None,
    log_model: bool = False,
    probe_timeout: float = 3.0,
    init_timeout: float = 10.0,
    **kwargs,
) -> WandbLogger:
    """A :class:`~pytorch_lightning.loggers.WandbLogger` whose mode is chosen by :func:`wandb_mode`.

    When the mode is online, on global rank zero (the only rank that starts a W&B run), the run is
    started here rather than lazily at the first log call, so that a failure can still turn into
    an offline run: with no credentials, when :func:`wandb_base_url` gives no HTTP answer within
    ``probe_timeout`` seconds, or when ``wandb.init`` fails or takes more than ``init_timeout``
    seconds, the logger is offline and one warning says why and how to sync the run later.
    Lightning's logger reuses the run started here.
    """
    resolved = wandb_mode(mode)
    # W&B refuses these characters when the run starts (a UsageError traceback, even offline); `team/project` is the
    # habit of the web UI's paths.
    for option, value in (("project", project), ("entity", kwargs.get("entity"))):
        if value and any(character in str(value) for character in "/\\#?%:"):
            team, _, rest = str(value).partition("/")
            example = (f" For a team's project, give both: +logger.wandb.entity={team} logger.wandb.project={rest}."
                       if option == "project" and "/" in str(value) and team and rest else "")
            raise ValueError(f"logger.wandb.{option}={value!r} is not a W&B name: it cannot contain / \\ # ? % or :.{example}")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # The run's own summary (afno_repro.train) says where the W&B run is and how to sync it; W&B's
    # end-of-run banner would push that summary off the screen.
    os.environ.setdefault("WANDB_SILENT", "true")
    options = dict(project=project, save_dir=save_dir, group=None if group in (None, "null") else group,
                   tags=list(tags), name=name, **kwargs)

    if resolved != "online" or rank_zero_only.rank != 0:
        return _without_anonymous(WandbLogger(log_model=log_model, offline=resolved == "offline",
                                              mode=resolved, **options))

    reason = online_problem(probe_timeout)
    if reason is None:
        import wandb

        logger = _without_anonymous(WandbLogger(log_model=log_model, offline=False, mode="online",
                                                **{"settings": wandb.Settings(init_timeout=init_timeout), **options}))
        try:
            logger.experiment  # noqa: B018 - starts the run now, while we can still fall back
            return logger
        except Exception as error:  # noqa: BLE001 - whatever stops W&B must not stop training
            message = str(error).splitlines()[0] if str(error) else ""
            reason = f"wandb.init failed ({type(error).__name__}: {message})"

    log.warning(
        "W&B logs this run offline because %s; sync it later with `wandb sync %s`.%s",
        reason, Path(save_dir) / "wandb" / "offline-run-*",
        " log_model is ignored offline (checkpoints are not uploaded)." if log_model else "",
    )
    return _without_anonymous(WandbLogger(log_model=False, offline=True, mode="offline", **options))


def _without_anonymous(logger: WandbLogger) -> WandbLogger:
    """``logger`` without the ``anonymous=None`` Lightning passes to ``wandb.init`` unasked, for which W&B prints
    "The anonymous setting has no effect" on every run. Where Lightning keeps its init arguments elsewhere,
    nothing changes but that line."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger
