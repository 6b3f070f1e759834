"""Solve the biharmonic baseline's fills of an inpainting experiment's test images ahead of its runs.

Every inpainting run scores the biharmonic baseline on its test images (~0.1 s of one CPU core per
224x224 image, ~1.5 core-hours for ImageNet's 50,000 validation images). The runs keep each fill in
``task.baseline_cache`` (``<runs_root>/cache/biharmonic``), keyed by the image's and the mask's
content, and read it back when another run tests on the same image and mask. This script fills that
folder beforehand, on every core of the machine it runs on, from exactly the images and masks the
test loop of ``python train.py <the same overrides>`` scores (its data module's test loader): the
runs then read every fill and solve none, so the baseline costs each row's test loop ~3 ms of one
core per image instead of ~100 ms. Run it on a CPU machine, or on the GPU machine while the GPU trains;
a run of it interrupted keeps the fills it stored, and running it again solves only the rest.

Usage::

    python scripts/fill_baselines.py experiment=table2_inpainting data.root=/data/imagenet
    python scripts/fill_baselines.py experiment=table2_inpainting data.root=/data/imagenet --workers 32

The overrides are those of the runs whose fills it makes (the experiment, the data folder, and any
option that changes the images or masks: ``data.image_size``, ``data.mask.*``, ``runs_root``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from afno_repro.cli import UsageError, positive_int, usable_cores, user_errors


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="python scripts/fill_baselines.py [--workers N] <train.py overrides>")
    parser.add_argument("--workers", type=positive_int, default=usable_cores(),
                        help="processes solving fills (default: every core this process may use)")
    parser.add_argument("overrides", nargs="*", help="the train.py overrides of the runs, e.g. experiment=table2_inpainting")
    args = parser.parse_args(argv)

    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from afno_repro.config import compose, overrides_message
    from afno_repro.runs import unwritable_message
    from afno_repro.tasks.baselines import BiharmonicPool
    from afno_repro.tasks.fill_cache import FillCache

    # The overrides are train.py's, checked as train.py checks them (a misspelt experiment was Hydra's raw text).
    message = overrides_message(args.overrides, command="python scripts/fill_baselines.py")
    if message:
        raise UsageError(message)
    with tempfile.TemporaryDirectory() as scratch:
        cfg = compose(args.overrides, output_dir=scratch)
        target = str((cfg.task or {}).get("_target_", ""))
        if not target.endswith("InpaintingTask"):
            raise UsageError(f"these overrides make a {target.rsplit('.', 1)[-1] or 'task-less'} run, which scores no "
                             "biharmonic baseline: name an inpainting experiment, e.g. experiment=table2_inpainting.")
        if OmegaConf.is_missing(cfg.data, "root"):
            raise UsageError("data.root is not set: the fills are of the images the runs will test on, so give the "
                             "runs' own data.root, e.g. python scripts/fill_baselines.py experiment=table2_inpainting "
                             "data.root=/data/imagenet")
        if not cfg.run_baselines or cfg.task.get("baseline_cache") is None:
            raise UsageError("these runs keep no biharmonic fills (run_baselines=false or task.baseline_cache=null): "
                             "drop that override, or there is nothing to fill ahead of them.")
        from afno_repro.train import check_values

        check_values(cfg, on_this_machine=False)  # the values train.py would refuse for these runs
        datamodule = instantiate(cfg.data, _convert_="all")
        # A fill that cannot be stored is only a warning inside a run; here storing them is the whole job. (Checked
        # once the data options are, since checking makes the folder.)
        message = unwritable_message(cfg.task.baseline_cache, "biharmonic fill cache folder",
                                     "no fill could be stored for the runs to read. Make it writable, or give the "
                                     "runs' writable runs_root=... (the cache is <runs_root>/cache/biharmonic).")
        if message:
            raise UsageError(message)
        loader = datamodule.test_dataloader()
        cache = FillCache(cfg.task.baseline_cache)
        total, started = len(loader), time.perf_counter()
        print(f"filling the biharmonic baseline of {len(loader.dataset)} test images ({total} batches) into "
              f"{cache.directory} with {args.workers} worker process{'es' * (args.workers != 1)}", flush=True)
        report_every = max(1, total // 10)
        with BiharmonicPool(args.workers, cache=cache) as pool, torch.no_grad():
            for number, batch in enumerate(loader, 1):
                pool.submit(batch["image"].float(), batch["mask"].float())
                for _ in pool.finished():
                    pass
                if number % report_every == 0 and number < total:
                    counts = cache.counts()
                    print(f"  batch {number}/{total} submitted: {counts['read']} fills found stored, {counts['computed']} "
                          f"solved so far, {time.perf_counter() - started:.0f} s", flush=True)
            for _ in pool.finished(wait=True):
                pass
    counts = cache.counts()
    trivial = len(loader.dataset) - counts["computed"] - counts["read"]
    print(f"done: {counts['computed']} fills solved and {counts['read']} already stored in {cache.directory} "
          f"({time.perf_counter() - started:.0f} s)" + (f"; {trivial} images need none (nothing or every pixel hidden)"
                                                       if trivial else "")
          + "; runs with the same overrides read them back (make reproduce-all's runs read <its --root>/cache/biharmonic: "
            "for those, give runs_root=<that root>, outputs/reproduce/paper by default).", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
