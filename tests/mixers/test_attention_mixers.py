"""Properties of the attention-family mixers, each checked against a naive reference.

The references are written here from the paper's equations with explicit loops and the module's
own weights, so a wrong head split, window layout, mask or reduction makes them disagree.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from afno_repro.analysis import count_flops
from afno_repro.mixers import build_mixer
from afno_repro.mixers.attention import SelfAttention
from afno_repro.mixers.efficient_attention import EfficientSelfAttention
from afno_repro.analysis.memory import saved_for_backward
from afno_repro.mixers.long_short import LongShortAttention
from afno_repro.models import SegFormer, ViT

ATTENTION_FAMILY = {
    "attention": {"num_heads": 4},
    "long_short": {"num_heads": 4, "window_size": 2, "rank": 3},
    "efficient_attention": {"num_heads": 2, "sr_ratio": 2},
}


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Eq. 1 per head: ``softmax(Q K^T / sqrt(d_h)) V`` for ``(B, Nq, C)``, ``(B, Nk, C)`` tokens."""
    batch, n_q, channels = q.shape
    head_dim = channels // num_heads
    heads = []
    for h in range(num_heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(head_dim), dim=-1)
        heads.append(weights @ v[..., part])
    return torch.cat(heads, dim=-1)


def naive_long_short(mixer: LongShortAttention, x: torch.Tensor) -> torch.Tensor:
    """Long-Short attention with a Python loop over windows that only ever sees real tokens."""
    batch, height, width, channels = x.shape
    w, halo, heads, rank = mixer.window_size, mixer.window_size // 2, mixer.num_heads, mixer.rank
    head_dim = channels // heads
    q = mixer.q(x)
    k_raw, v_raw = mixer.kv(x).split(channels, dim=-1)
    k_short, v_short = mixer.norm_short(k_raw), mixer.norm_short(v_raw)
    landmarks = []
    if rank > 0:
        scores = torch.softmax(mixer.dynamic_projection(x).reshape(batch, -1, heads, rank), dim=1)
        for raw in (k_raw, v_raw):
            tokens = raw.reshape(batch, -1, channels)
            per_head = [
                scores[:, :, h, :].transpose(1, 2) @ tokens[..., h * head_dim : (h + 1) * head_dim]
                for h in range(heads)
            ]
            landmarks.append(mixer.norm_long(torch.cat(per_head, dim=-1)))
    out = torch.zeros_like(q)
    for top in range(0, height, w):
        for left in range(0, width, w):
            rows = slice(max(0, top - halo), min(height, top + w + halo))
            cols = slice(max(0, left - halo), min(width, left + w + halo))
            keys = k_short[:, rows, cols].reshape(batch, -1, channels)
            values = v_short[:, rows, cols].reshape(batch, -1, channels)
            if rank > 0:
                keys = torch.cat([keys, landmarks[0]], dim=1)
                values = torch.cat([values, landmarks[1]], dim=1)
            queries = q[:, top : top + w, left : left + w]
            mixed = naive_attention(queries.reshape(batch, -1, channels), keys, values, heads)
            out[:, top : top + w, left : left + w] = mixed.reshape(queries.shape)
    return mixer.proj(out)


def naive_efficient_attention(mixer: EfficientSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Spatial-reduction attention with the reduction conv written as a sum over kernel taps."""
    batch, height, width, channels = x.shape
    sr = mixer.sr_ratio
    rows, cols = height // sr, width // sr
    reduced = mixer.sr.bias.expand(batch, rows, cols, channels).clone()
    for i in range(sr):
        for j in range(sr):
            taps = x[:, i : rows * sr : sr, j : cols * sr : sr]
            reduced = reduced + taps @ mixer.sr.weight[:, :, i, j].T
    kv_tokens = mixer.norm(reduced.reshape(batch, rows * cols, channels))
    k, v = mixer.kv(kv_tokens).split(channels, dim=-1)
    q = mixer.q(x).reshape(batch, -1, channels)
    return mixer.proj(naive_attention(q, k, v, mixer.num_heads)).reshape(x.shape)


def input_gradient_support(mixer: torch.nn.Module, x: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """Boolean ``(H, W)``: the tokens the output token ``(row, col)`` depends on."""
    x = x.clone().requires_grad_(True)
    mixer(x)[0, row, col].sum().backward()
    return x.grad[0].abs().sum(-1) > 0


@torch.no_grad()
@pytest.mark.parametrize("grid", [(5, 3), (4, 4), (1, 7)])
def test_attention_matches_eq1(grid):
    mixer = SelfAttention(16, num_heads=4).eval()
    x = torch.randn(2, *grid, 16)
    q, k, v = mixer.qkv(x.reshape(2, -1, 16)).split(16, dim=-1)
    expected = mixer.proj(naive_attention(q, k, v, num_heads=4)).reshape(x.shape)
    torch.testing.assert_close(mixer(x), expected, rtol=1e-5, atol=1e-5)


def test_attention_parameter_count_includes_output_projection():
    dim = 24
    mixer = SelfAttention(dim, num_heads=3, qkv_bias=False)
    assert sum(p.numel() for p in mixer.parameters()) == 4 * dim * dim + dim


@torch.no_grad()
@pytest.mark.parametrize(
    ("grid", "window_size", "rank"),
    [((7, 5), 4, 3), ((6, 9), 2, 2), ((5, 5), 3, 0), ((3, 2), 8, 1)],
)
def test_long_short_matches_per_window_loop(grid, window_size, rank):
    """Vectorised windows, halo masks, grid round-up and landmarks agree with a loop over windows."""
    mixer = LongShortAttention(16, num_heads=2, window_size=window_size, rank=rank).eval()
    x = torch.randn(2, *grid, 16)
    torch.testing.assert_close(mixer(x), naive_long_short(mixer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn_drop", [0.0, 0.2])
def test_long_short_recompute_gives_the_same_numbers_and_keeps_less_for_backward(attn_drop):
    """recompute=True (the default) keeps the tokens, queries and raw keys/values for backward, not the 4x
    neighbourhood copies: the same output and gradients to the bit (dropout included), and no more saved than
    full attention of the same width holds."""
    torch.manual_seed(0)
    stored = LongShortAttention(32, num_heads=4, window_size=4, rank=8, attn_drop=attn_drop, recompute=False)
    recomputed = LongShortAttention(32, num_heads=4, window_size=4, rank=8, attn_drop=attn_drop)
    recomputed.load_state_dict(stored.state_dict())
    x = torch.randn(2, 13, 18, 32, requires_grad=True)
    results, saved = [], []
    for mixer in (stored, recomputed):
        torch.manual_seed(1)
        with saved_for_backward(exclude=mixer.parameters()) as held:
            y = mixer(x)
        y.backward(torch.ones_like(y))
        results.append([y.detach(), x.grad.clone(), *(p.grad for p in mixer.parameters())])
        saved.append(held.bytes)
        x.grad = None
    for a, b in zip(*results):
        assert torch.equal(a, b)
    attention = SelfAttention(32, num_heads=4)
    with saved_for_backward(exclude=attention.parameters()) as held:
        attention(x)
    assert saved[1] <= held.bytes < saved[0] / 2


@pytest.mark.parametrize("recompute", [True, False])
def test_long_short_chunks_give_the_same_output_and_gradients_to_rounding(recompute):
    """Windows attended two rows of windows at a time (the default), one row, or the whole grid at once: the same
    output to the bit (every window sees the same keys), gradients equal to float rounding (neighbouring chunks'
    halos are summed in another order); 13 rows of tokens are 4 rows of windows at w=4, the last one cut short."""
    torch.manual_seed(0)
    whole = LongShortAttention(32, num_heads=4, window_size=4, rank=8, recompute=recompute, chunk_rows=None)
    x = torch.randn(2, 13, 18, 32, requires_grad=True)
    y = whole(x)
    y.square().sum().backward()
    expected = [x.grad.clone(), *(p.grad.clone() for p in whole.parameters())]
    for chunk_rows in (1, 2, 3, 4, 9):
        chunked = LongShortAttention(32, num_heads=4, window_size=4, rank=8, recompute=recompute, chunk_rows=chunk_rows)
        chunked.load_state_dict(whole.state_dict())
        x.grad = None
        out = chunked(x)
        assert torch.equal(out, y), chunk_rows
        out.square().sum().backward()
        for got, want in zip([x.grad, *(p.grad for p in chunked.parameters())], expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_rows", [0, -1, 1.5, True, "2"])
def test_long_short_refuses_a_chunk_that_is_not_a_positive_count(chunk_rows):
    with pytest.raises(ValueError, match=r"chunk_rows=.* is not a positive integer or null.*use 2"):
        LongShortAttention(32, num_heads=4, chunk_rows=chunk_rows)


def test_long_short_without_long_range_is_local():
    """With rank=0 a token sees exactly its window's (w + 2 * (w // 2))^2 neighbourhood, clipped to the grid."""
    mixer = LongShortAttention(8, num_heads=2, window_size=2, rank=0).eval()
    x = torch.randn(1, 9, 7, 8)
    for row, col in [(0, 0), (4, 3), (8, 6), (3, 5)]:
        top, left = row // 2 * 2, col // 2 * 2
        expected = torch.zeros(9, 7, dtype=torch.bool)
        expected[max(0, top - 1) : top + 3, max(0, left - 1) : left + 3] = True
        assert torch.equal(input_gradient_support(mixer, x, row, col), expected)


def test_long_short_long_range_sees_every_token():
    mixer = LongShortAttention(8, num_heads=2, window_size=2, rank=2).eval()
    support = input_gradient_support(mixer, torch.randn(1, 9, 7, 8), 0, 0)
    assert support.all()


@torch.no_grad()
def test_long_short_window_covering_grid_is_full_attention():
    """A window larger than the grid is mostly halo and round-up padding; with those keys masked
    and no landmarks, every query attends to exactly the N real tokens."""
    mixer = LongShortAttention(8, num_heads=2, window_size=8, rank=0).eval()
    x = torch.randn(2, 5, 6, 8)
    k, v = mixer.kv(x).reshape(2, -1, 16).split(8, dim=-1)
    q = mixer.q(x).reshape(2, -1, 8)
    expected = mixer.proj(naive_attention(q, mixer.norm_short(k), mixer.norm_short(v), 2))
    torch.testing.assert_close(mixer(x), expected.reshape(x.shape), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_efficient_attention_without_reduction_is_self_attention():
    efficient = EfficientSelfAttention(16, num_heads=4, sr_ratio=1).eval()
    plain = SelfAttention(16, num_heads=4).eval()
    plain.qkv.weight.copy_(torch.cat([efficient.q.weight, efficient.kv.weight]))
    plain.qkv.bias.copy_(torch.cat([efficient.q.bias, efficient.kv.bias]))
    plain.proj.load_state_dict(efficient.proj.state_dict())
    x = torch.randn(2, 5, 3, 16)
    torch.testing.assert_close(efficient(x), plain(x), rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("sr_ratio", [1, 2, 4])
def test_efficient_attention_is_timms_pvt_v2_attention_on_the_grid(sr_ratio):
    """The same parameters and outputs as timm's PVT-v2/SegFormer attention (kept for speed: see its docstring)."""
    from timm.models.pvt_v2 import Attention

    ours = EfficientSelfAttention(32, num_heads=2, sr_ratio=sr_ratio).eval()
    timms = Attention(32, num_heads=2, sr_ratio=sr_ratio).eval()
    timms.load_state_dict(ours.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 8, 12, 32)
    torch.testing.assert_close(ours(x), timms(x.reshape(2, 96, 32), [8, 12]).reshape(2, 8, 12, 32))


@torch.no_grad()
@pytest.mark.parametrize(("grid", "sr_ratio"), [((8, 6), 2), ((7, 11), 3), ((9, 10), 4)])
def test_efficient_attention_reduces_keys(grid, sr_ratio):
    """Keys/values are floor(H/sr) * floor(W/sr) reduced tokens; leftover rows/cols are dropped."""
    mixer = EfficientSelfAttention(16, num_heads=2, sr_ratio=sr_ratio).eval()
    x = torch.randn(2, *grid, 16)
    torch.testing.assert_close(mixer(x), naive_efficient_attention(mixer, x), rtol=1e-5, atol=1e-5)
    seen_rows, seen_cols = grid[0] // sr_ratio * sr_ratio, grid[1] // sr_ratio * sr_ratio
    floored = torch.ones(grid, dtype=torch.bool)
    floored[:seen_rows, :seen_cols] = False
    # Tokens the strided conv floors away still query, but change no key/value.
    changed = mixer(x + floored[None, :, :, None].float())
    torch.testing.assert_close(changed[:, ~floored], mixer(x)[:, ~floored])
    if floored.any():
        assert not torch.allclose(changed[:, floored], mixer(x)[:, floored])


@pytest.mark.parametrize("name", sorted(ATTENTION_FAMILY))
def test_num_heads_must_divide_dim(name):
    with pytest.raises(ValueError, match=r"num_heads=5.*\[1, 2, 3, 4, 6, 8, 12, 24\]"):
        build_mixer(name, 24, num_heads=5)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("long_short", {"window_size": 0}, "window_size"),
        ("long_short", {"window_size": 2.5}, "window_size"),
        ("long_short", {"rank": -1}, "rank"),
        ("efficient_attention", {"sr_ratio": 0}, "sr_ratio"),
    ],
)
def test_invalid_options_raise(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_mixer(name, 16, num_heads=2, **options)


def test_efficient_attention_grid_smaller_than_reduction_raises():
    mixer = EfficientSelfAttention(16, sr_ratio=4)
    with pytest.raises(ValueError, match="smaller than sr_ratio=4"):
        mixer(torch.randn(1, 3, 8, 16))


@pytest.mark.parametrize("name", sorted(ATTENTION_FAMILY))
def test_bf16_autocast_matches_float32(name):
    mixer = build_mixer(name, 16, **ATTENTION_FAMILY[name]).eval()
    x = torch.randn(2, 7, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = mixer(x)
    assert low.shape == x.shape and low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), mixer(x), rtol=0.05, atol=0.05)
    low.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer.parameters())


def _mixer_macs(name: str, dim: int, grid: tuple[int, int], **options) -> int:
    """Multiply-accumulates of one forward pass of a mixer built on the meta device, both
    attention matmuls counted (from the shapes, so whichever SDPA kernel torch picks)."""
    with torch.device("meta"):
        mixer = build_mixer(name, dim, **options)
    return round(count_flops(mixer, (1, *grid, dim), attention_matmuls="both").gflops * 1e9)


def test_meta_device_flops_of_long_short_at_vit_b4_scale():
    """Runs on the meta device at 56x56, d=768 and costs what its windows imply, not O(N^2)."""
    dim, heads, w, rank, side = 768, 12, 4, 8, 56
    tokens, windows, span = side * side, (side // w) ** 2, w + 2 * (w // 2)
    projections = tokens * dim * (4 * dim + rank * heads)
    landmarks = 2 * tokens * rank * dim
    attention = 2 * windows * w * w * (span * span + rank) * dim
    macs = _mixer_macs("long_short", dim, (side, side), num_heads=heads, window_size=w, rank=rank)
    assert macs == projections + landmarks + attention


def test_meta_device_flops_of_attention():
    """Both ``N^2 d`` attention matmuls plus the ``4 d^2`` projections per token, on a 7x5 grid."""
    dim, tokens = 32, 35
    macs = _mixer_macs("attention", dim, (7, 5), num_heads=4)
    assert macs == tokens * 4 * dim * dim + 2 * tokens * tokens * dim


def test_meta_device_flops_of_efficient_attention():
    """Keys/values from floor(7/2) * floor(5/2) = 6 reduced tokens: attention costs N * 6 * d."""
    dim, tokens, keys, sr = 32, 35, 6, 2
    macs = _mixer_macs("efficient_attention", dim, (7, 5), num_heads=4, sr_ratio=sr)
    projections = 2 * tokens * dim * dim + 2 * keys * dim * dim
    conv = keys * dim * dim * sr * sr
    assert macs == projections + conv + 2 * tokens * keys * dim


def assert_initialised_as_their_authors_do(mixer: nn.Module, where: str) -> set[str]:
    """timm / SegFormer init: linear weights truncated normal std 0.02, LayerNorms one and zero,
    convs normal with std sqrt(2 / fan_out), every bias zero. Returns the checked layers' names."""
    checked = set()
    for name, module in mixer.named_modules():
        if isinstance(module, nn.Linear):
            expected_std = 0.02
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            expected_std = math.sqrt(2.0 / fan_out)
        elif isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), f"{where}.{name}"
            continue
        else:
            continue
        # Thousands of draws at width 64: the sample std is within a few percent of the init's.
        assert module.weight.std().item() == pytest.approx(expected_std, rel=0.1), f"{where}.{name}"
        assert module.weight.mean().abs().item() < 0.1 * expected_std, f"{where}.{name}"
        assert module.bias is None or torch.all(module.bias == 0), f"{where}.{name}"
        checked.add(name.rsplit(".", 1)[-1])
    return checked


# The layers each mixer's authors initialise; the check above must reach all of them.
INITIALISED_LAYERS = {
    "attention": {"qkv", "proj"},
    "long_short": {"q", "kv", "dynamic_projection", "proj"},
    "efficient_attention": {"q", "kv", "proj", "sr"},
}


@pytest.mark.parametrize("dim", [64, 768])
@pytest.mark.parametrize("name", sorted(ATTENTION_FAMILY))
def test_built_alone_the_mixer_is_initialised_as_its_authors_do(name, dim):
    mixer = build_mixer(name, dim, **ATTENTION_FAMILY[name])
    assert assert_initialised_as_their_authors_do(mixer, name) == INITIALISED_LAYERS[name]


@pytest.mark.parametrize("dim", [64, 768])
@pytest.mark.parametrize("name", sorted(ATTENTION_FAMILY))
def test_inside_vit_and_segformer_the_mixer_keeps_its_authors_init(name, dim):
    """The backbones init everything but their mixers (``init_outside``): what a mixer chose must
    be what a built ViT or SegFormer ends up with, at every block and stage."""
    mixer = {"name": name, **ATTENTION_FAMILY[name]}
    vit = ViT(img_size=16, patch_size=4, embed_dim=dim, depth=2, mixer=mixer)
    segformer = SegFormer(
        variant="b0", embed_dims=[64, 64, 64, dim], depths=[1, 1, 1, 1], img_size=64, num_classes=5,
        decoder_dim=32, mixer=mixer,
    )
    mixers = [(f"vit.blocks.{i}", block.mixer) for i, block in enumerate(vit.blocks)]
    mixers += [(f"segformer.stages.{i}", stage.blocks[0].mixer) for i, stage in enumerate(segformer.stages)]
    for where, built in mixers:
        assert assert_initialised_as_their_authors_do(built, where) == INITIALISED_LAYERS[name]
