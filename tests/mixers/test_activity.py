"""metrics.json's mixer_activity: the share of AFNO's spectrum softshrink zeroes, against an independent
count in complex arithmetic; inactive and inapplicable mixers; eager and compiled alike."""

import math

import pytest
import torch
import torch.nn.functional as F
from graphs import GraphCounter
from test_afno import kept_mask, randomise

from afno_repro.mixers import build_mixer
from afno_repro.mixers.activity import INACTIVE_ABOVE, SpectrumActivity, activity_note, activity_record
from afno_repro.models import ViT


def naive_pre_shrink(x, mixer):
    """Real and imaginary parts of the block MLP's output on the kept modes, in float64 complex
    arithmetic over the full half-spectrum, then masked: independent of the kernel's layouts."""
    b, h, w, c = x.shape
    k, n = mixer.num_blocks, c // mixer.num_blocks
    sd = {name: p.detach().double() for name, p in mixer.state_dict().items()}

    def cplx(t):
        return torch.complex(t[0], t[1])

    z = torch.fft.rfft2(x.double(), dim=(1, 2), norm="ortho").reshape(b, h, w // 2 + 1, k, n)
    o = torch.einsum("bhwki,kio->bhwko", z, cplx(sd["w1"])) + cplx(sd["b1"])
    o = torch.complex(F.relu(o.real), F.relu(o.imag))
    o = torch.einsum("bhwki,kio->bhwko", o, cplx(sd["w2"])) + cplx(sd["b2"])
    kept = kept_mask(h, w, mixer.hard_thresholding_fraction)
    o = o[:, kept]  # (b, kept modes, k, n)
    return torch.stack((o.real, o.imag))


def naive_shares(x, mixer):
    """(zeroed by softshrink, zero before) over the kept parts: softshrink zeroes |v| <= lambda."""
    pre = naive_pre_shrink(x, mixer)
    return float((pre.abs() <= mixer.sparsity_threshold).double().mean()), float((pre == 0).double().mean())


def vit(threshold, fraction=1.0, depth=3):
    torch.manual_seed(0)
    return ViT(img_size=(16, 12), patch_size=2, embed_dim=16, depth=depth,
               mixer={"name": "afno", "num_blocks": 2, "sparsity_threshold": threshold,
                      "hard_thresholding_fraction": fraction})


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_the_measure_equals_an_independent_count_per_layer(fraction):
    """Each layer's shares equal a float64 complex-arithmetic count on that layer's own input (captured),
    in layer order, over the kept modes only when the low-pass drops some."""
    model = randomise(vit(0.3, fraction), std=0.2).double().eval()
    x = torch.rand(3, 3, 16, 12, dtype=torch.float64)
    inputs = []
    hooks = [block.mixer.register_forward_pre_hook(lambda _, args: inputs.append(args[0].clone()))
             for block in model.blocks]
    with SpectrumActivity.attached(model) as activity, torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    record = activity_record(activity.counts(), split="val", num_images=3)
    expected = [naive_shares(tokens, block.mixer) for tokens, block in zip(inputs, model.blocks)]
    assert record["spectrum_zeroed"] == pytest.approx([zeroed for zeroed, _ in expected], abs=1e-12)
    assert record["zero_before"] == pytest.approx([before for _, before in expected], abs=1e-12)
    # Weights this large leave the layers neither all on nor all off: the comparison means something.
    assert all(0.05 < share < 0.95 for share in record["spectrum_zeroed"]), record["spectrum_zeroed"]
    assert record["mean_zeroed"] == pytest.approx(sum(record["spectrum_zeroed"]) / 3)
    parts = [2 * 3 * int(kept_mask(8, 6, fraction).sum()) * 16 for _ in model.blocks]  # re/im x images x modes x C
    assert activity.counts()[:, 2].tolist() == parts


def test_a_huge_threshold_reads_inactive_and_says_so():
    model = vit(1e6).eval()
    with SpectrumActivity.attached(model) as activity, torch.no_grad():
        model(torch.rand(2, 3, 16, 12))
    record = activity_record(activity.counts(), split="val", num_images=2)
    assert record["spectrum_zeroed"] == [1.0, 1.0, 1.0] and record["mean_zeroed"] == 1.0
    assert record["inactive"] and record["inactive_above"] == INACTIVE_ABOVE == 0.95
    assert activity_note({"mixer_activity": record}) == (
        "AFNO mixer effectively off: softshrink zeroes 100.0% of the spectrum (layers: 100.0, 100.0, 100.0; "
        "over 95% counts as off)")


def test_an_active_mixer_is_not_flagged():
    record = activity_record(torch.tensor([[0, 50, 100], [0, 96, 100]]), split="val", num_images=1)
    assert record["mean_zeroed"] == pytest.approx(0.73) and not record["inactive"]
    assert activity_note({"mixer_activity": record}) is None


@pytest.mark.parametrize("mixer", [{"name": "afno", "sparsity_threshold": 0.0}, {"name": "gfn"}, {"name": "afno_static"}])
def test_no_softshrink_no_measure(mixer):
    """Threshold 0 (no soft-thresholding) and the other mixers: nothing to measure, so None."""
    model = ViT(img_size=16, patch_size=4, embed_dim=16, depth=2, mixer=mixer)
    assert SpectrumActivity.attach(model) is None
    with SpectrumActivity.attached(model) as activity:
        model(torch.rand(1, 3, 16, 16))
    assert activity is None
    assert activity_note({"mixer_activity": None}) is None and activity_note({}) is None


def test_counting_stops_when_detached_and_costs_no_meter_when_off():
    mixer = build_mixer("afno", 8, num_blocks=2, sparsity_threshold=0.01)
    activity = SpectrumActivity.attach(mixer)
    mixer(torch.randn(1, 4, 4, 8))
    seen = activity.counts().clone()
    activity.detach()
    mixer(torch.randn(1, 4, 4, 8))
    assert torch.equal(activity.counts(), seen) and seen[0, 2] > 0
    assert mixer.shrink.meter is None


def test_a_compiled_model_counts_the_same_in_one_graph():
    """Under torch.compile the meter is traced into the evaluation graph (no graph break) and the plain
    graph is kept for training: the counts equal the eager ones."""
    x = torch.rand(2, 3, 16, 12)
    eager = vit(0.01).eval()
    with SpectrumActivity.attached(eager) as expected, torch.no_grad():
        eager(x)
    counter = GraphCounter()
    compiled = vit(0.01)
    compiled.compile(backend=counter)
    compiled(x).sum().backward()
    assert len(counter.graphs) == 1
    compiled.eval()
    with SpectrumActivity.attached(compiled) as activity, torch.inference_mode():
        compiled(x)
    assert len(counter.graphs) == 2, "the metered evaluation broke into several graphs"
    assert torch.equal(activity.counts(), expected.counts())
    assert not math.isclose(activity_record(activity.counts(), split="val", num_images=2)["mean_zeroed"], 0.0)
