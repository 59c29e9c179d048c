"""The README's commands on a stock Debian 12 (needs Docker): make demo, install and test.

Debian's python3 is "externally managed" (PEP 668) and there is no uv: the Makefile must install
uv without touching the system Python and use it by path. The machine is the local base image
(.ci/steps/10-docker.sh, a debootstrap of bookworm) with only python3, python3-venv, make and git
from apt, and pip removed; a user account, not root, runs make, as a person would. It reaches
PyPI the way this machine does: the host's CA bundle (PIP_CERT, SSL_CERT_FILE) stands in for a
network without a TLS-inspecting proxy. uv's and pip's downloads are kept in a Docker volume
between runs (DEBIAN_CACHE_VOLUME), so only the first run fetches every wheel.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.test_images import BASE_IMAGE, ROOT, docker, engine
from tests.helpers import free_port

pytestmark = pytest.mark.container

__all__ = ["engine"]  # the fixture: a Docker engine and the base image, or skip (or fail in CI)

STOCK_IMAGE = "deploybot-test/debian-stock:bookworm"
DEBIAN_CACHE_VOLUME = "deploybot-test-debian-cache"
USER_HOME = "/home/dev"
CHECKOUT = f"{USER_HOME}/deploybot"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# What a person installs on a stock Debian for the README, and nothing else.
STOCK = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
       python3 python3-venv make git >/dev/null \\
    && apt-get purge -y -qq python3-pip >/dev/null \\
    && rm -rf /var/lib/apt/lists/* \\
    && useradd --create-home --shell /bin/bash dev \\
    && install -d -o dev -g dev {USER_HOME}/.cache
"""


def say(request: pytest.FixtureRequest, line: str) -> None:
    """A line shown in every run, not only on failure: these timings are worth watching."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[debian] {line}")


@pytest.fixture(scope="module")
def stock_image(engine: None, request: pytest.FixtureRequest) -> str:
    start = time.monotonic()
    subprocess.run(
        ["docker", "build", "--network", "host", "-t", STOCK_IMAGE, "-"],
        input=STOCK,
        text=True,
        capture_output=True,
        check=True,
        timeout=600,
    )
    say(request, f"{STOCK_IMAGE} built in {time.monotonic() - start:.1f}s")
    return STOCK_IMAGE


@pytest.fixture
def machine(stock_image: str) -> Iterator[str]:
    """A running stock Debian container holding this checkout's files, owned by `dev`."""
    name = f"deploybot-test-debian-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--network", "host", "--name", name,
        "-e", f"PIP_CERT={CA_BUNDLE}", "-e", f"SSL_CERT_FILE={CA_BUNDLE}",
        "-v", f"{DEBIAN_CACHE_VOLUME}:{USER_HOME}/.cache",
        stock_image, "sleep", "infinity",
    )  # fmt: skip
    try:
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        tracked = [f for f in files.split(b"\0") if f and (ROOT / f.decode()).is_file()]
        tar = subprocess.run(
            ["tar", "--null", "-T", "-", "-c"],
            input=b"\0".join(tracked),
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        docker("exec", "-u", "dev", name, "mkdir", "-p", CHECKOUT)
        subprocess.run(
            ["docker", "exec", "-i", "-u", "dev", name, "tar", "-x", "-C", CHECKOUT],
            input=tar,
            check=True,
            timeout=120,
        )
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def in_machine(
    name: str, command: str, user: str = "dev", timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return docker(
        "exec", "-u", user, "-w", CHECKOUT, name, "bash", "-lc", command,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_make_demo_then_make_install_on_a_stock_debian(
    machine: str, request: pytest.FixtureRequest
) -> None:
    # The premise: this python3 installs nothing of its own, and there is no uv.
    assert in_machine(machine, "python3 -m pip install --quiet uv").returncode != 0
    assert in_machine(machine, "command -v uv").returncode != 0

    port = free_port()
    log = Path(f"/tmp/{machine}-demo.log")
    start = time.monotonic()
    demo = subprocess.Popen(
        ["docker", "exec", "-u", "dev", "-w", CHECKOUT, machine, "setsid", "-w", "bash", "-c",
         f"echo $$ > /tmp/demo.pid; exec make demo DEMO_PORT={port}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        page = ""
        deadline = start + 900
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    page = resp.read().decode()
                    break
            except OSError:
                time.sleep(1)
        output = log.read_text(errors="replace")
        assert "deploybot playground" in page, f"the page never answered:\n{output[-4000:]}"
        took = time.monotonic() - start
        assert "installed uv" in output and ".tools/uv" in output, output[-4000:]
        # The README's commands, as the page shows them: /deploy-status, not /status.
        assert "/deploy-status" in page and 'data-cmd="/status"' not in page
        say(request, f"make demo: the page answered after {took:.0f}s")
    finally:
        in_machine(machine, "kill -TERM -- -$(cat /tmp/demo.pid)", timeout=30)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
    assert "Playground stopped." in log.read_text(errors="replace")
    log.unlink(missing_ok=True)

    start = time.monotonic()
    install = in_machine(machine, "make install")
    assert install.returncode == 0, install.stdout + install.stderr
    say(request, f"make install again: {time.monotonic() - start:.1f}s")
    # uv by path, in .tools/: the system Python was never touched.
    assert in_machine(machine, "test -x .tools/uv/bin/uv").returncode == 0
    assert in_machine(machine, "python3 -c 'import uv'").returncode != 0
    cli = in_machine(machine, ".venv/bin/deploybot --help")
    assert cli.returncode == 0 and "manifest" in cli.stdout
    # README's other command, on a few tests (the whole suite runs in CI itself).
    start = time.monotonic()
    tests = in_machine(machine, "make test PYTEST_ARGS='-q tests/bot/test_tags.py'")
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout
    say(request, f"make test (tests/bot/test_tags.py): {time.monotonic() - start:.1f}s")


def test_without_python3_venv_one_line_says_what_to_install(machine: str) -> None:
    purge = in_machine(
        machine, "apt-get purge -y -qq python3-venv python3.11-venv", user="root", timeout=120
    )
    assert purge.returncode == 0, purge.stderr
    done = in_machine(machine, "make install", timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("make: uv")]
    assert len(lines) == 1, done.stderr
    assert "apt-get install python3-venv" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
