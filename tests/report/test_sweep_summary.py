"""The sweep summary: paper numbers by row, the reading named, rows the paper cannot be compared with flagged."""

from __future__ import annotations

import json

from afno_repro.report.sweep import collect, comparability, describe_reading, format_table, paper_numbers


def _run(floor_psnr: float, floor_ssim: float, region: str = "composite", status: str = "completed") -> dict:
    return {
        "paper_row": "table2/afno", "mixer": "afno", "mixer_options": {}, "status": status,
        "paper": paper_numbers("table2/afno"),
        "reading": {"mask": {"grid": "pixel", "steps": 3136, "border": "clip", "brush_size": 1},
                    "metric_region": region, "selection": "heldout"},
        "baselines": {"masked_input": {"psnr": floor_psnr, "ssim": floor_ssim, "num_images": 8}},
        "result": {"psnr": 30.0, "ssim": 0.97, "num_images": 8, "protocol": "validation split, held-out selection"},
        "test": {"masked_fraction": 0.019, "num_images": 8},
    }


def test_paper_numbers_follow_the_row():
    assert paper_numbers("table2/afno") == {"psnr": 27.05, "ssim": 0.931}
    assert paper_numbers("table6/afno_hard35") == {"psnr": 23.58}
    assert paper_numbers(None) == {} and paper_numbers("table4/afno") == {}


def test_paper_numbers_are_shown_with_the_digits_the_paper_prints():
    """Table 2's AFNO SSIM is printed 0.931: shown as 0.9310 in a 4-digit column it claimed a digit the paper lacks."""
    (line,) = [line for line in format_table([_run(12.4, 0.673)]).splitlines() if line.startswith("| table2/afno")]
    cells = [cell.strip() for cell in line.split("|")]
    assert "27.05" in cells and "0.931" in cells and "0.9310" not in cells and "0.9700" in cells


def test_a_zero_fill_floor_above_the_paper_flags_the_row():
    # The pixel-grid reading at 224: zero-fill SSIM 0.966 is above the paper's 0.931.
    assert "SSIM 0.966 >= paper 0.931" in comparability(_run(24.5, 0.966))
    assert comparability(_run(12.4, 0.673)) is None  # the token grid's floor
    # Under metric_region=raw zero-fill is no floor: nothing is ruled out.
    assert comparability(_run(24.5, 0.966, region="raw")) is None


def test_the_table_names_the_reading_the_images_and_failures(tmp_path):
    for name, run in (("a", _run(24.5, 0.966)), ("b", {**_run(12.4, 0.673), "status": "failed", "error": "the loss is nan"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(run))
    rows = collect(tmp_path)
    assert rows[0]["comparable"].startswith("not comparable") and rows[1]["comparable"] == "yes"
    table = format_table(rows)
    assert describe_reading(rows[0]["reading"]) == "pixel grid, 3136 steps, clip, brush 1; composite; heldout"
    assert "pixel grid, 3136 steps" in table and "| 8 |" in table and "failed: the loss is nan" in table
    assert "held-out selection" in table


def test_a_point_of_a_sweep_over_its_row_gets_no_paper_number(tmp_path):
    """Figure 4's lambda=10 run is built on Table 6's AFNO row; printing that row's 25.69 dB beside it (and beside
    every k) read as the paper's value for the point. The row itself, run by table6_pretrain, keeps it."""
    from afno_repro.config import compose

    assert compose(["experiment=fig4_sparsity", "paper_model=table6/afno"]).paper.printed is False
    assert compose(["experiment=fig4_blocks", "paper_model=table6/afno"]).paper.printed is False
    assert compose(["experiment=table6_pretrain", "paper_model=table6/afno"]).paper.printed is True
    for name, printed in (("0_lambda-10", False), ("1_table6_row", True)):
        (tmp_path / name).mkdir()
        run = {**_run(12.4, 0.673), "paper_row": "table6/afno", "paper_printed": printed}
        (tmp_path / name / "metrics.json").write_text(json.dumps(run))
    point, row = collect(tmp_path)
    assert point["paper"] == {} and point["comparable"] is None
    assert row["paper"] == {"psnr": 25.69}
    # The summary says so in the point's row rather than leaving its column empty (a smoke point read as unflagged).
    table = format_table([point, row])
    assert table.count("the paper prints no value; trained on") == 1


def test_runs_on_other_data_or_sizes_than_the_papers_are_not_comparable():
    fewshot = {"task": "segmentation", "paper_row": "table3/afno", "paper_column": "ade_cars", "image_size": 224,
               "paper": paper_numbers("table3/afno", "segmentation", "ade_cars")}
    assert comparability({**fewshot, "data": "datasetgan/car"}) is None
    assert comparability({**fewshot, "data": "embedded_shapes"}) == (
        "not comparable: trained on embedded_shapes, the paper on datasetgan/car")
    assert "32x32 images" in comparability({**_run(12.4, 0.673), "data": "imagenet", "image_size": 32})
    assert comparability({**_run(12.4, 0.673), "data": "imagenet", "image_size": 224}) is None


def test_baselines_are_rows_and_an_inactive_mixer_is_warned(tmp_path):
    runs = {"a": {**_run(10.9, 0.40), "baselines": {"masked_input": {"psnr": 10.9, "ssim": 0.40, "num_images": 8},
                                                     "biharmonic": {"psnr": 22.45, "ssim": 0.794, "num_images": 8}},
                  "mixer_activity": {"spectrum_zeroed": [0.99, 0.98], "mean_zeroed": 0.985, "inactive": True,
                                     "inactive_above": 0.95}, "gflops": 0.0046},
            "b": {**_run(10.9, 0.40), "paper_row": "table2/gfn", "mixer": "gfn", "mixer_activity": None,
                  "baselines": {"masked_input": {"psnr": 10.9, "ssim": 0.40, "num_images": 8},
                                "biharmonic": {"psnr": 22.45, "ssim": 0.794, "num_images": 8}}}}
    for name, run in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(run))
    table = format_table(collect(tmp_path))
    rows = [line for line in table.splitlines() if line.startswith("| baseline: ")]
    # One row per baseline (both runs scored the same numbers on the same images), its numbers in the metric columns.
    assert [row.split(" | ")[0] for row in rows] == ["| baseline: zero-fill", "| baseline: biharmonic inpainting"]
    assert "| 22.45 |" in rows[1] and "| 0.7940 |" in rows[1]
    assert "(baseline)" not in table.splitlines()[0]
    warnings = [line for line in table.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "table2/afno" in warnings[0] and "98.5% of the spectrum" in warnings[0]
    assert "| 0.0046 |" in table  # GFLOPs in significant digits, not 0.00


def test_figure1s_summary_says_its_b3_points_are_table4s_runs(tmp_path, capsys):
    """`python train.py -m experiment=fig1_trunks` trains no B3 point: its summary says they are Table 4's runs, so a
    reader does not take them for missing; another sweep's summary says nothing of the kind."""
    from omegaconf import OmegaConf

    from afno_repro.report.sweep import SweepSummary

    for experiment in ("fig1_trunks", "table2_inpainting"):
        sweep = tmp_path / experiment
        (sweep / "0_run").mkdir(parents=True)
        (sweep / "0_run" / "metrics.json").write_text(json.dumps(_run(12.4, 0.673)))
        config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "runtime": {"choices": {"experiment": experiment}}}})
        SweepSummary().on_multirun_end(config)
        summary = (sweep / "summary.md").read_text()
        printed = capsys.readouterr().out
        # The file says what it is and what made its numbers (the run record here names no commit).
        assert summary.startswith(f"# Sweep {experiment}: 1 run in {sweep}\n\nMade at commit unknown (1 run)")
        if experiment == "fig1_trunks":
            assert summary.rstrip().endswith(
                "Not in this sweep: the figure's points of table4/efficient_attention, table4/gfn, table4/afno are "
                "table4_cityscapes's runs (from Table 4: the same models and recipe); the report (make reproduce-all) "
                "draws them beside these.")
            assert "Not in this sweep" in printed
        else:
            assert "Not in this sweep" not in summary + printed


def test_a_sweep_whose_jobs_all_stopped_before_a_record_exits_non_zero(tmp_path, capsys):
    """Every job crashed before writing metrics.json: the sweep logged a warning and exited 0."""
    import pytest
    from omegaconf import OmegaConf

    from afno_repro.report.sweep import SweepSummary

    (tmp_path / "0_seed-0" / ".hydra").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert exit_info.value.code == 1
    assert f"error: no run of this sweep wrote a metrics.json under {tmp_path}" in capsys.readouterr().err


def test_the_reading_names_the_steps_the_walk_took_at_the_runs_size():
    """A 32x32 smoke run's walk takes 64 steps (3136 scaled by area): shown as 3136 it read as the paper's walk."""
    from afno_repro.data import InpaintingDataModule
    from afno_repro.report.sweep import describe_reading

    small = InpaintingDataModule(image_size=32, batch_size=4, mask={"grid": "token", "steps_scaling": "area"}).reading()
    assert small["mask"]["steps_used"] == 64
    assert describe_reading(small).startswith("token grid, 64 steps (3136 at 224, by area), clip, brush 1")
    full = InpaintingDataModule(image_size=224, batch_size=4, mask={"grid": "token", "steps_scaling": "area"}).reading()
    assert describe_reading(full).startswith("token grid, 3136 steps, clip")


def test_an_accuracy_in_the_summary_and_the_run_s_table_has_the_decimals_its_images_give():
    # Top-1 on 50 images moves in steps of 2 points: "80.00" claimed two decimals it has not got.
    from afno_repro.runs.record import summary_text
    from afno_repro.tasks.classification import ClassificationTask

    reported = [item.as_dict() for item in ClassificationTask.reported]
    run = {"paper_row": "table5/afno", "mixer": "afno", "status": "completed", "paper": paper_numbers("table5/afno"),
           "reported": reported, "task": "classification", "data": "lfw",
           "result": {"top1": 80.0, "top5": 96.0, "num_images": 50}, "test": {"num_images": 50},
           "baselines": {"majority": {"top1": 50.0, "top5": 100.0, "num_images": 50}}}
    (line,) = [line for line in format_table([run]).splitlines() if line.startswith("| table5/afno")]
    cells = [cell.strip() for cell in line.split("|")]
    assert "80" in cells and "96" in cells and "80.00" not in cells
    text = summary_text({**run, "run_dir": "/runs/x"})
    assert "    80" in text and "80.00" not in text and "50.00" not in text, text  # the run's row and the majority class
