"""Slash-command ack latency: ``deploybot serve --http`` against a bare Bolt app that only acks.

Both run as child processes (FastAPI + uvicorn + AsyncSlackRequestHandler), get the same
signed requests at the same concurrency, in one run. /deploy asks for v9.9.9, a tag that is
not in ECR: the bot acks, then reads ECS and ECR and refuses in the background (no rollout);
the ack is what is measured. Every answer the bot sends to the response_url is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bench.lab import ALICE, DEPLOYS, ROOT, SIGNING_SECRET, Lab, header, percentile


class Sink:
    """The response_url the commands carry: counts the answers the bot sends."""

    def __init__(self) -> None:
        self.answers = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.answers += 1
        return web.json_response({"ok": True})


def form(command: str, text: str, response_url: str) -> str:
    return urlencode(
        {
            "token": "bench",
            "team_id": "T0DEMO",
            "team_domain": "demo",
            "channel_id": DEPLOYS,
            "channel_name": "deploys",
            "user_id": ALICE,
            "user_name": "alice",
            "command": command,
            "text": text,
            "api_app_id": "A0DEPLOYBOT",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": uuid.uuid4().hex,
        }
    )


async def load(
    url: str, command: str, text: str, n: int, concurrency: int, response_url: str
) -> list[float]:
    """``n`` signed requests, ``concurrency`` at a time; the latency of each 200 in seconds."""
    verifier = SignatureVerifier(SIGNING_SECRET)
    latencies: list[float] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with gate:
                body = form(command, text, response_url)
                ts = str(int(time.time()))
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": ts,
                    "X-Slack-Signature": verifier.generate_signature(timestamp=ts, body=body),
                }
                started = time.perf_counter()
                async with session.post(url, data=body.encode(), headers=headers) as resp:
                    await resp.read()
                    elapsed = time.perf_counter() - started
                if resp.status == 200:
                    latencies.append(elapsed)
                else:
                    failures.append(str(resp.status))

        await asyncio.gather(*(one() for _ in range(n)))
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return latencies


async def drain(sink: Sink, expected: int, limit: float = 120) -> float:
    """Wait until the bot has answered every command; how long that took. The sink counts on
    the emulator's loop, in another thread: polled, not awaited."""
    started = time.monotonic()
    while sink.answers < expected and time.monotonic() - started < limit:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def generate(url: str, command: str, text: str, n: int, c: int, response_url: str) -> list[float]:
    """The load generator in a process of its own: moto and the emulator, which live in this
    one, must not take the GIL from it while it times requests."""
    spec = json.dumps([url, command, text, n, c, response_url])
    out = subprocess.run(
        [sys.executable, "-m", "bench.acks", "--generate", spec],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return [float(x) for x in json.loads(out)]


async def run_app(
    name: str, url: str, sink: Sink, n: int, c: int, response_url: str
) -> dict[tuple[str, str], list[float]]:
    results = {}
    for command, text, count, conc in (
        ("/deploy-status", "", 100, c),  # warm-up: connections, Bolt's first auth.test, imports
        ("/deploy-status", "", n, c),
        ("/deploy", "v9.9.9", n, c),
    ):
        sink.answers = 0
        lat = await asyncio.to_thread(generate, url, command, text, count, conc, response_url)
        took = await drain(sink, count) if name == "deploybot" else 0.0
        if count == n:
            results[(name, command)] = lat
            if name == "deploybot":
                print(
                    f"   deploybot answered {sink.answers}/{n} {command} on the response_url, "
                    f"the last {took:.1f} s after the last ack"
                )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="requests per command per app")
    parser.add_argument("-c", type=int, default=50, help="concurrent requests")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        url, command, text, n, c, response_url = json.loads(args.generate)
        print(json.dumps(asyncio.run(load(url, command, text, n, c, response_url))))
        return 0
    header(
        f"acks: {args.n} signed /deploy-status and {args.n} /deploy v9.9.9 per app, "
        f"{args.c} concurrent"
    )
    sink = Sink()
    lab = Lab()
    lab.emulator.web_app.router.add_post("/_bench/response", sink.handle)
    results: dict[tuple[str, str], list[float]] = {}
    with lab:
        response_url = lab.emulator.url + "/_bench/response"
        bare = lab.start_bare_bolt()
        bot = lab.start_bot()

        async def run() -> None:
            for name, child in (("bare Bolt", bare), ("deploybot", bot)):
                url = child.url + "/slack/events"
                results.update(await run_app(name, url, sink, args.n, args.c, response_url))

        asyncio.run(run())
    print(f"\n   {'command':14} {'app':10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for (name, command), lat in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ms = [x * 1000 for x in lat]
        print(
            f"   {command:14} {name:10} {percentile(ms, 50):8.1f} {percentile(ms, 99):8.1f} "
            f"{max(ms):8.1f}"
        )
    for command in ("/deploy-status", "/deploy"):
        b = [x * 1000 for x in results[("bare Bolt", command)]]
        d = [x * 1000 for x in results[("deploybot", command)]]
        print(
            f"   {command}: p50 ratio {percentile(d, 50) / percentile(b, 50):.2f}, "
            f"p99 ratio {percentile(d, 99) / percentile(b, 99):.2f} "
            "(goal: p99 < 100 ms, ratio <= 1.5)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
