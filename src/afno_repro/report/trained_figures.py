"""Report sections computed from trained models: Figures 5 and 6 of the paper and a zero-shot
resolution study.

Each function rebuilds runs from their folders (:func:`load_run`: the run's own Hydra config and the
checkpoint its test scored) and returns a :class:`~afno_repro.report.sections.Section`. A run that
cannot be rebuilt (checkpoint gone, config no longer composing) becomes a note naming it; the
section goes on with the others.

- Figure 5 (A.1): spectral clustering of the output tokens of chosen layers, per mixer, on the same
  images for every mixer (``sklearn.cluster.SpectralClustering``, nearest-neighbours affinity with
  k = 10, 4 clusters).
- Figure 6: per AFNO layer, the log magnitude of the spectrum after soft-thresholding, averaged over
  channels and blocks, and the fraction of values softshrink sets to zero.
- Resolution transfer: an inpainting model trained at one image size scored, without retraining,
  at other sizes, per mixer that accepts another token grid.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from afno_repro.console import quiet_third_party_noise
from afno_repro.report.flags import figure_title, is_smoke, mixer_off
from afno_repro.report.render import format_number, pyplot, save_figure
from afno_repro.report.sections import Section

log = logging.getLogger(__name__)

# (marker, line style) per curve, so that curves that coincide stay distinguishable.
_STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", (0, (5, 1))), ("P", (0, (1, 1))))

__all__ = ["figure5_section", "figure6_section", "load_run", "load_task", "resolution_section", "run_config", "spatial_coherence",
           "test_data", "token_clusters"]


def _label(run: dict[str, Any]) -> str:
    """The run's paper row, plus the swept option that tells Figure 4's runs apart, and the flag of an
    AFNO mixer that is effectively off (``metrics.json``'s ``mixer_activity``)."""
    row = run.get("paper_row") or run.get("mixer") or Path(run.get("run_dir", "?")).name
    options = run.get("mixer_options") or {}
    if run.get("experiment") == "fig4_sparsity":
        row += f" lambda={options.get('sparsity_threshold')}"
    elif run.get("experiment") == "fig4_blocks":
        row += f" k={options.get('num_blocks')}"
    flag = mixer_off(run)
    return f"{row} [{flag}]" if flag else row


def _short(label: str) -> str:
    """A :func:`_label` as a figure shows it (axis labels, legends, panel titles): the row, and ``(mixer off)`` for
    the flag, whose full sentence is in the section's table and notes (in a label it ran off the figure)."""
    return label.split(" [")[0] + (" (mixer off)" if " [" in label else "")


def run_config(run: dict[str, Any], **data_overrides: Any) -> Any:
    """The run's config as the run used it, rebuilt from the one Hydra saved in its folder, with
    ``data_overrides`` (e.g. ``image_size=64``) applied to its data config; nothing is built.

    Raises
    ------
    FileNotFoundError
        The run folder has no Hydra config.
    """
    from omegaconf import OmegaConf

    from afno_repro.config import fill_computed  # importing it also registers the resolvers the configs use

    config = Path(run["run_dir"]) / ".hydra" / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: the run's configuration is needed to rebuild its model")
    # Hydra saves the config as composed, before the run: `${hydra:runtime.output_dir}` (Table 6's subset
    # file, the checkpoints' folder) means the run's own folder, and the values left to code (class
    # folders, Figure 4's equal-parameter width) are computed again, as the run did.
    raw = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    cfg = OmegaConf.create(_in_run_folder(raw, str(run["run_dir"])))
    for key, value in data_overrides.items():
        cfg.data[key] = value
    return fill_computed(cfg)


def load_run(run: dict[str, Any], **data_overrides: Any) -> tuple[Any, torch.nn.Module, Any]:
    """The run's config (:func:`run_config`), its task with the weights its test scored (:func:`load_task`)
    and its data module set up for testing (:func:`test_data`; ``data_overrides``, e.g. ``image_size=64``,
    change the data config first).

    Raises
    ------
    FileNotFoundError
        The run folder has no Hydra config, or the checkpoint its test scored is gone.
    ValueError
        That checkpoint is empty, truncated or not one this project wrote.
    """
    cfg = run_config(run, **data_overrides)
    return cfg, load_task(run, cfg), test_data(cfg)


def load_task(run: dict[str, Any], cfg: Any) -> torch.nn.Module:
    """The run's task built from ``cfg`` with the weights its test scored, in eval mode, on the GPU if
    there is one. The checkpoint is read through :func:`afno_repro.checkpoints.load_checkpoint`, so a
    damaged one is named as such."""
    quiet_third_party_noise()  # the same quieting of Lightning's notices as a training run
    from hydra.utils import instantiate

    from afno_repro.checkpoints import load_checkpoint

    checkpoint = (run.get("test") or {}).get("checkpoint") or run.get("best_checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():
        raise FileNotFoundError(f"the checkpoint the run's test scored ({checkpoint}) is missing")
    backbone = instantiate(cfg.backbone)
    options = {"run_baselines": False} if "run_baselines" in cfg.task else {}
    task = instantiate(cfg.task, backbone=backbone, optimizer=instantiate(cfg.optimizer), scheduler=None, **options)
    task.load_state_dict(load_checkpoint(Path(checkpoint), option="the checkpoint the run's test scored")["state_dict"])
    return task.eval().to("cuda" if torch.cuda.is_available() else "cpu")


def test_data(cfg: Any) -> Any:
    """The data module of ``cfg``, set up for testing."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("test")
    return datamodule


def _in_run_folder(node: Any, run_dir: str) -> Any:
    """``node`` (a config as plain containers) with ``${hydra:runtime.output_dir}`` replaced by ``run_dir``."""
    if isinstance(node, dict):
        return {key: _in_run_folder(value, run_dir) for key, value in node.items()}
    if isinstance(node, list):
        return [_in_run_folder(value, run_dir) for value in node]
    return node.replace("${hydra:runtime.output_dir}", run_dir) if isinstance(node, str) else node


def _test_images(datamodule: Any, count: int) -> torch.Tensor:
    images = []
    for batch in datamodule.test_dataloader():
        images.append(batch["image"])
        if sum(len(i) for i in images) >= count:
            break
    return torch.cat(images)[:count]


@contextmanager
def _outputs_of(modules: Sequence[torch.nn.Module]) -> Iterator[list[Any]]:
    """Collect ``(input, output)`` of each module's forward while the block runs."""
    captured: list[Any] = [None] * len(modules)

    def hook(index: int):
        def keep(module, inputs, output):
            captured[index] = (inputs[0].detach(), output.detach())
        return keep

    handles = [module.register_forward_hook(hook(i)) for i, module in enumerate(modules)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def token_clusters(tokens: torch.Tensor, n_clusters: int = 4, n_neighbors: int = 10, seed: int = 0) -> np.ndarray:
    """Spectral clustering of one image's tokens ``(H, W, C)`` -> labels ``(H, W)`` (A.1's settings).

    >>> labels = token_clusters(torch.randn(6, 6, 8))
    >>> labels.shape, len(set(labels.ravel()))
    ((6, 6), 4)
    """
    from sklearn.cluster import SpectralClustering

    h, w, c = tokens.shape
    features = tokens.reshape(h * w, c).float().cpu().numpy()
    clustering = SpectralClustering(n_clusters=n_clusters, affinity="nearest_neighbors", n_neighbors=n_neighbors,
                                    random_state=seed, assign_labels="kmeans")
    with warnings.catch_warnings():
        # A k-nearest-neighbour graph of well separated tokens can be disconnected (then its
        # components are the clusters, which is the point), and sklearn notes an API change on
        # every fit: neither says anything about the tokens.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        warnings.filterwarnings("ignore", message="The spectral clustering API has changed")
        return clustering.fit_predict(features).reshape(h, w)


def spatial_coherence(labels: np.ndarray) -> float:
    """Fraction of 4-neighbour token pairs in the same cluster (1: clusters are connected regions).

    >>> spatial_coherence(np.array([[0, 0], [1, 1]]))
    0.5
    """
    same = np.concatenate([(labels[1:] == labels[:-1]).ravel(), (labels[:, 1:] == labels[:, :-1]).ravel()])
    return float(same.mean())


def _inpainting_forward(task: torch.nn.Module, images: torch.Tensor) -> None:
    """The model on the whole images (nothing hidden), as Figure 5 and 6 look at it."""
    device = next(task.parameters()).device
    images = images.to(device)
    with torch.no_grad():
        task(images, torch.zeros_like(images[:, :1]))


def figure5_section(runs: list[dict[str, Any]], out_dir: Path, *, num_images: int = 2,
                    layers: list[int] | None = None) -> Section:
    """Figure 5: the tokens of chosen layers clustered spectrally, per mixer, on the same images.

    ``runs`` are inpainting runs of one experiment (e.g. Table 2's four rows); the images are the
    first ``num_images`` of the first run's evaluation split, and every run must use the same data.
    """
    title = "Figure 5: spectral clustering of the tokens, per mixer and layer"
    intro = ("Output tokens of the first, middle and last block of each Table 2 model, clustered with "
             "`sklearn.cluster.SpectralClustering` (nearest-neighbours affinity, k = 10, 4 clusters, as A.1), on the "
             "same evaluation images for every mixer. Spatial coherence is the fraction of neighbouring tokens in the "
             "same cluster: the paper's claim is that the Fourier mixers group tokens into coherent regions like "
             "self-attention does.")
    if not runs:
        return Section("figure5", title, intro, missing="no completed Table 2 run yet: "
                       "`python train.py -m experiment=table2_inpainting` (or `make reproduce-all`) makes them.")
    notes, maps, rows, images = [], [], [], None
    data = {run.get("data") for run in runs}
    for run in sorted(runs, key=_label):
        try:
            _, task, datamodule = load_run(run)
            if images is None:
                images = _test_images(datamodule, num_images)
            blocks = list(task.backbone.blocks)
            chosen = layers if layers is not None else sorted({0, len(blocks) // 2, len(blocks) - 1})
            with _outputs_of([blocks[i] for i in chosen]) as captured:
                _inpainting_forward(task, images)
            per_layer = []
            for layer, (_, tokens) in zip(chosen, captured):
                per_image = [token_clusters(tokens[i]) for i in range(len(images))]
                per_layer.append((layer, per_image))
                for index, labels in enumerate(per_image):
                    rows.append({"run": _label(run), "layer": layer + 1, "image": index,
                                 "tokens": f"{labels.shape[0]}x{labels.shape[1]}",
                                 "cluster sizes": " ".join(str(n) for n in np.bincount(labels.ravel(), minlength=4)),
                                 "spatial coherence": f"{spatial_coherence(labels):.3f}"})
            maps.append((_label(run), per_layer))
        except Exception as error:  # noqa: BLE001 - one run that cannot be rebuilt is a note, not a lost section
            notes.append(f"{_label(run)} ({run.get('run_dir')}): not shown: {type(error).__name__}: {error}")
    if len(data) > 1:
        notes.append(f"the runs used different data ({', '.join(map(str, data))}): the images differ between mixers")
    if not maps:
        return Section("figure5", title, intro, notes=notes, missing="no run could be rebuilt (see the notes)")
    figure = _plot_clusters(images, maps, out_dir / "figure5_token_clusters.png", smoke=is_smoke(runs))
    return Section("figure5", title, intro, tables={"figure5": rows}, figures=[figure], notes=notes)


def _plot_clusters(images: torch.Tensor, maps: list[tuple[str, list[tuple[int, list[np.ndarray]]]]], path: Path, *,
                   smoke: bool = False) -> Path:
    """One row per mixer; per image, the input then the cluster map of each chosen layer."""
    plt = pyplot()
    layers = len(maps[0][1])
    columns = len(images) * (1 + layers)
    fig, axes = plt.subplots(len(maps), columns, figsize=(1.6 * columns, 1.7 * len(maps) + 0.4), squeeze=False)
    size = images.shape[-2:]
    for m, (name, per_layer) in enumerate(maps):
        for i in range(len(images)):
            first = i * (1 + layers)
            axes[m][first].imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            if m == 0:
                axes[m][first].set_title(f"image {i}", fontsize=8)
            for j, (layer, labels) in enumerate(per_layer, start=1):
                grid = labels[i]
                upsampled = np.kron(grid, np.ones((size[0] // grid.shape[0], size[1] // grid.shape[1])))
                axes[m][first + j].imshow(upsampled, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
                if m == 0:
                    axes[m][first + j].set_title(f"layer {layer + 1}", fontsize=8)
        axes[m][0].set_ylabel(_short(name), fontsize=8)
        for axis in axes[m]:
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle(figure_title("Figure 5: token clusters (spectral clustering, 4 clusters) per mixer and layer", smoke),
                 fontsize=10)
    return save_figure(fig, path)


def _afno_spectra(task: torch.nn.Module, images: torch.Tensor) -> list[dict[str, Any]]:
    """Per AFNO layer: mean |spectrum| after softshrink on the kept (H freq, W freq) modes and the zeroed fractions."""
    from afno_repro.mixers.afno import AFNO2D, split_layout

    mixers = [block.mixer for block in task.backbone.blocks if isinstance(block.mixer, AFNO2D)]
    grids: list[tuple[int, int]] = []
    pre_hooks = [m.register_forward_pre_hook(lambda module, inputs: grids.append(tuple(inputs[0].shape[1:3])))
                 for m in mixers]
    try:
        with _outputs_of([m.shrink for m in mixers]) as captured:
            _inpainting_forward(task, images)
    finally:
        for handle in pre_hooks:
            handle.remove()
    layers = []
    for index, (mixer, (h, w), (before, after)) in enumerate(zip(mixers, grids, captured)):
        m_h, m_w = mixer.cutoffs(h, w)
        rows = h if m_h is None else 2 * m_h
        cols = w // 2 + 1 if m_w is None else m_w
        # Split block layout (re/im, blocks, batch*cols*rows, channels per block), tokens ordered
        # (batch, W freq, H freq); a GPU or autocast run hands over the stacked layout, converted here.
        before, after = split_layout(before), split_layout(after)
        magnitude = after.float().pow(2).sum(0).sqrt()
        mean = magnitude.reshape(mixer.num_blocks, len(images), cols, rows, -1).mean(dim=(0, 1, 4)).T
        layers.append({"layer": index + 1, "log_magnitude": torch.log10(mean + 1e-8).cpu().numpy(),
                       "zero_after": float((after == 0).float().mean()), "zero_before": float((before == 0).float().mean()),
                       "threshold": mixer.sparsity_threshold, "cropped": m_h is not None})
    return layers


def figure6_section(runs: list[dict[str, Any]], out_dir: Path, *, num_images: int = 4) -> Section:
    """Figure 6: the spectrum after soft-thresholding per AFNO layer, and how much softshrink zeroes."""
    title = "Figure 6: AFNO's spectrum after soft-thresholding, per layer"
    intro = ("For each AFNO model: per layer, log10 of the mean magnitude of the spectrum after softshrink (averaged "
             "over channels, blocks and images; zero frequency at the centre of the vertical axis, the half-spectrum "
             "of the real FFT along the horizontal), and the fraction of real and imaginary parts softshrink sets to "
             "zero, beside the fraction already zero before it (the ReLU's and the low-pass's share).")
    usable = [run for run in runs if (run.get("mixer_options") or {}).get("sparsity_threshold", 0.01) != 0]
    if not runs:
        return Section("figure6", title, intro, missing="no completed AFNO inpainting run yet: "
                       "`python train.py experiment=table2_inpainting` (or `make reproduce-all`) makes one.")
    notes = [f"{_label(run)}: sparsity threshold 0, no softshrink to show." for run in runs if run not in usable]
    rows, spectra = [], []
    for run in sorted(usable, key=_label):
        try:
            _, task, datamodule = load_run(run)
            layers = _afno_spectra(task, _test_images(datamodule, num_images))
        except Exception as error:  # noqa: BLE001 - one run that cannot be rebuilt is a note
            notes.append(f"{_label(run)} ({run.get('run_dir')}): not shown: {type(error).__name__}: {error}")
            continue
        spectra.append((_label(run), layers))
        rows += [{"run": _label(run), "layer": layer["layer"], "sparsity threshold": layer["threshold"],
                  "zero after softshrink": f"{layer['zero_after']:.3f}",
                  "zero before softshrink": f"{layer['zero_before']:.3f}"} for layer in layers]
    if not spectra:
        return Section("figure6", title, intro, notes=notes, missing="no AFNO run with softshrink could be rebuilt")
    figure = _plot_spectra(spectra, out_dir / "figure6_spectra.png", smoke=is_smoke(runs))
    return Section("figure6", title, intro, tables={"figure6": rows}, figures=[figure], notes=notes)


def _plot_spectra(spectra: list[tuple[str, list[dict[str, Any]]]], path: Path, *, smoke: bool = False) -> Path:
    """Top: the first run's spectrum per layer (Table 2's AFNO when there is one), the vertical axis
    in signed frequencies (zero at the centre); bottom: the fraction softshrink zeroes per layer for
    every run."""
    plt = pyplot()
    name, layers = spectra[0]
    fig = plt.figure(figsize=(max(9.0, 2.6 * len(layers)), 8))
    grid = fig.add_gridspec(2, len(layers), height_ratios=(1, 1.1))
    for c, layer in enumerate(layers):
        axis = fig.add_subplot(grid[0, c])
        image = np.fft.fftshift(layer["log_magnitude"], axes=0)
        rows, cols = image.shape
        # After fftshift, row 0 holds frequency -(rows // 2): label the rows with the signed frequencies.
        low = -(rows // 2)
        shown = axis.imshow(image, cmap="viridis", aspect="auto", origin="lower",
                            extent=(-0.5, cols - 0.5, low - 0.5, low + rows - 0.5))
        fig.colorbar(shown, ax=axis, fraction=0.046, label="log10 |z|")
        axis.set_title(f"{_short(name)}, layer {layer['layer']}", fontsize=8)
        axis.set_xlabel("W frequency (rfft half)", fontsize=7)
        axis.set_ylabel("H frequency (signed, 0 at the centre)", fontsize=7)
        axis.tick_params(labelsize=6)
    line = fig.add_subplot(grid[1, :])
    # Curves that coincide (thresholds that zero the whole spectrum) stay apart: each its own marker and line
    # style, shifted sideways a little.
    for index, (label, found) in enumerate(spectra):
        marker, style = _STYLES[index % len(_STYLES)]
        offset = (index - (len(spectra) - 1) / 2) * 0.04
        line.plot([l["layer"] + offset for l in found], [l["zero_after"] for l in found], marker=marker, linestyle=style,
                  markersize=7 - min(index, 4), markerfacecolor="none" if index % 2 else None, label=_short(label))
    line.set_xlabel("layer (curves shifted apart slightly)" if len(spectra) > 1 else "layer")
    line.set_ylabel("fraction softshrink zeroes")
    line.set_ylim(-0.02, 1.02)
    line.set_xticks(sorted({l["layer"] for _, found in spectra for l in found}))
    line.grid(True, alpha=0.3)
    line.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.suptitle(figure_title("Figure 6: AFNO's spectrum after soft-thresholding", smoke), fontsize=10)
    return save_figure(fig, path)


def _sizes(trained: int, patch: int, factors: Sequence[float]) -> list[int]:
    """Image sizes ``factor * trained`` rounded to whole patches (at least one), each once.

    >>> _sizes(224, 4, (0.5, 1.0, 1.5, 2.0))
    [112, 224, 336, 448]
    """
    return sorted({max(patch, int(round(factor * trained / patch)) * patch) for factor in factors})


def resolution_section(runs: list[dict[str, Any]], out_dir: Path, *, factors: Sequence[float] = (0.5, 1.0, 1.5, 2.0)) -> Section:
    """Zero-shot resolution transfer: each inpainting model scored, without retraining, at other image
    sizes (same evaluation images resized, masks from the run's own mask reading at the new size)."""
    import pytorch_lightning as pl

    # Each evaluation builds a Trainer; its "GPU available" lines would bury the pipeline's output.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    title = "Zero-shot resolution transfer (inpainting, no retraining)"
    intro = ("Each Table 2 model, trained at one image size, is scored on its own evaluation images at other sizes "
             "(0.5x to 2x) with its own checkpoint, position embedding resampled, masks drawn by the run's reading at "
             "the new size. The paper has no such study; a mixer whose weights are tied to the training grid says why.")
    if not runs:
        return Section("resolution", title, intro, missing="no completed Table 2 run yet: "
                       "`python train.py -m experiment=table2_inpainting` (or `make reproduce-all`) makes them.")
    rows, curves, notes = [], {}, []
    for run in sorted(runs, key=_label):
        trained = int(run.get("image_size") or 0)
        try:
            cfg = run_config(run)
            sizes = _sizes(trained, int(cfg.backbone.get("patch_size", 4)), factors)
            task = load_task(run, cfg)  # once: the model as trained; only the data changes with the size
        except Exception as error:  # noqa: BLE001 - a run that cannot be rebuilt is a note
            notes.append(f"{_label(run)} ({run.get('run_dir')}): not evaluated: {type(error).__name__}: {error}")
            continue
        for size in sizes:
            row = {"run": _label(run), "trained at": trained, "evaluated at": size}
            try:
                datamodule = test_data(run_config(run, image_size=size))
                trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                                     enable_progress_bar=False, enable_model_summary=False)
                (values,) = trainer.test(task, datamodule=datamodule, verbose=False)
                interpolation = (run.get("mixer_options") or {}).get("filter_interpolation")
                how = (f"GFN's filter, sized for the training grid, resized ({interpolation})"
                       if interpolation and size != trained else "")
                row.update({"PSNR (dB)": f"{values['test/psnr']:.2f}", "SSIM": f"{values['test/ssim']:.4f}",
                            "images": int(values.get("test/num_images", 0)) or "", "note": how})
                curves.setdefault(_label(run), []).append((size, float(values["test/psnr"])))
            except Exception as error:  # noqa: BLE001 - e.g. a filter sized for the training grid
                row.update({"PSNR (dB)": "", "SSIM": "", "images": "",
                            "note": f"does not transfer: {str(error).split('. ')[0][:200]}"})
            if size == trained and row["PSNR (dB)"]:
                recorded = (run.get("result") or {}).get("psnr")
                row["recorded PSNR (dB)"] = format_number(recorded, ".2f")  # a hand-edited "13.77" shows as written
            rows.append(row)
    if not rows:
        return Section("resolution", title, intro, notes=notes, missing="no run could be rebuilt (see the notes)")
    figure = _plot_resolution(curves, {int(r.get("image_size") or 0) for r in runs}, out_dir / "resolution_transfer.png",
                              smoke=is_smoke(runs))
    return Section("resolution", title, intro, tables={"resolution": rows}, figures=[figure], notes=notes)


def _plot_resolution(curves: dict[str, list[tuple[int, float]]], trained: set[int], path: Path, *,
                     smoke: bool = False) -> Path:
    """One curve per model, each with its own marker and line style and a small sideways offset, so
    that curves that coincide (GFN's and Long-Short's at smoke size) stay visible."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    styles = _STYLES
    shift = 0.006 * max((s for points in curves.values() for s, _ in points), default=0)
    for index, (name, points) in enumerate(sorted(curves.items())):
        points.sort()
        marker, line = styles[index % len(styles)]
        offset = (index - (len(curves) - 1) / 2) * shift
        axis.plot([s + offset for s, _ in points], [p for _, p in points], marker=marker, linestyle=line,
                  markersize=8 - index, markerfacecolor="none" if index % 2 else None, label=_short(name).split("/")[-1])
    for size in sorted(trained):
        axis.axvline(size, color="grey", linestyle="--", linewidth=1, label=f"trained at {size}")
    axis.set_xlabel("evaluation image size (pixels; curves shifted apart slightly)")
    axis.set_ylabel("inpainting PSNR (dB)")
    axis.set_title(figure_title("Zero-shot resolution transfer", smoke), fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plot: it covered points
    return save_figure(fig, path)
