"""``SlackEmulator``: an aiohttp server in its own thread playing Slack for the bot, both ways."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.command_names import REFUSED_BUILT_INS
from bot.local.slack_emulator.records import (
    JSON,
    Call,
    Delivery,
    Ephemeral,
    Kind,
    Message,
    UploadedFile,
    UserGroup,
    Via,
)
from bot.local.slack_emulator.state import Fault, Store
from bot.local.slack_emulator.webapi import ApiError, Identity, WebApi, parse_blocks

log = logging.getLogger(__name__)
T = TypeVar("T")

ACK_TIMEOUT = 3.0  # what Slack gives an app to acknowledge
RESPONSE_URL_USES = 5  # Slack allows five responses per response_url
_ERRORS_BY_STATUS = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}
_SOCKET_PATH = "/link/"


@dataclass
class _ResponseTarget:
    channel: str
    user: str
    source: str | None  # "message" | "ephemeral" | None (a slash command)
    source_ts: str | None
    uses: int = 0


class SlackEmulator:
    """A small Slack on 127.0.0.1: Web API, response_urls, Socket Mode, and a sender to the bot.

    Start it, give the bot ``api_url`` as SLACK_API_URL and the tokens, then send it slash
    commands and clicks with ``slash_command`` and ``click`` and read what it did from
    ``messages()``, ``ephemerals()``, ``calls`` and ``deliveries``. Every public method is
    safe from any thread; the ``a``-prefixed ones are for coroutines on any event loop.
    """

    def __init__(
        self,
        bot_token: str = "xoxb-emulator-bot-token",
        app_token: str = "xapp-emulator-app-token",
        signing_secret: str = "emulator-signing-secret",
        team_id: str = "T0DEMO",
        users: dict[str, str] | None = None,
        channels: dict[str, str] | None = None,
        *,
        team_domain: str = "demo",
        enterprise_id: str | None = None,
        bot_user_id: str = "U0DEPLOYBOT",
        bot_name: str = "deploybot",
        bot_id: str = "B0DEPLOYBOT",
        app_id: str = "A0DEPLOYBOT",
        request_url: str | None = None,
        ack_timeout: float = ACK_TIMEOUT,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.who = Identity(
            bot_token=bot_token,
            app_token=app_token,
            signing_secret=signing_secret,
            team_id=team_id,
            team_domain=team_domain,
            bot_user_id=bot_user_id,
            bot_name=bot_name,
            bot_id=bot_id,
            app_id=app_id,
            enterprise_id=enterprise_id,
        )
        self.store = Store(
            channels=channels if channels is not None else {"C0DEPLOYS": "deploys"},
            users=users if users is not None else {"U0ALICE": "alice", "U0BOB": "bob"},
        )
        self.request_url = request_url
        # The app manifest's metadata_subscriptions' event types: a message posted with
        # metadata of one of them is sent to the bot as a message_metadata_posted event.
        self.metadata_subscriptions: set[str] = set()
        # Several bot replicas behind one Request URL: each request goes to the next of these,
        # in turn, as a load balancer in front of them would (empty: ``request_url`` alone).
        self.request_urls: list[str] = []
        self._next_url = 0
        self.ack_timeout = ack_timeout
        self._host, self._port = host, port
        self.api = WebApi(self.store, self.who, lambda: self.url)
        self.api.socket_url = self._new_socket_url
        self._responses: dict[str, _ResponseTarget] = {}
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_ids: dict[web.WebSocketResponse, int] = {}
        self._opened = 0  # connections opened so far: the N of ``socket#N``
        self._retiring: set[web.WebSocketResponse] = set()  # told to disconnect, still open
        self._next_socket = 0
        self._accept_delays: list[float] = []
        self._refuse_sockets_until = 0.0
        self._refused = 0  # handshakes refused while an outage lasted
        self._pending_acks: dict[str, asyncio.Future[tuple[float, JSON | None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._event_tasks: set[asyncio.Future[Delivery]] = set()
        self.url = ""
        self.web_app = web.Application()
        self.web_app.add_routes(
            [
                web.route("*", "/api/{method}", self._on_api),
                web.post("/response/{rid}", self._on_response_url),
                web.get(_SOCKET_PATH, self._on_socket),
                web.get("/_emulator/state", self._on_state),
                web.post("/upload/{file_id}", self._on_upload),
                web.get("/files/{file_id}/{name}", self._on_file),
            ]
        )

    # -- life -----------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The Web API base for the bot (SLACK_API_URL); ends in ``/api/``."""
        return f"{self.url}/api/"

    def start(self) -> Self:
        """Listen, in a thread of its own; returns once the port is open."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=main, name="slack-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise RuntimeError("the Slack emulator could not start") from failure[0]
        return self

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.web_app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession()

    async def _shutdown(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Close every connection and the server, and end the thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the emulator's loop and wait for it, from another thread."""
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("the Slack emulator is not started")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("on the emulator's own loop, use the a-prefixed coroutine")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine on the emulator's loop, from a coroutine on any loop."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the Slack emulator is not started")
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def add_user(
        self, user_id: str, name: str, *, team: str | None = None, enterprise: str | None = None
    ) -> None:
        """A new member of the workspace; ``name`` is what Slack sends as their user name.

        ``team`` (and ``enterprise``): a user of another workspace (or Enterprise Grid org),
        as in a Slack Connect channel. Their commands and clicks carry their own team, as
        Slack's do: a slash command's ``team_id``/``enterprise_id``, an interaction's
        ``team`` and ``user.team_id`` ("The workspace, or team, details the Block Kit
        interaction originated from", docs.slack.dev/reference/interaction-payloads/
        block_actions-payload)."""
        with self.store.locked():
            self.store.users[user_id] = name
            if team is not None or enterprise is not None:
                home = self.who.team_id
                self.store.user_teams[user_id] = (team or home, enterprise)

    def add_usergroup(self, group_id: str, handle: str, users: list[str] | None = None) -> None:
        """A user group (``S…``) with these members (what an admin creates in Slack)."""
        with self.store.locked():
            self.store.usergroups[group_id] = UserGroup(group_id, handle, tuple(users or ()))
            self.store.bump()

    def set_usergroup_users(self, group_id: str, users: list[str]) -> None:
        """Replace a group's members (usergroups.users.update: "replaces all users")."""
        with self.store.locked():
            group = self.store.usergroups[group_id]
            self.store.usergroups[group_id] = dataclasses.replace(group, users=tuple(users))
            self.store.bump()

    def disable_usergroup(self, group_id: str, disabled: bool = True) -> None:
        """usergroups.disable (or enable, ``disabled=False``)."""
        with self.store.locked():
            group = self.store.usergroups[group_id]
            self.store.usergroups[group_id] = dataclasses.replace(group, disabled=disabled)
            self.store.bump()

    # -- reading the state ----------------------------------------------------------------

    @property
    def default_channel(self) -> str:
        return next(iter(self.store.channels))

    def messages(self, channel: str | None = None) -> list[Message]:
        """The channel's top-level messages in order, each with its replies and history."""
        return self.store.messages(channel or self.default_channel)

    def message(self, ts: str, channel: str | None = None) -> Message:
        """The message (or reply) with this ts, as it is now; KeyError if none."""
        found = self.store.find(channel, ts) if channel else self.store.find_any(ts)
        if found is None:
            raise KeyError(ts)
        return found

    def ephemerals(self, user: str | None = None, channel: str | None = None) -> list[Ephemeral]:
        return self.store.ephemerals(user=user, channel=channel)

    @property
    def calls(self) -> list[Call]:
        with self.store.locked():
            return list(self.store.calls)

    def files(self) -> list[UploadedFile]:
        """Every file the bot uploaded (files.uploadV2), in upload order, bytes included."""
        with self.store.locked():
            return list(self.store.files.values())

    def calls_of(self, method: str, ok: bool | None = None) -> list[Call]:
        """The calls of one method ("chat.update", "response_url", ...), optionally by outcome."""
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    @property
    def deliveries(self) -> list[Delivery]:
        with self.store.locked():
            return list(self.store.deliveries)

    @property
    def failures(self) -> list[Delivery]:
        """Deliveries the bot did not ack in time, or answered with a non-2xx status."""
        return [d for d in self.deliveries if not d.ok]

    @property
    def version(self) -> int:
        """Grows by one at every change of state or record."""
        return self.store.version

    def wait_for_change(self, since: int, timeout: float | None = None) -> int:
        """Block until ``version`` > ``since`` (or the timeout); returns the version."""
        return self.store.wait_for_change(since, timeout)

    async def changed(self, since: int, within: float | None = None) -> int:
        """Await until ``version`` > ``since`` (or ``within`` seconds), on any event loop."""
        return await self.store.changed(since, within)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        """Re-check ``predicate`` at every change until it is truthy; return its value.

        TimeoutError, naming ``what`` and the last calls, if it is not truthy in time.
        """
        return self.store.wait_for(predicate, timeout, what)

    def snapshot(self) -> JSON:
        """Everything, JSON-able: channels with messages, ephemerals, calls, deliveries."""
        return self.store.snapshot(
            url=self.url,
            team_id=self.who.team_id,
            bot_user_id=self.who.bot_user_id,
            socket_connected=self.socket_connected,
        )

    def clear(self) -> None:
        """Forget messages, ephemerals, records and faults (connections stay)."""
        self.store.clear()

    def say(
        self,
        text: str,
        user: str | None = None,
        channel: str | None = None,
        thread_ts: str | None = None,
    ) -> Message:
        """A person posts in the channel (the bot cannot update it; no event is sent)."""
        return self.store.post(
            self._known_channel(channel),
            user or next(iter(self.store.users)),
            text,
            [],
            thread_ts=thread_ts,
        )

    # -- faults ---------------------------------------------------------------------------

    def fail(
        self,
        method: str = "*",
        status: int = 429,
        retry_after: int = 1,
        times: int | None = 1,
        *,
        error: str | None = None,
        drop: bool = False,
        delay: float = 0.0,
        channel: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` ("*": any Web API method) with ``status``.

        The answer carries ``Retry-After: retry_after`` and ``{"ok": false, "error": ...}``;
        ``error`` names the error (``not_in_channel``, ``channel_not_found`` … with status
        200, as Slack sends them). ``drop=True`` closes the connection instead of answering
        (a network failure); ``delay`` holds the answer that many seconds (past the client's
        timeout); ``channel`` limits the fault to calls naming that channel.
        ``method="response_url"`` faults response_url posts ("*" leaves them alone).
        """
        self.store.add_fault(
            Fault(method, status, retry_after, times, None, error, drop, delay, channel)
        )

    def fail_for(
        self,
        seconds: float,
        method: str = "*",
        status: int = 429,
        retry_after: int = 1,
        *,
        error: str | None = None,
        drop: bool = False,
        delay: float = 0.0,
        channel: str | None = None,
    ) -> None:
        """Like ``fail``, for every matching call during the next ``seconds``."""
        until = time.monotonic() + seconds
        self.store.add_fault(
            Fault(method, status, retry_after, None, until, error, drop, delay, channel)
        )

    def slow(
        self, method: str, seconds: float, times: int | None = 1, text: str | None = None
    ) -> Callable[[], None]:
        """Answer the next ``times`` calls of ``method`` normally, ``seconds`` late, or as soon
        as the function returned is called (a test's race set up: the calls go on at once).
        ``text``: only calls whose text contains it (the one message a race is about, not
        another post that happens to come first)."""
        released = asyncio.Event()  # bound to the emulator's loop when a call first waits
        self.store.add_fault(
            Fault(
                method,
                200,
                0,
                times,
                None,
                delay=seconds,
                passes=True,
                released=released,
                text=text,
            )
        )

        def go_on() -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(released.set)

        return go_on

    def faults_left(self, method: str) -> int:
        """How many calls of ``method`` a counted fault (``fail``/``slow``'s ``times``) still
        waits for: 0 once the last has met it (a ``slow`` call is then under way)."""
        with self.store.locked():
            return sum(f.times or 0 for f in self.store.faults if f.method == method)

    def remove_bot(self, channel: str) -> None:
        """The bot leaves ``channel`` (or was never invited): its posts and updates there
        fail with ``not_in_channel`` (``channel_not_found`` for a DM, ``D…``)."""
        with self.store.locked():
            self.store.outside.add(self._known_channel(channel))

    def add_bot(self, channel: str) -> None:
        """Invite the bot into ``channel``."""
        with self.store.locked():
            self.store.outside.discard(self._known_channel(channel))

    def set_messages_tab(self, enabled: bool) -> None:
        """The app's App Home Messages tab: off, the bot's DMs are refused
        (``messages_tab_disabled``), as Slack does."""
        with self.store.locked():
            self.store.messages_tab = enabled

    def dm_channel(self, user: str) -> str:
        """The id of the bot's DM with ``user`` (its messages: ``messages(dm_channel(u))``)."""
        return "D" + user[1:]

    def add_channel(self, channel: str, name: str, *, shared: bool = False) -> None:
        """A conversation people can send commands from (``D…`` for a DM). ``shared``: a
        Slack Connect channel, shared with another organisation (is_ext_shared)."""
        with self.store.locked():
            self.store.channels[channel] = name
            if shared:
                self.store.shared.add(channel)
            self.store.clear_channel(channel)

    def join_enterprise(self, enterprise_id: str | None) -> None:
        """Put the emulated workspace in an Enterprise Grid org (None: take it out): auth.test
        then names the org, and its people's commands and clicks carry its id."""
        with self.store.locked():
            self.who = dataclasses.replace(self.who, enterprise_id=enterprise_id)
            self.api.who = self.who

    def add_group_dm(self, channel: str, users: list[str]) -> str:
        """A group DM (an MPIM) of ``users``: Slack names it ``mpdm-a--b--c-1`` and sends that
        as a slash command's ``channel_name``; its id does not say what it is (``C…``/``G…``),
        conversations.info's ``is_mpim`` does."""
        name = "mpdm-" + "--".join(self._user_name(u) for u in users) + "-1"
        with self.store.locked():
            self.store.channels[channel] = name
            self.store.mpims.add(channel)
            self.store.clear_channel(channel)
        return channel

    def _actor(self, user: str) -> tuple[str, str | None]:
        """(team id, enterprise id) of ``user``: theirs if of another workspace, else ours."""
        return self.store.user_teams.get(user, (self.who.team_id, self.who.enterprise_id))

    def _channel_name(self, channel: str) -> str:
        """What Slack sends as ``channel_name``: "directmessage" for a DM (the bot's or two
        people's), the conversation's name otherwise (``mpdm-…`` for a group DM)."""
        return "directmessage" if channel.startswith("D") else self.store.channels[channel]

    def clear_faults(self) -> None:
        with self.store.locked():
            self.store.faults.clear()

    # -- the Web API ----------------------------------------------------------------------

    async def _on_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: JSON = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    params.update(body)
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        token = params.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()

        headers: dict[str, str] = {}
        fault = self.store.take_fault(
            method, str(params.get("channel") or "") or None, str(params.get("text") or "")
        )
        if fault is not None and fault.delay:
            await fault.hold()
        if fault is not None and fault.passes:
            fault = None  # only late
        if fault is not None and fault.drop:
            self.store.record_call(
                Call(
                    method=method,
                    params=params,
                    at=time.time(),
                    status=0,
                    ok=False,
                    error="connection dropped",
                    response={},
                )
            )
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection die, no answer
            raise asyncio.CancelledError  # aiohttp drops the handler quietly
        if fault is not None:
            status = fault.status
            answer: JSON = {
                "ok": False,
                "error": fault.error or _ERRORS_BY_STATUS.get(status, "fault"),
            }
            headers["Retry-After"] = str(fault.retry_after)
        else:
            try:
                status, answer = 200, self.api.call(method, params, token)
            except ApiError as exc:
                status, answer = exc.status, {"ok": False, "error": exc.error}
        self.store.record_call(
            Call(
                method=method,
                params=params,
                at=time.time(),
                status=status,
                ok=bool(answer.get("ok")),
                error=answer.get("error"),
                response=answer,
            )
        )
        if method == "chat.postMessage" and answer.get("ok"):
            self._metadata_posted(answer)
        return web.json_response(answer, status=status, headers=headers)

    # -- response_url ---------------------------------------------------------------------

    def _new_response_url(
        self, channel: str, user: str, source: str | None, source_ts: str | None
    ) -> str:
        rid = uuid.uuid4().hex
        with self.store.locked():
            self._responses[rid] = _ResponseTarget(channel, user, source, source_ts)
        return f"{self.url}/response/{rid}"

    async def _on_response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        params: JSON = body if isinstance(body, dict) else {"_raw": await request.text()}
        headers: dict[str, str] = {}
        fault = self.store.take_fault("response_url")
        if fault is not None:
            status = fault.status
            answer: JSON = {"ok": False, "error": _ERRORS_BY_STATUS.get(status, "fault")}
            headers["Retry-After"] = str(fault.retry_after)
        else:
            try:
                status, answer = 200, self._respond(rid, params)
            except ApiError as exc:
                status, answer = exc.status, {"ok": False, "error": exc.error}
        self.store.record_call(
            Call(
                method="response_url",
                params={**params, "response_url": f"{self.url}/response/{rid}"},
                at=time.time(),
                status=status,
                ok=bool(answer.get("ok")),
                error=answer.get("error"),
                response=answer,
            )
        )
        return web.json_response(answer, status=status, headers=headers)

    def _respond(self, rid: str, body: JSON) -> JSON:
        with self.store.locked():
            target = self._responses.get(rid)
            if target is None:
                raise ApiError("expired_url", 404)
            if target.uses >= RESPONSE_URL_USES:
                raise ApiError("used_url", 404)
            if "_raw" in body:
                raise ApiError("invalid_payload", 400)
            target.uses += 1
            text = body.get("text")
            text = None if text is None else str(text)
            blocks = parse_blocks(body.get("blocks"))
            on_source = target.source is not None and target.source_ts is not None
            if on_source and (body.get("delete_original") or body.get("replace_original")):
                assert target.source_ts is not None
                delete = bool(body.get("delete_original"))
                if target.source == "message":
                    if delete:
                        self.store.delete(target.channel, target.source_ts)
                    else:
                        self.store.update(target.channel, target.source_ts, text, blocks)
                else:
                    self.store.change_ephemeral(target.source_ts, text, blocks, delete=delete)
                return {"ok": True}
            if body.get("delete_original"):
                raise ApiError("no_original_message", 404)
            if not text and not blocks:
                raise ApiError("no_text", 400)
            self._post_response(target.channel, target.user, body, text or "", blocks or [])
            return {"ok": True}

    def _post_response(
        self, channel: str, user: str, body: JSON, text: str, blocks: list[JSON], source: str = ""
    ) -> None:
        """A message sent through a response_url or an ack body, as Slack shows it."""
        if body.get("response_type") == "in_channel":
            try:
                self.store.post(
                    channel,
                    self.who.bot_user_id,
                    text,
                    blocks,
                    thread_ts=body.get("thread_ts"),
                    bot_id=self.who.bot_id,
                )
            except KeyError as exc:
                raise ApiError("thread_not_found", 404) from exc
        else:
            self.store.post_ephemeral(channel, user, text, blocks, source=source or "response_url")

    # -- Socket Mode ----------------------------------------------------------------------

    def _new_socket_url(self) -> str:
        ticket = uuid.uuid4().hex
        with self.store.locked():
            self._tickets.add(ticket)
        ws_base = self.url.replace("http://", "ws://", 1)
        return f"{ws_base}{_SOCKET_PATH}?ticket={ticket}&app_id={self.who.app_id}"

    @property
    def socket_connected(self) -> bool:
        """Whether a Socket Mode connection is open now."""
        return any(not ws.closed for ws in self._sockets)

    @property
    def socket_count(self) -> int:
        """How many Socket Mode connections are open now."""
        return sum(not ws.closed for ws in self._sockets)

    @property
    def sockets_opened(self) -> int:
        """How many Socket Mode connections were ever opened (``socket#N`` is the Nth)."""
        return self._opened

    @property
    def sockets_refused(self) -> int:
        """How many Socket Mode handshakes were refused (503) during an outage."""
        return self._refused

    def socket_open(self, name: str) -> bool:
        """Whether the connection ``name`` (``socket#N``, as a delivery's ``to``) is still open."""
        return any(
            f"socket#{n}" == name and not ws.closed for ws, n in list(self._socket_ids.items())
        )

    def wait_socket_connected(self, timeout: float = 10.0, count: int = 1) -> None:
        """Wait until at least ``count`` Socket Mode connections are open."""
        self.wait_for(
            lambda: self.socket_count >= count,
            timeout,
            f"{count} Socket Mode connection{'s' if count > 1 else ''}",
        )

    def delay_socket_accept(self, seconds: float, times: int = 1) -> None:
        """Hold the handshake of the next ``times`` Socket Mode connections ``seconds`` long
        (Slack slow to accept a new connection)."""
        with self.store.locked():
            self._accept_delays.extend([seconds] * times)

    async def _on_socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        if time.monotonic() < self._refuse_sockets_until:
            self._refused += 1
            return web.json_response({"ok": False, "error": "unavailable"}, status=503)
        with self.store.locked():
            delay = self._accept_delays.pop(0) if self._accept_delays else 0.0
        if delay:
            await asyncio.sleep(delay)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._opened += 1
        self._socket_ids[ws] = self._opened
        self._sockets.append(ws)
        self.store.touch()
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": self.socket_count,
                    "debug_info": {
                        "host": "applink-emulator",
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.who.app_id},
                }
            )
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_socket_text(msg.data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self._retiring.discard(ws)
            self._socket_ids.pop(ws, None)
            self.store.touch()
        return ws

    def _on_socket_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            log.warning("Socket Mode: not JSON from the app: %r", data[:200])
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        waiting = self._pending_acks.get(envelope_id) if envelope_id else None
        if waiting is None or waiting.done():
            log.warning("Socket Mode: an ack for no envelope awaiting one: %r", data[:200])
            return
        payload = message.get("payload")
        waiting.set_result((time.monotonic(), payload if isinstance(payload, dict) else None))

    def drop_socket_connections(self, refuse_for: float = 0.0, graceful: bool = False) -> int:
        """Close every Socket Mode connection; returns how many. The app should reconnect.

        ``graceful`` first sends Slack's ``{"type": "disconnect"}``; ``refuse_for`` seconds
        of refused reconnections follow.
        """
        return self._run(self.adrop_socket_connections(refuse_for, graceful))

    async def adrop_socket_connections(
        self, refuse_for: float = 0.0, graceful: bool = False
    ) -> int:
        return await self._arun(self._drop(refuse_for, graceful))

    async def _drop(self, refuse_for: float, graceful: bool) -> int:
        self._refuse_sockets_until = time.monotonic() + refuse_for
        dropped = [ws for ws in self._sockets if not ws.closed]
        for ws in dropped:
            if graceful:
                with contextlib.suppress(Exception):
                    await ws.send_json(
                        {"type": "disconnect", "reason": "refresh_requested", "debug_info": {}}
                    )
            with contextlib.suppress(Exception):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"dropped")
        self._sockets = [ws for ws in self._sockets if ws not in dropped]
        self.store.touch()
        return len(dropped)

    def refresh_sockets(
        self, reason: str = "refresh_requested", close_after: float = 1.0, only: int | None = None
    ) -> int:
        """Tell open Socket Mode connections ``{"type": "disconnect", "reason": reason}``, then
        close each ``close_after`` seconds later (unless the app closed it first); returns how
        many were told. ``only`` picks one connection by its number (``socket#N``).

        From the moment it is told, a connection gets no new envelope while another one is
        open; with none other open it still gets them (Slack has nowhere else to send).
        Slack: "Connections refresh regularly. You should be ready to receive and connect to
        new WebSocket URLs as quickly as possible" (api.slack.com/apis/connections/
        socket-implement); the warning is an envelope ``{"type": "disconnect", "reason":
        "warning" | "refresh_requested" | ...}``, on which slack_sdk's client opens a new
        connection (socket_mode/async_client.py, ``process_message``).
        """
        return self._run(self.arefresh_sockets(reason, close_after, only))

    async def arefresh_sockets(
        self, reason: str = "refresh_requested", close_after: float = 1.0, only: int | None = None
    ) -> int:
        return await self._arun(self._refresh(reason, close_after, only))

    async def _refresh(self, reason: str, close_after: float, only: int | None) -> int:
        told = [
            ws
            for ws in self._sockets
            if not ws.closed and (only is None or self._socket_ids.get(ws) == only)
        ]
        for ws in told:
            self._retiring.add(ws)
            with contextlib.suppress(Exception):
                await ws.send_json(
                    {
                        "type": "disconnect",
                        "reason": reason,
                        "debug_info": {"host": "applink-emulator"},
                    }
                )

        async def close_later(ws: web.WebSocketResponse) -> None:
            await asyncio.sleep(close_after)
            with contextlib.suppress(Exception):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"refreshed")

        for ws in told:
            asyncio.get_running_loop().create_task(close_later(ws))
        self.store.touch()
        return len(told)

    # -- sending to the bot ---------------------------------------------------------------

    def _user_name(self, user: str) -> str:
        return self.store.users.get(user, user)

    def _route(self, via: Via | None, url: str | None) -> tuple[Via, str | None]:
        if url is None and self.request_urls and via != "socket":
            with self.store.locked():
                url = self.request_urls[self._next_url % len(self.request_urls)]
                self._next_url += 1
        url = url or self.request_url
        if via is None:
            via = "http" if url else "socket"
        if via == "http" and not url:
            raise ValueError("via='http' needs url= (or request_url= on the emulator)")
        return via, url

    def slash_command(
        self,
        command: str,
        text: str = "",
        user: str | None = None,
        channel: str | None = None,
        via: Via | None = None,
        url: str | None = None,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Delivery:
        """Send a slash command the way Slack does and wait for the ack (at most ack_timeout).

        ``via`` defaults to "http" when a url is known, else "socket". Over HTTP the request
        is signed with the signing secret; ``timestamp`` and ``signature`` override what is
        sent (a stale timestamp is signed correctly unless ``signature`` is given too).
        """
        return self._run(
            self.aslash_command(
                command, text, user, channel, via, url, timestamp=timestamp, signature=signature
            )
        )

    async def aslash_command(
        self,
        command: str,
        text: str = "",
        user: str | None = None,
        channel: str | None = None,
        via: Via | None = None,
        url: str | None = None,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Delivery:
        """``slash_command`` for coroutines (any event loop)."""
        if command in REFUSED_BUILT_INS:
            # Slack answers its own commands itself and refuses an app that declares one.
            raise ValueError(f"{command} is one of Slack's built-in commands: no app receives it")
        via, url = self._route(via, url)
        user = user or next(iter(self.store.users))
        channel = self._known_channel(channel)
        response_url = self._new_response_url(channel, user, None, None)
        team, enterprise = self._actor(user)
        payload = {
            "token": "emulator-verification-token",
            "team_id": team,
            "team_domain": self.who.team_domain if team == self.who.team_id else team.lower(),
            # "enterprise_id, enterprise_name: … about where the user was in Slack when they
            # triggered your app's command (e.g. the workspace, Enterprise Grid, or channel)"
            # (api.slack.com/interactivity/slash-commands#app_command_handling): on Grid only.
            **({"enterprise_id": enterprise, "enterprise_name": enterprise} if enterprise else {}),
            "channel_id": channel,
            "channel_name": self._channel_name(channel),
            "user_id": user,
            "user_name": self._user_name(user),
            "command": command,
            "text": text,
            "api_app_id": self.who.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": self._trigger_id(),
        }
        delivery = await self._arun(
            self._deliver("slash_commands", payload, payload, via, url, timestamp, signature)
        )
        if delivery.acked and delivery.ack_payload:
            ack = delivery.ack_payload
            text_, blocks = ack.get("text"), ack.get("blocks")
            if text_ or blocks:
                with self.store.locked(), contextlib.suppress(ApiError):
                    self._post_response(
                        channel,
                        user,
                        ack,
                        str(text_ or ""),
                        parse_blocks(blocks) or [],
                        source="ack",
                    )
        return delivery

    def click(
        self,
        message_or_ts: Message | Ephemeral | str,
        action_id: str,
        user: str | None = None,
        channel: str | None = None,
        value: str | None = None,
        via: Via | None = None,
        url: str | None = None,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        as_seen: bool = False,
    ) -> Delivery:
        """Click the button ``action_id`` of a message (or an ephemeral) as ``user`` would.

        A button with a ``confirm`` dialog is clicked as if the person confirmed it.
        ``value`` overrides the button's own value. ``as_seen``: the button as the given
        ``Message`` copy shows it, though the message has changed since: a client that has not
        redrawn it yet still sends the click, with the message as it has it.
        """
        return self._run(
            self.aclick(
                message_or_ts,
                action_id,
                user,
                channel,
                value,
                via,
                url,
                timestamp=timestamp,
                signature=signature,
                as_seen=as_seen,
            )
        )

    async def aclick(
        self,
        message_or_ts: Message | Ephemeral | str,
        action_id: str,
        user: str | None = None,
        channel: str | None = None,
        value: str | None = None,
        via: Via | None = None,
        url: str | None = None,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        as_seen: bool = False,
    ) -> Delivery:
        """``click`` for coroutines (any event loop)."""
        via, url = self._route(via, url)
        user = user or next(iter(self.store.users))
        source = self._click_source(message_or_ts, channel)
        seen = message_or_ts if as_seen and not isinstance(message_or_ts, str) else source
        button = seen.button(action_id)
        channel = source.channel
        is_ephemeral = isinstance(source, Ephemeral)
        response_url = self._new_response_url(
            channel, user, "ephemeral" if is_ephemeral else "message", source.ts
        )
        trigger_id = self._trigger_id()
        container: JSON = {
            "type": "message",
            "message_ts": source.ts,
            "channel_id": channel,
            "is_ephemeral": is_ephemeral,
        }
        if source.thread_ts:
            container["thread_ts"] = source.thread_ts
        team, enterprise = self._actor(user)
        domain = self.who.team_domain if team == self.who.team_id else team.lower()
        org = {"enterprise_id": enterprise, "enterprise_name": enterprise} if enterprise else {}
        payload: JSON = {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": self._user_name(user),
                "name": self._user_name(user),
                # "The user.team_id will report an enterprise organization ID (which starts
                # with an E) instead of team ID … when using an Enterprise organization"
                # (block_suggestion/block_actions payload references).
                "team_id": enterprise or team,
            },
            "api_app_id": self.who.app_id,
            "token": "emulator-verification-token",
            "container": container,
            "trigger_id": trigger_id,
            # On Grid "team can also have the properties enterprise_id and enterprise_name"
            # (block_actions payload reference); ``enterprise`` is null off Grid.
            "team": {"id": team, "domain": domain, **org},
            "enterprise": {"id": enterprise, "name": enterprise} if enterprise else None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self._channel_name(channel)},
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": button.get("block_id", ""),
                    "text": button.get("text", {"type": "plain_text", "text": ""}),
                    "value": value if value is not None else button.get("value", ""),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                    **({"style": button["style"]} if "style" in button else {}),
                }
            ],
        }
        if isinstance(seen, Message):
            payload["message"] = seen.to_slack()  # the message as the clicking client has it
        form = {"payload": json.dumps(payload)}
        return await self._arun(
            self._deliver("interactive", payload, form, via, url, timestamp, signature)
        )

    # -- the Events API: message metadata ---------------------------------------------------
    # docs.slack.dev/reference/events/message_metadata_posted: "sent when a message containing
    # metadata is sent in Slack"; "your app will only subscribe to the event types defined
    # within the metadata_subscriptions key within your app's manifest file". The wrapper is
    # the Events API's event_callback; over Socket Mode an ``events_api`` envelope carries it,
    # with ``retry_attempt`` and ``retry_reason`` (api.slack.com/apis/connections/socket), over
    # HTTP a JSON POST with X-Slack-Retry-Num / X-Slack-Retry-Reason on a retry
    # (api.slack.com/apis/connections/events-api#retries).

    def _metadata_posted(self, answer: JSON) -> None:
        message = answer.get("message") or {}
        metadata = message.get("metadata")
        if not metadata or metadata.get("event_type") not in self.metadata_subscriptions:
            return
        ts, channel = str(answer["ts"]), str(answer["channel"])
        body: JSON = {
            "token": "emulator-verification-token",
            "team_id": self.who.team_id,
            "api_app_id": self.who.app_id,
            "event": {
                "type": "message_metadata_posted",
                "app_id": self.who.app_id,
                "bot_id": self.who.bot_id,
                "user_id": self.who.bot_user_id,
                "team_id": self.who.team_id,
                "channel_id": channel,
                "metadata": metadata,
                "message_ts": ts,
                "event_ts": ts,
            },
            "type": "event_callback",
            "event_id": "Ev" + uuid.uuid4().hex[:10].upper(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": self.who.team_id,
                    "user_id": self.who.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
        }
        task = asyncio.ensure_future(self._deliver_event(body))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    @property
    def events(self) -> list[Delivery]:
        """The Events API deliveries sent to the bot so far (retries included)."""
        return [d for d in self.deliveries if d.kind == "events_api"]

    def redeliver(self, delivery: Delivery, reason: str = "http_timeout") -> Delivery:
        """Send an event again as Slack's retry of it does (the same event_id, the next
        retry number), to whichever replica's turn it is."""
        return self._run(self._deliver_event(delivery.payload, delivery.retry + 1, reason))

    async def _deliver_event(self, body: JSON, retry: int = 0, reason: str = "") -> Delivery:
        via, url = self._route(None, None)
        sent_at = time.time()
        envelope_id: str | None = None
        status: int | None = None
        text, error, latency = "", None, None
        if via == "http":
            assert url is not None and self._session is not None
            raw = json.dumps(body)
            ts = str(int(time.time()))
            signature = SignatureVerifier(self.who.signing_secret).generate_signature(
                timestamp=ts, body=raw
            )
            headers = {
                "Content-Type": "application/json",
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": signature or "",
                **(
                    {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": reason}
                    if retry
                    else {}
                ),
            }
            started = time.monotonic()
            try:
                async with self._session.post(
                    url,
                    data=raw.encode(),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.ack_timeout),
                ) as resp:
                    text = await resp.text()
                    status, latency = resp.status, time.monotonic() - started
            except TimeoutError:
                error = f"no response within {self.ack_timeout} s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
        else:
            envelope_id = uuid.uuid4().hex
            latency, _, error, url = await self._send_envelope(
                "events_api", body, envelope_id, retry, reason
            )
        delivery = Delivery(
            kind="events_api",
            via=via,
            payload=body,
            response_url="",
            trigger_id="",
            envelope_id=envelope_id,
            sent_at=sent_at,
            acked=error is None,
            latency=latency,
            status=status,
            body=text,
            ack_payload=None,
            error=error,
            to=url or "",
            retry=retry,
        )
        self.store.record_delivery(delivery)
        return delivery

    def _click_source(
        self, ref: Message | Ephemeral | str, channel: str | None
    ) -> Message | Ephemeral:
        ts = ref if isinstance(ref, str) else ref.ts
        if isinstance(ref, Ephemeral):
            found_eph = self.store.find_ephemeral(ts)
            if found_eph is None or found_eph.deleted:
                raise KeyError(f"no ephemeral with ts {ts}")
            return found_eph
        found = self.store.find(channel, ts) if channel else self.store.find_any(ts)
        if found is not None:
            if found.deleted:
                raise KeyError(f"message {ts} was deleted")
            return found
        eph = self.store.find_ephemeral(ts)
        if eph is not None and not eph.deleted:
            return eph
        raise KeyError(f"no message or ephemeral with ts {ts}")

    def _known_channel(self, channel: str | None) -> str:
        if channel is None:
            return self.default_channel
        resolved = self.store.resolve_channel(channel)
        if resolved is None:
            raise KeyError(f"unknown channel {channel!r}; have {self.store.channels}")
        return resolved

    def _trigger_id(self) -> str:
        return f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}"

    async def _deliver(
        self,
        kind: Kind,
        payload: JSON,
        form: JSON,
        via: Via,
        url: str | None,
        timestamp: int | None,
        signature: str | None,
    ) -> Delivery:
        sent_at = time.time()
        envelope_id: str | None = None
        status: int | None = None
        body, ack_payload, error, latency = "", None, None, None
        if via == "http":
            assert url is not None
            status, body, latency, error = await self._post_signed(url, form, timestamp, signature)
            if body.strip():
                try:
                    parsed = json.loads(body)
                    ack_payload = parsed if isinstance(parsed, dict) else None
                except json.JSONDecodeError:
                    ack_payload = {"text": body}
        else:
            envelope_id = uuid.uuid4().hex
            latency, ack_payload, error, url = await self._send_envelope(kind, payload, envelope_id)
            body = json.dumps(ack_payload) if ack_payload else ""
        delivery = Delivery(
            kind=kind,
            via=via,
            payload=payload,
            response_url=payload["response_url"],
            trigger_id=payload["trigger_id"],
            envelope_id=envelope_id,
            sent_at=sent_at,
            acked=error is None,
            latency=latency,
            status=status,
            body=body,
            ack_payload=ack_payload,
            error=error,
            to=url or "",
        )
        self.store.record_delivery(delivery)
        return delivery

    async def _post_signed(
        self, url: str, form: JSON, timestamp: int | None, signature: str | None
    ) -> tuple[int | None, str, float | None, str | None]:
        assert self._session is not None
        body = urlencode(form)
        ts = str(timestamp if timestamp is not None else int(time.time()))
        if signature is None:
            signature = SignatureVerifier(self.who.signing_secret).generate_signature(
                timestamp=ts, body=body
            )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or "",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        started = time.monotonic()
        try:
            async with self._session.post(
                url,
                data=body.encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.ack_timeout),
            ) as resp:
                text = await resp.text()
                return resp.status, text, time.monotonic() - started, None
        except TimeoutError:
            return None, "", None, f"no response within {self.ack_timeout} s"
        except aiohttp.ClientError as exc:
            return None, "", None, f"{type(exc).__name__}: {exc}"

    def _pick_socket(self) -> web.WebSocketResponse | None:
        """The connection for the next envelope: Slack spreads envelopes over an app's open
        connections, each to one of them (bolt-python #448, a maintainer: "the Slack API
        server will send each event to only 1 random connection"; #1071: "Slack's API server
        delivers to any of the active connections"; api.slack.com/apis/connections/socket-implement
        on refreshing connections). Here: in turn, skipping those told to disconnect while
        another is open."""
        open_sockets = [ws for ws in self._sockets if not ws.closed]
        fresh = [ws for ws in open_sockets if ws not in self._retiring] or open_sockets
        if not fresh:
            return None
        self._next_socket += 1
        return fresh[self._next_socket % len(fresh)]

    async def _send_envelope(
        self, kind: Kind, payload: JSON, envelope_id: str, retry: int = 0, reason: str = ""
    ) -> tuple[float | None, JSON | None, str | None, str]:
        ws = self._pick_socket()
        if ws is None:
            return None, None, "no Socket Mode connection", ""
        to = f"socket#{self._socket_ids.get(ws, 0)}"
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[tuple[float, JSON | None]] = loop.create_future()
        self._pending_acks[envelope_id] = waiting
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": kind == "slash_commands",
            "retry_attempt": retry,
            "retry_reason": reason,
        }
        started = time.monotonic()
        try:
            await ws.send_json(envelope)
            acked_at, ack_payload = await asyncio.wait_for(waiting, self.ack_timeout)
            return acked_at - started, ack_payload, None, to
        except TimeoutError:
            return None, None, f"no ack within {self.ack_timeout} s", to
        except (ConnectionError, RuntimeError) as exc:
            return None, None, f"socket: {exc}", to
        finally:
            self._pending_acks.pop(envelope_id, None)

    # -- state for the playground ---------------------------------------------------------

    async def _on_upload(self, request: web.Request) -> web.Response:
        """The upload URL files.getUploadURLExternal gave: the file's bytes, raw or as a
        multipart form's ``file`` ("Files can be sent as raw bytes or can be multipart form
        encoded", the method's reference). Slack answers 200 ``OK - <length>``."""
        file_id = request.match_info["file_id"]
        # ``fail("upload", status=500)`` and the like: the upload host failing, not the Web API.
        fault = self.store.take_fault("upload")
        if fault is not None and fault.delay:
            await fault.hold()
        if fault is not None and not fault.passes:
            if fault.drop and request.transport is not None:
                request.transport.abort()
                raise asyncio.CancelledError
            self.store.record_call(
                Call(
                    method="upload",
                    params={"file_id": file_id},
                    at=time.time(),
                    status=fault.status,
                    ok=False,
                    error=fault.error or "fault",
                )
            )
            return web.Response(status=fault.status, text=fault.error or "upload failed")
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            part = form.get("file") or form.get("filename")
            data = part.file.read() if isinstance(part, web.FileField) else b""
        else:
            data = await request.read()
        with self.store.locked():
            found = self.store.files.get(file_id)
            if found is not None and not found.completed:
                self.store.save_file(dataclasses.replace(found, data=data))
        self.store.record_call(
            Call(
                method="upload",
                params={"file_id": file_id, "length": len(data)},
                at=time.time(),
                status=200 if found else 404,
                ok=found is not None,
                error=None if found else "file_not_found",
            )
        )
        if found is None:
            return web.Response(status=404, text="file not found")
        return web.Response(text=f"OK - {len(data)}")

    async def _on_file(self, request: web.Request) -> web.Response:
        """A file's bytes (its ``url_private``), for the playground's page."""
        found = self.store.files.get(request.match_info["file_id"])
        if found is None or not found.completed:
            raise web.HTTPNotFound()
        return web.Response(body=found.data, content_type=found.mimetype)

    async def _on_state(self, request: web.Request) -> web.Response:
        """``GET /_emulator/state?since=V&timeout=S``: the snapshot, long-polling for a change."""
        since = int(request.query.get("since", "-1"))
        timeout = min(float(request.query.get("timeout", "25")), 60.0)
        await self.store.changed(since, timeout)
        return web.json_response(self.snapshot())
