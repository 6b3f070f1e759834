"""Fixtures shared by the whole suite: deterministic torch on the two shared cores, and a tiny
ImageNet written in the real on-disk layout."""

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

IMAGENET_CLASSES = ("n01440764", "n01443537", "n01484850")

torch.set_num_threads(2)


def pytest_sessionstart(session) -> None:
    """The versions the results depend on, at the top of every test run, `-q` included (every
    metrics.json records them too)."""
    from afno_repro.runs import library_versions

    versions = library_versions()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("afno-repro versions: " + ", ".join(f"{name} {versions[name]}" for name in (
            "torch", "pytorch-lightning", "timm", "hydra-core", "torchmetrics", "omegaconf", "wandb", "python")))


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same random state, so a failure reproduces."""
    torch.manual_seed(0)


def write_imagenet(root: Path, train_per_class: int = 10, val_per_class: int = 2) -> Path:
    """A tiny ImageNet in the standard layout, ``root/{train,val}/<wnid>/<wnid>_<i>.JPEG``:
    small random-colour JPEGs of varying height, one folder per class of ``IMAGENET_CLASSES``."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for wnid in IMAGENET_CLASSES:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20 + i, 28, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
    return root


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def terminal_sigint():
    """``preexec_fn`` for a subprocess that a test stops with Ctrl-C: SIGINT as a terminal delivers it.

    A shell starts background jobs with SIGINT ignored (POSIX, when job control is off, as in CI or
    `make test &`), and an ignored signal stays ignored in every child: the subprocess would never
    see the test's Ctrl-C, while a person's terminal always delivers it.
    """
    return _sigint_as_in_a_terminal


@pytest.fixture(scope="session")
def imagenet_writer():
    """:func:`write_imagenet` itself, for tests that need another size of it."""
    return write_imagenet


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    return write_imagenet(tmp_path / "imagenet")


@pytest.fixture
def imagenet_classes() -> tuple[str, ...]:
    """The wnids ``imagenet_root`` holds, sorted."""
    return IMAGENET_CLASSES
