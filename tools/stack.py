"""Deploy the CloudFormation stacks with boto3 change sets (`make infra`, `make bot-infra`).

    python -m tools.stack service [--env ENV] [--tag TAG] [KEY=VALUE ...]   the service's stack
    python -m tools.stack bot [--tag TAG] [KEY=VALUE ...]       the bot's stack
    python -m tools.stack ci [KEY=VALUE ...]                    CI's role (GitHub OIDC)
    python -m tools.stack slack-secret                          SLACK_* from the environment
    python -m tools.stack github-secret                         GITHUB_TOKEN from the environment
    python -m tools.stack bot-config FILE                       a deploybot.toml for the bot
    python -m tools.stack delete --stack NAME                   e.g. after a failed creation

`service` passes the image tag that runs now (read from the live ECS service) as
ImageTag, so an infrastructure update never reverts a deployment the bot made. With
``--env staging`` it is another environment of the service: stack STACK-staging, from the
same template, running images of STACK's repository (RepositoryName). It holds deploybot's
deploy lock of that service while it runs (the same lock as a deploy, renewed until the stack
update ends): it waits for no rollout and none starts under it.
`bot` checks first that every stack it may deploy (DeployStackNames) exports what its
role imports, so a missing one is named before any change.
Parameters not given keep their previous values on an update.
Exit codes follow deploybot's: 0 done, 1 the stack operation failed, 2 refused
before any change.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import math
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    WaiterError,
)

ROOT = Path(__file__).resolve().parent.parent
SERVICE_TEMPLATE = ROOT / "cloudformation" / "service.yml"
BOT_TEMPLATE = ROOT / "cloudformation" / "bot.yml"
CI_TEMPLATE = ROOT / "cloudformation" / "ci.yml"
SERVICE_CONTAINER = "hello-world"
DEFAULT_STACK = "hello-world-ecr-ecs-fargate"
SLACK_SECRET_KEYS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")
GITHUB_SECRET_KEYS = ("GITHUB_TOKEN",)
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
DEPLOYBOT_TAG = "deploybot:tag"  # bot.deploy.engine.TAG_KEY

Out = Callable[[str], None]


# An environment's name ends a stack's name (and so its cluster, service, log group): short,
# lowercase, as CloudFormation, ECS and CloudWatch all accept.
ENV_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")
# `make infra ENV=production` means the first stack: production is DEPLOY_TARGET's default.
PRIMARY_ENV = "production"
# What bot.yml imports from each service stack it deploys, and from the one it runs beside.
DEPLOY_IMPORTS = ("RepositoryArn", "ExecutionRoleArn", "TaskRoleArn")
HOST_IMPORTS = ("VpcId", "ClusterName", "PublicSubnetA", "PublicSubnetB")


class StackError(Exception):
    """The stack operation failed; the message says why, for a person."""

    exit_code = 1


class StackRefused(StackError):
    """Refused before any change (bad input, missing tag, stack busy)."""

    exit_code = 2


def _print(line: str) -> None:
    print(line, flush=True)


def image_tag_of(image: str) -> str:
    """The tag of an image reference such as ``123.dkr.ecr.eu-west-1.amazonaws.com/repo:v1``."""
    if "@" in image:
        raise StackRefused(f"the running image is pinned by digest ({image}); pass TAG= explicitly")
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        raise StackRefused(f"the running image has no tag ({image}); pass TAG= explicitly")
    return name.rsplit(":", 1)[1]


def running_image_tag(ecs: Any, cluster: str, service: str, container: str) -> str | None:
    """The image tag of ``container`` in the service's current task definition; None if no service.

    The service's taskDefinition is its PRIMARY deployment's: the one being rolled
    out now, or the one that runs if nothing is rolling out. deploybot pins images by
    digest and names the tag in the revision's ``deploybot:tag``.
    """
    try:
        found = ecs.describe_services(cluster=cluster, services=[service])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ClusterNotFoundException":
            return None
        raise
    live = [s for s in found.get("services", []) if s.get("status") != "INACTIVE"]
    if not live:
        return None
    task_definition = ecs.describe_task_definition(
        taskDefinition=live[0]["taskDefinition"], include=["TAGS"]
    )
    named = {t["key"]: t["value"] for t in task_definition.get("tags", [])}.get(DEPLOYBOT_TAG)
    for definition in task_definition["taskDefinition"]["containerDefinitions"]:
        if definition["name"] == container:
            return named or image_tag_of(definition["image"])
    raise StackRefused(
        f"service {service} runs {live[0]['taskDefinition']}, which has no container {container!r}"
    )


@contextlib.contextmanager
def deploy_lock(base_stack: str, stack_name: str, region: str, out: Out = _print) -> Iterator[None]:
    """Hold deploybot's deploy lock of ``stack_name``'s service while the body runs.

    An infrastructure update replaces the service's deployment like any UpdateService: under
    the lock, no deploybot rollout is running and none can start. A lock held by a live
    rollout refuses (exit 2). The lock lives in the deploy table of ``base_stack`` (every
    environment's, as deploybot's targets share it). Without that table (the bot's stack not
    created yet) there is nothing to lock, and the update goes on, saying so.
    """
    from bot.deploy.engine import Engine
    from bot.deploy.records import Requester
    from bot.errors import DeployError, LockHeld, NotConfigured
    from bot.settings import load_settings

    settings = load_settings(
        stack_name=base_stack, ecs_cluster=stack_name, ecs_service=stack_name, aws_region=region
    )
    engine = Engine(settings)
    who = os.environ.get("DEPLOYBOT_USER") or f"{getpass.getuser()}@{socket.gethostname()}"
    lock_id = f"infra-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    try:
        engine.acquire(Requester(who, "make-infra"), "the infrastructure", lock_id)
    except NotConfigured as exc:
        out(f"note: not taking deploybot's deploy lock ({exc.message})")
        engine.close()
        yield
        return
    except LockHeld as exc:
        engine.close()
        raise StackRefused(exc.message) from None
    except DeployError as exc:
        engine.close()
        raise StackRefused(f"could not take deploybot's deploy lock: {exc.message}") from None
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(engine.settings.lock_lease_seconds / 3):
            with contextlib.suppress(DeployError):
                engine.ledger.renew(lock_id)

    renewer = threading.Thread(target=renew, name="infra-lock", daemon=True)
    renewer.start()
    out(f"took deploybot's deploy lock ({lock_id})")
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=10)
        with contextlib.suppress(DeployError):
            engine.ledger.release(lock_id)
        engine.close()


def service_parameters(
    ecs: Any,
    stack_name: str,
    tag: str | None = None,
    extra: Mapping[str, str] | None = None,
    out: Out = _print,
) -> dict[str, str]:
    """The service stack's parameters: ImageTag is what runs now unless ``tag`` says otherwise.

    The cluster and service are named after the stack (service.yml does so).
    """
    running = running_image_tag(ecs, stack_name, stack_name, SERVICE_CONTAINER)
    if tag is None and running is None:
        raise StackRefused(
            f"no service {stack_name} runs yet, so there is no image tag to keep: "
            "on first creation give one, e.g. make infra TAG=v1.0.0-ecr-ecs-fargate ALLOWED_IP=..."
        )
    if tag is not None and running is not None and tag != running:
        out(f"note: {running} runs now; TAG={tag} replaces it (deploybot will not know of this).")
    chosen = tag if tag is not None else running
    assert chosen is not None
    if tag is None:
        out(f"keeping the image that runs now: ImageTag={chosen}")
    return {**(extra or {}), "ImageTag": chosen}


def environment_stack(base: str, env: str | None, out: Out = _print) -> tuple[str, dict[str, str]]:
    """The stack of environment ``env`` of ``base``'s service, and the parameters that make it
    one: ``base-env``, running images of ``base``'s repository. No env (or production): base."""
    if not env:
        return base, {}
    if env == PRIMARY_ENV:
        out(f"ENV={env} is the first stack, {base}")
        return base, {}
    if not ENV_NAME.fullmatch(env):
        raise StackRefused(
            f"ENV={env!r} is not an environment name: lowercase letters, digits and -, "
            "a letter first, 20 at most (e.g. ENV=staging)"
        )
    return f"{base}-{env}", {"RepositoryName": base}


def missing_exports(cfn: Any, service_stacks: Sequence[str], host: str) -> list[str]:
    """The exports bot.yml imports that no stack provides yet, e.g. ``x-staging-TaskRoleArn``."""
    exported: set[str] = set()
    paginator = cfn.get_paginator("list_exports")
    for page in paginator.paginate():
        exported.update(e["Name"] for e in page.get("Exports", []))
    wanted = [f"{host}-{name}" for name in HOST_IMPORTS]
    wanted += [f"{stack}-{name}" for stack in service_stacks for name in DEPLOY_IMPORTS]
    return [name for name in dict.fromkeys(wanted) if name not in exported]


def deploy_stack_names(
    cfn: Any, bot_stack: str, service_stack: str, given: Mapping[str, str]
) -> list[str]:
    """The service stacks the bot's role will cover: given, else the stack's previous value,
    else (first creation, or a stack from before the parameter) the one it runs beside."""
    if "DeployStackNames" in given:
        return [s.strip() for s in given["DeployStackNames"].split(",") if s.strip()]
    existing = _stack(cfn, bot_stack) or {}
    for parameter in existing.get("Parameters", []):
        if parameter["ParameterKey"] == "DeployStackNames":
            return [s.strip() for s in parameter["ParameterValue"].split(",") if s.strip()]
    return [service_stack]


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["Key=Value", ...]`` into a dict; an empty value is allowed (``Key=``)."""
    parameters: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StackRefused(f"parameters are KEY=VALUE, got {item!r}")
        parameters[key] = value
    return parameters


def _stack(cfn: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        return dict(cfn.describe_stacks(StackName=stack_name)["Stacks"][0])
    except ClientError as exc:
        if "does not exist" in exc.response["Error"].get("Message", ""):
            return None
        raise


class _EventPrinter:
    """Prints the stack's new events from a thread while the main thread waits on a waiter."""

    def __init__(self, cfn: Any, stack_name: str, delay: float, out: Out):
        self._cfn, self._stack, self._delay, self._out = cfn, stack_name, delay, out
        # Events from before this operation are history: note them, print nothing.
        self._seen: set[str] = {e["EventId"] for e in self._events()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.failures: list[str] = []

    def __enter__(self) -> _EventPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(ClientError):
            self.poll()  # the last events, printed after the waiter's verdict

    def _run(self) -> None:
        while not self._stop.wait(self._delay):
            # Throttled or briefly unavailable: the next poll catches up.
            with contextlib.suppress(ClientError):
                self.poll()

    def _events(self) -> list[dict[str, Any]]:
        if _stack(self._cfn, self._stack) is None:
            return []
        return list(self._cfn.describe_stack_events(StackName=self._stack)["StackEvents"])

    def poll(self) -> None:
        """Print the events not printed yet, oldest first."""
        fresh = [e for e in self._events() if e["EventId"] not in self._seen]
        for event in sorted(fresh, key=lambda e: e["Timestamp"]):
            self._seen.add(event["EventId"])
            reason = event.get("ResourceStatusReason") or ""
            line = (
                f"{event['Timestamp']:%H:%M:%S}  {event['ResourceStatus']:<28} "
                f"{event['LogicalResourceId']:<28} {event.get('ResourceType', '')}"
            )
            self._out(f"{line}  {reason}".rstrip())
            if event["ResourceStatus"].endswith("FAILED") and reason:
                self.failures.append(f"{event['LogicalResourceId']}: {reason}")


def _wait(cfn: Any, name: str, delay: float, timeout: float, **kwargs: Any) -> None:
    config = {"Delay": delay, "MaxAttempts": max(1, math.ceil(timeout / delay))}
    cfn.get_waiter(name).wait(WaiterConfig=config, **kwargs)


def deploy_stack(
    cfn: Any,
    stack_name: str,
    template_body: str,
    parameters: Mapping[str, str],
    *,
    out: Out = _print,
    delay: float = 5.0,
    timeout: float = 3600.0,
) -> str:
    """Create or update ``stack_name`` through a change set; returns created/updated/unchanged.

    Parameters the template declares but ``parameters`` omits keep their previous
    values on an update (and take their defaults on creation).
    """
    existing = _stack(cfn, stack_name)
    status = existing["StackStatus"] if existing else None
    if status == "ROLLBACK_COMPLETE":
        raise StackRefused(
            f"stack {stack_name} failed its first creation and was rolled back; delete it "
            f"(python -m tools.stack delete --stack {stack_name}) and run again"
        )
    if status and status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise StackRefused(f"stack {stack_name} is busy ({status}); wait for it to finish")
    creating = existing is None or status == "REVIEW_IN_PROGRESS"

    declared = {
        p["ParameterKey"]
        for p in cfn.get_template_summary(TemplateBody=template_body).get("Parameters", [])
    }
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise StackRefused(f"the template declares no parameter {', '.join(unknown)}")
    previous = {p["ParameterKey"] for p in (existing or {}).get("Parameters", [])}
    cfn_parameters: list[dict[str, Any]] = [
        {"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()
    ]
    if not creating:
        cfn_parameters += [
            {"ParameterKey": key, "UsePreviousValue": True}
            for key in sorted((declared & previous) - set(parameters))
        ]

    change_set = f"deploy-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    kind = "CREATE" if creating else "UPDATE"
    out(f"{stack_name}: creating change set {change_set} ({kind})")
    try:
        cfn.create_change_set(
            StackName=stack_name,
            ChangeSetName=change_set,
            ChangeSetType=kind,
            TemplateBody=template_body,
            Parameters=cfn_parameters,
            # AUTO_EXPAND: bot.yml uses the AWS::LanguageExtensions transform (Fn::ForEach).
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
    except ClientError as exc:
        message = exc.response["Error"].get("Message", str(exc))
        if any(marker in message for marker in NO_CHANGES):
            out(f"{stack_name}: no changes")
            return "unchanged"
        raise StackRefused(f"CloudFormation refused the change set: {message}") from exc

    try:
        _wait(cfn, "change_set_create_complete", delay, timeout,
              StackName=stack_name, ChangeSetName=change_set)  # fmt: skip
    except WaiterError as exc:
        described = cfn.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
        reason = described.get("StatusReason", "") or str(exc)
        if any(marker in reason for marker in NO_CHANGES):
            cfn.delete_change_set(StackName=stack_name, ChangeSetName=change_set)
            out(f"{stack_name}: no changes")
            return "unchanged"
        raise StackRefused(f"the change set failed: {reason}") from exc

    described = cfn.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
    # A change set without changes ends FAILED ("didn't contain changes"), handled above.
    for change in described.get("Changes", []):
        rc = change.get("ResourceChange", {})
        replacement = rc.get("Replacement")
        note = f" (replacement: {replacement})" if replacement in ("True", "Conditional") else ""
        out(f"  {rc.get('Action', '?'):<8} {rc.get('LogicalResourceId', '?'):<28} "
            f"{rc.get('ResourceType', '')}{note}")  # fmt: skip

    events = _EventPrinter(cfn, stack_name, delay, out)
    cfn.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
    waiter = "stack_create_complete" if creating else "stack_update_complete"
    with events:
        try:
            _wait(cfn, waiter, delay, timeout, StackName=stack_name)
        except WaiterError as exc:
            failure = exc
        else:
            failure = None
    if failure is not None:
        final = _stack(cfn, stack_name)
        final_status = final["StackStatus"] if final else "DELETED"
        why = "; ".join(events.failures) or str(failure)
        hint = (
            f" Delete it (python -m tools.stack delete --stack {stack_name}) before trying again."
            if final_status == "ROLLBACK_COMPLETE"
            else ""
        )
        raise StackError(f"stack {stack_name} ended {final_status}: {why}.{hint}")

    final = _stack(cfn, stack_name) or {}
    for output in final.get("Outputs", []):
        out(f"  {output['OutputKey']} = {output['OutputValue']}")
    verdict = "created" if creating else "updated"
    out(f"{stack_name}: {verdict}")
    return verdict


def delete_stack(cfn: Any, stack_name: str, *, out: Out = _print, delay: float = 5.0) -> None:
    """Delete the stack and wait until it is gone."""
    if _stack(cfn, stack_name) is None:
        out(f"{stack_name}: no such stack")
        return
    cfn.delete_stack(StackName=stack_name)
    try:
        _wait(cfn, "stack_delete_complete", delay, 3600.0, StackName=stack_name)
    except WaiterError as exc:
        raise StackError(f"deleting {stack_name} failed: {exc}") from exc
    out(f"{stack_name}: deleted")


def put_slack_secret(
    cfn: Any, secrets: Any, bot_stack: str, env: Mapping[str, str], out: Out = _print
) -> None:
    """Write the three SLACK_* values from ``env`` into the bot stack's secret."""
    _put_secret(cfn, secrets, bot_stack, env, SLACK_SECRET_KEYS, "SlackSecretArn", out)


def put_github_secret(
    cfn: Any, secrets: Any, bot_stack: str, env: Mapping[str, str], out: Out = _print
) -> None:
    """Write GITHUB_TOKEN from ``env`` into the bot stack's GitHub secret (commit lists and
    GitHub deployments; without it the bot still links the compare view)."""
    _put_secret(cfn, secrets, bot_stack, env, GITHUB_SECRET_KEYS, "GitHubSecretArn", out)


def _put_secret(
    cfn: Any,
    secrets: Any,
    bot_stack: str,
    env: Mapping[str, str],
    keys: tuple[str, ...],
    output: str,
    out: Out,
) -> None:
    missing = [key for key in keys if not env.get(key)]
    if missing:
        raise StackRefused(f"set {', '.join(missing)} in the environment first")
    stack = _stack(cfn, bot_stack)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}
    if output not in outputs:
        raise StackRefused(f"stack {bot_stack} has no {output} output; run make bot-infra")
    value = json.dumps({key: env[key] for key in keys})
    secrets.put_secret_value(SecretId=outputs[output], SecretString=value)
    out(f"wrote {', '.join(keys)} to {outputs[output]}; "
        "restart the bot's service to use them")  # fmt: skip


# A standard SSM parameter holds 4 KB (docs.aws.amazon.com/systems-manager/latest/userguide/
# parameter-store-advanced-parameters.html); bot.yml's BotConfig is one.
CONFIG_LIMIT = 4096


def put_bot_config(
    cfn: Any,
    ssm: Any,
    bot_stack: str,
    path: Path,
    env: Mapping[str, str],
    out: Out = _print,
    before_writing: Callable[[], None] = lambda: None,
) -> None:
    """Put ``path`` (a deploybot.toml) into the bot stack's BotConfig parameter, after
    reading it as the bot will: a file the bot would refuse at start is refused here.
    ``before_writing``: called once the file is read as good, before any AWS call."""
    from pydantic import ValidationError

    from bot.settings import Settings, describe_errors  # the bot's own reading
    from bot.targets import BadConfig, load_targets

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StackRefused(f"cannot read {path}: {exc}") from exc
    if len(text.encode()) > CONFIG_LIMIT:
        raise StackRefused(
            f"{path} is {len(text.encode())} bytes; the bot's parameter holds {CONFIG_LIMIT}"
        )
    target = {"DEPLOY_TARGET": env["DEPLOY_TARGET"]} if env.get("DEPLOY_TARGET") else {}
    try:
        # This file only: neither DEPLOYBOT_CONFIG nor DEPLOYBOT_CONFIG_TEXT of the shell
        # (OPERATIONS.md has operators export the first), and its problems under its name.
        settings = Settings(_env_file=None, **target).model_copy(  # type: ignore[arg-type,call-arg]
            update={"deploybot_config": path, "deploybot_config_text": None}
        )
        targets = load_targets(settings)
    except BadConfig as exc:
        raise StackRefused("the bot would refuse it:\n" + "\n".join(exc.problems)) from exc
    except ValidationError as exc:
        raise StackRefused(f"bad configuration: {describe_errors(exc)}") from exc
    if targets.source is None:
        raise StackRefused(f"{path} holds no targets; add a [targets.NAME] table for each")
    before_writing()
    stack = _stack(cfn, bot_stack)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}
    if "BotConfigParameter" not in outputs:
        raise StackRefused(
            f"stack {bot_stack} has no BotConfigParameter output; run make bot-infra"
        )
    ssm.put_parameter(Name=outputs["BotConfigParameter"], Value=text, Overwrite=True)
    out(f"wrote {path} ({', '.join(targets.names)}; default {targets.default.name}) to "
        f"{outputs['BotConfigParameter']}; restart the bot's service to use it")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    default_stack = os.environ.get("STACK_NAME") or DEFAULT_STACK
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or "eu-west-1")
    commands = parser.add_subparsers(dest="command", required=True)

    service = commands.add_parser("service", help="create or update the service's stack")
    service.add_argument("--stack", default=default_stack)
    service.add_argument(
        "--env", default="", help="another environment, e.g. staging: stack STACK-staging"
    )
    service.add_argument("--template", type=Path, default=SERVICE_TEMPLATE)
    service.add_argument("--tag", help="ImageTag; default: the tag that runs now")
    service.add_argument("parameters", nargs="*", metavar="KEY=VALUE")

    bot = commands.add_parser("bot", help="create or update the bot's stack")
    bot.add_argument("--service-stack", default=default_stack)
    bot.add_argument("--stack", help="default: SERVICE_STACK-bot")
    bot.add_argument("--template", type=Path, default=BOT_TEMPLATE)
    bot.add_argument("--tag", help="the bot's ImageTag; default: the previous value")
    bot.add_argument("parameters", nargs="*", metavar="KEY=VALUE")

    ci = commands.add_parser("ci", help="create or update CI's role (GitHub OIDC, ECR push)")
    ci.add_argument("--service-stack", default=default_stack)
    ci.add_argument("--stack", help="default: SERVICE_STACK-ci")
    ci.add_argument("--template", type=Path, default=CI_TEMPLATE)
    ci.add_argument("parameters", nargs="*", metavar="KEY=VALUE")

    secret = commands.add_parser("slack-secret", help="put SLACK_* from the environment")
    secret.add_argument("--service-stack", default=default_stack)
    github = commands.add_parser("github-secret", help="put GITHUB_TOKEN from the environment")
    github.add_argument("--service-stack", default=default_stack)
    config = commands.add_parser("bot-config", help="put a deploybot.toml into the bot's stack")
    config.add_argument("file", type=Path)
    config.add_argument("--service-stack", default=default_stack)

    delete = commands.add_parser("delete", help="delete a stack (e.g. after a failed creation)")
    delete.add_argument("--stack", required=True)
    return parser


def require_credentials(session: boto3.session.Session) -> None:
    """Refuse (exit 2, one line) before any call when boto3 finds no credentials, as
    deploybot does, rather than a NoCredentialsError traceback from the first call."""
    from bot.deploy.aws import NO_CREDENTIALS

    if session.get_credentials() is None:
        raise StackRefused(NO_CREDENTIALS)


def main(argv: Sequence[str] | None = None, out: Out = _print, delay: float = 5.0) -> int:
    """The command line; returns the exit code."""
    args = _parser().parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    cfn = session.client("cloudformation")
    try:
        if args.command != "bot-config":  # it reads its file first, then asks for them
            require_credentials(session)
        if args.command == "service":
            stack, env_params = environment_stack(args.stack, args.env, out)
            given = {**env_params, **parse_assignments(args.parameters)}
            with deploy_lock(args.stack, stack, args.region, out):
                params = service_parameters(session.client("ecs"), stack, args.tag, given, out)
                template = args.template.read_text()
                deploy_stack(cfn, stack, template, params, out=out, delay=delay)
        elif args.command == "bot":
            given = parse_assignments(args.parameters)
            stack = args.stack or f"{args.service_stack}-bot"
            given["ServiceStackName"] = args.service_stack
            if args.tag:
                given["ImageTag"] = args.tag
            elif _stack(cfn, stack) is None:
                raise StackRefused("first creation of the bot's stack: give the bot's image TAG=")
            deploys = deploy_stack_names(cfn, stack, args.service_stack, given)
            if not deploys:
                raise StackRefused("DeployStackNames is empty: name the service stacks to deploy")
            given["DeployStackNames"] = ",".join(deploys)
            missing = missing_exports(cfn, deploys, args.service_stack)
            if missing:
                raise StackRefused(
                    f"no stack exports {', '.join(missing)} yet: create the service stacks "
                    "first (make infra, make infra ENV=staging)"
                )
            deploy_stack(cfn, stack, args.template.read_text(), given, out=out, delay=delay)
        elif args.command == "ci":
            given = parse_assignments(args.parameters)
            stack = args.stack or f"{args.service_stack}-ci"
            given["ServiceStackName"] = args.service_stack
            if "GitHubRepository" not in given and _stack(cfn, stack) is None:
                raise StackRefused(
                    "first creation of CI's stack: name the repository whose tags may push, "
                    'e.g. make ci-infra PARAMS="GitHubRepository=octo-org/deploybot"'
                )
            deploy_stack(cfn, stack, args.template.read_text(), given, out=out, delay=delay)
        elif args.command == "slack-secret":
            secrets = session.client("secretsmanager")
            put_slack_secret(cfn, secrets, f"{args.service_stack}-bot", os.environ, out)
        elif args.command == "bot-config":
            ssm = session.client("ssm")
            put_bot_config(
                cfn, ssm, f"{args.service_stack}-bot", args.file, os.environ, out,
                before_writing=lambda: require_credentials(session),
            )  # fmt: skip
        elif args.command == "github-secret":
            secrets = session.client("secretsmanager")
            put_github_secret(cfn, secrets, f"{args.service_stack}-bot", os.environ, out)
        else:
            delete_stack(cfn, args.stack, out=out, delay=delay)
    except StackError as exc:
        out(f"error: {exc}")
        return exc.exit_code
    except ClientError as exc:
        out(f"error: AWS said: {exc}")
        return 1
    except (NoCredentialsError, NoRegionError) as exc:  # credentials gone since the check
        out(f"error: {exc}")
        return 2
    except BotoCoreError as exc:  # no answer: endpoint unreachable, connection reset
        out(f"error: could not reach AWS: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
