"""What a run prints, without the third-party lines that say nothing about it.

The entry points call :func:`quiet_third_party_noise` once, explicitly, before they build a run:
``train.py`` (in its Hydra task function, so Slurm jobs get it too), the paper-scale preflight and the
report's figures from trained models. A library importing :mod:`afno_repro` changes nothing.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_third_party_noise", "without_flops"]

_quieted = False


def quiet_third_party_noise() -> None:
    """Drop what every run would print and that says nothing about the run, or says it wrong:
    Lightning's advertisement for its cloud logger, a deprecation inside Lightning's own pytree
    helper, and the "Total Flops" line of Lightning's layer table, which counts only modules that
    set ``example_input_array`` and so printed 0 right under the run's own GFLOPs line."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    import pytorch_lightning  # noqa: F401 - its loggers and their handlers exist once it is imported

    class _DropAdvert(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            # The second: Lightning announcing that it keeps the layer table configured in callbacks/.
            return "litlogger" not in message and "Skipping setting a default `ModelSummary`" not in message

    class _DropZeroFlops(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            if "Total Flops" in message:
                record.msg, record.args = without_flops(message), ()
            return True

    for name in ("pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropAdvert())
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_DropAdvert())
        logging.getLogger(f"{name}.callbacks.model_summary").addFilter(_DropZeroFlops())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Printed by every run on a machine that has Slurm installed, also when the run is not meant for it.
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")


def without_flops(table: str) -> str:
    """Lightning's layer table without its FLOPs column and "Total Flops" line."""
    lines = [line for line in table.splitlines() if not line.rstrip().endswith("Total Flops")]
    header = next((line for line in lines if " | " in line), None)
    if header is None or "FLOPs" not in [cell.strip() for cell in header.split(" | ")]:
        return "\n".join(lines)
    column = [cell.strip() for cell in header.split(" | ")].index("FLOPs")
    kept = []
    for line in lines:
        if " | " in line:
            cells = line.split(" | ")
            line = " | ".join(cells[:column] + cells[column + 1:]).rstrip()
        kept.append(line)
    width = max((len(line) for line in kept if " | " in line), default=0)
    return "\n".join("-" * width if line and set(line) == {"-"} else line for line in kept)
