"""Which Table 2 reading can give the paper's numbers: the baseline floors are scored exactly as
training scores its baselines, the attainability rule decides both ways on hand-made numbers, and
the script, run as the user types it, flags the paper's plain pixel-grid reading unattainable
under composite scoring and the token-grid reading attainable (what the measurements say)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from afno_repro.analysis.readings import attainable, mask_readings, measure_readings, paper_table2_range
from afno_repro.data import InpaintingDataModule
from afno_repro.paper import paper_results
from afno_repro.tasks import evaluate_baselines

REPO = Path(__file__).resolve().parents[2]
PAPER = {"psnr": (26.18, 27.06), "ssim": (0.920, 0.931)}
PIXEL, TOKEN = {"grid": "pixel", "border": "clip", "brush_size": 1}, {"grid": "token", "border": "clip", "brush_size": 1}


def test_paper_range_is_read_from_the_paper_results():
    rows = paper_results()["table2_inpainting"].values()
    assert paper_table2_range() == {
        "psnr": (min(r["psnr"] for r in rows), max(r["psnr"] for r in rows)),
        "ssim": (min(r["ssim"] for r in rows), max(r["ssim"] for r in rows)),
    }
    assert paper_table2_range() == PAPER


def test_readings_cover_every_grid_border_and_brush_with_the_paper_reading_first():
    readings = mask_readings()
    assert len(readings) == 2 * 3 * 2 and readings[0] == PIXEL
    assert {(r["grid"], r["border"], r["brush_size"]) for r in readings} == {
        (g, b, s) for g in ("pixel", "token") for b in ("clip", "reflect", "wrap") for s in (1, 2)
    }


def test_composite_is_attainable_only_when_the_zero_fill_floor_is_below_both_lowest_paper_scores():
    assert attainable("composite", {"psnr": 12.1, "ssim": 0.672}, PAPER)[0]
    verdict, reason = attainable("composite", {"psnr": 24.4, "ssim": 0.966}, PAPER)
    assert not verdict and "SSIM" in reason and "PSNR" not in reason
    verdict, reason = attainable("composite", {"psnr": 26.5, "ssim": 0.5}, PAPER)
    assert not verdict and "PSNR" in reason and "SSIM" not in reason
    assert not attainable("composite", {"psnr": 26.18, "ssim": 0.5}, PAPER)[0]


def test_raw_rules_nothing_out_and_an_unknown_region_is_refused():
    verdict, reason = attainable("raw", {"psnr": 40.0, "ssim": 0.99}, PAPER)
    assert verdict and "no floor" in reason
    with pytest.raises(ValueError, match="metric_region"):
        attainable("full", {"psnr": 1.0, "ssim": 0.1}, PAPER)


def test_measured_floors_match_the_training_baselines_on_tiny_images():
    rows = measure_readings(num_images=4, image_size=32, readings=[PIXEL, TOKEN])
    assert [(r["grid"], r["region"]) for r in rows] == [("pixel", "composite"), ("pixel", "raw"), ("token", "composite"), ("token", "raw")]
    for row in rows[::2]:
        datamodule = InpaintingDataModule(image_size=32, mask={**{k: row[k] for k in ("grid", "border", "brush_size")}, "steps_scaling": "area"},
                                          val_samples=4, val_batch_size=2)
        expected = evaluate_baselines(datamodule.test_dataloader())  # the validation crops
        assert row["num_images"] == 4 and row["paper"] == PAPER
        assert row["masked_fraction"] == pytest.approx(expected["masked_input"]["masked_fraction"])
        for name in ("masked_input", "biharmonic"):
            scores = row["baselines"][name]
            assert scores["same_under_raw"]
            for metric in ("psnr", "ssim"):
                assert scores[metric] == pytest.approx(expected[name][metric], rel=1e-5)
                spread = scores["spread"][metric]
                assert spread["min"] <= scores[metric] <= spread["max"] and spread["sem"] <= spread["std"]
        assert row["baselines"]["biharmonic"]["psnr"] > row["baselines"]["masked_input"]["psnr"]
    assert rows[2]["masked_fraction"] > 3 * rows[0]["masked_fraction"]
    assert "biharmonic" not in measure_readings(num_images=2, image_size=32, readings=[PIXEL], biharmonic=False)[0]["baselines"]


@pytest.mark.slow
def test_script_as_readme_prints_it_flags_the_pixel_grid_unattainable_and_the_token_grid_attainable(tmp_path):
    """`python scripts/readings_check.py`, exactly as README prints it (from a temporary folder)."""
    from readme import argv

    result = subprocess.run(argv("python scripts/readings_check.py"), cwd=tmp_path, capture_output=True, text=True,
                            check=True)
    rows = {" ".join(line.split()[:2]): line for line in result.stdout.splitlines() if line.startswith(("pixel/", "token/"))}
    assert len(rows) == 12
    for reading, line in rows.items():
        expected = "unattainable" if reading.startswith("pixel/") else "attainable"
        assert line.rstrip().endswith("not ruled out") and line.split()[-4] == expected, line


@pytest.mark.slow
def test_script_json_output(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "readings_check.py"), "--json", "--images", "2",
                             "--size", "64", "--no-biharmonic"], cwd=tmp_path, capture_output=True, text=True, check=True)
    rows = {(r["grid"], r["border"], r["brush_size"], r["region"]): r for r in json.loads(result.stdout)}
    assert len(rows) == 12 * 2
    assert all(r["attainable"] for key, r in rows.items() if key[3] == "raw")
    assert rows["pixel", "clip", 1, "composite"]["masked_fraction"] < 0.05 < 0.2 < rows["token", "clip", 1, "composite"]["masked_fraction"]
