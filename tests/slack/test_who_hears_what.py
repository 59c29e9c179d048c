"""Who hears what (issue 30 item 4): a target's notify channels and webhooks hear its
deployments' events, once each across two bot replicas, signed, retried with backoff, never
holding the deploy up; Grafana's annotation shape. Two real ``deploybot serve`` processes
behind one Request URL, the Slack emulator, moto, and a webhook sink on 127.0.0.1 that checks
signatures and counts deliveries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, DEPLOYS, RANDOM, LocalStack
from tests.slack.conftest import BotFactory, start_bots
from tests.slack.helpers import bot_messages
from tests.webhook_sink import WebhookSink

SECRET = "whsec-test-5f1c9e"
GRAFANA_TOKEN = "glsa-test-token-77"
LEASE = 3.0


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    hooks = WebhookSink(SECRET, fail_first=1).start()  # the first delivery: a 500
    yield hooks
    hooks.stop()


def config(sink: WebhookSink) -> str:
    hook, grafana = sink.url("/hook"), sink.url("/grafana")
    # TOML's inline tables are one line each.
    return f"""
[targets.production]
cluster = "hello-world-ecr-ecs-fargate"
service = "hello-world-ecr-ecs-fargate"
repository = "hello-world-ecr-ecs-fargate"
notify = [{{channel = "{RANDOM}", on = ["completed", "failed"]}}]
webhooks = [
  {{url = "{hook}", on = ["started", "completed"], secret_env = "HOOK_SECRET"}},
  {{url = "{grafana}", on = ["completed"], secret_env = "GRAFANA_TOKEN", format = "grafana"}},
]
"""


def test_each_event_reaches_each_subscriber_once_across_two_replicas(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    sink: WebhookSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "deploybot.toml"
    path.write_text(config(sink), encoding="utf-8")
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    env = dict(DEPLOYBOT_CONFIG=str(path), HOOK_SECRET=SECRET, GRAFANA_TOKEN=GRAFANA_TOKEN,
               LOCK_LEASE_SECONDS=str(LEASE))  # fmt: skip
    bots = start_bots(start_bot, 2, "http", **env)
    emulator.request_urls = [b.events_url or "" for b in bots]
    assert emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS).ok
    emulator.wait_for(
        lambda: any("Deployed v4.4.0" in m.all_text for m in bot_messages(emulator)),
        timeout=60,
        what="the deployment's end",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(sink.taken()) < 2 or not sink.taken("/grafana")):
        time.sleep(0.2)
    # Both replicas follow the table for a few passes more: nothing may be sent twice.
    time.sleep(2 * LEASE)

    hooks = sink.taken()
    assert sorted(h.json["event"] for h in hooks) == ["completed", "started"], hooks
    assert all(h.signed for h in hooks), [h.headers for h in hooks]
    refused = [r for r in sink.received if r.path == "/hook" and r.status != 200]
    assert len(refused) == 1  # the 500, sent again after a second
    completed = next(h.json for h in hooks if h.json["event"] == "completed")
    assert completed["version"] == 1 and completed["target"] == "production"
    assert completed["deployment"]["tag"] == "v4.4.0-ecr-ecs-fargate"
    assert completed["deployment"]["outcome"] == "COMPLETED"
    assert completed["id"] == f"{completed['deployment']['id']}:completed"

    (grafana,) = sink.taken("/grafana")
    assert grafana.headers["authorization"] == f"Bearer {GRAFANA_TOKEN}"
    annotation = grafana.json
    assert set(annotation) == {"time", "timeEnd", "tags", "text"}
    assert annotation["tags"][:3] == ["deploybot", "production", "completed"]
    assert annotation["time"] <= annotation["timeEnd"]

    told = [m.text for m in emulator.messages(RANDOM) if m.bot_id]
    assert len(told) == 1 and "completed" in told[0] and "v4.4.0" in told[0], told


def test_a_deploy_a_terminal_followed_to_its_end_is_heard_from_the_bots_passes(
    stack: LocalStack,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
    sink: WebhookSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The terminal closes the record itself (no bot's Settled): the bot's next pass sees it
    and delivers, once."""
    from bot.cli import main

    path = tmp_path / "deploybot.toml"
    path.write_text(config(sink), encoding="utf-8")
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    monkeypatch.setenv("DEPLOYBOT_CONFIG", str(path))
    start_bot("http", HOOK_SECRET=SECRET, GRAFANA_TOKEN=GRAFANA_TOKEN)
    assert main(["deploy", "v4.4.0", "--reason", "from a laptop"]) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(sink.taken()) < 2:
        time.sleep(0.2)
    time.sleep(2.0)  # a few more passes: nothing is sent twice
    assert sorted(h.json["event"] for h in sink.taken()) == ["completed", "started"]
    assert all(h.json["deployment"]["source"] == "cli" for h in sink.taken())


def test_a_forged_or_stale_signature_does_not_verify() -> None:
    """The sink's check is the receiver's: it fails a wrong secret, a changed body, and an
    old timestamp (a test that could not fail proves nothing)."""
    from bot.notify import sign

    sink = WebhookSink(SECRET)
    body = b'{"version":1}'
    now = str(int(time.time()))
    good = {"x-deploybot-timestamp": now, "x-deploybot-signature": sign(SECRET, now, body)}
    assert sink.verify(good, body)
    assert not sink.verify({**good, "x-deploybot-signature": sign("other", now, body)}, body)
    assert not sink.verify(good, body + b" ")
    old = str(int(time.time()) - 600)
    assert not sink.verify(
        {"x-deploybot-timestamp": old, "x-deploybot-signature": sign(SECRET, old, body)}, body
    )


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ('{url = "https://x.example/h", on = ["done"], secret_env = "S"}',
         "targets.production.webhooks.0.on.0: Input should be 'started', 'completed'"),
        ('{url = "https://x.example/h", on = ["failed"], secret = "hunter2"}',
         "targets.production.webhooks.0.secret: unknown key"),
        ('{url = "ftp://x.example/h", on = ["failed"], secret_env = "S"}',
         "targets.production.webhooks.0.url: String should match pattern"),
    ],
)  # fmt: skip
def test_a_bad_webhook_entry_is_a_bad_configuration(entry: str, says: str, tmp_path: Path) -> None:
    """A secret written into the file is refused (the key does not exist: secret_env names
    the variable that holds it), as are an unknown event and a URL that is not HTTP(S)."""
    from bot.settings import Settings
    from bot.targets import BadConfig, load_targets

    path = tmp_path / "deploybot.toml"
    path.write_text(
        '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
        f"webhooks = [{entry}]\n",
        encoding="utf-8",
    )
    settings = Settings(_env_file=None, deploybot_config=path)  # type: ignore[call-arg]
    with pytest.raises(BadConfig) as raised:
        load_targets(settings)
    assert says in str(raised.value), str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_datadog_event_has_the_documented_shape() -> None:
    """docs.datadoghq.com/api/latest/events/post-an-event: title, text, tags, alert_type,
    aggregation_key, date_happened; the key in DD-API-KEY, no signature."""
    from datetime import UTC, datetime

    from bot.deploy.records import DeploymentRecord
    from bot.deploy.rollout import Outcome
    from bot.notify import request_for
    from bot.target import Target, WebhookSink

    at = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
    record = DeploymentRecord(
        id="d-1", service="c/s", kind="deploy", tag="v4.4.0", image="r@sha256:1",
        task_definition="td:2", previous_task_definition="td:1", previous_tag="v4.3.0",
        ecs_deployment_id="ecs-1", who="U0ANA", who_display="ana", source="slack",
        reason="", started_at=at, finished_at=at, outcome=Outcome.ROLLED_BACK,
        outcome_reason="the circuit breaker rolled it back",
    )  # fmt: skip
    hook = WebhookSink("https://api.datadoghq.com/api/v1/events", frozenset({"rolled_back"}),
                       "DD_API_KEY", "datadog")  # fmt: skip
    body, headers = request_for(hook, "dd-key", "rolled_back", Target("staging", "c", "s", "r"),
                                record)  # fmt: skip
    import json

    event = json.loads(body)
    assert headers["DD-API-KEY"] == "dd-key" and "X-Deploybot-Signature" not in headers
    assert set(event) == {"title", "text", "tags", "alert_type", "aggregation_key",
                          "date_happened", "source_type_name"}  # fmt: skip
    assert event["alert_type"] == "error" and "target:staging" in event["tags"]
    assert "rolled back" in event["text"] and "circuit breaker" in event["text"]
