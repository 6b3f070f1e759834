"""A failure loses nothing and says what to do: options checked before training, run folders never
overwritten, Ctrl-C leaves a resumable record, `mixer=` in a paper experiment picks that table's row."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from afno_repro.config import compose, missing_paper_row
from readme import user_env

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ("debug=smoke", "run_baselines=false", "count_flops=false")


def _refused(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "error:" in result.stderr
    return result.stderr


@pytest.mark.parametrize("override,named", [
    ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("seed=abc", "seed"),
    ("backbone.depth=0", "backbone.depth"),
    ("run_baselines=abc", "run_baselines"),
    ("optimizer.lr=abc", "optimizer.lr"),
    ("data.batch_size=abc", "data.batch_size"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch"),
    ("data.image_size=0", "data.image_size"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    ("task.compile=no", "task.compile='no' is not true or false"),  # a truthy string: it compiled the model
    ("trainer.devices=0", "trainer.devices=0 is no number of devices"),  # Lightning's own error, exit 1, before
    ("paper.column=celeba", "paper.column='celeba' is not a column of the paper"),  # smoke data: it was never read
    # Each of these ended in a traceback from timm, torch or Lightning, or (the last three) trained nothing or never
    # wrote last.ckpt, silently.
    ("scheduler.t_initial=0", "scheduler.t_initial=0 is not a schedule length"),
    ("scheduler.lr_min=-1", "scheduler.lr_min=-1 is not valid"),
    ("+optimizer.betas=[0.9]", "is not a pair of Adam betas"),
    ("+trainer.val_check_interval=0", "trainer.val_check_interval=0 is not valid"),
    ("+trainer.max_steps=0", "trainer.max_steps=0 is not a step limit"),
    ("+trainer.limit_train_batches=0", "trainer.limit_train_batches=0 is not valid"),
    ("last_checkpoint_every_n_epochs=0", "last_checkpoint_every_n_epochs=0 is not valid"),
    # Hydra's advice for a misspelt key (use +key=) led to a TypeError traceback from the class.
    ("+trainer.max_epoch=5", "trainer.max_epoch is not an option of Trainer: remove it. Did you mean trainer.max_epochs?"),
    ("+optimizer.momentum=0.9", "optimizer.momentum is not an option of AdamW: remove it. Its options: lr, betas,"),
    # The project's own classes too (they ended in Hydra's error and exit status 1).
    ("+data.batchsize=3", "data.batchsize is not an option of InpaintingDataModule: remove it. Did you mean data.batch_size?"),
    ("+backbone.depht=3", "backbone.depht is not an option of ViT: remove it. Did you mean backbone.depth?"),
    ("+task.run_baseline=false", "task.run_baseline is not an option of InpaintingTask: remove it. Did you mean task.run_baselines?"),
])
def test_bad_run_options_are_refused_before_training(tmp_path, capsys, override, named):
    """In process, as train.py's entry point calls it (test_errors.py runs one refusal through the CLI)."""
    from afno_repro.train import main

    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(compose([*SMOKE, override], output_dir=str(run_dir)))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and "error:" in err
    assert named in err
    assert not list((run_dir / "checkpoints").glob("*.ckpt")), "it trained before refusing"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("bad", ["abc", -1, True, [1, 2]], ids=["text", "negative", "bool", "list"])
def test_every_checked_numeric_option_refuses_a_wrong_type_or_value(tmp_path, bad):
    """The whole class of case, option by option: each numeric option check_options guards names itself,
    what it must be and an example, for a value of the wrong type and one out of range."""
    from omegaconf import OmegaConf

    from afno_repro.train import _CHECKED_OPTIONS, UserFacingError, check_options

    cfg = compose(list(SMOKE), output_dir=str(tmp_path / "run"))
    check_options(cfg, tmp_path / "run")  # the defaults pass
    for option, *_ in _CHECKED_OPTIONS:
        broken = compose(list(SMOKE), output_dir=str(tmp_path / "run"))
        OmegaConf.update(broken, option, bad, force_add=True)
        with pytest.raises(UserFacingError) as refused:
            check_options(broken, tmp_path / "run")
        assert str(refused.value).startswith(f"{option}=") and "e.g." in str(refused.value)


@pytest.mark.parametrize("experiment,reads", [
    ("table2_inpainting", "data=imagenet"), ("table3_fewshot", "data=datasetgan"),
    ("table5_classification", "data=imagenet_classification"), ("table4_cityscapes", "data=cityscapes")])
def test_a_data_root_the_smoke_data_would_ignore_is_refused(tmp_path, experiment, reads):
    """debug=smoke swaps every task's data for an embedded set: a data.root given beside it used to be ignored,
    and a user smoke-testing their own folder got a green run on the photographs."""
    from afno_repro.train import UserFacingError, check_options

    cfg = compose([f"experiment={experiment}", *SMOKE, f"data.root={tmp_path}/mine"], output_dir=str(tmp_path / "run"))
    with pytest.raises(UserFacingError, match=rf"^data.root={tmp_path}/mine would not be read: this run's data is the "
                                              rf"embedded .*, which debug=smoke selects .* e.g. {reads} data.root="):
        check_options(cfg, tmp_path / "run")
    # The fix it names composes and gets past this check once the folder exists (what it holds is the data module's
    # to check); a folder that does not exist is refused here, before the model is built.
    fixed = compose([f"experiment={experiment}", *SMOKE, reads, f"data.root={tmp_path}/mine"], output_dir=str(tmp_path / "run"))
    with pytest.raises(UserFacingError, match=rf"^data.root={tmp_path}/mine does not exist. Set data.root to the folder holding"):
        check_options(fixed, tmp_path / "run")
    (tmp_path / "mine").mkdir()
    check_options(fixed, tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU where there is none")
def test_a_gpu_accelerator_without_a_gpu_is_refused_before_training(tmp_path, capsys):
    from afno_repro.train import UserFacingError, check_options

    cfg = compose([*SMOKE, "trainer.accelerator=gpu"], output_dir=str(tmp_path / "run"))
    with pytest.raises(UserFacingError, match=r"trainer.accelerator=gpu but torch finds no CUDA GPU here"):
        check_options(cfg, tmp_path / "run")


@pytest.mark.parametrize("bad", ["no", "off", 1], ids=["no", "off", "one"])
def test_every_switch_refuses_what_is_not_true_or_false(tmp_path, bad):
    from omegaconf import OmegaConf

    from afno_repro.train import _SWITCHES, UserFacingError, check_options

    for option in _SWITCHES:
        broken = compose(list(SMOKE), output_dir=str(tmp_path / "run"))
        OmegaConf.update(broken, option, bad, force_add=True)
        with pytest.raises(UserFacingError) as refused:
            check_options(broken, tmp_path / "run")
        assert str(refused.value) == f"{option}={bad!r} is not true or false; write {option}=true or {option}=false."


def test_a_failure_in_the_end_of_run_evaluation_keeps_the_training_record(tmp_path, capsys, monkeypatch):
    from afno_repro.tasks import baselines
    from afno_repro.train import main

    def broken(image, mask, cache=None):
        raise ValueError("biharmonic inpainting failed on this image")

    monkeypatch.setitem(baselines.BASELINES, "biharmonic", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(compose(["debug=smoke", "count_flops=false", "logger=csv"], output_dir=str(run_dir)))
    assert exit_info.value.code == 2 and "biharmonic inpainting failed" in capsys.readouterr().err
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed: evaluation" and record["epochs"] == 2
    assert Path(record["best_checkpoint"]).is_file() and Path(record["last_checkpoint"]).is_file()


def _main(overrides, run_dir: Path) -> dict | None:
    """train.py's entry point, in process (as `python train.py <overrides> hydra.run.dir=<run_dir>` calls it)."""
    from afno_repro.train import main

    return main(compose(list(overrides), output_dir=str(run_dir)))


def _guard(run_dir: Path, ckpt_path: str | None = None) -> None:
    """The Hydra callback train.py runs before Hydra writes ``.hydra/`` into the run folder, called as Hydra calls it."""
    from omegaconf import OmegaConf

    from afno_repro.runs import RunFolderGuard

    RunFolderGuard().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)}}, "ckpt_path": ckpt_path}))


def test_a_sweep_folder_that_holds_runs_is_refused_unless_it_resumes(tmp_path, capsys):
    """Hydra writes every job's .hydra/config.yaml before the job can refuse the folder, so a second sweep into
    a folder of finished runs rewrote their configs; the guard refuses it before any job starts."""
    from omegaconf import OmegaConf

    from afno_repro.runs import RunFolderGuard

    sweep = tmp_path / "sweep"
    assert _main(SMOKE, sweep / "0_seed-0")["status"] == "completed"

    def start(resume):
        RunFolderGuard().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "resume": resume}))

    with pytest.raises(SystemExit) as exit_info:
        start(False)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "already holds 1 run(s) (0_seed-0)" in err and "resume=auto" in err
    start("auto")  # make reproduce-all's way: complete or skip each run by its own record
    shutil.rmtree(sweep / "0_seed-0")
    (sweep / "0_seed-0" / ".hydra").mkdir(parents=True)  # a job Hydra set up but that never ran loses nothing
    start(False)


def test_resume_auto_lets_a_single_run_back_into_its_folder_with_its_own_overrides(tmp_path, capsys):
    """README's resume=auto, for one run as for a sweep: the guard used to refuse a single run's folder whatever
    resume said. It lets the same command back in (the run then completes, resumes or restarts it) and refuses a
    changed one before Hydra rewrites the folder's config."""
    from omegaconf import OmegaConf

    from afno_repro.runs import RunFolderGuard

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- debug=smoke\n- resume=auto\n- hydra.run.dir={run}\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")

    def start(*overrides, resume="auto"):
        RunFolderGuard().on_run_start(OmegaConf.create({
            "hydra": {"run": {"dir": str(run)}, "overrides": {"task": list(overrides)}}, "resume": resume, "ckpt_path": None}))

    start("resume=auto", "debug=smoke", f"hydra.run.dir={run}", "runs_root=elsewhere")  # launch options may differ
    for changed, said in ((("debug=smoke", "optimizer.lr=0.5"), "(added: optimizer.lr=0.5)"), ((), "(left out: debug=smoke)")):
        with pytest.raises(SystemExit) as exit_info:
            start("resume=auto", *changed, f"hydra.run.dir={run}")
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"resume=auto continues the run in {run}" in err and said in err
    with pytest.raises(SystemExit):
        start("debug=smoke", f"hydra.run.dir={run}", resume=False)
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_auto_through_the_command_line_skips_a_completed_run(train, tmp_path, metrics_of):
    run_dir = tmp_path / "run"
    first = train(*SMOKE, "resume=auto", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = metrics_of(run_dir)
    again = train(*SMOKE, "resume=auto", f"hydra.run.dir={run_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"already completed, not run again (resume=auto): {run_dir}" in again.stdout
    assert metrics_of(run_dir) == before


@pytest.mark.slow
def test_a_run_folder_that_holds_a_run_is_never_overwritten(train, tmp_path, metrics_of, capsys):
    """The refusal through the command line (Hydra's callback stops the run before Hydra writes its
    config there); training and resuming in place in process, as train.py's entry point calls them."""
    run_dir = tmp_path / "run"
    assert _main(SMOKE, run_dir)["status"] == "completed"
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    err = _refused(train(*SMOKE, "seed=1", f"hydra.run.dir={run_dir}"))
    assert str(run_dir) in err and "ckpt_path=" in err
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
    # Asked to resume its own checkpoint in place, it may (the Ctrl-C test below does so through the
    # command line, with the command the interrupted run recorded).
    last = run_dir / "checkpoints" / "last.ckpt"
    _guard(run_dir, str(last))
    assert _main([*SMOKE, "trainer.max_epochs=3", f"ckpt_path={last}"], run_dir)["status"] == "completed"
    assert metrics_of(run_dir)["epochs"] == 3
    assert not (run_dir / "checkpoints" / "last-v1.ckpt").exists()
    # Started anew there in process, train.py's own check refuses it too, and keeps the run's record.
    with pytest.raises(SystemExit) as exit_info:
        _main([*SMOKE, "seed=1"], run_dir)
    assert exit_info.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert metrics_of(run_dir)["epochs"] == 3


@pytest.mark.slow
def test_a_run_folder_retried_after_a_failure_before_training_is_allowed(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        _main([*SMOKE, "seed=abc"], run_dir)
    assert exit_info.value.code == 2 and "seed=" in capsys.readouterr().err
    _guard(run_dir)  # Hydra's callback lets the retry in (it would exit 2 otherwise)
    assert _main(SMOKE, run_dir)["status"] == "completed"


def test_unwritable_run_and_checkpoint_folders_fail_before_training(tmp_path, capsys):
    # Tests run as root, for whom permissions do not block writes: a file where a folder must go
    # blocks them for everyone. The run folder is Hydra's callback's to check (Hydra creates it).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        _guard(blocker / "run")
    err = capsys.readouterr().err
    # Named as a file in the way, not as permissions (the advice was `chmod u+w`).
    assert exit_info.value.code == 2 and "error:" in err and "chmod" not in err
    assert f"cannot create the run folder {blocker / 'run'}: {blocker} is a file, so no folder can be made there" in err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        _main(SMOKE, run_dir)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and "checkpoint folder" in err


@pytest.mark.slow
def test_ctrl_c_records_the_run_as_interrupted_with_the_resume_command(train_cmd, tmp_path, metrics_of,
                                                                       terminal_sigint):
    run_dir = tmp_path / "run"
    slow = (*SMOKE, "trainer.max_epochs=50", "data.train_samples_per_epoch=64", f"hydra.run.dir={run_dir}")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = subprocess.Popen(train_cmd(*slow), cwd=tmp_path, env=user_env({"TMPDIR": str(temporary)}),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=terminal_sigint)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "interrupted" and "Traceback" not in err
    # The quick exit after Ctrl-C skips the exit handlers, yet wandb's temporary folders are removed.
    assert not [path.name for path in temporary.iterdir() if "wandb" in path.name], list(temporary.iterdir())
    command = metrics["resume_command"]
    assert f"ckpt_path={last}" in command and command in err
    # The recorded command resumes the run in its own folder and completes it.
    words = shlex.split(command.replace("trainer.max_epochs=50", "trainer.max_epochs=3"))
    assert words[:2] == ["python", "train.py"]
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *words[2:]], cwd=tmp_path, env=user_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics_of(run_dir)["status"] == "completed"


def test_gflops_are_counted_at_the_training_resolution(tmp_path):
    from afno_repro.train import main

    records = {}
    for size in (32, 48):
        run_dir = tmp_path / f"size{size}"
        records[size] = main(compose(["debug=smoke", "run_baselines=false", "trainer.max_epochs=1",
                                      f"data.image_size={size}"], output_dir=str(run_dir)))
        assert json.loads((run_dir / "metrics.json").read_text())["gflops"] == records[size]["gflops"]
    small, large = records[32], records[48]
    assert small["gflops_image_size"] == 32 and large["gflops_image_size"] == 48
    # backbone.img_size stays 32 in debug=smoke; the cost follows the 1.5x larger images (2.25x tokens).
    assert large["gflops"] > 2 * small["gflops"]


@pytest.mark.parametrize("experiment,mixer,width,lr", [
    ("table2_inpainting", "attention", 768, 1e-4),
    ("table2_inpainting", "long_short", 768, 1e-3),
    ("table2_inpainting", "gfn", 768, 1e-3),
    ("table2_inpainting", "afno", 750, 1e-3),
    ("table6_pretrain", "fno", 64, 1e-3),
    ("table6_pretrain", "afno_static", 124, 1e-3),
    ("table6_pretrain", "afno", 584, 1e-3),
])
def test_paper_model_selects_the_papers_row(experiment, mixer, width, lr):
    table = experiment.split("_")[0]
    cfg = compose([f"experiment={experiment}", f"paper_model={table}/{mixer}"])
    assert cfg.mixer.name == mixer and cfg.backbone.embed_dim == width
    assert cfg.optimizer.lr == pytest.approx(lr)
    assert cfg.paper.table == table and cfg.paper.row == mixer
    # Without paper_model= the experiment trains its AFNO row; mixer=afno asks for the same.
    if mixer == "afno":
        assert compose([f"experiment={experiment}"]) == cfg == compose([f"experiment={experiment}", "mixer=afno"])


def test_table2_attention_row_has_the_papers_heads_width_and_lr():
    cfg = compose(["experiment=table2_inpainting", "paper_model=table2/attention"])
    assert (cfg.backbone.embed_dim, cfg.mixer.num_heads, cfg.optimizer.lr) == (768, 16, 1e-4)
    assert cfg.paper.row == "attention"


@pytest.mark.slow
def test_a_mixer_without_a_row_is_refused_by_train_py(train):
    err = _refused(train("experiment=table2_inpainting", "mixer=fno"))
    assert "no row for mixer=fno" in err
    for row in ("afno", "attention", "gfn", "long_short"):
        assert row in err


def test_a_mixer_without_a_row_lists_the_rows():
    assert missing_paper_row(["experiment=table2_inpainting", "paper_model=table2/gfn"]) is None
    assert missing_paper_row(["experiment=table6_pretrain", "paper_model=table6/afno_hard35"]) is None
    assert missing_paper_row(["experiment=table6_pretrain", "paper_model=table6/afno_hard35", "mixer=afno"]) is None
    message = missing_paper_row(["experiment=table2_inpainting", "mixer=fno"])
    assert "no row for mixer=fno" in message
    for row in ("afno", "attention", "gfn", "long_short"):
        assert row in message
    # Sweeps and the ablations' own experiments are checked the same way.
    assert "no row for mixer=gfn" in missing_paper_row(["experiment=fig4_sparsity", "mixer=gfn"])
    assert "no row for mixer=fno" in missing_paper_row(["experiment=table2_inpainting", "mixer=afno,fno"])


def test_a_mixer_on_top_of_another_row_names_the_row_to_ask_for():
    # Hydra would compose it: the gfn mixer inside the AFNO row's width, labelled as the AFNO row.
    message = missing_paper_row(["experiment=table2_inpainting", "mixer=gfn"])
    assert "paper_model=table2/gfn" in message and "~paper_model" in message
    # The suggested command keeps the user's other overrides: without its data.root it would fail next.
    message = missing_paper_row(["-m", "experiment=table2_inpainting", "mixer=gfn", "data.root=/data/my imagenet"])
    assert "`python train.py -m experiment=table2_inpainting paper_model=table2/gfn 'data.root=/data/my imagenet'`" in message
    message = missing_paper_row(["experiment=table4_cityscapes", "paper_model=table4/afno_25pct", "mixer=gfn"])
    assert "paper_model=table4/gfn" in message
    # A row without a pluggable mixer (Swin) ignores the mixer group: nothing to refuse.
    assert missing_paper_row(["experiment=fig1_trunks", "paper_model=fig1/swin_t", "mixer=gfn"]) is None


def test_without_a_paper_row_any_mixer_trains_with_the_experiments_recipe():
    cfg = compose(["experiment=table2_inpainting", "mixer=fno", "~paper_model"])
    assert cfg.mixer.name == "fno" and cfg.paper.row is None and cfg.trainer.max_epochs == 100
    assert cfg.backbone.depth == compose(["experiment=table2_inpainting"]).backbone.depth
    assert missing_paper_row(["experiment=table2_inpainting", "mixer=fno", "~paper_model"]) is None
    assert missing_paper_row(["experiment=table2_inpainting", "mixer=fno", "~paper_model=null"]) is None  # as recorded
    # Under -m the experiment's row sweep goes with the row; one run, not one per row. Not for a single run,
    # nor for a sweep that names that parameter itself, nor for an experiment that sweeps no rows.
    from afno_repro.config import without_row_sweep

    for multirun in (["-m", "experiment=table2_inpainting"], ["hydra.mode=MULTIRUN", "+experiment=table2_inpainting"]):
        assert without_row_sweep([*multirun, "mixer=fno", "~paper_model"])[-1] == "~hydra.sweeper.params.paper_model"
    for unchanged in (["experiment=table2_inpainting", "mixer=fno", "~paper_model"],
                      ["-m", "experiment=table2_inpainting", "mixer=fno"],
                      ["-m", "experiment=table2_inpainting", "~paper_model", "hydra.sweeper.params.paper_model=table2/gfn"],
                      ["-m", "experiment=fewshot_demo", "~paper_model"]):
        assert without_row_sweep(unchanged) == unchanged, unchanged


def test_a_ctrl_c_python_would_drop_is_raised_at_the_next_boundary():
    """Inside a finalizer (or logging's fork hook) a KeyboardInterrupt would be printed as "Exception
    ignored" and lost: there the handler raises nothing, and the callback raises it at the next batch
    boundary. Anywhere else it raises at once."""
    import sys as _sys

    from afno_repro.callbacks import CtrlCNeverLost

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C, whatever the runner's
    try:
        callback = CtrlCNeverLost()
        callback.on_fit_start(None, None)
        callback.on_train_batch_end()  # nothing pressed: nothing raised
        handler = signal.getsignal(signal.SIGINT)

        class _Iterator:
            def __del__(self) -> None:
                handler(signal.SIGINT, _sys._getframe())  # raises nothing here

        _Iterator().__del__()
        with pytest.raises(KeyboardInterrupt):
            callback.on_train_batch_end()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, _sys._getframe())
        callback.on_fit_end(None, None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize(("environment", "zero"), [
    ({}, True),
    ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"RANK": "3", "LOCAL_RANK": "0"}, False),             # torchrun, first process of the second node
    ({"SLURM_PROCID": "2", "LOCAL_RANK": "0"}, False),     # srun, first task of the second node
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),        # Lightning's launcher on node 1: not the run's rank 0
    ({"LOCAL_RANK": "1"}, False),
])
def test_only_global_rank_zero_writes_a_failed_runs_record(monkeypatch, environment, zero):
    from afno_repro.failures import _is_rank_zero

    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert _is_rank_zero() is zero
