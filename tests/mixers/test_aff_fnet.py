"""AFF (adaptive frequency filter) and FNet mixers against independent naive references."""

import cmath

import pytest
import torch
import torch.nn.functional as F

from afno_repro.mixers import build_mixer, get_mixer_spec
from afno_repro.mixers.aff import AFF
from afno_repro.mixers.fnet import FNet


def randomise(module, std=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def naive_aff(x, mixer, num_blocks, lam):
    """irfft2(z * S_lambda(MLP(z))) + x in complex float64 arithmetic."""
    b, h, w, c = x.shape
    sd = {k: torch.complex(v[0].double(), v[1].double()) for k, v in mixer.state_dict().items()}
    z = torch.fft.rfft2(x.double(), dim=(1, 2), norm="ortho").reshape(b, h, w // 2 + 1, num_blocks, c // num_blocks)
    o = torch.einsum("bhwki,kio->bhwko", z, sd["w1"]) + sd["b1"]
    o = torch.complex(F.relu(o.real), F.relu(o.imag))
    o = torch.einsum("bhwki,kio->bhwko", o, sd["w2"]) + sd["b2"]
    mask = torch.complex(F.softshrink(o.real, lam), F.softshrink(o.imag, lam))
    y = torch.fft.irfft2((z * mask).reshape(b, h, w // 2 + 1, c), s=(h, w), dim=(1, 2), norm="ortho")
    return y + x.double()


def dft_matrix(n):
    return torch.tensor([[cmath.exp(-2j * cmath.pi * j * k / n) for k in range(n)] for j in range(n)], dtype=torch.complex128)


@pytest.mark.parametrize("grid", [(7, 5), (9, 12)])
@pytest.mark.parametrize("name", ["aff", "fnet"])
def test_shape_and_dtype(name, grid):
    mixer = build_mixer(name, 8)
    x = torch.randn(2, *grid, 8)
    y = mixer(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("grid, num_blocks, lam", [((7, 5), 2, 0.01), ((9, 12), 4, 0.3), ((6, 6), 1, 0.0)])
def test_aff_equals_naive_adaptive_filter(grid, num_blocks, lam):
    torch.manual_seed(0)
    mixer = randomise(AFF(8, num_blocks=num_blocks, sparsity_threshold=lam)).double()
    x = torch.randn(2, *grid, 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), naive_aff(x, mixer, num_blocks, lam), rtol=1e-10, atol=1e-10)


def test_aff_mask_is_multiplicative():
    """A zero spectrum stays zero whatever the mask: the filter multiplies, it does not add."""
    mixer = randomise(AFF(8, num_blocks=2))
    x = torch.zeros(1, 5, 7, 8)
    assert mixer(x).abs().max() == 0


def test_aff_gradients_reach_every_parameter():
    mixer = randomise(AFF(8, num_blocks=2))
    mixer(torch.randn(2, 7, 5, 8)).square().sum().backward()
    assert {n for n, p in mixer.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} == {"w1", "b1", "w2", "b2"}


def test_aff_rejects_bad_num_blocks():
    with pytest.raises(ValueError, match="num_blocks"):
        AFF(10, num_blocks=3)


@pytest.mark.parametrize("fft_over_channels", [True, False])
@pytest.mark.parametrize("norm, scale", [("backward", 1.0), ("ortho", None)])
def test_fnet_equals_explicit_dft(fft_over_channels, norm, scale):
    torch.manual_seed(0)
    h, w, c = 5, 6, 4
    x = torch.randn(2, h, w, c, dtype=torch.float64)
    mixer = FNet(c, fft_over_channels=fft_over_channels, norm=norm)
    assert not list(mixer.parameters())
    dc = dft_matrix(c) if fft_over_channels else torch.eye(c, dtype=torch.complex128)
    expected = torch.einsum("ij,kl,mn,bjln->bikm", dft_matrix(h), dft_matrix(w), dc, x.to(torch.complex128)).real
    if scale is None:
        scale = (h * w * (c if fft_over_channels else 1)) ** -0.5
    torch.testing.assert_close(mixer(x), scale * expected)


@pytest.mark.parametrize("name", ["aff", "fnet"])
def test_bf16_autocast_returns_input_dtype(name):
    mixer = build_mixer(name, 8)
    x = torch.randn(2, 6, 5, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mixer(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    expected = mixer(x.float())
    torch.testing.assert_close(y.float(), expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


@pytest.mark.parametrize("name", ["aff", "fnet"])
def test_registered_as_not_shift_equivariant_because_it_is_not(name):
    """Re(DFT) of a rolled input is Re(phase ramp * DFT), not a roll; AFF's mask depends on phase."""
    assert get_mixer_spec(name).shift_equivariant is False
    mixer = build_mixer(name, 8)
    if name == "aff":
        randomise(mixer)
    x = torch.randn(1, 8, 8, 8)
    shifted = mixer(torch.roll(x, (2, 3), (1, 2)))
    assert (shifted - torch.roll(mixer(x), (2, 3), (1, 2))).abs().max() > 1e-3


def test_fnet_rejects_bad_norm_and_shape():
    with pytest.raises(ValueError, match="ortho"):
        FNet(8, norm="unitary")
    with pytest.raises(ValueError, match=r"\(B, H, W, 8\)"):
        FNet(8)(torch.randn(2, 5, 8))
