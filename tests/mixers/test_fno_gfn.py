"""FNO and GFN mixers: the GFN special case, mode selection, filter resizing, checkpoints."""

import io

import pytest
import torch

from afno_repro.mixers import build_mixer
from afno_repro.mixers.fno import FNO2D
from afno_repro.mixers.gfn import FILTER_INTERPOLATION_MODES, GlobalFilter


def nonzero_modes(out: torch.Tensor) -> torch.Tensor:
    """Boolean ``(H, W//2+1)`` map of the modes where any sample or channel of ``out`` is nonzero."""
    spectrum = torch.fft.rfft2(out, dim=(1, 2), norm="ortho")
    return spectrum.abs().amax(dim=(0, 3)) > 1e-9


@pytest.mark.parametrize("grid", [(7, 5), (6, 8)], ids=["odd", "even-nyquist"])
def test_fno_block_size_one_equals_gfn(grid):
    """Section 4: with block size one (and every mode kept) FNO is GFN, given the same weights."""
    gfn = GlobalFilter(8, grid_size=grid).double()
    fno = FNO2D.from_global_filter(gfn).double()
    assert fno.num_blocks == 8 and fno.modes is None
    x = torch.randn(2, *grid, 8, dtype=torch.float64)
    torch.testing.assert_close(fno(x), gfn(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid", [(1, 5), (1, 1)], ids=["one-row", "one-token"])
def test_fno_runs_on_a_one_row_grid(grid):
    """One token row (SegFormer's last stage on a 32-pixel-high image) holds only the zero frequency along H,
    so the negative-frequency corner is empty; FNO still equals GFN there, and a model built with more
    modes clips them to that row."""
    gfn = GlobalFilter(8, grid_size=grid).double()
    x = torch.randn(2, *grid, 8, dtype=torch.float64)
    torch.testing.assert_close(FNO2D.from_global_filter(gfn).double()(x), gfn(x), rtol=0, atol=1e-12)
    assert FNO2D(8, modes=(2, 3), num_blocks=2)(x.float()).shape == x.shape


def test_fno_weight_maps_input_channel_to_output_channel():
    """``weight[..., k, i, o, :]`` sends channel i of block k to channel o; a unit weight on
    every mode passes the channel through unchanged."""
    fno = FNO2D(4, modes=None, num_blocks=2, grid_size=(6, 5)).double()
    with torch.no_grad():
        fno.weight.zero_()
        fno.weight[:, :, 1, 0, 1, 0] = 1.0
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    out = fno(x)
    torch.testing.assert_close(out[..., 3], x[..., 2], rtol=0, atol=1e-12)
    assert not out[..., :3].any()


def test_fno_blocks_do_not_mix():
    """Block-diagonal channel mixing (Eq. 5): changing one block's input changes only that block's output."""
    fno = FNO2D(8, modes=(2, 2), num_blocks=4).double()
    x = torch.randn(1, 6, 6, 8, dtype=torch.float64)
    perturbed = x.clone()
    perturbed[..., 2:4] += torch.randn(1, 6, 6, 2, dtype=torch.float64)
    changed = (fno(perturbed) - fno(x)).abs().amax(dim=(0, 1, 2)) > 1e-12
    assert changed.tolist() == [False, False, True, True, False, False, False, False]


def test_fno_keeps_exactly_the_two_corner_blocks():
    """The output spectrum is nonzero exactly on rows [0, m1), [H-m1, H) and columns [0, m2).

    W is odd, so only column 0 is its own conjugate: there the real output mirrors row H-m1
    (frequency -m1) onto row m1, so column 0 also holds frequency +m1.
    """
    height, width, m1, m2 = 12, 11, 3, 4
    fno = FNO2D(4, modes=(m1, m2)).double()
    out = fno(torch.randn(2, height, width, 4, dtype=torch.float64))
    expected = torch.zeros(height, width // 2 + 1, dtype=torch.bool)
    expected[:m1, :m2] = True
    expected[height - m1 :, :m2] = True
    expected[m1, 0] = True
    assert torch.equal(nonzero_modes(out), expected)


def test_fno_modes_clipped_on_a_small_grid():
    """Modes beyond what the grid has are dropped: every mode of a 5x7 grid with m=(4, 9) is kept."""
    fno = FNO2D(4, modes=(4, 9)).double()
    out = fno(torch.randn(2, 5, 7, 4, dtype=torch.float64))
    assert nonzero_modes(out).all()


@pytest.mark.parametrize(
    ("coarse", "factor", "modes", "frequencies"),
    [(4, 2, (3, 4), [(1, 1), (-1, 1)]), (5, 3, (3, 2), [(1, 1), (-1, 1), (2, 0), (-2, 1)])],
    ids=["even", "odd"],
)
def test_fno_is_resolution_invariant(coarse, factor, modes, frequencies):
    """Section 3.2: weights are indexed by frequency, so a band-limited input sampled on a finer
    grid gives the finer samples of the same output (zero-shot super-resolution). The coarse grid
    has fewer modes than ``modes``, so this also checks that clipping gives each frequency
    (positive and negative rows alike) its own weight."""
    fno = FNO2D(4, modes=modes).double()
    channels = torch.randn(len(frequencies), 4, dtype=torch.float64)
    phases = torch.rand(len(frequencies), dtype=torch.float64) * 2 * torch.pi

    def wave(size: int) -> torch.Tensor:
        position = torch.arange(size, dtype=torch.float64) / size
        terms = [
            torch.cos(2 * torch.pi * (f_h * position[:, None] + f_w * position[None, :]) + phase)[..., None] * channel
            for (f_h, f_w), phase, channel in zip(frequencies, phases, channels)
        ]
        return sum(terms)[None]

    torch.testing.assert_close(fno(wave(coarse * factor))[:, ::factor, ::factor], fno(wave(coarse)), rtol=0, atol=1e-12)


def test_fno_default_modes_fit_the_table6_parameter_budget():
    """Table 6: FNO at hidden 64 with five layers has ~16M parameters, almost all in the weights."""
    per_layer = sum(p.numel() for p in build_mixer("fno", 64).parameters())
    assert per_layer == 2 * 14 * 14 * 64 * 64 * 2
    assert 15.5e6 < 5 * per_layer < 16.5e6


def test_fno_rejects_bad_options():
    with pytest.raises(ValueError, match=r"\[1, 2, 3, 4, 6, 12\]"):
        FNO2D(12, num_blocks=5)
    with pytest.raises(ValueError, match="grid_size"):
        FNO2D(12, modes=None)
    with pytest.raises(ValueError, match="two positive integers"):
        FNO2D(12, modes=(0, 4))


def test_gfn_filter_is_the_stored_filter_on_its_own_grid():
    gfn = GlobalFilter(4, grid_size=(7, 6))
    assert torch.equal(gfn.filter_for_grid(7, 6), torch.view_as_complex(gfn.complex_weight))


def test_gfn_filter_is_bilinearly_interpolated_on_another_grid():
    """Appendix A.3: bilinear resampling reproduces a filter that is affine in (row, column)
    exactly, with the corner entries (DC and highest rfft column) kept in place."""
    gfn = GlobalFilter(2, grid_size=(5, 8))
    rows, cols = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    with torch.no_grad():
        gfn.complex_weight.copy_(torch.stack([0.3 * rows - 0.2 * cols, rows + cols], -1)[:, :, None].expand(5, 5, 2, 2))
    new_rows, new_cols = torch.meshgrid(torch.linspace(0, 4, 9), torch.linspace(0, 4, 7), indexing="ij")
    expected = torch.complex(0.3 * new_rows - 0.2 * new_cols, new_rows + new_cols)[:, :, None].expand(9, 7, 2)
    torch.testing.assert_close(gfn.filter_for_grid(9, 12), expected)
    nearest = GlobalFilter(2, grid_size=(5, 8), filter_interpolation="nearest")
    nearest.load_state_dict(gfn.state_dict())
    assert not torch.allclose(nearest.filter_for_grid(9, 12), expected)


def test_gfn_runs_the_interpolated_filter_on_another_grid():
    gfn = GlobalFilter(4, grid_size=(8, 8)).double()
    x = torch.randn(2, 5, 9, 4, dtype=torch.float64)
    spectrum = torch.fft.rfft2(x, dim=(1, 2), norm="ortho") * gfn.filter_for_grid(5, 9)[None]
    expected = torch.fft.irfft2(spectrum, s=(5, 9), dim=(1, 2), norm="ortho")
    torch.testing.assert_close(gfn(x), expected, rtol=0, atol=1e-12)


def test_gfn_rejects_unknown_interpolation():
    with pytest.raises(ValueError) as error:
        GlobalFilter(4, filter_interpolation="linear")
    assert all(mode in str(error.value) for mode in FILTER_INTERPOLATION_MODES)


@pytest.mark.parametrize(
    ("name", "options", "keys"),
    [
        ("gfn", {"grid_size": (6, 5)}, {"complex_weight": (6, 3, 8, 2)}),
        ("fno", {"modes": (2, 3), "num_blocks": 2}, {"weight": (4, 3, 2, 4, 4, 2)}),
        ("fno", {"modes": None, "grid_size": (6, 5)}, {"weight": (6, 3, 1, 8, 8, 2)}),
    ],
    ids=["gfn", "fno-modes", "fno-all-modes"],
)
def test_state_dict_round_trip(name, options, keys):
    """A checkpoint written by one instance loads into a fresh one and reproduces its output."""
    original = build_mixer(name, 8, **options)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {key: tuple(value.shape) for key, value in state.items()} == keys
    torch.manual_seed(1)
    restored = build_mixer(name, 8, **options)
    x = torch.randn(2, 6, 5, 8)
    assert not torch.equal(restored(x), original(x))
    restored.load_state_dict(state)
    assert torch.equal(restored(x), original(x))


def test_fno_reference_macs_count_real_products_of_the_kept_modes():
    """Four real multiply-accumulates per complex one, over the two kept corners only; the
    complex einsum a shape counter sees is a quarter of that."""
    from torch.utils.flop_counter import FlopCounterMode

    mixer = build_mixer("fno", 16, modes=(3, 2), num_blocks=4)
    assert mixer.reference_macs(12, 10) == 4 * (2 * 3) * 2 * 4 * 4 * 4
    assert mixer.reference_macs(4, 2) == 4 * 4 * 2 * 4 * 4 * 4  # clipped to the modes a 4x2 grid has
    counter = FlopCounterMode(display=False)
    with counter:
        mixer(torch.randn(1, 12, 10, 16))
    assert counter.get_total_flops() // 2 == mixer.reference_macs(12, 10) // 4


def test_fno_modes_beyond_the_grid_warn_with_the_modes_that_fit():
    """Valid (the weights serve a finer grid), but silent it built a 328M-parameter model on an 8x8 grid."""
    import warnings

    with pytest.warns(UserWarning, match=r"8x8 token grid has 8x5 of them: the weights of 19,960 of its 20,000 "
                                         r"frequencies get no gradient .* Give modes=\[4,5\] to fit this grid"):
        build_mixer("fno", 16, modes=(100, 100), grid_size=(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_mixer("fno", 64, modes=(14, 14), grid_size=(56, 56))  # Table 6's FNO row at 224
        build_mixer("fno", 16, modes=(4, 5), grid_size=(8, 8))
