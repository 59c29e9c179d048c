"""What HTTP mode refuses before Bolt reads a request: bodies over 1 MiB, unsigned or malformed.

Two layers. ``BodyLimit`` is ASGI middleware: a declared Content-Length over the limit gets 413
before a byte of the body is read, and a chunked body is buffered up to the limit and cut
there, so an unsigned 300 MB POST costs the process at most 1 MiB. ``slack_refusal`` then
checks, in this order, what Bolt would otherwise trip over with a 500 (it decodes and parses
the body before it verifies the signature): signature headers present and well-formed, the
body UTF-8, the signature right (slack_sdk's ``SignatureVerifier``), the body a JSON object or
a form whose ``payload`` is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.signature import SignatureVerifier
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.slack import bolt_fixes

# Slack's largest payloads (a modal's view state, a message's blocks) are tens of kilobytes.
MAX_BODY_BYTES = 1 << 20
_TIMESTAMP_DIGITS = 12  # Unix seconds have 10 digits until the year 2286


async def _answer(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            # Close the connection: the rest of a refused body is never read.
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header as a number; None if absent, -1 if it is not a number."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            if not value.isdigit() or len(value) > 18:
                return -1
            return int(value)
    return None


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413, never held."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == -1:
            await _answer(send, 400, "Content-Length is not a number.\n")
            return
        too_big = f"Request bodies are limited to {self.limit} bytes.\n"
        if declared is not None and declared > self.limit:
            await _answer(send, 413, too_big)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            body += message.get("body", b"")
            if len(body) > self.limit:  # chunked, or more bytes than declared
                await _answer(send, 413, too_big)
                return
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def slack_refusal(
    verifier: SignatureVerifier, body: bytes, headers: Mapping[str, str]
) -> tuple[int, str] | None:
    """Why a request to /slack/events is refused, as (status, text); None if Bolt may have it.

    Slack signs every request it sends (X-Slack-Signature over ``v0:timestamp:body``, the
    timestamp at most five minutes old):
    https://api.slack.com/authentication/verifying-requests-from-slack
    """
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp or not signature:
        return 401, "Unsigned request.\n"
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _TIMESTAMP_DIGITS:
        return 401, "X-Slack-Request-Timestamp is not a Unix time.\n"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Slack sends UTF-8; slack_sdk's verifier would raise on anything else.
        return 400, "The body is not UTF-8.\n"
    if not verifier.is_valid(body=text, timestamp=timestamp, signature=signature):
        return 401, "Bad or stale signature.\n"
    try:
        parsed: Any = bolt_fixes.parse_body(text, headers.get("content-type"))
    except ValueError:  # json.JSONDecodeError is one
        return 400, "The body is neither JSON nor a form Slack sends.\n"
    if not isinstance(parsed, dict):
        return 400, "The body is not a JSON object.\n"
    return None
