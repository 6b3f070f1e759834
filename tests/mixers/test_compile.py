"""``torch.compile`` of every registered mixer and of each backbone family: one graph, no recompile per
step, eager's numbers (what ``task.compile=true`` relies on).

Graph breaks and recompiles, dynamo only: each model is compiled with ``fullgraph=True``, so a graph
break raises, through a backend that counts the graphs dynamo hands it (``tests/graphs.py``). Three
training steps of one shape must hand it exactly one graph; evaluation (eval and inference mode)
adds its own, one more when an uneven last batch makes the batch size dynamic; a second epoch of
both must add none. A model that recompiled per step or per epoch would hand over a graph each time.
Mixers are parametrized from the registry, so a new one is checked as soon as it is registered.

- Fast tier (about a second a mixer): every mixer through training and evaluation, and through
  training under bf16 autocast (the GPU layout of the spectral mixers) and on a grid other than the
  one it was built for; the ViT with AFNO through training.
- Slow tier: ViT, SegFormer and Swin through training and evaluation (SegFormer and Swin take 5-10 s
  each to trace), the ViT with an uneven last batch; every mixer inside the ViT and the SegFormer; and
  the numbers: the compiled forward output and one step's gradients against eager's, then two more
  steps under ``torch.compiler.set_stance("fail_on_recompile")``, with AOT-eager for every mixer and
  Inductor (the default backend, what ``task.compile=true`` uses) for AFNO (see ``INDUCTOR_MIXERS``).

The compiler's cache goes to each test's temporary folder, so Inductor compiles from cold.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import pytest
import torch
from graphs import GraphCounter
from mixer_options import small_options
from test_properties import BUILD_GRID, DIM, GRID_SIZE_MIXERS, make_mixer
from torch import nn

from afno_repro.mixers import list_mixers
from afno_repro.models import SegFormer, SwinSegFormer, ViT

# Float32 under Inductor: fused kernels reorder the sums, so the last bits differ (measured over every
# mixer's output and gradients: at most 6e-7 of the tensor's largest entry, or 2e-8 absolute for
# long_short's dynamic-projection bias, whose gradient is rounding noise: a bias before a softmax over
# the tokens cancels); a real error (a dropped mode, bias or sign) is O(1).
RTOL, ATOL = 1e-4, 1e-5
IMAGE = 32


@pytest.fixture(autouse=True)
def _fresh_compiler(tmp_path, monkeypatch):
    """Compiled code is cached per code object, so another instance of a class compiled by an earlier
    test would reuse its graphs and hand this test's backend nothing. The compiler's cache folder
    (Inductor's code, dynamo's profiles; /tmp/torchinductor_<user> by default) is the test's own."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def train_steps(compiled: nn.Module, model: nn.Module, make_input: Callable[[int], torch.Tensor], steps: int = 3,
                autocast: bool = False) -> None:
    """``steps`` SGD steps on batches of 2 in train mode, as a training epoch runs them."""
    model.train()
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=1e-3) if parameters else None  # FNet has no weights
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            output = compiled(make_input(2))
        loss = sum(o.float().square().mean() for o in (output if isinstance(output, list) else [output]))
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad()


def evaluate(compiled: nn.Module, model: nn.Module, make_input: Callable[[int], torch.Tensor],
             batches: tuple[int, ...]) -> None:
    """Validation as Lightning runs it: eval mode, inference mode."""
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            compiled(make_input(batch))


def check_compiles_once(model: nn.Module, make_input: Callable[[int], torch.Tensor], eval_batches: tuple[int, ...] = (),
                        autocast: bool = False) -> None:
    """Three training steps of one shape hand the backend one graph; with ``eval_batches``, evaluation
    adds its own (eval and inference mode; one more when an uneven last batch makes the batch size
    dynamic), and a second epoch of both adds none."""
    counter = GraphCounter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    train_steps(compiled, model, make_input, autocast=autocast)
    assert len(counter.graphs) == 1, f"{len(counter.graphs)} graphs for 3 training steps of one shape: it recompiles per step"
    if not eval_batches:
        return
    evaluate(compiled, model, make_input, eval_batches)
    eval_graphs = len(counter.graphs) - 1
    # Static shapes for the first batch size; a second one makes the batch dimension dynamic, and that
    # graph serves every later size.
    assert eval_graphs <= min(len(set(eval_batches)), 2), (
        f"{eval_graphs} graphs for evaluation batches {eval_batches}: it recompiles per batch")
    train_steps(compiled, model, make_input, autocast=autocast)
    evaluate(compiled, model, make_input, eval_batches)
    assert len(counter.graphs) == 1 + eval_graphs, "a second epoch compiled again"


def tokens(batch: int, grid: tuple[int, int] = BUILD_GRID) -> torch.Tensor:
    return torch.randn(batch, *grid, DIM, requires_grad=True)


def images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, IMAGE, IMAGE)


@pytest.mark.parametrize("name", list_mixers())
def test_every_mixer_compiles_in_one_graph_without_recompiling(name):
    check_compiles_once(make_mixer(name), tokens, eval_batches=(2,))


@pytest.mark.parametrize("name", list_mixers())
def test_every_mixer_compiles_in_one_graph_under_bf16_autocast(name):
    """The layout the spectral mixers take on a GPU and under autocast (one stacked GEMM) is traced too."""
    check_compiles_once(make_mixer(name), tokens, autocast=True)


@pytest.mark.parametrize("name", GRID_SIZE_MIXERS)
def test_grid_size_mixers_compile_in_one_graph_on_another_grid(name):
    """GFN resamples its filter (Table 4 runs filters sized at 224 on 1024 crops), FNO clips its modes."""
    check_compiles_once(make_mixer(name), lambda batch: tokens(batch, grid=(12, 10)))


@pytest.mark.parametrize("autocast", [False, True])
def test_afno_with_the_gpus_folded_fft_scaling_compiles_in_one_graph_and_matches_eager(autocast, monkeypatch):
    """On a GPU the spectral mixers' FFTs run unnormalised and the copies into and out of the block
    layout scale (``afno._folds_scaling``), through a path that dynamo sees only there: forced here on
    the CPU, it traces in one graph, and AOT-eager's output and gradients equal eager's."""
    from afno_repro.mixers import afno

    monkeypatch.setattr(afno, "_folds_scaling", lambda x: True)
    check_compiles_once(make_mixer("afno"), tokens, eval_batches=(2,), autocast=autocast)
    torch.compiler.reset()
    assert_compiled_matches_eager(make_mixer("afno"), "aot_eager")


def tiny_vit(name: str) -> ViT:
    return ViT(img_size=IMAGE, patch_size=4, embed_dim=DIM, depth=1, mixer={"name": name, **small_options(name)})


def tiny_segformer(name: str) -> SegFormer:
    # Heads and key/value reduction per stage come from the SegFormer (one head: MiT's 5 of stage 3 would
    # not divide the tiny width; MiT's reductions 8, 4, 2, 1 fit its grids 8, 4, 2, 1 at 32x32). A list
    # option is one value per stage there, so FNO's (m1, m2) pair is given once per stage.
    options = {k: [v] * 4 if isinstance(v, tuple) else v for k, v in small_options(name).items()
               if k not in ("num_heads", "sr_ratio")}
    return SegFormer(variant="b0", embed_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1], img_size=IMAGE, num_classes=3,
                     decoder_dim=8, mixer={"name": name, **options}, num_heads=[1, 1, 1, 1], drop_path_rate=0.1)


def tiny_swin() -> SwinSegFormer:
    return SwinSegFormer(variant="t", img_size=IMAGE, num_classes=3, decoder_dim=8, embed_dim=8, depths=[1, 1, 1, 1],
                         num_heads=[1, 1, 1, 1], window_size=2)


FAMILIES = {"vit": lambda: tiny_vit("afno"), "segformer": lambda: tiny_segformer("afno"), "swin": tiny_swin}


def test_the_afno_vit_trains_in_one_graph():
    """The backbone of the demo and of Tables 2, 3, 5 and 6."""
    check_compiles_once(tiny_vit("afno"), images)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_backbone_family_compiles_once_for_training_and_once_for_evaluation(family):
    """ViT and SegFormer with AFNO (Tables 2-6 and Table 4), and Swin (Figure 1). The ViT also gets an
    uneven last evaluation batch, which makes the batch size dynamic once (tracing with symbolic shapes
    doubles the cost, 10 s more for SegFormer or Swin)."""
    check_compiles_once(FAMILIES[family](), images, eval_batches=(2, 3, 2) if family == "vit" else (2,))


@pytest.mark.slow
@pytest.mark.parametrize("name", list_mixers())
@pytest.mark.parametrize("family", ["vit", "segformer"])
def test_every_mixer_trains_in_one_graph_in_every_backbone(family, name):
    """Each backbone hands its mixers their grid sizes and options (per stage in SegFormer)."""
    check_compiles_once(tiny_vit(name) if family == "vit" else tiny_segformer(name), images)


def forward_and_gradients(model: nn.Module, call: Callable, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_()
    output = call(x)
    output.square().sum().backward()
    grads = {"input": x.grad, **{name: p.grad.clone() for name, p in model.named_parameters()}}
    model.zero_grad()
    return output.detach(), grads


# Inductor generates and compiles C++ for each mixer's forward and backward: 1-57 s a mixer on 2 shared
# cores, about 3 minutes for all nine (all within 6e-7 of eager). The full tier runs it on AFNO, the
# paper's mixer, whose custom autograd functions, FFTs (left to eager kernels: Inductor does not
# generate complex code) and block GEMMs are where it could go wrong, and AOT-eager on every mixer:
# the same functionalised forward and traced backward that Inductor compiles, run without code
# generation (about a second a mixer). AFNO_REPRO_INDUCTOR_EVERY_MIXER=1 runs Inductor on every mixer.
INDUCTOR_MIXERS = list_mixers() if os.environ.get("AFNO_REPRO_INDUCTOR_EVERY_MIXER") else ["afno"]


@pytest.mark.slow
@pytest.mark.parametrize("backend, name", [*(("aot_eager", n) for n in list_mixers()),
                                           *(("inductor", n) for n in INDUCTOR_MIXERS)])
def test_compiled_forward_and_gradients_match_eager(backend, name):
    model, compiled, x = assert_compiled_matches_eager(make_mixer(name), backend)
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(2):
            forward_and_gradients(model, compiled, x)


def assert_compiled_matches_eager(model: nn.Module, backend: str) -> tuple[nn.Module, Callable, torch.Tensor]:
    """The compiled forward output and one step's gradients equal eager's on a copy of ``model``; returns the
    model, its compiled form and the input."""
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x = torch.randn(2, *BUILD_GRID, DIM)
    expected, expected_grads = forward_and_gradients(eager, eager, x)
    output, grads = forward_and_gradients(model, compiled, x)
    torch.testing.assert_close(output, expected, rtol=RTOL, atol=ATOL)
    assert grads.keys() == expected_grads.keys()
    for key, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[key], rtol=RTOL, atol=ATOL, msg=lambda m: f"gradient of {key}: {m}")
    return model, compiled, x
