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

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic
from torch import Tensor

from afno_repro.tasks.fill_cache import FillCache
from afno_repro.tasks.inpainting import image_quality_metrics

__all__ = ["BASELINES", "BaselineWorkerError", "BiharmonicPool", "FillCache", "evaluate_baselines", "masked_input",
           "biharmonic"]


def masked_input(image: Tensor, mask: Tensor) -> Tensor:
    """The model input itself: hidden pixels zero, visible pixels as they are."""
    return image * (1 - mask)


def biharmonic(image: Tensor, mask: Tensor, cache: FillCache | None = None) -> Tensor:
    """Fill the hidden pixels of each image by biharmonic inpainting (scikit-image, on CPU).

    ``inpaint_biharmonic(..., split_into_regions=True)`` gives the same numbers (it solves each
    connected hidden region alone) but no speed-up on the experiments' masks: a random walk on the
    token grid is one connected region. :class:`BiharmonicPool` runs the same fills in worker
    processes, the images of a batch in parallel.

    Parameters
    ----------
    image
        ``(B, 3, H, W)`` in ``[0, 1]``.
    mask
        ``(B, 1, H, W)``, 1 where a pixel is hidden.
    cache
        Where fills solved before are read back and new ones stored (:class:`FillCache`); ``None``
        solves every image. The numbers are the same either way.

    Returns
    -------
    Tensor
        ``(B, 3, H, W)`` float32 on ``image``'s device, clamped to ``[0, 1]``. An image with every pixel
        hidden has no boundary to extend (scikit-image cannot solve it): it is filled with zeros, as the
        masked input is.
    """
    images, hidden = _fill_inputs(image, mask)
    filled = []
    for img, hid in zip(images, hidden):
        # As BiharmonicPool.submit(): nothing or everything hidden needs no solve, a stored fill is read back.
        fill, key = _trivial_fill(img, hid), None
        if fill is None and cache is not None:
            key = cache.key(img, hid)
            fill = cache.load(key, img, hid)
        if fill is None:
            fill = inpaint_biharmonic(img, hid, channel_axis=-1)
            if key is not None:
                cache.save(key, fill, hid)
        filled.append(fill)
    return _filled_batch(filled, image)


def _trivial_fill(image: np.ndarray, hidden: np.ndarray) -> np.ndarray | None:
    """The fill of an image with nothing hidden (itself) or everything hidden (zeros: no boundary to
    extend), ``None`` for any other image, which the solver fills."""
    if not hidden.any():
        return image
    return np.zeros_like(image) if hidden.all() else None


def _fill_inputs(image: Tensor, mask: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The arrays scikit-image fills: ``(B, H, W, 3)`` float64 images, ``(B, H, W)`` boolean hidden pixels."""
    images = image.detach().cpu().double().permute(0, 2, 3, 1).numpy()
    hidden = mask.detach().cpu()[:, 0].numpy() > 0.5
    return images, hidden


def _filled_batch(filled: list[np.ndarray], like: Tensor) -> Tensor:
    """The ``(H, W, 3)`` fills of a batch as one ``(B, 3, H, W)`` float32 tensor on ``like``'s device
    (float64 fills as solved and float32 ones read back from a :class:`FillCache` give the same tensor)."""
    out = torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2)
    return out.float().clamp(0, 1).to(like.device)


class BaselineWorkerError(RuntimeError):
    """A fill of :class:`BiharmonicPool` failed in a worker process, or a worker process died."""


@dataclass
class _Batch:
    number: int
    # Per image: the future of its fill, or the fill itself (nothing or everything hidden, or read back
    # from the cache).
    fills: list[Future | np.ndarray]
    # Per image whose fill is a future, what the cache stores it under: (key, hidden pixels), else None.
    keys: list[tuple[str, np.ndarray] | None]
    like: Tensor
    extra: tuple[Any, ...]


class BiharmonicPool:
    """:func:`biharmonic` in worker processes: batches go in, their fills come back in the same order.

    Each image's fill is one task for ``workers`` processes, so filling overlaps with whatever the
    main process does meanwhile (the model's forward passes in the test loop). A batch comes back
    through the very code :func:`biharmonic` uses around scikit-image's ``inpaint_biharmonic``, whose
    float64 result does not depend on the process it runs in: the fills are bit for bit those of
    :func:`biharmonic`, so whatever scores them gives the same numbers.

    The workers start from a fresh interpreter (``forkserver``, or ``spawn`` where there is none),
    never a fork of the main process, which may hold CUDA. A worker's task is ``fill`` itself, which
    imports scikit-image, not the project; the main script (``train.py``) is imported once by the
    forkserver the workers fork from (by each worker under ``spawn``), as multiprocessing does for
    every pool.

    Parameters
    ----------
    workers
        Worker processes (at least 1); each fills one image at a time, single-threaded.
    fill
        What a worker runs on each image with a hidden pixel: ``fill(image (H, W, 3) float64,
        hidden (H, W) bool, channel_axis=-1) -> (H, W, 3)``. Default: scikit-image's
        ``inpaint_biharmonic``. It is sent to the workers by name, so it must be importable there.
    cache
        As :func:`biharmonic`'s: fills found there are not sent to the workers, and the main process
        stores each fill a worker hands back.

    Notes
    -----
    Memory stays bounded when filling is slower than the main process: :meth:`finished` waits for
    the oldest batch while more than two batches and more than ``4 * workers`` images are waiting
    (each image is held twice in float64, 2.4 MB at 224x224, until it is handed back).

    Example
    -------
    >>> import torch
    >>> image = torch.linspace(0, 1, 24).repeat(2, 3, 24, 1)
    >>> mask = torch.zeros(2, 1, 24, 24); mask[..., 10:12, 10:12] = 1
    >>> with BiharmonicPool(workers=1) as pool:
    ...     pool.submit(image, mask, "batch 0")
    ...     [(filled.shape, tag) for filled, tag in pool.finished(wait=True)]
    [(torch.Size([2, 3, 24, 24]), 'batch 0')]
    """

    def __init__(self, workers: int, fill: Callable[..., np.ndarray] | None = None,
                 cache: FillCache | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(
                f"workers={workers!r} is not a positive integer. It is how many processes fill images "
                "beside the main process; to fill in the main process instead, call biharmonic() directly."
            )
        self.workers = workers
        self._fill = fill or inpaint_biharmonic
        self.cache = cache
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        self._batches: deque[_Batch] = deque()
        self._submitted = 0

    def submit(self, image: Tensor, mask: Tensor, *extra: Any) -> None:
        """Queue the fills of one batch (``image (B, 3, H, W)``, ``mask (B, 1, H, W)``, as :func:`biharmonic`);
        ``extra`` comes back with the batch's fills from :meth:`finished`."""
        images, hidden = _fill_inputs(image, mask)
        fills, keys = [], []
        for img, hid in zip(images, hidden):
            # As biharmonic(): nothing hidden keeps the image, everything hidden is zeros, a stored fill is read.
            fill, key = _trivial_fill(img, hid), None
            if fill is None and self.cache is not None:
                key = (self.cache.key(img, hid), hid)
                fill = self.cache.load(key[0], img, hid)
            if fill is None:
                fill = self._executor.submit(self._fill, img, hid, channel_axis=-1)
            fills.append(fill)
            keys.append(key if isinstance(fill, Future) else None)
        self._batches.append(_Batch(self._submitted, fills, keys, image, extra))
        self._submitted += 1

    def finished(self, wait: bool = False) -> Iterator[tuple[Any, ...]]:
        """``(filled, *extra)`` of each batch whose fills are done, oldest first, in submission order.

        Without ``wait`` it stops at the first batch still being filled, unless too many images are
        waiting (see the class notes); with ``wait`` it waits for every batch submitted. ``filled`` is
        what :func:`biharmonic` returns for the batch, on the device of the submitted images.

        Raises
        ------
        BaselineWorkerError
            A fill raised in its worker or a worker process died; the message says which batch.
        """
        while self._batches:
            waiting = sum(len(batch.fills) for batch in self._batches)
            backlog = len(self._batches) > 2 and waiting > 4 * self.workers
            batch = self._batches[0]
            if not (wait or backlog or all(not isinstance(f, Future) or f.done() for f in batch.fills)):
                return
            filled = [self._result(fill, batch.number) for fill in batch.fills]
            if self.cache is not None:
                for fill, key in zip(filled, batch.keys):
                    if key is not None:
                        self.cache.save(key[0], fill, key[1])
            self._batches.popleft()
            yield (_filled_batch(filled, batch.like), *batch.extra)

    def _result(self, fill: Future | np.ndarray, number: int) -> np.ndarray:
        if not isinstance(fill, Future):
            return fill
        fix = ("The model's own numbers are not affected and the run's checkpoints are kept. Score the "
               "baselines in the main process instead (InpaintingTask: task.baseline_workers=0), or leave "
               "them out (run_baselines=false).")
        try:
            return fill.result()
        except BrokenProcessPool as error:
            raise BaselineWorkerError(
                f"a worker process of the biharmonic baseline died while filling batch {number} (killed, "
                f"for instance by the out-of-memory killer; each worker holds about 0.5 GB). {fix}"
            ) from error
        except Exception as error:  # noqa: BLE001 - any failure of the fill, re-raised with its batch
            raise BaselineWorkerError(
                f"the biharmonic fill of batch {number} failed in a worker process: "
                f"{type(error).__name__}: {error}. {fix}"
            ) from error

    def close(self, cancel: bool = False) -> None:
        """Stop the workers, after the fills already queued unless ``cancel`` (then only running ones finish)."""
        self._executor.shutdown(wait=True, cancel_futures=cancel)
        self._batches.clear()

    def __enter__(self) -> "BiharmonicPool":
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        self.close(cancel=kind is not None)


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
