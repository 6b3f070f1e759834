"""The paper's published numbers and appendix hyperparameters, shipped with the package.

``paper_results.yaml`` beside this file is transcribed from the paper (tables 1-6, figure 4 and
appendix A.2-A.6). Reports and the model table read their "paper" column from here.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def paper_results() -> dict[str, Any]:
    """The whole ``paper_results.yaml`` as nested dicts (read once, then cached)."""
    text = resources.files("afno_repro").joinpath("paper_results.yaml").read_text()
    return yaml.safe_load(text)
