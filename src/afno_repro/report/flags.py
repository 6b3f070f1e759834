"""What the report says on every row, table and figure that its numbers cannot support by themselves.

- Smoke scale: a run made with ``debug=smoke`` trains a tiny model for a few steps on the embedded
  data; its numbers check the pipeline and say nothing about the paper's claims. :func:`is_smoke`
  tells from the records, and :data:`SMOKE_LABEL` is the line every section and figure carries then.
- An inactive mixer: an AFNO run whose softshrink zeroes nearly all of the spectrum (``metrics.json``'s
  ``mixer_activity``, measured at the end of training) is a network without a working token mixer;
  :func:`mixer_off` is the flag its rows and points carry.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["SMOKE_LABEL", "figure_title", "is_smoke", "mixer_off"]

SMOKE_LABEL = "Smoke scale: pipeline check on embedded data: numbers not comparable with the paper."


def is_smoke(runs: Iterable[dict[str, Any]]) -> bool:
    """Whether any of ``runs`` was made with ``debug=smoke`` (its recorded overrides say so).

    >>> is_smoke([{"overrides": ["experiment=table2_inpainting", "debug=smoke"]}]), is_smoke([{"overrides": []}])
    (True, False)
    """
    return any("debug=smoke" in (run.get("overrides") or []) for run in runs)


def mixer_off(run: dict[str, Any]) -> str | None:
    """The flag of a run whose AFNO mixer is effectively off (``mixer_activity.inactive``), else None:
    :func:`afno_repro.mixers.activity.activity_note` without the per-layer shares.

    >>> mixer_off({"mixer_activity": {"inactive": True, "mean_zeroed": 0.981, "inactive_above": 0.95}})
    'AFNO mixer effectively off: softshrink zeroes 98.1% of the spectrum'
    >>> mixer_off({"mixer_activity": {"inactive": False, "mean_zeroed": 0.4}}) is None
    True
    """
    from afno_repro.mixers.activity import activity_note

    return activity_note(run, layers=False)


def figure_title(title: str, smoke: bool) -> str:
    """A figure's title, with the smoke label on a second line at smoke scale.

    >>> figure_title("Figure 1", True)
    'Figure 1\\nSmoke scale: pipeline check on embedded data: numbers not comparable with the paper.'
    """
    return f"{title}\n{SMOKE_LABEL}" if smoke else title
