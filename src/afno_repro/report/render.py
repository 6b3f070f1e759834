"""How a number and a figure are written: the one number format of every table, and matplotlib headless.

The report's tables, a sweep's ``summary.md``, the lines a run prints at its end and the scripts'
tables all write numbers with :func:`format_number`; the report's figures are drawn with
:func:`pyplot` and written with :func:`save_figure`.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any

__all__ = ["format_number", "pyplot", "save_figure"]


def format_number(value: Any, spec: str = ".2f", missing: str = "") -> str:
    """A table cell: ``missing`` for ``None``, a float formatted by ``spec`` (a format spec, e.g.
    ``".2f"``, ``"+.1f"``, ``".3g"``), any other value (a count, a label) as it prints.

    Example
    -------
    >>> format_number(23.456), format_number(None, missing="n/a"), format_number(-1.25, "+.1f"), format_number(32)
    ('23.46', 'n/a', '-1.2', '32')
    >>> format_number(-0.0004)
    '0.00'
    """
    if value is None:
        return missing
    if isinstance(value, float):
        text = format(value, spec)
        # A value that rounds to zero is 0, not "-0.00" (a fitted exponent of -0.0004).
        return text[1:] if text.startswith("-") and float(text) == 0 else text
    return str(value)


def share_digits(digits: int, num_images: Any) -> int:
    """The decimals a share of ``num_images`` images in percent (an accuracy) is shown with: at most ``digits``, and
    no more than its step of ``100 / num_images`` points has (50 images: steps of 2 points, so none).

    >>> share_digits(2, 50), share_digits(2, 200), share_digits(2, 50_000), share_digits(2, None)
    (0, 1, 2, 2)
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images <= 0:
        return digits
    return min(digits, max(0, math.ceil(-math.log10(100 / num_images))))


def format_printed(value: Any, digits: int, missing: str = "") -> str:
    """A number the paper prints, at the table's ``digits`` or at the fewer decimals it was printed with (as
    ``paper_results.yaml`` holds it), never with digits the paper does not give.

    >>> format_printed(0.931, 4), format_printed(25.69, 2), format_printed(70.6, 2), format_printed(None, 2)
    ('0.931', '25.69', '70.6', '')
    >>> from afno_repro.paper import Printed
    >>> format_printed(Printed(0.92, "0.920"), 4), format_printed(Printed(49.6, "49.60"), 2)   # trailing zeros kept
    ('0.920', '49.60')
    """
    if not isinstance(value, float):
        return format_number(value, missing=missing)
    text = repr(value)
    decimals = getattr(value, "decimals", None)
    if decimals is None:
        decimals = len(text.split(".")[1]) if "." in text and "e" not in text else digits
    return f"{value:.{min(digits, decimals)}f}"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures are files, no display is needed or opened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay ``fig`` out tightly, write it to ``path`` (110 dpi, cropped to what is drawn) and close it, so a long report does not
    keep every figure open; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the whole of every label and legend, inside the axes or not
    pyplot().close(fig)
    return path
