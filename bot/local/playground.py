"""``deploybot demo``: the whole bot on this machine, with a page that plays a Slack channel.

moto (with the stack and the rollout simulator), the Slack emulator, the GitHub stand-in
(the history the releases were built from, so deploys show their commits) and the bot run in
one process. The bot is wired as in production: ``bot.server.create_app`` in Socket Mode, served by
uvicorn; only its endpoints differ. The page (http://127.0.0.1:8000) has a small FastAPI app of
its own: it sends slash commands and clicks through the emulator, as Slack would, and
long-polls the emulator's state to draw the channel.

Two people share the channel, Ana and Ben, and the page switches between them: whoever is
selected types the commands and clicks the buttons, and sees their own ephemerals. Both may
deploy; production needs one approval from someone other than whoever asked, so Ana asks and
Ben approves (or the other way round).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from bot.command_names import DEFAULT_COMMANDS, CommandNames
from bot.deploy.engine import Engine
from bot.deploy.records import Requester
from bot.exit_codes import ExitCode
from bot.fleet import Fleet
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator
from bot.local.history import plausible, seed
from bot.local.slack_emulator import Ephemeral, Message, SlackEmulator
from bot.local.stack import (
    DEFAULT_RELEASES,
    Release,
    StackInfo,
    add_deployment_alarm,
    add_service,
    create_stack,
    fake_sha,
    push_image,
)
from bot.settings import Settings, load_settings
from bot.slack.app import web_client
from bot.slack.messages import NOTICE_EVENT, notice_metadata
from bot.slack.notify import image_notice
from bot.target import Target
from bot.targets import Targets, load_targets

if TYPE_CHECKING:
    # Imported once the environment is safe: moto reads boto3's configuration on import.
    from bot.local.aws import MotoServer
    from bot.local.simulator import RolloutSimulator

log = logging.getLogger("deploybot.playground")


@dataclass(frozen=True)
class Person:
    """Someone the page can be: a Slack user id, their handle, and the page's label."""

    id: str
    name: str
    label: str


# Two people, one channel: both may deploy there (as DEPLOY_ALLOWED_USERS would say) and both
# approve production, so a request by one is approved by the other (the requester never
# approves their own: docs/OPERATIONS.md, "give one approver more than approvals").
ANA = Person("U0ANA", "ana", "Ana (requester)")
BEN = Person("U0BEN", "ben", "Ben (approver)")
PEOPLE = (ANA, BEN)
CHANNEL, CHANNEL_NAME = "C0DEPLOYS", "deploys"
BOT_TOKEN = "xoxb-playground-bot-token"
APP_TOKEN = "xapp-playground-app-token"
SIGNING_SECRET = "playground-signing-secret"
STACK_NAME = "hello-world-ecr-ecs-fargate"
# Two targets, as a deploybot.toml would give them: staging (a stack of its own, `make infra
# ENV=staging`) and production, which takes only images that completed on staging.
STAGING, PRODUCTION = "staging", "production"
STAGING_STACK = f"{STACK_NAME}-staging"
TAG_SUFFIX = "-ecr-ecs-fargate"
RUNNING_VERSION = "v4.3.0"
BROKEN_VERSION = "v4.5.0"
# A simulator step; a healthy rollout of three tasks takes six, about 20 s at this pace: time
# to click Stop, or to queue behind it. A slow image's tasks stay pending for SLOW_STEPS
# (three minutes), time to try Stop, Deploy when free and Tell me when free at leisure.
STEP_SECONDS = 3.0
HEALTHY_ROLLOUT_STEPS = 6
SLOW_STEPS = 60
STEP_ENV = "DEPLOYBOT_DEMO_STEP_SECONDS"  # tests speed the simulator up with it
LONG_POLL_SECONDS = 25.0
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
# The commits each release was built from, oldest first; the last is the release's own, named
# by the sha its image is tagged with (``fake_sha``). Later pushes get made-up ones.
HISTORY: dict[str, list[tuple[str, str]]] = {
    "v4.3.0": [
        ("feat: hello-world answers on /", "Alice Example"),
        ("feat: /health reports the version", "Bob Builder"),
        ("release: v4.3.0", "Alice Example"),
    ],
    "v4.4.0": [
        ("feat: greet the caller by name", "Carol Coder"),
        ("fix: JSON logs keep the request id", "Bob Builder"),
        ("chore: bump uvicorn", "Dependabot"),
        ("release: v4.4.0", "Alice Example"),
    ],
    "v4.5.0": [
        ("feat: cache greetings in memory", "Carol Coder"),
        ("feat: CACHE_SIZE sets the cache's size", "Carol Coder"),
        ("release: v4.5.0 (crashes on start: CACHE_SIZE is unset)", "Alice Example"),
    ],
}


class _Stop(Exception):
    """SIGTERM before the event loop runs: stop as Ctrl-C would."""


@dataclass
class Playground:
    """Everything the page's app acts on."""

    server: MotoServer
    settings: Settings
    stack: StackInfo
    simulator: RolloutSimulator
    emulator: SlackEmulator
    github: GitHubEmulator
    step_seconds: float
    targets: Targets | None = None  # staging and production (see playground_targets)
    versions: list[str] = field(default_factory=list)  # pushed so far, oldest first
    broken: set[str] = field(default_factory=set)  # versions whose tasks crash
    slow: set[str] = field(default_factory=set)  # versions whose tasks are slow to start
    # Versions whose tasks are healthy but whose 5xx alarm fires during ECS's bake time.
    alarming: set[str] = field(default_factory=set)

    def next_version(self) -> str:
        """The next minor release after the newest pushed (v4.5.0 -> v4.6.0)."""
        parsed = [
            tuple(int(x) for x in m.groups()) for v in self.versions if (m := _VERSION.match(v))
        ]
        major, minor, _ = max(parsed, default=(4, 5, 0))
        return f"v{major}.{minor + 1}.0"

    def mark_broken(self, release: Release) -> None:
        """Tasks of this release crash. The moving ``vX`` tag is left alone: it moves on."""
        self.broken.add(release.version)
        for tag in _own_tags(release):
            self.simulator.mark_broken(tag)

    def mark_alarming(self, release: Release) -> None:
        """Tasks of this release start and run, but the service's 5xx alarm goes to ALARM
        while ECS bakes it: ECS rolls it back (the simulator's ``mark_alarming``)."""
        self.alarming.add(release.version)
        for tag in _own_tags(release):
            self.simulator.mark_alarming(tag)

    def mark_slow(self, release: Release) -> None:
        """Tasks of this release stay pending for SLOW_STEPS: a rollout to stop or queue behind."""
        self.slow.add(release.version)
        for tag in _own_tags(release):
            self.simulator.mark_slow(tag)


def _own_tags(release: Release) -> list[str]:
    """The release's tags but the moving ``vX`` one, which the next release takes."""
    return [t for t in release.tags if not re.match(rf"^v\d+{re.escape(TAG_SUFFIX)}$", t)]


def run_playground(host: str = "127.0.0.1", port: int = 8000) -> int:
    """``deploybot demo``: run everything until Ctrl-C or SIGTERM; 0 on a clean stop."""
    try:
        step = float(os.environ.get(STEP_ENV) or STEP_SECONDS)
        if step <= 0:
            raise ValueError
    except ValueError:
        print(f"deploybot: {STEP_ENV} must be a positive number of seconds.", file=sys.stderr)
        return ExitCode.REFUSED
    try:
        page_socket = _listen(host, port)
    except OSError as exc:
        print(
            f"deploybot: cannot listen on {host}:{port} ({exc.strerror or exc}); pick another "
            f"port: deploybot demo --port {port + 1}  (make demo DEMO_PORT={port + 1})",
            file=sys.stderr,
        )
        return ExitCode.REFUSED
    logging.basicConfig(level=logging.WARNING, format="deploybot demo: %(name)s: %(message)s")
    previous_term = signal.signal(signal.SIGTERM, _raise_stop)
    print("Starting the playground: moto, the rollout simulator, the Slack emulator, the bot…")
    try:
        with _playground(step) as pg:
            return asyncio.run(_serve(pg, page_socket, host, port))
    except (KeyboardInterrupt, _Stop):
        return ExitCode.OK
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        page_socket.close()
        print("Playground stopped.")


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _isolate_aws() -> None:
    """Nothing of the user's AWS setup (keys, profile, role, endpoints, config files) can be
    used in this process; moto's fake credentials come once it is imported (``aws_env``)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)


@contextlib.contextmanager
def _playground(step: float) -> Iterator[Playground]:
    """Start moto (with the stack), the simulator and the emulator; stop them all after."""
    _isolate_aws()
    from bot.local.aws import MotoServer, aws_env
    from bot.local.simulator import RolloutSimulator

    server = MotoServer()
    server.start()
    simulator: RolloutSimulator | None = None
    emulator: SlackEmulator | None = None
    github = GitHubEmulator().start()
    try:
        for version in DEFAULT_RELEASES:
            seed_release(github, version)
        os.environ.update(aws_env(server.endpoint_url, server.region))
        emulator = SlackEmulator(
            bot_token=BOT_TOKEN,
            app_token=APP_TOKEN,
            signing_secret=SIGNING_SECRET,
            users={p.id: p.name for p in PEOPLE},
            channels={CHANNEL: CHANNEL_NAME},
        ).start()
        # CI's notice reaches the bot as the manifest's metadata event (auto_deploy).
        emulator.metadata_subscriptions.add(NOTICE_EVENT)
        settings = _settings(server, emulator, github, step)
        stack = create_stack(server.endpoint_url, settings, running=RUNNING_VERSION)
        add_service(
            stack, settings, cluster=STAGING_STACK, service=STAGING_STACK, running=RUNNING_VERSION
        )
        # Each service's deployment alarm on its 5xx answers, as service.yml's: ECS watches it
        # through every rollout and its bake time, and rolls back when it goes to ALARM.
        add_deployment_alarm(stack, settings)
        add_deployment_alarm(stack, settings, cluster=STAGING_STACK, service=STAGING_STACK)
        targets = playground_targets(settings)
        # Fast while the first release is recorded, then at a pace a person can watch.
        simulator = RolloutSimulator(
            server, step_seconds=min(step, 0.05), slow_ticks=SLOW_STEPS
        ).start()
        pg = Playground(
            server=server,
            settings=settings,
            stack=stack,
            simulator=simulator,
            emulator=emulator,
            github=github,
            step_seconds=step,
            targets=targets,
            versions=list(DEFAULT_RELEASES),
        )
        pg.mark_broken(stack.release(BROKEN_VERSION))
        for target in targets:
            _record_first_release(target.settings(settings), stack.running_tag)
        _seed_history(settings, targets)
        simulator.step_seconds = step
        yield pg
    finally:
        if simulator is not None:
            simulator.stop()
        if emulator is not None:
            emulator.stop()
        github.stop()
        server.stop()


def seed_release(github: GitHubEmulator, version: str) -> None:
    """The commits ``version`` was built from, the last one named by the sha CI tags its
    image with (``sha-`` + the first seven digits of ``fake_sha``)."""
    commits = HISTORY.get(version) or [
        (f"feat: what {version} brings", "Carol Coder"),
        (f"fix: a small fix before {version}", "Bob Builder"),
        (f"release: {version}", "Alice Example"),
    ]
    for i, (message, author) in enumerate(commits):
        last = i == len(commits) - 1
        github.add_commits(
            [message],
            author=author,
            login=author.split()[0].lower() if author != "Dependabot" else None,
            named=[fake_sha(version) if last else None],
        )


def _settings(
    server: MotoServer, emulator: SlackEmulator, github: GitHubEmulator, step: float
) -> Settings:
    """The bot's settings, all given here: nothing comes from the environment or a .env file."""
    return load_settings(
        _env_file=None,
        aws_region=server.region,
        aws_endpoint_url=server.endpoint_url,
        stack_name=STACK_NAME,
        ecs_cluster=STACK_NAME,
        ecs_service=STACK_NAME,
        ecr_repository=STACK_NAME,
        deploy_table=f"{STACK_NAME}-deployments",
        image_tag_suffix=TAG_SUFFIX,
        rollout_poll_seconds=max(0.05, min(1.0, step / 3)),
        rollout_timeout_seconds=1800.0,
        lock_lease_seconds=120.0,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emulator.api_url,
        slack_channel=CHANNEL,
        deploy_allowed_users=frozenset(p.id for p in PEOPLE),
        deploy_allowed_channels=frozenset({CHANNEL}),
        slack_deploy_command=DEFAULT_COMMANDS.deploy,
        slack_redeploy_command=DEFAULT_COMMANDS.redeploy,
        slack_status_command=DEFAULT_COMMANDS.status,
        github_repository=DEFAULT_REPOSITORY,
        github_token=DEFAULT_TOKEN,
        github_api_url=github.api_url,
    )


def playground_targets(settings: Settings) -> Targets:
    """Staging and production, in the one channel, for both people; staging deploys every
    image CI pushes (auto_deploy); production takes only what completed on staging, and needs
    one approval (Ana asks, Ben approves)."""
    repository, where = settings.ecr_repository, frozenset({CHANNEL})
    who = frozenset(p.id for p in PEOPLE)
    return Targets(
        (
            # Staging deploys every pushed image on its own (auto_deploy); production stays on
            # its Promote button and an approval.
            Target(
                STAGING,
                STAGING_STACK,
                STAGING_STACK,
                repository,
                deployers=who,
                channels=where,
                auto_deploy=True,
            ),
            Target(
                PRODUCTION,
                settings.ecs_cluster,
                settings.ecs_service,
                repository,
                after=STAGING,
                deployers=who,
                channels=where,
                approvals=1,
                approvers=tuple(p.id for p in PEOPLE),
            ),
        ),
        default_name=PRODUCTION,
    )


def _record_first_release(settings: Settings, tag: str) -> None:
    """Deploy what runs through the engine once, as ``make deploy`` did before the bot came:
    the history then has a last good image for Rollback and the status command."""
    engine = Engine(settings.model_copy(update={"rollout_poll_seconds": 0.05}))
    try:
        record = engine.deploy(tag, Requester(who="ops", source="cli"), "the first release")
        for _ in engine.watch(record):
            pass
    finally:
        engine.close()


# How often each target deployed in the seeded history: a working day's chance of a deploy.
HISTORY_PACE = {STAGING: 0.8, PRODUCTION: 0.45}
HISTORY_DAYS = 60


def _seed_history(settings: Settings, targets: Targets) -> None:
    """Sixty days of plausible history before now on every target (bot/local/history.py):
    `/deploy stats` draws a real chart at once."""
    now = datetime.now(UTC)
    for target in targets:
        engine = Engine(target.settings(settings))
        try:
            records = plausible(
                target.name,
                target.service,
                now=now - timedelta(hours=1),  # before the first release just recorded
                people=[p.id for p in PEOPLE],
                days=HISTORY_DAYS,
                pace=HISTORY_PACE.get(target.name, 0.5),
            )
            seed(engine.ledger, records)
        finally:
            engine.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the playground stops both servers itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(pg: Playground, page_socket: socket.socket, host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    stop, ready = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    page_ready = asyncio.create_task(ready.wait())
    config_dir = ""  # the terminal's deploybot.toml (terminal_howto), removed at the end
    bot_app = create_bot_app(pg)
    bot_socket = _listen("127.0.0.1", 0)
    bot = _Server(uvicorn.Config(bot_app, log_config=None, access_log=False, lifespan="on"))
    page = _Server(
        uvicorn.Config(
            create_page_app(pg, stop, ready),
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    bot_task = asyncio.create_task(bot.serve(sockets=[bot_socket]), name="bot")
    page_task: asyncio.Task[None] | None = None
    try:
        connected = asyncio.create_task(_socket_connected(pg.emulator))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({connected, bot_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not connected.done():
            connected.cancel()
            if not stop.is_set():
                print("deploybot: the bot did not start; see the lines above.", file=sys.stderr)
                return ExitCode.FAILED
            return ExitCode.OK
        page_task = asyncio.create_task(page.serve(sockets=[page_socket]), name="page")
        await asyncio.wait({page_ready, page_task}, return_when=asyncio.FIRST_COMPLETED)
        if page_task.done():
            return ExitCode.FAILED
        _print_howto(
            host, port, bot_socket.getsockname()[1], pg.step_seconds, pg.settings.slack_commands
        )
        config_dir = tempfile.mkdtemp(prefix="deploybot-playground-")
        print(terminal_howto(pg, Path(config_dir)), flush=True)
        await asyncio.wait({stopped, bot_task, page_task}, return_when=asyncio.FIRST_COMPLETED)
        return ExitCode.OK
    finally:
        if config_dir:
            shutil.rmtree(config_dir, ignore_errors=True)
        page.should_exit = True
        bot.should_exit = True
        await asyncio.gather(bot_task, *([page_task] if page_task else []), return_exceptions=True)
        bot_socket.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _socket_connected(emulator: SlackEmulator) -> None:
    version = -1
    while not emulator.socket_connected:
        version = await emulator.changed(version, 1.0)


def terminal_howto(pg: Playground, directory: Path) -> str:
    """How to point ``deploybot`` and ``make status`` at this playground from another shell:
    moto's endpoint and fake keys, and a deploybot.toml of its targets (written in
    ``directory``, which lives as long as the playground)."""
    config = directory / "deploybot.toml"
    lines = []
    for target in pg.targets or ():
        lines += [
            f"[targets.{target.name}]",
            f'cluster = "{target.cluster}"',
            f'service = "{target.service}"',
            f'repository = "{target.repository}"',
        ]
        if target.after:
            lines.append(f'after = "{target.after}"')
        lines.append("")
    config.write_text("\n".join(lines), encoding="utf-8")
    env = {
        "AWS_ENDPOINT_URL": pg.settings.aws_endpoint_url or "",
        "AWS_REGION": pg.settings.aws_region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "STACK_NAME": STACK_NAME,
        "DEPLOYBOT_CONFIG": str(config),
    }
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (
        "  From another terminal, deploybot and make work on this playground too:\n"
        f"    unset AWS_PROFILE; export {exports}\n"
        f"    make status    # or: uv run deploybot status; make deploy TAG=v4.4.0 ENV={STAGING}"
    )


def _print_howto(host: str, port: int, bot_port: int, step: float, commands: CommandNames) -> None:
    rollout = max(1, round(HEALTHY_ROLLOUT_STEPS * step))
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    print(
        f"\nThe playground is up: http://{shown}:{port}\n"
        f"  Type {commands.deploy} v4.4.0-ecr-ecs-fargate to {STAGING} and watch the rollout "
        f"(about {rollout} s); then click Promote to {PRODUCTION} on its message (production "
        f"takes only what completed on staging). {commands.status} shows both.\n"
        f"  {commands.deploy} {BROKEN_VERSION}{TAG_SUFFIX} to {STAGING} is broken: the circuit "
        "breaker rolls it back; then click Rollback on the message of what runs.\n"
        f"  Two people: switch between {ANA.label} and {BEN.label} on the page. "
        f"{commands.deploy} TAG to {PRODUCTION} asks for an approval: the other one approves. "
        "Stop on a live message aborts it; a deploy refused for the lock offers Deploy when "
        f"free; {commands.deploy} freeze {STAGING} REASON freezes.\n"
        "  Push an image plays CI: a new tag in ECR and its notice with a Deploy button (a slow "
        "one rolls out for minutes: stop it, or queue behind it). Ctrl-C stops.\n"
        f"(The bot runs in Socket Mode, with /healthz at http://127.0.0.1:{bot_port}/healthz.)",
        flush=True,
    )


def create_bot_app(pg: Playground) -> FastAPI:
    """The bot's own app, as ``deploybot serve`` makes it, on the playground's settings."""
    from bot.server import create_app

    interval = max(0.2, min(1.0, pg.step_seconds / 2))
    fleet = Fleet(pg.settings, pg.targets) if pg.targets is not None else None
    return create_app(pg.settings, socket_mode=True, min_update_interval=interval, fleet=fleet)


# -- the page's app ---------------------------------------------------------------------------


class CommandIn(BaseModel, frozen=True):
    text: str
    user: str = ANA.id  # who types it: one of PEOPLE


class ClickIn(BaseModel, frozen=True):
    ts: str
    action_id: str
    user: str = ANA.id  # who clicks: one of PEOPLE


class PushIn(BaseModel, frozen=True):
    broken: bool = False
    slow: bool = False
    alarming: bool = False  # healthy, but its 5xx alarm fires after start (during the bake)


def person(user: str) -> Person:
    """One of PEOPLE by Slack user id; a 400 naming them for anyone else."""
    found = next((p for p in PEOPLE if p.id == user), None)
    if found is None:
        known = ", ".join(f"{p.id} ({p.label})" for p in PEOPLE)
        raise HTTPException(400, f"No one called {user[:40]!r} here; the people are {known}.")
    return found


def _page_html(commands: CommandNames) -> str:
    """The page, naming the commands as the bot's settings do."""
    html = resources.files("bot.local").joinpath("playground.html").read_text(encoding="utf-8")
    for marker, name in (
        ("{{DEPLOY}}", commands.deploy),
        ("{{REDEPLOY}}", commands.redeploy),
        ("{{STATUS}}", commands.status),
    ):
        html = html.replace(marker, name)
    return html


def _message_view(m: Message) -> dict[str, Any]:
    return {
        "ts": m.ts,
        "user": m.user,
        "bot": bool(m.bot_id),
        "text": m.text,
        "blocks": m.blocks,
        "edited": m.updates > 0,
        "replies": [_message_view(r) for r in m.replies if not r.deleted],
        # Served by the page itself (/files/ID): the emulator's own URL is not the page's.
        "files": [
            {
                "id": f["id"],
                "name": f["name"],
                "title": f["title"],
                "alt": f.get("alt_txt") or "",
                "image": str(f.get("mimetype", "")).startswith("image/"),
                "url": f"/files/{f['id']}",
            }
            for f in m.files
        ],
    }


def _ephemeral_view(e: Ephemeral) -> dict[str, Any]:
    return {"ts": e.ts, "text": e.text, "blocks": e.blocks, "thread_ts": e.thread_ts}


def state_view(pg: Playground, user: str = ANA.id) -> dict[str, Any]:
    """What the page draws for ``user``: the channel's messages, that person's ephemerals,
    and the bot's direct messages to them (how their deployments ended)."""
    me = person(user)
    emu = pg.emulator
    version = emu.version  # read first: a change while building shows at the next poll
    return {
        "version": version,
        "channel": {"id": CHANNEL, "name": CHANNEL_NAME},
        "me": me.id,
        "people": [{"id": p.id, "name": p.name, "label": p.label} for p in PEOPLE],
        "users": {**emu.store.users, emu.who.bot_user_id: emu.who.bot_name},
        "bot_user": emu.who.bot_user_id,
        "connected": emu.socket_connected,
        "service": f"{pg.settings.ecs_cluster}/{pg.settings.ecs_service}",
        "targets": {t.name: f"{t.cluster}/{t.service}" for t in pg.targets or ()},
        "versions": list(pg.versions),
        "broken": sorted(pg.broken),
        "slow": sorted(pg.slow),
        "alarming": sorted(pg.alarming),
        "next_version": pg.next_version(),
        "step_seconds": pg.step_seconds,
        "messages": [_message_view(m) for m in emu.messages(CHANNEL) if not m.deleted],
        "ephemerals": [
            _ephemeral_view(e) for e in emu.ephemerals(user=me.id, channel=CHANNEL) if not e.deleted
        ],
        "dms": [_message_view(m) for m in emu.messages(emu.dm_channel(me.id)) if not m.deleted],
    }


def create_page_app(
    pg: Playground, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None
) -> FastAPI:
    """The page and its API: state (long-poll), commands, clicks, and CI's image push.

    ``stop`` ends long polls at once (a stopping server need not wait for them); ``ready``
    is set once the app has started.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ready is not None:
            ready.set()
        yield

    app = FastAPI(title="deploybot playground", docs_url=None, redoc_url=None, lifespan=lifespan)
    commands = pg.settings.slack_commands
    html = _page_html(commands)
    push_lock = asyncio.Lock()
    stopping = stop or asyncio.Event()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/api/state")
    async def state(
        since: int = -1, wait: float = LONG_POLL_SECONDS, user: str = ANA.id
    ) -> JSONResponse:
        """``user``'s view once its version is past ``since`` (at most ``wait`` seconds later)."""
        person(user)
        if pg.emulator.version <= since and not stopping.is_set():
            change = asyncio.ensure_future(pg.emulator.changed(since, min(wait, 55.0)))
            halt = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({change, halt}, return_when=asyncio.FIRST_COMPLETED)
            for task in (change, halt):
                task.cancel()
        return JSONResponse(state_view(pg, user), headers={"Cache-Control": "no-store"})

    @app.get("/files/{file_id}")
    async def file(file_id: str) -> Response:
        """A file the bot shared (the stats chart), as the emulator keeps it."""
        found = next((f for f in pg.emulator.files() if f.id == file_id and f.completed), None)
        if found is None:
            raise HTTPException(404, "No such file.")
        return Response(found.data, media_type=found.mimetype)

    @app.post("/api/command")
    async def command(body: CommandIn) -> dict[str, Any]:
        who = person(body.user)
        text = body.text.strip()
        if not text:
            raise HTTPException(
                400, f"Type a command, like {commands.deploy} v4.4.0-ecr-ecs-fargate."
            )
        if not text.startswith("/"):
            pg.emulator.say(text, user=who.id, channel=CHANNEL)
            return {"ok": True}
        name, _, rest = text.partition(" ")
        if name not in commands.all():
            raise HTTPException(
                400, f"{name} is not a command deploybot knows. Try {', '.join(commands.all())}."
            )
        delivery = await pg.emulator.aslash_command(
            name, rest.strip(), user=who.id, channel=CHANNEL
        )
        if not delivery.ok:
            raise HTTPException(502, f"deploybot did not answer {name}: {delivery.error}")
        return {"ok": True}

    @app.post("/api/click")
    async def click(body: ClickIn) -> dict[str, Any]:
        who = person(body.user)
        try:
            delivery = await pg.emulator.aclick(body.ts, body.action_id, user=who.id)
        except KeyError as exc:
            raise HTTPException(404, f"That button is gone: {exc.args[0]}") from None
        if not delivery.ok:
            raise HTTPException(502, f"deploybot did not answer the click: {delivery.error}")
        return {"ok": True}

    @app.post("/api/push")
    async def push(body: PushIn) -> dict[str, Any]:
        if sum((body.broken, body.slow, body.alarming)) > 1:
            raise HTTPException(
                400, "An image is broken, slow, or fires its alarm, one of them: pick one."
            )
        async with push_lock:
            version = pg.next_version()
            seed_release(pg.github, version)
            release = await asyncio.to_thread(
                push_image, pg.server.endpoint_url, pg.settings, version
            )
            pg.versions.append(version)
            if body.broken:
                pg.mark_broken(release)
            if body.slow:
                pg.mark_slow(release)
            if body.alarming:
                pg.mark_alarming(release)
            await post_image_pushed(pg.settings, release.tag, release.sha, pg.targets)
        return {"ok": True, "tag": release.tag, "tags": list(release.tags)}

    return app


async def post_image_pushed(
    settings: Settings, tag: str, sha: str | None, targets: Targets | None = None
) -> None:
    """CI's notice, as ``deploybot notify image-pushed`` posts it (bot.slack.notify's
    image_notice), with the bot's token: a Deploy button per target that takes images
    directly, each computed for its own target, and those of them frozen now."""
    targets = targets or load_targets(settings)
    msg = await asyncio.to_thread(image_notice, settings, targets, tag, sha, None)
    # Without a session of its own, the client opens and closes one per call.
    client = web_client(settings)
    await client.chat_postMessage(
        channel=settings.slack_channel or CHANNEL,
        metadata=notice_metadata(tag, sha, None),
        **msg.as_kwargs(),
    )
