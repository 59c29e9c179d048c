"""The rules in one place: every rule, action and door, then the words people read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.errors import DeployRefused
from bot.rules import (
    Action,
    Decision,
    Door,
    Facts,
    Freeze,
    Home,
    Origin,
    Rule,
    RuleRefused,
    check,
    freeze_after_failure,
    missing_approvals,
    workspace,
)
from bot.target import Target
from bot.windows import parse_windows

STAGING = Target(
    name="staging",
    cluster="hello-world-ecr-ecs-fargate-staging",
    service="hello-world-ecr-ecs-fargate-staging",
    repository="hello-world-ecr-ecs-fargate",
    deployers=frozenset({"*"}),
)
PRODUCTION = Target(
    name="production",
    cluster="hello-world-ecr-ecs-fargate",
    service="hello-world-ecr-ecs-fargate",
    repository="hello-world-ecr-ecs-fargate",
    after="staging",
    deployers=frozenset({"U0ANA", "U0BEN"}),
    channels=frozenset({"C0DEPLOYS"}),
    freeze_after_failure=True,
    approvals=1,
    approvers=("U0CARA", "U0DAN"),
    approval_expiry_minutes=30,
    windows=parse_windows(["Mon-Thu 09:00-16:00 Europe/Madrid", "Fri 09:00-12:00 Europe/Madrid"]),
    source="deploybot.toml",
)
INSIDE = datetime(2025, 3, 27, 12, 2, tzinfo=UTC)  # Thu 13:02 in Madrid
OUTSIDE = datetime(2025, 3, 28, 13, 0, tzinfo=UTC)  # Fri 14:00 in Madrid: after Friday's window
ICE = Freeze(by="U0ANA", since=INSIDE - timedelta(minutes=5), reason="incident 1234")

ACTIONS = list(Action)
DOORS = list(Door)
SLACK_DOORS = [d for d in DOORS if d is not Door.CLI]


def request(action: Action) -> dict[str, Any]:
    """A request every rule lets through: who, channel and facts as a clean door fills them."""
    facts = Facts(
        image="v4.4.0",
        source="staging" if action is Action.PROMOTE else None,
        completed_on_source=True,
        freeze=ICE if action is Action.UNFREEZE else None,
        approved_by=("U0CARA",),
    )
    who = "U0ANA"
    if action is Action.CONTINUE:  # ana's deployment, paused: dan (an approver) continues it
        return {
            "who": "U0DAN",
            "channel": "C0DEPLOYS",
            "now": INSIDE,
            "facts": replace(facts, approved_by=(), requested_by="U0ANA"),
        }
    if action is Action.APPROVE:
        who = "U0DAN"
        facts = replace(
            facts,
            approved_by=(),
            requested=Action.DEPLOY,
            requested_by="U0ANA",
            requested_at=INSIDE - timedelta(minutes=10),
        )
    return {"who": who, "channel": "C0DEPLOYS", "now": INSIDE, "facts": facts}


def outcome(decision: Decision) -> str:
    """allow | allow+bypass:RULE[,RULE] | refuse:RULE | ask (refused for want of approval)."""
    if decision.allowed:
        assert decision.message == "" and decision.rule is None
        bypassed = ",".join(b.rule.value for b in decision.bypassed)
        return f"allow+bypass:{bypassed}" if bypassed else "allow"
    assert decision.message and decision.mrkdwn and decision.rule is not None
    if decision.needs_approval:
        assert decision.rule is Rule.APPROVALS
        return "ask"
    return f"refuse:{decision.rule.value}"


# Each scenario changes one thing of the clean request; the function says what every
# (action, door) pair must answer. `base` is the clean answer: everything allowed, except
# that approving is Slack's (the CLI cannot approve).
def base(action: Action, door: Door) -> str:
    return "refuse:approvers" if action is Action.APPROVE and door is Door.CLI else "allow"


def in_another_channel(action: Action, door: Door) -> str:
    return "refuse:channels" if door is not Door.CLI else base(action, door)


def not_a_deployer(action: Action, door: Door) -> str:
    if door is Door.CLI or action is Action.READ:
        return base(action, door)
    return "refuse:approvers" if action is Action.APPROVE else "refuse:deployers"


def an_approver_not_a_deployer(action: Action, door: Door) -> str:
    if door is not Door.CLI and action in (
        Action.DEPLOY,
        Action.REDEPLOY,
        Action.PROMOTE,
        Action.ROLLBACK,
        Action.UNLOCK,  # breaking a lock is a deployer's
    ):
        return "refuse:deployers"
    return base(action, door)


def frozen(action: Action, door: Door) -> str:
    if action is Action.APPROVE and door is Door.CLI:
        return "refuse:approvers"
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE, Action.APPROVE, Action.FREEZE):
        return "refuse:freeze"
    if action in (Action.ROLLBACK, Action.ABORT):
        return "allow+bypass:freeze"
    return base(action, door)


def not_frozen(action: Action, door: Door) -> str:
    return "refuse:freeze" if action is Action.UNFREEZE else base(action, door)


def not_completed_on_staging(action: Action, door: Door) -> str:
    if action in (Action.DEPLOY, Action.PROMOTE) or (
        action is Action.APPROVE and door is not Door.CLI
    ):
        return "refuse:after"
    return base(action, door)


def outside_the_windows(action: Action, door: Door) -> str:
    if action is Action.APPROVE and door is Door.CLI:
        return "refuse:approvers"
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE, Action.APPROVE):
        return "refuse:windows"
    if action in (Action.ROLLBACK, Action.ABORT):
        return "allow+bypass:windows"
    return base(action, door)


def without_approval(action: Action, door: Door) -> str:
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE):
        return "refuse:approvals" if door is Door.CLI else "ask"
    return base(action, door)


def break_glass_outside_without_approval(action: Action, door: Door) -> str:
    if door is not Door.CLI:
        return "refuse:break-glass"
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE):
        return "allow+bypass:windows,approvals"
    return outside_the_windows(action, door)


def frozen_and_outside(action: Action, door: Door) -> str:
    if action in (Action.ROLLBACK, Action.ABORT):
        return "allow+bypass:freeze,windows"
    return frozen(action, door)


def behind_the_queue(action: Action, door: Door) -> str:
    """Deploys wait in the queue: the queue's door takes them in order; no other goes first."""
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE) and door is not Door.QUEUE:
        return "refuse:queue"
    return base(action, door)


def break_glass_ahead_of_the_queue(action: Action, door: Door) -> str:
    if door is not Door.CLI:
        return "refuse:break-glass"
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE):
        return "allow+bypass:queue"
    return base(action, door)


def approval_before_the_queue(action: Action, door: Door) -> str:
    """An unapproved change is asked for first; it joins the line once approved."""
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE) and door is not Door.QUEUE:
        return without_approval(action, door)
    if action in (Action.DEPLOY, Action.REDEPLOY, Action.PROMOTE):
        return "ask"  # the queue's door: a queued deploy needs its approvals too
    return base(action, door)


def approval_only(verdict: str) -> Any:
    def expect(action: Action, door: Door) -> str:
        if action is Action.APPROVE and door is not Door.CLI:
            return verdict
        return base(action, door)

    return expect


def change(**kwargs: Any) -> Any:
    """A scenario's change to the clean request: top-level keys, or facts' fields."""

    def apply(action: Action, asked: dict[str, Any]) -> dict[str, Any]:
        asked = dict(asked)
        facts = {k: v for k, v in kwargs.items() if k in Facts.__dataclass_fields__}
        asked.update({k: v for k, v in kwargs.items() if k not in facts})
        if "now" in kwargs and action is Action.APPROVE and "requested_at" not in kwargs:
            facts["requested_at"] = kwargs["now"] - timedelta(minutes=10)  # asked just now
        asked["facts"] = replace(asked["facts"], **facts)
        return asked

    return apply


def as_approver_cara(action: Action, asked: dict[str, Any]) -> dict[str, Any]:
    return {**asked, "who": "U0CARA"}


def unfrozen(action: Action, asked: dict[str, Any]) -> dict[str, Any]:
    return {**asked, "facts": replace(asked["facts"], freeze=None)}


SCENARIOS: dict[str, tuple[Any, Any]] = {
    "clean": (change(), base),
    "in another channel": (change(channel="C0RANDOM"), in_another_channel),
    "not a deployer": (change(who="U0EVE"), not_a_deployer),
    "an approver, not a deployer": (as_approver_cara, an_approver_not_a_deployer),
    "frozen": (change(freeze=ICE), frozen),
    "not frozen": (unfrozen, not_frozen),
    "image not completed on staging": (change(completed_on_source=False), not_completed_on_staging),
    "outside the windows": (change(now=OUTSIDE), outside_the_windows),
    "without approval": (change(approved_by=()), without_approval),
    "approved by a non-approver": (change(approved_by=("U0BEN",)), without_approval),
    "break-glass, outside, no approval": (
        change(now=OUTSIDE, approved_by=(), break_glass="db down, customers cannot pay"),
        break_glass_outside_without_approval,
    ),
    "frozen and outside the windows": (change(freeze=ICE, now=OUTSIDE), frozen_and_outside),
    "deploys queued": (change(queued=2), behind_the_queue),
    "break-glass, deploys queued": (
        change(queued=1, break_glass="db down, customers cannot pay"),
        break_glass_ahead_of_the_queue,
    ),
    "unapproved, deploys queued": (change(queued=1, approved_by=()), approval_before_the_queue),
    "approving an expired request": (
        change(requested_at=INSIDE - timedelta(minutes=30)),
        approval_only("refuse:approval_expiry_minutes"),
    ),
    "approving after the premise changed": (
        change(premise_changed="v4.3.1 was deployed since"),
        approval_only("refuse:premise"),
    ),
    "approving one's own request": (
        change(requested_by="U0DAN"),
        approval_only("refuse:approvers"),
    ),
    "approving twice": (change(approved_by=("U0DAN",)), approval_only("refuse:approvers")),
}


def continuing(scenario: str, door: Door) -> str:
    """Continue (a paused deployment of ana's; dan, an approver, presses it): an approval of
    what the pause showed. PRODUCTION needs 1 approval, so the terminal needs --break-glass."""
    slack = door is not Door.CLI
    glass = "break-glass" in scenario
    if glass and slack:
        return "refuse:break-glass"
    if scenario == "in another channel" and slack:
        return "refuse:channels"
    if scenario in ("not a deployer", "approving one's own request") and slack:
        return "refuse:approvers"
    if scenario.startswith("frozen"):
        return "refuse:freeze"
    if scenario == "outside the windows":
        return "refuse:windows"
    if glass:
        return (
            "allow+bypass:windows,approvals" if "outside" in scenario else "allow+bypass:approvals"
        )
    return "allow" if slack else "refuse:approvals"


def _with_continue(name: str, expect: Any) -> Any:
    def answer(action: Action, door: Door) -> str:
        return continuing(name, door) if action is Action.CONTINUE else expect(action, door)

    return answer


SCENARIOS = {
    name: (alter, _with_continue(name, expect)) for name, (alter, expect) in SCENARIOS.items()
}
CASES = [
    pytest.param(name, action, door, id=f"{name}-{action.value}-{door.value}")
    for name in SCENARIOS
    for action in ACTIONS
    for door in DOORS
]


def expected(scenario: str, action: Action, door: Door) -> str:
    """The scenario's verdict; CI's notice (the ci-auto door) on production, which has no
    auto_deploy, is refused by that rule after the door's own and where (bot/rules.py)."""
    verdict = SCENARIOS[scenario][1](action, door)
    if door is not Door.CI_AUTO or verdict in ("refuse:channels", "refuse:break-glass"):
        return verdict
    return "refuse:auto_deploy"


@pytest.mark.parametrize(("scenario", "action", "door"), CASES)
def test_every_rule_every_action_every_door(scenario: str, action: Action, door: Door) -> None:
    alter, _ = SCENARIOS[scenario]
    asked = alter(action, request(action))
    if door is Door.CLI:
        asked = {**asked, "who": "ana", "channel": None}
    decision = check(PRODUCTION, action, door=door, **asked)
    assert outcome(decision) == expected(scenario, action, door)


STAGING_ON_PUSH = Target(
    "staging", "c", "s", "r", deployers=frozenset({"U0ANA"}), auto_deploy=True,
    windows=PRODUCTION.windows, channels=frozenset({"C0DEPLOYS"}),
)  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "now", "verdict"),
    [
        (Facts(image="v4.4.0"), INSIDE, "allow"),
        (Facts(image="v4.4.0", freeze=ICE), INSIDE, "refuse:freeze"),
        (Facts(image="v4.4.0"), OUTSIDE, "refuse:windows"),
        (Facts(image="v4.4.0", queued=1), INSIDE, "refuse:queue"),
    ],
)
def test_ci_notice_deploys_a_target_with_auto_deploy_through_its_rules(
    facts: Facts, now: datetime, verdict: str
) -> None:
    """auto_deploy lets CI's notice deploy (nobody's deployer list asked), nothing else, and
    every other rule still holds."""
    decision = check(STAGING_ON_PUSH, Action.DEPLOY, door=Door.CI_AUTO, who="CI",
                     channel="C0DEPLOYS", now=now, facts=facts)  # fmt: skip
    assert outcome(decision) == verdict
    for action in set(Action) - {Action.DEPLOY}:
        other = check(STAGING_ON_PUSH, action, door=Door.CI_AUTO, who="CI",
                      channel="C0DEPLOYS", now=INSIDE, facts=Facts(image="v4.4.0"))  # fmt: skip
        assert outcome(other) == "refuse:auto_deploy", action


@pytest.mark.parametrize(
    ("facts", "now", "verdict"),
    [
        (Facts(image="v4.4.0", on_push=True), INSIDE, "allow"),
        (Facts(image="v4.4.0", on_push=True, freeze=ICE), INSIDE, "refuse:freeze"),
        (Facts(image="v4.4.0", on_push=True), OUTSIDE, "refuse:windows"),
        (Facts(image="v4.4.0"), INSIDE, "refuse:deployers"),  # "CI" as a person: nobody
    ],
)
def test_a_deploy_on_push_queued_is_judged_at_its_turn_as_the_notices(
    facts: Facts, now: datetime, verdict: str
) -> None:
    """CI's image queued itself behind a busy target (bot/slack/auto.py): at the queue's door
    auto_deploy still lets it deploy, every other rule holds; a target that no longer has
    auto_deploy refuses it."""
    decision = check(STAGING_ON_PUSH, Action.DEPLOY, door=Door.QUEUE, who="CI",
                     channel="C0DEPLOYS", now=now, facts=facts)  # fmt: skip
    assert outcome(decision) == verdict
    dropped = replace(STAGING_ON_PUSH, auto_deploy=False)
    refused = check(dropped, Action.DEPLOY, door=Door.QUEUE, who="CI", channel="C0DEPLOYS",
                    now=INSIDE, facts=Facts(image="v4.4.0", on_push=True))  # fmt: skip
    assert outcome(refused) == "refuse:auto_deploy"


def test_the_table_covers_every_rule_action_and_door() -> None:
    seen: set[tuple[str, str, str]] = set()
    for name, action, door in (case.values for case in CASES):
        seen.add((expected(name, action, door), action.value, door.value))
    verdicts = {v for v, _, _ in seen}
    refused_by = {v.removeprefix("refuse:") for v in verdicts if v.startswith("refuse:")}
    # promotion: below; workspace: rules.workspace, before any target (below too)
    assert refused_by == {r.value for r in Rule} - {"promotion", "workspace"}
    assert {"ask", "allow", "allow+bypass:freeze", "allow+bypass:windows"} <= verdicts
    assert "allow+bypass:queue" in verdicts
    assert {a for _, a, _ in seen} == {a.value for a in Action}
    assert {d for _, _, d in seen} == {d.value for d in Door}


def test_a_target_without_rules_lets_its_deployers_do_everything() -> None:
    """The single-target setup of today: the variables' target, no guardrails."""
    plain = Target("production", "c", "s", "r", deployers=frozenset({"U0ANA"}))
    for action in set(Action) - {Action.APPROVE, Action.UNFREEZE}:
        for door in set(SLACK_DOORS) - {Door.CI_AUTO}:  # CI's notice: auto_deploy's, above
            facts = Facts(source="staging", completed_on_source=True)  # promote needs these
            decision = check(
                plain, action, door=door, who="U0ANA", channel="C0ANY", now=OUTSIDE, facts=facts
            )
            assert decision.allowed, (action, door, decision.message)
    nobody = check(plain, Action.DEPLOY, door=Door.SLASH, who="U0EVE", channel="C0", now=OUTSIDE)
    assert nobody.rule is Rule.DEPLOYERS
    assert nobody.message == (
        "you may not deploy to production; ask an admin to add your Slack user id (U0EVE) "
        "to DEPLOY_ALLOWED_USERS"
    )
    assert "(`U0EVE`)" in nobody.mrkdwn


# --- the words ------------------------------------------------------------------------------


def test_promotion_only_names_the_rule_and_the_way() -> None:
    decision = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.SLASH,
        who="U0ANA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=Facts(image="v4.5.0", completed_on_source=False, approved_by=("U0CARA",)),
    )
    assert decision.rule is Rule.AFTER
    assert decision.message == (
        "production only takes images that completed on staging; v4.5.0 has not. "
        "Deploy it to staging first (/deploy v4.5.0 to staging), then promote it "
        "(/deploy promote staging to production)"
    )
    assert decision.mrkdwn.endswith("then promote it (`/deploy promote staging to production`)")


def test_promote_names_what_did_not_complete_and_where_from() -> None:
    def promote(**facts: Any) -> Decision:
        return check(
            PRODUCTION,
            Action.PROMOTE,
            door=Door.CLI,
            who="ana",
            channel=None,
            now=INSIDE,
            facts=Facts(approved_by=("U0CARA",), **facts),
        )

    failed = promote(source="staging", image="v4.5.0", completed_on_source=False)
    assert failed.message == (
        "production only takes images that completed on staging; staging's last deployment "
        "(v4.5.0) did not complete. Deploy an image to staging that completes, then promote "
        "it (deploybot promote staging production)"
    )
    # A breaker put v4.4.0 back on staging: what would work is said, in the door's words.
    undone = promote(
        source="staging", image="v4.5.0", completed_on_source=False, source_runs="v4.4.0"
    )
    assert undone.message.endswith(
        "did not complete. It runs v4.4.0 again: redeploy v4.4.0 to staging "
        "(deploybot --target staging deploy v4.4.0), then promote "
        "(deploybot promote staging production)"
    )
    qa = promote(source="qa", image="v4.5.0", completed_on_source=True)
    assert (qa.rule, qa.message) == (
        Rule.AFTER,
        "production only takes images from staging, not from qa",
    )
    unknown = promote(source="staging", image="v4.5.0")
    assert unknown.message == "could not tell whether v4.5.0 completed on staging"
    assert promote(image="v4.5.0").rule is Rule.PROMOTION
    to_itself = check(
        STAGING,
        Action.PROMOTE,
        door=Door.CLI,
        who="ana",
        channel=None,
        now=INSIDE,
        facts=Facts(source="staging", completed_on_source=True),
    )
    assert to_itself.message == "staging cannot be promoted to itself"
    # A target without `after` takes a promotion from anywhere whose deployment completed.
    from_production = check(
        STAGING,
        Action.PROMOTE,
        door=Door.CLI,
        who="ana",
        channel=None,
        now=INSIDE,
        facts=Facts(source="production", completed_on_source=True),
    )
    assert from_production.allowed


def test_freeze_says_who_since_when_and_why() -> None:
    frozen = Facts(image="v4.4.0", completed_on_source=True, freeze=ICE, approved_by=("U0CARA",))
    slack = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.BUTTON,
        who="U0BEN",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=frozen,
    )
    assert slack.message == (
        "production is frozen by U0ANA since 11:57 UTC: incident 1234. "
        "Once it is safe: /deploy unfreeze production"
    )
    since = int(ICE.since.timestamp())
    assert slack.mrkdwn == (
        f"production is frozen by <@U0ANA> since <!date^{since}^{{time}}|11:57 UTC>: "
        "incident 1234. Once it is safe: `/deploy unfreeze production`"
    )
    from_terminal = replace(frozen, freeze=replace(ICE, by="ana", via="cli"))
    cli = check(
        PRODUCTION,
        Action.REDEPLOY,
        door=Door.CLI,
        who="ben",
        channel=None,
        now=INSIDE + timedelta(days=2),
        facts=from_terminal,
    )
    assert cli.message.startswith("production is frozen by ana since Mar 27 11:57 UTC: incident")
    rollback = check(
        PRODUCTION,
        Action.ROLLBACK,
        door=Door.SLASH,
        who="U0BEN",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=frozen,
    )
    assert rollback.allowed
    (bypass,) = rollback.bypassed
    assert bypass.rule is Rule.FREEZE
    assert (
        bypass.message
        == "rollback goes ahead: production is frozen by U0ANA since 11:57 UTC: incident 1234"
    )
    again = check(
        PRODUCTION,
        Action.FREEZE,
        door=Door.SLASH,
        who="U0CARA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=frozen,
    )
    assert again.message.startswith("production is already frozen by U0ANA since 11:57 UTC")
    thawed = check(
        PRODUCTION,
        Action.UNFREEZE,
        door=Door.SLASH,
        who="U0CARA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=Facts(),
    )
    assert thawed.message == "production is not frozen"


def test_user_text_is_escaped_for_slack_only() -> None:
    nasty = replace(ICE, reason="<!channel> db & cache > 90% <https://evil|click>")
    decision = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.SLASH,
        who="U0ANA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=Facts(freeze=nasty),
    )
    assert "<!channel> db & cache > 90% <https://evil|click>" in decision.message
    assert "&lt;!channel&gt; db &amp; cache &gt; 90% &lt;https://evil|click&gt;" in decision.mrkdwn
    assert "<!channel>" not in decision.mrkdwn
    premise = check(
        PRODUCTION,
        Action.APPROVE,
        door=Door.BUTTON,
        who="U0DAN",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=replace(request(Action.APPROVE)["facts"], premise_changed="<@U0ALL> deployed"),
    )
    assert "&lt;@U0ALL&gt; deployed" in premise.mrkdwn
    glass = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.CLI,
        who="<b>",
        channel=None,
        now=OUTSIDE,
        facts=Facts(completed_on_source=True, break_glass="a < b"),
    )
    assert all("&lt;b&gt;" in b.mrkdwn and "a &lt; b" in b.mrkdwn for b in glass.bypassed)


def test_windows_name_the_next_opening_in_the_zones_time() -> None:
    facts = Facts(image="v4.4.0", completed_on_source=True, approved_by=("U0CARA",))
    slash = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.SLASH,
        who="U0ANA",
        channel="C0DEPLOYS",
        now=OUTSIDE,
        facts=facts,
    )
    # Friday 28 March 2025, after noon: Monday 09:00 is in summer time already.
    assert slash.message == (
        "outside production's deploy windows; the next opens Mon 09:00 Europe/Madrid"
    )
    cli = check(
        PRODUCTION, Action.DEPLOY, door=Door.CLI, who="ana", channel=None, now=OUTSIDE, facts=facts
    )
    assert cli.message.endswith('(--break-glass "why" overrides it, on the record)')
    abort = check(PRODUCTION, Action.ABORT, door=Door.CLI, who="ana", channel=None, now=OUTSIDE)
    assert [b.message for b in abort.bypassed] == [
        "abort goes ahead outside production's deploy windows; the next opens Mon 09:00 "
        "Europe/Madrid"
    ]


def test_approval_asks_the_right_people_in_the_right_words() -> None:
    facts = Facts(image="v4.4.0", completed_on_source=True)
    slash = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.SLASH,
        who="U0ANA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=facts,
    )
    assert slash.needs_approval and slash.rule is Rule.APPROVALS
    assert slash.mrkdwn == "production needs 1 approval from <@U0CARA> or <@U0DAN>"
    button = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.CI_BUTTON,
        who="U0ANA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=facts,
    )
    assert button.mrkdwn == (
        "production needs 1 approval from <@U0CARA> or <@U0DAN>; "
        "ask for one with `/deploy v4.4.0 to production`"
    )
    cli = check(
        PRODUCTION, Action.DEPLOY, door=Door.CLI, who="ana", channel=None, now=INSIDE, facts=facts
    )
    assert not cli.needs_approval
    assert cli.message == (
        "production needs 1 approval from U0CARA or U0DAN; ask for one in Slack with "
        '/deploy v4.4.0 to production, or deploy with --break-glass "why" '
        "(recorded, and announced in the channel)"
    )
    # An approver who deploys needs someone else's approval.
    cara = check(
        PRODUCTION,
        Action.PROMOTE,
        door=Door.BUTTON,
        who="U0CARA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=replace(facts, source="staging"),
    )
    assert cara.message == (
        "you may not promote to production; ask an admin to add your Slack user id (U0CARA) "
        "to targets.production.deployers in deploybot.toml"
    )
    both = replace(
        PRODUCTION,
        deployers=frozenset({"U0CARA"}),
        approvals=2,
        approvers=("U0CARA", "U0DAN", "U0EMA"),
    )
    half = check(
        both,
        Action.REDEPLOY,
        door=Door.QUEUE,
        who="U0CARA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=Facts(approved_by=("U0CARA", "U0DAN")),
    )
    assert half.message == (
        "production needs 1 more approval from U0DAN or U0EMA; "
        "ask for one with /redeploy production"
    )


def test_a_request_only_the_requester_could_approve_is_not_made() -> None:
    """Approvers are others than the requester: where the requester is all the approvers
    there are, no request is posted (it could only expire); the refusal says what to change."""
    alone = replace(PRODUCTION, deployers=frozenset({"U0CARA"}), approvers=("U0CARA",))
    facts = Facts(image="v4.4.0", completed_on_source=True)
    slash = check(
        alone, Action.DEPLOY, door=Door.SLASH, who="U0CARA", channel="C0DEPLOYS", now=INSIDE,
        facts=facts,
    )  # fmt: skip
    assert not slash.needs_approval and slash.rule is Rule.APPROVALS
    assert slash.mrkdwn == (
        "production needs 1 approval from approvers other than you, and <@U0CARA> is all it "
        "has: ask an admin to add an approver to targets.production.approvers in deploybot.toml"
    )
    cli = check(
        alone, Action.DEPLOY, door=Door.CLI, who="U0CARA", channel=None, now=INSIDE, facts=facts
    )
    assert cli.message.endswith('in deploybot.toml; in an emergency, --break-glass "why"')
    # Someone else asking still gets a request Cara can approve.
    other = check(
        replace(alone, deployers=frozenset({"U0ANA"})), Action.DEPLOY, door=Door.SLASH,
        who="U0ANA", channel="C0DEPLOYS", now=INSIDE, facts=facts,
    )  # fmt: skip
    assert other.needs_approval


def test_approving_refusals_say_what_to_do() -> None:
    asked = request(Action.APPROVE)

    def approve(**changes: Any) -> Decision:
        who = changes.pop("who", asked["who"])
        now = changes.pop("now", INSIDE)
        facts = replace(asked["facts"], **changes)
        return check(
            PRODUCTION,
            Action.APPROVE,
            door=Door.BUTTON,
            who=who,
            channel="C0DEPLOYS",
            now=now,
            facts=facts,
        )

    assert approve().allowed
    assert approve(who="U0BEN").message == "only U0CARA or U0DAN may approve changes to production"
    assert approve(requested_by="U0DAN").message == (
        "you asked for this; someone else must approve it (U0CARA)"
    )
    expired = approve(now=INSIDE + timedelta(minutes=20))
    assert expired.message == (
        "this request expired at 12:22 UTC (production's approval requests last 30 minutes); "
        "ask again with /deploy v4.4.0 to production"
    )
    promote = approve(requested=Action.PROMOTE, source="staging", premise_changed="staging moved")
    assert promote.message == (
        "this request no longer holds: staging moved; ask again with "
        "/deploy promote staging to production"
    )
    twice = replace(PRODUCTION, approvals=2, approvers=("U0CARA", "U0DAN", "U0EMA"))
    again = check(
        twice,
        Action.APPROVE,
        door=Door.BUTTON,
        who="U0DAN",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=replace(asked["facts"], approved_by=("U0DAN",)),
    )
    assert (
        again.message == "you approved this already; it needs 1 more approval from U0CARA or U0EMA"
    )


def test_break_glass_is_the_terminals_and_needs_a_reason() -> None:
    facts = Facts(image="v4.4.0", completed_on_source=True, break_glass="payments down")
    slack = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.SLASH,
        who="U0ANA",
        channel="C0DEPLOYS",
        now=INSIDE,
        facts=facts,
    )
    assert slack.message == (
        "--break-glass is the terminal's: "
        'deploybot --target production deploy TAG --break-glass "why"'
    )
    blank = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.CLI,
        who="ana",
        channel=None,
        now=INSIDE,
        facts=replace(facts, break_glass="  "),
    )
    assert blank.message.startswith("--break-glass needs a reason")
    glass = check(
        PRODUCTION, Action.DEPLOY, door=Door.CLI, who="ana", channel=None, now=OUTSIDE, facts=facts
    )
    assert glass.allowed
    assert [(b.rule, b.message) for b in glass.bypassed] == [
        (
            Rule.WINDOWS,
            "outside production's deploy windows; the next opens Mon 09:00 Europe/Madrid: "
            "overridden with --break-glass by ana: payments down",
        ),
        (
            Rule.APPROVALS,
            "production's approval (1 approval) bypassed with --break-glass by ana: payments down",
        ),
    ]
    # It overrides windows and approvals, never a freeze nor promotion-only.
    frozen = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.CLI,
        who="ana",
        channel=None,
        now=INSIDE,
        facts=replace(facts, freeze=ICE),
    )
    assert frozen.rule is Rule.FREEZE
    raw = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.CLI,
        who="ana",
        channel=None,
        now=INSIDE,
        facts=replace(facts, completed_on_source=False),
    )
    assert raw.rule is Rule.AFTER


def test_refusals_are_exit_code_2() -> None:
    decision = check(
        PRODUCTION,
        Action.DEPLOY,
        door=Door.CLI,
        who="ana",
        channel=None,
        now=INSIDE,
        facts=Facts(freeze=ICE),
    )
    with pytest.raises(RuleRefused) as caught:
        decision.raise_if_refused()
    assert isinstance(caught.value, DeployRefused) and caught.value.exit_code == 2
    assert caught.value.rule is Rule.FREEZE and str(caught.value) == decision.message
    check(STAGING, "deploy", door="cli", who="ana", channel=None, now=INSIDE).raise_if_refused()


def test_missing_approvals_counts_approvers_once_never_the_requester() -> None:
    two = replace(PRODUCTION, approvals=2, approvers=("U0CARA", "U0DAN", "U0EMA"))
    assert missing_approvals(two, "U0ANA", ()) == 2
    assert missing_approvals(two, "U0ANA", ("U0CARA", "U0CARA")) == 1
    assert missing_approvals(two, "U0CARA", ("U0CARA", "U0DAN")) == 1
    assert missing_approvals(two, "U0ANA", ("U0EVE", "U0DAN", "U0EMA")) == 0


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ("FAILED", "v4.5.0 failed (deployment ecs-svc/123)"),
        ("ROLLED_BACK", "v4.5.0 failed and was rolled back (deployment ecs-svc/123)"),
        ("COMPLETED", None),
        ("STILL_ROLLING_OUT", None),
        ("ABORTED", None),
    ],
)
def test_freeze_after_failure(outcome: str, reason: str | None) -> None:
    freeze = freeze_after_failure(
        PRODUCTION, outcome=outcome, image="v4.5.0", deployment="ecs-svc/123", at=INSIDE
    )
    assert (freeze.reason if freeze else None) == reason
    if freeze:
        assert (freeze.by, freeze.via, freeze.deployment) == ("deploybot", "bot", "ecs-svc/123")
        decision = check(
            PRODUCTION,
            Action.DEPLOY,
            door=Door.SLASH,
            who="U0ANA",
            channel="C0DEPLOYS",
            now=INSIDE,
            facts=Facts(freeze=freeze),
        )
        assert decision.mrkdwn.startswith("production is frozen by deploybot since <!date^")
    assert (
        freeze_after_failure(STAGING, outcome=outcome, image="v", deployment="d", at=INSIDE) is None
    )


# -- strangers (#24): rules.workspace, asked by the Slack middleware before any listener -------

HOME = Home("T0HOME")
GRID = Home("T0HOME", "E0HOME")


@pytest.mark.parametrize(
    ("origin", "home", "refused"),
    [
        (Origin("C0DEPLOYS", ("T0HOME",)), HOME, None),
        (Origin("C0DEPLOYS", ("T0ACME",)), HOME, "another workspace (T0ACME)"),
        (Origin("C0DEPLOYS", ("T0HOME", "T0ACME")), HOME, "another workspace (T0ACME)"),
        (Origin("C0DEPLOYS", ("T0HOME",), ("E0ACME",)), HOME, "another organisation (E0ACME)"),
        (Origin("C0DEPLOYS", ("T0HOME", "E0HOME"), ("E0HOME",)), GRID, None),
        (Origin("C0DEPLOYS", ("T0SIS", "E0HOME"), ("E0HOME",)), GRID, "another workspace (T0SIS)"),
        (Origin("C0DEPLOYS", ("T0HOME", "E0ACME")), GRID, "another workspace (E0ACME)"),
        (Origin("C0SHARED", ("T0HOME",), shared=True), HOME, "shared with another organisation"),
        (Origin("D0ALICE", ("T0HOME",), kind="im"), HOME, "not in a direct message"),
        (Origin("G0GROUP", ("T0HOME",), kind="mpim"), HOME, "not in a group DM"),
        (Origin("D0LISTED", ("T0HOME",), kind="im"), HOME, None),
    ],
)
def test_changes_come_only_from_the_bots_own_workspace(
    origin: Origin, home: Home, refused: str | None
) -> None:
    decision = workspace(origin, home, frozenset({"D0LISTED", "C0DEPLOYS"}))
    if refused is None:
        assert decision.allowed, decision.message
    else:
        assert not decision.allowed and decision.rule is Rule.WORKSPACE
        assert decision.message.startswith("Nothing was changed: ")
        assert refused in decision.message, decision.message


def test_continue_is_an_approval_where_approvals_are_needed() -> None:
    """A paused deployment: on PRODUCTION (approvals = 1) its requester alone cannot continue
    it, an approver can, and the terminal needs --break-glass; on STAGING (no approvals) any
    deployer, the requester included, continues it."""
    facts = Facts(image="v4.4.0", requested_by="U0ANA")

    def ask(target: Target, who: str, door: Door = Door.BUTTON, **more: Any) -> Decision:
        channel = None if door is Door.CLI else "C0DEPLOYS"
        return check(
            target,
            Action.CONTINUE,
            door=door,
            who=who,
            channel=channel,
            now=INSIDE,
            facts=replace(facts, **more),
        )

    own = ask(PRODUCTION, "U0ANA")
    assert outcome(own) == "refuse:approvers"
    assert "this is your deployment" in own.message and "<@U0CARA>" in own.mrkdwn
    assert "<@U0DAN>" in own.mrkdwn
    assert outcome(ask(PRODUCTION, "U0CARA")) == "allow"
    deployer = ask(PRODUCTION, "U0BEN")  # a deployer, not an approver
    assert outcome(deployer) == "refuse:approvers"
    assert "continuing is an approval" in deployer.message
    terminal = ask(PRODUCTION, "ana", Door.CLI)
    assert outcome(terminal) == "refuse:approvals"
    assert "--break-glass" in terminal.message and "Continue on its message" in terminal.message
    glass = ask(PRODUCTION, "ana", Door.CLI, break_glass="the canary is fine, CARA is out")
    assert outcome(glass) == "allow+bypass:approvals"
    assert "bypassed with --break-glass by ana" in glass.bypassed[0].message
    assert outcome(ask(STAGING, "U0ANA")) == "allow"  # no approvals: the requester continues
    assert outcome(ask(STAGING, "ana", Door.CLI)) == "allow"
    assert outcome(ask(replace(STAGING, deployers=frozenset({"U0BEN"})), "U0EVE")) == (
        "refuse:deployers"
    )


def test_a_user_groups_members_deploy_and_approve_as_listed_people_do() -> None:
    """deployers/approvers naming a Slack user group (S…): its members as the bot last read
    them (Target.deployer_members, approver_members) pass who; anyone else is refused, and
    the refusal names the group."""
    grouped = replace(
        PRODUCTION,
        deployers=frozenset({"S0PLATFORM"}),
        approvers=("S0LEADS",),
        deployer_members=frozenset({"U0EVE"}),
        approver_members=frozenset({"U0CARA"}),
    )
    asked = request(Action.DEPLOY)
    member = check(grouped, Action.DEPLOY, door=Door.SLASH, **{**asked, "who": "U0EVE"})
    assert member.allowed, member.message
    other = check(grouped, Action.DEPLOY, door=Door.SLASH, **{**asked, "who": "U0ANA"})
    assert other.rule is Rule.DEPLOYERS
    assert "or you to <!subteam^S0PLATFORM>" in other.mrkdwn, other.mrkdwn
    approving = request(Action.APPROVE)
    facts = replace(approving["facts"], approved_by=())
    cara = check(grouped, Action.APPROVE, door=Door.BUTTON,
                 **{**approving, "who": "U0CARA", "facts": facts})  # fmt: skip
    assert cara.allowed, cara.message
    dan = check(grouped, Action.APPROVE, door=Door.BUTTON,
                **{**approving, "who": "U0DAN", "facts": facts})  # fmt: skip
    assert dan.rule is Rule.APPROVERS
    assert missing_approvals(grouped, "U0ANA", ("U0CARA",)) == 0
    assert missing_approvals(grouped, "U0ANA", ("U0DAN",)) == 1
