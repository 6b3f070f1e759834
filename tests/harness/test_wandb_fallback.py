"""W&B never blocks a run for more than a few seconds nor fails it: with no credentials, no server,
a server that never answers, or one that refuses the run, the run goes offline and says why.

Every W&B server here is on loopback (a closed port, a socket that accepts and never answers, a
local HTTP server that refuses everything); HOME and NETRC point into tmp_path so no real
credentials are found. Nothing is sent to any other address.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from readme import user_env

pytestmark = pytest.mark.slow  # each test starts train.py or a fresh Python with W&B

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"

# The factory alone, in a fresh process (wandb's service and globals stay out of pytest's process).
FACTORY = """
import json, logging, sys, time
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from afno_repro.loggers import make_wandb_logger
logger = make_wandb_logger(mode=sys.argv[1], save_dir=sys.argv[2], probe_timeout=float(sys.argv[3]),
                           init_timeout=float(sys.argv[4]))
logger.log_metrics({"x": 1.0}, step=0)
run = logger.experiment
print(json.dumps({"offline": run.offline}))
"""


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server():
    """A loopback port whose connections are accepted (by the kernel's backlog) and never answered."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def refusing_server():
    """A loopback HTTP server that answers every request with 401, as W&B does for a bad API key."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = do_POST = _refuse

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _wandb_env(tmp_path: Path, base_url: str, **extra: str) -> dict:
    """W&B's side of a run's environment: a fresh HOME (no netrc, no settings) and the server at ``base_url``."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "NETRC": str(home / ".netrc"), "WANDB_BASE_URL": base_url, **extra}


def _factory(tmp_path: Path, env: dict, probe_timeout: float = 2.0, init_timeout: float = 5.0):
    save_dir = tmp_path / "factory"
    result = subprocess.run([sys.executable, "-c", FACTORY, "online", str(save_dir), str(probe_timeout),
                             str(init_timeout)], capture_output=True, text=True, timeout=180, env=user_env(env))
    assert result.returncode == 0, result.stderr[-3000:]
    # wandb's own telemetry may log after the result line (e.g. its failed exports at exit).
    (line,) = [line for line in result.stdout.splitlines() if line.startswith('{"offline"')]
    return json.loads(line), result.stdout, save_dir


def _smoke(train, tmp_path: Path, env: dict, *overrides: str):
    run_dir = tmp_path / "run"
    result = train("debug=smoke", "logger=wandb", "run_baselines=false", "count_flops=false", *overrides,
                   f"hydra.run.dir={run_dir}", env=env, timeout=300)
    return result, run_dir


def _assert_offline_run_announced(result, run_dir: Path, why: str) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run was written"
    output = result.stdout + result.stderr
    assert "W&B logs this run offline because" in output and why in output
    assert f"wandb sync {run_dir / 'wandb' / 'offline-run-*'}" in output
    # W&B's "The anonymous setting has no effect" line, for the anonymous=None Lightning passes unasked.
    assert "anonymous" not in output


def test_api_key_but_no_server_runs_offline_without_waiting(train, tmp_path):
    # Before: 98 s of retries, then a CommError traceback. Now the reachability probe finds the port closed
    # and the run goes offline before wandb.init is tried (which is what would wait).
    env = _wandb_env(tmp_path, f"http://127.0.0.1:{_closed_port()}", WANDB_API_KEY=FAKE_KEY)
    result, run_dir = _smoke(train, tmp_path, env)
    _assert_offline_run_announced(result, run_dir, "is not reachable (")
    assert "wandb.init failed" not in result.stdout + result.stderr


def test_online_mode_without_credentials_runs_offline(train, tmp_path):
    env = _wandb_env(tmp_path, f"http://127.0.0.1:{_closed_port()}", WANDB_MODE="online")
    result, run_dir = _smoke(train, tmp_path, env)
    _assert_offline_run_announced(result, run_dir, "no W&B credentials")


def test_disabled_mode_writes_no_wandb_run(train, tmp_path, metrics_of):
    env = _wandb_env(tmp_path, f"http://127.0.0.1:{_closed_port()}", WANDB_API_KEY=FAKE_KEY)
    result, run_dir = _smoke(train, tmp_path, env, "logger.wandb.mode=disabled")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(run_dir.glob("wandb/*run-*")) and "W&B logs this run offline" not in result.stdout
    assert metrics_of(run_dir)["status"] == "completed"
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_server_that_never_answers_costs_only_the_probe_timeout(tmp_path, silent_server):
    outcome, output, save_dir = _factory(tmp_path, _wandb_env(tmp_path, silent_server, WANDB_API_KEY=FAKE_KEY),
                                         probe_timeout=2.0)
    # The probe gave up after its timeout, and the run went offline without trying wandb.init (which waits).
    assert outcome["offline"], outcome
    assert re.search(r"is not reachable \((TimeoutError: timed out|no answer within 2 s)\)", output), output
    assert "wandb.init failed" not in output and f"wandb sync {save_dir / 'wandb' / 'offline-run-*'}" in output
    assert list((save_dir / "wandb").glob("offline-run-*"))


def test_server_that_refuses_the_run_falls_back_to_offline(tmp_path, refusing_server):
    # The server answers (the probe passes) but wandb.init fails: the run still goes offline.
    outcome, output, save_dir = _factory(tmp_path,
                                         _wandb_env(tmp_path, refusing_server, WANDB_API_KEY=FAKE_KEY), init_timeout=5.0)
    assert outcome["offline"], outcome
    assert "wandb.init failed" in output and "is not reachable" not in output
    assert list((save_dir / "wandb").glob("offline-run-*"))


def test_a_project_name_wandb_refuses_is_named_before_the_run(tmp_path):
    """`team/project` (the web UI's path) was W&B's UsageError traceback when the run started, even offline."""
    from afno_repro.loggers import make_wandb_logger

    with pytest.raises(ValueError, match=r"^logger.wandb.project='team/proj' is not a W&B name: .* give both: "
                                         r"\+logger.wandb.entity=team logger.wandb.project=proj\.$"):
        make_wandb_logger(mode="offline", project="team/proj", save_dir=str(tmp_path))
    assert not list(tmp_path.iterdir()), "nothing written for a refused name"
