"""moto's server on 127.0.0.1 with a log of every AWS request it answered and injectable throttling.

The log and the faults live at the server side (a WSGI layer around moto's app), so they see
requests from any process: a ``deploybot`` subprocess pointed at ``endpoint_url`` is counted
and throttled like boto3 in the test itself.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

DEFAULT_REGION = "eu-west-1"

# Credentials that can never reach a real account, and no profile or config file that could.
FAKE_AWS_ENV: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Variables that would let boto3 pick a real profile; aws_env's callers remove them.
UNSAFE_AWS_VARS: tuple[str, ...] = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN")

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/[^/,]+/(?P<service>[^/,]+)/aws4_request")
_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def aws_env(endpoint_url: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """Environment for a boto3 client (in this process or a child) that talks only to moto."""
    return {
        **FAKE_AWS_ENV,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


@dataclass(frozen=True)
class AwsRequest:
    """One request the server received: ``service`` is the signing name (ecs, ecr, dynamodb)."""

    service: str
    operation: str
    at: float  # time.monotonic() when it arrived
    throttled: bool


class RequestLog:
    """Every AWS request the server received, in order. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[AwsRequest] = []

    def record(self, entry: AwsRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[AwsRequest]:
        with self._lock:
            return list(self._entries)

    def __iter__(self) -> Iterator[AwsRequest]:
        return iter(self.entries())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def count(
        self, service: str, operation: str | None = None, *, throttled: bool | None = None
    ) -> int:
        """How many requests for ``service`` (and ``operation``, if given) arrived.

        ``throttled=False`` counts only those moto answered; ``True`` only those refused.
        """
        return sum(
            1
            for e in self.entries()
            if e.service == service
            and (operation is None or e.operation == operation)
            and (throttled is None or e.throttled == throttled)
        )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# What a fault answers: ThrottlingException (400), AccessDeniedException (400, what IAM answers
# a role without the action, and a region or partition without the operation), or the HTTP 500
# moto's server gives for an operation it does not implement (botocore retries it).
THROTTLE, DENY, UNIMPLEMENTED = "throttle", "deny", "unimplemented"


@dataclass
class Fault:
    """Answer matching requests (``kind``) ``times`` more times, or until ``until`` (monotonic)."""

    service: str
    operation: str | None
    times: int | None
    until: float | None
    hits: int = 0
    kind: str = THROTTLE

    def matches(self, service: str, operation: str) -> bool:
        return self.service == service and self.operation in (None, operation)

    def active(self, now: float) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return not (self.until is not None and now >= self.until)


class Faults:
    """The faults the server injects. Thread-safe; each answered fault counts a hit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._holds: list[tuple[str, str | None, threading.Event]] = []

    def hold(self, service: str, operation: str | None = None) -> threading.Event:
        """Leave ``service``'s ``operation`` requests unanswered (AWS gone quiet) until the
        returned event is set; each is then answered as usual. At most 60 s a request."""
        released = threading.Event()
        with self._lock:
            self._holds.append((service, operation, released))
        return released

    def held(self, service: str, operation: str) -> threading.Event | None:
        with self._lock:
            self._holds = [h for h in self._holds if not h[2].is_set()]
            for held_service, held_operation, released in self._holds:
                if held_service == service and held_operation in (None, operation):
                    return released
        return None

    def throttle(
        self,
        service: str,
        operation: str | None = None,
        *,
        times: int | None = None,
        seconds: float | None = None,
    ) -> Fault:
        """Answer ThrottlingException for ``service``'s ``operation`` (every one if None).

        With ``times`` the next N matching requests are refused; with ``seconds`` every
        matching request for that long; with both, whichever ends first; with neither, until
        ``clear()``.
        """
        return self._add(service, operation, times, seconds, THROTTLE)

    def refuse(
        self,
        service: str,
        operation: str | None = None,
        *,
        times: int | None = None,
        seconds: float | None = None,
    ) -> Fault:
        """Answer AccessDeniedException for ``service``'s ``operation`` (every one if None), as
        IAM does for a role not granted the action; ``times``/``seconds`` as for throttle()."""
        return self._add(service, operation, times, seconds, DENY)

    def unimplement(
        self,
        service: str,
        operation: str | None = None,
        *,
        times: int | None = None,
        seconds: float | None = None,
    ) -> Fault:
        """Answer ``service``'s ``operation`` as moto's server answers an operation it does not
        implement: HTTP 500 with werkzeug's HTML page; ``times``/``seconds`` as for throttle()."""
        return self._add(service, operation, times, seconds, UNIMPLEMENTED)

    def _add(
        self,
        service: str,
        operation: str | None,
        times: int | None,
        seconds: float | None,
        kind: str,
    ) -> Fault:
        until = time.monotonic() + seconds if seconds is not None else None
        fault = Fault(service=service, operation=operation, times=times, until=until, kind=kind)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, service: str, operation: str) -> Fault | None:
        """The fault to answer this request with, if any, counting the hit."""
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.active(now)]
            for fault in self._faults:
                if fault.matches(service, operation):
                    fault.hits += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            for _, _, released in self._holds:
                released.set()
            self._holds.clear()


def _operation(environ: dict[str, Any]) -> tuple[str, str] | None:
    """(service, operation) of an AWS request, or None for anything else (moto's own API)."""
    scope = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if not scope:
        return None
    service = scope["service"]
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return service, target.rsplit(".", 1)[-1]
    action = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    if not action and environ.get("CONTENT_TYPE", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        # Query-protocol services (IAM, STS) name the action in the form body; read it and
        # hand moto an unread copy.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
    if action:
        return service, action[0]
    # REST services (S3, Lambda, ...): method and path are the closest thing to an operation.
    return service, f"{environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '')}"


def _fault_response(
    environ: dict[str, Any], start_response: Callable[..., Any], fault: Fault, operation: str
) -> Iterable[bytes]:
    if fault.kind == UNIMPLEMENTED:
        from werkzeug.exceptions import InternalServerError

        return InternalServerError()(environ, start_response)
    request_id = str(uuid.uuid4())
    if fault.kind == DENY:
        json_code = query_code = "AccessDeniedException"
        message = (
            "User: arn:aws:sts::123456789012:assumed-role/deploybot/test is not authorized to "
            f"perform: {fault.service}:{operation}"
        )
    else:
        json_code, query_code, message = "ThrottlingException", "Throttling", "Rate exceeded"
    if environ.get("HTTP_X_AMZ_TARGET"):
        # JSON protocol (ECS, ECR, DynamoDB): botocore reads the code from __type.
        body = json.dumps({"__type": json_code, "message": message}).encode()
        content_type = "application/x-amz-json-1.1"
    else:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{query_code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        ).encode()
        content_type = "text/xml"
    start_response(
        "400 Bad Request",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id),
        ],
    )
    return [body]


class _Recorder:
    """WSGI layer around moto's app: logs each AWS request, answers injected faults."""

    def __init__(self, app: _WSGIApp, requests: RequestLog, faults: Faults) -> None:
        self._app = app
        self._requests = requests
        self._faults = faults

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        op = _operation(environ)
        if op is None:
            return self._app(environ, start_response)
        service, operation = op
        fault = self._faults.take(service, operation)
        self._requests.record(
            AwsRequest(service, operation, at=time.monotonic(), throttled=fault is not None)
        )
        if fault is not None:
            return _fault_response(environ, start_response, fault, operation)
        held = self._faults.held(service, operation)
        if held is not None:
            held.wait(60)
        return self._app(environ, start_response)


class _QuietRequestHandler(MotoRequestHandler):
    """moto's handler without a line on stderr per request (errors are still reported)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


# Re-entrant: moto's transact_write_items calls get_item, put_item… under the same lock.
_DYNAMODB_LOCK = threading.RLock()
_DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "get_item", "transact_write_items")


def patch_moto_dynamodb() -> None:
    """Make moto's conditional writes atomic, as DynamoDB's are.

    moto's server answers each request on its own thread and checks a ConditionExpression
    and writes the item as two steps; two conditional puts racing for one lock item could
    both succeed, which real DynamoDB never allows. One lock around item operations fixes it.
    """
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_deploybot_atomic", False):
        return
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    for name in _DYNAMODB_WRITES:
        original = getattr(DynamoDBBackend, name)

        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _DYNAMODB_LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, atomic)
    DynamoDBBackend._deploybot_atomic = True  # type: ignore[attr-defined]


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    """moto's TransactWriteItems without its deep copy of every table it touches, which
    costs time in proportion to the table (5 s, a client's read timeout, at a few hundred
    queued deploys on a loaded machine). Under the lock above nothing else runs meanwhile, so
    every condition is checked first and the writes made only if all hold: all or nothing,
    with DynamoDB's cancellation reasons (one per item, the failed item's old image with
    ALL_OLD: API_TransactWriteItems.html)."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    reasons: list[tuple[Any, Any, Any]] = []
    for entry in transact_items:
        ((kind, op),) = entry.items()
        table = self.get_table(op["TableName"])
        if kind == "Put":
            attrs = op["Item"]
            key = {table.hash_key_attr: attrs[table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = attrs[table.range_key_attr]
        else:
            key = op["Key"]
        ident = (op["TableName"], str(sorted(key.items())))
        if ident in seen:
            raise MultipleTransactionsException()
        seen.add(ident)
        ops.append((kind, op, key))
        current = self.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        held = condition is None or get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        ).expr(current)
        if held:
            reasons.append((None, None, None))
        else:
            old = None
            if current is not None and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                old = current.to_json()["Attributes"]
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    for kind, op, key in ops:
        names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        if kind == "Put":
            self.put_item(op["TableName"], op["Item"])
        elif kind == "Delete":
            self.delete_item(op["TableName"], key)
        elif kind == "Update":
            self.update_item(
                op["TableName"],
                key,
                update_expression=op["UpdateExpression"],
                expression_attribute_names=names,
                expression_attribute_values=values,
            )


class MotoServer(ThreadedMotoServer):
    """moto's ThreadedMotoServer on 127.0.0.1 (port 0: a free one), with ``requests`` and
    ``faults``. Starting it also teaches moto's ECS the service behaviour the simulator needs.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, region: str = DEFAULT_REGION
    ) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self.region = region
        self.account_id = DEFAULT_ACCOUNT_ID
        self.requests = RequestLog()
        self.faults = Faults()

    def _server_entry(self) -> None:
        # ThreadedMotoServer's own entry, with our layer around moto's app.
        app = _Recorder(DomainDispatcherApplication(create_backend_app), self.requests, self.faults)
        self._server = make_server(
            self._ip_address,
            self._port,
            app,
            threaded=True,
            request_handler=_QuietRequestHandler,
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        from bot.local.simulator import patch_moto_ecs

        patch_moto_ecs()
        patch_moto_dynamodb()
        super().start()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget every AWS resource, logged request and fault (moto's /moto-api/reset)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.requests.clear()
        self.faults.clear()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
