"""AFNO and AFNO-static: maths against independent naive references, low-pass, layout, precision."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from afno_repro.mixers import afno, build_mixer, get_mixer_spec
from afno_repro.mixers.afno import AFNO2D, AFNOStatic, complex_block_linear, low_pass_cutoff


def randomise(module, std=0.5):
    """Weights large enough that ReLU and soft-thresholding neither pass nor kill everything."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def kept_mask(h, w, fraction):
    """Boolean (h, w//2+1) mask of the kept rfft2 modes, from the signed frequencies themselves."""
    k_h = torch.fft.fftfreq(h, 1.0 / h).round().long()
    k_w = torch.arange(w // 2 + 1)
    if fraction >= 1.0:
        return torch.ones(h, w // 2 + 1, dtype=torch.bool)
    m_h = max(1, math.floor(math.sqrt(fraction) * h / 2))
    m_w = max(1, math.floor(math.sqrt(fraction) * w / 2))
    rows = (k_h >= -m_h) & (k_h < m_h) if 2 * m_h < h else torch.ones(h, dtype=torch.bool)
    return rows[:, None] & (k_w < m_w)[None, :]


def naive_afno(x, sd, num_blocks, sparsity_threshold, fraction=1.0, conv=None):
    """AFNO in complex arithmetic, float64, over all modes then masked: independent of the kernel."""
    b, h, w, c = x.shape
    z = torch.fft.rfft2(x.double(), dim=(1, 2), norm="ortho").reshape(b, h, w // 2 + 1, num_blocks, c // num_blocks)

    def cplx(t):
        return torch.complex(t[0].double(), t[1].double())

    def split_relu(t):
        return torch.complex(F.relu(t.real), F.relu(t.imag))

    o = split_relu(torch.einsum("bhwki,kio->bhwko", z, cplx(sd["w1"])) + cplx(sd["b1"]))
    o = torch.einsum("bhwki,kio->bhwko", o, cplx(sd["w2"])) + cplx(sd["b2"])
    if sparsity_threshold > 0:
        o = torch.complex(F.softshrink(o.real, sparsity_threshold), F.softshrink(o.imag, sparsity_threshold))
    o = o.reshape(b, h, w // 2 + 1, c) * kept_mask(h, w, fraction)[None, :, :, None]
    y = torch.fft.irfft2(o, s=(h, w), dim=(1, 2), norm="ortho")
    skip = x.double() if conv is None else x.double() @ conv.weight[:, :, 0].double().T + conv.bias.double()
    return y + skip


@pytest.mark.parametrize("grid", [(7, 5), (9, 12), (1, 4)])
@pytest.mark.parametrize("name", ["afno", "afno_static"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_shape_and_dtype_on_odd_non_square_grids(name, grid, fraction):
    mixer = build_mixer(name, 16, num_blocks=4, hard_thresholding_fraction=fraction)
    x = torch.randn(2, *grid, 16)
    y = mixer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "options",
    [
        {"num_blocks": 4},
        {"num_blocks": 1, "hidden_size_factor": 2, "sparsity_threshold": 0.0},
        {"num_blocks": 2, "hard_thresholding_fraction": 0.35, "skip": "conv1d"},
        {"num_blocks": 8, "hard_thresholding_fraction": 0.6, "sparsity_threshold": 0.3},
    ],
)
@pytest.mark.parametrize("grid", [(7, 5), (9, 12), (8, 8)])
def test_afno_equals_naive_complex_reference(options, grid):
    torch.manual_seed(0)
    mixer = randomise(AFNO2D(16, **options)).double()
    x = torch.randn(2, *grid, 16, dtype=torch.float64)
    expected = naive_afno(
        x,
        mixer.state_dict(),
        options["num_blocks"],
        options.get("sparsity_threshold", 0.01),
        options.get("hard_thresholding_fraction", 1.0),
        mixer.skip,
    )
    torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-10)


def test_public_checkpoint_layout_loads_and_matches_reference():
    torch.manual_seed(1)
    dim, k, f = 24, 3, 2
    n = dim // k
    state = {
        "w1": 0.3 * torch.randn(2, k, n, n * f),
        "b1": 0.3 * torch.randn(2, k, n * f),
        "w2": 0.3 * torch.randn(2, k, n * f, n),
        "b2": 0.3 * torch.randn(2, k, n),
    }
    mixer = build_mixer("afno", dim, num_blocks=k, hidden_size_factor=f)
    mixer.load_state_dict(state, strict=True)
    assert {name: p.shape for name, p in mixer.state_dict().items()} == {name: t.shape for name, t in state.items()}
    x = torch.randn(2, 6, 10, dim)
    expected = naive_afno(x, state, k, 0.01)
    torch.testing.assert_close(mixer(x).double(), expected, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    for mixer in (randomise(AFNO2D(16, num_blocks=4, skip="conv1d")), randomise(AFNOStatic(16, num_blocks=4))):
        mixer(torch.randn(2, 7, 5, 16)).square().sum().backward()
        for name, p in mixer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_complex_block_linear_gradcheck_and_value():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(complex_block_linear, (x, w, b))
    y = complex_block_linear(x, w, b)
    expected = torch.complex(x[0], x[1]) @ torch.complex(w[0], w[1]) + torch.complex(b[0], b[1])[:, None]
    torch.testing.assert_close(torch.complex(y[0], y[1]), expected)


def test_softshrink_zeroes_exactly_entries_within_lambda():
    torch.manual_seed(0)
    lam = 0.4
    mixer = randomise(AFNO2D(8, num_blocks=2, sparsity_threshold=lam)).double()
    z = torch.randn(2, 2, 50, 4, dtype=torch.float64)
    out = mixer.spectral_op(z)
    sd = mixer.state_dict()
    zc = torch.complex(z[0], z[1])
    hidden = zc @ torch.complex(sd["w1"][0], sd["w1"][1]) + torch.complex(sd["b1"][0], sd["b1"][1])[:, None]
    hidden = torch.complex(F.relu(hidden.real), F.relu(hidden.imag))
    pre = hidden @ torch.complex(sd["w2"][0], sd["w2"][1]) + torch.complex(sd["b2"][0], sd["b2"][1])[:, None]
    pre = torch.stack((pre.real, pre.imag))
    inside = pre.abs() <= lam
    assert 0.1 < inside.double().mean() < 0.9
    assert (out[inside] == 0).all()
    torch.testing.assert_close(out[~inside], pre[~inside] - lam * pre[~inside].sign())


def test_low_pass_cutoff_matches_paper_a6():
    assert low_pass_cutoff(56, 0.35) == 16  # 2 * 16 = 32 of 56 frequencies per axis (A.6)
    assert low_pass_cutoff(56, 0.25) == 14  # 25% of the spectrum = half of each axis
    assert low_pass_cutoff(56, 1.0) is None
    assert low_pass_cutoff(3, 0.01) == 1


@pytest.mark.parametrize("grid, fraction, rows, cols", [((56, 56), 0.35, 32, 16), ((9, 12), 0.5, 6, 4), ((7, 5), 1.0, 7, 3)])
def test_low_pass_output_spectrum_is_exactly_the_kept_modes(grid, fraction, rows, cols):
    """Non-zero output modes = kept set (+ the conjugate mirror that irfft2 creates in column 0)."""
    torch.manual_seed(0)
    h, w = grid
    mixer = randomise(AFNO2D(4, num_blocks=1, sparsity_threshold=0.0, hard_thresholding_fraction=fraction)).double()
    x = torch.randn(1, h, w, 4, dtype=torch.float64)
    spectrum = torch.fft.rfft2(mixer(x) - x, dim=(1, 2), norm="ortho").abs().amax(dim=(0, 3))
    nonzero = spectrum > 1e-9
    kept = kept_mask(h, w, fraction)
    mirrored = kept.clone()
    mirrored[:, 0] |= kept[(-torch.arange(h)) % h, 0]
    assert nonzero[kept].all()
    assert not nonzero[~mirrored].any()
    assert nonzero[:, 1:].any(dim=1).sum() == rows or w // 2 + 1 == 1
    assert nonzero.any(dim=0).sum() == cols
    assert mixer.kept_modes(h, w) == rows * cols


def test_no_grid_dependence():
    mixer = randomise(AFNO2D(8, num_blocks=2)).double()
    for grid in [(4, 4), (11, 3), (16, 9)]:
        x = torch.randn(1, *grid, 8, dtype=torch.float64)
        torch.testing.assert_close(mixer(x), naive_afno(x, mixer.state_dict(), 2, 0.01))


def test_afno_static_is_a_per_frequency_block_diagonal_linear_map():
    torch.manual_seed(0)
    dim, k = 12, 3
    mixer = randomise(AFNOStatic(dim, num_blocks=k)).double()
    assert {n: tuple(p.shape) for n, p in mixer.named_parameters()} == {"w": (2, k, 4, 4), "b": (2, k, 4)}
    x = torch.randn(2, 5, 6, dim, dtype=torch.float64)
    w = torch.complex(mixer.w[0], mixer.w[1]).detach()
    matrix = torch.block_diag(*w)  # (C, C), zero off the diagonal blocks
    bias = torch.complex(mixer.b[0], mixer.b[1]).detach().reshape(dim)
    z = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")
    expected = torch.fft.irfft2(z @ matrix + bias, s=(5, 6), dim=(1, 2), norm="ortho") + x
    torch.testing.assert_close(mixer(x), expected)


def test_reference_macs_and_what_a_flop_counter_sees():
    mixer = AFNO2D(750, num_blocks=1)
    assert mixer.reference_macs(56, 56) == 8 * 56 * 29 * 750 * 750  # Table 2's AFNO mixer convention
    small = AFNO2D(16, num_blocks=4, hidden_size_factor=2, hard_thresholding_fraction=0.35)
    with FlopCounterMode(display=False) as counter:
        small(torch.randn(3, 12, 10, 16))
    assert counter.get_total_flops() // 2 == 3 * small.reference_macs(12, 10) * 3 // 4  # Gauss: 3 of 4


class _DtypeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.dtypes = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.startswith("_fft") or name in ("bmm", "baddbmm"):
            self.dtypes.setdefault(name, set()).add(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["afno", "afno_static", "aff"])
def test_bf16_autocast_runs_ffts_in_float32_and_block_products_in_bf16(name):
    """Under autocast the FFTs stay float32 (half-precision FFTs lose too much) while the block MLP's
    matrix products run in bf16 (accumulated in float32 by the GEMM); output and gradients stay within
    bf16 tolerance of the float32 path on the same weights."""
    mixer = randomise(build_mixer(name, 16, num_blocks=4), std=0.3)
    x = torch.randn(2, 7, 6, 16)
    xb = x.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16), _DtypeRecorder() as recorder:
        y = mixer(xb)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    ffts = {name: dtypes for name, dtypes in recorder.dtypes.items() if name.startswith("_fft")}
    assert {"_fft_r2c", "_fft_c2r"} <= set(ffts) and set().union(*ffts.values()) <= {torch.float32, torch.complex64}
    assert recorder.dtypes.get("baddbmm") == {torch.bfloat16} and "bmm" not in recorder.dtypes
    grad = torch.randn(y.shape)
    y.backward(grad.to(y.dtype))
    x32 = x.bfloat16().float().requires_grad_(True)
    reference = {n: p.grad.clone() for n, p in mixer.named_parameters()}
    mixer.zero_grad()
    y32 = mixer(x32)
    y32.backward(grad)
    torch.testing.assert_close(y.float(), y32, rtol=2e-2, atol=2e-2)
    # Gradients: within 3% in norm (a bf16 rounding can move an entry across ReLU's or softshrink's
    # kink, which changes single gradient entries by O(1) of their size without either path being wrong).
    def relative(a, b):
        return float((a.float() - b).norm() / b.norm())

    assert relative(xb.grad, x32.grad) < 3e-2
    for n, p in mixer.named_parameters():
        assert relative(reference[n], p.grad) < 3e-2, n


@pytest.mark.parametrize("name", ["afno", "afno_static", "aff"])
def test_stacked_layout_equals_split_layout_in_float64(name, monkeypatch):
    """The GPU/autocast path (one real GEMM per complex product on [re | im]) and the CPU path (Gauss'
    three products on (re, im) pairs) compute the same function and the same gradients."""
    mixer = randomise(build_mixer(name, 12, num_blocks=3, hard_thresholding_fraction=0.5) if name != "aff"
                      else build_mixer(name, 12, num_blocks=3), std=0.3).double()
    x = torch.randn(2, 9, 8, 12, dtype=torch.float64)
    results = {}
    for stacked in (False, True):
        monkeypatch.setattr(afno, "stacked_layout", lambda x, dtype, stacked=stacked: stacked)
        mixer.zero_grad()
        xr = x.clone().requires_grad_(True)
        y = mixer(xr)
        y.square().sum().backward()
        results[stacked] = (y, xr.grad, {n: p.grad for n, p in mixer.named_parameters()})
    (y0, gx0, gp0), (y1, gx1, gp1) = results[False], results[True]
    torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx1, gx0, rtol=1e-10, atol=1e-10)
    for n in gp0:
        torch.testing.assert_close(gp1[n], gp0[n], rtol=1e-9, atol=1e-9)


def test_invalid_options_raise_value_error():
    with pytest.raises(ValueError, match=r"\[1, 2, 3, 4, 6, 12\]"):
        AFNO2D(12, num_blocks=5)
    with pytest.raises(ValueError, match="hard_thresholding_fraction"):
        AFNO2D(12, num_blocks=4, hard_thresholding_fraction=0.0)
    with pytest.raises(ValueError, match="identity"):
        AFNOStatic(12, num_blocks=4, skip="conv2d")
    with pytest.raises(ValueError, match="sparsity_threshold"):
        AFNO2D(12, num_blocks=4, sparsity_threshold=-0.1)
    with pytest.raises(ValueError, match=r"\(B, H, W, 12\)"):
        AFNO2D(12, num_blocks=4)(torch.randn(2, 5, 5, 8))


@pytest.mark.parametrize("name", ["afno", "afno_static"])
def test_registered_as_not_shift_equivariant_because_it_is_not(name):
    """The registry's ``shift_equivariant`` flag promises circular shift-equivariance; biases break it."""
    assert get_mixer_spec(name).shift_equivariant is False
    mixer = randomise(build_mixer(name, 8, num_blocks=2))
    x = torch.randn(1, 8, 8, 8)
    shifted = mixer(torch.roll(x, (2, 3), (1, 2)))
    assert (shifted - torch.roll(mixer(x), (2, 3), (1, 2))).abs().max() > 1e-3


@pytest.mark.parametrize("grid", [(7, 5), (6, 8), (4, 1), (1, 6)])
@pytest.mark.parametrize("fraction", [1.0, 0.3])
@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("fold", [False, True])
def test_fft_backwards_are_the_adjoints(grid, fraction, stacked, fold, monkeypatch):
    """The hand-written backwards of the two transforms (one inverse FFT each, the mirrored columns'
    factors in the transposing copies) are the adjoints: autograd's numerical Jacobian agrees, on odd and
    even grids, with and without a low-pass, in both block layouts, with orthonormal FFTs (CPU) and with
    unnormalised ones whose scaling rides on the copies (``fold``, the GPU's way, forced here)."""
    monkeypatch.setattr(afno, "_folds_scaling", lambda x: fold)
    k = 2
    mixer = AFNO2D(4, num_blocks=k, hard_thresholding_fraction=fraction)
    m_h, m_w = mixer.cutoffs(*grid)
    x = torch.randn(2, *grid, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: afno._GridToModes.apply(t, m_h, m_w, k, stacked, torch.float64), (x,))
    modes = afno._GridToModes.apply(x.detach(), m_h, m_w, k, stacked, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: afno._ModesToGrid.apply(t, 2, *grid, m_h, m_w, k), (modes,))


@pytest.mark.parametrize("fold", [False, True])
def test_transforms_are_the_orthonormal_ffts_of_the_kept_modes(fold, monkeypatch):
    """Forward values: the block layout holds ``rfft2(x, norm="ortho")`` on the kept modes, tokens ordered
    (batch, W frequency, H frequency), and the grid is ``irfft2`` of them with every other mode zero;
    the same whether the FFTs scale (CPU) or the copies do (``fold``, the GPU's way)."""
    monkeypatch.setattr(afno, "_folds_scaling", lambda x: fold)
    x = torch.randn(2, 8, 10, 6, dtype=torch.float64)
    mixer = AFNO2D(6, num_blocks=3, hard_thresholding_fraction=0.3)
    m_h, m_w = mixer.cutoffs(8, 10)
    spectrum = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")  # (b, H, W/2+1, C)
    rows = torch.cat((torch.arange(m_h), torch.arange(8 - m_h, 8)))
    kept = spectrum[:, rows][:, :, :m_w]  # (b, rows, cols, C)
    modes = afno._GridToModes.apply(x, m_h, m_w, 3, False, torch.float64)
    expected = torch.view_as_real(kept.permute(0, 2, 1, 3)).reshape(-1, 3, 2, 2).permute(3, 1, 0, 2)
    torch.testing.assert_close(modes, expected, rtol=0, atol=1e-12)
    full = torch.zeros_like(spectrum)
    full[:, rows, :m_w] = kept
    grid = afno._ModesToGrid.apply(modes, 2, 8, 10, m_h, m_w, 3)
    torch.testing.assert_close(grid, torch.fft.irfft2(full, s=(8, 10), dim=(1, 2), norm="ortho"), rtol=0, atol=1e-12)


def _benchmark_mixers():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "scripts" / "benchmark_mixers.py"
    spec = importlib.util.spec_from_file_location("benchmark_mixers", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return benchmark


def test_benchmark_script_agrees_and_exits_nonzero_on_disagreement(monkeypatch, capsys):
    """scripts/benchmark_mixers.py checks our kernel against its reference and fails loudly."""
    benchmark = _benchmark_mixers()
    threads = torch.get_num_threads()
    try:
        assert benchmark.main(["--quick", "--repeats", "1", "--threads", "1"]) == 0
        monkeypatch.setattr(AFNO2D, "spectral_op", lambda self, z: 1.001 * self.block_mlp(z))
        assert benchmark.main(["--quick", "--repeats", "1", "--threads", "1"]) == 1
    finally:
        torch.set_num_threads(threads)
    assert "FAILED" in capsys.readouterr().err


def test_benchmark_script_refuses_physicsnemo_when_it_is_not_installed(monkeypatch, capsys):
    """--physicsnemo without the extra is a clear error naming the install, not a table without the peer."""
    import importlib.metadata

    benchmark = _benchmark_mixers()
    version = importlib.metadata.version

    def missing(name):
        if name == "nvidia-physicsnemo":
            raise importlib.metadata.PackageNotFoundError(name)
        return version(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(SystemExit) as exit:
        benchmark.main(["--quick", "--physicsnemo"])
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and '.venv/bin/pip install -e ".[physicsnemo]"' in captured.err


def test_benchmark_script_agrees_with_physicsnemos_layer(tmp_path, monkeypatch):
    """Where the physicsnemo extra is installed (never in make install, so skipped there): its AFNO2DLayer on our
    weights gives our outputs, and a layer that differs from it fails the script."""
    pytest.importorskip("physicsnemo.nn")
    import json

    benchmark = _benchmark_mixers()
    threads = torch.get_num_threads()
    try:
        assert benchmark.main(["--quick", "--repeats", "1", "--threads", "1", "--physicsnemo", "--json", str(tmp_path / "a.json")]) == 0
        rows = json.loads((tmp_path / "a.json").read_text())["rows"]
        assert all(row["diff_physicsnemo"] < 1e-5 for row in rows if "bf16" not in row["case"] and "35%" not in row["case"])
        assert {row["case"] for row in rows if "physicsnemo_ms" in row} == {"k=8", "k=1", "k=8 bf16 autocast", "k=1 bf16 autocast"}
        # A peer that disagrees (its second bias off by 0.1) fails the run.
        layer = benchmark.physicsnemo_layer

        def shifted(mixer):
            peer = layer(mixer)
            if peer is not None:
                with torch.no_grad():
                    peer.b2.add_(0.1)
            return peer

        monkeypatch.setattr(benchmark, "physicsnemo_layer", shifted)
        assert benchmark.main(["--quick", "--repeats", "1", "--threads", "1", "--physicsnemo"]) == 1
    finally:
        torch.set_num_threads(threads)
