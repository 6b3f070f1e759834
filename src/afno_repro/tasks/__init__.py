"""Lightning tasks: each owns its loss, metrics and logging, and receives its backbone."""

from afno_repro.tasks.base import PaperTask, Reported
from afno_repro.tasks.baselines import evaluate_baselines
from afno_repro.tasks.classification import ClassificationTask
from afno_repro.tasks.inpainting import (
    InpaintingTask,
    NonFiniteLossError,
    composite,
    image_quality_metrics,
    make_inpainting_grid,
    masked_mse,
)
from afno_repro.tasks.segmentation import SegmentationTask
from afno_repro.tasks.segmentation_metrics import iou_from_confusion, protocol_results

__all__ = [
    "ClassificationTask",
    "InpaintingTask",
    "PaperTask",
    "Reported",
    "SegmentationTask",
    "iou_from_confusion",
    "protocol_results",
    "NonFiniteLossError",
    "composite",
    "evaluate_baselines",
    "image_quality_metrics",
    "make_inpainting_grid",
    "masked_mse",
]
