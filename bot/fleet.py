"""The fleet: every target's engine, built when first asked for, and the doors' way to them.

A transport (the Slack app, the CLI, the playground) resolves the target first (from the
command, the channel, or ``DEPLOY_TARGET``), then asks the fleet. The fleet reads the facts
only several targets can give (whether an image completed on the target it must come from,
what a promotion deploys) and hands them, with the door, to that target's engine, whose plan
asks the rules (bot/rules.py) once (``Planner.check``): the one check every door goes
through. The engine stays one service's engine: it never learns about other targets or
Slack; its target (its rules, its freeze) is its own.

Every engine shares one boto3 session and its clients (``AwsClient.sibling``), the table, and
the batched DescribeServices (bot/deploy/batch.py): twenty targets' pollers cost one call per
cluster per poll interval, and the status of every target one call per cluster per ten
services.

A new guardrail is a field of ``Target``, a step in ``rules.check``, a fact in ``Facts``
(gathered here when it needs other targets, by the engine when it is the target's own, as
the freeze) and, for a new action, a case in ``Fleet.plan``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.accounts import require_pullable
from bot.deploy.aws import AwsClient, aws_errors
from bot.deploy.batch import ServiceDescriptions
from bot.deploy.engine import Engine
from bot.deploy.poller import STUCK_AFTER_SECONDS, FollowerHealth
from bot.deploy.records import DeploymentRecord, Plan, QueuedItem, Requester, Status, Via
from bot.deploy.rollout import Outcome
from bot.deploy.stats import FourKeys
from bot.deploy.supervisor import Supervisor
from bot.errors import DeployError, DeployRefused, NoLongerRunning
from bot.hints import Door as HintsDoor
from bot.hints import Hints
from bot.rules import Action, Decision, Door, Facts, Rule, RuleRefused, check
from bot.settings import Settings
from bot.target import Target
from bot.targets import BadConfig, Targets, load_targets

log = logging.getLogger("deploybot.fleet")

# How far back a target's history is read to tell whether an image completed there.
COMPLETED_LOOKBACK = 50
# The status of every target: how many targets are read at once (their other reads, after the
# one batched DescribeServices per cluster).
STATUS_THREADS = 8


# The rules asked before any reading (bot/rules.py's order): the door's own, where, who.
_WHO_AND_WHERE = frozenset({Rule.BREAK_GLASS, Rule.CHANNELS, Rule.DEPLOYERS, Rule.APPROVERS})


def _runs_again(last: DeploymentRecord) -> str | None:
    """What a target runs again after its last deployment was undone (the breaker or an
    alarm rolled it back, or someone aborted it): the image that ran before it."""
    if last.outcome in (Outcome.ROLLED_BACK, Outcome.ABORTED) and last.previous_tag:
        return last.previous_tag
    return None


# What identifies a target's service (its lock, its history, its engine's clients, the boards'
# promotions): a reload that changes one of these takes a restart.
SERVICE_KEYS = ("cluster", "service", "repository", "container", "after")


def restart_needed(old: Targets, new: Targets) -> list[str]:
    """What ``new`` changes that a running bot cannot take without a restart: a target added
    or removed, or one of SERVICE_KEYS of a target (its deployments, lock and followers are
    those of the service it had). Everything else is rules, taken at once."""
    shown = new.source or "the configuration"
    problems = [
        f"{shown}: targets.{name}: a new target takes a restart of the bot"
        for name in new.names
        if name not in old.names
    ]
    problems += [
        f"{shown}: targets.{name}: removing a target takes a restart of the bot"
        for name in old.names
        if name not in new.names
    ]
    for target in new:
        if target.name not in old.names:
            continue
        before = old.get(target.name)
        problems += [
            f"{shown}: targets.{target.name}.{key}: changing it takes a restart of the bot "
            f"(was {getattr(before, key)!r})"
            for key in SERVICE_KEYS
            if getattr(before, key) != getattr(target, key)
        ]
    return problems


class NothingToPromote(DeployRefused):
    """The source target has no deployment whose image could be promoted."""


@dataclass(frozen=True)
class Ask:
    """Who asks (``Requester``: stored with whatever they start) through which door (``Via``:
    what one request brings, never stored): the pair every rule needs beside the target. The
    door's fields are the Via's; the fleet adds the facts only several targets can give
    (``with_facts``) before the target's engine plans with it."""

    requester: Requester
    via: Via

    @classmethod
    def at(
        cls,
        door: Door,
        requester: Requester,
        channel: str | None = None,
        break_glass: str | None = None,
        allow_moved_tag: str = "",
    ) -> Ask:
        """``requester`` at ``door`` (in Slack's ``channel``; at a terminal with
        --break-glass's reason, --allow-moved-tag)."""
        via = Via(door, channel, break_glass, allow_moved_tag=allow_moved_tag)
        return cls(requester, via)

    @classmethod
    def through(cls, requester: Requester, via: Via) -> Ask:
        """The ask of ``requester`` through the door ``via`` describes."""
        return cls(requester, via)

    @property
    def who(self) -> str:
        return self.requester.who

    @property
    def door(self) -> Door:
        return self.via.door

    @property
    def channel(self) -> str | None:
        return self.via.channel

    @property
    def break_glass(self) -> str | None:
        return self.via.break_glass

    def with_facts(self, facts: Facts | None = None) -> Via:
        """What the engine's one rules check needs from the door, with the facts only the
        fleet can read (promotion's source and whether the image completed there)."""
        facts = facts or Facts()
        return replace(
            self.via,
            source=facts.source,
            completed_on_source=facts.completed_on_source,
            source_runs=facts.source_runs,
        )


@dataclass(frozen=True)
class Promotion:
    """What a promotion deploys: the image of the source's last deployment, by digest."""

    source: Target
    record: DeploymentRecord | None  # the source's last deployment; None: it has none

    @property
    def completed(self) -> bool:
        return self.record is not None and self.record.outcome == Outcome.COMPLETED

    @property
    def tag(self) -> str:
        return self.record.tag if self.record else ""

    @property
    def digest(self) -> str:
        return self.record.digest if self.record else ""


@dataclass(frozen=True)
class TargetStatus:
    """One target's status for the all-targets view, or why it could not be read."""

    target: Target
    status: Status | None
    error: str = ""


class Fleet:
    """One engine per target, made on first use; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        targets: Targets | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        aws: AwsClient | None = None,
        engines: dict[str, Engine] | None = None,
    ) -> None:
        """``targets``: load_targets(settings) when not given (BadConfig on a mistake).
        ``aws``: the client the others are siblings of; ``engines``: engines made elsewhere,
        by target name (a test's, the single-target server's)."""
        self.settings = settings
        self.targets = targets if targets is not None else load_targets(settings)
        self.clock = clock
        self._aws = aws
        self._engines: dict[str, Engine] = dict(engines or {})
        self._supervisors: dict[str, Supervisor] = {}
        self._lock = threading.Lock()
        # One lock check -> (a door shows it) -> start at a time in this process, whatever
        # the target: a door's start and a queue's turn (bot/deploy/supervisor.py).
        self.starting = asyncio.Lock()
        self.door: HintsDoor = "cli"  # whose syntax the engines' hints speak (speak())

    def speak(self, door: HintsDoor) -> None:
        """Every engine's texts suggest commands as ``door`` spells them (bot/hints.py): the
        bot speaks "slack", a terminal "cli" (or "make" under the Makefile)."""
        with self._lock:
            self.door = door
            for engine in self._engines.values():
                engine.door = door

    @property
    def hints(self) -> Hints:
        return Hints.at(self.door, self.settings.slack_commands)

    @classmethod
    def around(cls, engine: Engine) -> Fleet:
        """The fleet of ``engine``'s settings, with ``engine`` as its target's engine."""
        targets = load_targets(engine.settings)
        mine = next(
            (
                t
                for t in targets
                if (t.cluster, t.service) == (engine.aws.cluster, engine.aws.service)
            ),
            targets.default,
        )
        return cls(
            engine.settings,
            targets,
            clock=engine.clock,
            aws=engine.aws,
            engines={mine.name: engine},
        )

    # -- targets and engines ----------------------------------------------------------------
    def target(self, name: str | None = None) -> Target:
        """The target called ``name`` (None: the default); UnknownTarget names the known."""
        return self.targets.get(name)

    def engine(self, target: Target | str | None = None) -> Engine:
        """``target``'s engine (made now if it was not yet)."""
        t = target if isinstance(target, Target) else self.targets.get(target)
        with self._lock:
            engine = self._engines.get(t.name)
            if engine is None:
                settings = t.settings(self.settings)
                if self._aws is None:  # the bot's own: the table's account and region
                    self._aws = AwsClient(self.settings, clock=self.clock)
                aws = self._aws.sibling(settings, t)
                engine = Engine(settings, clock=self.clock, aws=aws, target=t)
                engine.door = self.door
                self._engines[t.name] = engine
            return engine

    def retarget(self, targets: Targets) -> None:
        """Every target's rules from ``targets`` (a configuration read again, user groups
        read again), for every door and engine from now on; BadConfig, changing nothing, when
        ``targets`` would move a service, add or remove a target (``restart_needed``)."""
        problems = restart_needed(self.targets, targets)
        if problems:
            raise BadConfig(problems)
        with self._lock:
            self.targets = targets
            for name, engine in self._engines.items():
                engine.retarget(targets.get(name))

    def supervisor(self, target: Target | str | None = None) -> Supervisor:
        """``target``'s supervisor (its loops; made now if it was not yet): a queued deploy
        is re-checked at its turn through this fleet, as any door's."""
        t = target if isinstance(target, Target) else self.targets.get(target)
        engine = self.engine(t)
        with self._lock:
            made = self._supervisors.get(t.name)
            if made is None:

                def replan(item: QueuedItem, via: Via) -> Plan:
                    return self.plan(
                        self.targets.get(t.name),  # its rules as they are at the turn
                        Action(item.kind or "deploy"),
                        Ask.through(item.requester, via),
                        tag=item.tag,
                        source=item.source or None,
                        reason=item.reason,
                    )

                made = Supervisor(engine, replan=replan, starting=self.starting)
                self._supervisors[t.name] = made
            return made

    def engines(self) -> Iterator[tuple[Target, Engine]]:
        """Every target with its engine, in the file's order (all made)."""
        for target in self.targets:
            yield target, self.engine(target)

    def built(self) -> list[Engine]:
        """The engines made so far."""
        with self._lock:
            return list(self._engines.values())

    def health(self, stuck_after: float = STUCK_AFTER_SECONDS) -> FollowerHealth:
        """Every engine's follower as one: alive unless one is stuck or dead."""
        healths = [e.poller.health(stuck_after) for e in self.built()]
        busy = [h for h in healths if h.following]
        passes = [h.seconds_since_pass for h in busy if h.seconds_since_pass is not None]
        return FollowerHealth(
            following=sum(h.following for h in healths),
            alive=all(h.alive for h in busy),
            seconds_since_pass=max(passes) if passes else None,
            stuck_after=stuck_after,
        )

    def close(self) -> None:
        for engine in self.built():
            engine.close()

    # -- the rules ----------------------------------------------------------------------------
    def decide(
        self, target: Target, action: Action, ask: Ask, facts: Facts | None = None
    ) -> Decision:
        """rules.check for this door and person, now."""
        return check(
            target,
            action,
            door=ask.door,
            who=ask.who,
            channel=ask.channel,
            now=self.clock.now(),
            facts=replace(
                facts or Facts(), break_glass=ask.break_glass, on_push=ask.requester.on_push
            ),
            hints=self.hints,
        )

    def screen(
        self, target: Target, action: Action, ask: Ask, source: str | None = None
    ) -> Decision:
        """The rules that need no reading (where, who, windows…), asked before any AWS read:
        the facts that need one are taken as favourable here, and read before the real
        check. A person who may not deploy hears that first, whatever they typed."""
        hopeful = Facts(completed_on_source=True, source=source or target.after)
        return self.decide(target, action, ask, hopeful)

    def prescreen(
        self, target: Target, action: Action, ask: Ask, source: str | None = None
    ) -> None:
        """``screen``, raising a refusal of who or where (the rules asked before the freeze);
        the rest (freeze, promotion, windows, approvals) is the engine's one check, which
        reads what they need, in their order."""
        screened = self.screen(target, action, ask, source)
        if not screened.allowed and screened.rule in _WHO_AND_WHERE:
            raise RuleRefused(screened)

    def may_read(self, target: Target, ask: Ask) -> Decision:
        return self.decide(target, Action.READ, ask)

    def completed_on(self, name: str, digest: str) -> bool:
        """Whether a deployment of ``digest`` completed on target ``name`` (its recent
        history, open records reconciled with ECS first)."""
        if not digest:
            return False
        records = self.engine(name).history(COMPLETED_LOOKBACK)
        return any(r.outcome == Outcome.COMPLETED and r.digest == digest for r in records)

    def promotion(self, source: Target, of: str = "", to: str = "TARGET") -> Promotion:
        """What promoting from ``source`` (to ``to``) would deploy: the image of its last
        deployment. With ``of`` (a Promote button's deployment), that deployment must still
        be the source's last; refused otherwise, naming what came since and what would work."""
        records = self.engine(source).history(5)
        last = records[0] if records else None
        if last is None:
            raise NothingToPromote(
                f"{source.name} has no deployments yet: nothing to promote. Deploy to "
                f"{source.name} first."
            )
        if of and last.id != of:
            state = last.outcome.label if last.outcome else "in progress"
            promote = f"`{self.hints.promote(source.name, to)}`"
            runs = _runs_again(last)
            if last.outcome == Outcome.COMPLETED:
                then = f"Promote {last.tag} instead: {promote}."
            elif runs:
                again = f"`{self.hints.deploy(source.name, runs)}`"
                then = (
                    f"{source.name} runs {runs} again: redeploy {runs} to {source.name} "
                    f"({again}), then promote ({promote})."
                )
            else:
                then = f"Once a deployment completes on {source.name}, promote it ({promote})."
            raise NoLongerRunning(
                f"Not promoted: deployment {of} is no longer {source.name}'s last; since then "
                f"{last.kind} {last.id} of {last.tag} ({state}). Nothing was changed. {then}"
            )
        return Promotion(source, last)

    # -- planning through the rules -----------------------------------------------------------
    def plan(
        self,
        target: Target,
        action: Action,
        ask: Ask,
        *,
        tag: str = "",
        source: str | None = None,
        of: str = "",
        reason: str = "",
        images: list[dict[str, Any]] | None = None,
    ) -> Plan:
        """Ask the rules, with the facts they need, then plan on ``target``'s engine.

        ``tag``: what to deploy (DEPLOY); ``source``: the target to promote from (PROMOTE);
        ``of``: a button's deployment (ROLLBACK: undo it; PROMOTE: promote it); ``images``:
        a listing of the repository made for this question (Engine.ecr_images), for DEPLOY.
        Raises RuleRefused (naming the rule) or the engine's refusals; writes nothing but
        reconciliation."""
        self.prescreen(target, action, ask, source)  # who and where first, before any read
        engine = self.engine(target)
        requester = ask.requester
        # The rules themselves are asked by the engine, once, in its plan (Planner.check), with
        # the facts gathered here: every door goes through that one check.
        if action is Action.DEPLOY:
            if target.after is None:
                plan = engine.plan_deploy(
                    tag, requester, reason, via=ask.with_facts(), images=images
                )
            else:
                # Resolved once: the digest the rules judged is the digest deployed, whatever
                # the tag points to a moment later.
                images = images if images is not None else engine.ecr_images()
                name, digest = engine.resolve(tag, images)
                completed = self.completed_on(target.after, digest)
                facts = Facts(source=target.after, completed_on_source=completed)
                plan = engine.plan_image(
                    "deploy",
                    name,
                    digest,
                    requester,
                    reason,
                    via=ask.with_facts(facts),
                    images=images,
                )
        elif action is Action.PROMOTE:
            origin = self.targets.get(source)
            promotion = self.promotion(origin, of, target.name)
            # Across accounts, before anything else is read or changed: can the target pull
            # the digest (replicated into its repository, or allowed by the source's policy)?
            require_pullable(engine.aws, target, origin, promotion.tag, promotion.digest)
            facts = Facts(
                source=origin.name,
                completed_on_source=promotion.completed,
                source_runs=_runs_again(promotion.record) if promotion.record else None,
            )
            why = f"promoted from {origin.name} ({promotion.record.id if promotion.record else ''})"
            plan = engine.plan_image(
                "promote",
                promotion.tag,
                promotion.digest,
                requester,
                f"{reason}; {why}" if reason else why,
                via=ask.with_facts(facts),
            )
        elif action is Action.REDEPLOY:
            plan = engine.plan_redeploy(requester, reason, via=ask.with_facts())
        elif action is Action.ROLLBACK:
            plan = engine.plan_rollback(requester, reason, of, via=ask.with_facts())
        else:
            raise ValueError(f"{action.value} is not planned here")
        return plan

    # -- reading every target -----------------------------------------------------------------
    def stats(
        self, since: datetime, until: datetime, targets: list[Target] | None = None
    ) -> list[FourKeys]:
        """DORA's four keys of each target (every one by default) over [since, until), in the
        targets' order: each engine's ``Engine.stats`` (bot/deploy/stats.py)."""
        return [self.engine(t).stats(since, until) for t in (targets or list(self.targets))]

    def statuses(self, targets: list[Target] | None = None, history: int = 0) -> list[TargetStatus]:
        """The status of ``targets`` (default: all): their services described in one
        DescribeServices per cluster per ten services, the rest read a few targets at once."""
        chosen = list(targets if targets is not None else self.targets)
        engines = [self.engine(t) for t in chosen]
        if not engines:
            return []
        # One batch per account and region (each AwsClient's ``descriptions``): a call never
        # mixes them, and each goes with the credentials of its account.
        batches: dict[int, tuple[ServiceDescriptions, list[tuple[str, str]]]] = {}
        for e in engines:
            batch = batches.setdefault(id(e.aws.descriptions), (e.aws.descriptions, []))
            batch[1].append((e.aws.cluster, e.aws.service))
        limit = max(history, 20)

        def recorded(engine: Engine) -> list[DeploymentRecord] | DeployError:
            try:
                return engine.recorded(limit)
            except DeployError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(STATUS_THREADS, len(engines))) as pool:
            # The histories before the services: a record is only judged against an ECS
            # read taken after it (Planner._prepare).
            histories = list(pool.map(recorded, engines))
            for descriptions, keys in batches.values():
                try:
                    with aws_errors("reading the services"):
                        descriptions.many(keys)
                except DeployError as exc:  # each target then says what its own read says
                    log.warning("could not read the services in one batch: %s", exc)

            def one(i: int) -> TargetStatus:
                target, engine, records = chosen[i], engines[i], histories[i]
                if isinstance(records, DeployError):
                    return TargetStatus(target, None, records.message)
                try:
                    # The batch above has just read it (after the records): that will do.
                    return TargetStatus(target, engine.status(history, 5.0, records))
                except DeployError as exc:
                    return TargetStatus(target, None, exc.message)

            return list(pool.map(one, range(len(engines))))
