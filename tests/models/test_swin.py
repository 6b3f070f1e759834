"""Swin trunks of Figure 1 (timm's Swin + SegFormer's all-MLP head): shapes at sizes the window
does not divide, the heads, and loading a classification checkpoint from a local file."""

import pytest
import timm
import torch

from afno_repro.models import SwinSegFormer

TINY = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2)


def tiny_swin(**overrides) -> SwinSegFormer:
    options = dict(TINY, variant="t", img_size=32, num_classes=5, decoder_dim=16)
    options.update(overrides)
    return SwinSegFormer(**options)


def timm_classifier(num_classes=10, **overrides) -> torch.nn.Module:
    """The timm Swin classifier a checkpoint would come from, at the tiny size."""
    options = dict(TINY, img_size=32, num_classes=num_classes, strict_img_size=False)
    options.update(overrides)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **options).eval()


@pytest.mark.parametrize("size", [(32, 32), (36, 44)], ids=["img_size", "window-does-not-divide"])
def test_segmentation_and_feature_shapes(size):
    model = tiny_swin().eval()
    x = torch.randn(2, 3, *size)
    features = model.forward_features(x)
    assert [f.shape[1] for f in features] == [16, 32, 64, 128]
    assert features[0].shape[-2:] == (size[0] // 4, size[1] // 4)
    assert model(x).shape == (2, 5, size[0] // 4, size[1] // 4)


def test_classification_head_and_reset_keep_the_trunk():
    model = tiny_swin(head="classification", num_classes=7).eval()
    assert model(torch.randn(2, 3, 36, 44)).shape == (2, 7)
    assert {k for k in model.state_dict() if k.startswith("head.")} == {"head.fc.weight", "head.fc.bias"}
    assert all(k.startswith(("trunk.", "norms.", "head.")) for k in model.state_dict())
    trunk = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_head(None)
    assert len(model(torch.randn(1, 3, 32, 32))) == 4 and model.num_classes is None
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trunk.items())


def test_checkpoint_loads_timm_weights_and_reproduces_timm_logits(tmp_path):
    reference = timm_classifier(num_classes=10)
    path = tmp_path / "swin_tiny.pth"
    torch.save({"model": reference.state_dict()}, path)  # the authors' layout wraps it in "model"
    model = tiny_swin(head="classification", num_classes=10, checkpoint=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    # A segmentation model gets the trunk and the final norm; its head and the new norms stay fresh.
    seg = tiny_swin(checkpoint=path)
    assert seg.load_classification_checkpoint(path) == [
        k for k in seg.state_dict() if k.startswith(("norms.0.", "norms.1.", "norms.2.", "head."))
    ]
    assert torch.equal(seg.state_dict()["norms.3.weight"], reference.state_dict()["norm.weight"])
    assert torch.equal(seg.trunk.layers_2.blocks[0].attn.qkv.weight, reference.layers[2].blocks[0].attn.qkv.weight)


def _in_the_authors_layout(timm_state: dict) -> dict:
    """timm's Swin state dict written as microsoft/Swin-Transformer's models/swin_transformer.py names it:
    each stage's PatchMerging at the END of the stage before (``layers.{i-1}.downsample``, timm puts it at the
    start of stage i), the classifier as ``head.*`` (timm: ``head.fc.*``), and the two buffers the authors'
    files carry: ``relative_position_index`` in every block and ``attn_mask`` in the shifted ones."""
    import re

    state = {}
    for key, value in timm_state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        state[key.replace("head.fc.", "head.")] = value
    for key in [k for k in state if k.endswith("attn.relative_position_bias_table")]:
        block = key.removesuffix("attn.relative_position_bias_table")
        state[block + "attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)  # dropped on load
        if int(block.split(".")[3]) % 2:
            state[block + "attn_mask"] = torch.zeros(1, 4, 4)
    return state


def test_checkpoint_in_the_swin_authors_key_layout_reproduces_the_same_logits(tmp_path):
    reference = timm_classifier(num_classes=10)
    authors = _in_the_authors_layout(reference.state_dict())
    assert "layers.0.downsample.reduction.weight" in authors and "head.weight" in authors  # not timm's names
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": authors}, path)
    model = tiny_swin(head="classification", num_classes=10, checkpoint=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))

def test_bad_checkpoints_raise_value_errors_naming_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ValueError, match=rf"checkpoint={missing} does not exist.*Swin authors' release"):
        tiny_swin(checkpoint=missing)
    wider = tmp_path / "wider.pth"
    torch.save(timm_classifier(embed_dim=24).state_dict(), wider)
    with pytest.raises(ValueError, match=rf"checkpoint={wider} does not fit Swin-T.*of another shape"):
        tiny_swin(checkpoint=wider)
    not_swin = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3)}, not_swin)
    with pytest.raises(ValueError, match=rf"checkpoint={not_swin} does not fit Swin-T"):
        tiny_swin(checkpoint=not_swin)


def test_bad_inputs_and_options_raise_value_errors():
    with pytest.raises(ValueError, match="not a multiple of Swin's patch size 4.*28 or 32"):
        tiny_swin()(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="valid variants are 't', 's', 'b'"):
        tiny_swin(variant="l")
    with pytest.raises(ValueError, match="valid heads"):
        tiny_swin(head="pixel")


def test_builds_the_full_size_trunks_on_the_meta_device():
    with torch.device("meta"):
        model = SwinSegFormer(variant="t", img_size=1024)
        out = model(torch.randn(1, 3, 1024, 1024))
    assert out.shape == (1, 19, 256, 256)
    trunk = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    assert abs(trunk - 27.5e6) / 27.5e6 < 0.01  # Swin-T without its classifier
