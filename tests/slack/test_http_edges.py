"""HTTP mode refuses before it reads: big bodies get 413, unsigned or malformed requests 401/400.

Against the real ``deploybot serve --http`` process. Raw sockets where a client library would
not send what an attacker sends (a Content-Length far beyond the bytes, an endless chunked
body); httpx for the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import select
import socket
import time
from pathlib import Path

import httpx

from bot.http_guard import MAX_BODY_BYTES
from bot.local.aws import MotoServer
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import SIGNING_SECRET, LocalStack
from tests.slack.conftest import BotFactory, BotProcess
from tests.slack.helpers import bot_messages, no_aws_writes

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def signed(body: bytes) -> dict[str, str]:
    """Headers signing ``body`` as Slack does; the HMAC over raw bytes, which need not be
    UTF-8 here (slack_sdk's SignatureVerifier decodes the body first)."""
    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), b"v0:%s:%s" % (ts.encode(), body), hashlib.sha256)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest.hexdigest()}


# (name, body, headers): none carries a valid signature.
UNSIGNED: list[tuple[str, bytes, dict[str, str]]] = [
    ("empty body, no headers", b"", {}),
    ("no signature headers", b"command=%2Fdeploy&text=v4.4.0", {"Content-Type": FORM}),
    ("bad JSON", b"{not json", {"Content-Type": JSON}),
    ("bad JSON, bad signature", b"{not json", {"Content-Type": JSON, "X-Slack-Signature": "v0=0"}),
    ("a JSON list", b"[1, 2]", {"Content-Type": JSON}),
    ("not UTF-8", b"command=\xff\xfe&text=\x80", {"Content-Type": FORM}),
    ("not UTF-8 JSON", b'{"a": "\xff"}', {"Content-Type": JSON}),
    ("payload= not JSON", b"payload=%7Bnot", {"Content-Type": FORM}),
    ("payload= a list", b"payload=%5B1%5D", {"Content-Type": FORM}),
    ("payload= empty", b"payload=", {"Content-Type": FORM}),
    ("payload twice", b"payload=1&payload=%7B%7D", {"Content-Type": FORM}),
    (
        "non-numeric timestamp",
        b"command=%2Fdeploy",
        {"Content-Type": FORM, "X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=0"},
    ),
    (
        "huge timestamp",
        b"command=%2Fdeploy",
        {"Content-Type": FORM, "X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": "x"},
    ),
    (
        "non-numeric timestamp, bad JSON",
        b"{",
        {"Content-Type": JSON, "X-Slack-Request-Timestamp": "1e9", "X-Slack-Signature": "v0=0"},
    ),
    (
        "stale but well-formed",
        b"command=%2Fdeploy",
        {"Content-Type": FORM, "X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=00"},
    ),
]


def test_unsigned_or_malformed_requests_are_401_never_500(
    stack: LocalStack, aws: MotoServer, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    aws.requests.clear()
    answers: dict[str, int | str] = {}
    with httpx.Client(timeout=10) as client:
        for name, body, headers in UNSIGNED:
            try:
                resp = client.post(bot.url + "/slack/events", content=body, headers=headers)
                answers[name] = resp.status_code
            except httpx.HTTPError as exc:
                answers[name] = f"{type(exc).__name__}: {exc}"
    statuses = dict(answers)
    assert statuses == {name: 401 for name, _, _ in UNSIGNED}
    assert "Traceback" not in bot.output()
    assert no_aws_writes(aws) and bot_messages(emulator) == []


SIGNED_BUT_MALFORMED = [
    (b"{not json", JSON),
    (b"[1, 2]", JSON),
    (b"command=\xff\xfe", FORM),
    (b"payload=%7Bnot", FORM),
    (b"payload=%5B1%5D", FORM),
    (b"payload=", FORM),
]


def test_signed_but_malformed_requests_are_400_and_only_two_routes_exist(
    stack: LocalStack, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    with httpx.Client(base_url=bot.url, timeout=10) as client:
        statuses = [
            client.post(
                "/slack/events", content=body, headers={"Content-Type": kind, **signed(body)}
            ).status_code
            for body, kind in SIGNED_BUT_MALFORMED
        ]
        assert statuses == [400] * len(SIGNED_BUT_MALFORMED)
        # FastAPI's generated routes are off: only POST /slack/events and GET /healthz.
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404, path
        assert client.get("/healthz").status_code == 200
    assert "Traceback" not in bot.output()


def raw_post(bot: BotProcess, head: str, parts: list[bytes], timeout: float = 10) -> bytes:
    """Send ``head``, then ``parts`` while the server has not answered; returns the status line
    and headers of its answer (b"" if it closed without one)."""
    with socket.create_connection(("127.0.0.1", bot.port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        for part in parts:
            if select.select([sock], [], [], 0)[0]:
                break  # answered (or closed) before the body was all sent
            try:
                sock.sendall(part)
            except OSError:  # closed after answering; the answer is still in our buffer
                break
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
        except OSError:
            pass
        return answer


def _head(length: str) -> str:
    return (
        "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {FORM}\r\n{length}\r\n\r\n"
    )


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_declared_big_body_is_413_before_it_is_sent(
    stack: LocalStack, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    # 300 MiB declared, not a byte of it sent: the answer comes all the same.
    started = time.monotonic()
    answer = raw_post(bot, _head(f"Content-Length: {300 << 20}"), [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 5
    over = MAX_BODY_BYTES + 1
    answer = raw_post(bot, _head(f"Content-Length: {over}"), [b"x" * over])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    answer = raw_post(bot, _head("Content-Length: lots"), [b"x"])
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_a_chunked_body_is_cut_at_the_limit(stack: LocalStack, start_bot: BotFactory) -> None:
    bot = start_bot("http")
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    # 64 MiB offered in 64 KiB chunks; the server answers 413 after about 1 MiB.
    answer = raw_post(bot, _head("Transfer-Encoding: chunked"), [framed] * 1024, timeout=20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # A chunked body under the limit still reaches Bolt (and its signature check).
    small = b"command=%2Fstatus"
    whole = b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)
    answer = raw_post(bot, _head("Transfer-Encoding: chunked"), [whole])
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_rss_stays_flat_under_a_flood_of_big_unsigned_posts(
    stack: LocalStack, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    assert bot.proc is not None
    before = rss_kb(bot.proc.pid)
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    for _ in range(10):  # each offers 32 MiB chunked and declares 300 MiB with Content-Length
        raw_post(bot, _head("Transfer-Encoding: chunked"), [framed] * 512, timeout=20)
        raw_post(bot, _head(f"Content-Length: {300 << 20}"), [chunk] * 512, timeout=20)
    after = rss_kb(bot.proc.pid)
    assert after - before < 20 * 1024, f"RSS {before // 1024} -> {after // 1024} MB"
