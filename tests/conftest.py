"""Fixtures shared by the whole suite: deterministic torch on one thread per process, a tiny ImageNet
written in the real on-disk layout, README's Table 2 smoke sweep run once for every test that needs a
pretraining run, the full tier's long runs started in the background (tests/background.py), and what
the checkout looked like before the session (nothing may be written into it)."""

import json
import os
import signal
import subprocess
from pathlib import Path

import background
from checkout import checkout_state

import numpy as np
import pytest
import torch
from PIL import Image

IMAGENET_CLASSES = ("n01440764", "n01443537", "n01484850")

# One torch thread per process, here and in every process a test starts (they inherit the variable):
# the full tier runs two at a time (tests/background.py; the paper-scale commands in pairs) on two
# cores that are shared, and a process of two OpenMP threads that has only one core waits at every
# parallel region for its descheduled thread (a Table 2 smoke sweep took 31 s with two threads beside
# another busy process, 14 s with one). The models of the tests are too small to gain from a second thread.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# The tests that must run after every other one (they check what the whole session did).
LAST = ("test_every_readme_command_was_run", "test_the_checkout_is_left_as_found")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items) -> None:
    """The session-wide checks run last, after everything they check; before them, the tests that read a
    background run (tests/background.py), those of the runs queued last first."""
    items.sort(key=lambda item: (item.name in LAST, background.position(item.fixturenames)))


def pytest_sessionstart(session) -> None:
    """The versions the results depend on, at the top of every test run, `-q` included (every
    metrics.json records them too); and the checkout's state, which the last test compares."""
    from afno_repro.runs import library_versions

    session.config.checkout_before = checkout_state()

    versions = library_versions()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("afno-repro versions: " + ", ".join(f"{name} {versions[name]}" for name in (
            "torch", "pytorch-lightning", "timm", "hydra-core", "torchmetrics", "omegaconf", "wandb", "python")))


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_stay_in_the_session(tmp_path_factory):
    """Every process a test starts makes its temporary files (``TMPDIR``) under the session's own temporary
    folder, not in /tmp: a run that a test stops leaves nothing behind outside it (wandb alone makes two
    folders at import, which a killed process never removes)."""
    folder = tmp_path_factory.mktemp("tmpdir")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before


@pytest.fixture(scope="session", autouse=True)
def _background_runs(request, tmp_path_factory, _temporary_files_stay_in_the_session):
    """Queue the long runs the selected tests read (none in the fast tier) as the session's first test starts."""
    background.start({name for item in request.session.items for name in item.fixturenames}, tmp_path_factory)
    yield
    background.stop()


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


@background.job("table2_smoke")
def _table2_smoke(tmp_path_factory) -> dict:
    """README's `python train.py -m experiment=table2_inpainting debug=smoke`, run once as printed from a
    fresh working folder: the Table 2 rows that Table 3's smoke sweep, the few-shot tests, the report's
    trained figures, the SIGKILL resume and the Slurm comparison build on. Returns the folder, the finished
    process and the sweep's summary by paper row."""
    from readme import argv, user_env

    cwd = tmp_path_factory.mktemp("table2_smoke")
    result = subprocess.run(argv("python train.py -m experiment=table2_inpainting debug=smoke"), cwd=cwd,
                            capture_output=True, text=True, timeout=900, env=user_env())
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    rows = {row["paper_row"]: row for row in json.loads((sweep_dir / "summary.json").read_text())}
    return {"cwd": cwd, "result": result, "sweep_dir": sweep_dir, "rows": rows}


table2_smoke = background.fixture("table2_smoke")


@pytest.fixture(scope="session")
def paper_data(tmp_path_factory) -> dict[str, Path]:
    """Tiny datasets in the real layouts for every data folder README's paper-scale commands name, written once
    (the runs only read them): README folder -> tiny dataset."""
    from layouts import write_cityscapes, write_datasetgan

    folder = tmp_path_factory.mktemp("paper_data")
    for category in ("face", "car", "cat"):
        write_datasetgan(folder / "datasetgan", category=category)
    (folder / "swin").mkdir()
    for size in ("tiny", "small", "base"):
        # Figure 1's Swin checkpoints, under their release names: the pipeline checks they are there; no test run
        # reaches Figure 1 from this folder, so their weights are never read (tests/models/test_swin.py loads real ones).
        torch.save({"model": {}}, folder / "swin" / f"swin_{size}_patch4_window7_224.pth")
    # 3 classes x 44 = 132 training images: one full batch of the classification recipe's 128.
    return {"/data/imagenet": write_imagenet(folder / "imagenet", train_per_class=44),
            "/data/cityscapes": write_cityscapes(folder / "cityscapes"),
            "/data/datasetgan": folder / "datasetgan", "/data/swin": folder / "swin"}
