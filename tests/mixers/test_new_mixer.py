"""CONTRIBUTING's promise for a new token mixer: one file in ``src/afno_repro/mixers/`` and one
``configs/mixer/`` YAML, and it is picked up everywhere without editing any other file.

The test copies the tracked files of this checkout into its own folder, adds a toy mixer there
(a depthwise 3x3 convolution over the token grid, registered as ``toy_conv``) and nothing else, and
runs what a contributor would run in that copy: the registry-driven property tests, the scaling
study of ``scripts/model_table.py``, and (full tier) a smoke sweep of ``train.py`` beside GFN.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from checkout import ROOT

NAME = "toy_conv"
MIXER = '''"""A toy token mixer for the test that a new mixer needs no other file: depthwise 3x3 conv."""

from torch import nn

from afno_repro.mixers.registry import register_mixer


@register_mixer("toy_conv", shift_equivariant=False)
class ToyConv(nn.Module):
    def __init__(self, dim: int, *, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x):
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
'''
CONFIG = "# The toy mixer of tests/mixers/test_new_mixer.py.\nname: toy_conv\nkernel_size: 3\n"


def _copy_of_checkout(repo: Path) -> Path:
    """The tracked files of this checkout, copied into ``repo``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a contributor would have")
    for name in listed.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    return repo


@pytest.fixture(scope="module")
def copy_with_toy(tmp_path_factory) -> Path:
    """The tracked files of this checkout, plus the toy mixer's two files and nothing else."""
    repo = _copy_of_checkout(tmp_path_factory.mktemp("with_toy_mixer"))
    (repo / "src/afno_repro/mixers/toy_conv.py").write_text(MIXER)
    (repo / "configs/mixer/toy_conv.yaml").write_text(CONFIG)
    return repo


def test_every_mixer_config_names_a_registered_mixer_and_every_mixer_has_a_config():
    from afno_repro.mixers import list_mixers

    named = {re.search(r"^name:\s*(\w+)", path.read_text(), re.MULTILINE).group(1): path.name
             for path in (ROOT / "configs/mixer").glob("*.yaml")}
    assert sorted(named) == list_mixers(), named


@pytest.mark.slow
def test_each_half_done_step_of_adding_a_mixer_names_the_missing_half(tmp_path):
    """A config without a registered class, a registered class without a config, and a mixer file that
    does not import (which stops every mixer, the demo's too): each is one paragraph naming the file and
    the fix, exit status 2."""
    repo = _copy_of_checkout(tmp_path / "repo")
    (repo / "configs/mixer/pool.yaml").write_text("name: pool\npool_size: 3\n")
    result = _run(repo, "train.py", "mixer=pool", "debug=smoke", "logger=csv", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "configs/mixer/pool.yaml names mixer 'pool', but no class is registered" in result.stderr
    assert "@register_mixer('pool')" in result.stderr
    (repo / "configs/mixer/pool.yaml").unlink()
    (repo / "src/afno_repro/mixers/pool.py").write_text(MIXER.replace('"toy_conv"', '"pool"'))
    result = _run(repo, "train.py", "mixer=pool", "debug=smoke", "logger=csv", timeout=300)
    assert result.returncode == 2 and "pool is a registered mixer without a config: add configs/mixer/pool.yaml" \
        in result.stderr, result.stderr[-3000:]
    (repo / "src/afno_repro/mixers/pool.py").write_text("import timm.layers.not_a_module\n")
    result = _run(repo, "train.py", "debug=smoke", "logger=csv", timeout=300)  # the demo, another mixer
    assert result.returncode == 2, result.stderr[-3000:]
    assert "mixers/pool.py failed to import (ModuleNotFoundError" in result.stderr and "Traceback" not in result.stderr


def _run(repo: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_property_tests_cover_a_new_mixer(copy_with_toy):
    result = _run(copy_with_toy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/mixers/test_properties.py",
                  "-k", NAME, "-rA", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = re.findall(rf"PASSED tests/mixers/test_properties.py::(\w+)\[{NAME}", result.stdout)
    # Every property that applies to a mixer that is neither spectral nor takes a grid: shapes on
    # every grid, dtypes under autocast, the meta device, at least.
    assert len(passed) >= 4 and len(set(passed)) >= 2, result.stdout[-3000:]


def test_the_scaling_study_measures_a_new_mixer_by_name(copy_with_toy):
    result = _run(copy_with_toy, "scripts/model_table.py", "--scaling", "--mixers", NAME, "gfn", "--grids", "8", "16",
                  "--dim", "16", "--repeats", "1", "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    study = json.loads(result.stdout)
    measured = {case["mixer"] for case in study["cases"] if case["seconds"] is not None and case["seconds"] > 0}
    assert measured == {NAME, "gfn"}
    assert NAME in study["exponents"]


@pytest.mark.slow
def test_a_smoke_sweep_trains_a_new_mixer_beside_gfn(copy_with_toy, tmp_path):
    sweep = tmp_path / "sweep"
    result = _run(copy_with_toy, "train.py", "-m", f"mixer={NAME},gfn", "debug=smoke", "logger=csv",
                  f"hydra.sweep.dir={sweep}", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(path.read_text()) for path in sweep.rglob("metrics.json")]
    assert sorted(record["mixer"] for record in records) == sorted([NAME, "gfn"])
    toy = next(record for record in records if record["mixer"] == NAME)
    assert toy["status"] == "completed" and toy["mixer_options"] == {"kernel_size": 3}
    assert toy["result"]["psnr"] is not None and toy["params_m"] > 0
