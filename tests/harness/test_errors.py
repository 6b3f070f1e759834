"""Bad input gives one clear paragraph that names the fix, never a traceback, and loses no work."""

from __future__ import annotations

import pytest

from afno_repro.config import compose
from afno_repro.train import main

SMOKE = ["debug=smoke", "run_baselines=false", "count_flops=false"]


def _user_error(overrides, tmp_path, capsys) -> str:
    cfg = compose([*overrides], output_dir=str(tmp_path / "run"))
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("error:")
    return err


def test_unknown_mixer_name_lists_valid_ones(tmp_path, capsys):
    err = _user_error([*SMOKE, "mixer.name=nope"], tmp_path, capsys)
    assert "unknown mixer 'nope'" in err and "afno" in err and "gfn" in err


def test_unknown_data_name_lists_valid_ones(tmp_path, capsys):
    err = _user_error([*SMOKE, "data.name=nope"], tmp_path, capsys)
    assert "nope" in err and "skimage" in err and "imagenet" in err


def test_missing_data_root(tmp_path, capsys):
    err = _user_error([*SMOKE, "data=imagenet"], tmp_path, capsys)
    assert "data.root" in err


def test_nonexistent_and_empty_data_root(tmp_path, capsys):
    err = _user_error([*SMOKE, "data=imagenet", f"data.root={tmp_path / 'nowhere'}"], tmp_path, capsys)
    assert "nowhere" in err
    # Said before the model is built (ViT-B/4: ~20 s and a W&B run before the data module read the folder).
    err = _user_error(["experiment=table2_inpainting", f"data.root={tmp_path / 'nowhere'}", "logger=csv"], tmp_path, capsys)
    assert err.strip() == (f"error: data.root={tmp_path / 'nowhere'} does not exist. Set data.root to the folder holding "
                           "ImageNet's train/<wnid>/*.JPEG and val/<wnid>/*.JPEG.")
    assert not (tmp_path / "run" / "csv").exists()
    (tmp_path / "empty").mkdir()
    err = _user_error([*SMOKE, "data=imagenet", f"data.root={tmp_path / 'empty'}"], tmp_path, capsys)
    assert "empty" in err and "train" in err


@pytest.mark.parametrize(("experiment", "expected"), [
    ("table2_inpainting", "has no 'train' folder"),
    ("table5_classification", "has no 'train' folder"),
    ("table3_fewshot", "DatasetGAN"),
    ("table4_cityscapes", "is not a Cityscapes folder: leftImg8bit/ and gtFine/ missing"),
])
def test_a_folder_without_the_layout_is_named_before_the_model_is_built(experiment, expected, tmp_path, capsys,
                                                                        monkeypatch):
    """An existing folder that lacks the data's layout (the wrong level of the tree, say) is named by the data
    module's listing before the backbone is built, its FLOPs counted or a logger started (ViT-B/4: ~7 s here)."""
    import afno_repro.train as train

    built = []
    real_instantiate = train.instantiate
    monkeypatch.setattr(train, "instantiate", lambda config, *a, **k: (built.append(str(config.get("_target_"))),
                                                                        real_instantiate(config, *a, **k))[1])
    (tmp_path / "wrong_level").mkdir()
    err = _user_error([f"experiment={experiment}", f"data.root={tmp_path / 'wrong_level'}", "logger=csv",
                       "pretrained=null"], tmp_path, capsys)
    assert expected in err and str(tmp_path / "wrong_level") in err
    assert not any("models" in target for target in built), built
    assert not (tmp_path / "run" / "csv").exists()


@pytest.mark.parametrize(("overrides", "says"), [
    # timm's AssertionError with re_prob > 0, accepted and kept with it 0.
    (["experiment=table5_classification", "data.re_mode=bogus"], "re_mode='bogus'; use one of 'pixel', 'rand', 'const'"),
    # torchvision's "If brightness is a single number, it must be non negative", naming no option.
    (["experiment=table5_classification", "data.color_jitter=-1"], "color_jitter=-1; it is a colour-jitter strength >= 0"),
    # A TypeError at the first loss; 3 left a class out of the loss and scores; -5 scored the unscored pixels.
    (["experiment=table3_fewshot", "pretrained=null", "task.ignore_index=abc"], "ignore_index='abc': the data modules"),
    (["experiment=table3_fewshot", "pretrained=null", "task.ignore_index=3"], "leave task.ignore_index out or set it to 255"),
    (["experiment=table3_fewshot", "pretrained=null", "task.ignore_index=-5"], "ignore_index=-5: the data modules mark"),
    # Hydra's "Error in call to target ... TypeError('<' not supported ...)".
    (["mixer.sparsity_threshold=abc"], "sparsity_threshold='abc' is not a number >= 0"),
    # Failed after training, with int()'s message, and the resume command it printed repeated the value.
    (["data.val_mask_seed=abc"], "val_mask_seed='abc'; a seed is a whole number from 0 to 2**32 - 1"),
    # Silently no grid, where the inpainting task refuses the same value; 2 read as "on".
    (["experiment=table3_fewshot", "pretrained=null", "task.num_grid_images=-2"], "num_grid_images=-2 is not a non-negative"),
    (["experiment=table3_fewshot", "pretrained=null", "data.hflip=2"], "hflip=2; it is a switch: true"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_task_data_and_mixer_options_are_refused_before_training(overrides, says, tmp_path, capsys):
    err = _user_error([*overrides, *SMOKE], tmp_path, capsys)
    assert says in err and not list((tmp_path / "run").rglob("*.ckpt"))


def test_image_size_not_divisible_by_patch(tmp_path, capsys):
    err = _user_error([*SMOKE, "data.image_size=30", "backbone.img_size=30"], tmp_path, capsys)
    assert "30" in err and "4" in err


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named(imagenet_root, tmp_path, capsys, workers):
    """The paragraph names the file; from a DataLoader worker it carries no worker traceback."""
    for split in ("train", "val"):
        (imagenet_root / split / "n01440764" / "n01440764_9.JPEG").write_bytes(b"this is not a JPEG")
    err = _user_error([*SMOKE, "data=imagenet", f"data.root={imagenet_root}", "data.image_size=32",
                       f"data.num_workers={workers}", "data.batch_size=64", "data.val_batch_size=64",
                       "data.train_samples_per_epoch=null", "data.val_samples=null"], tmp_path, capsys)
    assert "n01440764_9.JPEG" in err
    assert "Original Traceback" not in err and "DataLoader worker" not in err and len(err.strip().splitlines()) <= 3


def test_a_corrupt_image_met_after_training_keeps_the_checkpoints_and_says_how_to_go_on(imagenet_root, tmp_path, capsys,
                                                                                       metrics_of):
    """A bad val/ image is first read by the test pass, after all training (the held-out selection split comes
    from train/): the message says the checkpoints are kept and gives the command that goes on from them."""
    bad = imagenet_root / "val" / "n01440764" / "n01440764_0.JPEG"
    bad.write_bytes(b"")
    overrides = [*SMOKE, "data=imagenet", f"data.root={imagenet_root}", "data.train_samples_per_epoch=8"]
    err = _user_error(overrides, tmp_path, capsys)
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert "n01440764_0.JPEG' cannot be decoded" in err and metrics_of(run_dir)["epochs"] == 2
    assert f"The checkpoints written so far are kept in {last.parent}; once that is fixed, `python train.py " in err
    assert f"ckpt_path={last} hydra.run.dir={run_dir}` goes on from the last one" in err
    bad.unlink()  # the fix; then the command it printed (in process, as train.py's entry point runs it)
    summary = main(compose([*overrides, f"ckpt_path={last}"], output_dir=str(run_dir)))
    assert summary["status"] == "completed" and metrics_of(run_dir)["global_step"] == 4  # no step trained twice


def test_nan_loss_stops_keeps_last_good_checkpoint_and_names_the_step(tmp_path, capsys, metrics_of):
    # Epoch 0 trains at the warm-up lr; epoch 1 jumps to an absurd lr and the loss blows up.
    err = _user_error([*SMOKE, "trainer.max_epochs=3", "optimizer.lr=1e38", "scheduler.warmup_t=1",
                       "scheduler.warmup_lr_init=1e-4"], tmp_path, capsys)
    assert "step" in err and "last.ckpt" in err
    assert err.count("are kept in") == 1, "said once, by the NaN message itself"
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = metrics_of(run_dir)
    assert metrics["status"].startswith("failed") and metrics["epochs"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("override,expected", [("experiment=nope", "table2_inpainting"), ("mixer=nope", "afno"),
                                               ("mixer=afnoo", "Did you mean mixer=afno?"),
                                               ("data=imagenett", "Did you mean data=imagenet?"),
                                               # a row of the table, among that table's rows (was Hydra's exit 1)
                                               ("paper_model=table2/gfnet",
                                                "Did you mean paper_model=table2/gfn? Options: table2/afno, table2/attention"),
                                               # null for a group: Hydra's ValueError and a stack trace, for every group
                                               ("logger=null", "logger=csv logs to CSV files without W&B"),
                                               ("paper_model=null", "write ~paper_model to drop the paper row"),
                                               ("optimizer=null", "every run needs one of configs/optimizer/")])
def test_unknown_config_names_list_valid_ones_without_traceback(train, override, expected):
    result = train(override, "debug=smoke")
    assert result.returncode == 2, "one paragraph and exit status 2, as every other bad input"
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    value = override.split("=")[1]
    assert value in result.stderr and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_user_error_from_the_command_line_has_no_traceback(train):
    result = train("debug=smoke", "mixer.name=nope", "count_flops=false")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "unknown mixer 'nope'" in result.stderr


@pytest.mark.parametrize("override,says", [
    ("data.root=/data/dätä", "data.root='/data/dätä'"),        # a non-ASCII path: show the quoted form
    ("data.root=/données/x", "data.root='/données/x'"),
    ("mixer.sparsity_threshold=[1,2", "Close every bracket"),  # an unclosed bracket
    ("data.root='/data/x", "Close every bracket and quote"),   # an unclosed quote
])
def test_override_syntax_errors_name_the_override_and_the_fix(override, says):
    from afno_repro.config import override_syntax_message

    message = override_syntax_message(["-m", override, "seed=0,1"])
    assert message is not None and f"`{override}`" in message and says in message
    assert "LexerNoViableAltException" not in message
    assert override_syntax_message(["-m", "seed=0,1", "data.root='/data/dätä'", "mixer.x=[1,2]", "--cfg", "job"]) is None


def test_a_non_ascii_path_through_train_py_is_one_paragraph(train):
    result = train("data.root=/data/dätä")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "Lexer" not in result.stderr
    assert result.stderr.startswith("error:") and "\"data.root='/data/dätä'\"" in result.stderr


def test_a_misspelt_key_names_the_closest_one():
    """Hydra exited 1 with its stack-trace hint and advised +trainer.max_epoch=5, which only moved the typo on."""
    from afno_repro.config import unknown_key

    message = unknown_key(["debug=smoke", "trainer.max_epoch=5"])
    assert message.startswith("trainer.max_epoch: this run's config has no key 'max_epoch' under trainer. "
                              "Did you mean trainer.max_epochs?")
    assert "Did you mean data.root?" in unknown_key(["experiment=table2_inpainting", "data.roott=/data/imagenet"])
    # Keys that exist and an added key pass untouched.
    assert unknown_key(["debug=smoke", "trainer.max_epochs=5", "+trainer.detect_anomaly=false"]) is None
    # A sweep is checked at its first job, where Hydra would stop: the misspelt key may be swept or fixed.
    assert unknown_key(["-m", "debug=smoke", "seed=0,1", "trainer.max_epochs=3", "mixer.num_blocks=2,4"]) is None
    for sweep in (["seed=0,1", "trainer.max_epoch=3"], ["seed=range(2)", "trainer.max_epoch=3,4"]):
        message = unknown_key(["-m", "debug=smoke", *sweep])
        assert message.startswith("trainer.max_epoch: the config of the sweep's first job (") and "seed=0" in message
        assert "Did you mean trainer.max_epochs?" in message
    # A key only the first job lacks (attention has no blocks) is named with that job: Hydra fails there too.
    assert "(mixer=attention)" in unknown_key(["-m", "debug=smoke", "mixer=attention,afno", "mixer.num_blocks=4"])


@pytest.mark.slow
def test_a_misspelt_key_through_the_command_line_exits_2(train):
    result = train("debug=smoke", "mixer.num_block=4")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    assert "error: mixer.num_block: this run's config has no key 'num_block' under mixer. Did you mean mixer.num_blocks?" \
        in result.stderr


def test_a_run_folder_hydra_would_ignore_is_refused_before_anything_runs(train, tmp_path):
    """fewshot_demo is a sweep by itself: Hydra ignored a hydra.run.dir given to it (and a hydra.sweep.dir given to
    one run) without a word, and the runs landed in outputs/ of the working folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = train("experiment=fewshot_demo", f"hydra.run.dir={tmp_path / 'mine'}", cwd=cwd)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: hydra.run.dir={tmp_path / 'mine'} would be ignored: this command is a sweep (experiment=fewshot_demo "
        "sets hydra.mode: MULTIRUN), whose runs go to numbered folders under hydra.sweep.dir; give "
        f"hydra.sweep.dir={tmp_path / 'mine'} instead (or hydra.mode=RUN for one run of it in that folder).")
    result = train("debug=smoke", f"hydra.sweep.dir={tmp_path / 'mine'}", cwd=cwd)
    assert result.returncode == 2 and f"give hydra.run.dir={tmp_path / 'mine'} instead, or add -m" in result.stderr
    assert not (tmp_path / "mine").exists() and not any(cwd.iterdir())


def test_the_resume_command_of_a_run_in_a_sweep_resumes_it_in_its_own_folder():
    """The command an interrupted run prints: for a job of fewshot_demo (a sweep by itself) it says hydra.mode=RUN,
    else Hydra ignored its hydra.run.dir (and train.py now refuses it); a job of a -m sweep needs nothing more."""
    from afno_repro.config import ignored_output_dir
    from afno_repro.runs import resume_command

    demo = resume_command(["experiment=fewshot_demo", "pretrained=null"], "/r/checkpoints/last.ckpt", "/r")
    assert demo == ("python train.py experiment=fewshot_demo pretrained=null ckpt_path=/r/checkpoints/last.ckpt "
                    "hydra.run.dir=/r hydra.mode=RUN")
    table = resume_command(["experiment=table2_inpainting", "paper_model=table2/afno"], "/r/last.ckpt", "/r")
    assert table == "python train.py experiment=table2_inpainting paper_model=table2/afno ckpt_path=/r/last.ckpt hydra.run.dir=/r"
    assert ignored_output_dir(demo.split()[2:]) is None and ignored_output_dir(table.split()[2:]) is None


def test_a_null_callback_or_logger_is_switched_off_and_a_non_config_entry_is_refused(tmp_path, capsys):
    # <group>.<name>=null is the usual way to switch one callback or logger off (it was an AttributeError).
    from pytorch_lightning.callbacks import LearningRateMonitor

    from afno_repro.train import build

    cfg = compose(["debug=smoke", "callbacks.lr_monitor=null", "logger.csv=null"], output_dir=str(tmp_path / "run"))
    built = build(cfg)
    assert not any(isinstance(callback, LearningRateMonitor) for callback in built.trainer.callbacks)
    assert built.trainer.loggers == []
    err = _user_error([*SMOKE, "+callbacks.foo=1"], tmp_path, capsys)
    assert "callbacks.foo=1 is not a callbacks config" in err and "~callbacks.foo" in err
