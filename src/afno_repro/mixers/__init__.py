"""Token mixers: every module in this package registers its mixers on import.

``build_mixer(name, dim, **options)`` returns an ``nn.Module`` mapping ``(B, H, W, C)`` to
``(B, H, W, C)``; ``list_mixers()`` names them all.
"""

import importlib
import pkgutil
from pathlib import Path

from afno_repro.mixers.registry import MixerSpec, build_mixer, get_mixer_spec, list_mixers, register_mixer


class MixerModuleError(ImportError, ValueError):
    """A module of this package failed to import; the message names its file and the fix (a ValueError
    too, so that a run reports it as one paragraph naming the problem, not as a traceback)."""


# Import every sibling module so that each mixer's @register_mixer runs: a new mixer file is
# picked up (and tested by the registry-driven tests) without editing this file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        try:
            importlib.import_module(f"{__name__}.{_module.name}")
        except Exception as _error:  # noqa: BLE001 - any failure of a mixer file, a SyntaxError included
            _file = Path(__path__[0]) / f"{_module.name}.py"
            raise MixerModuleError(
                f"{_file} failed to import ({type(_error).__name__}: {_error}). Every module in {_file.parent} is "
                "imported so that its mixers register, so one that fails stops every mixer, the demo's too: fix it, "
                "or move it out of that folder while you work on it."
            ) from _error

__all__ = ["MixerModuleError", "MixerSpec", "build_mixer", "get_mixer_spec", "list_mixers", "register_mixer"]
