"""`make reproduce-all SCALE=smoke` as README prints it: every experiment in the order its runs need,
the scaling study, the report; a second invocation runs nothing; a sweep killed with SIGKILL and
restarted ends with the numbers of an uninterrupted one. Plus the pieces: the plan, resume=auto.

The whole smoke graph runs once per session (a few CPU-minutes, in the background from the session's
start: tests/background.py) from a temporary working directory, where the outputs go; every test reads
what it left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import background
from afno_repro import pipeline
from afno_repro.pipeline import NoiseStep, build_plan, choose_reruns, declared_experiments, format_plan, noise_declaration, order
from afno_repro.report.flags import SMOKE_LABEL
from afno_repro.report.sweep import collect
from afno_repro.runs import auto_resume, existing_run, find_runs
from readme import argv, run_until_training_starts, user_env

ROOT = Path(__file__).resolve().parents[2]
SILENT_WANDB = {"WANDB_SILENT": "true"}  # beside a user's environment (readme.user_env): W&B's notices kept out of the logs
SECTIONS = ("table1", "figure1", "table2", "table3", "table4", "table5", "table6", "figure4", "figure5", "figure6",
            "resolution")


def _run(command: str, cwd: Path, timeout: int = 2400) -> subprocess.CompletedProcess:
    """A README command, as printed, from ``cwd``."""
    return subprocess.run(argv(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=user_env(SILENT_WANDB))


@background.job("reproduced")
def _reproduced(tmp_path_factory):
    """`make reproduce-all SCALE=smoke`, as README prints it, run once from a fresh working directory."""
    cwd = tmp_path_factory.mktemp("reproduce")
    result = _run("make reproduce-all SCALE=smoke", cwd)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return cwd, result


reproduced = background.fixture("reproduced")


def _runs(cwd: Path, experiment: str) -> list[dict]:
    return find_runs(cwd / "outputs" / "reproduce" / "smoke" / experiment, status=None, experiment=experiment)


@pytest.mark.slow
def test_every_experiment_completes_pretraining_first(reproduced):
    cwd, result = reproduced
    root = cwd / "outputs" / "reproduce" / "smoke"
    steps = build_plan(root, "smoke")
    assert {step.experiment for step in steps if not isinstance(step, NoiseStep)} == set(declared_experiments())
    assert all(step.complete for step in steps), [(s.experiment, s.done, len(s.points)) for s in steps]
    launched = re.findall(r"^==> (\w+) \(", result.stdout, re.MULTILINE)
    assert launched == [step.experiment for step in steps]
    for step in steps:
        for need in step.needs:
            assert launched.index(need) < launched.index(step.experiment)
    # Each finetuning run started from the run of its own row that the pipeline made before it; Table 4's
    # AFNO-25% from the AFNO row's (Section 5.3 truncates during finetuning), the one row whose trunk differs.
    source_row = {"afno_25pct": "afno"}
    chains = {"table3_fewshot": "table2_inpainting", "table6_finetune": "table6_pretrain",
              "table4_cityscapes": "table4_pretrain", "fig1_trunks": "fig1_pretrain",
              "fig4_sparsity_finetune": "fig4_sparsity"}
    for finetune, pretrain in chains.items():
        runs = [r for r in _runs(cwd, finetune) if r.get("mixer")]  # fig1's Swin rows start from timm's weights
        assert runs and all(r["status"] == "completed" for r in runs)
        for run in runs:
            init = run["init"]
            assert init["experiment"] == pretrain and Path(init["checkpoint"]).is_relative_to(root / pretrain), init
            row = run["paper_row"].split("/")[1]
            assert init["paper_row"].split("/")[1] == source_row.get(row, row)
            source = next(r for r in _runs(cwd, pretrain) if r["run_dir"] == init["run_dir"])
            assert init["checkpoint"] == source["best_checkpoint"]
            if row in source_row:
                assert run["mixer_options"] == {**source["mixer_options"], "hard_thresholding_fraction": 0.25}
                continue
            assert run["trunk_hash"] == source["trunk_hash"]
            assert run["mixer_options"] == source["mixer_options"]  # Figure 4: each lambda from its own lambda
    table6 = {r["paper_row"]: r for r in collect(root / "table6_finetune")}  # collect sets the paper's numbers
    assert {row: r["paper"]["miou"] for row, r in table6.items()} == {
        "table6/fno": 39.27, "table6/afno_static": 44.04, "table6/afno_hard35": 34.17, "table6/afno": 49.49}
    assert all(r["paper_column"] == "celeba_faces" for r in table6.values())
    # Figure 4's two ablations, every point of the paper's range.
    thresholds = sorted(r["mixer_options"]["sparsity_threshold"] for r in _runs(cwd, "fig4_sparsity"))
    assert thresholds == [0, 0.001, 0.01, 0.1, 1, 10]
    assert sorted(r["mixer_options"]["sparsity_threshold"] for r in _runs(cwd, "fig4_sparsity_finetune")) == thresholds
    assert sorted(r["mixer_options"]["num_blocks"] for r in _runs(cwd, "fig4_blocks")) == [1, 2, 4, 8, 16, 32, 64]
    assert all(r["result"]["psnr"] is not None for e in ("fig4_sparsity", "fig4_blocks") for r in _runs(cwd, e))
    # Figure 4's noise steps: each sweep's best two points, by its metric, trained again with seed 1 in
    # <root>/<sweep>_seed1, recording the sweep's experiment and the mixer options of the run they repeat.
    for sweep, metric in (("fig4_sparsity", "psnr"), ("fig4_sparsity_finetune", "miou"), ("fig4_blocks", "psnr")):
        reruns = find_runs(root / f"{sweep}_seed1", experiment=sweep)
        assert len(reruns) == 2 and all(r["seed"] == 1 for r in reruns), sweep
        originals = _runs(cwd, sweep)
        assert all(r["seed"] == 0 for r in originals)
        repeated = [next(o for o in originals if o["mixer_options"] == r["mixer_options"]) for r in reruns]
        top_two = sorted((o["result"][metric] for o in originals), reverse=True)[:2]
        assert sorted((o["result"][metric] for o in repeated), reverse=True) == top_two, sweep


@pytest.mark.slow
def test_the_report_has_every_section_and_figure(reproduced):
    cwd, _ = reproduced
    report = cwd / "outputs" / "report" / "smoke"
    markdown, html = (report / "index.md").read_text(), (report / "index.html").read_text()
    for key in SECTIONS:
        assert f'id="{key}"' in html, key
    data = json.loads((report / "report.json").read_text())
    keys = [section["key"] for section in data["sections"]] if isinstance(data, dict) else [s["key"] for s in data]
    assert keys == list(SECTIONS)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 6
    for image in images:
        assert (report / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    # Every smoke row says why it cannot match the paper, and names the command that made it.
    assert "not comparable: trained on skimage, the paper on imagenet" in markdown
    assert "python train.py experiment=table3_fewshot" in markdown
    assert "27.05" in markdown  # Table 2's AFNO PSNR in the paper
    # Every task's table ends with its baselines, scored on the same images as the models.
    for baseline in ("baseline: zero-fill", "baseline: biharmonic inpainting", "baseline: pixel prior",
                     "baseline: majority class"):
        assert baseline in markdown, baseline
    # A smoke report says so in its title and in every section.
    assert "smoke" in html[html.index("<title>"):html.index("</title>")]
    assert all(section["banner"] == SMOKE_LABEL for section in data["sections"])
    assert html.count(f'<p class="banner">{SMOKE_LABEL}</p>') == len(SECTIONS)
    assert list((report / "wandb").glob("offline-run-*")), "the report's tables were not logged to W&B (offline)"
    _report_agrees_with_the_records(data, cwd / "outputs" / "reproduce" / "smoke")


def _report_agrees_with_the_records(data: dict, root: Path) -> None:
    """Issue 19's points, checked against the runs' own metrics.json rather than the renderer's words."""
    from afno_repro.report.declared import DECLARED

    runs = find_runs(root)
    sections = {section["key"]: section for section in data["sections"]}
    for declaration in DECLARED:
        section = sections[declaration.key]
        experiments = ({t.experiment for t in declaration.tables} | {s.experiment for s in declaration.sweeps}
                       | ({declaration.scatter.experiment} if declaration.scatter else set()))
        borrowed = [(b.experiment, row) for b in (declaration.scatter.borrowed if declaration.scatter else ()) for row in b.rows]
        # A baseline row in every table of runs.
        for name, rows in section["tables"].items():
            if not declaration.scaling:
                assert any(str(next(iter(row.values()))).startswith("baseline: ") for row in rows), (declaration.key, name)
        # Every run whose record says its AFNO mixer was off is flagged in its section.
        off = [run for run in runs if (run["experiment"] in experiments or (run["experiment"], run.get("paper_row")) in borrowed)
               and (run.get("mixer_activity") or {}).get("inactive")]
        flagged = " ".join(section["warnings"])
        assert bool(off) == ("AFNO mixer effectively off" in flagged), declaration.key
        if off:
            counts = [int(n) for n in re.findall(r"effectively off in (\d+) runs?\b", flagged)]
            assert len(off) in counts or len(counts) > 1, (declaration.key, flagged)
    # Figure 1: B0-B2 and Swin from its own sweep, B3 from Table 4's runs of its three mixers, marked as such.
    points = {(row["point"], row["mixer"]): row["run of"] for row in sections["figure1"]["tables"]["figure1"]
              if "run of" in row}
    table4 = {run["mixer"] for run in runs if run["experiment"] == "table4_cityscapes"
              and run.get("paper_row") in ("table4/efficient_attention", "table4/gfn", "table4/afno")}
    assert table4 == {"efficient_attention", "gfn", "afno"}
    assert points == {**{(f"B{size}", mixer): "fig1_trunks" for size in range(3) for mixer in table4},
                      **{("B3", mixer): "table4_cityscapes (from Table 4)" for mixer in table4},
                      **{(f"Swin-{size}", "(Swin's own)"): "fig1_trunks" for size in "TSB"}}
    assert not any(w.startswith("Missing points") for w in sections["figure1"]["warnings"])
    # No top-5 column where the runs tell fewer than 6 classes apart.
    classes = {run["reading"].get("num_classes") for run in runs if run["experiment"] == "table5_classification"}
    assert max(classes) < 6 and "top-5 (%)" not in sections["table5"]["tables"]["table5"][0]
    # A sweep names a best only when its top two points differ by more than a rerun's spread.
    for sweep in (s for d in DECLARED for s in d.sweeps):
        points: dict[str, list[float]] = {}
        for run in runs:
            if run["experiment"] == sweep.experiment:
                key = json.dumps([run.get("mixer_options"), run.get("trunk_hash")], sort_keys=True)
                points.setdefault(key, []).append(run["result"][sweep.metric.key])
        assert any(len(values) == 2 for values in points.values()), f"{sweep.experiment}: no point was rerun"
        spread = max(max(v) - min(v) for v in points.values() if len(v) > 1)
        top, runner_up = sorted((sum(v) / len(v) for v in points.values()), reverse=True)[:2]
        note = next(n for n in sections["figure4"]["notes"] if f"({sweep.experiment})" in n)
        assert ("names no best" in note) == (top - runner_up <= spread), note


@pytest.mark.slow
def test_a_second_invocation_runs_nothing(reproduced):
    """Nothing is launched, no record is rewritten, the scaling study and the report are kept."""
    cwd, _ = reproduced
    root = cwd / "outputs" / "reproduce" / "smoke"
    kept = [*root.rglob("metrics.json"), root / "table1_scaling" / "scaling.json",
            cwd / "outputs" / "report" / "smoke" / "index.html"]
    before = {path: path.stat().st_mtime_ns for path in kept}
    result = _run("make reproduce-all SCALE=smoke", cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "==> " not in result.stdout and "report up to date" in result.stdout
    assert result.stdout.count("not run again") == len(build_plan(root, "smoke"))  # the noise steps' reruns too
    assert {path: path.stat().st_mtime_ns for path in kept} == before


@pytest.mark.slow
def test_dry_run_shows_the_plan_and_what_is_done(reproduced):
    cwd, _ = reproduced
    result = _run("make reproduce-all SCALE=smoke ARGS=--dry-run", cwd)
    assert result.returncode == 0, result.stderr
    assert re.search(r"table3_fewshot: 4 runs, done, after table2_inpainting", result.stdout)
    assert "index.html" in result.stdout


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_and_restarted_ends_with_the_same_numbers(tmp_path, table2_smoke):
    """Killed in the second row's second epoch, the restart keeps the first row, resumes the second
    from its last.ckpt and ends with the numbers of an uninterrupted sweep (README's Table 2 smoke sweep,
    the session's table2_smoke: the same four runs)."""
    command = [sys.executable, "-m", "afno_repro.pipeline", "--scale", "smoke", "--only", "table2_inpainting",
               "--wandb", "disabled"]
    sweep = tmp_path / "outputs" / "reproduce" / "smoke" / "table2_inpainting"
    process = subprocess.Popen(command, cwd=tmp_path, env=user_env(SILENT_WANDB), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 600
    second = None
    while time.time() < deadline and process.poll() is None:
        found = sorted(sweep.glob("1_*/checkpoints/last.ckpt"))
        if found:
            second = found[0].parents[1]
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert second is not None, "the second row never wrote last.ckpt"
    first_done = find_runs(sweep, experiment="table2_inpainting")
    assert [Path(r["run_dir"]).name[:2] for r in first_done] == ["0_"], "expected only the first row completed"
    kept = Path(first_done[0]["metrics_file"]).stat().st_mtime_ns

    restarted = subprocess.run(command, cwd=tmp_path, env=user_env(SILENT_WANDB), capture_output=True, text=True, timeout=900)
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert Path(first_done[0]["metrics_file"]).stat().st_mtime_ns == kept, "the completed row was run again"
    assert "already completed, not run again (resume=auto)" in restarted.stdout
    assert "resuming from" in restarted.stdout + restarted.stderr or (second / "metrics.json.attempt-1").exists()

    def numbers(runs):
        return {r["paper_row"]: (r["result"]["psnr"], r["result"]["ssim"], r["selection"]["best"]) for r in runs}

    resumed = numbers(find_runs(sweep, experiment="table2_inpainting"))
    uninterrupted = numbers(find_runs(table2_smoke["sweep_dir"], experiment="table2_inpainting"))
    assert len(resumed) == 4 and resumed == uninterrupted


def test_only_keeps_an_experiment_and_what_it_needs(tmp_path):
    steps = build_plan(tmp_path, "smoke", only=["table3_fewshot"])
    assert [step.experiment for step in steps] == ["table2_inpainting", "table3_fewshot"]
    # debug=smoke trains Table 3 on one column (every column reads the same embedded shapes there).
    assert [len(step.points) for step in steps] == [4, 4] and not any(step.done for step in steps)
    assert len(build_plan(tmp_path, "paper", only=["table3_fewshot"])[1].points) == 12
    assert all(f"hydra.sweep.dir={tmp_path / step.experiment}" in step.command for step in steps)
    with pytest.raises(ValueError, match="no such experiment in the pipeline; choose from"):
        build_plan(tmp_path, "smoke", only=["table9"])


def test_figure1_runs_after_table4_and_only_brings_it_along(tmp_path, monkeypatch):
    """Figure 1's B3 points are Table 4's runs (the report draws them, src/afno_repro/report/declared.py): the plan
    trains B0-B2 and Swin for Figure 1, runs fig1_trunks after table4_cityscapes, and `--only fig1_trunks` brings
    Table 4 along, while a Table 4 that fails does not stop Figure 1's own runs (launches faked: each writes
    its sweep's records, Table 4's finetuning fails)."""
    steps = build_plan(tmp_path, "paper", only=["fig1_trunks"])
    names = [step.experiment for step in steps]
    assert names == ["table4_pretrain", "table4_cityscapes", "fig1_pretrain", "fig1_trunks"]
    figure1 = steps[-1]
    assert figure1.needs == ["fig1_pretrain"] and figure1.shows == ["table4_cityscapes"]
    assert not any("b3" in " ".join(point) for step in steps[2:] for point in step.points)
    assert len(steps[2].points) == 9 and len(figure1.points) == 12
    text = format_plan(steps, tmp_path, tmp_path / "report")
    assert ("fig1_trunks: 12 runs, 0/12 runs done, after fig1_pretrain; its figure also draws table4_cityscapes's runs "
            "of table4/efficient_attention, table4/gfn, table4/afno (from Table 4), not trained again") in text
    launched = []

    def launch(command, log):
        experiment = command[3].removeprefix("experiment=")
        launched.append(experiment)
        if experiment == "table4_cityscapes":
            return 1
        step = steps[names.index(experiment)]
        for index, point in enumerate(step.points):
            _fake_run(step.sweep_dir / f"{index}_run", experiment, point, {"miou": 1.0})
        return 0

    monkeypatch.setattr(pipeline, "_launch", launch)
    monkeypatch.setattr(pipeline, "_scaling", lambda root, scale: None)
    monkeypatch.setattr(pipeline, "build_report", lambda *args, **kwargs: tmp_path / "report" / "index.html")
    assert pipeline.run_plan(steps, tmp_path, "paper", tmp_path / "report") == 1
    assert launched == names and figure1.complete and not steps[1].complete


def test_order_puts_needs_first_and_names_a_cycle():
    assert order({"b": ["a"], "a": [], "c": ["b"]}) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        order({"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="`x`, which does not exist"):
        order({"a": ["x"]})


def test_paper_scale_without_data_names_the_options(tmp_path):
    result = subprocess.run([sys.executable, "-m", "afno_repro.pipeline", "--scale", "paper"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=user_env(SILENT_WANDB))
    assert result.returncode == 2
    assert "--imagenet /path/to/imagenet" in result.stderr and "--cityscapes" in result.stderr
    assert "--swin /path/to/swin" in result.stderr and "swin_{tiny,small,base}_patch4_window7_224.pth" in result.stderr
    assert "SCALE=smoke" in result.stderr and not (tmp_path / "outputs" / "reproduce" / "paper").exists()


def test_auto_resume_skips_resumes_or_sets_aside(tmp_path):
    assert auto_resume(tmp_path / "new") == ("fresh", [])
    done = tmp_path / "done"
    done.mkdir()
    record = {"status": "completed", "overrides": ["debug=smoke"], "result": {"psnr": 1.0}}
    (done / "metrics.json").write_text(json.dumps(record))
    assert auto_resume(done) == ("completed", record)
    # A completed record without its overrides (an older format) is recorded again from its last.ckpt: skipped, the
    # pipeline could never match it to a point and relaunched its sweep forever.
    older = tmp_path / "older"
    (older / "checkpoints").mkdir(parents=True)
    (older / "metrics.json").write_text(json.dumps({"status": "completed", "result": {"psnr": 1.0}}))
    torch.save({"state_dict": {}}, older / "checkpoints" / "last.ckpt")
    assert auto_resume(older) == ("resume", older / "checkpoints" / "last.ckpt")

    killed = tmp_path / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, killed / "checkpoints" / "last.ckpt")
    assert auto_resume(killed) == ("resume", killed / "checkpoints" / "last.ckpt")

    # Killed while writing last.ckpt, after a failed attempt: everything set aside, nothing deleted.
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 half a zip")
    (broken / "metrics.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    (broken / "csv").mkdir()
    action, set_aside = auto_resume(broken)
    assert action == "fresh" and sorted(Path(p).name for p in set_aside) == [
        "csv.attempt-1", "last.ckpt.attempt-1", "metrics.json.attempt-1"]
    assert not (broken / "metrics.json").exists() and (broken / "metrics.json.attempt-1").is_file()
    (broken / "metrics.json").write_text("{}")
    assert sorted(Path(p).name for p in auto_resume(broken)[1]) == ["metrics.json.attempt-2"]
    # Valid JSON that is no record (`null`, a list) was an AttributeError traceback: set aside like a broken file.
    for attempt, text in ((3, "null"), (4, "[]")):
        (broken / "metrics.json").write_text(text)
        assert existing_run(broken) == ["metrics.json"]
        assert sorted(Path(p).name for p in auto_resume(broken)[1]) == [f"metrics.json.attempt-{attempt}"]


def test_wandb_groups_an_experiment_and_types_each_row():
    from afno_repro.config import compose

    cfg = compose(["experiment=table3_fewshot", "paper_model=table2/gfn", "logger=wandb"])
    assert (cfg.logger.wandb.group, cfg.logger.wandb.job_type) == ("table3_fewshot", "gfn")
    assert compose(["logger=wandb"]).logger.wandb.job_type == "afno"  # the demo: no paper row, its mixer


def test_dry_run_of_one_experiment_as_readme_prints_it(tmp_path):
    result = _run("python -m afno_repro.pipeline --scale smoke --only table3_fewshot --dry-run", tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert " 1. table2_inpainting: 4 runs, 0/4 runs done" in result.stdout
    assert " 2. table3_fewshot: 4 runs, 0/4 runs done, after table2_inpainting" in result.stdout
    assert not (tmp_path / "outputs").exists()


PAPER = ("python -m afno_repro.pipeline --scale paper --imagenet /data/imagenet --datasetgan /data/datasetgan "
         "--cityscapes /data/cityscapes --swin /data/swin")


@pytest.mark.slow
def test_paper_scale_pipeline_starts_table2_and_stops_cleanly_on_ctrl_c(tmp_path, paper_data, terminal_sigint):
    """README's paper-scale command, data paths replaced by tiny datasets in the real layouts: it starts
    Table 2's first ViT-B/4 run; a Ctrl-C (to the whole process group, as a terminal sends it) records
    that run as interrupted and ends the pipeline with 130 and how to go on."""
    work = tmp_path / "work"
    work.mkdir()
    started, returncode, output = run_until_training_starts(argv(PAPER, paper_data), work, user_env(SILENT_WANDB), terminal_sigint)
    lines = output.splitlines(keepends=True)
    assert started and lines[1].startswith(" 1. table2_inpainting: 4 runs"), output[-3000:]
    assert returncode == 130 and "Run the same command again to go on" in output, output[-3000:]
    (metrics_file,) = list((work / "outputs" / "reproduce" / "paper" / "table2_inpainting").rglob("metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "interrupted" and metrics["image_size"] == 224 and metrics["data"] == "imagenet"
    assert "Traceback" not in output


def _fake_run(folder: Path, experiment: str, overrides: list[str], result: dict, seed: int = 0, **fields) -> Path:
    """A completed run's metrics.json as train.py writes it (the fields the pipeline reads)."""
    folder.mkdir(parents=True)
    record = {"status": "completed", "experiment": experiment, "seed": seed, "run_dir": str(folder),
              "overrides": [f"experiment={experiment}", "debug=smoke", *overrides, f"seed={seed}", "resume=auto"],
              "result": result, **fields}
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


FIG4_PSNR = {"0": 12.0, "0.001": 12.3, "0.01": 12.9, "0.1": 13.1, "1": 12.95, "10": float("nan")}


def test_the_plan_reruns_each_sweep_that_names_a_best_after_it(tmp_path):
    steps = build_plan(tmp_path, "smoke")
    names = [step.experiment for step in steps]
    noise = [step for step in steps if isinstance(step, NoiseStep)]
    assert [step.experiment for step in noise] == ["fig4_blocks_noise", "fig4_sparsity_noise", "fig4_sparsity_finetune_noise"]
    for step in noise:
        assert names.index(step.experiment) == names.index(step.of) + 1 and step.needs == [step.of]
        assert not step.ready and not step.complete and step.sweep_dir == tmp_path / f"{step.of}_seed1"
    assert {step.of: (step.noise["metric"], step.noise["seed"], step.noise["rerun_best"]) for step in noise} == {
        "fig4_blocks": ("psnr", 1, 2), "fig4_sparsity": ("psnr", 1, 2), "fig4_sparsity_finetune": ("miou", 1, 2)}
    text = format_plan(steps, tmp_path, tmp_path / "report")
    assert "fig4_sparsity_noise: 2 runs, chosen when fig4_sparsity is complete, after fig4_sparsity" in text
    assert "(75 runs in 12 experiments and 3 noise steps)" in text.splitlines()[0]
    # --only keeps a sweep's noise step with it.
    assert [s.experiment for s in build_plan(tmp_path, "smoke", only=["fig4_blocks"])] == ["fig4_blocks", "fig4_blocks_noise"]


def test_a_complete_sweep_reruns_its_best_and_runner_up_with_the_other_seed(tmp_path, monkeypatch):
    """Chosen from fake completed runs (no training): the two best PSNRs (a NaN never counts), their
    commands, their fixed folders; a rerun already done is not launched again."""
    for index, (threshold, psnr) in enumerate(FIG4_PSNR.items()):
        _fake_run(tmp_path / "fig4_sparsity" / f"{index}_run", "fig4_sparsity",
                  ["paper_model=table6/afno", f"mixer.sparsity_threshold={threshold}"], {"psnr": psnr})
    sweep, noise = build_plan(tmp_path, "smoke", only=["fig4_sparsity"])
    assert sweep.complete and noise.ready and noise.done == 0 and not noise.complete
    assert [(c["point"][1], c["value"]) for c in noise.chosen] == [("mixer.sparsity_threshold=0.1", 13.1),
                                                                   ("mixer.sparsity_threshold=1", 12.95)]
    folder = tmp_path / "fig4_sparsity_seed1"
    assert noise.commands == [
        ["python", "train.py", "-m", "experiment=fig4_sparsity", "debug=smoke", "paper_model=table6/afno",
         f"mixer.sparsity_threshold={value}", "seed=1", "resume=auto", f"runs_root={tmp_path}",
         f"hydra.sweep.dir={folder / f'sparsity_threshold-{value}'}"] for value in ("0.1", "1")]
    text = format_plan([sweep, noise], tmp_path, tmp_path / "report")
    assert "fig4_sparsity_noise: 2 runs, 0/2 runs done, after fig4_sparsity" in text and "(psnr 13.1)" in text

    # The runner-up's rerun is done (its own seed, its folder): only the best one is launched.
    _fake_run(folder / "sparsity_threshold-1" / "0_run", "fig4_sparsity",
              ["paper_model=table6/afno", "mixer.sparsity_threshold=1"], {"psnr": 12.7}, seed=1)
    launched = []
    monkeypatch.setattr(pipeline, "_launch", lambda command, log: launched.append(command) or 0)
    sweep, noise = build_plan(tmp_path, "smoke", only=["fig4_sparsity"])
    assert noise.done == 1
    assert pipeline._run_step(noise, tmp_path / "logs") == 0 and launched == [noise.commands[0]]
    # A rerun's score never changes the choice: it is read from the sweep's own folder.
    _fake_run(folder / "sparsity_threshold-0.1" / "0_run", "fig4_sparsity",
              ["paper_model=table6/afno", "mixer.sparsity_threshold=0.1"], {"psnr": 1.0}, seed=1)
    sweep, noise = build_plan(tmp_path, "smoke", only=["fig4_sparsity"])
    assert noise.complete and [c["value"] for c in noise.chosen] == [13.1, 12.95]
    assert "fig4_sparsity_noise: 2 runs, done" in format_plan([sweep, noise], tmp_path, tmp_path)


def test_a_finetuning_rerun_starts_from_its_points_trunk(tmp_path):
    """A few-shot sweep's rerun finetunes the very trunk its point's run started from (its record's init),
    so the spread is finetuning's seed noise, whatever seed-1 pretraining runs exist."""
    for index, (threshold, miou) in enumerate(FIG4_PSNR.items()):
        trunk = tmp_path / "fig4_sparsity" / f"{index}_run" / "checkpoints" / "best.ckpt"
        _fake_run(tmp_path / "fig4_sparsity_finetune" / f"{index}_run", "fig4_sparsity_finetune",
                  ["paper_model=table6/afno", f"mixer.sparsity_threshold={threshold}"], {"miou": miou},
                  init={"checkpoint": str(trunk), "how": "pretrained=auto"})
    steps = build_plan(tmp_path, "smoke", only=["fig4_sparsity_finetune"])
    noise = next(step for step in steps if step.experiment == "fig4_sparsity_finetune_noise")
    trunks = [next(word for word in command if word.startswith("pretrained=")) for command in noise.commands]
    assert trunks == [f"pretrained={tmp_path / 'fig4_sparsity' / f'{index}_run' / 'checkpoints' / 'best.ckpt'}"
                      for index in (3, 4)]  # lambda 0.1 and 1, the best two


def test_an_incomplete_sweep_chooses_nothing_yet(tmp_path):
    _fake_run(tmp_path / "fig4_blocks" / "0_run", "fig4_blocks", ["paper_model=table6/afno", "mixer.num_blocks=8"],
              {"psnr": 13.0})
    sweep, noise = build_plan(tmp_path, "smoke", only=["fig4_blocks"])
    assert sweep.done == 1 and not sweep.complete and not noise.ready and noise.chosen == []


def test_choosing_follows_the_mode_and_skips_runs_without_a_number():
    points = [["k=1"], ["k=2"], ["k=3"], ["k=4"]]
    records = [{"overrides": ["k=1"], "result": {"loss": 0.5}}, {"overrides": ["k=2"], "result": {"loss": 0.2}},
               {"overrides": ["k=3"], "result": {"loss": None}}, {"overrides": ["k=4"], "result": {"loss": 0.2}}]
    lowest = choose_reruns(points, records, {"rerun_best": 2, "metric": "loss", "mode": "min"})
    assert [c["point"] for c in lowest] == [["k=2"], ["k=4"]]  # a tie keeps the sweep's order
    highest = choose_reruns(points, records, {"rerun_best": 3, "metric": "loss", "mode": "max"})
    assert [c["point"] for c in highest] == [["k=1"], ["k=2"], ["k=4"]]


@pytest.mark.parametrize("noise, words", [
    ({"rerun_best": 0, "seed": 1, "metric": "psnr"}, "rerun_best=0 is not a whole number >= 1"),
    ({"rerun_best": 2, "metric": "psnr"}, "seed=None is not a whole number"),
    ({"rerun_best": 2, "seed": 1, "metric": "psnr", "mode": "highest"}, "mode='highest' is not max or min"),
    ({"seed": 1, "metric": "psnr", "reruns": 2}, "unknown key(s) reruns"),
])
def test_a_bad_noise_declaration_is_named(noise, words):
    with pytest.raises(ValueError) as error:
        noise_declaration("fig4_blocks", {"noise": noise})
    assert words in str(error.value) and "configs/experiment/fig4_blocks.yaml" in str(error.value)


def test_a_rerun_finetunes_the_trunk_of_its_own_seed_else_the_sweeps(tmp_path):
    """pretrained=auto, as a seed-1 rerun of fig4_sparsity_finetune resolves it: the seed-1 pretraining run of
    its lambda where there is one (even when older), else the seed-0 one; a seed-0 run keeps to seed 0 even
    when a seed-1 rerun of its trunk is newer."""
    from afno_repro.config import compose
    from afno_repro.pretrained import _match, _needs, find_pretraining_run

    def cfg(seed: int):
        return compose(["experiment=fig4_sparsity_finetune", "debug=smoke", "mixer.sparsity_threshold=0.01",
                        f"seed={seed}", f"runs_root={tmp_path}"])

    fields = _match(cfg(0), _needs(cfg(0)))
    assert fields.pop("experiment") == "fig4_sparsity"
    runs = {}
    for seed, folder in ((1, "fig4_sparsity_seed1/a"), (0, "fig4_sparsity/b")):  # the seed-0 run is the newer
        run_dir = tmp_path / folder
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"weights")
        _fake_run(run_dir / "run", "fig4_sparsity", ["mixer.sparsity_threshold=0.01"], {"psnr": 12.0}, seed=seed,
                  **{**fields, "best_checkpoint": str(run_dir / "checkpoints" / "best.ckpt")})
        runs[seed] = str(run_dir / "run")
        time.sleep(0.02)
    assert find_pretraining_run(cfg(1), _needs(cfg(1)))["run_dir"] == runs[1]
    assert find_pretraining_run(cfg(0), _needs(cfg(0)))["run_dir"] == runs[0]
    assert find_pretraining_run(cfg(2), _needs(cfg(2)))["run_dir"] == runs[0]  # no seed-2 trunk: the newest


# --- bad input: checked before the plan runs, exit status 2 --------------------------------------

def _pipeline(argv: list[str], capsys) -> tuple[int, str, str]:
    from afno_repro.pipeline import main

    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(("override", "says"), [
    ("optimizer.lrr=1", "To append to your config use +optimizer.lrr=1"),  # a key that does not exist
    ("mixer=afnoo", "Available options in 'mixer': aff, afno,"),  # a group option that does not exist
])
def test_dry_run_refuses_an_override_that_does_not_compose(override, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = _pipeline(["--scale", "smoke", "--only", "table2_inpainting", "--dry-run", override], capsys)
    assert status == 2 and out == "", "no plan is printed for a command that would fail"
    assert f"error: the override `{override}` does not compose with experiment=table2_inpainting" in err
    assert says in err and "--cfg job" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("override", "says"), [
    ("trainer.max_epochs=[1,2", "Close every bracket and quote"),  # broken syntax
    ("data.root=/data/dätä", "\"data.root='/data/dätä'\""),  # a value that needs quotes: the quoted form shown
])
def test_dry_run_refuses_override_syntax_as_train_py_does(override, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = _pipeline(["--scale", "smoke", "--only", "table2_inpainting", "--dry-run", override], capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: the override `{override}`") and says in err and "Lexer" not in err


@pytest.mark.parametrize(("override", "says"), [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' is not a positive whole number of epochs"),
    ("seed=-1", "seed=-1 is not a valid seed"),
    ("task.compile=no", "task.compile='no' is not true or false"),
])
def test_dry_run_refuses_a_value_every_run_would_refuse(override, says, tmp_path, monkeypatch, capsys):
    """The overrides composed, the dry run used to print a clean plan for values that each run then refused, and
    the real run failed all of them and said to run the same command again."""
    monkeypatch.chdir(tmp_path)
    status, out, err = _pipeline(["--scale", "smoke", "--only", "table2_inpainting", "--dry-run", override], capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: the run of experiment=table2_inpainting (paper_model=table2/attention) would refuse "
                          "its options") and says in err
    assert not (tmp_path / "outputs").exists()


def test_dry_run_names_the_row_an_override_does_not_fit(tmp_path, monkeypatch, capsys):
    """A key the first rows' mixers have (attention's heads) and a later row's lacks (GFN) fails on that row."""
    monkeypatch.chdir(tmp_path)
    status, _, err = _pipeline(["--scale", "smoke", "--only", "table2_inpainting", "--dry-run", "mixer.num_heads=4"], capsys)
    assert status == 2 and "experiment=table2_inpainting (paper_model=table2/gfn)" in err
    assert "`mixer.num_heads=4`" in err


def test_dry_run_with_overrides_that_compose_prints_the_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = _pipeline(["--scale", "smoke", "--only", "table2_inpainting", "--dry-run", "optimizer.lr=1e-3",
                                  "+trainer.detect_anomaly=false"], capsys)
    assert status == 0, err
    assert "optimizer.lr=1e-3 +trainer.detect_anomaly=false resume=auto" in out


@pytest.mark.parametrize("flag", [["--rows", "afno"], ["--device", "cpu"], ["--batch", "2"], ["--steps", "1"]])
def test_a_preflight_option_without_preflight_is_refused(flag, tmp_path, monkeypatch, capsys):
    """`--rows afno` without --preflight was ignored: the whole plan ran."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _pipeline(["--scale", "smoke", "--dry-run", *flag], capsys)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"error: {flag[0]} only applies with --preflight" in err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override", ["runs_root=/x", "hydra.sweep.dir=/x", "resume=false"])
def test_an_override_the_pipeline_sets_itself_is_refused(override, tmp_path, monkeypatch, capsys):
    """runs_root=/x came before the pipeline's own runs_root=<root> on each command and was silently replaced."""
    monkeypatch.chdir(tmp_path)
    status, out, err = _pipeline(["--scale", "smoke", "--dry-run", override], capsys)
    assert status == 2 and out == "" and err.startswith(f"error: `{override}`: the pipeline sets runs_root")
    assert "Give --root <folder> instead." in err


def test_a_checkpoint_for_every_run_is_refused(tmp_path, monkeypatch, capsys):
    """`pretrained=<file>` went to every run of the plan, the pretraining runs included, and the dry run showed it."""
    monkeypatch.chdir(tmp_path)
    status, out, err = _pipeline(["--scale", "smoke", "--dry-run", "--only", "table3_fewshot",
                                  f"pretrained={tmp_path / 'x.ckpt'}"], capsys)
    assert status == 2 and out == "" and err.startswith(f"error: `pretrained={tmp_path / 'x.ckpt'}`: the pipeline starts")
    assert "python train.py -m experiment=<name> pretrained=<file.ckpt>" in err


def test_records_cut_short_or_edited_do_not_stop_the_pipeline(tmp_path, monkeypatch, capsys):
    """A metrics.json whose overrides are not a list, a preflight.json or scaling.json that is not one: each was a
    TypeError or AttributeError traceback (or, for a metrics.json without overrides, a wrong diagnosis: "already holds
    paper-scale runs"). The run is counted as not done, the preflight record named, the scaling study measured again."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    for name, record in (("a", {"status": "completed", "experiment": "table2_inpainting", "overrides": 5}),
                         ("b", {"status": "completed", "experiment": "table2_inpainting"})):
        (root / "table2_inpainting" / name).mkdir(parents=True)
        (root / "table2_inpainting" / name / "metrics.json").write_text(json.dumps(record))
    status, out, err = _pipeline(["--scale", "smoke", "--dry-run", "--only", "table2_inpainting", "--root", str(root)], capsys)
    assert status == 0 and "0/4 runs done" in out, out + err
    (root / "preflight.json").write_text("[1]")
    status, out, err = _pipeline(["--scale", "paper", "--dry-run", "--preflight", "--only", "table2_inpainting", "--rows",
                                  "afno", "--root", str(root / "paper")], capsys)
    assert status == 0, err
    (root / "paper" / "preflight.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "paper" / "preflight.json").write_text('{"rows": 5}')
    status, out, err = _pipeline(["--scale", "paper", "--dry-run", "--preflight", "--only", "table2_inpainting", "--rows",
                                  "afno", "--root", str(root / "paper")], capsys)
    assert status == 0 and f"record: {root / 'paper' / 'preflight.json'} is not a preflight record" in out, out + err
    # The report: the preflight section says its record is not one, the rest is written.
    index = pipeline.build_report(root, tmp_path / "report", [], None, wandb_mode="disabled")
    report = json.loads((index.parent / "report.json").read_text())
    (section,) = [s for s in report["sections"] if s["key"] == "preflight"]
    assert section["missing"].startswith(f"{root / 'preflight.json'} is not a preflight record")
    # A scaling study cut short is measured again (the measuring here is a stand-in: the script's JSON).
    (root / "table1_scaling").mkdir()
    (root / "table1_scaling" / "scaling.json").write_text("")
    study = {"cases": [], "exponents": {}}
    monkeypatch.setattr(pipeline.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, json.dumps(study), ""))
    assert pipeline._scaling(root, "smoke")["cases"] == []
    assert "is not a scaling study" in capsys.readouterr().out
    assert json.loads((root / "table1_scaling" / "scaling.json").read_text())["exponents"] == {}


def test_a_root_that_holds_the_other_scales_runs_is_refused(tmp_path, monkeypatch, capsys):
    """The same --root for both scales: the paper plan took the smoke runs for its own, trained nothing and said
    'reproduce-all (paper) finished'."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "root" / "table2_inpainting" / "0_paper_model-table2-attention"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "status": "completed", "experiment": "table2_inpainting",
        "overrides": ["experiment=table2_inpainting", "debug=smoke", "paper_model=table2/attention", "resume=auto"]}))
    for mode in ([], ["--dry-run"]):
        status, out, err = _pipeline(["--scale", "paper", "--only", "table2_inpainting", "--root", str(tmp_path / "root"),
                                      "--report", str(tmp_path / "report"), *mode], capsys)
        assert status == 2 and out == "" and err.startswith(f"error: --root {tmp_path / 'root'} already holds smoke-scale")
        assert "Give each scale its own --root" in err
    status, out, _ = _pipeline(["--scale", "smoke", "--only", "table2_inpainting", "--root", str(tmp_path / "root"),
                                "--report", str(tmp_path / "report"), "--dry-run"], capsys)
    assert status == 0 and "1/4 runs done" in out


def test_folders_that_are_files_are_named_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    swin = tmp_path / "swin"
    swin.mkdir()
    (swin / "swin_small_patch4_window7_224.pth").write_bytes(b"weights")
    garbled = tmp_path / "garbled"  # all three there, none a checkpoint: accepted by the dry run before
    garbled.mkdir()
    for size in ("tiny", "small", "base"):
        (garbled / f"swin_{size}_patch4_window7_224.pth").write_bytes(b"weights")
    for argv, says in (
        (["--imagenet", str(a_file)], f"--imagenet {a_file} is a file, not a folder"),
        (["--cityscapes", str(tmp_path / "missing")], "does not exist"),
        (["--root", str(a_file / "runs")], f"--root {a_file / 'runs'}: {a_file} is a file"),
        (["--report", str(a_file)], f"--report {a_file}: {a_file} is a file"),
        # A folder no one can make (as root only /proc refuses): found after the whole plan had run, with a traceback.
        (["--report", "/proc/afno_report"], "--report /proc/afno_report: no folder can be made in /proc"),
        # Figure 1's Swin rows would stop only after its pretraining, hours into the plan.
        (["--swin", str(swin)], f"--swin {swin} lacks swin_tiny_patch4_window7_224.pth, swin_base_patch4_window7_224.pth"),
        (["--swin", str(garbled)], f"--swin {garbled}: swin_tiny_patch4_window7_224.pth does not load as a PyTorch "
                                   "checkpoint (not a file torch.save writes)"),
    ):
        for mode in ([], ["--dry-run"]):
            status, out, err = _pipeline(["--scale", "paper", *argv, *mode], capsys)
            assert status == 2 and out == "" and err.startswith("error: ") and says in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "garbled", "swin"]


def test_the_plans_option_checks_leave_noise_steps_to_their_sweeps(tmp_path):
    """A noise step has no command of its own (its sweep's, rerun): composing its chosen points alone would check
    them against the demo's config and stop on a key only the experiment has."""
    from afno_repro.pipeline_checks import override_problem, value_problem

    rerun = NoiseStep("fig4_sparsity_noise", ["fig4_sparsity"], [["paper_model=table6/afno", "data.subset_fraction=0.1",
                                                                  "seed=1"]], "imagenet", tmp_path / "fig4_sparsity_seed1")
    assert rerun.command == [] and override_problem([rerun]) is None and value_problem([rerun]) is None
