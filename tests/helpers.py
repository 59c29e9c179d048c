"""Small helpers the tests share: free ports, waiting for a server to answer, waiting for a
condition, and ``deploybot`` run in this process."""

import contextlib
import io
import os
import subprocess
import time
from collections.abc import Callable

from bot.cli import main
from bot.local.net import free_port, wait_http

__all__ = ["deploybot", "free_port", "wait_http", "wait_until"]


def deploybot(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``deploybot ARGS`` in this process (``bot.cli.main``), with ``env`` over the environment
    for the call: its exit code and what it printed, as ``subprocess.run`` gives them. For the
    tests where the process boundary is not what is tested: a child's start-up costs seconds
    of imports, and these tests run hundreds of commands."""
    out, err = io.StringIO(), io.StringIO()
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # only these change: other threads (the simulator) read the rest
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse's refusals
                code = exit.code if isinstance(exit.code, int) else 1
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(["deploybot", *args], code, out.getvalue(), err.getvalue())


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is truthy (never a fixed sleep); TimeoutError naming
    ``what``. For conditions on state no emulator is told of (AWS, a process's files): an
    emulator's own ``wait_for`` wakes only on that emulator's changes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout} s: {what}")
        time.sleep(0.05)
