"""Figures 5 and 6 and the resolution study, computed from real (tiny) trained Table 2 runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from afno_repro.mixers import build_mixer
from afno_repro.report.sweep import collect
from afno_repro.report.trained_figures import (_afno_spectra, figure5_section, figure6_section, resolution_section,
                                               spatial_coherence, token_clusters)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def table2_runs(table2_smoke):
    """Table 2's four rows at smoke scale: README's smoke sweep, run once for the whole session."""
    runs = collect(table2_smoke["sweep_dir"])
    assert len(runs) == 4 and all(run["status"] == "completed" for run in runs)
    return runs


@pytest.mark.slow
def test_figure5_clusters_every_mixer_on_the_same_images(table2_runs, tmp_path):
    section = figure5_section(table2_runs, tmp_path, num_images=2)
    assert section.key == "figure5" and not section.missing and not section.notes
    rows = section.tables["figure5"]
    # 4 mixers x 2 layers (first and last of the 2-block smoke ViT) x 2 images, each in 4 clusters.
    assert len(rows) == 16
    assert {r["run"].split(" [")[0] for r in rows} == {f"table2/{m}" for m in ("afno", "attention", "gfn", "long_short")}
    # A run whose AFNO mixer was effectively off says so in its label (its record's mixer_activity).
    for run in table2_runs:
        labels = {r["run"] for r in rows if r["run"].startswith(run["paper_row"] + " ")}
        flagged = bool((run.get("mixer_activity") or {}).get("inactive"))
        assert all(("effectively off" in label) == flagged for label in labels)
    assert all(len(r["cluster sizes"].split()) == 4 and sum(map(int, r["cluster sizes"].split())) == 64 for r in rows)
    assert all(0 <= float(r["spatial coherence"]) <= 1 for r in rows)
    assert section.figures[0].read_bytes()[:8] == PNG


def test_token_clusters_follow_a1_and_find_separated_regions():
    tokens = torch.zeros(8, 8, 4)
    for q, (i, j) in enumerate(((0, 0), (0, 4), (4, 0), (4, 4))):
        tokens[i:i + 4, j:j + 4, q] = 5.0
    tokens += 0.01 * torch.randn(8, 8, 4)
    labels = token_clusters(tokens)
    assert len(np.unique(labels)) == 4 and spatial_coherence(labels) == pytest.approx(96 / 112)  # 16 of 112 pairs cross
    for i, j in ((0, 0), (0, 4), (4, 0), (4, 4)):
        assert len(np.unique(labels[i:i + 4, j:j + 4])) == 1  # each quadrant is one cluster


def test_softshrink_zeroes_more_as_the_threshold_grows():
    torch.manual_seed(0)
    fractions = []
    for threshold in (0.0, 0.005, 0.02, 10.0):  # the initial weights (0.02 randn) give outputs ~0.01
        mixer = build_mixer("afno", 16, num_blocks=4, sparsity_threshold=threshold)
        captured = {}
        mixer.shrink.register_forward_hook(lambda module, inputs, output: captured.update(before=inputs[0], after=output))
        mixer(torch.randn(1, 8, 8, 16))
        fractions.append(float((captured["after"] == 0).float().mean()))
        assert fractions[-1] >= float((captured["before"] == 0).float().mean())
    assert fractions[0] == 0 < fractions[1] < fractions[2] < fractions[3] == 1


@pytest.mark.slow
def test_figure6_measures_the_trained_afno_spectrum(table2_runs, tmp_path):
    afno = [run for run in table2_runs if run["mixer"] == "afno"]
    section = figure6_section(afno, tmp_path, num_images=2)
    rows = section.tables["figure6"]
    assert [r["layer"] for r in rows] == [1, 2]
    assert all(float(r["zero after softshrink"]) >= float(r["zero before softshrink"]) for r in rows)
    assert section.figures[0].read_bytes()[:8] == PNG
    # Without softshrink (lambda = 0) there is nothing to show, and the section says so.
    without = figure6_section([{**afno[0], "mixer_options": {"sparsity_threshold": 0}}], tmp_path)
    assert without.missing and "sparsity threshold 0" in without.notes[0]


@pytest.mark.slow
def test_afno_spectrum_map_has_the_kept_modes_shape(table2_runs):
    from afno_repro.report.trained_figures import load_run

    (afno,) = [run for run in table2_runs if run["mixer"] == "afno"]
    _, task, datamodule = load_run(afno)
    layers = _afno_spectra(task, next(iter(datamodule.test_dataloader()))["image"][:2])
    assert [layer["log_magnitude"].shape for layer in layers] == [(8, 5), (8, 5)]  # 8x8 tokens: H x (W/2 + 1)


@pytest.mark.slow
def test_resolution_transfer_reproduces_the_recorded_number_at_the_training_size(table2_runs, tmp_path):
    section = resolution_section(table2_runs, tmp_path, factors=(0.5, 1.0, 2.0))
    rows = section.tables["resolution"]
    assert {r["evaluated at"] for r in rows} == {16, 32, 64} and len(rows) == 12
    for row in (r for r in rows if r["evaluated at"] == 32):
        assert row["PSNR (dB)"] == row["recorded PSNR (dB)"], row
    gfn = [r for r in rows if r["run"] == "table2/gfn" and r["evaluated at"] != 32]
    assert all("GFN's filter, sized for the training grid, resized (bilinear)" in r["note"] for r in gfn)
    assert section.figures[0].read_bytes()[:8] == PNG


@pytest.mark.slow
def test_a_run_without_its_checkpoint_is_a_note(table2_runs, tmp_path):
    run = dict(table2_runs[0])
    copy = tmp_path / "copy"
    shutil.copytree(run["run_dir"], copy)
    shutil.rmtree(copy / "checkpoints")
    run.update(run_dir=str(copy), test={**run["test"], "checkpoint": str(copy / "checkpoints" / "gone.ckpt")})
    section = figure5_section([run, table2_runs[1]], tmp_path)
    assert len(section.notes) == 1 and "gone.ckpt" in section.notes[0] and "is missing" in section.notes[0]
    assert len({r["run"] for r in section.tables["figure5"]}) == 1


@pytest.mark.slow
def test_a_damaged_checkpoint_is_a_note_that_says_so(table2_runs, tmp_path):
    run = dict(table2_runs[0])
    copy = tmp_path / "copy"
    shutil.copytree(run["run_dir"], copy)
    checkpoint = copy / "checkpoints" / Path(run["test"]["checkpoint"]).name
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy stopped part-way
    run.update(run_dir=str(copy), test={**run["test"], "checkpoint": str(checkpoint)})
    section = resolution_section([run], tmp_path, factors=(1.0,))
    assert len(section.notes) == 1 and "truncated or corrupt" in section.notes[0], section.notes
    assert str(checkpoint) in section.notes[0]

def test_a_run_is_rebuilt_from_the_config_hydra_saved_before_it_ran(imagenet_writer, tmp_path):
    """Hydra saves the composed config unresolved: Figure 4's `backbone.embed_dim: equal_params` and Table 6's
    `subset_file: ${hydra:runtime.output_dir}/...` must be rebuilt as the run did (in its own folder), not
    fail on a HydraConfig that is not set or land in another folder."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    from afno_repro.config import CONFIG_DIR, compose
    from afno_repro.report.trained_figures import load_run

    imagenet_root = imagenet_writer(tmp_path / "imagenet", train_per_class=20)  # 10%: 2 a class, one held out
    overrides = ["experiment=fig4_blocks", "paper_model=table6/afno", "mixer.num_blocks=8", f"data.root={imagenet_root}"]
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        saved = hydra_compose(config_name="train", overrides=overrides)  # as Hydra writes .hydra/config.yaml
    OmegaConf.save(saved, run_dir / ".hydra" / "config.yaml")
    assert "equal_params" in (run_dir / ".hydra" / "config.yaml").read_text()
    trained = compose(overrides, output_dir=str(run_dir))
    task = instantiate(trained.task, backbone=instantiate(trained.backbone), optimizer=instantiate(trained.optimizer),
                       scheduler=None)
    torch.save({"state_dict": task.state_dict()}, run_dir / "best.ckpt")

    cfg, loaded, datamodule = load_run({"run_dir": str(run_dir), "best_checkpoint": str(run_dir / "best.ckpt")})
    # The width a run at k=8 computes (a multiple of 8 near the k=4 model's 584), so the weights load.
    assert cfg.backbone.embed_dim == trained.backbone.embed_dim and cfg.backbone.embed_dim % 8 == 0
    assert all(torch.equal(value, task.state_dict()[key]) for key, value in loaded.state_dict().items())
    assert datamodule.subset_file == str(run_dir / "imagenet_subset.txt") and (run_dir / "imagenet_subset.txt").is_file()
