"""What a new revision needs, checked before anything changes: its image in ECR (the plan
found it already), the task and execution roles (IAM GetRole), the log group of the
``awslogs`` driver (CloudWatch Logs DescribeLogGroups) and the secrets its containers read
(Secrets Manager DescribeSecret, SSM DescribeParameters: metadata, never a value).

A check that finds a thing missing refuses the change (``PlanCheckFailed``: nothing changed).
A check AWS does not answer (AccessDenied: the bot's role may not read it; a region or an
account the role does not reach; AWS unreachable) is "could not verify", said with the plan
and never blocking: the revision may well be fine, and ECS says so when it starts tasks.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.deploy.aws import AwsClient, error_code
from bot.deploy.plan_diff import Check
from bot.errors import DeployRefused

log = logging.getLogger("deploybot.engine")


class PlanCheckFailed(DeployRefused):
    """Something the new revision needs does not exist: refused before any change."""


def check_revision(
    aws: AwsClient, registered: Mapping[str, Any], image: str, region: str
) -> tuple[Check, ...]:
    """Every check of the revision ``registered`` (RegisterTaskDefinition's arguments, or a
    revision as DescribeTaskDefinition gave it). ``image``: the image the plan already found
    in ECR (``tag (sha256:…)``), reported without another call."""
    checks = [Check("image", image, "ok", "is in ECR")] if image else []
    role = registered.get("taskRoleArn") or registered.get("executionRoleArn") or ""
    account = _account_of(str(role))
    for key, what in (("taskRoleArn", "task role"), ("executionRoleArn", "execution role")):
        arn = str(registered.get(key) or "")
        if arn:
            name = arn.rsplit("/", 1)[-1]
            checks.append(_ask(what, name, functools.partial(aws.role_exists, name)))
    for group, group_region, created in _log_groups(registered, region):
        if created:
            checks.append(
                Check("log group", group, "ok", "is created by ECS (awslogs-create-group)")
            )
            continue
        exists = functools.partial(aws.log_group_exists, group, group_region)
        checks.append(_ask("log group", group, exists))
    for name, source in _secrets(registered):
        checks.append(_secret(aws, name, source, region, account))
    return tuple(checks)


def _ask(what: str, name: str, exists: Callable[[], bool]) -> Check:
    try:
        return Check(what, name, "ok" if exists() else "missing")
    except ClientError as exc:
        code = error_code(exc)
        log.warning("could not verify %s %s: %s", what, name, code)
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return Check(what, name, "unverified", "AWS refused the read: AccessDenied")
        return Check(what, name, "unverified", f"AWS said {code}")
    except BotoCoreError as exc:
        log.warning("could not verify %s %s: %s", what, name, exc)
        return Check(what, name, "unverified", "AWS did not answer")


def _log_groups(registered: Mapping[str, Any], region: str) -> Iterator[tuple[str, str, bool]]:
    """(group, region, created by ECS) of each container's ``awslogs`` configuration, once."""
    seen: set[tuple[str, str]] = set()
    for container in registered.get("containerDefinitions", []):
        config = container.get("logConfiguration") or {}
        if config.get("logDriver") != "awslogs":
            continue
        options = config.get("options") or {}
        group = str(options.get("awslogs-group") or "")
        where = str(options.get("awslogs-region") or region)
        if not group or (group, where) in seen:
            continue
        seen.add((group, where))
        # "awslogs-create-group": ECS creates a missing group (its execution role needs
        # logs:CreateLogGroup): https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
        # using_awslogs.html
        yield group, where, str(options.get("awslogs-create-group", "")).lower() == "true"


def _secrets(registered: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(name, valueFrom) of every container's secrets and log secret options, once each."""
    seen: set[str] = set()
    for container in registered.get("containerDefinitions", []):
        config = container.get("logConfiguration") or {}
        for secret in [*(container.get("secrets") or []), *(config.get("secretOptions") or [])]:
            source = str(secret.get("valueFrom") or "")
            if source and source not in seen:
                seen.add(source)
                yield str(secret.get("name") or ""), source


def _secret(aws: AwsClient, name: str, source: str, region: str, account: str) -> Check:
    """A container's secret by its ``valueFrom``: a Secrets Manager ARN (optionally with a
    JSON key, version stage and id after it), an SSM parameter ARN, or an SSM parameter's
    name in the task's region (ECS developer guide, "Pass sensitive data to an Amazon ECS
    container": https://docs.aws.amazon.com/AmazonECS/latest/developerguide/specifying-
    sensitive-data.html)."""
    label = f"{name} ({_short(source)})"
    if source.startswith("arn:"):
        parts = source.split(":")
        service, where, owner = parts[2], parts[3] or region, parts[4]
        if account and owner and owner != account:
            return Check("secret", label, "unverified", f"in account {owner}")
        if service == "secretsmanager":
            secret_id = ":".join(parts[:7])  # the secret's ARN, without json key/stage/id
            return _ask("secret", label, lambda: aws.secret_exists(secret_id, where))
        if service == "ssm":
            resource = ":".join(parts[5:]).removeprefix("parameter")
            # ``parameter/a/b`` names ``/a/b``; ``parameter/x`` names ``x``.
            param = resource if resource.count("/") > 1 else resource.removeprefix("/")
            return _ask("secret", label, lambda: aws.parameter_exists(param, where))
        return Check("secret", label, "unverified", f"a {service} ARN is not checked")
    return _ask("secret", label, lambda: aws.parameter_exists(source, region))


def _account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def _short(source: str) -> str:
    """A secret's source as people name it: the name after ``secret:`` or ``parameter``."""
    if source.startswith("arn:"):
        resource = ":".join(source.split(":")[5:])
        if resource.startswith("secret:"):
            return resource.removeprefix("secret:").split(":", 1)[0]
        return resource.removeprefix("parameter")
    return source


def refusal(checks: tuple[Check, ...], family: str) -> str:
    """The refusal for the checks that failed, for a person."""
    missing = [c for c in checks if c.state == "missing"]
    items = "; ".join(c.text for c in missing)
    return (
        f"Not started: the new revision of {family} needs what does not exist: {items}. "
        "Nothing was changed. Create it (or fix the task definition in the service's stack) "
        "and try again."
    )
