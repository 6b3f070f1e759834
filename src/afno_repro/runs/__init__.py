"""Runs: what a run writes into its folder (:mod:`.record`) and how runs are found, resumed and kept
apart (:mod:`.folders`). Everything other modules use is importable from ``afno_repro.runs``."""

from afno_repro.runs.folders import (RunFolderGuard, auto_resume, existing_run, find_runs, refuse_reuse_message,
                                     resume_command, resume_mismatch_message, unwritable_message)
from afno_repro.runs.record import library_versions, logged_count, trunk_hash, write_json

__all__ = ["RunFolderGuard", "auto_resume", "existing_run", "find_runs", "library_versions", "logged_count",
           "refuse_reuse_message", "resume_command", "resume_mismatch_message", "trunk_hash", "unwritable_message", "write_json"]
