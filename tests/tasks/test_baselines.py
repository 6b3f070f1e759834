"""The biharmonic baseline in worker processes: the same fills and numbers as in the main process,
a worker's failure a clear error that keeps the checkpoints, and no worker left behind."""

from __future__ import annotations

import multiprocessing
import re
from functools import partial

import pool_fills
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from afno_repro.tasks import InpaintingTask
from afno_repro.tasks import baselines
from afno_repro.tasks.baselines import BaselineWorkerError, BiharmonicPool, FillCache, biharmonic


def smooth_batches(count: int, size: int = 3, height: int = 24, width: int = 20, seed: int = 0):
    """``count`` batches of smooth images and sparse masks; the last image of the first batch hides nothing and
    the first image of the second batch hides everything."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count * size, 3, 4, 4, generator=generator)
    images = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    masks = (torch.rand(count * size, 1, height, width, generator=generator) < 0.2).float()
    masks[size - 1] = 0
    if count > 1:
        masks[size] = 1
    return list(zip(images.split(size), masks.split(size)))


def new_children(before: set) -> set:
    return set(multiprocessing.active_children()) - before


def test_pooled_fills_are_those_of_the_main_process_bit_for_bit_in_submission_order():
    batches = smooth_batches(4)
    before = set(multiprocessing.active_children())
    with BiharmonicPool(workers=2) as pool:
        for number, (image, mask) in enumerate(batches):
            pool.submit(image, mask, number)
        handed_back = list(pool.finished(wait=True))
        assert new_children(before), "the fills ran in worker processes"
    assert not new_children(before)
    assert [number for _, number in handed_back] == [0, 1, 2, 3]
    for (filled, _), (image, mask) in zip(handed_back, batches):
        assert torch.equal(filled, biharmonic(image, mask))
    # Visible pixels are kept and the image with nothing hidden comes back as it went in.
    image, mask = batches[0]
    assert torch.equal(handed_back[0][0][mask.expand_as(image) == 0], image[mask.expand_as(image) == 0])
    assert torch.equal(handed_back[0][0][-1], image[-1])
    # Nothing visible: zeros, as in the main process (scikit-image has no boundary to extend).
    assert torch.equal(handed_back[1][0][0], torch.zeros_like(image[0]))


def test_a_backlog_of_fills_is_waited_for_instead_of_growing():
    with BiharmonicPool(workers=1) as pool:
        for image, mask in smooth_batches(3, size=2):
            pool.submit(image, mask)
        # Three batches and 6 images > 4 x 1 worker wait: the oldest batch is handed back even though
        # the just-started worker cannot have filled it yet.
        first = list(pool.finished())
        assert len(first) >= 1
        assert len(first) + len(list(pool.finished(wait=True))) == 3


def test_a_fill_that_raises_in_a_worker_is_a_clear_error_naming_the_batch():
    with BiharmonicPool(workers=1, fill=pool_fills.failing_fill) as pool:
        image, mask = smooth_batches(1)[0]
        pool.submit(image, mask)
        with pytest.raises(BaselineWorkerError, match=r"batch 0 failed in a worker process: ValueError: no fill.*"
                                                      r"baseline_workers=0.*run_baselines=false"):
            list(pool.finished(wait=True))


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_pool_refuses_a_worker_count_that_is_not_positive(workers):
    with pytest.raises(ValueError, match="workers"):
        BiharmonicPool(workers)


class Identity(nn.Module):
    """A backbone with one parameter, so that a checkpoint has weights; it returns its input."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class FailsOnSecondTestBatch(Identity):
    def __init__(self) -> None:
        super().__init__()
        self.test_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.test_calls += not self.training
        if self.test_calls == 2:
            raise RuntimeError("the model failed on test batch 1")
        return super().forward(x)


class Children(pl.Callback):
    """The worker processes alive after each test batch."""

    def __init__(self) -> None:
        self.before = set(multiprocessing.active_children())
        self.seen: list[int] = []

    def on_test_batch_end(self, *args, **kwargs) -> None:
        self.seen.append(len(new_children(self.before)))


def loader(batch_size: int = 3) -> DataLoader:
    # Every image hides some pixels: one with none would have an infinite PSNR, and so would the mean.
    images, masks = (torch.cat(parts) for parts in zip(*smooth_batches(3)))
    masks[:, :, 0, 0] = 1
    dataset = TensorDataset(images, masks)
    return DataLoader(dataset, batch_size=batch_size,
                      collate_fn=lambda items: {"image": torch.stack([i for i, _ in items]),
                                                "mask": torch.stack([m for _, m in items])})


def make_trainer(tmp_path, **options) -> pl.Trainer:
    defaults = dict(accelerator="cpu", default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return pl.Trainer(**{**defaults, **options})


def task(backbone: nn.Module | None = None, **options) -> InpaintingTask:
    return InpaintingTask(backbone or Identity(), partial(torch.optim.SGD, lr=1e-3), num_grid_images=0, **options)


@pytest.mark.parametrize("workers", [2, "auto"])
def test_pooled_baseline_scores_are_those_of_the_main_process_bit_for_bit(tmp_path, workers):
    children = Children()
    [pooled] = make_trainer(tmp_path, callbacks=[children]).test(task(baseline_workers=workers), loader(), verbose=False)
    [in_process] = make_trainer(tmp_path).test(task(baseline_workers=0), loader(), verbose=False)
    assert set(pooled) == set(in_process)
    for key in in_process:
        assert pooled[key] == in_process[key], key
    # Two workers filled beside the test loop; auto fills in the main process on a CPU trainer.
    assert max(children.seen) == (2 if workers == 2 else 0)
    assert not new_children(children.before)
    assert in_process["test/baseline/biharmonic/psnr"] > in_process["test/baseline/masked_input/psnr"] + 10


def test_a_dead_worker_is_a_clear_error_that_keeps_the_checkpoints(tmp_path, monkeypatch):
    model = task(baseline_workers=1)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/psnr", mode="max")
    run = make_trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoints])
    run.fit(model, loader(), loader())
    saved = sorted((tmp_path / "checkpoints").iterdir())
    assert saved
    before = set(multiprocessing.active_children())
    monkeypatch.setattr(baselines, "inpaint_biharmonic", pool_fills.dying_fill)
    with pytest.raises(BaselineWorkerError, match=r"worker process .* died while filling batch 0.*checkpoints are kept"):
        run.test(model, loader(), ckpt_path="best", verbose=False)
    assert not new_children(before) and model._baseline_pool is None
    assert sorted((tmp_path / "checkpoints").iterdir()) == saved
    monkeypatch.undo()
    model.hparams.baseline_workers = 0
    [scores] = run.test(model, loader(), ckpt_path="best", verbose=False)
    assert scores["test/baseline/biharmonic/psnr"] > scores["test/baseline/masked_input/psnr"]


def test_the_workers_are_stopped_when_the_test_loop_fails(tmp_path):
    model = task(FailsOnSecondTestBatch(), baseline_workers=2)
    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="failed on test batch 1"):
        make_trainer(tmp_path).test(model, loader(), verbose=False)
    assert model._baseline_pool is None and not new_children(before)


# --- the fill cache: every row tested on the same images solves each fill once -----------------------


def solver_calls(monkeypatch) -> list[int]:
    """Count the scikit-image solves of the in-process path."""
    calls: list[int] = []
    solve = baselines.inpaint_biharmonic

    def counted(*args, **kwargs):
        calls.append(1)
        return solve(*args, **kwargs)

    monkeypatch.setattr(baselines, "inpaint_biharmonic", counted)
    return calls


def test_cached_fills_are_the_solved_ones_bit_for_bit_and_are_not_solved_again(tmp_path, monkeypatch):
    batches = smooth_batches(3)
    calls = solver_calls(monkeypatch)
    solved = [biharmonic(image, mask) for image, mask in batches]
    # 9 images, one hides nothing and one everything: 7 solves, with or without a cache.
    assert len(calls) == 7
    first, again = FillCache(tmp_path), FillCache(tmp_path)
    assert all(torch.equal(biharmonic(image, mask, cache=first), fill) for (image, mask), fill in zip(batches, solved))
    assert len(calls) == 14 and first.counts() == {"read": 0, "computed": 7}
    assert len(list(tmp_path.glob("*/*.npy"))) == 7
    assert all(torch.equal(biharmonic(image, mask, cache=again), fill) for (image, mask), fill in zip(batches, solved))
    assert len(calls) == 14 and again.counts() == {"read": 7, "computed": 0}
    # Another mask on the same images is another fill: solved, never served the stored one (batch 0's
    # third image hides nothing, rolled or not: two solves).
    image, mask = batches[0]
    other = mask.roll(1, dims=-1)
    assert torch.equal(biharmonic(image, other, cache=again), biharmonic(image, other))
    assert again.counts() == {"read": 7, "computed": 2}


def test_the_pool_reads_stored_fills_and_stores_the_ones_its_workers_solve(tmp_path):
    batches = smooth_batches(3)
    solved = [biharmonic(image, mask) for image, mask in batches]
    biharmonic(*batches[1], cache=FillCache(tmp_path))  # stores batch 1's two solvable fills
    cache = FillCache(tmp_path)
    with BiharmonicPool(workers=1, cache=cache) as pool:
        for number, (image, mask) in enumerate(batches):
            pool.submit(image, mask, number)
        handed_back = list(pool.finished(wait=True))
    assert [number for _, number in handed_back] == [0, 1, 2]
    assert all(torch.equal(filled, fill) for (filled, _), fill in zip(handed_back, solved))
    assert cache.counts() == {"read": 2, "computed": 5}
    # A worker that would fail shows the pool no longer needs one: every fill is read back.
    with BiharmonicPool(workers=1, fill=pool_fills.failing_fill, cache=FillCache(tmp_path)) as pool:
        for image, mask in batches:
            pool.submit(image, mask)
        assert all(torch.equal(filled, fill) for (filled,), fill in zip(pool.finished(wait=True), solved))


def test_a_corrupt_entry_is_solved_again_and_rewritten(tmp_path):
    image, mask = smooth_batches(1)[0]
    solved = biharmonic(image, mask, cache=FillCache(tmp_path))
    entries = sorted(tmp_path.glob("*/*.npy"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # cut short, as by a full disk
    entries[1].write_bytes(b"not a numpy file")
    cache = FillCache(tmp_path)
    with pytest.warns(UserWarning, match="unreadable|not one float32 value per hidden pixel"):
        assert torch.equal(biharmonic(image, mask, cache=cache), solved)
    assert cache.counts() == {"read": 0, "computed": 2}
    again = FillCache(tmp_path)
    assert torch.equal(biharmonic(image, mask, cache=again), solved) and again.counts() == {"read": 2, "computed": 0}


def test_a_folder_that_cannot_be_written_is_reported_once_and_changes_no_number(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    cache = FillCache(blocker / "cache")
    batches = smooth_batches(2)
    with pytest.warns(UserWarning, match="cannot write below .*task.baseline_cache=null") as caught:
        filled = [biharmonic(image, mask, cache=cache) for image, mask in batches]
    assert len([w for w in caught if "cannot write" in str(w.message)]) == 1
    assert all(torch.equal(f, biharmonic(image, mask)) for f, (image, mask) in zip(filled, batches))


def test_a_second_run_on_the_same_images_reads_every_fill_and_reports_the_same_scores(tmp_path):
    folder = tmp_path / "cache"
    first, second = task(baseline_cache=str(folder)), task(baseline_cache=str(folder))
    [solved] = make_trainer(tmp_path).test(first, loader(), verbose=False)
    [read] = make_trainer(tmp_path).test(second, loader(), verbose=False)
    [uncached] = make_trainer(tmp_path).test(task(), loader(), verbose=False)
    assert solved == read == uncached
    # loader(): 9 images, every one hiding some pixels and one hiding all of them: 8 solves.
    assert first.fill_cache.counts() == {"read": 0, "computed": 8}
    assert second.fill_cache.counts() == {"read": 8, "computed": 0}
    record = second.evaluation_record({k.removeprefix("test/"): v for k, v in read.items()}, "val")
    assert record["baselines"]["biharmonic"]["fill_cache"] == {"folder": str(folder), "read": 8, "computed": 0}
    assert "fill_cache" not in record["baselines"]["masked_input"]


@pytest.mark.parametrize("folder", [3, ["a"]])
def test_a_cache_that_is_not_a_folder_is_refused_with_the_fix(folder):
    with pytest.raises(ValueError, match=r"baseline_cache=.* is not a folder or null.*outputs/cache/biharmonic"):
        task(baseline_cache=folder)


def test_fills_made_ahead_by_the_script_are_the_ones_the_run_reads(tmp_path, capsys):
    """`scripts/fill_baselines.py` with a run's overrides stores exactly the fills that run's test loop scores."""
    import importlib.util
    import json
    from pathlib import Path

    from afno_repro.config import compose
    from afno_repro.train import main

    path = Path(__file__).resolve().parents[2] / "scripts" / "fill_baselines.py"
    spec = importlib.util.spec_from_file_location("fill_baselines", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    overrides = ["debug=smoke", f"runs_root={tmp_path}"]
    assert script.main(["--workers", "1", *overrides]) == 0
    solved = int(re.search(r"done: (\d+) fills solved and 0 already stored", capsys.readouterr().out).group(1))
    assert solved > 0 and len(list((tmp_path / "cache" / "biharmonic").glob("*/*.npy"))) == solved
    main(compose([*overrides, "count_flops=false", "logger=csv"], output_dir=str(tmp_path / "run")))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["baselines"]["biharmonic"]["fill_cache"] == {"folder": str(tmp_path / "cache" / "biharmonic"),
                                                               "read": solved, "computed": 0}
    assert f"biharmonic: {solved} fills read back from {tmp_path / 'cache' / 'biharmonic'}, 0 solved" in capsys.readouterr().out
    # Run again, it finds every fill stored and solves none.
    assert script.main(["--workers", "1", *overrides]) == 0
    assert f"done: 0 fills solved and {solved} already stored" in capsys.readouterr().out
