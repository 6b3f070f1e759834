"""The commands README prints, and a record of the ones this test session really ran.

Every command README prints is run by one test, exactly as printed. A test gets a command's argument
list from :func:`argv`, which refuses a command README does not print and records the command as run;
``tests/test_readme.py::test_every_readme_command_was_run`` (the session's last test under
``make test-all``) then fails for any README command no test ran. A test may only change the data
path (``/data/imagenet`` and the other dataset folders become tiny datasets written in the real
layouts) or run from a temporary working directory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# The data folders README's paper-scale commands name.
DATA_ROOTS = ("/data/imagenet", "/data/datasetgan", "/data/cityscapes", "/data/swin")
# Commands this session ran through argv(); read by the coverage test at the end of the session.
RAN: set[str] = set()


def readme_commands() -> list[str]:
    """The commands README prints: lines of its shell code blocks and `python ...` / `make ...` code spans."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(line)
    for span in re.findall(r"`((?:python|make) [^`]+)`", README):
        if "<" not in span:  # `wandb sync <run dir>/...`-style templates are prose, not commands
            commands.append(span.strip())
    return list(dict.fromkeys(commands))


def data_roots_of(command: str) -> list[str]:
    """The README data folders the command names (in its `data.root=` or its `--imagenet`-style options)."""
    words = command.split()
    return [root for root in DATA_ROOTS if f"data.root={root}" in words or root in words]


def argv(command: str, data: dict[str, Path] | None = None) -> list[str]:
    """``command`` as README prints it, ready for subprocess, with the data folders replaced by ``data``
    (README folder -> a tiny dataset). ``python X`` runs this environment's Python on the checkout's
    ``X``; ``make T`` runs the checkout's Makefile from the working directory the test chooses (the
    Makefile writes outputs/ there)."""
    assert command in readme_commands(), f"README does not print {command!r}"
    RAN.add(command)
    words = []
    for word in command.split():
        for readme_root, path in (data or {}).items():
            word = word.replace(f"data.root={readme_root}", f"data.root={path}")
            word = str(path) if word == readme_root else word
        words.append(word)
    if words[0] == "python":
        if words[1] == "-m":
            return [sys.executable, *words[1:]]
        return [sys.executable, str(ROOT / words[1]), *words[2:]]
    if words[0] == "make":
        return ["make", "-f", str(ROOT / "Makefile"), *words[1:]]
    if words[0].startswith("scripts/"):
        return ["bash", str(ROOT / words[0]), *words[1:]]
    raise AssertionError(f"no way to run {command!r}")


def user_env(extra: dict | None = None) -> dict:
    """The environment of a user with no W&B credentials or settings of their own (and HYDRA_FULL_ERROR
    unset, so a user error reads as it does for them)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "HYDRA_FULL_ERROR")}
    env.update(extra or {})
    return env


# README commands whose test could not run here, and why (e.g. no local Slurm cluster): the coverage
# test names them instead of failing.
SKIPPED: dict[str, str] = {}


def record(command: str) -> None:
    """Record ``command`` as run, where a test checked that another command it ran runs exactly it
    (`make demo` prints the `python train.py` it runs)."""
    assert command in readme_commands(), f"README does not print {command!r}"
    RAN.add(command)


def run_until_training_starts(command: list[str], cwd: Path, env: dict, preexec_fn) -> tuple[bool, int, str]:
    """Run ``command`` until Lightning prints its layer table (training has started), then Ctrl-C its process
    group as a terminal does; returns (started, exit status, output)."""
    import os
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, preexec_fn=preexec_fn)
    lines, started = [], False
    try:
        for line in process.stdout:
            lines.append(line)
            if "Trainable params" in line:
                started = True
                time.sleep(1.0)
                os.killpg(process.pid, signal.SIGINT)
                break
        rest, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return started, process.returncode, "".join(lines) + rest
