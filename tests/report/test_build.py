"""The reproduction report from run records, read as a researcher would: baselines in every table,
noise named as noise, an inactive mixer flagged, a metric that cannot discriminate left out, columns
trained on identical data flagged, every Figure 1 point labelled (its B3 points Table 4's runs, a missing
one named), smoke labelled as smoke; and the same report with no runs at all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matplotlib.axes import Axes

from afno_repro.report.build import ORDER, build_report, run_command
from afno_repro.report.flags import SMOKE_LABEL
from afno_repro.report.sections import Section

PNG = b"\x89PNG\r\n\x1a\n"
DATA = "skimage"  # what every run of the fixture trained on unless it says otherwise
# Baselines as every inpainting / segmentation / classification record of the fixture holds them.
INPAINTING_BASELINES = {"masked_input": {"psnr": 10.92, "ssim": 0.3969, "num_images": 4},
                        "biharmonic": {"psnr": 22.45, "ssim": 0.7944, "num_images": 4}}
PIXEL_PRIOR = {"pixel_prior": {"miou": 15.92, "num_images": 16}}
MAJORITY = {"majority": {"top1": 50.0, "top5": 100.0, "num_images": 50}}
# Figure 4's sweeps, (option value, [one value per seed]):
# fig4_sparsity: the top two points (0.01 and 1) differ by 0.025, less than the 0.2 between the seeds of 0.01.
SPARSITY_PSNR = ((0, [12.0]), (0.01, [12.5, 12.3]), (1, [12.45, 12.40]))
# fig4_blocks: 8 blocks leads 4 by 0.975, more than the 0.1 between two seeds of a point.
BLOCKS_PSNR = ((4, [13.0, 13.1]), (8, [14.0, 14.05]), (16, [13.2]))
# fig4_sparsity_finetune: no point rerun, so its noise is not measured.
SPARSITY_MIOU = ((0, [20.0]), (1, [25.0]))
OFF = "AFNO mixer effectively off: softshrink zeroes 98.0% of the spectrum"


def _activity(zeroed: float) -> dict:
    """``mixer_activity`` as a run records it (AFNO with softshrink only)."""
    return {"spectrum_zeroed": [zeroed, zeroed], "zero_before": [0.4, 0.4], "mean_zeroed": zeroed,
            "inactive": zeroed > 0.95, "inactive_above": 0.95, "split": "selection", "num_images": 32}


def _record(folder: Path, experiment: str, row: str, task: str, result: dict, *, smoke: bool = True, **extra) -> None:
    run_dir = folder / experiment / f"{row.replace('/', '-')}-{len(list((folder / experiment).glob('*')))}"
    run_dir.mkdir(parents=True)
    baselines = {"inpainting": INPAINTING_BASELINES, "segmentation": PIXEL_PRIOR, "cityscapes": PIXEL_PRIOR,
                 "classification": MAJORITY}[task]
    record = {"experiment": experiment, "paper_row": row, "task": task, "status": "completed", "result": result,
              "run_dir": str(run_dir), "data": DATA, "image_size": 32, "params_m": 0.11, "gflops": 0.00721, "seed": 0,
              "mixer": row.split("/")[1], "baselines": baselines,
              "overrides": [f"paper_model={row}", f"experiment={experiment}", *(["debug=smoke"] if smoke else []),
                            "resume=auto", "runs_root=/x"],
              "reading": {"mask": {"grid": "token", "steps": 3136, "border": "clip", "brush_size": 1}}, **extra}
    (run_dir / "metrics.json").write_text(json.dumps(record))


def _sweep(root: Path, experiment: str, option: str, points, metric: str, task: str, **extra) -> None:
    for value, scores in points:
        for seed, score in enumerate(scores):
            _record(root, experiment, "table6/afno", task, {metric: score, "num_images": 4}, seed=seed,
                    mixer_options={option: value}, trunk_hash=f"k{value}" if option == "num_blocks" else "same",
                    mixer_activity=_activity(0.98 if option == "sparsity_threshold" and value >= 0.01 else 0.5), **extra)


SHAPES = {"source": "embedded", "num_classes": 5, "image_size": 32, "selection": "max_over_run"}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "runs"
    _record(root, "table2_inpainting", "table2/afno", "inpainting", {"psnr": 13.05, "ssim": 0.43, "num_images": 4},
            mixer_activity=_activity(0.98))
    _record(root, "table2_inpainting", "table2/gfn", "inpainting", {"psnr": 14.76, "ssim": 0.45, "num_images": 4})
    # Table 3: three "datasets" that, at smoke size, all train on the same embedded shapes.
    for column, miou in (("celeba_faces", 30.0), ("ade_cars", 31.0), ("lsun_cats", 29.0)):
        _record(root, "table3_fewshot", "table3/gfn", "segmentation", {"miou": miou, "num_images": 16},
                paper_column=column, data="embedded_shapes", reading=SHAPES)
    _record(root, "table5_classification", "table5/afno", "classification", {"top1": 60.0, "top5": 100.0, "num_images": 50},
            data="lfw", reading={"source": "lfw", "num_classes": 2, "top5_k": 2}, mixer_activity=_activity(0.3))
    _sweep(root, "fig4_sparsity", "sparsity_threshold", SPARSITY_PSNR, "psnr", "inpainting")
    _sweep(root, "fig4_blocks", "num_blocks", BLOCKS_PSNR, "psnr", "inpainting")
    _sweep(root, "fig4_sparsity_finetune", "sparsity_threshold", SPARSITY_MIOU, "miou", "segmentation",
           paper_column="celeba_faces")
    pretrained = {"checkpoint": "/x/best.ckpt", "how": "auto", "experiment": "fig1_pretrain"}
    for name, params, miou, init in (("b0_afno", 0.1, 10.0, pretrained), ("b1_afno", 0.2, 12.0, pretrained),
                                     ("swin_t", 0.3, 11.0, {"checkpoint": None, "how": "from scratch"})):
        _record(root, "fig1_trunks", f"fig1/{name}", "cityscapes", {"miou": miou, "num_images": 8}, init=init,
                backbone="swin_t" if name == "swin_t" else f"segformer_{name[:2]}", params_m=params, data="embedded_streets",
                mixer=None if name == "swin_t" else name[3:])
    failed = root / "table4_cityscapes" / "0"
    failed.mkdir(parents=True)
    (failed / "metrics.json").write_text(json.dumps({"experiment": "table4_cityscapes", "paper_row": "table4/afno",
                                                     "task": "cityscapes", "status": "failed", "run_dir": str(failed),
                                                     "error": "pretrained=auto found no completed pretraining run\nmore"}))
    return root


SCALING = {"cases": [{"mixer": m, "grid": g, "tokens": g * g, "dim": 64, "threads": 1, "seconds": 1e-3 * g ** p,
                      "peak_mib": 10.0 * g, "does_not_fit": None} for m, p in (("attention", 4), ("afno", 2))
                     for g in (4, 8)],
           "exponents": {"attention": {"time": 2.0, "memory": 0.5}, "afno": {"time": 1.0, "memory": 0.5}},
           "device": "cpu: AMD EPYC 7B13, 1 thread of 2 usable cores", "torch": "2.14.1"}


@pytest.fixture
def report(tree, tmp_path):
    extra = [Section("resolution", "Zero-shot resolution transfer", "study"), Section("figure5", "Figure 5", "clusters"),
             Section("preflight", "Preflight: the cost of every paper-scale row", "costs")]
    index = build_report(tree, tmp_path / "report", scaling=SCALING, extra=extra, wandb_mode="disabled")
    sections = json.loads((index.parent / "report.json").read_text())["sections"]
    return {"index": index, "html": index.read_text(), "markdown": (index.parent / "index.md").read_text(),
            "sections": {s["key"]: s for s in sections}, "order": [s["key"] for s in sections]}


def _baselines(rows: list[dict]) -> dict[str, dict]:
    """The baseline rows of a table by label (their first cell, ``baseline: ...``)."""
    return {str(next(iter(r.values()))).removeprefix("baseline: "): r for r in rows
            if str(next(iter(r.values()))).startswith("baseline: ")}


def _note(notes: list[str], anchor: str) -> str:
    found = [note for note in notes if anchor in note]
    assert len(found) == 1, (anchor, notes)
    return found[0]


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:\.\d+)?", text)


def test_every_section_in_the_papers_order_with_the_papers_numbers(report):
    assert report["order"] == [k for k in ORDER if k != "figure6"]  # extras placed by key
    for key in report["order"]:
        assert f'id="{key}"' in report["html"] and f'<a id="{key}"></a>' in report["markdown"], key
    by_key = report["sections"]
    afno, gfn = by_key["table2"]["tables"]["table2"][:2]
    assert (afno["row"], afno["PSNR (dB)"], afno["paper PSNR (dB)"]) == ("afno", "13.05", "27.05")
    assert afno["comparable"] == "not comparable: trained on skimage, the paper on imagenet" and afno["images"] == "4"
    assert afno["command"] == "python train.py experiment=table2_inpainting paper_model=table2/afno debug=smoke"
    assert afno["GFLOPs"] == "0.00721"  # significant digits, not 0.00
    assert "failed: pretrained=auto found no completed pretraining run" in report["markdown"]
    assert "\nmore" not in report["markdown"]
    assert by_key["table6"]["missing"].startswith("no completed run of table6_pretrain yet")
    assert by_key["table1"]["tables"]["table1_exponents"][0]["paper FLOPs"] == "N^2 d + 3 N d^2"
    for figure in ("table1_scaling.png", "figure1_miou_vs_params.png", "figure4_ablations.png"):
        assert (report["index"].parent / "figures" / figure).read_bytes()[:8] == PNG
        assert f'src="figures/{figure}"' in report["html"]


def test_tables_are_captioned_in_a_readers_words_and_table_1_says_where_it_was_timed(report, tree, tmp_path):
    """A table's caption was its internal key (``*table1_exponents*``); Table 1's timings did not say their device."""
    markdown = report["markdown"]
    assert "*table1_exponents*" not in markdown and "*table1_cases*" not in markdown
    assert ("*Each case: one mixer's forward+backward at batch 1, width 64, on cpu: AMD EPYC 7B13, 1 thread of 2 "
            "usable cores, torch 2.14.1*") in markdown
    assert "*`fig4_sparsity`: PSNR (dB) against the sparsity threshold lambda*" in markdown
    assert '<p class="caption"><code>fig4_blocks</code>: PSNR (dB) against the number of blocks k</p>' in report["html"]
    assert report["sections"]["table1"]["captions"]["table1_exponents"].startswith("Growth exponent p")
    # A study written before it recorded its device says so, not nothing.
    older = {key: value for key, value in SCALING.items() if key not in ("device", "torch")}
    index = build_report(tree, tmp_path / "older", scaling=older, wandb_mode="disabled")
    assert "width 64, on a device the study did not record (rerun it to have it named)*" in \
        (index.parent / "index.md").read_text()


def test_every_tasks_table_ends_with_its_baselines_on_the_same_images(report):
    by_key = report["sections"]
    tables = {"table2": "table2", "table3": "table3", "table5": "table5", "figure1": "figure1",
              "figure4": "fig4_sparsity", "figure4 blocks": "fig4_blocks", "figure4 finetune": "fig4_sparsity_finetune"}
    for section, table in tables.items():
        rows = by_key[section.split()[0]]["tables"][table]
        assert _baselines(rows), (section, rows)
        assert all(str(next(iter(r.values()))).startswith("baseline: ") for r in rows[-len(_baselines(rows)):])  # last
    table2 = _baselines(by_key["table2"]["tables"]["table2"])
    assert (table2["zero-fill"]["PSNR (dB)"], table2["zero-fill"]["SSIM"]) == ("10.92", "0.3969")
    assert (table2["biharmonic inpainting"]["PSNR (dB)"], table2["biharmonic inpainting"]["images"]) == ("22.45", "4")
    # one per dataset column: each column's runs score it on their own images
    assert {k: r["mIoU (%)"] for k, r in _baselines(by_key["table3"]["tables"]["table3"]).items()} \
        == {f"pixel prior ({column})": "15.92" for column in ("celeba_faces", "ade_cars", "lsun_cats")}
    # An accuracy on 50 images moves in steps of 2 points: shown without decimals it has not got.
    assert _baselines(by_key["table5"]["tables"]["table5"])["majority class"]["top-1 (%)"] == "50"
    assert _baselines(by_key["figure1"]["tables"]["figure1"])["pixel prior"]["mIoU (%)"] == "15.92"
    assert any("the same images as the models' numbers" in note for note in by_key["table2"]["notes"])
    # A baseline row in the HTML is told apart from the models'.
    assert report["html"].count('<tr class="baseline">') >= 8


def test_a_sweep_within_noise_names_no_best(report):
    figure4 = report["sections"]["figure4"]
    note = _note(figure4["notes"], "(fig4_sparsity)")
    assert "within noise" in note and "names no best" in note and not note.startswith("Best"), note
    means = sorted((sum(v) / len(v) for _, v in SPARSITY_PSNR), reverse=True)
    spread = max(max(v) - min(v) for _, v in SPARSITY_PSNR)
    stated = _numbers(note.partition("the paper's")[0])
    assert f"{means[0] - means[1]:.2f}" in stated and f"{spread:.2f}" in stated, note
    assert not {"0.01", "1"} & set(stated[1:]), note  # names no threshold as the best
    rows = figure4["tables"]["fig4_sparsity"]
    assert "best" not in rows[0]
    # Each seed of a rerun point is a row, with the point's mean.
    reruns = [r for r in rows if r.get("sparsity_threshold") == 0.01]
    assert [r["PSNR (dB)"] for r in reruns] == ["12.50", "12.30"] and {r["point mean"] for r in reruns} == {"12.40"}


def test_a_sweep_whose_lead_exceeds_the_spread_names_its_best(report):
    figure4 = report["sections"]["figure4"]
    note = _note(figure4["notes"], "(fig4_blocks)")
    assert note.startswith("Best num_blocks"), note
    stated = _numbers(note.partition("):")[2].partition("the paper's")[0])
    means = {value: sum(scores) / len(scores) for value, scores in BLOCKS_PSNR}
    spread = max(max(v) - min(v) for _, v in BLOCKS_PSNR)
    # the point, its mean, its lead over the runner-up (16 blocks, one run) and the spread it beats
    assert stated[:4] == ["8", f"{means[8]:.2f}", f"{means[8] - means[16]:.2f}", f"{spread:.2f}"], note
    assert "no evidence" in note  # at smoke scale, agreeing with the paper's 8 is not a finding
    best = [r for r in figure4["tables"]["fig4_blocks"] if r.get("best") == "best"]
    assert {r["num_blocks"] for r in best} == {8}


def test_a_sweep_with_no_rerun_says_its_noise_was_not_measured(report):
    note = _note(report["sections"]["figure4"]["notes"], "(fig4_sparsity_finetune)")
    assert "noise not measured" in note and "names no best" in note and not note.startswith("Best"), note


def test_inactive_afno_mixers_are_flagged_on_every_row(report):
    by_key = report["sections"]
    afno, gfn = by_key["table2"]["tables"]["table2"][:2]
    assert afno["flag"] == OFF and gfn["flag"] == ""
    assert any("AFNO mixer effectively off in 1 run (afno)" in w for w in by_key["table2"]["warnings"])
    assert by_key["table5"]["tables"]["table5"][0].get("flag", "") == ""  # an active mixer (30% zeroed)
    rows = by_key["figure4"]["tables"]["fig4_sparsity"]
    assert [r.get("flag") == OFF for r in rows if not str(r["sparsity_threshold"]).startswith("baseline")] \
        == [value >= 0.01 for value, scores in SPARSITY_PSNR for _ in scores]
    assert OFF in report["html"] and OFF in report["markdown"]


def test_top5_is_left_out_for_fewer_than_6_classes(report, tmp_path):
    table5 = report["sections"]["table5"]
    assert all("top-5 (%)" not in row and "paper top-5 (%)" not in row for row in table5["tables"]["table5"])
    assert any(note.startswith("top-5 (%) is not shown") and "2 classes" in note for note in table5["notes"])
    root = tmp_path / "ten"
    _record(root, "table5_classification", "table5/afno", "classification", {"top1": 60.0, "top5": 90.0, "num_images": 50},
            data="lfw", reading={"source": "lfw", "num_classes": 10})
    index = build_report(root, tmp_path / "ten_report", wandb_mode="disabled")
    (table5,) = [s for s in json.loads((index.parent / "report.json").read_text())["sections"] if s["key"] == "table5"]
    assert table5["tables"]["table5"][0]["top-5 (%)"] == "90"  # 50 images: steps of 2 points


def test_columns_trained_on_identical_data_are_flagged(report):
    table3 = report["sections"]["table3"]
    rows = [r for r in table3["tables"]["table3"] if r["row"] == "gfn"]
    assert {r["dataset"]: r["data"] for r in rows} == {"celeba_faces": "identical data to ade_cars, lsun_cats",
                                                       "ade_cars": "identical data to celeba_faces, lsun_cats",
                                                       "lsun_cats": "identical data to celeba_faces, ade_cars"}
    (warning,) = [w for w in table3["warnings"] if "identical data" in w]
    assert "embedded_shapes" in warning and "noise" in warning


def test_figure1_labels_every_point_and_marks_an_init_unlike_the_papers(tree, tmp_path, monkeypatch):
    labelled = []
    annotate = Axes.annotate
    monkeypatch.setattr(Axes, "annotate", lambda self, text, *a, **k: labelled.append(text) or annotate(self, text, *a, **k))
    index = build_report(tree, tmp_path / "report", wandb_mode="disabled")
    assert sorted(labelled) == ["B0", "B1", "Swin-T"]
    (figure1,) = [s for s in json.loads((index.parent / "report.json").read_text())["sections"] if s["key"] == "figure1"]
    rows = {r["point"]: r for r in figure1["tables"]["figure1"]}
    assert "differs from the paper's (ImageNet-pretrained)" in rows["Swin-T"]["init"]
    assert "differs" not in rows["B0"]["init"] and "differs" not in rows["B1"]["init"]
    assert any("Hollow markers: Swin-T" in note for note in figure1["notes"])


def test_figure1_draws_its_b3_points_from_table4s_runs_marked_as_such(tree, tmp_path, monkeypatch):
    """Figure 1's B3 points are Table 4's runs of efficient attention, GFN and AFNO (the same models and recipe,
    Section 5.6), drawn beside fig1_trunks's own points and marked "from Table 4"; Table 4's LS and AFNO-25% rows
    are not Figure 1 points. Table 4's table still lists every one of its runs."""
    table4 = {"efficient_attention": (3.1, 20.0), "gfn": (3.2, 21.0), "afno": (3.3, 22.0), "long_short": (3.4, 23.0),
              "afno_25pct": (3.3, 19.0)}
    for row, (params, miou) in table4.items():
        _record(tree, "table4_cityscapes", f"table4/{row}", "cityscapes", {"miou": miou, "num_images": 8},
                init={"checkpoint": "/x/best.ckpt", "how": "auto", "experiment": "table4_pretrain"},
                backbone="segformer_b3", params_m=params, data="embedded_streets", mixer=row.removesuffix("_25pct"))
    labelled = []
    annotate = Axes.annotate
    monkeypatch.setattr(Axes, "annotate", lambda self, text, *a, **k: labelled.append(text) or annotate(self, text, *a, **k))
    index = build_report(tree, tmp_path / "report", wandb_mode="disabled")
    assert sorted(labelled) == ["B0", "B1", "B3 (from Table 4)", "B3 (from Table 4)", "B3 (from Table 4)", "Swin-T"]
    sections = {s["key"]: s for s in json.loads((index.parent / "report.json").read_text())["sections"]}
    figure1 = sections["figure1"]
    points = [row for row in figure1["tables"]["figure1"] if "run of" in row]
    b3 = {row["mixer"]: row for row in points if row["point"] == "B3"}
    assert sorted(b3) == ["afno", "efficient_attention", "gfn"]
    for mixer, row in b3.items():
        assert row["run of"] == "table4_cityscapes (from Table 4)" and row["mIoU (%)"] == f"{table4[mixer][1]:.2f}"
        assert row["params (M)"] == f"{table4[mixer][0]:.3g}" and row["init"] == "pretrained (table4_pretrain)"
        # The trunk it started from is named: run from elsewhere, pretrained=auto would search another runs root.
        assert row["command"] == (f"python train.py experiment=table4_cityscapes paper_model=table4/{mixer} debug=smoke "
                                  "pretrained=/x/best.ckpt")
    assert {row["point"]: row["run of"] for row in points if row["point"] != "B3"} == {
        "B0": "fig1_trunks", "B1": "fig1_trunks", "Swin-T": "fig1_trunks"}
    assert any(note.startswith('Points marked "from Table 4": table4_cityscapes\'s runs of table4/afno, '
                               "table4/efficient_attention, table4/gfn") for note in figure1["notes"])
    assert not any(w.startswith("Missing points") for w in figure1["warnings"])
    assert "python train.py -m experiment=table4_cityscapes" in figure1["intro"]
    assert len([r for r in sections["table4"]["tables"]["table4"] if not r["row"].startswith("baseline")]) == 6


def test_figure1_names_a_b3_point_table4_has_not_made(tree, tmp_path, monkeypatch):
    """A Table 4 row with no completed run is not silently left out of Figure 1: the section and the figure name
    it, the status of a run that failed, and the command that makes it."""
    _record(tree, "table4_cityscapes", "table4/gfn", "cityscapes", {"miou": 21.0, "num_images": 8},
            init={"checkpoint": "/x/best.ckpt", "how": "auto", "experiment": "table4_pretrain"},
            backbone="segformer_b3", params_m=3.2, data="embedded_streets")
    titles = []
    set_title = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, text, *a, **k: titles.append(text) or set_title(self, text, *a, **k))
    index = build_report(tree, tmp_path / "report", wandb_mode="disabled")
    (figure1,) = [s for s in json.loads((index.parent / "report.json").read_text())["sections"] if s["key"] == "figure1"]
    assert [row["point"] for row in figure1["tables"]["figure1"] if row.get("run of", "").startswith("table4")] == ["B3"]
    (warning,) = [w for w in figure1["warnings"] if w.startswith("Missing points")]
    assert warning == ("Missing points (from Table 4): table4_cityscapes has no completed run of "
                       "table4/efficient_attention, table4/afno (failed: pretrained=auto found no completed pretraining "
                       "run) yet, so the figure lacks them; `python train.py -m experiment=table4_cityscapes` (or `make "
                       "reproduce-all`) makes them.")
    assert [title for title in titles if title.startswith("missing")] == [
        "missing (from Table 4): no completed table4_cityscapes run of table4/efficient_attention, table4/afno"]
    assert warning in index.read_text().replace("<code>", "`").replace("</code>", "`")


def test_smoke_is_said_in_the_title_and_every_section_and_no_delta_is_printed(report):
    html, markdown = report["html"], report["markdown"]
    assert "smoke" in html[html.index("<title>"):html.index("</title>")]
    sections = re.findall(r'<section id="(\w+)">(.*?)</section>', html, flags=re.S)
    assert len(sections) == len(report["order"])
    for key, body in sections:
        assert SMOKE_LABEL in body, key
        assert markdown.split(f'<a id="{key}"></a>')[1].split('<a id="')[0].count(SMOKE_LABEL) == 1, key
    assert all(s["banner"] == SMOKE_LABEL for s in report["sections"].values())
    assert "here, smoke: skimage at 32 px" in report["sections"]["table2"]["title"]
    for section in report["sections"].values():
        for rows in section["tables"].values():
            assert not any(column.startswith("delta") for row in rows for column in row), section["key"]


def test_a_paper_scale_report_has_no_smoke_label_and_compares_with_the_papers_best(tmp_path):
    root = tmp_path / "runs"
    for value, scores in ((4, [13.0, 13.1]), (8, [14.0, 14.05])):
        for seed, score in enumerate(scores):
            _record(root, "fig4_blocks", "table6/afno", "inpainting", {"psnr": score, "num_images": 4}, smoke=False,
                    seed=seed, mixer_options={"num_blocks": value}, trunk_hash=f"k{value}")
    index = build_report(root, tmp_path / "report", wandb_mode="disabled")
    assert SMOKE_LABEL not in index.read_text()
    (figure4,) = [s for s in json.loads((index.parent / "report.json").read_text())["sections"] if s["key"] == "figure4"]
    note = _note(figure4["notes"], "(fig4_blocks)")
    assert note.startswith("Best num_blocks") and "agrees with the paper's 8" in note, note


def test_with_no_runs_every_section_names_the_command(tmp_path):
    index = build_report(tmp_path / "nothing", tmp_path / "report", wandb_mode="disabled")
    sections = json.loads((index.parent / "report.json").read_text())["sections"]
    assert [s["key"] for s in sections] == ["table1", "figure1", "table2", "table3", "table4", "table5", "table6", "figure4"]
    assert all(s["missing"] and "`" in s["missing"] for s in sections)
    assert "python train.py -m experiment=table3_fewshot" in index.read_text()


def test_text_is_escaped_in_html(tmp_path):
    extra = [Section("figure5", "Figure 5", "a <b>bold</b> & `code`", tables={"t": [{"a": "<script>"}]})]
    html = build_report(tmp_path / "nothing", tmp_path / "report", extra=extra, wandb_mode="disabled").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "a &lt;b&gt;bold&lt;/b&gt; &amp; <code>code</code>" in html


def test_tables_are_logged_to_wandb_offline_and_a_wandb_failure_keeps_the_report(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    index = build_report(tree, tmp_path / "report", scaling=SCALING, wandb_mode="offline")
    (offline,) = (index.parent / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))

    import wandb

    def broken(**kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken)
    index = build_report(tree, tmp_path / "report2", wandb_mode="offline")
    assert index.is_file() and (index.parent / "index.md").is_file()


def test_run_command_leaves_out_the_pipelines_own_overrides():
    assert run_command({"overrides": ["experiment=fig1_trunks", "hydra.sweep.dir=/x", "runs_root=/y"]}) == \
        "python train.py experiment=fig1_trunks"


class _FakeRun:
    def __init__(self, fail: bool) -> None:
        self.fail, self.finished = fail, []

    def log(self, values):
        if self.fail:
            raise RuntimeError("W&B dropped the table")

    def finish(self, exit_code=None):
        self.finished.append(exit_code)


def test_the_reports_wandb_run_checks_online_first_and_is_finished_when_logging_fails(tmp_path, monkeypatch, caplog):
    """`--wandb online` without credentials would wait on W&B's login: it goes offline with a warning, as a
    training run's logger does; a run whose logging fails is still finished (its service not left open)."""
    import wandb

    import afno_repro.loggers
    from afno_repro.report.write import log_to_wandb

    started = []

    def fake_init(**options):
        started.append(_FakeRun(fail=bool(started)))
        started[-1].options = options
        return started[-1]

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setattr(afno_repro.loggers, "_has_wandb_credentials", lambda: False)
    sections = [Section("figure5", "Figure 5", "intro", tables={"t": [{"a": 1}]})]
    with caplog.at_level("WARNING"):
        log_to_wandb(sections, tmp_path, "online")
    assert started[0].options["mode"] == "offline" and started[0].finished == [None]
    assert "the report's W&B run is offline because mode is online but there are no W&B credentials" in caplog.text
    with caplog.at_level("WARNING"):
        log_to_wandb(sections, tmp_path, "offline")
    assert started[1].finished == [1] and "logging it to W&B failed: RuntimeError: W&B dropped the table" in caplog.text
    log_to_wandb(sections, tmp_path, "disabled")
    assert len(started) == 2


def test_the_reports_wandb_mode_is_the_flag_else_wandb_mode_else_offline(monkeypatch):
    from afno_repro.pipeline import _report_wandb_mode

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert _report_wandb_mode(None) == "disabled" and _report_wandb_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert _report_wandb_mode(None) == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert _report_wandb_mode(None) == "offline"


def test_a_partial_table_names_the_points_no_run_trained(report, tmp_path):
    """A table with some rows is not to be read as the whole table: the paper sweep's points without a run
    are named with the command that makes them; at smoke scale, the ones the smoke sweep leaves out on
    purpose (Table 3's other dataset columns) are said to be left out, with the paper-scale command."""
    note = _note(report["sections"]["table2"]["notes"], "Not run here")
    assert "(2 of the paper sweep's 4 points" in note and "attention, long_short." in note
    assert "`python train.py -m experiment=table2_inpainting debug=smoke`" in note
    table3 = _note(report["sections"]["table3"]["notes"], "Not run here")
    assert "(9 of the paper sweep's 12 points" in table3 and "gfn on" not in table3  # gfn ran all three columns

    root = tmp_path / "smoke_runs"
    for row in ("attention", "long_short", "gfn", "afno"):
        _record(root, "table3_fewshot", f"table3/{row}", "segmentation", {"miou": 30.0, "num_images": 16},
                paper_column="celeba_faces", data="embedded_shapes", reading=SHAPES)
    index = build_report(root, tmp_path / "report2", wandb_mode="disabled")
    (section,) = [s for s in json.loads((index.parent / "report.json").read_text())["sections"] if s["key"] == "table3"]
    note = _note(section["notes"], "Not run here")
    assert "(8 of the paper sweep's 12 points" in note and "afno on lsun_cats" in note and "celeba_faces" not in note
    assert "leaves them out on purpose (configs/shrink_sweep/smoke/table3_fewshot.yaml" in note
    assert note.endswith("`python train.py -m experiment=table3_fewshot` runs all 12.")
    assert (Path(__file__).parents[2] / "configs/shrink_sweep/smoke/table3_fewshot.yaml").is_file()


def test_paper_numbers_keep_the_decimals_the_paper_prints():
    # Table 2's Long-Short SSIM is printed 0.920 and Table 3's AFNO ADE-cars mIoU 49.60: as floats they lose the
    # trailing zero, and the report showed a digit fewer than the paper prints (README: "0.920-0.931").
    from afno_repro.paper import paper_results
    from afno_repro.report.render import format_printed

    ssim = paper_results()["table2_inpainting"]["long_short"]["ssim"]
    assert ssim == 0.92 and format_printed(ssim, 4) == "0.920" and f"{ssim:g}" == "0.920"
    assert format_printed(paper_results()["table3_fewshot_miou"]["afno"]["ade_cars"], 2) == "49.60"
    assert format_printed(paper_results()["table2_inpainting"]["afno"]["psnr"], 2) == "27.05"


def test_the_report_says_which_commits_devices_and_torch_made_its_numbers(tmp_path):
    # Each run records them; the page a reader shares said none of it, so runs of two commits read as one.
    root = tmp_path / "runs"
    for commit, device in (("a954512f2d82164713e1d6eadc94e54c6194b10f", "cpu"),
                           ("b8a6757c0ffee0000000000000000000000000000-dirty", "cuda (NVIDIA H200)")):
        _record(root, "table2_inpainting", "table2/afno", "inpainting", {"psnr": 13.05, "ssim": 0.43, "num_images": 4},
                git_commit=commit, precision={"device": device}, versions={"torch": "2.14.1"})
    index = build_report(root, tmp_path / "report", wandb_mode="disabled")
    markdown = (index.parent / "index.md").read_text()
    assert "Made at mixed commits (a954512: 1 run, b8a6757-dirty: 1 run: compare their numbers with care)" in markdown
    assert "on cpu: 1 run, cuda (NVIDIA H200): 1 run, with torch 2.14.1 (2 runs); report built 20" in markdown
    made = json.loads((index.parent / "report.json").read_text())["provenance"]
    assert made["commits"] == {"a954512": 1, "b8a6757-dirty": 1} and "Made at mixed commits" in index.read_text()


def test_an_accuracy_has_no_more_decimals_than_its_images_give(tmp_path):
    # Top-1 on 50 images moves in steps of 2 points: "80.00" beside the paper's 80.89 read as a match to 0.01.
    root = tmp_path / "runs"
    for images, top1 in ((50, 80.0), (1000, 80.1), (50_000, 80.892)):
        _record(root, "table5_classification", "table5/afno", "classification", {"top1": top1, "top5": 95.0, "num_images": images},
                seed=images)
    index = build_report(root, tmp_path / "report", wandb_mode="disabled")
    table5 = {s["key"]: s for s in json.loads((index.parent / "report.json").read_text())["sections"]}["table5"]
    shown = {row["images"]: row["top-1 (%)"] for row in table5["tables"]["table5"] if not row["row"].startswith("baseline")}
    assert shown == {"50": "80", "1000": "80.1", "50000": "80.89"}
