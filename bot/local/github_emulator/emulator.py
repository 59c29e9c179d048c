"""``GitHubEmulator``: GitHub's REST API for compare and deployments, served on 127.0.0.1.

A real HTTP server in a thread of its own (the standard library's threading server), like
the Slack emulator: give the bot ``api_url`` as GITHUB_API_URL and ``token`` as GITHUB_TOKEN,
seed a history with ``add_commits``, then read ``calls``, ``deployments()`` and
``statuses()``. Faults are injected at the wire: ``fail`` (any status), ``rate_limit`` (403
or 429 with GitHub's headers), ``drop`` (the connection closes with no answer) and ``slow``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from bot.local.github_emulator.repo import (
    DOCS,
    JSON,
    ApiError,
    Commit,
    Repository,
    commit_time,
)

T = TypeVar("T")
Endpoint = Literal[
    "compare",
    "create_deployment",
    "list_deployments",
    "get_deployment",
    "create_status",
    "list_statuses",
    "unknown",
]
FaultKind = Literal["status", "rate_limit", "drop", "slow", "garbage", "redirect"]

DEFAULT_REPOSITORY = "octo-org/hello-world"
DEFAULT_TOKEN = "github-emulator-token-5c1d"  # a test token, shaped like no real one
_GARBAGE = b"<html><body>502 Bad Gateway (a proxy's page)</body></html>"
RATE_LIMIT = 5000  # "5,000 requests per hour" for a personal access token

_ROUTES: tuple[tuple[str, re.Pattern[str], Endpoint], ...] = (
    ("GET", re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/compare/(?P<basehead>.+)"), "compare"),
    ("POST", re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/deployments"), "create_deployment"),
    ("GET", re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/deployments"), "list_deployments"),
    ("GET", re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/deployments/(?P<id>\d+)"), "get_deployment"),
    (
        "POST",
        re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/deployments/(?P<id>\d+)/statuses"),
        "create_status",
    ),
    (
        "GET",
        re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/deployments/(?P<id>\d+)/statuses"),
        "list_statuses",
    ),
)


@dataclass(frozen=True)
class Call:
    """One request the emulator received, and what it did with it."""

    method: str
    path: str
    endpoint: Endpoint
    query: dict[str, str]
    body: Any  # parsed JSON, the raw text if it was not JSON, or None
    token: str | None  # from "Authorization: Bearer …" or "token …"
    headers: dict[str, str]
    status: int | None  # None: the connection was dropped without an answer
    fault: FaultKind | None
    at: float  # wall-clock seconds


@dataclass
class Fault:
    """Spoil the next ``times`` calls (None: every call) of ``endpoint`` ("*": any)."""

    endpoint: str
    kind: FaultKind
    times: int | None
    status: int = 500
    message: str = "Server Error"
    headers: dict[str, str] | None = None
    seconds: float = 0.0  # slow: delay before the (normal) answer
    skip: int = 0  # let this many matching calls through first
    location: str = ""  # redirect: the origin (or URL prefix) the request is sent on to

    def take(self, endpoint: Endpoint) -> bool:
        if self.endpoint not in ("*", endpoint) or self.times == 0:
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        if self.times is not None:
            self.times -= 1
        return True


class GitHubEmulator:
    """A small GitHub on 127.0.0.1: compare, deployments and deployment statuses.

    ``token``: the one token it accepts (None: any). A wrong token gets 401 "Bad credentials";
    no token may read a public repository and gets 401 "Requires authentication" on a write.
    Every public method is safe from any thread.
    """

    def __init__(
        self,
        repository: str = DEFAULT_REPOSITORY,
        token: str | None = DEFAULT_TOKEN,
        *,
        private: bool = False,
        web_url: str = "https://github.com",
        bot_login: str = "deploybot[bot]",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.web_url = web_url.rstrip("/")
        self.bot_login = bot_login
        self.default_repository = repository
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._repos: dict[str, Repository] = {}
        self._calls: list[Call] = []
        self._faults: list[Fault] = []
        self._next_id = 1
        self._requests = 0
        self._start = datetime(2024, 1, 1, tzinfo=UTC)
        self.add_repository(repository, private=private)

    # -- life -----------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The REST API base for the bot (GITHUB_API_URL), like ``https://api.github.com``."""
        return self.url

    def start(self) -> Self:
        """Listen on a free port, in a thread of its own; returns once the port is open."""
        if self._thread is not None:
            return self
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                emulator._serve(self)

            def do_POST(self) -> None:
                emulator._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the calls are recorded; stderr stays quiet

        self._stopping.clear()
        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        with self._lock:
            for repo in self._repos.values():
                repo.api_url = self.url
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05),
            name="github-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering, release slow answers, and end the thread."""
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- seeding --------------------------------------------------------------------------

    def add_repository(self, full_name: str, *, private: bool = False) -> None:
        """Another repository (``owner/name``), empty; 404 for anyone who may not see it."""
        with self._lock:
            self._repos[full_name] = Repository(
                full_name=full_name, private=private, web_url=self.web_url, api_url=self.url
            )
            self._bump()

    def add_commits(
        self,
        messages: Sequence[str],
        *,
        author: str = "Alice Example",
        login: str | None = "alice",
        email: str | None = None,
        parent: str | None = None,
        branch: str = "main",
        repository: str | None = None,
        named: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Append commits to ``branch`` (or on top of ``parent``, which moves ``branch`` there),
        oldest first; returns their full shas. ``login=None``: an author GitHub does not know.
        ``named`` gives commits their shas (None: made up), so a history can hold the commits
        images already in ECR were tagged with (their ``sha-`` tags)."""
        if named is not None and len(named) != len(messages):
            raise ValueError("give one sha (or None) per message")
        with self._lock:
            repo = self._repo(repository)
            tip = repo.resolve(parent) if parent else repo.branches.get(branch)
            if parent and tip is None:
                raise KeyError(f"no commit {parent!r} in {repo.full_name}")
            shas: list[str] = []
            for i, message in enumerate(messages):
                commit = repo.add_commit(
                    message,
                    author,
                    email or f"{(login or author).lower().replace(' ', '.')}@example.com",
                    login,
                    tip,
                    commit_time(self._start, len(repo.order)),
                    sha=named[i] if named is not None else None,
                )
                tip = commit.sha
                shas.append(commit.sha)
            if tip is not None:
                repo.branches[branch] = tip
            self._bump()
            return shas

    def set_check(
        self, sha: str, context: str, state: str = "success", repository: str | None = None
    ) -> None:
        """A commit status (``ci/test`` …) on ``sha``: deployments verify them by default."""
        with self._lock:
            repo = self._repo(repository)
            full = repo.resolve(sha)
            if full is None:
                raise KeyError(sha)
            repo.checks.setdefault(full, {})[context] = state
            self._bump()

    # -- reading the state ----------------------------------------------------------------

    def commits(self, repository: str | None = None) -> list[Commit]:
        """Every commit, oldest first."""
        with self._lock:
            repo = self._repo(repository)
            return [repo.commits[sha] for sha in repo.order]

    def deployments(self, repository: str | None = None) -> list[JSON]:
        """Every deployment as GitHub shows it, oldest first."""
        with self._lock:
            copied: list[JSON] = json.loads(json.dumps(self._repo(repository).deployments))
        return copied

    def statuses(self, deployment_id: int, repository: str | None = None) -> list[JSON]:
        """The statuses of one deployment, oldest first."""
        with self._lock:
            copied: list[JSON] = json.loads(
                json.dumps(self._repo(repository).statuses[deployment_id])
            )
        return copied

    def states(self, repository: str | None = None) -> dict[int, list[str]]:
        """Each deployment's status states, oldest first: ``{7: ["in_progress", "success"]}``."""
        with self._lock:
            repo = self._repo(repository)
            return {d: [s["state"] for s in st] for d, st in repo.statuses.items()}

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_of(self, endpoint: Endpoint, answered: int | None = None) -> list[Call]:
        """The calls of one endpoint, optionally only those answered with ``answered``."""
        return [
            c
            for c in self.calls
            if c.endpoint == endpoint and (answered is None or c.status == answered)
        ]

    @property
    def version(self) -> int:
        """Grows by one at every call and every change of state."""
        return self._version

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        """Re-check ``predicate`` at every change until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    last = [(c.method, c.path, c.status) for c in self._calls[-5:]]
                    raise TimeoutError(f"not true within {timeout}s: {what}; last calls: {last}")
                self._changed.wait(left)

    def clear(self) -> None:
        """Forget calls and faults (commits and deployments stay)."""
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self._bump()

    # -- faults ---------------------------------------------------------------------------

    def fail(
        self,
        endpoint: Endpoint | Literal["*"] = "*",
        status: int = 500,
        times: int | None = 1,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        skip: int = 0,
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` (after ``skip`` good ones) with
        ``status`` and GitHub's ``{"message": …}`` body (404 "Not Found", 500 …)."""
        default = {404: "Not Found", 403: "Forbidden", 401: "Bad credentials"}.get(
            status, "Server Error"
        )
        self._add(Fault(endpoint, "status", times, status, message or default, headers, skip=skip))

    def rate_limit(
        self,
        endpoint: Endpoint | Literal["*"] = "*",
        status: int = 403,
        times: int | None = 1,
        reset_in: int = 3600,
        secondary: bool = False,
        skip: int = 0,
    ) -> None:
        """Refuse as GitHub's rate limits do.

        Primary limit: "you will receive a 403 Forbidden or 429 Too Many Requests response,
        and the x-ratelimit-remaining header will be 0"; x-ratelimit-reset is "in UTC epoch
        seconds". Secondary limit: 403 or 429 with "an error message that indicates that you
        exceeded a secondary rate limit", and a retry-after header when GitHub sends one
        (https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api,
        https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).
        """
        reset = int(time.time()) + reset_in
        if secondary:
            headers = {"retry-after": str(reset_in)}
            message = (
                "You have exceeded a secondary rate limit. Please wait a few minutes before "
                "you try again."
            )
        else:
            headers = {
                "x-ratelimit-limit": str(RATE_LIMIT),
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(reset),
                "x-ratelimit-used": str(RATE_LIMIT),
                "x-ratelimit-resource": "core",
            }
            message = "API rate limit exceeded for user ID 1."
        self._add(Fault(endpoint, "rate_limit", times, status, message, headers, skip=skip))

    def drop(
        self, endpoint: Endpoint | Literal["*"] = "*", times: int | None = 1, skip: int = 0
    ) -> None:
        """Close the connection of the next ``times`` calls without answering."""
        self._add(Fault(endpoint, "drop", times, skip=skip))

    def slow(
        self,
        endpoint: Endpoint | Literal["*"] = "*",
        seconds: float = 5.0,
        times: int | None = 1,
        skip: int = 0,
    ) -> None:
        """Answer the next ``times`` calls normally, but only after ``seconds``."""
        self._add(Fault(endpoint, "slow", times, seconds=seconds, skip=skip))

    def garble(
        self, endpoint: Endpoint | Literal["*"] = "*", times: int | None = 1, skip: int = 0
    ) -> None:
        """Answer the next ``times`` calls 200 with a body that is not JSON (a proxy's page)."""
        self._add(Fault(endpoint, "garbage", times, status=200, skip=skip))

    def redirect(
        self,
        to: str,
        endpoint: Endpoint | Literal["*"] = "*",
        status: int = 302,
        times: int | None = 1,
        skip: int = 0,
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` with ``status`` (301, 302, 307, 308)
        and ``Location: {to}{the same path and query}``. GitHub redirects where a resource moved
        ("Follow any redirects that the API sends you",
        https://docs.github.com/en/rest/guides/best-practices-for-using-the-rest-api; a renamed
        repository answers 301 or 307), and a proxy or GitHub Enterprise host in front of it
        may name another origin."""
        self._add(Fault(endpoint, "redirect", times, status, skip=skip, location=to.rstrip("/")))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    # -- serving --------------------------------------------------------------------------

    def _repo(self, name: str | None) -> Repository:
        key = name or self.default_repository
        if key not in self._repos:
            raise KeyError(f"no repository {key!r}; have {sorted(self._repos)}")
        return self._repos[key]

    def _bump(self) -> None:
        """Call with the lock held."""
        self._version += 1
        self._changed.notify_all()

    def _new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        path = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        length = int(headers.get("content-length") or 0)
        raw = handler.rfile.read(length).decode("utf-8", "replace") if length else ""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = raw
        token = _token(headers.get("authorization", ""))
        endpoint, params = _route(handler.command, path)

        with self._lock:
            fault = next((f for f in self._faults if f.take(endpoint)), None)
        status: int | None
        answer: Any
        extra: dict[str, str] = {}
        if fault is not None and fault.kind == "drop":
            status, answer = None, None
        elif fault is not None and fault.kind == "garbage":
            status, answer = 200, _GARBAGE
        elif fault is not None and fault.kind == "redirect":
            status, answer = fault.status, {"message": "Moved", "url": fault.location}
            extra = {"location": fault.location + handler.path}
        elif fault is not None and fault.kind in ("status", "rate_limit"):
            status, answer = fault.status, {"message": fault.message, "documentation_url": DOCS}
            extra = dict(fault.headers or {})
        else:
            if fault is not None:  # slow: the answer comes late (sooner if the emulator stops)
                self._stopping.wait(fault.seconds)
            status, answer, extra = self._answer(endpoint, params, query, body, token, headers)

        call = Call(
            method=handler.command,
            path=path,
            endpoint=endpoint,
            query=query,
            body=body,
            token=token,
            headers=headers,
            status=status,
            fault=fault.kind if fault else None,
            at=time.time(),
        )
        with self._lock:
            self._calls.append(call)
            self._bump()
        if status is None:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(handler, status, answer, extra)

    def _answer(
        self,
        endpoint: Endpoint,
        params: dict[str, str],
        query: dict[str, str],
        body: Any,
        token: str | None,
        headers: dict[str, str],
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self._requests += 1
            limits = {
                "x-ratelimit-limit": str(RATE_LIMIT),
                "x-ratelimit-remaining": str(max(0, RATE_LIMIT - self._requests)),
                "x-ratelimit-reset": str(int(time.time()) + 3600),
                "x-ratelimit-used": str(self._requests),
                "x-ratelimit-resource": "core",
            }
            try:
                status, answer, extra = self._dispatch(
                    endpoint, params, query, body, token, headers
                )
            except ApiError as exc:
                status, answer, extra = exc.status, exc.body, {}
            self._bump()
        return status, answer, {**limits, **extra}

    def _dispatch(
        self,
        endpoint: Endpoint,
        params: dict[str, str],
        query: dict[str, str],
        body: Any,
        token: str | None,
        headers: dict[str, str],
    ) -> tuple[int, Any, dict[str, str]]:
        # "All API requests must include a valid User-Agent header. Requests with no
        # User-Agent header will be rejected." (REST API, "Getting started": user agent).
        if not headers.get("user-agent"):
            raise ApiError(403, "Request forbidden by administrative rules.")
        if token is not None and self.token is not None and token != self.token:
            raise ApiError(401, "Bad credentials")
        if endpoint == "unknown":
            raise ApiError(404, "Not Found")
        repo = self._repos.get(unquote(params["repo"]))
        if repo is None or (repo.private and token is None):
            raise ApiError(404, "Not Found")
        writes = endpoint in ("create_deployment", "create_status")
        if writes and token is None:
            raise ApiError(401, "Requires authentication")
        now = datetime.now(UTC)
        if endpoint == "compare":
            answer, extra = repo.compare(unquote(params["basehead"]), query)
            return 200, answer, extra
        if endpoint == "create_deployment":
            return 201, repo.create_deployment(body, self._new_id(), self.bot_login, now), {}
        if endpoint == "list_deployments":
            items, extra = repo.list_deployments(query)
            return 200, items, extra
        deployment_id = int(params["id"])
        if endpoint == "get_deployment":
            return 200, repo.get_deployment(deployment_id), {}
        if endpoint == "create_status":
            status = repo.create_status(deployment_id, body, self._new_id, self.bot_login, now)
            return 201, status, {}
        items, extra = repo.list_statuses(deployment_id, query)
        return 200, items, extra

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, answer: Any, headers: dict[str, str]
    ) -> None:
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        with contextlib.suppress(OSError):  # the client may have given up (a slow answer)
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)


def _token(authorization: str) -> str | None:
    """The token of "Bearer X" or "token X" (both are accepted by GitHub)."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def _route(method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
    for verb, pattern, endpoint in _ROUTES:
        m = pattern.fullmatch(path)
        if m and verb == method:
            return endpoint, m.groupdict()
    return "unknown", {}
