"""The report's files from its sections: ``index.md`` and ``index.html`` through the Jinja2 templates
of ``templates/``, and the same tables and figures logged to W&B.

A section (:class:`~afno_repro.report.sections.Section`) holds rows as dicts; here they become cells,
descriptive columns every model row shares are said once above the table, and baseline rows (their
first cell starts with :data:`BASELINE_PREFIX`) are styled apart. :mod:`afno_repro.report.build`
decides what the sections say.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

from afno_repro.report.sections import Section

log = logging.getLogger(__name__)

__all__ = ["BASELINE_PREFIX", "log_to_wandb", "write_html", "write_markdown"]

# The first cell of a baseline row starts with it (the renderer writes it, the templates style it).
BASELINE_PREFIX = "baseline: "


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


# Descriptive columns that, when every row of a table says the same, are said once above it.
_SHARED = ("reading", "comparable", "status", "init")


def _is_baseline(row: dict[str, Any]) -> bool:
    """A baseline row: its first cell names the baseline."""
    return str(next(iter(row.values()), "")).startswith(BASELINE_PREFIX)


def _shared(rows: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """The descriptive columns every model row of ``rows`` shares (said once above the table; baseline
    rows have none) and the columns left for the table itself. ``report.json`` and W&B keep every
    column of every row.

    >>> _shared([{"row": "a", "reading": "r", "status": "completed"}, {"row": "b", "reading": "r", "status": "failed"}])
    ({'reading': 'r'}, ['row', 'status'])
    """
    columns = _columns(rows)
    models = [row for row in rows if not _is_baseline(row)]
    shared = {}
    if len(models) > 1:
        for column in _SHARED:
            values = {str(row.get(column) or "") for row in models}
            if column in columns and len(values) == 1 and values != {""}:
                shared[column] = values.pop()
    return shared, [c for c in columns if c not in shared]


def _shared_line(shared: dict[str, str]) -> str:
    """``Every row: reading: ...; not comparable: ...`` (a reason not to compare already says what it is)."""
    said = [value if column == "comparable" and value != "yes" else f"{column}: {value}"
            for column, value in shared.items()]
    return "Every row: " + "; ".join(said) + "."


def _view(sections: Sequence[Section], folder: Path) -> list[dict[str, Any]]:
    """What the templates show of each section: its tables as cells, with the shared line above."""
    view = []
    for section in sections:
        tables = []
        for name, rows in section.tables.items():
            if not rows:
                continue
            shared, columns = _shared(rows)
            cells = [{"baseline": _is_baseline(row),
                      "cells": [str(row.get(c) if row.get(c) is not None else "") for c in columns]} for row in rows]
            # A section's only table is named after the section: its heading says it already.
            caption = section.captions.get(name) or (None if name == section.key else f"`{name}`")
            tables.append({"caption": caption,
                           "shared": _shared_line(shared) if shared else None, "columns": columns, "rows": cells})
        view.append({"key": section.key, "title": section.title, "short": section.title.split(":")[0],
                     "banner": section.banner, "intro": section.intro, "missing": section.missing,
                     "warnings": section.warnings, "tables": tables, "notes": section.notes,
                     "figures": [Path(f).relative_to(folder).as_posix() for f in section.figures]})
    return view


def _environment():
    import jinja2
    from markupsafe import Markup, escape

    env = jinja2.Environment(loader=jinja2.PackageLoader("afno_repro.report", "templates"), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html.j2"]))
    # `code` spans of the texts, the rest escaped (HTML); a table cell kept on its line (Markdown).
    env.filters["inline"] = lambda text: Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return env


def write_markdown(sections: Sequence[Section], path: Path, header: str) -> Path:
    """``index.md``: a contents list, then each section's label, intro, tables, figures and notes."""
    text = _environment().get_template("index.md.j2").render(header=header, sections=_view(sections, path.parent))
    path.write_text(text)
    return path


def write_html(sections: Sequence[Section], path: Path, header: str, *, title: str = "afno-repro report") -> Path:
    """``index.html``: one self-contained page (figures referenced next to it), every text escaped."""
    text = _environment().get_template("index.html.j2").render(header=header, title=title,
                                                                sections=_view(sections, path.parent))
    path.write_text(text)
    return path


def log_to_wandb(sections: Sequence[Section], out_dir: Path, mode: str) -> None:
    """Every section's tables (``wandb.Table``) and figures (``wandb.Image``) in one W&B run; a W&B
    failure is a warning, never a failed report.

    ``mode`` is ``offline``, ``online`` or ``disabled``, as given (the pipeline's ``--wandb``, else
    ``WANDB_MODE``). Online is checked first as a training run's logger checks it (credentials, an
    answering server): where it cannot start, the tables go to an offline run, with a warning, rather
    than waiting on a login.
    """
    if mode == "disabled":
        return
    from afno_repro.loggers import online_problem

    if mode == "online" and (reason := online_problem()) is not None:
        log.warning("the report's W&B run is offline because %s.", reason)
        mode = "offline"
    run = None
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project="afno-repro", group="reproduce-all", job_type="report", dir=str(out_dir), mode=mode,
                         name="report")
        for section in sections:
            for name, rows in section.tables.items():
                if rows:
                    columns = _columns(rows)
                    run.log({name: wandb.Table(columns=columns, data=[[str(r.get(c, "")) for c in columns] for r in rows])})
            for figure in section.figures:
                run.log({f"{section.key}/{Path(figure).stem}": wandb.Image(str(figure))})
        finishing, run = run, None
        finishing.finish()
        offline = sorted((out_dir / "wandb").glob("offline-run-*"))
        if offline:
            print(f"report tables logged to W&B offline: wandb sync {offline[-1]}", flush=True)
    except Exception as error:  # noqa: BLE001 - W&B is a copy of the report, never a reason to lose it
        log.warning("the report was written, but logging it to W&B failed: %s: %s", type(error).__name__, error)
        if run is not None:  # a run left open would hold W&B's service past the report
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001 - already reported above
                pass
