"""The rules, in one place: may this person do this to this target, through this door, now?

Every door (a slash command, a button, a CI notice's button, the CLI, the queue when a
queued deploy's turn comes) calls :func:`check` before it acts, with the facts it read
from the ledger and ECR. ``check`` is pure: no AWS, no Slack, no clock of its own. It
answers a :class:`Decision`: allowed or refused, a message for a person that names the
rule, and the rules it bypassed (a rollback during a freeze, ``--break-glass`` outside
the windows), which the door records and announces.

The rules, in the order they are asked (the first refusal answers):

1. ``channels``: Slack doors act only in the target's channels (none listed: any).
2. ``deployers`` / ``approvers``: who may act (``S…``: a Slack user group, its members as
   the bot last read them: ``Target.deployer_members``; CI's notice on a target with
   ``auto_deploy`` deploys as that setting says). Deploy, redeploy, promote and roll back:
   the deployers, who also may break a stale lock. Abort, freeze, unfreeze: deployers and
   approvers. Approve: approvers,
   never the requester. Continue (a deployment ECS paused at a hook): with ``approvals``
   an approval, so an approver other than the requester; without, a deployer or approver.
   Read: anyone. The CLI's gate is its AWS credentials, so it skips
   who and where, and cannot approve (approvals are given in Slack).
3. ``approval_expiry_minutes`` and the request's premise, when approving.
4. ``freeze``: a frozen target refuses deploy, redeploy, promote and approve. Rollback
   and abort go ahead and say they bypassed it.
5. ``after``: a target with ``after`` takes only images that completed there (promotion).
6. ``windows``: outside them deploy, redeploy, promote and approve are refused with the
   next opening; rollback and abort go ahead and say so; ``--break-glass`` overrides.
7. ``approvals``: deploy, redeploy and promote need that many approvals from approvers
   other than the requester; ``--break-glass`` overrides, on the record. Continue at the
   terminal of a target with approvals needs ``--break-glass`` (approvals are Slack's).
8. The queue: while deploys wait in the target's queue, a deploy, redeploy or promote
   through any other door is refused (it would overtake them between a release of the lock
   and the queue's turn); the queue's own door takes them in order. Rollback and abort are
   not changes it holds back; ``--break-glass`` goes ahead of it, on the record.

When the lock is taken (``Engine.start``) the windows and the queue are judged again by
that moment's clock and count (:func:`at_start`), the freeze in the lock's own transaction
(:func:`frozen_meanwhile`), and an approved change's approval again (:func:`lapsed_approval`).

``--break-glass "reason"`` is the terminal's: any other door passing it is refused.
A new rule is a field of :class:`bot.target.Target` and a step here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from bot.errors import DeployRefused
from bot.hints import Hints
from bot.mrkdwn import escape as escape_mrkdwn
from bot.target import Target
from bot.windows import describe_opening, is_open, next_opening


class Action(StrEnum):
    DEPLOY = "deploy"
    REDEPLOY = "redeploy"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    ABORT = "abort"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    APPROVE = "approve"
    UNLOCK = "unlock"  # break a stale lock (Slack's checks ECS first): deployers
    # Continue a deployment ECS paused at a lifecycle hook (ContinueServiceDeployment): an
    # approval of what the pause showed. Rolling it back from the pause is an ABORT.
    CONTINUE = "continue"
    READ = "read"


class Door(StrEnum):
    SLASH = "slash"
    BUTTON = "button"
    CI_BUTTON = "ci-button"
    # CI's notice itself, for a target with ``auto_deploy``: deploys on push (bot/slack/auto.py).
    CI_AUTO = "ci-auto"
    CLI = "cli"
    QUEUE = "queue"


class Rule(StrEnum):
    """What refused or was bypassed; the deploybot.toml key that sets it, where there is one."""

    CHANNELS = "channels"
    DEPLOYERS = "deployers"
    APPROVERS = "approvers"
    EXPIRY = "approval_expiry_minutes"
    PREMISE = "premise"
    FREEZE = "freeze"
    AFTER = "after"
    PROMOTION = "promotion"
    WINDOWS = "windows"
    APPROVALS = "approvals"
    QUEUE = "queue"
    BREAK_GLASS = "break-glass"
    WORKSPACE = "workspace"  # SLACK_TEAM_ID: changes come from the bot's own workspace
    AUTO_DEPLOY = "auto_deploy"


# Actions that put an image on the target (or would, once approved): every guard applies.
CHANGES = frozenset({Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE})
# Actions that stop or undo harm: they pass freeze and windows, and say so.
REMEDIES = frozenset({Action.ROLLBACK, Action.ABORT})
# Actions either a deployer or an approver may take.
GUARDIANS = frozenset({Action.ABORT, Action.FREEZE, Action.UNFREEZE})
FAILED_OUTCOMES = frozenset({"FAILED", "ROLLED_BACK"})


@dataclass(frozen=True)
class Freeze:
    """Who froze a target, when, why. ``via``: ``slack`` (``by`` is a Slack user id),
    ``cli`` (a terminal's user) or ``bot`` (freeze_after_failure; ``deployment`` says which)."""

    by: str
    since: datetime
    reason: str
    via: str = "slack"
    deployment: str | None = None


@dataclass(frozen=True)
class Facts:
    """What the door read before asking; every field is optional, the rules that need one
    say so when it is missing (they refuse rather than guess)."""

    image: str | None = None  # what the action would deploy, as people say it: "v4.5.0"
    source: str | None = None  # promote: the target the image comes from
    # The image completed on the target it must come from (deploy: the target's `after`;
    # promote: `source`). None: not looked up.
    completed_on_source: bool | None = None
    freeze: Freeze | None = None
    approved_by: tuple[str, ...] = ()  # Slack user ids who approved this request so far
    # approve only: the request being approved.
    requested: Action | None = None
    requested_by: str | None = None
    requested_at: datetime | None = None
    premise_changed: str | None = None  # what changed since the request, for a person
    # promote (or deploy past `after`): what the source runs now, when its last deployment did
    # not complete there (a breaker rolled it back to this): redeploying it there completes it.
    source_runs: str | None = None
    break_glass: str | None = None  # the reason given with --break-glass
    queued: int = 0  # deploys waiting in the target's queue (read for changes, not at its door)
    # CI's notice asks (auto_deploy): at the queue's door, a deploy on push that joined the
    # queue itself when the target was busy is judged as at the notice's door.
    on_push: bool = False


@dataclass(frozen=True)
class Bypass:
    """A rule that would have refused and did not, and why: for the record and the channel."""

    rule: Rule
    message: str
    mrkdwn: str


@dataclass(frozen=True)
class Decision:
    """The answer. ``message`` is for a terminal and logs, ``mrkdwn`` the same for Slack
    (user text escaped, people mentioned). ``needs_approval``: refused only for want of
    approvals, so a Slack door may post an approval request instead."""

    allowed: bool
    rule: Rule | None = None
    message: str = ""
    mrkdwn: str = ""
    bypassed: tuple[Bypass, ...] = ()
    needs_approval: bool = False

    def raise_if_refused(self) -> None:
        if not self.allowed:
            raise RuleRefused(self)


class RuleRefused(DeployRefused):
    """A rule refused (exit 2); ``decision`` holds the rule and the Slack rendering."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision
        self.rule = decision.rule


# --- saying things twice: plain for the terminal, mrkdwn for Slack --------------------------


@dataclass(frozen=True)
class _Say:
    slack: bool
    now: datetime
    hints: Hints = field(default_factory=Hints)  # how the door spells the commands it suggests

    def person(self, who: str, via: str = "slack") -> str:
        if self.slack and via == "slack":
            return f"<!subteam^{who}>" if who.startswith("S") else f"<@{who}>"
        return self.text(who)

    def people(self, ids: Iterable[str]) -> str:
        names = [self.person(i) for i in ids]
        if len(names) <= 1:
            return "".join(names) or "nobody"
        return ", ".join(names[:-1]) + " or " + names[-1]

    def channels(self, ids: Iterable[str]) -> str:
        return ", ".join(f"<#{c}>" if self.slack else c for c in sorted(ids))

    def text(self, value: str) -> str:
        return escape_mrkdwn(value) if self.slack else value

    def command(self, value: str) -> str:
        return f"`{value}`" if self.slack else value

    def when(self, at: datetime) -> str:
        """14:02 UTC (or Mar 28 14:02 UTC when not within the last half day); Slack renders
        its own ``<!date>`` in the reader's time zone, the fallback text in UTC
        (api.slack.com/reference/surfaces/formatting#date-formatting)."""
        moment = at.astimezone(UTC)
        recent = abs(self.now.astimezone(UTC) - moment) < timedelta(hours=12)
        plain = f"{moment:%H:%M} UTC" if recent else f"{moment:%b} {moment.day} {moment:%H:%M} UTC"
        if not self.slack:
            return plain
        tokens = "{time}" if recent else "{date_short_pretty} {time}"
        return f"<!date^{int(moment.timestamp())}^{tokens}|{plain}>"


Words = Callable[[_Say], str]


@dataclass
class _Asking:
    """One call of check(): the request, and the bypasses gathered so far."""

    target: Target
    action: Action
    door: Door
    who: str
    channel: str | None
    now: datetime
    facts: Facts
    hints: Hints
    bypassed: list[Bypass] = field(default_factory=list)

    @property
    def slack(self) -> bool:
        return self.door is not Door.CLI

    def render(self, words: Words) -> tuple[str, str]:
        return words(_Say(False, self.now, self.hints)), words(_Say(True, self.now, self.hints))

    def refuse(self, rule: Rule, words: Words, *, needs_approval: bool = False) -> Decision:
        message, mrkdwn = self.render(words)
        return Decision(False, rule, message, mrkdwn, tuple(self.bypassed), needs_approval)

    def bypass(self, rule: Rule, words: Words) -> None:
        message, mrkdwn = self.render(words)
        self.bypassed.append(Bypass(rule, message, mrkdwn))

    def allow(self) -> Decision:
        return Decision(True, None, "", "", tuple(self.bypassed))

    @property
    def glass(self) -> str | None:
        """The break-glass reason, once check() has vetted it."""
        return self.facts.break_glass if self.action in CHANGES | {Action.CONTINUE} else None


# --- the rules ------------------------------------------------------------------------------


def check(
    target: Target,
    action: Action | str,
    *,
    door: Door | str,
    who: str,
    channel: str | None,
    now: datetime,
    facts: Facts | None = None,
    hints: Hints | None = None,
) -> Decision:
    """Whether ``who`` may take ``action`` on ``target`` through ``door`` at ``now``.

    ``who`` is a Slack user id at Slack doors (the requester's, at the queue), the
    terminal's user at the CLI; ``channel`` the Slack channel (None at the CLI); ``hints``:
    how the commands a refusal suggests are spelled (default: the door's, with the default
    slash-command names).
    """
    door = Door(door)
    if hints is None:
        hints = Hints.cli() if door is Door.CLI else Hints.slack()
    asking = _Asking(target, Action(action), door, who, channel, now, facts or Facts(), hints)
    for step in _STEPS:
        refused = step(asking)
        if refused is not None:
            return refused
    return asking.allow()


def _break_glass(a: _Asking) -> Decision | None:
    reason = a.facts.break_glass
    if reason is None:
        return None
    if a.door is not Door.CLI:
        return a.refuse(
            Rule.BREAK_GLASS,
            lambda s: (
                "--break-glass is the terminal's: "
                + s.command(f'deploybot --target {a.target.name} deploy TAG --break-glass "why"')
            ),
        )
    if not reason.strip():
        return a.refuse(
            Rule.BREAK_GLASS,
            lambda s: "--break-glass needs a reason: what is broken, and why it cannot wait",
        )
    return None


def _channels(a: _Asking) -> Decision | None:
    if not a.slack or a.target.serves_channel(a.channel or ""):
        return None
    return a.refuse(
        Rule.CHANNELS,
        lambda s: (
            f"{a.target.name} is not handled in this channel; use {s.channels(a.target.channels)}"
        ),
    )


def _setting(target: Target, key: str, variable: str) -> str:
    """Where a person changes a list: the file's key, or the variable without a file."""
    if target.source:
        return f"targets.{target.name}.{key} in {target.source}"
    return variable


def _who(a: _Asking) -> Decision | None:
    target, action, who = a.target, a.action, a.who
    if a.door is Door.CI_AUTO or (a.door is Door.QUEUE and a.facts.on_push):
        # The notice's own door (or its turn in the queue, joined when the target was busy):
        # who is the target's ``auto_deploy``, set by whoever may change deploybot.toml; it
        # deploys, nothing else, and only while ``auto_deploy`` is still set.
        if action is Action.DEPLOY and target.auto_deploy:
            return None
        return a.refuse(
            Rule.AUTO_DEPLOY,
            lambda s: f"{target.name} does not deploy on push (auto_deploy is not set)",
        )
    if action is Action.APPROVE:
        return _approver(a)
    if action is Action.CONTINUE:
        return _continuer(a)
    if not a.slack or action is Action.READ:
        return None
    if target.may_deploy(who) or (action in GUARDIANS and target.may_approve(who)):
        return None
    verb = {
        Action.DEPLOY: f"deploy to {target.name}",
        Action.REDEPLOY: f"redeploy {target.name}",
        Action.PROMOTE: f"promote to {target.name}",
        Action.ROLLBACK: f"roll back {target.name}",
        Action.ABORT: f"abort {target.name}'s rollout",
        Action.FREEZE: f"freeze {target.name}",
        Action.UNFREEZE: f"unfreeze {target.name}",
        Action.UNLOCK: f"break {target.name}'s deploy lock",
    }[action]
    where = _setting(target, "deployers", "DEPLOY_ALLOWED_USERS")
    groups = sorted(g for g in target.deployers if g.startswith("S"))
    return a.refuse(
        Rule.DEPLOYERS,
        lambda s: (
            f"you may not {verb}; ask an admin to add your Slack user id "
            f"({s.command(who)}) to {where}" + (f", or you to {s.people(groups)}" if groups else "")
        ),
    )


def _approver(a: _Asking) -> Decision | None:
    target, facts, who = a.target, a.facts, a.who
    if not a.slack:
        return a.refuse(
            Rule.APPROVERS,
            lambda s: "approvals are given in Slack, with the request's Approve button",
        )
    if not target.may_approve(who):
        return a.refuse(
            Rule.APPROVERS,
            lambda s: f"only {s.people(target.approvers)} may approve changes to {target.name}",
        )
    others = [p for p in target.approvers if p != facts.requested_by]
    if who == facts.requested_by:
        return a.refuse(
            Rule.APPROVERS,
            lambda s: f"you asked for this; someone else must approve it ({s.people(others)})",
        )
    if who in facts.approved_by:
        missing = missing_approvals(target, facts.requested_by or "", facts.approved_by)
        rest = [p for p in others if p not in facts.approved_by]
        return a.refuse(
            Rule.APPROVERS,
            lambda s: (
                f"you approved this already; it needs {_approvals(missing, more=True)} "
                f"from {s.people(rest)}"
            ),
        )
    return None


def _continuer(a: _Asking) -> Decision | None:
    """Continue is an approval of what the pause showed: on a target with ``approvals``,
    an approver other than the requester (``facts.requested_by``), in Slack (the terminal
    needs --break-glass: the approvals step); without approvals, any deployer or approver."""
    target, who = a.target, a.who
    if not a.slack:
        return None
    if not target.approvals:
        if target.may_deploy(who) or target.may_approve(who):
            return None
        where = _setting(target, "deployers", "DEPLOY_ALLOWED_USERS")
        return a.refuse(
            Rule.DEPLOYERS,
            lambda s: (
                f"you may not continue {target.name}'s deployment; ask an admin to add your "
                f"Slack user id ({s.command(who)}) to {where}"
            ),
        )
    others = [p for p in target.approvers if p != a.facts.requested_by]
    if who == a.facts.requested_by:
        return a.refuse(
            Rule.APPROVERS,
            lambda s: (
                f"this is your deployment, and {target.name} needs "
                f"{_approvals(target.approvals)}: someone else must continue it "
                f"({s.people(others)})"
            ),
        )
    if not target.may_approve(who):
        return a.refuse(
            Rule.APPROVERS,
            lambda s: (
                f"continuing is an approval: only {s.people(others)} may continue "
                f"{target.name}'s deployment"
            ),
        )
    return None


def _request(a: _Asking) -> Decision | None:
    """Approving: the request must be alive and its premise unchanged."""
    if a.action is not Action.APPROVE:
        return None
    target, facts = a.target, a.facts
    ask = _ask_command(a.hints, target, facts.requested or Action.DEPLOY, facts)
    if facts.requested_at is None:
        return a.refuse(
            Rule.EXPIRY,
            lambda s: "this request's time is unknown; ask again with " + s.command(ask),
        )
    expires = facts.requested_at + target.approval_expiry
    if a.now >= expires:
        return a.refuse(
            Rule.EXPIRY,
            lambda s: (
                f"this request expired at {s.when(expires)} ({target.name}'s approval "
                f"requests last {target.approval_expiry_minutes} minutes); ask again with "
                + s.command(ask)
            ),
        )
    premise = facts.premise_changed
    if premise:
        return a.refuse(
            Rule.PREMISE,
            lambda s: (
                f"this request no longer holds: {s.text(premise)}; ask again with " + s.command(ask)
            ),
        )
    return None


def _describe_freeze(s: _Say, target: Target, freeze: Freeze, already: str = "") -> str:
    return (
        f"{target.name} is {already}frozen by {s.person(freeze.by, freeze.via)} since "
        f"{s.when(freeze.since)}: {s.text(freeze.reason)}"
    )


def describe_freeze(target: Target, freeze: Freeze, *, now: datetime, slack: bool) -> str:
    """ "production is frozen by @ana since 14:02: incident 1234", as a refusal words it:
    mrkdwn for Slack (``slack``), plain text for a terminal."""
    return _describe_freeze(_Say(slack, now), target, freeze)


def _freeze(a: _Asking) -> Decision | None:
    target, action, freeze = a.target, a.action, a.facts.freeze
    if action is Action.UNFREEZE:
        if freeze is None:
            return a.refuse(Rule.FREEZE, lambda s: f"{target.name} is not frozen")
        return None
    if freeze is None or action in (Action.READ, Action.UNLOCK):
        return None
    if action is Action.FREEZE:
        return a.refuse(
            Rule.FREEZE, lambda s: _describe_freeze(s, target, freeze, already="already ")
        )
    if action in REMEDIES:
        a.bypass(
            Rule.FREEZE,
            lambda s: f"{action.value} goes ahead: {_describe_freeze(s, target, freeze)}",
        )
        return None
    unfreeze = a.hints.unfreeze(target.name)
    return a.refuse(
        Rule.FREEZE,
        lambda s: f"{_describe_freeze(s, target, freeze)}. Once it is safe: {s.command(unfreeze)}",
    )


def _promotion(a: _Asking) -> Decision | None:
    target, facts = a.target, a.facts
    action = facts.requested if a.action is Action.APPROVE else a.action
    image = facts.image or "this image"
    if action is Action.PROMOTE:
        source = facts.source
        if source is None:
            return a.refuse(Rule.PROMOTION, lambda s: "promote from which target? none was given")
        if source == target.name:
            return a.refuse(Rule.PROMOTION, lambda s: f"{target.name} cannot be promoted to itself")
        if target.after is not None and source != target.after:
            return a.refuse(
                Rule.AFTER,
                lambda s: f"{target.name} only takes images from {target.after}, not from {source}",
            )
        if facts.completed_on_source is not True:
            rule = Rule.AFTER if target.after else Rule.PROMOTION
            if facts.completed_on_source is None:
                return a.refuse(
                    rule, lambda s: f"could not tell whether {image} completed on {source}"
                )
            return a.refuse(
                rule,
                lambda s: (
                    f"{target.name} only takes images that completed on {source}; "
                    f"{source}'s last deployment ({s.text(image)}) did not complete"
                    + _then_promote(a, s, source)
                ),
            )
        return None
    if action is not Action.DEPLOY or target.after is None:
        return None
    after = target.after
    if facts.completed_on_source is None:
        return a.refuse(
            Rule.AFTER, lambda s: f"could not tell whether {image} completed on {after}"
        )
    if facts.completed_on_source:
        return None
    deploy = a.hints.deploy(after, facts.image or "TAG")
    promote = a.hints.promote(after, target.name)
    return a.refuse(
        Rule.AFTER,
        lambda s: (
            f"{target.name} only takes images that completed on {after}; "
            f"{s.text(image)} has not. Deploy it to {after} first ({s.command(deploy)}), "
            f"then promote it ({s.command(promote)})"
        ),
    )


def _then_promote(a: _Asking, s: _Say, source: str) -> str:
    """What would work after a source's last deployment failed: redeploy what it runs (a
    breaker put it back) so that it completes there, then promote."""
    runs = a.facts.source_runs
    promote = s.command(a.hints.promote(source, a.target.name))
    if not runs:
        return f". Deploy an image to {source} that completes, then promote it ({promote})"
    again = s.command(a.hints.deploy(source, runs))
    return (
        f". It runs {s.text(runs)} again: redeploy {s.text(runs)} to {source} ({again}), "
        f"then promote ({promote})"
    )


def _windows(a: _Asking) -> Decision | None:
    target, action = a.target, a.action
    if action not in CHANGES | REMEDIES | {Action.APPROVE, Action.CONTINUE} or is_open(
        target.windows, a.now
    ):
        return None
    opens = describe_opening(next_opening(target.windows, a.now))
    outside = f"outside {target.name}'s deploy windows; the next opens {opens}"
    if action in REMEDIES:
        a.bypass(Rule.WINDOWS, lambda s: f"{action.value} goes ahead {outside}")
        return None
    glass = a.glass
    if glass:
        a.bypass(
            Rule.WINDOWS,
            lambda s: (
                f"{outside}: overridden with --break-glass by {s.person(a.who, 'cli')}: "
                f"{s.text(glass)}"
            ),
        )
        return None
    hint = ' (--break-glass "why" overrides it, on the record)' if a.door is Door.CLI else ""
    return a.refuse(Rule.WINDOWS, lambda s: outside + hint)


def missing_approvals(target: Target, requester: str, approved_by: Sequence[str]) -> int:
    """How many approvals a request by ``requester`` still lacks: approvals count only
    from the target's approvers, once each, never the requester's own."""
    valid = {p for p in approved_by if target.may_approve(p) and p != requester}
    return max(0, target.approvals - len(valid))


def _approvals(count: int, more: bool = False) -> str:
    again = "more " if more else ""
    return f"1 {again}approval" if count == 1 else f"{count} {again}approvals"


def _ask_command(hints: Hints, target: Target, action: Action, facts: Facts) -> str:
    """How a request is asked for again: in Slack (approvals are given there)."""
    slack = hints.in_slack_words()
    if action is Action.PROMOTE:
        return slack.promote(facts.source or target.after or "FROM", target.name)
    if action is Action.REDEPLOY:
        return slack.redeploy(target.name)
    return slack.deploy(target.name, facts.image or "TAG")


def _approval(a: _Asking) -> Decision | None:
    target, facts = a.target, a.facts
    if a.action is Action.CONTINUE:
        return _continue_at_terminal(a)
    if a.action not in CHANGES or not target.approvals:
        return None
    missing = missing_approvals(target, a.who, facts.approved_by)
    if not missing:
        return None
    glass = a.glass
    if glass:
        a.bypass(
            Rule.APPROVALS,
            lambda s: (
                f"{target.name}'s approval ({_approvals(target.approvals)}) bypassed with "
                f"--break-glass by {s.person(a.who, 'cli')}: {s.text(glass)}"
            ),
        )
        return None
    others = [p for p in target.approvers if p != a.who]
    more = missing < target.approvals

    def need(s: _Say) -> str:
        return f"{target.name} needs {_approvals(missing, more)} from {s.people(others)}"

    if len(others) < missing:
        # Approvers are people other than the requester: a request nobody can approve is
        # refused here rather than posted to expire.
        where = _setting(target, "approvers", "its approvers")
        return a.refuse(
            Rule.APPROVALS,
            lambda s: (
                f"{target.name} needs {_approvals(missing, more)} from approvers other than "
                f"you, and {s.people(target.approvers)} "
                f"{'is' if len(target.approvers) == 1 else 'are'} all it has: ask an admin "
                f"to add an approver to {where}"
                + ('; in an emergency, --break-glass "why"' if a.door is Door.CLI else "")
            ),
        )
    ask = _ask_command(a.hints, target, a.action, facts)
    if a.door is Door.SLASH:
        return a.refuse(Rule.APPROVALS, need, needs_approval=True)
    if a.door is Door.CLI:
        return a.refuse(
            Rule.APPROVALS,
            lambda s: (
                f"{need(s)}; ask for one in Slack with {ask}, or deploy with "
                '--break-glass "why" (recorded, and announced in the channel)'
            ),
        )
    return a.refuse(
        Rule.APPROVALS,
        lambda s: f"{need(s)}; ask for one with {s.command(ask)}",
        needs_approval=True,
    )


def _continue_at_terminal(a: _Asking) -> Decision | None:
    """Continue from a terminal, on a target whose changes need approvals: the approval is
    given in Slack (the paused message's Continue), or bypassed with --break-glass, on the
    record."""
    target = a.target
    if a.slack or not target.approvals:
        return None
    glass = a.glass
    if glass:
        a.bypass(
            Rule.APPROVALS,
            lambda s: (
                f"{target.name}'s approval of the paused deployment bypassed with "
                f"--break-glass by {s.person(a.who, 'cli')}: {s.text(glass)}"
            ),
        )
        return None
    return a.refuse(
        Rule.APPROVALS,
        lambda s: (
            f"{target.name} needs {_approvals(target.approvals)} to continue a paused "
            f"deployment: an approver presses Continue on its message in Slack, or continue "
            'with --break-glass "why" (recorded, and announced in the channel)'
        ),
    )


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def ordinal(place: int) -> str:
    """1 → "first" … 8 → "eighth", then "number 9"."""
    return _ORDINALS[place - 1] if 0 < place <= len(_ORDINALS) else f"number {place}"


def _queue(a: _Asking) -> Decision | None:
    """Queued deploys go first: nobody takes the lock from under them between its release
    and the queue's next turn (a user who queued expects to go first)."""
    queued, target = a.facts.queued, a.target
    if a.action not in CHANGES or a.door is Door.QUEUE or queued <= 0:
        return None
    waiting = "1 deploy is queued" if queued == 1 else f"{queued} deploys are queued"
    line = f"{waiting} for {target.name}; yours would be {ordinal(queued + 1)}"
    glass = a.glass
    if glass:
        a.bypass(
            Rule.QUEUE,
            lambda s: (
                f"went ahead of the queue ({waiting}) with --break-glass by "
                f"{s.person(a.who, 'cli')}: {s.text(glass)}"
            ),
        )
        return None
    if a.door is Door.CLI:
        return a.refuse(
            Rule.QUEUE,
            lambda s: (
                f"{line}: queued deploys go first. Queue yours in Slack (Deploy when free), "
                'wait until the queue is empty, or deploy with --break-glass "why" (ahead of '
                "the queue, recorded and announced)"
            ),
        )
    return a.refuse(Rule.QUEUE, lambda s: f"{line}: queued deploys go first")


def at_start(
    target: Target,
    action: Action | str,
    *,
    door: Door | str,
    who: str,
    channel: str | None,
    now: datetime,
    facts: Facts | None = None,
    hints: Hints | None = None,
) -> Decision:
    """The rules judged again when the lock is taken (Engine.start), by the clock of that
    moment: the windows, and the queue (``facts.queued``: what the lock's transaction found).
    The freeze is the transaction's own condition (see frozen_meanwhile)."""
    door = Door(door)
    hints = hints or (Hints.cli() if door is Door.CLI else Hints.slack())
    asking = _Asking(target, Action(action), door, who, channel, now, facts or Facts(), hints)
    for step in (_break_glass, _windows, _queue):
        refused = step(asking)
        if refused is not None:
            return refused
    return asking.allow()


def frozen_meanwhile(
    target: Target, freeze: Freeze, *, now: datetime, hints: Hints | None = None
) -> Decision:
    """A freeze written after the plan read none, before the lock was taken: the change is
    refused ("refused: production was frozen by @ana at 14:02:07 while this was being
    prepared")."""
    hints = hints or Hints.slack()
    facts = Facts(freeze=freeze)
    asking = _Asking(target, Action.DEPLOY, Door.SLASH, "", None, now, facts, hints)
    at = freeze.since.astimezone(UTC)
    unfreeze = hints.unfreeze(target.name)
    return asking.refuse(
        Rule.FREEZE,
        lambda s: (
            f"refused: {target.name} was frozen by {s.person(freeze.by, freeze.via)} at "
            f"{at:%H:%M:%S} UTC while this was being prepared ({s.text(freeze.reason)}); "
            f"nothing was changed. Once it is safe: {s.command(unfreeze)}"
        ),
    )


def lapsed_approval(
    target: Target, kind: str, image: str, why: str, hints: Hints | None = None
) -> Decision:
    """An approved change whose approval no longer holds when it is to start (a queued turn,
    any start after an approval): ``why`` says what changed, for a person."""
    hints = hints or Hints.slack()
    now = datetime.now(UTC)
    asking = _Asking(target, Action.APPROVE, Door.QUEUE, "", None, now, Facts(), hints)
    again = hints.deploy(target.name, image) if kind == "deploy" else hints.redeploy(target.name)
    return asking.refuse(
        Rule.PREMISE,
        lambda s: (
            f"the approval of this {kind} of {s.text(image)} to {target.name} no longer "
            f"holds: {s.text(why)}. Nothing was changed; ask again ({s.command(again)})"
        ),
    )


_STEPS: tuple[Callable[[_Asking], Decision | None], ...] = (
    _break_glass,
    _channels,
    _who,
    _request,
    _freeze,
    _promotion,
    _windows,
    _approval,
    _queue,
)


# --- strangers: the workspace a Slack request came from ----------------------------------------


@dataclass(frozen=True)
class Home:
    """The bot's own workspace: SLACK_TEAM_ID (or auth.test's ``team_id``), and on Enterprise
    Grid its org (auth.test's ``enterprise_id``; None: not on Grid, or not known)."""

    team: str
    enterprise: str | None = None


@dataclass(frozen=True)
class Origin:
    """Where a Slack request came from, as its payload and conversations.info say
    (bot/slack/workspace.py reads them).

    ``teams``: every team id the payload names (a command's ``team_id``; an interaction's
    ``team.id`` and ``user.team_id``, which is the org's ``E…`` id on Grid).
    ``enterprises``: every enterprise id it names (``enterprise_id``, ``enterprise.id``,
    ``team.enterprise_id``). ``kind``: ``channel``, ``im`` (a DM) or ``mpim`` (a group DM).
    ``shared``: a Slack Connect channel (conversations.info's ``is_ext_shared``)."""

    channel: str
    teams: tuple[str, ...] = ()
    enterprises: tuple[str, ...] = ()
    kind: str = "channel"
    shared: bool = False


def workspace(origin: Origin, home: Home, listed: frozenset[str]) -> Decision:
    """Whether a change may come from ``origin``: a command or click from another workspace
    or org, or in a Slack Connect channel, is refused; so is one in a DM or group DM, unless
    a target lists that conversation in its ``channels`` (``listed``). Reads are not asked.

    Another organisation's people in a shared channel may run the read-only commands; a
    change is announced in the channel they share, which is why none may start there."""
    here = f"deploybot takes changes only from its own workspace ({home.team})"
    for team in origin.teams:
        # On Grid, user.team_id is the org's id ("will report an enterprise organization ID
        # (which starts with an E) instead of team ID", block_actions payload reference).
        mine = team == home.enterprise if team.startswith("E") else team == home.team
        if not mine:
            return _stranger(f"{here}; this came from another workspace ({team})")
    for enterprise in origin.enterprises:
        if enterprise != home.enterprise:
            return _stranger(f"{here}; this came from another organisation ({enterprise})")
    if origin.shared:
        return _stranger(
            f"{here}, and this channel is shared with another organisation (Slack Connect). "
            "Status and history answer here; change things from a channel of your own"
        )
    if origin.kind in ("im", "mpim") and origin.channel not in listed:
        what = "a direct message" if origin.kind == "im" else "a group DM"
        return _stranger(
            f"deploybot takes changes in a channel, not in {what}; status and history answer "
            "here (a target that lists this conversation in its channels takes changes in it)"
        )
    return Decision(True)


def _stranger(why: str) -> Decision:
    message = f"Nothing was changed: {why}."
    return Decision(False, Rule.WORKSPACE, message, escape_mrkdwn(message))


def freeze_after_failure(
    target: Target, *, outcome: str, image: str, deployment: str, at: datetime
) -> Freeze | None:
    """The freeze a finished deployment leaves, if the target freezes after a failure:
    ``outcome`` is the rollout's (``FAILED``, ``ROLLED_BACK`` freeze; others do not)."""
    if not target.freeze_after_failure or outcome not in FAILED_OUTCOMES:
        return None
    what = "failed and was rolled back" if outcome == "ROLLED_BACK" else "failed"
    return Freeze(
        by="deploybot",
        since=at,
        reason=f"{image} {what} (deployment {deployment})",
        via="bot",
        deployment=deployment,
    )
