"""One bot, several targets (deploybot.toml): `/deploy TAG to staging`, the which-target
question, promotion (command and button), status of every target, CI's buttons per target.

The bot is a real ``deploybot serve`` process reading the ``fleet_stack``'s deploybot.toml:
staging (its own cluster), production (after staging) and billing (production's cluster).
"""

from __future__ import annotations

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import Message, SlackEmulator
from bot.settings import Settings
from tests.conftest import (
    ALICE,
    BILLING_SERVICE,
    DEPLOYS,
    STAGING_CLUSTER,
    STAGING_SERVICE,
    FleetStack,
)
from tests.slack.conftest import BotFactory
from tests.slack.helpers import bot_messages, no_aws_writes, running_release
from tests.slack.test_ci_notice_and_rollback import notify


def of(settings: Settings, cluster: str, service: str) -> Settings:
    return settings.model_copy(update={"ecs_cluster": cluster, "ecs_service": service})


def final(emulator: SlackEmulator, title: str) -> Message:
    """The bot message whose text starts with ``title`` (its final state)."""
    return emulator.wait_for(
        lambda: next((m for m in bot_messages(emulator) if m.text.startswith(title)), None),
        timeout=60,
        what=f"a message {title!r}",
    )


def test_deploy_to_staging_then_promote_with_the_button(
    fleet_stack: FleetStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    settings = fleet_stack.settings
    staging = of(settings, STAGING_CLUSTER, STAGING_SERVICE)
    bot = start_bot("http")
    emulator.slash_command(
        "/deploy", "v4.4.0 to staging", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    done = final(emulator, "✅ Deployed v4.4.0-ecr-ecs-fargate to staging")
    digest = fleet_stack.info.release("v4.4.0").digest
    assert running_release(staging) == ("v4.4.0-ecr-ecs-fargate", digest)
    # Production comes after staging: the completed message offers to promote it.
    button = done.button("promote:production")
    assert button is not None and "Promote to production" in str(button)
    emulator.click(done, "promote:production", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    final(emulator, "✅ Deployed v4.4.0-ecr-ecs-fargate to production")
    assert running_release(settings) == ("v4.4.0-ecr-ecs-fargate", digest)
    # Billing was not touched.
    assert running_release(of(settings, settings.ecs_cluster, BILLING_SERVICE))[0] == (
        "v4.3.0-ecr-ecs-fargate"
    )


def test_production_refuses_a_direct_deploy_naming_the_rule_and_promote_command_works(
    fleet_stack: FleetStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    settings = fleet_stack.settings
    bot = start_bot("http")
    aws.requests.clear()
    emulator.slash_command(
        "/deploy", "v4.5.0 to production", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    refusal = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="a refusal")[0]
    assert "production only takes images that completed on staging" in refusal.text
    assert no_aws_writes(aws)
    # Nothing completed on staging yet: promotion is refused too, and says why.
    emulator.slash_command(
        "/deploy", "promote staging to production", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    refusal = emulator.wait_for(
        lambda: emulator.ephemerals(user=ALICE)[1:], what="a second refusal"
    )[0]
    assert "staging has no deployments yet" in refusal.text
    assert no_aws_writes(aws)
    emulator.slash_command(
        "/deploy", "v4.5.0 to staging", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    final(emulator, "✅ Deployed v4.5.0-ecr-ecs-fargate to staging")
    emulator.slash_command(
        "/deploy", "promote staging to production", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    final(emulator, "✅ Deployed v4.5.0-ecr-ecs-fargate to production")
    assert running_release(settings) == (
        "v4.5.0-ecr-ecs-fargate",
        fleet_stack.info.release("v4.5.0").digest,
    )


def test_which_target_question_and_status_of_every_target(
    fleet_stack: FleetStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    settings = fleet_stack.settings
    bot = start_bot("http")
    # Three targets answer here: the bot asks which, a button per target, nothing written.
    aws.requests.clear()
    emulator.slash_command("/deploy", "v4.4.0", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    question = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="a question")[0]
    assert "to which target?" in question.text
    ids = {b.get("action_id") for b in question.buttons}
    assert ids == {"deploy_tag:staging", "deploy_tag:production", "deploy_tag:billing"}
    # Not a tag at all: refused at once, no question asked.
    emulator.slash_command("/deploy", "v4;rm", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    bad = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE)[1:], what="a refusal")[0]
    assert "is not an image tag" in bad.text and not bad.buttons
    assert no_aws_writes(aws)
    emulator.click(question, "deploy_tag:billing", user=ALICE, url=bot.events_url)
    final(emulator, "✅ Deployed v4.4.0-ecr-ecs-fargate to billing")
    billing = of(settings, settings.ecs_cluster, BILLING_SERVICE)
    assert running_release(billing)[0] == "v4.4.0-ecr-ecs-fargate"
    assert running_release(settings)[0] == "v4.3.0-ecr-ecs-fargate"

    # Every target in one message; two clusters, so two DescribeServices.
    aws.requests.clear()
    emulator.slash_command("/deploy-status", "", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    status = emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=ALICE) if "Targets" in e.text), None),
        what="the status of every target",
    )
    for name in ("staging", "production", "billing"):
        assert f"*{name}*" in status.all_text
    assert "v4.4.0-ecr-ecs-fargate" in status.all_text and "after staging" in status.all_text
    assert aws.requests.count("ecs", "DescribeServices") <= 2 + 1  # + the bot's own poll
    # One target in detail.
    emulator.slash_command(
        "/deploy-status", "billing", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    detail = emulator.wait_for(
        lambda: (
            next((e for e in emulator.ephemerals(user=ALICE) if e.text.startswith("billing")), None)
            or next((e for e in emulator.ephemerals(user=ALICE) if "billing:" in e.all_text), None)
        ),
        what="billing's status",
    )
    assert "v4.4.0-ecr-ecs-fargate" in detail.all_text

    # /deploy alone: a Deploy button per target and image, each dialog naming its own
    # service; what it changes only where it was read (the channel's first target, staging).
    emulator.slash_command("/deploy", "", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    helped = emulator.wait_for(
        lambda: next((e for e in emulator.ephemerals(user=ALICE) if "Usage" in e.all_text), None),
        what="the help",
    )
    dialogs = {
        b["action_id"]: b["confirm"]["text"]["text"]
        for b in helped.buttons
        if b.get("value", "").find("v4.5.0-ecr-ecs-fargate") >= 0
    }
    assert dialogs["deploy_tag:billing"] == (
        f"Deploy v4.5.0-ecr-ecs-fargate to billing ({settings.ecs_cluster}/{BILLING_SERVICE})?"
    )
    assert dialogs["deploy_tag:staging"].startswith(
        f"Deploy v4.5.0-ecr-ecs-fargate to staging ({STAGING_SERVICE})?\nForward 2 releases"
    )


def test_ci_notice_offers_a_button_per_target_that_takes_images_directly(
    fleet_stack: FleetStack, emulator: SlackEmulator
) -> None:
    done = notify(emulator, "--tag", "v4.5.0-ecr-ecs-fargate")
    assert done.returncode == 0, done.stderr
    (notice,) = emulator.messages(DEPLOYS)
    ids = {b.get("action_id") for b in notice.buttons}
    # Production takes images only after staging: its button is on staging's final message.
    assert ids == {"deploy_tag:staging", "deploy_tag:billing"}


def test_history_redeploy_and_rollback_button_name_their_target(
    fleet_stack: FleetStack,
    aws: MotoServer,
    simulator: RolloutSimulator,
    emulator: SlackEmulator,
    start_bot: BotFactory,
) -> None:
    settings = fleet_stack.settings
    staging = of(settings, STAGING_CLUSTER, STAGING_SERVICE)
    bot = start_bot("http")

    def ephemeral(words: str) -> str:
        found = emulator.wait_for(
            lambda: next((e for e in emulator.ephemerals(user=ALICE) if words in e.all_text), None),
            what=f"an ephemeral saying {words!r}",
        )
        return found.all_text

    # Several targets here and none named: how to name one, nothing written.
    aws.requests.clear()
    emulator.slash_command("/redeploy", "", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    assert "/redeploy staging" in ephemeral("Which target?")
    emulator.slash_command("/deploy", "stagin", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    assert no_aws_writes(aws)

    emulator.slash_command(
        "/deploy", "v4.4.0 to staging", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    done = final(emulator, "✅ Deployed v4.4.0-ecr-ecs-fargate to staging")
    emulator.slash_command(
        "/deploy", "history staging", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    assert "v4.4.0-ecr-ecs-fargate" in ephemeral("Deployment history of staging")
    emulator.slash_command(
        "/deploy", "history production", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    ephemeral("No deployments to production yet")
    # The Rollback button of staging's deployment: back to what ran before it, on staging.
    emulator.click(done, "rollback", user=ALICE, channel=DEPLOYS, url=bot.events_url)
    final(emulator, "✅ Rolled back to v4.3.0-ecr-ecs-fargate on staging")
    assert running_release(staging)[0] == "v4.3.0-ecr-ecs-fargate"
    assert running_release(settings)[0] == "v4.3.0-ecr-ecs-fargate"
