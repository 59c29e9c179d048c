"""The hello-world service, started by its console script and spoken to over HTTP."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    exe = shutil.which("hello-world") or os.path.join(
        os.path.dirname(sys.executable), "hello-world"
    )
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_root_answers_plain_hello_world(served: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = served
    with urllib.request.urlopen(base + "/") as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        assert resp.read() == b"hello-world"


def test_health_gives_status_and_version(served: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = served
    with urllib.request.urlopen(base + "/health") as resp:
        body = json.loads(resp.read())
    assert body == {"status": "ok", "version": __version__}
    assert __version__ != "0.0.0"


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
    assert '"GET / HTTP/1.1" 200' in out
