"""ViT backbone: heads and their shapes, one mixer per block on the right grid, parameter counts
against a hand-derived formula, position-embedding resampling, head swap, errors, gradients,
stochastic depth, and the init leaving the mixers' own parameters alone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import afno_repro.models.vit as vit_module
from afno_repro.mixers import list_mixers
from afno_repro.models import ViT
from afno_repro.models.heads import PatchPixelHead
from afno_repro.models.vit import Block
from mixer_options import small_options

DIM = 32
PATCH = 4
IMG = 32  # an 8x8 token grid
ATTENTION = {"name": "attention", "num_heads": 4}
# A mixer without parameters makes the trunk count exact; fall back to subtracting a mixer's own.
COUNT_MIXER = {"name": "fnet"} if "fnet" in list_mixers() else ATTENTION


def tiny_vit(**overrides) -> ViT:
    options = dict(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=2, mixer=ATTENTION)
    options.update(overrides)
    return ViT(**options)


def small_mixer(name: str) -> dict:
    """The mixer, small and valid at DIM channels (tests/mixer_options.py)."""
    return {"name": name, **small_options(name)}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", [(32, 32), (24, 40)], ids=["square", "non-square"])
def test_head_output_shapes(size):
    x = torch.randn(2, 3, *size)
    h, w = size[0] // PATCH, size[1] // PATCH
    assert tiny_vit(head="pixel")(x).shape == (2, 3, *size)
    assert tiny_vit(head="segmentation", num_classes=5)(x).shape == (2, 5, *size)
    assert tiny_vit(head="classification", num_classes=7)(x).shape == (2, 7)
    assert tiny_vit(head=None)(x).shape == (2, h, w, DIM)
    assert tiny_vit().forward_features(x).shape == (2, h, w, DIM)


def test_pixel_head_puts_each_token_on_its_own_patch():
    head = PatchPixelHead(embed_dim=4, patch_size=2, out_chans=3)
    tokens = torch.randn(1, 3, 5, 4)
    out = head(tokens)
    expected = head.proj(tokens).reshape(1, 3, 5, 2, 2, 3)  # (token row, token col, r, s, channel)
    for i in range(3):
        for j in range(5):
            patch = out[0, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            assert torch.allclose(patch, expected[0, i, j].permute(2, 0, 1))


def test_classification_head_is_linear_on_the_token_average():
    model = tiny_vit(head="classification", num_classes=7).eval()
    x = torch.randn(2, 3, IMG, IMG)
    pooled = model.forward_features(x).mean(dim=(1, 2))
    assert torch.allclose(model(x), model.head.fc(pooled), atol=1e-6)


def test_one_mixer_per_block_built_on_the_token_grid(monkeypatch):
    calls, built = [], []
    real_build = vit_module.build_mixer

    def spy(name, dim, grid_size=None, **options):
        calls.append((name, dim, grid_size, dict(options)))
        built.append(real_build(name, dim, grid_size=grid_size, **options))
        return built[-1]

    monkeypatch.setattr(vit_module, "build_mixer", spy)
    model = tiny_vit(img_size=(24, 40), depth=3, mixer={"name": "attention", "num_heads": 4, "qkv_bias": False})
    assert calls == [("attention", DIM, (6, 10), {"num_heads": 4, "qkv_bias": False})] * 3
    assert [block.mixer for block in model.blocks] == built
    assert len({id(m) for m in built}) == 3


def test_parameter_count_matches_formula():
    c, p, hidden, depth, h, w = DIM, PATCH, 4 * DIM, 3, 6, 10
    trunk = (p * p * 3 * c + c) + h * w * c + depth * (4 * c + 2 * c * hidden + hidden + c) + 2 * c
    heads = {
        "pixel": (p * p * 3 * c + p * p * 3, None),
        "segmentation": (p * p * 5 * c + p * p * 5, 5),
        "classification": (c * 5 + 5, 5),
        None: (0, None),
    }
    for head, (head_params, num_classes) in heads.items():
        model = tiny_vit(img_size=(24, 40), depth=depth, mixer=COUNT_MIXER, head=head, num_classes=num_classes)
        mixers = sum(n_params(block.mixer) for block in model.blocks)
        assert n_params(model) - mixers == trunk + head_params, head
    with_pos = tiny_vit(img_size=(24, 40), depth=depth, mixer=COUNT_MIXER)
    without_pos = tiny_vit(img_size=(24, 40), depth=depth, mixer=COUNT_MIXER, pos_embed=False)
    assert n_params(with_pos) - n_params(without_pos) == h * w * c


def test_vit_b4_gfn_is_87m_parameters():
    """Paper Table 2 gives ViT-B/4 with GFN 87M parameters (A.2: width 768, 12 layers, pixel head); the
    count without a position embedding fits it, and the 56x56 one adds 56*56*768 = 2.4M (README "Model
    accounting" lists 89.12M with it)."""
    with torch.device("meta"):
        bare = ViT(embed_dim=768, depth=12, mixer={"name": "gfn"}, pos_embed=False)
        with_pos = ViT(embed_dim=768, depth=12, mixer={"name": "gfn"})
    assert abs(n_params(bare) - 87e6) / 87e6 < 0.02
    assert n_params(with_pos) - n_params(bare) == 56 * 56 * 768


def added_position_embedding(model: ViT, size: tuple[int, int]) -> torch.Tensor:
    """With no blocks, an identity final norm and a zero patch bias, zeros map to the position embedding."""
    model.norm = nn.Identity()
    nn.init.zeros_(model.patch_embed.proj.bias)
    with torch.no_grad():
        return model.forward_features(torch.zeros(1, 3, *size))


def test_position_embedding_is_added_as_is_on_the_built_grid():
    model = tiny_vit(depth=0)
    assert torch.equal(added_position_embedding(model, (IMG, IMG)), model.pos_embed.detach())


def test_position_embedding_resampled_bicubically_to_another_grid():
    model = tiny_vit(depth=0)
    added = added_position_embedding(model, (48, 20))
    expected = F.interpolate(model.pos_embed.detach().permute(0, 3, 1, 2), size=(12, 5), mode="bicubic", antialias=True)
    assert added.shape == (1, 12, 5, DIM)
    assert torch.allclose(added, expected.permute(0, 2, 3, 1), atol=1e-6)
    with torch.no_grad():
        model.pos_embed.copy_(torch.arange(DIM, dtype=torch.float32).expand_as(model.pos_embed))
    constant = added_position_embedding(model, (48, 20))
    assert torch.allclose(constant, torch.arange(DIM, dtype=torch.float32).expand(1, 12, 5, DIM), atol=1e-5)


def test_head_swap_keeps_trunk_weights():
    model = tiny_vit(head="pixel")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_head("segmentation", num_classes=6)
    after = model.state_dict()
    trunk = [k for k in before if not k.startswith("head.")]
    assert trunk and all(torch.equal(before[k], after[k]) for k in trunk)
    assert after["head.proj.weight"].shape == (PATCH * PATCH * 6, DIM)
    assert model.num_classes == 6 and model.head_name == "segmentation"
    assert model(torch.randn(1, 3, IMG, IMG)).shape == (1, 6, IMG, IMG)


def test_init_leaves_mixers_alone_and_initialises_the_rest(monkeypatch):
    snapshots = []
    real_build = vit_module.build_mixer

    def spy(*args, **kwargs):
        mixer = real_build(*args, **kwargs)
        snapshots.append({k: v.clone() for k, v in mixer.state_dict().items()})
        return mixer

    monkeypatch.setattr(vit_module, "build_mixer", spy)
    model = tiny_vit(depth=2)
    for block, snapshot in zip(model.blocks, snapshots):
        assert snapshot and all(torch.equal(v, block.mixer.state_dict()[k]) for k, v in snapshot.items())
    mixer_modules = {id(m) for block in model.blocks for m in block.mixer.modules()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in mixer_modules]
    assert len(linears) == 2 * 2 + 1
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    assert all(abs(m.weight.std().item() - 0.02) < 0.003 for m in linears)


@pytest.mark.parametrize("size,nearest", [(225, "224 or 228"), (30, "28 or 32")])
def test_img_size_not_divisible_by_patch_raises(size, nearest):
    with pytest.raises(ValueError, match=rf"img_size {size} is not divisible by patch_size 4.*{nearest}"):
        tiny_vit(img_size=size)


def test_bad_inputs_raise_value_error():
    model = tiny_vit()
    with pytest.raises(ValueError, match="not divisible by patch_size 4.*28 or 32"):
        model(torch.randn(1, 3, 32, 30))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="valid heads"):
        tiny_vit(head="linear")
    with pytest.raises(ValueError, match="needs num_classes"):
        tiny_vit(head="classification")
    with pytest.raises(ValueError, match="'name'"):
        tiny_vit(mixer={"num_heads": 4})


@pytest.mark.parametrize("name", list_mixers())
def test_gradients_reach_every_parameter(name):
    model = tiny_vit(mixer=small_mixer(name), head="segmentation", num_classes=3)
    model(torch.randn(2, 3, IMG, IMG)).square().mean().backward()
    mixer_params = {id(p) for block in model.blocks for p in block.mixer.parameters()}
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        if id(param) not in mixer_params:
            assert param.grad.abs().sum() > 0, param_name


def test_drop_path_rises_linearly_to_the_rate():
    model = tiny_vit(depth=5, drop_path_rate=0.2)
    rates = [getattr(block.drop_path, "drop_prob", 0.0) for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert isinstance(model.blocks[0].drop_path, nn.Identity)


class Doubling(nn.Module):
    def forward(self, x):
        return 2 * x


def test_dropped_branches_and_double_skip():
    """With every residual branch dropped the block is the identity; FourCastNet's double skip
    never drops the mixer branch."""
    x = torch.randn(2, 3, 5, 8)
    standard = Block(8, Doubling(), drop_path=1.0).train()
    assert torch.equal(standard(x), x)
    fourcastnet = Block(8, Doubling(), drop_path=1.0, double_skip=True).train()
    assert torch.allclose(fourcastnet(x), x + 2 * fourcastnet.norm1(x))
    for block in (standard.eval(), fourcastnet.eval()):
        y = x + 2 * block.norm1(x)
        assert torch.allclose(block(x), y + block.mlp(block.norm2(y)), atol=1e-6)


def test_builds_and_runs_on_the_meta_device():
    with torch.device("meta"):
        model = tiny_vit(head="classification", num_classes=4)
        out = model(torch.randn(2, 3, 24, 40))
    assert out.shape == (2, 4) and out.is_meta
    assert all(p.is_meta for p in model.parameters())
