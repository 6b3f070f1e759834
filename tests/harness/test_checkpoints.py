"""A bad ``ckpt_path`` gets a ValueError naming the file, the problem and the fix: missing, empty,
truncated, not a PyTorch file, not a Lightning checkpoint, or written by another model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from afno_repro.checkpoints import check_resume_checkpoint
from afno_repro.config import compose
from afno_repro.train import _instantiate_callback, main, run

SMOKE = ["debug=smoke", "run_baselines=false", "count_flops=false", "logger=csv"]


def _task(output_dir: Path, *overrides: str) -> torch.nn.Module:
    cfg = compose([*SMOKE, *overrides], output_dir=str(output_dir))
    return instantiate(cfg.task, backbone=instantiate(cfg.backbone), optimizer=instantiate(cfg.optimizer),
                       scheduler=None)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A real checkpoint from a one-epoch smoke run, in a run folder laid out as train.py leaves it."""
    run_dir = tmp_path_factory.mktemp("written")
    overrides = [*SMOKE, "trainer.max_epochs=1"]
    run(compose(overrides, output_dir=str(run_dir)))
    # What @hydra.main writes beside the checkpoints (compose() alone does not).
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(compose(overrides, output_dir=str(run_dir)), run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> torch.nn.Module:
    return _task(tmp_path_factory.mktemp("task"))


def test_good_checkpoint_passes_and_is_returned(written, task):
    checkpoint = check_resume_checkpoint(written, task)
    # Plain data only: it loads with weights_only=True (no pickled Python objects to trust).
    assert torch.load(written, map_location="cpu", weights_only=True)["epoch"] == 0
    assert checkpoint["epoch"] == 0 and checkpoint["state_dict"].keys() == task.state_dict().keys()
    assert check_resume_checkpoint("last", task) is None  # Lightning resolves its own names


def _truncated(good: Path, path: Path) -> None:
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def _bare_state_dict(good: Path, path: Path) -> None:
    torch.save(torch.load(good, map_location="cpu", weights_only=True)["state_dict"], path)


BAD_FILES = {
    "missing": (lambda good, path: None, "does not exist"),
    "directory": (lambda good, path: path.mkdir(), "is a directory"),
    "empty": (lambda good, path: path.write_bytes(b""), "is empty (0 bytes)"),
    "truncated": (_truncated, "is truncated or corrupt"),
    "text": (lambda good, path: path.write_text("epoch: 3\nweights: none\n"), "is not a PyTorch checkpoint"),
    "no_state_dict": (lambda good, path: torch.save({"epoch": 3, "weights": torch.ones(2)}, path),
                      "not a Lightning checkpoint: it is a dict with keys 'epoch', 'weights'"),
    "bare_state_dict": (_bare_state_dict, "a bare model state_dict"),
    "python_objects": (lambda good, path: torch.save({"state_dict": {}, "layer": torch.nn.Linear(2, 2)}, path),
                       "holds a torch.nn.modules.linear.Linear"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_is_named_with_its_problem(written, task, tmp_path, kind):
    make, problem = BAD_FILES[kind]
    path = tmp_path / f"{kind}.ckpt"
    make(written, path)
    with pytest.raises(ValueError) as error:
        check_resume_checkpoint(path, task)
    message = str(error.value)
    assert f"ckpt_path={path} " in message and problem in message
    assert "weights_only=False" not in message and "Traceback" not in message


def test_checkpoint_of_another_width_lists_the_shapes(written, tmp_path):
    with pytest.raises(ValueError) as error:
        check_resume_checkpoint(written, _task(tmp_path, "backbone.embed_dim=96"))
    message = str(error.value)
    assert f"ckpt_path={written} does not fit the configured model" in message
    assert "backbone.pos_embed: checkpoint (1, 8, 8, 64) vs model (1, 8, 8, 96)" in message
    assert "more)" in message  # every weight differs: the first few are listed, the rest counted
    # The fix: the writer's configuration, its overrides, or no ckpt_path.
    assert str(written.parent.parent / ".hydra" / "config.yaml") in message
    assert "trainer.max_epochs=1" in message and "leave ckpt_path out" in message


def test_checkpoint_of_another_mixer_lists_missing_and_unexpected(written, tmp_path):
    with pytest.raises(ValueError) as error:
        check_resume_checkpoint(written, _task(tmp_path, "mixer=gfn"))
    message = str(error.value)
    assert "missing from the checkpoint (backbone.blocks.0.mixer.complex_weight" in message
    assert "that the model does not have (backbone.blocks.0.mixer.w1" in message


def test_train_reports_a_bad_checkpoint_without_traceback(written, tmp_path, capsys):
    truncated = tmp_path / "truncated.ckpt"
    _truncated(written, truncated)
    with pytest.raises(SystemExit) as exit_info:
        main(compose([*SMOKE, f"ckpt_path={truncated}"], output_dir=str(tmp_path / "run")))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("error:") and "Traceback" not in err
    assert str(truncated) in err and "truncated or corrupt" in err
    # Stopped before training, not after: the run's record says failed and holds no epoch.
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "epochs" not in record and "truncated or corrupt" in record["error"]


def test_last_checkpoint_is_every_epochs_also_between_validations(tmp_path):
    """With validation every 2nd epoch (Table 3 validates every 100th), last.ckpt still holds the last epoch:
    Lightning's ModelCheckpoint alone writes it only when it validates, so a 3-epoch run would end with the
    2nd epoch's and a run stopped between validations would resume up to N - 1 epochs back."""
    overrides = [*SMOKE, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"]
    run(compose(overrides, output_dir=str(tmp_path)))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] > 0
    # The best checkpoint is still chosen at the one validation that ran (after the 2nd epoch).
    assert [p.name for p in (tmp_path / "checkpoints").glob("best-*.ckpt")] == ["best-epoch001.ckpt"]


def test_resuming_with_fewer_epochs_than_the_checkpoint_holds_says_so(tmp_path, capsys):
    """A checkpoint of 2 trained epochs resumed with trainer.max_epochs=1: one paragraph, not Lightning's
    MisconfigurationException after the loggers started."""
    two = tmp_path / "two"
    run(compose([*SMOKE, "trainer.max_epochs=2"], output_dir=str(two)))
    last = two / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        main(compose([*SMOKE, "trainer.max_epochs=1", f"ckpt_path={last}"], output_dir=str(tmp_path / "run")))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "holds 2 trained epochs, more than trainer.max_epochs=1" in err and "Traceback" not in err


class _Worsening(pl.LightningModule):
    """A model whose selection metric only gets worse after the first epoch (never a new best)."""

    selection_metric = ("val/score", "max")

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, index):
        return self.layer(batch[0]).square().mean()

    def validation_step(self, batch, index):
        self.log("val/score", -float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)


def test_last_checkpoint_is_every_epochs_when_the_best_does_not_improve(tmp_path):
    """The project's checkpoint callbacks (configs/callbacks/default.yaml, as train.py builds them): last.ckpt
    holds the last epoch although the best stopped improving after the first (Lightning's own save_last
    writes it only with a new best, so a stopped run resumed from its best epoch), and the state it saves
    names this run's best checkpoint, which still exists, so a run resumed from it can still test it."""
    configs = compose(SMOKE, output_dir=str(tmp_path / "composed")).callbacks
    callbacks = []
    for config in configs.values():
        if config._target_.endswith("ModelCheckpoint"):
            config = OmegaConf.merge(config, {"dirpath": str(tmp_path / "checkpoints")})
            callbacks.append(_instantiate_callback(config, _Worsening()))
    trainer = pl.Trainer(max_epochs=4, callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(_Worsening(), _loader(), _loader())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 3
    best_paths = [state["best_model_path"] for key, state in last["callbacks"].items() if "val/score" in key]
    assert best_paths == [str(tmp_path / "checkpoints" / "best-epoch000.ckpt")]
    assert trainer.checkpoint_callback.monitor == "val/score"  # the selection callback is the trainer's


def test_a_resumed_run_records_where_its_weights_started_not_its_pretrained_option(written, tmp_path, caplog):
    """`ckpt_path=` continues the checkpoint's weights: its `init` (what the interrupted run started from)
    is recorded, and `pretrained=` is neither loaded nor recorded, so a resume needs no pretraining file."""
    started_from = tmp_path / "pretraining.ckpt"
    started_from.write_bytes(written.read_bytes())
    first = tmp_path / "first"
    main(compose([*SMOKE, "trainer.max_epochs=1", f"pretrained={started_from}"], output_dir=str(first)))
    assert json.loads((first / "metrics.json").read_text())["init"]["checkpoint"] == str(started_from)
    started_from.unlink()  # the resume must not need it

    resumed = tmp_path / "resumed"
    with caplog.at_level("WARNING", logger="afno_repro.train"):
        main(compose([*SMOKE, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
                      f"pretrained={written}"], output_dir=str(resumed)))
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert metrics["init"]["checkpoint"] == str(started_from) and metrics["init"]["how"] == "given"
    assert f"pretrained={written} is not loaded" in caplog.text and str(started_from) in caplog.text
    # The resumed run's own checkpoints carry the same origin on to a further resume.
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["init"] == metrics["init"]


@pytest.mark.slow
def test_a_sweep_over_a_long_path_gets_folders_the_file_system_takes(written, tmp_path):
    """A sweep job's folder is named after its overrides: a pretrained= path of a cluster's scratch folder made a
    name past 255 bytes (OSError: File name too long, after the whole pretraining). Paths are left out of it and
    a long name is shortened with a hash."""
    import subprocess
    import sys

    from readme import user_env

    deep = tmp_path / ("scratch_" + "p" * 90) / ("project_" + "q" * 90) / ("pretraining_" + "r" * 90)
    deep.mkdir(parents=True)
    checkpoint = deep / "best-epoch000.ckpt"
    checkpoint.write_bytes(written.read_bytes())
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[2] / "train.py"), "-m", *SMOKE, "trainer.max_epochs=1",
         f"pretrained={checkpoint}", "optimizer.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}", f"runs_root={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=user_env())
    assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(path.name for path in sweep.iterdir() if path.is_dir())
    assert [name.split("_")[0] for name in folders] == ["0", "1"] and "optimizer.lr-0.002" in folders[1]
    assert all("pretrained" not in name and "p" * 90 not in name for name in folders)
    assert all(json.loads((sweep / name / "metrics.json").read_text())["init"]["checkpoint"] == str(checkpoint)
               for name in folders)
