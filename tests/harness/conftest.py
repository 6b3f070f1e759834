"""Fixtures for end-to-end runs of train.py (smoke-sized, embedded data, CSV logging)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]


from readme import user_env


@pytest.fixture(scope="session")
def train_cmd() -> Callable[..., list[str]]:
    def command(*overrides: str, multirun: bool = False) -> list[str]:
        return [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []), *overrides]

    return command


@pytest.fixture(scope="session")
def train(train_cmd, tmp_path_factory) -> Callable[..., subprocess.CompletedProcess]:
    """Run train.py as a user would: a subprocess, no W&B credentials, from ``cwd`` (where outputs/ then
    goes) or else from a fresh temporary folder, never from the checkout."""

    def run(*overrides: str, multirun: bool = False, timeout: int = 600, env: dict | None = None,
            cwd: Path | None = None):
        return subprocess.run(train_cmd(*overrides, multirun=multirun), cwd=cwd or tmp_path_factory.mktemp("cwd"),
                              capture_output=True, text=True, timeout=timeout, env=user_env(env))

    return run


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.fixture(scope="session")
def metrics_of() -> Callable[[Path], dict]:
    return read_metrics
