"""The reproduction report from run records: every section, ours beside the paper's, the reasons,
the figures, W&B; and the same report with no runs at all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from afno_repro.report.build import ORDER, build_report, run_command
from afno_repro.report.sections import Section

PNG = b"\x89PNG\r\n\x1a\n"

# The paper's section 5.5 (Sparsity Threshold): "the PSNR/mIoU peaks at lambda = 0.01".
PAPER_BEST_THRESHOLD = 0.01
# Figure 4's sweeps as the fixture records them: (sparsity_threshold, PSNR) of fig4_sparsity and
# (sparsity_threshold, mIoU) of fig4_sparsity_finetune, for two of the three thresholds.
SPARSITY_PSNR = ((0, 12.0), (0.01, 12.5), (1, 11.0))
SPARSITY_MIOU = ((0, 20.0), (1, 25.0))
DATA = "skimage"  # what every run of the fixture trained on unless it says otherwise


def _record(folder: Path, experiment: str, row: str, task: str, result: dict, **extra) -> None:
    run_dir = folder / experiment / row.replace("/", "-")
    run_dir.mkdir(parents=True)
    record = {"experiment": experiment, "paper_row": row, "task": task, "status": "completed", "result": result,
              "run_dir": str(run_dir), "data": DATA, "image_size": 32, "params_m": 0.11, "gflops": 0.01,
              "mixer": row.split("/")[1], "overrides": [f"paper_model={row}", f"experiment={experiment}",
                                                        "debug=smoke", "resume=auto", "runs_root=/x"],
              "reading": {"mask": {"grid": "token", "steps": 3136, "border": "clip", "brush_size": 1}}, **extra}
    (run_dir / "metrics.json").write_text(json.dumps(record))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "runs"
    _record(root, "table2_inpainting", "table2/afno", "inpainting", {"psnr": 13.05, "ssim": 0.43, "num_images": 4})
    _record(root, "table3_fewshot", "table3/gfn", "segmentation", {"miou": 30.0, "num_images": 16},
            paper_column="celeba_faces", data="embedded_shapes")
    _record(root, "table5_classification", "table5/afno", "classification", {"top1": 60.0, "top5": 100.0, "num_images": 50},
            data="lfw")
    for value, psnr in SPARSITY_PSNR:
        _record(root / f"t{value}", "fig4_sparsity", "table6/afno", "inpainting", {"psnr": psnr, "num_images": 4},
                mixer_options={"sparsity_threshold": value})
    for value, miou in SPARSITY_MIOU:  # Figure 4's few-shot half, for two of the three thresholds
        _record(root / f"f{value}", "fig4_sparsity_finetune", "table6/afno", "segmentation",
                {"miou": miou, "num_images": 16}, mixer_options={"sparsity_threshold": value}, paper_column="celeba_faces")
    for name, params, miou in (("b0_afno", 0.1, 10.0), ("b1_afno", 0.2, 12.0)):
        _record(root, "fig1_trunks", f"fig1/{name}", "cityscapes", {"miou": miou, "num_images": 8},
                backbone=f"segformer_{name[:2]}", params_m=params, data="embedded_streets")
    failed = root / "table4_cityscapes" / "0"
    failed.mkdir(parents=True)
    (failed / "metrics.json").write_text(json.dumps({"experiment": "table4_cityscapes", "paper_row": "table4/afno",
                                                     "task": "cityscapes", "status": "failed", "run_dir": str(failed),
                                                     "error": "pretrained=auto found no completed pretraining run\nmore"}))
    return root


def _note(notes: list[str], anchor: str) -> str:
    """The one note that mentions ``anchor`` (an option and the metric's column label)."""
    found = [note for note in notes if anchor in note]
    assert len(found) == 1, (anchor, notes)
    return found[0]


def _numbers(text: str) -> list[str]:
    """The numbers a sentence states, as written."""
    return re.findall(r"\d+(?:\.\d+)?", text)


def _assert_names_best(note: str, points: tuple[tuple[float, float], ...], paper: float) -> None:
    """``note`` names the best point of ``points`` (option value, metric), its score, how far the
    sweep spreads and how many points it has, and whether it agrees with the paper's best."""
    best_value, best_score = max(points, key=lambda point: point[1])
    spread = best_score - min(score for _, score in points)
    ours, said, papers = note.partition("the paper's")  # our sweep, then the paper's claim
    assert said, note
    assert _numbers(papers) == [str(paper)], note
    stated = _numbers(ours)
    assert str(best_value) in stated and f"{best_score:.2f}" in stated, note
    assert f"{spread:.2f}" in stated and str(len(points)) in stated, note
    # no other point of the sweep is named
    assert not {str(value) for value, _ in points if value != best_value} & set(stated) - {str(len(points))}, note
    assert ("agrees" in ours) == (best_value == paper) and ("differs" in ours) == (best_value != paper), note


SCALING = {"cases": [{"mixer": m, "grid": g, "tokens": g * g, "dim": 64, "threads": 1, "seconds": 1e-3 * g ** p,
                      "peak_mib": 10.0 * g, "does_not_fit": None} for m, p in (("attention", 4), ("afno", 2))
                     for g in (4, 8)],
           "exponents": {"attention": {"time": 2.0, "memory": 0.5}, "afno": {"time": 1.0, "memory": 0.5}}}


def test_every_section_with_the_papers_numbers_and_the_reasons(tree, tmp_path):
    extra = [Section("resolution", "Zero-shot resolution transfer", "study"), Section("figure5", "Figure 5", "clusters"),
             Section("preflight", "Preflight: the cost of every paper-scale row", "costs")]
    index = build_report(tree, tmp_path / "report", scaling=SCALING, extra=extra, wandb_mode="disabled")
    html, markdown = index.read_text(), (index.parent / "index.md").read_text()
    for key in ORDER:
        if key != "figure6":
            assert f'id="{key}"' in html and f'<a id="{key}"></a>' in markdown, key
    sections = json.loads((index.parent / "report.json").read_text())["sections"]
    assert [s["key"] for s in sections] == [k for k in ORDER if k != "figure6"]  # extras in the paper's order
    by_key = {s["key"]: s for s in sections}
    (row,) = by_key["table2"]["tables"]["table2"]
    assert (row["PSNR (dB)"], row["paper PSNR (dB)"], row["delta PSNR (dB)"]) == ("13.05", "27.05", "-14.00")
    assert row["comparable"] == "not comparable: trained on skimage, the paper on imagenet" and row["images"] == "4"
    assert row["command"] == "python train.py experiment=table2_inpainting paper_model=table2/afno debug=smoke"
    (row,) = by_key["table3"]["tables"]["table3"]
    assert (row["dataset"], row["paper mIoU (%)"]) == ("celeba_faces", "55.21")
    assert by_key["table5"]["tables"]["table5"][0]["paper top-1 (%)"] == "80.89"
    # The failed Table 4 run is shown with its error's first line; Table 6 has no run and names the command.
    assert "failed: pretrained=auto found no completed pretraining run" in markdown and "\nmore" not in markdown
    assert by_key["table6"]["missing"].startswith("no completed run of table6_pretrain yet")
    figure4 = by_key["figure4"]
    # Each sweep names its best point beside the paper's: PSNR's best is the paper's, few-shot mIoU's is not.
    _assert_names_best(_note(figure4["notes"], "sparsity_threshold by PSNR (dB)"), SPARSITY_PSNR, PAPER_BEST_THRESHOLD)
    _assert_names_best(_note(figure4["notes"], "sparsity_threshold by few-shot mIoU (%)"), SPARSITY_MIOU,
                       PAPER_BEST_THRESHOLD)
    # The few-shot points' reason not to compare is said too, though their column sits in the PSNR table.
    assert any("the paper on datasetgan/face" in note for note in figure4["notes"]), figure4["notes"]
    # A description every row shares is said once above the table, not in a column of its own
    # (report.json keeps it on every row).
    sweep_rows = figure4["tables"]["figure4_sparsity_threshold"]
    (shared,) = {r["comparable"] for r in sweep_rows}
    assert shared.startswith("not comparable") and DATA in shared and "imagenet" in shared, shared
    section_md = markdown[markdown.index('<a id="figure4"></a>'):]
    header_at = section_md.index("| sparsity_threshold |")
    above, table = section_md[:header_at], section_md[header_at:].split("\n\n")[0]
    assert above.count(shared) == 1 and above.rstrip().splitlines()[-1].count(shared) == 1  # the line right above
    assert shared not in table and "comparable" not in table.splitlines()[0]
    assert len(table.splitlines()) == 2 + len(SPARSITY_PSNR)
    section_html = html[html.index('<section id="figure4">'):]
    section_html = section_html[:section_html.index("</section>")]
    above, table = section_html.split("<table>", 1)
    (said,) = re.findall(r'<p class="shared">(.*?)</p>', above)
    assert shared in said and section_html.count(shared) == 1
    assert "<th>comparable</th>" not in table.split("</tr>")[0] and shared not in table
    assert "| row | PSNR (dB) | paper PSNR (dB) |" in markdown and "| comparable |" in markdown  # Table 2 has one row
    miou = dict(SPARSITY_MIOU)  # a threshold with no few-shot run has an empty mIoU cell
    assert [(r["sparsity_threshold"], r["PSNR (dB)"], r["few-shot mIoU (%)"]) for r in sweep_rows] \
        == [(value, f"{psnr:.2f}", f"{miou[value]:.2f}" if value in miou else "")
            for value, psnr in sorted(SPARSITY_PSNR)]
    assert by_key["table1"]["tables"]["table1_exponents"][0]["paper FLOPs"] == "N^2 d + 3 N d^2"
    for figure in ("table1_scaling.png", "figure1_miou_vs_params.png", "figure4_ablations.png"):
        assert (index.parent / "figures" / figure).read_bytes()[:8] == PNG
        assert f'src="figures/{figure}"' in html


def test_a_sweep_whose_points_do_not_differ_names_no_best(tmp_path):
    root = tmp_path / "runs"
    points = ((0, 12.9921), (0.01, 12.9930), (1, 12.9925))
    for value, psnr in points:
        _record(root / f"t{value}", "fig4_sparsity", "table6/afno", "inpainting", {"psnr": psnr, "num_images": 4},
                mixer_options={"sparsity_threshold": value})
    index = build_report(root, tmp_path / "report", wandb_mode="disabled")
    (figure4,) = [s for s in json.loads((index.parent / "report.json").read_text())["sections"] if s["key"] == "figure4"]
    note = _note(figure4["notes"], "sparsity_threshold by PSNR (dB)")
    scores = [psnr for _, psnr in points]
    spread = max(scores) - min(scores)
    assert f"{spread:.1g}" == "0.0009"  # under 0.005: it rounds to 0.00 at the table's two decimals
    ours, said, papers = note.partition("the paper's")
    assert said and _numbers(papers) == [str(PAPER_BEST_THRESHOLD)], note
    # It says there is no best and why: how many points, how close (the spread) and at what level.
    assert "no best" in ours, note
    stated = _numbers(ours)
    assert str(len(points)) in stated and f"{spread:.1g}" in stated and f"{max(scores):.2f}" in stated, note
    assert not {str(value) for value, _ in points} & set(stated) - {str(len(points))}, note  # it names no threshold
    assert not any(note.startswith("Best sparsity_threshold") for note in figure4["notes"])


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
