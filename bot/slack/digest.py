"""The weekly digest: last week's four keys and their chart, posted to each target's channel
when its ``digest`` schedule says (deploybot.toml), by one replica whatever their count.

Every replica runs ``digests_forever``; at a digest's moment each asks the target's engine to
claim it (a conditional put in the table, bot/deploy/digests.py) and only the one that got it
posts: the numbers (chat.postMessage) and the chart (files.uploadV2, bot/slack/stats.py). A
replica that starts late, within CATCH_UP of the moment, still posts it if nobody has; later
than that the week is skipped. Targets without a schedule get nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from datetime import datetime, timedelta

from slack_sdk.errors import SlackApiError

from bot.digest import WEEK
from bot.errors import DeployError
from bot.slack import stats as slack_stats
from bot.slack.announce import channel_of
from bot.slack.context import BotContext
from bot.target import Target

log = logging.getLogger("deploybot.slack")

CATCH_UP = timedelta(hours=12)  # a digest is still posted this long after its moment
LONGEST_SLEEP = 300.0  # seconds: wakes at least this often (a clock that jumped, a new week)


def _holder() -> str:
    return f"digest:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


async def post_digest(ctx: BotContext, target: Target, due: datetime, holder: str) -> bool:
    """Post ``target``'s digest due at ``due`` if this replica claims it; True when posted."""
    channel = channel_of(ctx.settings, target)
    if channel is None:
        log.warning("no channel for %s's weekly digest: set its channels", target.name)
        return False
    engine = ctx.engine(target)
    if not await asyncio.to_thread(engine.claim_digest, due, holder):
        log.info("weekly digest of %s due %s: posted, or another replica has it", target.name, due)
        return False
    keys = await asyncio.to_thread(engine.stats, due - WEEK, due)
    heading = f"Weekly digest of {target.name}: the four keys of last week"
    msg = slack_stats.numbers(keys, heading)
    await ctx.client.chat_postMessage(channel=channel, **msg.as_kwargs())
    try:
        await slack_stats.share_chart(
            ctx.client, channel, keys, comment=f"Last week's deployments of *{target.name}*"
        )
    except slack_stats.ChartNotShared as exc:
        log.warning("weekly digest of %s: chart not shared: %s", target.name, exc.message)
    await asyncio.to_thread(engine.digest_posted, due, holder)
    log.info("weekly digest of %s posted to %s", target.name, channel)
    return True


async def digests_forever(ctx: BotContext) -> None:
    """Post each scheduled target's digest at its moment; sleeps until the next one."""
    scheduled = [t for t in ctx.fleet.targets if t.digest is not None]
    if not scheduled:
        return  # nothing is ever due: no loop
    clock = ctx.engine(scheduled[0]).clock
    holder = _holder()
    handled: set[tuple[str, datetime]] = set()
    while True:
        now = clock.now()
        for target in scheduled:
            assert target.digest is not None
            due = target.digest.last_due(now)
            if now - due > CATCH_UP or (target.name, due) in handled:
                continue
            try:
                await post_digest(ctx, target, due, holder)
            except (DeployError, SlackApiError) as exc:  # tried again at the next wake
                log.warning("weekly digest of %s not posted: %s", target.name, exc)
                continue
            except Exception:  # the loop outlives any one digest
                log.exception("weekly digest of %s failed", target.name)
                continue
            handled.add((target.name, due))
        after = clock.now()
        upcoming = min(t.digest.next_due(after) for t in scheduled if t.digest is not None)
        await asyncio.sleep(min(max((upcoming - after).total_seconds(), 0.5), LONGEST_SLEEP))
