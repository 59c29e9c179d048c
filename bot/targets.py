"""Targets: the ECS services deploybot deploys and their rules, from deploybot.toml or the env.

A target is a name (``staging``, ``production``, ``billing-production``…), one ECS service,
and the rules that guard it. With ``DEPLOYBOT_CONFIG`` they come from that TOML file, read
with pydantic-settings' own TOML source and checked at start: every problem is reported
with the file and the key (``deploybot.toml: targets.production.after: no target named
'stagin' (known: staging, production)``). Without it, today's variables (``ECS_CLUSTER``,
``ECS_SERVICE``, ``ECR_REPOSITORY``, ``DEPLOY_ALLOWED_USERS``/``CHANNELS``) are one target
named ``DEPLOY_TARGET``, with no rules, so a single-service team changes nothing.

One engine knows one service: ``Target.settings(base)`` gives the settings an engine for
that target is built from. The table (``DEPLOY_TABLE``) is shared by every target.
"""

from __future__ import annotations

import difflib
import re
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.digest import DigestError, Schedule, parse_schedule
from bot.errors import DeployRefused, NotConfigured
from bot.mrkdwn import is_group_id, is_user_id
from bot.settings import Settings
from bot.target import (
    EVERYONE,
    REPOSITORY_URI,
    ChannelSink,
    Target,
    WebhookSink,
    account_of,
    repository_parts,
)
from bot.windows import Window, WindowError, parse_window

# Names people type after `to` and `--target`: letters, digits, - and _, a letter or digit first.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


class UnknownTarget(DeployRefused):
    """No target of that name; the message names the known ones (exit 2)."""

    def __init__(self, message: str, name: str, known: Sequence[str]) -> None:
        super().__init__(message)
        self.name = name
        self.known = tuple(known)


class BadConfig(NotConfigured):
    """deploybot.toml (or DEPLOY_TARGET) is wrong; one line a problem, each naming file and key."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Targets:
    """Every target, in the file's order, and the default one (``DEPLOY_TARGET``)."""

    targets: tuple[Target, ...]
    default_name: str
    source: str | None = None  # the file they came from; None: the environment
    _by_name: dict[str, Target] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.name: t for t in self.targets})
        if self.default_name not in self._by_name:
            raise ValueError(f"default target {self.default_name!r} is not one of the targets")

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)

    @property
    def default(self) -> Target:
        return self._by_name[self.default_name]

    def get(self, name: str | None = None) -> Target:
        """The target called ``name`` (None: the default); UnknownTarget names the known ones."""
        if name is None:
            return self.default
        found = self._by_name.get(name) or self._by_name.get(name.strip().lower())
        if found is not None:
            return found
        known = ", ".join(self.names)
        close = difflib.get_close_matches(name, self.names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownTarget(f"no target named {name!r} (known: {known}){hint}", name, self.names)

    def for_channel(self, channel: str) -> list[Target]:
        """The targets that answer in ``channel``: those listing it, and those listing none."""
        return [t for t in self.targets if t.serves_channel(channel)]

    def promotions_from(self, name: str) -> list[Target]:
        """The targets that take their images from ``name`` (``after = name``)."""
        return [t for t in self.targets if t.after == name]

    def direct(self) -> list[Target]:
        """The targets that take any image directly (no ``after``): CI notices' buttons."""
        return [t for t in self.targets if t.after is None]


# --- deploybot.toml ------------------------------------------------------------------------


EventKind = Literal[
    "started", "completed", "failed", "rolled_back", "aborted", "replaced", "not_started"
]


class _NotifyTable(BaseModel):
    """One ``notify`` entry: a Slack channel (an id ``C…``, or ``#name``) and what it hears."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    channel: str = Field(min_length=1, max_length=80)
    on: list[EventKind] = Field(min_length=1)


class _WebhookTable(BaseModel):
    """One ``webhooks`` entry. The secret is never in the file: ``secret_env`` names the
    variable that holds it (the bot's environment; on ECS a task secret)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    on: list[EventKind] = Field(min_length=1)
    secret_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")
    format: Literal["deploybot", "grafana", "datadog"] = "deploybot"


class _TargetTable(BaseModel):
    """One ``[targets.NAME]`` table, as written. Strict: TOML has real types, so a string
    where a number belongs is a mistake to report, not a value to coerce."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cluster: str = Field(min_length=1)
    service: str = Field(min_length=1)
    repository: str = Field(min_length=1)
    container: str | None = Field(None, min_length=1)
    after: str | None = None
    deployers: list[str] | None = None
    channels: list[str] | None = None
    freeze_after_failure: bool = False
    approvals: Literal[0, 1, 2] = 0
    approvers: list[str] = []
    approval_expiry_minutes: int = Field(30, ge=1, le=24 * 60)
    windows: list[str] = []
    queue_limit: int = Field(3, ge=1, le=100)
    digest: str | None = None
    # CloudWatch alarms checked before a deploy (bot/deploy/alarms.py), beside those ECS
    # watches for the service. DescribeAlarms takes at most 100 names a call; a name is 1 to
    # 255 characters (CloudWatch API reference, DescribeAlarms: AlarmNames).
    alarms: list[str] = Field([], max_length=100)
    # A deployment ECS pauses at a hook (#27, bot/deploy/pausing.py): the path the bot asks
    # on the test listener before anyone continues, and where that listener is when the bot
    # does not reach it by its load balancer's DNS name.
    verify_path: str | None = Field(None, pattern=r"^/[^\s]*$", max_length=512)
    test_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=512)
    # Deploy on push, notify, webhooks (issue 30; bot/slack/auto.py, bot/notify.py).
    auto_deploy: bool = False
    notify: list[_NotifyTable] = Field([], max_length=20)
    webhooks: list[_WebhookTable] = Field([], max_length=20)
    # Targets across accounts and regions (#30): checked in _account_problems.
    region: str | None = None
    role_arn: str | None = None
    external_id: str | None = None


class _ConfigFile(BaseSettings):
    """The whole file. Its only source is the TOML file (no environment, no .env): the
    path comes from a subclass made per file (see _read), since the source reads
    ``toml_file`` from the model's config."""

    # Lenient here, strict below: each table is checked on its own (_load_file), so one
    # reading reports every problem of every table, not the first kind it meets.
    model_config = SettingsConfigDict(extra="allow", frozen=True)

    targets: Any = None
    # The whole fleet's digest schedule: every target that does not set its own.
    digest: Any = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (TomlConfigSettingsSource(settings_cls),)


_KNOWN_KEYS = ", ".join(_TargetTable.model_fields)


def _read(path: Path, shown: str) -> _ConfigFile:
    class _ThisFile(_ConfigFile):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return _ThisFile()
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig([f"{shown}: not valid TOML: {exc}"]) from exc


def _tables(config: _ConfigFile, shown: str) -> tuple[dict[str, Any], list[str]]:
    """The ``[targets.NAME]`` tables as written, and what is wrong around them."""
    problems: list[str] = []
    raw = config.targets
    if not raw:
        problems.append(
            f"{shown}: targets: no targets; add a [targets.NAME] table for each"
            + (" service" if raw is None else "")
        )
    problems += [
        f"{shown}: {key}: unknown key (the file holds [targets.NAME] tables)"
        for key in config.model_extra or {}
    ]
    if raw is not None and not isinstance(raw, dict):
        problems.append(f"{shown}: targets: not a table; write a [targets.NAME] table for each")
        raw = {}
    tables: dict[str, Any] = {}
    for name, table in (raw or {}).items():
        if isinstance(table, dict):
            tables[name] = table
        else:
            problems.append(
                f"{shown}: targets.{name}: not a table ([targets.{name}] holds its keys)"
            )
    return tables, problems


def _problem(error: Any) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    key = ".".join(str(part) for part in error["loc"])
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        if error["loc"] == ("targets",):
            return "targets: no targets; add a [targets.NAME] table for each service"
        return f"{key}: missing (every target names its cluster, service and repository)"
    if kind == "extra_forbidden":
        if len(error["loc"]) == 1:
            return f"{key}: unknown key (the file holds [targets.NAME] tables)"
        return f"{key}: unknown key (known: {_KNOWN_KEYS})"
    given = error.get("input")
    shown = f" (got {given!r})" if isinstance(given, str | int | float | bool) else ""
    return f"{key}: {message.removeprefix('Value error, ')}{shown}"


def _id_problem(value: str, kind: str) -> str | None:
    where = (
        "U…, from their profile → ⋮ → Copy member ID"
        if kind == "user"
        else "C…, at the bottom of the channel's About tab"
    )
    # deployers and approvers may name Slack user groups (S…), resolved by the bot
    # (bot/slack/groups.py): an id Slack gives as usergroups.list's ``id``.
    if kind == "user" and is_group_id(value):
        return None
    if value[:1] in ("@", "#", "<"):
        return f"{value!r} is a name, not a Slack {kind} id ({where})"
    # A user id is U… (W… on Enterprise Grid), upper-case letters and digits (bot.mrkdwn):
    # a name there would let nobody deploy or approve. Channel ids are only caught when they
    # are surely not one: Slack asks apps not to assume their characters
    # (api.slack.com/changelog/2016-08-11-user-id-format-changes).
    if kind == "user" and not is_user_id(value):
        return f"{value!r} is not a Slack user id: use ids, not names ({where})"
    if not value or value != value.strip() or " " in value:
        return f"{value!r} is not a Slack {kind} id ({where})"
    return None


def _table_problems(name: str, raw: dict[str, Any], key: str) -> list[str]:
    """What a table's values say wrong beyond their types, read from the table as written:
    a table whose types are wrong is still read for these, so one reading says everything."""
    problems: list[str] = []
    if not _NAME.fullmatch(name):
        problems.append(f"{key}: {name!r} is not a target name (letters, digits, - and _)")
    windows = raw.get("windows")
    for index, text in enumerate(windows if isinstance(windows, list) else ()):
        if isinstance(text, str):
            try:
                parse_window(text)
            except WindowError as exc:
                problems.append(f"{key}.windows.{index}: {exc}")
    for field_name, kind in (("deployers", "user"), ("approvers", "user"), ("channels", "channel")):
        values = raw.get(field_name)
        for index, value in enumerate(values if isinstance(values, list) else ()):
            if not isinstance(value, str) or (value == EVERYONE and field_name == "deployers"):
                continue
            why = _id_problem(value, kind)
            if why:
                problems.append(f"{key}.{field_name}.{index}: {why}")
    approvals, approvers = raw.get("approvals", 0), raw.get("approvers", [])
    if isinstance(approvals, int) and approvals in (1, 2) and isinstance(approvers, list):
        listed = len({a for a in approvers if isinstance(a, str)})
        # A user group may hold as many approvers as needed: its members are read later.
        if listed < approvals and not any(is_group_id(str(a)) for a in approvers):
            need = "1 approver" if approvals == 1 else f"{approvals} approvers"
            problems.append(
                f"{key}.approvers: approvals = {approvals} needs at least {need}, {listed} listed"
            )
    if approvers and approvals == 0 and isinstance(approvers, list):
        problems.append(f"{key}.approvers: listed, but approvals = 0 asks for none; set approvals")
    digest = raw.get("digest")
    if isinstance(digest, str):
        problems += _digest_problems(digest, f"{key}.digest")
    alarms = raw.get("alarms")
    for index, name in enumerate(alarms if isinstance(alarms, list) else ()):
        if isinstance(name, str) and not (0 < len(name) <= 255 and name == name.strip()):
            problems.append(
                f"{key}.alarms.{index}: {name!r} is not a CloudWatch alarm name (1 to 255 "
                "characters, no spaces around it)"
            )
    problems += _auto_deploy_problems(raw, key)
    problems += _account_problems(raw, key)
    return problems


# AWS region names: us-east-1, eu-west-1, ap-southeast-2, us-gov-west-1…
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
# STS AssumeRole's ExternalId: "Length Constraints: Minimum length of 2. Maximum length of
# 1224. Pattern: [\w+=,.@:\/-]*" (https://docs.aws.amazon.com/STS/latest/APIReference/
# API_AssumeRole.html; botocore's sts model says the same).
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")


def _account_problems(raw: dict[str, Any], key: str) -> list[str]:
    """region, role_arn, external_id and a repository URI, beyond their types."""
    problems: list[str] = []
    region, role_arn, external_id = raw.get("region"), raw.get("role_arn"), raw.get("external_id")
    if isinstance(region, str) and not _REGION.fullmatch(region):
        problems.append(f"{key}.region: {region!r} is not an AWS region (e.g. us-east-1)")
    if isinstance(role_arn, str) and account_of(role_arn) is None:
        problems.append(
            f"{key}.role_arn: {role_arn!r} is not an IAM role ARN "
            "(arn:aws:iam::222222222222:role/NAME: the TargetRoleArn output of "
            "cloudformation/target-role.yml in the target's account)"
        )
    if isinstance(external_id, str):
        if role_arn is None:
            problems.append(f"{key}.external_id: set, but no role_arn to assume with it")
        elif not _EXTERNAL_ID.fullmatch(external_id):
            problems.append(
                f"{key}.external_id: 2 to 1224 letters, digits and +=,.@:/-_ (STS's ExternalId)"
            )
    repository = raw.get("repository")
    uri = isinstance(repository, str) and ".dkr.ecr." in repository
    if uri and not REPOSITORY_URI.fullmatch(str(repository)):
        problems.append(
            f"{key}.repository: {repository!r} is neither a repository name nor its URI "
            "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME)"
        )
    return problems


def _auto_deploy_problems(raw: dict[str, Any], key: str) -> list[str]:
    """``auto_deploy`` deploys CI's image without a person: refused at load where that would
    skip what the file asks for (approvals) or could not happen (``after``)."""
    if raw.get("auto_deploy") is not True:
        return []
    if isinstance(raw.get("approvals"), int) and raw.get("approvals"):
        return [
            f"{key}.auto_deploy: this target needs approvals = {raw['approvals']}, and a deploy "
            "on push has nobody to approve it; remove auto_deploy (its CI notices keep their "
            "Deploy button) or approvals"
        ]
    if raw.get("after"):
        return [
            f"{key}.auto_deploy: this target takes images only from {raw['after']} (after), "
            "through its Promote button; CI's notices do not offer it, so remove auto_deploy"
        ]
    return []


def _digest_problems(text: Any, key: str) -> list[str]:
    if not isinstance(text, str):
        return [f'{key}: a string, e.g. digest = "Mon 09:00 Europe/Madrid" (got {text!r})']
    try:
        parse_schedule(text)
    except DigestError as exc:
        return [f"{key}: {exc}"]
    return []


def _digest_or_none(text: str | None) -> Schedule | None:
    try:
        return parse_schedule(text) if text is not None else None
    except DigestError:
        return None  # said by _digest_problems: a file with any problem gives no Targets


def _target(
    name: str, table: _TargetTable, settings: Settings, source: str, digest: str | None = None
) -> Target:
    """The target a table of the right types describes (a window that does not parse is left
    out: _table_problems said so, and a file with any problem gives no Targets)."""
    deployers = settings.deploy_allowed_users if table.deployers is None else table.deployers
    channels = settings.deploy_allowed_channels if table.channels is None else table.channels
    return Target(
        name=name,
        cluster=table.cluster,
        service=table.service,
        repository=table.repository,
        container=table.container,
        after=table.after,
        deployers=frozenset(deployers),
        channels=frozenset(channels),
        freeze_after_failure=table.freeze_after_failure,
        approvals=table.approvals,
        approvers=tuple(dict.fromkeys(table.approvers)),
        approval_expiry_minutes=table.approval_expiry_minutes,
        windows=tuple(w for w in map(_window_or_none, table.windows) if w is not None),
        queue_limit=table.queue_limit,
        digest=_digest_or_none(table.digest if table.digest is not None else digest),
        alarms=tuple(dict.fromkeys(table.alarms)),
        source=source,
        verify_path=table.verify_path,
        test_url=table.test_url.rstrip("/") if table.test_url else None,
        auto_deploy=table.auto_deploy,
        notify=tuple(ChannelSink(n.channel, frozenset(n.on)) for n in table.notify),
        webhooks=tuple(
            WebhookSink(w.url, frozenset(w.on), w.secret_env, w.format) for w in table.webhooks
        ),
        region=table.region,
        role_arn=table.role_arn,
        external_id=table.external_id,
    )


def _window_or_none(text: str) -> Window | None:
    try:
        return parse_window(text)
    except WindowError:
        return None


def _between_targets(targets: dict[str, Target], shown: str, names: Sequence[str]) -> list[str]:
    """What no single table can say wrong: after's target, cycles, one service twice.
    ``names``: every table's name, including those too wrong to be a Target."""
    problems: list[str] = []
    known = ", ".join(names)
    services: dict[tuple[str, str, str, str], str] = {}
    for name, target in targets.items():
        key = f"{shown}: targets.{name}"
        # Two accounts (or regions) may name their services alike: each is its own.
        place = (target.account or "", target.region or "", target.cluster, target.service)
        if place in services:
            problems.append(
                f"{key}: cluster {target.cluster!r}, service {target.service!r} is already "
                f"targets.{services[place]} (a service is one target: one lock, one history)"
            )
        services.setdefault(place, name)
        if target.after is None:
            continue
        if target.after == name:
            problems.append(f"{key}.after: a target cannot come after itself")
            continue
        before = targets.get(target.after)
        if before is None:
            if target.after not in names:
                problems.append(f"{key}.after: no target named {target.after!r} (known: {known})")
            continue
        # Across accounts the repositories are two (ECR replication) or one named by its URI
        # (a cross-account pull): one name either way; whether the target can pull the digest
        # is checked at each promotion (Fleet.plan).
        if repository_parts(before.repository)[2] != repository_parts(target.repository)[2]:
            problems.append(
                f"{key}.after: {target.after} runs images of {before.repository!r}, {name} of "
                f"{target.repository!r}; promotion deploys the same image, so one repository"
            )
        chain: list[str] = [name]
        step: str | None = target.after
        while step is not None and step in targets and step not in chain:
            chain.append(step)
            step = targets[step].after
        if step == name:
            loop = " → ".join([*chain, name])
            problems.append(f"{key}.after: promotion goes round in a circle ({loop})")
    return problems


def load_targets(settings: Settings) -> Targets:
    """The targets ``settings`` describe: from DEPLOYBOT_CONFIG's file, else the environment.

    Raises BadConfig (exit 2) listing every problem, each naming the file and the key.
    """
    if _config_text(settings) is not None:
        if settings.deploybot_config is not None:
            raise BadConfig(
                ["DEPLOYBOT_CONFIG and DEPLOYBOT_CONFIG_TEXT are both set: set one of them"]
            )
        # The same reading as a file's (one loader, one set of messages), from a file of
        # our own that lives as long as the reading.
        with tempfile.TemporaryDirectory(prefix="deploybot-config-") as tmp:
            path = Path(tmp, "deploybot.toml")
            path.write_text(settings.deploybot_config_text or "", encoding="utf-8")
            return _load_file(settings, path, "DEPLOYBOT_CONFIG_TEXT")
    default = settings.deploy_target
    if settings.deploybot_config is None:
        if not _NAME.fullmatch(default):
            raise BadConfig(
                [f"DEPLOY_TARGET: {default!r} is not a target name (letters, digits, - and _)"]
            )
        only = Target(
            name=default,
            cluster=settings.ecs_cluster,
            service=settings.ecs_service,
            repository=settings.ecr_repository,
            container=settings.ecs_container,
            deployers=settings.deploy_allowed_users,
            channels=settings.deploy_allowed_channels,
        )
        return Targets((only,), default)

    path = settings.deploybot_config
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "does not exist"
        raise BadConfig([f"{path}: {why} (DEPLOYBOT_CONFIG names it)"])
    return _load_file(settings, path, str(path))


def _config_text(settings: Settings) -> str | None:
    """DEPLOYBOT_CONFIG_TEXT, unless it holds no TOML at all (blank, or comments only: what
    bot.yml's parameter holds until someone puts a file there)."""
    text = settings.deploybot_config_text
    if text is None:
        return None
    try:
        return text if tomllib.loads(text) else None
    except tomllib.TOMLDecodeError:
        return text  # not valid TOML: the reading says so, naming the variable


def _load_file(settings: Settings, path: Path, shown: str) -> Targets:
    default = settings.deploy_target
    config = _read(path, shown)
    tables, problems = _tables(config, shown)
    fleet_digest = config.digest
    if fleet_digest is not None:
        problems += [f"{shown}: {p}" for p in _digest_problems(fleet_digest, "digest")]
    built: dict[str, Target] = {}
    for name, raw in tables.items():
        key = f"targets.{name}"
        found = _table_problems(name, raw, key)
        try:
            table = _TargetTable.model_validate(raw)
        except ValidationError as exc:
            found = [
                _problem({**error, "loc": ("targets", name, *error["loc"])})
                for error in exc.errors()
            ] + found
            after = raw.get("after")
            if isinstance(after, str) and after not in tables:
                known = ", ".join(tables)
                found.append(f"{key}.after: no target named {after!r} (known: {known})")
        else:
            built[name] = _target(
                name,
                table,
                settings,
                shown,
                fleet_digest if isinstance(fleet_digest, str) else None,
            )
        problems += [f"{shown}: {p}" for p in found]
    problems += _between_targets(built, shown, list(tables))
    if not tables:
        raise BadConfig(problems)
    if default not in tables:
        known = ", ".join(tables)
        if "deploy_target" in settings.model_fields_set:
            problems.append(
                f"DEPLOY_TARGET: no target named {default!r} in {shown} (known: {known})"
            )
        elif len(tables) == 1:
            default = next(iter(tables))
        else:
            problems.append(
                f"DEPLOY_TARGET: unset, and {shown} has no target named {default!r}: set it to "
                f"the default target, one of {', '.join(tables)}"
            )
    if problems:
        raise BadConfig(problems)
    return Targets(tuple(built.values()), default, shown)
