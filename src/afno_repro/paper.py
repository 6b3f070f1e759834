"""The paper's published numbers and appendix hyperparameters, shipped with the package.

``paper_results.yaml`` beside this file is transcribed from the paper (tables 1-6, figure 4 and
appendix A.2-A.6). Reports and the model table read their "paper" column from here.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


class Printed(float):
    """A number as the paper prints it: a float, which also keeps the decimals it was printed with (the paper's
    SSIM 0.920 is 0.92 as a float, and would be shown with a digit fewer than the paper gives). ``str`` and the
    ``""``/``"g"`` formats give the printed text; every other format spec formats the value.

    >>> value = Printed(0.92, "0.920")
    >>> value == 0.92, value.decimals, str(value), f"{value:g}", f"{value:.1f}"
    (True, 3, '0.920', '0.920', '0.9')
    >>> import copy, pickle
    >>> str(copy.deepcopy(value)), str(pickle.loads(pickle.dumps(value)))
    ('0.920', '0.920')
    """

    decimals: int | None
    text: str

    def __new__(cls, value: float, text: str) -> "Printed":
        number = super().__new__(cls, value)
        number.text = text
        plain = text.lstrip("+-").replace("_", "")
        number.decimals = len(plain.split(".")[1]) if "." in plain and not any(c in plain for c in "eEnN") else None
        return number

    def __getnewargs__(self) -> tuple[float, str]:  # copy and pickle rebuild it with its text
        return float(self), self.text

    def __str__(self) -> str:
        return self.text

    def __format__(self, spec: str) -> str:
        return self.text if spec in ("", "g") else super().__format__(spec)


class _PaperLoader(yaml.SafeLoader):
    """YAML's safe loader, whose floats are :class:`Printed`."""


def _printed_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Printed:
    return Printed(loader.construct_yaml_float(node), node.value)


_PaperLoader.add_constructor("tag:yaml.org,2002:float", _printed_float)


@cache
def paper_results() -> dict[str, Any]:
    """The whole ``paper_results.yaml`` as nested dicts (read once, then cached); its floats are :class:`Printed`,
    so that a table shows them with the decimals the paper printed."""
    text = resources.files("afno_repro").joinpath("paper_results.yaml").read_text()
    return yaml.load(text, Loader=_PaperLoader)  # noqa: S506 - a SafeLoader with one float constructor added
