"""Registry of token mixers.

Every mixer is an ``nn.Module`` whose forward maps ``(B, H, W, C) -> (B, H, W, C)``. Mixers
register themselves with :func:`register_mixer`; backbones and configs build them by name with
:func:`build_mixer`. The registry drives the test-suite, so a newly registered mixer is covered
by the existing property tests without writing new ones.

Example
-------
>>> import torch
>>> from afno_repro.mixers import build_mixer
>>> mixer = build_mixer("afno", 64, num_blocks=8)
>>> mixer(torch.randn(2, 7, 5, 64)).shape
torch.Size([2, 7, 5, 64])
"""

from __future__ import annotations

import difflib
import inspect
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

__all__ = ["MixerSpec", "register_mixer", "build_mixer", "list_mixers", "get_mixer_spec", "check_channel_split"]


@dataclass(frozen=True)
class MixerSpec:
    """What the registry knows about one mixer.

    Attributes
    ----------
    name: registry name (the value of ``mixer.name`` in the configs).
    cls: the ``nn.Module`` class.
    spectral: True for mixers that act in the Fourier domain of the token grid (FFTs in float32
        even under autocast, output in the input dtype; the test-suite checks that).
    shift_equivariant: True for mixers that commute with circular shifts of the token grid (a
        roll of the input rolls the output): the linear per-frequency ones (GFN, FNO). AFNO is
        spectral but not shift-equivariant: its per-frequency biases and the ReLU/softshrink on
        real and imaginary parts do not commute with the phase a shift puts on each frequency.
    """

    name: str
    cls: type[nn.Module]
    spectral: bool = False
    shift_equivariant: bool = False

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options the constructor accepts besides ``dim``."""
        params = inspect.signature(self.cls.__init__).parameters
        return tuple(p for p in params if p not in ("self", "dim"))


_REGISTRY: dict[str, MixerSpec] = {}


def register_mixer(
    name: str, *, spectral: bool = False, shift_equivariant: bool = False
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a mixer to the registry under ``name``."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"mixer name {name!r} is already registered to {_REGISTRY[name].cls.__name__}")
        _REGISTRY[name] = MixerSpec(name=name, cls=cls, spectral=spectral, shift_equivariant=shift_equivariant)
        return cls

    return decorator


def list_mixers() -> list[str]:
    """Names of all registered mixers, sorted."""
    return sorted(_REGISTRY)


def get_mixer_spec(name: str) -> MixerSpec:
    """The :class:`MixerSpec` for ``name``; ``ValueError`` naming the valid choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    configs = Path(__file__).resolve().parents[3] / "configs" / "mixer"
    naming = sorted(path.name for path in configs.glob("*.yaml")
                    if re.search(rf"^name:\s*['\"]?{re.escape(str(name))}['\"]?\s*(#.*)?$", path.read_text(), re.MULTILINE))
    if naming:  # a config for it, no class: the half-done step of adding a mixer
        closest = difflib.get_close_matches(str(name), list_mixers(), n=1)
        raise ValueError(
            f"configs/mixer/{naming[0]} names mixer {name!r}, but no class is registered under that name"
            f"{f' (registered: {closest[0]!r}, the closest)' if closest else ''}. Decorate the mixer's class with "
            f"@register_mixer({str(name)!r}) in a module of src/afno_repro/mixers/ (every module there is imported), "
            "or set the config's name: to the name it is registered under."
        )
    raise ValueError(
        f"unknown mixer {name!r}; valid mixers are: {', '.join(list_mixers())}. "
        "Pick one of these for `mixer=` (or `mixer.name=`)."
    )


def build_mixer(name: str, dim: int, grid_size: tuple[int, int] | None = None, **options) -> nn.Module:
    """Build the mixer registered as ``name`` for ``dim`` channels.

    Parameters
    ----------
    name: registry name, e.g. ``"afno"``; see :func:`list_mixers`.
    dim: channel width ``C`` of the ``(B, H, W, C)`` tokens.
    grid_size: the token grid ``(H, W)`` the backbone will feed. Passed only to mixers whose
        constructor takes a ``grid_size`` argument (e.g. GFN sizes its filter with it); the others
        work on any grid and ignore it.
    **options: the mixer's own keyword options. An option the mixer does not take raises
        ``ValueError`` naming the options it does take.
    """
    spec = get_mixer_spec(name)
    valid = spec.options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"mixer {name!r} got unknown option(s) {unknown}; it accepts: {', '.join(o for o in valid if o != 'grid_size') or 'none'}."
        )
    if "grid_size" in valid and grid_size is not None:
        options["grid_size"] = tuple(grid_size)
    return spec.cls(dim, **options)


def check_channel_split(dim: int, count: int, option: str, mixer: str) -> int:
    """Width of each of ``count`` equal channel groups (heads, blocks) of ``dim`` channels.

    Raises ``ValueError`` naming the valid counts when ``count`` does not divide ``dim``.

    Examples
    --------
    >>> check_channel_split(768, 12, "num_heads", "attention")
    64
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1 or dim % count:
        valid = [c for c in range(1, dim + 1) if dim % c == 0]
        raise ValueError(
            f"mixer {mixer!r}: {option}={count!r} does not divide the channel width dim={dim}, so the "
            f"channels cannot be split into equal groups. Valid values of {option} for dim={dim} are "
            f"{valid}; pick one of these or change the width."
        )
    return dim // count


def positive_pair(value: Any) -> tuple[int, int] | None:
    """``value`` as a pair of positive integers (a token grid, a count of modes), or None if it is not one.

    >>> positive_pair((14, 14)), positive_pair((0, 3)), positive_pair("ab")
    ((14, 14), None, None)
    """
    try:
        first, second = (operator.index(item) for item in value)
    except (TypeError, ValueError):
        return None
    return (first, second) if min(first, second) >= 1 else None
