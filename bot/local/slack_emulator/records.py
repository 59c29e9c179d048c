"""What the Slack emulator remembers: messages, ephemerals, Web API calls, deliveries to the bot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]
Via = Literal["http", "socket"]
Kind = Literal["slash_commands", "interactive", "events_api"]


def _walk_text(node: Any) -> Iterator[str]:
    """Every ``text`` string inside a Block Kit structure, in document order."""
    if isinstance(node, dict):
        text = node.get("text")
        if isinstance(text, str):
            yield text
        for key, value in node.items():
            if key != "text" or not isinstance(value, str):
                yield from _walk_text(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_text(item)


def _walk_buttons(blocks: list[JSON]) -> Iterator[JSON]:
    for block in blocks:
        elements = list(block.get("elements", []))
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for element in elements:
            if isinstance(element, dict) and element.get("type") == "button":
                yield {**element, "block_id": block.get("block_id", "")}


@dataclass(frozen=True)
class Revision:
    """One content a message has had: the first post, then one per update."""

    text: str
    blocks: list[JSON]
    at: float  # wall-clock seconds (time.time())


class _Content:
    text: str
    blocks: list[JSON]

    @property
    def all_text(self) -> str:
        """The fallback text and every text in the blocks, one a line: handy to search."""
        return "\n".join([self.text, *_walk_text(self.blocks)]).strip()

    @property
    def buttons(self) -> list[JSON]:
        """Every button element in the blocks, each with its ``block_id`` added."""
        return list(_walk_buttons(self.blocks))

    def button(self, action_id: str) -> JSON:
        """The button with this ``action_id``; KeyError if there is none."""
        for b in self.buttons:
            if b.get("action_id") == action_id:
                return b
        raise KeyError(f"no button with action_id {action_id!r}; have {self.buttons!r}")


@dataclass(frozen=True)
class Message(_Content):
    """A message in the channel as it is now, with its thread replies and its update history."""

    channel: str
    ts: str
    user: str
    text: str
    blocks: list[JSON]
    thread_ts: str | None  # set on a reply: the parent's ts
    bot_id: str | None
    revisions: tuple[Revision, ...]  # oldest first; the last is the current content
    replies: tuple[Message, ...] = ()
    deleted: bool = False
    files: tuple[JSON, ...] = ()  # file objects shared with the message (files.uploadV2)
    # Message metadata ({"event_type", "event_payload"}) chat.postMessage was given, if any.
    metadata: JSON | None = None

    @property
    def updates(self) -> int:
        """How many times it was updated (chat.update, or a response_url replace)."""
        return len(self.revisions) - 1

    def to_slack(self) -> JSON:
        """The message as Slack shows it in API answers and in block_actions payloads."""
        out: JSON = {
            "type": "message",
            "ts": self.ts,
            "user": self.user,
            "text": self.text,
            "blocks": self.blocks,
        }
        if self.bot_id:
            out["bot_id"] = self.bot_id
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.replies:
            out["reply_count"] = len(self.replies)
        if self.updates:
            out["edited"] = {"user": self.user, "ts": self.ts}
        if self.files:
            out["files"] = list(self.files)
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    def to_dict(self) -> JSON:
        return asdict(self)


@dataclass(frozen=True)
class Ephemeral(_Content):
    """A message only ``user`` sees (chat.postEphemeral, a response_url answer, an ack body)."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: list[JSON]
    source: str  # "chat.postEphemeral" | "response_url" | "ack"
    thread_ts: str | None = None
    revisions: tuple[Revision, ...] = ()
    deleted: bool = False

    def to_dict(self) -> JSON:
        return asdict(self)


@dataclass(frozen=True)
class Call:
    """One request the bot made: a Web API method, or a POST to a response_url."""

    method: str  # "chat.postMessage", ..., or "response_url"
    params: JSON
    at: float  # wall-clock seconds
    status: int  # HTTP status answered
    ok: bool
    error: str | None
    response: JSON = field(default_factory=dict)

    def to_dict(self) -> JSON:
        return asdict(self)


@dataclass(frozen=True)
class Delivery:
    """One slash command or click the emulator sent to the bot, and how the bot acked it.

    ``latency`` is seconds from sending to the ack (the HTTP response, or the socket ack).
    ``status`` and ``body`` are the HTTP response's; over the socket ``status`` is None and
    ``body`` is the ack's payload as JSON text ("" when the ack had none). ``to`` says where
    it went: the request URL over HTTP, ``socket#N`` (the Nth connection opened) over the socket.
    """

    kind: Kind
    via: Via
    payload: JSON  # the slash command's fields, the interactive payload, or the event callback
    response_url: str
    trigger_id: str
    envelope_id: str | None
    sent_at: float
    acked: bool
    latency: float | None
    status: int | None
    body: str
    ack_payload: JSON | None
    error: str | None
    to: str = ""
    retry: int = 0  # an event's retry number (0: the first delivery)

    @property
    def ok(self) -> bool:
        """Acked in time, and with a 2xx status over HTTP."""
        return self.acked and (self.status is None or 200 <= self.status < 300)

    def to_dict(self) -> JSON:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class UploadedFile:
    """A file the bot uploaded (files.getUploadURLExternal, the POST of its bytes to the
    upload URL, files.completeUploadExternal). ``data`` is empty until the bytes arrived;
    ``completed`` once files.completeUploadExternal finished it."""

    id: str
    name: str
    length: int  # what files.getUploadURLExternal was told
    alt_txt: str | None
    data: bytes = b""
    title: str | None = None
    completed: bool = False
    channels: tuple[str, ...] = ()  # where it was shared (none: a private file)

    @property
    def mimetype(self) -> str:
        return (
            "image/png"
            if self.data.startswith(b"\x89PNG\r\n\x1a\n")
            else "application/octet-stream"
        )

    def to_slack(self, base_url: str) -> JSON:
        """The file object (docs.slack.dev/reference/objects/file-object), the fields we use."""
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title or self.name,
            "mimetype": self.mimetype,
            "filetype": "png" if self.mimetype == "image/png" else "binary",
            "size": len(self.data),
            "alt_txt": self.alt_txt,
            "url_private": f"{base_url}/files/{self.id}/{self.name}",
            "channels": list(self.channels),
        }


@dataclass(frozen=True)
class UserGroup:
    """A Slack user group (``S…``): its handle, members, and whether it was disabled."""

    id: str
    handle: str
    users: tuple[str, ...] = ()
    disabled: bool = False

    def to_slack(self, team_id: str) -> JSON:
        """The usergroup object (docs.slack.dev/reference/methods/usergroups.list), the
        fields deploybot reads."""
        return {
            "id": self.id,
            "team_id": team_id,
            "is_usergroup": True,
            "name": self.handle,
            "handle": self.handle,
            "date_delete": 1 if self.disabled else 0,
            "users": list(self.users),
            "user_count": len(self.users),
        }
