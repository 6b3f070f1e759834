"""The appendix hyperparameters transcribed in ``paper_results.yaml`` (``appendix_hyperparameters``, A.2-A.6) are what
the composed configs of the matching experiments train: every entry is compared with the value each swept paper row
carries, or is a documented reading of the paper (asserted as the config has it, with where the reading is written
down), or is named below as having no config counterpart, with why. A new, renamed or removed entry fails
:func:`test_every_appendix_entry_is_read_here` until a check reads it, so the block cannot drift from the configs
unnoticed. Configs are only composed (about 0.2 s each); nothing is built."""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

import afno_repro
from afno_repro.config import compose, paper_rows, sweep_points
from afno_repro.paper import paper_results

APPENDIX: dict[str, Any] = paper_results()["appendix_hyperparameters"]
PACKAGE = Path(afno_repro.__file__).resolve().parent


@dataclass(frozen=True)
class Section:
    """An appendix section: the paper table whose rows (``configs/paper_model/<table>``) its per-mixer entries
    name, and the experiments that train those rows' models."""

    table: str
    models: tuple[str, ...]


SECTIONS = {
    # Table 3 finetunes Table 2's inpainting models (A.4: "we use the inpainting pretrained models"): A.2's
    # architecture entries hold for both experiments, its recipe for table2_inpainting alone.
    "a2_inpainting": Section("table2", ("table2_inpainting", "table3_fewshot")),
    "a3_cityscapes": Section("table4", ("table4_pretrain", "table4_cityscapes")),
    "a4_fewshot": Section("table2", ("table3_fewshot",)),
    "a5_classification": Section("table5", ("table5_classification",)),
    "a6_ablation": Section("table6", ("table6_pretrain", "table6_finetune")),
}

# Rows that are another row's model under a variation the appendix does not list: Table 4's AFNO-25% is the
# AFNO row with a low-pass (configs/paper_model/table4/afno_25pct.yaml builds on table4/afno), so A.3's AFNO
# widths and blocks hold for it too.
VARIANT_OF = {"table4/afno_25pct": "afno"}


# ---------------------------------------------------------------------------------------------------------------
# Reading the yaml and the configs


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Every value of ``tree`` by its dotted path (a list is one value)."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        leaves.update(_leaves(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return leaves


LEAVES = _leaves(APPENDIX)


def _row_entries(section: str) -> set[str]:
    """The entries of ``section`` that describe one paper row (a mixer's widths, heads, blocks)."""
    rows = set(paper_rows(SECTIONS[section].table))
    return {entry for entry in APPENDIX[section] if entry in rows}


def _entry_of(row: str) -> str:
    """The appendix entry a ``paper_model=<table>/<row>`` row carries."""
    return VARIANT_OF.get(row, row.split("/", 1)[1])


@lru_cache(maxsize=None)
def _composed(experiment: str, point: tuple[str, ...]) -> DictConfig:
    return compose([f"experiment={experiment}", *point])


@lru_cache(maxsize=None)
def _swept(experiment: str) -> tuple[tuple[str, DictConfig], ...]:
    """Each run of ``-m experiment=<experiment>`` as (its paper row, its composed config)."""
    runs = []
    for point in sweep_points(experiment):
        row = dict(override.split("=", 1) for override in point)["paper_model"]
        runs.append((row, _composed(experiment, tuple(point))))
    return tuple(runs)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _key(key: str) -> Callable[[DictConfig], Any]:
    """A reader of one config key (None where the config has no such key)."""
    return lambda cfg: _plain(OmegaConf.select(cfg, key, default=None))


def _from_source(module: str, name: str) -> Any:
    """``name`` as ``src/afno_repro/<module>`` defines it: a literal (evaluated) or a function (compiled on its
    own). Read from the source because importing afno_repro.models or afno_repro.mixers imports timm (~10 s),
    while these definitions need only the standard library."""
    path = PACKAGE / module
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            namespace: dict[str, Any] = {"math": math}
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
            return namespace[name]
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{path} defines no {name}")


SEGFORMER_VARIANTS = _from_source("models/segformer.py", "VARIANTS")
low_pass_cutoff = _from_source("mixers/afno.py", "low_pass_cutoff")


# Readers: what a composed config carries, in the appendix's own terms.

def _hidden(cfg: DictConfig) -> Any:
    """The width (ViT) or the per-stage widths (SegFormer; null = the MiT variant's)."""
    backbone = cfg.backbone
    if "embed_dims" in backbone:
        dims = backbone.embed_dims
        return _plain(dims) if dims is not None else list(SEGFORMER_VARIANTS[backbone.variant]["embed_dims"])
    return backbone.embed_dim


def _segformer_depths(cfg: DictConfig) -> list[int]:
    """The blocks per stage: the MiT variant's (src/afno_repro/models/segformer.py VARIANTS); no config sets them."""
    assert "depths" not in cfg.backbone, "a config that sets backbone.depths needs this reader to read it"
    return list(SEGFORMER_VARIANTS[cfg.backbone.variant]["depths"])


def _image(cfg: DictConfig) -> tuple[int, int]:
    """The side the model is built for and the side the data delivers."""
    return cfg.backbone.img_size, cfg.data.image_size


def _both(value: Any, cfg: DictConfig) -> tuple[Any, Any]:
    return value, value


def _kept_modes(cfg: DictConfig) -> tuple[int, int]:
    """(frequencies kept per spatial dimension, tokens per dimension) of the row's low-pass, as the AFNO mixer
    cuts it (src/afno_repro/mixers/afno.py low_pass_cutoff: ``2 m`` kept of the full FFT axis)."""
    size = cfg.backbone.img_size // cfg.backbone.patch_size
    cutoff = low_pass_cutoff(size, cfg.mixer.hard_thresholding_fraction)
    return (size if cutoff is None else 2 * cutoff), size


def _kept_modes_stated(value: str, cfg: DictConfig) -> tuple[int, int]:
    kept, size = re.fullmatch(r"(\d+) of (\d+) per spatial dim", value).groups()
    return int(kept), int(size)


def _interpolation_stated(note: str, cfg: DictConfig) -> str:
    """'filters bilinearly interpolated to the token grid' -> 'bilinear' (configs/mixer/gfn.yaml's vocabulary)."""
    return re.search(r"(\w+?)ly interpolated", note).group(1)


def _mask_steps(cfg: DictConfig) -> int:
    """Walk steps at the data's image size (src/afno_repro/data/masks.py RandomWalkMask.num_steps)."""
    mask, size = cfg.data.mask, cfg.data.image_size
    return mask.steps if mask.steps_scaling == "fixed" else round(mask.steps * size * size / mask.reference_size**2)


def _loss(cfg: DictConfig) -> str:
    """The loss the task trains with (src/afno_repro/tasks): masked_mse or the whole image's MSE for inpainting,
    per-pixel cross-entropy for segmentation, cross-entropy for classification."""
    task = cfg.task._target_.rsplit(".", 1)[1]
    if task == "InpaintingTask":
        return {"masked": "mse_on_masked_pixels", "full": "mse_on_all_pixels"}[cfg.task.loss_region]
    # Classification: soft-target cross-entropy while Mixup/CutMix mix the batch, with label smoothing 0.1 (DeiT's
    # recipe the paper follows: README "Classification and Cityscapes", configs/experiment/table5_classification.yaml).
    return {"SegmentationTask": "per_pixel_cross_entropy", "ClassificationTask": "cross_entropy"}.get(task, task)


def _optimizer(cfg: DictConfig) -> str:
    target = cfg.optimizer._target_
    return {"torch.optim.Adam": "adam", "torch.optim.AdamW": "adamw"}.get(target, target)


def _schedule(cfg: DictConfig) -> str | None:
    if cfg.scheduler is None:
        return None
    names = {"timm.scheduler.CosineLRScheduler": "cosine", "timm.scheduler.PolyLRScheduler": "poly"}
    return names.get(cfg.scheduler._target_, cfg.scheduler._target_)


def _warmup(unit: str) -> Callable[[DictConfig], Any]:
    """The warmup length where the scheduler counts it in ``unit`` (epochs or optimizer steps); otherwise a string
    naming the other unit, which no appendix number equals."""

    def read(cfg: DictConfig) -> Any:
        in_epochs = cfg.scheduler.t_in_epochs and cfg.task.scheduler_interval == "epoch"
        counted = "epochs" if in_epochs else "steps"
        return cfg.scheduler.warmup_t if counted == unit else f"{cfg.scheduler.warmup_t} {counted}"

    return read


def _dataset(cfg: DictConfig) -> str:
    """The training data in the appendix's words."""
    data = cfg.data
    if data._target_.endswith("ClassificationDataModule") and data.source == "imagenet" and data.num_classes == 1000:
        return "imagenet1k_classification"
    if data._target_.endswith("InpaintingDataModule") and data.name == "imagenet":
        return "imagenet1k" if data.subset_fraction is None else f"imagenet1k_{round(100 * data.subset_fraction)}pct"
    if data._target_.endswith("FewShotSegmentationDataModule") and data.source == "datasetgan":
        return "DatasetGAN"  # DatasetGAN's released few-shot splits (configs/data/datasetgan.yaml)
    return data._target_


def _pool(cfg: DictConfig) -> str | None:
    """The ViT's classification head is timm's ClassifierHead with pool_type='avg' (src/afno_repro/models/vit.py)."""
    return {"classification": "global_average"}.get(cfg.backbone.head)


def _crop(cfg: DictConfig) -> list[int]:
    return [cfg.data.crop_size, cfg.data.crop_size]


def _evaluation(cfg: DictConfig) -> tuple[str, list[int] | None]:
    """(the headline test's inference, the side the image is resized to where a 'resize' test scores it)."""
    task = cfg.task
    resizes = "resize" in task.extra_inference or task.inference == "resize"
    resized = [task.crop_size, task.crop_size] if resizes else None
    return task.inference, resized


def _selection(cfg: DictConfig) -> tuple[str, str]:
    return cfg.data.selection, cfg.task.selection


def _images_per_step(cfg: DictConfig) -> int:
    """The global batch A.5's rule scales by: per-process batch x processes x accumulation (one process here)."""
    if cfg.global_batch is not None:
        return cfg.global_batch
    trainer = cfg.trainer
    assert isinstance(trainer.devices, int), f"trainer.devices={trainer.devices}: this test counts given devices only"
    return (cfg.data.batch_size * trainer.devices * OmegaConf.select(trainer, "num_nodes", default=1)
            * OmegaConf.select(trainer, "accumulate_grad_batches", default=1))


def _scaled_lr_stated(value: str, cfg: DictConfig) -> Any:
    """'batch/512 * 5e-4' at this config's global batch."""
    reference, base = re.fullmatch(r"batch/(\d+) \* ([0-9.eE+-]+)", value).groups()
    return pytest.approx(float(base) * _images_per_step(cfg) / int(reference))


def _is_attention(cfg: DictConfig) -> bool:
    return cfg.mixer.name == "attention"


def _is_not_attention(cfg: DictConfig) -> bool:
    return cfg.mixer.name != "attention"


# ---------------------------------------------------------------------------------------------------------------
# What reads each entry


def _as_stated(value: Any, cfg: DictConfig) -> Any:
    return value


def _everywhere(cfg: DictConfig) -> bool:
    return True


@dataclass(frozen=True)
class Check:
    """An appendix entry compared with a config: ``read(cfg) == expect(appendix value, cfg)`` for every swept run
    of ``experiments`` where ``applies(cfg)``."""

    experiments: tuple[str, ...]
    read: Callable[[DictConfig], Any]
    expect: Callable[[Any, DictConfig], Any] = _as_stated
    applies: Callable[[DictConfig], bool] = _everywhere


@dataclass(frozen=True)
class Deviation:
    """An entry the configs deliberately read otherwise: the appendix says ``paper``, every swept run of
    ``experiments`` carries ``ours``, for the reason written down at ``where``."""

    experiments: tuple[str, ...]
    read: Callable[[DictConfig], Any]
    paper: Any
    ours: Any
    where: str


# Per-row entries (a mixer's hidden size, heads, blocks...) -> the config key each is.
ROW_FIELDS = {
    "hidden": Check((), _hidden),
    "heads": Check((), _key("mixer.num_heads")),
    "window": Check((), _key("mixer.window_size")),
    "rank": Check((), _key("mixer.rank")),
    "blocks": Check((), _key("mixer.num_blocks")),
    "sparsity_threshold": Check((), _key("mixer.sparsity_threshold")),
    # "a 1D convolution layer as the bias" is mixer.skip=conv1d (configs/mixer/afno.yaml).
    "bias": Check((), _key("mixer.skip")),
    "kept_modes": Check((), _kept_modes, _kept_modes_stated),
    "note": Check((), _key("mixer.filter_interpolation"), _interpolation_stated),   # A.3's GFN note
}

A2 = ("table2_inpainting",)
A2_MODELS = SECTIONS["a2_inpainting"].models
A3_PRETRAIN, A3_FINETUNE = ("table4_pretrain",), ("table4_cityscapes",)
A3_MODELS = SECTIONS["a3_cityscapes"].models
A4 = ("table3_fewshot",)
A5 = ("table5_classification",)
A6_PRETRAIN = ("table6_pretrain",)
A6_MODELS = SECTIONS["a6_ablation"].models

RECIPE = {
    # A.2: ViT-B/4 at 224 (Table 2, and Table 3 which finetunes it); the inpainting recipe (Table 2).
    "a2_inpainting.backbone.depth": Check(A2_MODELS, _key("backbone.depth")),
    "a2_inpainting.backbone.patch": Check(A2_MODELS, _key("backbone.patch_size")),
    "a2_inpainting.backbone.image": Check(A2_MODELS, _image, _both),
    "a2_inpainting.mask.steps": Check(A2, _mask_steps),
    "a2_inpainting.loss": Check(A2, _loss),
    "a2_inpainting.optim.name": Check(A2, _optimizer),
    "a2_inpainting.optim.epochs": Check(A2, _key("trainer.max_epochs")),
    "a2_inpainting.optim.lr_attention": Check(A2, _key("optimizer.lr"), applies=_is_attention),
    "a2_inpainting.optim.lr_other": Check(A2, _key("optimizer.lr"), applies=_is_not_attention),
    "a2_inpainting.optim.schedule": Check(A2, _schedule),
    "a2_inpainting.optim.min_lr": Check(A2, _key("scheduler.lr_min")),
    "a2_inpainting.optim.grad_clip": Check(A2, _key("trainer.gradient_clip_val")),
    "a2_inpainting.optim.weight_decay": Check(A2, _key("optimizer.weight_decay")),
    # A.3: SegFormer-B3's stages; ImageNet pretraining (table4_pretrain), Cityscapes finetuning (table4_cityscapes).
    "a3_cityscapes.depths": Check(A3_MODELS, _segformer_depths),
    "a3_cityscapes.pretrain.data": Check(A3_PRETRAIN, _dataset),
    "a3_cityscapes.pretrain.epochs": Check(A3_PRETRAIN, _key("trainer.max_epochs")),
    "a3_cityscapes.pretrain.optim": Check(A3_PRETRAIN, _optimizer),
    "a3_cityscapes.pretrain.lr": Check(A3_PRETRAIN, _key("optimizer.lr")),
    "a3_cityscapes.pretrain.schedule": Check(A3_PRETRAIN, _schedule),
    "a3_cityscapes.pretrain.min_lr": Check(A3_PRETRAIN, _key("scheduler.lr_min")),
    "a3_cityscapes.pretrain.weight_decay": Check(A3_PRETRAIN, _key("optimizer.weight_decay")),
    "a3_cityscapes.pretrain.batch": Check(A3_PRETRAIN, _key("global_batch")),
    "a3_cityscapes.pretrain.grad_clip": Check(A3_PRETRAIN, _key("trainer.gradient_clip_val")),
    "a3_cityscapes.pretrain.warmup_iters": Check(A3_PRETRAIN, _warmup("steps")),
    "a3_cityscapes.finetune.epochs": Check(A3_FINETUNE, _key("trainer.max_epochs")),
    "a3_cityscapes.finetune.lr": Check(A3_FINETUNE, _key("optimizer.lr")),
    "a3_cityscapes.finetune.crop": Check(A3_FINETUNE, _crop),
    # A.4: the few-shot recipe (Table 3; Table 6's finetuning follows it, test_a6_finetunes_as_the_appendix_says).
    "a4_fewshot.resolution": Check(A4, _image, _both),
    "a4_fewshot.splits": Check(A4, _dataset),
    "a4_fewshot.loss": Check(A4, _loss),
    "a4_fewshot.optim.epochs": Check(A4, _key("trainer.max_epochs")),
    "a4_fewshot.optim.lr_attention": Check(A4, _key("optimizer.lr"), applies=_is_attention),
    "a4_fewshot.optim.lr_other": Check(A4, _key("optimizer.lr"), applies=_is_not_attention),
    "a4_fewshot.optim.grad_clip": Check(A4, _key("trainer.gradient_clip_val")),
    "a4_fewshot.optim.weight_decay": Check(A4, _key("optimizer.weight_decay")),
    "a4_fewshot.eval.every_epochs": Check(A4, _key("trainer.check_val_every_n_epoch")),
    "a4_fewshot.eval.report": Check(A4, _selection, _both),
    # A.5: ViT-S/4 classifiers and their recipe (Table 5).
    "a5_classification.backbone.depth": Check(A5, _key("backbone.depth")),
    "a5_classification.backbone.patch": Check(A5, _key("backbone.patch_size")),
    "a5_classification.backbone.image": Check(A5, _image, _both),
    "a5_classification.backbone.pool": Check(A5, _pool),
    "a5_classification.optim.name": Check(A5, _optimizer),
    "a5_classification.optim.epochs": Check(A5, _key("trainer.max_epochs")),
    "a5_classification.optim.lr": Check(A5, _key("optimizer.lr"), _scaled_lr_stated),
    "a5_classification.optim.warmup_epochs": Check(A5, _warmup("epochs")),
    "a5_classification.optim.schedule": Check(A5, _schedule),
    "a5_classification.optim.min_lr": Check(A5, _key("scheduler.lr_min")),
    "a5_classification.optim.grad_clip": Check(A5, _key("trainer.gradient_clip_val")),
    "a5_classification.optim.weight_decay": Check(A5, _key("optimizer.weight_decay")),
    "a5_classification.optim.loss": Check(A5, _loss),
    # A.6: ViT-XS/4 (Table 6's pretraining and finetuning), pretrained on 10% of ImageNet.
    "a6_ablation.backbone.depth": Check(A6_MODELS, _key("backbone.depth")),
    "a6_ablation.backbone.patch": Check(A6_MODELS, _key("backbone.patch_size")),
    "a6_ablation.pretrain.data": Check(A6_PRETRAIN, _dataset),
    "a6_ablation.pretrain.epochs": Check(A6_PRETRAIN, _key("trainer.max_epochs")),
}

AFNO_SKIP = ("README.md 'Readings of what the paper leaves open' (AFNO skip row: identity, which the paper's own "
             "FLOP/parameter counts fit); configs/mixer/afno.yaml (skip)")
DEVIATIONS = {
    # A.2's "1D convolution as the bias" is mixer.skip=conv1d; Table 2's AFNO row keeps the identity skip, whose
    # count fits the printed 257.2 GFLOPs (conv1d: 278.4). Also configs/paper_model/table2/afno.yaml's header.
    "a2_inpainting.afno.bias": Deviation(A2_MODELS, _key("mixer.skip"), "conv1d", "identity",
                                         AFNO_SKIP + "; configs/paper_model/table2/afno.yaml"),
    # The same reading for Table 5's AFNO row (configs/paper_model/table5/afno.yaml header: "identity skip").
    "a5_classification.afno.bias": Deviation(A5, _key("mixer.skip"), "conv1d", "identity",
                                             AFNO_SKIP + "; configs/paper_model/table5/afno.yaml"),
    # The non-adaptive AFNO is one shared complex linear map without softshrink, so A.6's threshold of 0.01 has
    # nothing to act on and the mixer has no such option (None: the key is absent).
    "a6_ablation.afno_static.sparsity_threshold": Deviation(
        A6_MODELS, _key("mixer.sparsity_threshold"), 0.01, None,
        "README.md 'Readings of what the paper leaves open' (non-adaptive AFNO row); "
        "configs/paper_model/table6/afno_static.yaml; configs/mixer/afno_static.yaml"),
    # "No sparsity threshold" is written as 0, which switches softshrink off (the same model, another spelling).
    "a6_ablation.afno_hard35.sparsity_threshold": Deviation(
        A6_MODELS, _key("mixer.sparsity_threshold"), None, 0.0,
        "README.md 'Readings of what the paper leaves open', table6_pretrain ('the 35% row runs no softshrink, "
        "sparsity_threshold: 0'); configs/mixer/afno.yaml (sparsity_threshold: '0 disables it')"),
    # "Evaluate at 1024x1024": the headline test/miou is SegFormer's sliding window (1024 crops, stride 768) over
    # the full 2048x1024 image; the paper's literal reading, the image resized to 1024x1024, is scored beside it
    # as test/resize/miou.
    "a3_cityscapes.finetune.eval": Deviation(
        A3_FINETUNE, _evaluation, [1024, 1024], ("slide", [1024, 1024]),
        "README.md 'Classification and Cityscapes' (Table 4: 'Both evaluations are scored and labelled'); "
        "configs/experiment/table4_cityscapes.yaml header (Evaluation); configs/task/cityscapes.yaml"),
}

# Entries no config key carries, one line each: why they are not compared here.
NOT_CHECKED = {
    # The random walk is the inpainting data's only mask: no key chooses it (src/afno_repro/data/masks.py).
    "a2_inpainting.mask.kind": "RandomWalkMask, the only mask",
    # The four moves are RandomWalkMask's code, not an option (src/afno_repro/data/masks.py).
    "a2_inpainting.mask.moves": "RandomWalkMask's code",
    # A count of the built model, not a config value; building imports timm (~10 s). scripts/model_table.py counts
    # every row (README "Measured here", "Model accounting"): Table 5's rows are 15.7-16.5M.
    "a5_classification.backbone.params": "a property of the built model",
    # As A.5's. AFNO d=584 counts 15.44M (README "Readings of what the paper leaves open", table6_pretrain; configs/
    # backbone/vit_xs4.yaml); the width-124 static and 35% rows ~0.7M, not 16M (README "Model accounting",
    # configs/paper_model/table6/afno_static.yaml).
    "a6_ablation.backbone.params": "a property of the built model",
}

# Read by their own tests below.
OWN_TESTS = {"a6_ablation.finetune.as", "a6_ablation.finetune.datasets"}


def _row_field_paths() -> list[str]:
    return [f"{section}.{entry}.{field}" for section in APPENDIX for entry in sorted(_row_entries(section))
            for field in APPENDIX[section][entry]]


ROW_CHECKS = {path: ROW_FIELDS[path.rsplit(".", 1)[1]] for path in _row_field_paths()
              if path not in DEVIATIONS and path not in NOT_CHECKED and path.rsplit(".", 1)[1] in ROW_FIELDS}


def _runs(path: str, experiments: tuple[str, ...]) -> list[tuple[str, str, DictConfig]]:
    """(experiment, row, config) of every swept run ``path`` describes: of its row, for a per-row entry."""
    section, entry = path.split(".")[:2]
    runs = [(experiment, row, cfg) for experiment in experiments or SECTIONS[section].models
            for row, cfg in _swept(experiment)]
    if entry in _row_entries(section):
        runs = [run for run in runs if _entry_of(run[1]) == entry]
    return runs


def _compare(path: str, check: Check, experiments: tuple[str, ...], require_a_run: bool = True) -> int:
    """Assert ``check`` on every run of ``experiments`` where it applies; the number of runs compared."""
    value = LEAVES[path]
    compared = 0
    for experiment, row, cfg in _runs(path, experiments):
        if not check.applies(cfg):
            continue
        expected, actual = check.expect(value, cfg), check.read(cfg)
        assert actual == expected, (f"{path}: the appendix says {value!r} ({expected!r}); "
                                    f"{experiment} {row} carries {actual!r}")
        compared += 1
    assert compared or not require_a_run, f"{path}: no run of {experiments or 'its section'} to compare it with"
    return compared


# ---------------------------------------------------------------------------------------------------------------
# Tests


def test_every_appendix_section_names_its_experiments():
    assert set(APPENDIX) == set(SECTIONS)


def test_every_appendix_entry_is_read_here():
    """Every entry is compared with the configs, a documented deviation, or named as having no config key; and
    every check here reads an entry the yaml still has."""
    handled = [set(RECIPE), set(ROW_CHECKS), set(DEVIATIONS), set(NOT_CHECKED), OWN_TESTS]
    read = set().union(*handled)
    assert not set(LEAVES) - read, f"appendix entries no check reads: {sorted(set(LEAVES) - read)}"
    assert not read - set(LEAVES), f"checks of entries the appendix no longer has: {sorted(read - set(LEAVES))}"
    assert sum(map(len, handled)) == len(read), "an entry is read twice, in two ways"


@pytest.mark.parametrize("section,experiment", [(section, experiment) for section in SECTIONS if _row_entries(section)
                                                for experiment in SECTIONS[section].models])
def test_the_appendix_rows_are_the_rows_each_experiment_sweeps(section, experiment):
    """Each per-mixer entry is a row the experiment trains, and each row it trains has its entry."""
    swept = {_entry_of(row) for row, _ in _swept(experiment)}
    assert swept == _row_entries(section)


@pytest.mark.parametrize("path", sorted(ROW_CHECKS))
def test_the_appendix_row_value_is_what_the_rows_config_carries(path):
    _compare(path, ROW_CHECKS[path], ())


@pytest.mark.parametrize("path", sorted(RECIPE))
def test_the_appendix_recipe_value_is_what_the_experiment_trains_with(path):
    _compare(path, RECIPE[path], RECIPE[path].experiments)


@pytest.mark.parametrize("path", sorted(DEVIATIONS))
def test_a_documented_reading_is_what_the_configs_carry(path):
    """The appendix still says what the reading departs from, and the configs carry the reading."""
    deviation = DEVIATIONS[path]
    assert LEAVES[path] == deviation.paper, (f"{path}: the appendix now says {LEAVES[path]!r}, not "
                                            f"{deviation.paper!r}: revisit the reading documented in {deviation.where}")
    runs = _runs(path, deviation.experiments)
    assert runs
    for experiment, row, cfg in runs:
        actual = deviation.read(cfg)
        assert actual == deviation.ours, (f"{path}: {experiment} {row} carries {actual!r}, not the reading "
                                          f"{deviation.ours!r} documented in {deviation.where}")


def test_a6_finetunes_as_the_appendix_says():
    """A.6: 'For finetuning, we use the same setup as the few-shot segmentation experiments described in A.4':
    every recipe entry of the named section holds for table6_finetune too."""
    section = APPENDIX["a6_ablation"]["finetune"]["as"]
    paths = [path for path in RECIPE if path.startswith(f"{section}.")]
    assert paths, f"a6_ablation.finetune.as names {section!r}, whose recipe this file does not check"
    compared = sum(_compare(path, RECIPE[path], ("table6_finetune",), require_a_run=False) for path in paths)
    # Every run's lr is compared by lr_attention or lr_other, and every other entry on every run.
    assert compared == (len(paths) - 1) * len(_swept("table6_finetune"))


def test_a6_finetunes_on_the_appendix_datasets():
    columns = {cfg.paper.column for _, cfg in _swept("table6_finetune")}
    assert columns == set(APPENDIX["a6_ablation"]["finetune"]["datasets"])


def test_a5_lr_follows_the_appendix_rule_at_another_batch():
    """A.5's lr is a rule of the batch: at 512 images a step it is the rule's base lr itself."""
    cfg = _composed("table5_classification", ("paper_model=table5/afno", "data.batch_size=512"))
    assert _images_per_step(cfg) == 512
    assert cfg.optimizer.lr == _scaled_lr_stated(APPENDIX["a5_classification"]["optim"]["lr"], cfg)
