"""Learning-free inpainting baselines, scored exactly like :class:`InpaintingTask`.

They put the learned models' PSNR/SSIM in context: ``masked_input`` is the score of doing
nothing (hidden pixels stay zero), ``biharmonic`` that of a classical smooth fill
(``skimage.restoration.inpaint_biharmonic``). Both leave the visible pixels untouched, so they
are directly comparable with the task's default ``metric_region="composite"``.

Example
-------
>>> import torch
>>> from afno_repro.tasks import evaluate_baselines
>>> image = torch.linspace(0, 1, 24).repeat(1, 3, 24, 1)
>>> mask = torch.zeros(1, 1, 24, 24); mask[..., 10:12, 10:12] = 1
>>> scores = evaluate_baselines([{"image": image, "mask": mask, "index": torch.arange(1)}])
>>> scores["biharmonic"]["psnr"] > scores["masked_input"]["psnr"]
True
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterable

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic
from torch import Tensor

from afno_repro.tasks.inpainting import image_quality_metrics

__all__ = ["BASELINES", "evaluate_baselines", "masked_input", "biharmonic"]


def masked_input(image: Tensor, mask: Tensor) -> Tensor:
    """The model input itself: hidden pixels zero, visible pixels as they are."""
    return image * (1 - mask)


def biharmonic(image: Tensor, mask: Tensor) -> Tensor:
    """Fill the hidden pixels of each image by biharmonic inpainting (scikit-image, on CPU).

    Parameters
    ----------
    image
        ``(B, 3, H, W)`` in ``[0, 1]``.
    mask
        ``(B, 1, H, W)``, 1 where a pixel is hidden.

    Returns
    -------
    Tensor
        ``(B, 3, H, W)`` float32 on ``image``'s device, clamped to ``[0, 1]``. An image with every pixel
        hidden has no boundary to extend (scikit-image cannot solve it): it is filled with zeros, as the
        masked input is.
    """
    images = image.detach().cpu().double().permute(0, 2, 3, 1).numpy()
    hidden = mask.detach().cpu()[:, 0].numpy() > 0.5
    filled = [
        img if not hid.any() else np.zeros_like(img) if hid.all() else inpaint_biharmonic(img, hid, channel_axis=-1)
        for img, hid in zip(images, hidden)
    ]
    out = torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2)
    return out.float().clamp(0, 1).to(image.device)


BASELINES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "masked_input": masked_input,
    "biharmonic": biharmonic,
}


@torch.no_grad()
def evaluate_baselines(
    dataloader: Iterable[dict[str, Tensor]], max_batches: int | None = None
) -> dict[str, dict[str, float]]:
    """PSNR and SSIM of every baseline in :data:`BASELINES` on the images and masks of ``dataloader``.

    Parameters
    ----------
    dataloader
        Yields the task's batches ``{"image": (B, 3, H, W) in [0, 1], "mask": (B, 1, H, W), ...}``;
        pass the validation loader (fixed, seeded masks) to score the same images and masks as
        the models.
    max_batches
        Stop after this many batches (None: the whole loader). Biharmonic inpainting runs on
        the CPU, one image at a time, so a subset keeps it quick.

    Returns
    -------
    dict
        ``{name: {"psnr": dB, "ssim": .., "num_images": n, "masked_fraction": ..}}`` for
        ``masked_input`` and ``biharmonic``; PSNR/SSIM are per-image means computed by the task's
        :func:`~afno_repro.tasks.inpainting.image_quality_metrics`.
    """
    valid_count = isinstance(max_batches, int) and not isinstance(max_batches, bool) and max_batches >= 1
    if max_batches is not None and not valid_count:
        raise ValueError(
            f"max_batches={max_batches!r} is not a positive integer. It is how many batches of the "
            "dataloader to score; pass None to use the whole loader or a count such as 10."
        )
    metrics = {name: image_quality_metrics() for name in BASELINES}
    num_images, num_hidden, num_pixels = 0, 0.0, 0
    for batch in islice(dataloader, max_batches):
        image, mask = batch["image"].float(), batch["mask"].float()
        for name, fill in BASELINES.items():
            metrics[name].update(fill(image, mask), image)
        num_images += image.shape[0]
        num_hidden += float(mask.sum())
        num_pixels += mask.numel()
    if num_images == 0:
        raise ValueError("the dataloader yielded no batches; pass a non-empty validation dataloader.")
    return {
        name: {
            **{key: float(value) for key, value in metric.compute().items()},
            "num_images": num_images,
            "masked_fraction": num_hidden / num_pixels,
        }
        for name, metric in metrics.items()
    }
