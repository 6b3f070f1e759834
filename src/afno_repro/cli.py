"""What every script in ``scripts/`` shares on the command line: argument types that refuse a bad value
before any work starts, and the one-paragraph error with exit status 2 that ``train.py`` gives.

The types are for ``argparse``'s ``type=``: a bad value ends in argparse's own usage line and
``error: argument --n: ...`` (exit status 2), naming the option, the value and the fix. Checks that need
more than one option, or the configs, raise :class:`UsageError`; :func:`user_errors` wraps a script's
``main(argv)`` so that such an error, or any other error meant for the user (``ValueError``, including
the data code's :class:`~afno_repro.data.errors.DataError`, a missing file, a Hydra config that does not
compose, ``train.py``'s ``UserFacingError``), is printed as ``error: <message>`` on stderr and ``main``
returns 2; anything else keeps its traceback (a bug).

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="demo")
>>> _ = parser.add_argument("--n", type=positive_int)
>>> parser.parse_args(["--n", "3"]).n
3
>>> positive_int("0")
Traceback (most recent call last):
    ...
argparse.ArgumentTypeError: 0 is not a whole number >= 1; give one, e.g. 1.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["UsageError", "available_device", "available_ram_bytes", "device_name", "nonnegative_int", "output_file",
           "positive_float", "positive_int", "resident_bytes", "usable_cores", "user_errors", "whole_number_at_least"]


class UsageError(ValueError):
    """Bad input to a script; the message names it and says what to give instead."""


def whole_number_at_least(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number ``>= minimum``; ``meaning`` adds why (e.g. ``"0: torch's default"``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            why = f" ({meaning})" if meaning else ""
            raise argparse.ArgumentTypeError(f"{text} is not a whole number >= {minimum}{why}; give one, e.g. {max(minimum, 1)}.")
        return value

    parse.__name__ = f"whole number >= {minimum}"  # argparse names the type in its messages
    return parse


positive_int = whole_number_at_least(1)
nonnegative_int = whole_number_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number > 0; give one, e.g. 1.5.")
    return value


def available_device(text: str) -> str:
    """An argparse type: a torch device this machine has (``cpu``, ``cuda``, ``cuda:<index>``, ``mps``)."""
    import torch

    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:<index> (one GPU).") from None
    if parsed.type == "cpu":
        return text
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text}: torch sees no CUDA GPU here (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda or 'none: a CPU-only build'}); use --device cpu, or run on a machine with a GPU.")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} GPU(s), cuda:0 ... cuda:{count - 1}.")
        return text
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return text
    raise argparse.ArgumentTypeError(f"{text}: the scripts run on cpu or cuda (cuda:<index> for one GPU).")


def output_file(text: str) -> Path:
    """An argparse type: a file the script may write at the end, checked before the work starts
    (its folder exists and is writable; the path is not a folder)."""
    path = Path(text).expanduser()
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path in it, e.g. {path / 'results.json'}.")
    if not folder.is_dir():
        state = "is a file" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text}: its folder {folder} {state}; create the folder first "
                                         f"(mkdir -p {folder}) or give a path in an existing one.")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text} cannot be written by this user (permission denied); give a path "
                                         "in a folder you can write.")
    # os.access answers yes to root everywhere (/proc, /sys, a read-only mount): open it as the script will, and
    # leave it as it was (an existing file untouched, a new one removed), so the work is not lost at the end.
    existed = path.exists()
    try:
        with open(path, "a" if existed else "x"):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text} cannot be written ({error.strerror or error}); give a path in a "
                                         "folder you can write.") from None
    if not existed:
        path.unlink()
    return path


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. under ``taskset`` or a Slurm
    allocation), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def processor_name() -> str:
    """The CPU's model as the system names it (``model name`` of ``/proc/cpuinfo``), else its architecture."""
    import platform

    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str = "cpu", threads: int | None = None) -> str:
    """The device a measurement ran on, in the words a reader compares timings by: ``cuda: <GPU name>``, or
    ``cpu: <model>, <threads> thread(s) of <usable> usable core(s)`` (``threads``: the intra-op threads the
    measurement used, torch's count when not given).

    >>> device_name("cpu", threads=1).startswith("cpu: ") and ", 1 thread of " in device_name("cpu", threads=1)
    True
    """
    import torch

    if str(device).startswith("cuda"):
        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    threads = torch.get_num_threads() if threads is None else threads
    cores = usable_cores()
    return (f"cpu: {processor_name()}, {threads} thread{'s' if threads != 1 else ''} of {cores} usable "
            f"core{'s' if cores != 1 else ''}")


def resident_bytes() -> int:
    """This process's resident memory now (``/proc/self/statm``; Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_ram_bytes() -> int | None:
    """The memory a new allocation can have now (``MemAvailable`` of ``/proc/meminfo``), or None where
    the system does not say (not Linux)."""
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import ConfigCompositionException, OverrideParseException

    types: list[type[BaseException]] = [ValueError, OSError,  # a missing file, a full disk, a read-only folder
                                        ConfigCompositionException, OverrideParseException]
    from afno_repro.failures import UserFacingError  # train.py's own user-facing errors (no Lightning import)

    return (*types, UserFacingError)


def out_of_memory_message(error: BaseException) -> str | None:
    """The paragraph for a size this machine cannot hold (torch's allocator failing on the CPU or a GPU), naming
    the fix; None for any other error.

    >>> out_of_memory_message(RuntimeError("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: "
    ...                                    "can't allocate memory: you tried to allocate 400000000000 bytes."))
    "this size does not fit in this machine's memory (DefaultCPUAllocator: can't allocate memory: you tried to allocate 400000000000 bytes.): give a smaller batch or size (--batch, --size, ...)."
    """
    import torch

    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, torch.OutOfMemoryError) or (isinstance(error, RuntimeError) and "can't allocate memory" in text):
        where = text[text.index("DefaultCPUAllocator"):] if "DefaultCPUAllocator" in text else text
        return (f"this size does not fit in this machine's memory ({where}): give a smaller batch or size (--batch, "
                "--size, ...).")
    return None


def user_errors(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a script's ``main(argv) -> status``: an error meant for the user (module docstring) is printed
    as one paragraph, ``error: <message>``, on stderr, and the status is 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except Exception as error:  # noqa: BLE001 - classified here, re-raised when not the user's
            if (message := out_of_memory_message(error)) is not None:
                print(f"error: {message}", file=sys.stderr, flush=True)
                return 2
            if not isinstance(error, _user_error_types()):
                from afno_repro.failures import user_cause

                # What a config's target raised, wrapped by Hydra's instantiate (a data module's ValueError).
                cause = user_cause(error)
                if cause is None:
                    raise
                error = cause
            from afno_repro.data.errors import user_message

            message = " ".join(user_message(error).split()) if not isinstance(error, OSError) or not error.filename \
                else f"{error.filename}: {error.strerror or error}"
            print(f"error: {message}", file=sys.stderr, flush=True)
            return 2

    return wrapped
