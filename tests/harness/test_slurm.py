"""The SLURM launcher, exercised: jobs submitted to the one-node cluster of scripts/slurm_local.sh.

The session fixture starts that cluster (as root: it may install slurm-wlm and munge with apt-get).
It skips, saying why, where it cannot run (not root, no Slurm and no apt-get, a Slurm configuration
of this machine's own, the node not ready within its bound); any other failure fails the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from afno_repro.slurm import ENDED, squeue_info_watcher
from readme import SKIPPED, argv, user_env

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm_local.sh"
TABLE2_ROWS = [f"table2/{row}" for row in ("attention", "long_short", "gfn", "afno")]
# Exit statuses of `slurm_local.sh start` that mean "this machine cannot host the cluster".
CANNOT_HOST = {3: "not root", 4: "Slurm is not installed and cannot be installed",
               5: "the node did not become ready in time", 6: "this machine has its own Slurm configuration"}


# README's commands for the local cluster, each run here as printed.
START = "scripts/slurm_local.sh start"
TABLE2 = "python train.py -m experiment=table2_inpainting debug=smoke hydra/launcher=slurm_local"
DDP = ("python train.py -m debug=smoke trainer=ddp trainer.accelerator=cpu trainer.devices=2 hydra/launcher=slurm_local "
       "hydra.launcher.tasks_per_node=2")


def _script(command: str, timeout: int = 900) -> subprocess.CompletedProcess:
    # The node gets this machine's CPUs from `nproc`, which counts OMP_NUM_THREADS (one in the test
    # session: tests/conftest.py) instead: a 1-CPU node would never run the 2-task job.
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    if command == "start" and START not in SKIPPED:
        return subprocess.run(argv(START), capture_output=True, text=True, timeout=timeout, env=env)
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout, env=env)


def _sweep(command: str, sweep_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    """A README command as printed, from ``cwd``, its sweep folder named so the test finds it."""
    return subprocess.run([*argv(command), f"hydra.sweep.dir={sweep_dir}"], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=user_env())


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A running one-node cluster (started once; a cluster already up is reused). Left running: its
    daemons detach from the test process, and a later session's `start` finds them up."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the SLURM launcher is not installed")
    result = _script("start")
    output = (result.stdout + result.stderr).strip()
    if result.returncode in CANNOT_HOST:
        for command in (START, TABLE2, DDP):
            SKIPPED[command] = f"no local Slurm cluster here ({CANNOT_HOST[result.returncode]})"
        pytest.skip(f"no local Slurm cluster ({CANNOT_HOST[result.returncode]}): {output[-500:]}")
    assert result.returncode == 0, f"scripts/slurm_local.sh start failed:\n{output}"


def _assert_quiet_about_sacct(stderr: str) -> None:
    # The cluster keeps no accounting: submitit must poll squeue, not flood the log with sacct errors.
    assert "Bypassing sacct error" not in stderr and "accounting storage is disabled" not in stderr, stderr[-2000:]


def test_squeue_info_watcher_reads_states_and_jobs_that_left_the_queue():
    """Without a cluster: squeue's lines become submitit's states; a job squeue no longer lists has ended."""
    pytest.importorskip("submitit")
    watcher = squeue_info_watcher(delay_s=600)
    for job_id in ("7_0", "7_1", "7_2", "8", "9"):
        watcher.register_job(job_id)
    info = watcher.read_info("7_[1-2%1]|PENDING|\n7_0|RUNNING|localhost\n8|FAILED|localhost\n")
    assert {job: info[job]["State"] for job in ("7_0", "7_1", "7_2", "8", "9")} == {
        "7_0": "RUNNING", "7_1": "PENDING", "7_2": "PENDING", "8": "FAILED", "9": ENDED}
    assert watcher._make_command()[0] == "squeue"


@pytest.mark.slurm
@pytest.mark.slow
def test_start_is_idempotent_stop_and_restart(slurm_cluster):
    result = _script("start", timeout=60)
    assert result.returncode == 0 and "already running" in result.stdout, result.stdout + result.stderr
    assert _script("status", timeout=60).returncode == 0
    stopped = _script("stop", timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert _script("status", timeout=60).returncode == 3
    restarted = _script("start", timeout=120)
    assert restarted.returncode == 0 and "ready" in restarted.stdout, restarted.stdout + restarted.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_table2_smoke_sweep_through_slurm(slurm_cluster, tmp_path, metrics_of, table2_smoke):
    """README's command: the four Table 2 rows as four SLURM jobs; the AFNO row's numbers are those of README's
    local smoke sweep (the session's table2_smoke)."""
    sweep_dir = tmp_path / "sweep"
    result = _sweep(TABLE2, sweep_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_quiet_about_sacct(result.stderr)
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 4  # ran as SLURM jobs
    runs = {m["paper_row"]: m for m in map(metrics_of, (p.parent for p in sweep_dir.glob("*/metrics.json")))}
    assert sorted(runs) == sorted(TABLE2_ROWS)
    for run in runs.values():
        assert run["status"] == "completed" and run["result"]["psnr"] is not None
        assert {"masked_input", "biharmonic"} <= set(run["baselines"])
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert sorted(r["paper_row"] for r in summary) == sorted(TABLE2_ROWS)
    assert "table2/afno" in (sweep_dir / "summary.md").read_text()

    numbers = ("psnr", "ssim", "loss", "masked_fraction", "num_images")
    local_test, slurm_test = table2_smoke["rows"]["table2/afno"]["test"], runs["table2/afno"]["test"]
    assert {k: local_test[k] for k in numbers} == {k: slurm_test[k] for k in numbers}  # seeded, CPU: bit-equal


@pytest.mark.slurm
@pytest.mark.slow
def test_two_task_ddp_through_slurm(slurm_cluster, tmp_path, metrics_of):
    """README's command: one job of two SLURM tasks, from which Lightning takes its ranks (ntasks-per-node =
    devices)."""
    sweep_dir = tmp_path / "ddp"
    result = _sweep(DDP, sweep_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_quiet_about_sacct(result.stderr)
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.err"))
    assert "MEMBER: 1/2" in logs and "MEMBER: 2/2" in logs  # two ranks, one per SLURM task
    (run_dir,) = [p.parent for p in sweep_dir.glob("*/metrics.json")]
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "completed" and metrics["result"]["psnr"] is not None
    assert {"masked_input", "biharmonic"} <= set(metrics["baselines"])
