"""Properties every registered token mixer must have, parametrized over ``list_mixers()``.

A mixer added with ``@register_mixer`` is tested here without new code: shapes on odd and
non-square grids, gradients to every parameter, circular shift-equivariance of the mixers
registered with ``shift_equivariant=True``, running on a grid other than the one it was built for,
the registry's errors, and bfloat16 autocast.
"""

import pytest
import torch

from afno_repro.mixers import build_mixer, get_mixer_spec, list_mixers
from mixer_options import small_options  # small, valid options at DIM channels

DIM = 16
BUILD_GRID = (8, 8)
GRIDS = [(7, 5), (5, 9), (8, 8)]

SHIFT_EQUIVARIANT_MIXERS = [name for name in list_mixers() if get_mixer_spec(name).shift_equivariant]
GRID_SIZE_MIXERS = [name for name in list_mixers() if "grid_size" in get_mixer_spec(name).options]


def make_mixer(name: str) -> torch.nn.Module:
    return build_mixer(name, DIM, grid_size=BUILD_GRID, **small_options(name))


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("name", list_mixers())
def test_shape_preserved(name, grid):
    x = torch.randn(2, *grid, DIM)
    assert make_mixer(name)(x).shape == x.shape


@pytest.mark.parametrize("name", list_mixers())
def test_gradients_reach_every_parameter(name):
    """Every parameter and the input tokens get a nonzero gradient (parameter-free mixers too)."""
    mixer = make_mixer(name)
    x = torch.randn(2, *BUILD_GRID, DIM, requires_grad=True)
    mixer(x).square().sum().backward()
    dead = [n for n, p in mixer.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, f"{name}: no gradient reaches {dead}"
    assert x.grad.any(), f"{name}: no gradient reaches the input tokens"


@pytest.mark.parametrize("name", SHIFT_EQUIVARIANT_MIXERS)
def test_shift_equivariant_mixers_commute_with_circular_shifts(name):
    """Rolling the input over H and W rolls the output by the same amount (convolution theorem).

    ``shift_equivariant=True`` promises this: a roll multiplies each frequency by a phase, which commutes
    with a map that is linear and bias-free per frequency (GFN, FNO). Spectral mixers with biases
    or nonlinearities per frequency (AFNO, AFF) break it and register with ``shift_equivariant=False``.
    """
    mixer = make_mixer(name).double().eval()
    x = torch.randn(2, 7, 5, DIM, dtype=torch.float64)
    shifts, dims = (3, 2), (1, 2)
    with torch.no_grad():
        rolled_then_mixed = mixer(torch.roll(x, shifts, dims))
        mixed_then_rolled = torch.roll(mixer(x), shifts, dims)
    torch.testing.assert_close(rolled_then_mixed, mixed_then_rolled, rtol=0, atol=1e-5)


@pytest.mark.parametrize("grid", [(5, 3), (12, 10)], ids=["smaller", "larger"])
@pytest.mark.parametrize("name", GRID_SIZE_MIXERS)
def test_grid_size_mixers_run_on_another_grid(name, grid):
    """A mixer sized for BUILD_GRID still maps a smaller or larger grid to a finite output."""
    x = torch.randn(2, *grid, DIM)
    out = make_mixer(name)(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_unknown_mixer_name_lists_valid_names():
    with pytest.raises(ValueError) as error:
        build_mixer("nope", 8)
    assert all(name in str(error.value) for name in list_mixers())


@pytest.mark.parametrize("name", list_mixers())
def test_unknown_option_names_accepted_options(name):
    with pytest.raises(ValueError) as error:
        build_mixer(name, DIM, not_an_option=1)
    accepted = [option for option in get_mixer_spec(name).options if option != "grid_size"]
    assert "not_an_option" in str(error.value)
    assert all(option in str(error.value) for option in accepted)


@pytest.mark.parametrize("name", list_mixers())
def test_bfloat16_autocast(name):
    """Under CPU bfloat16 autocast the output is finite and bfloat16 input stays bfloat16.

    Fourier mixers compute their FFTs in float32 and cast back, so they also keep float32 input
    float32 (autocast itself makes linear layers return bfloat16 for any input).
    """
    mixer = make_mixer(name)
    x = torch.randn(2, 7, 5, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = mixer(x.bfloat16())
        out_fp32 = mixer(x)
    assert out_bf16.dtype == torch.bfloat16
    assert torch.isfinite(out_bf16).all() and torch.isfinite(out_fp32).all()
    if get_mixer_spec(name).spectral:
        assert out_fp32.dtype == torch.float32


@pytest.mark.parametrize("name", list_mixers())
def test_runs_on_the_meta_device(name):
    """FLOP accounting and parameter counting trace models on the meta device: every mixer must run there."""
    with torch.device("meta"):
        mixer = make_mixer(name)
        out = mixer(torch.randn(2, 7, 5, DIM))
    assert out.shape == (2, 7, 5, DIM) and out.device.type == "meta"
