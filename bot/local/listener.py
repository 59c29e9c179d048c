"""A load balancer's test listener, locally: the hello service (service/app.py) served by a real
uvicorn on 127.0.0.1, answering as whichever release the test traffic reaches.

In ECS a blue/green, canary or linear deployment's test listener sends its traffic to the new
revision's tasks; a deployment that went wrong leaves the old release answering there. The
tests and the playground set ``release`` to say which answers (``answering``), or ``failing``
to make it answer 503; deploybot's ``verify_path`` check (bot/deploy/pausing.py) asks it as it
would ask the real listener.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from bot.local.net import free_port, wait_http
from service.app import Release, create_app

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class TestListener:
    """The hello service on ``url`` as ``release`` (changed at any time by ``answering``)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, release: Release, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port()
        self.failing = False
        self.requests = 0
        self._apps: dict[Release, Any] = {}
        self.release = release
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def answering(self, version: str, commit: str) -> None:
        """The release the test traffic reaches from now on."""
        self.release = Release(version=version, commit=commit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests += 1
            if self.failing:
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"no healthy targets"})
                return
        app = self._apps.get(self.release)
        if app is None:
            app = self._apps[self.release] = create_app(self.release)
        await app(scope, receive, send)

    def start(self) -> TestListener:
        config = uvicorn.Config(
            self, host=self.host, port=self.port, log_config=None, access_log=False
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve()), name="test-listener", daemon=True
        )
        self._thread.start()
        wait_http(f"{self.url}/health")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> TestListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
