"""The plan's task definition: the revision a change registers, how it differs from what runs,
what it needs checked, and the plan's fingerprint. Pure: no AWS call here (the checks' reads
are bot/deploy/plan_checks.py's).

The new revision is what runs now with one container's image replaced (``registration``),
exactly what ``Starter.start`` registers. The diff compares what runs with it field by field,
for a person: the image and its digest, environment variable names and changed values, the
secrets' names, cpu and memory, ports, the health check, command and entryPoint, the log
configuration, and a generic "other fields changed" line for anything else.

Values never shown: a secret (``secrets``: ECS reads it from Secrets Manager or SSM) is named
with "changed", never its source's content; a plain ``environment`` value is shown only when
neither its name nor the value looks like a secret (``looks_secret``): a name with SECRET,
PASSWORD, TOKEN, KEY, CREDENTIAL, AUTH… in it, or a value holding a URL's password or a
well-known token prefix. Such values are said to have changed, never shown. In a command,
an entryPoint or a health check, each word that carries one is shown as ``•••``
(``mask_words``): ``--db-password=•••``, ``--api-token •••``, ``Bearer •••``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import botocore.loaders
import botocore.model


@cache
def register_fields() -> tuple[str, ...]:
    """RegisterTaskDefinition's parameters that DescribeTaskDefinition's ``taskDefinition``
    also has, from botocore's ECS model: a new revision keeps every one of them and changes
    only one container's image. Read from the model, not listed by hand: a hand-written list
    fell behind ECS (``enableFaultInjection``, ``trustedExecutionConfiguration``), and a deploy
    then dropped what the service's stack had set."""
    # The model from botocore's data files alone: a session would read the user's AWS config
    # (an AWS_PROFILE naming no profile raises), and at import time, in every process.
    data = botocore.loaders.create_loader().load_service_model("ecs", "service-2")
    model = botocore.model.ServiceModel(data, "ecs")
    given = model.operation_model("RegisterTaskDefinition").input_shape.members
    described = model.shape_for("TaskDefinition").members
    return tuple(name for name in given if name in described)


# What DescribeTaskDefinition says about a revision that is not part of what runs: compared,
# these would make every two revisions differ.
_ABOUT_THE_REVISION = frozenset(
    {
        "taskDefinitionArn",
        "revision",
        "status",
        "requiresAttributes",
        "compatibilities",
        "registeredAt",
        "registeredBy",
        "deregisteredAt",
        "deleteRequestedAt",
    }
)
# A name that says its value is a secret, anywhere in it (DB_PASSWORD, STRIPE_API_KEY,
# GITHUB_TOKEN, AUTH_HEADER, SESSION_SECRET, PRIVATE_KEY_PEM, DATABASE_DSN).
_SECRET_NAME = re.compile(
    r"secret|passw|passphrase|pwd|token|credential|auth|cookie|session|signature|salt|"
    r"private|cert|dsn|conn(ection)?_?str|(^|_|-)key(s)?($|_|-)|apikey|access_?key",
    re.IGNORECASE,
)
# A value that holds a secret whatever its name: a URL with a password in it
# (postgres://app:hunter2@db/app), a PEM block, or a token of a well-known form (Slack's xox…,
# GitHub's ghp_/github_pat_, AWS access key ids, Stripe's live keys).
_SECRET_VALUE = re.compile(
    r"://[^/\s:@]+:[^/\s@]+@|-----BEGIN|^(xox[abposr]-|xapp-|ghp_|gho_|github_pat_|AKIA|ASIA|"
    r"sk_live_|rk_live_)",
)
_SHOWN_VALUE = 60  # a value longer is clipped in the diff

LineKind = Literal[
    "image",
    "environment",
    "secrets",
    "resources",
    "roles",
    "ports",
    "health",
    "command",
    "logs",
    "containers",
    "other",
]


def looks_secret(name: str, value: str = "") -> bool:
    """Whether an environment variable's value must not be shown: its name or its value looks
    like a secret's (see the module's docstring)."""
    return bool(_SECRET_NAME.search(name) or _SECRET_VALUE.search(value))


@dataclass(frozen=True)
class Line:
    """One difference, for a person: ``what`` it concerns, ``text`` what changed."""

    kind: LineKind
    text: str


@dataclass(frozen=True)
class TaskDiff:
    """What runs (``base``: ``family:12``) against what will run. ``registers`` False: a
    redeploy, which starts the same revision again."""

    base: str
    lines: tuple[Line, ...]
    registers: bool = True

    @property
    def only_image(self) -> bool:
        return all(line.kind == "image" for line in self.lines)


CheckState = Literal["ok", "missing", "unverified"]


@dataclass(frozen=True)
class Check:
    """One thing the new revision needs: ``what`` (image, task role, execution role, log
    group, secret), its ``name``, and whether it exists: ok, missing (the deploy is refused)
    or unverified (AWS refused the read: said, never blocking), with ``detail`` saying why."""

    what: str
    name: str
    state: CheckState
    detail: str = ""

    @property
    def text(self) -> str:
        if self.state == "ok":
            return f"{self.what} {self.name} {self.detail or 'exists'}"
        if self.state == "missing":
            return f"{self.what} {self.name} does not exist{_with(self.detail)}"
        return f"could not verify {self.what} {self.name}{_with(self.detail)}"


def _with(detail: str) -> str:
    return f" ({detail})" if detail else ""


@dataclass(frozen=True)
class TaskPlan:
    """The task definition side of a plan: the diff, the checks, the revision registered, the
    newest revision of the family when someone else registered one after what runs, and the
    fingerprint an approval is bound to."""

    diff: TaskDiff
    checks: tuple[Check, ...]
    fingerprint: str
    registration: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    newer: str = ""  # ``family:14``: registered after what runs, not by deploybot, not running

    @property
    def missing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.state == "missing")


# -- the revision ---------------------------------------------------------------------------


def registration(current: Mapping[str, Any], container: str, image: str) -> dict[str, Any]:
    """RegisterTaskDefinition's arguments for the new revision: ``current`` (as
    DescribeTaskDefinition gave it) with ``container``'s image replaced by ``image``."""
    kwargs = as_registered(current)
    kwargs["containerDefinitions"] = [
        {**c, "image": image} if c.get("name") == container else c
        for c in current["containerDefinitions"]
    ]
    return kwargs


def as_registered(revision: Mapping[str, Any]) -> dict[str, Any]:
    """RegisterTaskDefinition's arguments that would make ``revision`` again (as
    DescribeTaskDefinition gave it): its register_fields() that are set."""
    return {k: revision[k] for k in register_fields() if revision.get(k) not in (None, [], {})}


def fingerprint(live_arn: str, registered: Mapping[str, Any], newer: str = "") -> str:
    """What an approval is bound to, as 16 hex digits: the revision that runs, the revision
    that would be registered (the image by digest in it) and the family's newer revision."""
    text = json.dumps(
        {"live": live_arn, "register": registered, "newer": newer},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the diff -------------------------------------------------------------------------------


def diff(
    live: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    base: str,
    image_before: str = "",
    image_after: str = "",
    registers: bool = True,
) -> TaskDiff:
    """``live`` (DescribeTaskDefinition's ``taskDefinition``) against ``new`` (``registration``
    or another revision), field by field. ``image_before``/``image_after``: how to name the
    images (``v4.3.0-… (sha256:1a2b3c4d5e6f)``); the raw references otherwise."""
    lines: list[Line] = []
    old_containers = {str(c.get("name")): c for c in live.get("containerDefinitions", [])}
    new_containers = {str(c.get("name")): c for c in new.get("containerDefinitions", [])}
    several = len(set(old_containers) | set(new_containers)) > 1
    for name in sorted(set(old_containers) - set(new_containers)):
        lines.append(Line("containers", f"container {name} removed"))
    for name in sorted(set(new_containers) - set(old_containers)):
        lines.append(Line("containers", f"container {name} added"))
    for name in [n for n in new_containers if n in old_containers]:
        prefix = f"{name}: " if several else ""
        lines.extend(
            Line(line.kind, prefix + line.text)
            for line in _container(
                old_containers[name], new_containers[name], image_before, image_after
            )
        )
    lines.extend(_task(live, new))
    return TaskDiff(base=base, lines=tuple(_ordered(lines)), registers=registers)


_ORDER: tuple[LineKind, ...] = (
    "image",
    "environment",
    "secrets",
    "resources",
    "roles",
    "ports",
    "health",
    "command",
    "logs",
    "containers",
    "other",
)


def _ordered(lines: list[Line]) -> list[Line]:
    return sorted(lines, key=lambda line: _ORDER.index(line.kind))


def _task(live: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Line]:
    for key, label in (("cpu", "task cpu"), ("memory", "task memory")):
        if _norm(live.get(key)) != _norm(new.get(key)):
            yield Line("resources", f"{label}: {_say(live.get(key))} → {_say(new.get(key))}")
    for key, label in (("taskRoleArn", "task role"), ("executionRoleArn", "execution role")):
        if _norm(live.get(key)) != _norm(new.get(key)):
            before, after = _role(live.get(key)), _role(new.get(key))
            yield Line("roles", f"{label}: {before} → {after}")
    shown = {"cpu", "memory", "taskRoleArn", "executionRoleArn", "containerDefinitions"}
    others = _other_keys(live, new, shown | _ABOUT_THE_REVISION)
    if others:
        yield Line("other", f"other fields changed: {', '.join(others)}")


def _container(
    old: Mapping[str, Any], new: Mapping[str, Any], image_before: str, image_after: str
) -> Iterator[Line]:
    if old.get("image") != new.get("image"):
        before = image_before or str(old.get("image", ""))
        after = image_after or str(new.get("image", ""))
        yield Line("image", f"image: {before} → {after}")
    yield from _environment(old.get("environment") or [], new.get("environment") or [])
    yield from _secrets(old.get("secrets") or [], new.get("secrets") or [])
    for key in ("cpu", "memory", "memoryReservation"):
        if _norm(old.get(key)) != _norm(new.get(key)):
            yield Line("resources", f"{key}: {_say(old.get(key))} → {_say(new.get(key))}")
    if _norm(old.get("portMappings")) != _norm(new.get("portMappings")):
        yield Line(
            "ports",
            f"ports: {_ports(old.get('portMappings'))} → {_ports(new.get('portMappings'))}",
        )
    if _norm(old.get("healthCheck")) != _norm(new.get("healthCheck")):
        yield Line(
            "health",
            f"health check: {_health(old.get('healthCheck'))} → {_health(new.get('healthCheck'))}",
        )
    for key in ("command", "entryPoint"):
        if _norm(old.get(key)) != _norm(new.get(key)):
            yield Line("command", f"{key}: {_argv(old.get(key))} → {_argv(new.get(key))}")
    if _norm(old.get("logConfiguration")) != _norm(new.get("logConfiguration")):
        yield Line(
            "logs",
            f"log configuration: {_logs(old.get('logConfiguration'))} → "
            f"{_logs(new.get('logConfiguration'))}",
        )
    shown = {
        "image",
        "environment",
        "secrets",
        "cpu",
        "memory",
        "memoryReservation",
        "portMappings",
        "healthCheck",
        "command",
        "entryPoint",
        "logConfiguration",
    }
    others = _other_keys(old, new, shown)
    if others:
        yield Line("other", f"other fields changed: {', '.join(others)}")


def _environment(
    old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]
) -> Iterator[Line]:
    before = {str(e.get("name")): str(e.get("value", "")) for e in old}
    after = {str(e.get("name")): str(e.get("value", "")) for e in new}
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name), after.get(name)
        if was == now:
            continue
        hidden = looks_secret(name, was or "") or looks_secret(name, now or "")
        if was is None:
            value = " (value hidden: it looks like a secret)" if hidden else f"={_value(now)}"
            yield Line("environment", f"environment: + {name}{value}")
        elif now is None:
            yield Line("environment", f"environment: - {name}")
        elif hidden:
            yield Line(
                "environment", f"environment: {name} changed (value hidden: it looks like a secret)"
            )
        else:
            yield Line("environment", f"environment: {name}: {_value(was)} → {_value(now)}")


def _secrets(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> Iterator[Line]:
    before = {str(s.get("name")): str(s.get("valueFrom", "")) for s in old}
    after = {str(s.get("name")): str(s.get("valueFrom", "")) for s in new}
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name), after.get(name)
        if was == now:
            continue
        if was is None:
            yield Line("secrets", f"secrets: + {name}")
        elif now is None:
            yield Line("secrets", f"secrets: - {name}")
        else:
            yield Line("secrets", f"secrets: {name} changed (now from another secret)")


def _other_keys(old: Mapping[str, Any], new: Mapping[str, Any], shown: set[str]) -> list[str]:
    keys = (set(old) | set(new)) - shown
    return sorted(k for k in keys if _norm(old.get(k)) != _norm(new.get(k)))


def _norm(value: Any) -> Any:
    """Missing, None, empty list and empty mapping read the same (DescribeTaskDefinition
    leaves out what RegisterTaskDefinition was not given)."""
    if value in (None, [], {}, ""):
        return None
    return json.dumps(value, sort_keys=True, default=str)


def _say(value: Any) -> str:
    return "unset" if value in (None, "", [], {}) else str(value)


def _value(value: str | None) -> str:
    text = value if value is not None else ""
    shown = text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 1] + "…"
    return json.dumps(shown, ensure_ascii=False) if (not shown or " " in shown) else shown


def _role(arn: Any) -> str:
    return str(arn).rsplit("/", 1)[-1] if arn else "none"


def _ports(mappings: Any) -> str:
    if not mappings:
        return "none"
    return ", ".join(f"{m.get('containerPort', '?')}/{m.get('protocol', 'tcp')}" for m in mappings)


def _health(check: Any) -> str:
    if not check:
        return "none"
    argv = _argv(check.get("command"))
    timing = ", ".join(
        f"{k} {check[k]}" for k in ("interval", "timeout", "retries", "startPeriod") if k in check
    )
    return f"{argv}" + (f" ({timing})" if timing else "")


HIDDEN = "•••"
# Words after which the next is a credential whatever the flag: an Authorization header's.
_CREDENTIAL_SCHEMES = frozenset({"bearer", "basic", "token"})


def _argv(argv: Any) -> str:
    """A command (or a health check's) as one line, each word that looks like a secret hidden
    (``mask_words``), clipped."""
    if not argv:
        return "unset"
    text = " ".join(mask_words(" ".join(str(a) for a in argv).split(" ")))
    return text if len(text) <= 120 else text[:119] + "…"


def mask_words(words: list[str]) -> list[str]:
    """``words`` with each secret-looking value replaced by ``•••``: ``NAME=value`` or
    ``--name=value`` where the name or the value looks secret (``looks_secret``), a value
    after a flag whose name does (``--api-token t0ps3cret``) or after a credential scheme
    (``Bearer …``), and any word that looks like a secret by itself (a URL with a password,
    a token of a known form)."""
    shown: list[str] = []
    before = ""
    for word in words:
        name, equals, value = word.partition("=")
        flag = before.startswith("-") and "=" not in before and bool(before.strip("-"))
        after_secret_flag = (
            flag and bool(word) and not word.startswith("-") and looks_secret(before.lstrip("-"))
        )
        if equals and name and looks_secret(name.lstrip("-"), value):
            shown.append(f"{name}={HIDDEN}")
        elif (
            _SECRET_VALUE.search(word) or before.lower() in _CREDENTIAL_SCHEMES or after_secret_flag
        ):
            shown.append(HIDDEN)
        else:
            shown.append(word)
        before = word
    return shown


def _logs(config: Any) -> str:
    if not config:
        return "none"
    options = config.get("options") or {}
    parts = [str(config.get("logDriver", "?"))]
    parts += [f"{k}={v}" for k, v in sorted(options.items())]
    secret = [str(s.get("name")) for s in config.get("secretOptions") or []]
    if secret:
        parts.append(f"secret options {', '.join(secret)}")
    return " ".join(parts)


# -- renderings -----------------------------------------------------------------------------


def summary_line(d: TaskDiff) -> str:
    """One line: ``Task definition: only the image changes`` or ``…: image, environment (2),
    cpu`` (a confirm dialog's room)."""
    if not d.registers:
        return "Task definition: the same revision runs again."
    if not d.lines:
        return "Task definition: nothing changes."
    if d.only_image:
        return "Task definition: only the image changes."
    counts: dict[str, int] = {}
    for line in d.lines:
        counts[line.kind] = counts.get(line.kind, 0) + 1
    parts = [k if n == 1 else f"{k} ({n})" for k, n in counts.items()]
    return f"Task definition changes: {', '.join(parts)}."


def text_lines(task: TaskPlan) -> list[str]:
    """The plan for a terminal: the diff, then the checks (problems first)."""
    d = task.diff
    out: list[str] = []
    if not d.registers:
        out.append(f"Task definition: {d.base} runs again (nothing in it changes).")
    elif not d.lines:
        out.append(f"Task definition: a new revision of {d.base}; nothing in it changes.")
    else:
        rest = "" if not d.only_image else " (nothing else changes)"
        out.append(f"Task definition: a new revision from {d.base}{rest}:")
        out.extend(f"  {line.text}" for line in d.lines)
    if task.newer:
        out.append(
            f"  note: {task.newer} was registered after {d.base} (not by deploybot) and does "
            f"not run; this change builds on {d.base}, what runs, not on it."
        )
    out.append("Checks:")
    ordered = sorted(task.checks, key=lambda c: ("missing", "unverified", "ok").index(c.state))
    marks = {"ok": "✓", "missing": "✗", "unverified": "?"}
    out.extend(f"  {marks[c.state]} {c.text}" for c in ordered)
    return out


def clip_lines(lines: Sequence[str], max_chars: int, more: str = "… and {n} more") -> str:
    """``lines`` joined, as many as fit in ``max_chars`` with a last line saying how many were
    left out."""
    kept: list[str] = []
    for i, line in enumerate(lines):
        left = len(lines) - i - 1
        tail = more.format(n=left) if left else ""
        candidate = "\n".join([*kept, line, *([tail] if tail else [])])
        if len(candidate) > max_chars:
            tail = more.format(n=len(lines) - i)
            return "\n".join([*kept, tail])[:max_chars]
        kept.append(line)
    return "\n".join(kept)
