"""``deploybot --target``, ``promote``, status of every target, and their make targets, as
real processes against moto's server with the ``fleet_stack``'s three targets."""

from __future__ import annotations

import json

from bot.local.aws import MotoServer
from bot.local.simulator import RolloutSimulator
from tests.bot.test_cli import cli
from tests.bot.test_make import make
from tests.conftest import BILLING_SERVICE, STAGING_CLUSTER, STAGING_SERVICE, FleetStack
from tests.slack.helpers import no_aws_writes, running_release


def test_target_deploy_then_promote_runs_stagings_digest_in_production(
    fleet_stack: FleetStack, simulator: RolloutSimulator
) -> None:
    settings = fleet_stack.settings
    staging = settings.model_copy(
        update={"ecs_cluster": STAGING_CLUSTER, "ecs_service": STAGING_SERVICE}
    )
    done = cli("--target", "staging", "deploy", "v4.4.0")
    assert done.returncode == 0, done.stdout + done.stderr
    digest = fleet_stack.info.release("v4.4.0").digest
    assert running_release(staging) == ("v4.4.0-ecr-ecs-fargate", digest)
    assert running_release(settings)[0] == "v4.3.0-ecr-ecs-fargate"

    done = cli("promote", "staging", "production")
    assert done.returncode == 0, done.stdout + done.stderr
    assert running_release(settings) == ("v4.4.0-ecr-ecs-fargate", digest)

    # Every target in one table, and as JSON.
    table = cli("status")
    assert table.returncode == 0, table.stderr
    for name in ("staging", "production", "billing"):
        assert name in table.stdout
    data = json.loads(cli("status", "--json").stdout)
    tags = {t["target"]: t["tag"] for t in data["targets"]}
    assert tags == {
        "staging": "v4.4.0-ecr-ecs-fargate",
        "production": "v4.4.0-ecr-ecs-fargate",
        "billing": "v4.3.0-ecr-ecs-fargate",
    }
    one = json.loads(cli("--target", "staging", "status", "--json").stdout)
    assert one["tag"] == "v4.4.0-ecr-ecs-fargate"


def test_refusals_exit_2_name_the_rule_or_the_known_targets(
    fleet_stack: FleetStack, aws: MotoServer
) -> None:
    aws.requests.clear()
    unknown = cli("--target", "stagin", "deploy", "v4.4.0")
    assert unknown.returncode == 2
    assert "staging" in unknown.stderr and "production" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    direct = cli("--target", "production", "deploy", "v4.4.0")
    assert direct.returncode == 2
    assert "production only takes images that completed on staging" in direct.stderr
    nothing = cli("promote", "staging", "production")
    assert nothing.returncode == 2 and "staging has no deployments yet" in nothing.stderr
    assert no_aws_writes(aws)


def test_make_deploy_env_and_make_promote(
    fleet_stack: FleetStack, simulator: RolloutSimulator, aws: MotoServer
) -> None:
    settings = fleet_stack.settings
    billing = settings.model_copy(update={"ecs_service": BILLING_SERVICE})
    done = make("deploy", "TAG=v4.5.0", "ENV=billing")
    assert done.returncode == 0, done.stdout + done.stderr
    assert running_release(billing)[0] == "v4.5.0-ecr-ecs-fargate"
    assert running_release(settings)[0] == "v4.3.0-ecr-ecs-fargate"
    refused = make("promote", "FROM=billing", "TO=stagin")
    assert refused.returncode == 2 and "deploybot exited 2" in refused.stderr
    assert "staging" in refused.stderr + refused.stdout
    usage = make("promote", "FROM=billing")
    assert usage.returncode == 2 and "make promote FROM=staging TO=production" in usage.stdout
