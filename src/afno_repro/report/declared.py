"""Every table and figure of the report, declared in one place and rendered by :mod:`afno_repro.report.build`.

A :class:`Declaration` says what a section shows: the experiment(s) whose runs fill it, the metrics
(each beside the paper's number, which :func:`afno_repro.report.sweep.collect` attaches to every run
from ``paper_results.yaml``), the baselines every run scored on its own evaluation images, the
extra columns, and which sweep may name a best point. Adding a table to the report is adding one
declaration here (and its paper numbers to ``paper_results.yaml``); the renderer, the templates and
the section order follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from afno_repro.report.render import share_digits

__all__ = ["BASELINES", "DECLARED", "Borrowed", "Declaration", "Metric", "Scatter", "Sweep", "Table", "borrowed_by"]


@dataclass(frozen=True)
class Metric:
    """A number of ``metrics.json``'s ``result`` as a column.

    ``min_classes``: the column is shown only when every run's task has at least this many classes
    (a top-5 accuracy over 5 or fewer classes is 100% for any model). ``min_span``: the smallest
    range a figure's axis of this metric is drawn over, so that noise is never blown up into a trend.
    ``per_image``: a share of the images in percent (an accuracy), which moves in steps of ``100 / images``:
    it is shown with no more decimals than that step has (:meth:`shown_digits`).
    """

    key: str
    label: str
    digits: int
    min_classes: int = 0
    min_span: float = 0.0
    per_image: bool = False

    def shown_digits(self, num_images: Any = None) -> int:
        """The decimals this metric is shown with, scored on ``num_images`` images.

        >>> TOP1.shown_digits(50), TOP1.shown_digits(200), TOP1.shown_digits(50_000), TOP1.shown_digits(None)
        (0, 1, 2, 2)
        >>> PSNR.shown_digits(4)
        2
        """
        return share_digits(self.digits, num_images) if self.per_image else self.digits


PSNR = Metric("psnr", "PSNR (dB)", 2, min_span=1.0)
SSIM = Metric("ssim", "SSIM", 4, min_span=0.05)
MIOU = Metric("miou", "mIoU (%)", 2, min_span=2.0)
TOP1 = Metric("top1", "top-1 (%)", 2, min_span=2.0, per_image=True)
TOP5 = Metric("top5", "top-5 (%)", 2, min_classes=6, min_span=2.0, per_image=True)

# Each baseline a task scores on the very images (and masks) its model is scored on, as metrics.json names it.
BASELINES = {
    "masked_input": "zero-fill",  # the masked input as it is
    "biharmonic": "biharmonic inpainting",  # scikit-image's
    "pixel_prior": "pixel prior",  # the most frequent training class per cell of a grid
    "majority": "majority class",
}
INPAINTING = ("masked_input", "biharmonic")
SEGMENTATION = ("pixel_prior",)
CLASSIFICATION = ("majority",)


@dataclass(frozen=True)
class Table:
    """One table of runs: one row per run of ``experiment``, then one row per baseline.

    ``paper``: the section of ``paper_results.yaml`` holding each row's parameter count.
    ``columns``, ``after``: extra columns before and after the metrics, by name (``dataset``,
    ``resize_miou``: see ``build.COLUMNS``).
    ``distinct_data``: a record field (``paper_column``) whose values are meant to be different data;
    values that trained on identical data (same ``data`` and data options) are flagged.
    """

    experiment: str
    metrics: tuple[Metric, ...]
    baselines: tuple[str, ...]
    paper: str | None = None
    columns: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # extra columns after the metrics
    name: str | None = None
    distinct_data: str | None = None


@dataclass(frozen=True)
class Sweep:
    """One swept mixer option of one experiment, against one metric. A best point is named only when
    its lead over the runner-up exceeds the run-to-run spread (points rerun with another seed)."""

    experiment: str
    option: str
    metric: Metric
    paper_best: str  # the key of figure4_ablations in paper_results.yaml whose ``best`` the paper states
    xlabel: str
    xscale: str  # "symlog" (a threshold from 0) or "log2" (a count)
    baselines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Borrowed:
    """Points a figure takes from another experiment's runs instead of training them again: the completed
    runs of ``experiment`` whose paper row is one of ``rows``, which are the very runs the figure's own
    sweep would make (the same model and recipe). ``label`` marks them in the figure and its table; a row
    with no completed run is named as missing, never dropped.

    ``make reproduce-all`` reads this too: ``--only <figure's experiment>`` brings ``experiment`` along,
    and the figure's sweep runs after it (:func:`afno_repro.pipeline.build_plan`).
    """

    experiment: str
    rows: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class Scatter:
    """A figure of points (``x`` a record field against a metric), one marker per family, every point
    labelled; ``paper_init`` is how the paper initialised every point (a point trained otherwise is
    marked); ``borrowed``: points drawn from other experiments' runs (:class:`Borrowed`)."""

    experiment: str
    x: str
    xlabel: str
    metric: Metric
    paper_init: str
    baselines: tuple[str, ...] = ()
    borrowed: tuple[Borrowed, ...] = ()


@dataclass(frozen=True)
class Declaration:
    """A section of the report. ``setting``: the paper's model, data and size, said beside the title
    (and, at smoke scale, beside what the runs here trained on)."""

    key: str
    title: str
    setting: str
    intro: str
    tables: tuple[Table, ...] = ()
    sweeps: tuple[Sweep, ...] = ()
    scatter: Scatter | None = None
    scaling: bool = False  # Table 1: the scaling study, not runs


DECLARED: tuple[Declaration, ...] = (
    Declaration(
        "table1", "Table 1: complexity of the token mixers, measured", "formulas in the number of tokens N",
        "The paper's Table 1 gives each mixer's cost as a formula in the number of tokens N. Here one mixer at a fixed "
        "width runs forward and backward on growing token grids; the growth exponent p in cost ~ N^p is fitted by "
        "least squares on the log-log points (self-attention: 2; the Fourier mixers: about 1, N log N).",
        scaling=True),
    Declaration(
        "figure1", "Figure 1: Cityscapes mIoU against parameters, per trunk and mixer",
        "SegFormer B0-B3 and Swin T/S/B, ImageNet-pretrained, Cityscapes 1024x1024",
        "SegFormer B0-B2 with efficient attention, GFN or AFNO (each pretrained by `fig1_pretrain`) and Swin T/S/B, "
        "finetuned on Cityscapes by `fig1_trunks`; the B3 points are Table 4's runs of those three mixers "
        "(`table4_cityscapes`, marked \"from Table 4\"): the same models and recipe (Section 5.6), not trained twice. "
        "The paper plots these points but prints no values, so there is no number to set ours beside; the shape to "
        "compare is AFNO's points above the others at equal size.",
        scatter=Scatter("fig1_trunks", "params_m", "parameters (M)", MIOU, paper_init="ImageNet-pretrained",
                        baselines=SEGMENTATION,
                        # Table 4's LS and AFNO-25% rows are not Figure 1 points.
                        borrowed=(Borrowed("table4_cityscapes", ("table4/efficient_attention", "table4/gfn",
                                                                 "table4/afno"), "from Table 4"),))),
    Declaration(
        "table2", "Table 2: inpainting", "ViT-B/4, ImageNet-1k, 224x224",
        "PSNR and SSIM of the selected checkpoint on the evaluation images, random-walk masks.",
        tables=(Table("table2_inpainting", (PSNR, SSIM), INPAINTING, paper="table2_inpainting"),)),
    Declaration(
        "table3", "Table 3: few-shot segmentation, mIoU", "ViT-B/4 pretrained by inpainting, DatasetGAN splits, 224x224",
        "Each Table 2 row finetuned on DatasetGAN's few-shot splits from its own inpainting run.",
        tables=(Table("table3_fewshot", (MIOU,), SEGMENTATION, paper="table3_fewshot_miou", columns=("dataset",),
                      distinct_data="paper_column"),)),
    Declaration(
        "table4", "Table 4: Cityscapes, mIoU", "SegFormer-B3/4, Cityscapes 1024x1024",
        "Each SegFormer-B3 mixer pretrained as an ImageNet classifier (`table4_pretrain`) and finetuned on Cityscapes; "
        "the headline is SegFormer's sliding window, beside it the paper's literal reading (the image resized).",
        tables=(Table("table4_cityscapes", (MIOU,), SEGMENTATION, paper="table4_cityscapes",
                      after=("resize_miou",)),)),
    Declaration(
        "table5", "Table 5: ImageNet-1k classification", "ViT-S/4, ImageNet-1k, 224x224",
        "Top-1 and top-5 accuracy with A.5's recipe (DeiT augmentation, Mixup/CutMix).",
        tables=(Table("table5_classification", (TOP1, TOP5), CLASSIFICATION, paper="table5_classification"),)),
    Declaration(
        "table6", "Table 6: ablations", "ViT-XS/4, inpainting on 10% of ImageNet, then few-shot CelebA-Faces",
        "Each ablation row is pretrained by inpainting (`table6_pretrain`: PSNR) and finetuned few-shot from its own "
        "run (`table6_finetune`: mIoU), each beside the paper's.",
        tables=(Table("table6_pretrain", (PSNR,), INPAINTING, paper="table6_ablations", name="table6_pretrain"),
                Table("table6_finetune", (MIOU,), SEGMENTATION, paper="table6_ablations", name="table6_finetune"))),
    Declaration(
        "figure4", "Figure 4: AFNO's sparsity threshold and number of blocks", "ViT-XS/4, as Table 6",
        "The Table 6 AFNO model against the softshrink threshold lambda (inpainting PSNR of `fig4_sparsity`, and "
        "few-shot CelebA-Faces mIoU of `fig4_sparsity_finetune`, each finetuned from the run with its own lambda, as "
        "section 5.5 does) and against the number of blocks k at equal parameters (PSNR). The paper prints no values; "
        "its text states the best point of each sweep (dashed in the figure, and said under each table). The noise: "
        "`make reproduce-all` reruns each sweep's best two points with seed 1; a few-shot rerun starts from the same "
        "pretrained trunk as its point, so its spread is finetuning's seed noise alone (a lower bound).",
        sweeps=(Sweep("fig4_sparsity", "sparsity_threshold", PSNR, "sparsity_threshold", "sparsity threshold lambda",
                      "symlog", INPAINTING),
                Sweep("fig4_sparsity_finetune", "sparsity_threshold", MIOU, "sparsity_threshold",
                      "sparsity threshold lambda (few-shot CelebA-Faces)", "symlog", SEGMENTATION),
                Sweep("fig4_blocks", "num_blocks", PSNR, "num_blocks", "number of blocks k", "log2", INPAINTING))),
)


def borrowed_by(experiment: str) -> tuple[Borrowed, ...]:
    """The points the report section of ``experiment``'s runs takes from other experiments' runs.

    >>> [(b.experiment, b.rows) for b in borrowed_by("fig1_trunks")]
    [('table4_cityscapes', ('table4/efficient_attention', 'table4/gfn', 'table4/afno'))]
    >>> borrowed_by("table2_inpainting")
    ()
    """
    return tuple(borrowed for declaration in DECLARED if declaration.scatter
                 and declaration.scatter.experiment == experiment for borrowed in declaration.scatter.borrowed)
