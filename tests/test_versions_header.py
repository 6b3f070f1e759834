"""The test run starts with the versions the results depend on, also under `make test`'s `-q`."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_versions_are_printed_first_under_quiet():
    # Any selection shows the header, even one that only collects: this check costs pytest's start alone.
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                             "tests/data/test_masks.py"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    first = result.stdout.splitlines()[0]
    for library in ("torch", "pytorch-lightning", "timm", "hydra-core", "torchmetrics"):
        assert f"{library} " in first, first
