"""The full tier's longest runs, made in the background while the other tests run.

Most of `make test-all`'s time goes into a few README commands that train for minutes (`make
reproduce-all SCALE=smoke`, `make demo`, the smoke sweeps). Each is one subprocess that keeps about one
of the two cores busy (small tensors, mostly Python), while most other tests leave the second core idle.
So the runs the selected tests need are queued, at the session's first test, on one background thread;
the tests that read them run last (conftest orders them), and a test that needs a run still queued makes
it itself, in its own thread, while the background thread goes on with the queue. Each run is made
exactly as its session fixture made it before (README commands as printed, from fresh temporary
folders), once per session, and only when a selected test needs it: the fast tier (`-m "not slow"`)
starts none.

A job is a function of the session's ``tmp_path_factory``, registered (:func:`job`) under the name of the
fixture that returns its result; the fixture calls :func:`result`. A job that fails raises its error in
every fixture that reads it, as a failing session fixture does.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any, Callable

# The queue, in order. Table 2's smoke sweep first: it takes seconds, and its many readers keep their place
# in the session. Then the longest run, and each job after the jobs it reads (table3_smoke finetunes
# table2_smoke's runs, fewshot_demo the demo's run). The other jobs' readers run last, in the opposite
# order (conftest), so a reader that reaches a job still queued takes it from the queue's far end.
ORDER = ("table2_smoke", "reproduced", "demo", "fewshot_demo", "table3_smoke", "table5_smoke", "table4_smoke")
IN_PLACE = ("table2_smoke",)

JOBS: dict[str, Callable[[Any], Any]] = {}
_futures: dict[str, Future] = {}
_lock = threading.Lock()
_pool: list[ThreadPoolExecutor] = []


def job(name: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register ``function(tmp_path_factory)`` as the job ``name`` (:func:`fixture` makes its fixture)."""
    assert name in ORDER, f"add {name} to background.ORDER"

    def register(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        JOBS[name] = function
        return function

    return register


def fixture(name: str) -> Any:
    """The session fixture ``name``: the result of the job ``name``."""
    import pytest

    def read(tmp_path_factory):
        return result(name, tmp_path_factory)

    read.__doc__ = JOBS[name].__doc__
    return pytest.fixture(scope="session", name=name)(read)


def position(fixturenames: list[str]) -> int:
    """Where a test that uses ``fixturenames`` runs: 0 (in place) when it reads no job but those of
    ``IN_PLACE``; else the later, the earlier in the queue the last job it reads is."""
    read = [ORDER.index(name) for name in fixturenames if name in JOBS and name not in IN_PLACE]
    return len(ORDER) - max(read) if read else 0


def start(fixturenames: set[str], tmp_path_factory: Any) -> list[str]:
    """Queue the jobs named in ``fixturenames`` on the background thread, in ``ORDER``; returns their names."""
    names = [name for name in ORDER if name in fixturenames and name in JOBS]
    with _lock:
        if names and not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="background"))
        for name in names:
            if name not in _futures:
                _futures[name] = _pool[0].submit(JOBS[name], tmp_path_factory)
    return names


def result(name: str, tmp_path_factory: Any) -> Any:
    """The job's result: waited for while it runs, made here and now when it was not started."""
    while True:
        with _lock:
            future = _futures.get(name)
            mine = future is None or future.cancel()  # not queued, or taken off the queue before it started
            if mine:
                future = _futures[name] = Future()
                future.set_running_or_notify_cancel()
        if mine:
            try:
                future.set_result(JOBS[name](tmp_path_factory))
            except BaseException as error:  # noqa: BLE001 - raised in every reader, as a future raises it
                future.set_exception(error)
        try:
            return future.result()
        except CancelledError:  # another reader took it off the queue meanwhile: wait for that reader's
            continue


def stop() -> None:
    """At the session's end: drop the jobs not started (the tests that needed them did not run), wait for the rest."""
    with _lock:
        pools = list(_pool)
        _pool.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)
