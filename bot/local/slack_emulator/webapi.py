"""The Web API methods the emulator answers, as Slack shapes them, over the shared ``Store``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bot.local.slack_emulator.records import JSON, UploadedFile
from bot.local.slack_emulator.state import Store


@dataclass(frozen=True)
class Identity:
    """Who the emulated workspace and app are."""

    bot_token: str
    app_token: str
    signing_secret: str
    team_id: str
    team_domain: str
    bot_user_id: str
    bot_name: str
    bot_id: str
    app_id: str
    enterprise_id: str | None = None  # the Enterprise Grid org the workspace belongs to


class ApiError(Exception):
    """A Slack error answer: ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def parse_blocks(value: Any) -> list[JSON] | None:
    """Blocks arrive as a list (JSON bodies) or as JSON text (form bodies)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ApiError("invalid_blocks") from exc
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        raise ApiError("invalid_blocks")
    return value


def parse_metadata(value: Any) -> JSON | None:
    """chat.postMessage's ``metadata``: "JSON object with event_type and event_payload
    fields" (docs.slack.dev/reference/methods/chat.postMessage; api.slack.com/metadata/using),
    a dict in JSON bodies, JSON text in form bodies."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ApiError("invalid_metadata_format") from exc
    if not isinstance(value, dict) or not isinstance(value.get("event_type"), str):
        raise ApiError("invalid_metadata_format")
    payload = value.get("event_payload", {})
    if not isinstance(payload, dict):
        raise ApiError("invalid_metadata_format")
    return {"event_type": value["event_type"], "event_payload": payload}


Handler = Callable[[JSON], JSON]


class WebApi:
    """Dispatches a method name and its params to an answer, checking the token first."""

    APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

    def __init__(self, store: Store, who: Identity, base_url: Callable[[], str]) -> None:
        self.store = store
        self.who = who
        self._base_url = base_url
        self.methods: dict[str, Handler] = {
            "api.test": lambda p: {"args": p},
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "chat.getPermalink": self.chat_get_permalink,
            "conversations.info": self.conversations_info,
            "users.info": self.users_info,
            "apps.connections.open": self.apps_connections_open,
            "files.getUploadURLExternal": self.files_get_upload_url_external,
            "files.completeUploadExternal": self.files_complete_upload_external,
            "usergroups.list": self.usergroups_list,
            "usergroups.users.list": self.usergroups_users_list,
        }
        self.socket_url: Callable[[], str] = lambda: ""

    def check_token(self, method: str, token: str | None) -> None:
        if method == "api.test":
            return
        if not token:
            raise ApiError("not_authed")
        wants_app = method in self.APP_TOKEN_METHODS
        if token in (self.who.bot_token, self.who.app_token):
            if (token == self.who.app_token) != wants_app:
                raise ApiError("not_allowed_token_type")
            return
        raise ApiError("invalid_auth")

    def call(self, method: str, params: JSON, token: str | None) -> JSON:
        """The answer's body; raises ApiError for an error answer."""
        handler = self.methods.get(method)
        if handler is None:
            raise ApiError("unknown_method")
        self.check_token(method, token)
        return {"ok": True, **handler(params)}

    # -- helpers ----------------------------------------------------------------------------

    def _channel(self, params: JSON, key: str = "channel") -> str:
        raw = params.get(key)
        if not raw:
            raise ApiError("channel_not_found")
        channel = self.store.resolve_channel(str(raw))
        if channel is None:
            raise ApiError("channel_not_found")
        return channel

    def _content(self, params: JSON, required: bool) -> tuple[str | None, list[JSON] | None]:
        text = params.get("text")
        blocks = parse_blocks(params.get("blocks"))
        if required and not text and not blocks:
            raise ApiError("no_text")
        return (None if text is None else str(text)), blocks

    # -- methods ----------------------------------------------------------------------------

    def auth_test(self, params: JSON) -> JSON:
        return {
            "url": self._base_url() + "/",
            "team": self.who.team_domain,
            "user": self.who.bot_name,
            "team_id": self.who.team_id,
            "user_id": self.who.bot_user_id,
            "bot_id": self.who.bot_id,
            "is_enterprise_install": False,
            # "enterprise_id … only returned for Enterprise Grid" (auth.test reference).
            **({"enterprise_id": self.who.enterprise_id} if self.who.enterprise_id else {}),
        }

    def _member(self, channel: str) -> None:
        """Slack refuses posts where the bot is not a member: ``not_in_channel`` in a channel,
        ``channel_not_found`` in a conversation it cannot see at all (a DM)."""
        if channel in self.store.outside:
            raise ApiError("channel_not_found" if channel.startswith("D") else "not_in_channel")

    def _dm(self, params: JSON) -> str | None:
        """The DM channel of a post to a user id: "Post to a user's ID as the channel to send a
        direct message to them" needs only chat:write, no conversations.open (Slack's
        chat.postMessage reference; ParabolInc/parabol#4844 dropped im:write for it). Slack
        answers with the DM's own id (``D…``); with the app's Messages tab off it refuses:
        ``messages_tab_disabled`` ("Messages tab for the app is disabled", the chat.* error
        tables). An unknown user is ``channel_not_found``."""
        raw = str(params.get("channel") or "")
        if not raw.startswith(("U", "W")) or raw in self.store.channels:
            return None
        if raw not in self.store.users:
            raise ApiError("channel_not_found")
        if not self.store.messages_tab:
            raise ApiError("messages_tab_disabled")
        return self.store.dm_channel(raw)

    def chat_post_message(self, params: JSON) -> JSON:
        channel = self._dm(params) or self._channel(params)
        self._member(channel)
        text, blocks = self._content(params, required=True)
        thread_ts = params.get("thread_ts") or None
        metadata = parse_metadata(params.get("metadata"))
        try:
            msg = self.store.post(
                channel,
                self.who.bot_user_id,
                text or "",
                blocks or [],
                thread_ts=thread_ts,
                bot_id=self.who.bot_id,
                metadata=metadata,
            )
        except KeyError as exc:
            raise ApiError("thread_not_found") from exc
        return {"channel": channel, "ts": msg.ts, "message": msg.to_slack()}

    def chat_update(self, params: JSON) -> JSON:
        channel = self._channel(params)
        self._member(channel)
        ts = str(params.get("ts") or "")
        text, blocks = self._content(params, required=False)
        found = self.store.find(channel, ts)
        if found is None or found.deleted:
            raise ApiError("message_not_found")
        if found.user != self.who.bot_user_id:
            raise ApiError("cant_update_message")
        if text is None and blocks is None:
            raise ApiError("no_text")
        msg = self.store.update(channel, ts, text, blocks)
        return {"channel": channel, "ts": ts, "text": msg.text, "message": msg.to_slack()}

    def chat_post_ephemeral(self, params: JSON) -> JSON:
        channel = self._channel(params)
        user = str(params.get("user") or "")
        if user not in self.store.users:
            raise ApiError("user_not_found")
        text, blocks = self._content(params, required=True)
        eph = self.store.post_ephemeral(
            channel,
            user,
            text or "",
            blocks or [],
            source="chat.postEphemeral",
            thread_ts=params.get("thread_ts") or None,
        )
        return {"message_ts": eph.ts}

    def chat_get_permalink(self, params: JSON) -> JSON:
        channel = self._channel(params)
        ts = str(params.get("message_ts") or "")
        if self.store.find(channel, ts) is None:
            raise ApiError("message_not_found")
        return {
            "channel": channel,
            "permalink": f"{self._base_url()}/archives/{channel}/p{ts.replace('.', '')}",
        }

    def conversations_info(self, params: JSON) -> JSON:
        """The conversation object's type flags (docs.slack.dev/reference/objects/
        conversation-object): ``is_im`` a DM, ``is_mpim`` a group DM, ``is_ext_shared`` shared
        with another organisation (Slack Connect), ``is_shared`` shared at all."""
        channel = self._channel(params)
        im = channel.startswith("D")
        mpim = channel in self.store.mpims
        shared = channel in self.store.shared
        return {
            "channel": {
                "id": channel,
                "name": self.store.channels[channel],
                "is_channel": not (im or mpim),
                "is_group": False,
                "is_im": im,
                "is_mpim": mpim,
                "is_private": im or mpim,
                "is_archived": False,
                "is_member": channel not in self.store.outside,
                "is_shared": shared,
                "is_ext_shared": shared,
                "is_org_shared": False,
                "context_team_id": self.who.team_id,
            }
        }

    def users_info(self, params: JSON) -> JSON:
        user = str(params.get("user") or "")
        if user == self.who.bot_user_id:
            name, is_bot = self.who.bot_name, True
        elif user in self.store.users:
            name, is_bot = self.store.users[user], False
        else:
            raise ApiError("user_not_found")
        return {
            "user": {
                "id": user,
                "team_id": self.who.team_id,
                "name": name,
                "real_name": name,
                "is_bot": is_bot,
                "deleted": False,
                "profile": {"display_name": name, "real_name": name},
            }
        }

    def apps_connections_open(self, params: JSON) -> JSON:
        return {"url": self.socket_url()}

    # -- files.uploadV2: three steps --------------------------------------------------------
    # docs.slack.dev/reference/methods/files.getUploadURLExternal: "1. Call
    # files.getUploadURLExternal, which returns an upload URL and a file ID. 2. Upload a file by
    # making a POST request to the upload URL … Slack will return HTTP 200 if the upload is
    # successful. 3. Call files.completeUploadExternal to finalize the upload"; filename and
    # length are required ("missing_argument … when the length provided is 0").
    # docs.slack.dev/reference/methods/files.completeUploadExternal: ``files`` is required
    # ([{"id", "title"}]); "channel_id: Channel ID where the file will be shared. If not
    # specified the file will be private"; "If the initial_comment field is provided, the
    # blocks field is ignored". slack_sdk's files_upload_v2 makes exactly these calls.

    def files_get_upload_url_external(self, params: JSON) -> JSON:
        name = str(params.get("filename") or "")
        try:
            length = int(params.get("length") or 0)
        except ValueError as exc:
            raise ApiError("invalid_arguments") from exc
        if not name or length <= 0:
            raise ApiError("missing_argument")
        file_id = "F" + uuid.uuid4().hex[:10].upper()
        alt = params.get("alt_txt")
        self.store.save_file(UploadedFile(file_id, name, length, None if alt is None else str(alt)))
        return {"upload_url": f"{self._base_url()}/upload/{file_id}", "file_id": file_id}

    def files_complete_upload_external(self, params: JSON) -> JSON:
        raw = params.get("files")
        try:
            items = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise ApiError("invalid_arguments") from exc
        if not isinstance(items, list) or not items:
            raise ApiError("invalid_arguments")
        channel = self._channel(params, "channel_id") if params.get("channel_id") else None
        if channel is not None:
            self._member(channel)
        done: list[UploadedFile] = []
        for item in items:
            found = self.store.files.get(str(item.get("id") if isinstance(item, dict) else ""))
            if found is None or found.completed or not found.data:
                raise ApiError("file_not_found")  # never asked for, already done, or no bytes
            title = item.get("title") or found.name
            done.append(
                replace(
                    found,
                    title=str(title),
                    completed=True,
                    channels=(channel,) if channel else (),
                )
            )
        for file in done:
            self.store.save_file(file)
        shown = [f.to_slack(self._base_url()) for f in done]
        if channel is not None:
            comment = params.get("initial_comment")
            blocks = None if comment else parse_blocks(params.get("blocks"))
            try:
                self.store.post(
                    channel,
                    self.who.bot_user_id,
                    str(comment or ""),
                    blocks or [],
                    thread_ts=params.get("thread_ts") or None,
                    bot_id=self.who.bot_id,
                    files=tuple(shown),
                )
            except KeyError as exc:
                raise ApiError("thread_not_found") from exc
        return {"files": [{"id": f["id"], "title": f["title"]} for f in shown]}

    # -- user groups ------------------------------------------------------------------------
    # docs.slack.dev/reference/methods/usergroups.list: ``include_disabled`` ("Include
    # disabled User Groups"), ``include_users``; each group object has ``id``, ``handle``,
    # ``date_delete`` (non-zero once disabled) and, asked for, ``users``.
    # docs.slack.dev/reference/methods/usergroups.users.list: ``usergroup`` (required),
    # ``include_disabled`` ("Allow results that involve disabled User Groups"); the answer is
    # ``{"ok": true, "users": ["U060R4BJ4"]}``. Both need the usergroups:read scope. An id
    # Slack does not know, or a disabled group asked without include_disabled, is answered
    # ``no_such_subgroup`` here.

    def usergroups_list(self, params: JSON) -> JSON:
        disabled = _flag(params.get("include_disabled"))
        users = _flag(params.get("include_users"))
        groups = []
        for group in self.store.usergroups.values():
            if group.disabled and not disabled:
                continue
            shown = group.to_slack(self.who.team_id)
            if not users:
                shown.pop("users", None)
            groups.append(shown)
        return {"usergroups": groups}

    def usergroups_users_list(self, params: JSON) -> JSON:
        group = self.store.usergroups.get(str(params.get("usergroup") or ""))
        if group is None or (group.disabled and not _flag(params.get("include_disabled"))):
            raise ApiError("no_such_subgroup")
        return {"users": list(group.users)}


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")
