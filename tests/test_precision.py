"""The precision rule: what `trainer.precision=auto` and `matmul_precision=auto` become on each device."""

import pytest
import torch

from afno_repro.precision import resolve_precision


def test_auto_is_float32_exact_on_a_cpu():
    resolved = resolve_precision("auto")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CPU reading is checked with accelerator=cpu below")
    assert (resolved["trainer"], resolved["float32_matmul"], resolved["device"]) == ("32-true", "highest", "cpu")
    assert "slower than float32 on a CPU" in resolved["rule"]


def test_a_cpu_run_on_a_gpu_machine_stays_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    resolved = resolve_precision("cpu")
    assert (resolved["trainer"], resolved["float32_matmul"]) == ("32-true", "highest")


@pytest.mark.parametrize("bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_gpu_is_bf16_where_the_gpu_has_it(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Some GPU")
    for accelerator in ("auto", "gpu", "cuda"):
        resolved = resolve_precision(accelerator)
        assert (resolved["trainer"], resolved["float32_matmul"]) == (expected, "high")
        assert resolved["device"] == "cuda (Some GPU)" and "TF32" in resolved["rule"]


def test_explicit_values_are_used_as_given(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Some GPU")
    resolved = resolve_precision("gpu", "32-true", "highest")
    assert (resolved["trainer"], resolved["float32_matmul"]) == ("32-true", "highest")
    assert resolved["rule"].count("as given") == 2


@pytest.mark.parametrize("precision, matmul, named", [("fp8", "auto", "trainer.precision='fp8'"),
                                                      ("auto", "tf32", "matmul_precision='tf32'")])
def test_unknown_values_name_the_option_and_the_choices(precision, matmul, named):
    with pytest.raises(ValueError) as error:
        resolve_precision("cpu", precision, matmul)
    assert named in str(error.value) and "auto" in str(error.value)


def test_train_refuses_an_unknown_precision_before_building_anything(tmp_path, capsys):
    from afno_repro.config import compose
    from afno_repro.train import main

    with pytest.raises(SystemExit) as stop:
        main(compose(["debug=smoke", "trainer.precision=fp16"], output_dir=str(tmp_path / "run")))
    assert stop.value.code == 2
    assert "trainer.precision='fp16' is not a precision" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
