"""What the checkout holds, to tell whether a test wrote into it (tests/test_hermetic.py)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkout_state() -> set[str] | None:
    """What `git status --porcelain --ignored` lists in the checkout (None outside a git checkout).
    Byte-code caches are left out: `make test` sends them to .venv (PYTHONPYCACHEPREFIX), a bare
    `pytest` writes them beside the sources as Python always does."""
    try:
        listed = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    return {line for line in listed.stdout.splitlines()
            if "__pycache__/" not in line and not line.endswith(".pyc") and " .pytest_cache/" not in line
            and " .venv/" not in line}
