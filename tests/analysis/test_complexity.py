"""The FLOP and parameter counting convention: each test pins one rule of it with a count derived
by hand from the shapes (linear, conv, one vs both attention matmuls, the FFT column, the
reference-formulation substitution, mixer attribution), so a wrong rule changes the number."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils import flop_counter

from afno_repro.analysis import ATTENTION_MATMULS, DataDependentShapeError, count_flops, count_params
from afno_repro.mixers import build_mixer, get_mixer_spec, list_mixers
from afno_repro.models import ViT
from mixer_options import small_options


def macs(report) -> int:
    return round(report.gflops * 1e9)


def test_linear_counts_tokens_times_in_times_out():
    report = count_flops(nn.Linear(8, 16), (2, 10, 8))
    assert macs(report) == 2 * 10 * 8 * 16
    assert report.mixer_gflops == 0 and report.fft_gflops == 0


def test_conv_counts_output_positions_times_kernel():
    # Patch embedding: 16x16 image, 4x4 patches -> 4x4 outputs, each 3*4*4 MACs per output channel.
    report = count_flops(nn.Conv2d(3, 8, kernel_size=4, stride=4), (1, 3, 16, 16))
    assert macs(report) == 4 * 4 * 8 * 3 * 4 * 4


class TinyAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(query=q, key=k, value=v).transpose(1, 2).reshape(b, n, c)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_attention_conventions_differ_by_exactly_one_n2d_matmul(device):
    b, n, dim, heads = 2, 12, 16, 4
    one = count_flops(TinyAttention(dim, heads), (b, n, dim), attention_matmuls="one", device=device)
    both = count_flops(TinyAttention(dim, heads), (b, n, dim), attention_matmuls="both", device=device)
    qkv = b * n * dim * 3 * dim
    assert macs(both) == qkv + 2 * b * n * n * dim
    assert macs(one) == qkv + b * n * n * dim
    assert round(one.attention_qk_gflops * 1e9) == b * n * n * dim == macs(both) - macs(one)


def test_attention_mixer_conventions_differ_by_n2d_on_a_non_square_grid():
    h, w, dim = 5, 7, 32
    mixer = build_mixer("attention", dim, num_heads=4)
    one = count_flops(mixer, (1, h, w, dim), attention_matmuls="one")
    both = count_flops(mixer, (1, h, w, dim), attention_matmuls="both")
    assert macs(both) - macs(one) == (h * w) ** 2 * dim
    assert one.mixer_gflops == one.gflops and both.mixer_gflops == both.gflops


class RoundTripFFT(nn.Module):
    def forward(self, x):
        spectrum = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")
        return torch.fft.irfft2(spectrum, s=x.shape[1:3], dim=(1, 2), norm="ortho")


def test_fft_column_counts_n_c_log2n_per_transform_and_stays_out_of_gflops():
    b, h, w, c = 2, 8, 6, 4
    report = count_flops(RoundTripFFT(), (b, h, w, c))
    per_transform = (h * w) * (b * c) * math.ceil(math.log2(h * w))
    assert round(report.fft_gflops * 1e9) == 2 * per_transform
    assert report.gflops == 0
    assert report.gflops_with_fft == report.fft_gflops


class FastKernel(nn.Module):
    """Stands for a mixer whose kernel differs from the formulation the paper counted."""

    def __init__(self, dim: int, reference_per_token: int, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.inner = inner
        self.reference_per_token = reference_per_token

    def reference_macs(self, h: int, w: int) -> int:
        return self.reference_per_token * h * w

    def forward(self, x):
        x = self.proj(x)
        return x if self.inner is None else self.inner(x)


def test_reference_macs_replace_what_was_traced_inside_the_module():
    b, h, w, dim = 3, 4, 5, 6
    model = nn.Sequential(nn.Linear(dim, dim), FastKernel(dim, reference_per_token=1000))
    report = count_flops(model, (b, h, w, dim))
    assert macs(report) == b * h * w * dim * dim + b * 1000 * h * w


def test_outer_reference_macs_win_over_nested_ones():
    b, h, w, dim = 2, 3, 5, 4
    nested = FastKernel(dim, reference_per_token=7, inner=FastKernel(dim, reference_per_token=500))
    report = count_flops(nested, (b, h, w, dim))
    assert macs(report) == b * 7 * h * w


def small_mixer_options(name: str) -> dict:
    return small_options(name)


@pytest.mark.parametrize("name", list_mixers())
def test_mixer_share_is_what_the_mixer_counts_alone(name):
    h, w, dim = 8, 6, 16
    mixer = build_mixer(name, dim, grid_size=(h, w), **small_mixer_options(name))
    model = nn.Sequential(nn.Linear(dim, dim), mixer)
    for convention in ("one", "both"):
        alone = count_flops(mixer, (1, h, w, dim), attention_matmuls=convention)
        report = count_flops(model, (1, h, w, dim), attention_matmuls=convention)
        assert report.mixer_gflops == pytest.approx(alone.gflops, abs=1e-12)
        assert macs(report) == h * w * dim * dim + macs(alone)
        assert list(report.mixer_gflops_by_module) == ["1"]


SDPA_BACKENDS = {"default": None, "math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}


def count_with_backend(model, shape, backend, **options):
    """``count_flops`` with torch restricted to one SDPA kernel, or skip where it cannot run the call."""
    if SDPA_BACKENDS[backend] is None:
        return count_flops(model, shape, **options)
    try:
        with sdpa_kernel(SDPA_BACKENDS[backend]):
            return count_flops(model, shape, **options)
    except RuntimeError as error:
        if "No available kernel" not in str(error):
            raise
        pytest.skip(f"torch {torch.__version__} cannot run this call with the {backend} SDPA kernel")


@pytest.mark.parametrize("backend", sorted(SDPA_BACKENDS))
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_attention_mixer_count_is_the_shape_formula_whatever_kernel_torch_picks(device, backend):
    """torch 2.14 runs fake/CPU attention in ``_scaled_dot_product_flash_attention_for_cpu``, which
    FlopCounterMode does not count, while the math kernel is counted as two bmm: the count must be
    the shape formula either way, neither missing nor doubled."""
    h, w, dim, heads = 5, 7, 32, 4
    tokens = h * w
    mixer = build_mixer("attention", dim, num_heads=heads)
    one = count_with_backend(mixer, (2, h, w, dim), backend, attention_matmuls="one", device=device)
    both = count_with_backend(mixer, (2, h, w, dim), backend, attention_matmuls="both", device=device)
    projections = 2 * tokens * 4 * dim * dim
    assert macs(one) == projections + 2 * tokens**2 * dim
    assert macs(both) == projections + 2 * 2 * tokens**2 * dim
    assert one.mixer_gflops == one.gflops and both.mixer_gflops == both.gflops


@pytest.mark.skipif(
    not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu") or not hasattr(flop_counter, "flop_registry"),
    reason="this torch has no CPU flash kernel or no flop_registry to add it to",
)
def test_a_torch_that_counts_the_cpu_flash_kernel_gives_the_same_count(monkeypatch):
    """Newer torch registers a FlopCounterMode formula for the kernel fake/CPU tensors take; made so
    here, the kernel's own count must be replaced by the shape formula, not added to it."""
    mixer = build_mixer("attention", 32, num_heads=4)
    before = {convention: count_flops(mixer, (1, 5, 7, 32), attention_matmuls=convention) for convention in ATTENTION_MATMULS}
    cpu_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    registry = flop_counter.flop_registry
    monkeypatch.setitem(registry, cpu_flash, registry[torch.ops.aten._scaled_dot_product_flash_attention])
    with flop_counter.FlopCounterMode(display=False) as counter:
        count_flops(mixer, (1, 5, 7, 32))
    assert counter.get_flop_counts()["Global"].get(cpu_flash, 0) > 0  # the kernel is now counted by torch
    for convention, report in before.items():
        assert macs(count_flops(mixer, (1, 5, 7, 32), attention_matmuls=convention)) == macs(report)


@pytest.mark.parametrize("backend", ["math", "flash"])
@pytest.mark.parametrize("name", list_mixers())
def test_every_mixer_counts_the_same_whatever_sdpa_kernel_runs(name, backend):
    """Attention with a mask over windows (Long-Short) or over reduced keys (efficient attention)
    counts the same under the math kernel, which torch counts, and the fused one, which it may not."""
    h, w, dim = 8, 6, 16
    mixer = build_mixer(name, dim, grid_size=(h, w), **small_mixer_options(name))
    for convention in ("one", "both"):
        default = count_flops(mixer, (1, h, w, dim), attention_matmuls=convention)
        forced = count_with_backend(mixer, (1, h, w, dim), backend, attention_matmuls=convention)
        assert macs(forced) == macs(default) and forced.mixer_gflops == default.mixer_gflops


def test_a_negative_count_is_an_error_naming_the_module():
    model = nn.Sequential(nn.Linear(4, 4), FastKernel(4, reference_per_token=-1))
    with pytest.raises(RuntimeError, match=r"'1' \(FastKernel\).*negative"):
        count_flops(model, (1, 2, 3, 4))


def test_data_dependent_shapes_need_a_real_device():
    class KeepNonzero(nn.Module):
        def forward(self, x):
            return x[x.flatten().nonzero()]

    with pytest.raises(DataDependentShapeError, match="device='cpu'"):
        count_flops(KeepNonzero(), (4,))
    assert count_flops(KeepNonzero(), (4,), device="cpu").gflops == 0


def test_bad_convention_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="'one'.*'both'"):
        count_flops(nn.Linear(2, 2), (1, 2), attention_matmuls="half")


def test_counting_leaves_the_model_as_it_was():
    model = ViT(img_size=16, patch_size=4, embed_dim=16, depth=1, mixer={"name": "attention", "num_heads": 2})
    model.train()
    before = {name: p.clone() for name, p in model.named_parameters()}
    count_flops(model, (1, 3, 16, 16))
    assert all(module.training for module in model.modules())
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())
    assert all(p.device.type == "cpu" and torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_params_of_a_small_vit_are_its_tensor_sizes_and_tied_weights_count_once():
    model = ViT(img_size=16, patch_size=4, embed_dim=16, depth=2, mixer={"name": "attention", "num_heads": 2})
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        on_meta = ViT(img_size=16, patch_size=4, embed_dim=16, depth=2, mixer={"name": "attention", "num_heads": 2})
    assert count_params(on_meta) == count_params(model)
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    assert count_params(tied) == 16
