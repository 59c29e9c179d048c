"""The follower's health (/healthz): alive while it passes, stuck when a pass never ends.

AWS goes quiet at the wire (moto's server holds DescribeServices unanswered) while a deployment
is followed; a clock the test drives says how long that has lasted, as the bot's clock would
after STUCK_AFTER_SECONDS of real silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from bot.clock import Clock
from bot.deploy.engine import Engine
from bot.deploy.poller import STUCK_AFTER_SECONDS
from bot.deploy.records import Requester
from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.server import create_app
from bot.settings import Settings
from tests.conftest import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, LocalStack
from tests.helpers import wait_until


class LaterClock(Clock):
    """The system clock, with monotonic time moved on by ``ahead`` seconds."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.ahead


@pytest.fixture
def clock() -> LaterClock:
    return LaterClock()


@pytest.fixture
def engine(stack: LocalStack, clock: LaterClock) -> Iterator[Engine]:
    eng = Engine(stack.settings, clock=clock)
    yield eng
    eng.close()


def healthz(engine: Engine, stack: LocalStack) -> httpx.Response:
    """GET /healthz of the bot's own app (HTTP mode), on ``engine``."""
    return asyncio.run(_get(engine, stack, "/healthz"))


async def _get(engine: Engine, stack: LocalStack, path: str) -> httpx.Response:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL="http://127.0.0.1:9/api/",  # nothing is called
    )
    app = create_app(settings, socket_mode=False, engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        return await client.get(path)


def test_healthz_is_503_while_a_follower_pass_hangs_and_200_again_after(
    stack: LocalStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    engine: Engine,
    clock: LaterClock,
) -> None:
    idle = healthz(engine, stack)
    assert idle.status_code == 200 and idle.json()["following"] == 0

    simulator.step_seconds = 5.0  # the rollout outlasts the test
    record = engine.deploy("v4.4.0", Requester("alice", "cli"))
    watch = engine.watch(record)
    wait_until(lambda: aws.requests.count("ecs", "DescribeServices") >= 1, 20, "a first pass")
    following = healthz(engine, stack)
    assert following.status_code == 200, following.json()
    assert following.json()["following"] == 1 and following.json()["follower_alive"]

    released = aws.faults.hold("ecs", "DescribeServices")
    try:
        asked = aws.requests.count("ecs", "DescribeServices")
        wait_until(lambda: aws.requests.count("ecs", "DescribeServices") > asked, 20, "a held pass")
        clock.ahead = STUCK_AFTER_SECONDS + 1  # and that pass has not ended since
        stuck = healthz(engine, stack)
        assert stuck.status_code == 503, stuck.json()
        assert stuck.json()["status"] == "follower stuck"
        assert stuck.json()["seconds_since_follower_pass"] > STUCK_AFTER_SECONDS
    finally:
        released.set()
    # The held call is answered, the pass ends: alive again.
    wait_until(lambda: engine.poller.health().ok, 20, "the pass to end")
    again = healthz(engine, stack)
    assert again.status_code == 200, again.json()
    watch.close()
