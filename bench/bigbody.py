"""Large unsigned POSTs: the resident memory of ``deploybot serve --http`` before, during, after.

A flood of unsigned POSTs to /slack/events, each offering ``--size-mb`` of body: half declare
it with Content-Length, half send it chunked. Each client stops sending as soon as the server
answers or closes. RSS is VmRSS from /proc of the bot child, sampled every 20 ms during the
flood (the peak) and read before and after. With ``--baseline REF`` the same flood first hits
the bot as it was at git commit REF (its ``bot/`` package run from a ``git archive`` of REF,
the rest of the environment the same), for the before/after figure in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.lab import ROOT, Child, Lab, header, rss_mb
from bot.local.net import free_port

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Flood:
    """What one flood did to one bot process."""

    before_mb: float
    peak_mb: float
    after_mb: float
    statuses: Counter[str]
    seconds: float


def _post(port: int, size: int, chunked: bool) -> str:
    """One unsigned POST offering ``size`` bytes; returns the status the server answered.
    Before each block it looks for an answer (select), as a client that reads would."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    block = b"x" * CHUNK
    framed = b"%x\r\n%s\r\n" % (CHUNK, block)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n".encode()
        )
        sent = 0
        try:
            while sent < size and not select.select([sock], [], [], 0)[0]:
                sock.sendall(framed if chunked else block)
                sent += CHUNK
            if chunked and sent >= size:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed; the answer is in our buffer
        line = b""
        try:
            while b"\r\n" not in line and (data := sock.recv(4096)):
                line += data
        except OSError:
            pass
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"


def _flood(port: int, requests: int, size: int, concurrency: int) -> Counter[str]:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        kinds = [i % 2 == 1 for i in range(requests)]
        return Counter(pool.map(lambda chunked: _post(port, size, chunked), kinds))


def measure(child: Child, requests: int, size_mb: int, concurrency: int) -> Flood:
    assert child.proc is not None
    pid = child.proc.pid
    time.sleep(1)
    before = rss_mb(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            try:
                peak = max(peak, rss_mb(pid))
            except (OSError, RuntimeError):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    statuses = _flood(child.port, requests, size_mb << 20, concurrency)
    took = time.monotonic() - started
    time.sleep(1)
    done.set()
    sampler.join()
    return Flood(before, peak, rss_mb(pid), statuses, took)


def baseline_bot(lab: Lab, ref: str, workdir: str) -> Child:
    """``deploybot serve --http`` with the ``bot`` package of git commit ``ref``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "bot"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", workdir], input=archive, check=True)
    port = free_port()
    args = [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1"]
    # PYTHONSAFEPATH: the working directory (this tree) is not put first on sys.path, so
    # PYTHONPATH's copy of REF's bot/ is what ``-m bot`` imports.
    env = lab.bot_env(PYTHONPATH=workdir, PYTHONSAFEPATH="1")
    child = Child([*args, "--port", str(port)], env, port)
    lab.children.append(child)
    return child.start()


def report(name: str, flood: Flood) -> None:
    answered = ", ".join(f"{n} x {status}" for status, n in sorted(flood.statuses.items()))
    print(
        f"   {name:24} {flood.before_mb:9.1f} {flood.peak_mb:9.1f} {flood.after_mb:9.1f} "
        f"{flood.peak_mb - flood.before_mb:+9.1f} {flood.seconds:7.1f}   {answered}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--baseline", metavar="REF", help="also flood the bot of commit REF")
    args = parser.parse_args()
    header(
        f"big bodies: {args.requests} unsigned POSTs of {args.size_mb} MB, "
        f"{args.concurrency} at a time (half Content-Length, half chunked)"
    )
    rows: list[tuple[str, Flood]] = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="deploybot-baseline-") as workdir:
        if args.baseline:
            old = baseline_bot(lab, args.baseline, workdir)
            rows.append((f"bot at {args.baseline[:12]}", measure(old, **_flood_args(args))))
            old.stop()
        bot = lab.start_bot()
        rows.append(("deploybot (this tree)", measure(bot, **_flood_args(args))))
    print(
        f"\n   {'bot':24} {'before MB':>9} {'peak MB':>9} {'after MB':>9} {'growth':>9} "
        f"{'s':>7}   answers"
    )
    for name, flood in rows:
        report(name, flood)
    return 0


def _flood_args(args: argparse.Namespace) -> dict[str, int]:
    return {"requests": args.requests, "size_mb": args.size_mb, "concurrency": args.concurrency}


if __name__ == "__main__":
    raise SystemExit(main())
