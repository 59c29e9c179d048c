"""The playground (``deploybot demo``, ``make demo``): serving, stopping, and a browser run.

In headless Chromium a person deploys, watches, fails, and rolls back, as the README says;
then two people, switched on the page, ask for and give an approval, stop a rollout and
queue behind it. The browser tests share one demo and one browser (module fixtures): they
run in the file's order, each waiting for what it needs rather than assuming a fresh start.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
# Debian's chromium here (Playwright's own download is unreachable); "playwright" where that
# download works (the GitHub runner), to use the browser `playwright install` fetched.
CHROMIUM = os.environ.get("DEPLOYBOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# A simulator step in these tests: a healthy rollout is six steps, a broken one and ECS's
# rollback eleven. Fast, yet slow enough for the page to show the in-progress state.
STEP_SECONDS = "0.5"
PAUSE_CONTINUE, PAUSE_ROLLBACK = "pause_continue", "pause_rollback"  # bot/slack/pause_view.py


@dataclass
class Demo:
    """A running ``deploybot demo`` (or ``make demo``) child process."""

    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def state(self, user: str = "") -> dict[str, object]:
        who = f"&user={user}" if user else ""
        with urllib.request.urlopen(f"{self.url}/api/state?wait=0{who}", timeout=5) as resp:
            data: dict[str, object] = json.load(resp)
            return data


def _deploybot() -> str:
    script = Path(sys.executable).with_name("deploybot")
    return str(script) if script.exists() else shutil.which("deploybot") or "deploybot"


def _start(args: list[str], port: int, log: Path, **env: str) -> Demo:
    full = {**os.environ, "DEPLOYBOT_DEMO_STEP_SECONDS": STEP_SECONDS, **env}
    out = open(log, "w", encoding="utf-8")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=full,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: signals reach make, uv and the demo
    )
    demo = Demo(proc, port, log)
    try:
        _wait_until_up(demo, timeout=120)
    except BaseException:
        _stop(demo, signal.SIGKILL)
        raise
    return demo


def _wait_until_up(demo: Demo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while "The playground is up" not in demo.output():
        if demo.proc.poll() is not None:
            raise AssertionError(f"the demo exited ({demo.proc.returncode}):\n{demo.output()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo did not come up in {timeout}s:\n{demo.output()}")
        time.sleep(0.1)
    wait_http(demo.url + "/", timeout=10)


def _stop(demo: Demo, sig: int = signal.SIGTERM, group: bool = False) -> int:
    if demo.proc.poll() is None:
        if group:
            os.killpg(demo.proc.pid, sig)
        else:
            demo.proc.send_signal(sig)
    try:
        return demo.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(demo.proc.pid, signal.SIGKILL)
        demo.proc.wait(timeout=10)
        raise AssertionError(f"the demo did not stop on {sig!r}:\n{demo.output()}") from None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_deploybot_demo_serves_the_page_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    # The user's own AWS and deploybot settings must not leak in: a profile that does not
    # exist would stop boto3 (and moto's import) cold; another stack's name would be used.
    demo = _start(
        [_deploybot(), "demo", "--port", str(port)],
        port,
        tmp_path / "demo.log",
        AWS_PROFILE="deploybot-test-no-such-profile",
        AWS_ENDPOINT_URL_ECS="http://127.0.0.1:9",
        STACK_NAME="someone-elses-stack",
        SLACK_API_URL="http://127.0.0.1:9/api/",
    )
    with urllib.request.urlopen(demo.url + "/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "text/html"
        html = resp.read().decode()
    assert "<title>#deploys · deploybot playground</title>" in html
    state = demo.state()
    assert state["connected"] is True, "the bot's Socket Mode connection is up before the URL"
    assert state["versions"] == ["v4.3.0", "v4.4.0", "v4.5.0"]
    assert state["service"] == "hello-world-ecr-ecs-fargate/hello-world-ecr-ecs-fargate"
    # Two people; the page asks as one of them, anyone else is a clear 400.
    people = state["people"]
    assert isinstance(people, list) and [p["label"] for p in people] == [
        "Ana (requester)",
        "Ben (approver)",
    ]
    assert state["me"] == "U0ANA" and demo.state("U0BEN")["me"] == "U0BEN"
    with pytest.raises(urllib.error.HTTPError) as refused:
        demo.state("U0NOBODY")
    assert refused.value.code == 400 and "Ben (approver)" in refused.value.read().decode()
    assert state["dms"] == []  # the Direct messages pane: nothing deployed yet
    out = demo.output()
    assert f"http://127.0.0.1:{port}" in out
    assert "/deploy v4.4.0-ecr-ecs-fargate" in out
    # How to point deploybot (and make status) at it from another terminal: as printed, it
    # reaches the playground's moto and both targets.
    exports = re.search(r"unset AWS_PROFILE; export (.+)", out)
    assert exports, out
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "DEPLOY", "ECS_", "ECR_", "STACK_"))
    }
    env.update(word.split("=", 1) for word in shlex.split(exports.group(1)))
    status = subprocess.run(
        [_deploybot(), "status", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stdout + status.stderr
    tags = {t["target"]: t["tag"] for t in json.loads(status.stdout)["targets"]}
    assert tags == {"staging": "v4.3.0-ecr-ecs-fargate", "production": "v4.3.0-ecr-ecs-fargate"}

    assert _stop(demo, signal.SIGTERM) == 0, demo.output()
    assert "Playground stopped." in demo.output()
    assert _port_free(port)


def test_demo_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run(
            [_deploybot(), "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"--port {port + 1}" in done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_serves_the_page_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    demo = _start(["make", "demo", f"DEMO_PORT={port}"], port, tmp_path / "make.log")
    with urllib.request.urlopen(demo.url + "/", timeout=5) as resp:
        assert "deploybot playground" in resp.read().decode()
    # Ctrl-C in a terminal signals the whole foreground group: make, uv and the demo.
    _stop(demo, signal.SIGINT, group=True)
    assert "Playground stopped." in demo.output(), demo.output()
    assert _port_free(port)


# -- in a real browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_for_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo for the module's browser tests (its state carries from one to the next)."""
    if CHROMIUM != "playwright" and not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing (.ci/steps/20-chromium.sh installs Debian's chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    demo = _start([_deploybot(), "demo", "--port", str(port)], port, log)
    yield demo
    # Ctrl-C, as a person ends the demo: a clean stop, exit 0.
    code = _stop(demo, signal.SIGINT)
    assert code == 0, demo.output()


@pytest.fixture(scope="module")
def browser(demo_for_browser: Demo) -> Iterator[object]:
    """One headless Chromium for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        executable = None if CHROMIUM == "playwright" else CHROMIUM
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser_page(demo_for_browser: Demo, browser: object) -> Iterator[object]:
    """A fresh page on the module's demo, as Ana (the page's first person)."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(demo_for_browser.url + "/")
        yield page
    finally:
        page.close()


def _be(page: Any, label: str) -> None:
    """Switch the page to the person labelled ``label``; wait until the page says so."""
    from playwright.sync_api import expect

    page.locator("#people .person", has_text=label).click()
    expect(page.locator("#me")).to_have_text(f"You are {label}")
    expect(page.locator("#people .person.active")).to_have_text(re.compile(re.escape(label)))


def _confirm(page: Any, title: str) -> None:
    """Slack's confirm dialog of a button: check its title, confirm."""
    from playwright.sync_api import expect

    expect(page.locator("#overlay")).to_be_visible()
    expect(page.locator("#d-title")).to_have_text(title)
    page.locator("#d-confirm").click()
    expect(page.locator("#overlay")).to_be_hidden()


def _continue_pauses(page: Any, live: Any, timeout: float = 60_000) -> None:
    """Production is a canary that ECS pauses before each traffic shift (before the canary,
    after its bake): Ben (the approver) presses Continue at each, until it is no longer
    paused."""
    from playwright.sync_api import expect

    button = live.locator(f"button[data-action-id={PAUSE_CONTINUE}]")
    for _ in range(2):  # before the canary's share, then before the rest
        expect(button).to_be_visible(timeout=timeout)
        _be(page, "Ben (approver)")
        button.click()
        _confirm(page, "Continue the deployment?")
        # ECS moves on: the buttons go (the next pause, if any, brings them back).
        expect(button).to_have_count(0, timeout=timeout)
        _be(page, "Ana (requester)")


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_deploy_fail_and_roll_back_in_the_browser(browser_page: object) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    expect(page.locator("#conn")).to_have_text("deploybot connected (Socket Mode)")
    messages = page.locator("#messages > .msg[data-kind=message]")
    timings: dict[str, float] = {}

    def command(text: str) -> float:
        page.locator("#input").fill(text)
        page.locator("#input").press("Enter")
        return time.monotonic()

    # 1. A healthy deploy to staging: the one live message goes from in progress to completed.
    sent = command("/deploy v4.4.0-ecr-ecs-fargate to staging")
    live = messages.filter(has=page.locator(".b-header", has_text="v4.4.0-ecr-ecs-fargate"))
    expect(live.locator(".b-header")).to_have_text("🚀 Deploying v4.4.0-ecr-ecs-fargate to staging")
    timings["v4.4.0 in progress shown"] = time.monotonic() - sent
    expect(live).to_contain_text("Rollout: IN_PROGRESS")
    # What it changes, from the GitHub stand-in's history of the releases (issue 17).
    expect(live).to_contain_text("Forward 1 release: v4.3.0 (")
    expect(live).to_contain_text("4 commits, newest first:")
    expect(live.locator(".b-header")).to_have_text(
        "✅ Deployed v4.4.0-ecr-ecs-fargate to staging", timeout=30_000
    )
    timings["v4.4.0 completed shown"] = time.monotonic() - sent
    expect(live).to_contain_text("Completed in")
    # Ana hears how it ended in a DM: the Direct messages pane shows it, linked to the message.
    dm = page.locator("#dms .dm", has_text="v4.4.0-ecr-ecs-fargate")
    expect(dm).to_contain_text("completed")
    expect(dm.locator("a", has_text="See the deployment in the channel")).to_be_visible()
    expect(live.locator("b", has_text="3/3")).to_be_visible()  # mrkdwn bold, rendered
    expect(live).to_have_count(1)  # updated in place, not posted again
    # ECS's events arrive as thread replies, shown on demand.
    live.locator(".thread-toggle").click()
    expect(live.locator(".thread .msg").first).to_be_visible()
    expect(live.locator(".thread")).to_contain_text("has reached a steady state")

    # 2. The broken image: the circuit breaker fails it and rolls the service back.
    sent = command("/deploy v4.5.0-ecr-ecs-fargate to staging")
    broken = messages.filter(has=page.locator(".b-header", has_text="v4.5.0-ecr-ecs-fargate"))
    expect(broken.locator(".b-header")).to_have_text(
        "🚀 Deploying v4.5.0-ecr-ecs-fargate to staging"
    )
    expect(broken.locator(".b-header")).to_have_text(
        "❌ Deployment of v4.5.0-ecr-ecs-fargate to staging failed", timeout=40_000
    )
    timings["v4.5.0 failure shown"] = time.monotonic() - sent
    expect(broken).to_contain_text("circuit breaker rolled the service back to")
    expect(broken.locator("code", has_text="v4.4.0-ecr-ecs-fargate").first).to_be_visible()

    # The failed deployment changed nothing to undo: it offers no Rollback (issue 19).
    expect(broken.locator("button[data-action-id]")).to_have_count(0)

    # 3. Rollback on v4.4.0's message (ECS rolled back to it, so it runs): Slack's confirm
    # dialog first, then a new rollout to the image that ran before v4.4.0, v4.3.0.
    live.locator("button[data-action-id=rollback]").click()
    dialog = page.locator("#overlay")
    expect(dialog).to_be_visible()
    expect(page.locator("#d-title")).to_have_text("Roll back?")
    expect(page.locator("#d-text")).to_contain_text("the image that ran before this deployment")
    page.locator("#d-confirm").click()
    sent = time.monotonic()
    expect(dialog).to_be_hidden()
    # The last of v4.3.0's messages: the bot also posted the setup's first deployments of it.
    rollback = messages.filter(
        has=page.locator(".b-header", has_text="v4.3.0-ecr-ecs-fargate")
    ).last
    expect(rollback.locator(".b-header")).to_have_text(
        "🚀 Rolling back to v4.3.0-ecr-ecs-fargate on staging"
    )
    expect(rollback.locator(".b-header")).to_have_text(
        "✅ Rolled back to v4.3.0-ecr-ecs-fargate on staging", timeout=30_000
    )
    timings["rollback completed shown"] = time.monotonic() - sent

    # /deploy-status staging answers with an ephemeral that names what runs there now.
    command("/deploy-status staging")
    status = page.locator("#messages > .msg.ephemeral").last
    expect(status).to_contain_text("Only visible to you")
    expect(status.locator(".b-header")).to_contain_text("staging: v4.3.0-ecr-ecs-fargate")

    # 4. Play CI: push the next release; staging deploys it on its own (auto_deploy), so its
    # notice has no button (production takes only what completed on staging: none either).
    page.locator("#push").click()
    notice = messages.filter(has_text="A new image is in ECR: v4.6.0-ecr-ecs-fargate")
    expect(notice).to_have_count(1)
    # The notice's part for staging is staging's own: its service, what it runs, its commits
    # (#29: production's, for every button).
    expect(notice).to_contain_text("To staging: Forward 3 releases: v4.3.0 (")
    expect(notice).to_contain_text("staging deploys this image on push (auto_deploy)")
    expect(notice.locator("button")).to_have_count(0)
    pushed = messages.filter(
        has=page.locator(".b-header", has_text="v4.6.0-ecr-ecs-fargate to staging")
    )
    expect(pushed.locator(".b-header")).to_have_text(
        "✅ Deployed v4.6.0-ecr-ecs-fargate to staging", timeout=30_000
    )

    # 5. Promote: the completed staging message's button asks to deploy that digest to
    # production, which needs an approval: Ben (the page's other person) gives it.
    pushed.locator('button[data-action-id="promote:production"]').click()
    _confirm(page, "Promote?")
    request = messages.filter(has_text="Promote v4.6.0-ecr-ecs-fargate to production: approval")
    expect(request.locator("button[data-action-id=approve_request]")).to_be_visible()
    _be(page, "Ben (approver)")
    request.locator("button[data-action-id=approve_request]").click()
    _confirm(page, "Approve?")
    _be(page, "Ana (requester)")
    promoted = messages.filter(
        has=page.locator(".b-header", has_text="v4.6.0-ecr-ecs-fargate to production"),
        has_not_text="approval needed",
    )
    _continue_pauses(page, promoted)
    expect(promoted.locator(".b-header")).to_have_text(
        "✅ Deployed v4.6.0-ecr-ecs-fargate to production", timeout=30_000
    )
    # /deploy-status shows both targets: production runs the digest staging ran.
    command("/deploy-status")
    both = page.locator("#messages > .msg.ephemeral").last
    expect(both.locator(".b-header")).to_have_text("Targets")
    expect(both).to_contain_text("production")
    rows = {
        name: re.search(rf"{name}.*?v4\.6\.0-ecr-ecs-fargate\s*\((sha256:[0-9a-f]+)", text)
        for text in [both.inner_text().replace("\n", " ")]
        for name in ("staging", "production")
    }
    assert rows["staging"] and rows["production"], both.inner_text()
    assert rows["staging"].group(1) == rows["production"].group(1)

    ARTIFACTS.mkdir(exist_ok=True)
    # Tall enough to show the whole story: deploy, failure, rollback, status.
    page.set_viewport_size({"width": 1280, "height": 2000})
    page.locator("#log").evaluate("el => el.scrollTop = el.scrollHeight")
    page.screenshot(path=str(ARTIFACTS / "playground.png"))
    print("browser timings (s):", {k: round(v, 2) for k, v in timings.items()})


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_two_people_approve_stop_and_queue_in_the_browser(browser_page: object) -> None:
    """Ana asks for production, cannot approve her own request, Ben approves it and it
    deploys; then Ana's slow rollout on staging: Ben queues behind it, Ana clicks Stop, the
    previous image is back, and Ben's queued deploy starts."""
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    expect(page.locator("#conn")).to_have_text("deploybot connected (Socket Mode)")
    messages = page.locator("#messages > .msg[data-kind=message]")
    ephemerals = page.locator("#messages > .msg.ephemeral")
    long = 60_000  # a rollout is a few simulator steps; under load, generous

    def command(text: str) -> None:
        page.locator("#input").fill(text)
        page.locator("#input").press("Enter")

    def headed(text: str) -> object:
        return messages.filter(has=page.locator(".b-header", has_text=text))

    _be(page, "Ana (requester)")
    # Production takes what completed on staging: v4.4.0 goes there first.
    done = headed("✅ Deployed v4.4.0-ecr-ecs-fargate to staging")
    before = done.count()
    command("/deploy v4.4.0-ecr-ecs-fargate to staging")
    expect(done).to_have_count(before + 1, timeout=long)

    # 1. Approval: the request names who asks, from what to what, with Approve and Reject.
    command("/deploy v4.4.0-ecr-ecs-fargate to production")
    request = headed("Deploy v4.4.0-ecr-ecs-fargate to production: approval needed").last
    expect(request).to_be_visible(timeout=long)
    expect(request).to_contain_text("@ana")
    expect(request).to_contain_text("v4.4.0-ecr-ecs-fargate")
    expect(request.locator("button[data-action-id=approve_request]")).to_be_visible()
    expect(request.locator("button[data-action-id=reject_request]")).to_be_visible()
    # Ana's own Approve is refused, to her alone.
    request.locator("button[data-action-id=approve_request]").click()
    _confirm(page, "Approve?")
    own = ephemerals.filter(has_text="you asked for this")
    expect(own).to_have_count(1, timeout=long)
    expect(own).to_contain_text("@ben")
    expect(request.locator("button[data-action-id=approve_request]")).to_be_enabled()
    # Ben does not see Ana's ephemerals; his Approve deploys, and the deploy runs to its end.
    _be(page, "Ben (approver)")
    expect(own).to_have_count(0)
    request.locator("button[data-action-id=approve_request]").click()
    _confirm(page, "Approve?")
    expect(request).to_contain_text("Approved", timeout=long)
    expect(request.locator("button")).to_have_count(0)
    deployed = messages.filter(
        has=page.locator(".b-header", has_text="v4.4.0-ecr-ecs-fargate to production"),
        has_not_text="approval needed",
    )
    _continue_pauses(page, deployed)
    expect(deployed.locator(".b-header")).to_have_text(
        "✅ Deployed v4.4.0-ecr-ecs-fargate to production", timeout=long
    )
    expect(deployed).to_contain_text("@ben")  # who approved it, on the record

    # 2. Stop: CI pushes a slow image, which staging deploys on push; its live message has a
    # Stop button.
    _be(page, "Ana (requester)")
    back = headed("✅ Deployed v4.3.0-ecr-ecs-fargate to staging")
    back_before = back.count()
    version = page.locator("#next-version").inner_text()
    tag = f"{version}-ecr-ecs-fargate"
    page.locator("#push-fate").select_option("slow")
    page.locator("#push").click()
    notice = messages.filter(has_text=f"A new image is in ECR: {tag}")
    expect(notice).to_have_count(1, timeout=long)
    # Staging deploys it on push (auto_deploy): no click.
    live = headed(f"{tag} to staging")
    expect(live.locator(".b-header")).to_have_text(f"🚀 Deploying {tag} to staging", timeout=long)
    stop = live.locator("button[data-action-id=stop_rollout]")
    expect(stop).to_be_visible(timeout=long)

    # Ben wants staging too: the lock is taken, he is offered the queue and takes it.
    _be(page, "Ben (approver)")
    command("/deploy v4.3.0-ecr-ecs-fargate to staging")
    offer = ephemerals.filter(has_text="Deploys are locked").last
    expect(offer).to_be_visible(timeout=long)
    offer.locator("button[data-action-id=deploy_when_free]").click()
    expect(ephemerals.filter(has_text="number 1 in the queue")).to_have_count(1, timeout=long)

    # Ana stops her rollout (Slack's confirm first): it ends aborted, v4.4.0 is back.
    _be(page, "Ana (requester)")
    stop.click()
    _confirm(page, "Stop this rollout?")
    expect(messages.filter(has_text="goes back now")).to_have_count(1, timeout=long)
    expect(live.locator(".b-header")).to_have_text(
        f"🛑 Deployment of {tag} to staging aborted", timeout=long
    )
    expect(live).to_contain_text("v4.4.0-ecr-ecs-fargate is back")
    expect(stop).to_have_count(0)
    # Ben's queued deploy gets its turn, announced in the channel, and runs to its end.
    expect(messages.filter(has_text="The queued deploy of")).to_contain_text(
        "v4.3.0-ecr-ecs-fargate", timeout=long
    )
    expect(back).to_have_count(back_before + 1, timeout=long)
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 2000})
    page.locator("#log").evaluate("el => el.scrollTop = el.scrollHeight")
    page.screenshot(path=str(ARTIFACTS / "playground-approval-stop.png"))


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_typed_text_shows_as_typed_in_the_browser(browser_page: object) -> None:
    """The bot escapes &, < and > for Slack; the page, like Slack, shows the characters."""
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    expect(page.locator("#conn")).to_have_text("deploybot connected (Socket Mode)")
    reason = "<!here> & <b>bold</b> &amp;"
    page.locator("#input").fill(f"/redeploy staging {reason}")
    page.locator("#input").press("Enter")
    live = page.locator("#messages > .msg[data-kind=message]", has_text=reason)
    # As typed: no mention, no markup, no entity.
    expect(live).to_have_count(1, timeout=30_000)
    expect(live.locator("b", has_text="@here")).to_have_count(0)
    # The redeploy runs to its end before the next walk: staging is free for it.
    expect(live.locator(".b-header")).to_contain_text("✅ Redeployed", timeout=30_000)


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_stats_draws_the_seeded_history_in_the_browser(browser_page: object) -> None:
    """The demo's moto starts with 60 days of history on both targets: `/deploy stats
    production 60d` answers with the four keys and shares a chart the page shows; the chart is
    saved for a person to look at (test-artifacts/stats-chart.png)."""
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    expect(page.locator("#conn")).to_have_text("deploybot connected (Socket Mode)")
    page.locator("#input").fill("/deploy stats production 60d")
    page.locator("#input").press("Enter")
    numbers = page.locator("#messages > .msg[data-kind=ephemeral]", has_text="Four keys of")
    expect(numbers.last).to_contain_text("Four keys of production", timeout=30_000)
    expect(numbers.last).to_contain_text("Deployment frequency")
    # Weeks of seeded deployments, some failed: the numbers are no empty window's.
    text = numbers.last.inner_text()
    assert "(0 completed)" not in text and "no changes" not in text, text
    image = page.locator("#messages .msg[data-kind=message] .file img").last
    expect(image).to_be_visible(timeout=30_000)
    # Loaded and decoded by the browser: a PNG that opens, at the size the bot drew it.
    size = image.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : null")
    assert size == [900, 450], size
    ARTIFACTS.mkdir(exist_ok=True)
    image.screenshot(path=str(ARTIFACTS / "stats-chart.png"))


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_an_image_whose_alarm_fires_after_start_is_rolled_back_in_the_browser(
    browser_page: object,
) -> None:
    """Push an image that is "healthy, but its 5xx alarm fires after start": staging deploys
    it on push (auto_deploy), the rollout completes its scale-up, ECS verifies it ("verifying:
    alarms OK", its bake), the alarm fires, ECS rolls back, and the message says which alarm,
    when, with its console link (test-artifacts/playground-alarm.png)."""
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    expect(page.locator("#conn")).to_have_text("deploybot connected (Socket Mode)")
    _be(page, "Ana (requester)")
    version = page.locator("#next-version").inner_text()
    page.locator("#push-fate").select_option("alarming")
    page.locator("#push").click()
    expect(page.locator("#versions")).to_contain_text(f"{version} (fires its alarm)")
    messages = page.locator("#messages > .msg[data-kind=message]")
    tag = f"{version}-ecr-ecs-fargate"
    # Staging deploys each pushed image itself (auto_deploy), as CI's notice says.
    notice = messages.filter(has_text=f"A new image is in ECR: {tag}")
    expect(notice).to_contain_text("staging deploys this image on push")
    live = messages.filter(has=page.locator(".b-header", has_text=f"{tag} to staging"))
    # The deploy on push starts: staging is free (the walks before this one wait for their
    # rollouts to end; a busy staging would queue the image, tests/slack/test_auto_deploy.py).
    expect(live).to_have_count(1, timeout=60_000)
    # The scale-up completes, then ECS bakes it, watching the alarm.
    expect(live).to_contain_text("verifying: alarms OK", timeout=60_000)
    expect(live).to_contain_text("stage: BAKE_TIME")
    expect(live.locator(".b-header")).to_have_text(
        f"❌ Deployment of {tag} to staging failed", timeout=60_000
    )
    alarm = "hello-world-ecr-ecs-fargate-staging-5xx"
    expect(live).to_contain_text(
        re.compile(rf"rolled back: alarm {alarm} went to ALARM at \d\d:\d\d")
    )
    link = live.locator("a", has_text="the alarm in the console")
    expect(link).to_have_attribute("href", re.compile(rf"#alarmsV2:alarm/{alarm}$"))
    expect(live).to_contain_text("ECS rolled the service back to")
    ARTIFACTS.mkdir(exist_ok=True)
    live.screenshot(path=str(ARTIFACTS / "playground-alarm.png"))


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_a_canary_paused_for_a_decision_in_the_browser(browser_page: object) -> None:
    """Production is a canary with a pause before each traffic shift. Ana's deploy (Ben
    approves) pauses: the message says where, who may continue, when ECS rolls back by itself,
    and what production's test listener answers. Ana cannot continue her own deploy; Ben's
    Continue lets the canary take its 10%, it bakes and pauses again; Ben continues, the rest
    shifts and bakes, and it completes. A second run is rolled back from its pause by Ana."""
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    expect(page.locator("#conn")).to_have_text("deploybot connected (Socket Mode)")
    messages = page.locator("#messages > .msg[data-kind=message]")
    ephemerals = page.locator("#messages > .msg.ephemeral")
    long = 60_000
    ARTIFACTS.mkdir(exist_ok=True)

    def command(text: str) -> None:
        page.locator("#input").fill(text)
        page.locator("#input").press("Enter")

    def live_id(live: Any) -> str:
        """The deployment id its message's context line names (``deploy d-…``)."""
        found = re.search(r"\b(d-\d{8}-\d{6}-[0-9a-f]{4})\b", live.inner_text())
        assert found, live.inner_text()
        return found.group(1)

    def deploy(tag: str) -> Any:
        """Ana asks for ``tag`` on production, Ben approves; its live message."""
        _be(page, "Ana (requester)")
        command(f"/deploy {tag} to production")
        request = messages.filter(has_text=f"Deploy {tag} to production: approval needed").last
        expect(request.locator("button[data-action-id=approve_request]")).to_be_visible(
            timeout=long
        )
        _be(page, "Ben (approver)")
        request.locator("button[data-action-id=approve_request]").click()
        _confirm(page, "Approve?")
        _be(page, "Ana (requester)")
        return messages.filter(
            has=page.locator(".b-header", has_text=f"{tag} to production"),
            has_not_text="approval needed",
        ).last

    # 1. v4.3.0 (it completed on staging) to production: paused before the canary.
    tag = "v4.3.0-ecr-ecs-fargate"
    live = deploy(tag)
    go_on = live.locator(f"button[data-action-id={PAUSE_CONTINUE}]")
    expect(go_on).to_be_visible(timeout=long)
    expect(live.locator(f"button[data-action-id={PAUSE_ROLLBACK}]")).to_be_visible()
    expect(live).to_contain_text("Paused at PRODUCTION_TRAFFIC_SHIFT")
    expect(live).to_contain_text("canary of 10%: 0% on v4.3.0-ecr-ecs-fargate")
    expect(live).to_contain_text("rolls back by itself at")
    expect(live).to_contain_text("@ben (an approval: not the requester)")
    expect(live).to_contain_text("200 in")  # the test listener's /health answered
    expect(live).to_contain_text(tag)
    live.screenshot(path=str(ARTIFACTS / "playground-paused.png"))
    # Ana cannot continue her own deploy: production's Continue is an approval.
    go_on.click()
    _confirm(page, "Continue the deployment?")
    expect(ephemerals.filter(has_text="this is your deployment")).to_have_count(1, timeout=long)
    # Ben continues: the canary takes 10%, bakes, and ECS pauses again before the rest.
    _be(page, "Ben (approver)")
    continued = messages.filter(has_text=f"continued deploy {live_id(live)}")
    go_on.click()
    _confirm(page, "Continue the deployment?")
    expect(continued).to_have_count(1, timeout=long)
    expect(live).to_contain_text("canary: 10% on v4.3.0-ecr-ecs-fargate", timeout=long)
    expect(go_on).to_be_visible(timeout=long)
    expect(live).to_contain_text("paused before the next production traffic shift")
    live.screenshot(path=str(ARTIFACTS / "playground-canary-paused.png"))
    go_on.click()
    _confirm(page, "Continue the deployment?")
    expect(live.locator(".b-header")).to_have_text(f"✅ Deployed {tag} to production", timeout=long)
    expect(go_on).to_have_count(0)

    # 2. Another run, rolled back from its pause by Ana (any deployer may).
    tag = "v4.4.0-ecr-ecs-fargate"
    live = deploy(tag)
    back = live.locator(f"button[data-action-id={PAUSE_ROLLBACK}]")
    expect(back).to_be_visible(timeout=long)
    back.click()
    _confirm(page, "Roll back?")
    expect(messages.filter(has_text=f"rolled back deploy {live_id(live)}")).to_have_count(
        1, timeout=long
    )
    expect(live.locator(".b-header")).to_contain_text("failed", timeout=long)
    expect(live).to_contain_text("rolled back")
    expect(back).to_have_count(0)
    page.set_viewport_size({"width": 1280, "height": 2000})
    page.locator("#log").evaluate("el => el.scrollTop = el.scrollHeight")
    page.screenshot(path=str(ARTIFACTS / "playground-canary.png"))
