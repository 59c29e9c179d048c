"""The emulator's state behind one lock: channels, messages, ephemerals, records, faults."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from bot.local.slack_emulator.records import (
    JSON,
    Call,
    Delivery,
    Ephemeral,
    Message,
    Revision,
    UploadedFile,
    UserGroup,
)

T = TypeVar("T")


@dataclass
class Fault:
    """Answer ``status`` to matching calls, ``times`` times (None: no limit) or until ``until``.

    ``error`` replaces the error code the status implies (``not_in_channel`` with status 200,
    as Slack answers it); ``drop`` closes the connection without any answer; ``delay`` holds
    the answer that many seconds first; ``channel`` limits it to calls naming that channel.
    """

    method: str  # "*" (every Web API method) or an exact name, "response_url" included
    status: int
    retry_after: int
    times: int | None
    until: float | None  # time.monotonic() deadline
    error: str | None = None
    drop: bool = False
    delay: float = 0.0
    channel: str | None = None
    passes: bool = False  # answered normally after ``delay`` (a slow Slack, not a failing one)
    released: asyncio.Event | None = None  # set (on the emulator's loop): answered at once
    text: str | None = None  # only calls whose ``text`` contains it (a test's one message)

    async def hold(self) -> None:
        """Hold the call ``delay`` seconds, or until ``released`` is set if sooner."""
        if self.released is None:
            await asyncio.sleep(self.delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), self.delay)

    def alive(self, now: float) -> bool:
        return (self.until is None or now < self.until) and (self.times is None or self.times > 0)

    def matches(self, method: str, now: float, channel: str | None = None, text: str = "") -> bool:
        if not self.alive(now):
            return False
        if self.channel is not None and channel != self.channel:
            return False
        if self.text is not None and self.text not in text:
            return False
        if self.method == "*":
            return method != "response_url"
        return self.method == method


@dataclass
class _Msg:
    """A message while it lives: mutable, never handed out (see ``freeze``)."""

    channel: str
    ts: str
    user: str
    thread_ts: str | None
    bot_id: str | None
    revisions: list[Revision]
    replies: list[_Msg] = field(default_factory=list)
    deleted: bool = False
    files: tuple[JSON, ...] = ()
    metadata: JSON | None = None

    def freeze(self) -> Message:
        cur = self.revisions[-1]
        return Message(
            channel=self.channel,
            ts=self.ts,
            user=self.user,
            text=cur.text,
            blocks=cur.blocks,
            thread_ts=self.thread_ts,
            bot_id=self.bot_id,
            revisions=tuple(self.revisions),
            replies=tuple(r.freeze() for r in self.replies),
            deleted=self.deleted,
            files=self.files,
            metadata=self.metadata,
        )


class Store:
    """Thread-safe state. Every change bumps ``version`` and wakes threaded and async waiters."""

    def __init__(self, channels: dict[str, str], users: dict[str, str]) -> None:
        self.channels = dict(channels)
        self.users = dict(users)
        # Users of another workspace or org (Slack Connect): user id -> (team id, enterprise
        # id or None). Everyone else is of the emulated workspace.
        self.user_teams: dict[str, tuple[str, str | None]] = {}
        # Slack Connect channels (conversations.info: is_ext_shared) and group DMs (is_mpim).
        self.shared: set[str] = set()
        self.mpims: set[str] = set()
        # Channels the bot is not a member of: it cannot post or update there.
        self.outside: set[str] = set()
        # The app's App Home Messages tab: off, Slack refuses the bot's DMs.
        self.messages_tab = True
        # User groups by id (usergroups.list, usergroups.users.list).
        self.usergroups: dict[str, UserGroup] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self._clock_last = 0.0
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._top: dict[str, list[_Msg]] = {c: [] for c in self.channels}
            self._by_ts: dict[tuple[str, str], _Msg] = {}
            self._ephemerals: list[Ephemeral] = []
            self.calls: list[Call] = []
            self.deliveries: list[Delivery] = []
            self.faults: list[Fault] = []
            self.files: dict[str, UploadedFile] = {}
            self._bump()

    # -- versions and waiting -------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def bump(self) -> None:
        """A change made from outside (the lock held): wake the waiters."""
        self._bump()

    def _bump(self) -> None:
        """Call with the lock held."""
        self._version += 1
        self._changed.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, fut, self._version)

    def touch(self) -> None:
        """Mark a change kept outside the store (a socket connecting, say)."""
        with self._lock:
            self._bump()

    def wait_for_change(self, since: int, timeout: float | None = None) -> int:
        with self._lock:
            self._changed.wait_for(lambda: self._version > since, timeout)
            return self._version

    async def changed(self, since: int, within: float | None = None) -> int:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._version > since:
                return self._version
            fut: asyncio.Future[int] = loop.create_future()
            self._async_waiters.append((loop, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, within)
        return self._version

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str = "") -> T:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"not true within {timeout}s: {what or predicate!r}; "
                        f"last calls: {[(c.method, c.error) for c in self.calls[-5:]]}"
                    )
                self._changed.wait(left)

    def locked(self) -> threading.RLock:
        return self._lock

    # -- time ------------------------------------------------------------------------------

    def new_ts(self) -> str:
        """A Slack ts: seconds.micros, unique and increasing."""
        with self._lock:
            now = max(time.time(), self._clock_last + 0.000001)
            self._clock_last = now
            return f"{now:.6f}"

    # -- channels and users ---------------------------------------------------------------

    def resolve_channel(self, channel: str) -> str | None:
        if channel in self.channels:
            return channel
        name = channel.lstrip("#")
        for cid, cname in self.channels.items():
            if cname == name:
                return cid
        return None

    def dm_channel(self, user: str) -> str:
        """The bot's DM with ``user`` (``D…``), opened on first use as Slack does when a bot
        posts to a user id."""
        with self._lock:
            channel = "D" + user[1:]
            if channel not in self.channels:
                self.channels[channel] = f"@{self.users.get(user, user)}"
                self._top.setdefault(channel, [])
                self._bump()
            return channel

    # -- messages ---------------------------------------------------------------------------

    def post(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[JSON],
        thread_ts: str | None = None,
        bot_id: str | None = None,
        files: tuple[JSON, ...] = (),
        metadata: JSON | None = None,
    ) -> Message:
        """Post into ``channel``, or into the thread of ``thread_ts`` (KeyError if none)."""
        with self._lock:
            parent = None
            if thread_ts:
                parent = self._by_ts.get((channel, thread_ts))
                if parent is None:
                    raise KeyError(thread_ts)
                if parent.thread_ts:  # a reply to a reply goes to the thread's parent
                    parent = self._by_ts[(channel, parent.thread_ts)]
            ts = self.new_ts()
            msg = _Msg(
                channel=channel,
                ts=ts,
                user=user,
                thread_ts=parent.ts if parent else None,
                bot_id=bot_id,
                revisions=[Revision(text=text, blocks=blocks, at=time.time())],
                files=files,
                metadata=metadata,
            )
            (parent.replies if parent else self._top[channel]).append(msg)
            self._by_ts[(channel, ts)] = msg
            self._bump()
            return msg.freeze()

    def clear_channel(self, channel: str) -> None:
        with self._lock:
            self._top.setdefault(channel, [])
            self._bump()

    def find(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            msg = self._by_ts.get((channel, ts))
            return msg.freeze() if msg else None

    def find_any(self, ts: str) -> Message | None:
        with self._lock:
            for (_, mts), msg in self._by_ts.items():
                if mts == ts:
                    return msg.freeze()
            return None

    def update(self, channel: str, ts: str, text: str | None, blocks: list[JSON] | None) -> Message:
        """Change a message's content, keeping the old one; KeyError if there is no such ts."""
        with self._lock:
            msg = self._by_ts[(channel, ts)]
            cur = msg.revisions[-1]
            msg.revisions.append(
                Revision(
                    text=cur.text if text is None else text,
                    blocks=cur.blocks if blocks is None else blocks,
                    at=time.time(),
                )
            )
            self._bump()
            return msg.freeze()

    def delete(self, channel: str, ts: str) -> None:
        with self._lock:
            self._by_ts[(channel, ts)].deleted = True
            self._bump()

    def messages(self, channel: str) -> list[Message]:
        with self._lock:
            return [m.freeze() for m in self._top.get(channel, [])]

    # -- ephemerals -------------------------------------------------------------------------

    def post_ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[JSON],
        source: str,
        thread_ts: str | None = None,
    ) -> Ephemeral:
        with self._lock:
            eph = Ephemeral(
                channel=channel,
                user=user,
                ts=self.new_ts(),
                text=text,
                blocks=blocks,
                source=source,
                thread_ts=thread_ts,
                revisions=(Revision(text=text, blocks=blocks, at=time.time()),),
            )
            self._ephemerals.append(eph)
            self._bump()
            return eph

    def find_ephemeral(self, ts: str) -> Ephemeral | None:
        with self._lock:
            return next((e for e in self._ephemerals if e.ts == ts), None)

    def change_ephemeral(
        self, ts: str, text: str | None, blocks: list[JSON] | None, delete: bool = False
    ) -> Ephemeral:
        with self._lock:
            i = next(i for i, e in enumerate(self._ephemerals) if e.ts == ts)
            eph = self._ephemerals[i]
            if delete:
                eph = replace(eph, deleted=True)
            else:
                text = eph.text if text is None else text
                blocks = eph.blocks if blocks is None else blocks
                rev = Revision(text=text, blocks=blocks, at=time.time())
                eph = replace(eph, text=text, blocks=blocks, revisions=(*eph.revisions, rev))
            self._ephemerals[i] = eph
            self._bump()
            return eph

    def ephemerals(self, user: str | None = None, channel: str | None = None) -> list[Ephemeral]:
        with self._lock:
            return [
                e
                for e in self._ephemerals
                if (user is None or e.user == user) and (channel is None or e.channel == channel)
            ]

    # -- records ----------------------------------------------------------------------------

    def save_file(self, file: UploadedFile) -> None:
        with self._lock:
            self.files[file.id] = file
            self._bump()

    def record_call(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)
            self._bump()

    def record_delivery(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
            self._bump()

    # -- faults -----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def take_fault(self, method: str, channel: str | None = None, text: str = "") -> Fault | None:
        """The fault this call meets, if any, counting it as used once."""
        now = time.monotonic()
        with self._lock:
            self.faults = [f for f in self.faults if f.alive(now)]
            for f in self.faults:
                if f.matches(method, now, channel, text):
                    if f.times is not None:
                        f.times -= 1
                    return f
            return None

    def snapshot(self, **extra: Any) -> JSON:
        with self._lock:
            return {
                "version": self._version,
                "channels": {
                    cid: {"name": name, "messages": [m.to_dict() for m in self.messages(cid)]}
                    for cid, name in self.channels.items()
                },
                "users": dict(self.users),
                "ephemerals": [e.to_dict() for e in self._ephemerals],
                "calls": [c.to_dict() for c in self.calls],
                "deliveries": [d.to_dict() for d in self.deliveries],
                **extra,
            }


def _resolve(fut: asyncio.Future[int], version: int) -> None:
    if not fut.done():
        fut.set_result(version)
