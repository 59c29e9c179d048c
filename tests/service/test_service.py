"""The hello-world service, started by its console script and spoken to over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from service import __version__
from tests.helpers import free_port, wait_http

RELEASE_ENV = ("RELEASE_VERSION", "RELEASE_COMMIT")


@contextlib.contextmanager
def serve(release_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``hello-world`` in a subprocess whose RELEASE_* environment is exactly ``release_env``."""
    port = free_port()
    exe = shutil.which("hello-world") or os.path.join(
        os.path.dirname(sys.executable), "hello-world"
    )
    env = {k: v for k, v in os.environ.items() if k not in RELEASE_ENV} | release_env
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with serve({}) as running:
        yield running


def health(base: str) -> dict[str, str]:
    with urllib.request.urlopen(base + "/health") as resp:
        assert resp.status == 200
        body: dict[str, str] = json.loads(resp.read())
    return body


def test_root_answers_plain_hello_world(served: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = served
    with urllib.request.urlopen(base + "/") as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        assert resp.read() == b"hello-world"


def test_health_without_a_release_says_dev(served: tuple[str, subprocess.Popen[str]]) -> None:
    """A build told nothing (a local run or `docker build` without arguments) claims no release."""
    base, _ = served
    assert health(base) == {"status": "ok", "version": "dev", "commit": "dev"}
    # Not the package's version: v4.4.0 once said "0.1.0" here.
    assert __version__ not in health(base).values()


def test_health_reports_the_release_from_the_environment() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    release = {"RELEASE_VERSION": "v4.4.0-ecr-ecs-fargate", "RELEASE_COMMIT": commit}
    with serve(release) as (base, _):
        assert health(base) == {
            "status": "ok",
            "version": "v4.4.0-ecr-ecs-fargate",
            "commit": commit,
        }


def test_health_treats_blank_release_values_as_unknown() -> None:
    # What `--build-arg RELEASE_VERSION=` (an empty step output in CI) would leave behind.
    with serve({"RELEASE_VERSION": " ", "RELEASE_COMMIT": ""}) as (base, _):
        assert health(base) == {"status": "ok", "version": "dev", "commit": "dev"}


def test_unknown_path_is_404(served: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = served
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/nope")
    assert err.value.code == 404


def test_sigterm_stops_cleanly_and_requests_were_logged(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    base, proc = served
    urllib.request.urlopen(base + "/").read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    out = proc.stdout.read() if proc.stdout else ""
    # One JSON line per request (service/logs.py), which the stack's 5xx metric filter reads.
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {"type": "access", "method": "GET", "path": "/", "status": 200} in [
        {k: line[k] for k in ("type", "method", "path", "status")} for line in access
    ]
    assert all(
        line["protocol"] == "HTTP/1.1" and line["time"].endswith("+00:00") for line in access
    )
