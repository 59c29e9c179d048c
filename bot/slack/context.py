"""What every Slack listener shares: the fleet, the live messages per target, the rules' door.

``BotContext`` lives here, apart from bot/slack/app.py (which only wires) and the listener
modules (commands.py, actions.py), which import it: no module imports the one that imports it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncRespond
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import mrkdwn
from bot.deploy.engine import Engine
from bot.deploy.records import DeploymentRecord, Plan, Requester
from bot.deploy.supervisor import Supervisor
from bot.errors import DeployError
from bot.fleet import Ask, Fleet
from bot.rules import Door, Home, RuleRefused
from bot.settings import Settings
from bot.slack.progress import ProgressBoard, ProgressMessage, slack_problem
from bot.target import Target

if TYPE_CHECKING:
    from bot.slack.groups import Groups
    from bot.slack.reload import ConfigWatch

log = logging.getLogger("deploybot.slack")

Reply = Callable[..., Awaitable[Any]]
ANSWER_TIMEOUT_SECONDS = 30  # AsyncWebhookClient's default ``timeout``


@dataclass
class BotContext:
    """What every listener needs: settings, the fleet (targets, their engines, the rules),
    the live messages of each target, and the Slack client."""

    settings: Settings
    fleet: Fleet
    client: AsyncWebClient
    min_update_interval: float = 2.0
    bot_name: str = "deploybot"  # the bot's Slack handle, from auth.test when Slack answered
    # The bot's own workspace (SLACK_TEAM_ID, the org from auth.test): changes come only from
    # it (bot/slack/workspace.py). None until auth.test answered.
    home: Home | None = None
    # The user groups deployers/approvers name, and their members (bot/slack/groups.py);
    # None until the server made it.
    groups: Groups | None = None
    # The configuration's source, read again every minute and on /deploy reload
    # (bot/slack/reload.py); None until the server made it.
    watch: ConfigWatch | None = None
    _boards: dict[str, ProgressBoard] = field(default_factory=dict)
    # Shared reads (``read``): per key, the read callers may still join (not started yet),
    # and a lock that lets one read of the key run at a time.
    _reads: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    _read_turns: dict[str, asyncio.Lock] = field(default_factory=dict)
    # One HTTP session for every response_url answer (``respond``): see PooledRespond.
    _answers: aiohttp.ClientSession | None = None
    _jobs: set[asyncio.Future[Any]] = field(default_factory=set)  # listeners' background work

    def learn_home(self, auth: dict[str, Any]) -> None:
        """The bot's workspace from auth.test's answer: SLACK_TEAM_ID if set, else its
        ``team_id``; on Enterprise Grid its ``enterprise_id``."""
        said = str(auth.get("team_id") or "")
        team = self.settings.slack_team_id or said
        if not team:
            return
        if said and said != team:
            log.error(
                "SLACK_TEAM_ID is %s but the bot token belongs to workspace %s: changes are "
                "taken only from %s",
                team,
                said,
                team,
            )
        self.home = Home(team, str(auth.get("enterprise_id") or "") or None)

    @property
    def starting(self) -> asyncio.Lock:
        """One lock check → post → start at a time in this process: a second /deploy sees
        the first's lock and is refused before posting anything. The queue's turn holds it
        from taking a deploy off the queue to its start (bot/deploy/supervisor.py)."""
        return self.fleet.starting

    # -- targets ------------------------------------------------------------------------------
    @property
    def several(self) -> bool:
        """Whether more than one target is configured: messages then name the target."""
        return len(self.fleet.targets) > 1

    def engine(self, target: Target) -> Engine:
        return self.fleet.engine(target)

    def board(self, target: Target) -> ProgressBoard:
        """The live messages of ``target``'s deployments (one board, one engine)."""
        board = self._boards.get(target.name)
        if board is None:
            promote_to = tuple(t.name for t in self.fleet.targets.promotions_from(target.name))
            board = ProgressBoard(
                self.client,
                self.engine(target),
                min_interval=self.min_update_interval,
                target=target.name if self.several else "",
                promote_to=promote_to,
            )
            self._boards[target.name] = board
        return board

    def boards(self) -> list[tuple[Target, ProgressBoard]]:
        """Every target's board (all made): the server resumes and reconciles each."""
        return [(t, self.board(t)) for t in self.fleet.targets]

    def ask(self, requester: Requester, door: Door, channel: str) -> Ask:
        return Ask.at(door, requester, channel)

    # -- acting -------------------------------------------------------------------------------
    async def launch(
        self,
        target: Target,
        plan: Callable[[], Plan],
        channel: str,
        reply: Reply,
        *,
        starting_held: bool = False,
        queued: bool = False,
    ) -> DeploymentRecord | None:
        """Plan (the rules, then the engine: refuse before anything), post the deployment's
        message, then start it on ``target``'s engine. ``starting_held``: the caller holds
        ``starting`` already (the queue's turn).

        The message exists before any AWS write and the record carries its place: if Slack
        will not take the message, nothing is deployed and the person is told what to do.
        ``queued``: a queued deploy's turn, which nobody waits for at a screen: while Slack
        does not answer at all it starts, and its message is posted once Slack answers (an
        answer refusing the post still refuses the start)."""
        supervisor, board = self.fleet.supervisor(target), self.board(target)
        checked = await asyncio.to_thread(plan)
        if starting_held:
            started = await self._post_and_start(supervisor, board, checked, channel, reply, queued)
        else:
            async with self.starting:
                started = await self._post_and_start(
                    supervisor, board, checked, channel, reply, queued
                )
        if started is None:
            return None
        progress, record = started
        board.follow(progress, record)
        return record

    async def _post_and_start(
        self,
        supervisor: Supervisor,
        board: ProgressBoard,
        checked: Plan,
        channel: str,
        reply: Reply,
        queued: bool = False,
    ) -> tuple[ProgressMessage, DeploymentRecord] | None:
        # Another start may have taken the lock while this one planned: refuse before
        # posting anything (one cheap read when the holder is followed here).
        await asyncio.to_thread(supervisor.engine.check_lock)
        try:
            progress = await board.open(checked, channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if queued and not isinstance(exc, SlackApiError):
                log.warning(
                    "Slack is away (%s): the queued deploy starts; its message follows",
                    slack_problem(exc),
                    extra={"who": checked.requester.who, "tag": checked.tag},
                )
                progress = board.unposted(checked, channel)
                return progress, await asyncio.to_thread(supervisor.start, checked, "")
            log.warning(
                "cannot post in %s (%s): not deploying",
                channel,
                slack_problem(exc),
                extra={"who": checked.requester.who, "tag": checked.tag},
            )
            await safe_reply(reply, self._cannot_post(exc, checked))
            return None
        try:
            record = await asyncio.to_thread(supervisor.start, checked, progress.ref)
        except DeployError as exc:
            await _refused_after_post(progress, checked, exc.message)
            raise
        except BaseException:
            await _refused_after_post(
                progress, checked, "deploybot failed before changing anything; see its logs"
            )
            raise
        return progress, record

    def _cannot_post(self, exc: BaseException, plan: Plan) -> str:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else None
        what = "Nothing was deployed"
        again = f"then run the command again ({plan.kind} {plan.tag})"
        if error == "not_in_channel":
            return (
                f"{what}: I am not in this channel, so nobody here could follow the rollout. "
                f"Invite me with `/invite @{self.bot_name}`, {again}."
            )
        if error in ("channel_not_found", "is_archived", "restricted_action"):
            return (
                f"{what}: I cannot post in this conversation ({error}; a DM or a private "
                f"channel I am not in). Use a channel I am in, or invite me with "
                f"`/invite @{self.bot_name}`, {again}."
            )
        return (
            f"{what}: Slack did not take the deployment's message ({slack_problem(exc)}). "
            "Try again in a moment."
        )

    async def read(self, key: str, fetch: Callable[[], Any]) -> Any:
        """Run the engine read ``fetch`` in a thread, shared by every caller asking for
        ``key`` before it starts: fifty people asking for the status at once cost one or two
        reads, and each answer is read after its question.

        A read already under way when a caller asks started before the caller did: it may
        have read AWS before a change the caller has seen (a deploy started a moment before
        the command). So a caller never joins it; it joins the next read of ``key``, which
        starts once the one under way has ended (one at a time per key), and takes every
        caller that asked meanwhile."""
        pending = self._reads.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._reads[key] = pending
            task = asyncio.ensure_future(self._read(key, pending, fetch))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)
        return await asyncio.shield(pending)

    async def _read(self, key: str, pending: asyncio.Future[Any], fetch: Callable[[], Any]) -> None:
        turn = self._read_turns.setdefault(key, asyncio.Lock())
        try:
            async with turn:
                # From here on the read starts: later callers wait for the next one. Every
                # caller of this one asked before this line.
                if self._reads.get(key) is pending:
                    del self._reads[key]
                result = await asyncio.to_thread(fetch)
        except BaseException as exc:
            if self._reads.get(key) is pending:
                del self._reads[key]
            if not pending.done():
                if isinstance(exc, asyncio.CancelledError):
                    pending.cancel()
                else:
                    pending.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not pending.done():
            pending.set_result(result)

    def respond(self, response_url: str | None) -> PooledRespond:
        """Bolt's ``respond`` for a request, answering over the shared session."""
        if self._answers is None or self._answers.closed:
            # slack_sdk's webhook timeout (30 s) for every answer, as its own sessions have.
            self._answers = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_SECONDS)
            )
        return PooledRespond(response_url=response_url, session=self._answers)

    def run(
        self, job: Awaitable[Any], reply: Reply, what: str, who: Requester | None = None
    ) -> None:
        """Run ``job`` in the background: a listener acks and returns at once."""
        task = asyncio.ensure_future(self._guard(job, reply, what, who))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _guard(
        self, job: Awaitable[Any], reply: Reply, what: str, who: Requester | None
    ) -> None:
        extra = {"who": who.who, "source": who.source} if who else {}
        try:
            await job
        except RuleRefused as exc:
            log.info("%s refused by %s: %s", what, exc.rule, exc.message, extra=extra)
            # The rule's own Slack rendering: people mentioned, user text escaped.
            await safe_reply(reply, exc.decision.mrkdwn)
        except DeployError as exc:
            log.info("%s refused: %s", what, exc.message, extra=extra)
            # The engine's words quote what people typed (tags, names): text, not mrkdwn.
            await safe_reply(reply, mrkdwn.escape(exc.message))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what, extra=extra)
            await safe_reply(
                reply,
                f"Something went wrong on deploybot's side while handling {what}; it is in the "
                "bot's logs. Nothing was changed unless a progress message says so.",
            )

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        for board in self._boards.values():
            await board.close()
        if self._answers is not None:
            await self._answers.close()


class PooledRespond(AsyncRespond):
    """Bolt's ``respond()``, over one aiohttp session the whole bot shares.

    Bolt's own makes a session, and so a new connection (a TLS handshake to hooks.slack.com),
    for every answer (slack_bolt/context/respond/async_respond.py); here answers reuse kept-alive
    connections. A kept-alive connection the server has just closed fails the next post with
    ServerDisconnectedError: slack_sdk's connection-error retry handler sends it again once,
    as the bot's Web API client does (bot/slack/app.py)."""

    def __init__(self, *, response_url: str | None, session: aiohttp.ClientSession) -> None:
        super().__init__(response_url=response_url)
        self.session = session

    async def __call__(  # type: ignore[override]
        self,
        text: str = "",
        blocks: Any = None,
        attachments: Any = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
        delete_original: bool | None = None,
        unfurl_links: bool | None = None,
        unfurl_media: bool | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WebhookResponse:
        if self.response_url is None:
            raise ValueError("respond is unsupported here as there is no response_url")
        client = AsyncWebhookClient(
            url=self.response_url,
            session=self.session,
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )
        return await client.send(
            text=text,
            blocks=blocks,
            attachments=attachments,
            response_type=response_type,
            replace_original=replace_original,
            delete_original=delete_original,
            unfurl_links=unfurl_links,
            unfurl_media=unfurl_media,
            metadata=metadata,
        )


class PooledAnswers(AsyncMiddleware):
    """Bolt middleware: every listener's ``respond`` answers over the bot's one session
    (PooledRespond). A class, not a function: Bolt runs it without building keyword
    arguments for it on every request."""

    def __init__(self, ctx: BotContext) -> None:
        self.ctx = ctx

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # Bolt's name for it
    ) -> BoltResponse | None:
        url = req.context.response_url
        if url:
            req.context["respond"] = self.ctx.respond(url)
        return await next()


async def _refused_after_post(progress: ProgressMessage, plan: Plan, reason: str) -> None:
    try:
        await progress.refused(plan, reason)
    except Exception:
        log.exception("could not mark the message refused")


async def safe_reply(reply: Reply, text: str) -> None:
    """An ephemeral answer to the person; a failure to send it is logged, never raised."""
    try:
        await reply(text=text, response_type="ephemeral", replace_original=False)
    except Exception:
        log.exception("could not tell the user: %s", text)
