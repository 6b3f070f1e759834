"""Every script in scripts/ answers bad input as train.py does: one paragraph naming the option and the fix,
exit status 2, no traceback, nothing measured or written first.

The classes of case: a count that must be positive (threads, batch, repeats, sizes, grids), a number that
must be > 0 (budgets, limits), a size a script's models or metrics cannot use, an output path whose folder
is missing or that is a folder, a device this machine lacks or that does not exist, a name that is not in
the configs or the registry. A few run as users type them (subprocess); the rest call ``main(argv)``.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from afno_repro.cli import available_device, output_file, positive_float, positive_int

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name: str):
    sys.path.insert(0, str(SCRIPTS))  # benchmark_scoring and gpu_check import their neighbours
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refused(name: str, argv: list[str], capsys) -> str:
    """``main(argv)``'s stderr, after checking it refused with status 2 and one paragraph, no traceback."""
    try:
        status = _script(name).main(argv)
    except SystemExit as exit:  # argparse's own error exit
        status = exit.code
    captured = capsys.readouterr()
    assert status == 2, captured.out + captured.err
    assert "Traceback" not in captured.err and "error:" in captured.err
    assert captured.out == "", "nothing is measured before the input is checked"
    return captured.err


COUNTS = [
    ("benchmark_masks", ["--n", "0"], "--n: 0 is not a whole number >= 1"),
    ("benchmark_masks", ["--repeats", "0"], "--repeats"),
    ("benchmark_masks", ["--threads", "-2"], "--threads"),
    ("benchmark_masks", ["--seed", "-1"], "--seed: -1 is not a whole number >= 0"),
    ("benchmark_masks", ["--size", "6"], "not a multiple of 4"),
    # More masks than memory holds (5 TB at 224x224): refused with the largest --n that fits, not an allocator traceback.
    ("benchmark_masks", ["--n", "100000000"], "masks of 224x224 need about 30,105.6 GB at once"),
    ("benchmark_mixers", ["--threads", "0"], "--threads"),
    ("benchmark_mixers", ["--batch", "0"], "--batch"),
    ("benchmark_mixers", ["--repeats", "0"], "--repeats"),
    ("benchmark_scoring", ["--batch", "0"], "--batch"),
    ("benchmark_scoring", ["--workers", "1", "0"], "--workers"),
    ("benchmark_scoring", ["--threads", "-1"], "--threads"),
    ("benchmark_segformer", ["--device", "cpu", "--size", "16"], "--size: 16 is not a whole number >= 32"),
    ("benchmark_segformer", ["--device", "cpu", "--threads", "-1"], "--threads"),
    ("benchmark_segformer", ["--device", "cpu", "--memory-limit-gb", "0"], "--memory-limit-gb: 0 is not a number > 0"),
    ("benchmark_segformer", ["--device", "cpu", "--time-limit-s", "nan"], "--time-limit-s"),
    ("benchmark_training", ["--device", "cpu", "--steps", "0"], "--steps"),
    ("model_table", ["--scaling", "--grids", "8", "0"], "--grids"),
    ("model_table", ["--scaling", "--dim", "0"], "--dim"),
    ("model_table", ["--scaling", "--repeats", "0"], "--repeats"),
    ("model_table", ["--scaling", "--threads", "0"], "--threads"),
    ("model_table", ["--scaling", "--time-budget", "-1"], "--time-budget"),
    ("model_table", ["--scaling", "--memory-budget", "0"], "--memory-budget"),
    ("fill_baselines", ["debug=smoke", "--workers", "0"], "--workers: 0 is not a whole number >= 1"),
    ("readings_check", ["--images", "0"], "--images"),
    ("readings_check", ["--threads", "0"], "--threads"),
    ("readings_check", ["--size", "5"], "no pixel whose 11x11 SSIM window fits"),
    ("readings_check", ["--size", "14"], "not a multiple of 4"),
]


@pytest.mark.parametrize(("name", "argv", "says"), COUNTS, ids=[f"{n}{' '.join(a)}" for n, a, _ in COUNTS])
def test_every_count_and_size_is_checked_before_the_work(name, argv, says, capsys):
    message = _refused(name, argv, capsys)
    assert says in message and argv[-1] in message


OUTPUTS = [("benchmark_mixers", ["--quick", "--json"]), ("benchmark_scoring", ["--json"]),
           ("benchmark_segformer", ["--device", "cpu", "--json"]), ("benchmark_training", ["--device", "cpu", "--json"]),
           ("gpu_check", ["--device", "cpu", "--out"])]


@pytest.mark.parametrize(("name", "argv"), OUTPUTS, ids=[name for name, _ in OUTPUTS])
def test_every_output_path_is_checked_before_the_work(name, argv, tmp_path, capsys):
    missing = tmp_path / "no_such_folder" / "out.json"
    message = _refused(name, [*argv, str(missing)], capsys)
    assert f"mkdir -p {missing.parent}" in message
    assert "is a folder" in _refused(name, [*argv, str(tmp_path)], capsys)
    assert not list(tmp_path.rglob("*.json"))
    # A path no one can write, whatever the permission bits say (os.access answers yes to root): refused before the
    # work, not after it with the results lost.
    assert "/proc/out.json cannot be written" in _refused(name, [*argv, "/proc/out.json"], capsys)


def test_an_output_path_that_can_be_written_is_left_as_it_was(tmp_path):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    old.write_text("earlier results")
    assert output_file(str(new)) == new and not new.exists()
    assert output_file(str(old)) == old and old.read_text() == "earlier results"


def test_options_that_would_be_ignored_are_refused(capsys):
    """Each was accepted and did nothing (exit 0): the study or the part it applies to was not run."""
    assert "--mixers, --dim only applies with --scaling" in _refused("model_table", ["--mixers", "afno", "--dim", "32"], capsys)
    assert "--params-only applies to the model table" in _refused("model_table", ["--params-only", "--scaling"], capsys)
    message = _refused("benchmark_scoring", ["--tasks", "fewshot", "--slow-path"], capsys)
    assert "--slow-path applies to the cityscapes task, which --tasks fewshot leaves out" in message
    assert "--workers applies to the inpainting task" in _refused("benchmark_scoring", ["--tasks", "fewshot", "--workers", "3"],
                                                                   capsys)
    assert "give one of them" in _refused("benchmark_training", ["--device", "cpu", "--compile", "--memory-only"], capsys)


@pytest.mark.parametrize(("override", "says"), [
    ("mixer=nosuch", "error: --override: mixer=nosuch names no config in configs/mixer/. Options: aff, afno,"),
    ("mixer.num_blocks=[x", "is not valid Hydra override syntax"),
    ("justaword", "`justaword` is not an override"),
])
def test_benchmark_training_checks_its_overrides_as_train_py_does(override, says, capsys):
    # Hydra's raw text before: its config search path, its parser's "no viable alternative at input".
    message = _refused("benchmark_training", ["--device", "cpu", "--smoke", "--memory-only", "--rows", "afno",
                                              "--override", override], capsys)
    assert says in message and "search path" not in message


def test_a_size_that_does_not_fit_in_memory_is_one_paragraph(capsys):
    """Five TB of activations: the allocator's RuntimeError was a traceback; now it names the fix."""
    status = _script("benchmark_mixers").main(["--quick", "--repeats", "1", "--batch", "100000000"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "error: this size does not fit in this machine's memory (DefaultCPUAllocator" in err and "smaller batch" in err


DEVICES = ["benchmark_mixers", "benchmark_segformer", "benchmark_training", "gpu_check"]


@pytest.mark.parametrize("name", DEVICES)
def test_every_device_is_checked(name, capsys):
    assert "'tpu' is not a device; use cpu, cuda" in _refused(name, ["--device", "tpu"], capsys)
    if not torch.cuda.is_available():
        message = _refused(name, ["--device", "cuda"], capsys)
        assert "no CUDA GPU" in message and "--device cpu" in message


def test_names_not_in_the_configs_or_the_registry(capsys):
    assert "choose from fewshot_demo" in _refused("model_table", ["--experiment", "nope"], capsys)
    assert "--mixers nope: no such mixer; choose from" in _refused("model_table", ["--scaling", "--mixers", "nope"], capsys)
    # A width a mixer cannot split is named before any case runs (it was "failed with exit code 1 (out of memory?)").
    message = _refused("model_table", ["--scaling", "--mixers", "afno", "--grids", "4", "--dim", "7"], capsys)
    assert "mixer 'afno' cannot be built at --dim 7" in message and "num_blocks=8 does not divide" in message
    assert "matches no row" in _refused("benchmark_training", ["--device", "cpu", "--smoke", "--rows", "nosuchrow"], capsys)
    # Two outputs asked for: --experiment beside --scaling was silently ignored.
    assert "--scaling and --experiment each choose what to print" in _refused(
        "model_table", ["--scaling", "--experiment", "fig4_blocks"], capsys)
    # A value train.py refuses, refused before any row is measured (it was reported as out of memory even at batch 1).
    message = _refused("benchmark_training", ["--device", "cpu", "--smoke", "--rows", "afno", "--override", "data.batch_size=-1"],
                       capsys)
    assert message.startswith("error: data.batch_size=-1 is not valid: it must be a whole number greater than 0")


def test_fill_baselines_without_a_data_folder_says_which_option(capsys):
    message = _refused("fill_baselines", ["experiment=table2_inpainting"], capsys)
    assert "data.root is not set" in message and "data.root=/data/imagenet" in message
    # A data module's own ValueError, wrapped by Hydra's instantiate, was a traceback in every script.
    message = _refused("fill_baselines", ["debug=smoke", "data.selection=foo"], capsys)
    assert message.startswith("error: InpaintingDataModule got selection='foo'") and "InstantiationException" not in message


def test_fill_baselines_checks_its_overrides_as_train_py_does(capsys):
    # A misspelt experiment was Hydra's raw text ("Could not find 'experiment/table2_inpaint'", its search path).
    message = _refused("fill_baselines", ["experiment=table2_inpaint"], capsys)
    assert "Did you mean experiment=table2_inpainting?" in message and "search path" not in message
    message = _refused("fill_baselines", ["experiment", "table2_inpainting"], capsys)
    assert "Write python scripts/fill_baselines.py ... experiment=table2_inpainting" in message
    message = _refused("fill_baselines", ["debug=smoke", "data.batchsize=4"], capsys)
    assert "Did you mean data.batch_size?" in message


def test_fill_baselines_refuses_values_train_py_refuses_and_a_cache_it_cannot_write(capsys):
    """Its whole job is storing fills: with a cache folder it could not write it solved every fill, stored none and
    said "done: 32 fills solved"; a value every run refuses was a Hydra traceback, or accepted."""
    message = _refused("fill_baselines", ["debug=smoke", "task.baseline_cache=/proc/fills"], capsys)
    assert message.startswith("error: cannot create or write the biharmonic fill cache folder /proc/fills")
    assert "runs_root=" in message
    assert "data.batch_size='abc' is not valid" in _refused("fill_baselines", ["debug=smoke", "data.batch_size=abc"], capsys)
    assert "run_baselines='maybe' is not true or false" in _refused("fill_baselines", ["debug=smoke", "run_baselines=maybe"],
                                                                    capsys)


def test_fill_baselines_refuses_runs_without_fills_to_keep(tmp_path, capsys):
    assert "scores no biharmonic baseline" in _refused("fill_baselines", ["experiment=table5_classification", "debug=smoke"],
                                                       capsys)
    message = _refused("fill_baselines", ["debug=smoke", "task.baseline_cache=null"], capsys)
    assert "keep no biharmonic fills" in message and "task.baseline_cache=null" in message
    assert "keep no biharmonic fills" in _refused("fill_baselines", ["debug=smoke", "run_baselines=false"], capsys)
    missing = tmp_path / "imagenet"
    assert str(missing) in _refused("fill_baselines", ["experiment=table2_inpainting", f"data.root={missing}"], capsys)
    assert not (tmp_path / "outputs").exists()


def test_gpu_check_keeps_an_earlier_check_it_would_overwrite(tmp_path, capsys):
    """The JSON is rewritten as each section ends, so a second check into the same --out replaced the first one's
    results with a header at its first write."""
    out = tmp_path / "gpu_check.json"
    out.write_text('{"earlier": "results"}')
    from gpu_check import SECTIONS

    assert _script("gpu_check").main(["--device", "cpu", "--smoke", "--out", str(out), "--skip", *SECTIONS]) == 0
    (kept,) = tmp_path.glob("gpu_check.*-*.json")
    assert kept.read_text() == '{"earlier": "results"}' and f"is kept as {kept}" in capsys.readouterr().out
    assert '"earlier"' not in out.read_text()


def test_gpu_check_work_folder_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = _refused("gpu_check", ["--device", "cpu", "--out", str(tmp_path / "x.json"), "--work", str(blocker / "w")], capsys)
    assert f"{blocker} is a file" in message and not (tmp_path / "x.json").exists()


def test_the_argument_types_accept_what_they_should():
    assert positive_int("3") == 3 and positive_float("0.5") == 0.5 and available_device("cpu") == "cpu"
    assert output_file("results.json") == Path("results.json")


@pytest.mark.parametrize("command", [
    "model_table.py --experiment nope",
    "benchmark_segformer.py --device cpu --size 64 --rows afno --json {tmp}/missing/x.json",
    # The same paths in process above; as typed, in the full tier only (each start of Python costs seconds).
    pytest.param("benchmark_masks.py --n 0", marks=pytest.mark.slow),
    pytest.param("model_table.py --scaling --mixers nope", marks=pytest.mark.slow),
])
def test_as_users_type_them(command, tmp_path):
    argv = command.format(tmp=tmp_path).split()
    result = subprocess.run([sys.executable, str(SCRIPTS / argv[0]), *argv[1:]], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr and result.stdout == ""
    assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1
