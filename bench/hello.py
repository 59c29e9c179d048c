"""Throughput of the hello-world service against the stdlib http.server it replaced.

Both are child processes on 127.0.0.1, loaded by the same generator (wrk if installed, else
an aiohttp client) with 64 connections for a fixed duration. Both log one line per request,
as each did in production (uvicorn's access log; BaseHTTPRequestHandler's stderr line).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.lab import ROOT, Child, free_port, header, percentile


class Original(BaseHTTPRequestHandler):
    """The replaced service: ``hello-world`` on ``/``."""

    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        body = b"hello-world"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_original(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), Original).serve_forever()


def wrk(url: str, connections: int, seconds: int) -> tuple[float, float, str]:
    """(requests/s, p99 ms, wrk's output)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"(Socket errors:.*|Non-2xx.*)", out)
    return rps, p99, errors.group(1) if errors else "no errors"


def aiohttp_load(url: str, connections: int, seconds: int) -> tuple[float, float, str]:
    import aiohttp

    async def run() -> tuple[int, list[float]]:
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections)
        ) as session:

            async def worker() -> None:
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    async with session.get(url) as resp:
                        await resp.read()
                    latencies.append((time.perf_counter() - started) * 1000)

            await asyncio.gather(*(worker() for _ in range(connections)))
        return len(latencies), latencies

    count, latencies = asyncio.run(run())
    return count / seconds, percentile(latencies, 99), f"{count} requests"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", type=int, default=64, help="connections")
    parser.add_argument("-d", type=int, default=10, help="seconds per run")
    parser.add_argument("--serve-original", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_original:
        serve_original(args.serve_original)
        return 0
    tool = "wrk" if shutil.which("wrk") else "aiohttp"
    load = wrk if tool == "wrk" else aiohttp_load
    header(f"hello: {tool}, {args.c} connections, {args.d} s per run, GET /")
    results = {}
    for name in ("original http.server", "hello-world (uvicorn)"):
        port = free_port()
        if name.startswith("original"):
            cmd = [sys.executable, "-m", "bench.hello", "--serve-original", str(port)]
        else:
            cmd = [str(ROOT / ".venv" / "bin" / "hello-world"), "--bind", "127.0.0.1"]
            cmd += ["--port", str(port)]
        child = Child(cmd, {"PATH": "/usr/bin:/bin"}, port, health="/").start()
        try:
            url = f"http://127.0.0.1:{port}/"
            load(url, args.c, 2)  # warm-up
            results[name] = load(url, args.c, args.d)
        finally:
            child.stop()
    print(f"\n   {'server':24} {'req/s':>9} {'p99 ms':>8}  errors")
    for name, (rps, p99, note) in results.items():
        print(f"   {name:24} {rps:9.0f} {p99:8.1f}  {note}")
    (o_rps, o_p99, _), (n_rps, n_p99, _) = results.values()
    print(f"   throughput ratio {n_rps / o_rps:.2f} (goal >= 3), p99 ratio {n_p99 / o_p99:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
