"""Every AWS call the engine makes, in one thin class, so the AWS surface fits on one screen.

The clients use botocore's adaptive retry mode (client-side rate limiting plus retries on
throttling). Whatever still fails becomes ``AwsTrouble`` with a message for a person.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.retries import quota, standard
from botocore.retries.base import BaseRetryableChecker

from bot.clock import SYSTEM_CLOCK, Clock
from bot.deploy.batch import ServiceDescriptions
from bot.deploy.service_deployments import ServiceDeploymentReads
from bot.errors import AwsTrouble, NotConfigured
from bot.settings import Settings
from bot.target import Target, repository_parts

RETRY_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 10},
    connect_timeout=3,
    # ECS, ECR and DynamoDB answer in well under a second; an endpoint that accepts and then
    # says nothing must not keep a person waiting (see CONNECTION_ATTEMPTS).
    read_timeout=5,
    user_agent_extra="deploybot",
)
# Throttling is AWS asking us to slow down: adaptive mode's 10 attempts with backoff are right.
# A refused or reset connection, or a connect timeout, is not: 10 tries with exponential
# backoff (up to 20 s each, botocore's ExponentialBackoff) kept `deploybot status` waiting
# minutes before saying AWS is unreachable. Those get two tries (at worst 3 + 1 + 3 s). A read
# timeout gets one: the server took the request and said nothing for 5 s, and trying again
# doubles the wait (and repeats a write whose answer was lost). botocore's standard conditions
# count all of them transient (TransientRetryableChecker: ConnectionError, HTTPClientError):
# https://docs.aws.amazon.com/boto3/latest/guide/retries.html (standard mode: transient errors,
# backoff capped at 20 s).
CONNECTION_ATTEMPTS = 2
# UPDATE_SENT_ONCE. UpdateService is sent once (#31): retried only when AWS throttled it (a
# refusal: nothing was applied), never after a lost answer, a reset, a read timeout or a 5xx.
# An attempt whose answer was lost may have been applied, and a retry is then a second change,
# not the same one: with forceNewDeployment every call that reaches ECS starts one more
# deployment; without it, a retry that lands after the circuit breaker rolled the first
# attempt's deployment back starts the failed task definition again (found by the randomized
# lifecycle test). What ECS did is read from ECS instead: the reconcile adopts the deployment
# the call started, or proves none was. botocore's throttling conditions are its own
# (ThrottledRetryableChecker: https://docs.aws.amazon.com/boto3/latest/guide/retries.html,
# "throttling errors").


class _BriefOnConnectionErrors(BaseRetryableChecker):
    """botocore's standard retry conditions, but connection errors stop after ``attempts``."""

    def __init__(self, max_attempts: int, attempts: int) -> None:
        self._standard = standard.StandardRetryConditions(max_attempts=max_attempts)
        self._attempts = attempts

    def is_retryable(self, context: standard.RetryContext) -> bool:
        failed = context.caught_exception
        if isinstance(failed, ReadTimeoutError):
            return False
        if (
            isinstance(failed, (BotoConnectionError, HTTPClientError))
            and context.attempt_number >= self._attempts
        ):
            return False
        return bool(self._standard.is_retryable(context))


class _ThrottlingOnly(BaseRetryableChecker):
    """Retry only what AWS refused as throttling (so never applied), up to ``max_attempts``."""

    def __init__(self, max_attempts: int) -> None:
        self._max_attempts = standard.MaxAttemptsChecker(max_attempts)
        self._throttled = standard.ThrottledRetryableChecker()

    def is_retryable(self, context: standard.RetryContext) -> bool:
        return bool(
            self._max_attempts.is_retryable(context) and self._throttled.is_retryable(context)
        )


def brief_connection_retries(client: Any, attempts: int = CONNECTION_ATTEMPTS) -> None:
    """Swap the standard retry handler botocore registered for ``client`` (adaptive mode keeps
    its rate limiter, a separate handler) for one that gives up early on connection errors."""
    max_attempts = client.meta.config.retries.get("total_max_attempts", 10)
    _retry_with(client, _BriefOnConnectionErrors(max_attempts, attempts))


def throttling_retries_only(client: Any) -> None:
    """``client`` retries a call only when AWS throttled it: for calls that are not idempotent,
    whose lost answer may hide an applied change (see UPDATE_SENT_ONCE)."""
    max_attempts = client.meta.config.retries.get("total_max_attempts", 10)
    _retry_with(client, _ThrottlingOnly(max_attempts))


def _retry_with(client: Any, checker: BaseRetryableChecker) -> None:
    service = client.meta.service_model.service_id.hyphenize()
    events = client.meta.events
    # The unique id botocore.retries.standard.register_retry_handler uses.
    events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")
    quota_checker = standard.RetryQuotaChecker(quota.RetryQuota())
    events.register(f"after-call.{service}", quota_checker.release_retry_quota)
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=checker,
            retry_backoff=standard.ExponentialBackoff(),
        ),
        retry_event_adapter=standard.RetryEventAdapter(),
        retry_quota=quota_checker,
    )
    events.register(
        f"needs-retry.{service}", handler.needs_retry, unique_id=f"retry-config-{service}"
    )


# ECR's DescribeImages pages: up to 1000 images a call where the default is 100 ("This value
# can be between 1 and 1000. If this parameter isn't used, then DescribeImages returns up to
# 100 results", DescribeImages' maxResults: https://docs.aws.amazon.com/AmazonECR/latest/
# APIReference/API_DescribeImages.html): a listing of a repository of 900 images is one call.
IMAGES_PAGE = 1000
# A task definition revision never changes: a change is a new revision ("To update a task
# definition, create a task definition revision", https://docs.aws.amazon.com/AmazonECS/latest/
# developerguide/update-task-definition-console-v2.html). So a revision, named by its ARN with
# its number, is described once per process. Its only tag read here is deploybot's own
# ``deploybot:tag``, written when deploybot registers the revision.
TASK_DEFINITIONS_KEPT = 64
_REVISION_ARN = re.compile(r"^arn:[^:]+:ecs:[^:]*:[^:]*:task-definition/[^:/]+:\d+$")
# Who the AWS credentials are (STS GetCallerIdentity's ARN), by endpoint and access key: asked
# once per process. The call needs no permission ("No permissions are required to perform this
# operation", https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html),
# so no role (the bot's, CI's) grants it.
_IDENTITIES: dict[tuple[str, str], str] = {}
_IDENTITIES_LOCK = threading.Lock()

# Called with ("ecs", "DescribeServices")-style pairs before every AWS call any AwsClient makes:
# the hook the permission test uses to hold the bot's IAM role to what the engine really calls.
CALL_OBSERVERS: list[Callable[[str, str], None]] = []


# Services whose IAM prefix is not their signing name: CloudWatch signs as "monitoring", its
# actions are "cloudwatch:DescribeAlarms" ("Actions defined by Amazon CloudWatch", Service
# Authorization Reference: service prefix cloudwatch).
_IAM_PREFIX = {"monitoring": "cloudwatch"}


def _observe(model: Any, **_: Any) -> None:
    prefix = model.service_model.metadata.get("signingName") or model.service_model.endpoint_prefix
    prefix = _IAM_PREFIX.get(prefix, prefix)
    for observer in list(CALL_OBSERVERS):
        observer(str(prefix), str(model.name))


# Said by every command that finds no credentials (deploybot, tools/stack.py), exit 2.
NO_CREDENTIALS = (
    "No AWS credentials found. Set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_errors(doing: str, changed: bool = False) -> Iterator[None]:
    """Turn botocore's failures into messages a person can act on."""
    try:
        yield
    except NoCredentialsError as exc:
        raise NotConfigured(NO_CREDENTIALS) from exc
    except NoRegionError as exc:
        raise NotConfigured("No AWS region set. Set AWS_REGION.") from exc
    except (BotoConnectionError, HTTPClientError) as exc:  # refused, reset, timed out
        raise AwsTrouble(
            f"Could not reach AWS while {doing}: {exc}. "
            "Check the network, AWS_ENDPOINT_URL and AWS_REGION.",
            changed,
        ) from exc
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code in ("ThrottlingException", "Throttling", "TooManyRequestsException"):
            raise AwsTrouble(
                f"AWS is throttling requests while {doing}; it kept refusing after 10 tries. "
                "Try again in a minute.",
                changed,
            ) from exc
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            raise NotConfigured(f"AWS refused access while {doing}: {message}") from exc
        if code in ("ExpiredTokenException", "ExpiredToken", "RequestExpired"):
            raise NotConfigured(
                f"The AWS credentials have expired ({code} while {doing}). Renew them "
                "(e.g. `aws sso login`) and run the command again."
            ) from exc
        raise AwsTrouble(f"AWS said {code} while {doing}: {message}", changed) from exc
    except BotoCoreError as exc:
        raise AwsTrouble(f"AWS call failed while {doing}: {exc}", changed) from exc


def read_parameter(settings: Settings, name: str) -> str | None:
    """The value of the SSM parameter ``name``, None when there is none: the bot's
    deploybot.toml (cloudformation/bot.yml's BotConfig) for CI's notice. GetParameter is
    the one action CI's role has on it (cloudformation/ci.yml); a String parameter needs
    no decryption (Systems Manager API reference, GetParameter)."""
    session = boto3.session.Session(region_name=settings.aws_region)
    session.events.register("before-call", _observe)
    kwargs: dict[str, Any] = {"config": RETRY_CONFIG, "region_name": settings.aws_region}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    ssm = session.client("ssm", **kwargs)
    brief_connection_retries(ssm)
    with aws_errors(f"reading the parameter {name}"):
        try:
            return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise


# Targets across accounts and regions (#30). A target's service may live in another account
# (its ``role_arn``, assumed through STS) and region; the table always stays in the bot's.
# RoleSessionName: "Length Constraints: Minimum length of 2. Maximum length of 64. Pattern:
# [\\w+=,.@-]*" (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html;
# botocore's sts model says the same). The name shows in the target account's CloudTrail, in
# the assumed-role ARN of every call made with the credentials ("The role session name is
# also used in the ARN of the assumed role principal", ibid.): a change is made under a
# session named for its requester, the reads of every loop under BOT_SESSION.
SESSION_NAME_MAX = 64
BOT_SESSION = "deploybot"
_NOT_IN_SESSION_NAME = re.compile(r"[^\w+=,.@-]", re.ASCII)
# How many requesters' sessions (each its own credentials and ECS clients) a process keeps.
SESSIONS_KEPT = 32


def session_name(who: str) -> str:
    """The RoleSessionName a change requested by ``who`` (a Slack user id, DEPLOYBOT_USER) is
    made under: ``deploybot-<who>``, every character STS refuses made ``-``, at most 64."""
    cleaned = _NOT_IN_SESSION_NAME.sub("-", who.strip()).strip("-")
    return f"{BOT_SESSION}-{cleaned}"[:SESSION_NAME_MAX] if cleaned else BOT_SESSION


@dataclass(frozen=True)
class Place:
    """Where a target's service is and how the bot gets there: its region, and the role assumed
    there (None: the bot's own credentials) with the ExternalId the role's trust asks for."""

    region: str
    role_arn: str | None = None
    external_id: str | None = None


class _AssumedRole(CredentialProvider):
    """A credential provider handing out one set of refreshable assumed-role credentials."""

    METHOD = "assume-role"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


class _Clients:
    """ECS and ECR for one place under one session name (and UpdateService's ECS, on use)."""

    def __init__(self, session: boto3.session.Session, kwargs: dict[str, Any]) -> None:
        self.session = session
        self.kwargs = kwargs
        self.ecs = session.client("ecs", **kwargs)
        self.ecr = session.client("ecr", **kwargs)
        for client in (self.ecs, self.ecr):
            brief_connection_retries(client)
        self._once: Any = None
        self._extra: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def once(self) -> Any:
        with self._lock:
            if self._once is None:
                client = self.session.client("ecs", **self.kwargs)
                throttling_retries_only(client)
                self._once = client
            return self._once

    def extra(self, service: str) -> Any:
        """A client of ``service`` (CloudWatch, ELBv2…), made on first use."""
        with self._lock:
            if service not in self._extra:
                client = self.session.client(service, **self.kwargs)
                brief_connection_retries(client)
                self._extra[service] = client
            return self._extra[service]

    def describe_services(self, cluster: str, services: list[str]) -> dict[str, Any]:
        return dict(self.ecs.describe_services(cluster=cluster, services=services))


class _Places:
    """What every sibling shares: the bot's session, and each place's clients (by session
    name) and batched DescribeServices. Thread-safe."""

    def __init__(self, settings: Settings, session: boto3.session.Session, clock: Clock) -> None:
        self.settings = settings
        self.session = session
        self.clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[tuple[Place, str], _Clients] = OrderedDict()
        self._descriptions: dict[Place, ServiceDescriptions] = {}
        self._service_deployments: dict[Place, ServiceDeploymentReads] = {}

    def kwargs(self, region: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"config": RETRY_CONFIG, "region_name": region}
        if self.settings.aws_endpoint_url:
            kwargs["endpoint_url"] = self.settings.aws_endpoint_url
        return kwargs

    def clients(self, place: Place, name: str = BOT_SESSION) -> _Clients:
        key = (place, name if place.role_arn else BOT_SESSION)
        with self._lock:
            made = self._clients.get(key)
            if made is not None:
                self._clients.move_to_end(key)
                return made
        session = self.session if place.role_arn is None else self._assumed(place, key[1])
        made = _Clients(session, self.kwargs(place.region))
        with self._lock:
            made = self._clients.setdefault(key, made)
            # The requesters' sessions least used lately go first; the loops' are kept.
            requesters = [k for k in self._clients if k[1] != BOT_SESSION and k != key]
            for old in requesters[: max(0, len(self._clients) - SESSIONS_KEPT)]:
                del self._clients[old]
        return made

    def service_deployments(self, place: Place) -> ServiceDeploymentReads:
        """The place's batched DescribeServiceDeployments and its fallback switch (#26): an
        ARN is described with its own account's credentials and in its own region, under
        BOT_SESSION, through UpdateService's client (only throttling retried)."""
        clients = self.clients(place)
        with self._lock:
            made = self._service_deployments.get(place)
            if made is None:

                def describe(arns: list[str]) -> dict[str, Any]:
                    return dict(
                        clients.once.describe_service_deployments(serviceDeploymentArns=arns)
                    )

                made = self._service_deployments[place] = ServiceDeploymentReads(
                    describe, self.clock
                )
            return made

    def descriptions(self, place: Place) -> ServiceDescriptions:
        """The place's batched DescribeServices: one batch per (account, region), its calls
        made under BOT_SESSION, so no call mixes accounts or regions."""
        clients = self.clients(place)
        with self._lock:
            return self._descriptions.setdefault(
                place, ServiceDescriptions(clients.describe_services)
            )

    def _assumed(self, place: Place, name: str) -> boto3.session.Session:
        """A session whose credentials are ``place``'s role assumed under ``name``, refreshed
        by botocore before they expire (RefreshableCredentials: 15 minutes before, or at
        latest 10: botocore.credentials' advisory and mandatory refresh timeouts), through
        STS in the bot's region with the bot's own credentials."""
        sts = self.session.client("sts", **self.kwargs(self.settings.aws_region))
        brief_connection_retries(sts)
        role_arn = str(place.role_arn)
        args = {"RoleArn": role_arn, "RoleSessionName": name}
        if place.external_id:
            args["ExternalId"] = place.external_id

        def refresh() -> dict[str, str]:
            try:
                with aws_errors(f"assuming the role {role_arn}"):
                    found = sts.assume_role(**args)["Credentials"]
            except NotConfigured as exc:
                raise NotConfigured(
                    f"{exc.message.rstrip('.')}. The target's role must trust the bot's task "
                    "role (and ask for its external_id, if set): cloudformation/target-role.yml."
                ) from exc
            return {
                "access_key": str(found["AccessKeyId"]),
                "secret_key": str(found["SecretAccessKey"]),
                "token": str(found["SessionToken"]),
                "expiry_time": found["Expiration"].isoformat(),
            }

        credentials = DeferredRefreshableCredentials(
            refresh_using=refresh, method=_AssumedRole.METHOD, time_fetcher=self.clock.now
        )
        core = botocore.session.Session()
        core.register_component(
            "credential_provider", CredentialResolver([_AssumedRole(credentials)])
        )
        assumed = boto3.session.Session(botocore_session=core, region_name=place.region)
        assumed.events.register("before-call", _observe)
        return assumed


class AwsClient:
    """ECS, ECR and DynamoDB, as the engine needs them; each method is one AWS action.

    One AwsClient knows one service (``settings``' cluster, service, repository and table);
    ``sibling`` makes another target's, sharing the session, the clients (and their retry
    quotas and rate limiters) and the batched service descriptions.

    A target in another account or region (``Target.role_arn``, ``region``) has ECS and ECR
    clients of its own, under that role's credentials, and batched DescribeServices of its own
    (one batch per account, region and cluster); the table (``dynamodb``) and ``session``
    stay the bot's. A new client for the target's account and region comes from
    ``self._clients.session`` with ``self._clients.kwargs``.
    """

    def __init__(
        self,
        settings: Settings,
        session: boto3.session.Session | None = None,
        *,
        target: Target | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.session = session or boto3.session.Session(region_name=settings.aws_region)
        self.session.events.register("before-call", _observe)
        self._places = _Places(settings, self.session, clock)
        home = self._places.clients(Place(settings.aws_region))
        self.dynamodb = self.session.client("dynamodb", **home.kwargs)
        brief_connection_retries(self.dynamodb)
        self._service_revisions: dict[str, str] = {}  # revision ARN -> its task definition
        # Shared with siblings (copy.copy keeps the reference): revisions by ARN.
        self._revisions: OrderedDict[str, tuple[dict[str, Any], list[dict[str, str]]]] = (
            OrderedDict()
        )
        self._revisions_lock = threading.Lock()
        self._point_at(settings, target)

    def _point_at(self, settings: Settings, target: Target | None = None) -> None:
        self.settings = settings
        self.cluster = settings.ecs_cluster
        self.service = settings.ecs_service
        self.table = settings.deploy_table
        bot_region = self._places.settings.aws_region
        self.place = Place(
            target.region or bot_region if target else bot_region,
            target.role_arn if target else None,
            target.external_id if target and target.role_arn else None,
        )
        self.region = self.place.region  # the service's (the table's: settings.aws_region)
        self.account = target.account if target else None  # None: the bot's own
        self._clients = self._places.clients(self.place)
        self.ecs = self._clients.ecs
        self.descriptions = self._places.descriptions(self.place)
        self.service_deployments = self._places.service_deployments(self.place)
        # The repository: a name in the target's account and region, or a URI naming another
        # account's (a cross-account pull) or region's, read with registryId.
        registry, repository_region, self.repository = repository_parts(settings.ecr_repository)
        self.registry = registry  # None: the target's own account
        self._registry: dict[str, str] = {"registryId": registry} if registry else {}
        if registry is None or registry == self.account:
            ecr_place = Place(repository_region or self.place.region, *_role(self.place))
        else:  # another account's repository: the bot's own credentials read it
            ecr_place = Place(repository_region or bot_region)
        self.ecr = self._places.clients(ecr_place).ecr

    def sibling(self, settings: Settings, target: Target | None = None) -> AwsClient:
        """This client for another service (``settings``' cluster, service, repository;
        ``target``'s account and region), sharing its session, boto3 clients and batched
        DescribeServices (per account and region)."""
        other = copy.copy(self)
        other._point_at(settings, target)
        return other

    # STS ---------------------------------------------------------------------------------
    def caller_arn(self) -> str:
        """The ARN of the identity these credentials are (STS GetCallerIdentity), asked once per
        process and credentials; "" when it cannot be told (no credentials, AWS unreachable):
        what it is recorded beside is never held up by it."""
        try:
            credentials = self.session.get_credentials()
        except BotoCoreError:
            credentials = None
        if credentials is None:
            return ""
        key = (self.settings.aws_endpoint_url or "", str(credentials.access_key))
        with _IDENTITIES_LOCK:
            known = _IDENTITIES.get(key)
        if known is not None:
            return known
        kwargs: dict[str, Any] = {"config": RETRY_CONFIG, "region_name": self.settings.aws_region}
        if self.settings.aws_endpoint_url:
            kwargs["endpoint_url"] = self.settings.aws_endpoint_url
        sts = self.session.client("sts", **kwargs)
        brief_connection_retries(sts)
        try:
            arn = str(sts.get_caller_identity().get("Arn", ""))
        except (BotoCoreError, ClientError):
            return ""  # asked again by the next command; the change goes on without it
        with _IDENTITIES_LOCK:
            _IDENTITIES[key] = arn
        return arn

    @property
    def ecs_once(self) -> Any:
        """ECS retrying only throttled calls, for UpdateService (UPDATE_SENT_ONCE)."""
        return self._clients.once

    # ECS ---------------------------------------------------------------------------------

    def describe_service(self, max_age: float = 0.0) -> dict[str, Any] | None:
        """The service, or None when the cluster or service does not exist. ``max_age``: a
        description that old is good enough (a poll); it is then batched with the cluster's
        other watched services (bot/deploy/batch.py). 0: read now."""
        return self.descriptions.get(self.cluster, self.service, max_age)

    def describe_task_definition(self, arn: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """The revision and its tags; a revision named by its full ARN is asked for once (see
        TASK_DEFINITIONS_KEPT), a family name or ``family:3`` every time. Copies: a caller
        may change what it gets."""
        with self._revisions_lock:
            kept = self._revisions.get(arn)
            if kept is not None:
                self._revisions.move_to_end(arn)
        if kept is None:
            resp = self.ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
            kept = dict(resp["taskDefinition"]), list(resp.get("tags", []))
            if _REVISION_ARN.match(arn) and kept[0].get("taskDefinitionArn") == arn:
                with self._revisions_lock:
                    self._revisions[arn] = kept
                    while len(self._revisions) > TASK_DEFINITIONS_KEPT:
                        self._revisions.popitem(last=False)
        return copy.deepcopy(kept[0]), [dict(t) for t in kept[1]]

    def register_task_definition(self, **kwargs: Any) -> dict[str, Any]:
        return dict(self.ecs.register_task_definition(**kwargs)["taskDefinition"])

    def update_service(self, task_definition: str, force: bool = False) -> dict[str, Any]:
        """UpdateService, sent once (retried only when throttled: UPDATE_SENT_ONCE); a lost
        answer is the caller's to follow to what ECS did."""
        # Whatever its answer, the next poll must read what ECS says after this call (a poll
        # while it is on its way may have cached what ECS said before it).
        self.descriptions.forget(self.cluster, self.service)
        try:
            resp = self.ecs_once.update_service(
                cluster=self.cluster,
                service=self.service,
                taskDefinition=task_definition,
                forceNewDeployment=force,
            )
        finally:
            self.descriptions.forget(self.cluster, self.service)
        return dict(resp["service"])

    def stopped_tasks(self, known: set[str]) -> list[dict[str, Any]]:
        """Stopped tasks of the service not in ``known`` (ListTasks, then DescribeTasks)."""
        arns = self.ecs.list_tasks(
            cluster=self.cluster, serviceName=self.service, desiredStatus="STOPPED"
        ).get("taskArns", [])
        fresh = [arn for arn in arns if arn not in known][:100]
        if not fresh:
            return []
        return list(self.ecs.describe_tasks(cluster=self.cluster, tasks=fresh).get("tasks", []))

    # ECR ---------------------------------------------------------------------------------
    def image(self, tag: str) -> dict[str, Any] | None:
        """The image details for ``tag``, or None when no image has that tag."""
        try:
            resp = self.ecr.describe_images(
                repositoryName=self.repository, imageIds=[{"imageTag": tag}], **self._registry
            )
        except ClientError as exc:
            if error_code(exc) == "ImageNotFoundException":
                return None
            raise
        images = resp.get("imageDetails", [])
        return dict(images[0]) if images else None

    def image_by_digest(self, digest: str) -> dict[str, Any] | None:
        """The image details for ``digest`` (sha256:…), or None when ECR no longer has it."""
        try:
            resp = self.ecr.describe_images(
                repositoryName=self.repository,
                imageIds=[{"imageDigest": digest}],
                **self._registry,
            )
        except ClientError as exc:
            if error_code(exc) in ("ImageNotFoundException", "InvalidParameterException"):
                return None
            raise
        images = resp.get("imageDetails", [])
        return dict(images[0]) if images else None

    def images(self) -> list[dict[str, Any]]:
        """Every image in the repository (paginated DescribeImages)."""
        out: list[dict[str, Any]] = []
        for page in self.ecr.get_paginator("describe_images").paginate(
            repositoryName=self.repository,
            PaginationConfig={"PageSize": IMAGES_PAGE},
            **self._registry,
        ):
            out.extend(page.get("imageDetails", []))
        return out

    # CloudWatch (the alarms checked before a deploy: bot/deploy/alarms.py) ----------------
    @property
    def cloudwatch(self) -> Any:
        """CloudWatch's client in the target's account and region (its alarms are there),
        made on first use: only targets with alarms need it."""
        return self._places.clients(self.place).extra("cloudwatch")

    def describe_alarms(self, names: list[str]) -> list[dict[str, Any]]:
        """The metric and composite alarms named ``names`` (DescribeAlarms); a name with no
        alarm is simply absent from the answer. At most 100 names a call ("AlarmNames …
        Maximum number of 100 items", CloudWatch API reference, DescribeAlarms), paged."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(names), 100):
            pages = self.cloudwatch.get_paginator("describe_alarms").paginate(
                AlarmNames=names[start : start + 100],
                AlarmTypes=["MetricAlarm", "CompositeAlarm"],
            )
            for page in pages:
                found += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
        return found

    # A deployment paused at a hook (bot/deploy/pausing.py) -------------------------------
    def continue_service_deployment(self, arn: str, hook_id: str, action: str) -> None:
        """ContinueServiceDeployment, sent once (retried only when throttled, as UpdateService:
        a lost answer may hide a decision ECS took; it is read back from ECS, never sent
        twice). What was read of the service and its deployment is forgotten after it."""
        try:
            self.ecs_once.continue_service_deployment(
                serviceDeploymentArn=arn, hookId=hook_id, action=action
            )
        finally:
            self.descriptions.forget(self.cluster, self.service)
            self.service_deployments.forget(arn)

    @property
    def elbv2(self) -> Any:
        """Elastic Load Balancing v2 in the target's account and region, made on first use
        (only the test listener's URL needs it)."""
        return self._places.clients(self.place).extra("elbv2")

    def test_listener(self, rule_arn: str) -> tuple[str, int, str]:
        """The load balancer's DNS name, the port and protocol of the listener holding
        ``rule_arn`` (ECS's ``advancedConfiguration.testListenerRule``; the rule's ARN names
        its listener): DescribeListeners, DescribeLoadBalancers."""
        listener_arn = _listener_of_rule(rule_arn)
        if not listener_arn:
            raise ValueError(f"{rule_arn} is not a listener rule's ARN")
        listener = self.elbv2.describe_listeners(ListenerArns=[listener_arn])["Listeners"][0]
        balancer = self.elbv2.describe_load_balancers(
            LoadBalancerArns=[listener["LoadBalancerArn"]]
        )["LoadBalancers"][0]
        return (
            str(balancer.get("DNSName", "")),
            int(listener.get("Port", 80)),
            str(listener.get("Protocol", "HTTP")),
        )

    # Across accounts (#30) ---------------------------------------------------------------
    @property
    def scope(self) -> str:
        """The target's items in the table: ``cluster/service``, and for a service in another
        account or region ``account/region/cluster/service`` (two accounts may name their
        services alike; one table holds both)."""
        here = f"{self.cluster}/{self.service}"
        if self.place == Place(self._places.settings.aws_region):
            return here
        return f"{self.account or 'bot'}/{self.region}/{here}"

    def acting_for(self, who: str) -> AwsClient:
        """This client with its target's ECS under a session named for ``who``
        (``session_name``), for the calls of a change ``who`` asked for: the target account's
        CloudTrail shows who. Itself for a target in the bot's own account (no role)."""
        if self.place.role_arn is None:
            return self
        other = copy.copy(self)
        other._clients = self._places.clients(self.place, session_name(who))
        other.ecs = other._clients.ecs
        return other

    def repository_policy(self) -> str | None:
        """The repository's policy text (GetRepositoryPolicy), None when it has none."""
        try:
            resp = self.ecr.get_repository_policy(repositoryName=self.repository, **self._registry)
        except ClientError as exc:
            if error_code(exc) == "RepositoryPolicyNotFoundException":
                return None
            raise
        return str(resp.get("policyText") or "") or None

    # ECS service deployments (#26) ----------------------------------------------------------
    # Through ``ecs_once``: only throttling is retried, so an endpoint that answers 5xx (moto's
    # server, for operations it lacks) costs one request, not botocore's retries at every poll.
    # A failure raises service_deployments.Unavailable (refused: the fallback, for a while).
    def service_deployment(self, arn: str, max_age: float = 0.0) -> dict[str, Any] | None:
        """DescribeServiceDeployments of ``arn`` (batched with the other watched ARNs of every
        target, up to 20 a call); None when ECS does not know it."""
        return self.service_deployments.get(arn, max_age)

    def list_service_deployments(self, created_after: datetime) -> list[dict[str, Any]]:
        """ListServiceDeployments of this service created after ``created_after``: one page
        (ECS's default, 20 of them; a deployment just started is among them)."""
        self.service_deployments.check()
        try:
            resp = self.ecs_once.list_service_deployments(
                cluster=self.cluster,
                service=self.service,
                # An ISO 8601 text botocore turns into the wire's timestamp, as a datetime.
                createdAt={"after": created_after.isoformat()},
            )
        except (ClientError, BotoCoreError) as exc:
            raise self.service_deployments.failed(exc, "ListServiceDeployments") from exc
        self.service_deployments.answered()
        return [dict(b) for b in resp.get("serviceDeployments", [])]

    def revision_task_definitions(self, arns: list[str]) -> dict[str, str]:
        """The task definition of each service revision (DescribeServiceRevisions, 20 a call);
        a revision never changes, so each is asked for once per process."""
        out = {a: self._service_revisions[a] for a in arns if a in self._service_revisions}
        missing = [a for a in dict.fromkeys(arns) if a not in out]
        for start in range(0, len(missing), 20):
            try:
                resp = self.ecs_once.describe_service_revisions(
                    serviceRevisionArns=missing[start : start + 20]
                )
            except (ClientError, BotoCoreError) as exc:
                raise self.service_deployments.failed(exc, "DescribeServiceRevisions") from exc
            for revision in resp.get("serviceRevisions", []):
                arn = str(revision.get("serviceRevisionArn", ""))
                out[arn] = self._service_revisions[arn] = str(revision.get("taskDefinition", ""))
        return out

    def stop_service_deployment(self, arn: str, stop_type: str = "ROLLBACK") -> str:
        """StopServiceDeployment: ECS stops the deployment (ROLLBACK: back to the previous
        service revision, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
        API_StopServiceDeployment.html). Sent once (UPDATE_SENT_ONCE's client); raises what
        botocore raises: the caller tells a refusal from a lost answer."""
        self.descriptions.forget(self.cluster, self.service)
        self.service_deployments.forget(arn)
        try:
            resp = self.ecs_once.stop_service_deployment(
                serviceDeploymentArn=arn, stopType=stop_type
            )
        finally:
            self.descriptions.forget(self.cluster, self.service)
            self.service_deployments.forget(arn)
        return str(resp.get("serviceDeploymentArn", arn))

    # The plan's checks (bot/deploy/plan_checks.py): does what a new revision needs exist?
    # Reads of metadata only: never a secret's or a parameter's value. --------------------
    def _reader(self, service: str, region: str = "") -> Any:
        """A client of ``service`` in the target's account, in ``region`` (default the
        target's), made on first use."""
        place = self.place
        if region and region != place.region:
            place = dataclasses.replace(place, region=region)
        return self._places.clients(place).extra(service)

    def role_exists(self, name: str) -> bool:
        """IAM GetRole: whether the role ``name`` exists (NoSuchEntity: it does not)."""
        try:
            self._reader("iam").get_role(RoleName=name)
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return False
            raise
        return True

    def log_group_exists(self, name: str, region: str = "") -> bool:
        """CloudWatch Logs DescribeLogGroups by prefix: whether the group ``name`` exists."""
        logs = self._reader("logs", region)
        for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name):
            if any(g.get("logGroupName") == name for g in page.get("logGroups", [])):
                return True
        return False

    def secret_exists(self, secret_id: str, region: str = "") -> bool:
        """Secrets Manager DescribeSecret (metadata, never the value): whether it exists and
        is not scheduled for deletion."""
        try:
            found = self._reader("secretsmanager", region).describe_secret(SecretId=secret_id)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False
            raise
        return not found.get("DeletedDate")

    def parameter_exists(self, name: str, region: str = "") -> bool:
        """SSM DescribeParameters with a Name filter (metadata, never the value): whether the
        parameter ``name`` exists."""
        found = self._reader("ssm", region).describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
        )
        return bool(found.get("Parameters"))


def _role(place: Place) -> tuple[str | None, str | None]:
    return place.role_arn, place.external_id


def _listener_of_rule(rule_arn: str) -> str:
    """A listener rule's ARN names its listener: ``…:listener-rule/app/NAME/LB/LISTENER/RULE``
    is a rule of ``…:listener/app/NAME/LB/LISTENER`` (Elastic Load Balancing's ARN formats,
    https://docs.aws.amazon.com/service-authorization/latest/reference/
    list_awselasticloadbalancingv2.html#awselasticloadbalancingv2-resources-for-iam-policies)."""
    head, sep, path = rule_arn.partition(":listener-rule/")
    if not sep:
        return ""
    return f"{head}:listener/{path.rsplit('/', 1)[0]}"
