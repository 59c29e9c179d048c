"""A TCP proxy in front of moto that breaks AWS answers on the wire, for chosen operations.

Point a process's ``AWS_ENDPOINT_URL`` at ``proxy.endpoint_url`` and it talks to moto through
the proxy. Each request is read whole (botocore sends ``Content-Length``), named by its
signing service and operation (``ecs``/``UpdateService``), and matched against the rules:

- ``drop_answer``: forward the request (moto applies it), then close the connection without
  answering, as a lost answer looks to the client (``forward=False``: a request lost on its
  way, never applied, that looks the same to the client).
- ``reset_answer``: forward, then reset the connection (RST); ``forward=False`` likewise.
- ``delay_answer``: forward, then answer only after ``seconds`` (past the client's read
  timeout, the answer arrives on a closed socket).
- ``refuse``: answer an AWS error without forwarding (``ExpiredTokenException``,
  ``AccessDeniedException``, ``ThrottlingException`` …): nothing is applied.

Every request, and what was done to it, is logged in ``proxy.log``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.client import HTTPConnection
from types import TracebackType

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/[^/,]+/(?P<service>[^/,]+)/aws4_request")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Rule:
    """What to do to matching requests: ``times`` more of them, or for ``seconds``."""

    service: str
    operation: str | None  # None: every operation of the service
    action: str  # "drop", "reset", "delay", "refuse"
    times: int | None = None
    until: float | None = None
    seconds: float = 0.0  # the delay of "delay"
    code: str = ""  # the error code of "refuse"
    status: int = 400
    message: str = ""
    forward: bool = True  # "drop"/"reset": after moto applied the request, or instead
    after: int = 0  # matching requests let through untouched before the rule acts
    passed: int = 0
    hits: int = 0
    forwarded: int = 0  # requests moto has answered (a "delay" holds the answer after that)

    def matches(self, service: str, operation: str) -> bool:
        return self.service in ("*", service) and self.operation in (None, operation)

    def alive(self, now: float) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Passage:
    """One request through the proxy and what the proxy did to it ("pass" or a rule's action)."""

    service: str
    operation: str
    action: str
    at: float


class FaultProxy:
    """The proxy; thread-safe. ``with FaultProxy(moto.endpoint_url) as proxy: ...``."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.log: list[Passage] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, port), Handler)
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- rules ----------------------------------------------------------------------------------

    def _add(self, rule: Rule, seconds_active: float | None) -> Rule:
        if seconds_active is not None:
            rule.until = time.monotonic() + seconds_active
        with self._lock:
            self._rules.append(rule)
        return rule

    def drop_answer(
        self,
        service: str,
        operation: str | None = None,
        *,
        times: int | None = 1,
        for_seconds: float | None = None,
        forward: bool = True,
    ) -> Rule:
        """Forward, then close without answering (``forward=False``: without forwarding)."""
        rule = Rule(service, operation, "drop", times=times, forward=forward)
        return self._add(rule, for_seconds)

    def reset_answer(
        self,
        service: str,
        operation: str | None = None,
        *,
        times: int | None = 1,
        for_seconds: float | None = None,
        forward: bool = True,
    ) -> Rule:
        """Forward, then reset the connection (``forward=False``: without forwarding)."""
        rule = Rule(service, operation, "reset", times=times, forward=forward)
        return self._add(rule, for_seconds)

    def delay_answer(
        self,
        service: str,
        operation: str | None = None,
        *,
        seconds: float,
        times: int | None = 1,
        for_seconds: float | None = None,
        after: int = 0,
    ) -> Rule:
        """Forward, then answer ``seconds`` later (``after``: let that many matching requests
        through first, e.g. the lock's PutItem before the history record's)."""
        rule = Rule(service, operation, "delay", times=times, seconds=seconds, after=after)
        return self._add(rule, for_seconds)

    def refuse(
        self,
        service: str,
        operation: str | None = None,
        *,
        code: str = "AccessDeniedException",
        status: int = 400,
        message: str = "",
        times: int | None = None,
        for_seconds: float | None = None,
    ) -> Rule:
        """Answer ``code`` without forwarding (AccessDeniedException, ExpiredTokenException,
        ThrottlingException, ...); ``service="*"`` for every service."""
        rule = Rule(
            service,
            operation,
            "refuse",
            times=times,
            code=code,
            status=status,
            message=message or f"injected {code}",
        )
        return self._add(rule, for_seconds)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def count(self, service: str, operation: str | None = None, action: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for p in self.log
                if p.service == service
                and operation in (None, p.operation)
                and action in (None, p.action)
            )

    def _take(self, service: str, operation: str) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            self._rules = [r for r in self._rules if r.alive(now)]
            for rule in self._rules:
                if rule.matches(service, operation):
                    if rule.passed < rule.after:
                        rule.passed += 1
                        return None
                    rule.hits += 1
                    return rule
        return None

    # -- the wire -------------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                request, buffer = _read_request(client, buffer)
                if request is None:
                    return
                if not self._one(client, request):
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _one(self, client: socket.socket, request: _Request) -> bool:
        """Answer one request; False when the connection must end."""
        service, operation = request.operation()
        rule = self._take(service, operation)
        action = (rule.action + ("" if rule.forward else " unsent")) if rule else "pass"
        with self._lock:
            self.log.append(Passage(service, operation, action, time.monotonic()))
        if rule is not None and rule.action == "refuse":
            client.sendall(_error_response(rule, request))
            return True
        answer = b"" if rule is not None and not rule.forward else self._forward(request)
        if rule is not None and rule.forward:
            with self._lock:
                rule.forwarded += 1
        if rule is None:
            client.sendall(answer)
            return True
        if rule.action == "drop":
            client.shutdown(socket.SHUT_RDWR)
            return False
        if rule.action == "reset":
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        time.sleep(rule.seconds)
        client.sendall(answer)
        return True

    def _forward(self, request: _Request) -> bytes:
        conn = HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in request.headers if k.lower() not in _HOP_BY_HOP}
            conn.request(request.method, request.target, body=request.body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
            for key, value in resp.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    lines.append(f"{key}: {value}")
            lines.append(f"Content-Length: {len(body)}")
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        finally:
            conn.close()


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name), "")

    def operation(self) -> tuple[str, str]:
        scope = _CREDENTIAL_SCOPE.search(self.header("authorization"))
        service = scope["service"] if scope else "?"
        target = self.header("x-amz-target")
        if target:
            return service, target.rsplit(".", 1)[-1]
        # Smithy RPC v2 CBOR (CloudWatch in botocore 1.44): POST /service/S/operation/Op.
        path = urllib.parse.urlsplit(self.target).path
        if "/operation/" in path:
            return service, path.rsplit("/operation/", 1)[1]
        query = urllib.parse.urlsplit(self.target).query
        action = urllib.parse.parse_qs(query).get("Action") or urllib.parse.parse_qs(
            self.body.decode("utf-8", "replace")
        ).get("Action")
        return service, action[0] if action else f"{self.method} {self.target}"


def _read_request(sock: socket.socket, buffer: bytes) -> tuple[_Request | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
    pairs = [(k.strip(), v.strip()) for k, v in headers]
    length = int(next((v for k, v in pairs if k.lower() == "content-length"), "0") or 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return _Request(method, target, pairs, rest[:length]), rest[length:]


def _error_response(rule: Rule, request: _Request) -> bytes:
    request_id = str(uuid.uuid4())
    if request.header("smithy-protocol") == "rpc-v2-cbor":
        # botocore's RpcV2CBORParser reads the code from the body's __type (Smithy RPC v2
        # CBOR protocol, "Error serialization"), the answer marked by its smithy-protocol.
        body = _cbor_text_map({"__type": rule.code, "message": rule.message})
        head = (
            f"HTTP/1.1 {rule.status} Error\r\nContent-Type: application/cbor\r\n"
            f"smithy-protocol: rpc-v2-cbor\r\nContent-Length: {len(body)}\r\n"
            f"x-amzn-RequestId: {request_id}\r\n\r\n"
        )
        return head.encode("latin-1") + body
    if request.header("x-amz-target"):
        # JSON protocol (ECS, ECR, DynamoDB): botocore reads the code from __type.
        body = json.dumps({"__type": rule.code, "message": rule.message}).encode()
        content_type = "application/x-amz-json-1.1"
    else:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{rule.code}</Code>"
            f"<Message>{rule.message}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        ).encode()
        content_type = "text/xml"
    head = (
        f"HTTP/1.1 {rule.status} Error\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nx-amzn-RequestId: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _cbor_text_map(fields: dict[str, str]) -> bytes:
    """A CBOR map of text to text (RFC 8949: major type 5 holding major type 3 items)."""

    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([major << 5 | length])
        if length < 256:
            return bytes([major << 5 | 24, length])
        return bytes([major << 5 | 25]) + struct.pack(">H", length)

    out = head(5, len(fields))
    for key, value in fields.items():
        for text in (key, value):
            raw = text.encode("utf-8")
            out += head(3, len(raw)) + raw
    return out


__all__ = ["FaultProxy", "Passage", "Rule"]
