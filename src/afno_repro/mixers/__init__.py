"""Token mixers: every module in this package registers its mixers on import.

``build_mixer(name, dim, **options)`` returns an ``nn.Module`` mapping ``(B, H, W, C)`` to
``(B, H, W, C)``; ``list_mixers()`` names them all.
"""

import importlib
import pkgutil

from afno_repro.mixers.registry import MixerSpec, build_mixer, get_mixer_spec, list_mixers, register_mixer

# Import every sibling module so that each mixer's @register_mixer runs: a new mixer file is
# picked up (and tested by the registry-driven tests) without editing this file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MixerSpec", "build_mixer", "get_mixer_spec", "list_mixers", "register_mixer"]
