"""scripts/model_table.py: Table 2's GFLOPs reproduce the paper's within 0.5% (the acceptance test of
the accounting), every row's parameters are within 5% of the paper's unless the row says why, the JSON
carries the documented keys, and the scaling study reports cases over budget instead of running them."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "model_table.py"


@pytest.fixture(scope="module")
def model_table():
    spec = importlib.util.spec_from_file_location("model_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def all_rows(model_table):
    """Parameters of every row (FLOP counting of all rows takes a minute, so the tests count Table 2's)."""
    return model_table.model_table(sorted(model_table.TABLES), flops=False)


@pytest.fixture(scope="module")
def table2_json(model_table):
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert model_table.main(["--json", "--table", "table2"]) == 0
    return json.loads(capture.getvalue())


def test_table2_json_reproduces_the_paper_gflops_within_half_a_percent(table2_json):
    # The paper's rows, in its order; a row a contributor adds (configs/paper_model/table2/<mixer>.yaml) has no
    # paper number and is listed after them.
    rows = [row for row in table2_json if row["paper_gflops"] is not None]
    assert [row["row"] for row in rows] == ["attention", "long_short", "gfn", "afno"]
    assert table2_json[: len(rows)] == rows
    for row in rows:
        assert {"table", "row", "params_m", "gflops", "paper_params_m", "paper_gflops"} <= row.keys()
        assert row["table"] == "table2"
        assert abs(row["gflops"] - row["paper_gflops"]) <= 0.005 * row["paper_gflops"], row
    afno = rows[-1]
    # Table 2's AFNO row (A.2: width 750, 1 block, 12 layers), identity skip: README "Model accounting"
    assert afno["gflops"] == pytest.approx(257.27, abs=0.01)
    assert afno["fft_gflops"] > 0 and rows[0]["fft_gflops"] == 0
    attention = rows[0]
    assert attention["attention_matmuls"] == "one"
    # Counting A V too adds a second N^2 d per layer: 357.22 + 12 * 3136**2 * 768 / 1e9 = 447.85
    assert attention["gflops_other_attention_convention"] == pytest.approx(447.9, abs=0.05)


def test_table4_counts_both_attention_matmuls_as_its_mixer_column_implies(model_table):
    row = model_table.measure_row("table4", "efficient_attention")
    assert row["attention_matmuls"] == "both" and row["paper_gflops"] == 380.7
    assert abs(row["mixer_gflops"] - row["paper_mixer_gflops"]) <= 0.005 * row["paper_mixer_gflops"]
    assert abs(row["gflops_delta_pct"]) <= 0.5


def test_every_row_is_listed_with_the_documented_keys(all_rows):
    tables = {row["table"] for row in all_rows}
    assert tables == {"table2", "table3", "table4", "table5", "table6"}
    keys = {(row["table"], row["row"]) for row in all_rows}
    assert {("table4", "afno_25pct"), ("table6", "afno_hard35"), ("table5", "afno"), ("table3", "gfn")} <= keys
    for row in all_rows:
        assert {"table", "row", "params_m", "paper_params_m", "paper_gflops", "note"} <= row.keys()
        assert row["params_m"] > 0 and (row["paper_gflops"] is None or row["paper_gflops"] > 0)
    table4 = {row["row"]: row for row in all_rows if row["table"] == "table4"}
    assert table4["afno"]["paper_gflops"] == 440.0 and table4["attention"]["paper_gflops"] is None


def test_a_row_added_to_table2_alone_is_not_listed_under_table3(model_table, tmp_path, monkeypatch):
    # Table 3 is counted from Table 2's models, but only those its sweep fine-tunes: a contributor's
    # configs/paper_model/table2/<row>.yaml that table3_fewshot does not name is Table 2's row only.
    import shutil

    from afno_repro import config

    configs = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, configs)
    shutil.copy(configs / "paper_model" / "table2" / "gfn.yaml", configs / "paper_model" / "table2" / "gfn_wide.yaml")
    monkeypatch.setattr(config, "CONFIG_DIR", configs)
    assert model_table.table_rows("table2") == ["attention", "long_short", "gfn", "afno", "gfn_wide"]
    assert model_table.table_rows("table3") == ["attention", "long_short", "gfn", "afno"]


def test_params_within_five_percent_unless_the_row_says_why(all_rows):
    for row in all_rows:
        if row["paper_params_m"] is not None and row["note"] is None:
            assert abs(row["params_m"] - row["paper_params_m"]) <= 0.05 * row["paper_params_m"], row


def test_text_table_prints_conventions_and_notes(model_table, all_rows, table2_json):
    text = model_table.format_model_table(table2_json + all_rows)
    assert "convention (attn one)" in text and "convention (attn both)" in text
    assert all(row["note"] in text for row in all_rows if row["note"])


def test_scaling_study_fits_exponents_and_skips_cases_over_budget(model_table):
    study = model_table.scaling_study(("gfn",), (8, 12, 16), dim=8, repeats=1, time_budget=1e-9, memory_budget=8)
    measured = [case for case in study["cases"] if not case["does_not_fit"]]
    skipped = [case for case in study["cases"] if case["does_not_fit"]]
    assert [case["grid"] for case in measured] == [8, 12] and [case["grid"] for case in skipped] == [16]
    assert "time-budget" in skipped[0]["does_not_fit"]
    assert all(case["seconds"] > 0 and case["peak_mib"] >= 0 for case in measured)
    assert study["exponents"]["gfn"]["time"] is not None
    assert "does not fit" in model_table.format_scaling(study)
    # Its timings say what timed them: one thread (the default) of this machine's CPU, and torch's version.
    assert study["device"].startswith("cpu: ") and ", 1 thread of " in study["device"]
    assert f"on {study['device']}, torch {model_table.torch.__version__}" in model_table.format_scaling(study)


def test_afno_conv1d_skip_reading_adds_n_c_squared_per_layer():
    """A.2's text reading (a Conv1d "bias" per token) adds N*C^2 per layer: 257.27 + 12 * 3136 * 750**2 / 1e9
    = 278.4 GFLOPs (README "Model accounting")."""
    import hydra.utils
    import torch

    from afno_repro.analysis import count_flops
    from afno_repro.config import compose

    cfg = compose(["paper_model=table2/afno", "mixer.skip=conv1d"])
    with torch.device("meta"):
        model = hydra.utils.instantiate(cfg.backbone)
    assert count_flops(model, (1, 3, 224, 224)).gflops == pytest.approx(278.4, rel=0.005)


def test_experiment_mode_lists_every_sweep_point(model_table):
    """`--experiment fig4_blocks` prints one line per run with its width and parameters."""
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert model_table.main(["--experiment", "fig4_blocks", "--params-only", "--json"]) == 0
    entries = json.loads(capture.getvalue())
    blocks = [int(e["overrides"][-1].split("=")[1]) for e in entries]
    assert blocks == [1, 2, 4, 8, 16, 32, 64]
    assert all(e["width"] % k == 0 for e, k in zip(entries, blocks))
    reference = entries[2]["params_m"]
    assert all(abs(e["params_m"] - reference) / reference < 0.01 for e in entries[:5])
