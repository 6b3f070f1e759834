"""Every experiment's every sweep point composes, builds its model and carries the paper's recipe; the paper-scale
plan trains no run twice; Figure 4's block sweep holds parameters equal; a failed row does not stop its sweep;
Figure 1's Swin rows start from the checkpoint folder and its B3 points are Table 4's runs. (Every experiment runs
end to end under debug=smoke in make reproduce-all SCALE=smoke, tests/harness/test_pipeline.py; README's smoke
sweeps run as printed in tests/test_readme.py.)"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from afno_repro.config import CONFIG_DIR, compose, sweep_points
from afno_repro.runs import find_runs

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


# Each experiment's runs, and what its recipe must say (the paper's epochs, data and evaluation).
SWEEPS = {
    "table2_inpainting": 4, "table6_pretrain": 4, "fig4_sparsity": 6, "fig4_blocks": 7, "fig4_sparsity_finetune": 6,
    "table3_fewshot": 12, "table6_finetune": 4, "fewshot_demo": 2,
    "table5_classification": 4, "table4_pretrain": 4, "table4_cityscapes": 5, "fig1_pretrain": 9, "fig1_trunks": 12,
}


@lru_cache(maxsize=None)
def _composed(experiment: str, point: tuple[str, ...]) -> DictConfig:
    """One sweep point's config, composed once for the tests of this file (about half a second each)."""
    return compose([f"experiment={experiment}", *point])


def _pretraining(cfg: DictConfig, point: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """The experiment and overrides of the pretraining run that ``cfg`` (composed with the overrides ``point``)
    starts from with pretrained=auto, or None: the command pretrained=auto names when that run is missing, less
    its data folder (one folder for every run)."""
    from afno_repro.pretrained import _needs, pretraining_command

    needs = _needs(cfg) if cfg.get("pretrained") == "auto" else None
    if not needs:
        return None
    words = [word for word in pretraining_command(cfg, needs, point)[2:] if not word.startswith("data.root=")]
    return words[0].removeprefix("experiment="), tuple(words[1:])


def test_experiments_are_the_papers():
    assert set(SWEEPS) == set(EXPERIMENTS)


def test_sweep_points_read_the_values_as_hydra_expands_them():
    """range(1,4) is three seeds, not ['range(1', '4)']: make reproduce-all would never count such a sweep done."""
    points = sweep_points("table2_inpainting", "+hydra.sweeper.params.seed='range(1,4)'")
    assert len(points) == 12 and points[:3] == [["paper_model=table2/attention", f"seed={seed}"] for seed in (1, 2, 3)]
    assert sweep_points("table2_inpainting", "hydra.sweeper.params.paper_model='choice(table2/gfn,table2/afno)'") == [
        ["paper_model=table2/gfn"], ["paper_model=table2/afno"]]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_point_composes_and_builds(experiment):
    """Each experiment's declared sweep, point by point, composes and instantiates its model."""
    import hydra.utils
    import torch

    points = sweep_points(experiment)
    assert len(points) == SWEEPS[experiment], f"{experiment} sweeps {len(points)} points: {points}"
    for point in points:
        cfg = _composed(experiment, tuple(point))
        if cfg.backbone.get("require_checkpoint"):
            # Figure 1's Swin rows start from the Swin authors' checkpoint: without swin_checkpoints they stop,
            # naming the file and the option.
            with pytest.raises(Exception, match=r"swin_checkpoints=<folder>") as error:
                with torch.device("meta"):
                    hydra.utils.instantiate(cfg.backbone)
            size = {"t": "tiny", "s": "small", "b": "base"}[cfg.backbone.variant]
            assert f"swin_{size}_patch4_window7_224.pth" in str(error.value)
            cfg = compose([f"experiment={experiment}", *point, "backbone.require_checkpoint=false"])
        with torch.device("meta"):
            model = hydra.utils.instantiate(cfg.backbone)
        assert sum(p.numel() for p in model.parameters()) > 0
        if cfg.task._target_.endswith("InpaintingTask"):
            assert cfg.trainer.max_epochs == 100 and cfg.data.name == "imagenet"
            # Table 2's 64 images per optimizer step, and Table 6 / Figure 4 ("A.2 otherwise") the same on any
            # number of devices.
            assert cfg.global_batch == 64
        elif cfg.task._target_.endswith("ClassificationTask"):
            # A.5 (Table 5) and A.3 (the SegFormer pretraining): 300 epochs on ImageNet at 224, weight decay
            # 0.05, clipping 1.0, then cosine to 1e-5.
            assert cfg.trainer.max_epochs == 300 and cfg.data.source == "imagenet" and cfg.data.image_size == 224
            assert cfg.optimizer.weight_decay == 0.05 and cfg.trainer.gradient_clip_val == 1.0
            assert cfg.scheduler.lr_min == 1e-5
            assert model.num_classes == 1000 and cfg.pretrained is None
            if experiment == "table5_classification":
                # A.5: five epochs of warmup; lr 5e-4 x batch / 512 for whatever batch runs (none is declared).
                assert cfg.scheduler.warmup_t == 5 and cfg.task.scheduler_interval == "epoch"
                assert cfg.global_batch is None
                assert cfg.optimizer.lr == pytest.approx(5e-4 * cfg.data.batch_size / 512)  # one process here
            else:
                # A.3: batch 1024 and 6250 warmup iterations, counted in optimizer steps.
                assert cfg.global_batch == 1024 and cfg.task.scheduler_interval == "step"
                assert cfg.scheduler.warmup_t == 6250 and cfg.scheduler.t_in_epochs is False
                assert cfg.scheduler.t_initial == "auto"
                assert cfg.optimizer.lr == 1e-3 and cfg.backbone.mixer_img_size is None
        elif cfg.task._target_.endswith("SegmentationTask") and cfg.data.source == "cityscapes":
            # A.3: 450 epochs at lr 1.2e-4 on 1024x1024 crops of Cityscapes' 19 classes, from the ImageNet run.
            assert cfg.trainer.max_epochs == 450 and cfg.optimizer.lr == 1.2e-4
            # Evaluated 10 times as SegFormer's schedule does, the last time after the last epoch.
            assert cfg.trainer.check_val_every_n_epoch == 45 and cfg.trainer.max_epochs % 45 == 0
            assert cfg.data.image_size == 1024 and model.num_classes == 19
            swin = cfg.paper.row.startswith("swin")
            assert cfg.pretrained == (None if swin else "auto")
            if not swin:
                assert cfg.backbone.mixer_img_size == 224 and cfg.needs.pretrained.experiment.endswith("_pretrain")
        elif experiment != "fewshot_demo":
            # A.4: 2000 epochs, evaluated every 100, no weight decay, no clipping; the row's learning rate.
            assert cfg.trainer.max_epochs == 2000 and cfg.trainer.check_val_every_n_epoch == 100
            # last.ckpt with each evaluation, not after each 2-step epoch.
            assert cfg.callbacks.last_checkpoint.every_n_epochs == 100
            assert cfg.optimizer.weight_decay == 0 and cfg.trainer.gradient_clip_val is None
            assert cfg.optimizer.lr == (1e-4 if cfg.mixer.name == "attention" else 1e-3)
            assert cfg.data.source == "datasetgan" and cfg.data.image_size == 224
            assert model.num_classes == {"celeba_faces": 34, "ade_cars": 20, "lsun_cats": 16}[cfg.paper.column]
            assert cfg.pretrained == "auto" and cfg.task.selection == "max_over_run"


# What names a run, files it or says which run it starts from, never what it trains: two runs that differ only
# here train the same model on the same data the same way. (`needs` and `pretrained_from` name the run a
# finetuning run starts from: what that run trains stands in for them.)
NAMING = ("experiment_name", "tags", "paper", "needs", "pretrained_from", "reproduce", "noise")
WANDB_NAMING = ("group", "job_type", "tags")
# Duplicates the plan knowingly keeps, each with why; one that stops being a duplicate fails the test (remove it).
# Figure 4's lambda sweep has Table 6's AFNO model at its own lambda, 0.01, as one of its points: its noise
# reruns and its best-point verdict read the sweep's own runs, so the point is trained again there rather than
# taken from table6_pretrain / table6_finetune (one ViT-XS/4 pretraining and its few-shot finetuning).
KNOWN_DUPLICATES = {
    ("fig4_sparsity", "paper_model=table6/afno mixer.sparsity_threshold=0.01"):
        ("table6_pretrain", "paper_model=table6/afno"),
    ("fig4_sparsity_finetune", "paper_model=table6/afno mixer.sparsity_threshold=0.01"):
        ("table6_finetune", "paper_model=table6/afno"),
}


def _what_trains(cfg: DictConfig, point: tuple[str, ...]) -> str:
    """A run's composed config (``point``: its overrides) less what only names it (:data:`NAMING`, the W&B run's
    naming), with what the pretraining run it starts from trains in place of that run's name, as text. A null
    value is left out: a key one config lacks reads as null in the other (``cfg.get``), and trains the same."""

    def kept(value):
        if isinstance(value, dict):
            return {key: kept(item) for key, item in value.items() if item is not None}
        if isinstance(value, list):
            return [kept(item) for item in value]
        return value

    container = OmegaConf.to_container(cfg, resolve=True)
    for key in NAMING:
        container.pop(key, None)
    for logger in (container.get("logger") or {}).values():
        for key in WANDB_NAMING:
            logger.pop(key, None)
    if source := _pretraining(cfg, point):
        container["starts_from"] = _what_trains(_composed(*source), source[1])
    return json.dumps(kept(container), sort_keys=True, default=str)


def test_every_swept_mixer_option_reaches_every_mixer_of_the_model_built_at_the_papers_size():
    """A sweep over a mixer option (Figure 4's lambda and k) measures what it says only if each point's value reaches
    every block's mixer; at smoke size two points can score alike whether it did or not. Each point's backbone,
    built at the paper's size on the meta device (no memory, ~0.5 s), holds its point's value in every mixer."""
    import torch
    import yaml
    from hydra.utils import instantiate

    from afno_repro.mixers import get_mixer_spec, list_mixers

    classes = tuple({get_mixer_spec(name).cls for name in list_mixers()})
    checked = []
    # The experiments whose sweeps name a mixer option (composing the others' points costs ~1 s each); the count
    # below fails if one is missed.
    sweeping = [e for e in EXPERIMENTS if re.search(r"^\s+mixer\.\w+:", (CONFIG_DIR / "experiment" / f"{e}.yaml").read_text(), re.M)]
    for experiment in sweeping:
        for point in sweep_points(experiment):
            swept = {key.removeprefix("mixer."): yaml.safe_load(value)
                     for key, _, value in (override.partition("=") for override in point) if key.startswith("mixer.")}
            if not swept:
                continue
            cfg = _composed(experiment, tuple(point))
            with torch.device("meta"):
                backbone = instantiate(cfg.backbone)
            mixers = [module for module in backbone.modules() if isinstance(module, classes)]
            assert len(mixers) == cfg.backbone.depth, (experiment, point)
            for key, value in swept.items():
                held = {getattr(mixer, key, "(no such attribute)") for mixer in mixers}
                assert held == {value}, (experiment, point, key, held)
            checked.append((experiment, *point))
    # Figure 4's three sweeps: 6 lambdas, 6 lambdas finetuned, 7 block counts.
    assert len(checked) == 19, checked


def test_the_paper_plan_never_trains_the_same_run_twice(tmp_path):
    """Every run make reproduce-all trains at the paper's scale differs from every other in what it trains, as
    composed from the configs: Figure 1's B3 rows were Table 4's, the same models and recipe, and were trained
    twice (three ImageNet pretrainings and their finetunings) until Figure 1 took those points from Table 4's
    runs. The noise reruns are left out: chosen once their sweep is done, each trains with another seed."""
    from afno_repro.pipeline import NoiseStep, build_plan

    first: dict[str, tuple[str, str]] = {}
    duplicates = {}
    for step in build_plan(tmp_path, "paper"):
        if isinstance(step, NoiseStep):
            continue
        for point in step.points:
            run = (step.experiment, " ".join(point))
            key = _what_trains(_composed(step.experiment, tuple(point)), tuple(point))
            if key in first:
                duplicates[run] = first[key]
            else:
                first[key] = run
    assert duplicates == KNOWN_DUPLICATES
    assert not list(tmp_path.iterdir())  # the plan only reads


def test_the_check_tells_a_renamed_run_from_another_run():
    """What the check above ignores only names a run: Figure 1's B3 AFNO point, run by hand under Figure 1's name, is
    Table 4's AFNO run, from the same trunk; one changed value (a learning rate) makes it another run."""
    figure1 = _composed("fig1_trunks", ("paper_model=fig1/b3_afno",))
    table4 = _composed("table4_cityscapes", ("paper_model=table4/afno",))
    assert figure1.paper.row != table4.paper.row and figure1.logger.wandb.group != table4.logger.wandb.group
    assert _what_trains(figure1, ("paper_model=fig1/b3_afno",)) == _what_trains(table4, ("paper_model=table4/afno",))
    other = ("paper_model=fig1/b3_afno", "optimizer.lr=1e-4")
    assert _what_trains(_composed("fig1_trunks", other), other) != _what_trains(table4, ("paper_model=table4/afno",))
    # What a finetuning run starts from is the pretraining run of its own row and mixer options.
    trunk = ("paper_model=fig1/b1_afno", "mixer.sparsity_threshold=0.1")
    assert _pretraining(_composed("fig1_trunks", trunk), trunk) == ("fig1_pretrain", trunk)


def test_a_figure1_b3_point_run_by_hand_finetunes_table4s_trunk():
    """Figure 1 trains no B3 trunk of its own: `experiment=fig1_trunks paper_model=fig1/b3_<mixer>` (a B3 point run
    by hand) finds, with pretrained=auto, the very table4_pretrain run Table 4's row finetunes, and names it when
    it is missing."""
    from afno_repro.pretrained import _match, _needs, pretraining_command

    for mixer in ("efficient_attention", "gfn", "afno"):
        figure1 = compose(["experiment=fig1_trunks", f"paper_model=fig1/b3_{mixer}"])
        table4 = _composed("table4_cityscapes", (f"paper_model=table4/{mixer}",))
        assert _match(figure1, _needs(figure1)) == _match(table4, _needs(table4))
        assert _match(figure1, _needs(figure1))["paper_row"] == f"table4/{mixer}"
        assert pretraining_command(figure1, _needs(figure1), [])[2:4] == [
            "experiment=table4_pretrain", f"paper_model=table4/{mixer}"]


def test_smoke_figure1_trunks_keep_their_order_of_size():
    """debug=smoke shrinks every trunk, but each stays larger than the one below it (as README says), so the
    smoke Figure 1 plots curves rather than points on top of each other. Its B3 points are Table 4's runs."""
    import hydra.utils
    import torch

    def params(point: str) -> int:
        if point.startswith("b3_"):
            overrides = ["experiment=table4_cityscapes", f"paper_model=table4/{point.removeprefix('b3_')}"]
        else:
            overrides = ["experiment=fig1_trunks", f"paper_model=fig1/{point}"]
        cfg = compose([*overrides, "debug=smoke"])
        with torch.device("meta"):
            return sum(p.numel() for p in hydra.utils.instantiate(cfg.backbone).parameters())

    for family in (["b0_afno", "b1_afno", "b2_afno", "b3_afno"], ["b0_gfn", "b1_gfn", "b2_gfn", "b3_gfn"],
                   ["b0_efficient_attention", "b1_efficient_attention", "b2_efficient_attention",
                    "b3_efficient_attention"], ["swin_t", "swin_s", "swin_b"]):
        sizes = [params(point) for point in family]
        assert sizes == sorted(set(sizes)), dict(zip(family, sizes))


def test_fig4_blocks_holds_parameters_equal():
    """Figure 4's block sweep picks, for each k, the multiple of k whose model is closest in
    parameters to the k=4 width-584 model; up to 16 blocks that is within 1%. (From 32 blocks on, the
    width moves in steps of k channels, so the closest width can be a few percent off.)"""
    import hydra.utils
    import torch

    def count(k: int, width: int | None = None) -> int:
        extra = [f"backbone.embed_dim={width}"] if width else []
        cfg = compose(["experiment=fig4_blocks", f"mixer.num_blocks={k}", *extra])
        with torch.device("meta"):
            model = hydra.utils.instantiate(cfg.backbone)
        return sum(p.numel() for p in model.parameters())

    target = count(4, 584)
    for k in (1, 2, 4, 8, 16, 32, 64):
        width = compose(["experiment=fig4_blocks", f"mixer.num_blocks={k}"]).backbone.embed_dim
        assert width % k == 0
        gap = abs(count(k) - target)
        assert gap <= min(abs(count(k, width + k) - target), abs(count(k, width - k) - target))
        if k <= 16:
            assert gap / target < 0.01, (k, width, gap / target)


def test_fig4_blocks_holds_parameters_equal_at_smoke_size_too():
    """debug=smoke's one width for every k made the smoke block sweep's models differ by 43% (k=1 against k=64);
    each k now takes the multiple of k closest to the shrink's k=4 model, which at width ~64 moves in steps of k
    channels: the models stay within 10% of it."""
    import hydra.utils
    import torch

    counts = {}
    for k in (1, 4, 64):
        cfg = compose(["experiment=fig4_blocks", f"mixer.num_blocks={k}", "debug=smoke"])
        with torch.device("meta"):
            counts[k] = sum(p.numel() for p in hydra.utils.instantiate(cfg.backbone).parameters())
    assert all(abs(count - counts[4]) / counts[4] < 0.10 for count in counts.values()), counts


def test_values_left_to_code_are_filled_in_when_the_config_states_them(tmp_path):
    """``data.num_classes: class_folders`` counts ``root/train``'s folders (1000 until there is one) and
    ``backbone.embed_dim: equal_params`` is Figure 4's width; a value stated instead (debug=smoke's shrink)
    stays. A Hydra run hands train.run the config unresolved: fill_computed fills it the same way there."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from afno_repro.config import fill_computed

    assert compose(["experiment=table5_classification"]).data.num_classes == 1000
    for wnid in ("n01", "n02", "n03"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
    counted = compose(["experiment=table5_classification", f"data.root={tmp_path}"])
    assert counted.data.num_classes == counted.backbone.num_classes == 3
    assert compose(["experiment=fig4_blocks", "mixer.num_blocks=1", "debug=smoke", "backbone.embed_dim=48"]).backbone.embed_dim == 48

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        raw = hydra_compose(config_name="train", overrides=["experiment=fig4_blocks", "mixer.num_blocks=8",
                                                             f"data.root={tmp_path}"])
    assert raw.backbone.embed_dim == "equal_params"
    fill_computed(raw)
    assert raw.backbone.embed_dim == compose(["experiment=fig4_blocks", "mixer.num_blocks=8"]).backbone.embed_dim

    with pytest.raises(ValueError, match="add equal_params="):
        compose(["experiment=table6_pretrain", "backbone.embed_dim=equal_params"])


def _only_sweep(cwd: Path) -> Path:
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep_dir


# README's smoke sweeps (Tables 2-5) are run as printed, and checked, in tests/test_readme.py; every
# experiment's pretrain -> finetune chain runs in make reproduce-all SCALE=smoke (tests/harness/test_pipeline.py).


@pytest.mark.slow
def test_a_failed_row_is_recorded_and_the_sweep_goes_on(train, tmp_path):
    """`-m debug=smoke optimizer.lr=1e6,1e-3`: the first row's loss blows up; it is recorded as failed,
    the second row still runs, the summary lists both, and the sweep's exit status says a row failed."""
    result = train("debug=smoke", "optimizer.lr=1e6,1e-3", multirun=True, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    rows = json.loads((_only_sweep(tmp_path) / "summary.json").read_text())
    assert len(rows) == 2
    by_lr = {float(r["overrides"][-1].removeprefix("optimizer.lr=")): r for r in rows}
    assert by_lr[1e6]["status"].startswith("failed") and "non-finite" in by_lr[1e6]["status"]
    assert by_lr[1e-3]["status"] == "completed"
    assert "did not complete" in result.stderr
    assert "failed" in (_only_sweep(tmp_path) / "summary.md").read_text()


@pytest.mark.slow
def test_a_mixer_without_a_paper_row_is_one_run_of_a_tables_sweep_and_its_recorded_command_reruns_it(train, tmp_path):
    """`-m experiment=table2_inpainting mixer=gfn ~paper_model` (what the refusal of mixer=<name> on a table
    suggests): the experiment's sweep over its rows goes too, or each of its four jobs would delete its row
    and train the same model. The command the report prints for the run passes train.py's checks."""
    import shlex

    from afno_repro.config import missing_paper_row
    from afno_repro.report.build import run_command

    result = train("experiment=table2_inpainting", "debug=smoke", "mixer=gfn", "~paper_model", "logger=csv",
                   multirun=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the experiment's sweep over its rows is dropped too" in result.stderr
    (row,) = json.loads((_only_sweep(tmp_path) / "summary.json").read_text())
    (record,) = [json.loads(path.read_text()) for path in _only_sweep(tmp_path).glob("*/metrics.json")]
    assert record["mixer"] == "gfn" and record["paper_row"] is None and row["status"] == "completed"
    command = run_command(record)
    assert command == "python train.py experiment=table2_inpainting debug=smoke mixer=gfn '~paper_model' logger=csv", command
    assert missing_paper_row(shlex.split(command)[2:]) is None

@pytest.mark.slow
def test_fig1_swin_trunk_starts_from_the_checkpoint_folder(train, tmp_path):
    """Figure 1's Swin rows start from the Swin authors' ImageNet checkpoints: here Swin-T from the folder
    swin_checkpoints names, written in timm's layout at the smoke size. (The SegFormer trunks' pretrain ->
    finetune chain runs in make reproduce-all SCALE=smoke, where Swin has no checkpoint folder.)"""
    import timm
    import torch

    folder = tmp_path / "swin"
    folder.mkdir()
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, embed_dim=16,
                             depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2)
    torch.save(swin.state_dict(), folder / "swin_tiny_patch4_window7_224.pth")
    result = train("experiment=fig1_trunks", "paper_model=fig1/swin_t", "debug=smoke", f"swin_checkpoints={folder}",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (swin_run,) = find_runs(tmp_path / "outputs")
    assert swin_run["paper_row"] == "fig1/swin_t" and swin_run["task"] == "cityscapes"
    assert swin_run["init"]["checkpoint"] == str(folder / "swin_tiny_patch4_window7_224.pth")
    assert swin_run["mixer"] is None and swin_run["backbone"] == "swin_t" and swin_run["params_m"] > 0
    assert swin_run["status"] == "completed" and 0 <= swin_run["result"]["miou"] <= 100


def test_table5_lr_counts_the_processes_the_run_starts(monkeypatch):
    # A.5's rule scales by the global batch; on a node with 8 visible GPUs, trainer=ddp (devices: auto) runs 8
    # processes, but with trainer.accelerator=cpu it runs one, as the batch plan counts it.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    on_gpus = compose(["experiment=table5_classification", "trainer=ddp"])
    on_cpu = compose(["experiment=table5_classification", "trainer=ddp", "trainer.accelerator=cpu"])
    assert on_gpus.optimizer.lr == pytest.approx(5e-4 * on_gpus.data.batch_size * 8 / 512)
    assert on_cpu.optimizer.lr == pytest.approx(5e-4 * on_cpu.data.batch_size / 512)
