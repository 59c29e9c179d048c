"""The Slack emulator through real clients: slack_sdk Web API clients, a Bolt app both ways."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web import WebClient
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.slack_emulator import Delivery, SlackEmulator
from tests.helpers import free_port, wait_until

T = TypeVar("T")
ALICE, BOB, CHANNEL = "U0ALICE", "U0BOB", "C0DEPLOYS"
BOT_TOKEN, APP_TOKEN, SECRET = "xoxb-test", "xapp-test", "test-secret"


class LoopThread:
    """An asyncio loop in a thread, where the Bolt app under test lives (as the bot would)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        signing_secret=SECRET,
        users={ALICE: "alice", BOB: "bob"},
        channels={CHANNEL: "deploys", "C0OTHER": "random"},
    ) as emulator:
        yield emulator


@pytest.fixture
def bg() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


def client(emu: SlackEmulator, token: str = BOT_TOKEN) -> WebClient:
    return WebClient(token=token, base_url=emu.api_url)


# -- the Web API --------------------------------------------------------------------------


def test_post_update_and_history(emu: SlackEmulator) -> None:
    web_client = client(emu)
    posted = web_client.chat_postMessage(channel=CHANNEL, text="deploying v1")
    assert posted["ok"] and posted["message"]["text"] == "deploying v1"
    ts = posted["ts"]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*done* in 42 s"}}]
    web_client.chat_update(channel=CHANNEL, ts=ts, text="done", blocks=blocks)
    reply = web_client.chat_postMessage(channel=CHANNEL, thread_ts=ts, text="task started")

    [msg] = emu.messages()
    assert (msg.ts, msg.text, msg.blocks, msg.updates) == (ts, "done", blocks, 1)
    assert [r.text for r in msg.revisions] == ["deploying v1", "done"]
    assert "*done* in 42 s" in msg.all_text
    assert [r.ts for r in msg.replies] == [reply["ts"]]
    assert msg.replies[0].thread_ts == ts
    assert emu.message(reply["ts"]).text == "task started"
    assert [c.method for c in emu.calls] == ["chat.postMessage", "chat.update", "chat.postMessage"]
    assert emu.calls_of("chat.update")[0].params["ts"] == ts
    json.dumps(emu.snapshot())  # the playground's page gets exactly this


def test_a_post_to_a_user_id_is_a_dm(emu: SlackEmulator) -> None:
    """As Slack: the bot's DM with the user, answered with the DM's own id; refused with
    messages_tab_disabled when the app's Messages tab is off; an unknown user is
    channel_not_found."""
    web_client = client(emu)
    posted = web_client.chat_postMessage(channel=ALICE, text="your deploy completed")
    dm = emu.dm_channel(ALICE)
    assert posted["channel"] == dm and dm.startswith("D")
    assert [m.text for m in emu.messages(dm)] == ["your deploy completed"]
    again = web_client.chat_postMessage(channel=ALICE, text="and another")
    assert again["channel"] == dm and len(emu.messages(dm)) == 2
    link = web_client.chat_getPermalink(channel=dm, message_ts=again["ts"])
    assert link["permalink"].endswith(f"/archives/{dm}/p{again['ts'].replace('.', '')}")
    with pytest.raises(SlackApiError) as err:
        web_client.chat_postMessage(channel="U0NOBODY", text="hi")
    assert err.value.response["error"] == "channel_not_found"
    emu.set_messages_tab(False)
    with pytest.raises(SlackApiError) as err:
        web_client.chat_postMessage(channel=BOB, text="hi")
    assert err.value.response["error"] == "messages_tab_disabled"
    assert emu.dm_channel(BOB) not in emu.store.channels


def test_errors_answer_as_slack_does(emu: SlackEmulator) -> None:
    web_client = client(emu)
    with pytest.raises(SlackApiError) as err:
        web_client.chat_update(channel=CHANNEL, ts="123.456", text="x")
    assert err.value.response["error"] == "message_not_found"
    theirs = emu.say("hello", user=ALICE)
    with pytest.raises(SlackApiError) as err:
        web_client.chat_update(channel=CHANNEL, ts=theirs.ts, text="x")
    assert err.value.response["error"] == "cant_update_message"
    with pytest.raises(SlackApiError) as err:
        client(emu, token="xoxb-wrong").chat_postMessage(channel=CHANNEL, text="x")
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        web_client.chat_postMessage(channel="C0NOPE", text="x")
    assert err.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as err:
        web_client.api_call("chat.doesNotExist", json={"channel": CHANNEL})
    assert err.value.response["error"] == "unknown_method"
    with pytest.raises(SlackApiError) as err:
        web_client.apps_connections_open(app_token=BOT_TOKEN)
    assert err.value.response["error"] == "not_allowed_token_type"
    assert [m.text for m in emu.messages()] == ["hello"]
    assert [m.updates for m in emu.messages()] == [0]
    assert [c.error for c in emu.calls] == [
        "message_not_found",
        "cant_update_message",
        "invalid_auth",
        "channel_not_found",
        "unknown_method",
        "not_allowed_token_type",
    ]


def test_other_methods(emu: SlackEmulator) -> None:
    web_client = client(emu)
    auth = web_client.auth_test()
    assert (auth["team_id"], auth["user_id"]) == ("T0DEMO", "U0DEPLOYBOT")
    posted = web_client.chat_postMessage(channel="#deploys", text="hi")  # by name, too
    link = web_client.chat_getPermalink(channel=CHANNEL, message_ts=posted["ts"])
    assert link["permalink"].startswith(f"{emu.url}/archives/{CHANNEL}/p")
    eph = web_client.chat_postEphemeral(channel=CHANNEL, user=BOB, text="only you")
    [only] = emu.ephemerals(user=BOB)
    assert (only.ts, only.text, only.source) == (
        eph["message_ts"],
        "only you",
        "chat.postEphemeral",
    )
    assert emu.ephemerals(user=ALICE) == []
    assert web_client.conversations_info(channel=CHANNEL)["channel"]["name"] == "deploys"
    assert web_client.users_info(user=ALICE)["user"]["name"] == "alice"
    with pytest.raises(SlackApiError):
        web_client.users_info(user="U0NOBODY")
    opened = WebClient(base_url=emu.api_url).apps_connections_open(app_token=APP_TOKEN)
    assert opened["url"].startswith(emu.url.replace("http", "ws"))


def test_429_and_500_carry_retry_after_and_retry_handlers_get_through(
    emu: SlackEmulator, bg: LoopThread
) -> None:
    emu.fail("chat.postMessage", status=429, retry_after=0, times=1)
    with pytest.raises(SlackApiError) as err:  # no retry handler: the fault shows
        client(emu).chat_postMessage(channel=CHANNEL, text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "0"

    emu.fail("*", status=500, retry_after=1, times=1)
    req = urllib.request.Request(f"{emu.api_url}auth.test", data=b"token=" + BOT_TOKEN.encode())
    with pytest.raises(urllib.error.HTTPError) as http_err:
        urllib.request.urlopen(req, timeout=5)
    assert http_err.value.code == 500 and http_err.value.headers["Retry-After"] == "1"

    async def post_through_faults() -> str:
        web_client = AsyncWebClient(
            token=BOT_TOKEN,
            base_url=emu.api_url,
            retry_handlers=[
                AsyncRateLimitErrorRetryHandler(max_retry_count=2),
                AsyncServerErrorRetryHandler(max_retry_count=2),
            ],
        )
        emu.fail("chat.postMessage", status=429, retry_after=0, times=1)
        emu.fail("chat.postMessage", status=500, times=1)
        posted = await web_client.chat_postMessage(channel=CHANNEL, text="through")
        return str(posted["ts"])

    ts = bg.run(post_through_faults())
    assert [m.ts for m in emu.messages()] == [ts]
    assert [c.status for c in emu.calls_of("chat.postMessage")] == [429, 429, 500, 200]


def test_fail_for_a_while(emu: SlackEmulator) -> None:
    emu.fail_for(0.3, status=503)
    with pytest.raises(SlackApiError):
        client(emu).auth_test()
    time.sleep(0.35)
    assert client(emu).auth_test()["ok"]


def test_a_slow_call_is_held_until_let_go(emu: SlackEmulator) -> None:
    """``slow`` holds the call (nothing posted yet) until the function it returns is called,
    then the call is answered normally: how a test writes something between a bot's call and
    its answer without sleeping for the whole delay."""
    go_on = emu.slow("chat.postMessage", seconds=120)
    answers: list[str] = []
    post = threading.Thread(
        target=lambda: answers.append(
            str(client(emu).chat_postMessage(channel=CHANNEL, text="held")["ts"])
        )
    )
    post.start()
    wait_until(lambda: emu.faults_left("chat.postMessage") == 0, 30, "the call under way")
    assert emu.messages() == [] and answers == []
    go_on()
    post.join(timeout=60)  # far under the 120 s it would otherwise be held
    assert not post.is_alive()
    assert [m.ts for m in emu.messages()] == answers and emu.messages()[0].text == "held"


# -- a Bolt app over HTTP -----------------------------------------------------------------


def build_app(emu: SlackEmulator) -> AsyncApp:
    """A tiny bot: /deploy acks at once, posts a message with a confirmed button, later."""
    app = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN, base_url=emu.api_url),
        signing_secret=SECRET,
    )

    @app.command("/deploy")
    async def deploy(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack(f"Deploying {command['text']}...")
        button = {
            "type": "button",
            "action_id": "rollback",
            "value": command["text"],
            "text": {"type": "plain_text", "text": "Rollback"},
            "confirm": {
                "title": {"type": "plain_text", "text": "Sure?"},
                "text": {"type": "plain_text", "text": "Roll back?"},
                "confirm": {"type": "plain_text", "text": "Yes"},
                "deny": {"type": "plain_text", "text": "No"},
            },
        }
        await client.chat_postMessage(
            channel=command["channel_id"],
            text=f"<@{command['user_id']}> deployed {command['text']}",
            blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": "deployed"}},
                {"type": "actions", "block_id": "final", "elements": [button]},
            ],
        )

    @app.action("rollback")
    async def rollback(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        value = body["actions"][0]["value"]
        await respond(text=f"rolled back from {value}", replace_original=True)
        await respond(text="only you see this")

    @app.command("/help")
    async def help_(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        button = {"type": "button", "action_id": "deploy", "value": "v9", "text": _plain("v9")}
        await client.chat_postEphemeral(
            channel=command["channel_id"],
            user=command["user_id"],
            text="recent tags",
            blocks=[{"type": "actions", "block_id": "tags", "elements": [button]}],
        )

    @app.action("deploy")
    async def deploy_button(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await respond(text=f"deploying {body['actions'][0]['value']}", replace_original=True)

    return app


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


@pytest.fixture
def http_bot(emu: SlackEmulator, bg: LoopThread) -> Iterator[str]:
    port = free_port()

    async def serve() -> web.AppRunner:
        runner = web.AppRunner(build_app(emu).web_app(path="/slack/events", port=port))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = bg.run(serve())
    yield f"http://127.0.0.1:{port}/slack/events"
    bg.run(runner.cleanup())


def test_signed_slash_command_over_http(emu: SlackEmulator, http_bot: str) -> None:
    delivery = emu.slash_command("/deploy", "v1.2.3", user=ALICE, channel=CHANNEL, url=http_bot)
    assert delivery.ok and delivery.via == "http" and delivery.status == 200
    assert delivery.latency is not None and delivery.latency < 3
    assert delivery.ack_payload == {"text": "Deploying v1.2.3..."}
    assert [e.text for e in emu.ephemerals(user=ALICE)] == ["Deploying v1.2.3..."]
    msg = emu.wait_for(lambda: emu.messages() and emu.messages()[0], 10, "the bot's message")
    assert msg.text == f"<@{ALICE}> deployed v1.2.3"
    assert msg.button("rollback")["confirm"]

    click = emu.click(msg, "rollback", user=BOB, url=http_bot)
    assert click.ok and click.kind == "interactive"
    assert click.payload["container"] == {
        "type": "message",
        "message_ts": msg.ts,
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert click.payload["actions"][0]["block_id"] == "final"
    emu.wait_for(lambda: len(emu.calls_of("response_url")) == 2, 10, "two responses")
    final = emu.message(msg.ts)
    assert final.text == "rolled back from v1.2.3" and final.updates == 1
    assert [e.text for e in emu.ephemerals(user=BOB)] == ["only you see this"]
    assert emu.failures == []


def test_forged_and_stale_requests_get_401(emu: SlackEmulator, http_bot: str) -> None:
    forged = emu.slash_command(
        "/deploy", "v1", user=ALICE, url=http_bot, signature="v0=" + "0" * 64
    )
    stale = emu.slash_command(
        "/deploy", "v1", user=ALICE, url=http_bot, timestamp=int(time.time()) - 301
    )
    assert (forged.status, stale.status) == (401, 401)
    assert not forged.ok and emu.failures == [forged, stale]
    time.sleep(0.3)  # give a wrongly accepted command time to post
    assert emu.messages() == [] and emu.calls_of("chat.postMessage") == []


def test_clicking_a_button_in_an_ephemeral(emu: SlackEmulator, http_bot: str) -> None:
    assert emu.slash_command("/help", user=BOB, url=http_bot).ok
    eph = emu.wait_for(lambda: emu.ephemerals(user=BOB) and emu.ephemerals(user=BOB)[0], 10)
    click = emu.click(eph, "deploy", user=BOB, url=http_bot)
    assert click.ok and click.payload["container"]["is_ephemeral"] is True
    assert "message" not in click.payload
    emu.wait_for(lambda: emu.ephemerals(user=BOB)[0].text == "deploying v9", 10, "replaced")
    assert len(emu.ephemerals(user=BOB)[0].revisions) == 2 and emu.messages() == []


# -- the same app over Socket Mode --------------------------------------------------------


def _acked(emu: SlackEmulator, tag: str) -> Delivery:
    """A command right after a reconnect. slack_sdk's aiohttp client can open a second
    connection just after the first (its ping-pong check still counts the outage, 4 pings
    long with ping_interval=1) and abandon the first: an envelope sent there in between is
    lost, as with Slack itself. Sending again is allowed only for that loss: an envelope
    that a connection still open did not ack fails the test."""
    deadline = time.monotonic() + 15
    while True:
        delivery = emu.slash_command("/deploy", tag, user=BOB, via="socket")
        if delivery.ok or time.monotonic() > deadline:
            return delivery
        assert delivery.error and "no ack" in delivery.error, delivery.error
        emu.wait_for(
            lambda lost_on=delivery.to: not emu.socket_open(lost_on), 5, f"{delivery.to} closed"
        )
        emu.wait_socket_connected(10)


def test_socket_mode_with_slack_sdks_aiohttp_client(emu: SlackEmulator, bg: LoopThread) -> None:
    async def connect() -> AsyncSocketModeHandler:
        handler = AsyncSocketModeHandler(build_app(emu), APP_TOKEN, ping_interval=1)
        assert isinstance(handler.client, SocketModeClient)
        await handler.connect_async()
        return handler

    handler = bg.run(connect())
    try:
        emu.wait_socket_connected(5)
        delivery = emu.slash_command("/deploy", "v2.0.0", user=BOB, via="socket")
        assert delivery.ok and delivery.envelope_id and delivery.status is None
        assert delivery.latency is not None and delivery.latency < 3
        assert delivery.ack_payload == {"text": "Deploying v2.0.0..."}
        msg = emu.wait_for(lambda: emu.messages() and emu.messages()[0], 10, "the message")
        assert emu.click(msg, "rollback", user=BOB, via="socket").ok
        emu.wait_for(lambda: emu.message(msg.ts).updates == 1, 10, "the replaced message")

        opened = emu.sockets_opened
        assert emu.drop_socket_connections() == 1
        # slack_sdk reconnects by itself (at once: "not connected" cannot be observed reliably)
        emu.wait_for(lambda: emu.sockets_opened > opened and emu.socket_connected, 10, "reconnect")
        assert _acked(emu, "v2.0.1").ok
        assert len(emu.calls_of("apps.connections.open")) >= 2

        opened, refused = emu.sockets_opened, emu.sockets_refused
        assert emu.drop_socket_connections(refuse_for=1.5, graceful=True) == 1
        emu.wait_for(lambda: emu.sockets_opened > opened and emu.socket_connected, 15, "reconnect")
        assert emu.sockets_refused > refused  # it tried during the outage and was refused
        assert _acked(emu, "v2.0.2").ok
    finally:
        bg.run(handler.close_async())


def test_a_missing_ack_is_a_failure(bg: LoopThread) -> None:
    with SlackEmulator(app_token=APP_TOKEN, ack_timeout=0.5) as emu:

        async def connect_silent_client() -> SocketModeClient:
            sm = SocketModeClient(
                app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=emu.api_url)
            )
            await sm.connect()
            return sm

        sm = bg.run(connect_silent_client())
        try:
            emu.wait_socket_connected(5)
            delivery = emu.slash_command("/deploy", "v1", via="socket")
            assert not delivery.acked and "no ack" in (delivery.error or "")
            assert emu.failures == [delivery]
        finally:
            bg.run(sm.close())
    no_socket = SlackEmulator(app_token=APP_TOKEN).start()
    try:
        assert (
            no_socket.slash_command("/deploy-status", via="socket").error
            == "no Socket Mode connection"
        )
    finally:
        no_socket.stop()


# -- response_url, versions, the playground's view -----------------------------------------


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_response_url_of_a_slash_command(emu: SlackEmulator, bg: LoopThread) -> None:
    async def silent_bot() -> SocketModeClient:
        async def ack(client: SocketModeClient, req: Any) -> None:
            from slack_sdk.socket_mode.response import SocketModeResponse

            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

        sm = SocketModeClient(app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=emu.api_url))
        sm.socket_mode_request_listeners.append(ack)
        await sm.connect()
        return sm

    sm = bg.run(silent_bot())
    try:
        emu.wait_socket_connected(5)
        delivery = emu.slash_command("/deploy-status", user=ALICE, via="socket")
        assert delivery.ok and delivery.ack_payload is None
        url = delivery.response_url
        assert post_json(url, {"text": "just you"}) == (200, {"ok": True})
        assert post_json(url, {"text": "all", "response_type": "in_channel"})[0] == 200
        assert post_json(url, {"delete_original": True})[1]["error"] == "no_original_message"
        assert [e.text for e in emu.ephemerals(user=ALICE)] == ["just you"]
        assert [m.text for m in emu.messages()] == ["all"]
        assert post_json(url, {"text": "4"})[0] == 200
        assert post_json(url, {"text": "5"})[0] == 200
        assert post_json(url, {"text": "6"}) == (404, {"ok": False, "error": "used_url"})
        assert post_json(f"{emu.url}/response/nope", {"text": "x"})[0] == 404
        assert len(emu.calls_of("response_url")) == 7
    finally:
        bg.run(sm.close())


def test_version_and_waiting(emu: SlackEmulator, bg: LoopThread) -> None:
    v0 = emu.version
    assert emu.wait_for_change(v0, timeout=0.05) == v0

    async def wait_async() -> int:
        return await emu.changed(v0, within=5)

    waiter = asyncio.run_coroutine_threadsafe(wait_async(), bg.loop)
    threading.Timer(0.1, lambda: client(emu).chat_postMessage(channel=CHANNEL, text="x")).start()
    assert waiter.result(5) > v0
    assert emu.wait_for_change(v0, timeout=1) > v0
    with pytest.raises(TimeoutError, match="never"):
        emu.wait_for(lambda: False, 0.1, "never")

    with urllib.request.urlopen(f"{emu.url}/_emulator/state?since={emu.version}&timeout=0.1") as r:
        state = json.loads(r.read())
    assert [m["text"] for m in state["channels"][CHANNEL]["messages"]] == ["x"]
    assert state["calls"][0]["method"] == "chat.postMessage"


def test_slacks_own_commands_never_reach_an_app(emu: SlackEmulator) -> None:
    """Slack answers /status and its other built-ins itself (and refuses a manifest that
    declares one): the emulator will not send one to the bot either."""
    with pytest.raises(ValueError, match="built-in"):
        emu.slash_command("/status", user=ALICE)


def test_strangers_dms_and_shared_channels_are_sent_as_slack_sends_them(
    emu: SlackEmulator, http_bot: str
) -> None:
    """#24: a user of another workspace or org sends their own team's ids (a command's
    team_id/enterprise_id; a click's team and user.team_id, the org's on Grid); a DM's
    channel_name is "directmessage", a group DM's mpdm-…; conversations.info says
    is_ext_shared (Slack Connect) and is_mpim."""
    emu.add_user("W0OUT", "outsider", team="T0ACME", enterprise="E0ACME")
    emu.add_channel("C0SHARED", "shared", shared=True)
    group = emu.add_group_dm("G0GROUP", [ALICE, BOB])
    emu.add_channel("D0ALICE", "@alice")
    command = emu.slash_command("/deploy", "v1.2.3", user="W0OUT", channel="C0SHARED", url=http_bot)
    assert (command.payload["team_id"], command.payload["enterprise_id"]) == ("T0ACME", "E0ACME")
    own = emu.slash_command("/help", user=ALICE, channel="D0ALICE", url=http_bot)
    assert (own.payload["team_id"], own.payload["channel_name"]) == ("T0DEMO", "directmessage")
    assert "enterprise_id" not in own.payload
    in_group = emu.slash_command("/help", user=BOB, channel=group, url=http_bot)
    assert in_group.payload["channel_name"] == "mpdm-alice--bob-1"
    msg = emu.wait_for(lambda: emu.messages("C0SHARED") and emu.messages("C0SHARED")[0], 10)
    click = emu.click(msg, "rollback", user="W0OUT", url=http_bot)
    assert click.payload["team"] == {
        "id": "T0ACME",
        "domain": "t0acme",
        "enterprise_id": "E0ACME",
        "enterprise_name": "E0ACME",
    }
    assert click.payload["user"]["team_id"] == "E0ACME"
    assert click.payload["enterprise"] == {"id": "E0ACME", "name": "E0ACME"}
    web_client = client(emu)
    shared = web_client.conversations_info(channel="C0SHARED")["channel"]
    assert (shared["is_ext_shared"], shared["is_mpim"], shared["is_im"]) == (True, False, False)
    mpim = web_client.conversations_info(channel=group)["channel"]
    assert (mpim["is_ext_shared"], mpim["is_mpim"]) == (False, True)
    assert web_client.conversations_info(channel="D0ALICE")["channel"]["is_im"] is True
    emu.join_enterprise("E0HOME")
    assert web_client.auth_test()["enterprise_id"] == "E0HOME"
    on_grid = emu.slash_command("/help", user=ALICE, url=http_bot)
    assert on_grid.payload["enterprise_id"] == "E0HOME"


PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
    b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00"
    b"\x00IEND\xaeB`\x82"
)


def test_files_upload_v2_through_slack_sdk_records_the_file_and_shares_it(
    emu: SlackEmulator,
) -> None:
    sdk = AsyncWebClient(token=BOT_TOKEN, base_url=emu.api_url)
    answer = asyncio.run(
        sdk.files_upload_v2(
            channel=CHANNEL,
            content=PNG_BYTES,
            filename="chart.png",
            title="the chart",
            alt_txt="a dot",
            initial_comment="here it is",
        )
    )
    assert answer["ok"] and answer["file"]["title"] == "the chart"
    assert [c.method for c in emu.calls if c.method.startswith(("files.", "upload"))] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    (file,) = emu.files()
    assert file.data == PNG_BYTES and file.completed and file.channels == (CHANNEL,)
    (msg,) = emu.messages(CHANNEL)
    assert msg.text == "here it is"
    assert msg.files[0]["mimetype"] == "image/png" and msg.files[0]["alt_txt"] == "a dot"
    with urllib.request.urlopen(msg.files[0]["url_private"], timeout=5) as got:
        assert got.read() == PNG_BYTES and got.headers["Content-Type"] == "image/png"


def test_completing_an_upload_whose_bytes_never_came_is_refused(emu: SlackEmulator) -> None:
    api = client(emu)
    url = api.files_getUploadURLExternal(filename="chart.png", length=10)
    with pytest.raises(SlackApiError) as err:
        api.files_completeUploadExternal(files=[{"id": url["file_id"]}], channel_id=CHANNEL)
    assert err.value.response["error"] == "file_not_found"
    assert emu.messages(CHANNEL) == []
    with pytest.raises(SlackApiError) as err:
        api.files_getUploadURLExternal(filename="chart.png", length=0)
    assert err.value.response["error"] == "missing_argument"


def test_user_groups_answer_as_slack_shapes_them(emu: SlackEmulator) -> None:
    """usergroups.list (include_disabled, include_users) and usergroups.users.list, the
    groups made, edited and disabled through the emulator."""
    emu.add_usergroup("S0OPS", "ops", [ALICE])
    web = client(emu)
    assert web.usergroups_users_list(usergroup="S0OPS")["users"] == [ALICE]
    emu.set_usergroup_users("S0OPS", [ALICE, BOB])
    assert web.usergroups_users_list(usergroup="S0OPS")["users"] == [ALICE, BOB]
    (listed,) = web.usergroups_list()["usergroups"]
    assert listed["id"] == "S0OPS" and listed["handle"] == "ops" and listed["date_delete"] == 0
    assert "users" not in listed
    emu.disable_usergroup("S0OPS")
    assert web.usergroups_list()["usergroups"] == []
    (disabled,) = web.usergroups_list(include_disabled=True, include_users=True)["usergroups"]
    assert disabled["date_delete"] != 0 and disabled["users"] == [ALICE, BOB]
    for usergroup in ("S0OPS", "S0NONE"):
        with pytest.raises(SlackApiError) as raised:
            web.usergroups_users_list(usergroup=usergroup)
        assert raised.value.response["error"] == "no_such_subgroup"
    assert web.usergroups_users_list(usergroup="S0OPS", include_disabled=True)["users"]


def test_message_metadata_is_kept_and_checked(emu: SlackEmulator) -> None:
    web = client(emu)
    metadata = {"event_type": "thing_happened", "event_payload": {"id": 7}}
    posted = web.chat_postMessage(channel=CHANNEL, text="x", metadata=metadata)
    assert posted["message"]["metadata"] == metadata
    assert emu.message(posted["ts"]).metadata == metadata
    assert emu.events == []  # nobody subscribed to thing_happened
    with pytest.raises(SlackApiError) as raised:
        web.chat_postMessage(channel=CHANNEL, text="x", metadata={"event_payload": {}})
    assert raised.value.response["error"] == "invalid_metadata_format"
