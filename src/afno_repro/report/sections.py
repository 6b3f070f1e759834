"""One section of the reproduction report (``outputs/report/``): what every producer returns.

The report (:mod:`afno_repro.report.build`) is a list of sections, one per table and figure of the
paper plus our own studies. A producer (a table of runs, a plot, an analysis of trained models)
returns a :class:`Section`; the builder writes it into ``index.md`` and ``index.html`` and logs its
tables to W&B, so every section is rendered and logged the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Section"]


@dataclass
class Section:
    """A table or figure of the report.

    Attributes
    ----------
    key: short id, e.g. ``"table2"``, ``"figure5"``, ``"resolution"`` (HTML anchor, W&B table name).
    title: heading, in the paper's words, e.g. ``"Table 2: inpainting on ImageNet (ViT-B/4)"``.
    intro: Markdown paragraph(s) above the tables: the reading used, the command that made it,
        and why numbers differ from the paper's where they cannot match.
    tables: named tables, each a list of rows (dicts with the same keys, in column order); written
        as Markdown/HTML tables and logged as W&B tables (the name is the W&B table's).
    captions: the line above a table, by table name, in a reader's words; a table without one is
        captioned with its name (an experiment, as ``python train.py experiment=<name>`` runs it), and a
        section's only table, named after the section, with nothing (its heading says it).
    figures: PNG files (already written inside the report folder), shown below the tables.
    notes: one-line remarks shown under the tables (e.g. a row's reason for not being comparable).
    missing: why the section has no numbers yet (e.g. the experiment has not run), or None.
    warnings: what a reader must know before reading the numbers (an AFNO mixer that is effectively
        off, columns trained on identical data), shown above the tables.
    banner: the line the section opens with (at smoke scale: that its numbers are a pipeline check).
    """

    key: str
    title: str
    intro: str = ""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: str | None = None
    warnings: list[str] = field(default_factory=list)
    banner: str | None = None
