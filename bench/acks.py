"""Slash commands under a burst: ``deploybot serve --http`` against two bare Bolt apps.

The apps, each a child process served the same way (FastAPI + uvicorn +
AsyncSlackRequestHandler, bench/bare_bolt.py for the baselines):

  ack only      acks and does nothing else (the least any Bolt app does)
  ack+answer    acks, then answers once on the response_url with a fixed text: the fair
                floor, the least a bot that answers does
  deploybot     this checkout (``--code DIR`` adds ``deploybot@DIR``: another checkout, e.g.
                ``git archive <commit> | tar -x -C DIR`` of main, run with this venv)

The commands: ``/deploy-status``, ``/deploy`` (help: the recent images) and ``/deploy v9.9.9``
(a tag not in ECR: deploybot refuses it, naming the recent tags). Each burst is ``-n`` signed
requests, ``-c`` at a time, from a load generator in a process of its own; every request
carries its own response_url on a sink, a tiny aiohttp server in a process of its own too, so
both answering apps pay the same for their answers and neither shares a GIL with moto. A
request's *ack* is the HTTP 200 of the slash command; its *answer* is the sink receiving the
post on its response_url, timed from when the request was sent (one monotonic clock: Linux's
CLOCK_MONOTONIC is system-wide). Throughput: requests over the time from the first request
sent to the last ack (ack only) or the last answer.

Rounds interleave the apps: each round runs every command on every app, the apps' order
rotated round by round, every burst drained (all answers in) before the next, so machine noise
falls on all of them. Percentiles pool the rounds; throughput is the median of the rounds.
AWS calls per answer are counted at moto (the server's request log); CPU a request is the
app process's user + system time over the burst (/proc/PID/stat).

The goal (issue 18), against the floor: ack p99 at most 1.3x and throughput (answers/s) at
least 0.9x; the answers' p99 is held to 1.3x too and reported apart: deploybot's answers may
only use a read that started after the command arrived, so each waits for one.

``--profile DIR`` records each deploybot and the floor under their first round's bursts with
py-spy (``raw`` collapsed stacks, one file per app and command) and prints where the samples
go.

    uv run --frozen python -m bench.acks [-n 500] [-c 50] [--rounds 3] [--code DIR ...]
        [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bench.lab import ALICE, DEPLOYS, ROOT, SIGNING_SECRET, Child, Lab, header, percentile
from bot.local.net import free_port

# (label, command, text)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("/deploy-status", "/deploy-status", ""),
    ("/deploy help", "/deploy", ""),
    ("/deploy v9.9.9", "/deploy", "v9.9.9"),
)
ACK_ONLY, FLOOR, BOT = "ack only", "ack+answer", "deploybot"
GOAL_P99, GOAL_RATE = 1.3, 0.9  # issue 18: p99 within 1.3x the floor, throughput within 10%


# -- the sink: the response_urls, in a process of its own ------------------------------------
def sink_app() -> web.Application:
    arrived: dict[str, list[float]] = defaultdict(list)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        arrived[request.match_info["rid"]].append(time.monotonic())
        return web.Response(text="ok")  # what Slack's response_url answers

    async def count(_: web.Request) -> web.Response:
        return web.json_response(sum(len(v) for v in arrived.values()))

    async def dump(_: web.Request) -> web.Response:
        return web.json_response(arrived)

    async def reset(_: web.Request) -> web.Response:
        arrived.clear()
        return web.json_response(True)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.add_routes(
        [
            web.post("/r/{rid}", answer),
            web.get("/count", count),
            web.get("/arrived", dump),
            web.post("/reset", reset),
            web.get("/healthz", healthz),
        ]
    )
    return app


def _get(url: str, method: str = "GET") -> object:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return json.loads(r.read())


# -- the load generator, in a process of its own ---------------------------------------------
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
    url: str, command: str, text: str, n: int, concurrency: int, sink: str
) -> list[tuple[str, float, float]]:
    """``n`` signed requests, ``concurrency`` at a time: (response id, sent at, ack seconds)."""
    verifier = SignatureVerifier(SIGNING_SECRET)
    out: list[tuple[str, float, float]] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with gate:
                rid = uuid.uuid4().hex
                body = form(command, text, f"{sink}/r/{rid}")
                ts = str(int(time.time()))
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": ts,
                    "X-Slack-Signature": verifier.generate_signature(timestamp=ts, body=body),
                }
                sent = time.monotonic()
                async with session.post(url, data=body.encode(), headers=headers) as resp:
                    await resp.read()
                    elapsed = time.monotonic() - sent
                if resp.status == 200:
                    out.append((rid, sent, elapsed))
                else:
                    failures.append(str(resp.status))

        await asyncio.gather(*(one() for _ in range(n)))
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return out


def generate(
    url: str, command: str, text: str, n: int, c: int, sink: str
) -> list[tuple[str, float, float]]:
    """The load generator in a process of its own: moto and the emulator, which live in this
    one, must not take the GIL from it while it times requests."""
    spec = json.dumps([url, command, text, n, c, sink])
    out = subprocess.run(
        [sys.executable, "-m", "bench.acks", "--generate", spec],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return [(str(r), float(s), float(a)) for r, s, a in json.loads(out)]


# -- one burst -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Burst:
    """One burst of one command at one app."""

    app: str
    command: str
    acks: list[float]  # seconds
    answers: list[float]  # seconds from sent to arrived; the first answer of each request
    ack_rate: float  # requests/s to the last ack
    answer_rate: float  # requests/s to the last answer
    missing: int  # requests with no answer after the drain's limit
    extra: int  # answers beyond one per request
    aws_calls: int  # at moto, from the first request to the last answer
    cpu: float  # seconds of CPU the app's process used (user + system), likewise


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (/proc/PID/stat's utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst(
    lab: Lab, app: Child, name: str, label: str, command: str, text: str, n: int, c: int, sink: str
) -> Burst:
    assert app.proc is not None
    url = app.url + "/slack/events"
    _get(sink + "/reset", "POST")
    before = len(lab.moto.requests)
    cpu = cpu_seconds(app.proc.pid)
    sent = generate(url, command, text, n, c, sink)
    expects = name != ACK_ONLY
    started = time.monotonic()
    while expects and time.monotonic() - started < 180:
        count = _get(sink + "/count")
        assert isinstance(count, int)
        if count >= n:
            break
        time.sleep(0.05)
    arrived = _get(sink + "/arrived")
    assert isinstance(arrived, dict)
    calls = len(lab.moto.requests) - before
    cpu = cpu_seconds(app.proc.pid) - cpu
    first = min(s for _, s, _ in sent)
    last_ack = max(s + a for _, s, a in sent)
    answers = [arrived[r][0] - s for r, s, _ in sent if r in arrived]
    last_answer = max((arrived[r][0] for r, _, _ in sent if r in arrived), default=last_ack)
    return Burst(
        app=name,
        command=label,
        acks=[a for _, _, a in sent],
        answers=answers,
        ack_rate=n / (last_ack - first),
        answer_rate=n / (last_answer - first) if answers else 0.0,
        missing=(n - len(answers)) if expects else 0,
        extra=sum(len(v) - 1 for v in arrived.values()),
        aws_calls=calls,
        cpu=cpu,
    )


# -- the profile -----------------------------------------------------------------------------
def profile_name(app: str, label: str) -> str:
    command = label.strip("/").replace(" ", "-").replace("/", "")
    name = app.replace(" ", "-").replace("+", "-").replace("@", "-")
    return f"{name}-{command}.txt"


class Profile:
    """py-spy recording one process into ``path`` (raw collapsed stacks) until stopped: only
    the thread holding the GIL is sampled (``--gil``), so the samples are the Python work of
    the process, wherever it runs, and nothing that waits (a socket, a lock)."""

    def __init__(self, pid: int, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [
                *("py-spy", "record", "--pid", str(pid), "--rate", "250", "--threads", "--gil"),
                *("--format", "raw", "--output", str(path), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # attached before the first request

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


# Where a sample's time goes, by the innermost frame that names one of these (self time).
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("logging/", "pythonjsonlogger", "bot/logs.py")),
    ("botocore: parse answers", ("botocore/parsers.py",)),
    ("botocore: serialize, validate", ("botocore/serialize.py", "botocore/validate.py")),
    ("botocore: sign (SigV4)", ("botocore/auth.py", "botocore/signers.py")),
    ("botocore/boto3: the rest (hooks, endpoints, retries, models)", ("botocore/", "boto3/")),
    ("HTTP client (urllib3, http.client, sockets)", ("urllib3/", "http/client.py", "socket.py")),
    ("slack_sdk (Block Kit models, webhook)", ("slack_sdk/",)),
    ("Bolt", ("slack_bolt/",)),
    ("aiohttp", ("aiohttp/",)),
    ("HTTP server (uvicorn, FastAPI, starlette)", ("uvicorn/", "h11/", "fastapi/", "starlette/")),
    ("deploybot (bot/)", ("bot/",)),
    ("asyncio, threads", ("asyncio/", "concurrent/", "threading.py", "queue.py")),
)
# Inclusive: the samples whose stack is inside one of these.
ACTIVITIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("an AWS call (BaseClient._make_api_call)", ("BaseClient._make_api_call",)),
    ("  of it: parsing its answer", ("botocore/parsers.py",)),
    ("  of it: serializing, signing", ("botocore/serialize.py", "botocore/auth.py")),
    ("making boto3 clients or sessions", ("ClientCreator.create_client", "Session.client ")),
    ("logging", ("Logger._log", "Logger.handle")),
    ("building Block Kit messages", ("bot/slack/messages.py",)),
    ("posting on response_urls", ("AsyncWebhookClient",)),
    ("Bolt's dispatch (verify, route, ack)", ("AsyncApp.async_dispatch",)),
)


def summarize(path: Path) -> str:
    """Samples by thread, by library (self) and by activity (inclusive), as report lines."""
    threads: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        thread, *frames = stack.split(";")
        threads["event loop" if "MainThread" in thread else "worker threads"] += count
        library = next(
            (
                name
                for frame in reversed(frames)
                for name, needles in LIBRARIES
                if any(needle in frame for needle in needles)
            ),
            "other",
        )
        libraries[library] += count
        for name, needles in ACTIVITIES:
            if any(needle in frame for frame in frames for needle in needles):
                activities[name] += count
    if not total:
        return "     (no samples)"
    lines = [
        "     "
        + ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in threads.most_common())
        + f" of {total} samples holding the GIL"
    ]
    lines += [f"     {100 * n / total:5.1f}%  {name}" for name, n in libraries.most_common()]
    lines.append("     inclusive:")
    lines += [f"     {100 * activities[name] / total:5.1f}%  {name}" for name, _ in ACTIVITIES]
    return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------
def ms(values: Sequence[float], q: float) -> float:
    return percentile([v * 1000 for v in values], q)


def report(bursts: list[Burst], apps: list[str], commands: Sequence[tuple[str, str, str]]) -> None:
    print(
        f"\n   {'command':16} {'app':22} {'ack p50':>8} {'ack p99':>8} {'ans p50':>8} "
        f"{'ans p99':>8} {'acks/s':>7} {'ans/s':>7} {'AWS/ans':>7} {'CPU ms/req':>10}"
    )
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for label, _, _ in commands:
        for app in apps:
            mine = [b for b in bursts if b.app == app and b.command == label]
            acks = [x for b in mine for x in b.acks]
            answers = [x for b in mine for x in b.answers]
            answered = sum(len(b.answers) for b in mine)
            cell = {
                "ack50": ms(acks, 50),
                "ack99": ms(acks, 99),
                "ans50": ms(answers, 50) if answers else float("nan"),
                "ans99": ms(answers, 99) if answers else float("nan"),
                "ack_rate": statistics.median(b.ack_rate for b in mine),
                "ans_rate": statistics.median(b.answer_rate for b in mine) if answers else 0,
                "aws": sum(b.aws_calls for b in mine) / answered if answered else 0,
                "cpu": 1000 * sum(b.cpu for b in mine) / sum(len(b.acks) for b in mine),
            }
            cells[(label, app)] = cell
            print(
                f"   {label:16} {app:22} {cell['ack50']:8.1f} {cell['ack99']:8.1f} "
                f"{cell['ans50']:8.1f} {cell['ans99']:8.1f} {cell['ack_rate']:7.0f} "
                f"{cell['ans_rate']:7.0f} {cell['aws']:7.2f} {cell['cpu']:10.2f}"
            )
            missing = sum(b.missing for b in mine)
            extra = sum(b.extra for b in mine)
            if missing or extra:
                print(f"   !! {app} {label}: {missing} requests unanswered, {extra} extra answers")
    print(
        f"\n   ratios: deploybot / baseline (throughput: answers/s over the baseline's answers/s,"
        f" or acks/s for {ACK_ONLY})\n"
        f"   {'':16} {'':22} | {'vs ' + FLOOR:^39} | {'vs ' + ACK_ONLY:^22} | goal\n"
        f"   {'command':16} {'app':22} | {'ack p50':>7} {'ack p99':>7} {'ans p50':>7} "
        f"{'ans p99':>7} {'thru':>5} | {'ack p50':>7} {'ack p99':>7} {'thru':>5} | "
        f"ack p99 <= {GOAL_P99}x, thru >= {GOAL_RATE}x; ans p99 <= {GOAL_P99}x"
    )
    for label, _, _ in commands:
        for app in apps:
            if not app.startswith(BOT):
                continue
            d, f, a = cells[(label, app)], cells[(label, FLOOR)], cells[(label, ACK_ONLY)]
            acks_met = (
                d["ack99"] <= GOAL_P99 * f["ack99"] and d["ans_rate"] >= GOAL_RATE * f["ans_rate"]
            )
            answers_met = d["ans99"] <= GOAL_P99 * f["ans99"]
            print(
                f"   {label:16} {app:22} | {d['ack50'] / f['ack50']:7.2f} "
                f"{d['ack99'] / f['ack99']:7.2f} {d['ans50'] / f['ans50']:7.2f} "
                f"{d['ans99'] / f['ans99']:7.2f} {d['ans_rate'] / f['ans_rate']:5.2f} | "
                f"{d['ack50'] / a['ack50']:7.2f} {d['ack99'] / a['ack99']:7.2f} "
                f"{d['ans_rate'] / a['ack_rate']:5.2f} | "
                + ("met" if acks_met else "MISSED")
                + "; "
                + ("met" if answers_met else "missed")
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="requests per burst")
    parser.add_argument("-c", type=int, default=50, help="concurrent requests")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=100, help="requests per app and command")
    parser.add_argument(
        "--code", action="append", default=[], help="also run deploybot from this checkout"
    )
    parser.add_argument("--profile", default="", help="py-spy deploybot's first round into DIR")
    parser.add_argument("--only", default="", help="only the commands whose label has this")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        url, command, text, n, c, sink = json.loads(args.generate)
        print(json.dumps(asyncio.run(load(url, command, text, n, c, sink))))
        return 0
    if args.sink:
        web.run_app(sink_app(), host="127.0.0.1", port=args.sink, print=None)
        return 0
    header(
        f"acks and answers: {args.n} signed requests a burst, {args.c} concurrent, "
        f"{args.rounds} interleaved rounds"
    )
    if args.profile and not shutil.which("py-spy"):
        print("   py-spy is not installed (`pip install py-spy`): no profile")
        args.profile = ""
    commands = [c for c in COMMANDS if args.only in c[0]]
    bursts: list[Burst] = []
    with Lab() as lab:
        port = free_port()
        sink_child = Child(
            [sys.executable, "-m", "bench.acks", "--sink", str(port)], lab.bot_env(), port
        )
        lab.children.append(sink_child)
        sink = sink_child.start().url
        children: dict[str, Child] = {
            ACK_ONLY: lab.start_bare_bolt(),
            FLOOR: lab.start_bare_bolt(answer=True),
            BOT: lab.start_bot(),
        }
        for code in map(os.path.abspath, args.code):
            name = f"{BOT}@{Path(code).name}"
            port = free_port()
            serve = ("-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", str(port))
            child = Child(
                [sys.executable, *serve],
                lab.bot_env(PYTHONPATH=code),
                port,
                cwd=Path(code),
            )
            lab.children.append(child)
            children[name] = child.start()
        apps = list(children)
        for app in apps:  # connections, Bolt's first auth.test, imports, ECR's pages
            for label, command, text in commands:
                burst(lab, children[app], app, label, command, text, args.warmup, args.c, sink)
        for r in range(args.rounds):
            order = apps[r % len(apps) :] + apps[: r % len(apps)]
            for label, command, text in commands:
                for app in order:
                    child = children[app]
                    profile = None
                    profiled = app == FLOOR or app.startswith(BOT)
                    if args.profile and r == 0 and profiled and child.proc is not None:
                        out = Path(args.profile)
                        out.mkdir(parents=True, exist_ok=True)
                        profile = Profile(child.proc.pid, out / profile_name(app, label))
                    b = burst(lab, child, app, label, command, text, args.n, args.c, sink)
                    if profile is not None:
                        profile.stop()
                    bursts.append(b)
                    print(
                        f"   round {r + 1} {label:16} {app:22} ack p99 {ms(b.acks, 99):6.1f} "
                        f"answer p99 {ms(b.answers, 99) if b.answers else 0:6.1f} ms, "
                        f"{b.answer_rate or b.ack_rate:4.0f}/s, {b.aws_calls} AWS calls, "
                        f"{1000 * b.cpu / len(b.acks):.2f} ms CPU a request",
                        flush=True,
                    )
    report(bursts, apps, commands)
    if args.profile:
        print(f"\n   profiles (py-spy, first round; raw stacks in {args.profile}):")
        for label, _, _ in commands:
            for app in apps:
                path = Path(args.profile) / profile_name(app, label)
                if path.exists():
                    print(f"   {label}, {app}:")
                    print(summarize(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
