"""ECS deployments no deploybot record explains: started in the console, by CloudFormation,
by the AWS CLI. A bot reports each once in the target's channel, as such.

A record is written before its UpdateService is sent (Engine.start), so a deployment ECS
created before the history was read has its record in that read; one created after it may
not yet, and waits for the next pass. What a record explains: the deployment it started (or
would adopt: its task definition, created during its life), and what ECS or an abort made of
it (the previous task definition put back by the circuit breaker or a Stop).
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.deploy.reconcile import ECS_CLOCK_SLACK
from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import EcsDeployment, ServiceState


def unexplained(
    state: ServiceState,
    records: list[DeploymentRecord],
    *,
    read_at: datetime,
    since: datetime,
) -> list[EcsDeployment]:
    """The deployments of ``state`` that none of ``records`` (read at ``read_at``) explains:
    those created since ``since`` (a bot's start: what ran before it is not news), and those
    still rolling out whenever they began."""
    found = []
    for deployment in state.deployments:
        if deployment.created_at is None:
            continue
        created = _aware(deployment.created_at)
        if created >= read_at - ECS_CLOCK_SLACK:
            continue  # its record may have been written after the read: the next pass judges it
        if created < since and deployment.rollout_state != "IN_PROGRESS":
            continue  # made before the bot looked (the service's creation, say), and over
        if not any(_explains(record, deployment, created, read_at) for record in records):
            found.append(deployment)
    return found


def _explains(
    record: DeploymentRecord, deployment: EcsDeployment, created: datetime, now: datetime
) -> bool:
    made = {record.ecs_deployment_id, record.abort_ecs_deployment_id}
    if record.final is not None:
        made.add(record.final.rollback_deployment)
    if deployment.id in made - {""}:
        return True
    # Not adopted yet, or put back by ECS's circuit breaker or an abort while the record was
    # open: its task definitions, during its life.
    ended = record.finished_at if record.settled and record.finished_at else now
    if not record.started_at - ECS_CLOCK_SLACK <= created <= ended + ECS_CLOCK_SLACK:
        return False
    return deployment.task_definition in (record.task_definition, record.previous_task_definition)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
