"""Start-up: ``deploybot --help`` wall time, and the bot's resident memory over 20 deployments.

Baselines in the same run: the interpreter alone (``python -c pass``) for the wall time, and
the bare Bolt app of bench/acks.py (acking the same 20 /deploy commands) for the memory.
RSS is VmRSS from /proc of the ``deploybot serve --http`` child. Deployments go through the
Slack emulator (signed /deploy over HTTP) and the rollout simulator, one after the other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.lab import ALICE, DEPLOYS, ROOT, Lab, header, mean_sd, rss_mb

VENV_BIN = ROOT / ".venv" / "bin"


def wall_times(commands: dict[str, str], runs: int) -> dict[str, list[float]]:
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as export:
            args = ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs)]
            args += ["--export-json", export.name]
            for name, cmd in commands.items():
                args += ["-n", name, cmd]
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
            data = json.loads(Path(export.name).read_text())
        return {r["command"]: r["times"] for r in data["results"]}
    out = {}
    for name, cmd in commands.items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(cmd.split(), check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        out[name] = times
    return out


def deployed(lab: Lab) -> int:
    return sum(
        1 for m in lab.emulator.messages(DEPLOYS) if m.bot_id and "✅ Deployed" in m.all_text
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--deployments", type=int, default=20)
    args = parser.parse_args()
    header(f"startup: --help x{args.runs}; RSS over {args.deployments} deployments")
    times = wall_times(
        {
            "deploybot --help": f"{VENV_BIN / 'deploybot'} --help",
            "python -c pass": f"{VENV_BIN / 'python'} -c pass",
        },
        args.runs,
    )
    print(f"\n   {'command':20} {'mean s':>7} {'sd s':>6} {'max s':>6}")
    for name, t in times.items():
        m, sd = mean_sd(t)
        print(f"   {name:20} {m:7.3f} {sd:6.3f} {max(t):6.3f}")
    help_mean = mean_sd(times["deploybot --help"])[0]
    print(f"   deploybot --help: {help_mean:.3f} s (goal < 1 s)")

    with Lab(poll_seconds=0.2, step_seconds=0.1) as lab:
        bot = lab.start_bot()
        bare = lab.start_bare_bolt()
        assert bot.proc is not None and bare.proc is not None
        time.sleep(1)
        rows = [(0, rss_mb(bot.proc.pid), rss_mb(bare.proc.pid))]
        tags = ["v4.4.0", "v4.5.0"]
        for i in range(1, args.deployments + 1):
            tag = tags[i % 2]
            lab.emulator.slash_command(
                "/deploy", tag, ALICE, DEPLOYS, url=bare.url + "/slack/events"
            )
            d = lab.emulator.slash_command(
                "/deploy", tag, ALICE, DEPLOYS, url=bot.url + "/slack/events"
            )
            assert d.ok, d
            lab.emulator.wait_for(lambda i=i: deployed(lab) >= i, timeout=60, what=f"deploy {i}")
            if i % 5 == 0:
                rows.append((i, rss_mb(bot.proc.pid), rss_mb(bare.proc.pid)))
    print(f"\n   {'deployments':>11} {'deploybot MB':>12} {'bare Bolt MB':>12}")
    for n, ours, base in rows:
        print(f"   {n:11} {ours:12.1f} {base:12.1f}")
    first, last = rows[1][1], rows[-1][1]
    print(
        f"   deploybot RSS after start {rows[0][1]:.1f} MB, after {rows[-1][0]} deployments "
        f"{last:.1f} MB (goal < 150 MB); growth from deployment 5 to {rows[-1][0]}: "
        f"{last - first:+.1f} MB; ratio to bare Bolt {last / rows[-1][2]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
