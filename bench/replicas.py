"""Slack calls per deployment with 1, 2 and 3 bot replicas on one deployments table (issue 14).

Each run starts N ``deploybot serve --http`` processes on one moto and one Slack emulator,
behind one Request URL (the emulator sends each request to the next replica in turn, as a load
balancer would), then makes ``--deployments`` deployments one after another with ``/deploy``,
alternating two tags. After each one's final message it waits two follower leases (every
replica makes several passes meanwhile) and counts, on that deployment's message:

  posts     chat.postMessage of the message itself (always 1: the replica the command reached)
  updates   chat.update of it
  repeated  updates that left it as it was, plus thread-reply lines (ECS events, stopped
            tasks) said twice: what a second follower adds
  replies   thread replies

With one follower per deployment, the figures for 2 and 3 replicas are those for 1.
``--code DIR`` runs the bots from another checkout (a baseline: ``git worktree add /tmp/old
f4de1cf`` is main before the follower lease); the emulator and the counting are this one's.

    uv run --frozen python -m bench.replicas [--deployments 3] [--replicas 1,2,3] [--code DIR]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

from bench.lab import ALICE, DEPLOYS, Child, Lab, header
from bot.local.net import free_port
from bot.local.slack_emulator import Message, SlackEmulator

LEASE = 3.0  # LOCK_LEASE_SECONDS of the bots: short, so a quiet period of two leases is short
TAGS = ("v4.4.0", "v4.3.0")


def counts(emulator: SlackEmulator, msg: Message) -> dict[str, int]:
    msg = emulator.message(msg.ts)
    updates = [c for c in emulator.calls_of("chat.update", ok=True) if c.params.get("ts") == msg.ts]
    contents = [(r.text, repr(r.blocks)) for r in msg.revisions]
    lines = [line for r in msg.replies for line in r.text.splitlines()]
    repeated = sum(a == b for a, b in itertools.pairwise(contents)) + len(lines) - len(set(lines))
    return {
        "posts": 1,
        "updates": len(updates),
        "replies": len(msg.replies),
        "repeated": repeated,
    }


def start_bot(lab: Lab, code: str | None, extra: dict[str, str]) -> Child:
    """``deploybot serve --http``, from this checkout or from ``code``."""
    port = free_port()
    args = [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1"]
    child = Child([*args, "--port", str(port)], lab.bot_env(**extra), port)
    if code:
        child.cwd = Path(code)
    lab.children.append(child)
    return child.start()


def run(replicas: int, deployments: int, code: str | None) -> list[dict[str, int]]:
    with Lab(poll_seconds=0.5, step_seconds=0.3) as lab:
        extra = {"LOCK_LEASE_SECONDS": str(LEASE)}
        if code:
            extra["PYTHONPATH"] = code
        bots = [start_bot(lab, code, extra) for _ in range(replicas)]
        em = lab.emulator
        em.request_urls = [f"{b.url}/slack/events" for b in bots]
        out = []
        for i in range(deployments):
            seen = {m.ts for m in em.messages(DEPLOYS) if m.bot_id}
            tag = TAGS[i % len(TAGS)]
            em.slash_command("/deploy", tag, user=ALICE, channel=DEPLOYS)

            def final(seen: set[str] = seen, tag: str = tag) -> Message | None:
                return next(
                    (
                        m
                        for m in em.messages(DEPLOYS)
                        if m.bot_id and m.ts not in seen and f"Deployed {tag}" in m.all_text
                    ),
                    None,
                )

            msg = em.wait_for(final, timeout=120, what=f"deployment {i + 1}'s final message")
            assert msg is not None
            time.sleep(2 * LEASE)  # every replica's passes after the end: none may touch it
            out.append(counts(em, msg))
            extra_messages = [m for m in em.messages(DEPLOYS) if m.bot_id and m.ts not in seen]
            out[-1]["messages"] = len(extra_messages)
        # moto's backends live in this process: forget them for the next replica count.
        for bot in bots:
            bot.stop()
        lab.moto.reset()
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=3)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--code", help="run the bots from this checkout (a baseline)")
    args = parser.parse_args(argv)
    code = os.path.abspath(args.code) if args.code else None
    header(f"Slack calls per deployment, {args.deployments} deployments per replica count")
    if code:
        print(f"   bots from {code}")
    print("| replicas | messages | posts | updates | replies | repeated | total Slack calls |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.replicas.split(",")):
        rows = run(n, args.deployments, code)

        def mean(key: str, rows: list[dict[str, int]] = rows) -> str:
            values = [r[key] for r in rows]
            m = statistics.mean(values)
            spread = f" ({min(values)}-{max(values)})" if min(values) != max(values) else ""
            return f"{m:.1f}{spread}"

        totals = [r["messages"] + r["updates"] + r["replies"] for r in rows]
        print(
            f"| {n} | {mean('messages')} | {mean('posts')} | {mean('updates')} |"
            f" {mean('replies')} | {mean('repeated')} | {statistics.mean(totals):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
