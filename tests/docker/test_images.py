"""The two images build on a slim base, run as non-root, answer, and turn healthy (needs Docker).

Builds use the local Debian base image that .ci/steps/10-docker.sh makes (no registry is
reachable here) unless DEPLOYBOT_BASE_IMAGE names another; both run with --network host.
Without a Docker engine these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, APP_TOKEN, BOT_TOKEN, DEPLOYS, LocalStack
from tests.helpers import free_port, wait_http

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("DEPLOYBOT_BASE_IMAGE", "deploybot-base:bookworm")
# The local base carries the host's CA bundle; pip and uv inside the build are told to use it.
CA_BUNDLE = os.environ.get(
    "DEPLOYBOT_CA_BUNDLE",
    "/etc/ssl/certs/ca-certificates.crt" if BASE_IMAGE.startswith("deploybot-base") else "",
)
IN_CI = os.environ.get("CI", "").lower() == "true"
# release.yml's platforms and build-args for a tag (cloudformation/*.yml: RuntimePlatform X86_64).
PLATFORM = "linux/amd64"
RELEASE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
RELEASE_BUILD_ARGS = {"RELEASE_VERSION": "v4.4.0-ecr-ecs-fargate", "RELEASE_COMMIT": RELEASE_COMMIT}


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}, and CI=true: .ci/steps/10-docker.sh should have prepared it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> None:
    try:
        ok = docker("info", timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        _unavailable("no Docker engine answers")
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0 and (
        BASE_IMAGE.startswith("deploybot-base")
    ):
        _unavailable(f"the base image {BASE_IMAGE} is missing (bash .ci/steps/10-docker.sh)")


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float
    size_mb: float


def build(
    dockerfile: str,
    tag: str,
    request: pytest.FixtureRequest,
    build_args: dict[str, str] | None = None,
) -> Built:
    """``docker build`` as CI does it: for linux/amd64, the platform the tasks declare."""
    start = time.monotonic()
    args = ["build", "--platform", PLATFORM, "--network", "host", "-f", dockerfile, "-t", tag]
    given = {"BASE_IMAGE": BASE_IMAGE, "CA_BUNDLE": CA_BUNDLE} | (build_args or {})
    for key, value in given.items():
        args += ["--build-arg", f"{key}={value}"]
    docker(*args, ".", timeout=900)
    seconds = time.monotonic() - start
    size = int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())
    built = Built(tag, seconds, size / 1e6)
    line = f"{dockerfile}: built {tag} on {BASE_IMAGE} in {seconds:.1f}s, {built.size_mb:.0f} MB"
    # Shown in every run, not only on failure: build time and size are worth watching.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[image] {line}")
    return built


@pytest.fixture(scope="module")
def service_image(engine: None, request: pytest.FixtureRequest) -> Built:
    return build("docker/Dockerfile", "deploybot-test/hello-world:latest", request)


@pytest.fixture(scope="module")
def bot_image(engine: None, request: pytest.FixtureRequest) -> Built:
    return build("docker/bot.Dockerfile", "deploybot-test/bot:latest", request)


@pytest.fixture(scope="module")
def release_service_image(service_image: Built, request: pytest.FixtureRequest) -> Built:
    """The service image as release.yml builds it for a tag: the same layers, plus its release."""
    return build(
        "docker/Dockerfile", "deploybot-test/hello-world:release", request, RELEASE_BUILD_ARGS
    )


@dataclass(frozen=True)
class Running:
    id: str
    port: int

    def logs(self) -> str:
        r = docker("logs", "--tail", "40", self.id, check=False)
        return r.stdout + r.stderr


@pytest.fixture
def run_container() -> Iterator[list[str]]:
    """Collects container ids; removes them all at the end."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        docker("rm", "-f", cid, check=False)


def start(
    image: str,
    ids: list[str],
    port: int,
    env: dict[str, str],
    cmd: list[str],
    start_period: str = "30s",
) -> Running:
    """Run ``image`` on the host network, its health check probing ``port`` every second."""
    args = ["run", "-d", "--network", "host", "--name", f"deploybot-test-{uuid.uuid4().hex[:8]}"]
    args += ["--health-interval", "1s", "--health-start-period", start_period]
    for key, value in {**env, "HEALTHCHECK_PORT": str(port)}.items():
        args += ["-e", f"{key}={value}"]
    cid = docker(*args, image, *cmd).stdout.strip()
    ids.append(cid)
    return Running(cid, port)


def wait_answer(c: Running, path: str, timeout: float = 30) -> None:
    """Wait for the container to answer over HTTP; fail at once, with its logs, if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_http(f"http://127.0.0.1:{c.port}{path}", timeout=1)
            return
        except TimeoutError as exc:
            running = docker("inspect", "-f", "{{.State.Running}}", c.id).stdout.strip()
            if running != "true" or time.monotonic() > deadline:
                raise AssertionError(
                    f"{path} never answered (running={running}):\n{c.logs()}"
                ) from exc


def wait_healthy(c: Running, timeout: float = 45) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "-f", "{{json .State}}", c.id).stdout)
        status = (state.get("Health") or {}).get("Status", "none")
        if status in ("healthy", "unhealthy") or not state["Running"]:
            break
        time.sleep(0.5)
    return status


def main_process_uid(c: Running) -> int:
    """The real uid of the container's PID 1, as the kernel sees it."""
    status = docker("exec", c.id, "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(uid_line.split()[1])


def test_service_image_answers_as_non_root_and_turns_healthy(
    service_image: Built, run_container: list[str]
) -> None:
    port = free_port()
    c = start(
        service_image.tag,
        run_container,
        port,
        {},
        ["hello-world", "--bind", "127.0.0.1", "--port", str(port)],
    )
    wait_answer(c, "/health")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert resp.read().decode() == "hello-world"
    assert docker("exec", c.id, "id", "-u").stdout.strip() != "0"
    assert main_process_uid(c) != 0
    assert wait_healthy(c) == "healthy", c.logs()


def inspect(tag: str) -> dict[str, Any]:
    """``docker image inspect`` of one image."""
    (image,) = json.loads(docker("image", "inspect", tag).stdout)
    return dict(image)


def health_of(c: Running) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{c.port}/health", timeout=5) as resp:
        body: dict[str, str] = json.loads(resp.read())
    return body


def test_a_release_build_carries_its_release_in_labels_and_health(
    release_service_image: Built, run_container: list[str]
) -> None:
    image = inspect(release_service_image.tag)
    assert (image["Os"], image["Architecture"]) == ("linux", "amd64")
    labels = image["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "v4.4.0-ecr-ecs-fargate"
    assert labels["org.opencontainers.image.revision"] == RELEASE_COMMIT
    port = free_port()
    cmd = ["hello-world", "--bind", "127.0.0.1", "--port", str(port)]
    c = start(release_service_image.tag, run_container, port, {}, cmd)
    wait_answer(c, "/health")
    assert health_of(c) == {
        "status": "ok",
        "version": "v4.4.0-ecr-ecs-fargate",
        "commit": RELEASE_COMMIT,
    }


def test_a_local_build_says_dev(
    service_image: Built, bot_image: Built, run_container: list[str]
) -> None:
    """No build arguments (a laptop's `docker build`): the image claims no release."""
    for tag in (service_image.tag, bot_image.tag):
        image = inspect(tag)
        assert (image["Os"], image["Architecture"]) == ("linux", "amd64"), tag
        labels = image["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == "dev", tag
        assert labels["org.opencontainers.image.revision"] == "dev", tag
    port = free_port()
    cmd = ["hello-world", "--bind", "127.0.0.1", "--port", str(port)]
    c = start(service_image.tag, run_container, port, {}, cmd)
    wait_answer(c, "/health")
    assert health_of(c) == {"status": "ok", "version": "dev", "commit": "dev"}


def test_service_health_check_fails_when_nothing_answers(
    service_image: Built, run_container: list[str]
) -> None:
    port, elsewhere = free_port(), free_port()
    cmd = ["hello-world", "--bind", "127.0.0.1", "--port", str(elsewhere)]
    c = start(service_image.tag, run_container, port, {}, cmd, start_period="1s")
    assert wait_healthy(c) == "unhealthy", c.logs()


def test_service_image_declares_port_user_and_command(service_image: Built) -> None:
    config = json.loads(
        docker("image", "inspect", "-f", "{{json .Config}}", service_image.tag).stdout
    )
    assert "49000/tcp" in config["ExposedPorts"]
    assert config["User"] and config["User"].split(":")[0] not in ("0", "root")
    assert config["Cmd"] == ["hello-world", "--bind", "0.0.0.0", "--port", "49000"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "curl" not in " ".join(config["Healthcheck"]["Test"])


def test_bot_image_runs_the_cli_as_non_root(bot_image: Built) -> None:
    out = docker("run", "--rm", "--network", "host", bot_image.tag, "deploybot", "--help")
    assert "usage: deploybot" in out.stdout
    assert docker("run", "--rm", bot_image.tag, "id", "-u").stdout.strip() != "0"
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", bot_image.tag).stdout)
    assert config["Cmd"] == ["deploybot", "serve"]
    assert "3000/tcp" in config["ExposedPorts"]


def bot_env(emulator: SlackEmulator, **extra: str) -> dict[str, str]:
    """The bot's environment in a container: the emulator as Slack, this test's moto as AWS."""
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_API_URL": emulator.api_url,
        **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "ROLLOUT_"))},
        **extra,
    }
    env.pop("AWS_CONFIG_FILE", None)
    env.pop("AWS_SHARED_CREDENTIALS_FILE", None)
    return env


def test_bot_image_deploys_through_the_slack_emulator_and_turns_healthy(
    bot_image: Built,
    run_container: list[str],
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
) -> None:
    """The image's own command (Socket Mode), with the emulator as Slack and moto as AWS."""
    port = free_port()
    env = bot_env(emulator, DEPLOY_ALLOWED_USERS=ALICE)
    c = start(bot_image.tag, run_container, port, env, ["deploybot", "serve", "--port", str(port)])
    wait_answer(c, "/healthz")
    emulator.wait_socket_connected(timeout=30)
    assert main_process_uid(c) != 0
    assert wait_healthy(c) == "healthy", c.logs()
    delivery = emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS)
    assert delivery.ok, c.logs()
    emulator.wait_for(
        lambda: any("Deployed v4.4.0" in m.all_text for m in emulator.messages(DEPLOYS)),
        timeout=60,
        what="the deployment's final message",
    )


def test_bot_image_stays_healthy_through_a_slack_outage(
    bot_image: Built,
    run_container: list[str],
    stack: LocalStack,
    emulator: SlackEmulator,
) -> None:
    """The image's own HEALTHCHECK, probing every second (3 failures in a row: unhealthy),
    through a Slack outage several times that window: healthy all along, and the bot is back
    on the socket when Slack is (issue 19: ECS used to replace the task in a loop)."""
    port = free_port()
    env = bot_env(emulator)
    c = start(bot_image.tag, run_container, port, env, ["deploybot", "serve", "--port", str(port)])
    wait_answer(c, "/healthz")
    emulator.wait_socket_connected(timeout=30)
    assert wait_healthy(c) == "healthy", c.logs()
    outage = 10.0
    emulator.drop_socket_connections(refuse_for=outage)
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + outage
    while time.monotonic() < deadline:
        health = json.loads(docker("inspect", "-f", "{{json .State.Health}}", c.id).stdout)
        seen.append((health["Status"], health["FailingStreak"]))
        time.sleep(0.5)
    assert all(status == "healthy" and streak == 0 for status, streak in seen), seen
    emulator.wait_socket_connected(timeout=60)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert json.loads(resp.read())["slack"] == "connected"


# Imports every module of the installed bot package (not __main__, which runs the CLI), then
# names any playground module (bot/local, moto, werkzeug) that got loaded along the way.
IMPORT_EVERY_BOT_MODULE = """
import importlib, pkgutil, sys
import bot
for m in pkgutil.walk_packages(bot.__path__, "bot."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
print(sorted(n for n in sys.modules if n.split(".")[0] in ("moto", "werkzeug", "flask")
             or n.startswith("bot.local")))
"""


def python_in(c: Running, code: str) -> subprocess.CompletedProcess[str]:
    """The image's own Python (the venv, as the container's user) runs ``code`` in ``c``."""
    return docker("exec", c.id, "python", "-c", code, check=False, timeout=120)


def test_bot_image_carries_production_code_only_and_starts_healthy(
    bot_image: Built,
    run_container: list[str],
    stack: LocalStack,
    emulator: SlackEmulator,
) -> None:
    """#25: no bot/local (the emulators, the playground) and no moto in the bot's image, and
    nothing the bot imports needs them: it starts, answers and turns healthy without them, and
    `deploybot demo` there says what to do instead of a traceback."""
    port = free_port()
    cmd = ["deploybot", "serve", "--port", str(port)]
    c = start(bot_image.tag, run_container, port, bot_env(emulator), cmd)
    wait_answer(c, "/healthz")
    emulator.wait_socket_connected(timeout=30)
    assert wait_healthy(c) == "healthy", c.logs()
    for module in ("moto", "bot.local"):
        imported = python_in(c, f"import {module}")
        assert imported.returncode != 0, f"`import {module}` works in the bot's image"
        assert f"ModuleNotFoundError: No module named '{module}'" in imported.stderr, (
            imported.stderr
        )
    every = python_in(c, IMPORT_EVERY_BOT_MODULE)
    assert every.returncode == 0, every.stderr[-3000:]
    assert every.stdout.strip() == "[]", every.stdout
    demo = docker("exec", c.id, "deploybot", "demo", "--port", str(free_port()), check=False)
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert "make demo" in demo.stderr, demo.stderr
    assert "Traceback" not in demo.stdout + demo.stderr, demo.stderr
    assert wait_healthy(c) == "healthy", c.logs()


def test_the_service_image_carries_no_playground_either(service_image: Built) -> None:
    """The same .dockerignore builds the service's image: no bot/local, no moto there."""
    for module in ("moto", "bot.local"):
        code = f"import {module}"
        imported = docker("run", "--rm", service_image.tag, "python", "-c", code, check=False)
        assert imported.returncode != 0, f"`import {module}` works in the service's image"
