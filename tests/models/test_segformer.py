"""SegFormer backbone: shapes (non-square, not multiples of 32), per-stage mixer options and grids,
the variants' defaults, MiT-B3 parameter counts against SegFormer's, errors, stochastic depth,
the init leaving mixers alone, and running on the meta device."""

import pytest
import torch
from torch import nn

import afno_repro.models.segformer as segformer_module
from afno_repro.models import SegFormer

TINY = dict(variant="b0", embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], decoder_dim=16, num_classes=5)
TINY_MIXER = {"name": "efficient_attention", "num_heads": [1, 2, 3, 4], "sr_ratio": [4, 2, 1, 1]}


def tiny_segformer(**overrides) -> SegFormer:
    options = dict(TINY, img_size=64, mixer=TINY_MIXER)
    options.update(overrides)
    return SegFormer(**options)


@pytest.fixture
def build_calls(monkeypatch):
    """Records (dim, grid_size, options) of every mixer the SegFormer builds."""
    calls = []
    real_build = segformer_module.build_mixer

    def spy(name, dim, grid_size=None, **options):
        calls.append((dim, grid_size, dict(options)))
        return real_build(name, dim, grid_size=grid_size, **options)

    monkeypatch.setattr(segformer_module, "build_mixer", spy)
    return calls


@pytest.mark.parametrize("size", [(64, 96), (50, 70)], ids=["non-square", "not-multiple-of-32"])
def test_output_and_feature_shapes(size):
    model = tiny_segformer().eval()
    x = torch.randn(2, 3, *size)
    h, w = size
    expected = []
    for stride in (4, 8, 16, 32):
        expected.append((-(-h // stride), -(-w // stride)))
    features = model.forward_features(x)
    assert [tuple(f.shape) for f in features] == [(2, c, *hw) for c, hw in zip([8, 16, 24, 32], expected)]
    assert model(x).shape == (2, 5, *expected[0])


def test_per_stage_options_and_grids_reach_each_stage(build_calls):
    model = tiny_segformer(img_size=(64, 96), mixer={**TINY_MIXER, "qkv_bias": False})
    grids = [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert model.grid_sizes == grids
    expected = []
    for stage, depth in enumerate([1, 2, 1, 1]):
        options = {"num_heads": [1, 2, 3, 4][stage], "sr_ratio": [4, 2, 1, 1][stage], "qkv_bias": False}
        expected += [([8, 16, 24, 32][stage], grids[stage], options)] * depth
    assert build_calls == expected
    heads = [[block.mixer.num_heads for block in stage.blocks] for stage in model.stages]
    assert heads == [[1], [2, 2], [3], [4]]


def test_variant_heads_and_reduction_fill_unset_mixer_options(build_calls):
    tiny_segformer(embed_dims=[8, 16, 40, 64], mixer={"name": "efficient_attention", "sr_ratio": 1})
    assert [call[2] for call in build_calls] == [
        {"sr_ratio": 1, "num_heads": h} for h in [1, 2, 2, 5, 8]
    ]


def test_mit_b3_parameter_counts():
    """SegFormer MiT-B3 with efficient attention: SegFormer's paper (Table 1) gives the encoder 44.0M and
    the all-MLP decoder 3.3M at ADE20K's 150 classes; with Cityscapes' 19 classes the head is ~3.2M."""
    with torch.device("meta"):
        model = SegFormer(variant="b3")
    head = sum(p.numel() for p in model.head.parameters())
    encoder = sum(p.numel() for p in model.parameters()) - head
    assert abs(encoder - 44.1e6) / 44.1e6 < 0.02
    assert abs(head - 3.2e6) / 3.2e6 < 0.02
    assert [len(stage.blocks) for stage in model.stages] == [3, 4, 18, 3]


def test_variants_and_overrides():
    with torch.device("meta"):
        b0 = SegFormer(variant="b0", img_size=256)
        afno_widths = SegFormer(
            variant="b2", embed_dims=[208, 288, 440, 512], mixer={"name": "attention"}, img_size=256
        )
    assert b0.embed_dims == (32, 64, 160, 256) and b0.depths == (2, 2, 2, 2)
    assert b0.head.classifier.in_channels == 256
    assert afno_widths.embed_dims == (208, 288, 440, 512) and afno_widths.depths == (3, 4, 6, 3)
    assert afno_widths.head.classifier.in_channels == 768


def test_bad_configs_raise_value_error():
    with pytest.raises(ValueError, match=r"num_heads=\[1, 2, 5\] has 3 entries.*4 values"):
        tiny_segformer(mixer={"name": "efficient_attention", "num_heads": [1, 2, 5]})
    with pytest.raises(ValueError, match=r"embed_dims=\[8, 16, 24\] has 3 entries"):
        tiny_segformer(embed_dims=[8, 16, 24])
    with pytest.raises(ValueError, match="valid variants are 'b0', 'b1', 'b2', 'b3'"):
        tiny_segformer(variant="b5")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_segformer()(torch.randn(1, 4, 64, 64))


def test_drop_path_rises_linearly_over_all_blocks():
    model = tiny_segformer(drop_path_rate=0.4)
    rates = [getattr(block.drop_path, "drop_prob", 0.0) for stage in model.stages for block in stage.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_init_leaves_mixers_alone(monkeypatch):
    snapshots = []
    real_build = segformer_module.build_mixer

    def spy(*args, **kwargs):
        mixer = real_build(*args, **kwargs)
        snapshots.append({k: v.clone() for k, v in mixer.state_dict().items()})
        return mixer

    monkeypatch.setattr(segformer_module, "build_mixer", spy)
    model = tiny_segformer()
    mixers = [block.mixer for stage in model.stages for block in stage.blocks]
    for mixer, snapshot in zip(mixers, snapshots, strict=True):
        assert all(torch.equal(v, mixer.state_dict()[k]) for k, v in snapshot.items())
    inside = {id(m) for mixer in mixers for m in mixer.modules()}
    own = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and id(m) not in inside]
    assert all(m.bias is None or torch.count_nonzero(m.bias) == 0 for m in own)


def test_gradients_reach_every_parameter():
    model = tiny_segformer()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_builds_and_runs_on_the_meta_device():
    with torch.device("meta"):
        model = SegFormer(variant="b3", img_size=512)
        out = model(torch.randn(1, 3, 512, 512))
    assert out.shape == (1, 19, 128, 128) and out.is_meta


def test_classification_head_pools_the_last_stage():
    model = tiny_segformer(head="classification", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 96)
    assert model(x).shape == (2, 7)
    pooled = model.forward_features(x)[-1].mean(dim=(2, 3))
    torch.testing.assert_close(model(x), model.head.fc(pooled))
    assert model.num_classes == 7 and model.head_name == "classification"


def test_no_head_returns_the_four_stage_maps():
    model = tiny_segformer(head=None).eval()
    x = torch.randn(1, 3, 64, 64)
    out = model(x)
    assert [f.shape for f in out] == [f.shape for f in model.forward_features(x)]
    assert model.num_classes is None and not list(model.head.parameters())


def test_head_is_the_only_state_under_head_and_reset_keeps_the_trunk():
    model = tiny_segformer(head="classification", num_classes=10)
    keys = list(model.state_dict())
    assert {k for k in keys if k.startswith("head.")} == {"head.fc.weight", "head.fc.bias"}
    assert all(k.startswith(("stages.", "head.")) for k in keys)
    trunk = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_head("segmentation", num_classes=5)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trunk.items())
    assert {k.split(".")[1] for k in after if k.startswith("head.")} == {"linear", "fuse", "classifier"}
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5, 16, 16) and model.num_classes == 5
    assert model.head.classifier.in_channels == 16  # TINY's decoder_dim survives the reset


def test_bad_heads_raise_value_error():
    with pytest.raises(ValueError, match="valid heads are 'segmentation'"):
        tiny_segformer(head="pixel")
    with pytest.raises(ValueError, match="needs num_classes"):
        tiny_segformer(head="classification", num_classes=None)
