"""A webhook receiver for the tests: a real uvicorn on 127.0.0.1 that checks deploybot's
signature as a receiver would (docs/OPERATIONS.md, "Who hears what") and records every
delivery; ``fail_first`` answers the first N with 500, so a test sees the retries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn

from tests.helpers import free_port, wait_http

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
MAX_AGE_SECONDS = 300  # a delivery older than this is a replay: refused


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the sink answered
    signed: bool  # the signature checked out (deploybot's format)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookSink:
    __test__ = False

    def __init__(self, secret: str, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.port = free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        """A receiver's check: v1=HMAC-SHA256(secret, "v1:{timestamp}:{body}"), fresh."""
        timestamp = headers.get("x-deploybot-timestamp", "")
        given = headers.get("x-deploybot-signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE_SECONDS:
            return False
        base = b"v1:" + timestamp.encode() + b":" + body
        wanted = "v1=" + hmac.new(self.secret.encode(), base, hashlib.sha256).hexdigest()
        return hmac.compare_digest(wanted, given)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            failing = self.fail_first > 0 and scope["path"] != "/health"
            self.fail_first -= 1 if failing else 0
            status = 500 if failing else 200
            if scope["path"] != "/health":
                self.received.append(
                    Received(scope["path"], headers, body, status, self.verify(headers, body))
                )
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"no"})

    def taken(self, path: str = "/hook") -> list[Received]:
        """The deliveries at ``path`` answered 200."""
        with self._lock:
            return [r for r in self.received if r.path == path and r.status == 200]

    def start(self) -> WebhookSink:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_config=None,
                                access_log=False)  # fmt: skip
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve()), name="webhook-sink", daemon=True
        )
        self._thread.start()
        wait_http(self.url("/health"))
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
