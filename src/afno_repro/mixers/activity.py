"""Is the AFNO mixer active? The share of the spectrum soft-thresholding zeroes, measured on test images.

AFNO's soft-thresholding ``S_lambda`` (paper Eq. 8) sets to zero every real and imaginary part of the
block MLP's output whose magnitude is at most ``lambda``. With a ``lambda`` too large for the scale of
that output (the smoke runs: ~98% zeroed at 0.01) the spectral branch passes almost nothing on and the
mixer is the skip alone, whatever its weights: a table row of such a run says nothing about AFNO.

:class:`MeteredSoftshrink` is the ``nn.Softshrink`` AFNO uses; it counts zeros only while a meter is
attached (one ``None`` check per call otherwise; under ``torch.compile`` the check is a guard, so the
compiled training graph is the plain one, and the counting is traced into the test graph). :class:`SpectrumActivity` attaches a meter to every such
layer of a model, here for the task's test pass (:class:`afno_repro.tasks.base.PaperTask`), and
:func:`activity_record` turns the counts into ``metrics.json``'s ``mixer_activity``::

    "mixer_activity": {"spectrum_zeroed": [0.981, ...],  # per layer: share of parts zero after softshrink
                       "zero_before": [0.0, ...],        # per layer: share already zero before it
                       "mean_zeroed": 0.981, "inactive": true, "inactive_above": 0.95,
                       "split": "val", "num_images": 4}

Shares are over the real and imaginary parts of every kept mode (the low-pass's dropped modes are
never computed, so they are not counted), of every channel and every forward pass of the test loop
(several per image where inference slides a window). ``spectrum_zeroed`` counts every part softshrink
outputs as zero, the ones already zero before it included (a block MLP output is hardly ever exactly
zero: ``zero_before`` says how many). A run whose backbone has no AFNO mixer with soft-thresholding
(another mixer, or ``sparsity_threshold=0``) records ``"mixer_activity": null``: the key is always
there, the measure applies or it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["INACTIVE_ABOVE", "MeteredSoftshrink", "SpectrumActivity", "activity_note", "activity_record"]

# A mixer whose soft-thresholding zeroes more than this share of its spectrum, averaged over layers, is
# recorded as effectively off.
INACTIVE_ABOVE = 0.95


class _LayerCounts:
    """Zeros before and after one soft-thresholding, and the parts seen, summed in place on the model's
    device: no host sync per batch, and traceable by ``torch.compile`` (an in-place update of a tensor
    the graph reads), so a compiled test loop keeps one graph."""

    def __init__(self, device: torch.device | str) -> None:
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, before: Tensor, after: Tensor) -> None:
        # count_nonzero: ~6x faster on a CPU than summing the boolean `== 0`, which widens it to int64.
        parts = before.numel()
        self.counts[:2] += parts - torch.stack((torch.count_nonzero(before), torch.count_nonzero(after)))
        self.counts[2] += parts


class MeteredSoftshrink(nn.Softshrink):
    """``nn.Softshrink`` (paper Eq. 8's ``S_lambda``) that counts the zeros of its input and output while
    :attr:`meter` is set (by :class:`SpectrumActivity`); otherwise exactly ``nn.Softshrink``.

    Examples
    --------
    >>> shrink = MeteredSoftshrink(0.5)
    >>> with SpectrumActivity.attached(shrink) as activity:
    ...     _ = shrink(torch.tensor([0.1, -0.2, 0.7, 0.0]))
    >>> activity.counts().tolist()  # zero before, zero after, parts
    [[1, 3, 4]]
    """

    meter: _LayerCounts | None = None

    def forward(self, input: Tensor) -> Tensor:
        output = super().forward(input)
        if self.meter is not None:
            self.meter.update(input, output)
        return output


class SpectrumActivity:
    """Meters on every :class:`MeteredSoftshrink` of a model, in module order (layer order), until
    :meth:`detach`. Build it with :meth:`attach` (None when the model has no such layer) or use
    :meth:`attached` as a context manager."""

    def __init__(self, shrinks: list[MeteredSoftshrink], device: torch.device | str = "cpu") -> None:
        self.shrinks = shrinks
        self.layers = [_LayerCounts(device) for _ in shrinks]
        for shrink, layer in zip(shrinks, self.layers):
            shrink.meter = layer

    @classmethod
    def attach(cls, model: nn.Module, device: torch.device | str = "cpu") -> SpectrumActivity | None:
        """Start counting on every soft-thresholding layer of ``model`` (counts kept on ``device``, the
        model's); None if it has no such layer."""
        shrinks = [module for module in model.modules() if isinstance(module, MeteredSoftshrink)]
        return cls(shrinks, device) if shrinks else None

    @classmethod
    @contextmanager
    def attached(cls, model: nn.Module, device: torch.device | str = "cpu") -> Iterator[SpectrumActivity | None]:
        """``with SpectrumActivity.attached(model) as activity:``; ``activity`` is None when the model has no
        soft-thresholding layer; the meters are detached on leaving."""
        activity = cls.attach(model, device)
        try:
            yield activity
        finally:
            if activity is not None:
                activity.detach()

    def detach(self) -> None:
        """Stop counting (the counts are kept)."""
        for shrink in self.shrinks:
            shrink.meter = None

    def counts(self) -> Tensor:
        """``(layers, 3)`` int64 on the counting device: per layer the parts zero before soft-thresholding,
        zero after it, and all parts seen."""
        return torch.stack([layer.counts for layer in self.layers])


def activity_record(counts: Tensor, *, split: str | None, num_images: int | None) -> dict[str, Any]:
    """``metrics.json``'s ``mixer_activity`` from :meth:`SpectrumActivity.counts` (summed over processes).

    A layer that saw no part (an empty test set) has ``None`` shares and is left out of the mean.

    Examples
    --------
    >>> record = activity_record(torch.tensor([[0, 98, 100], [2, 99, 100]]), split="val", num_images=4)
    >>> record["spectrum_zeroed"], record["zero_before"], record["mean_zeroed"], record["inactive"]
    ([0.98, 0.99], [0.0, 0.02], 0.985, True)
    """
    zero_before, zero_after, total = (column.tolist() for column in counts.cpu().to(torch.int64).unbind(1))
    zeroed = [after / seen if seen else None for after, seen in zip(zero_after, total)]
    before = [count / seen if seen else None for count, seen in zip(zero_before, total)]
    measured = [share for share in zeroed if share is not None]
    mean = sum(measured) / len(measured) if measured else None
    return {"spectrum_zeroed": zeroed, "zero_before": before, "mean_zeroed": mean,
            "inactive": mean is not None and mean > INACTIVE_ABOVE, "inactive_above": INACTIVE_ABOVE,
            "split": split, "num_images": num_images}


def activity_note(record: dict[str, Any], *, layers: bool = True) -> str | None:
    """One line for a run's end-of-run summary when its AFNO mixer is effectively off, else None.

    ``record`` is the run's ``metrics.json`` (its ``mixer_activity`` entry is read); ``layers=False``
    leaves out the per-layer shares (the report's flag on a table row or a point).

    Examples
    --------
    >>> activity_note({"mixer_activity": activity_record(torch.tensor([[0, 979, 1000], [0, 983, 1000]]),
    ...                                                  split="val", num_images=4)})
    'AFNO mixer effectively off: softshrink zeroes 98.1% of the spectrum (layers: 97.9, 98.3; over 95% counts as off)'
    >>> activity_note({"mixer_activity": None}) is None
    True
    """
    activity = record.get("mixer_activity")
    if not activity or not activity.get("inactive"):
        return None
    flag = f"AFNO mixer effectively off: softshrink zeroes {100 * activity['mean_zeroed']:.1f}% of the spectrum"
    if not layers:
        return flag
    shares = ", ".join("n/a" if share is None else f"{100 * share:.1f}" for share in activity["spectrum_zeroed"])
    return f"{flag} (layers: {shares}; over {100 * activity['inactive_above']:.0f}% counts as off)"
