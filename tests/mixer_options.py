"""The options that make each mixer small and valid at the 16 (or 32) channels the mixer tests build them with.

One place for every test parametrised over ``list_mixers()`` (tests/mixers/test_properties.py, test_compile.py,
tests/models/test_vit.py, tests/analysis/test_complexity.py): a new mixer whose defaults do not fit 16 channels
(e.g. 12 groups) adds its entry here and touches no test.
"""

from afno_repro.mixers import get_mixer_spec

MIXER_OPTIONS = {
    "attention": {"num_heads": 4},
    "long_short": {"num_heads": 4, "window_size": 2, "rank": 3},
    "efficient_attention": {"num_heads": 2, "sr_ratio": 2},
    "fno": {"modes": (2, 3)},
    "afno": {"num_blocks": 4},
    "afno_static": {"num_blocks": 4},
    "aff": {"num_blocks": 4},
}


def small_options(name: str) -> dict:
    """``name``'s entry above; for a mixer without one, two heads and two blocks where it takes them."""
    accepted = get_mixer_spec(name).options
    generic = {key: value for key, value in {"num_heads": 2, "num_blocks": 2}.items() if key in accepted}
    return {**generic, **MIXER_OPTIONS.get(name, {})}
