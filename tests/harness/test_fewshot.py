"""Pretrain -> finetune chaining as a user meets it: a missing pretraining run, an explicit checkpoint,
a checkpoint of another trunk; the other selection protocols; and finding runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from afno_repro.config import compose
from afno_repro.pretrained import pretraining_command
from afno_repro.runs import find_runs


def test_missing_pretraining_names_the_command_that_makes_it(tmp_path, capsys):
    """In process, with no pretraining run below runs_root (README's paper-scale finetuning commands meet
    the same through the CLI in tests/test_readme.py)."""
    from afno_repro.train import main

    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(compose(["experiment=table3_fewshot", "debug=smoke", f"runs_root={tmp_path / 'outputs'}"],
                     output_dir=str(run_dir)))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "found no completed pretraining run" in err
    assert "python train.py experiment=table2_inpainting paper_model=table2/afno debug=smoke" in err
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_explicit_checkpoint_heldout_selection_and_a_trunk_that_does_not_fit(tmp_path, metrics_of, table2_smoke, capsys):
    """From the AFNO row of README's Table 2 smoke sweep (the session's table2_smoke); in process."""
    from afno_repro.train import main

    pretrain = Path(table2_smoke["rows"]["table2/afno"]["run_dir"])
    checkpoint = metrics_of(pretrain)["best_checkpoint"]

    finetune = tmp_path / "finetune"
    main(compose(["experiment=table3_fewshot", "debug=smoke", f"pretrained={checkpoint}", "data.selection=heldout",
                  f"runs_root={tmp_path}"], output_dir=str(finetune)))
    printed = capsys.readouterr().out
    metrics = metrics_of(finetune)
    assert metrics["status"] == "completed"
    assert metrics["init"]["how"] == "given" and metrics["init"]["checkpoint"] == checkpoint
    assert metrics["init"]["run_dir"] == str(pretrain) and metrics["init"]["paper_row"] == "table2/afno"
    assert metrics["init"]["head_initialised"] == ["head.proj.weight", "head.proj.bias"]
    # Fold 0 (3 of the 16 sorted test images: 16 // 5, as DatasetGAN cuts its folds) selects; the other 13,
    # the one left over included, are reported, by the test loop and by the evaluation history alike.
    heldout = metrics["protocols"]["heldout"]
    assert metrics["selection"]["metric"] == "val/miou_selection"
    assert metrics["test"]["num_images"] == heldout["num_images"] == 13 and heldout["selection_images"] == 3
    assert metrics["result"]["miou"] == pytest.approx(heldout["miou"], abs=1e-3)
    assert set(metrics["protocols"]) == {"max_over_run", "heldout", "fivefold"}
    assert "pretrained" in printed and "pixel prior" in printed

    with pytest.raises(SystemExit) as exit_info:
        main(compose(["experiment=table3_fewshot", "debug=smoke", f"pretrained={checkpoint}", "backbone.depth=3",
                      f"runs_root={tmp_path}"], output_dir=str(tmp_path / "deeper")))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "does not fit this run's backbone" in err and "blocks.2." in err


def test_fivefold_reports_mean_and_std_over_folds(tmp_path, metrics_of):
    run_dir = tmp_path / "fivefold"
    from afno_repro.train import main

    main(compose(["experiment=table3_fewshot", "debug=smoke", "pretrained=null", "data.selection=fivefold",
                  f"runs_root={tmp_path}"], output_dir=str(run_dir)))
    metrics = metrics_of(run_dir)
    fivefold = metrics["protocols"]["fivefold"]
    assert metrics["status"] == "completed"
    assert metrics["init"]["checkpoint"] is None and len(fivefold["folds"]) == 5
    assert metrics["result"]["miou"] == fivefold["miou"] and metrics["result"]["miou_std"] == fivefold["miou_std"]
    assert "DatasetGAN's protocol" in metrics["result"]["protocol"]


def test_pretraining_command_carries_what_shapes_the_trunk():
    cfg = compose(["experiment=table6_finetune", "paper_model=table6/afno_hard35", "debug=smoke"])
    needs = {"experiment": "table6_pretrain", "paper_table": "table6", "data_root": "/path/to/imagenet"}
    assert pretraining_command(cfg, needs, ["paper_model=table6/afno_hard35", "debug=smoke", "seed=3"]) == [
        "python", "train.py", "experiment=table6_pretrain", "paper_model=table6/afno_hard35", "debug=smoke"]
    assert pretraining_command(cfg, needs, ["backbone.depth=3"])[-2:] == ["data.root=/path/to/imagenet",
                                                                          "backbone.depth=3"]


def test_find_runs_matches_fields_and_sorts_newest_first(tmp_path):
    def write(name: str, **record) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps(record))
        time.sleep(0.01)

    write("old", status="completed", experiment="table2_inpainting", paper_row="table2/afno")
    write("failed", status="failed", experiment="table2_inpainting", paper_row="table2/afno")
    write("other_row", status="completed", experiment="table2_inpainting", paper_row="table2/gfn")
    write("new", status="completed", experiment="table2_inpainting", paper_row="table2/afno")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    found = find_runs(tmp_path, experiment="table2_inpainting", paper_row="table2/afno")
    assert [Path(r["metrics_file"]).parent.name for r in found] == ["new", "old"]
    assert len(find_runs(tmp_path, status=None)) == 4
    assert find_runs(tmp_path / "absent") == []


def test_a_moved_runs_root_is_found_where_it_is_now(tmp_path):
    """Records keep the absolute paths they were written at: after `mv outputs elsewhere`, pretrained=auto said
    there was no completed run and told the user to train it again, and the report loaded the old copy's models."""
    import shutil

    run = tmp_path / "before" / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    (run / "metrics.json").write_text(json.dumps({
        "status": "completed", "experiment": "table6_pretrain", "run_dir": str(run),
        "best_checkpoint": str(run / "checkpoints" / "best.ckpt"), "init": {"checkpoint": None},
        "overrides": [f"hydra.run.dir={run}"]}))
    shutil.move(tmp_path / "before", tmp_path / "after")
    (found,) = find_runs(tmp_path / "after", experiment="table6_pretrain")
    moved = tmp_path / "after" / "runs" / "a"
    assert found["run_dir"] == str(moved) and found["best_checkpoint"] == str(moved / "checkpoints" / "best.ckpt")
    assert Path(found["best_checkpoint"]).is_file() and found["moved_from"] == str(run)
    assert find_runs(tmp_path / "before") == []
    # A run found where it was written is left as recorded.
    here = tmp_path / "here"
    here.mkdir()
    (here / "metrics.json").write_text(json.dumps({"status": "completed", "run_dir": str(here)}))
    (unmoved,) = find_runs(here)
    assert unmoved == {"status": "completed", "run_dir": str(here), "metrics_file": str(here / "metrics.json")}


@pytest.mark.slow
def test_fewshot_demo_makes_its_pretraining_run_first(train, tmp_path):
    """`experiment=fewshot_demo debug=smoke runs_root=mine` on an empty folder: it runs the (smoke) demo
    inpainting first, below the same runs_root, then finetunes from it and trains from scratch, and the summary
    shows both; nothing goes to the default outputs/ (the README's `make fewshot-demo` test covers that one)."""
    result = train("experiment=fewshot_demo", "debug=smoke", "runs_root=mine", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No pretraining run found below mine (runs placed elsewhere with hydra.run.dir= are not searched" in result.stdout
    assert "making it first with\n  python train.py debug=smoke runs_root=mine" in result.stdout
    assert not (tmp_path / "outputs").exists()
    (pretraining,) = find_runs(tmp_path / "mine" / "runs", task="inpainting")
    (sweep_dir,) = (tmp_path / "mine" / "multirun").glob("*/*_fewshot_demo")
    rows = {bool(r["init"]["checkpoint"]): r for r in json.loads((sweep_dir / "summary.json").read_text())}
    assert rows[True]["init"]["checkpoint"] == pretraining["best_checkpoint"] and rows[False]["init"]["how"] == "from scratch"
    assert "| afno pretrained (demo) |" in result.stdout and "| afno scratch |" in result.stdout


def test_pretrained_auto_names_a_runs_root_that_does_not_exist(tmp_path):
    """A misspelled runs_root: the message says the folder does not exist, and the command it prints keeps it."""
    from afno_repro.pretrained import resolve_pretrained

    cfg = compose(["experiment=table6_finetune", "paper_model=table6/afno", "debug=smoke", f"runs_root={tmp_path}/nope"])
    with pytest.raises(ValueError, match=r"below .*nope \(that folder does not exist: is runs_root= spelled right\?\)"
                       r"(.|\n)*python train.py experiment=table6_pretrain paper_model=table6/afno debug=smoke "
                       r"runs_root=.*nope\n"):
        resolve_pretrained(cfg, ["paper_model=table6/afno", "debug=smoke", f"runs_root={tmp_path}/nope"])


def test_a_bad_pretrained_file_is_named_as_pretrained(tmp_path):
    """The checkpoint checks of resuming, with the option the user typed in the message."""
    from torch import nn

    from afno_repro.pretrained import load_pretrained_backbone

    empty = tmp_path / "best.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^pretrained=.*best\.ckpt is empty \(0 bytes\)"):
        load_pretrained_backbone(nn.Linear(2, 2), empty)


def test_a_run_that_never_evaluated_says_what_it_scored(tmp_path, capsys):
    """trainer.max_epochs below check_val_every_n_epoch: no evaluation ran, so nothing was selected; the record
    and the printed summary say the end-of-training weights were scored, and name no image grid that was
    never written."""
    from afno_repro.train import main

    run_dir = tmp_path / "run"
    record = main(compose(["experiment=table3_fewshot", "debug=smoke", "pretrained=null", "trainer.max_epochs=1",
                           "trainer.check_val_every_n_epoch=2", f"runs_root={tmp_path}"], output_dir=str(run_dir)))
    assert record["status"] == "completed"
    assert record["result"]["protocol"].startswith("no evaluation during training (1 epoch(s), evaluated every 2)")
    assert "maximum over the run" not in record["result"]["protocol"]
    printed = capsys.readouterr().out
    assert f"run directory: {run_dir}  (metrics.json, checkpoints/)" in printed
    assert not (run_dir / "images" / "val_latest.png").exists()


@pytest.mark.parametrize("experiment", ["table2_inpainting", "table5_classification"])
def test_inpainting_and_classification_runs_that_never_evaluated_say_so_too(tmp_path, experiment):
    """The same case on the other tasks recorded 'checkpoint chosen on a held-out selection split' (inpainting)
    or 'the best top-1 on the validation split' (classification) for a selection that never happened."""
    from afno_repro.train import main

    record = main(compose([f"experiment={experiment}", "debug=smoke", "trainer.check_val_every_n_epoch=5",
                           "run_baselines=false", "count_flops=false"], output_dir=str(tmp_path / "run")))
    assert record["status"] == "completed"
    assert record["result"]["protocol"].startswith("no evaluation during training (2 epoch(s), evaluated every 5): the "
                                                   "weights at the end of training")
    assert record["test"]["checkpoint"] == "last weights (no evaluation ran, so none was selected)"
