"""SLURM launcher support: job states on clusters that keep no accounting database.

The SLURM launcher (hydra-submitit-launcher) waits for each job by polling ``sacct``. A cluster
without accounting storage (``AccountingStorageType=accounting_storage/none``: the one-node cluster
of ``scripts/slurm_local.sh``, small clusters without slurmdbd) answers every poll with
``Slurm accounting storage is disabled`` on stderr and exit status 1, and submitit logs, at 2, 4,
8, ... s and then every 10 min::

    submitit WARNING (...) - Call #1 - Bypassing sacct error Command '['sacct', '-o',
    'JobID,State,NodeList', '--parsable2', '-j', '3']' returned non-zero exit status 1., status may
    be inaccurate.

Worse than the noise, submitit then never learns a job's state: a job killed before it writes its
result (time limit, out of memory, ``scancel``) leaves the sweep waiting forever.

:class:`SlurmJobStates` (a Hydra callback that ``configs/hydra/launcher/slurm.yaml`` declares) asks
``squeue`` instead on such clusters: it lists the user's jobs in every state, including those that
ended less than ``MinJobAge`` (300 s by default) ago; a job it no longer lists has ended. Where
accounting is on, nothing changes.
"""

from __future__ import annotations

import getpass
import logging
import shutil
import subprocess
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

__all__ = ["SlurmJobStates", "accounting_enabled", "squeue_info_watcher"]

# A state submitit counts as finished; for a job that squeue no longer lists (ended > MinJobAge ago).
ENDED = "ENDED"


def accounting_enabled() -> bool | None:
    """Whether this SLURM cluster stores accounting (so ``sacct`` answers); ``None`` without ``scontrol``."""
    if shutil.which("scontrol") is None:
        return None
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip() != "accounting_storage/none"
    return None


def squeue_info_watcher(delay_s: int) -> Any:
    """A submitit ``SlurmInfoWatcher`` that reads job states from ``squeue`` instead of ``sacct``."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueInfoWatcher(SlurmInfoWatcher):
        def _make_command(self) -> list[str] | None:
            if super()._make_command() is None:  # no job left to watch
                return None
            # The user's jobs rather than `--jobs=...`: squeue fails when every id given has aged out.
            return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", f"--user={getpass.getuser()}"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            info = super().read_info("JobID|State|NodeList\n" + text)
            for job_id in self._registered - self._finished:
                info.setdefault(job_id, {"JobID": job_id, "State": ENDED, "NodeList": ""})
            return info

    return SqueueInfoWatcher(delay_s=delay_s)


def missing_slurm_message() -> str | None:
    """Why jobs cannot be submitted to SLURM from this machine (its commands are not on PATH), or None."""
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if not missing:
        return None
    return (f"hydra/launcher=slurm submits each run with sbatch, but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not on PATH here: run this on the cluster's login node (or load its slurm module), or leave the launcher "
            "out to run here (README, 'Trying the SLURM launcher before a real cluster', starts a one-node cluster).")


class SlurmJobStates(Callback):
    """Hydra callback: on a SLURM multirun where ``sacct`` cannot answer, submitit polls ``squeue``."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not str(config.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher"):
            return
        if (message := missing_slurm_message()) is not None:
            # submitit's own answer is a traceback ("Could not detect srun") per sweep.
            print(f"\nerror: {message}\n", file=sys.stderr, flush=True)
            sys.exit(2)
        if accounting_enabled() is not False:
            return
        from submitit.slurm.slurm import SlurmJob

        SlurmJob.watcher = squeue_info_watcher(delay_s=SlurmJob.watcher._delay_s)
        log.info("this SLURM cluster keeps no accounting (sacct is disabled): job states are read from squeue")
